"""``omniglot_gray``: Burda et al.'s OMNIGLOT file (see ``omniglot.py``) kept as continuous
intensities, for a Gaussian or discretized-logistic likelihood (optionally centred, as in the VLAE
code)."""

from benchmarks.data import CONTINUOUS, Entry
from benchmarks.data.omniglot import FILE_SET
from benchmarks.data.sources import MNIST_SHAPE

ENTRY = Entry.of(FILE_SET, MNIST_SHAPE, likelihoods=CONTINUOUS, order=65)
