"""``vlaebench sweep``: the whole matrix of runs (papers × methods × variants × datasets × seeds at one
budget), each run in a process of its own, so that one that crashes, hangs or runs out of memory
takes nothing else down.

- What runs: every planned run without an ``ok`` record. A run with a record that is not ``ok``
  (failed, diverged, timed out, partial) is redone; a run killed before its record was written
  continues from its checkpoint (``vlaebench run --rerun-failed`` does both).
- ``local``: at most ``max_parallel`` runs at once on this machine; with ``gpus``, one worker per listed
  index instead (``max_parallel`` is not used), each holding one GPU (``CUDA_VISIBLE_DEVICES`` pinned,
  ``--device cuda``); an index given n times is shared by n workers, and their records say so
  (``runs_sharing_device``); on the CPU the cores are shared out (``OMP_NUM_THREADS``, unless set). Each
  process is killed at a hard wall-clock limit: by default ``HARD_LIMIT_FACTOR`` times the budget's
  ``max_wall_s`` (which caps training only; evaluation follows it). A progress bar shows the whole
  sweep: done, running, failed, ETA.
- ``slurm``: one submitit job array (``slurm_array_parallelism`` caps how many run at once), each task
  one run on one GPU, with the hard limit as its time limit; a task preempted or timed out is
  requeued and continues from its checkpoint.

What each local run printed is kept in ``RESULTS/logs/<run id>.log`` (not committed).
Every outcome is the record's status, or ``killed`` (past the hard limit: its checkpoint stays, the
next sweep continues it), ``crashed`` (the process died without a record) or ``unavailable`` (the
dataset is not on this machine). The sweep's exit status is 1 unless every run ended ``ok``.
"""

import math
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from benchmarks import EXIT_UNAVAILABLE, ROOT, RUNS_SHARING_DEVICE, UserError, records, specs

HARD_LIMIT_FACTOR = 3
LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class Job:
    config: dict
    run_id: str
    previous: dict | None = None  # the provenance of a record that is not ok: the run is redone

    @property
    def label(self) -> str:
        return specs.run_label(self.config)


def pending(plan: list[dict], results: Path) -> tuple[list[Job], int]:
    """The planned runs that have no ``ok`` record, and how many have one (skipped)."""
    jobs, done = [], 0
    for config in plan:
        run_id = specs.run_id(config)
        path = records.path_for(results, config, run_id)
        record = records.read(path) if path.exists() else None
        if record and record["status"] == "ok":
            done += 1
        else:
            jobs.append(Job(config, run_id, record and record["provenance"]))
    return jobs, done


def hard_limit_s(budget: specs.Budget, override: float | None) -> float | None:
    if override is not None:
        if not override > 0:  # NaN too
            raise UserError(f"--hard-limit-s must be a positive number of seconds, got {override}")
        return override
    wall = budget.caps.get("max_wall_s")
    return None if wall is None else HARD_LIMIT_FACTOR * wall


def command(job: Job, results: Path, device: str, data_dir: str | None) -> list[str]:
    """The ``vlaebench run`` of one job."""
    c = job.config
    args = [sys.executable, "-m", "benchmarks.cli", "run", "--paper", c["paper"], "--method", c["method"]]
    args += ["--dataset", c["dataset"], "--budget", c["budget"], "--seeds", str(c["seed"])]
    args += ["--results", str(results), "--device", device, "--quiet", "--rerun-failed"]
    return args + (["--data-dir", data_dir] if data_dir else [])


def outcome(job: Job, results: Path, returncode: int) -> str:
    """What became of a job whose process ended: the status of the record it wrote; else unavailable
    (no data here) or crashed."""
    path = records.path_for(results, job.config, job.run_id)
    record = records.read(path) if path.exists() else None
    if record and record["provenance"] != job.previous:  # this attempt's record, not the earlier one
        return record["status"]
    return "unavailable" if returncode == EXIT_UNAVAILABLE else "crashed"


def run_local(
    jobs: list[Job],
    results: Path,
    max_parallel: int,
    gpus: list[int] | None,
    limit_s: float | None,
    data_dir: str | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Run ``jobs`` on this machine; the outcome of each, by run id."""
    slots = queue.Queue()
    for slot in gpus or range(max_parallel):
        slots.put(slot)
    threads = max(1, (os.cpu_count() or 1) // max_parallel)
    outcomes, running, lock = {}, set(), threading.Lock()
    bar = tqdm(total=len(jobs), disable=not progress, unit="run", desc="sweep")

    def one(job: Job) -> str:
        slot = slots.get()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot)
            env[RUNS_SHARING_DEVICE] = str(gpus.count(slot))  # workers given the same GPU share it
        else:
            env.setdefault("OMP_NUM_THREADS", str(threads))
        with lock:
            running.add(job.label)
        try:
            log = Path(results) / "logs" / f"{job.run_id}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as output:  # what a run printed: for a crash, the only account of it
                done = subprocess.run(
                    command(job, results, "cuda" if gpus else "cpu", data_dir),
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=limit_s,
                )
            return outcome(job, results, done.returncode)
        except subprocess.TimeoutExpired:
            return "killed"
        finally:
            with lock:
                running.discard(job.label)
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=len(gpus) if gpus else max_parallel) as pool:
        futures = {pool.submit(one, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            outcomes[job.run_id] = future.result()
            failed = sum(status != "ok" for status in outcomes.values())
            bar.set_postfix(running=len(running), failed=failed)
            bar.update()
            if not progress:
                print(f"{outcomes[job.run_id]:11s} {job.label}", flush=True)
    bar.close()
    return outcomes


def slurm_executor(folder: Path, jobs: int, max_parallel: int, limit_s: float | None, partition: str | None = None):
    """The submitit executor of one job array: a GPU a task, the hard limit as its time limit, at most
    ``max_parallel`` tasks at once (``slurm_array_parallelism``)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    parameters = {
        "slurm_array_parallelism": max_parallel,
        "gpus_per_node": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 8,
        "timeout_min": math.ceil((limit_s or 24 * 3600) / 60),
        "name": f"vlaebench-{jobs}-runs",
    }
    if partition:
        parameters["slurm_partition"] = partition
    executor.update_parameters(**parameters)
    return executor


class SlurmRun:
    """One array task: the run's ``vlaebench run`` on the node's GPU. Checkpointable: when Slurm
    preempts it or its time runs out, submitit requeues it, and the run continues from its last
    checkpoint."""

    def __init__(self, job: Job, results: Path, data_dir: str | None):
        self.job, self.results, self.data_dir = job, results, data_dir

    def __call__(self) -> str:
        done = subprocess.run(command(self.job, self.results, "cuda", self.data_dir), capture_output=True, text=True)
        return outcome(self.job, self.results, done.returncode)

    def checkpoint(self):
        import submitit

        # requeued as it is: `vlaebench run --rerun-failed` finds its checkpoint and continues from it
        return submitit.helpers.DelayedSubmission(self)


def submit_slurm(
    jobs: list[Job], results: Path, max_parallel: int, limit_s: float | None, data_dir=None, partition=None
):
    """Submit ``jobs`` as one array (its logs and pickles in ``results/slurm``); the submitit jobs."""
    executor = slurm_executor(results / "slurm", len(jobs), max_parallel, limit_s, partition)
    with executor.batch():
        submitted = [executor.submit(SlurmRun(job, results, data_dir)) for job in jobs]
    return submitted


def run_slurm(jobs: list[Job], results: Path, max_parallel: int, limit_s: float | None, data_dir=None, partition=None):
    """Submit ``jobs`` as one array and wait for it; the outcome of each, by run id."""
    outcomes = {}
    for job, task in zip(jobs, submit_slurm(jobs, results, max_parallel, limit_s, data_dir, partition)):
        try:
            outcomes[job.run_id] = task.result()
        except Exception:  # the task itself died (node failure, out of memory): no record of this attempt
            outcomes[job.run_id] = "crashed"
    return outcomes


def summary(outcomes: dict[str, str], skipped: int) -> str:
    counts = {}
    for status in outcomes.values():
        counts[status] = counts.get(status, 0) + 1
    ran = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to run"
    return f"sweep: {ran}; {skipped} skipped (an ok record exists)"


def check(launcher: str, max_parallel: int, gpus: list[int] | None) -> None:
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}")
    if max_parallel < 1:
        raise UserError(f"--max-parallel must be at least 1, got {max_parallel}")
    if gpus is not None and not gpus:
        raise UserError("--gpus lists no GPU; give their indices, e.g. --gpus 0,1")


def check_gpus_here(gpus: list[int]) -> None:
    """Refuse GPU indices this machine lacks before any run starts: each of its runs would fail."""
    import torch  # here: the sweep's own process needs torch for this check alone

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        raise UserError(
            f"--gpus {','.join(map(str, gpus))}: torch sees no CUDA GPU here; leave --gpus out to run on the CPU"
        )
    missing = sorted({g for g in gpus if g >= count})
    if missing:
        raise UserError(
            f"--gpus: no GPU {', '.join(map(str, missing))} here; this machine has {count} (indices 0 to {count - 1})"
        )
