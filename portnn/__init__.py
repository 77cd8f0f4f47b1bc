"""portnn: the network of *Neural Networks from Scratch in Python*, written once against
the Python Array API standard, training on NumPy, CuPy, PyTorch and array-api-strict."""

from . import datasets, interop, random, recipes, schedules, step
from .activations import LeakyReLU, Linear, ReLU, Sigmoid, Softmax, Tanh
from .backend import (
    Backend,
    available_backends,
    get_backend,
    set_backend,
    to_backend,
    to_numpy,
    use_backend,
)
from .conv import AveragePool2D, Conv2D, Flatten, MaxPool2D
from .layers import Dense, Dropout, Input, Layer
from .losses import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    SoftmaxCategoricalCrossentropy,
)
from .metrics import Accuracy, BinaryAccuracy, CategoricalAccuracy, RegressionAccuracy
from .model import Model
from .normalization import BatchNormalization
from .optimizers import SGD, Adagrad, Adam, Optimizer, RMSprop
from .threads import get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

seed = random.seed

__all__ = [
    "SGD",
    "Accuracy",
    "Adagrad",
    "Adam",
    "AveragePool2D",
    "Backend",
    "BatchNormalization",
    "BinaryAccuracy",
    "BinaryCrossentropy",
    "CategoricalAccuracy",
    "CategoricalCrossentropy",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Input",
    "Layer",
    "LeakyReLU",
    "Linear",
    "Loss",
    "MaxPool2D",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Model",
    "Optimizer",
    "RMSprop",
    "ReLU",
    "RegressionAccuracy",
    "Sigmoid",
    "Softmax",
    "SoftmaxCategoricalCrossentropy",
    "Tanh",
    "__version__",
    "available_backends",
    "datasets",
    "get_backend",
    "interop",
    "get_num_threads",
    "num_threads",
    "random",
    "recipes",
    "schedules",
    "seed",
    "set_backend",
    "set_num_threads",
    "step",
    "to_backend",
    "to_numpy",
    "use_backend",
]
