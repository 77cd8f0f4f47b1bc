"""Every installed backend, in one process, trains the same network to the same result.

nox runs the suite once per backend; this file is the other half (thinc's pattern): a plain
``pytest`` on a machine with several array libraries checks that they agree with each other,
whichever backend the run selected. Float64, no shuffling and no dropout (each library draws
its own random numbers), so every backend does the same arithmetic and the results agree to
rounding after every epoch.
"""

import numpy as np
import pytest

import portnn as pn

LIBRARIES = ("numpy", "array_api_strict", "torch", "cupy")


def _installed():
    return [name for name in LIBRARIES if name in pn.available_backends()]


def _data(kind):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((96, 3))
    if kind == "classifier":
        return X, np.argmax(X @ rng.standard_normal((3, 4)), axis=1).astype(np.int64)
    if kind == "binary":
        return X, (X[:, :1] * X[:, 1:2] > 0).astype(np.int64)
    return X, np.sin(X[:, :1]) + 0.1 * X[:, 1:2]


def _model(kind, backend):
    def dense(n_in, n_out, **reg):
        return pn.Dense(n_in, n_out, weight_init="he", backend=backend, **reg)

    if kind == "classifier":  # the book's chapter 19 network, small, with L1 and L2
        layers = [dense(3, 16, weight_regularizer_l2=1e-3, bias_regularizer_l1=1e-4), pn.ReLU()]
        layers += [dense(16, 4), pn.Softmax()]
        loss, opt = pn.CategoricalCrossentropy(), pn.Adam(learning_rate=0.02, decay=1e-3)
    elif kind == "binary":  # chapter 16
        layers = [dense(3, 16, weight_regularizer_l1=1e-4), pn.ReLU(), dense(16, 1), pn.Sigmoid()]
        loss, opt = pn.BinaryCrossentropy(), pn.RMSprop(learning_rate=0.01, decay=1e-3)
    elif kind == "regression-sgd":  # chapter 17, with momentum
        layers = [dense(3, 16), pn.ReLU(), dense(16, 16), pn.ReLU(), dense(16, 1), pn.Linear()]
        loss, opt = pn.MeanSquaredError(), pn.SGD(learning_rate=0.05, decay=1e-2, momentum=0.9)
    else:  # regression with Adagrad and MAE
        layers = [dense(3, 16), pn.Tanh(), dense(16, 1), pn.Linear()]
        loss, opt = pn.MeanAbsoluteError(), pn.Adagrad(learning_rate=0.1)
    return pn.Model(layers).set(loss=loss, optimizer=opt)


@pytest.mark.parametrize("kind", ["classifier", "binary", "regression-sgd", "regression-adagrad"])
def test_every_installed_backend_trains_to_the_same_result(kind):
    names = _installed()
    if len(names) < 2:
        pytest.skip(f"only {names} installed: nothing to compare (pip install torch, say)")
    X, y = _data(kind)
    results = {}
    for name in names:
        backend = pn.get_backend(name, "float64")
        pn.seed(3)  # the same initial weights on every backend (portnn draws them on the host)
        model = _model(kind, backend)
        history = model.train(
            backend.asarray(X),
            backend.asarray(y),
            epochs=15,
            batch_size=32,
            shuffle=False,
            print_every=None,
        )
        results[name] = (
            history,
            {k: pn.to_numpy(v) for k, v in model.state_dict().items() if k.startswith("layers/")},
            pn.to_numpy(model.predict(backend.asarray(X))),
        )
    reference_name = names[0]
    history, params, predictions = results.pop(reference_name)
    assert history["loss"][-1] < history["loss"][0]  # it learned: the comparison means something
    for name, (got_history, got_params, got_predictions) in results.items():
        where = f"{name} against {reference_name}"
        for key in ("loss", "accuracy", "data_loss", "regularization_loss"):
            np.testing.assert_allclose(
                got_history[key], history[key], rtol=1e-9, atol=1e-12, err_msg=f"{where}: {key}"
            )
        for key, want in params.items():
            np.testing.assert_allclose(
                got_params[key], want, rtol=1e-9, atol=1e-12, err_msg=f"{where}: {key}"
            )
        np.testing.assert_allclose(got_predictions, predictions, rtol=1e-9, atol=1e-12)
