"""Markdown and LaTeX (booktabs) tables of reproduced numbers beside the reported ones, and the
verdicts of the papers' claims.

Reads the run records (as one DataFrame, ``records.frame``) and the paper specs only: it never
trains and never touches the network. One table per (paper, dataset, budget) with runs, plus one per
(paper, dataset) that has reported numbers but no runs yet. A row per method of the spec:

- reported: the paper's number (or "missing", with where to transcribe it from in the notes);
- reproduced: mean ± std over the seeds whose run ended ``ok`` or ``partial`` (some metric groups
  failed, the others kept) and whose config is the one the current spec resolves to (records of an
  older spec are "stale" and left out, as are runs that diverged, failed or timed out: the runs
  column counts each kind). A value made by an older version of its metric's estimator
  (``Metric.version``) is left out of that metric only, and counted in the cell ("2 stale");
- Δ = reproduced − reported, and the verdict: within tolerance / outside / not reported / no runs /
  stale (every value of an older estimator version).

Each metric prints with its own number of decimals (``Metric.digits``). Beside a gap (Cremer et al.
2018) the cell gives the mean over its seeds of the fraction of gap points whose local optimisation
converged, and a dagger when fewer than half did.

Per paper with claims, a claims table: each claim's verdict at each budget with runs (``report.claims``).

The LaTeX is pure ASCII (pdflatex with its default OT1 fonts takes it): every other character is
written as a LaTeX command (``_latex_escape``).

``write_tables`` removes and overwrites only files it wrote, as listed in the output folder's
manifest (``MANIFEST``); see there.
"""

import math
import re
import statistics
import unicodedata
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmarks import UserError, records, specs
from benchmarks.metrics import CONVERGED_FRACTION, METRICS, metric_reference
from report import claims as claim_checks

# Statuses whose metrics the tables use: ``partial`` runs lost some metric groups and kept the others.
KEPT = ("ok", "partial")
GAPS = ("amortization_gap", "approximation_gap", "inference_gap")
DAGGER = "†"


def _digits(reference: str) -> int:
    return METRICS[metric_reference(reference)[0]].digits


def _fmt(value: float | None, digits: int = 2, sign: bool = False) -> str:
    """``value`` to ``digits`` decimals; a value that rounds to zero prints without a minus sign."""
    if value is None:
        return "–"
    text = f"{value:{'+' if sign else ''}.{digits}f}"
    return text.replace("-", "+" if sign else "") if float(text) == 0 else text


def _mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return _fmt(values[0], digits)
    return f"{_fmt(statistics.mean(values), digits)} ± {_fmt(statistics.stdev(values), digits)}"


def annotated_frame(results: Path, all_records: list[dict] | None = None) -> pd.DataFrame:
    """Every record under ``results`` (or ``all_records``, already read from there) as a row
    (``records.frame``), with ``current`` (made under the config the current spec resolves to) and
    ``orphan`` (the specs no longer have its paper, method, dataset or budget)."""
    all_records = records.load_all(results) if all_records is None else all_records
    if not all_records:
        raise UserError(
            f"no run records in {records.runs_dir(results)}; run `vlaebench run` first or pass --results DIR"
        )
    frame = records.frame(all_records)
    papers, budgets = {}, specs.load_budgets()
    current_ids = [specs.current_run_id(record, papers, budgets) for record in all_records]
    frame["orphan"] = [run_id is None for run_id in current_ids]
    # A re-evaluation is current when the run it evaluates is.
    own = [record["config"].get("evaluation_of", record["run_id"]) for record in all_records]
    frame["current"] = [run_id == made_by for run_id, made_by in zip(current_ids, own)]
    return frame


def _current(runs: pd.DataFrame, reference: str) -> tuple[pd.DataFrame, int]:
    """The runs that have the metric's (or metric part's) value made by the metric's current
    estimator version (``metric.version`` in the record; absent: 1), and how many runs have a value
    of another version (stale for this metric only)."""
    if reference not in runs:
        return runs.iloc[:0].assign(**{reference: pd.Series(dtype=float)}), 0
    name = metric_reference(reference)[0]
    present = runs[runs[reference].notna()]
    column = f"{name}.version"
    versions = present[column].fillna(1) if column in present else pd.Series(1, index=present.index)
    current = versions == METRICS[name].version
    return present[current], int((~current).sum())


def _label(reference: str) -> str:
    name, part = metric_reference(reference)
    return METRICS[name].label + (f" ({part})" if part else "")


def _kept(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["current"] & runs["status"].isin(KEPT)]


def _reproduced(runs: pd.DataFrame, reference: str) -> tuple[str, float | None, set[str]]:
    """The cell of a metric over the kept runs: mean ± std of the current values, the convergence
    of a gap's local optimisation, the count of stale values; its mean; the marks it carries
    ("conv.", "dagger", "stale": the notes that explain them)."""
    with_value, stale = _current(runs, reference)
    values = [float(v) for v in with_value[reference]]
    name = metric_reference(reference)[0]
    cell, extras, marks = _mean_std(values, _digits(reference)), [], set()
    stopped = f"{name}.stopped_fraction"
    if name in GAPS and values and stopped in with_value and with_value[stopped].notna().any():
        converged = float(with_value[stopped].dropna().mean())
        # floor: "50 %" never shows beside a dagger (the epsilon undoes 0.29 * 100 = 28.999...)
        extras.append(f"conv. {math.floor(100 * converged + 1e-9)} %")
        marks.add("conv.")
        if converged < CONVERGED_FRACTION:  # most points did not converge: a dagger
            marks.add("dagger")
    unreliable = f"{name}.pareto_k_above_0_7"  # the importance weights' Pareto k̂ (Vehtari et al.)
    if values and unreliable in with_value and with_value[unreliable].notna().any():
        share = float(with_value[unreliable].dropna().mean())
        if share > 0.5:  # most points' estimates cannot be trusted
            extras.append(f"k̂ > 0.7 on {math.floor(100 * share + 1e-9)} %")
            marks.add("pareto")
    if stale:
        extras.append(f"{stale} stale")
        marks.add("stale")
    cell += f" ({'; '.join(extras)})" if extras else ""
    cell += DAGGER if "dagger" in marks else ""
    return cell, (statistics.mean(values) if values else None), marks


def reported_verdict(reported, mean: float | None, marks: set[str]) -> tuple[str, float | None]:
    """A reported number against the mean of its reproductions (None: none kept; ``marks`` of the
    cell say whether they were stale): the verdict and Δ = reproduced − reported."""
    if reported is None or reported.value is None:
        return "not reported", None
    if mean is None:
        return ("stale" if "stale" in marks else "no runs"), None
    delta = mean - reported.value
    return ("within tolerance" if abs(delta) <= reported.tolerance else "outside"), delta


def reported_verdicts(paper, frame: pd.DataFrame) -> list[dict]:
    """Each reported number of ``paper`` with its verdict at each budget whose runs of its method and
    dataset are kept (one row with budget None where there are none)."""
    rows = []
    for reported in paper.reported:
        runs = _kept(
            frame[
                (frame["paper"] == paper.key)
                & (frame["method"] == reported.method)
                & (frame["dataset"] == reported.dataset)
                & (frame["evaluation"] == "")
            ]
        )
        for budget_name in sorted(runs["budget"].unique()) or [None]:
            _, mean, marks = _reproduced(runs[runs["budget"] == budget_name], reported.metric)
            verdict, _ = reported_verdict(reported, mean, marks)
            rows.append({"reported": reported, "budget": budget_name, "verdict": verdict})
    return rows


def _row(paper, dataset, method, runs: pd.DataFrame, compare, show) -> tuple[list[str], list[str], set[str]]:
    kept = _kept(runs)
    counts = runs["status"].where(runs["current"], "stale").value_counts()
    cells, notes, marks = [method], [], set()
    for reference in compare:
        shown_reproduced, mean, cell_marks = _reproduced(kept, reference)
        marks |= cell_marks
        digits = _digits(reference)
        reported = paper.reported_for(method, dataset, reference)
        verdict, delta = reported_verdict(reported, mean, cell_marks)
        if reported is None or reported.value is None:
            shown = "–" if reported is None else "missing"
            if reported is not None:
                notes.append(f"{method} {_label(reference)}: missing; transcribe from {reported.missing}")
        else:
            shown = _fmt(reported.value, digits) + (
                f" ± {_fmt(reported.std, digits)}" if reported.std is not None else ""
            )
            source = reported.source + (f", {reported.note}" if reported.note else "")
            notes.append(f"{method} {_label(reference)}: {source} (tolerance ±{reported.tolerance:g})")
        cells += [shown, shown_reproduced, _fmt(delta, digits, sign=True), verdict]
    for reference in show:
        shown_reproduced, _, cell_marks = _reproduced(kept, reference)
        marks |= cell_marks
        cells.append(shown_reproduced)
    per_epoch, stale = _current(kept, "s_per_epoch")
    cells.append(
        (_fmt(per_epoch["s_per_epoch"].mean(), _digits("s_per_epoch")) if len(per_epoch) else "–")
        + (f" ({stale} stale)" if stale else "")
    )
    marks |= {"stale"} if stale else set()
    cells.append(", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "0")
    return cells, notes, marks


def _caption(paper, dataset, budget_name, runs: pd.DataFrame) -> str:
    caption = f"{paper.title} ({paper.key}) on {dataset}"
    if budget_name is None:
        return caption + ": no runs yet."
    budget = specs.load_budgets()[budget_name]
    caps = ", ".join(f"{k}={v}" for k, v in budget.caps.items())
    devices = sorted(_kept(runs)["device_name"].fillna("?").unique())
    caption += f", budget {budget_name} ({budget.description}: {caps})."
    caption += " Reproduced: mean ± std over seeds (runs with status ok or partial and the current config)."
    if devices:
        caption += f" Devices: {'; '.join(devices)}."
    return caption


MARK_NOTES = {
    "conv.": "conv.: the mean over the seeds of the fraction of gap points whose local optimisation (q*) "
    "met its stopping rule before the step cap",
    "dagger": f"{DAGGER}: fewer than half of the gap points converged: q* is not optimal, so the amortization "
    "gap is under-estimated and the approximation gap over-estimated (the inference gap, their sum, is "
    "affected only through q* as the importance-sampling proposal); a larger gap_max_steps cap converges more",
    "pareto": "k̂ > 0.7 on n %: on most test points the importance weights' Pareto k̂ (Vehtari et al.) says the "
    "importance-sampled estimate is unreliable (q is a poor proposal): trust the AIS column (ais_nll) more",
    "stale": "n stale: values made by an earlier version of the metric's estimator, left out of that metric "
    "only; rerun the runs (vlaebench run --force) to refresh them",
}


def _describe(reference: str) -> str:
    metric = METRICS[metric_reference(reference)[0]]
    return f"{_label(reference)}: {metric.description}" + (f", {metric.better} is better" if metric.better else "")


# LaTeX for every character that is not plain ASCII text; anything else non-ASCII is decomposed
# (accents, compatibility forms) or, as a last resort, written as its code point.
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
    "<": r"\textless{}",  # OT1 has no < or >: they print as ¡ and ¿
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "÷": r"$\div$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≠": r"$\neq$",
    "≈": r"$\approx$",
    "∼": r"$\sim$",
    "≡": r"$\equiv$",
    "∝": r"$\propto$",
    "∞": r"$\infty$",
    "∈": r"$\in$",
    "∑": r"$\sum$",
    "∏": r"$\prod$",
    "√": r"$\surd$",
    "∂": r"$\partial$",
    "∇": r"$\nabla$",
    "‖": r"$\|$",
    "→": r"$\rightarrow$",
    "←": r"$\leftarrow$",
    "↔": r"$\leftrightarrow$",
    "⇒": r"$\Rightarrow$",
    "°": r"$^{\circ}$",
    "¹": r"$^{1}$",
    "²": r"$^{2}$",
    "³": r"$^{3}$",
    "µ": r"$\mu$",
    "–": "--",
    "—": "---",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "„": ",,",
    "…": r"\ldots{}",
    "†": r"\textdagger{}",
    "‡": r"\textdaggerdbl{}",
    "§": r"\S{}",
    "¶": r"\P{}",
    "©": r"\copyright{}",
    "•": r"$\bullet$",
    "ß": r"\ss{}",
    "æ": r"\ae{}",
    "Æ": r"\AE{}",
    "ø": r"\o{}",
    "Ø": r"\O{}",
    "œ": r"\oe{}",
    "Œ": r"\OE{}",
    "ł": r"\l{}",
    "Ł": r"\L{}",
    "ı": r"\i{}",
    "\u00a0": "~",  # no-break space
    "\u202f": r"\,",  # narrow no-break space
    "\u2009": r"\,",  # thin space
    "\u2007": "~",  # figure space
    "\u2011": "-",  # non-breaking hyphen
    "\u00ad": r"\-",  # soft hyphen
    "\u200b": "",  # zero-width space
    "\u2060": "",  # word joiner
    "\ufeff": "",
    **{
        greek: rf"$\{name}$"
        for greek, name in zip(
            "αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΥΦΨΩ",
            "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau upsilon "
            "phi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega".split(),
        )
    },
}
# Combining marks (after NFD decomposition) as text-mode accents on the character before them: p̂ -> \^{p}.
ACCENTS = {
    "\u0300": "`",
    "\u0301": "'",
    "\u0302": "^",
    "\u0303": "~",
    "\u0304": "=",
    "\u0306": "u",
    "\u0307": ".",
    "\u0308": '"',
    "\u030a": "r",
    "\u030b": "H",
    "\u030c": "v",
    "\u0323": "d",
    "\u0327": "c",
    "\u0328": "k",
    "\u0331": "b",
}


def _escape(chars: str) -> str:
    out: list[str] = []
    for char in chars:
        if char in LATEX:
            out.append(LATEX[char])
        elif char.isascii():
            out.append(char)
        elif unicodedata.combining(char):  # an accent on the character before it; an unknown mark is dropped
            if out and char in ACCENTS:
                out[-1] = rf"\{ACCENTS[char]}{{{out[-1]}}}"
        else:
            # é -> e + U+0301 (canonical), ﬁ -> fi (compatibility); else, visible and still ASCII, its code point
            decomposed = next((d for d in (unicodedata.normalize(f, char) for f in ("NFD", "NFKD")) if d != char), None)
            out.append(_escape(decomposed) if decomposed else rf"\texttt{{[U+{ord(char):04X}]}}")
    return "".join(out)


def _latex_escape(text: str) -> str:
    """``text`` as LaTeX of pure ASCII (OT1-safe): special characters escaped, every other character
    a command (``LATEX``); a combining mark becomes an accent over the character before it (p̂ -> \\^{p})."""
    return _escape(unicodedata.normalize("NFC", text))


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


LATEX_START = "\\begin{table}[t]\n\\centering\n\\small\n\\caption{"


def _md(text: str) -> str:
    """``text`` as Markdown shows it: an asterisk (q*, the optimal q) is a character, not emphasis."""
    return text.replace("*", "\\*")


def _documents(title: str, caption: str, header, rows, notes, align: str = "") -> tuple[str, str]:
    """The same table as Markdown (GitHub) and as a LaTeX table float, notes below it."""
    markdown = (
        f"### {title}\n\n{_md(caption)}\n\n"
        + tabulate([[_md(c) for c in row] for row in rows], header, tablefmt="github", disable_numparse=True)
        + "\n\n"
        + "".join(f"- {_md(n)}\n" for n in notes)
    )
    latex = (
        LATEX_START
        + f"{_latex_escape(caption)}}}\n"
        + _booktabs(header, rows, align)
        + "\\par\\footnotesize\n"
        + "\\\\\n".join(_latex_escape(n) for n in notes)
        + "\n\\end{table}\n"
    )
    return markdown, latex


def render(paper, dataset, budget_name, frame: pd.DataFrame, evaluation: str = "") -> tuple[str, str]:
    """The table of one paper, dataset and budget; ``evaluation`` names a re-evaluation's changed
    settings (``vlaebench evaluate``): its records get their own table, never mixed with the runs'."""
    compare = paper.evaluation.get("compare", [])
    show = paper.evaluation.get("show", [])
    header = ["Method"]
    for reference in compare:
        label = _label(reference)
        header += [f"{label} reported", f"{label} reproduced", f"Δ {label}", "Verdict"]
    header += [f"{_label(m)} reproduced" for m in show] + ["s/epoch", "Runs"]
    rows, notes, marks = [], [], set()
    here = frame[
        (frame["paper"] == paper.key)
        & (frame["dataset"] == dataset)
        & (frame["budget"] == budget_name)
        & (frame["evaluation"] == evaluation)
    ]
    for method in paper.methods:
        cells, row_notes, row_marks = _row(paper, dataset, method, here[here["method"] == method], compare, show)
        rows.append(cells)
        notes += row_notes
        marks |= row_marks
    caption = _caption(paper, dataset, budget_name, here)
    if evaluation:
        caption += f" Re-evaluated without retraining (vlaebench evaluate): {evaluation}."
    notes = (
        ["; ".join(_describe(m) for m in compare + show)] + [MARK_NOTES[m] for m in MARK_NOTES if m in marks] + notes
    )
    if "note" in paper.datasets[dataset]:
        notes.append(f"Dataset: {paper.datasets[dataset]['note']}")
    title = f"{paper.key} / {dataset} / {budget_name or 'no runs'}" + (
        f" / re-evaluated: {evaluation}" if evaluation else ""
    )
    return _documents(title, caption, header, rows, notes)


def grid_keys(paper) -> list[str]:
    """The grid keys of the spec's methods (``T``), in the order they first appear."""
    return list(dict.fromkeys(key for method in paper.methods.values() for key in method.grid_point))


def _mean_of(runs: pd.DataFrame, column: str) -> float | None:
    values = runs[column].dropna() if column in runs else []
    return float(values.mean()) if len(values) else None


def render_grid(paper, dataset, budget_name, frame: pd.DataFrame, key: str) -> tuple[str, str]:
    """The paper's own layout for a grid (Park et al.'s methods × T): one row per method, one column
    per value of ``key`` (methods without it in a column of their own); each cell the compared
    metric reproduced (and reported), the amortization gap, and the training time per epoch and
    the test-time inference latency as ratios to ``evaluation.cost_relative_to``'s."""
    here = _kept(
        frame[
            (frame["paper"] == paper.key)
            & (frame["dataset"] == dataset)
            & (frame["budget"] == budget_name)
            & (frame["evaluation"] == "")
        ]
    )
    metric = paper.evaluation["compare"][0]
    values = list(dict.fromkeys(m.grid_point[key] for m in paper.methods.values() if key in m.grid_point))
    reference = paper.evaluation.get("cost_relative_to")
    reference_runs = here[here["method"] == reference]
    costs = {column: _mean_of(reference_runs, column) for column in ("s_per_epoch", "inference_latency_ms")}

    marks = set()

    def cell(method: str) -> str:
        runs = here[here["method"] == method]
        shown, _, metric_marks = _reproduced(runs, metric)
        marks.update(metric_marks)
        reported = paper.reported_for(method, dataset, metric)
        if reported is not None and reported.value is not None:
            shown += f" (paper {_fmt(reported.value, _digits(metric))})"
        extras = []
        if "amortization_gap" in runs and runs["amortization_gap"].notna().any():
            gap, _, gap_marks = _reproduced(runs, "amortization_gap")
            extras.append(f"gap {gap}")
            marks.update(gap_marks)
        for column, label in (("s_per_epoch", "train"), ("inference_latency_ms", "test")):
            mine = _mean_of(runs, column)
            if mine is not None and costs[column]:
                extras.append(f"{label} ×{mine / costs[column]:.2g}")
        return "; ".join([shown, *extras])

    rows = {}
    for name, method in paper.methods.items():
        if key not in method.grid_point:
            rows[name] = {None: name}
        elif {k: v for k, v in method.grid_point.items() if k != key}:
            continue  # a variant of a second grid key: not in this layout
        else:
            rows.setdefault(method.base, {})[method.grid_point[key]] = name
    header = ["Method", f"without {key}", *(f"{key} = {specs.shown_value(v)}" for v in values)]
    table = [
        [base, *(cell(variants[v]) if v in variants else "–" for v in [None, *values])]
        for base, variants in rows.items()
    ]
    caption = _caption(paper, dataset, budget_name, here) + f" In the paper's layout: methods × {key}."
    notes = [
        f"Each cell: {_describe(metric)}, mean ± std over the seeds (paper: the reported value)"
        + ("; gap: the amortization gap (nats)" if "amortization_gap" in here else "")
        + (
            f"; train and test: seconds per training epoch and test-time inference latency (q(z|x) and one "
            f"sample, a batch of 100) as multiples of {reference}'s, on the same devices"
            if reference
            else ""
        )
    ] + [MARK_NOTES[m] for m in MARK_NOTES if m in marks]
    return _documents(f"{paper.key} / {dataset} / {budget_name} / by {key}", caption, header, table, notes)


def _side(method: str, metric: str, runs: pd.DataFrame, named: bool = False) -> tuple[list[float], str, int]:
    """A side of a claim: ``method``'s current values of ``metric``, their summary (``named``: with
    the metric's name) and how many values were left out as stale."""
    with_value, stale = _current(runs[runs["method"] == method], metric)
    values = [float(v) for v in with_value[metric]]
    summary = claim_checks.summary(values, _digits(metric))
    name = f"{method} {metric}" if named else method
    return values, f"{name}: {summary}" + (f" ({stale} stale)" if stale else ""), stale


def claim_verdicts(paper, frame: pd.DataFrame) -> list[dict]:
    """Each claim (``index`` from 1) at each budget at which its dataset has kept runs (a claim without
    any: one row, budget None): both sides as shown, whether a side lost stale values, and the
    verdict (``report.claims``). Only the runs' own evaluation counts (no re-evaluation is mixed in)."""
    checked = []
    for i, claim in enumerate(paper.claims, 1):
        runs = _kept(
            frame[(frame["paper"] == paper.key) & (frame["dataset"] == claim.dataset) & (frame["evaluation"] == "")]
        )
        for budget_name in sorted(runs["budget"].unique()) or [None]:
            at_budget = runs[runs["budget"] == budget_name]
            named = claim.than_metric not in (None, claim.metric)
            values, shown, stale = _side(claim.method, claim.metric, at_budget, named)
            if isinstance(claim.than, str):
                than, shown_than, stale_than = _side(claim.than, claim.than_metric or claim.metric, at_budget, named)
            else:  # a number of the spec: as written there
                than, shown_than, stale_than = float(claim.than), f"{float(claim.than):g}", 0
            checked.append(
                {
                    "index": i,
                    "claim": claim,
                    "budget": budget_name,
                    "shown": shown,
                    "shown_than": shown_than,
                    "stale": bool(stale or stale_than),
                    **claim_checks.verdict(claim, values, than),
                }
            )
    return checked


def render_claims(paper, frame: pd.DataFrame) -> tuple[str, str]:
    """One row per claim and budget at which its dataset has runs (a claim without any: one row)."""
    header = ["Claim", "Dataset", "Metric", "Budget", "Method", "Than", "p", "Verdict"]
    rows = []
    checked = claim_verdicts(paper, frame)
    for row in checked:
        claim = row["claim"]
        rows.append(
            [
                f"({row['index']}) {claim.text}",
                claim.dataset,
                f"{_label(claim.metric)}, {claim.direction}"
                + (f" by ×{claim.ratio:g}" if claim.ratio else f" by {claim.margin:g}" if claim.margin else ""),
                row["budget"] or "–",
                row["shown"],
                row["shown_than"],
                "–" if row["p"] is None else f"{row['p']:.3g}",
                row["verdict"],
            ]
        )
    notes = [f"({i}) {claim.source}; level {claim.level:g}" for i, claim in enumerate(paper.claims, 1)]
    any_stale = any(row["stale"] for row in checked)
    notes.insert(
        0,
        "Verdict: holds when a one-sided Welch t-test over the seeds (ok or partial runs, current config) finds "
        "the claimed effect at the claim's level; fails otherwise; inconclusive with fewer than 3 seeds on a side; "
        "no runs when a side has none. A budget below the paper's does not test the paper, only how far its "
        "claim carries at that cost.",
    )
    if any_stale:
        notes.insert(1, MARK_NOTES["stale"])
    caption = f"{paper.title} ({paper.key}): the paper's claims, checked against the seeds."
    return _documents(f"{paper.key} / claims", caption, header, rows, notes, align="p{5cm}lllllrl")


# --- the output folder -------------------------------------------------------------------------------------------

# The files the last generation wrote into the output folder, one name a line: the only files a
# generation overwrites or removes.
MANIFEST = ".vlaebench-tables"
MANIFEST_HEADER = "# Written by `vlaebench tables`, which overwrites or removes only the files listed here.\n"
INDEX_START = "# Reproduced numbers\n\nGenerated by `vlaebench tables`"
TABLE_NAME = re.compile(r"([A-Za-z0-9_.-]+?(?:__[A-Za-z0-9_.-]+)+)\.(md|tex)")


def _read_manifest(path: Path) -> set[str]:
    names = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name != Path(name).name or name in (".", "..", MANIFEST) or "\\" in name:
            raise UserError(
                f"{path} line {number}: {name!r} is not the name of a file in that folder; the manifest lists "
                "the files `vlaebench tables` wrote there, one name a line: fix the line or delete the manifest"
            )
        names.add(name)
    return names


def _looks_generated(path: Path) -> bool:
    """Whether a file, in a folder without a manifest, is one an earlier ``vlaebench tables`` wrote:
    the index (README.md) begins with the suite's heading; a Markdown table is named
    ``<paper>__...__<...>.md`` and begins with the title that name gives; a LaTeX table begins
    with the suite's table float and has such a Markdown twin."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.name == "README.md":
        return text.startswith(INDEX_START)
    match = TABLE_NAME.fullmatch(path.name)
    if not match:
        return False
    if match[2] == "tex":
        return text.startswith(LATEX_START) and _looks_generated(path.with_suffix(".md"))
    parts = match[1].split("__")
    title = " / ".join(parts[:-1] + ["no runs" if parts[-1] == "no-runs" else parts[-1]])
    return text.startswith(f"### {title}\n\n")


def _owned(out: Path, names: list[str]) -> set[str]:
    """The files in ``out`` that the suite wrote: those its manifest lists; in a folder without one,
    the files that look generated (``_looks_generated``: the tables of an earlier version, which
    kept no manifest), every other file being the user's. Refuses, naming it, a file to be written
    that the suite did not write (or that is a link)."""
    manifest = out / MANIFEST
    if manifest.is_file():
        owned = _read_manifest(manifest)
    elif out.is_dir():
        owned = {p.name for p in out.iterdir() if not p.is_symlink() and p.is_file() and _looks_generated(p)}
    else:
        owned = set()
    for name in names:
        path = out / name
        if path.is_symlink() or (path.exists() and name not in owned):
            raise UserError(
                f"{path} exists and was not written by `vlaebench tables` (not listed in {manifest}); "
                "move it out of the folder or pass another --out"
            )
    return owned


def _write_manifest(out: Path, names: set[str]) -> None:
    text = MANIFEST_HEADER + "".join(f"{name}\n" for name in sorted(names))
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out / MANIFEST)


def write_tables(results: Path, out: Path) -> list[Path]:
    """Regenerate every table from the records under ``results`` into ``out``; returns the files
    written (the manifest last).

    ``out`` may hold files of the user's: a generation overwrites or removes only files it wrote.
    It lists them in ``out/.vlaebench-tables`` (the manifest, one name a line); tables of an earlier
    generation that no longer apply are removed only if listed there. A folder without a manifest
    (new, or written by an earlier version of the suite) is adopted file by file: the index and
    tables that look generated (``_looks_generated``) count as the suite's, any other file as the
    user's. If a file to be written exists and is not the suite's, nothing is written and a
    ``UserError`` names it."""
    frame = annotated_frame(results)
    files: dict[str, str] = {}
    sections = []

    def emit(stem: str, markdown: str, latex: str) -> None:
        files[f"{stem}.md"], files[f"{stem}.tex"] = markdown, latex
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
                for grid_key in grid_keys(paper) if budget_name else []:
                    emit(
                        f"{key}__{dataset}__{budget_name}__by-{grid_key}",
                        *render_grid(paper, dataset, budget_name, frame, grid_key),
                    )
                at_budget = mine[(mine["dataset"] == dataset) & (mine["budget"] == budget_name)]
                for evaluation in sorted(set(at_budget["evaluation"]) - {""}):
                    stem = f"{key}__{dataset}__{budget_name}__{re.sub(r'[^A-Za-z0-9]+', '-', evaluation)}"
                    emit(stem, *render(paper, dataset, budget_name, frame, evaluation))
        if paper.claims:
            emit(f"{key}__claims", *render_claims(paper, frame))
    index = INDEX_START + " from the run records; do not edit.\n\n"
    index += "\n".join(sections)
    orphans = frame[frame["orphan"]]
    if len(orphans):
        index += "\n## Records not in any current spec\n\n" + "".join(
            f"- {row.run_id} ({row.paper} / {row.dataset} / {row.budget} / {row.method})\n"
            for row in orphans.sort_values("run_id").itertuples()
        )
    files["README.md"] = index

    owned = _owned(out, list(files))  # refuses before anything is written
    out.mkdir(parents=True, exist_ok=True)
    # Listed before written: a generation killed half-way leaves no file of its own unlisted.
    _write_manifest(out, owned | set(files))
    written = []
    for name, text in files.items():
        written.append(out / name)
        written[-1].write_text(text, encoding="utf-8")
    for stale in sorted(owned - set(files)):
        path = out / stale
        if path.is_file() and not path.is_symlink():
            path.unlink()
    _write_manifest(out, set(files))
    return written + [out / MANIFEST]
