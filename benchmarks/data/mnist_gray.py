"""``mnist_gray``: MNIST's files (see ``mnist.py``) kept as continuous intensities, for a Gaussian or
discretized-logistic likelihood (optionally centred, as in the VLAE code)."""

from benchmarks.data import CONTINUOUS, Entry
from benchmarks.data.mnist import FOLDER_SET
from benchmarks.data.sources import MNIST_SHAPE, load_folder_set, locate_offline

ENTRY = Entry(
    lambda data_dir=None: load_folder_set(FOLDER_SET, data_dir),
    lambda data_dir=None: locate_offline(FOLDER_SET, data_dir),
    MNIST_SHAPE,
    how_to_get="as for mnist (the same files, kept continuous)",
    likelihoods=CONTINUOUS,
    order=40,
)
