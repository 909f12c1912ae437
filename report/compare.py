"""``vlaebench compare``: what regressed between a baseline's records (the previous night) and the
current ones, from the records and the specs alone.

- **Quality**: each metric a paper compares (its spec's ``compare``) for each method, dataset and
  budget that both sides ran: the mean over the kept seeds got worse by more than the tolerance of the
  spec's reported number for it, or, where the spec reports none, by more than ``quality_threshold``
  of the baseline's value (relative). A reported number whose verdict went from within tolerance to
  outside is a regression too.
- **Claims**: a claim whose verdict changed at a budget (``holds`` to anything else is a regression;
  any other change is listed).
- **Speed**: seconds per training epoch and test-time inference latency that grew by more than
  ``speed_threshold`` (relative), between runs on the same device model only (a CPU's with the same
  number of threads; another model is not a regression, and is said so).

Runs of different budgets are never compared with each other. Returns the findings and a Markdown
summary fit for a CI job page.
"""

import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks import specs
from benchmarks.metrics import METRICS, metric_reference
from report import generate


@dataclass(frozen=True)
class Finding:
    kind: str  # quality | reported | claim | speed | skipped
    regression: bool
    what: str  # paper / dataset / budget / method: metric
    baseline: str
    current: str
    why: str


def _means(frame: pd.DataFrame, paper: str, reference: str) -> dict[tuple, tuple[float, int, str]]:
    """(method, dataset, budget) -> (mean over the kept seeds with a current value, seeds, device models)."""
    kept = generate._kept(frame[(frame["paper"] == paper) & (frame["evaluation"] == "")])
    with_value, _ = generate._current(kept, reference)
    found = {}
    for key, group in with_value.groupby(["method", "dataset", "budget"]):
        devices = "; ".join(generate.devices(group))  # a CPU's with its threads: its speed depends on them
        found[key] = (statistics.mean(float(v) for v in group[reference]), len(group), devices)
    return found


def _worse(name: str, baseline: float, current: float) -> float | None:
    """How much worse ``current`` is than ``baseline`` in the metric's direction (negative: better);
    None for a metric with no better direction (the KL), whose changes are listed, never regressions."""
    better = METRICS[name].better
    if better is None:
        return None
    return current - baseline if better == "lower" else baseline - current


def _shown(value: float, seeds: int, digits: int) -> str:
    return f"{value:.{digits}f} (n={seeds})"


def _quality(paper, before: pd.DataFrame, after: pd.DataFrame, threshold: float) -> list[Finding]:
    findings = []
    for reference in paper.evaluation.get("compare", []):
        name = metric_reference(reference)[0]
        digits = METRICS[name].digits
        old, new = _means(before, paper.key, reference), _means(after, paper.key, reference)
        for (method, dataset, budget), (value, seeds, _) in sorted(new.items()):
            if (method, dataset, budget) not in old:
                continue
            was, seeds_before, _ = old[(method, dataset, budget)]
            reported = paper.reported_for(method, dataset, reference)
            known = reported is not None and reported.value is not None
            tolerance = reported.tolerance if known else threshold * abs(was)
            what = f"{paper.key} / {dataset} / {budget} / {method}: {reference}"
            worse = _worse(name, was, value)
            limit = f"the spec's tolerance {tolerance:.3g}" if known else f"the threshold {tolerance:.3g}"
            shown = _shown(was, seeds_before, digits), _shown(value, seeds, digits)
            if worse is not None and worse > tolerance:
                findings.append(Finding("quality", True, what, *shown, f"worse by {worse:.3g}, beyond {limit}"))
            elif worse is None and abs(value - was) > tolerance:
                why = f"changed by {value - was:+.3g}, beyond {limit} (neither direction is better)"
                findings.append(Finding("quality", False, what, *shown, why))
            if known and abs(was - reported.value) <= reported.tolerance < abs(value - reported.value):
                why = f"reported {reported.value:g} ± {reported.tolerance:g}: was within tolerance, now outside"
                findings.append(
                    Finding(
                        "reported", True, what, _shown(was, seeds_before, digits), _shown(value, seeds, digits), why
                    )
                )
    return findings


def _claims(paper, before: pd.DataFrame, after: pd.DataFrame) -> list[Finding]:
    verdicts_before = {(r["index"], r["budget"]): r["verdict"] for r in generate.claim_verdicts(paper, before)}
    findings = []
    for row in generate.claim_verdicts(paper, after):
        was = verdicts_before.get((row["index"], row["budget"]))
        if was is not None and was != row["verdict"]:
            what = f"{paper.key} / claim ({row['index']}) {row['claim'].text} / {row['budget']}"
            findings.append(Finding("claim", was == "holds", what, was, row["verdict"], "the verdict changed"))
    return findings


def _speed(paper, before: pd.DataFrame, after: pd.DataFrame, threshold: float) -> list[Finding]:
    findings = []
    for name in generate.SPEED:
        old, new = _means(before, paper.key, name), _means(after, paper.key, name)
        for (method, dataset, budget), (value, _, devices) in sorted(new.items()):
            if (method, dataset, budget) not in old:
                continue
            was, _, devices_before = old[(method, dataset, budget)]
            what = f"{paper.key} / {dataset} / {budget} / {method}: {name}"
            if devices != devices_before:
                why = f"not compared: other device models ({devices_before}, then {devices})"
                findings.append(Finding("skipped", False, what, f"{was:.3g}", f"{value:.3g}", why))
            elif value > was * (1 + threshold):
                why = f"{value / was:.2f}× the baseline's, beyond {1 + threshold:g}×"
                findings.append(Finding("speed", True, what, f"{was:.3g}", f"{value:.3g}", why))
    return findings


def compare(
    baseline: Path, results: Path, quality_threshold: float = 0.02, speed_threshold: float = 0.1
) -> list[Finding]:
    """Every finding of ``results`` against ``baseline``, paper by paper."""
    before, after = generate.annotated_frame(baseline), generate.annotated_frame(results)
    findings = []
    for key in specs.paper_keys():
        paper = specs.load_paper(key)
        findings += _quality(paper, before, after, quality_threshold)
        findings += _claims(paper, before, after)
        findings += _speed(paper, before, after, speed_threshold)
    return findings


def summary(findings: list[Finding], baseline: Path, results: Path) -> str:
    """Markdown for a CI job page: what regressed first, then the other changes."""
    from tabulate import tabulate

    regressions = [f for f in findings if f.regression]
    head = f"## vlaebench compare\n\n{results} against the baseline {baseline}: "
    head += f"**{len(regressions)} regression(s)**.\n\n" if regressions else "no regression.\n\n"
    rows = lambda chosen: [[f.kind, f.what, f.baseline, f.current, f.why] for f in chosen]  # noqa: E731
    header = ["Kind", "What", "Baseline", "Current", "Why"]
    text = head
    if regressions:
        text += tabulate(rows(regressions), header, tablefmt="github", disable_numparse=True) + "\n\n"
    others = [f for f in findings if not f.regression]
    if others:
        text += "Other changes:\n\n" + tabulate(rows(others), header, tablefmt="github", disable_numparse=True) + "\n"
    return text
