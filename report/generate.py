"""Markdown and LaTeX (booktabs) tables of reproduced numbers beside the reported ones.

Reads the run records and the paper specs only: it never trains and never touches the network.
One table per (paper, dataset, budget) with runs, plus one per (paper, dataset) that has reported
numbers but no runs yet. A row per method of the spec:

- reported: the paper's number (or "missing", with where to transcribe it from in the notes);
- reproduced: mean ± std over the seeds whose run ended ``ok`` and whose config is the one the
  current spec resolves to (records of an older spec are "stale" and left out, as are runs that
  diverged, failed or timed out: the runs column counts each kind);
- Δ = reproduced − reported, and the verdict: within tolerance / outside / not reported / no runs.
"""

import statistics
from collections import Counter, defaultdict
from pathlib import Path

from tabulate import tabulate

from benchmarks import UserError, records, specs
from benchmarks.metrics import METRICS


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return _fmt(values[0])
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _group_records(all_records: list[dict]) -> tuple[dict, list[str]]:
    """Records by (paper, dataset, budget, method), each marked current or stale against the specs."""
    grouped = defaultdict(list)
    orphans = []
    papers, budgets = {}, specs.load_budgets()
    for record in all_records:
        key = (record["paper"], record["dataset"], record["budget"], record["method"])
        try:
            paper = papers.setdefault(record["paper"], specs.load_paper(record["paper"]))
            budget = budgets[record["budget"]]
            current = specs.resolve(paper, record["method"], record["dataset"], budget, record["seed"])
        except (UserError, KeyError):
            orphans.append(f"{record['run_id']} ({' / '.join(map(str, key))})")
            continue
        grouped[key].append((record, specs.run_id(current) == record["run_id"]))
    return grouped, orphans


def _values(runs: list[dict], metric: str) -> list[float]:
    """The metric's value in each run that has it (timing metrics are read from the timing block)."""
    if METRICS[metric].timing:
        values = [r["timing"].get(metric) for r in runs]
    else:
        values = [r["metrics"].get(metric, {}).get("value") for r in runs]
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _row(paper, dataset, method, runs, compare, show) -> tuple[list[str], list[str]]:
    ok = [r for r, current in runs if current and r["status"] == "ok"]
    counts = Counter("stale" if not current else r["status"] for r, current in runs)
    cells, notes = [method], []
    for metric in compare:
        reproduced = _values(ok, metric)
        reported = paper.reported_for(method, dataset, metric)
        mean = statistics.mean(reproduced) if reproduced else None
        if reported is None or reported.value is None:
            shown, delta, verdict = ("–" if reported is None else "missing"), None, "not reported"
            if reported is not None:
                notes.append(f"{method} {METRICS[metric].label}: missing; transcribe from {reported.missing}")
        else:
            shown = _fmt(reported.value) + (f" ± {reported.std:.2f}" if reported.std is not None else "")
            delta = None if mean is None else mean - reported.value
            verdict = (
                "no runs" if mean is None else "within tolerance" if abs(delta) <= reported.tolerance else "outside"
            )
            notes.append(f"{method} {METRICS[metric].label}: {reported.source} (tolerance ±{reported.tolerance:g})")
        cells += [shown, _mean_std(reproduced), "–" if delta is None else f"{delta:+.2f}", verdict]
    for metric in show:
        cells.append(_mean_std(_values(ok, metric)))
    per_epoch = [r["timing"]["s_per_epoch"] for r in ok if isinstance(r["timing"].get("s_per_epoch"), (int, float))]
    cells.append(_fmt(statistics.mean(per_epoch)) if per_epoch else "–")
    cells.append(", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "0")
    return cells, notes


def _caption(paper, dataset, budget_name, runs) -> str:
    caption = f"{paper.title} ({paper.key}) on {dataset}"
    if budget_name is None:
        return caption + ": no runs yet."
    budget = specs.load_budgets()[budget_name]
    caps = ", ".join(f"{k}={v}" for k, v in budget.caps.items())
    devices = sorted({r["timing"].get("device_name", "?") for r, current in runs if current and r["status"] == "ok"})
    caption += f", budget {budget_name} ({budget.description}: {caps})."
    caption += " Reproduced: mean ± std over seeds (runs with status ok and the current config)."
    if devices:
        caption += f" Devices: {'; '.join(devices)}."
    return caption


LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "‖": r"$\|$",
}


def _latex_escape(text: str) -> str:
    return "".join(LATEX.get(char, char) for char in text)


def _booktabs(header: list[str], rows: list[list[str]]) -> str:
    line = lambda cells: " & ".join(_latex_escape(c) for c in cells) + " \\\\\n"
    return (
        "\\begin{tabular}{l"
        + "r" * (len(header) - 1)
        + "}\n\\toprule\n"
        + line(header)
        + "\\midrule\n"
        + "".join(line(row) for row in rows)
        + "\\bottomrule\n\\end{tabular}\n"
    )


def render(paper, dataset, budget_name, grouped) -> tuple[str, str]:
    compare = paper.evaluation.get("compare", [])
    show = paper.evaluation.get("show", [])
    header = ["Method"]
    for metric in compare:
        label = METRICS[metric].label
        header += [f"{label} reported", f"{label} reproduced", f"Δ {label}", "Verdict"]
    header += [f"{METRICS[m].label} reproduced" for m in show] + ["s/epoch", "Runs"]
    rows, notes, all_runs = [], [], []
    for method in paper.methods:
        runs = grouped.get((paper.key, dataset, budget_name, method), [])
        all_runs += runs
        cells, row_notes = _row(paper, dataset, method, runs, compare, show)
        rows.append(cells)
        notes += row_notes
    caption = _caption(paper, dataset, budget_name, all_runs)
    directions = "; ".join(
        f"{METRICS[m].label}: {METRICS[m].description}, {'lower' if METRICS[m].lower_is_better else 'higher'} is better"
        for m in compare + show
    )
    notes = [directions] + notes
    if "note" in paper.datasets[dataset]:
        notes.append(f"Dataset: {paper.datasets[dataset]['note']}")
    markdown = (
        f"### {paper.key} / {dataset} / {budget_name or 'no runs'}\n\n{caption}\n\n"
        + tabulate(rows, header, tablefmt="github", disable_numparse=True)
        + "\n\n"
        + "".join(f"- {n}\n" for n in notes)
    )
    latex = (
        "\\begin{table}[t]\n\\centering\n\\small\n"
        f"\\caption{{{_latex_escape(caption)}}}\n"
        + _booktabs(header, rows)
        + "\\par\\footnotesize\n"
        + "\\\\\n".join(_latex_escape(n) for n in notes)
        + "\n\\end{table}\n"
    )
    return markdown, latex


def write_tables(results: Path, out: Path) -> list[Path]:
    """Regenerate every table from the records under ``results``; returns the files written.
    Tables of an earlier generation that no longer apply are removed."""
    all_records = records.load_all(results)
    if not all_records:
        raise UserError(
            f"no run records in {records.runs_dir(results)}; run `vlaebench run` first or pass --results DIR"
        )
    grouped, orphans = _group_records(all_records)
    out.mkdir(parents=True, exist_ok=True)
    written, sections = [], []
    for key in specs.paper_keys():
        paper = specs.load_paper(key)
        for dataset in paper.datasets:
            budgets = sorted({b for (p, d, b, _m) in grouped if (p, d) == (key, dataset)})
            if not budgets and any(r.dataset == dataset for r in paper.reported):
                budgets = [None]
            for budget_name in budgets:
                markdown, latex = render(paper, dataset, budget_name, grouped)
                stem = f"{key}__{dataset}__{budget_name or 'no-runs'}"
                for suffix, text in ((".md", markdown), (".tex", latex)):
                    written.append(out / f"{stem}{suffix}")
                    written[-1].write_text(text, encoding="utf-8")
                sections.append(markdown)
    for old in set(out.glob("*__*__*.md")) | set(out.glob("*__*__*.tex")):
        if old not in written:
            old.unlink()
    index = "# Reproduced numbers\n\nGenerated by `vlaebench tables` from the run records; do not edit.\n\n"
    index += "\n".join(sections)
    if orphans:
        index += "\n## Records not in any current spec\n\n" + "".join(f"- {o}\n" for o in sorted(orphans))
    (out / "README.md").write_text(index, encoding="utf-8")
    return written + [out / "README.md"]
