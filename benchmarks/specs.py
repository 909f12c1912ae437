"""Paper specs (``benchmarks/papers/<paper>.toml``) and budgets (``benchmarks/budgets.toml``):
loading, validation, and the resolved configuration of one run.

A paper spec is declarative; the layout is documented in ``benchmarks/papers/baselines.toml``.
Every problem found is reported as a ``UserError`` naming the file, the key and what is valid.
"""

import hashlib
import inspect
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch

import models
from benchmarks import UserError
from benchmarks.data import DATASETS, resolve_options
from benchmarks.metrics import METRICS

HERE = Path(__file__).resolve().parent
BUDGETS_FILE = HERE / "budgets.toml"
TRAINING_DEFAULTS = {
    "batch_size": 100,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "adam_eps": 1e-8,
    "lr_schedule": "constant",
    "epochs": 100,
}
LR_SCHEDULES = ("constant", "iwae")
OPTIMIZERS = ("adam",)
EVALUATION_SIZES = ("importance_samples", "test_points", "valid_points", "gap_points", "gap_max_steps", "gap_samples")
BUDGET_KEYS = {"description", "max_epochs", "max_steps", "max_wall_s", *EVALUATION_SIZES}
EVALUATION_KEYS = {*EVALUATION_SIZES, "compare", "show"}


def papers_dir() -> Path:
    return Path(os.environ.get("VLAEBENCH_SPECS", HERE / "papers"))


@dataclass(frozen=True)
class Budget:
    name: str
    description: str
    caps: dict  # the fields of budgets.toml other than description


@dataclass(frozen=True)
class Reported:
    method: str
    dataset: str
    metric: str
    value: float | None  # None: not known yet, see ``missing``
    tolerance: float | None
    source: str
    std: float | None = None
    missing: str = ""  # where to transcribe the value from
    note: str = ""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    model: str
    hyper: dict
    training: dict
    citation: str = ""
    note: str = ""


@dataclass(frozen=True)
class PaperSpec:
    key: str
    path: Path
    title: str
    citation: str
    evaluation: dict
    datasets: dict[str, dict]
    methods: dict[str, MethodSpec]
    reported: list[Reported] = field(default_factory=list)

    def reported_for(self, method: str, dataset: str, metric: str) -> Reported | None:
        for entry in self.reported:
            if (entry.method, entry.dataset, entry.metric) == (method, dataset, metric):
                return entry
        return None


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None


def _check_keys(where: str, table: dict, allowed: set, required: set = frozenset()):
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table, got {table!r}")
    unknown = set(table) - allowed
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(allowed))}")
    absent = required - set(table)
    if absent:
        raise UserError(f"{where}: missing key(s) {', '.join(sorted(absent))}")


def _positive_int(where: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _number(where: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number (not a bool) >= minimum (> minimum if strict)."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < minimum
        or (strict and value == minimum)
    ):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise UserError(f"{where}: expected a finite number {bound}, got {value!r}")
    return value


def _list(where: str, value) -> list:
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list, got {value!r}")
    return value


def load_budgets() -> dict[str, Budget]:
    raw = _read_toml(BUDGETS_FILE)
    budgets = {}
    for name, table in raw.items():
        where = f"{BUDGETS_FILE}: [{name}]"
        _check_keys(where, table, BUDGET_KEYS, {"description"})
        caps = {k: v for k, v in table.items() if k != "description"}
        for key, value in caps.items():
            _positive_int(f"{where} {key}", value)
        budgets[name] = Budget(name, table["description"], caps)
    return budgets


def budget(name: str) -> Budget:
    budgets = load_budgets()
    if name not in budgets:
        raise UserError(f"unknown budget {name!r}; valid: {', '.join(budgets)}")
    return budgets[name]


def paper_keys() -> list[str]:
    return sorted(p.stem for p in papers_dir().glob("*.toml"))


def load_paper(key: str) -> PaperSpec:
    path = papers_dir() / f"{key}.toml"
    if not path.is_file():
        raise UserError(f"unknown paper {key!r}; valid: {', '.join(paper_keys()) or '(none)'}")
    raw = _read_toml(path)
    _check_keys(
        str(path),
        raw,
        {"paper", "evaluation", "training", "datasets", "methods", "reported"},
        {"paper", "evaluation", "datasets", "methods"},
    )
    _check_keys(f"{path}: [paper]", raw["paper"], {"title", "citation", "url", "note"}, {"title", "citation"})

    evaluation = raw["evaluation"]
    _check_keys(f"{path}: [evaluation]", evaluation, EVALUATION_KEYS, {"importance_samples", "compare"})
    for key_ in EVALUATION_SIZES:
        if key_ in evaluation:
            _positive_int(f"{path}: evaluation.{key_}", evaluation[key_])
    for key_ in ("compare", "show"):
        for metric in _list(f"{path}: evaluation.{key_}", evaluation.get(key_, [])):
            if metric not in METRICS:
                raise UserError(f"{path}: evaluation.{key_}: unknown metric {metric!r}; valid: {', '.join(METRICS)}")

    training = _training(f"{path}: [training]", raw.get("training", {}), TRAINING_DEFAULTS)

    datasets = raw["datasets"]
    if not isinstance(datasets, dict) or not datasets:
        raise UserError(f"{path}: [datasets] must name at least one dataset")
    for name, table in datasets.items():
        if name not in DATASETS:
            raise UserError(f"{path}: datasets.{name}: unknown dataset; valid: {', '.join(DATASETS)}")
        _check_keys(f"{path}: [datasets.{name}]", table, {"note", *DATASETS[name].options()})
        try:
            resolve_options(name, dataset_options(table))
        except UserError as e:
            raise UserError(f"{path}: [datasets.{name}]: {e}") from None

    methods = {}
    if not isinstance(raw["methods"], dict) or not raw["methods"]:
        raise UserError(f"{path}: [methods] must name at least one method")
    for name, table in raw["methods"].items():
        where = f"{path}: [methods.{name}]"
        _check_keys(where, table, {"model", "hyper", "training", "citation", "note"}, {"model"})
        model = table["model"]
        if model not in models.registry():
            raise UserError(f"{where} model: unknown method {model!r}; valid: {', '.join(models.registry())}")
        defaults = models.hyper_parameters(model)
        _check_keys(f"{where} hyper", table.get("hyper", {}), set(defaults))
        hyper = {**defaults, **table.get("hyper", {})}  # defaults written out: the record is self-describing
        absent = [k for k, v in hyper.items() if v is inspect.Parameter.empty]
        if absent:
            raise UserError(f"{where} hyper: missing {', '.join(absent)}")
        _check_builds(where, model, hyper, datasets)
        methods[name] = MethodSpec(
            name,
            model,
            hyper,
            _training(f"{where} training", table.get("training", {}), training),
            table.get("citation", ""),
            table.get("note", ""),
        )

    reported = []
    for i, entry in enumerate(_list(f"{path}: reported", raw.get("reported", []))):
        where = f"{path}: reported[{i}]"
        _check_keys(
            where,
            entry,
            {"method", "dataset", "metric", "value", "std", "tolerance", "source", "missing", "note"},
            {"method", "dataset", "metric", "source"},
        )
        if entry["method"] not in methods:
            raise UserError(f"{where}: method {entry['method']!r} is not in [methods]; valid: {', '.join(methods)}")
        if entry["dataset"] not in datasets:
            raise UserError(f"{where}: dataset {entry['dataset']!r} is not in [datasets]; valid: {', '.join(datasets)}")
        if entry["metric"] not in METRICS:
            raise UserError(f"{where}: unknown metric {entry['metric']!r}; valid: {', '.join(METRICS)}")
        if ("value" in entry) == ("missing" in entry):
            raise UserError(f"{where}: give either value (with tolerance) or missing (where to transcribe it from)")
        if "value" in entry:
            _number(f"{where} value", entry["value"], minimum=-math.inf)
            _number(f"{where} tolerance", entry.get("tolerance"))
        if "std" in entry:
            _number(f"{where} std", entry["std"])
        reported.append(
            Reported(
                entry["method"],
                entry["dataset"],
                entry["metric"],
                entry.get("value"),
                entry.get("tolerance"),
                entry["source"],
                entry.get("std"),
                entry.get("missing", ""),
                entry.get("note", ""),
            )
        )
    return PaperSpec(
        key, path, raw["paper"]["title"], raw["paper"]["citation"], evaluation, datasets, methods, reported
    )


def _check_builds(where: str, model: str, hyper: dict, datasets: dict) -> None:
    """Build the method for each dataset's image shape on the meta device (no memory, no compute):
    a bad hyper-parameter value fails here, before anything trains."""
    for dataset, table in datasets.items():
        supported = models.registry()[model].likelihoods
        likelihood = resolve_options(dataset, dataset_options(table))["likelihood"]
        if likelihood not in supported:
            raise UserError(
                f"{where}: dataset {dataset} needs a {likelihood} likelihood; method "
                f"{model} implements {', '.join(supported)}"
            )
        try:
            with torch.device("meta"):
                models.build(model, DATASETS[dataset].shape, hyper, likelihood)
        except (TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"{where} hyper: the method cannot be built for {dataset}: {e}") from None


def dataset_options(table: dict) -> dict:
    """The options a paper's ``[datasets.<name>]`` table sets (all its keys but the note)."""
    return {key: value for key, value in table.items() if key != "note"}


def _training(where: str, table: dict, defaults: dict) -> dict:
    _check_keys(where, table, set(TRAINING_DEFAULTS))
    merged = {**defaults, **table}
    _positive_int(f"{where} batch_size", merged["batch_size"])
    _positive_int(f"{where} epochs", merged["epochs"])
    _number(f"{where} learning_rate", merged["learning_rate"], strict=True)
    _number(f"{where} adam_eps", merged["adam_eps"], strict=True)
    if merged["optimizer"] not in OPTIMIZERS:
        raise UserError(f"{where} optimizer: {merged['optimizer']!r} is not supported; valid: {', '.join(OPTIMIZERS)}")
    if merged["lr_schedule"] not in LR_SCHEDULES:
        raise UserError(f"{where} lr_schedule: {merged['lr_schedule']!r}; valid: {', '.join(LR_SCHEDULES)}")
    return merged


def resolve(paper: PaperSpec, method: str, dataset: str, budget_: Budget, seed: int) -> dict:
    """Everything that determines one run: what ``run_id`` hashes and what the record stores."""
    if method not in paper.methods:
        raise UserError(f"paper {paper.key!r} has no method {method!r}; valid: {', '.join(paper.methods)}")
    if dataset not in paper.datasets:
        raise UserError(f"paper {paper.key!r} has no dataset {dataset!r}; valid: {', '.join(paper.datasets)}")
    spec = paper.methods[method]
    caps = budget_.caps
    training = dict(spec.training)
    training["epochs"] = min(training["epochs"], caps.get("max_epochs", training["epochs"]))
    training["max_steps"] = caps.get("max_steps")
    training["max_wall_s"] = caps.get("max_wall_s")
    evaluation = {key: caps.get(key, paper.evaluation.get(key)) for key in EVALUATION_SIZES}
    if evaluation["gap_points"] and not (evaluation["gap_max_steps"] and evaluation["gap_samples"]):
        raise UserError(f"paper {paper.key!r}, budget {budget_.name!r}: gap_points needs gap_max_steps and gap_samples")
    return {
        "paper": paper.key,
        "method": method,
        "model": spec.model,
        "hyper": spec.hyper,
        "dataset": dataset,
        "dataset_options": resolve_options(dataset, dataset_options(paper.datasets[dataset])),
        "budget": budget_.name,
        "seed": seed,
        "training": training,
        "evaluation": evaluation,
    }


def run_id(config: dict) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
