"""Losses: per-sample values, finite-difference backward, the fused softmax + cross-entropy,
accumulated means, regularization, and clear errors on bad targets."""

import numpy as np
import pytest
from helpers import assert_grad, numeric_grad

import portnn as pn

EPS = 1e-7
LABEL_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def probabilities(n=6, classes=4, seed=0):
    logits = np.random.default_rng(seed).standard_normal((n, classes))
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def labels(n=6, classes=4, seed=1):
    return np.random.default_rng(seed).permutation(np.arange(n) % classes)


def _mean_of(per_sample):
    return float(np.mean(pn.to_numpy(per_sample)))


def book_cce(p, y):
    p = np.clip(p, EPS, 1 - EPS)
    if y.ndim == 1:
        return -np.log(p[np.arange(len(p)), y])
    return -np.log(np.sum(p * y, axis=1))


def book_bce(p, y):
    p = np.clip(p, EPS, 1 - EPS)
    return np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)), axis=-1)


def regression_data(outputs):
    rng = np.random.default_rng(2)
    y = rng.standard_normal((6, outputs))
    # |p - y| >= 0.1: MAE has a kink where they meet.
    p = y + rng.choice([-1.0, 1.0], size=y.shape) * rng.uniform(0.1, 1.0, size=y.shape)
    return p, y


def binary_data(outputs):
    rng = np.random.default_rng(3)
    return rng.uniform(0.05, 0.95, (6, outputs)), rng.integers(0, 2, (6, outputs)).astype(float)


def categorical_data(target):
    p = probabilities()
    y = labels()
    if target == "one_hot":
        return p, np.eye(4)[y]
    if target == "one_hot_int":
        return p, np.eye(4, dtype=np.int64)[y]
    return p, y.astype(target)


# name: (loss class, data, NumPy per-sample losses)
LOSSES = {
    **{
        f"cce_{t}": (pn.CategoricalCrossentropy, categorical_data(t), book_cce)
        for t in [*LABEL_DTYPES, "one_hot", "one_hot_int"]
    },
    **{f"bce_{k}": (pn.BinaryCrossentropy, binary_data(k), book_bce) for k in (1, 3)},
    **{
        f"mse_{k}": (
            pn.MeanSquaredError,
            regression_data(k),
            lambda p, y: np.mean((y - p) ** 2, axis=-1),
        )
        for k in (1, 3)
    },
    **{
        f"mae_{k}": (
            pn.MeanAbsoluteError,
            regression_data(k),
            lambda p, y: np.mean(np.abs(y - p), axis=-1),
        )
        for k in (1, 3)
    },
}
CASES = pytest.mark.parametrize(("cls", "data", "reference"), LOSSES.values(), ids=LOSSES.keys())


@CASES
def test_forward_and_calculate(backend64, cls, data, reference):
    p, y = data
    loss = cls()
    per_sample = loss.forward(backend64.asarray(p), backend64.asarray(y))
    assert per_sample.dtype == backend64.dtype
    np.testing.assert_allclose(pn.to_numpy(per_sample), reference(p, y), rtol=1e-12)
    mean = loss.calculate(backend64.asarray(p), backend64.asarray(y))
    assert isinstance(mean, float)
    assert mean == pytest.approx(reference(p, y).mean(), rel=1e-12)


@CASES
def test_backward_matches_finite_differences(backend64, cls, data, reference):
    p, y = data
    loss = cls()
    y_dev = backend64.asarray(y)
    dinputs = loss.backward(backend64.asarray(p), y_dev)
    assert loss.dinputs is dinputs
    assert dinputs.dtype == backend64.dtype
    assert_grad(dinputs, numeric_grad(lambda q: loss.calculate(backend64.asarray(q), y_dev), p))


@pytest.mark.parametrize("target", ["int64", "uint8", "one_hot"])
def test_fused_softmax_cross_entropy(backend64, target):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 4)) * 2
    y = categorical_data(target)[1]
    y_dev = backend64.asarray(y)
    fused = pn.SoftmaxCategoricalCrossentropy()
    per_sample = fused.forward(backend64.asarray(logits), y_dev)  # per sample, as every loss
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pn.to_numpy(fused.output), probs, rtol=1e-12)
    np.testing.assert_allclose(pn.to_numpy(per_sample), book_cce(probs, y), rtol=1e-12)
    assert fused.calculate(fused.output, y_dev) == pytest.approx(book_cce(probs, y).mean())

    dinputs = fused.backward(fused.output, y_dev)
    assert dinputs.dtype == backend64.dtype
    softmax, cce = pn.Softmax(), pn.CategoricalCrossentropy()
    softmax.forward(backend64.asarray(logits))
    separate = softmax.backward(cce.backward(softmax.output, y_dev))
    np.testing.assert_allclose(pn.to_numpy(dinputs), pn.to_numpy(separate), rtol=1e-9, atol=1e-15)
    assert_grad(
        dinputs,
        numeric_grad(lambda z: _mean_of(fused.forward(backend64.asarray(z), y_dev)), logits),
    )


def test_soft_labels_have_one_cross_entropy_for_loss_and_gradient(backend64):
    # Soft labels: the loss is -sum(y log p) and both backwards are its gradient (the loss
    # was once -log(sum(y p)) while the gradients were those of -sum(y log p)).
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((5, 3))
    y = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3], [0, 1, 0]])
    y_dev = backend64.asarray(y)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cce = CCE()
    per_sample = cce.forward(backend64.asarray(probs), y_dev)
    np.testing.assert_allclose(pn.to_numpy(per_sample), -(y * np.log(probs)).sum(1), rtol=1e-12)
    dprobs = cce.backward(backend64.asarray(probs), y_dev)
    assert_grad(dprobs, numeric_grad(lambda q: cce.calculate(backend64.asarray(q), y_dev), probs))
    fused = pn.SoftmaxCategoricalCrossentropy()
    fused.forward(backend64.asarray(logits), y_dev)
    dlogits = fused.backward(fused.output, y_dev)
    assert_grad(
        dlogits,
        numeric_grad(lambda z: _mean_of(fused.forward(backend64.asarray(z), y_dev)), logits),
    )


def test_unfused_backward_clips_as_the_forward_does(backend):
    # A probability of exactly 0 for the true class: finite loss, so a finite gradient too.
    p = backend.asarray(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    y = backend.asarray(np.array([0, 2]))
    cce = CCE()
    assert np.isfinite(cce.calculate(p, y))
    d = pn.to_numpy(cce.backward(p, y))
    assert np.isfinite(d).all()
    clipped = np.float32(EPS)  # the true class's probability of 0 is clipped to 1e-7
    np.testing.assert_allclose(d[1], [0, 0, -1 / clipped / 2], rtol=1e-6)
    np.testing.assert_allclose(d[0], [-1 / np.float32(1 - EPS) / 2, 0, 0], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predictions_are_clipped_so_no_log_of_zero(backend_name, dtype):
    P = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    y = np.array([1, 1])
    clipped = np.clip(P, EPS, 1 - EPS)  # in `dtype`: 1 - 1e-7 rounds in float32
    with pn.use_backend(backend_name, dtype=dtype) as b:
        got = pn.to_numpy(pn.CategoricalCrossentropy().forward(b.asarray(P), b.asarray(y)))
        np.testing.assert_allclose(got, -np.log(clipped[:, 1]), rtol=1e-6)
        bce = pn.BinaryCrossentropy()
        column = b.asarray(P[:, :1])
        got = pn.to_numpy(bce.forward(column, b.asarray(y[:, None])))
        np.testing.assert_allclose(got, -np.log(clipped[:, :1]).ravel(), rtol=1e-6)
        grad = pn.to_numpy(bce.backward(column, b.asarray(y[:, None])))
        np.testing.assert_allclose(grad, -1 / clipped[:, :1] / 2, rtol=1e-6)


def test_boolean_targets_are_zeros_and_ones(backend64):
    p = np.array([[0.9, 0.2], [0.3, 0.6], [0.5, 0.1]])
    y = np.array([[True, False], [False, True], [True, True]])
    with_bools = pn.BinaryCrossentropy().forward(backend64.asarray(p), backend64.asarray(y))
    with_floats = pn.BinaryCrossentropy().forward(backend64.asarray(p), backend64.asarray(y * 1.0))
    np.testing.assert_allclose(pn.to_numpy(with_bools), pn.to_numpy(with_floats), rtol=1e-12)
    model = pn.Model([pn.Dense(2, 2, backend=backend64), pn.Sigmoid()])
    model.set(loss=pn.BinaryCrossentropy(), optimizer=pn.Adam(), accuracy=pn.BinaryAccuracy())
    history = model.train(p, y, epochs=2, print_every=None)
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))


def test_accumulated_mean_over_batches(backend64):
    p, y = probabilities(10), labels(10)
    loss = pn.CategoricalCrossentropy()
    for part in (slice(0, 3), slice(3, 10)):  # unequal batches: a mean of samples, not batches
        loss.calculate(backend64.asarray(p[part]), backend64.asarray(y[part]))
    assert loss.calculate_accumulated() == pytest.approx(book_cce(p, y).mean(), rel=1e-12)
    loss.new_pass()
    with pytest.raises(RuntimeError, match="new_pass"):
        loss.calculate_accumulated()
    loss.calculate(backend64.asarray(p[:2]), backend64.asarray(y[:2]))
    assert loss.calculate_accumulated() == pytest.approx(book_cce(p[:2], y[:2]).mean(), rel=1e-12)


def test_regularization_loss_of_remembered_layers(backend64):
    a = pn.Dense(3, 4, weight_regularizer_l2=0.5, bias_regularizer_l1=0.25)
    b = pn.Dense(4, 2, weight_regularizer_l1=0.1)
    plain = pn.Dense(2, 2)
    rng = np.random.default_rng(6)
    for layer in (a, b, plain):
        layer.biases = backend64.asarray(rng.standard_normal(tuple(layer.biases.shape)))
    W1, b1, W2 = (pn.to_numpy(x) for x in (a.weights, a.biases, b.weights))
    expected = 0.5 * (W1**2).sum() + 0.25 * np.abs(b1).sum() + 0.1 * np.abs(W2).sum()
    loss = pn.MeanSquaredError()
    assert loss.regularization_loss() == 0
    loss.remember_trainable_layers([a, pn.ReLU(), b, plain])
    assert loss.regularization_loss() == pytest.approx(expected, rel=1e-12)
    assert loss.regularization_loss(plain) == 0
    p, y = regression_data(2)
    data, reg = loss.calculate(
        backend64.asarray(p), backend64.asarray(y), include_regularization=True
    )
    assert data == pytest.approx(np.mean((y - p) ** 2), rel=1e-12)
    assert reg == pytest.approx(expected, rel=1e-12)
    _, reg = loss.calculate_accumulated(include_regularization=True)
    assert reg == pytest.approx(expected, rel=1e-12)


# --- bad input ---------------------------------------------------------------------------

CCE = pn.CategoricalCrossentropy
BAD = [
    # loss, predictions shape, targets, error, message pattern
    (CCE, (4, 3), np.array([0, 1, 3, 2]), ValueError, r"\[0, 3\).*from 0 to 3"),
    (CCE, (4, 3), np.array([0, -1, 2, 2]), ValueError, r"\[0, 3\).*from -1 to 2"),
    (CCE, (4, 3), np.eye(4)[[0, 1, 2, 3]], ValueError, r"one-hot.*\(4, 3\).*\(4, 4\)"),
    (CCE, (4, 3), np.eye(2)[[0, 1, 1, 0]], ValueError, r"one-hot.*\(4, 3\).*\(4, 2\)"),
    (CCE, (4, 3), np.array([0, 1, 2]), ValueError, r"different lengths: 4 .* 3"),
    (CCE, (4, 3), np.zeros((5, 3)), ValueError, r"different lengths: 4 .* 5"),
    (CCE, (4, 3), np.array([0.0, 1.0, 2.0, 1.0]), TypeError, r"integers.*float"),
    (CCE, (4, 3), np.zeros((4, 3, 1)), ValueError, r"class indices \(N,\) or one-hot"),
    (CCE, (4,), np.array([0, 1, 2, 1]), ValueError, r"2-D.*\(4,\)"),
    (pn.SoftmaxCategoricalCrossentropy, (4, 3), np.array([0, 1, 5, 2]), ValueError, r"\[0, 3\)"),
    (pn.BinaryCrossentropy, (4, 1), np.array([[0], [1], [2], [1]]), ValueError, r"\[0, 1\]"),
    (pn.BinaryCrossentropy, (4, 1), np.array([0, 1, 1, 0]), ValueError, r"\(4, 1\).*reshape"),
    (pn.MeanSquaredError, (4, 2), np.zeros((4, 3)), ValueError, r"\(4, 2\).*\(4, 3\)"),
    (pn.MeanSquaredError, (4, 1), np.zeros(4), ValueError, r"y.reshape\(-1, 1\)"),
    (pn.MeanSquaredError, (4, 1), np.array([[0], [np.nan], [1], [2]]), ValueError, "NaN"),
    (pn.MeanAbsoluteError, (4, 1), np.zeros((3, 1)), ValueError, r"different lengths: 4 .* 3"),
    (pn.MeanAbsoluteError, (2, 1), np.array([[0], [np.inf]]), ValueError, "infinity"),
    # 2-D targets must be probability rows: a NaN gave nan silently, a zero row inf
    (CCE, (3, 3), np.array([[1, 0, 0], [np.nan, 1, 0], [0, 0, 1]]), ValueError, r"row 1 is"),
    (CCE, (3, 3), np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]]), ValueError, r"sum to 1.*row 2"),
    (CCE, (2, 3), np.array([[0.5, 0.6, 0], [0, 1, 0]]), ValueError, r"sum to 1.*row 0"),
    (CCE, (2, 3), np.array([[2.0, -1.0, 0], [0, 1, 0]]), ValueError, r"\[0, 1\].*row 0"),
    (pn.SoftmaxCategoricalCrossentropy, (1, 2), np.array([[0, 0]]), ValueError, "one-hot"),
]


@pytest.mark.parametrize(("cls", "shape", "y", "error", "pattern"), BAD)
def test_bad_targets_raise_a_clear_error(backend, cls, shape, y, error, pattern):
    loss = cls()
    predictions = backend.asarray(np.full(shape, 0.25))
    with pytest.raises(error, match=pattern):
        if cls is pn.SoftmaxCategoricalCrossentropy:
            loss.forward(predictions, backend.asarray(y))
        else:
            loss.calculate(predictions, backend.asarray(y))
    assert loss.accumulated_count == 0  # a refused batch does not count


@pytest.mark.parametrize(
    "loss",
    [
        pn.CategoricalCrossentropy,
        pn.SoftmaxCategoricalCrossentropy,
        pn.BinaryCrossentropy,
        pn.MeanSquaredError,
        pn.MeanAbsoluteError,
    ],
)
def test_every_loss_forward_gives_per_sample_losses(backend, loss):
    # One contract for the family: forward -> one loss per sample; calculate -> their mean.
    rng = np.random.default_rng(8)
    p = rng.uniform(0.05, 0.95, (5, 3))
    p = p / p.sum(axis=1, keepdims=True)
    y = np.array([0, 2, 1, 1, 0]) if "Categorical" in loss.__name__ else rng.integers(0, 2, (5, 3))
    instance = loss()
    per_sample = instance.forward(backend.asarray(p), backend.asarray(y))
    assert tuple(per_sample.shape) == (5,)
    outputs = instance.output if hasattr(instance, "activation") else backend.asarray(p)
    mean = instance.calculate(outputs, backend.asarray(y))
    assert mean == pytest.approx(float(np.mean(pn.to_numpy(per_sample))), rel=1e-6)


def test_the_books_combined_class_returns_the_mean():
    from portnn.nnfs import Activation_Softmax_Loss_CategoricalCrossentropy as Combined

    logits, y = np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]]), np.array([1, 2])
    loss = Combined()
    mean = loss.forward(logits, y)
    assert isinstance(mean, float)
    per_sample = pn.SoftmaxCategoricalCrossentropy().forward(logits, y)
    assert mean == pytest.approx(float(np.mean(per_sample)), rel=1e-6)
