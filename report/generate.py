"""Markdown and LaTeX (booktabs) tables of reproduced numbers beside the reported ones, and the
verdicts of the papers' claims.

Reads the run records (as one DataFrame, ``records.frame``) and the paper specs only: it never
trains and never touches the network. One table per (paper, dataset, budget) with runs, plus one per
(paper, dataset) that has reported numbers but no runs yet. A row per method of the spec:

- reported: the paper's number (or "missing", with where to transcribe it from in the notes);
- reproduced: mean ± std over the seeds whose run ended ``ok`` and whose config is the one the
  current spec resolves to (records of an older spec are "stale" and left out, as are runs that
  diverged, failed or timed out: the runs column counts each kind);
- Δ = reproduced − reported, and the verdict: within tolerance / outside / not reported / no runs.

Per paper with claims, a claims table: each claim's verdict at each budget with runs (``report.claims``).
"""

import statistics
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmarks import UserError, records, specs
from benchmarks.metrics import METRICS, metric_reference
from report import claims as claim_checks


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return _fmt(values[0])
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def annotated_frame(results: Path) -> pd.DataFrame:
    """Every record under ``results`` as a row (``records.frame``), with ``current`` (made under the
    config the current spec resolves to) and ``orphan`` (the specs no longer have its paper, method,
    dataset or budget)."""
    all_records = records.load_all(results)
    if not all_records:
        raise UserError(
            f"no run records in {records.runs_dir(results)}; run `vlaebench run` first or pass --results DIR"
        )
    frame = records.frame(all_records)
    papers, budgets = {}, specs.load_budgets()
    current_ids = [specs.current_run_id(record, papers, budgets) for record in all_records]
    frame["orphan"] = [run_id is None for run_id in current_ids]
    frame["current"] = [run_id == record["run_id"] for run_id, record in zip(current_ids, all_records)]
    return frame


def _values(runs: pd.DataFrame, reference: str) -> list[float]:
    """The metric's (or metric part's) value in each run that has it."""
    if reference not in runs:
        return []
    return [float(v) for v in runs[reference].dropna()]


def _label(reference: str) -> str:
    name, part = metric_reference(reference)
    return METRICS[name].label + (f" ({part})" if part else "")


def _ok(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["current"] & (runs["status"] == "ok")]


def _row(paper, dataset, method, runs: pd.DataFrame, compare, show) -> tuple[list[str], list[str]]:
    ok = _ok(runs)
    counts = runs["status"].where(runs["current"], "stale").value_counts()
    cells, notes = [method], []
    for reference in compare:
        reproduced = _values(ok, reference)
        reported = paper.reported_for(method, dataset, reference)
        mean = statistics.mean(reproduced) if reproduced else None
        if reported is None or reported.value is None:
            shown, delta, verdict = ("–" if reported is None else "missing"), None, "not reported"
            if reported is not None:
                notes.append(f"{method} {_label(reference)}: missing; transcribe from {reported.missing}")
        else:
            shown = _fmt(reported.value) + (f" ± {reported.std:.2f}" if reported.std is not None else "")
            delta = None if mean is None else mean - reported.value
            verdict = (
                "no runs" if mean is None else "within tolerance" if abs(delta) <= reported.tolerance else "outside"
            )
            source = reported.source + (f", {reported.note}" if reported.note else "")
            notes.append(f"{method} {_label(reference)}: {source} (tolerance ±{reported.tolerance:g})")
        cells += [shown, _mean_std(reproduced), "–" if delta is None else f"{delta:+.2f}", verdict]
    for reference in show:
        cells.append(_mean_std(_values(ok, reference)))
    per_epoch = _values(ok, "s_per_epoch")
    cells.append(_fmt(statistics.mean(per_epoch)) if per_epoch else "–")
    cells.append(", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "0")
    return cells, notes


def _caption(paper, dataset, budget_name, runs: pd.DataFrame) -> str:
    caption = f"{paper.title} ({paper.key}) on {dataset}"
    if budget_name is None:
        return caption + ": no runs yet."
    budget = specs.load_budgets()[budget_name]
    caps = ", ".join(f"{k}={v}" for k, v in budget.caps.items())
    devices = sorted(_ok(runs)["device_name"].fillna("?").unique())
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


def _booktabs(header: list[str], rows: list[list[str]], align: str = "") -> str:
    line = lambda cells: " & ".join(_latex_escape(c) for c in cells) + " \\\\\n"
    align = align or "l" + "r" * (len(header) - 1)
    return (
        "\\begin{tabular}{"
        + align
        + "}\n\\toprule\n"
        + line(header)
        + "\\midrule\n"
        + "".join(line(row) for row in rows)
        + "\\bottomrule\n\\end{tabular}\n"
    )


def _documents(title: str, caption: str, header, rows, notes, align: str = "") -> tuple[str, str]:
    """The same table as Markdown (GitHub) and as a LaTeX table float, notes below it."""
    markdown = (
        f"### {title}\n\n{caption}\n\n"
        + tabulate(rows, header, tablefmt="github", disable_numparse=True)
        + "\n\n"
        + "".join(f"- {n}\n" for n in notes)
    )
    latex = (
        "\\begin{table}[t]\n\\centering\n\\small\n"
        f"\\caption{{{_latex_escape(caption)}}}\n"
        + _booktabs(header, rows, align)
        + "\\par\\footnotesize\n"
        + "\\\\\n".join(_latex_escape(n) for n in notes)
        + "\n\\end{table}\n"
    )
    return markdown, latex


def render(paper, dataset, budget_name, frame: pd.DataFrame) -> tuple[str, str]:
    compare = paper.evaluation.get("compare", [])
    show = paper.evaluation.get("show", [])
    header = ["Method"]
    for reference in compare:
        label = _label(reference)
        header += [f"{label} reported", f"{label} reproduced", f"Δ {label}", "Verdict"]
    header += [f"{_label(m)} reproduced" for m in show] + ["s/epoch", "Runs"]
    rows, notes = [], []
    here = frame[(frame["paper"] == paper.key) & (frame["dataset"] == dataset) & (frame["budget"] == budget_name)]
    for method in paper.methods:
        cells, row_notes = _row(paper, dataset, method, here[here["method"] == method], compare, show)
        rows.append(cells)
        notes += row_notes
    caption = _caption(paper, dataset, budget_name, here)
    directions = "; ".join(
        f"{_label(m)}: {METRICS[metric_reference(m)[0]].description}, "
        f"{'lower' if METRICS[metric_reference(m)[0]].lower_is_better else 'higher'} is better"
        for m in compare + show
    )
    notes = [directions] + notes
    if "note" in paper.datasets[dataset]:
        notes.append(f"Dataset: {paper.datasets[dataset]['note']}")
    return _documents(f"{paper.key} / {dataset} / {budget_name or 'no runs'}", caption, header, rows, notes)


def render_claims(paper, frame: pd.DataFrame) -> tuple[str, str]:
    """One row per claim and budget at which its dataset has runs (a claim without any: one row)."""
    header = ["Claim", "Dataset", "Metric", "Budget", "Method", "Than", "p", "Verdict"]
    rows, notes = [], []
    for i, claim in enumerate(paper.claims, 1):
        runs = _ok(frame[(frame["paper"] == paper.key) & (frame["dataset"] == claim.dataset)])
        budgets = sorted(runs["budget"].unique()) or [None]
        for budget_name in budgets:
            at_budget = runs[runs["budget"] == budget_name]
            values = _values(at_budget[at_budget["method"] == claim.method], claim.metric)
            than = (
                _values(at_budget[at_budget["method"] == claim.than], claim.metric)
                if isinstance(claim.than, str)
                else float(claim.than)
            )
            result = claim_checks.verdict(claim, values, than)
            rows.append(
                [
                    f"({i}) {claim.text}",
                    claim.dataset,
                    f"{_label(claim.metric)}, {claim.direction}"
                    + (f" by ×{claim.ratio:g}" if claim.ratio else f" by {claim.margin:g}" if claim.margin else ""),
                    budget_name or "–",
                    f"{claim.method}: {claim_checks.summary(values)}",
                    f"{claim.than}: {claim_checks.summary(than)}" if isinstance(than, list) else f"{than:g}",
                    "–" if result["p"] is None else f"{result['p']:.3g}",
                    result["verdict"],
                ]
            )
        notes.append(f"({i}) {claim.source}; level {claim.level:g}")
    notes.insert(
        0,
        "Verdict: holds when a one-sided Welch t-test over the seeds (ok runs, current config) finds the "
        "claimed effect at the claim's level; fails otherwise; inconclusive with fewer than 3 seeds on a side; "
        "no runs when a side has none. A budget below the paper's does not test the paper, only how far its "
        "claim carries at that cost.",
    )
    caption = f"{paper.title} ({paper.key}): the paper's claims, checked against the seeds."
    return _documents(f"{paper.key} / claims", caption, header, rows, notes, align="p{5cm}lllllrl")


def write_tables(results: Path, out: Path) -> list[Path]:
    """Regenerate every table from the records under ``results``; returns the files written.
    Tables of an earlier generation that no longer apply are removed."""
    frame = annotated_frame(results)
    out.mkdir(parents=True, exist_ok=True)
    written, sections = [], []

    def emit(stem: str, markdown: str, latex: str) -> None:
        for suffix, text in ((".md", markdown), (".tex", latex)):
            written.append(out / f"{stem}{suffix}")
            written[-1].write_text(text, encoding="utf-8")
        sections.append(markdown)

    for key in specs.paper_keys():
        paper = specs.load_paper(key)
        mine = frame[frame["paper"] == key]
        for dataset in paper.datasets:
            budgets = sorted(mine.loc[mine["dataset"] == dataset, "budget"].unique())
            if not budgets and any(r.dataset == dataset for r in paper.reported):
                budgets = [None]
            for budget_name in budgets:
                emit(f"{key}__{dataset}__{budget_name or 'no-runs'}", *render(paper, dataset, budget_name, frame))
        if paper.claims:
            emit(f"{key}__claims", *render_claims(paper, frame))
    for old in set(out.glob("*__*.md")) | set(out.glob("*__*.tex")):
        if old not in written:
            old.unlink()
    index = "# Reproduced numbers\n\nGenerated by `vlaebench tables` from the run records; do not edit.\n\n"
    index += "\n".join(sections)
    orphans = frame[frame["orphan"]]
    if len(orphans):
        index += "\n## Records not in any current spec\n\n" + "".join(
            f"- {row.run_id} ({row.paper} / {row.dataset} / {row.budget} / {row.method})\n"
            for row in orphans.sort_values("run_id").itertuples()
        )
    (out / "README.md").write_text(index, encoding="utf-8")
    return written + [out / "README.md"]
