"""Failures of the run and of the machine: each recorded as what it is, nothing lost or torn."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tree_digest

from benchmarks import ROOT, records
from models.vae import VAE

HERE = Path(__file__).parent
RUN = ("run", "--paper", "faults", "--method", "vae", "--dataset", "digits", "--budget", "faults", "--quiet")


@pytest.fixture(autouse=True)
def fault_specs(monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    monkeypatch.setenv("VLAEBENCH_BUDGETS", str(HERE / "budgets.toml"))


def record_of(results: Path, seed: int = 0) -> dict:
    (path,) = records.runs_dir(results).glob(f"*__seed{seed}__*.json")
    return records.read(path)


def test_a_nan_at_a_chosen_step_ends_the_run_as_diverged_at_that_step(run_cli, tmp_path, monkeypatch):
    original, calls = VAE.loss, []

    def loss(self, x):
        calls.append(1)
        value, diagnostics = original(self, x)
        return (value * float("nan"), diagnostics) if len(calls) == 30 else (value, diagnostics)

    monkeypatch.setattr(VAE, "loss", loss)
    code, out, err = run_cli(*RUN, "--results", tmp_path)
    record = record_of(tmp_path)
    assert code == 1 and (record["status"], record["stop_reason"]) == ("diverged", "non_finite_loss")
    assert "at step 30 (epoch 2)" in record["error"]  # 26 steps an epoch: 1,297 digits in batches of 50


def test_an_exception_is_failed_with_its_traceback_and_out_of_memory_says_so(run_cli, tmp_path, monkeypatch):
    def out_of_memory(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(VAE, "loss", out_of_memory)
    code, out, err = run_cli(*RUN, "--results", tmp_path)
    record = record_of(tmp_path)
    assert code == 1 and (record["status"], record["stop_reason"]) == ("failed", "out_of_memory")
    assert "OutOfMemoryError" in record["error"] and "Traceback" in record["error"]

    monkeypatch.setattr(VAE, "loss", lambda self, x: 1 / 0)
    code, out, err = run_cli(*RUN, "--results", tmp_path / "other")
    record = record_of(tmp_path / "other")
    assert (record["status"], record["stop_reason"]) == ("failed", "exception")
    assert "ZeroDivisionError" in record["error"]


@pytest.mark.parametrize("failure", ["full disk", "read-only folder"])
def test_a_record_that_cannot_be_written_is_one_clear_line_and_nothing_else_changes(
    run_cli, tmp_path, monkeypatch, failure
):
    assert run_cli(*RUN, "--results", tmp_path, "--seeds", "0")[0] == 0  # an earlier record
    before = tree_digest(records.runs_dir(tmp_path))
    if failure == "full disk":

        def dump(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(json, "dump", dump)
    else:

        def replace(source, target):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))

        monkeypatch.setattr(os, "replace", replace)
    code, out, err = run_cli(*RUN, "--results", tmp_path, "--seeds", "1")
    assert code == 2 and err.count("\n") == 1 and err.startswith("vlaebench: error: ")
    assert ("No space left" if failure == "full disk" else "Permission denied") in err
    assert "Traceback" not in out + err
    assert tree_digest(records.runs_dir(tmp_path)) == before  # no partial file, the earlier record intact


def test_processes_writing_into_one_results_folder_at_once_lose_nothing(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "benchmarks.cli", *RUN, "--results", str(tmp_path)]
    processes = [
        subprocess.Popen([*command, "--seeds", seeds], env=environment, stderr=subprocess.PIPE)
        for seeds in ("0,1", "2,3", "0,4")  # seed 0 twice: the same run written by two processes
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    written = [records.read(path) for path in records.runs_dir(tmp_path).glob("*.json")]
    assert sorted(r["seed"] for r in written) == [0, 1, 2, 3, 4]
    assert not [p for p in records.runs_dir(tmp_path).iterdir() if p.suffix != ".json"]  # no temporary left
