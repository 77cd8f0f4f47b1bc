"""Callbacks, validation_split, verbose and Ctrl-C: what Keras users reach for, on every
backend, checked by the values they must produce."""

import csv
import json
import math
import signal
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import assert_parameters_equal, host, host_parameters

import portnn as pn
from portnn.callbacks import (
    Callback,
    EarlyStopping,
    HistoryLogger,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from portnn.training import HISTORY_KEYS

NAN = math.nan
LR = 0.0625  # the scripted runs' first rate: a power of two, so every factor below is exact


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
    assert len(losses) == best + 1 + 2  # Keras: the best, then patience epochs without
    assert stopper.stopped_epoch == len(losses)
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


# --- scripted runs: a callback fed a fixed sequence of figures, checked by Keras' rule -------
def host_state(model):
    """``model.state_dict()`` (parameters and optimizer state) as NumPy arrays and numbers."""
    return {k: v if isinstance(v, int | float) else host(v) for k, v in model.state_dict().items()}


def assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def drive(callback, figures, monitor="val_loss", validation=True):
    """A run of ``len(figures)`` epochs as ``model.train`` makes one, with epoch e's
    ``monitor`` scripted to ``figures[e - 1]``: each epoch is a real epoch of SGD with
    momentum, the callback sees it, and the run stops when the callback says so. The run
    returned holds the epochs it ran (``last_epoch``), the base rate after each epoch
    (``rates``) and each epoch's state (``states``, after its update)."""
    X, y = regression(n=16)
    model = model_for(optimizer=pn.SGD(LR, momentum=0.5))
    run = SimpleNamespace(
        model=model,
        val=("scripted",) if validation else None,
        stop_training=False,
        last_epoch=0,
        is_main=True,
        rates=[],
        states=[],
    )
    callback.on_train_begin(run)
    for epoch, figure in enumerate(figures, 1):
        callback.on_epoch_begin(run, epoch)
        model.train(X, y, epochs=1, batch_size=8, print_every=None)
        run.states.append(host_state(model))
        logs = dict.fromkeys(HISTORY_KEYS) | {"epoch": epoch, monitor: figure}
        run.last_epoch = epoch
        callback.on_epoch_end(run, epoch, logs)
        run.rates.append(model.optimizer.learning_rate)
        if run.stop_training:
            break
    callback.on_train_end(run)
    return run


# Keras' EarlyStopping: wait = epochs since the best (an improvement beats it by more than
# min_delta; NaN never does); stop after the first epoch e > 1 with wait >= patience.
EARLY_STOPPING = [
    # (monitor, mode, min_delta, patience, figures, stopped_epoch, best_epoch)
    ("val_loss", "min", 0.0, 0, [1.0, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75], 3, 2),
    ("val_loss", "min", 0.0, 1, [1.0, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75], 3, 2),
    ("val_loss", "min", 0.0, 2, [1.0, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75], 4, 2),
    ("val_loss", "min", 0.0, 3, [1.0, 0.5, 0.75, 0.75, 0.75, 0.75, 0.75], 5, 2),
    # an improvement starts the count again
    ("val_loss", "min", 0.0, 3, [1.0, 1.25, 1.5, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75], 7, 4),
    # equal is no improvement
    ("val_loss", "min", 0.0, 2, [1.0, 1.0, 1.0, 1.0, 1.0], 3, 1),
    # improving all along: no stop
    ("val_loss", "min", 0.0, 2, [1.0, 0.75, 0.5, 0.25], None, 4),
    # higher is better
    ("val_accuracy", "max", 0.0, 2, [0.5, 0.75, 0.625, 0.625, 0.625, 0.625], 4, 2),
    ("val_loss", "max", 0.0, 2, [0.5, 0.75, 0.625, 0.625, 0.625, 0.625], 4, 2),
    ("accuracy", "min", 0.0, 2, [0.5, 0.75, 0.875, 1.0], 3, 1),
    # auto: lower for a loss, higher for an accuracy
    ("loss", "auto", 0.0, 2, [1.0, 0.75, 0.875, 1.0, 1.0], 4, 2),
    ("val_accuracy", "auto", 0.0, 2, [0.5, 0.75, 0.625, 0.625, 0.625], 4, 2),
    # min_delta 0.25: better by 0.125 (less), by 0.25 (exactly: not more), by 0.375 (more)
    ("val_loss", "min", 0.25, 3, [1.0, 0.875, 0.75, 0.625, 0.625, 0.625, 0.625, 0.625], 7, 4),
    ("val_accuracy", "max", 0.25, 3, [0.25, 0.375, 0.5, 0.625, 0.625, 0.625, 0.625], 7, 4),
    # NaN never improves; and never a stop after epoch 1, even when NaN leaves wait at 1
    ("val_loss", "min", 0.0, 2, [1.0, NAN, 0.5, NAN, NAN, 0.25], 5, 3),
    ("val_loss", "min", 0.0, 1, [NAN, 1.0, 1.25, 1.5], 3, 2),
    ("val_accuracy", "max", 0.0, 1, [NAN, NAN, 0.5], 2, None),
]


@pytest.mark.parametrize(
    ("monitor", "mode", "min_delta", "patience", "figures", "stopped", "best"), EARLY_STOPPING
)
def test_early_stopping_counts_patience_as_keras(
    backend, monitor, mode, min_delta, patience, figures, stopped, best
):
    stopper = EarlyStopping(monitor, patience, min_delta, mode=mode)
    run = drive(stopper, figures, monitor)
    assert stopper.stopped_epoch == stopped
    assert run.last_epoch == (stopped or len(figures))
    assert stopper.best_epoch == best
    if best is not None:
        assert stopper.best == figures[best - 1]


RESTORE = [
    # (figures, patience, restore_best, the epoch whose state the model ends with)
    ([1.0, 0.5, 0.75, 0.75, 0.75], 2, True, 2),  # stopped at 4: the best, epoch 2
    ([1.0, 0.5, 0.75], 5, True, 2),  # no stop, best earlier than the last: restored
    ([1.0, 0.75, 0.5], 5, True, 3),  # no stop, the best is the last: as it is
    ([1.0, 0.5, 0.75, 0.75, 0.75], 2, False, 4),  # stopped, not asked to restore
    ([1.0, 0.5, 0.75], 5, False, 3),
    ([NAN, NAN, NAN], 5, True, 3),  # no best at all: nothing to restore
]


@pytest.mark.parametrize(("figures", "patience", "restore_best", "kept"), RESTORE)
def test_early_stopping_restores_the_best_epochs_state_at_the_end(
    backend, figures, patience, restore_best, kept
):
    run = drive(EarlyStopping(patience=patience, restore_best=restore_best), figures)
    # parameters and optimizer state (iterations, momentum) together
    assert_state_equal(host_state(run.model), run.states[kept - 1])


def test_early_stopping_starts_afresh_in_each_train_call(backend):
    stopper = EarlyStopping(patience=2)
    drive(stopper, [1.0, 0.5, 0.75, 0.75])
    assert stopper.stopped_epoch == 4
    run = drive(stopper, [2.0, 1.5, 1.0])  # worse than the last call's best, yet improving
    assert stopper.stopped_epoch is None and run.last_epoch == 3 and stopper.best_epoch == 3


# Keras' ReduceLROnPlateau, after each epoch: in cooldown, count it down; an improvement sets
# wait = 0; else, out of cooldown, wait += 1, and at wait >= patience, if rate > min_lr:
# rate = max(rate * factor, min_lr), wait = 0, cooldown begins.
PLATEAU = [1.0] * 8  # the first is the best; the rest are no improvement
REDUCE = [
    # (monitor, kwargs, figures, the epochs after which the rate is reduced)
    ("val_loss", {"patience": 0}, PLATEAU[:4], [2, 3, 4]),
    ("val_loss", {"patience": 1}, PLATEAU[:4], [2, 3, 4]),
    ("val_loss", {"patience": 2}, PLATEAU, [3, 5, 7]),
    ("val_loss", {"patience": 3}, PLATEAU, [4, 7]),
    # an improvement starts the count again
    ("val_loss", {"patience": 2}, [1.0, 1.0, 0.5, 0.5, 0.5, 0.5], [5]),
    # cooldown c: c - 1 epochs after a reduction go uncounted (1 changes nothing)
    ("val_loss", {"patience": 2, "cooldown": 1}, PLATEAU, [3, 5, 7]),
    ("val_loss", {"patience": 2, "cooldown": 2}, PLATEAU, [3, 6]),
    ("val_loss", {"patience": 2, "cooldown": 3}, PLATEAU, [3, 7]),
    ("val_loss", {"patience": 1, "cooldown": 2}, PLATEAU, [2, 4, 6, 8]),
    ("val_loss", {"patience": 2, "factor": 0.25}, PLATEAU[:5], [3, 5]),
    # min_lr: the rate goes down to it (clamped after epoch 4), and no further
    ("val_loss", {"patience": 1, "min_lr": 3 / 16 * LR}, PLATEAU[:6], [2, 3, 4]),
    # higher is better: for an accuracy under auto, or when asked
    ("accuracy", {"patience": 1}, [0.5, 0.625, 0.75, 0.75, 0.75], [4, 5]),
    ("val_loss", {"patience": 1, "mode": "max"}, [0.5, 0.625, 0.75, 0.75], [4]),
    ("accuracy", {"patience": 1, "mode": "min"}, [0.5, 0.625, 0.75], [2, 3]),
    ("loss", {"patience": 1}, [1.0, 0.75, 0.5, 0.5, 0.25], [4]),
    # min_delta 0.25: better by 0.125 (less), by 0.25 (exactly: not more), by 0.5 (more)
    ("val_loss", {"patience": 1, "min_delta": 0.25}, [1.0, 0.875, 0.75, 0.5, 0.5], [2, 3, 5]),
    ("val_accuracy", {"patience": 1, "min_delta": 0.25}, [0.25, 0.375, 0.5, 0.75], [2, 3]),
    # NaN never improves, not even first
    ("val_loss", {"patience": 1}, [1.0, NAN, 0.5, NAN], [2, 4]),
    ("val_loss", {"patience": 1}, [NAN, 1.0, 1.0], [1, 3]),
]


@pytest.mark.parametrize(("monitor", "kwargs", "figures", "reduced"), REDUCE)
def test_reduce_on_plateau_reduces_as_keras(backend, monitor, kwargs, figures, reduced):
    kwargs = {"factor": 0.5, "min_delta": 0.0} | kwargs
    run = drive(ReduceLROnPlateau(monitor, **kwargs), figures, monitor)
    rate, expected = LR, []
    for epoch in range(1, len(figures) + 1):
        if epoch in reduced:
            rate = max(rate * kwargs["factor"], kwargs.get("min_lr", 0.0))
        expected.append(rate)
    assert run.rates == expected  # powers of two (and 3/16 of one): exact


def test_reduce_on_plateau_scales_the_base_rate_of_a_schedule(backend):
    # The book's decay, lr / (1 + decay * t), one step per epoch; min_delta=1e9: every epoch
    # after the first is no improvement, so patience 1 halves the base rate after epochs 2-4.
    X, y = regression()
    model = model_for(optimizer=pn.SGD(0.5, decay=0.25))
    plateau = ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1e9)
    history = model.train(X, y, epochs=4, print_every=None, callbacks=[plateau])
    bases = [0.5, 0.5, 0.25, 0.125]  # during each epoch; its one step is step t = epoch - 1
    assert history["learning_rate"] == pytest.approx(
        [b / (1 + 0.25 * t) for t, b in enumerate(bases)]
    )
    assert model.optimizer.learning_rate == 0.0625
    # the rate the next step (t = 4) takes, from the new base rate
    assert model.optimizer.current_learning_rate == pytest.approx(0.0625 / (1 + 0.25 * 4))


def test_reduce_on_plateau_sets_the_rate_without_a_schedule(backend):
    run = drive(ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.0), [1.0, 1.0])
    assert run.model.optimizer.current_learning_rate == LR / 2


@pytest.mark.parametrize(
    "kwargs", [{"cooldown": -1}, {"cooldown": 1.5}, {"factor": 1.0}, {"patience": -1}]
)
def test_reduce_on_plateau_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ReduceLROnPlateau(**kwargs)


# --- ModelCheckpoint --------------------------------------------------------------------------
CHECKPOINT_BEST = [
    # (monitor, mode, min_delta, figures, the epochs saved)
    ("val_loss", "auto", 0.0, [1.0, 0.5, 0.75, 0.5, 0.25, NAN], [1, 2, 5]),
    ("val_accuracy", "auto", 0.0, [0.5, 0.75, 0.625, 0.75, 0.875], [1, 2, 5]),
    ("val_loss", "max", 0.0, [1.0, 0.5, 1.5], [1, 3]),
    ("val_accuracy", "min", 0.0, [0.5, 0.75, 0.25], [1, 3]),
    ("val_loss", "min", 0.25, [1.0, 0.875, 0.75, 0.5], [1, 4]),
    ("val_loss", "auto", 0.0, [NAN, 1.0, NAN], [2]),
]


@pytest.mark.parametrize(("monitor", "mode", "min_delta", "figures", "saved"), CHECKPOINT_BEST)
def test_model_checkpoint_saves_only_improvements(
    backend, tmp_path, monitor, mode, min_delta, figures, saved
):
    saver = ModelCheckpoint(
        tmp_path / "best-{epoch}.npz", monitor, True, mode=mode, min_delta=min_delta
    )
    run = drive(saver, figures, monitor)
    assert saver.saved == [str(tmp_path / f"best-{e}.npz") for e in saved]
    for e in saved:  # each file holds its epoch's model
        assert_state_equal(host_state(pn.Model.load(tmp_path / f"best-{e}.npz")), run.states[e - 1])


def test_model_checkpoint_saves_every_epoch_under_formatted_names(backend, tmp_path):
    saver = ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.npz")
    drive(saver, [1.0, 0.5, 0.75])
    names = ["m-01-1.000.npz", "m-02-0.500.npz", "m-03-0.750.npz"]
    assert saver.saved == [str(tmp_path / n) for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_model_checkpoint_names_files_by_a_real_runs_figures(backend, tmp_path):
    X, y = regression()
    saver = ModelCheckpoint(tmp_path / "ckpt-{epoch}-{loss:.6f}-{learning_rate}.npz")
    history = model_for(lr=0.05).train(X, y, epochs=3, print_every=None, callbacks=[saver])
    assert saver.saved == [
        str(tmp_path / f"ckpt-{e}-{loss:.6f}-0.05.npz")
        for e, loss in zip(history["epoch"], history["loss"], strict=True)
    ]
    assert all((tmp_path / p).exists() for p in saver.saved)


@pytest.mark.parametrize(
    ("path", "literal"),
    [("plain.npz", "plain.npz"), ("run{{1}}/m.npz", "run{1}/m.npz"), ("a}}b.npz", "a}b.npz")],
)
def test_model_checkpoint_takes_literal_paths_as_they_are(backend, tmp_path, path, literal):
    (tmp_path / "run{1}").mkdir()
    saver = ModelCheckpoint(tmp_path / path)
    drive(saver, [1.0])
    assert saver.saved == [str(tmp_path / literal)] and (tmp_path / literal).exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("run{1}/best.npz", r"\{1\}.*epoch, loss.*write \{\{1\}\}"),  # a folder named run{1}
        ("best-{}.npz", r"has \{\}.*write \{\{\}\}"),
        ("best-{val_los}.npz", r"\{val_los\}.*val_loss"),
        ("best-{loss.real}.npz", r"\{loss.real\}"),
        ("best-{epoch[0]}.npz", r"\{epoch\[0\]\}"),
        ("best-{loss:d}.npz", r"does not format.*'d'.*floats"),
        ("best-{epoch:q}.npz", "does not format"),
        ("best-{loss!x}.npz", "does not format"),
        ("best-{loss:{1}}.npz", "does not format"),
        ("best-{.npz", r"written twice, '\{\{' or '\}\}'"),
        ("best}.npz", r"Single '\}'.*written twice"),
    ],
)
def test_model_checkpoint_refuses_a_bad_template_at_once(tmp_path, path, message):
    with pytest.raises(ValueError, match=message):
        ModelCheckpoint(tmp_path / path)


def test_model_checkpoint_wants_validation_for_a_val_figure_before_training(backend, tmp_path):
    X, y = regression()
    model = model_for()
    before = host_state(model)
    saver = ModelCheckpoint(tmp_path / "m-{epoch}-{val_accuracy:.2f}.npz", monitor="loss")
    with pytest.raises(ValueError, match=r"val_accuracy.*validation_data or validation_split"):
        model.train(X, y, epochs=2, print_every=None, callbacks=[saver])
    assert_state_equal(host_state(model), before)  # not one step taken
    assert list(tmp_path.iterdir()) == [] and saver.saved == []
    # with validation data the same path is fine
    model.train(X, y, epochs=1, validation_data=(X, y), print_every=None, callbacks=[saver])
    assert len(saver.saved) == 1


# --- HistoryLogger, LearningRateScheduler, what a callback sees --------------------------------
def logged_losses(path):
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        assert all(list(row) == list(HISTORY_KEYS) for row in rows)
        return [float(r["loss"]) for r in rows]
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
@pytest.mark.parametrize("append", [False, True])
def test_history_logger_appends_to_or_replaces_the_last_runs_file(
    backend, tmp_path, suffix, append
):
    X, y = regression()
    path = tmp_path / f"log{suffix}"
    model = model_for()
    first = model.train(X, y, epochs=2, print_every=None, callbacks=[HistoryLogger(path)])
    logger = HistoryLogger(path, append=append)
    second = model.train(X, y, epochs=3, print_every=None, callbacks=[logger])
    expected = (first["loss"] if append else []) + second["loss"]
    assert logged_losses(path) == pytest.approx(expected, rel=1e-6)
    if suffix == ".csv":  # one header, at the top
        assert path.read_text().count("epoch,") == 1


def test_learning_rate_scheduler_numbers_epochs_from_1_and_passes_the_base_rate(backend):
    X, y = regression()
    calls = []

    def halve(epoch, rate):
        calls.append((epoch, rate))
        return rate / 2

    model = model_for(lr=0.5)
    history = model.train(
        X, y, epochs=3, print_every=None, callbacks=[LearningRateScheduler(halve)]
    )
    assert calls == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert history["learning_rate"] == [0.25, 0.125, 0.0625]
    assert model.optimizer.learning_rate == 0.0625


def test_learning_rate_scheduler_refuses_a_rate_that_is_not_positive(backend):
    X, y = regression()
    scheduler = LearningRateScheduler(lambda epoch, rate: 0.0 if epoch == 2 else rate)
    with pytest.raises(ValueError, match="learning rate 0.0 for epoch 2"):
        model_for().train(X, y, epochs=3, print_every=None, callbacks=[scheduler])


class Figures(Callback):
    def __init__(self):
        self.logs = []

    def on_epoch_end(self, run, epoch, logs):
        self.logs.append(dict(logs))


@pytest.mark.parametrize("validation", [False, True])
def test_a_callback_sees_each_epochs_figures_as_the_history_has_them(backend, validation):
    X, y = regression()
    seen = Figures()
    val = {"validation_data": regression(seed=1, n=16)} if validation else {}
    history = model_for().train(X, y, epochs=3, print_every=None, callbacks=[seen], **val)
    assert seen.logs == [{k: history[k][i] for k in HISTORY_KEYS} for i in range(3)]
    assert all(
        isinstance(v, float)
        for logs in seen.logs
        for k, v in logs.items()
        if k != "epoch" and v is not None
    )
    assert all((logs["val_loss"] is None) != validation for logs in seen.logs)


def test_model_checkpoint_refuses_a_safetensors_name_before_training(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"ModelCheckpoint writes portnn's \.npz format.*"
        r"portnn\.interop\.save_safetensors",
    ):
        ModelCheckpoint(tmp_path / "best-{epoch}.SafeTensors")
    assert list(tmp_path.iterdir()) == []
