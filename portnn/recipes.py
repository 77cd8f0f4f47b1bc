"""The book's networks, one per dataset: what ``portnn train DATASET`` trains, and what the
benchmarks time, so both build the same model from the same numbers.

A recipe holds the layer sizes (inputs, hidden width and depth, outputs), the loss, Adam's
settings, the epochs, the batch size and how often to print progress::

    from portnn import datasets, recipes

    X, y, X_test, y_test = datasets.load("fashion-mnist", download=True)
    recipe = recipes.get("fashion-mnist")
    model = recipes.build("fashion-mnist")      # 784-128-128-10, ReLU, Softmax, Adam(1e-3)
    model.train(X, y, epochs=recipe.epochs, batch_size=recipe.batch_size,
                validation_data=(X_test, y_test), print_every=recipe.print_every())

The settings are the book's where the book trains that dataset (spiral: chapter 10, sine:
chapter 17, Fashion-MNIST: chapter 19); vertical and digits borrow those networks, sized to
train in seconds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

from ._checks import integer
from .activations import Linear, ReLU, Softmax
from .conv import Conv2D, Flatten, MaxPool2D
from .inference import load_model
from .layers import Dense, Input, Layer
from .losses import CategoricalCrossentropy, Loss, MeanSquaredError
from .metrics import Accuracy, CategoricalAccuracy, RegressionAccuracy
from .model import Model
from .normalization import BatchNormalization
from .optimizers import SGD, Adagrad, Adam, RMSprop

OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}

__all__ = [
    "OPTIMIZERS",
    "RECIPES",
    "Recipe",
    "build",
    "build_for_command",
    "describe",
    "epochs_done",
    "features",
    "get",
    "is_cnn",
    "resume",
    "shaped",
]


@dataclass(frozen=True)
class Recipe:
    """One dataset's network and training settings.

    The network is ``n_inputs -> hidden x hidden_layers -> n_outputs``: Dense layers with ReLU
    between them, weights drawn as ``weight_scale * standard_normal``. A classifier ends in
    Softmax with categorical cross-entropy; a regression (``regression=True``) in Linear with
    mean squared error. The optimizer is ``Adam(learning_rate, decay)``. ``batch_size`` None
    trains on the whole data per step; ``validate`` evaluates the test split every epoch
    (else only at the end). ``threads`` is the thread count ``portnn train`` and ``portnn
    evaluate`` use without ``--threads`` (None: the libraries' own).

    A dataset of images also has a convolutional network (``portnn train --model cnn``):
    ``image_shape`` is one image's ``(channels, height, width)`` and ``cnn_channels`` the
    widths of its convolution blocks (``build_cnn``).
    """

    about: str
    n_inputs: int
    n_outputs: int
    regression: bool
    epochs: int
    batch_size: int | None
    learning_rate: float
    decay: float
    hidden: int
    hidden_layers: int
    weight_scale: float = 0.01
    validate: bool = False
    threads: int | None = None
    image_shape: tuple[int, int, int] | None = None
    cnn_channels: tuple[int, ...] = ()

    @property
    def settings(self) -> str:
        """The training defaults in a few words: ``10 epochs, batch 128, lr 0.001, hidden 128``."""
        batches = "full batch" if self.batch_size is None else f"batch {self.batch_size}"
        return f"{self.epochs} epochs, {batches}, lr {self.learning_rate}, hidden {self.hidden}"

    def sizes(
        self, n_inputs: int | None = None, hidden: int | None = None, layers: int | None = None
    ) -> tuple[int, ...]:
        """The Dense layers' sizes, inputs first: ``(784, 128, 128, 10)`` for Fashion-MNIST;
        ``layers`` hidden layers (default the recipe's) of width ``hidden``."""
        n_inputs = self.n_inputs if n_inputs is None else integer("n_inputs", n_inputs)
        hidden = self.hidden if hidden is None else integer("hidden", hidden)
        layers = self.hidden_layers if layers is None else integer("layers", layers)
        return (n_inputs, *[hidden] * layers, self.n_outputs)

    def loss(self) -> Loss:
        """A new instance of the recipe's loss."""
        return MeanSquaredError() if self.regression else CategoricalCrossentropy()

    def accuracy(self) -> Accuracy:
        """A new instance of the recipe's accuracy (the book's for that kind of output)."""
        return RegressionAccuracy() if self.regression else CategoricalAccuracy()

    def print_every(self, epochs: int | None = None) -> int:
        """Epochs between progress lines: a tenth of ``epochs`` (default the recipe's), at
        least 1, so a run prints about ten."""
        epochs = self.epochs if epochs is None else integer("epochs", epochs)
        return max(1, epochs // 10)

    def training(
        self,
        epochs: int | None = None,
        batch_size: int | None = None,
        print_every: int | None = None,
    ) -> tuple[int, int | None, int]:
        """``(epochs, batch_size, print_every)`` for ``model.train``: the recipe's, those given
        (not None) in their place; ``print_every`` defaults to a tenth of the epochs."""
        epochs = self.epochs if epochs is None else integer("epochs", epochs)
        batch_size = self.batch_size if batch_size is None else integer("batch_size", batch_size)
        if print_every is None:
            return epochs, batch_size, self.print_every(epochs)
        return epochs, batch_size, integer("print_every", print_every, 0)

    def build(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        hidden: int | None = None,
        learning_rate: float | None = None,
        layers: int | None = None,
        optimizer: str = "adam",
    ) -> Model:
        """The recipe's model, with its loss, optimizer and accuracy set, on the current backend.

        ``n_inputs``, ``n_outputs``, ``hidden``, ``layers`` (hidden layers) and
        ``learning_rate`` default to the recipe's; give them to fit other data or to try
        another network. ``optimizer`` is one of ``OPTIMIZERS`` (the book's four), with the
        recipe's decay.
        """
        kind = _optimizer(optimizer)  # before any weight is drawn
        *sizes, last = self.sizes(n_inputs, hidden, layers)
        if n_outputs is not None:
            last = integer("n_outputs", n_outputs)
        layers: list[Layer] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [Dense(a, b, weight_scale=self.weight_scale), ReLU()]
        layers.append(Dense(sizes[-1], last, weight_scale=self.weight_scale))
        layers.append(Linear() if self.regression else Softmax())
        return self._model(layers, learning_rate, kind)

    @property
    def cnn_about(self) -> str:
        """``build_cnn``'s network in a few words, as ``about`` is the dense one's."""
        blocks = "-".join(map(str, self.cnn_channels))
        return (
            f"a CNN on its {'x'.join(map(str, self.image_shape or ()))} images: blocks of "
            f"Conv2D 3x3, BatchNormalization, ReLU, MaxPool2D ({blocks} channels), Dense "
            f"{self.hidden}, Adam(decay {self.decay:g})"
        )

    def build_cnn(self, *, learning_rate: float | None = None, optimizer: str = "adam") -> Model:
        """The recipe's convolutional network for its images: per width of ``cnn_channels``
        a block of Conv2D (3x3, "same", He), BatchNormalization, ReLU and MaxPool2D(2); then
        Flatten, Dense(``hidden``) with ReLU, and the Softmax output, starting from
        ``Input(shape=image_shape)``; the recipe's loss, optimizer and accuracy."""
        if self.image_shape is None:
            raise ValueError(f"{self.about}: not images, so there is no convolutional network")
        kind = _optimizer(optimizer)
        channels, height, width = self.image_shape
        layers: list[Layer] = [Input(shape=self.image_shape)]
        for out in self.cnn_channels:
            layers += [Conv2D(channels, out, 3, padding="same", weight_init="he")]
            layers += [BatchNormalization(out), ReLU(), MaxPool2D(2)]
            channels, height, width = out, height // 2, width // 2
        flat = channels * height * width
        layers += [Flatten(), Dense(flat, self.hidden, weight_init="he"), ReLU()]
        layers += [Dense(self.hidden, self.n_outputs), Softmax()]
        return self._model(layers, learning_rate, kind)

    def _model(self, layers: list[Layer], learning_rate: float | None, kind: type) -> Model:
        """A model of ``layers`` with the recipe's loss and accuracy, and an optimizer of
        ``kind`` at ``learning_rate`` (default the recipe's) with the recipe's decay."""
        lr = self.learning_rate if learning_rate is None else learning_rate  # Adam checks it
        model = Model(layers)
        model.set(
            loss=self.loss(),
            optimizer=kind(learning_rate=lr, decay=self.decay),
            accuracy=self.accuracy(),
        )
        return model


def _optimizer(name: str) -> type:
    """The optimizer class ``name`` (one of ``OPTIMIZERS``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")
    return OPTIMIZERS[name]


# One thread for the small networks: their matrix products (about a thousand rows by 64 to 128
# columns at most, with the default hidden width) are too small for a second thread to pay for,
# and on a busy machine the extra threads spin (measured: README, "The portnn command").
# Fashion-MNIST's can gain on an idle machine, so it keeps the libraries' own count.
_CHAPTER_10 = Recipe(
    "the book's chapter 10 run: spiral(100, 3), Adam(0.05, decay 5e-7)",
    n_inputs=2,
    n_outputs=3,
    regression=False,
    epochs=10001,
    batch_size=None,
    learning_rate=0.05,
    decay=5e-7,
    hidden=64,
    hidden_layers=1,
    threads=1,
)

RECIPES: dict[str, Recipe] = {
    "spiral": _CHAPTER_10,
    "vertical": replace(
        _CHAPTER_10, about="vertical(100, 3) with the chapter 10 network", epochs=1001
    ),
    "sine": Recipe(
        "the book's chapter 17 regression: sine_data(), Adam(0.005, decay 1e-3)",
        n_inputs=1,
        n_outputs=1,
        regression=True,
        epochs=10001,
        batch_size=None,
        learning_rate=0.005,
        decay=1e-3,
        hidden=64,
        hidden_layers=2,
        weight_scale=0.1,
        threads=1,
    ),
    "fashion-mnist": Recipe(
        "the book's chapter 19 run: Fashion-MNIST, Adam(decay 1e-3), batches of 128",
        n_inputs=784,
        n_outputs=10,
        regression=False,
        epochs=10,
        batch_size=128,
        learning_rate=0.001,
        decay=1e-3,
        hidden=128,
        hidden_layers=2,
        validate=True,
        image_shape=(1, 28, 28),
        cnn_channels=(32, 64),
    ),
    "digits": Recipe(
        "scikit-learn's 8x8 digits with the chapter 19 network, Adam(decay 1e-3)",
        n_inputs=64,
        n_outputs=10,
        regression=False,
        epochs=30,
        batch_size=32,
        learning_rate=0.005,
        decay=1e-3,
        hidden=128,
        hidden_layers=1,
        validate=True,
        threads=1,
        image_shape=(1, 8, 8),
        cnn_channels=(16,),
    ),
}


def get(name: str) -> Recipe:
    """The recipe for the dataset ``name`` (one of ``RECIPES``)."""
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"no recipe for dataset {name!r}; choose from {', '.join(RECIPES)}"
        ) from None


def build(
    name: str,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    **options: Any,
) -> Model:
    """The book's model for the dataset ``name``, ready to train: ``get(name).build(...)``,
    with ``Recipe.build``'s options (hidden, learning_rate, layers, optimizer)."""
    return get(name).build(n_inputs, n_outputs, **options)


def is_cnn(model: Model) -> bool:
    """Whether ``model`` takes images (or other inputs of more than one axis a sample)."""
    shape = model.input_shape
    return shape is not None and len(shape) > 2


_SIZED = ("Dense", "Input")  # layers describe() shows by their sizes alone


def describe(model: Model, *, training: bool = False) -> str:
    """The network in a few words, as ``portnn train`` prints it: the sizes, inputs first
    (features, or an image's ``CxHxW``), then each weight matrix's or kernel's width
    (features, or a convolution's channels; BatchNormalization's per-channel scale is
    neither), then the kinds of the other layers once each: ``2-64-3 (ReLU, Softmax)``,
    ``1x8x8-16-128-10 (Conv2D, BatchNormalization, ReLU, MaxPool2D, Flatten, Softmax)``; with
    ``training``, then the loss and the optimizer: ``..., CategoricalCrossentropy,
    Adam(learning_rate=0.05, decay=5e-07)``."""
    kinds = [type(la).__name__ for la in model.layers if type(la).__name__ not in _SIZED]
    sizes: list[Any] = []
    if any(la.param_names for la in model.layers):
        shape = model.input_shape or (None, None)
        sizes.append("x".join(map(str, shape[1:])) if is_cnn(model) else shape[1])
        for layer, out in zip(model.layers, model.shapes(), strict=True):
            weights = getattr(layer, "weights", None)
            if weights is not None and len(weights.shape) >= 2:
                sizes.append(out[1])
    text = f"{'-'.join(map(str, sizes))} ({', '.join(dict.fromkeys(kinds))})"
    if not training:
        return text
    opt = model.optimizer
    return (
        f"{text}, {type(model.loss).__name__}, "
        f"{type(opt).__name__}(learning_rate={opt.learning_rate:g}, decay={opt.decay:g})"
    )


def resume(
    path: str | os.PathLike[str],
    n_inputs: int,
    n_outputs: int | None = None,
    *,
    regression: bool | None = None,
    backend: str | None = None,
    data: str = "the data",
) -> Model:
    """The model saved at ``path`` with its optimizer's state, to train on where it stopped:
    refused if it holds no optimizer, or does not fit the data: ``n_inputs`` features,
    ``n_outputs`` outputs (the classes, or a regression's targets) and, where ``regression``
    is given, that kind of task (``data`` names where they come from, in the messages)."""
    model = load_model(path, backend)
    if model.optimizer is None:
        raise ValueError(f"{path} holds no optimizer to resume; save it with model.save")
    trained_on = model.metadata.get("dataset")  # as portnn train --save records it
    if trained_on is not None and trained_on != data:
        raise ValueError(
            f"{path} was trained on {trained_on}, not {data}: resume it with "
            f"portnn train {trained_on} --resume {path}, or train {data} afresh"
        )
    if features(model) != n_inputs:
        raise ValueError(f"{path} takes {features(model)} features, but {data} has {n_inputs}")
    kind = {True: "a regression", False: "a classification"}
    saved = None if model.accuracy is None else isinstance(model.accuracy, RegressionAccuracy)
    if regression is not None and saved is not None and saved != regression:
        raise ValueError(
            f"{path} is {kind[saved]} ({type(model.loss).__name__}), but {data} is "
            f"{kind[regression]}; was it trained on another dataset?"
        )
    if n_outputs is not None and model.n_outputs != n_outputs:
        each = "target" if regression else "class"
        raise ValueError(
            f"{path} gives {model.n_outputs} outputs, but {data} needs {n_outputs} (one per "
            f"{each}); was it trained on another dataset?"
        )
    return model


def features(model: Model) -> int | None:
    """The values one sample has for ``model``: its ``n_inputs``, or for images the product of
    its ``Input(shape=...)`` (a flattened image, as the datasets give it)."""
    shape = model.input_shape
    if shape is None or any(n is None for n in shape[1:]):
        return model.n_inputs
    return math.prod(shape[1:])


def shaped(model: Model, X: Any) -> Any:
    """``X`` (NumPy, a sample a row) as ``model`` takes it: flattened images reshaped to its
    ``Input(shape=...)``; anything else as it is."""
    shape = model.input_shape
    if shape is None or len(shape) <= 2 or X is None or X.ndim != 2:
        return X
    if features(model) != X.shape[1]:
        return X  # the model's own check names the mismatch
    return X.reshape(X.shape[0], *shape[1:])


def epochs_done(steps: int, n_samples: int, batch_size: int | None) -> int | None:
    """The epochs a saved run trained, from its optimizer's ``steps``, if they make whole
    passes over ``n_samples`` in batches of ``batch_size`` (None: one step per epoch), as a
    run saved at its end with that batch size has; else None (another batch size)."""
    per_epoch = 1 if batch_size is None else math.ceil(n_samples / batch_size)
    return steps // per_epoch if steps % per_epoch == 0 else None


def build_for_command(
    name: str,
    n_inputs: int,
    saved: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    cnn: bool = False,
    **network: Any,
) -> Model:
    """The model ``portnn train`` trains on the dataset ``name`` (``n_inputs`` features):
    ``build(name, n_inputs, **network)``, the options given (not None) taking the recipe's
    place; or, with ``saved`` (``--resume``), ``resume(saved, ...)``, whose saved network and
    optimizer go on if they fit the recipe's outputs and kind of task, so that none of
    ``network`` (the options ``--hidden``...) may be given."""
    given = {option: value for option, value in network.items() if value is not None}
    if saved is None and cnn:
        shapes = {k: given.pop(k) for k in ("hidden", "layers") if k in given}
        if shapes:
            options = ", ".join(f"--{option}" for option in shapes)
            raise ValueError(f"--model cnn has its own layers; drop {options}")
        return get(name).build_cnn(**given)
    if saved is None:
        return get(name).build(n_inputs, **given)
    if given:
        options = ", ".join(f"--{option.replace('_', '-')}" for option in given)
        raise ValueError(f"--resume continues the saved network and optimizer; drop {options}")
    recipe = get(name)
    return resume(
        saved, n_inputs, recipe.n_outputs, regression=recipe.regression, backend=backend, data=name
    )
