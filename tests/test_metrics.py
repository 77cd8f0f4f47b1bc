"""Accuracies: categorical (indices, one-hot, binary), binary, regression, accumulated means."""

import numpy as np
import pytest

import portnn as pn

PREDICTED = np.array([0, 2, 1, 1, 0, 2])
LABELS = np.array([0, 2, 2, 1, 1, 0])  # 3 of 6 right


@pytest.mark.parametrize(
    ("make", "predictions", "y", "expected"),
    [
        (pn.CategoricalAccuracy, PREDICTED, LABELS, 0.5),
        (pn.CategoricalAccuracy, PREDICTED, LABELS.astype(np.uint8), 0.5),
        (pn.CategoricalAccuracy, PREDICTED, np.eye(3)[LABELS], 0.5),
        (pn.CategoricalAccuracy, PREDICTED, np.eye(3, dtype=np.int64)[LABELS], 0.5),
        (pn.CategoricalAccuracy, PREDICTED, PREDICTED, 1.0),
        (pn.CategoricalAccuracy, PREDICTED[:1], LABELS[:1], 1.0),
        (
            lambda: pn.CategoricalAccuracy(binary=True),
            np.array([[1, 0], [0, 0], [1, 1]]),
            np.array([[1, 1], [0, 0], [0, 1]]),
            4 / 6,
        ),
        (
            pn.BinaryAccuracy,
            np.array([[1], [0], [1], [1]]),
            np.array([[1.0], [0.0], [0.0], [1.0]]),
            0.75,
        ),
        (pn.BinaryAccuracy, np.array([[1], [0], [1], [1]]), np.array([[1], [0], [0], [0]]), 0.5),
    ],
)
def test_accuracy(backend, make, predictions, y, expected):
    metric = make()
    got = metric.calculate(backend.asarray(predictions), backend.asarray(y))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12)
    assert metric.calculate_accumulated() == pytest.approx(expected, rel=1e-12)


def test_binary_accuracy_of_sigmoid_outputs(backend):
    outputs = backend.asarray(np.array([[0.9], [0.2], [0.6], [0.4]]))
    y = backend.asarray(np.array([[1], [0], [0], [0]]))
    predictions = pn.Sigmoid().predictions(outputs)
    assert pn.BinaryAccuracy().calculate(predictions, y) == pytest.approx(0.75)


# Rows whose largest entry is not their column's: an argmax over the wrong axis of either the
# probabilities or the one-hot labels cannot give these rows' classes (1, 2, 0, 1).
PROBS = np.array([[0.3, 0.6, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.1, 0.5, 0.4]])


@pytest.mark.parametrize("one_hot", [False, True])
def test_categorical_accuracy_of_softmax_outputs(backend, one_hot):
    labels = np.array([1, 2, 0, 0])  # the last row is wrong: 3 of 4
    y = np.eye(3)[labels] if one_hot else labels
    predictions = pn.Softmax().predictions(backend.asarray(PROBS))
    np.testing.assert_array_equal(pn.to_numpy(predictions), [1, 2, 0, 1])
    got = pn.CategoricalAccuracy().calculate(predictions, backend.asarray(y))
    assert got == pytest.approx(0.75, rel=1e-12)


def test_accumulated_mean_weighs_samples_not_batches(backend):
    metric = pn.CategoricalAccuracy()
    assert metric.calculate(backend.asarray(PREDICTED[:2]), backend.asarray(LABELS[:2])) == 1.0
    assert metric.calculate(backend.asarray(PREDICTED[2:]), backend.asarray(LABELS[2:])) == 0.25
    assert metric.calculate_accumulated() == pytest.approx(0.5)  # 3 of 6, not (1 + 0.25) / 2
    metric.new_pass()
    with pytest.raises(RuntimeError, match="new_pass"):
        metric.calculate_accumulated()
    metric.calculate(backend.asarray(PREDICTED[2:]), backend.asarray(LABELS[2:]))
    assert metric.calculate_accumulated() == pytest.approx(0.25)


def test_regression_accuracy_precision_is_fixed_by_the_first_init(backend):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((500, 1)) * 3
    metric = pn.RegressionAccuracy()
    with pytest.raises(RuntimeError, match="init"):
        metric.calculate(backend.asarray(y), backend.asarray(y))
    metric.init(backend.asarray(y))
    precision = np.std(y.astype(np.float32)) / 250
    assert metric.precision == pytest.approx(precision, rel=1e-5)
    metric.init(backend.asarray(y * 10))  # only once...
    assert metric.precision == pytest.approx(precision, rel=1e-5)
    metric.init(backend.asarray(y * 10), reinit=True)  # ...unless asked again
    assert metric.precision == pytest.approx(10 * precision, rel=1e-5)
    metric.init(backend.asarray(y), reinit=True)

    offsets = np.where(np.arange(500)[:, None] % 5 == 0, 2.0, 0.5) * precision  # 4 in 5 within
    predictions = backend.asarray(y + offsets)
    assert metric.calculate(predictions, backend.asarray(y)) == pytest.approx(0.8)


def test_regression_accuracy_takes_integer_targets_and_a_given_precision(backend):
    y = np.arange(10).reshape(-1, 1)
    metric = pn.RegressionAccuracy()
    metric.init(backend.asarray(y))
    assert metric.precision == pytest.approx(np.std(np.arange(10)) / 250, rel=1e-6)
    fixed = pn.RegressionAccuracy(precision=0.5)
    fixed.init(backend.asarray(y))
    assert fixed.precision == 0.5
    predictions = backend.asarray(y + np.array([[0.4], [0.6]] * 5))
    assert fixed.calculate(predictions, backend.asarray(y)) == pytest.approx(0.5)
