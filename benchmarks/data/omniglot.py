"""``omniglot``: Burda et al.'s OMNIGLOT split, ``chardata.mat`` from github.com/yburda/iwae, in
``omniglot/`` of the data directory or the cache (downloaded there when it can be). No published
checksum: the record carries the file's sha256."""

from pathlib import Path

import numpy as np

from benchmarks.data import Dataset, Entry, _make
from benchmarks.data.sources import MNIST_SHAPE, FileSet, _loadmat, _sha256


def read_omniglot(path: Path, origin: str) -> Dataset:
    """Burda et al.'s OMNIGLOT split, ``chardata.mat``: ``data`` (784 × 24,345) and ``testdata``
    (784 × 8,070) in [0, 1], each column an image stored column-major; ``target``/``testtarget``
    one-hot alphabets (50). A fixed permutation (seed 0) of the training images holds out 1,345
    for validation."""
    m = _loadmat(path, ["data", "testdata", "target", "testtarget"])
    images = lambda key: m[key].T.reshape(-1, 28, 28).transpose(0, 2, 1)  # column-major pixels -> rows
    train, test = images("data"), images("testdata")
    order = np.random.default_rng(0).permutation(len(train))
    return _make(
        "omniglot",
        MNIST_SHAPE,
        train[order[:-1345]],
        train[order[-1345:]],
        test,
        m["testtarget"].argmax(0),
        {
            "variant": "OMNIGLOT 28x28 (Burda et al. 2016, chardata.mat); labels: alphabet",
            "split": f"{len(train) - 1345} train / 1345 validation (fixed permutation, seed 0) / {len(test)} test",
            "origin": origin,
            "verified": f"no published checksum known; sha256 {_sha256(path)}",
        },
        train_labels=m["target"].argmax(0)[order[:-1345]],
    )


FILE_SET = FileSet(
    "omniglot",
    "omniglot/chardata.mat",
    "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat",
    read_omniglot,
)

ENTRY = Entry.of(FILE_SET, MNIST_SHAPE, order=60)
