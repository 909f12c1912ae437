"""A sweep of three tiny runs, each in its own process, where one diverges and one crashes (its process
is killed mid-training, as a segfault or the OOM killer would): the third completes, the divergence is
recorded, the crash is reported, the sweep exits 1 with a summary; a rerun runs only the two that did
not end ok (here past a hard limit, so each is killed and reported as such)."""

import pytest
from conftest import tree_digest

from benchmarks import records
from benchmarks.cli import main

SPEC = """
[paper]
title = "Sweep faults"
citation = "tests"

[evaluation]
importance_samples = 5
compare = ["nll"]

[training]
batch_size = 100
epochs = 1

[datasets.digits]

[datasets.caltech101_silhouettes]

[methods.fine]
model = "vae"
hyper = { latent_dim = 2, hidden = [8] }

[methods.diverges]
model = "vae"
hyper = { latent_dim = 3, hidden = [8] }

[methods.crashes]
model = "vae"
hyper = { latent_dim = 4, hidden = [8] }
"""

BUDGET = """
[tiny]
description = "one epoch, a tiny evaluation"
max_epochs = 1
max_wall_s = 60
importance_samples = 5
test_points = 50
valid_points = 50
"""

# Loaded by every Python process started with this folder on PYTHONPATH: the faults, by latent size.
SITECUSTOMIZE = """
import os
import signal

from models.vae import VAE

_loss = VAE.loss


def loss(self, x):
    value, logged = _loss(self, x)
    if self._origin.numel() == 3:
        return value * float("nan"), logged
    if self._origin.numel() == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return value, logged


VAE.loss = loss
"""


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "sweepfaults.toml").write_text(SPEC)
    (tmp_path / "budgets.toml").write_text(BUDGET)
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path / "specs"))
    monkeypatch.setenv("VLAEBENCH_BUDGETS", str(tmp_path / "budgets.toml"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "inject"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    arguments = ["sweep", "--paper", "sweepfaults", "--dataset", "digits", "--budget", "tiny", "--seeds", "0"]
    return lambda *extra: main([*arguments, "--results", str(tmp_path / "results"), "--quiet", *extra])


def test_failures_stay_in_their_process_and_a_rerun_runs_only_them(sweep, tmp_path, capsys):
    assert sweep("--max-parallel", "3") == 1
    out = capsys.readouterr().out
    assert "sweep: 3 runs planned, 0 with an ok record, 3 to run (local)" in out
    assert "sweep: 1 crashed, 1 diverged, 1 ok; 0 skipped (an ok record exists)" in out
    statuses = {r["method"]: r["status"] for r in records.load_all(tmp_path / "results")}
    assert statuses == {"fine": "ok", "diverges": "diverged"}  # the crash left no record

    # a dry run lists what a rerun would start, and why, and changes nothing
    before = tree_digest(tmp_path / "results")
    assert sweep("--dry-run") == 0
    out = capsys.readouterr().out
    assert "sweep: 3 runs planned, 1 with an ok record, 2 to run (dry run)" in out
    assert "would run sweepfaults diverges digits tiny seed 0 (redo: diverged)" in out
    assert "would run sweepfaults crashes digits tiny seed 0 (new)" in out and "fine" not in out
    assert tree_digest(tmp_path / "results") == before
    logs = sorted((tmp_path / "results" / "logs").glob("*.log"))  # each run's output, the crash's too
    assert len(logs) == 3 and any("diverged" in log.read_text() for log in logs)

    # the rerun runs only the two that did not end ok; past the hard limit, each is killed
    assert sweep("--max-parallel", "2", "--hard-limit-s", "0.5") == 1
    out = capsys.readouterr().out
    assert "3 runs planned, 1 with an ok record, 2 to run" in out and "sweep: 2 killed; 1 skipped" in out


def test_a_dataset_not_on_this_machine_leaves_its_runs_unavailable_not_crashed(sweep, tmp_path, capsys):
    (tmp_path / "data").mkdir()  # a data folder without the Caltech file: the only place looked at
    args = ["--dataset", "caltech101_silhouettes", "--method", "fine", "--data-dir", str(tmp_path / "data")]
    assert sweep(*args) == 1
    out = capsys.readouterr().out
    assert "sweep: 1 unavailable; 0 skipped" in out and "crashed" not in out
    assert not records.load_all(tmp_path / "results")


def test_a_dry_run_creates_no_results_folder(sweep, tmp_path, capsys):
    assert sweep("--dry-run") == 0
    assert "would run sweepfaults fine digits tiny seed 0 (new)" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_bad_sweep_options_are_refused_before_anything_runs(sweep, tmp_path, capsys):
    assert sweep("--launcher", "cloud") == 2
    assert "unknown launcher 'cloud'; valid: local, slurm" in capsys.readouterr().err
    assert sweep("--max-parallel", "0") == 2
    assert not (tmp_path / "results").exists()
    for gpus, said in [
        ("a", "--gpus 'a': expected comma-separated GPU indices"),
        ("0,-1", "--gpus '0,-1': a GPU index is 0 or more"),
        (",", "--gpus lists no GPU"),
    ]:
        assert sweep("--gpus", gpus) == 2
        assert said in capsys.readouterr().err
    for limit in ["-5", "0", "nan"]:
        assert sweep("--hard-limit-s", limit, "--dry-run") == 2
        assert "--hard-limit-s must be a positive number of seconds" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")  # a results folder that cannot be made: no run starts
    assert sweep("--results", str(tmp_path / "a_file" / "results")) == 2
    assert "cannot create the results folder" in capsys.readouterr().err


def test_the_slurm_launcher_submits_one_capped_array_with_the_budgets_time_limit(sweep, tmp_path, monkeypatch):
    """Without a cluster: sbatch is replaced by a function that keeps the script it is given (and an
    srun that does nothing stands on PATH, where submitit looks for Slurm)."""
    import os

    import submitit.core.utils

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    scripts = []

    def sbatch(self):
        scripts.append(open(self.command[-1]).read())
        return "Submitted batch job 4242"

    monkeypatch.setattr(submitit.core.utils.CommandFunction, "__call__", sbatch)
    from benchmarks import specs, sweep

    plan = [
        specs.resolve(specs.load_paper("sweepfaults"), m, "digits", specs.budget("tiny"), 0)
        for m in ("fine", "diverges", "crashes")
    ]
    jobs, _ = sweep.pending(plan, tmp_path / "results")
    limit = sweep.hard_limit_s(specs.budget("tiny"), None)
    submitted = sweep.submit_slurm(jobs, tmp_path / "results", 2, limit)
    assert len(submitted) == 3 and [job.job_id for job in submitted] == ["4242_0", "4242_1", "4242_2"]
    (script,) = scripts
    assert "#SBATCH --array=0-2%2" in script  # three runs, two at once
    assert "#SBATCH --time=3" in script  # 3 × the budget's max_wall_s of 60 s, in minutes
    assert "#SBATCH --gpus-per-node=1" in script and "--signal=USR2" in script  # a GPU each; requeued when preempted
    # preempted, a task is requeued as it is: its run redoes what has no ok record, from its checkpoint
    assert "--rerun-failed" in sweep.command(jobs[0], tmp_path / "results", "cuda", None)
    task = sweep.SlurmRun(jobs[0], tmp_path / "results", None)
    assert task.checkpoint().function is task


def test_workers_given_the_same_gpu_are_told_how_many_share_it(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from benchmarks import sweep as sweep_module

    seen = []
    monkeypatch.setattr(
        sweep_module.subprocess,
        "run",
        lambda args, env, **_: (
            seen.append((env["CUDA_VISIBLE_DEVICES"], env["VLAEBENCH_RUNS_SHARING_DEVICE"]))
            or SimpleNamespace(returncode=1)
        ),
    )
    config = {"paper": "p", "method": "m", "dataset": "digits", "budget": "tiny", "variant": {}}
    jobs = [sweep_module.Job({**config, "seed": seed}, f"{seed:016x}") for seed in range(6)]
    sweep_module.run_local(jobs, tmp_path, 3, [0, 0, 1], None, progress=False)
    assert sorted(set(seen)) == [("0", "2"), ("1", "1")] and len(seen) == 6


def test_gpus_this_machine_lacks_are_refused_before_any_run_but_a_dry_run_plans_anywhere(
    sweep, tmp_path, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sweep("--gpus", "0") == 2
    assert "torch sees no CUDA GPU here; leave --gpus out" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert sweep("--gpus", "0,2,3,2") == 2
    assert "no GPU 2, 3 here; this machine has 2 (indices 0 to 1)" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    assert sweep("--gpus", "5", "--dry-run") == 0
    assert "would run sweepfaults fine digits tiny seed 0 (new)" in capsys.readouterr().out
