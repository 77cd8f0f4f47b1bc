"""``portnn train DATASET --model cnn``: the recipes' convolutional networks, through main()."""

import gzip
import re
import struct

import numpy as np
import pytest

import portnn as pn
from portnn import recipes
from portnn.cli import main

pytest.importorskip("sklearn")  # digits ship with scikit-learn


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _test_accuracy(out):
    """The final figures' test accuracy (the last of the per-epoch test lines)."""
    return float(re.findall(r"^test, acc: ([\d.]+)", out, flags=re.MULTILINE)[-1])


@pytest.mark.slow
def test_a_digits_cnn_reaches_98_percent_and_saves_resumes_and_evaluates(
    capsys, backend_name, tmp_path
):
    saved = tmp_path / "cnn.npz"
    code, out, err = run(
        capsys, "train", "digits", "--model", "cnn", "--backend", backend_name, "--save", saved
    )
    assert code == 0, err
    assert "data: 1437 training samples, 360 test samples, 64 features" in out
    assert _test_accuracy(out) >= 0.98, out
    model = pn.Model.load(saved)
    assert model.input_shape == (None, 1, 8, 8)
    assert [type(la).__name__ for la in model.layers[:5]] == [
        "Input",
        "Conv2D",
        "BatchNormalization",
        "ReLU",
        "MaxPool2D",
    ]
    assert not np.allclose(pn.to_numpy(model.layers[2].running_var), 1)  # trained state kept

    code, out, err = run(capsys, "evaluate", saved, "digits", "--backend", backend_name)
    assert code == 0, err
    assert re.search(r"^test \(360 samples\), acc: 0\.9[89]", out, flags=re.MULTILINE), out

    code, out, err = run(
        capsys, "train", "digits", "--resume", saved, "--epochs", "1", "--backend", backend_name
    )
    assert code == 0, err
    assert "epochs (31 to 31)" in out, out
    assert _test_accuracy(out) >= 0.97, out


def test_the_fashion_mnist_cnn_is_lenet_sized():
    model = recipes.get("fashion-mnist").build_cnn()
    shapes = model.shapes()
    assert shapes[4] == (None, 32, 14, 14) and shapes[8] == (None, 64, 7, 7)
    assert shapes[-1] == (None, 10)
    assert model.count_parameters() == 320 + 64 + 18_496 + 128 + 3_136 * 128 + 128 + 1_290


@pytest.mark.parametrize("dataset", ["spiral", "sine"])
def test_a_cnn_on_data_without_images_is_a_usage_error(capsys, dataset, tmp_path):
    code, out, err = run(capsys, "train", dataset, "--model", "cnn", "--save", tmp_path / "m.npz")
    assert code == 2 and out == ""
    assert "--model cnn needs a dataset of images (fashion-mnist, digits)" in err
    assert not (tmp_path / "m.npz").exists()


def test_a_cnn_refuses_the_dense_networks_shape_options(capsys):
    code, out, err = run(capsys, "train", "digits", "--model", "cnn", "--layers", "3")
    assert code != 0
    assert "--model cnn has its own layers; drop --layers" in err


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes()))


@pytest.fixture
def fashion_dir(tmp_path, monkeypatch):
    """Tiny Fashion-MNIST files (40 training, 10 test images), a bright band per class; and an
    empty data folder, so no Fashion-MNIST cached on this machine is found instead."""
    monkeypatch.setenv("PORTNN_DATA", str(tmp_path / "portnn-data"))
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n in (("train", 40), ("t10k", 10)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 4, :] = 250
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_a_fashion_mnist_cnn_trains_evaluates_and_predicts_a_photo(
    capsys, backend_name, fashion_dir, tmp_path
):
    # The flat rows every command reads (784 values) reach the CNN as 1x28x28 images: in
    # train, evaluate, and predict's one photo.
    saved = tmp_path / "cnn.npz"
    code, out, err = run(
        capsys, "train", "fashion-mnist", "--model", "cnn", "--epochs", "1", "--batch-size",
        "20", "--backend", backend_name, "--data", fashion_dir, "--save", saved,
    )  # fmt: skip
    assert code == 0, err
    assert "40 training samples, 10 test samples, 784 features (as 1x28x28 images)" in out
    assert "fashion-mnist, a CNN on its 1x28x28 images: blocks of Conv2D 3x3" in out
    assert "model: 1x28x28-32-64-128-10 (Conv2D, BatchNormalization, ReLU, MaxPool2D, " in out
    assert pn.Model.load(saved).input_shape == (None, 1, 28, 28)

    code, out, err = run(capsys, "evaluate", saved, "fashion-mnist", "--data", fashion_dir)
    assert code == 0, err
    assert "test (10 samples), acc: " in out

    Image = pytest.importorskip("PIL.Image")
    image = tmp_path / "shirt.png"
    Image.fromarray(np.full((56, 56), 255, dtype=np.uint8)).save(image)
    code, out, err = run(capsys, "predict", saved, image, "--backend", backend_name)
    assert code == 0, err
    assert ", confidence: " in out

    # The saved CNN takes 1x28x28 images: digits' 64 values are refused in one line.
    pytest.importorskip("sklearn")
    code, out, err = run(capsys, "evaluate", saved, "digits")
    assert code == 1 and out == ""
    assert "the model takes 784 inputs but digits has 64 features per sample" in err
