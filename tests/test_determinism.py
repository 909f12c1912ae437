"""Same seed, same numbers on CPU; another seed, other numbers."""

import torch

from benchmarks import data, specs, train


def _record(seed):
    paper = specs.load_paper("baselines")
    config = specs.resolve(paper, "vae", "digits", specs.budget("smoke"), seed)
    config["training"]["epochs"] = 1
    return train.run(config, specs.run_id(config), data.load("digits"), torch.device("cpu"), progress=False)


def test_same_seed_gives_identical_metrics_and_curves():
    first, second = _record(0), _record(0)
    assert first["status"] == "ok", first["error"]
    assert first["metrics"] == second["metrics"]
    assert first["curves"] == second["curves"]


def test_another_seed_gives_different_metrics():
    assert _record(0)["metrics"]["nll"]["value"] != _record(1)["metrics"]["nll"]["value"]
