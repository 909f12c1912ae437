"""28×28 binary images with strokes for the tests of methods whose networks are built for that size
(scikit-learn's digits, enlarged and thresholded), a budget whose evaluation takes seconds with a
PixelCNN decoder (the smoke budget's gaps of 20 points, 300 steps each, would take minutes), and a
run of a small spec's method on them through the harness."""

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from benchmarks import data, specs, train

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
    """100 training, 20 validation and 40 test images, in place of MNIST's, with their labels (all
    from digits' training images)."""
    return dataclasses.replace(
        _digits(),
        shape=(28, 28),
        train=images(100),
        valid=images(20, seed=100),
        test=images(40, seed=120),
        train_labels=_digits().train_labels[:100],
        test_labels=_digits().train_labels[120:160],
    )


SMALL_SPEC_HEADER = """
[paper]
title = "A paper's methods, small"
citation = "Nobody, tests"

[evaluation]
importance_samples = 10
compare = ["nll"]
"""


def assert_trains_and_evaluates(tmp_path, monkeypatch, spec_tables: str, method: str, dataset: str) -> None:
    """Write a paper spec of ``spec_tables`` (its training, datasets and methods), train its ``method``
    on the small dataset in place of ``dataset``, and check that the run ends ok with every metric
    group finite."""
    (tmp_path / "small.toml").write_text(SMALL_SPEC_HEADER + spec_tables)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    config = specs.resolve(specs.load_paper("small"), method, dataset, TINY_BUDGET, 0)
    record = train.run(config, specs.run_id(config), small_dataset(), torch.device("cpu"), progress=False)
    assert record["status"] == "ok", record["error"]
    for metric in ("nll", "elbo", "kl", "active_units", "amortization_gap", "ais_nll"):
        assert metric in record["metrics"] and math.isfinite(record["metrics"][metric]["value"]), metric
