"""The book's runs of chapters 16 to 18, through the model API, checked by outcome.

``pn.seed(0)`` (the autouse fixture) followed by the book's calls gives the book's own data
and initial weights, so each run retraces the book's. Each trains for the fewest epochs that
prove its threshold with a margin on NumPy (measured trajectories are quoted below), far
fewer than the book's 10,001; the same epochs pass on the other backends.
"""

from __future__ import annotations

import numpy as np
import pytest

import portnn as pn

pytestmark = pytest.mark.slow


def test_chapter_16_binary_logistic_regression(backend64):
    # In float64, the book's own dtype: there every backend retraces the same run (numpy, torch
    # and array_api_strict agree to 1e-15 at epoch 7500). In float32 this slow climb is at the
    # mercy of rounding: a reordering of one product in Adam (tried, then reverted) moved
    # torch's float32 accuracy at epoch 7500 from above 0.925 to 0.865.
    X, y = pn.datasets.spiral(100, 2)
    y = y.reshape(-1, 1)  # the book's column of 0/1 targets
    model = pn.Model(
        [
            pn.Dense(2, 64, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4),
            pn.ReLU(),
            pn.Dense(64, 1),
            pn.Sigmoid(),
        ]
    )
    model.set(
        loss=pn.BinaryCrossentropy(), optimizer=pn.Adam(decay=5e-7), accuracy=pn.BinaryAccuracy()
    )
    # Adam's default rate of 0.001 climbs slowly: the training accuracy is last below 0.90 at
    # epoch 4531 and 0.945 or more from epoch 7400 on (0.945, loss 0.237 at the book's 10,001).
    history = model.train(X, y, epochs=7500, print_every=None)
    assert history["accuracy"][-1] >= 0.93
    assert history["loss"][-1] < 0.30  # the book: about 0.22-0.26 after 10,001 epochs


def test_chapter_17_sine_regression(backend):
    X, y = pn.datasets.sine()
    model = pn.Model(
        [
            pn.Dense(1, 64, weight_scale=0.1),
            pn.ReLU(),
            pn.Dense(64, 64, weight_scale=0.1),
            pn.ReLU(),
            pn.Dense(64, 1, weight_scale=0.1),
            pn.Linear(),
        ]
    )
    model.set(
        loss=pn.MeanSquaredError(),
        optimizer=pn.Adam(learning_rate=0.005, decay=1e-3),
        accuracy=pn.RegressionAccuracy(),
    )
    history = model.train(X, y, epochs=800, print_every=None)
    accuracy = np.array(history["accuracy"])
    # The precision is std(y) / 250, and in this run Adam spikes away from the fit every 250
    # to 350 epochs for about 60 epochs (the book's run does too), so the last epoch alone
    # proves nothing. The run reaches 0.90 by epoch 480 (NumPy and torch) and, from epoch 640
    # on, holds it for most of any 200 epochs.
    assert accuracy.max() >= 0.90
    assert np.median(accuracy[-200:]) >= 0.90


def test_chapter_18_model_with_dropout_and_validation(backend):
    X, y = pn.datasets.spiral(1000, 3)
    X_val, y_val = pn.datasets.spiral(100, 3)
    model = pn.Model(
        [
            pn.Dense(2, 512, weight_regularizer_l2=5e-4, bias_regularizer_l2=5e-4),
            pn.ReLU(),
            pn.Dropout(0.1),
            pn.Dense(512, 3),
            pn.Softmax(),
        ]
    )
    model.set(
        loss=pn.CategoricalCrossentropy(),
        optimizer=pn.Adam(learning_rate=0.05, decay=5e-5),
        accuracy=pn.CategoricalAccuracy(),
    )
    history = model.train(X, y, epochs=450, validation_data=(X_val, y_val), print_every=None)
    assert model.evaluate(X_val, y_val)[1] == pytest.approx(history["val_accuracy"][-1])
    # Dropout makes each epoch's validation accuracy jitter by about 0.015 around a slowly
    # rising mean, so one epoch can dip below 0.80 even late (at epochs 519 and 528 in one
    # NumPy run). Its mean over 20 epochs is last below 0.80 at epoch 348 on one thread (282
    # with threaded BLAS, 265 on torch, whose masks differ) and at 0.813 or more after 450.
    assert np.mean(history["val_accuracy"][-20:]) >= 0.80
