"""The ``vlaebench`` command: ``list``, ``run``, ``evaluate``, ``data``, ``tables``, ``report``, ``sweep``
and ``compare``."""

import argparse
import os
import re
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

import models
from benchmarks import EXIT_UNAVAILABLE, ROOT, DataUnavailable, UserError, data, records, specs, train

DEFAULT_RESULTS = ROOT / "results"
DEFAULT_REPORT = ROOT / "report" / "tables"
MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's random_state take no larger seed


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UserError(f"--seeds {text!r}: expected comma-separated non-negative integers, e.g. 0,1,2")
    if max(seeds) > MAX_SEED:
        raise UserError(f"--seeds {text!r}: a seed is at most {MAX_SEED} (2^32 - 1, what every seeded library accepts)")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds {text!r}: seed {', '.join(map(str, repeated))} given twice; each seed is one run")
    return seeds


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; valid: cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: valid: cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; valid here: cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _with_options(dataset: str, table: dict) -> str:
    """A paper's dataset as ``list`` shows it: its options, and the training and evaluation settings
    the paper uses on it alone."""
    shown = [f"{k}={v}" for k, v in specs.dataset_options(table).items()]
    shown += [
        f"{kind} {k}={specs.shown_value(v)}"
        for kind in ("training", "evaluation")
        for k, v in table.get(kind, {}).items()
    ]
    return f"{dataset} ({', '.join(shown)})" if shown else dataset


def cmd_list(args) -> None:
    print("papers:")
    for key in specs.paper_keys():
        paper = specs.load_paper(key)
        print(f"  {key}: {paper.title}")
        print(f"    datasets: {', '.join(_with_options(name, table) for name, table in paper.datasets.items())}")
        for name, method in paper.methods.items():
            hyper = ", ".join(f"{k}={v}" for k, v in method.hyper.items())
            only = "" if len(method.datasets) == len(paper.datasets) else f"; on {', '.join(method.datasets)} only"
            print(f"    method {name} (model {method.model}; {hyper}{only})")
        for claim in paper.claims:
            print(f"    claim: {claim.text} [{claim.source}]")
        for entry in paper.reported:
            shown = f"{entry.value}" if entry.value is not None else f"missing (transcribe from {entry.missing})"
            print(f"    reported {entry.metric} {entry.method} on {entry.dataset}: {shown} [{entry.source}]")
    print(f"methods: {', '.join(models.registry())}")
    print(f"datasets: {', '.join(data.DATASETS)}")
    print("budgets:")
    for name, budget in specs.load_budgets().items():
        caps = ", ".join(f"{k}={v}" for k, v in budget.caps.items())
        print(f"  {name}: {budget.description} ({caps})")


def _names(value: str | None) -> list[str]:
    """A comma-separated list; a comma inside brackets belongs to a grid variant's name (``m[a=1,b=2]``)."""
    return [name.strip() for name in re.split(r",(?![^\[]*\])", value) if name.strip()] if value else []


def _plan(args) -> list[dict]:
    """Every run the arguments ask for, resolved up front: a bad name fails before anything trains.
    ``--paper``, ``--method`` and ``--dataset`` take one name or a comma-separated list; ``--paper all``
    takes every paper. With several papers, each runs the listed datasets it uses (a dataset none uses
    is an error); a listed method must be a method of each of them. A method that runs on some of its
    paper's datasets only is left out of the others, unless both it and such a dataset are named."""
    budget = specs.budget(args.budget)
    seeds = _parse_seeds(args.seeds)
    keys = specs.paper_keys() if args.paper == "all" else _names(args.paper)
    if not keys:
        raise UserError("--paper names no paper; give a paper key, a comma-separated list of them, or all")
    if args.method is not None and not _names(args.method):
        raise UserError("--method names no method; give a method, a grid variant, or a comma-separated list of them")
    papers = [specs.load_paper(key) for key in keys]
    wanted = _names(args.dataset)
    several = len(papers) > 1
    if several and wanted:
        for dataset in wanted:
            if not any(dataset in paper.datasets for paper in papers):
                among = "" if args.paper == "all" else f" of {', '.join(keys)}"
                raise UserError(f"no paper{among} uses dataset {dataset!r}")
        papers = [paper for paper in papers if any(d in paper.datasets for d in wanted)]
    plan = []
    for paper in papers:
        chosen = [method for name in _names(args.method) for method in paper.select(name)]
        methods = list(dict.fromkeys(chosen)) or list(paper.methods)
        datasets = [d for d in wanted if not several or d in paper.datasets] or list(paper.datasets)
        named_both = bool(chosen) and bool(wanted)  # else a method is left out where it does not run
        # (a dataset the paper lacks is kept, for resolve to refuse)
        pairs = [
            (m, d)
            for d in datasets
            for m in methods
            if named_both or d not in paper.datasets or paper.methods[m].runs_on(d)
        ]
        plan += [specs.resolve(paper, m, d, budget, s) for m, d in pairs for s in seeds]
    return plan


def _check_results_folder(results: Path) -> None:
    """Refuse, before anything runs, a results folder whose runs cannot be written."""
    runs = records.runs_dir(results)
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the results folder {runs}: {e.strerror}") from None
    if not os.access(runs, os.W_OK):
        raise UserError(f"the results folder {runs} is not writable")


def cmd_run(args) -> int:
    plan = _plan(args)
    device = _device(args.device)
    # Everything that can be refused is checked before the first run trains: the results folder,
    # the existing records, and the data.
    _check_results_folder(args.results)
    todo, loaded = [], {}
    for config in plan:
        run_id = specs.run_id(config)
        path = records.path_for(args.results, config, run_id)
        existing = records.read(path) if path.exists() else None
        redo = args.force or (args.rerun_failed and existing and existing["status"] != "ok")
        if existing and not redo:
            records.discard_tensors(
                records.checkpoint_path(args.results, run_id)
            )  # left if killed just after the record
            print(
                f"skipped  {specs.run_label(config)}: record exists ({existing['status']}), --force redoes it: {path}"
            )
            continue
        todo.append((config, run_id, path, existing))
        variant = _variant(config)
        if variant not in loaded:
            try:
                loaded[variant] = data.load(config["dataset"], args.data_dir, config["dataset_options"])
            except DataUnavailable as e:
                if args.dataset:  # asked for by name: an error
                    raise
                # One of "all the paper's datasets" is missing here: the others still run.
                print(f"unavailable {config['dataset']}: its runs are left out ({e})")
                loaded[variant] = None
    failures = 0
    for config, run_id, path, existing in [t for t in todo if loaded[_variant(t[0])] is not None]:
        checkpoint = records.checkpoint_path(args.results, run_id)
        if args.force:
            records.discard_tensors(checkpoint)
        elif checkpoint.exists():
            print(f"resuming {specs.run_label(config)} from its checkpoint {checkpoint}")
        # Only this run's data is on the device while it runs (it is copied there, and freed after).
        data_here = loaded[_variant(config)].to(device)
        record = train.run(config, run_id, data_here, device, progress=not args.quiet, results=args.results)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        failures += record["status"] != "ok"
        label = f"{record['status']:8s} {specs.run_label(config)}: {_summary(record)}"
        if not _write_unless_it_loses_an_ok_record(record, existing, path):
            print(f"{label}; kept the earlier ok record {path}")
            continue
        records.discard_tensors(checkpoint)  # the record holds the run now; its weights stay kept
        print(f"{label} -> {path}")
    return 1 if failures else 0


EVALUATION_OVERRIDES = ("importance_samples", "test_points", "gap_points", "gap_max_steps", "gap_samples")


def cmd_evaluate(args) -> int:
    """Re-evaluate kept runs under other evaluation settings, without training: a new record each."""
    overrides = {key: getattr(args, key) for key in EVALUATION_OVERRIDES if getattr(args, key) is not None}
    if not overrides:
        raise UserError(f"say what to change: --{' / --'.join(k.replace('_', '-') for k in EVALUATION_OVERRIDES)}")
    for key, value in overrides.items():
        if value <= 0:
            raise UserError(f"--{key.replace('_', '-')} {value}: expected a positive integer")
    device = _device(args.device)
    chosen = {(config["paper"], config["method"], config["dataset"], config["seed"]) for config in _plan(args)}
    trained = [
        r
        for r in records.load_all(args.results)
        if (r["paper"], r["method"], r["dataset"], r["seed"]) in chosen
        and r["budget"] == args.budget
        and r["status"] == "ok"
        and "evaluation_of" not in r["config"]
    ]
    if not trained:
        raise UserError(f"no ok run in {records.runs_dir(args.results)} matches; `vlaebench run` it first")
    for record in trained:
        records.load_weights(args.results, record["run_id"], "cpu")  # refuse before anything is evaluated
    failures, loaded = 0, {}
    for record in trained:
        variant = _variant(record["config"])
        if variant not in loaded:
            loaded[variant] = data.load(record["dataset"], args.data_dir, record["config"]["dataset_options"])
        new = train.reevaluate(record, loaded[variant].to(device), device, args.results, overrides)
        path = records.path_for(args.results, new["config"], new["run_id"])
        existing = records.read(path) if path.exists() else None  # these settings' earlier evaluation
        failures += new["status"] != "ok"
        label = (
            f"{new['status']:8s} {specs.run_label(new['config'])} (evaluation of {record['run_id']}): {_summary(new)}"
        )
        kept = not _write_unless_it_loses_an_ok_record(new, existing, path)
        print(f"{label}; kept the earlier ok record {path}" if kept else f"{label} -> {path}")
    return 1 if failures else 0


def _write_unless_it_loses_an_ok_record(record: dict, existing: dict | None, path: Path) -> bool:
    """Write ``record`` at ``path`` (a record it replaces goes into its ``earlier_attempts``), unless
    it would trade an ok record for one that is not: then nothing is written (False)."""
    if existing and existing["status"] == "ok" and record["status"] != "ok":
        return False
    _write(records.replacing(record, existing) if existing else record, path)
    return True


def _write(record: dict, path: Path) -> None:
    try:
        records.write(record, path)
    except OSError as e:  # a full disk, a read-only folder: the record is not there, nothing else changed
        raise UserError(
            f"cannot write the record {path}: {e.strerror or e}; earlier records are untouched, and "
            f"rerunning continues from the run's checkpoint"
        ) from None


def _variant(config: dict) -> tuple:
    """The dataset and the options that make its variant: papers may use different variants of one dataset."""
    return config["dataset"], tuple(sorted(config["dataset_options"].items()))


def _summary(record: dict) -> str:
    parts = [f"{name} {m['value']:.2f}" for name, m in record["metrics"].items() if m["value"] is not None]
    timing = record["timing"]
    parts.append(f"{timing.get('epochs', 0)} epochs, {timing.get('train_wall_s', 0):.1f} s training")
    if record["error"]:
        parts.append(record["error"].strip().splitlines()[-1])
    return ", ".join(parts)


def cmd_data(args) -> int:
    if args.data_command == "status":
        rows = data.status(args.data_dir)
        print(tabulate(rows, headers="keys", tablefmt="simple"))
        return 0
    if args.name not in data.DATASETS:
        raise UserError(f"unknown dataset {args.name!r}; valid: {', '.join(data.DATASETS)}")
    dataset = data.load(args.name, args.data_dir)  # downloads into the cache when it can
    print(f"{args.name}: ready, from {dataset.info['origin']}; verified: {dataset.info['verified']}")
    return 0


def cmd_report(args) -> None:
    from report import document

    started = time.perf_counter()
    written = document.write_report(args.results, args.out)
    seconds = time.perf_counter() - started
    print(
        f"wrote {len(written)} files in {seconds:.1f} s; start at {args.out / 'README.md'} or {args.out / 'index.html'}"
    )


def _parse_gpus(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        gpus = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise UserError(
            f"--gpus {text!r}: expected comma-separated GPU indices, e.g. 0,1 (0,0: two workers on GPU 0)"
        ) from None
    if any(g < 0 for g in gpus):
        raise UserError(f"--gpus {text!r}: a GPU index is 0 or more")
    return gpus


def cmd_sweep(args) -> int:
    from benchmarks import sweep

    gpus = _parse_gpus(args.gpus)
    sweep.check(args.launcher, args.max_parallel, gpus)
    limit = sweep.hard_limit_s(specs.budget(args.budget), args.hard_limit_s)
    plan = _plan(args)
    jobs, skipped = sweep.pending(plan, args.results)
    if args.dry_run:  # what a machine would have to run, without touching the results folder
        print(f"sweep: {len(plan)} runs planned, {skipped} with an ok record, {len(jobs)} to run (dry run)")
        for job in jobs:
            path = records.path_for(args.results, job.config, job.run_id)
            why = f"redo: {records.read(path)['status']}" if path.exists() else "new"
            print(f"would run {specs.run_label(job.config)} ({why})")
        return 0
    if args.launcher == "local" and gpus:
        sweep.check_gpus_here(gpus)  # a dry run plans anywhere; a run needs the GPUs it names
    _check_results_folder(args.results)  # before any run's process starts
    print(f"sweep: {len(plan)} runs planned, {skipped} with an ok record, {len(jobs)} to run ({args.launcher})")
    if args.launcher == "local":
        outcomes = sweep.run_local(jobs, args.results, args.max_parallel, gpus, limit, args.data_dir, not args.quiet)
    else:
        outcomes = sweep.run_slurm(jobs, args.results, args.max_parallel, limit, args.data_dir, args.partition)
    print(sweep.summary(outcomes, skipped))
    return 0 if all(status == "ok" for status in outcomes.values()) else 1


def cmd_compare(args) -> int:
    from report import compare

    findings = compare.compare(args.baseline, args.results, args.quality_threshold, args.speed_threshold)
    text = compare.summary(findings, args.baseline, args.results)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text, end="")
    return 1 if any(f.regression for f in findings) else 0


def cmd_tables(args) -> None:
    from report import generate

    written = generate.write_tables(args.results, args.out)
    for path in written:
        print(path)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other user error
        self.exit(2, f"vlaebench: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="vlaebench", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="papers, methods, datasets, budgets and reported numbers")
    run = sub.add_parser("run", help="train and evaluate; one record per run in RESULTS/runs/")
    run.add_argument("--paper", required=True, help="a paper key, a comma-separated list of them, or all")
    run.add_argument(
        "--method", help="a method of the paper, a grid variant (vlae[T=4]), or a comma-separated list (default: all)"
    )
    run.add_argument("--dataset", help="a dataset of the paper, or a comma-separated list (default: all)")
    run.add_argument("--budget", required=True)
    run.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    run.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    run.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    run.add_argument("--data-dir", help="folder with the datasets in torchvision's layout (or set VLAEBENCH_DATA)")
    run.add_argument("--force", action="store_true", help="redo runs whose record exists")
    run.add_argument(
        "--rerun-failed",
        action="store_true",
        help="redo runs whose record is not ok (from a checkpoint where one is left); keep the ok ones",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate = sub.add_parser("evaluate", help="re-evaluate kept runs with other evaluation settings (no training)")
    for name, kwargs in (
        ("--paper", {"required": True, "help": "as for run"}),
        ("--method", {"help": "as for run"}),
        ("--dataset", {"help": "as for run"}),
        ("--budget", {"required": True, "help": "the budget the runs were trained at"}),
        ("--seeds", {"default": "0"}),
        ("--device", {"default": "cpu"}),
        ("--results", {"type": Path, "default": DEFAULT_RESULTS}),
        ("--data-dir", {}),
    ):
        evaluate.add_argument(name, **kwargs)
    for key in EVALUATION_OVERRIDES:
        evaluate.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"the new {key}")
    data_ = sub.add_parser("data", help="where each dataset comes from, and getting it")
    data_sub = data_.add_subparsers(dest="data_command", required=True)
    status = data_sub.add_parser("status", help="per dataset: available, from where, verified (offline)")
    prepare = data_sub.add_parser("prepare", help="fetch a dataset into the cache, or say what to place where")
    prepare.add_argument("name")
    for p in (status, prepare):
        p.add_argument("--data-dir", help="folder with the datasets in torchvision's layout (or set VLAEBENCH_DATA)")
    tables = sub.add_parser("tables", help="regenerate Markdown and LaTeX tables from the records (never trains)")
    tables.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    tables.add_argument("--out", type=Path, default=DEFAULT_REPORT)
    report = sub.add_parser(
        "report", help="the whole report (README.md, index.html, figures, tables) from the records (never trains)"
    )
    report.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    report.add_argument("--out", type=Path, default=ROOT / "report")
    sweep_ = sub.add_parser("sweep", help="every run of the matrix, each in its own process, locally or on Slurm")
    sweep_.add_argument("--budget", required=True)
    sweep_.add_argument("--paper", default="all", help="as for run; all is the default")
    sweep_.add_argument("--method", help="as for run")
    sweep_.add_argument("--dataset", help="as for run")
    sweep_.add_argument("--seeds", default="0,1,2")
    sweep_.add_argument("--launcher", default="local", help="local or slurm")
    sweep_.add_argument("--max-parallel", type=int, default=1, help="runs at once (slurm: tasks of the array at once)")
    sweep_.add_argument(
        "--gpus",
        help="local: the GPU indices, one worker each, e.g. 0,1; 0,0,0: three workers share GPU 0 (default: CPU)",
    )
    sweep_.add_argument(
        "--hard-limit-s", type=float, help="kill a run's process after this long (default: 3 × max_wall_s)"
    )
    sweep_.add_argument("--partition", help="slurm: the partition")
    sweep_.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    sweep_.add_argument("--data-dir")
    sweep_.add_argument("--quiet", action="store_true", help="a line per finished run instead of a progress bar")
    sweep_.add_argument(
        "--dry-run", action="store_true", help="list the runs it would start (new, or redoing a failed one), start none"
    )
    comparison = sub.add_parser(
        "compare", help="what regressed against a baseline's records (quality, claims, speed); exit 1 if anything did"
    )
    comparison.add_argument("--baseline", type=Path, required=True, help="the results folder to compare against")
    comparison.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    comparison.add_argument(
        "--quality-threshold", type=float, default=0.02, help="relative, where no tolerance is given"
    )
    comparison.add_argument("--speed-threshold", type=float, default=0.1, help="relative slow-down that regresses")
    comparison.add_argument("--out", type=Path, help="also write the Markdown summary here")
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "list":
            cmd_list(args)
        elif args.command == "run":
            return cmd_run(args)
        elif args.command == "evaluate":
            return cmd_evaluate(args)
        elif args.command == "data":
            return cmd_data(args)
        elif args.command == "report":
            cmd_report(args)
        elif args.command == "compare":
            return cmd_compare(args)
        elif args.command == "sweep":
            return cmd_sweep(args)
        else:
            cmd_tables(args)
    except UserError as e:
        print(f"vlaebench: error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE if isinstance(e, DataUnavailable) else 2
    except BrokenPipeError:  # the reader went away (vlaebench list | head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # e.g. an unwritable --out
        print(f"vlaebench: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
