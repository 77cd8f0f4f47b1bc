"""Thread control: set_num_threads and num_threads reach every BLAS/OpenMP pool (and torch's,
where torch is imported), give the counts back, and refuse a bad count changing nothing."""

import fractions
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

import portnn as pn
import portnn.backend
from portnn import threads


@pytest.fixture
def before(backend):
    """The counts with the selected backend's library loaded; every pool gets its own count
    back after the test, whatever the test did (set_num_threads changes them for good)."""
    counts = pn.get_num_threads()
    if not counts:
        pytest.skip("threadpoolctl finds no BLAS or OpenMP pool in this process")
    torch = sys.modules.get("torch")
    torch_count = torch.get_num_threads() if torch is not None else None
    limits = threadpoolctl.threadpool_limits(limits=None)  # changes nothing; restores on exit
    yield counts
    limits.restore_original_limits()
    if torch is not None:
        torch.set_num_threads(torch_count)


def other_count(counts):
    """A count that differs from at least one pool's present count."""
    return 1 if max(counts.values()) > 1 else 2


def test_set_num_threads_sets_every_pool(before, backend_name):
    assert any(name.startswith(("openblas", "mkl", "blis", "flexiblas")) for name in before)
    assert ("torch" in before) == ("torch" in sys.modules)  # only where torch is imported
    assert "torch" in before or backend_name != "torch"
    for n in (other_count(before), 3, 1):
        pn.set_num_threads(n)
        counts = pn.get_num_threads()
        assert counts.keys() == before.keys()
        assert set(counts.values()) == {n}


def test_torch_gets_its_own_call(before, backend_name, monkeypatch):
    """torch.set_num_threads, not only the OpenMP pool: builds without OpenMP (and torch's own
    MKL) see only that call, though here torch follows the libgomp threadpoolctl sets."""
    if backend_name != "torch":
        pytest.skip("torch's intra-op pool: run with the torch backend")
    torch = sys.modules["torch"]
    calls, real = [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda k: (calls.append(k), real(k))[1])
    n, old = other_count(before), torch.get_num_threads()
    with pn.num_threads(n):
        assert calls == [n]
    assert calls == [n, old]
    pn.set_num_threads(3)
    assert calls == [n, old, 3]


def test_num_threads_sets_the_block_and_gives_every_count_back(before, backend):
    n = other_count(before)
    with pn.num_threads(n):
        assert set(pn.get_num_threads().values()) == {n}
        X = backend.xp.ones((64, 64), dtype=backend.dtype)
        assert float(pn.to_numpy(X @ X)[0, 0]) == 64.0  # the libraries still compute
    assert pn.get_num_threads() == before


def test_num_threads_gives_the_counts_back_after_an_error(before):
    with pytest.raises(ZeroDivisionError), pn.num_threads(other_count(before)):
        1 / 0  # noqa: B018
    assert pn.get_num_threads() == before


def test_num_threads_nests(before):
    with pn.num_threads(1):
        with pn.num_threads(2):
            assert set(pn.get_num_threads().values()) == {2}
        assert set(pn.get_num_threads().values()) == {1}
    assert pn.get_num_threads() == before


def test_training_under_one_thread_gives_the_same_model(before, backend):
    def trained():
        pn.seed(0)
        X, y = pn.datasets.spiral(50, 3)
        model = pn.Model([pn.Dense(2, 32), pn.ReLU(), pn.Dense(32, 3), pn.Softmax()])
        model.set(loss=pn.CategoricalCrossentropy(), optimizer=pn.Adam(learning_rate=0.05))
        model.train(X, y, epochs=5, print_every=0)
        return pn.to_numpy(model.predict(X))

    with pn.num_threads(1):
        one = trained()
    np.testing.assert_allclose(one, trained(), rtol=1e-5, atol=1e-6)
    assert pn.get_num_threads() == before


@pytest.mark.parametrize(
    "n", [np.int64(1), np.int32(2), np.uint8(1), 2], ids=["int64", "int32", "uint8", "int"]
)
def test_any_integer_is_taken(before, n):
    with pn.num_threads(n):
        counts = pn.get_num_threads()
        assert set(counts.values()) == {int(n)}
        assert all(type(v) is int for v in counts.values())
    assert pn.get_num_threads() == before
    pn.set_num_threads(n)
    assert set(pn.get_num_threads().values()) == {int(n)}


BAD = [0, -1, True, False, 1.0, 2.5, "2", None, np.float64(2.0), fractions.Fraction(2)]


@pytest.mark.parametrize("n", BAD, ids=[repr(n) for n in BAD])
@pytest.mark.parametrize("call", ["set_num_threads", "num_threads"])
def test_a_bad_count_is_refused_and_changes_nothing(before, call, n):
    with pytest.raises(ValueError, match=r"the number of threads must be a positive integer, got "):
        getattr(pn, call)(n)  # num_threads refuses at the call, before any with-block
    assert pn.get_num_threads() == before


@pytest.mark.parametrize("n", [1025, 2**31, 10**11])
@pytest.mark.parametrize("call", ["set_num_threads", "num_threads", "limit"])
def test_too_many_threads_are_refused_before_any_pool_changes(before, call, n):
    """torch refuses 2**31 and up ("Overflow when unpacking long"), but only after the BLAS
    pools were set: the count is checked first, whatever library is loaded."""
    with pytest.raises(ValueError, match=rf"the number of threads must be at most 1024, got {n}"):
        getattr(threads, call)(n)
    assert pn.get_num_threads() == before


def test_limit_loads_the_backends_first_then_sets_and_gives_back(before, monkeypatch):
    loaded, real = [], portnn.backend.get_backend
    monkeypatch.setattr(
        portnn.backend, "get_backend", lambda n=None: (loaded.append(n), real(n))[1]
    )
    n = other_count(before)
    with threads.limit(n, [None, "cupy", "no such backend"]):  # unusable: passed over
        assert loaded == [None, "cupy", "no such backend"]
        assert set(pn.get_num_threads().values()) == {n}
    assert pn.get_num_threads() == before


def test_limit_imports_the_modules_first_passing_over_one_that_fails(before, monkeypatch):
    imported = []
    monkeypatch.setattr(
        threads.importlib, "import_module", lambda name: imported.append(name) or 1 / 0
    )
    with threads.limit(1, [], ["sklearn.datasets", "no.such.module"]):
        assert imported == ["sklearn.datasets", "no.such.module"]
        assert set(pn.get_num_threads().values()) == {1}
    assert pn.get_num_threads() == before


def test_limit_none_changes_nothing_and_loads_nothing(before, monkeypatch):
    monkeypatch.setattr(portnn.backend, "get_backend", lambda n=None: pytest.fail("loaded"))
    with threads.limit(None, ["torch"]):
        assert pn.get_num_threads() == before


@pytest.mark.parametrize("n", [0, 2.5, True])
def test_limit_refuses_a_bad_count_before_loading_anything(before, monkeypatch, n):
    monkeypatch.setattr(portnn.backend, "get_backend", lambda n=None: pytest.fail("loaded"))
    with pytest.raises(ValueError, match="the number of threads must be a positive integer"):
        threads.limit(n)
    assert pn.get_num_threads() == before


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"openblas (numpy)": 1}, "1 CPU thread"),
        ({"openblas (numpy)": 4, "openmp (torch)": 4, "torch": 4}, "4 CPU threads"),
        ({"openblas (numpy)": 2, "torch": 1}, "CPU threads: openblas (numpy) 2, torch 1"),
        ({}, ""),
    ],
)
def test_describe_puts_the_counts_in_a_few_words(counts, expected):
    assert threads.describe(counts) == expected


def test_describe_reads_the_counts_now(before):
    with pn.num_threads(3):
        assert threads.describe() == "3 CPU threads"


def test_torch_is_not_imported_for_threads():
    code = (
        "import sys, portnn as pn\n"
        "pn.set_num_threads(1)\n"
        "with pn.num_threads(1):\n"
        "    counts = pn.get_num_threads()\n"
        "assert 'torch' not in sys.modules and 'torch' not in counts, counts\n"
        "print(sorted(set(counts.values())))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("[1]", "[]")
