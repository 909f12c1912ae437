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
from typing import NamedTuple

import torch
from tqdm import tqdm

import models
from benchmarks import ROOT, RUNS_SHARING_DEVICE, UserError, metrics, records, specs
from benchmarks.data import Dataset
from models.blocks import optim

CHECKPOINT_FORMAT = 1


class _Limits(NamedTuple):
    """Where a run's training stops: its steps (the spec's epochs, capped by the budget's max_steps),
    the steps of the spec's epochs, and the wall-clock cap (seconds of training and validation)."""

    total_steps: float
    epoch_steps: int
    max_wall_s: float


def train(
    model, data: Dataset, config: dict, device: torch.device, progress: bool = True, checkpoint: Path | None = None
) -> dict:
    """Train ``model`` in place through its hooks (``models/base.py``); returns status, stop_reason,
    error, curves, training timing, the selection made and the model to evaluate (``evaluated``: the
    model itself or the moving average of its weights, with the selected epoch's weights loaded).

    With a ``checkpoint`` path the full training state (weights, optimizer, every random state,
    curves, timing, the best validation so far) is written there atomically at the end of an epoch,
    every ``checkpoint_every_epochs`` epochs or ``checkpoint_every_minutes`` minutes, and a run that
    finds one continues from it: on the CPU it ends bit-identical to an uninterrupted run.
    ``selection`` = ``last`` evaluates the last weights; ``best_valid`` the weights of the epoch
    with the best validation ELBO (validated every ``valid_every`` epochs; never the test split)."""
    training, seed = config["training"], config["seed"]
    order = torch.Generator().manual_seed(seed)
    n, batch_size = len(data.train), training["batch_size"]
    with metrics.forked_rng(device):  # the run's draws stay as they were
        model.initialize(data.training_batch(torch.arange(min(n, batch_size), device=device)), data.statistics)
    optimizer = model.configure_optimizer(training)
    evaluated = model.evaluation_model(optimizer, training)
    epoch_steps = training["epochs"] * math.ceil(n / batch_size)
    limits = _Limits(
        min(epoch_steps, training["max_steps"] or math.inf), epoch_steps, training["max_wall_s"] or math.inf
    )
    valid = data.valid[: config["evaluation"]["valid_points"] or len(data.valid)]
    state = {
        "epoch": 0,  # epochs done
        "step": 0,
        "examples": 0,
        "train_wall": 0.0,
        "valid_wall": 0.0,
        "curves": {"epoch": [], "lr": [], "train_elbo": [], "valid_elbo": []},
        "outcome": {"status": "ok", "stop_reason": "max_epochs", "error": None},
        "best": None,  # {"epoch", "valid_elbo", "weights"} under best_valid selection
        "resumed_from_epoch": None,
    }
    if checkpoint is not None and checkpoint.exists():
        _restore(checkpoint, state, model, evaluated, optimizer, order, device)
    saved_at = (state["epoch"], time.monotonic())
    outcome = state["outcome"]
    bar = tqdm(
        total=limits.total_steps,
        initial=state["step"],
        desc=f"{config['method']} {config['dataset']} seed {seed}",
        unit="step",
        disable=not progress,
        leave=False,
        file=sys.stderr,
    )
    finished = state["step"] >= limits.total_steps or outcome["status"] != "ok"
    for epoch in range(state["epoch"], training["epochs"] if not finished else 0):
        lr = optim.learning_rate(training, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logged = model.on_epoch_start(epoch, training)
        train_elbo = _train_epoch(model, optimizer, data, order, batch_size, state, limits, bar, device)
        if outcome["status"] == "diverged":
            break
        state["epoch"] = epoch + 1
        last = state["step"] >= limits.total_steps or outcome["status"] != "ok" or epoch + 1 == training["epochs"]
        validated = (epoch + 1) % training["valid_every"] == 0 or last
        _end_epoch(state, evaluated, valid, training, seed, lr, train_elbo, logged, validated, device)
        if validated:
            bar.set_postfix(valid_elbo=f"{state['curves']['valid_elbo'][-1]:.2f}")
        every_minutes = training["checkpoint_every_minutes"] * 60
        due = epoch + 1 - saved_at[0] >= training["checkpoint_every_epochs"] or (
            every_minutes and time.monotonic() - saved_at[1] >= every_minutes
        )
        if checkpoint is not None and (due or last):
            _save(checkpoint, state, model, evaluated, optimizer, order, device)
            saved_at = (epoch + 1, time.monotonic())
        if last:
            break
    bar.close()
    return {
        **outcome,
        "curves": state["curves"],
        "timing": _training_timing(state),
        "selection": _select(state, evaluated, training["selection"]),
        "resumed_from_epoch": state["resumed_from_epoch"],
        "evaluated": evaluated,
        "optimizer": optimizer,
    }


def _train_epoch(model, optimizer, data: Dataset, order, batch_size: int, state: dict, limits: _Limits, bar, device):
    """One epoch of steps in ``order``'s shuffle; returns the epoch's mean training ELBO. It ends
    early, with ``state``'s outcome saying why, at a non-finite loss (before that step's update), at
    the last step or past the wall-clock cap."""
    outcome = state["outcome"]
    metrics.synchronize(device)
    started = time.perf_counter()
    elbo_sum, seen = torch.zeros((), device=device), 0
    for idx in torch.randperm(len(data.train), generator=order).to(device).split(batch_size):
        loss, diagnostics = model.loss(data.training_batch(idx))
        if not math.isfinite(loss.item()):
            epoch = state["epoch"] + 1
            error = f"loss was {loss.item()} at step {state['step'] + 1} (epoch {epoch})"
            outcome.update(status="diverged", stop_reason="non_finite_loss", error=error)
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elbo_sum += diagnostics["elbo"].detach() * len(idx)
        seen += len(idx)
        state["step"] += 1
        bar.update()
        if state["step"] >= limits.total_steps:
            outcome["stop_reason"] = "max_steps" if state["step"] < limits.epoch_steps else "max_epochs"
            break
        if state["train_wall"] + state["valid_wall"] + time.perf_counter() - started > limits.max_wall_s:
            outcome.update(status="timeout", stop_reason="max_wall_s")
            break
    metrics.synchronize(device)
    state["train_wall"] += time.perf_counter() - started
    state["examples"] += seen
    return elbo_sum.item() / max(seen, 1)


def _end_epoch(state: dict, evaluated, valid, training: dict, seed: int, lr, train_elbo, logged, validated, device):
    """The bookkeeping after the epoch ``state["epoch"]``: its curves (validated or not), and under
    ``best_valid`` selection the best validated weights so far; its time counts as validation's."""
    started = time.perf_counter()
    epoch, curves = state["epoch"], state["curves"]
    curves["epoch"].append(epoch)
    curves["lr"].append(lr)
    curves["train_elbo"].append(train_elbo)
    curves["valid_elbo"].append(validation_elbo(evaluated, valid, seed, epoch - 1, device) if validated else None)
    for key, value in logged.items():
        curves.setdefault(key, []).append(value)
    if validated and training["selection"] == "best_valid":
        if state["best"] is None or curves["valid_elbo"][-1] > state["best"]["valid_elbo"]:
            weights = {key: value.detach().clone() for key, value in evaluated.state_dict().items()}
            state["best"] = {"epoch": epoch, "valid_elbo": curves["valid_elbo"][-1], "weights": weights}
    state["valid_wall"] += time.perf_counter() - started


def _select(state: dict, evaluated, rule: str) -> dict:
    """The selection made, with ``evaluated`` given the best validated weights where ``rule`` kept some."""
    selection = {"rule": rule, "epoch": state["epoch"]}
    if state["best"] is not None:
        evaluated.load_state_dict(state["best"]["weights"])
        selection.update(epoch=state["best"]["epoch"], valid_elbo=state["best"]["valid_elbo"])
        selection["why"] = "the best validation ELBO over the validated epochs (valid_every epochs)"
    else:
        selection["why"] = "the last epoch's weights"
    return selection


def _training_timing(state: dict) -> dict:
    epochs = len(state["curves"]["epoch"])
    return {
        "train_wall_s": state["train_wall"],
        "valid_wall_s": state["valid_wall"],
        "epochs": epochs,
        "steps": state["step"],
        "s_per_epoch": state["train_wall"] / max(epochs, 1),
        "examples_per_s": state["examples"] / state["train_wall"] if state["train_wall"] else None,
    }


def validation_elbo(model, valid: torch.Tensor, seed: int, epoch: int, device: torch.device) -> float:
    """The validation ELBO after (0-based) ``epoch``, with draws of its own: how often a run validates
    (``valid_every``, ``selection``) never changes its training draws, and the value can be
    recomputed from the weights."""
    with metrics.forked_rng(device):
        torch.manual_seed(seed * 100_003 + epoch)
        return metrics.elbo_single_sample(model, valid)


def _random_states(order: torch.Generator, device: torch.device) -> dict:
    states = {"torch": torch.get_rng_state(), "order": order.get_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _save(path: Path, state: dict, model, evaluated, optimizer, order, device) -> None:
    """The training state at the end of an epoch, written atomically (a killed write leaves the
    previous checkpoint)."""
    saved = {
        "format": CHECKPOINT_FORMAT,
        **{key: state[key] for key in ("epoch", "step", "examples", "train_wall", "valid_wall", "curves", "outcome")},
        "best": state["best"],
        "model": model.state_dict(),
        "evaluated": None if evaluated is model else evaluated.state_dict(),
        "optimizer": optimizer.state_dict(),
        "random": _random_states(order, device),
    }
    records.save_tensors(saved, path)


def _restore(path: Path, state: dict, model, evaluated, optimizer, order, device) -> None:
    try:
        saved = torch.load(path, weights_only=True, map_location=device)
    except Exception as e:  # a file we cannot read is no state to continue from
        raise UserError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it to start over"
        ) from None
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"checkpoint {path} has format {saved.get('format')!r}; this vlaebench reads {CHECKPOINT_FORMAT}"
        )
    model.load_state_dict(saved["model"])
    if saved["evaluated"] is not None:
        evaluated.load_state_dict(saved["evaluated"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["random"]["torch"].cpu())
    order.set_state(saved["random"]["order"].cpu())
    if "cuda" in saved["random"]:
        torch.cuda.set_rng_state(saved["random"]["cuda"].cpu(), device)
    state.update({key: saved[key] for key in ("epoch", "step", "examples", "train_wall", "valid_wall", "curves")})
    state.update(outcome=saved["outcome"], best=saved["best"], resumed_from_epoch=saved["epoch"])


def _git(*args) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance() -> dict:
    # Run records, their pictures and the generated report are outputs, not code: they do not make the tree dirty.
    outputs = (":!results", ":!report/tables", ":!report/figures", ":!report/README.md", ":!report/index.html")
    changes = _git("status", "--porcelain", "--", ".", *outputs)
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
            "runs_sharing_device": int(os.environ.get(RUNS_SHARING_DEVICE, 1)),
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


def determinism(device: torch.device) -> dict:
    """Ask for what torch offers and say what holds. On the CPU a seed reproduces a run bit for bit
    (same CPU type, thread count and library versions); on CUDA deterministic algorithms are
    requested (a kernel without one warns rather than fails) and cuDNN's autotuner is off. Whether
    float32 convolutions and matrix products may run in TensorFloat-32 (10-bit mantissas, on
    Ampere and later GPUs) is recorded as torch leaves it: by default convolutions do, matrix
    products do not; a CPU computes both in IEEE float32."""
    if device.type != "cuda":
        return {"device": "cpu", "bitwise": True, "note": "same seed, same CPU type, threads and versions"}
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS first starts
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return {
        "device": "cuda",
        "bitwise": False,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "tf32_convolutions": torch.backends.cudnn.allow_tf32,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "note": "deterministic kernels where torch has them; atomics-based ones may still vary run to run",
    }


def _new_record(config: dict, run_id: str, data: Dataset, device: torch.device) -> dict:
    return {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": run_id,
        **{key: config[key] for key in ("paper", "method", "dataset", "budget", "seed")},
        "config": config,
        "dataset_info": data.info,
        "status": "ok",
        "stop_reason": None,
        "error": None,
        "metrics": {},
        "curves": {},
        "timing": {},
        "provenance": {**provenance(), "determinism": determinism(device), "started": _now()},
    }


def _failure(record: dict, error: BaseException) -> None:
    """A run's own exception: recorded, and the other runs go on."""
    reason = "out_of_memory" if isinstance(error, torch.cuda.OutOfMemoryError) else "exception"
    record.update(status="failed", stop_reason=reason, error=traceback.format_exc()[-4000:])


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``; on the CPU with its convolutions' weights channels-last, so that
    oneDNN's convolutions (whose outputs follow their weights' layout) run 1.15 to 1.3 times
    faster on the PixelCNN decoders (report/performance.md). The same numbers up to rounding; a model
    without convolutions is unchanged, and on a GPU the model stays as built."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def _built(config: dict, data: Dataset, device: torch.device) -> torch.nn.Module:
    return place(models.build(config["model"], data.shape, config["hyper"], data.likelihood), device)


def _finished(record: dict, device: torch.device, reset: bool) -> dict:
    """``record`` with the device, its peak memory since ``reset`` and the time it finished."""
    record["timing"].update(device_info(device), **peak_memory(device, reset))
    record["provenance"]["finished"] = _now()
    return record


def run(
    config: dict, run_id: str, data: Dataset, device: torch.device, progress: bool = True, results: Path | None = None
) -> dict:
    """Train and evaluate one resolved ``config`` on ``data`` (already on ``device``); returns its
    record. With a ``results`` folder the run checkpoints into it while it trains (and continues
    from a checkpoint it finds there), and keeps its evaluated weights there for ``evaluate``."""
    record = _new_record(config, run_id, data, device)
    reset = reset_peak_memory(device)
    try:
        torch.manual_seed(config["seed"])
        model = _built(config, data, device)
        checkpoint = None if results is None else records.checkpoint_path(results, run_id)
        trained = train(model, data, config, device, progress, checkpoint)
        record.update({key: trained[key] for key in ("status", "stop_reason", "error", "curves", "selection")})
        record["timing"] = trained["timing"]
        record["provenance"]["resumed_from_epoch"] = trained["resumed_from_epoch"]
        if trained["status"] != "diverged":
            if results is not None:
                records.keep_weights(results, run_id, trained["evaluated"].state_dict())
            evaluate_into(record, trained["evaluated"], data, config["evaluation"], device)
            if results is not None:
                draw_figures(record, trained["evaluated"], data, results)
    except Exception as error:
        _failure(record, error)
    return _finished(record, device, reset)


def evaluate_into(record: dict, model, data: Dataset, evaluation: dict, device: torch.device) -> None:
    """Every test metric of ``model`` into ``record``: a group that fails makes the run ``partial``,
    a non-finite value ``diverged``."""
    seed = record["seed"]
    points = evaluation["test_points"] or len(data.test)
    labels = None if data.test_labels is None else data.test_labels[:points]
    torch.manual_seed(seed)
    metrics.synchronize(device)
    started = time.perf_counter()
    labelled_training = None  # for the representation metrics, where the spec asks for them
    if data.train_labels is not None and (evaluation.get("probe_labels") or evaluation.get("kmeans_clusters")):
        labelled_training = (data.evaluated_training_images(), data.train_labels)
    distinct = min(points, data.distinct_test_points)
    record["metrics"], eval_timing, failed = metrics.evaluate(
        model, data.test[:points], labels, evaluation, seed, data.discrete, distinct, labelled_training
    )
    metrics.synchronize(device)
    record["timing"].update(eval_timing, eval_wall_s=time.perf_counter() - started)
    if failed:  # the other groups' metrics are kept
        if record["status"] == "ok":
            record.update(status="partial", stop_reason="metric_error")
        record["error"] = "\n".join(
            [f"metric group(s) failed: {', '.join(failed)}", *(f"{name}: {tail}" for name, tail in failed.items())]
        )
    bad = [name for name, m in record["metrics"].items() if not math.isfinite(m["value"])]
    if bad:
        record.update(
            status="diverged", stop_reason="non_finite_metric", error=f"non-finite test metric(s): {', '.join(bad)}"
        )


GRID_SIDE = 8  # samples: 8 × 8; reconstructions: 4 rows of 8 test images, each row over its reconstructions


def picture_grids(model, data: Dataset) -> dict[str, torch.Tensor]:
    """Every picture of a trained method, [rows, columns, *data shape] in the data's space: samples
    from its prior and reconstructions of the first test images, drawn as the mean of p(x|z) (none
    for a method without ``mean_image``), and the method's own ``image_grids``."""
    grids = {}
    samples = model.mean_image(model.prior().sample((GRID_SIDE, GRID_SIDE)))
    if samples is not None:
        x = data.test[: GRID_SIDE * GRID_SIDE // 2]
        rows = len(x) // GRID_SIDE
        reconstructed = model.mean_image(model.posterior(x).sample())
        pairs = torch.stack([x.reshape(rows, GRID_SIDE, -1), reconstructed.reshape(rows, GRID_SIDE, -1)], 1)
        grids = {"samples": samples, "reconstructions": pairs.reshape(2 * rows, GRID_SIDE, -1)}
    grids.update(model.image_grids())
    return {name: grid.reshape(*grid.shape[:2], *data.shape) for name, grid in grids.items()}


def draw_figures(record: dict, model, data: Dataset, results: Path) -> None:
    """``picture_grids`` (drawn from the run's seed; centred data with its training mean added back)
    as PNGs under ``results``, listed in the record's ``figures`` (none for data that are not
    pictures); a method that fails to draw them makes the run ``partial``."""
    if not data.pictures:
        return
    torch.manual_seed(record["seed"])
    try:
        with torch.no_grad():
            grids = picture_grids(model, data)
            if data.pixel_mean is not None:
                grids = {name: grid + data.pixel_mean for name, grid in grids.items()}
            record["figures"] = records.save_image_grids(results, record["run_id"], grids)
    except Exception:
        if record["status"] == "ok":
            record.update(status="partial", stop_reason="figure_error")
        record["error"] = "\n".join(
            filter(None, [record["error"], "image grids failed: " + traceback.format_exc()[-2000:]])
        )


def reevaluate(trained: dict, data: Dataset, device: torch.device, results: Path, overrides: dict) -> dict:
    """A new record for the kept weights of the ``trained`` record, evaluated with the evaluation
    settings ``overrides`` changes (more importance samples, more gap points, a new metric): no
    training. Its config names the run it evaluates (``evaluation_of``); its curves and training
    timing are that run's."""
    config = {**trained["config"], "evaluation": {**trained["config"]["evaluation"], **overrides}}
    config["evaluation_of"] = trained["run_id"]
    config["evaluation_overrides"] = overrides
    config["identity"] = {
        **trained["config"]["identity"],
        "evaluation": specs.evaluation_identity(config["evaluation"]),
        "evaluation_of": trained["run_id"],
    }
    record = _new_record(config, specs.run_id(config), data, device)
    record.update(curves=trained["curves"], selection=trained.get("selection"), stop_reason=trained["stop_reason"])
    record["timing"] = {key: trained["timing"].get(key) for key in TRAINING_TIMING}
    reset = reset_peak_memory(device)
    try:
        model = _built(config, data, device)
        model.load_state_dict(records.load_weights(results, trained["run_id"], device))
        evaluate_into(record, model, data, config["evaluation"], device)
    except UserError:
        raise
    except Exception as error:
        _failure(record, error)
    return _finished(record, device, reset)


TRAINING_TIMING = ("train_wall_s", "valid_wall_s", "epochs", "steps", "s_per_epoch", "examples_per_s")
