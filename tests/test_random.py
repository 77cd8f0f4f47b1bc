"""Seeded generators: one seed, one initial model on every backend; device draws repeatable."""

import numpy as np
import pytest
from array_api_compat import device as device_of
from helpers import CPU_BACKENDS

import portnn as pn
from portnn import random
from portnn.backend import library_of


def installed_cpu_backends():
    return [n for n in CPU_BACKENDS if n in pn.available_backends()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("init", ["book", "he", "glorot"])
def test_seed_gives_the_same_initial_weights_on_every_backend(dtype, init):
    if len(installed_cpu_backends()) < 2:
        pytest.skip("needs a second CPU backend to compare with NumPy")
    weights = {}
    for name in installed_cpu_backends():
        pn.seed(1234)
        first = pn.Dense(3, 5, weight_init=init, backend=name, dtype=dtype)
        second = pn.Dense(5, 2, weight_init=init, backend=name, dtype=dtype)
        assert library_of(first.weights) == name
        weights[name] = [pn.to_numpy(p) for p in (first.weights, second.weights)]
    reference = weights.pop("numpy")
    assert reference[0].dtype == np.dtype(dtype)
    assert not np.array_equal(reference[0][:2], reference[1][:2])  # two draws, not one twice
    for name, drawn in weights.items():
        for got, want in zip(drawn, reference, strict=True):
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_seed_repeats_and_different_seeds_differ(backend):
    def draw(s):
        pn.seed(s)
        return [pn.to_numpy(pn.Dense(4, 6).weights) for _ in range(2)]

    a, b, c = draw(5), draw(5), draw(6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])


def test_seed_accepts_numpy_integers(backend):
    pn.seed(np.int64(9))
    a = pn.to_numpy(pn.Dense(2, 3).weights)
    pn.seed(9)
    np.testing.assert_array_equal(pn.to_numpy(pn.Dense(2, 3).weights), a)


def test_seed_none_draws_fresh_entropy(backend):
    pn.seed(None)
    a = pn.to_numpy(pn.Dense(8, 8).weights)
    pn.seed(None)
    assert not np.array_equal(pn.to_numpy(pn.Dense(8, 8).weights), a)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", [0], float("nan"), True, np.bool_(False)])
def test_bad_seed_raises(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        pn.seed(bad)


def test_device_draws_do_not_shift_the_host_stream(backend):
    pn.seed(3)
    pn.Dense(2, 2)
    want = pn.to_numpy(pn.Dense(4, 4).weights)
    pn.seed(3)
    pn.Dense(2, 2)
    pn.Dropout(0.5).forward(backend.asarray(np.ones((10, 10))), training=True)
    random.permutation(10, backend)
    np.testing.assert_array_equal(pn.to_numpy(pn.Dense(4, 4).weights), want)


@pytest.fixture(params=["float32", "float64"])
def any_dtype_backend(request, backend_name):
    with pn.use_backend(backend_name, dtype=request.param) as b:
        yield b


def test_uniform_on_the_device(any_dtype_backend):
    b = any_dtype_backend
    pn.seed(11)
    x = random.uniform((40, 30), b)
    again = random.uniform((40, 30), b)
    assert library_of(x) == b.name
    assert x.dtype == b.dtype
    assert tuple(x.shape) == (40, 30)
    assert device_of(x) == b.device
    values = pn.to_numpy(x)
    assert values.min() >= 0 and values.max() < 1
    assert abs(values.mean() - 0.5) < 0.05
    assert not np.array_equal(values, pn.to_numpy(again))
    pn.seed(11)
    np.testing.assert_array_equal(pn.to_numpy(random.uniform((40, 30), b)), values)


@pytest.mark.parametrize("n", [1, 2, 50])
def test_permutation_on_the_device(backend, n):
    pn.seed(4)
    p = random.permutation(n, backend)
    assert library_of(p) == backend.name
    assert backend.xp.isdtype(p.dtype, "integral")
    assert tuple(p.shape) == (n,)
    assert device_of(p) == backend.device
    values = pn.to_numpy(p)
    np.testing.assert_array_equal(np.sort(values), np.arange(n))
    pn.seed(4)
    np.testing.assert_array_equal(pn.to_numpy(random.permutation(n, backend)), values)
    if n == 50:
        assert not np.array_equal(values, np.arange(n))
        assert not np.array_equal(pn.to_numpy(random.permutation(n, backend)), values)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_mask_is_drawn_on_the_device_and_repeats(any_dtype_backend, rate):
    b = any_dtype_backend
    inputs = b.asarray(np.ones((100, 80)))
    layer = pn.Dropout(rate)
    pn.seed(2)
    first = layer.forward(inputs, training=True)
    mask = layer.mask
    assert library_of(mask) == b.name
    assert mask.dtype == b.dtype and first.dtype == b.dtype
    assert tuple(mask.shape) == (100, 80)
    assert device_of(mask) == b.device
    second = pn.to_numpy(layer.forward(inputs, training=True))
    assert not np.array_equal(pn.to_numpy(first), second)
    pn.seed(2)
    np.testing.assert_array_equal(
        pn.to_numpy(layer.forward(inputs, training=True)), pn.to_numpy(first)
    )


def test_kept_state_leaves_the_host_stream_where_it_was(backend):
    pn.seed(8)
    want = pn.to_numpy(pn.Dense(3, 3).weights)
    pn.seed(8)
    with random.kept_state():
        inside = pn.to_numpy(pn.Dense(3, 3).weights)
    np.testing.assert_array_equal(inside, want)  # the block draws from the stream...
    np.testing.assert_array_equal(pn.to_numpy(pn.Dense(3, 3).weights), want)  # ...then rewinds
