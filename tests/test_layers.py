"""Dense, Dropout and Input: values, finite-difference gradients, initialisation, bad input."""

import math

import numpy as np
import pytest
from helpers import assert_grad, away_from_zero, numeric_grad

import portnn as pn
from portnn.backend import library_of

REGULARIZERS = {
    "none": {},
    "l1_weights": {"weight_regularizer_l1": 0.3},
    "l2_weights": {"weight_regularizer_l2": 0.2},
    "l1_biases": {"bias_regularizer_l1": 0.4},
    "l2_biases": {"bias_regularizer_l2": 0.5},
    "all": {
        "weight_regularizer_l1": 0.1,
        "weight_regularizer_l2": 0.7,
        "bias_regularizer_l1": 0.3,
        "bias_regularizer_l2": 0.25,
    },
}


def book_regularization_loss(W, b, regs):
    return (
        regs.get("weight_regularizer_l1", 0) * np.abs(W).sum()
        + regs.get("weight_regularizer_l2", 0) * (W * W).sum()
        + regs.get("bias_regularizer_l1", 0) * np.abs(b).sum()
        + regs.get("bias_regularizer_l2", 0) * (b * b).sum()
    )


@pytest.mark.parametrize("regs", REGULARIZERS.values(), ids=REGULARIZERS.keys())
def test_dense_gradients_match_finite_differences(backend64, regs):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5, 4))
    W = away_from_zero(rng, (4, 3))  # L1's |w| has a kink at 0
    b = away_from_zero(rng, (1, 3))
    R = rng.standard_normal((5, 3))
    layer = pn.Dense(4, 3, **regs)

    def objective(X=X, W=W, b=b):
        layer.weights, layer.biases = backend64.asarray(W), backend64.asarray(b)
        out = pn.to_numpy(layer.forward(backend64.asarray(X)))
        return float(np.sum(out * R)) + float(layer.regularization_loss())

    objective()
    dinputs = layer.backward(backend64.asarray(R))
    dweights, dbiases = layer.dweights, layer.dbiases
    for grad in (dinputs, dweights, dbiases):
        assert library_of(grad) == backend64.name
        assert grad.dtype == backend64.xp.float64
    assert_grad(dweights, numeric_grad(lambda w: objective(W=w), W))
    assert_grad(dbiases, numeric_grad(lambda v: objective(b=v), b))
    assert_grad(dinputs, numeric_grad(lambda x: objective(X=x), X))


@pytest.mark.parametrize("regs", REGULARIZERS.values(), ids=REGULARIZERS.keys())
def test_dense_forward_and_regularization_loss(backend64, regs):
    rng = np.random.default_rng(2)
    X, W, b = rng.standard_normal((6, 3)), rng.standard_normal((3, 2)), rng.standard_normal((1, 2))
    layer = pn.Dense(3, 2, **regs)
    layer.weights, layer.biases = backend64.asarray(W), backend64.asarray(b)
    out = layer.forward(backend64.asarray(X))
    assert layer.output is out
    np.testing.assert_allclose(pn.to_numpy(out), X @ W + b, rtol=1e-12)
    expected = book_regularization_loss(W, b, regs)
    assert float(layer.regularization_loss()) == pytest.approx(expected, rel=1e-12)
    loss = pn.CategoricalCrossentropy()
    assert loss.regularization_loss(layer) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("regs", "sign_of_zero"),
    [({"weight_regularizer_l1": 0.5}, "weights"), ({"bias_regularizer_l1": 0.5}, "biases")],
)
def test_l1_takes_the_sign_of_zero_as_plus_one(backend64, regs, sign_of_zero):
    layer = pn.Dense(2, 3, **regs)
    layer.weights = backend64.xp.zeros((2, 3), dtype=backend64.dtype)
    layer.forward(backend64.asarray(np.zeros((1, 2))))
    layer.backward(backend64.asarray(np.zeros((1, 3))))
    grad = pn.to_numpy(getattr(layer, "d" + sign_of_zero))
    np.testing.assert_array_equal(grad, np.full(grad.shape, 0.5))


def test_dense_without_dinputs(backend):
    layer = pn.Dense(3, 2)
    layer.compute_dinputs = False
    layer.forward(backend.asarray(np.ones((4, 3))))
    assert layer.backward(backend.asarray(np.ones((4, 2)))) is None
    assert layer.dinputs is None
    np.testing.assert_allclose(pn.to_numpy(layer.dweights), np.full((3, 2), 4.0))


def test_dense_book_initialisation(backend):
    layer = pn.Dense(300, 200)
    W, b = pn.to_numpy(layer.weights), pn.to_numpy(layer.biases)
    assert W.shape == (300, 200) and b.shape == (1, 200)
    assert W.dtype == np.float32 and b.dtype == np.float32
    np.testing.assert_array_equal(b, np.zeros((1, 200)))
    assert abs(W.mean()) < 0.001
    assert W.std() == pytest.approx(0.01, rel=0.02)


@pytest.mark.parametrize(
    ("kwargs", "std"),
    [
        ({"weight_scale": 0.1}, 0.1),  # the sine-regression chapter's scale
        ({"weight_init": "he"}, math.sqrt(2 / 300)),
        ({"weight_init": "glorot"}, math.sqrt(6 / 500) / math.sqrt(3)),
    ],
)
def test_dense_other_initialisations(backend, kwargs, std):
    W = pn.to_numpy(pn.Dense(300, 200, **kwargs).weights)
    assert W.std() == pytest.approx(std, rel=0.02)
    if kwargs.get("weight_init") == "glorot":
        assert np.abs(W).max() <= math.sqrt(6 / 500)


def test_input_layer_passes_data_on(backend):
    x = backend.asarray(np.arange(6.0).reshape(2, 3))
    layer = pn.Input()
    assert layer.forward(x) is x
    assert layer.backward(x) is x


def test_layer_to_moves_parameters(backend):
    layer = pn.Dense(2, 3, backend="numpy")
    W = pn.to_numpy(layer.weights)
    assert layer.to(backend.name) is layer
    assert library_of(layer.weights) == backend.name
    assert library_of(layer.biases) == backend.name
    np.testing.assert_array_equal(pn.to_numpy(layer.weights), W)


@pytest.mark.parametrize(("training", "rate"), [(False, 0.0), (False, 0.3), (True, 0.0)])
def test_dropout_is_identity_unless_training(backend, training, rate):
    x = backend.asarray(np.arange(12.0).reshape(3, 4))
    layer = pn.Dropout(rate)
    np.testing.assert_array_equal(pn.to_numpy(layer.forward(x, training=training)), pn.to_numpy(x))
    d = backend.asarray(np.full((3, 4), 2.0))
    np.testing.assert_array_equal(pn.to_numpy(layer.backward(d)), pn.to_numpy(d))


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_dropout_is_inverted_with_the_right_rate(backend, rate):
    rng = np.random.default_rng(3)
    X = rng.uniform(1, 2, (200, 150))
    layer = pn.Dropout(rate)
    out = pn.to_numpy(layer.forward(backend.asarray(X), training=True))
    mask = pn.to_numpy(layer.mask)
    keep = 1 - rate
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / keep, rtol=1e-6)
    np.testing.assert_allclose(out, X * mask, rtol=1e-6)
    assert kept.mean() == pytest.approx(keep, abs=0.01)
    assert out.mean() == pytest.approx(X.mean(), rel=0.03)  # inverted: the mean survives


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_gradient_with_a_fixed_mask(backend64, rate):
    rng = np.random.default_rng(4)
    X, R = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    layer = pn.Dropout(rate)

    def objective(x):
        pn.seed(21)  # the same mask each time
        return float(np.sum(pn.to_numpy(layer.forward(backend64.asarray(x), training=True)) * R))

    objective(X)
    dinputs = layer.backward(backend64.asarray(R))
    assert dinputs.dtype == backend64.xp.float64
    assert np.any(pn.to_numpy(layer.mask) == 0)
    assert_grad(dinputs, numeric_grad(objective, X))


def test_dropout_draws_a_new_mask_each_call_and_seed_repeats_them(backend):
    x = backend.asarray(np.ones((40, 30)))
    layer = pn.Dropout(0.5)

    def masks():
        pn.seed(3)  # the masks come from portnn.random's device stream
        return [pn.to_numpy(layer.forward(x, training=True)) for _ in range(2)]

    first, second = masks()
    assert not np.array_equal(first, second)  # a new mask each forward pass, not one kept
    again = masks()
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 2), (4, 5), (3,), (2, 3, 1)])
def test_dense_rejects_inputs_of_the_wrong_width(backend, shape):
    layer = pn.Dense(3, 2)
    with pytest.raises(ValueError, match=r"\(batch, 3\)") as info:
        layer.forward(backend.asarray(np.ones(shape)))
    assert str(shape) in str(info.value)
    assert not hasattr(layer, "output")


@pytest.mark.parametrize(
    ("sizes", "name", "bad"),
    [
        ((0, 3), "n_inputs", 0),
        ((3, 0), "n_neurons", 0),
        ((-1, 3), "n_inputs", -1),
        ((2.0, 3), "n_inputs", 2.0),
        ((2, "3"), "n_neurons", "3"),
        ((True, 3), "n_inputs", True),
        ((2, None), "n_neurons", None),
    ],
)
def test_dense_rejects_bad_sizes(sizes, name, bad):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {bad!r}"):
        pn.Dense(*sizes)


@pytest.mark.parametrize("name", list(REGULARIZERS["all"]))
@pytest.mark.parametrize("value", [-0.1, float("inf"), float("nan"), "0.1", None])
def test_dense_rejects_bad_regularizers(name, value):
    with pytest.raises(ValueError, match=name):
        pn.Dense(2, 3, **{name: value})


def test_dense_rejects_unknown_initialisation():
    with pytest.raises(ValueError, match="unknown weight_init 'xavier'"):
        pn.Dense(2, 3, weight_init="xavier")


@pytest.mark.parametrize("rate", [-0.1, 1, 1.0, 1.5, "0.5", None, float("nan")])
def test_dropout_rejects_rates_outside_zero_one(rate):
    with pytest.raises(ValueError, match=r"Dropout rate .* \[0, 1\)"):
        pn.Dropout(rate)


# --- the layer contract: shapes and config, asked of every layer type ------------------------
CONTRACT = [
    lambda: pn.Dense(5, 3, weight_regularizer_l2=1e-3, weight_init="he"),
    lambda: pn.Dropout(0.25),
    lambda: pn.Input(),
    pn.ReLU,
    pn.Softmax,
    pn.Sigmoid,
    pn.Linear,
    pn.Tanh,
    lambda: pn.LeakyReLU(0.2),
]


@pytest.mark.parametrize("make", CONTRACT, ids=lambda m: repr(m()))
def test_every_layer_says_its_shapes_and_config(backend, make):
    layer = make()
    x = backend.asarray(np.random.RandomState(0).uniform(-1, 1, (4, 5)))
    y = layer.forward(x, training=False)
    assert layer.output_shape((None, 5)) == (None, *tuple(y.shape)[1:])
    assert layer.output_shape((4, 5)) == tuple(y.shape)
    config = layer.get_config()
    shapes = {name: tuple(getattr(layer, name).shape) for name in layer.param_names}
    assert type(layer).parameter_shapes(config) == shapes
    rebuilt = type(layer)(**config)
    assert rebuilt.get_config() == config and repr(rebuilt) == repr(layer)
    if not layer.param_names:
        assert layer.regularization_loss() == 0


@pytest.mark.parametrize(
    ("shape", "match"),
    [((None, 4), r"takes inputs of shape \(batch, 5\), not \(batch, 4\)"), ((None, 5, 1), "not")],
)
def test_dense_refuses_inputs_it_cannot_take(shape, match):
    with pytest.raises(ValueError, match=match):
        pn.Dense(5, 3).output_shape(shape)
    for config in ({"n_inputs": 0, "n_neurons": 3}, {"n_inputs": "5", "n_neurons": 3}, {}):
        with pytest.raises(ValueError, match="not positive integers"):
            pn.Dense.parameter_shapes(config)


def test_a_new_layer_type_needs_only_its_math_shapes_and_config(backend, tmp_path):
    """A layer the library has never heard of trains, summarises and chains in a model."""

    class Repeat(pn.Layer):
        """Each feature twice: ``[x, x]``; backward sums the two halves' gradients."""

        def output_shape(self, input_shape):
            return (input_shape[0], None if input_shape[1] is None else 2 * input_shape[1])

        def forward(self, inputs, training=False):
            self.output = pn.get_backend().xp.concat([inputs, inputs], axis=1)
            return self.output

        def backward(self, dvalues):
            n = dvalues.shape[1] // 2
            self.dinputs = dvalues[:, :n] + dvalues[:, n:]
            return self.dinputs

    model = pn.Model([pn.Dense(2, 3), Repeat(), pn.ReLU(), pn.Dense(6, 3), pn.Softmax()])
    model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(0.02))
    assert model.shapes() == [(None, 3), (None, 6), (None, 6), (None, 3), (None, 3)]
    assert model.n_inputs == 2 and model.n_outputs == 3
    X, y = pn.datasets.spiral(20, 3)
    history = model.train(X, y, epochs=30, print_every=None)
    assert history["loss"][-1] < history["loss"][0]
    assert "(batch, 6)" in pn._summary.summary(model)
    wrong = pn.Model([pn.Dense(2, 3), Repeat(), pn.Dense(3, 3), pn.Softmax()])
    with pytest.raises(ValueError, match=r"do not chain at layer 2: .*not \(batch, 6\)"):
        wrong.finalize()
