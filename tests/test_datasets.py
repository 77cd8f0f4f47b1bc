"""Datasets: the book's synthetic data against independent formulas, and Fashion-MNIST read
from tiny generated IDX files and PNG folders, and downloaded from a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import struct
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import portnn as pn
from portnn import datasets
from portnn.backend import library_of

# The module, not the function of the same name that portnn.datasets re-exports.
from portnn.datasets import fashion as fm

# --- spiral, vertical, sine -------------------------------------------------------------------


# The book draws with NumPy's legacy global generator (``np.random.randn`` after
# ``np.random.seed``); portnn's seed gives that same Mersenne Twister stream.


def book_spiral(samples, classes, rng):
    X = np.zeros((samples * classes, 2))
    y = np.zeros(samples * classes, dtype=np.uint8)
    for k in range(classes):
        r = np.linspace(0.0, 1, samples)
        t = np.linspace(k * 4, (k + 1) * 4, samples) + rng.randn(samples) * 0.2
        X[samples * k : samples * (k + 1), 0] = r * np.sin(t * 2.5)
        X[samples * k : samples * (k + 1), 1] = r * np.cos(t * 2.5)
        y[samples * k : samples * (k + 1)] = k
    return X, y


def book_vertical(samples, classes, rng):
    X = np.zeros((samples * classes, 2))
    y = np.zeros(samples * classes, dtype=np.uint8)
    for k in range(classes):
        X[samples * k : samples * (k + 1), 0] = rng.randn(samples) * 0.1 + k / 3
        X[samples * k : samples * (k + 1), 1] = rng.randn(samples) * 0.1 + 0.5
        y[samples * k : samples * (k + 1)] = k
    return X, y


@pytest.mark.parametrize(
    ("make", "book"), [(datasets.spiral, book_spiral), (datasets.vertical, book_vertical)]
)
def test_spiral_and_vertical_follow_the_book(make, book):
    X, y = make(50, 4, seed=7)
    assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
    assert X.shape == (200, 2) and X.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.uint8
    assert np.array_equal(y, np.repeat(np.arange(4), 50))  # classes in order, not shuffled
    X_ref, y_ref = book(50, 4, np.random.RandomState(7))
    np.testing.assert_allclose(X, X_ref, rtol=1e-6, atol=1e-7)
    assert np.array_equal(y, y_ref)


def test_spiral_radius_grows_from_the_centre_along_each_arm():
    X, _ = datasets.spiral(30, 3, seed=1)
    r = np.hypot(X[:, 0], X[:, 1]).reshape(3, 30)
    np.testing.assert_allclose(r, np.tile(np.linspace(0, 1, 30), (3, 1)), atol=1e-6)


@pytest.mark.parametrize(
    ("make", "book"), [(datasets.spiral, book_spiral), (datasets.vertical, book_vertical)]
)
def test_global_seed_makes_data_repeatable(make, book):
    pn.seed(3)
    X1, _ = make(20, 3)
    X2, _ = make(20, 3)
    pn.seed(3)
    X3, _ = make(20, 3)
    assert np.array_equal(X1, X3)
    assert not np.array_equal(X1, X2)  # the generator moves on between calls
    np.testing.assert_allclose(X1, book(20, 3, np.random.RandomState(3))[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [datasets.spiral, datasets.vertical])
def test_seed_argument_is_repeatable_and_leaves_the_global_stream_alone(make):
    pn.seed(0)
    expected_next = pn.random.host().standard_normal(3)
    pn.seed(0)
    a, _ = make(10, 2, seed=5)
    b, _ = make(10, 2, seed=5)
    c, _ = make(10, 2, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(pn.random.host().standard_normal(3), expected_next)


def test_sine_follows_the_book():
    X, y = datasets.sine(1000)
    assert X.shape == (1000, 1) and y.shape == (1000, 1)
    assert X.dtype == np.float32 and y.dtype == np.float32
    X_ref = np.arange(1000).reshape(-1, 1) / 1000
    np.testing.assert_allclose(X, X_ref, rtol=1e-6)
    np.testing.assert_allclose(y, np.sin(2 * np.pi * X_ref), atol=1e-6)
    X5, _ = datasets.sine(5)
    np.testing.assert_allclose(X5[:, 0], [0.0, 0.2, 0.4, 0.6, 0.8], rtol=1e-6)


def test_datasets_return_numpy_by_default_even_inside_a_backend(backend):
    for X, y in (datasets.spiral(5, 2, seed=0), datasets.vertical(5, 2, seed=0), datasets.sine(5)):
        assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)


def test_datasets_backend_argument(backend):
    cases = [
        (datasets.spiral(8, 3, seed=2), datasets.spiral(8, 3, seed=2, backend=backend)),
        (datasets.vertical(8, 3, seed=2), datasets.vertical(8, 3, seed=2, backend=backend.name)),
        (datasets.sine(16), datasets.sine(16, backend=backend)),
    ]
    for (X_np, y_np), (X, y) in cases:
        assert library_of(X) == backend.name and library_of(y) == backend.name
        assert X.dtype == backend.dtype
        assert np.array_equal(pn.to_numpy(X), X_np)
        assert np.array_equal(pn.to_numpy(y), y_np)
        assert pn.to_numpy(y).dtype == y_np.dtype  # labels stay uint8, sine's y stays float32


@pytest.mark.parametrize("samples", [0, -3, 2.5, True, "10", None])
def test_bad_sample_counts_raise(samples):
    with pytest.raises(ValueError, match="samples"):
        datasets.spiral(samples, 3)
    with pytest.raises(ValueError, match="samples"):
        datasets.vertical(samples, 3)
    with pytest.raises(ValueError, match="samples"):
        datasets.sine(samples)


@pytest.mark.parametrize("make", [datasets.spiral, datasets.vertical])
def test_more_classes_than_uint8_holds_get_wider_labels(make):
    # 257 classes once overflowed the uint8 labels with a raw OverflowError.
    X, y = make(2, 257)
    assert y.dtype == np.uint16
    np.testing.assert_array_equal(y, np.repeat(np.arange(257), 2))
    assert make(2, 256)[1].dtype == np.uint8  # the book's dtype while it fits


def test_counts_may_be_numpy_integers():
    X, y = datasets.spiral(np.int64(5), np.uint8(3))
    assert X.shape == (15, 2)


@pytest.mark.parametrize("classes", [0, -1, 1.5, False])
def test_bad_class_counts_raise(classes):
    with pytest.raises(ValueError, match="classes"):
        datasets.spiral(10, classes)
    with pytest.raises(ValueError, match="classes"):
        datasets.vertical(10, classes)


# --- Fashion-MNIST: tiny generated files ------------------------------------------------------

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = fm.FILES


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Never read the user's real cache, and never reach for the real mirror."""
    monkeypatch.setenv("PORTNN_DATA", str(tmp_path / "portnn-data"))
    monkeypatch.delenv("PORTNN_FASHION_MNIST_URL", raising=False)


@pytest.fixture(scope="module")
def tiny():
    """20 training and 10 test images with every pixel value's extremes present."""
    rng = np.random.default_rng(1234)
    X = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    X_test = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    X[0, 0, 0], X[0, 0, 1], X_test[0, 0, 0] = 0, 255, 128
    y = rng.integers(0, 10, size=20, dtype=np.uint8)
    y[:10] = np.arange(10)
    y_test = rng.integers(0, 10, size=10, dtype=np.uint8)
    return X, y, X_test, y_test


def idx_bytes(array, dtype_code=0x08):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(folder, tiny, gz=True):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(fm.FILES, tiny, strict=True):
        data = idx_bytes(array)
        use_gz = gz if isinstance(gz, bool) else name in gz
        if use_gz:
            (folder / name).write_bytes(gzip.compress(data))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(data)
    return folder


def write_png(folder, tiny):
    Image = pytest.importorskip("PIL.Image")
    X, y, X_test, y_test = tiny
    for split, images, labels in (("train", X, y), ("test", X_test, y_test)):
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            target = Path(folder) / split / str(label)
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(target / f"{i:04d}.png")
    return Path(folder)


def scaled(images):
    return ((images.reshape(len(images), -1).astype(np.float64) - 127.5) / 127.5).astype(np.float32)


def check_loaded(loaded, tiny):
    X, y, X_test, y_test = loaded
    assert X.shape == (20, 784) and X.dtype == np.float32
    assert X_test.shape == (10, 784) and X_test.dtype == np.float32
    assert y.shape == (20,) and y.dtype == np.uint8
    assert y_test.shape == (10,) and y_test.dtype == np.uint8
    np.testing.assert_array_equal(X, scaled(tiny[0]))
    np.testing.assert_array_equal(X_test, scaled(tiny[2]))
    np.testing.assert_array_equal(y, tiny[1])
    np.testing.assert_array_equal(y_test, tiny[3])
    assert X[0, 0] == -1.0 and X[0, 1] == 1.0 and X_test[0, 0] == np.float32(0.5 / 127.5)
    assert X.min() >= -1.0 and X.max() <= 1.0


def test_class_names():
    assert fm.CLASS_NAMES == datasets.FASHION_MNIST_CLASSES
    assert fm.CLASS_NAMES[0] == "T-shirt/top" and fm.CLASS_NAMES[9] == "Ankle boot"
    assert len(fm.CLASS_NAMES) == 10 and fm.CLASS_NAMES[7] == "Sneaker"


@pytest.mark.parametrize("gz", [True, False, (TRAIN_IMAGES, TEST_LABELS)], ids=["gz", "raw", "mix"])
def test_reads_idx_files(tmp_path, tiny, gz):
    folder = write_idx(tmp_path / "fm", tiny, gz=gz)
    check_loaded(datasets.fashion_mnist(folder), tiny)
    check_loaded(datasets.fashion_mnist(str(folder)), tiny)


def test_reads_gzip_by_content_whatever_the_name(tmp_path, tiny):
    folder = write_idx(tmp_path, tiny, gz=False)
    raw = folder / TRAIN_LABELS.removesuffix(".gz")
    raw.write_bytes(gzip.compress(raw.read_bytes()))
    check_loaded(datasets.fashion_mnist(folder), tiny)


def test_reads_the_books_png_folders_identically(tmp_path, tiny):
    idx = datasets.fashion_mnist(write_idx(tmp_path / "idx", tiny))
    png = datasets.fashion_mnist(write_png(tmp_path / "png", tiny))
    # The PNG layout orders by label, then by file name (the original index here).
    for split in (0, 2):
        order = np.argsort(idx[split + 1], kind="stable")
        np.testing.assert_array_equal(png[split], idx[split][order])
        np.testing.assert_array_equal(png[split + 1], idx[split + 1][order])
        assert png[split].dtype == np.float32 and png[split + 1].dtype == np.uint8
    assert np.array_equal(png[1], np.sort(tiny[1]))


def test_png_needs_28x28_greyscale(tmp_path, tiny):
    Image = pytest.importorskip("PIL.Image")
    folder = write_png(tmp_path, tiny)
    bad = folder / "train" / "3" / "9999.png"
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"9999\.png.*greyscale.*'RGB'"):
        datasets.fashion_mnist(folder)
    Image.fromarray(np.zeros((27, 28), dtype=np.uint8)).save(bad)
    with pytest.raises(ValueError, match=r"9999\.png.*28x27"):
        datasets.fashion_mnist(folder)


def test_png_label_folders_must_be_digits(tmp_path, tiny):
    folder = write_png(tmp_path, tiny)
    (folder / "test" / "shoes").mkdir()
    with pytest.raises(ValueError, match="shoes.*0 to 9"):
        datasets.fashion_mnist(folder)


def test_png_without_pillow_says_what_to_install(tmp_path, tiny, monkeypatch):
    folder = write_png(tmp_path, tiny)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'portnn\[images\]'"):
        datasets.fashion_mnist(folder)


def _with(data, at, value):
    data = bytearray(data)
    data[at] = value
    return bytes(data)


CORRUPTIONS = {
    "bad magic": (TRAIN_IMAGES, lambda d: b"\x12\x34" + d[2:], "magic"),
    "wrong dtype code": (TRAIN_LABELS, lambda d: _with(d, 2, 0x0D), "magic"),
    "wrong ndim": (TEST_LABELS, lambda d: _with(d, 3, 3), "magic"),
    "truncated data": (TRAIN_IMAGES, lambda d: d[:-100], "truncated"),
    "truncated header": (TEST_IMAGES, lambda d: d[:10], "truncated"),
    "empty": (TEST_LABELS, lambda d: b"", "truncated"),
    "trailing bytes": (TRAIN_LABELS, lambda d: d + b"\x00\x01", "wrong size"),
    "image size": (TEST_IMAGES, lambda d: d[:8] + struct.pack(">I", 27) + d[12:], "27x28"),
    "count mismatch": (TRAIN_LABELS, lambda d: d[:4] + struct.pack(">I", 19) + d[8:-1], "19"),
    "label range": (TEST_LABELS, lambda d: d[:-1] + b"\x0a", "out of range"),
}


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_idx_raises_naming_the_file(tmp_path, tiny, case, gz):
    name, corrupt, message = CORRUPTIONS[case]
    folder = write_idx(tmp_path, tiny, gz=gz)
    file = folder / (name if gz else name.removesuffix(".gz"))
    data = gzip.decompress(file.read_bytes()) if gz else file.read_bytes()
    data = corrupt(data)
    file.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ValueError, match=message) as info:
        datasets.fashion_mnist(folder)
    assert file.name in str(info.value)


def test_truncated_gzip_raises_naming_the_file(tmp_path, tiny):
    folder = write_idx(tmp_path, tiny)
    file = folder / TRAIN_IMAGES
    file.write_bytes(file.read_bytes()[:-200])
    with pytest.raises(ValueError, match=f"{TRAIN_IMAGES}.*gzip"):
        datasets.fashion_mnist(folder)


def test_missing_files_say_what_to_fetch_and_where(tmp_path, tiny):
    folder = tmp_path / "mine"
    write_idx(folder, tiny)
    (folder / TEST_IMAGES).unlink()
    with pytest.raises(FileNotFoundError) as info:
        datasets.fashion_mnist(folder)
    message = str(info.value)
    for name in fm.FILES:
        assert name in message
        assert fm.DEFAULT_URL + name in message
    assert str(folder) in message and str(fm.default_data_dir()) in message
    assert "has only" in message and "download=True" in message
    assert "PORTNN_DATA" in message and "train/<label>/*.png" in message


def test_missing_files_message_names_the_configured_mirror(monkeypatch):
    monkeypatch.setenv("PORTNN_FASHION_MNIST_URL", "https://mirror.example/fmnist")
    with pytest.raises(FileNotFoundError, match="https://mirror.example/fmnist/t10k-labels"):
        datasets.fashion_mnist()
    with pytest.raises(FileNotFoundError, match="https://other.example/x/train-images"):
        datasets.fashion_mnist(base_url="https://other.example/x/")


def test_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTNN_DATA", str(tmp_path / "data"))
    assert fm.default_data_dir() == tmp_path / "data" / "fashion-mnist"
    monkeypatch.delenv("PORTNN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fm.default_data_dir() == tmp_path / "xdg" / "portnn" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "home"))
    assert fm.default_data_dir() == tmp_path / "home" / ".cache" / "portnn" / "fashion-mnist"


def test_finds_files_in_portnn_data(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("PORTNN_DATA", str(tmp_path / "elsewhere"))
    write_idx(tmp_path / "elsewhere" / "fashion-mnist", tiny, gz=False)
    check_loaded(datasets.fashion_mnist(), tiny)
    # A path without the files falls back to the data folder.
    check_loaded(datasets.fashion_mnist(tmp_path / "empty"), tiny)


def test_path_wins_over_the_data_folder(tmp_path, tiny):
    X, y, X_test, y_test = tiny
    write_idx(fm.default_data_dir(), (255 - X, y, 255 - X_test, y_test))
    check_loaded(datasets.fashion_mnist(write_idx(tmp_path / "mine", tiny)), tiny)


def test_fashion_mnist_backend_argument(tmp_path, tiny, backend):
    folder = write_idx(tmp_path, tiny)
    expected = datasets.fashion_mnist(folder)
    got = datasets.fashion_mnist(folder, backend=backend)
    for a, b in zip(got, expected, strict=True):
        assert library_of(a) == backend.name
        np.testing.assert_array_equal(pn.to_numpy(a), b)
        assert pn.to_numpy(a).dtype == b.dtype
    assert got[0].dtype == backend.dtype


# --- Fashion-MNIST: downloading from a local server -------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture
def server(tmp_path, tiny):
    """The tiny gz files served over HTTP on 127.0.0.1 (no outside network)."""
    served = write_idx(tmp_path / "www" / "files", tiny)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "www"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/files", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def served_sums(server):
    _, served = server
    return {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in fm.FILES}


def test_checksums_are_the_published_ones():
    assert fm.CHECKSUMS == {
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    }


def test_download_fetches_checks_and_loads(tmp_path, tiny, server, served_sums, capsys):
    url, served = server
    dest = tmp_path / "dest" / "nested"
    assert fm.download(dest, base_url=url, checksums=served_sums) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(fm.FILES)  # no temp files left
    for name in fm.FILES:
        assert (dest / name).read_bytes() == (served / name).read_bytes()
    check_loaded(datasets.fashion_mnist(dest), tiny)
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal

    # Files already there with the right checksum are kept, not fetched again.
    for name in fm.FILES:
        (served / name).unlink()
    fm.download(dest, base_url=url + "/", checksums=served_sums)
    check_loaded(datasets.fashion_mnist(dest), tiny)


def test_download_replaces_a_damaged_local_file(tmp_path, tiny, server, served_sums):
    url, served = server
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / TEST_LABELS).write_bytes(b"not the file")
    (dest / TRAIN_IMAGES).write_bytes((served / TRAIN_IMAGES).read_bytes())
    (served / TRAIN_IMAGES).unlink()  # a good local copy is kept, so this is never fetched
    fm.download(dest, base_url=url, checksums=served_sums)
    assert (dest / TEST_LABELS).read_bytes() == (served / TEST_LABELS).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == sorted(fm.FILES)
    check_loaded(datasets.fashion_mnist(dest), tiny)


def test_fashion_mnist_download_true_uses_the_env_mirror(tiny, server, served_sums, monkeypatch):
    url, _ = server
    for name, md5 in served_sums.items():
        monkeypatch.setitem(fm.CHECKSUMS, name, md5)
    monkeypatch.setenv("PORTNN_FASHION_MNIST_URL", url)
    check_loaded(datasets.fashion_mnist(download=True), tiny)
    assert sorted(p.name for p in fm.default_data_dir().iterdir()) == sorted(fm.FILES)
    # and the next call finds them in the cache without download=True
    check_loaded(datasets.fashion_mnist(), tiny)


def test_fashion_mnist_download_true_into_path(tmp_path, tiny, server, served_sums, monkeypatch):
    url, _ = server
    for name, md5 in served_sums.items():
        monkeypatch.setitem(fm.CHECKSUMS, name, md5)
    dest = tmp_path / "mine"
    check_loaded(datasets.fashion_mnist(dest, download=True, base_url=url), tiny)
    assert sorted(p.name for p in dest.iterdir()) == sorted(fm.FILES)
    assert not fm.default_data_dir().exists()


def test_corrupt_download_is_rejected_and_not_kept(tmp_path, server, served_sums):
    url, served = server
    file = served / TRAIN_LABELS
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    actual = hashlib.md5(file.read_bytes()).hexdigest()
    assert actual != served_sums[TRAIN_LABELS]
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="checksum") as info:
        fm.download(dest, base_url=url, checksums=served_sums)
    message = str(info.value)
    assert TRAIN_LABELS in message and served_sums[TRAIN_LABELS] in message and actual in message
    left = sorted(p.name for p in dest.iterdir())
    assert left == [TRAIN_IMAGES]  # fetched before the bad one; nothing else, no temp file


def test_default_checksums_reject_files_that_are_not_the_real_ones(tmp_path, server):
    url, _ = server
    with pytest.raises(ValueError, match=f"{TRAIN_IMAGES}.*8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        datasets.fashion_mnist(tmp_path / "dest", download=True, base_url=url)
    assert list((tmp_path / "dest").iterdir()) == []


def test_missing_remote_file_raises_and_leaves_nothing(tmp_path, server, served_sums):
    url, served = server
    (served / TEST_IMAGES).unlink()
    dest = tmp_path / "dest"
    with pytest.raises(OSError, match=f"{TEST_IMAGES}.*404"):
        fm.download(dest, base_url=url, checksums=served_sums)
    assert sorted(p.name for p in dest.iterdir()) == [TRAIN_IMAGES, TRAIN_LABELS]


def test_download_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="http, https or file"):
        fm.download(tmp_path, base_url="ftp://example.invalid/")
    with pytest.raises(ValueError, match=TEST_LABELS):
        fm.download(tmp_path, base_url="http://127.0.0.1:9/", checksums={TRAIN_IMAGES: "0"})
    assert list(tmp_path.iterdir()) == []


# --- load(): every dataset, split as portnn train uses it -------------------------------------


@pytest.mark.parametrize(("name", "make"), [("spiral", book_spiral), ("vertical", book_vertical)])
def test_load_draws_training_data_from_the_global_stream_and_tests_from_the_seed(name, make):
    pn.seed(0)
    X, y, X_test, y_test = datasets.load(name, seed=4)
    rng = np.random.RandomState(0)  # portnn.seed(0): the book's own data
    X_ref, y_ref = make(100, 3, rng)
    np.testing.assert_allclose(X, X_ref, rtol=1e-6, atol=1e-7)
    assert np.array_equal(y, y_ref)
    X_test_ref, y_test_ref = make(100, 3, np.random.RandomState(5))  # seed + 1
    np.testing.assert_allclose(X_test, X_test_ref, rtol=1e-6, atol=1e-7)
    assert np.array_equal(y_test, y_test_ref)
    pn.seed(0)
    X_again, _, X_test_again, _ = datasets.load(name, seed=4)
    assert np.array_equal(X, X_again) and np.array_equal(X_test, X_test_again)


def test_load_sine_has_no_test_split():
    X, y, X_test, y_test = datasets.load("sine")
    assert X.shape == y.shape == (1000, 1) and X_test is None and y_test is None
    assert np.array_equal(X, datasets.sine(1000)[0])


def test_load_fashion_mnist_reads_the_files(tmp_path, tiny):
    folder = write_idx(tmp_path / "f", tiny)
    loaded = datasets.load("fashion-mnist", path=folder)
    check_loaded(loaded, tiny)


def test_load_fashion_mnist_missing_says_what_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST was not found"):
        datasets.load("fashion-mnist", path=tmp_path)


def test_load_knows_the_datasets_the_recipes_are_for():
    from portnn import recipes

    assert datasets.NAMES == tuple(recipes.RECIPES)


def test_load_for_command_loads_as_load_does(tmp_path, tiny):
    folder = write_idx(tmp_path / "f", tiny)
    check_loaded(datasets.load_for_command("fashion-mnist", str(folder)), tiny)
    pn.seed(0)
    by_command = datasets.load_for_command("vertical", seed=3)
    pn.seed(0)
    for got, expected in zip(by_command, datasets.load("vertical", seed=3), strict=True):
        assert np.array_equal(got, expected)


# (what --data points at, --download, what the error says, its type)
COMMAND_DATA = {
    "a file": (
        lambda t: _a_file(t),
        False,
        "--data {}: it is a file, not a folder",
        NotADirectoryError,
    ),
    "a missing folder": (
        lambda t: t / "nope",
        False,
        "--data {}: the folder does not exist (--download creates it",
        FileNotFoundError,
    ),
    "a folder without the files": (
        lambda t: t,
        False,
        "Fashion-MNIST was not found in {}; pass --download to fetch it (about 30 MB), or "
        "--data FOLDER",
        FileNotFoundError,
    ),
}


def _a_file(folder):
    (folder / "notes.txt").write_text("a file")
    return folder / "notes.txt"


@pytest.mark.parametrize("case", list(COMMAND_DATA))
def test_load_for_command_names_the_options_that_help(tmp_path, case):
    where, download, message, kind = COMMAND_DATA[case]
    data = str(where(tmp_path))
    with pytest.raises(kind) as raised:
        datasets.load_for_command("fashion-mnist", data, download=download)
    assert str(raised.value).startswith(message.format(data))


def test_load_for_command_without_data_names_the_data_folder():
    where = re.escape(str(datasets.default_data_dir()))
    with pytest.raises(FileNotFoundError, match=f"not found in {where}; pass --download"):
        datasets.load_for_command("fashion-mnist")


def test_load_for_command_leaves_other_datasets_folders_alone(tmp_path):
    # --data names Fashion-MNIST's folder; the synthetic data never reads it.
    X, y, _, _ = datasets.load_for_command("sine", str(tmp_path / "nope"))
    assert X.shape == y.shape == (1000, 1)


@pytest.mark.parametrize("name", ["mnist", "Spiral", "", None])
def test_load_unknown_dataset_lists_the_known(name):
    with pytest.raises(ValueError, match="unknown dataset.*spiral, vertical, sine, fashion-mnist"):
        datasets.load(name)


@pytest.mark.parametrize("seed", [-1, 1.5, None])
def test_load_bad_seed_raises(seed):
    with pytest.raises(ValueError, match="seed"):
        datasets.load("spiral", seed=seed)


# --- digits and split ---------------------------------------------------------------------------


def test_digits_scaled_to_minus_one_one():
    pytest.importorskip("sklearn")
    X, y = datasets.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.uint8
    assert X.min() == -1.0 and X.max() == 1.0  # pixels 0..16
    assert set(np.unique(y)) == set(range(10))


def test_digits_backend_argument(backend):
    pytest.importorskip("sklearn")
    X, y = datasets.digits(backend=backend)
    assert library_of(X) == backend.name and X.dtype == backend.dtype
    assert np.array_equal(pn.to_numpy(y), datasets.digits()[1])


def test_load_digits_splits_four_to_one_by_seed():
    pytest.importorskip("sklearn")
    X_all, y_all = datasets.digits()
    X, y, X_test, y_test = datasets.load("digits")
    assert (len(X), len(X_test)) == (1437, 360)
    order = np.random.RandomState(0).permutation(1797)  # what portnn train has always used
    assert np.array_equal(X, X_all[order[:1437]]) and np.array_equal(y_test, y_all[order[1437:]])
    other = datasets.load("digits", seed=1)
    assert not np.array_equal(X_test, other[2])


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.load("digits")


@pytest.mark.parametrize(
    ("n", "fraction", "n_test"), [(10, 0.2, 2), (1797, 0.2, 360), (30, 0.1, 3)]
)
def test_split_keeps_every_sample_once(n, fraction, n_test):
    X = np.arange(2 * n).reshape(n, 2)
    y = np.arange(n)
    X_train, y_train, X_test, y_test = datasets.split(X, y, fraction, seed=3)
    assert len(X_test) == len(y_test) == n_test and len(X_train) == n - n_test
    assert np.array_equal(X_train[:, 0] // 2, y_train) and np.array_equal(X_test[:, 0] // 2, y_test)
    assert sorted(np.concatenate([y_train, y_test])) == list(range(n))
    again = datasets.split(X, y, fraction, seed=3)
    assert np.array_equal(again[3], y_test)
    assert not np.array_equal(datasets.split(X, y, fraction, seed=4)[3], y_test)


@pytest.mark.parametrize(
    ("X", "y", "fraction", "match"),
    [
        (np.zeros((5, 2)), np.zeros(4), 0.2, "as many"),
        (np.float32(1), np.zeros(1), 0.2, "one sample per row"),
        (np.zeros((5, 2)), np.zeros(5), 0.0, "test_fraction"),
        (np.zeros((5, 2)), np.zeros(5), 1.0, "test_fraction"),
        (np.zeros((5, 2)), np.zeros(5), 0.9, "both need at least one"),
        (np.zeros((1, 2)), np.zeros(1), 0.5, "both need at least one"),
    ],
)
def test_split_rejects_what_it_cannot_split(X, y, fraction, match):
    with pytest.raises(ValueError, match=match):
        datasets.split(X, y, fraction)


# --- one image file as a Fashion-MNIST sample (the book's chapter 22) ---------------------------


def test_image_is_scaled_as_the_training_data(tmp_path, tiny):
    # The same picture read by the loader (from the book's PNG folders) and by
    # fashion_mnist_image gives the same 784 values; inverted, their negatives.
    folder = write_png(tmp_path, tiny)
    X, y, _, _ = datasets.fashion_mnist(folder)
    file = sorted((folder / "train" / str(y[0])).glob("*.png"))[0]
    sample = datasets.fashion_mnist_image(file, invert=False)
    assert sample.shape == (1, 784) and sample.dtype == np.float32
    np.testing.assert_array_equal(sample[0], X[0])
    np.testing.assert_array_equal(datasets.fashion_mnist_image(file), -X[:1])


def test_image_of_any_size_and_mode_becomes_28x28_grey(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pixels = np.full((56, 84, 3), 255, dtype=np.uint8)
    pixels[:28] = 0  # dark top half on white: inverted, a bright top half
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    sample = datasets.fashion_mnist_image(tmp_path / "photo.png").reshape(28, 28)
    np.testing.assert_array_equal(sample[:13], 1.0)
    np.testing.assert_array_equal(sample[15:], -1.0)


def test_image_errors_name_the_file(tmp_path, monkeypatch):
    pytest.importorskip("PIL.Image")
    with pytest.raises(FileNotFoundError, match="nope.png: no such image file"):
        datasets.fashion_mnist_image(tmp_path / "nope.png")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ValueError, match="notes.png: not a readable image"):
        datasets.fashion_mnist_image(tmp_path / "notes.png")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'portnn\[images\]'"):
        datasets.fashion_mnist_image(tmp_path / "notes.png")
