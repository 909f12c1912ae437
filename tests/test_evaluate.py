"""`vlaebench evaluate`: a kept run re-evaluated under other settings, without training, into a
record of its own that the tables never mix with the run's."""

from pathlib import Path

import pytest

from benchmarks import records
from report import generate

FAULTS = Path(__file__).parent / "faults"
RUN = ["--paper", "faults", "--method", "vae", "--dataset", "digits", "--budget", "faults"]


@pytest.fixture
def kept_run(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(FAULTS / "specs"))
    monkeypatch.setenv("VLAEBENCH_BUDGETS", str(FAULTS / "budgets.toml"))
    assert run_cli("run", *RUN, "--results", tmp_path, "--quiet")[0] == 0
    (path,) = records.runs_dir(tmp_path).glob("*.json")
    return tmp_path, records.read(path)


def test_more_importance_samples_give_a_new_record_within_the_first_ones_monte_carlo_error(kept_run, run_cli):
    results, first = kept_run
    assert first["config"]["evaluation"]["importance_samples"] == 20
    code, out, err = run_cli("evaluate", *RUN, "--results", results, "--importance-samples", "2000")
    assert code == 0, err
    all_records = [records.read(p) for p in records.runs_dir(results).glob("*.json")]
    (second,) = [r for r in all_records if r["run_id"] != first["run_id"]]
    assert second["config"]["evaluation_of"] == first["run_id"]
    assert second["config"]["evaluation"]["importance_samples"] == 2000
    assert second["curves"] == first["curves"] and second["timing"]["train_wall_s"] == first["timing"]["train_wall_s"]
    nll, nll_first = second["metrics"]["nll"], first["metrics"]["nll"]
    assert abs(nll["value"] - nll_first["value"]) < 3 * nll_first["mc_sem"]
    assert nll["mc_sem"] < nll_first["mc_sem"] / 3  # 100 times the samples: a tenth of the error
    # the first record is untouched, and the tables give the re-evaluation a table of its own
    (first_path,) = records.runs_dir(results).glob(f"*__{first['run_id']}.json")
    assert records.read(first_path) == first
    generate.write_tables(results, results / "tables")
    assert (results / "tables" / "faults__digits__faults__importance-samples-2000.md").is_file()
    plain = (results / "tables" / "faults__digits__faults.md").read_text()
    assert f"{nll_first['value']:.2f}" in plain and f"{nll['value']:.2f}" not in plain


def test_evaluating_again_keeps_the_earlier_evaluation_and_never_trades_an_ok_one_for_a_failure(
    kept_run, run_cli, monkeypatch
):
    from benchmarks import metrics

    results, first = kept_run
    args = ["evaluate", *RUN, "--results", results, "--importance-samples", "200"]
    assert run_cli(*args)[0] == 0
    (path,) = [p for p in records.runs_dir(results).glob("*.json") if first["run_id"] not in p.name]
    evaluation = records.read(path)
    assert run_cli(*args)[0] == 0  # the same settings again: one record, the earlier one kept inside it
    again = records.read(path)
    assert [a["metrics"] for a in again["earlier_attempts"]] == [evaluation["metrics"]]

    def broken(*_, **__):
        raise RuntimeError("injected evaluation failure")

    monkeypatch.setattr(metrics, "evaluate", broken)
    code, out, _ = run_cli(*args)
    assert code == 1 and "kept the earlier ok record" in out
    assert records.read(path) == again
