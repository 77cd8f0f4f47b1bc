"""portnn.recipes: the book's network per dataset, built on the selected backend."""

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
