"""``cifar10``: CIFAR-10's python batches (md5s in the checksum manifest, as torchvision publishes
them) in ``cifar-10-batches-py/`` of the data directory, the download cache or torchvision's download.
Continuous intensities: a Gaussian or discretized-logistic likelihood."""

import pickle
from pathlib import Path

import numpy as np

from benchmarks import UserError
from benchmarks.data import CONTINUOUS, Dataset, Entry
from benchmarks.data.sources import (
    COLOUR_SHAPE,
    COLOUR_VALID,
    MANIFEST,
    FolderSet,
    _colour,
    _torchvision,
    _verified_md5,
)


def _read_cifar10(folder_set: FolderSet, folder: Path, origin: str) -> Dataset:
    """The python pickle batches: dicts with ``data`` (10000 × 3072 uint8, channel-major) and ``labels``."""
    batches = {}
    for name, md5 in folder_set.md5s.items():
        try:
            with open(_verified_md5(folder / name, md5), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            batches[name] = (
                np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *COLOUR_SHAPE),
                np.asarray(batch[b"labels"]),
            )
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise UserError(f"{folder / name}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    fit = (train[:-COLOUR_VALID], labels[:-COLOUR_VALID])
    return _colour(folder_set, fit, train[-COLOUR_VALID:], *batches["test_batch"], origin, "data_batch_1..5")


FOLDER_SET = FolderSet(
    "cifar10",
    "cifar-10-batches-py",
    MANIFEST["cifar10"]["md5"],
    "CIFAR-10",
    _read_cifar10,
    _torchvision("CIFAR10", train=(True, False)),
    how_to_get="pass --data-dir DIR holding cifar-10-batches-py/ (the python version's batches, torchvision's layout)",
)

ENTRY = Entry.of(FOLDER_SET, COLOUR_SHAPE, likelihoods=CONTINUOUS, order=80)
