"""28×28 binary images with strokes for the tests of methods whose networks are built for that size
(scikit-learn's digits, enlarged and thresholded), and a budget whose evaluation takes seconds with a
PixelCNN decoder (the smoke budget's gaps of 20 points, 300 steps each, would take minutes)."""

import dataclasses
import functools

import torch.nn.functional as F

from benchmarks import data, specs

TINY_BUDGET = specs.Budget(
    "tiny",
    "a few seconds",
    {"max_epochs": 2, "importance_samples": 10, "gap_points": 2, "gap_max_steps": 5, "gap_samples": 10}
    | {"ais_points": 2, "ais_chains": 2, "ais_steps": 5, "valid_points": 20},
)


@functools.cache
def _digits():
    return data.load("digits")


def images(n, seed=0):
    """``n`` images [n, 28, 28], from the ``seed``-th digit on."""
    enlarged = F.interpolate(_digits().train[seed : seed + n].reshape(-1, 1, 8, 8), size=28, mode="bilinear")
    return (enlarged > 0.3).float()[:, 0]


def small_dataset():
    """100 training, 20 validation and 40 test images, in place of MNIST's."""
    return dataclasses.replace(
        _digits(), shape=(28, 28), train=images(100), valid=images(20, seed=100), test=images(40, seed=120)
    )
