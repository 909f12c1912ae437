"""``digits``: scikit-learn's bundled 8x8 digits (``sklearn.datasets.load_digits``), nothing to fetch."""

import numpy as np

from benchmarks.data import Dataset, Entry, _make

DIGITS_SHAPE = (1, 8, 8)


def load_digits(data_dir=None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16): a fixed permutation (seed 0)
    gives 1,297 train, 250 validation and 250 test images."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    order = np.random.default_rng(0).permutation(len(bunch.data))
    x, y = bunch.data[order] / 16.0, bunch.target[order]
    return _make(
        "digits",
        DIGITS_SHAPE,
        x[:1297],
        x[1297:1547],
        x[1547:],
        y[1547:],
        {
            "variant": "sklearn 8x8 digits, intensities /16",
            "split": "fixed permutation (seed 0): 1297 train / 250 valid / 250 test",
            "origin": "scikit-learn bundled load_digits()",
            "verified": "bundled with scikit-learn",
        },
        train_labels=y[:1297],
    )


ENTRY = Entry(
    load_digits,
    lambda data_dir=None: ("scikit-learn's bundled copy", load_digits),
    DIGITS_SHAPE,
    how_to_get="install scikit-learn, which bundles it",
    order=10,
)
