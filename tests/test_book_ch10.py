"""The book's chapter 10 run, written with portnn's components in the book's own style:
spiral(100, 3), Dense(2, 64)-ReLU-Dense(64, 3), softmax + cross-entropy, Adam(lr=0.05,
decay=5e-7), 10,001 full-batch epochs with the three optimizer calls.

The book printed acc 0.97-0.98, loss 0.074 and lr 0.04975126853296942 at epoch 10,000.
``pn.seed(0)`` gives the book's own draw (NumPy's legacy generator seeded 0, as ``nnfs.init()``
does), so the data and the initial weights are the book's and the run lands on its figures.
"""

import numpy as np
import pytest
from helpers import assert_grad, numeric_grad

import portnn as pn

BOOK_LR_AT_EPOCH_10000 = 0.04975126853296942


def book_spiral_data(rng, samples, classes):
    """nnfs 0.5.1's ``spiral_data``, drawing from ``rng`` (a legacy RandomState)."""
    X = np.zeros((samples * classes, 2))
    y = np.zeros(samples * classes, dtype="uint8")
    for class_number in range(classes):
        ix = range(samples * class_number, samples * (class_number + 1))
        r = np.linspace(0.0, 1, samples)
        t = np.linspace(class_number * 4, (class_number + 1) * 4, samples)
        t = t + rng.randn(samples) * 0.2
        X[ix] = np.c_[r * np.sin(t * 2.5), r * np.cos(t * 2.5)]
        y[ix] = class_number
    return X, y


def chapter_10(backend, X, y):
    """The book's loop; returns the printed (epoch, acc, loss, lr) rows and the optimizer."""
    xp = backend.xp
    y_host = np.asarray(y)
    X, y = backend.asarray(X), backend.asarray(y)

    dense1 = pn.Dense(2, 64)
    activation1 = pn.ReLU()
    dense2 = pn.Dense(64, 3)
    loss_activation = pn.SoftmaxCategoricalCrossentropy()
    optimizer = pn.Adam(learning_rate=0.05, decay=5e-7)

    printed = []
    for epoch in range(10001):
        dense1.forward(X)
        activation1.forward(dense1.output)
        dense2.forward(activation1.output)
        sample_losses = loss_activation.forward(dense2.output, y)  # per sample, unlike the book
        if not epoch % 100:
            loss = float(xp.mean(sample_losses))
            predictions = xp.argmax(loss_activation.output, axis=1)
            accuracy = float(np.mean(pn.to_numpy(predictions) == y_host))
            printed.append((epoch, accuracy, loss, optimizer.current_learning_rate))

        loss_activation.backward(loss_activation.output, y)
        dense2.backward(loss_activation.dinputs)
        activation1.backward(dense2.dinputs)
        dense1.backward(activation1.dinputs)

        optimizer.pre_update_params()
        optimizer.update_params(dense1)
        optimizer.update_params(dense2)
        optimizer.post_update_params()
    for layer in (dense1, dense2):
        assert layer.weights.dtype == backend.dtype
    return printed, optimizer


def test_seed_0_draws_the_books_data_and_weights():
    pn.seed(0)
    X, y = pn.datasets.spiral(100, 3)
    weights = [
        pn.to_numpy(pn.Dense(*shape, backend="numpy", dtype="float64").weights)
        for shape in ((2, 64), (64, 3))
    ]
    rng = np.random.RandomState(0)  # what nnfs.init() seeds; spiral first, then the weights
    X_book, y_book = book_spiral_data(rng, 100, 3)
    np.testing.assert_allclose(X, X_book, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(y, y_book)
    np.testing.assert_array_equal(weights[0], 0.01 * rng.randn(2, 64))
    np.testing.assert_array_equal(weights[1], 0.01 * rng.randn(64, 3))


def test_chapter_10(backend):
    pn.seed(0)
    X, y = pn.datasets.spiral(100, 3)
    printed, optimizer = chapter_10(backend, X, y)

    assert printed[0][2] == pytest.approx(np.log(3), abs=0.01)  # untrained: uniform guesses
    epoch, accuracy, loss, lr = printed[-1]
    assert epoch == 10000
    assert accuracy >= 0.93  # the book: 0.97-0.98
    assert loss <= 0.15  # the book: 0.074
    # The book prints the rate before the epoch's update: the one step 9,999 used.
    assert lr == pytest.approx(BOOK_LR_AT_EPOCH_10000, rel=1e-12)
    # After the last (10,001st) update the rate has moved on by one step.
    assert optimizer.iterations == 10001
    assert optimizer.current_learning_rate == pytest.approx(0.05 / (1 + 5e-7 * 10000), rel=1e-12)


def test_chapter_10_first_gradients_match_finite_differences(backend64):
    # The run above trains with Adam, which a uniform scale of the gradient does not change (a
    # backward that forgot its 1/N would pass it): here the book's first backward pass, on the
    # book's data and initial weights, against finite differences of the book's mean loss.
    # Of dense2 only: some of ReLU's 300 x 64 inputs lie within a finite-difference step of its
    # kink (three sit on it: the samples at the origin), and dense2 does not move them.
    pn.seed(0)
    X, y = pn.datasets.spiral(100, 3)
    X, y = backend64.asarray(X), backend64.asarray(y)
    dense1, activation1, dense2 = pn.Dense(2, 64), pn.ReLU(), pn.Dense(64, 3)
    loss_activation = pn.SoftmaxCategoricalCrossentropy()
    hidden = activation1.forward(dense1.forward(X))
    W, b = pn.to_numpy(dense2.weights), pn.to_numpy(dense2.biases)

    def loss(W=W, b=b):
        dense2.weights, dense2.biases = backend64.asarray(W), backend64.asarray(b)
        return float(backend64.xp.mean(loss_activation.forward(dense2.forward(hidden), y)))

    assert loss() == pytest.approx(np.log(3), abs=1e-3)  # 0.01-scale weights: uniform guesses
    loss_activation.backward(loss_activation.output, y)
    dense2.backward(loss_activation.dinputs)
    # A step of 1e-5: the gradients are 1e-6 to 1e-4, the loss's rounding error over a step of
    # 1e-6 would be 1e-10, and the biases' curvature over one of 1e-4 as much.
    eps, tolerances = 1e-5, {"rtol": 1e-5, "atol": 1e-10}
    assert_grad(dense2.dweights, numeric_grad(lambda w: loss(W=w), W, eps), **tolerances)
    assert_grad(dense2.dbiases, numeric_grad(lambda v: loss(b=v), b, eps), **tolerances)
