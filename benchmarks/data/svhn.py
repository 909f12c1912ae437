"""``svhn``: SVHN's ``train_32x32.mat``, ``test_32x32.mat`` and (for the ``extra`` variants)
``extra_32x32.mat`` (md5s in the checksum manifest, as torchvision publishes them) in ``svhn/`` of the
data directory, the download cache or torchvision's download. Continuous intensities: a Gaussian or
discretized-logistic likelihood."""

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
    _loadmat,
    _torchvision,
    _verified_md5,
)

SVHN_EXTRA = ("none", "add", "only")  # train on train_32x32 / train_32x32 + extra_32x32 / extra_32x32 only


def _read_svhn(folder_set: FolderSet, folder: Path, origin: str, extra: str = "none") -> Dataset:
    """``X`` (32 × 32 × 3 × N uint8) and ``y`` (N × 1, labels 1..10 where 10 is the digit 0).
    ``extra``: whether extra_32x32.mat (531,131 images) is added to the training images or replaces
    them (the ladder code trains on it alone); validation is the last 5,000 of train_32x32 either way."""

    def read(name):
        path = folder / name
        if not path.is_file():
            raise UserError(
                f"svhn with extra = {extra!r} needs {path} (torchvision.datasets.SVHN(split='extra') "
                f'downloads it); or set extra = "none"'
            )
        m = _loadmat(_verified_md5(path, folder_set.md5s[name]), ["X", "y"])
        return m["X"].transpose(3, 2, 0, 1), m["y"].ravel() % 10

    train_x, train_y = read("train_32x32.mat")
    test_x, test_y = read("test_32x32.mat")
    kept = (train_x[:-COLOUR_VALID], train_y[:-COLOUR_VALID])
    join = lambda a, b: (np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))
    fit = {
        "none": lambda: (kept, "train_32x32"),
        "add": lambda: (join(kept, read("extra_32x32.mat")), "train_32x32 + extra_32x32"),
        "only": lambda: (read("extra_32x32.mat"), "extra_32x32"),
    }[extra]
    fit_xy, fit_from = fit()
    return _colour(folder_set, fit_xy, train_x[-COLOUR_VALID:], test_x, test_y, origin, fit_from)


FOLDER_SET = FolderSet(
    "svhn",
    "svhn",
    MANIFEST["svhn"]["md5"],
    "SVHN",
    _read_svhn,
    _torchvision("SVHN", subdir="svhn", split=("train", "test")),
    how_to_get="pass --data-dir DIR holding svhn/train_32x32.mat and svhn/test_32x32.mat (and extra_32x32.mat for "
    "extra = 'add' or 'only')",
    optional=("extra_32x32.mat",),
)

ENTRY = Entry.of(FOLDER_SET, COLOUR_SHAPE, likelihoods=CONTINUOUS, source_options={"extra": SVHN_EXTRA}, order=90)
