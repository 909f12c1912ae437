"""One run: train a method under a seed and a budget, evaluate it, and write its record.

A run never raises for a problem of its own: a non-finite loss ends it as ``diverged``, an exception
as ``failed`` (with the traceback's tail), the budget's wall-clock cap as ``timeout``; the record is
written either way and the next run goes on.
"""

import math
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm import tqdm

import models
from benchmarks import ROOT, metrics, records
from benchmarks.data import Dataset
from models import optim


def train(model, data: Dataset, config: dict, device: torch.device, progress: bool = True) -> dict:
    """Train ``model`` in place through its hooks (``models/base.py``); returns status, stop_reason,
    error, curves, training timing and the model to evaluate (``evaluated``: the model itself, or
    the moving average of its weights)."""
    training, seed = config["training"], config["seed"]
    order = torch.Generator().manual_seed(seed)
    n, batch_size = len(data.train), training["batch_size"]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's draws stay as they were
        model.initialize(data.training_batch(torch.arange(min(n, batch_size), device=device)), data.statistics)
    optimizer = model.configure_optimizer(training)
    evaluated = model.evaluation_model(optimizer, training)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = min(training["epochs"] * steps_per_epoch, training["max_steps"] or math.inf)
    max_wall_s = training["max_wall_s"] or math.inf
    valid = data.valid[: config["evaluation"]["valid_points"] or len(data.valid)]
    curves = {"epoch": [], "lr": [], "train_elbo": [], "valid_elbo": []}
    outcome = {"status": "ok", "stop_reason": "max_epochs", "error": None}
    step, examples, train_wall, valid_wall = 0, 0, 0.0, 0.0
    bar = tqdm(
        total=total_steps,
        desc=f"{config['method']} {config['dataset']} seed {seed}",
        unit="step",
        disable=not progress,
        leave=False,
        file=sys.stderr,
    )
    for epoch in range(training["epochs"]):
        lr = optim.learning_rate(training, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logged = model.on_epoch_start(epoch, training)
        model.train()
        metrics.synchronize(device)
        started = time.perf_counter()
        elbo_sum, seen = torch.zeros((), device=device), 0
        for idx in torch.randperm(n, generator=order).to(device).split(batch_size):
            loss, diagnostics = model.loss(data.training_batch(idx))
            if not math.isfinite(loss.item()):
                outcome = {
                    "status": "diverged",
                    "stop_reason": "non_finite_loss",
                    "error": f"loss was {loss.item()} at step {step + 1} (epoch {epoch + 1})",
                }
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            elbo_sum += diagnostics["elbo"].detach() * len(idx)
            seen += len(idx)
            step += 1
            bar.update()
            if step >= total_steps:
                outcome["stop_reason"] = "max_steps" if step < training["epochs"] * steps_per_epoch else "max_epochs"
                break
            if train_wall + valid_wall + time.perf_counter() - started > max_wall_s:
                outcome = {"status": "timeout", "stop_reason": "max_wall_s", "error": None}
                break
        metrics.synchronize(device)
        train_wall += time.perf_counter() - started
        examples += seen
        if outcome["status"] == "diverged":
            break
        started = time.perf_counter()
        curves["epoch"].append(epoch + 1)
        curves["lr"].append(lr)
        curves["train_elbo"].append(elbo_sum.item() / max(seen, 1))
        curves["valid_elbo"].append(metrics.elbo_single_sample(evaluated, valid))
        for key, value in logged.items():
            curves.setdefault(key, []).append(value)
        valid_wall += time.perf_counter() - started
        bar.set_postfix(valid_elbo=f"{curves['valid_elbo'][-1]:.2f}")
        if step >= total_steps or outcome["status"] != "ok":
            break
    bar.close()
    timing = {
        "train_wall_s": train_wall,
        "valid_wall_s": valid_wall,
        "epochs": len(curves["epoch"]),
        "steps": step,
        "s_per_epoch": train_wall / max(len(curves["epoch"]), 1),
        "examples_per_s": examples / train_wall if train_wall else None,
    }
    return {**outcome, "curves": curves, "timing": timing, "evaluated": evaluated, "optimizer": optimizer}


def _git(*args) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance() -> dict:
    # Run records and generated tables are outputs, not code: they do not make the tree dirty.
    changes = _git("status", "--porcelain", "--", ".", ":!results", ":!report/tables")
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if changes is None else bool(changes),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }


def _nvidia_driver() -> str | None:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device),
            "device_capability": list(torch.cuda.get_device_capability(device)),
            "driver": _nvidia_driver(),
            "cuda": torch.version.cuda,
        }
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "device": "cpu",
        "device_name": cpu,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


PROC_SELF = Path("/proc/self")


def reset_peak_memory(device: torch.device) -> bool:
    """Start measuring the run's own peak: CUDA's peak allocation, or on the CPU the process's peak
    resident set (Linux resets VmHWM to the current size on a write of 5 to clear_refs). False
    where it cannot be reset: the peak is then the process's so far."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        (PROC_SELF / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_memory(device: torch.device, reset: bool) -> dict:
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_max_allocated"}
    if reset:
        try:
            status = (PROC_SELF / "status").read_text()
            kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
            return {"peak_memory_bytes": kib * 1024, "peak_memory_kind": "run_peak_rss"}
        except (OSError, StopIteration, ValueError):
            pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_memory_bytes": maxrss, "peak_memory_kind": "process_max_rss"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run(config: dict, run_id: str, data: Dataset, device: torch.device, progress: bool = True) -> dict:
    """Train and evaluate one resolved ``config`` on ``data`` (already on ``device``); returns its record."""
    record = {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": run_id,
        **{key: config[key] for key in ("paper", "method", "dataset", "budget", "seed")},
        "config": config,
        "dataset_info": data.info,
        "metrics": {},
        "curves": {},
        "timing": {},
        "provenance": {**provenance(), "started": _now()},
    }
    reset = reset_peak_memory(device)
    try:
        torch.manual_seed(config["seed"])
        model = models.build(config["model"], data.shape, config["hyper"], data.likelihood).to(device)
        trained = train(model, data, config, device, progress)
        record.update({key: trained[key] for key in ("status", "stop_reason", "error", "curves")})
        record["timing"] = trained["timing"]
        if trained["status"] != "diverged":
            evaluation = config["evaluation"]
            points = evaluation["test_points"] or len(data.test)
            labels = None if data.test_labels is None else data.test_labels[:points]
            torch.manual_seed(config["seed"])
            metrics.synchronize(device)
            started = time.perf_counter()
            record["metrics"], eval_timing, failed = metrics.evaluate(
                trained["evaluated"], data.test[:points], labels, evaluation, config["seed"], data.discrete
            )
            metrics.synchronize(device)
            record["timing"].update(eval_timing, eval_wall_s=time.perf_counter() - started)
            if failed:  # the other groups' metrics are kept
                if record["status"] == "ok":
                    record.update(status="partial", stop_reason="metric_error")
                record["error"] = "\n".join(
                    [
                        f"metric group(s) failed: {', '.join(failed)}",
                        *(f"{name}: {tail}" for name, tail in failed.items()),
                    ]
                )
            bad = [name for name, m in record["metrics"].items() if not math.isfinite(m["value"])]
            if bad:
                record.update(
                    status="diverged",
                    stop_reason="non_finite_metric",
                    error=f"non-finite test metric(s): {', '.join(bad)}",
                )
    except Exception:  # recorded, and the other runs go on
        record.update(status="failed", stop_reason="exception", error=traceback.format_exc()[-4000:])
    record["timing"].update(device_info(device), **peak_memory(device, reset))
    record["provenance"]["finished"] = _now()
    return record
