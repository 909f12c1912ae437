"""The tables, from hand-written records: aggregation, verdicts and the exact files (golden)."""

from pathlib import Path

import pytest

from benchmarks import records, specs
from benchmarks.metrics import METRICS
from report import generate

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"


def _record(method, seed, nll, kl, status="ok", stale=False, s_per_epoch=2.0):
    paper = specs.load_paper("demo")
    config = specs.resolve(paper, method, "digits", specs.budget("smoke"), seed)
    if stale:  # a record made under an earlier version of the spec
        config["hyper"] = {**config["hyper"], "latent_dim": 99}
        config["identity"] = {**config["identity"], "hyper": {**config["identity"]["hyper"], "latent_dim": 99}}
    metric = lambda v: {"value": v, "sem": 0.1, "unit": "nats", "estimator": {"name": "hand-written"}}
    return config, {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": specs.run_id(config),
        "paper": "demo",
        "method": method,
        "dataset": "digits",
        "budget": "smoke",
        "seed": seed,
        "config": config,
        "status": status,
        "stop_reason": "max_epochs",
        "error": None,
        "curves": {},
        "metrics": {} if status != "ok" else {"nll": metric(nll), "kl": metric(kl)},
        "timing": {"s_per_epoch": s_per_epoch, "device_name": "Hand-written CPU"},
        "provenance": {},
    }


@pytest.fixture
def tables(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    for args in [
        ("alpha", 0, 90.0, 10.0),
        ("alpha", 1, 91.0, 11.0),
        ("alpha", 2, 92.0, 12.0),
        ("alpha", 3, 50.0, 1.0, "ok", True),  # stale: left out
        ("beta", 0, 100.0, 20.0),
        ("beta", 1, 102.0, 22.0),
        ("beta", 2, None, None, "diverged"),
        ("gamma", 0, 88.123, 5.0),
    ]:
        config, record = _record(*args)
        records.write(record, records.path_for(tmp_path / "results", config, record["run_id"]))
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    return tmp_path / "out"


def _rows(markdown: str) -> dict[str, list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_rows_aggregate_ok_current_runs_and_give_verdicts(tables):
    rows = _rows((tables / "demo__digits__smoke.md").read_text())
    # reported, reproduced, delta, verdict, KL reproduced, s/epoch, runs
    assert rows["alpha"] == [
        "90.50",
        "91.00 ± 1.00",
        "+0.50",
        "within tolerance",
        "11.00 ± 1.00",
        "2.00",
        "3 ok, 1 stale",
    ]
    assert rows["beta"] == [
        "95.00 ± 0.30",
        "101.00 ± 1.41",
        "+6.00",
        "outside",
        "21.00 ± 1.41",
        "2.00",
        "1 diverged, 2 ok",
    ]
    assert rows["gamma"] == ["missing", "88.12", "–", "not reported", "5.00", "2.00", "1 ok"]


def test_notes_name_sources_and_where_to_transcribe_missing_numbers(tables):
    markdown = (tables / "demo__digits__smoke.md").read_text()
    assert "alpha NLL: Demo 2026, Table 1 (tolerance ±1)" in markdown
    assert "gamma NLL: missing; transcribe from Demo 2026, Table 3" in markdown
    assert "budget smoke" in markdown


@pytest.mark.parametrize("name", ["demo__digits__smoke.md", "demo__digits__smoke.tex", "README.md"])
def test_files_match_the_golden_copies(tables, name):
    assert (tables / name).read_text() == (GOLDEN / name).read_text()


def test_tables_never_train(tables, tmp_path, monkeypatch):
    import benchmarks.train

    monkeypatch.setattr(benchmarks.train, "run", lambda *a, **k: pytest.fail("tables trained a model"))
    generate.write_tables(tmp_path / "results", tmp_path / "again")
    assert (tmp_path / "again" / "README.md").read_text() == (tables / "README.md").read_text()


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_any_metric_can_be_a_column(metric, tmp_path, monkeypatch):
    spec = (HERE / "specs" / "demo.toml").read_text().replace('show = ["kl"]', f'show = ["{metric}"]')
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "demo.toml").write_text(spec)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path / "specs"))
    for seed, value in ((0, 3.0), (1, 5.0)):
        config, record = _record("alpha", seed, 90.0, 10.0)
        if METRICS[metric].timing:
            record["timing"][metric] = value
        else:
            record["metrics"][metric] = {"value": value, "unit": "any", "estimator": {"name": "hand-written"}}
        records.write(record, records.path_for(tmp_path / "results", config, record["run_id"]))
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    markdown = (tmp_path / "out" / "demo__digits__smoke.md").read_text()
    assert f"{METRICS[metric].label} reproduced" in markdown
    assert _rows(markdown)["alpha"][4] == "4.00 ± 1.41"
    assert METRICS[metric].description in markdown
