"""The report reviewers read (``vlaebench report``): from the run records and the paper specs alone
(never trains, never touches the network) it writes, into the output folder,

- ``README.md``: readable on GitHub. A summary first, a row per paper: its reported numbers within
  tolerance, outside, missing (not yet transcribed) and not run; its claims that hold, fail, are
  inconclusive or have no runs, and how many of its claims on the NLL hold on AIS too; the budgets
  and the hardware of its runs. Then per paper its tables and claims (those of ``vlaebench tables``,
  also written as ``.md`` and ``.tex`` under ``tables/``),
  its figures, the pictures its runs drew (samples, reconstructions, the method's own), and the
  provenance of every run, failed and stale ones included (never silently dropped);
- ``index.html``: the same page, self-contained (styles inline, every image embedded as a data URI;
  git-ignored in this repository: at some 10 MB it would add its size to the history at each regeneration);
- ``figures/*.png`` (matplotlib): per paper, dataset and budget, the validation ELBO against the
  epoch and against training wall-clock; the test NLL against training wall-clock, every method on
  one axis (the comparison at equal compute); the inference gaps, amortization and approximation
  stacked; the test-time inference latency.

A verdict is given at each budget separately: runs of different budgets are never averaged
together. Reruns on unchanged records give byte-identical files (PNGs carry no timestamp).

The folder may hold other files (``generate.py`` lives beside ``report/README.md``): a generation
overwrites ``README.md`` and ``index.html`` only where it wrote them (they carry its mark), and
in ``figures/`` and ``tables/`` only the files its manifests list.
"""

import base64
import itertools
import os
import re
from pathlib import Path

import pandas as pd

from benchmarks import UserError, records, specs
from benchmarks.metrics import METRICS
from report import generate

README_START = "# vlaebench report\n"
HTML_MARK = '<meta name="generator" content="vlaebench report">'
FIGURES_MANIFEST = ".vlaebench-figures"
REPORTED_VERDICTS = ("within tolerance", "outside", "missing", "not run")
CLAIM_VERDICTS = ("holds", "fails", "inconclusive", "no runs")
SUMMARY_HEADER = ["Paper", "Reported numbers", "Claims", "Budgets", "Hardware"]
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


JUDGED = ("within tolerance", "outside", "holds", "fails", "inconclusive")  # a verdict from runs


def _largest(rows: list[dict], budget_order) -> list[dict]:
    """Of each item's rows (one per budget), the one at the largest budget whose runs judge it (a
    claim: both sides have runs); else its row without runs."""
    best = {}
    for row in rows:
        key = id(row.get("reported") or row.get("claim"))
        rank = (row["verdict"] in JUDGED, budget_order(row["budget"]))
        if key not in best or rank > best[key][0]:
            best[key] = (rank, row)
    return [row for _, row in best.values()]


def summary_rows(frame: pd.DataFrame, papers: list) -> list[list[str]]:
    """Per paper: its reported numbers by verdict and its claims by verdict, each at the largest
    budget with runs of it; the budgets and devices of its kept runs."""
    rows, budget_order = [], generate.budget_order()
    for paper in papers:
        key = paper.key
        reported = {verdict: 0 for verdict in REPORTED_VERDICTS}
        for row in _largest(generate.reported_verdicts(paper, frame), budget_order):
            if row["reported"].value is None:
                reported["missing"] += 1
            elif row["verdict"] in ("within tolerance", "outside"):
                reported[row["verdict"]] += 1
            else:  # no runs, or only stale ones
                reported["not run"] += 1
        claims, on_ais = {verdict: 0 for verdict in CLAIM_VERDICTS}, []
        for row in _largest(generate.claim_verdicts(paper, frame), budget_order):
            claims[row["verdict"]] += 1
            if row["on_ais"] is not None:
                on_ais.append("not converged" if "why" in row["on_ais"] else row["on_ais"]["verdict"])
        kept = generate._kept(frame[frame["paper"] == key])
        budgets = sorted(kept["budget"].unique(), key=budget_order)
        devices = generate.devices(kept)
        rows.append(
            [
                f"[{key}](#{key})",
                ", ".join(f"{n} {verdict}" for verdict, n in reported.items()),
                ", ".join(f"{n} {verdict}" for verdict, n in claims.items()) + _on_ais_summary(on_ais),
                ", ".join(budgets) or "no runs",
                "; ".join(devices) or "–",
            ]
        )
    return rows


def _on_ais_summary(verdicts: list[str]) -> str:
    """The summary's AIS part: how many of the claims that AIS could test hold on it, and on how many a
    side's AIS had not converged."""
    unconverged = verdicts.count("not converged")
    tested = len(verdicts) - unconverged
    parts = ([f"{verdicts.count('holds')} of {tested} hold"] if tested else []) + (
        [f"{unconverged} not converged"] if unconverged else []
    )
    return f"; on AIS {', '.join(parts)}" if parts else ""


# --- figures -------------------------------------------------------------------------------------


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str, caption: str) -> tuple[str, str]:
    """``fig`` as ``out/name``; its (name, caption)."""
    fig.tight_layout()
    fig.savefig(out / name, format="png", dpi=100, metadata={"Software": None})  # no version, no date: reproducible
    _figure().close(fig)
    return name, caption


def _method_colours(methods: list[str]) -> dict[str, tuple]:
    palette = _figure().get_cmap("tab10")
    return {method: palette(i % 10) for i, method in enumerate(methods)}


def paper_figures(
    paper, dataset: str, budget: str, kept: pd.DataFrame, by_id: dict, out: Path
) -> list[tuple[str, str]]:
    """The figures of one paper, dataset and budget (kept runs only) into ``out``: their (file name,
    caption)."""
    plt = _figure()
    stem = f"{paper.key}__{dataset}__{budget}"
    methods = [m for m in paper.methods if m in set(kept["method"])]
    colours = _method_colours(methods)
    made = []

    lines = []  # (method, seed, epochs, validation ELBOs, seconds an epoch)
    for method in methods:
        for row in kept[kept["method"] == method].sort_values("seed").itertuples():
            curves, timing = by_id[row.run_id]["curves"], by_id[row.run_id]["timing"]
            points = [
                (e, v) for e, v in zip(curves.get("epoch") or [], curves.get("valid_elbo") or []) if v is not None
            ]
            if points:
                per_epoch = (timing.get("train_wall_s") or 0) / max(1, timing.get("epochs") or len(points))
                lines.append((method, *zip(*points), per_epoch))
    if lines:
        fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(10, 3.6))
        labelled = set()
        for method, epochs, valid, per_epoch in lines:
            label = None if method in labelled else method
            labelled.add(method)
            by_epoch.plot(epochs, valid, color=colours[method], label=label)
            by_time.plot([e * per_epoch for e in epochs], valid, color=colours[method])
        for axis, xlabel in ((by_epoch, "epoch"), (by_time, "training wall-clock (s), epochs of equal length")):
            axis.set_xlabel(xlabel)
            axis.set_ylabel("validation ELBO (nats)")
            axis.grid(alpha=0.3)
        by_epoch.legend(fontsize=8)
        caption = "Validation ELBO per epoch, each seed a line, against the epoch and the training wall-clock."
        made.append(_save(fig, out, f"{stem}__curves.png", caption))

    timed = kept[kept["nll"].notna() & (kept["train_wall_s"] > 0)] if {"nll", "train_wall_s"} <= set(kept) else kept[:0]
    if len(timed):
        view = generate._view(paper, "nll")  # the paper's sign: NLL, or log p(x)
        fig, axis = plt.subplots(figsize=(6, 4))
        for method in methods:
            mine = timed[timed["method"] == method]
            if len(mine):
                axis.scatter(mine["train_wall_s"], view.sign * mine["nll"], color=colours[method], label=method)
        axis.set_xscale("log")
        axis.set_xlabel("training wall-clock (s, log scale)")
        axis.set_ylabel(f"test {view.label} (nats)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        caption = (
            f"Test {view.label} ({view.better} is better) against training wall-clock: every method of the paper "
            "at one budget, each seed a point."
        )
        made.append(_save(fig, out, f"{stem}__nll_vs_time.png", caption))

    gaps = [m for m in methods if kept.loc[kept["method"] == m].get("amortization_gap", pd.Series()).notna().any()]
    if gaps:
        fig, axis = plt.subplots(figsize=(max(4, 1.2 * len(gaps)), 3.6))
        amortization = [kept.loc[kept["method"] == m, "amortization_gap"].mean() for m in gaps]
        approximation = [kept.loc[kept["method"] == m, "approximation_gap"].mean() for m in gaps]
        axis.bar(gaps, approximation, label="approximation gap")
        axis.bar(gaps, amortization, bottom=approximation, label="amortization gap")
        axis.set_ylabel("nats (mean over seeds)")
        axis.legend(fontsize=8)
        axis.tick_params(axis="x", rotation=30, labelsize=8)
        caption = "The inference gap split into approximation and amortization (Cremer et al. 2018), mean over seeds."
        made.append(_save(fig, out, f"{stem}__gaps.png", caption))

    if "inference_latency_ms" in kept and kept["inference_latency_ms"].notna().any():
        fig, axis = plt.subplots(figsize=(max(4, 1.2 * len(methods)), 3.6))
        latency = [kept.loc[kept["method"] == m, "inference_latency_ms"].mean() for m in methods]
        axis.bar(methods, latency, color=[colours[m] for m in methods])
        axis.set_ylabel(METRICS["inference_latency_ms"].label)
        axis.set_yscale("log")
        axis.tick_params(axis="x", rotation=30, labelsize=8)
        caption = "Test-time inference cost: q(z|x) and one sample for a batch, median ms (log scale), mean over seeds."
        made.append(_save(fig, out, f"{stem}__inference_cost.png", caption))
    return made


# --- the page ------------------------------------------------------------------------------------


def _provenance(runs: list[dict], frame: pd.DataFrame, budget_order) -> list[list[str]]:
    current = dict(zip(frame["run_id"], frame["current"]))
    rows = []
    for record in sorted(
        runs, key=lambda r: (r["dataset"], budget_order(r["budget"]), r["method"], r["seed"], r["run_id"])
    ):
        provenance, timing = record["provenance"], record["timing"]
        sha = (provenance.get("git_sha") or "?")[:10] + (" (dirty)" if provenance.get("git_dirty") else "")
        rows.append(
            [
                f"`{record['run_id']}`",
                record["method"],
                record["dataset"],
                record["budget"],
                str(record["seed"]),
                record["status"] + ("" if current.get(record["run_id"]) else ", stale"),
                sha,
                generate.device_label(
                    timing.get("device_name"), timing.get("threads"), timing.get("runs_sharing_device")
                ),
                (provenance.get("finished") or "?")[:19],
            ]
        )
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, header, tablefmt="github", disable_numparse=True) + "\n"


def _run_pictures(paper, kept: pd.DataFrame, by_id: dict, results: Path, image) -> list[str]:
    """The pictures the first seed of each method drew (``figures`` of its record), with captions."""
    lines = []
    for method in paper.methods:
        runs = kept[kept["method"] == method].sort_values("seed")
        if not len(runs):
            continue
        first = by_id[runs.iloc[0]["run_id"]]
        for name, path in sorted((first.get("figures") or {}).items()):
            if (results / path).is_file():
                caption = f"{method}, {name.replace('_', ' ')} (seed {first['seed']}, run `{first['run_id']}`)"
                lines.append(f"![{caption}]({image(results / path)})\n\n*{caption}.*\n")
    return lines


def write_report(results: Path, out: Path) -> list[Path]:
    """Write the whole report into ``out`` (see the module's docstring); returns the files written."""
    all_records = records.load_all(results)
    frame = generate.annotated_frame(results, all_records)
    by_id = {record["run_id"]: record for record in all_records}
    papers = [specs.load_paper(key) for key in specs.paper_keys()]
    budget_order = generate.budget_order()
    _refuse_foreign(out)
    written = generate.write_tables(results, out / "tables")
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    drawn = []  # the figures' file names

    def image(path: Path) -> str:  # resolved once the page's form is known: a relative path, or a data URI
        return f"{{{{image:{path}}}}}"

    lines = [
        README_START,
        "Generated by `vlaebench report` from the run records and the paper specs; do not edit. Every number is a",
        "run's that the committed code performed; the tables are also in [tables/](tables/README.md) (Markdown",
        "and LaTeX).\n",
        "## Summary\n",
        "A reported number is judged, and a claim checked, at the largest budget whose runs judge it (for a",
        "claim, both sides have runs; each budget's own verdicts are in the paper's tables); *missing*: not yet",
        "transcribed from the paper; *not run*: no current run of its method and dataset; *on AIS*: of the claims",
        "on the NLL whose two sides have an AIS estimate, how many hold on it too (the claims tables' *On AIS*),",
        "and on how many a side's AIS reads above its importance-sampled NLL on the same points (not converged).\n",
        _table(SUMMARY_HEADER, summary_rows(frame, papers)),
    ]
    for paper in papers:
        key = paper.key
        mine = frame[frame["paper"] == key]
        lines += [f'<a id="{key}"></a>\n', f"## {paper.title} ({key})\n", f"{paper.citation}.\n"]
        tables = generate.paper_tables(paper, frame)
        # each dataset and budget: its tables (the same as vlaebench tables'), then its figures and pictures
        for (dataset, budget_name), group in itertools.groupby(tables, key=lambda t: (t.dataset, t.budget)):
            lines += [_demote(table.markdown) for table in group]
            if dataset is None or budget_name is None:  # the claims; a dataset without runs
                continue
            kept = generate._kept(
                mine[(mine["dataset"] == dataset) & (mine["budget"] == budget_name) & (mine["evaluation"] == "")]
            )
            if not len(kept):
                continue
            for name, caption in paper_figures(paper, dataset, budget_name, kept, by_id, figures_dir):
                drawn.append(name)
                lines.append(f"![{caption}]({image(figures_dir / name)})\n\n*{caption}*\n")
            lines += _run_pictures(paper, kept, by_id, results, image)
        runs = [r for r in all_records if r["paper"] == key]
        lines.append(f"#### {key}: provenance of every run\n")
        if runs:
            lines.append(
                "Every record of the paper, kept or not (stale: made under an older spec or method version).\n\n"
                + _table(
                    ["Run", "Method", "Dataset", "Budget", "Seed", "Status", "Git", "Device", "Finished (UTC)"],
                    _provenance(runs, frame, budget_order),
                )
            )
        else:
            lines.append("No runs.\n")
    template = "\n".join(lines)
    readme = _resolve(template, lambda path: os.path.relpath(path, out).replace(os.sep, "/"))
    page = _html(_resolve(template, _data_uri))
    _write_atomically(out / "README.md", readme)
    _write_atomically(out / "index.html", page)
    _replace_figures(figures_dir, drawn)
    return written + [out / "README.md", out / "index.html"] + [figures_dir / name for name in drawn]


def _refuse_foreign(out: Path) -> None:
    """Before anything is written: ``README.md`` and ``index.html`` must be absent or the report's,
    and ``figures/`` hold only the figures its manifest lists."""
    for name, mark in (("README.md", README_START), ("index.html", HTML_MARK)):
        path = out / name
        if path.is_symlink() or (
            path.exists() and mark not in path.read_text(encoding="utf-8", errors="replace")[:500]
        ):
            raise UserError(
                f"{path} exists and was not written by `vlaebench report`; move it out or pass another --out"
            )
    figures = out / "figures"
    listed = _listed_figures(figures)
    foreign = (
        sorted(p.name for p in figures.iterdir() if p.name != FIGURES_MANIFEST and p.name not in listed)
        if figures.is_dir()
        else []
    )
    if foreign:
        raise UserError(
            f"{figures} holds files `vlaebench report` did not write ({', '.join(foreign[:3])}); "
            "move them out or pass another --out"
        )


def _listed_figures(figures: Path) -> set[str]:
    manifest = figures / FIGURES_MANIFEST
    if not manifest.is_file():
        return set()
    return {
        line.strip()
        for line in manifest.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }


def _replace_figures(figures: Path, drawn: list[str]) -> None:
    """Remove the figures of an earlier generation that this one did not draw, and list this one's."""
    for name in sorted(_listed_figures(figures) - set(drawn)):
        path = figures / name
        if Path(name).name == name and path.is_file() and not path.is_symlink():
            path.unlink()
    text = "# Written by `vlaebench report`, which overwrites or removes only the files listed here.\n"
    (figures / FIGURES_MANIFEST).write_text(text + "".join(f"{name}\n" for name in sorted(drawn)), encoding="utf-8")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _demote(markdown: str) -> str:
    """A table document of ``generate`` as a subsection of the report."""
    return re.sub(r"^### ", "#### ", markdown, flags=re.M)


def _resolve(template: str, reference) -> str:
    return re.sub(r"\{\{image:([^}]+)\}\}", lambda m: reference(Path(m[1])), template)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html(markdown_text: str) -> str:
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        + HTML_MARK
        + "\n<title>vlaebench report</title>\n<style>"
        + STYLE
        + "</style>\n</head>\n<body>\n"
        + body
        + "\n</body>\n</html>\n"
    )
