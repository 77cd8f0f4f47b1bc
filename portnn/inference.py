"""A trained model at work, as the book's chapter 22 uses one: loaded from its file (the path
checked first, so a folder or a missing file is named in one line) and asked for one
sample's class and how confident it is (``portnn predict``, ``portnn evaluate``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .backend import Backend, to_numpy
from .model import Model

__all__ = ["Classified", "classify", "load_model"]


def load_model(path: str | os.PathLike[str], backend: str | Backend | None = None) -> Model:
    """``Model.load(path, backend)``, with a folder or a missing file named in one line."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise IsADirectoryError(f"{path}: it is a folder, not a model file")
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    return Model.load(file, backend=backend)


class Classified(NamedTuple):
    """What a model says of one sample: its outputs (NumPy, flat), the class they name and
    the output for that class (for one Sigmoid output: 1 - p for class 0); ``cls`` and
    ``confidence`` are None where the outputs name no class (a regression)."""

    outputs: np.ndarray
    cls: int | None
    confidence: float | None


def classify(model: Model, sample: Any) -> Classified:
    """``sample`` (one row) through ``model`` once: the outputs, and the class by the output
    layer's own rule (argmax for Softmax, > 0.5 for Sigmoid), as ``predict_classes`` applies
    it, with its confidence."""
    predicted = model.predict(sample)
    outputs = np.asarray(to_numpy(predicted)).reshape(-1)
    classes = np.asarray(to_numpy(model._predictions(predicted))).reshape(-1)
    if classes.size != 1 or classes.dtype.kind not in "biu":  # no classes: regression outputs
        return Classified(outputs, None, None)
    cls = int(classes[0])
    confidence = outputs[cls] if outputs.size > 1 else (outputs[0] if cls else 1 - outputs[0])
    return Classified(outputs, cls, float(confidence))
