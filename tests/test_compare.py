"""``vlaebench compare`` on hand-written records of the demo paper: an injected 5 % quality regression,
the reported verdict and the claim it turns, a slow-down on the same device model, and a timing
difference between device models that is not a regression."""

import pytest
from test_report import _write
from test_tables import HERE

from benchmarks.cli import main
from report import compare


def _night(results, alpha_nll: list[float], gamma_nll: float, seconds: float, device: str) -> None:
    for seed, nll in enumerate(alpha_nll):
        _write(results, "alpha", seed, nll, 10.0, timing={"s_per_epoch": seconds, "device_name": device})
    for seed, nll in enumerate([100.0, 102.0, 101.0]):
        _write(results, "beta", seed, nll, 20.0, timing={"s_per_epoch": 2.0, "device_name": "GPU B"})
    _write(results, "gamma", 0, gamma_nll, 5.0, timing={"device_name": device})


@pytest.fixture
def nights(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    _night(tmp_path / "before", [90.0, 91.0, 92.0], 88.0, 2.0, "GPU A")
    return tmp_path


def test_a_five_percent_regression_its_reported_verdict_and_its_claim_are_flagged(nights):
    # alpha 5 % worse (reported 90.5 ± 1: within, then outside; its claims "below 95" and "below beta
    # by ×1.05" then fail); gamma (no reported number) 5 % worse, beyond the 2 % threshold
    _night(nights / "after", [94.5, 95.55, 96.6], 92.4, 2.0, "GPU A")
    findings = compare.compare(nights / "before", nights / "after")
    flagged = {(f.kind, f.what) for f in findings if f.regression}
    assert flagged == {
        ("quality", "demo / digits / smoke / alpha: nll"),
        ("reported", "demo / digits / smoke / alpha: nll"),
        ("quality", "demo / digits / smoke / gamma: nll"),
        ("claim", "demo / claim (1) alpha reaches a test NLL below 95 nats / smoke"),
        ("claim", "demo / claim (2) alpha's NLL is lower than beta's by a factor of 1.05 / smoke"),
    }
    text = compare.summary(findings, nights / "before", nights / "after")
    assert "**5 regression(s)**" in text and "| quality" in text


def test_a_slow_down_counts_only_between_runs_on_the_same_device_model(nights):
    _night(nights / "same", [90.0, 91.0, 92.0], 88.0, 2.5, "GPU A")
    speed = [f for f in compare.compare(nights / "before", nights / "same") if f.kind == "speed"]
    assert [(f.what, f.regression) for f in speed] == [("demo / digits / smoke / alpha: s_per_epoch", True)]
    _night(nights / "other", [90.0, 91.0, 92.0], 88.0, 5.0, "GPU C")  # slower, on another model
    findings = compare.compare(nights / "before", nights / "other")
    assert not any(f.regression for f in findings)
    assert [f.kind for f in findings if "alpha: s_per_epoch" in f.what] == ["skipped"]


def test_the_command_exits_1_on_a_regression_and_0_without(nights, capsys):
    assert main(["compare", "--baseline", str(nights / "before"), "--results", str(nights / "before")]) == 0
    assert "no regression" in capsys.readouterr().out
    _night(nights / "after", [94.5, 95.55, 96.6], 88.0, 2.0, "GPU A")
    out = nights / "summary.md"
    args = ["compare", "--baseline", str(nights / "before"), "--results", str(nights / "after"), "--out", str(out)]
    assert main(args) == 1
    assert "regression(s)" in out.read_text() and out.read_text() in capsys.readouterr().out


@pytest.mark.parametrize(
    "device, condition, usual, other, why",
    [
        ("AMD EPYC", "threads", 2, 1, "AMD EPYC (2 threads), then AMD EPYC (1 thread)"),
        # six runs sharing one GPU are each slower than a run alone on it: not a regression of the code
        ("NVIDIA H200", "runs_sharing_device", 1, 6, "NVIDIA H200, then NVIDIA H200 (shared by 6 runs)"),
    ],
)
def test_a_timing_is_compared_only_between_runs_under_the_same_conditions(
    tmp_path, monkeypatch, device, condition, usual, other, why
):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    for night, value, seconds in (("before", usual, 2.0), ("other", other, 3.0), ("again", usual, 3.0)):
        for seed in range(3):
            timing = {"s_per_epoch": seconds, "device_name": device, condition: value}
            _write(tmp_path / night, "alpha", seed, 90.0 + seed, 10.0, timing=timing)
    elsewhere = [f for f in compare.compare(tmp_path / "before", tmp_path / "other") if "alpha: s_per_epoch" in f.what]
    assert [(f.kind, f.regression) for f in elsewhere] == [("skipped", False)]
    assert why in elsewhere[0].why
    slower = [f for f in compare.compare(tmp_path / "before", tmp_path / "again") if "alpha: s_per_epoch" in f.what]
    assert [(f.kind, f.regression) for f in slower] == [("speed", True)]


def test_a_metric_with_no_better_direction_is_listed_when_it_moves_never_flagged(nights):
    import dataclasses

    from benchmarks import specs
    from report import generate

    paper = specs.load_paper("demo")
    paper = dataclasses.replace(paper, evaluation={**paper.evaluation, "compare": ["kl"]})
    before = generate.annotated_frame(nights / "before")  # alpha's KL: 10 nats in every seed
    for name, kl in [("up", 10.5), ("down", 9.5), ("same", 10.1)]:
        _night(nights / name, [90.0, 91.0, 92.0], 88.0, 2.0, "GPU A")
        for seed, nll in enumerate([90.0, 91.0, 92.0]):  # alpha again, its KL moved
            _write(nights / name, "alpha", seed, nll, kl, timing={"s_per_epoch": 2.0, "device_name": "GPU A"})
        found = compare._quality(paper, before, generate.annotated_frame(nights / name), 0.02)
        moved = [(f.kind, f.regression, f.what) for f in found]
        expected = [("quality", False, "demo / digits / smoke / alpha: kl")] if name != "same" else []
        assert moved == expected, name
        assert all("neither direction is better" in f.why for f in found)
