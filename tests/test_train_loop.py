"""``Model.train``, ``evaluate`` and ``predict`` against loops written out by hand: dropout acts
in training and only there, each epoch draws a new order that keeps every sample with its
target, the history's regularization loss is the last batch's (the book's), evaluation keeps
the training precision, and one SGD step moves each parameter by the finite-difference
gradient of the model's loss (Adam would hide a gradient's scale).

Float64 throughout: the hand loops then agree with the model to rounding, so a tight
tolerance separates a right loop from a wrong one."""

from __future__ import annotations

import math
import signal

import numpy as np
import pytest
from helpers import assert_parameters_equal, host, host_parameters, numeric_grad

import portnn as pn
from portnn import random

TIGHT = {"rtol": 1e-10, "atol": 1e-13}


def regression_data(n=12, seed=1):
    X = np.random.RandomState(seed).uniform(-1, 1, (n, 2))
    return X, X[:, :1] - 2 * X[:, 1:] + 0.5


def forward(layers, X, training):
    for layer in layers:
        X = layer.forward(X, training=training)
    return X


def hand_step(layers, loss, optimizer, X, y):
    """One batch of the book's loop (training mode); returns the per-sample losses on the host."""
    output = forward(layers, X, training=True)
    losses = host(loss.forward(output, y))
    dvalues = loss.backward(output, y)
    for layer in reversed(layers):
        dvalues = layer.backward(dvalues)
    optimizer.step(layers)
    return losses


def trainable(layers):
    return [(host(la.weights), host(la.biases)) for la in layers if la.param_names]


def book_regularization(layers):
    """The book's penalty of every Dense layer, in NumPy from host copies of its parameters."""
    total = 0.0
    for la in layers:
        if isinstance(la, pn.Dense):
            W, b = host(la.weights), host(la.biases)
            total += la.weight_regularizer_l1 * np.abs(W).sum()
            total += la.weight_regularizer_l2 * (W * W).sum()
            total += la.bias_regularizer_l1 * np.abs(b).sum()
            total += la.bias_regularizer_l2 * (b * b).sum()
    return total


# --- dropout acts in training ---------------------------------------------------------------


def dropout_regressor():
    pn.seed(5)  # also restarts the device stream the dropout masks are drawn from
    return [pn.Dense(2, 16), pn.ReLU(), pn.Dropout(0.5), pn.Dense(16, 1), pn.Linear()]


def test_train_runs_dropout_like_a_hand_loop_with_training_true(backend64):
    X, y = regression_data()
    model = pn.Model(dropout_regressor()).set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.1))
    history = model.train(X, y, epochs=2, batch_size=5, shuffle=False, print_every=None)

    def hand(dropout):
        layers, loss, optimizer = dropout_regressor(), pn.MeanSquaredError(), pn.SGD(0.1)
        if not dropout:
            layers = [la for la in layers if not isinstance(la, pn.Dropout)]
        Xb, yb, means = backend64.asarray(X), backend64.asarray(y), []
        for _ in range(2):
            losses = [
                hand_step(layers, loss, optimizer, Xb[s, ...], yb[s, ...])
                for s in (slice(0, 5), slice(5, 10), slice(10, 12))
            ]
            means.append(float(np.concatenate(losses).mean()))
        return trainable(layers), means

    params, means = hand(dropout=True)
    assert_parameters_equal(host_parameters(model), params, **TIGHT)
    assert history["data_loss"] == pytest.approx(means, rel=1e-10)
    # The masks matter: without them the same steps end elsewhere, so a model that ran its
    # training forward with training=False could not have matched.
    undropped, _ = hand(dropout=False)
    assert not np.allclose(undropped[0][0], params[0][0], rtol=1e-3)


# --- evaluation runs in inference mode ------------------------------------------------------


def test_evaluate_predict_and_validation_leave_dropout_out(backend64):
    X, y = pn.datasets.spiral(20, 3)
    X_val, y_val = pn.datasets.spiral(10, 3)
    model = pn.Model([pn.Dense(2, 32), pn.ReLU(), pn.Dropout(0.5), pn.Dense(32, 3), pn.Softmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.02))
    history = model.train(X, y, epochs=5, validation_data=(X_val, y_val), print_every=None)

    (W1, b1), (W2, b2) = host_parameters(model)

    def inference(X):  # the network with its Dropout layer as the identity, in NumPy
        z = np.maximum(X @ W1 + b1, 0) @ W2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    for data, labels in ((X, y), (X_val, y_val)):
        p = inference(data)
        loss = -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)).mean()
        accuracy = (p.argmax(axis=1) == labels).mean()
        np.testing.assert_allclose(host(model.predict(data)), p, **TIGHT)
        np.testing.assert_allclose(host(model.predict(data, batch_size=7)), p, **TIGHT)
        assert model.evaluate(data, labels) == pytest.approx((loss, accuracy), rel=1e-10)
    # The last epoch's validation figures are the final model's, in inference mode too.
    assert history["val_loss"][-1] == pytest.approx(loss, rel=1e-10)
    assert history["val_accuracy"][-1] == pytest.approx(accuracy, rel=1e-10)


# --- shuffling ------------------------------------------------------------------------------


def test_each_epoch_draws_a_new_order_and_batches_follow_it(backend64, monkeypatch):
    orders, draw = [], random.permutation

    def recorded(n, backend):
        order = draw(n, backend)
        orders.append(host(order))
        return order

    monkeypatch.setattr(random, "permutation", recorded)
    X, y = regression_data(10)

    def layers():
        pn.seed(2)
        return [pn.Dense(2, 6), pn.Tanh(), pn.Dense(6, 1), pn.Linear()]

    model = pn.Model(layers()).set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.2))
    history = model.train(X, y, epochs=3, batch_size=4, print_every=None)

    assert len(orders) == 3, "one permutation per epoch"
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(10))
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])

    # The book's loop over each epoch's order, with each X row and its y row taken together.
    hand, loss, optimizer = layers(), pn.MeanSquaredError(), pn.SGD(0.2)
    for epoch, order in enumerate(orders):
        losses = []
        for start in range(0, 10, 4):
            rows = order[start : start + 4]
            batch = backend64.asarray(X[rows]), backend64.asarray(y[rows])
            losses.append(hand_step(hand, loss, optimizer, *batch))
        assert history["data_loss"][epoch] == pytest.approx(np.concatenate(losses).mean(), 1e-10)
    assert_parameters_equal(host_parameters(model), trainable(hand), **TIGHT)


def test_shuffled_batches_keep_each_sample_with_its_target(backend64):
    # Started at the exact solution of y = X w + b, every aligned batch has zero loss and zero
    # gradient, so nothing moves; a batch whose targets belong to other rows would move it.
    X = np.random.RandomState(3).uniform(-1, 1, (32, 2))
    w, b = np.array([[1.5], [-2.0]]), np.array([[0.25]])
    model = pn.Model([pn.Dense(2, 1), pn.Linear()])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.1))
    model.set_parameters([(w, b)])
    history = model.train(X, X @ w + b, epochs=3, batch_size=5, print_every=None)
    assert max(history["data_loss"]) < 1e-28
    assert_parameters_equal(host_parameters(model), [(w, b)], atol=1e-14)


# --- the history's regularization loss --------------------------------------------------------


def test_regularization_loss_is_the_last_batchs_as_in_the_book(backend64):
    X, y = regression_data(12)

    def layers():
        pn.seed(4)
        return [
            pn.Dense(2, 8, weight_regularizer_l2=0.05, bias_regularizer_l1=0.02),
            pn.Tanh(),
            pn.Dense(8, 1, weight_regularizer_l1=0.03, bias_regularizer_l2=0.04),
            pn.Linear(),
        ]

    model = pn.Model(layers()).set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.5))
    model.layers[2].biases = backend64.asarray(np.full((1, 1), 0.3))  # a bias penalty to see
    history = model.train(X, y, epochs=2, batch_size=5, shuffle=False, print_every=None)

    hand, loss, optimizer = layers(), pn.MeanSquaredError(), pn.SGD(0.5)
    hand[2].biases = backend64.asarray(np.full((1, 1), 0.3))
    Xb, yb = backend64.asarray(X), backend64.asarray(y)
    for epoch in range(2):
        penalties = []  # each batch's penalty, of the parameters its forward pass used
        for s in (slice(0, 5), slice(5, 10), slice(10, 12)):
            penalties.append(book_regularization(hand))
            hand_step(hand, loss, optimizer, Xb[s, ...], yb[s, ...])
        # The steps move the penalty enough to tell the batches apart.
        assert abs(penalties[-1] - penalties[0]) > 1e-3 * penalties[-1]
        assert history["regularization_loss"][epoch] == pytest.approx(penalties[-1], rel=1e-10)
        assert history["loss"][epoch] == pytest.approx(
            history["data_loss"][epoch] + penalties[-1], rel=1e-12
        )
    assert_parameters_equal(host_parameters(model), trainable(hand), **TIGHT)


# --- RegressionAccuracy keeps the training precision ------------------------------------------


def test_evaluate_and_validation_use_the_training_precision(backend64):
    # The model predicts x from the start, so training on y = x moves nothing, and it keeps
    # predicting x while the other figures are taken.
    X = np.linspace(-1, 1, 50).reshape(-1, 1)
    precision = np.std(X) / 250
    model = pn.Model([pn.Dense(1, 1), pn.Linear()])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.1), accuracy=pn.RegressionAccuracy())
    model.set_parameters([(np.ones((1, 1)), np.zeros((1, 1)))])

    # Other data, 100 times as spread as the training targets: 6 of its 10 targets lie within
    # half the training precision of x, 4 at twice it. Their own precision would be about 100
    # times as wide and count all 10.
    X_eval = np.linspace(-100, 100, 10).reshape(-1, 1)
    offsets = np.where(np.arange(10)[:, None] % 3 == 0, 2.0, 0.5) * precision
    offsets[::2] *= -1
    y_eval = X_eval + offsets
    assert np.std(y_eval) / 250 > 50 * precision

    history = model.train(X, X, epochs=1, validation_data=(X_eval, y_eval), print_every=None)
    assert model.accuracy.precision == pytest.approx(precision, rel=1e-12)
    assert history["accuracy"] == [1.0]
    assert history["val_accuracy"][0] == pytest.approx(0.6, rel=1e-12)  # rows 0, 3, 6, 9 miss
    loss, accuracy = model.evaluate(X_eval, y_eval)
    assert accuracy == pytest.approx(0.6, rel=1e-12)
    assert loss == pytest.approx(np.mean(offsets**2), rel=1e-9)
    assert model.accuracy.precision == pytest.approx(precision, rel=1e-12)
    # Nor does a second training call on the other data: the book's init keeps the first.
    history = model.train(X_eval, y_eval, epochs=1, print_every=None)
    assert model.accuracy.precision == pytest.approx(precision, rel=1e-12)
    assert history["accuracy"] == [pytest.approx(0.6, rel=1e-12)]


# --- one SGD step against finite differences --------------------------------------------------


class UnfusedCCE(pn.CategoricalCrossentropy):
    """Categorical cross-entropy run unfused: a subclass that overrides its math is not fused,
    so the model runs this backward and then Softmax's."""

    def backward(self, dvalues, y_true):
        return super().backward(dvalues, y_true)


# name: (loss, output activation, outputs, targets of X)
HEADS = {
    "softmax_cce_fused": (pn.CategoricalCrossentropy, pn.Softmax, 3, lambda X: np.arange(9) % 3),
    "softmax_cce_unfused": (UnfusedCCE, pn.Softmax, 3, lambda X: np.eye(3)[np.arange(9) % 3]),
    "sigmoid_bce": (pn.BinaryCrossentropy, pn.Sigmoid, 2, lambda X: (X[:, :2] > 0) * 1.0),
    "mse": (pn.MeanSquaredError, pn.Linear, 2, lambda X: X[:, :2] * X[:, 1:] + 0.3),
    "mae": (pn.MeanAbsoluteError, pn.Linear, 1, lambda X: 5.0 + X[:, :1] - X[:, 1:2]),
}


@pytest.mark.parametrize(("loss", "activation", "outputs", "targets"), HEADS.values(), ids=HEADS)
def test_an_sgd_step_follows_the_finite_difference_gradient(
    backend64, loss, activation, outputs, targets
):
    # Every loss's backward is the gradient of the *mean* loss: a missing 1/N, a flipped sign
    # or a gradient on the wrong axis changes the step SGD takes (Adam's would not see a scale).
    X = np.random.RandomState(7).uniform(-1, 1, (9, 3))
    y = targets(X)
    model = pn.Model(
        [
            pn.Dense(3, 4, weight_regularizer_l2=0.01, weight_init="glorot"),
            pn.Tanh(),
            pn.Dense(4, outputs, bias_regularizer_l1=0.01, weight_init="glorot"),
            activation(),
        ]
    )
    model.set(loss=loss(), optimizer=pn.SGD(learning_rate=0.1))
    rng = np.random.RandomState(8)  # biases off 0, where the L1 penalty has its kink
    model.set_parameters([(w, rng.uniform(0.1, 0.5, b.shape)) for w, b in host_parameters(model)])
    start = host_parameters(model)
    shapes = [a.shape for pair in start for a in pair]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflatten(flat):
        arrays = np.split(flat, np.cumsum(sizes)[:-1])
        arrays = [a.reshape(s) for a, s in zip(arrays, shapes, strict=True)]
        return list(zip(arrays[::2], arrays[1::2], strict=True))

    def objective(flat):
        model.set_parameters(unflatten(flat))
        return model.evaluate(X, y)[0] + book_regularization(model.layers)

    flat = np.concatenate([a.ravel() for pair in start for a in pair])
    gradient = unflatten(numeric_grad(objective, flat))
    model.set_parameters(start)
    model.train(X, y, epochs=1, print_every=None)  # one full-batch step
    want = [(w - 0.1 * gw, b - 0.1 * gb) for (w, b), (gw, gb) in zip(start, gradient, strict=True)]
    assert_parameters_equal(host_parameters(model), want, rtol=1e-7, atol=1e-9)


# --- validation_split: which samples are held out --------------------------------------------


class Seen(pn.callbacks.Callback):
    """Keeps the run's training and validation data, as the loop holds them."""

    def on_train_begin(self, run):
        self.X, self.y = host(run.X), host(run.y)
        self.X_val, self.y_val = host(run.val[0]), host(run.val[1])


def _classifier(seed=0):
    pn.seed(seed)
    model = pn.Model([pn.Dense(2, 8), pn.ReLU(), pn.Dense(8, 3), pn.Softmax()])
    return model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.01))


def _rows(X):
    return sorted(map(tuple, X.tolist()))


@pytest.mark.parametrize(
    ("mode", "held_per_class"),
    [("shuffle", None), ("stratified", {0: 5, 1: 5, 2: 5})],
)
def test_validation_split_draws_its_rows_from_the_seed(backend64, mode, held_per_class):
    pn.seed(3)
    X, y = pn.datasets.spiral(25, 3)  # ordered by class: 25 of 0, then 1, then 2
    X = X + np.arange(len(X))[:, None] * 1e-6  # each class starts at (0, 0): rows made unique

    def split(seed):
        seen, model = Seen(), _classifier()
        pn.seed(seed)  # the split's seed: after the model's, which draws its weights
        model.train(
            X,
            y,
            validation_split=0.2,
            validation_split_mode=mode,
            print_every=None,
            callbacks=[seen],
        )
        return seen

    seen = split(3)
    assert len(seen.y_val) == 15 and len(seen.y) == 60
    # A partition of the samples, each kept with its target and in its original order.
    assert _rows(np.r_[seen.X, seen.X_val]) == _rows(X)
    index = {row: i for i, row in enumerate(map(tuple, X.tolist()))}
    for part_X, part_y in ((seen.X, seen.y), (seen.X_val, seen.y_val)):
        where = [index[row] for row in map(tuple, part_X.tolist())]
        assert where == sorted(where)
        np.testing.assert_array_equal(part_y, y[where])
    counts = {c: int((seen.y_val == c).sum()) for c in range(3)}
    if held_per_class is not None:
        assert counts == held_per_class
    assert seen.y_val.tolist() != y[-15:].tolist()  # not the last rows
    # One seed, one split; another seed, another.
    np.testing.assert_array_equal(split(3).X_val, seen.X_val)
    assert _rows(split(4).X_val) != _rows(seen.X_val)


def test_a_last_samples_split_of_class_ordered_data_warns(backend64):
    pn.seed(3)
    X, y = pn.datasets.spiral(20, 3)
    with pytest.warns(
        UserWarning,
        match=r"training part has classes the validation part lacks "
        r"\[0, 1\].*validation_split_mode='stratified'",
    ):
        _classifier().train(X, y, validation_split=0.2, print_every=None)
    # Held-out classes the training part lacks: the first samples last.
    with pytest.warns(
        UserWarning,
        match=r"validation part has classes the training part lacks "
        r"\[0\]",
    ):
        _classifier().train(X[::-1], y[::-1], validation_split=0.4, print_every=None)
    # Classes on both sides: no warning (warnings are errors in this suite).
    _classifier().train(
        X, y, validation_split=0.2, validation_split_mode="stratified", print_every=None
    )
    mixed = np.random.RandomState(0).permutation(len(y))
    _classifier().train(X[mixed], y[mixed], validation_split=0.2, print_every=None)
    # One-hot targets are classes too.
    with pytest.warns(UserWarning, match="lacks"):
        _classifier().train(X, np.eye(3)[y], validation_split=0.2, print_every=None)


def test_a_regression_split_never_warns_and_cannot_be_stratified(backend64):
    X, y = regression_data(20)
    model = pn.Model([pn.Dense(2, 1), pn.Linear()]).set(
        loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.1)
    )
    before = host_parameters(model)
    model.train(X, y, validation_split=0.25, print_every=None, shuffle=False)
    after = host_parameters(model)
    for mode, match in (("stratified", "needs class labels.*'shuffle'"), ("random", "one of")):
        with pytest.raises(ValueError, match=match):
            model.train(X, y, validation_split=0.25, validation_split_mode=mode)
    assert_parameters_equal(host_parameters(model), after)
    assert not np.array_equal(before[0][0], after[0][0])


# --- initial_epoch and the validation line's name ----------------------------------------------


def test_initial_epoch_continues_the_count_as_keras_does(backend64, capsys):
    X, y = pn.datasets.spiral(10, 3)
    seen = []

    class Epochs(pn.callbacks.Callback):
        def on_epoch_begin(self, run, epoch):
            seen.append(epoch)

    model, reference = _classifier(), _classifier()
    reference.train(X, y, epochs=5, batch_size=10, print_every=None, shuffle=False)
    model.train(X, y, epochs=3, batch_size=10, print_every=None, shuffle=False)
    capsys.readouterr()
    history = model.train(
        X,
        y,
        epochs=5,
        initial_epoch=3,
        batch_size=10,
        print_every=2,
        shuffle=False,
        callbacks=[Epochs()],
    )
    assert history["epoch"] == [4, 5] and seen == [4, 5]
    lines = [line.split(",")[0] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["epoch: 4", "epoch: 5"]  # every 2nd epoch, and the last
    assert model.optimizer.iterations == reference.optimizer.iterations == 5 * 3
    assert_parameters_equal(host_parameters(model), host_parameters(reference), **TIGHT)
    for initial, epochs in ((5, 5), (6, 5)):
        with pytest.raises(ValueError, match="initial_epoch.*leaves no epoch"):
            model.train(X, y, epochs=epochs, initial_epoch=initial)
    with pytest.raises(ValueError, match="initial_epoch"):
        model.train(X, y, epochs=5, initial_epoch=-1)
    assert model.optimizer.iterations == 15


def test_the_validation_line_takes_its_name(backend64, capsys):
    X, y = pn.datasets.spiral(10, 3)
    _classifier().train(X, y, epochs=2, validation_data=(X, y), print_every=1)
    out = capsys.readouterr().out
    assert out.count("\nvalidation, acc: ") == 2 and "test, acc" not in out
    _classifier().train(X, y, epochs=2, validation_data=(X, y), validation_label="test")
    out = capsys.readouterr().out
    assert out.count("\ntest, acc: ") == 2 and "validation" not in out
    with pytest.raises(ValueError, match="validation_label"):
        _classifier().train(X, y, validation_label="")


# --- the loop's edges ---------------------------------------------------------------------------


class Poisoning(pn.SGD):
    """SGD whose ``at``-th step leaves one element of one parameter infinite."""

    def __init__(self, at, layer, name):
        super().__init__(0.1)
        self.at, self.layer, self.name = at, layer, name

    def post_update_params(self):
        super().post_update_params()
        if self.iterations == self.at:
            layer = self.layer
            value = getattr(layer, self.name)
            xp = pn.get_backend().xp
            first = xp.reshape(xp.arange(math.prod(value.shape)), value.shape) == 0
            setattr(layer, self.name, xp.where(first, xp.asarray(np.inf), value))


@pytest.mark.parametrize("name", ["weights", "biases"])
def test_one_parameter_going_infinite_in_the_last_update_is_caught(backend64, name):
    X, y = regression_data(12)
    pn.seed(0)
    layers = [pn.Dense(2, 4), pn.ReLU(), pn.Dense(4, 1), pn.Linear()]
    model = pn.Model(layers).set(
        loss=pn.MeanSquaredError(), optimizer=Poisoning(6, layers[2], name)
    )
    with pytest.raises(FloatingPointError, match="update of epoch 2 made parameters NaN or inf"):
        model.train(X, y, epochs=2, batch_size=4, shuffle=False, print_every=None)
    # Back to the start of epoch 2, the state its finite loss vouched for.
    assert model.optimizer.iterations == 3
    pn.seed(0)
    reference = pn.Model([pn.Dense(2, 4), pn.ReLU(), pn.Dense(4, 1), pn.Linear()])
    reference.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.1))
    reference.train(X, y, epochs=1, batch_size=4, shuffle=False, print_every=None)
    assert_parameters_equal(host_parameters(model), host_parameters(reference), **TIGHT)


class InterruptAt(pn.ReLU):
    """A ReLU that raises SIGINT in its ``at``-th training forward pass, as if Ctrl-C came."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, inputs, training=False):
        if training:
            self.calls += 1
            if self.calls == self.at:
                signal.raise_signal(signal.SIGINT)
        return super().forward(inputs, training)


@pytest.mark.parametrize("print_every", [None, 1, 5])
def test_ctrl_c_without_callbacks_keeps_the_completed_epochs_history(backend64, print_every):
    X, y = regression_data(12)
    pn.seed(0)
    model = pn.Model([pn.Dense(2, 4), InterruptAt(8), pn.Dense(4, 1), pn.Linear()])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.SGD(0.1))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as nohup may not
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            model.train(X, y, epochs=10, batch_size=4, shuffle=False, print_every=print_every)
    finally:
        signal.signal(signal.SIGINT, previous)
    # Ctrl-C came in epoch 3's second forward pass: that step completes, the next never
    # starts, and the history holds the two whole epochs.
    history = caught.value.history
    assert history["epoch"] == [1, 2]
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert model.optimizer.iterations == 2 * 3 + 2
