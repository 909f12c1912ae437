"""``mnist_static``: statically binarized MNIST. Larochelle's ``binarized_mnist_{train,valid,test}.amat``
(no published checksum: the record carries their sha256) in ``binarized_mnist/`` of the data directory
or the cache; without them, one seeded Bernoulli draw of MNIST (see ``mnist.py``), labelled as such."""

from pathlib import Path

import numpy as np

from benchmarks import UserError
from benchmarks.data import Dataset, Entry, _make, sources
from benchmarks.data.mnist import FOLDER_SET
from benchmarks.data.sources import MNIST_SHAPE, _sha256, load_folder_set, locate_offline

LAROCHELLE_FILES = {split: f"binarized_mnist/binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}


def read_amat(path: Path) -> np.ndarray:
    """A Larochelle ``.amat`` file: one image a line, 784 space-separated 0/1 values."""
    try:
        lines = path.read_text().splitlines()
        values = np.array([line.split() for line in lines if line.strip()], dtype=np.float32)
    except (OSError, ValueError, UnicodeDecodeError) as e:  # ragged lines give ValueError
        raise UserError(f"{path}: not a readable .amat file ({type(e).__name__}: {e})") from None
    if values.ndim != 2 or values.shape[1] != 784 or not np.isin(values, (0, 1)).all():
        raise UserError(f"{path}: expected lines of 784 binary values, found shape {values.shape}")
    return values.reshape(-1, 28, 28)


def load_mnist_static(data_dir=None) -> Dataset:
    """Statically binarized MNIST: Larochelle's ``binarized_mnist_{train,valid,test}.amat`` when they
    are in the data directory or the cache (``binarized_mnist/``); otherwise one seeded Bernoulli draw
    of MNIST (classic split), which the record labels as not Larochelle's."""
    root = Path(sources.user_data_dir(data_dir) or sources.CACHE_DIR)
    paths = {split: root / rel for split, rel in LAROCHELLE_FILES.items()}
    if all(p.is_file() for p in paths.values()):
        x = {split: read_amat(path) for split, path in paths.items()}
        return _make(
            "mnist_static",
            MNIST_SHAPE,
            x["train"],
            x["valid"],
            x["test"],
            None,
            {
                "variant": "statically binarized MNIST: Larochelle's files (labels: none in the files)",
                "split": "the files' own: " + " / ".join(f"{len(v)} {k}" for k, v in x.items()),
                "origin": f"Larochelle's .amat files in {root / 'binarized_mnist'}",
                "verified": "no published checksum known; sha256 " + ", ".join(_sha256(p)[:16] for p in paths.values()),
            },
        )
    mnist = load_folder_set(FOLDER_SET, data_dir)
    return _make(
        "mnist_static",
        MNIST_SHAPE,
        mnist.train,
        mnist.valid,
        mnist.test,
        mnist.test_labels,
        {
            **{k: mnist.info[k] for k in ("split", "origin", "verified")},
            "variant": "statically binarized MNIST: a seeded draw of MNIST, NOT Larochelle's binarized_mnist files",
        },
        train_labels=mnist.train_labels,
    )


def _locate_mnist_static(data_dir=None):
    root = Path(sources.user_data_dir(data_dir) or sources.CACHE_DIR)
    if all((root / rel).is_file() for rel in LAROCHELLE_FILES.values()):
        return f"Larochelle's .amat files in {root / 'binarized_mnist'}", lambda: load_mnist_static(data_dir)
    found = locate_offline(FOLDER_SET, data_dir)
    if found is None:
        return None
    return f"a seeded binarization of MNIST from {found[0]}", lambda: load_mnist_static(data_dir)


ENTRY = Entry(
    load_mnist_static,
    _locate_mnist_static,
    MNIST_SHAPE,
    how_to_get="pass --data-dir DIR holding binarized_mnist/binarized_mnist_{train,valid,test}.amat, or make "
    "mnist available (its seeded static binarization is used then)",
    binarization="static",
    order=30,
)
