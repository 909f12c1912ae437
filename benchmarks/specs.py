"""Paper specs (``benchmarks/papers/<paper>.toml``) and budgets (``benchmarks/budgets.toml``):
loading, validation, and the resolved configuration of one run.

A paper spec is declarative; the layout is documented in ``benchmarks/papers/baselines.toml``.
Every problem found is reported as a ``UserError`` naming the file, the key and what is valid.

A spec scales in four ways: a method may ``include`` another method (``"baselines.vae"``; or one of
its own spec's, an ablation) and override what differs; a method's ``grid`` expands it into named
variants (``iwae[samples=5]``); reported numbers may be given as compact ``[[reported_tables]]`` (one
per paper table); and
``[[claims]]`` state the paper's comparisons, which the tables check against the seeds (many at
once as ``[[claim_tables]]``, rows of the fields that differ).

**Run identity.** A run id hashes what was chosen: the spec's hyper-parameters and training
settings as written (after includes and grids), the dataset options the spec sets, the budget's
caps and the resolved evaluation sizes, the seed, the method's ``version`` and the suite's
``PROTOCOL_VERSION``. The record stores every resolved value besides. Adding a keyword with a
default to a method, a training key to ``TRAINING_DEFAULTS`` or a metric therefore leaves earlier
records current; changing a default's value means bumping that method's ``version`` (or, for the
harness's own defaults, ``PROTOCOL_VERSION``), and the tables then call the earlier records stale.
"""

import hashlib
import inspect
import itertools
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch

import models
from benchmarks import UserError
from benchmarks.data import DATASETS, resolve_options, shape_of
from benchmarks.metrics import GAP_STARTS, METRICS, metric_reference
from models.blocks.optim import LR_SCHEDULES, OPTIMIZERS

HERE = Path(__file__).resolve().parent
BUDGETS_FILE = HERE / "budgets.toml"  # VLAEBENCH_BUDGETS names another (the tests' own budgets)
# Bump when the harness changes what a run computes for the same choices: a training default's
# value, the training loop, the evaluation protocol. Every earlier record then reads as stale.
PROTOCOL_VERSION = 2
TRAINING_DEFAULTS = {
    "batch_size": 100,
    "optimizer": "adam",  # models.blocks.optim.OPTIMIZERS
    "learning_rate": 1e-3,
    "adam_betas": [0.9, 0.999],  # of Adam and Adamax
    "adam_eps": 1e-8,  # of Adam and Adamax
    "weight_decay": 0.0,
    "lr_schedule": "constant",  # models.blocks.optim.LR_SCHEDULES
    "lr_decay": 1.0,  # the per-epoch factor of the exponential schedule
    "clip_grad_norm": 0.0,  # > 0: clip the gradients' total norm to it before each step
    "ema_decay": 0.0,  # > 0: validate and test an exponential moving average of the weights
    "epochs": 100,
    "valid_every": 1,  # epochs between validations (the last epoch is always validated)
    "selection": "last",  # the weights evaluated: the last epoch's, or best_valid: the best validation ELBO's
    # How, not what (not part of a run's identity; a budget sets them too): checkpoint intervals.
    "checkpoint_every_epochs": 1,
    "checkpoint_every_minutes": 0.0,  # > 0: also whenever this much time passed since the last one
}
TRAINING_EXECUTION = ("checkpoint_every_epochs", "checkpoint_every_minutes")
SELECTIONS = ("last", "best_valid")
EVALUATION_SIZES = (
    "importance_samples",
    "test_points",
    "valid_points",
    "gap_points",
    "gap_max_steps",
    "gap_samples",
    "ais_points",
    "ais_chains",
    "ais_steps",
)
# How an evaluation is computed, not what: chunk sizes that bound memory (a PixelCNN decoder needs
# smaller ones). Budgets and specs may set them; they are not part of a run's identity.
EXECUTION_DEFAULTS = {"importance_rows_per_chunk": 10_000, "gap_points_per_chunk": 100}
BUDGET_KEYS = {
    "description",
    "max_epochs",
    "max_steps",
    "max_wall_s",
    *EVALUATION_SIZES,
    *EXECUTION_DEFAULTS,
    *TRAINING_EXECUTION,
}
# Ma et al.'s representation metrics (metrics.label_efficiency): the numbers of labelled training codes
# the classifiers are trained on, and the numbers of k-means clusters; absent, they are not computed
REPRESENTATION_KEYS = ("probe_labels", "kmeans_clusters")
EVALUATION_KEYS = {
    *EVALUATION_SIZES,
    *EXECUTION_DEFAULTS,
    *REPRESENTATION_KEYS,
    "gap_start",
    "compare",
    "show",
    "cost_relative_to",
}
# What a paper's [datasets.<name>] table holds besides the dataset's options: a note, and the training
# settings and evaluation sizes the paper uses on that dataset alone (over [training] and [evaluation]).
DATASET_SETTINGS = ("note", "training", "evaluation")
REPORTED_KEYS = {"method", "dataset", "metric", "value", "std", "tolerance", "source", "missing", "note"}
CLAIM_KEYS = {
    "claim",
    "source",
    "dataset",
    "metric",
    "method",
    "than",
    "than_metric",
    "direction",
    "margin",
    "ratio",
    "level",
}
DIRECTIONS = ("lower", "higher")
LAYOUT_KEYS = {"nll_as", "bold_best"}
NLL_AS = ("nll", "log-likelihood")
NAME = re.compile(r"[A-Za-z0-9_]+")  # method names: safe in file names and selectable on the command line


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
    metric: str  # a metric name, or metric[part]
    value: float | None  # None: not known yet, see ``missing``
    tolerance: float | None
    source: str
    std: float | None = None
    missing: str = ""  # where to transcribe the value from
    note: str = ""


@dataclass(frozen=True)
class MethodSpec:
    name: str  # as selected and recorded: ``iwae`` or a grid variant ``iwae[samples=5]``
    model: str
    hyper: dict  # every hyper-parameter, defaults written out (the record is self-describing)
    training: dict  # every training setting, defaults written out
    chosen_hyper: dict  # what the spec sets (after include and grid): what the run id hashes
    chosen_training: dict
    base: str = ""  # the [methods.<base>] table a grid variant comes from
    citation: str = ""
    note: str = ""
    grid_point: dict = field(default_factory=dict)  # the variant's grid values: {"T": 4}
    on: dict = field(default_factory=dict)  # per dataset, what this method sets there: {"options": ..., "hyper": ...}
    datasets: tuple[str, ...] = ()  # the paper's datasets it runs on: all of them unless its table says which

    def runs_on(self, dataset: str) -> bool:
        return dataset in self.datasets

    def options_on(self, paper_datasets: dict, dataset: str) -> dict:
        """The dataset options this method runs ``dataset`` with: the paper's, then its own."""
        return {**dataset_options(paper_datasets[dataset]), **self.on.get(dataset, {}).get("options", {})}

    def hyper_on(self, dataset: str) -> tuple[dict, dict]:
        """The hyper-parameters this method runs ``dataset`` with: every one (defaults written out),
        and those the spec chose (what the run id hashes)."""
        own = self.on.get(dataset, {}).get("hyper", {})
        return {**self.hyper, **own}, {**self.chosen_hyper, **own}


@dataclass(frozen=True)
class Claim:
    """``method``'s ``metric`` on ``dataset`` is ``direction`` (lower | higher) than ``than`` (a method
    of the spec, or a number): by at least ``margin`` in the metric's unit (a negative margin: worse
    by less than its size), or by a factor ``ratio``. Checked by a one-sided Welch t-test over the
    seeds at ``level``. ``than_metric`` compares with another metric of ``than`` (default: the same
    one): one layer of a ladder against another, ``cluster_acc[layer2]`` against
    ``cluster_acc[layer0]``."""

    text: str
    source: str
    dataset: str
    metric: str
    method: str
    than: str | float
    direction: str
    margin: float = 0.0
    ratio: float | None = None
    level: float = 0.05
    than_metric: str | None = None


@dataclass(frozen=True)
class Layout:
    """How the paper's own tables look, which the suite's tables follow. Display only: no run's
    config or id depends on it."""

    nll_as: str = "nll"  # "log-likelihood": the paper reports log p(x) = −NLL, higher is better
    bold_best: bool = False  # the paper bolds the best result of each column


@dataclass(frozen=True)
class PaperSpec:
    key: str
    path: Path
    title: str
    citation: str
    evaluation: dict
    datasets: dict[str, dict]
    methods: dict[str, MethodSpec]
    training: dict = field(default_factory=dict)  # the paper's [training] table as written
    reported: list[Reported] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    layout: Layout = Layout()

    def reported_for(self, method: str, dataset: str, metric: str) -> Reported | None:
        for entry in self.reported:
            if (entry.method, entry.dataset, entry.metric) == (method, dataset, metric):
                return entry
        return None

    def select(self, name: str) -> list[str]:
        """The methods a name selects: a method or variant by its name, or every variant of a grid by
        its base name (``iwae`` selects ``iwae[samples=5]`` and ``iwae[samples=50]``)."""
        chosen = [m for m, spec in self.methods.items() if name in (m, spec.base)]
        if not chosen:
            raise UserError(f"paper {self.key!r} has no method {name!r}; valid: {', '.join(self.methods)}")
        return chosen


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


def _number(where: str, value, minimum: float = 0.0, strict: bool = False, maximum: float = math.inf) -> float:
    """A finite number (not a bool) >= minimum (> minimum if strict) and < maximum."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < minimum
        or (strict and value == minimum)
        or value >= maximum
    ):
        bound = f"{'>' if strict else '>='} {minimum:g}" + (f" and < {maximum:g}" if maximum < math.inf else "")
        raise UserError(f"{where}: expected a finite number {bound}, got {value!r}")
    return value


def _list(where: str, value) -> list:
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list, got {value!r}")
    return value


def _text(where: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def load_budgets() -> dict[str, Budget]:
    path = Path(os.environ.get("VLAEBENCH_BUDGETS", BUDGETS_FILE))
    raw = _read_toml(path)
    budgets = {}
    for name, table in raw.items():
        where = f"{path}: [{name}]"
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


def _raw_paper(key: str) -> tuple[Path, dict]:
    if key not in paper_keys():  # a name, not a path: "../x" must not reach outside the specs folder
        raise UserError(f"unknown paper {key!r}; valid: {', '.join(paper_keys()) or '(none)'}")
    path = papers_dir() / f"{key}.toml"
    return path, _read_toml(path)


def load_paper(key: str) -> PaperSpec:
    path, raw = _raw_paper(key)
    _check_keys(
        str(path),
        raw,
        {
            "paper",
            "evaluation",
            "training",
            "datasets",
            "methods",
            "reported",
            "reported_tables",
            "claims",
            "claim_tables",
            "layout",
        },
        {"paper", "evaluation", "datasets", "methods"},
    )
    _check_keys(f"{path}: [paper]", raw["paper"], {"title", "citation", "url", "note"}, {"title", "citation"})
    evaluation = _evaluation(path, raw["evaluation"])
    paper_training = raw.get("training", {})
    training = _training(f"{path}: [training]", paper_training, TRAINING_DEFAULTS)
    datasets = _datasets(path, raw["datasets"])

    if not isinstance(raw["methods"], dict) or not raw["methods"]:
        raise UserError(f"{path}: [methods] must name at least one method")
    methods = {}
    for name in raw["methods"]:
        for variant in _methods(path, name, _method_table(path, key, name, raw["methods"][name]), training, datasets):
            methods[variant.name] = variant
    for variant in methods.values():
        variant.chosen_training.update({k: training[k] for k in paper_training if k not in variant.chosen_training})

    reference = evaluation.get("cost_relative_to")
    if reference is not None and reference not in methods:
        raise UserError(
            f"{path}: evaluation.cost_relative_to: {reference!r} is not a method; valid: {', '.join(methods)}"
        )
    reported = _reported(path, raw, methods, datasets)
    entries = [(f"{path}: claims[{i}]", c) for i, c in enumerate(_list(f"{path}: claims", raw.get("claims", [])))]
    entries += _table_rows(path, raw, "claim_tables", CLAIM_KEYS)
    claims = [_claim(where, entry, methods, datasets) for where, entry in entries]
    return PaperSpec(
        key,
        path,
        raw["paper"]["title"],
        raw["paper"]["citation"],
        evaluation,
        datasets,
        methods,
        dict(paper_training),
        reported,
        claims,
        _layout(path, raw.get("layout", {})),
    )


def _layout(path: Path, layout: dict) -> Layout:
    _check_keys(f"{path}: [layout]", layout, LAYOUT_KEYS)
    nll_as = layout.get("nll_as", "nll")
    if nll_as not in NLL_AS:
        raise UserError(f"{path}: layout.nll_as: {nll_as!r}; valid: {', '.join(NLL_AS)}")
    bold_best = layout.get("bold_best", False)
    if not isinstance(bold_best, bool):
        raise UserError(f"{path}: layout.bold_best: expected true or false, got {bold_best!r}")
    return Layout(nll_as, bold_best)


def _evaluation(path: Path, evaluation: dict) -> dict:
    _check_keys(f"{path}: [evaluation]", evaluation, EVALUATION_KEYS, {"importance_samples", "compare"})
    for key in (*EVALUATION_SIZES, *EXECUTION_DEFAULTS):
        if key in evaluation:
            _positive_int(f"{path}: evaluation.{key}", evaluation[key])
    for key, least in zip(REPRESENTATION_KEYS, (1, 2)):
        for n in _list(f"{path}: evaluation.{key}", evaluation.get(key, [])):
            if not (isinstance(n, int) and not isinstance(n, bool) and n >= least):
                raise UserError(f"{path}: evaluation.{key}: expected integers of at least {least}, got {n!r}")
    if evaluation.get("gap_start", GAP_STARTS[0]) not in GAP_STARTS:
        raise UserError(f"{path}: evaluation.gap_start: {evaluation['gap_start']!r}; valid: {', '.join(GAP_STARTS)}")
    for key in ("compare", "show"):
        for reference in _list(f"{path}: evaluation.{key}", evaluation.get(key, [])):
            _metric(f"{path}: evaluation.{key}", reference)
    return evaluation


def _metric(where: str, reference) -> str:
    """A metric name or ``metric[part]`` (a part of a structured latent, e.g. ``kl[layer1]``)."""
    name, _part = metric_reference(reference) if isinstance(reference, str) else (reference, None)
    if name not in METRICS:
        raise UserError(f"{where}: unknown metric {reference!r}; valid: {', '.join(METRICS)} (or metric[part])")
    return reference


def _datasets(path: Path, datasets) -> dict:
    if not isinstance(datasets, dict) or not datasets:
        raise UserError(f"{path}: [datasets] must name at least one dataset")
    for name, table in datasets.items():
        where = f"{path}: [datasets.{name}]"
        if name not in DATASETS:
            raise UserError(f"{path}: datasets.{name}: unknown dataset; valid: {', '.join(DATASETS)}")
        _check_keys(where, table, {*DATASET_SETTINGS, *DATASETS[name].options()})
        _training(f"{where} training", table.get("training", {}), TRAINING_DEFAULTS)
        evaluation = table.get("evaluation", {})
        _check_keys(f"{where} evaluation", evaluation, {*EVALUATION_SIZES, *EXECUTION_DEFAULTS})
        for key, value in evaluation.items():
            _positive_int(f"{where} evaluation.{key}", value)
        try:
            resolve_options(name, dataset_options(table))
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    return datasets


METHOD_KEYS = {"model", "include", "hyper", "grid", "training", "on", "datasets", "citation", "note"}
ON_KEYS = {"options", "hyper"}  # what a method may set for one dataset


def _method_table(path: Path, paper: str, name: str, table, including: tuple[str, ...] = ()) -> dict:
    """``[methods.<name>]`` with its ``include`` resolved: the included method's model, hyper, grid,
    method-level training, citation and note, overridden key by key by this table (``hyper`` and
    ``training`` merge; the others replace). The including paper's own [training] applies to it.
    The included method may be in the same paper (an ablation of one setting); ``including`` holds
    the methods ("<paper>.<method>") that led here, so that a cycle is refused."""
    where = f"{path}: [methods.{name}]"
    if not NAME.fullmatch(name):
        raise UserError(f"{where}: a method name is letters, digits and underscores (variants get [key=value])")
    _check_keys(where, table, METHOD_KEYS)
    if "include" not in table:
        if "model" not in table:
            raise UserError(f'{where}: missing key(s) model (or include = "<paper>.<method>")')
        return table
    reference = table["include"]
    other, _, method = reference.partition(".") if isinstance(reference, str) else ("", "", "")
    if not other or not method:
        raise UserError(f'{where} include: expected "<paper>.<method>", got {reference!r}')
    chain = (*including, f"{paper}.{name}")
    if reference in chain:
        raise UserError(f"{where} include: include cycle {' -> '.join((*chain, reference))}")
    other_path, other_raw = _raw_paper(other)
    other_methods = other_raw.get("methods", {})
    if method not in other_methods:
        raise UserError(f"{where} include: {other_path} has no method {method!r}; valid: {', '.join(other_methods)}")
    base = _method_table(other_path, other, method, other_methods[method], chain)
    merged = {k: v for k, v in base.items() if k != "include"}
    grid = table.get("grid", {})  # this table's grid replaces what the included method fixed
    for key in ("hyper", "training"):
        prefix = "training." if key == "training" else ""
        merged[key] = {k: v for k, v in base.get(key, {}).items() if f"{prefix}{k}" not in grid}
    for key, value in table.items():
        if key in ("hyper", "training"):
            merged[key] = {**merged[key], **value}
        elif key != "include":
            merged[key] = value
    merged["note"] = f"{table.get('note', base.get('note', ''))} (from {reference})".strip()
    return merged


def _grid_points(where: str, grid: dict) -> list[dict]:
    """Every point of a grid ``{key: [values...]}``, in the spec's order (the last key varies fastest)."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
    return [dict(zip(grid, point)) for point in itertools.product(*grid.values())]


def variant_name(base: str, point: dict) -> str:
    """``base[key=value,...]``: how a grid point is named, recorded and selected (benchopt's form)."""
    if not point:
        return base
    return f"{base}[{','.join(f'{key}={shown_value(value)}' for key, value in point.items())}]"


def shown_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _methods(path: Path, name: str, table: dict, training: dict, datasets: dict) -> list[MethodSpec]:
    """The method, or one MethodSpec per point of its grid. Grid keys are hyper-parameters, or
    training settings written ``training.<key>``."""
    where = f"{path}: [methods.{name}]"
    model = table["model"]
    if model not in models.registry():
        raise UserError(f"{where} model: unknown method {model!r}; valid: {', '.join(models.registry())}")
    defaults = models.hyper_parameters(model)
    chosen_hyper = table.get("hyper", {})
    _check_keys(f"{where} hyper", chosen_hyper, set(defaults))
    chosen_training = table.get("training", {})
    _check_keys(f"{where} training", chosen_training, set(TRAINING_DEFAULTS))
    grid = table.get("grid", {})
    allowed = set(defaults) | {f"training.{k}" for k in TRAINING_DEFAULTS}
    _check_keys(f"{where} grid", grid, allowed)
    for key in grid:
        if key in chosen_hyper or key.removeprefix("training.") in chosen_training:
            raise UserError(f"{where} grid: {key} is also set outside the grid; set it in one place")
    runs_on = _list(f"{where} datasets", table.get("datasets", list(datasets)))
    if (
        not runs_on
        or not all(isinstance(d, str) and d in datasets for d in runs_on)
        or len(set(runs_on)) < len(runs_on)
    ):
        raise UserError(
            f"{where} datasets: {runs_on!r}: some of the paper's datasets, each once; valid: {', '.join(datasets)}"
        )
    on = table.get("on", {})
    _check_keys(f"{where} on", on, set(runs_on))
    merged_options = {}  # per dataset: the paper's options, then the method's own
    own_training = set(chosen_training) | {k.removeprefix("training.") for k in grid if k.startswith("training.")}
    for dataset in runs_on:
        paper_table = datasets[dataset]
        clash = own_training & set(paper_table.get("training", {}))
        if clash:
            raise UserError(
                f"{where} training: {', '.join(sorted(clash))} is also set by [datasets.{dataset}] training; "
                "set it in one place"
            )
        mine, here = on.get(dataset, {}), f"{where} on.{dataset}"
        _check_keys(here, mine, ON_KEYS)
        _check_keys(f"{here}.options", mine.get("options", {}), set(DATASETS[dataset].options()))
        _check_keys(f"{here}.hyper", mine.get("hyper", {}), set(defaults))
        clash = set(grid) & set(mine.get("hyper", {}))
        if clash:
            raise UserError(f"{here}.hyper: {', '.join(sorted(clash))} is also the grid's; set it in one place")
        merged_options[dataset] = {**dataset_options(paper_table), **mine.get("options", {})}
        try:
            resolve_options(dataset, merged_options[dataset])
        except UserError as e:
            raise UserError(f"{here}.options: {e}") from None
    variants = []
    for point in _grid_points(f"{where} grid", grid):
        hyper = {**chosen_hyper, **{k: v for k, v in point.items() if not k.startswith("training.")}}
        method_training = {**chosen_training, **{k[9:]: v for k, v in point.items() if k.startswith("training.")}}
        resolved = {**defaults, **hyper}  # defaults written out: the record is self-describing
        absent = [k for k, v in resolved.items() if v is inspect.Parameter.empty]
        if absent:
            raise UserError(f"{where} hyper: missing {', '.join(absent)}")
        variant = variant_name(name, point)
        for dataset, options in merged_options.items():
            variant_hyper = {**resolved, **on.get(dataset, {}).get("hyper", {})}
            _check_builds(f"{where} {variant}" if point else where, model, variant_hyper, dataset, options)
        variants.append(
            MethodSpec(
                variant,
                model,
                resolved,
                _training(f"{where} training", method_training, training),
                dict(hyper),
                dict(method_training),
                name,
                table.get("citation", ""),
                table.get("note", ""),
                dict(point),
                {d: {key: dict(value) for key, value in t.items()} for d, t in on.items()},
                tuple(runs_on),
            )
        )
    return variants


def _table_rows(path: Path, raw: dict, key: str, fields: set[str]) -> list[tuple[str, dict]]:
    """The rows of every ``[[<key>]]`` table as entries: its ``columns`` name the fields of its
    ``rows``; its other keys (``source``, ``metric``, ...) apply to every row that does not set them."""
    entries = []
    for t, table in enumerate(_list(f"{path}: {key}", raw.get(key, []))):
        where = f"{path}: {key}[{t}]"
        _check_keys(where, table, fields | {"columns", "rows"}, {"columns", "rows"})
        columns = _list(f"{where} columns", table["columns"])
        if len(set(columns)) != len(columns) or not set(columns) <= fields:
            raise UserError(f"{where} columns: {columns!r}: distinct names among {', '.join(sorted(fields))}")
        shared = {k: v for k, v in table.items() if k not in ("columns", "rows")}
        for r, row in enumerate(_list(f"{where} rows", table["rows"])):
            if not isinstance(row, list) or len(row) != len(columns):
                raise UserError(
                    f"{where} rows[{r}]: expected {len(columns)} values ({', '.join(columns)}), got {row!r}"
                )
            entries.append((f"{where} rows[{r}]", {**shared, **dict(zip(columns, row))}))
    return entries


def _reported(path: Path, raw: dict, methods: dict, datasets: dict) -> list[Reported]:
    """``[[reported]]`` entries, and the rows of every ``[[reported_tables]]``."""
    entries = [(f"{path}: reported[{i}]", e) for i, e in enumerate(_list(f"{path}: reported", raw.get("reported", [])))]
    entries += _table_rows(path, raw, "reported_tables", REPORTED_KEYS)
    reported = []
    for where, entry in entries:
        _check_keys(where, entry, REPORTED_KEYS, {"method", "dataset", "metric", "source"})
        if entry["method"] not in methods:
            raise UserError(f"{where}: method {entry['method']!r} is not in [methods]; valid: {', '.join(methods)}")
        if entry["dataset"] not in datasets:
            raise UserError(f"{where}: dataset {entry['dataset']!r} is not in [datasets]; valid: {', '.join(datasets)}")
        _check_runs_on(where, methods[entry["method"]], entry["dataset"])
        _metric(where, entry["metric"])
        if ("value" in entry) == ("missing" in entry):
            raise UserError(f"{where}: give either value (with tolerance) or missing (where to transcribe it from)")
        if "value" in entry:
            _number(f"{where} value", entry["value"], minimum=-math.inf)
            _number(f"{where} tolerance", entry.get("tolerance"))
        elif "tolerance" in entry or "std" in entry:
            raise UserError(f"{where}: a tolerance or std needs a value; a missing number has only missing = ...")
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
    return reported


def _claim(where: str, entry, methods: dict, datasets: dict) -> Claim:
    _check_keys(where, entry, CLAIM_KEYS, {"claim", "source", "dataset", "metric", "method", "than", "direction"})
    for key in ("claim", "source"):
        _text(f"{where} {key}", entry[key])
    if entry["dataset"] not in datasets:
        raise UserError(f"{where}: dataset {entry['dataset']!r} is not in [datasets]; valid: {', '.join(datasets)}")
    _metric(where, entry["metric"])
    than = entry["than"]
    for key, name in (("method", entry["method"]), ("than", than)):
        if (key == "method" or isinstance(name, str)) and name not in methods:
            raise UserError(
                f"{where} {key}: {name!r} is not a method of the spec; valid: {', '.join(methods)}"
                + (" (or a number)" if key == "than" else "")
            )
    for name in (entry["method"], than) if isinstance(than, str) else (entry["method"],):
        _check_runs_on(where, methods[name], entry["dataset"])
    if not isinstance(than, str):
        _number(f"{where} than", than, minimum=-math.inf)
    than_metric = entry.get("than_metric")
    if than_metric is not None:
        if not isinstance(than, str):
            raise UserError(f"{where} than_metric: compares with a method's metric, but than is a number ({than!r})")
        _metric(where, than_metric)
    if entry["direction"] not in DIRECTIONS:
        raise UserError(f"{where} direction: {entry['direction']!r}; valid: {', '.join(DIRECTIONS)}")
    if "margin" in entry and "ratio" in entry:
        raise UserError(f"{where}: give margin (a difference) or ratio (a factor), not both")
    # a negative margin: at most that much worse (a non-inferiority claim, "at a comparable NLL")
    margin = _number(f"{where} margin", entry.get("margin", 0.0), minimum=-math.inf)
    ratio = _number(f"{where} ratio", entry["ratio"], minimum=1.0) if "ratio" in entry else None
    level = _number(f"{where} level", entry.get("level", 0.05), strict=True, maximum=0.5)
    return Claim(
        entry["claim"],
        entry["source"],
        entry["dataset"],
        entry["metric"],
        entry["method"],
        than,
        entry["direction"],
        margin,
        ratio,
        level,
        than_metric,
    )


def _check_runs_on(where: str, method: MethodSpec, dataset: str) -> None:
    if not method.runs_on(dataset):
        raise UserError(f"{where}: method {method.name!r} runs on {', '.join(method.datasets)} only, not {dataset}")


# The builds that succeeded in this process, by model class, hyper-parameters, dataset and options: a
# spec loaded again (each command loads every paper it plans; the tests load them many times) is
# checked again without building its networks again (some 6 s for every paper's methods)
_BUILT: set[tuple] = set()


def _check_builds(where: str, model: str, hyper: dict, dataset: str, options: dict) -> None:
    """Build the method for the dataset's shape in the variant ``options`` choose, on the meta device
    (no memory, no compute): a bad hyper-parameter value fails here, before anything trains."""
    model_class = models.registry()[model]
    key = (model_class, json.dumps(hyper, sort_keys=True), dataset, json.dumps(options, sort_keys=True))
    if key in _BUILT:
        return
    supported = model_class.likelihoods
    resolved = resolve_options(dataset, options)
    likelihood = resolved["likelihood"]
    if likelihood not in supported:
        raise UserError(
            f"{where}: dataset {dataset} needs a {likelihood} likelihood; method "
            f"{model} implements {', '.join(supported)}"
        )
    try:
        with torch.device("meta"):
            models.build(model, shape_of(dataset, resolved), hyper, likelihood)
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{where} hyper: the method cannot be built for {dataset}: {e}") from None
    _BUILT.add(key)


def dataset_options(table: dict) -> dict:
    """The options a paper's ``[datasets.<name>]`` table sets."""
    return {key: value for key, value in table.items() if key not in DATASET_SETTINGS}


def _training(where: str, table: dict, defaults: dict) -> dict:
    _check_keys(where, table, set(TRAINING_DEFAULTS))
    merged = {**defaults, **table}
    _positive_int(f"{where} batch_size", merged["batch_size"])
    _positive_int(f"{where} epochs", merged["epochs"])
    _positive_int(f"{where} valid_every", merged["valid_every"])
    _positive_int(f"{where} checkpoint_every_epochs", merged["checkpoint_every_epochs"])
    _number(f"{where} checkpoint_every_minutes", merged["checkpoint_every_minutes"])
    if merged["selection"] not in SELECTIONS:
        raise UserError(f"{where} selection: {merged['selection']!r}; valid: {', '.join(SELECTIONS)}")
    for key in ("learning_rate", "adam_eps", "lr_decay"):
        _number(f"{where} {key}", merged[key], strict=True)
    for key in ("weight_decay", "clip_grad_norm"):
        _number(f"{where} {key}", merged[key])
    _number(f"{where} ema_decay", merged["ema_decay"], maximum=1.0)
    betas = merged["adam_betas"]
    if not isinstance(betas, list) or len(betas) != 2:
        raise UserError(f"{where} adam_betas: expected two numbers in [0, 1), got {betas!r}")
    for beta in betas:
        _number(f"{where} adam_betas", beta, maximum=1.0)
    if merged["optimizer"] not in OPTIMIZERS:
        raise UserError(f"{where} optimizer: {merged['optimizer']!r} is not supported; valid: {', '.join(OPTIMIZERS)}")
    if merged["lr_schedule"] not in LR_SCHEDULES:
        raise UserError(f"{where} lr_schedule: {merged['lr_schedule']!r}; valid: {', '.join(LR_SCHEDULES)}")
    return merged


def resolve(paper: PaperSpec, method: str, dataset: str, budget_: Budget, seed: int) -> dict:
    """Everything that determines one run: what the record stores, and (``identity``) what its run
    id hashes."""
    if method not in paper.methods:
        raise UserError(f"paper {paper.key!r} has no method {method!r}; valid: {', '.join(paper.methods)}")
    if dataset not in paper.datasets:
        raise UserError(f"paper {paper.key!r} has no dataset {dataset!r}; valid: {', '.join(paper.datasets)}")
    spec = paper.methods[method]
    _check_runs_on(f"paper {paper.key!r}", spec, dataset)
    caps = budget_.caps
    on_dataset = paper.datasets[dataset]  # its training and evaluation settings, over the paper's
    chosen_training = {**spec.chosen_training, **on_dataset.get("training", {})}
    training = {**spec.training, **on_dataset.get("training", {})}
    training["epochs"] = min(training["epochs"], caps.get("max_epochs", training["epochs"]))
    training["max_steps"] = caps.get("max_steps")
    training["max_wall_s"] = caps.get("max_wall_s")
    for key in TRAINING_EXECUTION:  # the spec's, else the budget's, else the default
        if key not in chosen_training and key in caps:
            training[key] = caps[key]
    protocol = {**paper.evaluation, **on_dataset.get("evaluation", {})}
    evaluation = {key: caps.get(key, protocol.get(key)) for key in EVALUATION_SIZES}
    evaluation["gap_start"] = protocol.get("gap_start")  # None: the encoder's output
    for key in REPRESENTATION_KEYS:  # None: not computed (and not in the run's identity)
        evaluation[key] = protocol.get(key)
    execution = {key: caps.get(key, protocol.get(key, default)) for key, default in EXECUTION_DEFAULTS.items()}
    if evaluation["gap_points"] and not (evaluation["gap_max_steps"] and evaluation["gap_samples"]):
        raise UserError(f"paper {paper.key!r}, budget {budget_.name!r}: gap_points needs gap_max_steps and gap_samples")
    if evaluation["ais_points"] and not (evaluation["ais_chains"] and evaluation["ais_steps"]):
        raise UserError(f"paper {paper.key!r}, budget {budget_.name!r}: ais_points needs ais_chains and ais_steps")
    chosen_options = spec.options_on(paper.datasets, dataset)
    hyper, chosen_hyper = spec.hyper_on(dataset)
    identity = {
        "protocol": PROTOCOL_VERSION,
        "paper": paper.key,
        "method": method,
        "model": spec.model,
        "model_version": models.registry()[spec.model].version,
        "hyper": chosen_hyper,
        "training": {
            **{k: v for k, v in chosen_training.items() if k not in TRAINING_EXECUTION},
            "epochs": training["epochs"],
        },
        "dataset": dataset,
        "dataset_options": chosen_options,
        "budget": budget_.name,
        "caps": {k: v for k, v in caps.items() if k not in EXECUTION_DEFAULTS and k not in TRAINING_EXECUTION},
        "evaluation": evaluation_identity(evaluation),
        "seed": seed,
    }
    return {
        "paper": paper.key,
        "method": method,
        "model": spec.model,
        "hyper": hyper,
        "dataset": dataset,
        "dataset_options": resolve_options(dataset, chosen_options),
        "budget": budget_.name,
        "seed": seed,
        "training": training,
        "evaluation": {**evaluation, **execution},
        "identity": identity,
    }


def evaluation_identity(evaluation: dict) -> dict:
    """What of a run's evaluation settings its identity holds: the sizes and choices set, not how
    they are computed (the chunk sizes of ``EXECUTION_DEFAULTS``)."""
    return {key: value for key, value in evaluation.items() if value is not None and key not in EXECUTION_DEFAULTS}


def run_label(config: dict) -> str:
    """A run as the command line prints it: paper, method, dataset, budget and seed."""
    return f"{config['paper']} {config['method']} {config['dataset']} {config['budget']} seed {config['seed']}"


def run_id(config: dict) -> str:
    """The hash of what was chosen (``config["identity"]``; see the module docstring)."""
    canonical = json.dumps(config["identity"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def current_run_id(record: dict, papers: dict | None = None, budgets: dict | None = None) -> str | None:
    """The run id the current specs give the record's (paper, method, dataset, budget, seed); None
    when the specs no longer have that combination. A record is current when it is equal to its own."""
    papers = {} if papers is None else papers
    budgets = load_budgets() if budgets is None else budgets
    try:
        if record["paper"] not in papers:
            papers[record["paper"]] = load_paper(record["paper"])
        config = resolve(
            papers[record["paper"]], record["method"], record["dataset"], budgets[record["budget"]], record["seed"]
        )
    except (UserError, KeyError):
        return None
    return run_id(config)
