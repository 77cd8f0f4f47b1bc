"""portnn.recipes: the book's network per dataset, built on the selected backend."""

import dataclasses
import re

import numpy as np
import pytest

import portnn as pn
from portnn import datasets, recipes

# name -> (Dense sizes, output activation, loss, Adam's learning rate and decay, weight scale)
BOOK = {
    "spiral": ((2, 64, 3), pn.Softmax, pn.CategoricalCrossentropy, 0.05, 5e-7, 0.01),
    "vertical": ((2, 64, 3), pn.Softmax, pn.CategoricalCrossentropy, 0.05, 5e-7, 0.01),
    "sine": ((1, 64, 64, 1), pn.Linear, pn.MeanSquaredError, 0.005, 1e-3, 0.1),
    "fashion-mnist": (
        (784, 128, 128, 10),
        pn.Softmax,
        pn.CategoricalCrossentropy,
        1e-3,
        1e-3,
        0.01,
    ),
    "digits": ((64, 128, 10), pn.Softmax, pn.CategoricalCrossentropy, 0.005, 1e-3, 0.01),
}


def dense_sizes(model):
    dense = [layer for layer in model.layers if isinstance(layer, pn.Dense)]
    return (dense[0].n_inputs, *[layer.n_neurons for layer in dense])


def test_a_recipe_for_every_dataset_load_knows():
    assert tuple(recipes.RECIPES) == datasets.NAMES == tuple(BOOK)


@pytest.mark.parametrize("name", list(BOOK))
def test_build_makes_the_books_network(backend, name):
    sizes, output, loss, lr, decay, scale = BOOK[name]
    model = recipes.build(name)
    assert dense_sizes(model) == sizes == recipes.get(name).sizes()
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [pn.Dense, pn.ReLU] * (len(sizes) - 2) + [pn.Dense, output]
    assert type(model.loss) is loss
    expected = pn.RegressionAccuracy if loss is pn.MeanSquaredError else pn.CategoricalAccuracy
    assert type(model.accuracy) is expected
    assert isinstance(model.optimizer, pn.Adam)
    assert model.optimizer.learning_rate == lr and model.optimizer.decay == decay
    assert all(layer.weight_scale == scale for layer in model.layers if isinstance(layer, pn.Dense))
    assert model.backend.name == backend.name and model.backend.dtype == backend.dtype


def test_build_takes_other_sizes_and_rates(backend):
    model = recipes.build("fashion-mnist", 64, 3, hidden=16, learning_rate=0.01)
    assert dense_sizes(model) == (64, 16, 16, 3)
    assert model.optimizer.learning_rate == 0.01 and model.optimizer.decay == 1e-3
    assert recipes.get("sine").sizes(n_inputs=3, hidden=8) == (3, 8, 8, 1)


def test_fashion_mnist_recipe_draws_the_same_weights_as_the_network_by_hand(backend):
    # What benchmarks/bench_train.py relies on: the recipe is the network it used to write out.
    pn.seed(7)
    by_recipe = recipes.build("fashion-mnist", hidden=32)
    pn.seed(7)
    by_hand = pn.Model(
        [pn.Dense(784, 32), pn.ReLU(), pn.Dense(32, 32), pn.ReLU(), pn.Dense(32, 10), pn.Softmax()]
    )
    for (w, b), (w_ref, b_ref) in zip(
        by_recipe.get_parameters(), by_hand.get_parameters(), strict=True
    ):
        assert np.array_equal(pn.to_numpy(w), pn.to_numpy(w_ref))
        assert np.array_equal(pn.to_numpy(b), pn.to_numpy(b_ref))


def test_sine_weights_are_drawn_ten_times_wider(backend):
    pn.seed(0)
    weights = pn.to_numpy(recipes.build("sine").layers[2].weights)  # 64 x 64 draws
    assert 0.09 < float(np.std(weights)) < 0.11


@pytest.mark.parametrize(
    ("epochs", "expected"), [(None, 1000), (10001, 1000), (50, 5), (9, 1), (1, 1)]
)
def test_print_every_is_a_tenth_of_the_epochs(epochs, expected):
    assert recipes.get("spiral").print_every(epochs) == expected


def test_settings_sum_up_the_training_defaults():
    assert recipes.get("spiral").settings == "10001 epochs, full batch, lr 0.05, hidden 64"
    assert recipes.get("fashion-mnist").settings == "10 epochs, batch 128, lr 0.001, hidden 128"


@pytest.mark.parametrize("name", ["mnist", "Spiral", None])
def test_unknown_dataset_names_the_recipes(name):
    with pytest.raises(ValueError, match="no recipe for dataset.*spiral, vertical"):
        recipes.get(name)
    with pytest.raises(ValueError, match="no recipe"):
        recipes.build(name)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_inputs": 0}, "n_inputs"),
        ({"n_outputs": 2.5}, "n_outputs"),
        ({"hidden": -1}, "hidden"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_bad_sizes_and_rates_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        recipes.build("spiral", **kwargs)


def test_recipes_are_frozen():
    with pytest.raises(AttributeError):
        recipes.get("spiral").epochs = 1


def test_vertical_recipe_learns(backend):
    # The outcome, not the timing: the recipe's network and Adam settings separate the data.
    recipe = recipes.get("vertical")
    pn.seed(0)
    X, y, X_test, y_test = datasets.load("vertical")
    model = recipe.build()
    model.train(X, y, epochs=200, print_every=0)
    assert model.evaluate(X_test, y_test)[1] > 0.9


def test_the_small_networks_train_on_one_thread():
    # portnn train's default without --threads (measured: README, "The portnn command").
    ones = [name for name, recipe in recipes.RECIPES.items() if recipe.threads == 1]
    assert ones == ["spiral", "vertical", "sine", "digits"]
    assert recipes.get("fashion-mnist").threads is None


def test_vertical_borrows_the_chapter_10_network():
    spiral, vertical = recipes.get("spiral"), recipes.get("vertical")
    assert vertical.epochs == 1001 and vertical.about.startswith("vertical(100, 3)")
    assert vertical == dataclasses.replace(spiral, about=vertical.about, epochs=1001)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((), (10001, None, 1000)),
        ((50,), (50, None, 5)),
        ((50, 16), (50, 16, 5)),
        ((50, None, 0), (50, None, 0)),
        ((None, 8, 3), (10001, 8, 3)),
    ],
)
def test_training_settings_are_the_recipes_but_those_given(given, expected):
    assert recipes.get("spiral").training(*given) == expected


@pytest.mark.parametrize(
    ("given", "match"), [((0,), "epochs"), ((5, 2.5), "batch_size"), ((5, 2, -1), "print_every")]
)
def test_training_settings_refuse_bad_values(given, match):
    with pytest.raises(ValueError, match=match):
        recipes.get("spiral").training(*given)


def test_describe_names_sizes_layers_loss_and_optimizer(backend):
    model = recipes.build("sine", layers=3, hidden=8)
    assert recipes.describe(model) == "1-8-8-8-1 (ReLU, Linear)"
    model = recipes.build("spiral", optimizer="sgd", learning_rate=0.5)
    assert recipes.describe(model, training=True) == (
        "2-64-3 (ReLU, Softmax), CategoricalCrossentropy, SGD(learning_rate=0.5, decay=5e-07)"
    )


def test_build_for_command_builds_with_the_options_given(backend):
    model = recipes.build_for_command(
        "spiral", 5, hidden=16, layers=2, optimizer=None, learning_rate=None
    )
    assert dense_sizes(model) == (5, 16, 16, 3)
    assert isinstance(model.optimizer, pn.Adam) and model.optimizer.learning_rate == 0.05


def _saved(tmp_path, model, name="m.npz"):
    path = tmp_path / name
    model.save(path)
    return path


def test_build_for_command_resumes_a_saved_run(backend, tmp_path):
    X, y = datasets.spiral(20, 3)
    trained = recipes.build("spiral", optimizer="rmsprop", hidden=8)
    trained.train(X, y, epochs=3, print_every=0)
    model = recipes.build_for_command("spiral", 2, _saved(tmp_path, trained), hidden=None)
    assert isinstance(model.optimizer, pn.RMSprop) and model.optimizer.iterations == 3
    assert dense_sizes(model) == (2, 8, 3)


@pytest.mark.parametrize(
    ("network", "match"),
    [
        ({"hidden": 8}, "continues the saved network and optimizer; drop --hidden$"),
        (
            {"hidden": None, "layers": 2, "learning_rate": 0.1},
            "drop --layers, --learning-rate$",
        ),
    ],
)
def test_build_for_command_refuses_network_options_with_a_saved_run(
    backend, tmp_path, network, match
):
    path = _saved(tmp_path, recipes.build("spiral"))
    with pytest.raises(ValueError, match=match):
        recipes.build_for_command("spiral", 2, path, **network)


def test_resume_refuses_a_model_it_cannot_continue(backend, tmp_path):
    no_optimizer = pn.Model([pn.Dense(2, 3), pn.Softmax()])
    no_optimizer.set(loss=pn.CategoricalCrossentropy())
    path = _saved(tmp_path, no_optimizer, "bare.npz")
    with pytest.raises(ValueError, match="bare.npz holds no optimizer to resume"):
        recipes.resume(path, 2)
    path = _saved(tmp_path, recipes.build("spiral"))
    with pytest.raises(ValueError, match="m.npz takes 2 features, but sine has 1$"):
        recipes.build_for_command("sine", 1, path)
    with pytest.raises(FileNotFoundError, match="nope.npz: no such model file"):
        recipes.resume(tmp_path / "nope.npz", 2)


def _fitted(layers, loss):
    model = pn.Model(layers)
    model.set(loss=loss, optimizer=pn.Adam())
    return model


# A saved model that takes the dataset's features but does not fit it otherwise.
MISFITS = {
    "fewer classes": (
        lambda: _fitted([pn.Dense(2, 2), pn.Softmax()], pn.CategoricalCrossentropy()),
        "spiral",
        "m.npz gives 2 outputs, but spiral needs 3 (one per class); was it trained on another",
    ),
    "regression on classes": (
        lambda: _fitted([pn.Dense(2, 3), pn.Linear()], pn.MeanSquaredError()),
        "vertical",
        "m.npz is a regression (MeanSquaredError), but vertical is a classification; was it",
    ),
    "classifier on a regression": (
        lambda: _fitted([pn.Dense(1, 1), pn.Sigmoid()], pn.BinaryCrossentropy()),
        "sine",
        "m.npz is a classification (BinaryCrossentropy), but sine is a regression; was it",
    ),
    "regression of two targets": (
        lambda: _fitted([pn.Dense(1, 2), pn.Linear()], pn.MeanSquaredError()),
        "sine",
        "m.npz gives 2 outputs, but sine needs 1 (one per target); was it trained on",
    ),
}


@pytest.mark.parametrize("case", list(MISFITS))
def test_resume_refuses_a_model_that_does_not_fit_the_dataset(backend, tmp_path, case):
    make, name, message = MISFITS[case]
    model = make()
    path = _saved(tmp_path, model)
    with pytest.raises(ValueError, match=re.escape(message)):
        recipes.build_for_command(name, model.n_inputs, path)


@pytest.mark.parametrize(
    ("steps", "n_samples", "batch_size", "expected"),
    [
        (20, 300, None, 20),
        (0, 300, None, 0),
        (90, 1437, 32, 2),
        (90, 1437, 7, None),
        (3, 10, 5, None),
    ],
)
def test_epochs_done_are_whole_passes_of_the_steps(steps, n_samples, batch_size, expected):
    assert recipes.epochs_done(steps, n_samples, batch_size) == expected
