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

import dataclasses
import math
import re
import statistics
import unicodedata
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from tabulate import tabulate

from benchmarks import UserError, diagnostics, records, specs
from benchmarks.metrics import CONVERGED_FRACTION, METRICS, metric_reference
from report import claims as claim_checks

# Statuses whose metrics the tables use: ``partial`` runs lost some metric groups and kept the others.
KEPT = ("ok", "partial")
GAPS = ("amortization_gap", "approximation_gap", "inference_gap")
DAGGER = "†"


@dataclasses.dataclass(frozen=True)
class Cell:
    """A table cell with more than text: ``text`` (bold when it is its column's best), ``rest`` after
    it (never bold), and the footnote (``marker`` > 0, at ``anchor``) naming the runs it comes from."""

    text: str
    rest: str = ""
    value: float | None = None  # what "best" compares: the mean, with the sign shown
    bold: bool = False
    marker: int = 0
    anchor: str = ""


@dataclasses.dataclass(frozen=True)
class Footnote:
    """The provenance of a set of runs: their ids (each with its status where it is not simply ok),
    then git sha, budget, hardware and the day they finished."""

    marker: int
    anchor: str
    runs: tuple[tuple[str, str], ...]
    where: str


SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _known(value) -> str:
    return value if isinstance(value, str) and value else "?"


def _given(value) -> bool:
    return value is not None and not pd.isna(value)


def device_label(name, threads, sharing=None) -> str:
    """A device as the tables name it: a CPU with the threads its run used, a GPU with the number of
    runs that shared it when that was more than one (a run's speed depends on both)."""
    if _given(threads):
        return f"{_known(name)} ({int(threads)} thread{'' if int(threads) == 1 else 's'})"
    if _given(sharing) and int(sharing) > 1:
        return f"{_known(name)} (shared by {int(sharing)} runs)"
    return _known(name)


# The metrics that are times: two methods' are compared only when their runs ran on the same devices
SPEED = ("s_per_epoch", "inference_latency_ms")


def _device_of_each(runs: pd.DataFrame) -> list[str]:
    """Each run's device (``device_label``), in the runs' order."""
    none = [None] * len(runs)
    threads = runs["threads"] if "threads" in runs else none
    sharing = runs["runs_sharing_device"] if "runs_sharing_device" in runs else none
    return [device_label(*device) for device in zip(runs["device_name"], threads, sharing)]


def devices(runs: pd.DataFrame) -> list[str]:
    """The devices of ``runs`` (``device_label``), sorted."""
    return sorted(set(_device_of_each(runs)))


def _run_status(row) -> str:
    """A run's status as its footnote gives it: nothing for a current ok run, then the statuses of
    the attempts a rerun replaced ("ok; earlier: timeout")."""
    status = "stale" if not row.current else "" if row.status == "ok" else row.status
    earlier = getattr(row, "earlier_attempts", "")
    return f"{status or 'ok'}; earlier: {earlier}" if isinstance(earlier, str) and earlier else status


class Footnotes:
    """The footnotes of one table: each distinct set of runs gets a number, in order of first use."""

    def __init__(self, title: str):
        self.prefix = "runs-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        self.notes: dict[frozenset, Footnote] = {}

    def mark(self, cell: Cell, runs: pd.DataFrame) -> Cell:
        """``cell`` with the footnote of ``runs`` (none if there are no runs)."""
        if not len(runs):
            return cell
        key = frozenset(runs["run_id"])
        if key not in self.notes:
            number = len(self.notes) + 1
            ordered = runs.sort_values(["seed", "run_id"])
            listed = tuple((row.run_id, _run_status(row)) for row in ordered.itertuples())
            shas = sorted(
                {
                    _known(sha)[:10] + (" (dirty)" if pd.notna(dirty) and bool(dirty) else "")
                    for sha, dirty in zip(ordered["git_sha"], ordered["git_dirty"])
                }
            )
            days = sorted({_known(finished)[:10] for finished in ordered["finished"]})
            where = "; ".join(
                [
                    "git " + ", ".join(shas),
                    "budget " + ", ".join(sorted({_known(b) for b in ordered["budget"]})),
                    ", ".join(devices(ordered)),
                    "finished " + (days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"),
                ]
            )
            self.notes[key] = Footnote(number, f"{self.prefix}-{number}", listed, where)
        note = self.notes[key]
        return dataclasses.replace(cell, marker=note.marker, anchor=note.anchor)

    def __iter__(self):
        return iter(self.notes.values())


def _bold_best(rows: list[list], groups: list[tuple[list[int], str, int]]) -> None:
    """Bold, in each group of columns (their indices, the better direction, the digits shown), the
    cells whose value shows as the best of the group: the paper's own habit (``layout.bold_best``).
    A group with fewer than two values has no best."""
    for columns, better, digits in groups:
        cells = [(row, c) for row in rows for c in columns if isinstance(row[c], Cell) and row[c].value is not None]
        if len(cells) < 2:
            continue
        best = _fmt((min if better == "lower" else max)(row[c].value for row, c in cells), digits)
        for row, c in cells:
            if _fmt(row[c].value, digits) == best:
                row[c] = dataclasses.replace(row[c], bold=True)


class View(NamedTuple):
    """A metric as a paper's tables show it: label, description, which way is better, and the sign
    its values are multiplied by."""

    label: str
    description: str
    better: str | None
    sign: int


# What a paper that reports log p(x) (``layout.nll_as = "log-likelihood"``) shows instead of an NLL.
AS_LOG_LIKELIHOOD = {"nll": "log p(x)", "ais_nll": "log p(x) (AIS)"}


def _view(paper, reference: str) -> View:
    name, part = metric_reference(reference)
    metric = METRICS[name]
    if paper.layout.nll_as == "log-likelihood" and name in AS_LOG_LIKELIHOOD:
        label = AS_LOG_LIKELIHOOD[name] + (f" ({part})" if part else "")
        description = f"the log-likelihood as the paper reports it, −NLL (NLL: {metric.description})"
        return View(label, description, "higher", -1)
    return View(_label(reference), metric.description, metric.better, 1)


def _digits(reference: str) -> int:
    return METRICS[metric_reference(reference)[0]].digits


def _fmt(value: float | None, digits: int = 2, sign: bool = False) -> str:
    """``value`` to ``digits`` decimals with a true minus sign; a value that rounds to zero prints
    without one."""
    if value is None:
        return "–"
    text = f"{value:{'+' if sign else ''}.{digits}f}"
    if float(text) == 0:
        return text.replace("-", "+" if sign else "")
    return text.replace("-", "−")  # a minus sign, not a hyphen (LaTeX: $-$)


def _mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return _fmt(values[0], digits)
    return f"{_fmt(statistics.mean(values), digits)} ± {_fmt(statistics.stdev(values), digits)}"


def _mean(values: list[float], digits: int = 2) -> str:
    return _fmt(statistics.mean(values), digits)


def _time_text(runs: pd.DataFrame, reference: str, values: list[float], summary=_mean_std) -> tuple[str, bool]:
    """A time's cell: ``summary`` of ``values`` (one per run), or, where they ran on several devices (a GPU
    shared by as many runs, a CPU with as many threads), one per device in ``devices``' order (a time
    taken on one device says nothing of another); and whether it is per device."""
    labels = _device_of_each(runs)
    groups = sorted(set(labels))
    if len(groups) < 2:
        return summary(values, _digits(reference)), False
    per_device = [[v for v, label in zip(values, labels) if label == group] for group in groups]
    return " / ".join(summary(group, _digits(reference)) for group in per_device), True


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


class Reproduced(NamedTuple):
    """A metric over the kept runs: ``text`` mean ± std of the current values; ``rest`` what goes
    with it (the convergence of a gap's local optimisation, unreliable importance weights, the count
    of stale values, a dagger); ``mean``; ``marks``, the notes that explain ``rest`` ("conv.",
    "dagger", "pareto", "vs IS", "stale"); ``runs``, the runs the values come from."""

    text: str
    rest: str
    mean: float | None
    marks: set[str]
    runs: pd.DataFrame

    @property
    def shown(self) -> str:
        return self.text + self.rest


def _reproduced(runs: pd.DataFrame, reference: str, sign: int = 1) -> Reproduced:
    """The cell of a metric (times ``sign``: −1 shows an NLL as a log-likelihood) over the kept runs."""
    with_value, stale = _current(runs, reference)
    values = [sign * float(v) for v in with_value[reference]]
    name = metric_reference(reference)[0]
    extras, marks = [], set()
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
        if share > diagnostics.UNRELIABLE_SHARE:  # most points' estimates cannot be trusted
            extras.append(f"k̂ > 0.7 on {math.floor(100 * share + 1e-9)} %")
            marks.add("pareto")
    paired = f"{name}.minus_importance_sampled"  # AIS against IS on AIS's own few points
    if values and paired in with_value and with_value[paired].notna().any():
        extras.append(f"{_fmt(sign * float(with_value[paired].dropna().mean()), _digits(reference), sign=True)} vs IS")
        marks.add("vs IS")
    if stale:
        extras.append(f"{stale} stale")
        marks.add("stale")
    if METRICS[name].timing:
        text, per_device = _time_text(with_value, reference, values)
        marks |= {"per device"} if per_device else set()
    else:
        text = _mean_std(values, _digits(reference))
    rest = (f" ({'; '.join(extras)})" if extras else "") + (DAGGER if "dagger" in marks else "")
    mean = statistics.mean(values) if values else None
    return Reproduced(text, rest, mean, marks, with_value)


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
            reproduced = _reproduced(runs[runs["budget"] == budget_name], reported.metric)
            verdict, _ = reported_verdict(reported, reproduced.mean, reproduced.marks)
            rows.append({"reported": reported, "budget": budget_name, "verdict": verdict})
    return rows


def _tally(runs: pd.DataFrame) -> str:
    """How many runs ended each way, stale ones apart: "1 failed, 2 ok"."""
    counts = runs["status"].where(runs["current"], "stale").value_counts()
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "0"


def _row(paper, dataset, method, runs: pd.DataFrame, compare, show, footnotes) -> tuple[list, list[str], set[str]]:
    kept = _kept(runs)
    cells, notes, marks = [method], [], set()
    for reference in compare:
        view = _view(paper, reference)
        reproduced = _reproduced(kept, reference, view.sign)
        marks |= reproduced.marks
        digits = _digits(reference)
        reported = paper.reported_for(method, dataset, reference)
        mean = None if reproduced.mean is None else view.sign * reproduced.mean  # in the spec's sign
        verdict, delta = reported_verdict(reported, mean, reproduced.marks)
        if reported is None or reported.value is None:
            shown = Cell("–" if reported is None else "missing")
            if reported is not None:
                notes.append(f"{method} {view.label}: missing; transcribe from {reported.missing}")
        else:
            value = view.sign * reported.value
            std = f" ± {_fmt(reported.std, digits)}" if reported.std is not None else ""
            shown = Cell(_fmt(value, digits) + std, value=value)
            source = reported.source + (f", {reported.note}" if reported.note else "")
            notes.append(f"{method} {view.label}: {source} (tolerance ±{reported.tolerance:g})")
        shown_delta = _fmt(None if delta is None else view.sign * delta, digits, sign=True)
        cells += [shown, _cell(reproduced, footnotes), shown_delta, verdict]
    for reference in show:
        reproduced = _reproduced(kept, reference, _view(paper, reference).sign)
        marks |= reproduced.marks
        cells.append(_cell(reproduced, footnotes))
    per_epoch, stale = _current(kept, "s_per_epoch")
    speed, per_device = (
        _time_text(per_epoch, "s_per_epoch", list(per_epoch["s_per_epoch"]), _mean) if len(per_epoch) else ("–", False)
    )
    cells.append(footnotes.mark(Cell(speed, f" ({stale} stale)" if stale else ""), per_epoch))
    marks |= ({"stale"} if stale else set()) | ({"per device"} if per_device else set())
    cells.append(footnotes.mark(Cell(_tally(runs)), runs))  # every run, failed and stale ones too
    return cells, notes, marks


def _cell(reproduced: Reproduced, footnotes: Footnotes) -> Cell:
    return footnotes.mark(Cell(reproduced.text, reproduced.rest, reproduced.mean), reproduced.runs)


def _caption(paper, dataset, budget_name, runs: pd.DataFrame) -> str:
    caption = f"{paper.title} ({paper.key}) on {dataset}"
    if budget_name is None:
        return caption + ": no runs yet."
    budget = specs.load_budgets()[budget_name]
    caps = ", ".join(f"{k}={v}" for k, v in budget.caps.items())
    kept_devices = devices(_kept(runs))
    caption += f", budget {budget_name} ({budget.description}: {caps})."
    caption += " Reproduced: mean ± std over seeds (runs with status ok or partial and the current config)."
    if kept_devices:
        caption += f" Devices: {'; '.join(kept_devices)}."
    return caption


MARK_NOTES = {
    "conv.": "conv.: the mean over the seeds of the fraction of gap points whose local optimisation (q*) "
    "met its stopping rule before the step cap",
    "dagger": f"{DAGGER}: fewer than half of the gap points converged: q* is not optimal, so the amortization "
    "gap is under-estimated and the approximation gap over-estimated (the inference gap, their sum, is "
    "affected only through q* as the importance-sampling proposal); a larger gap_max_steps cap converges more",
    "pareto": "k̂ > 0.7 on n %: on most test points the importance weights' Pareto k̂ (Vehtari et al.) says the "
    "importance-sampled estimate is unreliable (q is a poor proposal): the AIS column, which does not use q, "
    "is the check (on the same points: its vs IS)",
    "vs IS": "vs IS: AIS's estimate minus the importance-sampled one on the same test points (AIS runs on the "
    "first ais_points only, the other columns on test_points), mean over the seeds: a better log-likelihood "
    "by AIS says that q misses some of it, a worse one that AIS has not converged",
    "per device": "a / b: a time whose runs ran on different devices (a GPU shared by another number of runs, a "
    "CPU with other threads), given per device in the order the runs' footnote names them",
    "stale": "n stale: values made by an earlier version of the metric's estimator, left out of that metric "
    "only; rerun the runs (vlaebench run --force) to refresh them",
}


def _describe(view: View) -> str:
    return f"{view.label}: {view.description}" + (f", {view.better} is better" if view.better else "")


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


def _latex_cell(cell: "str | Cell") -> str:
    if not isinstance(cell, Cell):
        return _latex_escape(cell)
    text = rf"\textbf{{{_latex_escape(cell.text)}}}" if cell.bold else _latex_escape(cell.text)
    return text + _latex_escape(cell.rest) + (rf"\textsuperscript{{{cell.marker}}}" if cell.marker else "")


def _md_cell(cell: "str | Cell") -> str:
    """A cell as Markdown; a footnote marker links to its footnote."""
    if not isinstance(cell, Cell):
        return _md(cell)
    text = f"**{_md(cell.text)}**" if cell.bold else _md(cell.text)
    marker = f" [{str(cell.marker).translate(SUPERSCRIPT)}](#{cell.anchor})" if cell.marker else ""
    return text + _md(cell.rest) + marker


def _booktabs(header: list[str], rows: list[list], align: str = "") -> str:
    line = lambda cells: " & ".join(_latex_cell(c) for c in cells) + " \\\\\n"
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


def _documents(title: str, caption: str, header, rows, notes, align: str = "", footnotes=()) -> tuple[str, str]:
    """The same table as Markdown (GitHub) and as a LaTeX table float, notes below it, then the
    footnotes that give each marked cell's runs (in Markdown, an anchor the marker links to)."""
    markdown_runs = lambda note: ", ".join(f"`{run}`" + (f" ({status})" if status else "") for run, status in note.runs)
    latex_runs = lambda note: ", ".join(
        rf"\texttt{{{_latex_escape(run)}}}" + (f" ({status})" if status else "") for run, status in note.runs
    )
    markdown = (
        f"### {title}\n\n{_md(caption)}\n\n"
        + tabulate([[_md_cell(c) for c in row] for row in rows], header, tablefmt="github", disable_numparse=True)
        + "\n\n"
        + "".join(f"- {_md(n)}\n" for n in notes)
        + "".join(
            f'- <a id="{note.anchor}"></a>{str(note.marker).translate(SUPERSCRIPT)} runs {markdown_runs(note)}; '
            f"{_md(note.where)}\n"
            for note in footnotes
        )
    )
    latex = (
        LATEX_START
        + f"{_latex_escape(caption)}}}\n"
        + _booktabs(header, rows, align)
        + "\\par\\footnotesize\n"
        + "\\\\\n".join(
            [_latex_escape(n) for n in notes]
            + [
                rf"\textsuperscript{{{note.marker}}} runs {latex_runs(note)}; {_latex_escape(note.where)}"
                for note in footnotes
            ]
        )
        + "\n\\end{table}\n"
    )
    return markdown, latex


def render(paper, dataset, budget_name, frame: pd.DataFrame, evaluation: str = "") -> tuple[str, str]:
    """The table of one paper, dataset and budget; ``evaluation`` names a re-evaluation's changed
    settings (``vlaebench evaluate``): its records get their own table, never mixed with the runs'.
    Laid out as the paper's (``layout``): its sign of the likelihood, its best results in bold."""
    compare = paper.evaluation.get("compare", [])
    show = paper.evaluation.get("show", [])
    header, best = ["Method"], []  # best: the columns that may hold a bold best value
    for reference in compare:
        view = _view(paper, reference)
        best += [([column], view.better, _digits(reference)) for column in (len(header), len(header) + 1)]
        header += [f"{view.label} reported", f"{view.label} reproduced", f"Δ {view.label}", "Verdict"]
    for reference in show:
        view = _view(paper, reference)
        best.append(([len(header)], view.better, _digits(reference)))
        header.append(f"{view.label} reproduced")
    header += ["s/epoch", "Runs"]
    title = f"{paper.key} / {dataset} / {budget_name or 'no runs'}" + (
        f" / re-evaluated: {evaluation}" if evaluation else ""
    )
    rows, notes, marks, footnotes = [], [], set(), Footnotes(title)
    here = frame[
        (frame["paper"] == paper.key)
        & (frame["dataset"] == dataset)
        & (frame["budget"] == budget_name)
        & (frame["evaluation"] == evaluation)
    ]
    for method in (m for m, spec in paper.methods.items() if spec.runs_on(dataset)):
        cells, row_notes, row_marks = _row(
            paper, dataset, method, here[here["method"] == method], compare, show, footnotes
        )
        rows.append(cells)
        notes += row_notes
        marks |= row_marks
    if paper.layout.bold_best:
        _bold_best(rows, [group for group in best if group[1]])
    caption = _caption(paper, dataset, budget_name, here)
    if evaluation:
        caption += f" Re-evaluated without retraining (vlaebench evaluate): {evaluation}."
    notes = (
        ["; ".join(_describe(_view(paper, m)) for m in compare + show)]
        + [MARK_NOTES[m] for m in MARK_NOTES if m in marks]
        + notes
    )
    if paper.layout.bold_best:
        notes.append(BOLD_NOTE)
    notes += dataset_notes(paper, dataset)
    if footnotes.notes:
        notes.append(FOOTNOTES_NOTE + "; the runs column's: every run of the row, failed and stale ones too")
    return _documents(title, caption, header, rows, notes, footnotes=footnotes)


def dataset_notes(paper, dataset) -> list[str]:
    """What a table says of its dataset: the spec's note, the training and evaluation settings the
    paper uses on it alone, and what each method sets for it alone."""

    def shown(values: dict) -> str:
        return ", ".join(f"{k} = {specs.shown_value(v)}" for k, v in values.items())

    notes = [f"Dataset: {paper.datasets[dataset]['note']}"] if "note" in paper.datasets[dataset] else []
    for kind in ("training", "evaluation"):
        if paper.datasets[dataset].get(kind):
            settings = shown(paper.datasets[dataset][kind])
            where = f"On {dataset}, every method's {kind} over the paper's"
            notes.append(f"{where}: {settings} (a budget's caps still apply)")
    for method, spec in paper.methods.items():
        for kind, values in spec.on.get(dataset, {}).items():
            what = "dataset options" if kind == "options" else kind
            notes.append(f"{method} on {dataset}: its own {what}: {shown(values)}")
    return notes


BOLD_NOTE = (
    "Bold: the best value of its column as shown (as the paper bolds its best results); reported and "
    "reproduced columns each have their own best"
)
GRID_BOLD_NOTE = "Bold: the best value of the whole grid as shown (as the paper bolds its best results)"
FOOTNOTES_NOTE = (
    "¹, ²…: the runs a reproduced value comes from, with the git commit, budget, hardware and day they finished"
)


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
    everything = frame[
        (frame["paper"] == paper.key)
        & (frame["dataset"] == dataset)
        & (frame["budget"] == budget_name)
        & (frame["evaluation"] == "")
    ]
    here = _kept(everything)
    metric = paper.evaluation["compare"][0]
    view = _view(paper, metric)
    values = list(dict.fromkeys(m.grid_point[key] for m in paper.methods.values() if key in m.grid_point))
    reference = paper.evaluation.get("cost_relative_to")
    reference_runs = here[here["method"] == reference]
    costs = {column: _mean_of(reference_runs, column) for column in SPEED}
    title = f"{paper.key} / {dataset} / {budget_name} / by {key}"
    marks, footnotes = set(), Footnotes(title)

    def cell(method: str) -> Cell:
        runs = here[here["method"] == method]
        reproduced = _reproduced(runs, metric, view.sign)
        marks.update(reproduced.marks)
        extras = [reproduced.rest] if reproduced.rest else []
        reported = paper.reported_for(method, dataset, metric)
        if reported is not None and reported.value is not None:
            extras.append(f" (paper {_fmt(view.sign * reported.value, _digits(metric))})")
        if "amortization_gap" in runs and runs["amortization_gap"].notna().any():
            gap = _reproduced(runs, "amortization_gap")
            extras.append(f"; gap {gap.shown}")
            marks.update(gap.marks)
        if len(runs) and len(reference_runs) and devices(runs) != devices(reference_runs):
            extras.append(f"; costs: not on {reference}'s devices")  # a ratio of two machines' times says nothing
        else:
            for column, label in zip(SPEED, ("train", "test")):
                mine = _mean_of(runs, column)
                if mine is not None and costs[column]:
                    extras.append(f"; {label} ×{mine / costs[column]:.2g}")
        ended = everything[everything["method"] == method]
        if not len(runs) and len(ended):  # nothing to average: how its runs ended ("3 timeout"), not a bare "–"
            return footnotes.mark(Cell(_tally(ended), "".join(extras)), ended)
        return footnotes.mark(Cell(reproduced.text, "".join(extras), reproduced.mean), runs)

    rows = {}
    for name, method in paper.methods.items():
        if not method.runs_on(dataset):
            continue
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
    if paper.layout.bold_best and view.better:  # the best of the whole grid: every cell holds the same metric
        _bold_best(table, [(list(range(1, len(header))), view.better, _digits(metric))])
    caption = _caption(paper, dataset, budget_name, here) + f" In the paper's layout: methods × {key}."
    notes = (
        [
            f"Each cell: {_describe(view)}, mean ± std over the seeds (paper: the reported value)"
            + ("; gap: the amortization gap (nats)" if "amortization_gap" in here else "")
            + (
                f"; train and test: seconds per training epoch and test-time inference latency (q(z|x) and one "
                f"sample, a batch of 100) as multiples of {reference}'s, shown only where both ran on the same "
                f"devices"
                if reference
                else ""
            )
        ]
        + [MARK_NOTES[m] for m in MARK_NOTES if m in marks]
        + ([GRID_BOLD_NOTE] if paper.layout.bold_best else [])
        + dataset_notes(paper, dataset)
        + ([FOOTNOTES_NOTE] if footnotes.notes else [])
    )
    return _documents(title, caption, header, table, notes, footnotes=footnotes)


class Side(NamedTuple):
    """A side of a claim: its values, their summary as shown, how many values were left out as
    stale, and the runs the values come from (none for a number of the spec)."""

    values: list[float] | float
    shown: str
    stale: int
    runs: pd.DataFrame | None = None


def _side(method: str, metric: str, runs: pd.DataFrame, named: bool = False) -> Side:
    """``method``'s current values of ``metric`` (``named``: the summary names the metric)."""
    with_value, stale = _current(runs[runs["method"] == method], metric)
    values = [float(v) for v in with_value[metric]]
    summary = _mean_std(values, _digits(metric)) + (f" (n={len(values)})" if values else "")
    name = f"{method} {metric}" if named else method
    return Side(values, f"{name}: {summary}" + (f" ({stale} stale)" if stale else ""), stale, with_value)


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
            side = _side(claim.method, claim.metric, at_budget, named)
            if isinstance(claim.than, str):
                than = _side(claim.than, claim.than_metric or claim.metric, at_budget, named)
            else:  # a number of the spec: as written there
                than = Side(float(claim.than), f"{float(claim.than):g}", 0)
            verdict = claim_checks.verdict(claim, side.values, than.values)
            timed_apart = than.runs is not None and len(side.runs) and len(than.runs)
            if (
                {claim.metric, claim.than_metric} & set(SPEED)
                and timed_apart
                and devices(side.runs) != devices(than.runs)
            ):
                verdict = {"verdict": "inconclusive", "p": None, "test": "the two sides were timed on other devices"}
            on_ais = None
            if claim.metric == "nll" and not named and isinstance(claim.than, str):
                # the same claim on AIS, which does not use q: IS with each method's own q as the
                # proposal is looser for the method with the poorer q, which tilts an NLL claim
                ais, ais_than = _side(claim.method, "ais_nll", at_budget), _side(claim.than, "ais_nll", at_budget)
                if ais.values and ais_than.values:
                    on_ais = _ais_not_converged(
                        {claim.method: ais.runs, claim.than: ais_than.runs}
                    ) or claim_checks.verdict(claim, ais.values, ais_than.values)
            checked.append(
                {
                    "index": i,
                    "claim": claim,
                    "budget": budget_name,
                    "shown": side.shown,
                    "shown_than": than.shown,
                    "runs": side.runs,
                    "runs_than": than.runs,
                    "stale": bool(side.stale or than.stale),
                    "on_ais": on_ais,
                    **verdict,
                }
            )
    return checked


def _ais_not_converged(runs_by_method: dict[str, pd.DataFrame]) -> dict | None:
    """An inconclusive AIS verdict where a side's AIS reads above its own importance-sampled NLL on the
    same points (the mean over its seeds of the paired difference): both are stochastic bounds on
    log p(x) from below, so an AIS looser than IS with q has not converged and cannot check it."""
    above = []
    for method, runs in runs_by_method.items():
        paired = runs.get("ais_nll.minus_importance_sampled")
        if paired is not None and paired.notna().any() and (difference := float(paired.dropna().mean())) > 0:
            above.append(f"{method} +{_fmt(difference, _digits('ais_nll'))}")
    if not above:
        return None
    why = f"AIS above IS: {', '.join(above)}"
    return {"verdict": "inconclusive", "p": None, "test": "AIS not converged", "why": why}


def render_claims(paper, frame: pd.DataFrame) -> tuple[str, str]:
    """One row per claim and budget at which its dataset has runs (a claim without any: one row)."""
    header = ["Claim", "Dataset", "Metric", "Budget", "Method", "Than", "On AIS", "p", "Verdict"]
    rows, title = [], f"{paper.key} / claims"
    footnotes = Footnotes(title)
    checked = claim_verdicts(paper, frame)
    for row in checked:
        claim = row["claim"]
        than = Cell(row["shown_than"])
        rows.append(
            [
                f"({row['index']}) {claim.text}",
                claim.dataset,
                f"{_label(claim.metric)}, {claim.direction}{_claimed_by(claim)}",
                row["budget"] or "–",
                footnotes.mark(Cell(row["shown"]), row["runs"]),
                than if row["runs_than"] is None else footnotes.mark(than, row["runs_than"]),
                _on_ais(row["on_ais"]),
                "–" if row["p"] is None else f"{row['p']:.3g}",
                row["verdict"],
            ]
        )
    notes = [f"({i}) {claim.source}; level {claim.level:g}" for i, claim in enumerate(paper.claims, 1)]
    any_stale = any(row["stale"] for row in checked)
    notes.insert(
        0,
        "Verdict: holds when a one-sided Welch t-test over the seeds (ok or partial runs, current config; against "
        "a number, a one-sample t-test) finds the claimed effect at the claim's level; fails otherwise; "
        "inconclusive with fewer than 3 seeds on a side, "
        "or for a time when the two sides ran on different devices; "
        "no runs when a side has none. A budget below the paper's does not test the paper, only how far its "
        "claim carries at that cost. On AIS: a claim on the NLL tested in the same way on the AIS estimate "
        "(its first ais_points test points), where both sides have one: importance sampling with each method's "
        "own q as the proposal is looser for the poorer q, which can make a claim hold that AIS does not bear out; "
        "inconclusive where a side's AIS reads above its importance-sampled NLL on the same points (AIS above IS: "
        "looser than q, so not converged).",
    )
    if any_stale:
        notes.insert(1, MARK_NOTES["stale"])
    if footnotes.notes:
        notes.append(FOOTNOTES_NOTE)
    caption = f"{paper.title} ({paper.key}): the paper's claims, checked against the seeds."
    return _documents(title, caption, header, rows, notes, align="p{5cm}llllllrl", footnotes=footnotes)


def _claimed_by(claim) -> str:
    """How far the claim's effect must go: by a factor, by a margin, or, for a negative margin, at
    most that much the wrong way ("lower, or at most 1 above")."""
    if claim.ratio:
        return f" by ×{claim.ratio:g}"
    if claim.margin < 0:
        return f", or at most {-claim.margin:g} {'above' if claim.direction == 'lower' else 'below'}"
    return f" by {claim.margin:g}" if claim.margin else ""


def _on_ais(verdict: dict | None) -> str:
    if verdict is None:
        return "–"
    if "why" in verdict:
        return f"{verdict['verdict']} ({verdict['why']})"
    return verdict["verdict"] + ("" if verdict["p"] is None else f" (p {verdict['p']:.3g})")


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


def budget_order():
    """A sort key of budget names, smallest budget first (budgets.toml's order; unknown ones last)."""
    order = list(specs.load_budgets())
    return lambda name: order.index(name) if name in order else len(order)


class PaperTable(NamedTuple):
    stem: str  # its file name without the suffix
    markdown: str
    latex: str
    dataset: str | None  # None: the claims table
    budget: str | None  # None: the claims, or a dataset without runs (the numbers to reproduce)


def paper_tables(paper, frame: pd.DataFrame) -> list[PaperTable]:
    """Every table of ``paper``, in the order the tables' index and the report show them: for each
    dataset and budget (smallest budget first) the table of its runs, one per grid key and one per
    re-evaluation of them; a dataset without runs, its reported numbers; then the claims."""
    key, mine, order = paper.key, frame[frame["paper"] == paper.key], budget_order()
    tables = []
    for dataset in paper.datasets:
        budgets = sorted(mine.loc[mine["dataset"] == dataset, "budget"].unique(), key=order)
        if not budgets and any(r.dataset == dataset for r in paper.reported):
            tables.append(PaperTable(f"{key}__{dataset}__no-runs", *render(paper, dataset, None, frame), dataset, None))
        for budget_name in budgets:
            stem = f"{key}__{dataset}__{budget_name}"
            tables.append(PaperTable(stem, *render(paper, dataset, budget_name, frame), dataset, budget_name))
            for grid_key in grid_keys(paper):
                table = render_grid(paper, dataset, budget_name, frame, grid_key)
                tables.append(PaperTable(f"{stem}__by-{grid_key}", *table, dataset, budget_name))
            at_budget = mine[(mine["dataset"] == dataset) & (mine["budget"] == budget_name)]
            for evaluation in sorted(set(at_budget["evaluation"]) - {""}):
                named = f"{stem}__{re.sub(r'[^A-Za-z0-9]+', '-', evaluation)}"
                tables.append(
                    PaperTable(named, *render(paper, dataset, budget_name, frame, evaluation), dataset, budget_name)
                )
    if paper.claims:
        tables.append(PaperTable(f"{key}__claims", *render_claims(paper, frame), None, None))
    return tables


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
    tables = [table for key in specs.paper_keys() for table in paper_tables(specs.load_paper(key), frame)]
    files = {}
    for table in tables:
        files[f"{table.stem}.md"], files[f"{table.stem}.tex"] = table.markdown, table.latex
    index = INDEX_START + " from the run records; do not edit.\n\n"
    index += "\n".join(table.markdown for table in tables)
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
