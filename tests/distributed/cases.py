"""Training cases shared by the MPI worker (``worker.py``) and ``tests/test_distributed.py``:
the same seeded data, model and settings, trained with a communicator or in one process."""

from __future__ import annotations

import numpy as np

import portnn as pn

OPTIMIZERS = {
    "sgd": lambda: pn.SGD(learning_rate=0.5),
    "momentum": lambda: pn.SGD(learning_rate=0.2, decay=1e-3, momentum=0.9),
    "adam": lambda: pn.Adam(learning_rate=0.02, decay=1e-3),
    "rmsprop": lambda: pn.RMSprop(learning_rate=0.01),
}

DEFAULTS = {
    "backend": "numpy",
    "device": None,  # the backend's default; "cuda" for torch on a GPU
    "dtype": "float64",
    "optimizer": "adam",
    "l2": 0.0,
    "loss": "crossentropy",  # or "mse": the sine regression, unfused backward
    "samples": 40,  # per class (spiral) or in all (sine)
    "batch_size": 32,
    "epochs": 3,
    "shuffle": True,
    "validation": False,
    "sharded": False,
    "path": "host",  # or "staged": the GPU path's logic forced onto CPU arrays (worker.py)
}


def case(**settings) -> dict:
    unknown = set(settings) - set(DEFAULTS)
    assert not unknown, unknown
    return {**DEFAULTS, **settings}


def data(c: dict) -> tuple[np.ndarray, np.ndarray]:
    """Seeded data, the same in every process."""
    pn.seed(1)
    if c["loss"] == "mse":
        X, y = pn.datasets.sine(c["samples"])
        return X, y
    return pn.datasets.spiral(c["samples"], 3)


def build(c: dict) -> pn.Model:
    """The case's model on its backend and dtype, from seed 0."""
    pn.seed(0)
    with pn.use_backend(c["backend"], dtype=c["dtype"], device=c["device"]):
        if c["loss"] == "mse":
            layers = [pn.Dense(1, 16, weight_init="he", weight_regularizer_l2=c["l2"])]
            layers += [pn.Tanh(), pn.Dense(16, 1), pn.Linear()]
            loss = pn.MeanSquaredError()
        else:
            layers = [pn.Dense(2, 16, weight_regularizer_l2=c["l2"], bias_regularizer_l2=c["l2"])]
            layers += [pn.ReLU(), pn.Dense(16, 3), pn.Softmax()]
            loss = pn.CategoricalCrossentropy()
        model = pn.Model(layers)
    model.set(loss=loss, optimizer=OPTIMIZERS[c["optimizer"]]())
    return model


def train(c: dict, comm=None, X=None, y=None) -> tuple[pn.Model, dict]:
    """Train the case: in one process (``comm`` None) or as one rank of a distributed run."""
    if X is None:
        X, y = data(c)
    model = build(c)
    validation = (X[::3], y[::3]) if c["validation"] else None
    pn.seed(2)  # the shuffles: drawn by rank 0 (or the one process) from this seed
    history = model.train(
        X,
        y,
        epochs=c["epochs"],
        batch_size=c["batch_size"],
        shuffle=c["shuffle"],
        validation_data=validation,
        print_every=0,
        comm=comm,
        sharded=c["sharded"] if comm is not None else False,
    )
    return model, history


def chunks(n: int, steps: int, k: int) -> slice:
    """Chunk ``k`` of ``steps`` of ``n`` rows: a sharded rank's part of global batch ``k``."""
    return slice(k * n // steps, (k + 1) * n // steps)


def parameters(model: pn.Model) -> list[np.ndarray]:
    return [np.asarray(pn.to_numpy(p)) for pair in model.get_parameters() for p in pair]
