"""Callbacks, validation_split, verbose and Ctrl-C: what Keras users reach for, on every
backend, checked by the values they must produce."""

import csv
import json
import signal

import numpy as np
import pytest
from helpers import assert_parameters_equal, host_parameters

import portnn as pn
from portnn.callbacks import (
    Callback,
    EarlyStopping,
    HistoryLogger,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)


def regression(seed=0, n=64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    y = (X @ np.array([[1.0], [-2.0], [0.5]]) + 0.1).astype(np.float32)
    return X, y


def model_for(seed=0, lr=0.05, optimizer=None):
    pn.seed(seed)
    model = pn.Model([pn.Dense(3, 8), pn.Tanh(), pn.Dense(8, 1), pn.Linear()])
    return model.set(loss=pn.MeanSquaredError(), optimizer=optimizer or pn.SGD(lr))


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, run):
        self.calls.append(("begin", run.epochs))

    def on_epoch_begin(self, run, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, run, epoch, logs):
        self.calls.append(("epoch_end", epoch, logs["loss"]))

    def on_train_end(self, run):
        self.calls.append(("end", len(run.history["epoch"])))


def test_hooks_run_in_order_with_each_epochs_figures(backend):
    X, y = regression()
    recorder = Recorder()
    history = model_for().train(X, y, epochs=3, print_every=None, callbacks=[recorder])
    assert recorder.calls[0] == ("begin", 3) and recorder.calls[-1] == ("end", 3)
    ends = [c for c in recorder.calls if c[0] == "epoch_end"]
    assert [c[1] for c in ends] == [1, 2, 3]
    assert [c[2] for c in ends] == pytest.approx(history["loss"])
    assert [c[0] for c in recorder.calls[1:-1]] == ["epoch_begin", "epoch_end"] * 3


def test_callbacks_change_nothing_about_the_training(backend):
    X, y = regression()
    plain = model_for()  # seeds: each model gets the same weights and shuffles
    plain.train(X, y, epochs=4, batch_size=16, print_every=None)
    watched = model_for()
    watched.train(X, y, epochs=4, batch_size=16, print_every=None, callbacks=[Recorder()])
    assert_parameters_equal(host_parameters(watched), host_parameters(plain))


class StopAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, run, epoch, logs):
        if epoch == self.epoch:
            run.stop_training = True


def test_a_callback_stops_training_cleanly(backend):
    X, y = regression()
    model, reference = model_for(), model_for()
    history = model.train(X, y, epochs=50, print_every=None, callbacks=[StopAt(3)])
    assert history["epoch"] == [1, 2, 3]
    reference.train(X, y, epochs=3, print_every=None)
    assert_parameters_equal(host_parameters(model), host_parameters(reference))


def test_early_stopping_waits_patience_epochs_and_restores_the_best(backend):
    # Validation on data the model cannot fit better after a while: a rising val_loss.
    X, y = regression()
    X_val, y_val = regression(seed=1, n=32)
    y_val = y_val + 5.0  # far off: training moves val_loss in one direction only briefly
    stopper = EarlyStopping("val_loss", patience=2, restore_best=True)
    model = model_for(lr=0.1)
    history = model.train(
        X, y, epochs=60, validation_data=(X_val, y_val), print_every=None, callbacks=[stopper]
    )
    losses = history["val_loss"]
    best = int(np.argmin(losses))
    assert stopper.best_epoch == best + 1 and stopper.best == pytest.approx(losses[best])
    assert len(losses) == best + 1 + 3  # the best, then patience + 1 without improvement
    assert model.evaluate(X_val, y_val)[0] == pytest.approx(losses[best], rel=1e-5)


def test_early_stopping_names_a_figure_the_run_lacks(backend):
    X, y = regression()
    with pytest.raises(ValueError, match=r"'val_loss'.*validation_data or validation_split"):
        model_for().train(X, y, epochs=2, print_every=None, callbacks=[EarlyStopping()])


def test_model_checkpoint_saves_the_best_epochs_atomically(backend, tmp_path):
    X, y = regression()
    path = tmp_path / "best-{epoch}.npz"
    saver = ModelCheckpoint(path, monitor="loss", save_best_only=True)
    model = model_for()
    history = model.train(X, y, epochs=5, print_every=None, callbacks=[saver])
    improving = [i + 1 for i, v in enumerate(history["loss"]) if v == min(history["loss"][: i + 1])]
    assert saver.saved == [str(tmp_path / f"best-{e}.npz") for e in improving]
    last = pn.Model.load(saver.saved[-1])
    assert_parameters_equal(host_parameters(last), host_parameters(model))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_reduce_on_plateau_scales_the_rate(backend):
    X, y = regression()
    X_val, y_val = regression(seed=1, n=32)
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=0, min_delta=1e9)
    model = model_for(lr=0.05)
    history = model.train(
        X, y, epochs=4, validation_data=(X_val, y_val), print_every=None, callbacks=[plateau]
    )
    # min_delta=1e9: no epoch counts as an improvement after the first, so every epoch halves
    assert history["learning_rate"] == pytest.approx([0.05, 0.05, 0.025, 0.0125])
    assert model.optimizer.learning_rate == pytest.approx(0.00625)


def test_learning_rate_scheduler_sets_each_epochs_rate(backend):
    X, y = regression()
    model = model_for(lr=0.1)
    scheduler = LearningRateScheduler(lambda epoch, rate: 0.1 / epoch)
    history = model.train(X, y, epochs=3, print_every=None, callbacks=[scheduler])
    assert history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_history_logger_writes_each_epoch(backend, tmp_path, suffix):
    X, y = regression()
    path = tmp_path / f"log{suffix}"
    history = model_for().train(X, y, epochs=3, print_every=None, callbacks=[HistoryLogger(path)])
    if suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        losses = [float(r["loss"]) for r in rows]
    else:
        losses = [json.loads(line)["loss"] for line in path.read_text().splitlines()]
    assert losses == pytest.approx(history["loss"])


def test_validation_split_holds_out_the_last_samples(backend):
    X, y = regression(n=50)
    split, explicit = model_for(), model_for()
    a = split.train(X, y, epochs=3, validation_split=0.2, print_every=None, shuffle=False)
    b = explicit.train(
        X[:40],
        y[:40],
        epochs=3,
        validation_data=(X[40:], y[40:]),
        print_every=None,
        shuffle=False,
    )
    assert a["val_loss"] == pytest.approx(b["val_loss"])
    assert_parameters_equal(host_parameters(split), host_parameters(explicit))
    with pytest.raises(ValueError, match="validation_split"):
        model_for().train(X, y, validation_split=1.0)
    with pytest.raises(ValueError, match="not both"):
        model_for().train(X, y, validation_split=0.2, validation_data=(X, y))


@pytest.mark.parametrize(("verbose", "lines"), [(0, 0), (2, 3)])
def test_verbose_as_keras_users_expect(backend, capsys, verbose, lines):
    X, y = regression()
    model_for().train(X, y, epochs=3, verbose=verbose)
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("epoch:")]) == lines


def test_small_losses_never_print_as_zero(backend, capsys):
    X, y = regression()
    model = model_for(lr=0.05)
    model.train(X, y * 1e-4, epochs=2, print_every=1)
    out = capsys.readouterr().out
    assert "loss: 0.000 " not in out and "e-0" in out


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for the test's duration, whatever the suite inherited: run
    in the background (``nox &``, nohup) it starts with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_keeps_the_last_completed_step_and_the_history(backend, default_sigint):
    X, y = regression()

    class Interrupt(Callback):
        def on_epoch_end(self, run, epoch, logs):
            if epoch == 2:
                signal.raise_signal(signal.SIGINT)  # as if Ctrl-C came during epoch 3

    model = model_for()
    with pytest.raises(KeyboardInterrupt) as caught:
        model.train(X, y, epochs=10, batch_size=16, print_every=None, callbacks=[Interrupt()])
    assert caught.value.history["epoch"] == [1, 2]
    # Training stops at the next batch boundary, before epoch 3's first step: the model
    # holds whole steps, never half of one, and the handler is put back.
    assert model.optimizer.iterations == 2 * 4
    reference = model_for()
    reference.train(X, y, epochs=2, batch_size=16, print_every=None)
    assert_parameters_equal(host_parameters(model), host_parameters(reference))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_progress_shows_live_figures_and_one_bar_per_long_epoch(backend, capsys):
    X, y = regression(n=120)
    model_for().train(X, y, epochs=2, batch_size=1, print_every=None, progress="keep")
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "loss=" in err and "acc=" in err
    assert err.count("120/120") >= 2  # a bar per epoch of 120 batches, each kept on screen
