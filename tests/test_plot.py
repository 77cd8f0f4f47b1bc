"""portnn.plot writes real PNG files, from a training history and from a trained model."""

import sys

import numpy as np
import pytest

import portnn as pn

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from portnn.plot import (  # noqa: E402
    formats,
    plot_decision_regions,
    plot_fit,
    plot_history,
    plot_regression,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_width=200, min_height=200):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
    assert width >= min_width and height >= min_height, (width, height)
    return width, height


def spiral_model(backend, classes=3, epochs=30):
    X, y = pn.datasets.spiral(40, classes)
    out, act, loss = (
        (classes, pn.Softmax(), pn.CategoricalCrossentropy())
        if classes > 2
        else (1, pn.Sigmoid(), pn.BinaryCrossentropy())
    )
    if classes == 2:
        y = y.reshape(-1, 1)
    model = pn.Model([pn.Dense(2, 16), pn.ReLU(), pn.Dense(16, out), act])
    model.set(loss=loss, optimizer=pn.Adam(learning_rate=0.05))
    history = model.train(X, y, epochs=epochs, validation_data=(X[::2], y[::2]), print_every=0)
    return model, X, y, history


def test_history_with_validation(backend, tmp_path):
    model, X, y, history = spiral_model(backend)
    path = tmp_path / "history.png"
    assert plot_history(history, path) == path
    width, height = assert_png(path)
    assert width > 2 * height  # three panels side by side


@pytest.mark.parametrize("label", [None, "test"])
def test_history_labels_the_validation_curves(tmp_path, drawn, label):
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.3, 0.6]}
    history |= {"val_accuracy": [0.2, 0.5], "epoch": [201, 202]}
    options = {} if label is None else {"validation_label": label}
    plot_history(history, tmp_path / "h.png", **options)
    for ax in drawn[0].axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "training",
            label or "validation",
        ]
        assert [list(line.get_xdata()) for line in ax.get_lines()] == [[201, 202]] * 2


def test_history_without_validation_or_epochs(tmp_path):
    history = {"loss": [1.0, 0.5, 0.25], "accuracy": [0.3, 0.6, 0.9]}
    path = str(tmp_path / "partial.png")
    assert plot_history(history, path, title="partial") == path
    assert_png(path)


def test_history_with_nothing_to_plot(tmp_path):
    with pytest.raises(ValueError, match="nothing|no loss"):
        plot_history({"epoch": [1, 2]}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


@pytest.mark.parametrize("classes", [3, 2])
def test_decision_regions(backend, tmp_path, classes):
    model, X, y, _ = spiral_model(backend, classes)
    path = tmp_path / "regions.png"
    assert plot_decision_regions(model, X, y, path, resolution=60) == path
    assert_png(path)


def test_decision_regions_of_backend_arrays_and_a_callable(backend, tmp_path):
    model, X, y, _ = spiral_model(backend)
    Xb, yb = backend.asarray(X), backend.asarray(y)
    path = tmp_path / "callable.png"
    plot_decision_regions(model.predict_classes, Xb, yb, path, resolution=40)
    assert_png(path)


class Classes:
    """A model stand-in whose predict_classes is all the plot may ask: class 1 right of x = 0."""

    def __init__(self, column=False, floats=False):
        self.column, self.floats, self.calls = column, floats, 0

    def predict_classes(self, points):
        self.calls += 1
        classes = (np.asarray(pn.to_numpy(points))[:, 0] > 0).astype(int)
        classes = classes.astype(np.float32) if self.floats else classes
        return classes.reshape(-1, 1) if self.column else classes

    def predict(self, points):
        raise AssertionError("the plot recomputed classes from the outputs")


@pytest.mark.parametrize(("column", "floats"), [(False, False), (True, False), (False, True)])
def test_decision_regions_color_by_predict_classes(tmp_path, column, floats):
    X, y = pn.datasets.spiral(20, 2)
    model = Classes(column, floats)
    plot_decision_regions(model, X, y, tmp_path / "classes.png", resolution=20)
    assert model.calls == 1
    assert_png(tmp_path / "classes.png")


@pytest.mark.parametrize("which", ["probabilities", "regression", "negative"])
def test_decision_regions_refuse_outputs_that_are_not_classes(backend, tmp_path, which):
    model, X, y, _ = spiral_model(backend, epochs=1)
    predict = {
        "probabilities": model.predict,  # (N, 3) softmax outputs, not classes
        "regression": lambda p: np.asarray(pn.to_numpy(p))[:, :1] * 0.5,
        "negative": lambda p: -np.ones(p.shape[0], dtype=int),
    }[which]
    with pytest.raises(ValueError, match="one class index per point.*predict_classes"):
        plot_decision_regions(predict, X, y, tmp_path / "regions.png", resolution=10)
    assert not list(tmp_path.iterdir())


def test_decision_regions_reject_bad_input(backend, tmp_path):
    model, X, y, _ = spiral_model(backend, epochs=1)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_decision_regions(model, X[:, :1], y, tmp_path / "a.png")
    with pytest.raises(ValueError, match="labels"):
        plot_decision_regions(model, X, y[:-1], tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'portnn\[plot\]'"):
        plot_history({"loss": [1.0]}, tmp_path / "x.png")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, for looking inside them (files still written)."""
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


@pytest.mark.parametrize(("low", "scale"), [(1e-6, "log"), (0.2, "linear")])
def test_history_loss_is_on_a_log_scale_when_it_spans_decades(tmp_path, drawn, low, scale):
    history = {"loss": list(np.geomspace(1.0, low, 20)), "accuracy": [0.5] * 20}
    plot_history(history, tmp_path / "h.png")
    loss_axes, accuracy_axes = drawn[0].axes
    assert loss_axes.get_yscale() == scale
    assert accuracy_axes.get_yscale() == "linear"


def test_decision_regions_have_a_legend_of_the_classes(backend, tmp_path, drawn):
    model, X, y, _ = spiral_model(backend)
    plot_decision_regions(model, X, y, tmp_path / "r.png", class_names=["red", "green"])
    legend = drawn[0].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["red", "green", "class 2"]


def test_regression_plot_shows_prediction_against_target(backend, tmp_path, drawn):
    X, y = pn.datasets.sine(200)
    model = pn.Model([pn.Dense(1, 16), pn.Tanh(), pn.Dense(16, 1), pn.Linear()])
    model.set(loss=pn.MeanSquaredError(), optimizer=pn.Adam(0.01))
    model.train(X, y, epochs=20, print_every=0)
    assert_png(plot_regression(model, X, y, tmp_path / "s.png"))
    ax = drawn[0].axes[0]
    (line,) = ax.get_lines()
    predicted = pn.to_numpy(model.predict(X))[:, 0]
    np.testing.assert_allclose(line.get_ydata(), predicted, rtol=1e-6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["target", "prediction"]
    with pytest.raises(ValueError, match=r"one input per sample"):
        plot_regression(model, np.ones((5, 2)), np.ones(5), tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("name", "drawn"),
    [("sine", "the prediction against the target"), ("vertical", "the decision regions")],
)
def test_plot_fit_draws_the_figure_of_the_recipes_kind(backend, tmp_path, name, drawn):
    recipe = pn.recipes.get(name)
    X, y, _, _ = pn.datasets.load(name)
    model = recipe.build(hidden=8)
    model.train(X, y, epochs=2, print_every=0)
    path = tmp_path / "fit.png"
    assert plot_fit(model, X, y, path, regression=recipe.regression, title=name) == drawn
    assert_png(path)


def test_formats_are_the_suffixes_matplotlib_writes():
    known = formats()
    assert {"png", "pdf", "svg"} <= set(known) and "txt" not in known
    assert known == sorted(known)
