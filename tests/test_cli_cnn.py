"""``portnn train DATASET --model cnn``: the recipes' convolutional networks, through main()."""

import re

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
