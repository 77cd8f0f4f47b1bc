"""Model: building, the training loop, evaluation, prediction, parameters, moving between
backends, divergence, and bad input that must raise and change nothing."""

from __future__ import annotations

import re
import weakref

import numpy as np
import pytest
from helpers import assert_parameters_equal, host, host_parameters

import portnn as pn
from portnn import nnfs
from portnn.backend import library_of
from portnn.model import HISTORY_KEYS
from portnn.step import Step

CPU_BACKENDS = [b for b in ("numpy", "array_api_strict", "torch") if b in pn.available_backends()]


def optimizer_state(model):
    """Host copies of everything the optimizer carries from step to step."""
    opt = model.optimizer
    arrays = {
        (id(layer), name, field): host(value)
        for layer, states in opt.state.items()
        for name, state in states.items()
        for field, value in zip(getattr(state, "_fields", ()), state or (), strict=True)
    }
    return opt.iterations, opt.current_learning_rate, arrays


def classifier(hidden=8, classes=3, optimizer=None):
    model = pn.Model([pn.Dense(2, hidden), pn.ReLU(), pn.Dense(hidden, classes), pn.Softmax()])
    return model.set(loss=pn.CategoricalCrossentropy(), optimizer=optimizer or pn.Adam(0.01))


def binary(hidden=8):
    model = pn.Model([pn.Dense(2, hidden), pn.ReLU(), pn.Dense(hidden, 1), pn.Sigmoid()])
    return model.set(loss=pn.BinaryCrossentropy(), optimizer=pn.Adam(0.01))


def regressor(hidden=8, optimizer=None):
    model = pn.Model([pn.Dense(2, hidden), pn.Tanh(), pn.Dense(hidden, 1), pn.Linear()])
    return model.set(loss=pn.MeanSquaredError(), optimizer=optimizer or pn.Adam(0.01))


def regression_data(n=10):
    X = np.random.RandomState(1).uniform(-1, 1, (n, 2)).astype(np.float32)
    return X, (X[:, :1] - 2 * X[:, 1:] + 0.5).astype(np.float32)


class UnfusedCCE(pn.CategoricalCrossentropy):
    """Categorical cross-entropy that declares it fuses with nothing."""

    fused_activation = None


class PlainSubclassCCE(pn.CategoricalCrossentropy):
    """A subclass that keeps the math: it keeps the fusion too."""


class ChangedMathCCE(pn.CategoricalCrossentropy):
    """A subclass that changes the math: the inherited fusion no longer applies."""

    def _forward(self, y_pred, y_true):
        return 2 * super()._forward(y_pred, y_true)

    def backward(self, dvalues, y_true):
        return 2 * super().backward(dvalues, y_true)


# --- building ---------------------------------------------------------------------------------


def test_model_from_a_list_equals_model_built_with_add(backend):
    X, y = pn.datasets.spiral(20, 3)
    pn.seed(0)
    listed = pn.Model([pn.Dense(2, 8), pn.ReLU(), pn.Dense(8, 3), pn.Softmax()])
    pn.seed(0)
    added = pn.Model()
    assert added.add(pn.Dense(2, 8)) is added  # add chains
    added.add(pn.ReLU()).add(pn.Dense(8, 3)).add(pn.Softmax())
    assert [type(la) for la in added.layers] == [type(la) for la in listed.layers]
    for model in (listed, added):
        model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.01))
        model.train(X, y, epochs=3, print_every=None)  # finalize is implicit
    assert_parameters_equal(host_parameters(listed), host_parameters(added))


@pytest.mark.parametrize(
    ("loss", "accuracy"),
    [
        (pn.CategoricalCrossentropy, pn.CategoricalAccuracy),
        (pn.BinaryCrossentropy, pn.BinaryAccuracy),
        (pn.MeanSquaredError, pn.RegressionAccuracy),
        (pn.MeanAbsoluteError, pn.RegressionAccuracy),
    ],
)
def test_set_takes_each_argument_alone_and_picks_a_default_accuracy(backend, loss, accuracy):
    outputs = 3 if loss is pn.CategoricalCrossentropy else 1
    model = pn.Model([pn.Dense(2, outputs)])
    if loss is pn.CategoricalCrossentropy:
        model.add(pn.Softmax())
    elif loss is pn.BinaryCrossentropy:
        model.add(pn.Sigmoid())
    X = np.random.RandomState(0).uniform(-1, 1, (12, 2))
    y = np.arange(12) % 3 if outputs == 3 else (X[:, :1] > 0).astype(np.float32)
    the_loss, optimizer = loss(), pn.SGD(0.1)
    assert model.set(loss=the_loss) is model
    model.set(optimizer=optimizer)
    model.set()  # nothing given: nothing changes
    assert model.loss is the_loss and model.optimizer is optimizer and model.accuracy is None
    model.train(X, y, epochs=2, print_every=None)
    assert type(model.accuracy) is accuracy
    mine = pn.RegressionAccuracy() if accuracy is pn.RegressionAccuracy else accuracy()
    model.set(accuracy=mine)
    assert model.loss is the_loss and model.optimizer is optimizer and model.accuracy is mine
    model.train(X, y, epochs=1, print_every=None)
    assert model.optimizer.iterations == 3


def test_set_and_add_reject_what_is_not_portnn(backend):
    model = pn.Model([pn.Dense(2, 3)])
    with pytest.raises(TypeError, match="loss must be a portnn Loss"):
        model.set(loss=pn.Adam())
    with pytest.raises(TypeError, match="optimizer must be a portnn Optimizer"):
        model.set(optimizer=pn.MeanSquaredError())
    with pytest.raises(TypeError, match="expects a portnn layer"):
        pn.Model(["relu"])
    assert model.loss is None and model.optimizer is None


def test_what_is_missing_is_named(backend):
    X, y = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(2, 3), pn.Softmax()])
    assert host(model.predict(X)).shape == (30, 3)  # predict needs neither loss nor optimizer
    with pytest.raises(RuntimeError, match=r"no loss or optimizer.*model\.set\(loss=\.\.\."):
        model.train(X, y)
    model.set(loss=pn.CategoricalCrossentropy())
    model.evaluate(X, y)  # evaluate needs no optimizer
    with pytest.raises(RuntimeError, match=r"model\.set\(optimizer=\.\.\.\)"):
        model.train(X, y)
    with pytest.raises(ValueError, match="no layers"):
        pn.Model().predict(X)
    with pytest.raises(ValueError, match="do not chain"):
        pn.Model([pn.Dense(2, 4), pn.ReLU(), pn.Dense(5, 3)]).predict(X)


# --- softmax + cross-entropy ------------------------------------------------------------------


def _count_softmax_backward(model, monkeypatch):
    """Counts the runs of the Softmax's backward math (its ``vjp``, which the training step
    and the book's ``backward`` both call)."""
    softmax, calls = model.layers[-1], []
    original = softmax.vjp

    def counted(params, context, dvalues):
        calls.append(1)
        return original(params, context, dvalues)

    monkeypatch.setattr(softmax, "vjp", counted)
    return calls


@pytest.mark.parametrize(
    ("loss", "fused"),
    [
        (pn.CategoricalCrossentropy, True),
        (pn.SoftmaxCategoricalCrossentropy, True),
        (nnfs.Activation_Softmax_Loss_CategoricalCrossentropy, True),
        (PlainSubclassCCE, True),
        (UnfusedCCE, False),
        (ChangedMathCCE, False),
    ],
)
def test_softmax_with_cross_entropy_is_fused_automatically(backend, monkeypatch, loss, fused):
    X, y = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(2, 8), pn.ReLU(), pn.Dense(8, 3), pn.Softmax()])
    model.set(loss=loss(), optimizer=pn.SGD())
    calls = _count_softmax_backward(model, monkeypatch)
    model.train(X, y, epochs=2, print_every=None, compile=False)  # a compiler traces it once
    assert len(calls) == (0 if fused else 2)


@pytest.mark.parametrize("loss", [pn.CategoricalCrossentropy, pn.SoftmaxCategoricalCrossentropy])
@pytest.mark.parametrize("one_hot", [False, True])
def test_fused_gradients_equal_the_unfused_chain(backend64, loss, one_hot):
    X, y = pn.datasets.spiral(20, 3)
    if one_hot:
        y = np.eye(3, dtype=np.float32)[y]
    pn.seed(1)
    model = pn.Model([pn.Dense(2, 16), pn.ReLU(), pn.Dense(16, 3), pn.Softmax()])
    model.set(loss=loss(), optimizer=pn.SGD(learning_rate=0.5))
    pn.seed(1)  # the same weights, in layers driven by hand through the unfused chain
    dense1, relu, dense2, softmax = pn.Dense(2, 16), pn.ReLU(), pn.Dense(16, 3), pn.Softmax()
    Xb, yb = backend64.asarray(X), backend64.asarray(y)
    out = softmax.forward(dense2.forward(relu.forward(dense1.forward(Xb))))
    dvalues = softmax.backward(pn.CategoricalCrossentropy().backward(out, yb))
    dense1.backward(relu.backward(dense2.backward(dvalues)))

    step = Step(model.finalize())  # the training step's gradients: fused
    params, state, _ = step.gather()
    grads, _, _ = step.gradients(params, state, Xb, yb, None)
    model.train(X, y, epochs=1, print_every=None)  # one full-batch step
    for i, mine, manual in ((0, model.layers[0], dense1), (2, model.layers[2], dense2)):
        for name in ("weights", "biases"):
            np.testing.assert_allclose(
                host(grads[f"layers/{i}/{name}"]),
                host(getattr(manual, "d" + name)),
                rtol=1e-9,
                atol=1e-12,
            )
        np.testing.assert_allclose(
            host(mine.weights),
            host(manual.weights) - 0.5 * host(manual.dweights),
            rtol=1e-12,
            atol=1e-15,
        )


@pytest.mark.parametrize(
    "loss",
    [
        pn.CategoricalCrossentropy,
        pn.SoftmaxCategoricalCrossentropy,
        nnfs.Activation_Softmax_Loss_CategoricalCrossentropy,
        PlainSubclassCCE,
        UnfusedCCE,
    ],
)
def test_every_cross_entropy_variant_trains_the_same_network(backend64, loss):
    # Fused or not, the same math must give the same parameters (a subclass of the fused loss
    # once had Softmax's backward applied on top of the logits' gradient: 0.22 off a step).
    X, y = pn.datasets.spiral(20, 3)

    def trained(loss_class):
        pn.seed(3)
        model = pn.Model([pn.Dense(2, 16), pn.ReLU(), pn.Dense(16, 3), pn.Softmax()])
        model.set(loss=loss_class(), optimizer=pn.SGD(learning_rate=0.5))
        model.train(X, y, epochs=5, print_every=None)
        return host_parameters(model)

    assert_parameters_equal(trained(loss), trained(pn.CategoricalCrossentropy), rtol=1e-9)


def test_the_books_combined_loss_resumes_after_save_and_load(backend, tmp_path):
    X, y = pn.datasets.spiral(20, 3)

    def build():
        pn.seed(4)
        model = pn.Model([pn.Dense(2, 16), pn.ReLU(), pn.Dense(16, 3), pn.Softmax()])
        loss = nnfs.Activation_Softmax_Loss_CategoricalCrossentropy()
        return model.set(loss=loss, optimizer=pn.Adam(learning_rate=0.02))

    straight = build()
    straight.train(X, y, epochs=6, print_every=None, shuffle=False)
    resumed = build()
    resumed.train(X, y, epochs=3, print_every=None, shuffle=False)
    resumed.save(tmp_path / "m.npz")
    resumed = pn.Model.load(tmp_path / "m.npz")
    resumed.train(X, y, epochs=3, print_every=None, shuffle=False)
    assert_parameters_equal(host_parameters(resumed), host_parameters(straight), rtol=1e-6)


def test_a_fused_loss_whose_math_changed_is_refused(backend):
    class Doubled(pn.SoftmaxCategoricalCrossentropy):
        def backward(self, dvalues, y_true):
            return 2 * super().backward(dvalues, y_true)

    X, y = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(2, 3), pn.Softmax()])
    model.set(loss=Doubled(), optimizer=pn.SGD())
    before = host_parameters(model)
    with pytest.raises(ValueError, match="declares no fused_activation"):
        model.train(X, y)
    assert_parameters_equal(host_parameters(model), before)


def test_a_softmax_whose_math_changed_is_not_fused(backend, monkeypatch):
    class ScaledSoftmax(pn.Softmax):
        def forward(self, inputs, training=False):
            return super().forward(2 * inputs, training)

    X, y = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(2, 3), ScaledSoftmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.SGD())
    calls = _count_softmax_backward(model, monkeypatch)
    model.train(X, y, epochs=2, print_every=None)
    assert len(calls) == 2
    model.set(loss=pn.SoftmaxCategoricalCrossentropy())
    with pytest.raises(ValueError, match=r"needs the model to end in a plain pn.Softmax\(\)"):
        model.train(X, y)


def test_softmax_cross_entropy_loss_needs_a_softmax_output(backend):
    X, y = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(2, 3), pn.Linear()])
    model.set(loss=pn.SoftmaxCategoricalCrossentropy(), optimizer=pn.SGD())
    with pytest.raises(ValueError, match=r"needs the model to end in a plain pn.Softmax\(\)"):
        model.train(X, y)


# --- small models -----------------------------------------------------------------------------


def test_a_one_layer_model_fits_a_line(backend):
    X, y = regression_data(64)
    model = pn.Model([pn.Dense(2, 1)])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(learning_rate=0.5))
    history = model.train(X, y, epochs=200, print_every=None)
    ((weights, biases),) = host_parameters(model)
    np.testing.assert_allclose(weights, [[1.0], [-2.0]], atol=1e-3)
    np.testing.assert_allclose(biases, [[0.5]], atol=1e-3)
    assert history["loss"][-1] < 1e-6
    np.testing.assert_allclose(host(model.predict(X)), y, atol=1e-3)


def test_a_one_dense_softmax_classifier_learns(backend):
    X, y = pn.datasets.vertical(50, 3)
    model = pn.Model([pn.Dense(2, 3), pn.Softmax()])  # the fused backward reaches layer 0
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(learning_rate=0.05))
    history = model.train(X, y, epochs=150, print_every=None)
    # The classes overlap a little: a linear boundary gets about 0.91 (0.34 at the start).
    assert history["accuracy"][-1] >= 0.85
    assert model.evaluate(X, y)[1] >= 0.85


# --- the training loop ------------------------------------------------------------------------


def test_history_has_every_key_for_every_epoch(backend):
    X, y = pn.datasets.spiral(20, 3)
    X_val, y_val = pn.datasets.spiral(10, 3)
    model = pn.Model(
        [pn.Dense(2, 8, weight_regularizer_l2=1e-3), pn.ReLU(), pn.Dense(8, 3), pn.Softmax()]
    )
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.02, decay=0.1))
    loss0, accuracy0 = model.evaluate(X, y)
    history = model.train(X, y, epochs=5, validation_data=(X_val, y_val), print_every=None)
    assert list(history) == list(HISTORY_KEYS)
    assert all(len(values) == 5 for values in history.values())
    assert history["epoch"] == [1, 2, 3, 4, 5]
    for key in HISTORY_KEYS[1:]:
        assert all(type(v) is float and np.isfinite(v) for v in history[key]), key
    # Full batch: epoch 1's figures are those of the initial model, and the last validation
    # figures are those of the final model.
    assert history["data_loss"][0] == pytest.approx(loss0, rel=1e-5)
    assert history["accuracy"][0] == pytest.approx(accuracy0)
    val_loss, val_accuracy = model.evaluate(X_val, y_val)
    assert history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-5)
    assert history["val_accuracy"][-1] == pytest.approx(val_accuracy)
    for loss, data, reg in zip(
        history["loss"], history["data_loss"], history["regularization_loss"], strict=True
    ):
        assert loss == pytest.approx(data + reg) and reg > 0
    assert history["learning_rate"] == pytest.approx([0.02 / (1 + 0.1 * t) for t in range(5)])

    again = model.train(X, y, epochs=2, print_every=None)  # a new call, a new history
    assert again["epoch"] == [1, 2]
    assert again["val_loss"] == [None, None] and again["val_accuracy"] == [None, None]


BOOK_LINE = re.compile(
    r"epoch: (\d+), acc: (\d\.\d{3}), loss: (\d+\.\d{3}) \(data_loss: (\d+\.\d{3}), "
    r"reg_loss: (\d+\.\d{3})\), lr: ([0-9.e+-]+)"
)


def test_print_every_prints_the_book_summary_line(backend, capsys):
    X, y = pn.datasets.spiral(20, 3)
    X_val, y_val = pn.datasets.spiral(10, 3)
    model = classifier(optimizer=pn.Adam(0.02, decay=0.1))
    history = model.train(X, y, epochs=5, print_every=2, validation_data=(X_val, y_val))
    out, err = capsys.readouterr()
    assert err == ""  # no progress bar off a terminal
    lines = out.splitlines()
    assert len(lines) == 6  # epochs 2 and 4, and the last one, each with its validation line
    for i, epoch in enumerate((2, 4, 5)):
        match = BOOK_LINE.fullmatch(lines[2 * i])
        assert match, lines[2 * i]
        e = epoch - 1
        assert int(match[1]) == epoch
        assert match[2] == f"{history['accuracy'][e]:.3f}"
        assert match[3] == f"{history['loss'][e]:.3f}"
        assert float(match[6]) == pytest.approx(history["learning_rate"][e])
        assert lines[2 * i + 1] == (
            f"validation, acc: {history['val_accuracy'][e]:.3f}, loss: {history['val_loss'][e]:.3f}"
        )

    for quiet in (None, 0):
        model.train(X, y, epochs=3, print_every=quiet)
        assert capsys.readouterr() == ("", "")
    model.train(X, y, epochs=1)  # the default prints every epoch
    assert BOOK_LINE.fullmatch(capsys.readouterr().out.strip())


def test_shuffle_false_is_the_books_loop_and_handles_the_last_partial_batch(backend):
    X, y = regression_data(10)
    pn.seed(3)
    model = regressor()
    pn.seed(3)
    layers = [pn.Dense(2, 8), pn.Tanh(), pn.Dense(8, 1), pn.Linear()]
    loss, optimizer = pn.MeanSquaredError(), pn.Adam(0.01)
    # Eager, to compare exactly (a compiled step's own trajectory is test_step's).
    history = model.train(
        X, y, epochs=2, batch_size=3, shuffle=False, print_every=None, compile=False
    )
    assert model.optimizer.iterations == 8  # ceil(10 / 3) steps per epoch

    Xb, yb = backend.asarray(X), backend.asarray(y)
    for _ in range(2):  # the book's loop, in order: batches of 3, 3, 3 and 1
        losses = []
        for start in range(0, 10, 3):
            batch = slice(start, min(start + 3, 10))  # the standard has no out-of-range stops
            out = Xb[batch, ...]
            for layer in layers:
                out = layer.forward(out, training=True)
            losses.append(host(loss.forward(out, yb[batch, ...])))
            dvalues = loss.backward(out, yb[batch, ...])
            for layer in reversed(layers):
                dvalues = layer.backward(dvalues)
            optimizer.step(layers)
        assert [len(b) for b in losses] == [3, 3, 3, 1]
    assert_parameters_equal(
        host_parameters(model), [(host(la.weights), host(la.biases)) for la in layers[::2]]
    )
    # The epoch's loss is the mean over all 10 samples, not the mean of the batch means.
    assert history["data_loss"][-1] == pytest.approx(float(np.concatenate(losses).mean()))


def test_shuffle_is_repeatable_with_seed(backend):
    X, y = pn.datasets.spiral(20, 3)

    def run(seed, shuffle):
        pn.seed(seed)
        model = classifier()
        model.train(X, y, epochs=3, batch_size=8, shuffle=shuffle, print_every=None)
        return host_parameters(model)

    shuffled = run(0, True)
    assert_parameters_equal(shuffled, run(0, True))
    assert_parameters_equal(run(0, False), run(0, False))
    # The spiral comes in class order, so batches in that order train a different model.
    assert not np.allclose(shuffled[0][0], run(0, False)[0][0])


def test_batch_size_beyond_the_data_is_one_batch(backend):
    X, y = pn.datasets.spiral(5, 3)
    model = classifier()
    model.train(X, y, epochs=2, batch_size=1000, print_every=None)
    assert model.optimizer.iterations == 2


def test_numpy_integers_are_accepted_as_counts(backend):
    X, y = pn.datasets.spiral(5, 3)
    model = classifier()
    model.train(X, y, epochs=np.int64(2), batch_size=np.int32(4), print_every=np.int64(0))
    assert model.optimizer.iterations == 8


def test_waiting_epochs_do_not_pile_up_parameters(backend):
    """A silent run reads its figures back every few epochs, so the parameters kept for a
    possible restore do not grow with the number of epochs."""
    X, y = pn.datasets.spiral(5, 3)
    alive_counts, refs = [], []

    class Watching(pn.SGD):
        def post_update_params(self):
            super().post_update_params()
            refs.append(weakref.ref(model.layers[0].weights))
            alive_counts.append(sum(ref() is not None for ref in refs))

    model = classifier(optimizer=Watching(0.1))
    model.train(X, y, epochs=100, print_every=None)
    assert max(alive_counts) <= 12


# --- evaluate and predict ---------------------------------------------------------------------


def test_predict_in_batches_equals_predict_at_once(backend):
    X, _ = pn.datasets.spiral(20, 3)
    model = classifier()
    whole = model.predict(X)
    assert library_of(whole) == backend.name and tuple(whole.shape) == (60, 3)
    batched = model.predict(X, batch_size=7)
    assert library_of(batched) == backend.name
    np.testing.assert_allclose(host(batched), host(whole), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(host(whole).sum(axis=1), 1, rtol=1e-5)


def test_evaluate_returns_floats(backend):
    X, y = pn.datasets.spiral(20, 3)
    model = classifier()
    model.train(X, y, epochs=5, print_every=None)
    loss, accuracy = model.evaluate(X, y)
    assert type(loss) is float and type(accuracy) is float
    probabilities = host(model.predict(X))
    expected = -np.log(np.clip(probabilities[np.arange(60), y], 1e-7, 1 - 1e-7)).mean()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert accuracy == pytest.approx((probabilities.argmax(axis=1) == y).mean())
    assert model.evaluate(X, y, batch_size=7) == pytest.approx((loss, accuracy), rel=1e-5)


# --- parameters -------------------------------------------------------------------------------


def test_get_and_set_parameters_round_trip(backend):
    X, y = pn.datasets.spiral(20, 3)
    trained = classifier()
    trained.train(X, y, epochs=5, print_every=None)
    pn.seed(7)
    fresh = classifier()
    fresh.set_parameters(trained.get_parameters())
    np.testing.assert_array_equal(host(fresh.predict(X)), host(trained.predict(X)))

    pn.seed(7)
    from_numpy = classifier()
    before = host_parameters(from_numpy)
    # NumPy float64 arrays land on the model's backend, in the model's dtype.
    from_numpy.set_parameters([(w.astype(np.float64), b) for w, b in host_parameters(trained)])
    for w, b in from_numpy.get_parameters():
        assert library_of(w) == library_of(b) == backend.name
        assert host(w).dtype == host(b).dtype == np.float32
    assert_parameters_equal(host_parameters(from_numpy), host_parameters(trained))

    from_numpy.set_parameters([(np.ones(w.shape, int), np.zeros(b.shape, int)) for w, b in before])
    for w, b in from_numpy.get_parameters():  # integers become the model's floats
        assert host(w).dtype == host(b).dtype == np.float32


@pytest.mark.parametrize(
    "bad",
    [
        lambda p: [p[0], (p[1][0][:, :2], p[1][1])],  # the last weights one column short
        lambda p: [p[0], (p[1][0], p[1][1].reshape(-1))],  # biases 1-D
        lambda p: [(p[0][0].T, p[0][1]), p[1]],  # the first weights transposed
        lambda p: p[:1],  # one pair for two layers
        lambda p: p + p[:1],
    ],
)
def test_set_parameters_with_wrong_shapes_raises_and_changes_nothing(backend, bad):
    model = classifier()
    before = model.get_parameters()
    before_host = host_parameters(model)
    with pytest.raises(ValueError, match="expected shape|parameter pairs"):
        model.set_parameters(bad(host_parameters(model)))
    after = model.get_parameters()
    assert all(
        a is b for pa, pb in zip(before, after, strict=True) for a, b in zip(pa, pb, strict=True)
    )
    assert_parameters_equal(host_parameters(model), before_host)


# --- state dicts ------------------------------------------------------------------------------


def _other_values(model):
    """``model.state_dict()`` as host copies with every number changed, so that a load that
    set anything before it refused would show."""
    state = {k: host(v) + 1 if hasattr(v, "shape") else v for k, v in model.state_dict().items()}
    state["optimizer/iterations"] += 7
    state["optimizer/current_learning_rate"] /= 2
    return state


def _add(key, like):
    return lambda state: state.update({key: state[like]})


def _move(old, new):
    return lambda state: state.update({new: state.pop(old)})


# (how a good state dict of the 2-8-3 Adam classifier is spoilt, what the error says)
BAD_STATE_DICTS = {
    "no optimizer/iterations": (
        lambda s: s.pop("optimizer/iterations"),
        r"optimizer state but no optimizer/iterations; give optimizer/iterations and",
    ),
    "no optimizer/current_learning_rate": (
        lambda s: s.pop("optimizer/current_learning_rate"),
        "optimizer state but no optimizer/current_learning_rate; give",
    ),
    "an optimizer key of 3 parts": (
        _add("optimizer/0/weights", "optimizer/0/weights/cache"),
        r"key 'optimizer/0/weights' is not optimizer/<i>/<name>/<field>",
    ),
    "an optimizer key of 5 parts": (
        _add("optimizer/0/weights/cache/old", "optimizer/0/weights/cache"),
        r"key 'optimizer/0/weights/cache/old' is not optimizer/<i>/<name>/<field>",
    ),
    "a layer index that is not an integer": (
        _move("optimizer/2/weights/cache", "optimizer/two/weights/cache"),
        r"'optimizer/two/weights/cache': 'two' is not the index of one of the model's 4 layers",
    ),
    "a layer index with a leading zero": (
        _move("optimizer/2/weights/cache", "optimizer/02/weights/cache"),
        r"'02' is not the index of one of the model's 4 layers \(0 to 3\)",
    ),
    "a negative layer index": (
        _move("optimizer/2/weights/cache", "optimizer/-2/weights/cache"),
        r"'-2' is not the index of one of the model's 4 layers",
    ),
    "the index of no layer": (
        _add("optimizer/4/weights/cache", "optimizer/2/weights/cache"),
        r"'optimizer/4/weights/cache': '4' is not the index of one of the model's 4 layers",
    ),
    "a layer without parameters": (
        _add("optimizer/1/weights/cache", "optimizer/0/weights/cache"),
        r"'optimizer/1/weights/cache': layer 1 \(ReLU\(\)\) has no parameter 'weights'",
    ),
    "a parameter the layer lacks": (
        _add("optimizer/2/kernel/cache", "optimizer/2/weights/cache"),
        r"layer 2 \(Dense\(8, 3\)\) has no parameter 'kernel' \(its parameters: \['weights'",
    ),
    "an unknown field": (
        _add("optimizer/2/weights/velocity", "optimizer/2/weights/cache"),
        r"'optimizer/2/weights/velocity': Adam keeps no 'velocity' state \(its fields: moment",
    ),
    "a missing field": (
        lambda s: s.pop("optimizer/2/biases/momentum"),
        r"holds optimizer/2/biases/cache but not \['optimizer/2/biases/momentum'\]; Adam needs",
    ),
    "optimizer state of the wrong shape": (
        lambda s: s.update({"optimizer/0/weights/cache": np.ones((8, 2), np.float32)}),
        r"optimizer state 0/weights/cache has shape \(8, 2\), the parameter \(2, 8\)",
    ),
    "negative iterations": (
        lambda s: s.update({"optimizer/iterations": -1}),
        "iterations must be a non-negative integer",
    ),
    "a NaN learning rate": (
        lambda s: s.update({"optimizer/current_learning_rate": float("nan")}),
        "current_learning_rate must be a number",
    ),
    "a parameter of no layer": (
        _add("layers/4/weights", "layers/2/weights"),
        r"parameters do not fit the model: missing \[\], extra \['layers/4/weights'\]; give",
    ),
    "a missing parameter": (
        lambda s: s.pop("layers/2/biases"),
        r"missing \['layers/2/biases'\], extra \[\]",
    ),
    "a parameter of the wrong shape": (
        lambda s: s.update({"layers/0/weights": s["layers/0/weights"].T}),
        r"layers/0/weights: expected shape \(2, 8\), got \(8, 2\)",
    ),
    "a misspelt prefix": (
        _move("layers/0/weights", "layer/0/weights"),
        r"holds \['layer/0/weights'\], neither parameters \(layers/<i>/<name>\) nor optimizer",
    ),
    "a bare name beside the parameters": (
        _add("weights", "layers/0/weights"),
        r"holds \['weights'\], neither parameters",
    ),
    "a key that is not a string": (lambda s: s.update({0: s["layers/0/weights"]}), r"holds \[0\]"),
}


def test_a_state_dict_of_other_values_loads_whole(backend):
    """The control for the table: the good dict the bad ones are made from loads, every value
    of it, so each refusal below is the spoilt key's."""
    model = _trained("classifier")
    state = _other_values(model)
    model.load_state_dict(state)
    after = model.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(host(after[key]), value)


@pytest.mark.parametrize("case", list(BAD_STATE_DICTS))
def test_a_bad_state_dict_raises_one_value_error_and_changes_nothing(backend, case):
    spoil, match = BAD_STATE_DICTS[case]
    model = _trained("classifier")
    check = _unchanged(model)
    state = _other_values(model)
    spoil(state)
    with pytest.raises(ValueError, match=match) as caught:
        model.load_state_dict(state)
    assert "\n" not in str(caught.value)
    check()


def test_optimizer_state_into_a_model_without_an_optimizer_is_refused(backend):
    state = _other_values(_trained("classifier"))
    model = pn.Model([pn.Dense(2, 8), pn.ReLU(), pn.Dense(8, 3), pn.Softmax()])
    before = host_parameters(model)
    with pytest.raises(ValueError, match=r"model has no optimizer; set one first with model\.set"):
        model.load_state_dict(state)
    assert_parameters_equal(host_parameters(model), before)
    assert model.optimizer is None
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("layers/")})
    assert_parameters_equal(
        host_parameters(model), [(state[f"layers/{i}/weights"], state[f"layers/{i}/biases"])
                                 for i in (0, 2)]
    )  # fmt: skip


def test_optimizer_state_into_sgd_without_momentum_is_refused(backend):
    state = _other_values(_trained("classifier"))
    model = classifier(optimizer=pn.SGD())
    check = _unchanged(model)
    with pytest.raises(ValueError, match=r"SGD keeps no 'cache' state \(its fields: none\)"):
        model.load_state_dict(state)
    check()


def _optimizer_values(model):
    """``model.optimizer.state_dict(model.layers)`` as host copies, every number changed."""
    state = model.optimizer.state_dict(model.layers)
    nested = {
        i: {name: {f: host(v) + 1 for f, v in fields.items()} for name, fields in by.items()}
        for i, by in state["state"].items()
    }
    return {"iterations": 9, "current_learning_rate": 0.5, "state": nested}


BAD_OPTIMIZER_STATE_DICTS = {
    "no iterations": (lambda s: s.pop("iterations"), r"missing \['iterations'\], unknown \[\]"),
    "no current_learning_rate": (
        lambda s: s.pop("current_learning_rate"),
        r"missing \['current_learning_rate'\]",
    ),
    "an unknown key": (lambda s: s.update(momentum=0.9), r"unknown \['momentum'\]"),
    "a model's flat state dict": (
        lambda s: s.update({"optimizer/iterations": s.pop("iterations")}),
        r"unknown \['optimizer/iterations'\]; a model's flat state dict goes to model\.load_st",
    ),
    "state that is not a dict": (
        lambda s: s.update(state=list(s["state"].values())),
        "optimizer state must map layer indices to dicts, got",
    ),
    "a layer's state that is not a dict": (
        lambda s: s["state"].update({0: list(s["state"][0].values())}),
        "optimizer state for layer 0 must map parameter names to dicts of fields",
    ),
    "a parameter's state that is not a dict": (
        lambda s: s["state"][2].update(biases=None),
        "optimizer state for layer 2 must map parameter names to dicts of fields",
    ),
    "a boolean layer index": (
        lambda s: s["state"].update({False: s["state"].pop(0)}),
        "optimizer state for layer False, but 4 layers",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OPTIMIZER_STATE_DICTS))
def test_a_bad_optimizer_state_dict_raises_one_value_error_and_changes_nothing(backend, case):
    spoil, match = BAD_OPTIMIZER_STATE_DICTS[case]
    model = _trained("classifier")
    check = _unchanged(model)
    good = _optimizer_values(model)
    pn.Adam().load_state_dict(good, model.layers)  # the control: the unspoilt dict loads
    spoil(good)
    with pytest.raises(ValueError, match=match) as caught:
        model.optimizer.load_state_dict(good, model.layers)
    assert "\n" not in str(caught.value)
    check()
    with pytest.raises(ValueError, match="an optimizer state dict is a dict"):
        model.optimizer.load_state_dict([good], model.layers)


# --- moving between backends ------------------------------------------------------------------


def _assert_on(model, name, dtype):
    arrays = [a for pair in model.get_parameters() for a in pair]
    arrays += [a for states in model.optimizer.state.values() for s in states.values() for a in s]
    assert arrays and all(library_of(a) == name for a in arrays)
    assert all(host(a).dtype == dtype for a in arrays)
    assert model.backend.name == name


def test_to_moves_parameters_and_optimizer_state_and_training_continues(backend64):
    # Float64: in float32, Adam turns the rounding noise of near-zero gradients into visible
    # differences between libraries within a few steps.
    X, y = pn.datasets.spiral(20, 3)
    name = backend64.name

    def build():
        pn.seed(0)
        return classifier(optimizer=pn.Adam(0.02, decay=1e-2))

    reference = build()
    reference.train(X, y, epochs=6, print_every=None)

    with pn.use_backend("numpy", dtype="float64"):
        model = build()
    model.train(X, y, epochs=2, print_every=None)
    _assert_on(model, "numpy", np.float64)
    assert model.to(name) is model
    _assert_on(model, name, np.float64)
    model.train(X, y, epochs=2, print_every=None)
    model.to("numpy")
    _assert_on(model, "numpy", np.float64)
    model.train(X, y, epochs=2, print_every=None)
    assert model.optimizer.iterations == reference.optimizer.iterations == 6
    assert model.optimizer.current_learning_rate == reference.optimizer.current_learning_rate
    assert_parameters_equal(
        host_parameters(model), host_parameters(reference), rtol=1e-9, atol=1e-12
    )


def test_to_a_dtype_converts_parameters_and_state(backend):
    X, y = pn.datasets.spiral(10, 3)
    model = classifier()
    model.train(X, y, epochs=2, print_every=None)
    model.to(backend.name, dtype="float64")
    _assert_on(model, backend.name, np.float64)
    model.train(X, y, epochs=1, print_every=None)
    _assert_on(model, backend.name, np.float64)
    model.to(backend.name, dtype="float32")
    _assert_on(model, backend.name, np.float32)


@pytest.mark.parametrize("make", [classifier, binary, regressor])
def test_a_float32_model_stays_float32_through_training(backend, make):
    X64 = np.random.RandomState(0).uniform(-1, 1, (30, 2))  # float64 data
    if make is classifier:
        y = np.arange(30) % 3
    elif make is binary:
        y = (X64[:, :1] > 0).astype(np.float64)
    else:
        y = X64[:, :1] * 2.0
    model = make()
    model.train(X64, y, epochs=3, batch_size=8, validation_data=(X64, y), print_every=None)
    _assert_on(model, backend.name, np.float32)
    assert host(model.predict(X64)).dtype == np.float32


# --- divergence -------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [1, 3])
def test_an_update_to_infinity_is_never_kept(backend, epochs):
    # One SGD step of 1e21 takes the weight to inf (its loss, measured before the step, is
    # finite): neither the last epoch nor a restore may leave infinite weights behind.
    model = pn.Model([pn.Dense(1, 1), pn.Linear()])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(1e21))
    before = host_parameters(model)
    X, y = np.ones((4, 1), np.float32), np.full((4, 1), 1e18, np.float32)
    with pytest.raises(FloatingPointError, match="from the start of epoch 1,"):
        model.train(X, y, epochs=epochs, print_every=None)
    assert_parameters_equal(host_parameters(model), before)
    assert model.optimizer.iterations == 0


@pytest.mark.parametrize("print_every", [1, None])
@pytest.mark.parametrize(
    ("batch_size", "learning_rate", "finite_epochs"),
    [(None, 1e6, True), (4, 2.0, True), (4, 1e6, False)],  # the last diverges in epoch 1
)
def test_divergence_raises_and_keeps_the_last_finite_epoch(
    backend, print_every, batch_size, learning_rate, finite_epochs
):
    # |x| up to 10 and SGD at these rates: each step multiplies the weight's error many times
    # over, so the squared error overflows float32 within a few epochs (epoch 3 here) while
    # the weights stay finite.
    X = np.linspace(-10, 10, 16, dtype=np.float32).reshape(-1, 1)
    y = 3 * X

    def build():
        pn.seed(0)
        model = pn.Model([pn.Dense(1, 1), pn.Linear()])
        return model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(learning_rate))

    model = build()
    kwargs = {"batch_size": batch_size, "shuffle": False}
    with pytest.raises(FloatingPointError) as caught:
        model.train(X, y, epochs=30, print_every=print_every, **kwargs)
    message = str(caught.value)
    assert "Try a lower learning rate" in message
    bad = int(re.search(r"the loss of epoch (\d+) became (?:inf|nan)", message)[1])
    # The parameters kept are those the last finite epoch loss was measured from: the start
    # of epoch bad - 1 (the end of epoch bad - 1 is what epoch bad's loss measured).
    good = bad - 1
    assert (good >= 1) == finite_epochs
    kept_from = f"the start of epoch {good}" if good else "the start of this train call"
    assert f"keeps its parameters from {kept_from}" in message
    kept = host_parameters(model)
    assert all(np.isfinite(a).all() for pair in kept for a in pair)
    assert caught.value.history["epoch"] == list(range(1, good + 1))

    reference = build()  # the same model, trained for the epochs before the last finite one
    if good > 1:
        history = reference.train(X, y, epochs=good - 1, print_every=None, **kwargs)
        assert np.isfinite(history["loss"]).all()
    assert_parameters_equal(kept, host_parameters(reference))
    assert model.optimizer.iterations == reference.optimizer.iterations


# --- bad input --------------------------------------------------------------------------------

N = 30


def _data(kind):
    X = np.random.RandomState(0).uniform(-1, 1, (N, 2)).astype(np.float32)
    if kind == "classifier":
        return X, np.arange(N) % 3
    if kind == "binary":
        return X, (X[:, :1] > 0).astype(np.float32)
    return X, X[:, :1] * 2


def _with(X, row, value):
    X = X.copy()
    X[row, 0] = value
    return X


# (model, what to change, exception, message)
BAD_TRAIN = [
    ("classifier", lambda X, y: (X[:-1], y), {}, ValueError, "different lengths"),
    ("classifier", lambda X, y: (X, y[:-1]), {}, ValueError, "different lengths"),
    ("classifier", lambda X, y: (X, y[0]), {}, ValueError, "different lengths"),
    ("classifier", lambda X, y: (np.c_[X, X], y), {}, ValueError, "4 features"),
    ("classifier", lambda X, y: (X[:, 0], y), {}, ValueError, "2-D"),
    ("classifier", lambda X, y: (X[:0], y[:0]), {}, ValueError, "no samples"),
    ("classifier", lambda X, y: (_with(X, 3, np.nan), y), {}, ValueError, "NaN"),
    ("classifier", lambda X, y: (_with(X, 3, np.inf), y), {}, ValueError, "infinite"),
    ("classifier", lambda X, y: (_with(X, 3, -np.inf), y), {}, ValueError, "infinite"),
    ("classifier", lambda X, y: (X, y + 1), {}, ValueError, r"labels must lie in \[0, 3\)"),
    ("classifier", lambda X, y: (X, y - 1), {}, ValueError, r"labels must lie in \[0, 3\)"),
    ("classifier", lambda X, y: (X, y.astype(np.float32)), {}, TypeError, "integers"),
    ("classifier", lambda X, y: (X, np.eye(4)[y]), {}, ValueError, "one-hot"),
    ("classifier", lambda X, y: (X, np.eye(3)[y][:, :, None]), {}, ValueError, "class indices"),
    ("binary", lambda X, y: (X, y[:, 0]), {}, ValueError, r"reshape it with y\.reshape"),
    ("binary", lambda X, y: (X, y * 2), {}, ValueError, r"in \[0, 1\]"),
    ("binary", lambda X, y: (X, np.c_[y, y]), {}, ValueError, r"shape \(30, 1\)"),
    ("regressor", lambda X, y: (X, _with(y, 2, np.nan)), {}, ValueError, "NaN or infinity"),
    ("regressor", lambda X, y: (X, y[:, 0]), {}, ValueError, "reshape"),
]
BAD_TRAIN += [
    ("classifier", lambda X, y: (X, y), {name: value}, ValueError, f"{name} must be a positive")
    for name in ("epochs", "batch_size")
    for value in (0, -1, 2.5, True, "3")
]
BAD_TRAIN += [
    ("classifier", lambda X, y: (X, y), {"print_every": -1}, ValueError, "print_every"),
    ("classifier", lambda X, y: (X, y), {"print_every": 1.5}, ValueError, "print_every"),
    (
        "classifier",
        lambda X, y: (X, y),
        {"validation_data": (np.ones((5, 2)),)},
        ValueError,
        "a pair",
    ),
    ("classifier", lambda X, y: (X, y), {"validation_data": np.ones((5, 2))}, ValueError, "a pair"),
    (
        "classifier",
        lambda X, y: (X, y),
        {"validation_data": (np.ones((5, 3)), np.zeros(5, int))},
        ValueError,
        "3 features",
    ),
    (
        "classifier",
        lambda X, y: (X, y),
        {"validation_data": (np.ones((5, 2)), np.full(5, 3))},
        ValueError,
        "labels must lie",
    ),
]
MAKERS = {"classifier": classifier, "binary": binary, "regressor": regressor}


def _trained(kind):
    model = MAKERS[kind]()
    model.train(*_data(kind), epochs=2, print_every=None)  # so the optimizer has state
    return model


def _unchanged(model):
    before = host_parameters(model), optimizer_state(model)

    def check():
        assert_parameters_equal(host_parameters(model), before[0])
        iterations, lr, arrays = optimizer_state(model)
        assert (iterations, lr) == before[1][:2]
        assert arrays.keys() == before[1][2].keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, before[1][2][key])

    return check


@pytest.mark.parametrize(("kind", "change", "kwargs", "error", "match"), BAD_TRAIN)
def test_bad_input_to_train_raises_and_changes_nothing(backend, kind, change, kwargs, error, match):
    model = _trained(kind)
    check = _unchanged(model)
    X, y = change(*_data(kind))
    kwargs = {"epochs": 2, "print_every": None, **kwargs}
    with pytest.raises(error, match=match):
        model.train(X, y, **kwargs)
    check()


BAD_EVALUATE = [row for row in BAD_TRAIN if not row[2]]


@pytest.mark.parametrize(("kind", "change", "kwargs", "error", "match"), BAD_EVALUATE)
def test_bad_input_to_evaluate_raises_and_changes_nothing(
    backend, kind, change, kwargs, error, match
):
    model = _trained(kind)
    check = _unchanged(model)
    with pytest.raises(error, match=match):
        model.evaluate(*change(*_data(kind)))
    check()


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.ones((4, 3)), "3 features"),
        (np.ones(4), "2-D"),
        (np.ones((4, 2, 1)), "2-D"),
        (np.ones((0, 2)), "no samples"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[np.inf, 0.0]]), "infinite"),
    ],
)
def test_bad_input_to_predict_raises(backend, X, match):
    model = _trained("classifier")
    check = _unchanged(model)
    with pytest.raises(ValueError, match=match):
        model.predict(X)
    check()


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size_to_evaluate_and_predict_raises(backend, batch_size):
    model = _trained("classifier")
    X, y = _data("classifier")
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        model.evaluate(X, y, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        model.predict(X, batch_size=batch_size)


def test_arrays_of_another_library_raise_and_numpy_is_always_accepted(backend):
    others = [b for b in CPU_BACKENDS if b not in ("numpy", backend.name)]
    if not others:
        pytest.skip("no other array library is installed")
    model = _trained("classifier")
    check = _unchanged(model)
    X, y = _data("classifier")
    for other in others:
        Xo, yo = pn.to_backend(X, other), pn.to_backend(y, other)
        hint = rf"got a {other} array.*portnn\.to_backend\(x, '{backend.name}'\)"
        for method, args, kwargs in (
            (model.train, (Xo, y), {"print_every": None}),
            (model.train, (X, yo), {"print_every": None}),
            (model.train, (X, y), {"validation_data": (Xo, yo), "print_every": None}),
            (model.evaluate, (Xo, yo), {}),
            (model.predict, (Xo,), {}),
        ):
            with pytest.raises(TypeError, match=hint):
                method(*args, **kwargs)
            check()
    # NumPy, and the model's own arrays, are accepted.
    model.train(X, y, epochs=1, print_every=None)
    mine = pn.to_backend(X, backend.name), pn.to_backend(y, backend.name)
    model.train(*mine, epochs=1, print_every=None)
    assert model.optimizer.iterations == 4
    np.testing.assert_allclose(host(model.predict(mine[0])), host(model.predict(X)))


# --- what goes in must be what it seems -------------------------------------------------------


def test_layers_on_two_dtypes_are_refused_at_finalize(backend):
    model = pn.Model([pn.Dense(2, 4), pn.ReLU(), pn.Dense(4, 3, dtype="float64"), pn.Softmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.SGD())
    X, y = pn.datasets.spiral(5, 3)
    with pytest.raises(ValueError, match=r"different backends or dtypes.*model.to\(backend"):
        model.train(X, y)
    model.to(backend.name, "float32")
    model.train(X, y, print_every=None)
    assert host(model.predict(X)).dtype == np.float32


def test_layers_on_two_backends_are_refused_at_finalize(backend):
    other = "array_api_strict" if backend.name != "array_api_strict" else "numpy"
    if other not in pn.available_backends():
        pytest.skip(f"needs a second backend ({other} is not installed)")
    model = pn.Model([pn.Dense(2, 4), pn.ReLU(), pn.Dense(4, 3, backend=other), pn.Softmax()])
    with pytest.raises(ValueError, match=f"different backends.*{other}"):
        model.finalize()


def test_numpy_numbers_are_taken_wherever_numbers_are(backend):
    # Dense(2, y.max() + 1) with the library's own uint8 labels was refused.
    X, y = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(np.int64(2), y.max() + 1, weight_regularizer_l2=np.float32(1e-4))])
    model.add(pn.Dropout(np.float64(0.1))).add(pn.LeakyReLU(np.float32(0.1))).add(pn.Softmax())
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(np.float32(1e-3)))
    history = model.train(X, y, epochs=np.int32(2), batch_size=np.uint8(10), print_every=None)
    assert history["epoch"] == [1, 2]
    assert model.layers[0].n_neurons == 3 and type(model.layers[0].n_neurons) is int


@pytest.mark.parametrize("make", [lambda: pn.Dense(True, 3), lambda: pn.Dropout(True)])
def test_booleans_are_not_numbers(make):
    with pytest.raises(ValueError, match="must be"):
        make()


def test_float64_data_beyond_float32_range_is_named_as_such(backend):
    model = pn.Model([pn.Dense(1, 1), pn.Linear()])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD())
    X = np.array([[1.0], [1e39]])
    with pytest.raises(ValueError, match=r"beyond the range of float32.*float64"):
        model.predict(X)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.predict(np.array([[1.0], [np.inf]]))


def test_torch_inputs_that_require_grad_are_refused(backend):
    if backend.name != "torch":
        pytest.skip("torch tensors are another library's arrays on this backend")
    import torch

    model = pn.Model([pn.Dense(2, 3), pn.Softmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.SGD())
    X, y = pn.datasets.spiral(5, 3)
    X = torch.tensor(X, requires_grad=True)
    before = host_parameters(model)
    with pytest.raises(TypeError, match=r"requires grad.*detach"):
        model.train(X, torch.tensor(y))
    with pytest.raises(TypeError, match=r"requires grad.*detach"):
        model.layers[0].forward(X)
    assert_parameters_equal(host_parameters(model), before)
    model.train(X.detach(), torch.tensor(y), epochs=2, print_every=None)
    assert not any(p.requires_grad for pair in model.get_parameters() for p in pair)


@pytest.mark.parametrize(
    ("output", "loss", "expected"),
    [
        (pn.Softmax, pn.CategoricalCrossentropy, lambda out: out.argmax(axis=1)),
        (pn.Sigmoid, pn.BinaryCrossentropy, lambda out: (out > 0.5).astype(np.int64)),
        (pn.Linear, pn.MeanSquaredError, lambda out: out),
    ],
)
def test_predict_classes_is_the_output_layers_predictions(backend, output, loss, expected):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 3)).astype(np.float32)
    model = pn.Model([pn.Dense(3, 4, weight_scale=1.0), output()]).set(loss=loss())
    outputs = host(model.predict(X, batch_size=3))
    classes = host(model.predict_classes(X, batch_size=3))
    np.testing.assert_array_equal(classes, expected(outputs))


# --- describing itself -----------------------------------------------------------------------


def test_summary_counts_the_books_fashion_mnist_network(backend, capsys):
    model = pn.recipes.build("fashion-mnist")
    assert model.count_parameters() == 118_282 == 784 * 128 + 128 + 128 * 128 + 128 + 1290
    model.summary()
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["layer", "output", "shape", "parameters"]
    assert "0  Dense(784, 128)" in out[2] and out[2].endswith("100,480")
    assert "(batch, 10)" in out[-5] and out[-5].endswith(" 0")  # the Softmax row
    assert out[-3] == "parameters: 118,282"
    assert out[-1] == f"backend: {backend.name}, device: {backend.device}, dtype: float32"


def test_repr_is_one_short_line():
    model = pn.Model([pn.Dense(2, 64, weight_regularizer_l2=5e-4), pn.ReLU(), pn.Dense(64, 3)])
    model.add(pn.Softmax()).set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.05))
    assert repr(model) == (
        "Model(2-64-3, 4 layers, 387 parameters, loss=CategoricalCrossentropy(), "
        "optimizer=Adam(learning_rate=0.05))"
    )
    assert repr(model.layers[0]) == "Dense(2, 64, weight_regularizer_l2=0.0005)"
