"""``fashion_mnist``: Fashion-MNIST's four idx files (md5s in the checksum manifest), in the data
directory, the download cache or torchvision's download; offline, Debian's ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``)."""

from pathlib import Path

from benchmarks.data import Entry
from benchmarks.data.sources import (
    MANIFEST,
    MNIST_SHAPE,
    FolderSet,
    _from_idx,
    _torchvision,
)

FOLDER_SET = FolderSet(
    "fashion_mnist",
    "FashionMNIST/raw",
    MANIFEST["fashion_mnist"]["md5"],
    "Fashion-MNIST",
    _from_idx,
    _torchvision("FashionMNIST", train=(True, False)),
    how_to_get="pass --data-dir DIR holding FashionMNIST/raw/*-ubyte[.gz] (torchvision's layout), or "
    "install Debian's package: `apt-get install dataset-fashion-mnist`",
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
)

ENTRY = Entry.of(FOLDER_SET, MNIST_SHAPE, order=50)
