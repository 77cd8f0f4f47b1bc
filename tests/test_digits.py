"""A real dataset no one here made up: scikit-learn's bundled handwritten digits
(1,797 8x8 images, 10 classes), trained through portnn's Model on the selected backend."""

import numpy as np
import pytest

import portnn as pn

datasets = pytest.importorskip("sklearn.datasets")


def test_digits_reach_95_percent_test_accuracy(backend):
    digits = datasets.load_digits()
    X = (digits.data.astype(np.float32) - 8.0) / 8.0  # pixel values 0..16 to [-1, 1]
    y = digits.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(len(X))
    train, test = order[:1400], order[1400:]

    model = pn.Model(
        [pn.Dense(64, 128, weight_init="he"), pn.ReLU(), pn.Dense(128, 10), pn.Softmax()]
    )
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(learning_rate=0.005, decay=1e-3))
    history = model.train(X[train], y[train], epochs=20, batch_size=64, print_every=0)
    loss, accuracy = model.evaluate(X[test], y[test])

    assert history["accuracy"][-1] > 0.97
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f} (loss {loss:.3f})"
