"""One image file as a Fashion-MNIST sample: the book's chapter 22 preprocessing.

It lives beside the Fashion-MNIST loader and uses its scaling, so a photo reaches a trained
model as the training images did.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .fashion import _SIDE, _scale

__all__ = ["fashion_mnist_image"]


def fashion_mnist_image(path: str | os.PathLike[str], *, invert: bool = True) -> np.ndarray:
    """The image at ``path`` as one Fashion-MNIST sample: float32 ``(1, 784)`` in ``[-1, 1]``.

    The book's chapter 22 steps: read as greyscale, resize to 28x28 (bilinear), invert
    (``255 - x``: photos show dark clothes on a light ground, Fashion-MNIST light on dark; pass
    ``invert=False`` for an image that is already light on dark), then scale as
    ``fashion_mnist()`` scales its images. Reads any format Pillow reads (PNG, JPEG...).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ImportError(
            "reading images needs Pillow, which is not installed here; "
            "install it with: pip install 'portnn[images]'"
        ) from exc
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(file) as img:
            grey = img.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BILINEAR)
            pixels = np.asarray(grey, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        from ..scripts import one_line

        raise ValueError(f"{path}: not a readable image ({one_line(exc)})") from exc
    if invert:
        pixels = 255 - pixels
    return _scale(pixels[np.newaxis])
