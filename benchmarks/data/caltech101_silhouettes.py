"""``caltech101_silhouettes``: Marlin et al.'s Caltech-101 Silhouettes,
``caltech101_silhouettes_28_split1.mat`` from people.cs.umass.edu/~marlin, in
``caltech101_silhouettes/`` of the data directory or the cache (downloaded there when it can be). No
published checksum: the record carries the file's sha256."""

from pathlib import Path

from benchmarks.data import Dataset, Entry, _make
from benchmarks.data.sources import MNIST_SHAPE, FileSet, _loadmat, _sha256


def read_caltech101_silhouettes(path: Path, origin: str) -> Dataset:
    """Marlin et al.'s Caltech-101 Silhouettes, ``caltech101_silhouettes_28_split1.mat``:
    ``train_data``/``val_data``/``test_data`` (N × 784, binary) with their own split, labels 1..101.
    Pixels are kept as stored (some code transposes or inverts them; an MLP is indifferent)."""
    m = _loadmat(path, ["train_data", "val_data", "test_data", "train_labels", "test_labels"])
    images = lambda key: m[key].reshape(-1, 28, 28)
    return _make(
        "caltech101_silhouettes",
        MNIST_SHAPE,
        images("train_data"),
        images("val_data"),
        images("test_data"),
        m["test_labels"].ravel(),
        {
            "variant": "Caltech-101 Silhouettes 28x28, binary (split 1)",
            "split": f"the file's own split: {len(m['train_data'])} train / {len(m['val_data'])} validation / "
            f"{len(m['test_data'])} test",
            "origin": origin,
            "verified": f"no published checksum known; sha256 {_sha256(path)}",
        },
        train_labels=m["train_labels"].ravel(),
    )


FILE_SET = FileSet(
    "caltech101_silhouettes",
    "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat",
    "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",
    read_caltech101_silhouettes,
)

ENTRY = Entry.of(FILE_SET, MNIST_SHAPE, order=70)
