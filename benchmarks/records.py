"""Run records: one JSON file per run under ``<results>/runs/``, written atomically and never edited.

A record is self-describing: identity (paper, method, dataset, budget, seed, run_id), the resolved
config, the outcome (status, stop_reason, error), metrics with their estimator settings, curves,
timing and provenance; a rerun's record also the records it replaced (``earlier_attempts``).
``load_all`` refuses a corrupt record with an error that names it, and never modifies or drops a
file.
"""

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks import UserError

SCHEMA_VERSION = 1
STATUSES = ("ok", "partial", "diverged", "failed", "timeout")  # partial: some metric groups failed
IDENTITY = ("run_id", "paper", "method", "dataset", "budget")
REQUIRED = (
    "schema_version",
    "run_id",
    "paper",
    "method",
    "dataset",
    "budget",
    "seed",
    "config",
    "status",
    "stop_reason",
    "metrics",
    "curves",
    "timing",
    "provenance",
    "error",
)


RUN_ID = re.compile(r"[0-9a-f]{16}")  # what specs.run_id gives: safe in any path


def runs_dir(results: Path) -> Path:
    return Path(results) / "runs"


def checkpoint_path(results: Path, run_id: str) -> Path:
    """Where a run's training state is kept while it trains (gitignored; removed once its record is written)."""
    return Path(results) / "checkpoints" / f"{_safe(run_id)}.pt"


def weights_path(results: Path, run_id: str) -> Path:
    """Where a run's evaluated weights are kept, for ``vlaebench evaluate`` (gitignored)."""
    return Path(results) / "weights" / f"{_safe(run_id)}.pt"


def _safe(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise UserError(f"{run_id!r} is not a run id (16 hexadecimal digits)")
    return run_id


def _partial(path: Path, pid: int | str) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def save_tensors(value, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then a rename over ``path``: a killed
    write leaves the earlier file (and ``torch.load(weights_only=True)`` reads it back)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(path, os.getpid())
    try:
        torch.save(value, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _remove_partials(path: Path) -> None:
    """The partial writes of ``path`` that killed processes left beside it."""
    for partial in path.parent.glob(_partial(path, "*").name):
        partial.unlink(missing_ok=True)


def discard_tensors(path: Path) -> None:
    path.unlink(missing_ok=True)
    _remove_partials(path)


def keep_weights(results: Path, run_id: str, state_dict: dict) -> None:
    """The evaluated weights, for ``vlaebench evaluate``."""
    path = weights_path(results, run_id)
    save_tensors(state_dict, path)
    _remove_partials(path)  # what an earlier, killed attempt left half written


def load_weights(results: Path, run_id: str, device) -> dict:
    import torch

    path = weights_path(results, run_id)
    if not path.is_file():
        raise UserError(f"run {run_id} has no kept weights ({path}); rerun it with `vlaebench run --force`")
    try:
        return torch.load(path, weights_only=True, map_location=device)
    except Exception as e:  # a torn or foreign file
        raise UserError(f"{path}: not readable weights ({type(e).__name__}: {e})") from None


def figures_dir(results: Path, run_id: str) -> Path:
    """Where a run's pictures are (committed with its record)."""
    return Path(results) / "figures" / _safe(run_id)


def _image_shape(shape: list[int]) -> tuple[int, ...] | None:
    """(C, H, W) of a data shape: (H, W) is grey, a flat vector of a square size a square; else None."""
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (1, side, side) if side * side == shape[0] else None
    return (1, *shape) if len(shape) == 2 else tuple(shape)


def save_image_grids(results: Path, run_id: str, grids: dict) -> dict[str, str]:
    """Each grid [rows, columns, *image shape] as ``<name>.png`` (a row of the grid a row of
    pictures, torchvision's layout), written atomically; grey pictures as a one-channel PNG (half the
    size of three equal channels). Their paths relative to ``results``, by name. A grid whose images
    have no picture shape (``_image_shape``) is left out."""
    import torch
    import torchvision.utils
    from PIL import Image

    written = {}
    for name, grid in grids.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"image grid name {name!r}: letters, digits and underscores only")
        rows, columns, *shape = grid.shape
        image = _image_shape(shape)
        if image is None:
            continue
        path = figures_dir(results, run_id) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = _partial(path, os.getpid())
        try:
            pictures = grid.reshape(rows * columns, *image).clamp(0, 1).cpu()
            sheet = torchvision.utils.make_grid(pictures, nrow=columns)  # [3, H, W], grey repeated
            pixels = sheet.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)  # as torchvision.utils.save_image
            grey = image[0] == 1
            Image.fromarray((pixels[0] if grey else pixels.permute(1, 2, 0)).numpy()).save(partial, format="png")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        written[name] = path.relative_to(results).as_posix()
    return written


def path_for(results: Path, config: dict, run_id: str) -> Path:
    """``<paper>__<method>__<dataset>__<budget>__seed<N>__<run id>.json``; a grid variant's name is
    written with its brackets and signs as dashes (``iwae[samples=5]`` -> ``iwae-samples-5``)."""
    method = re.sub(r"[^A-Za-z0-9_.]+", "-", config["method"]).strip("-")
    identity = (config["paper"], method, config["dataset"], config["budget"], f"seed{config['seed']}", run_id)
    name = "__".join(identity) + ".json"
    return runs_dir(results) / name


def replacing(record: dict, earlier: dict) -> dict:
    """``record`` as the new attempt at the run ``earlier`` records (a failed run redone, or any run
    ``--force`` redoes): it carries the earlier record whole, and the attempts that one carried, in
    ``earlier_attempts`` (oldest first), so that a rerun loses nothing of what it replaces."""
    previous = {key: value for key, value in earlier.items() if key != "earlier_attempts"}
    return {**record, "earlier_attempts": [*earlier.get("earlier_attempts", []), previous]}


def write(record: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``: a reader never
    sees a half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not *.json: a temporary file left by a killed process is never read as a record.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".json.tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would create it, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_strict_json(record), f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _strict_json(value):
    """NaN and inf are not JSON: they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def read(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"corrupt run record {path}: {e}; move it out of the results folder or restore it") from None
    if not isinstance(record, dict):
        raise UserError(f"corrupt run record {path}: not a JSON object")
    absent = [key for key in REQUIRED if key not in record]
    if absent:
        raise UserError(f"corrupt run record {path}: missing {', '.join(absent)}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise UserError(
            f"run record {path} has schema_version {record['schema_version']!r}; this vlaebench reads {SCHEMA_VERSION}"
        )
    if record["status"] not in STATUSES:
        raise UserError(f"corrupt run record {path}: status {record['status']!r}; valid: {', '.join(STATUSES)}")
    for key in ("config", "metrics", "curves", "timing", "provenance"):
        if not isinstance(record[key], dict):
            raise UserError(f"corrupt run record {path}: {key} is not a JSON object")
    if not isinstance(record["seed"], int) or not all(isinstance(record[k], str) for k in IDENTITY):
        raise UserError(f"corrupt run record {path}: seed must be an integer and {', '.join(IDENTITY)} strings")
    if not RUN_ID.fullmatch(record["run_id"]):
        raise UserError(f"corrupt run record {path}: run_id {record['run_id']!r} is not 16 hexadecimal digits")
    for name, metric in record["metrics"].items():
        value = metric.get("value") if isinstance(metric, dict) else "absent"
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise UserError(f"corrupt run record {path}: metric {name} has no numeric value")
    return record


def load_all(results: Path) -> list[dict]:
    return [read(p) for p in sorted(runs_dir(results).glob("*.json"))]


def frame(all_records: list[dict]) -> pd.DataFrame:
    """The records as one table, a row per run: identity, status, device, each metric's value (a
    metric's parts as ``metric[part]`` columns, its other numbers and its estimator's as
    ``metric.<field>``) and every numeric field of the timing block."""
    rows = []
    for record in all_records:
        row = {key: record[key] for key in (*IDENTITY, "seed", "status")}
        row["device_name"] = record["timing"].get("device_name")
        provenance = record["provenance"]  # where the run came from, for the tables' footnotes
        row["git_sha"] = provenance.get("git_sha")
        row["git_dirty"] = provenance.get("git_dirty")
        row["finished"] = provenance.get("finished")
        # what a rerun replaced (oldest first): the tables' footnotes say so beside the run
        row["earlier_attempts"] = ", ".join(str(a.get("status", "?")) for a in record.get("earlier_attempts", []))
        # a re-evaluation (``vlaebench evaluate``): the run it evaluates, and what it changed
        row["evaluation_of"] = record["config"].get("evaluation_of")
        overrides = record["config"].get("evaluation_overrides") or {}
        row["evaluation"] = ", ".join(f"{key}={value}" for key, value in sorted(overrides.items()))
        for key, value in record["timing"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = value
        for name, metric in record["metrics"].items():
            row[name] = metric.get("value")
            for part, value in (metric.get("parts") or {}).items():
                row[f"{name}[{part}]"] = value
            # the entry's other numbers and its estimator's (sem, mc_sem, samples, stopped_fraction, ...)
            for key, value in {**(metric.get("estimator") or {}), **metric}.items():
                if key != "value" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    row[f"{name}.{key}"] = value
        rows.append(row)
    empty = [*IDENTITY, "seed", "status", "device_name", "git_sha", "git_dirty", "finished"]
    return pd.DataFrame(rows, columns=empty if not rows else None)
