"""``fashion_mnist_gray``: Fashion-MNIST's files (see ``fashion_mnist.py``) kept as continuous
intensities, for a Gaussian or discretized-logistic likelihood (optionally centred, as in the VLAE
code)."""

from benchmarks.data import CONTINUOUS, Entry
from benchmarks.data.fashion_mnist import FOLDER_SET
from benchmarks.data.sources import MNIST_SHAPE

ENTRY = Entry.of(FOLDER_SET, MNIST_SHAPE, likelihoods=CONTINUOUS, order=55)
