"""A run killed with SIGKILL at any moment leaves no torn record, and rerunning the same command
continues it from its last checkpoint to the numbers of an uninterrupted run (on the CPU, bit for bit)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import models
from benchmarks import ROOT, cli, data, records, train

HERE = Path(__file__).parent
RUN = ["run", "--paper", "faults", "--method", "vae", "--dataset", "digits", "--budget", "faults", "--quiet"]
KILL_TRIALS_SEED = 20261125  # the random kill moments, recorded


@pytest.fixture(autouse=True)
def fault_specs(monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    monkeypatch.setenv("VLAEBENCH_BUDGETS", str(HERE / "budgets.toml"))


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}


def start(results: Path, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "benchmarks.cli", *RUN, "--results", str(results), *extra]
    return subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def only_record(results: Path) -> dict:
    (path,) = records.runs_dir(results).glob("*.json")
    return records.read(path)


def assert_nothing_torn(results: Path) -> None:
    """Every file a reader would take for a record is a whole record."""
    for path in records.runs_dir(results).glob("*.json"):
        records.read(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in a subprocess as the killed ones are, and how long it took."""
    results = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
        patch.setenv("VLAEBENCH_BUDGETS", str(HERE / "budgets.toml"))
        started = time.monotonic()
        process = start(results)
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()
        duration = time.monotonic() - started
    record = only_record(results)
    assert record["provenance"]["resumed_from_epoch"] is None and record["timing"]["epochs"] == 10
    assert not any(records.checkpoint_path(results, record["run_id"]).parent.iterdir())  # removed once recorded
    return record, duration


def checkpoint_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (OSError, EOFError, RuntimeError):
        return 0


def resume_in_process(results: Path, capsys) -> dict:
    assert cli.main([*RUN, "--results", str(results)]) == 0
    capsys.readouterr()
    return only_record(results)


def assert_same_run(record: dict, reference: dict) -> None:
    assert record["status"] == "ok"
    assert record["metrics"] == reference["metrics"]
    assert record["curves"] == reference["curves"]


def test_a_run_killed_at_epoch_k_resumes_from_epoch_k_to_the_uninterrupted_numbers(reference, tmp_path, capsys):
    reference, _ = reference
    k = 4
    process = start(tmp_path)
    checkpoint = records.checkpoint_path(tmp_path, reference["run_id"])
    deadline = time.monotonic() + 120
    while checkpoint_epoch(checkpoint) < k and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint_epoch(checkpoint)
    assert k <= killed_at < 10, "the run was not killed mid-training"
    assert not list(records.runs_dir(tmp_path).glob("*.json"))  # no record yet, certainly no torn one
    record = resume_in_process(tmp_path, capsys)
    assert record["provenance"]["resumed_from_epoch"] == killed_at
    assert_same_run(record, reference)


@pytest.mark.parametrize("trial", range(10))
def test_a_run_killed_at_a_random_moment_never_leaves_a_torn_record_and_resumes(reference, tmp_path, capsys, trial):
    reference, duration = reference
    delay = random.Random(KILL_TRIALS_SEED + trial).uniform(0.3 * duration, 1.1 * duration)
    process = start(tmp_path)
    try:
        process.wait(timeout=delay)  # it may finish first: then the kill finds nothing to tear
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert_nothing_torn(tmp_path)
    record = resume_in_process(tmp_path, capsys)
    assert_same_run(record, reference)
    assert not list(records.checkpoint_path(tmp_path, reference["run_id"]).parent.glob("*"))


def test_what_a_write_killed_midway_left_is_removed_once_the_run_is_recorded(reference, tmp_path, capsys):
    """A kill inside ``torch.save`` leaves its partial file (named for the dead process) beside the
    checkpoint or the weights; the finished run leaves neither folder littered."""
    reference, _ = reference
    checkpoint = records.checkpoint_path(tmp_path, reference["run_id"])
    weights = records.weights_path(tmp_path, reference["run_id"])
    for path in (checkpoint, weights):
        path.parent.mkdir(parents=True)
        path.with_name(f".{path.name}.99999.tmp").write_bytes(b"half a torch.save")
    record = resume_in_process(tmp_path, capsys)
    assert_same_run(record, reference)
    assert not list(checkpoint.parent.iterdir())
    assert [p.name for p in weights.parent.iterdir()] == [weights.name]


def test_a_checkpoint_left_beside_its_record_is_removed_when_the_run_is_skipped(reference, tmp_path, capsys):
    """Killed between writing its record and removing its checkpoint, a run leaves both: the next
    command skips it (the record holds it) and removes what is left."""
    reference, _ = reference
    resume_in_process(tmp_path, capsys)
    checkpoint = records.checkpoint_path(tmp_path, reference["run_id"])
    records.save_tensors({"epoch": 10}, checkpoint)
    assert cli.main([*RUN, "--results", str(tmp_path)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not list(checkpoint.parent.iterdir())


def test_best_valid_selection_keeps_the_best_validated_epoch_and_says_so(tmp_path, capsys):
    argv = [*RUN, "--results", str(tmp_path)]
    argv[argv.index("vae")] = "vae_best"
    assert cli.main(argv) == 0
    record = only_record(tmp_path)
    validated = {e: v for e, v in zip(record["curves"]["epoch"], record["curves"]["valid_elbo"]) if v is not None}
    assert sorted(validated) == [2, 4, 6, 8, 10]  # every valid_every = 2 epochs, the last always
    best = max(validated, key=validated.get)
    assert record["selection"] == {
        "rule": "best_valid",
        "epoch": best,
        "valid_elbo": validated[best],
        "why": "the best validation ELBO over the validated epochs (valid_every epochs)",
    }
    # the weights evaluated are that epoch's: the kept weights give its validation ELBO again
    model = models.build("vae", (1, 8, 8), record["config"]["hyper"])
    model.load_state_dict(records.load_weights(tmp_path, record["run_id"], "cpu"))
    valid = data.load("digits").valid[:100]
    device = torch.device("cpu")
    assert train.validation_elbo(model, valid, 0, best - 1, device) == validated[best]
    # and validating less often changed no training draw: the same training curve as every-epoch "last"
    assert cli.main([*RUN, "--results", str(tmp_path / "last")]) == 0
    last = only_record(tmp_path / "last")
    assert last["curves"]["train_elbo"] == record["curves"]["train_elbo"]
    assert [last["curves"]["valid_elbo"][e - 1] for e in validated] == list(validated.values())
    assert last["selection"]["rule"] == "last" and last["selection"]["epoch"] == 10


def test_a_resumed_run_with_every_training_state_equals_an_uninterrupted_one(tmp_path):
    # A moving average, best-validation weights, Adamax with clipping: all of it is in the checkpoint.
    from benchmarks import specs

    dataset = data.load("digits")
    config = specs.resolve(specs.load_paper("faults"), "vae_ema", "digits", specs.budget("faults"), 0)

    def trained(epochs, checkpoint):
        torch.manual_seed(0)
        model = models.build("vae", dataset.shape, config["hyper"])
        run = {**config, "training": {**config["training"], "epochs": epochs}}
        return train.train(model, dataset, run, torch.device("cpu"), progress=False, checkpoint=checkpoint)

    whole = trained(10, None)
    trained(4, tmp_path / "ckpt.pt")  # stopped after epoch 4 (a validated one), as a killed run is
    resumed = trained(10, tmp_path / "ckpt.pt")
    assert resumed["resumed_from_epoch"] == 4
    assert resumed["curves"] == whole["curves"] and resumed["selection"] == whole["selection"]
    for (name, a), (_, b) in zip(whole["evaluated"].state_dict().items(), resumed["evaluated"].state_dict().items()):
        assert torch.equal(a, b), name
