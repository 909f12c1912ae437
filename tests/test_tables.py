"""The tables, from hand-written records: aggregation, verdicts, digits, directions, gap convergence,
estimator versions, partial runs, LaTeX that pdflatex takes, the output folder's manifest and the
exact files (golden)."""

import dataclasses
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import compile_latex, table_rows, tree_digest

from benchmarks import UserError, records, specs
from benchmarks.metrics import METRICS
from report import generate

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
REPO = HERE.parent


def _record(method, seed, nll, kl, status="ok", stale=False, s_per_epoch=2.0):
    paper = specs.load_paper("demo")
    config = specs.resolve(paper, method, "digits", specs.budget("smoke"), seed)
    if stale:  # a record made under an earlier version of the spec
        config["hyper"] = {**config["hyper"], "latent_dim": 99}
        config["identity"] = {**config["identity"], "hyper": {**config["identity"]["hyper"], "latent_dim": 99}}
    metric = lambda v: {"value": v, "sem": 0.1, "unit": "nats", "estimator": {"name": "hand-written"}}
    return config, {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": specs.run_id(config),
        "paper": "demo",
        "method": method,
        "dataset": "digits",
        "budget": "smoke",
        "seed": seed,
        "config": config,
        "status": status,
        "stop_reason": "max_epochs",
        "error": None,
        "curves": {},
        "metrics": {} if status != "ok" else {"nll": metric(nll), "kl": metric(kl)},
        "timing": {"s_per_epoch": s_per_epoch, "device_name": "Hand-written CPU"},
        "provenance": {},
    }


def _write(results: Path, method: str, seed: int, metrics: dict, status: str = "ok", timing: dict | None = None):
    """A record of ``method`` and ``seed`` with ``metrics`` (name -> value, or a whole entry; a timing
    metric goes into the timing block)."""
    config, record = _record(method, seed, None, None, status="failed")
    record["status"] = status
    record["timing"].update(timing or {})
    for name, entry in metrics.items():
        if METRICS[name].timing:
            record["timing"][name] = entry
        else:
            entry = entry if isinstance(entry, dict) else {"value": entry}
            record["metrics"][name] = {"unit": "any", "estimator": {"name": "hand-written"}, **entry}
    records.write(record, records.path_for(results, config, record["run_id"]))


def _spec(tmp_path, monkeypatch, *replacements, append: str = "") -> None:
    """The demo spec with its text replaced (old, new pairs) and ``append`` added, as the only spec."""
    text = (HERE / "specs" / "demo.toml").read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "specs").mkdir(exist_ok=True)
    (tmp_path / "specs" / "demo.toml").write_text(text + append)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path / "specs"))


@pytest.fixture
def tables(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    for args in [
        ("alpha", 0, 90.0, 10.0),
        ("alpha", 1, 91.0, 11.0),
        ("alpha", 2, 92.0, 12.0),
        ("alpha", 3, 50.0, 1.0, "ok", True),  # stale: left out
        ("beta", 0, 100.0, 20.0),
        ("beta", 1, 102.0, 22.0),
        ("beta", 2, None, None, "diverged"),
        ("gamma", 0, 88.123, 5.0),
    ]:
        config, record = _record(*args)
        records.write(record, records.path_for(tmp_path / "results", config, record["run_id"]))
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    return tmp_path / "out"


def _notes(markdown: str) -> list[str]:
    return [line[2:] for line in markdown.splitlines() if line.startswith("- ")]


def test_rows_aggregate_ok_current_runs_and_give_verdicts(tables):
    rows = table_rows((tables / "demo__digits__smoke.md").read_text())
    # reported, reproduced, delta, verdict, KL reproduced, s/epoch, runs
    assert rows["alpha"] == [
        "90.50",
        "91.00 ± 1.00",
        "+0.50",
        "within tolerance",
        "11.00 ± 1.00",
        "2.00",
        "3 ok, 1 stale",
    ]
    assert rows["beta"] == [
        "95.00 ± 0.30",
        "101.00 ± 1.41",
        "+6.00",
        "outside",
        "21.00 ± 1.41",
        "2.00",
        "1 diverged, 2 ok",
    ]
    assert rows["gamma"] == ["missing", "88.12", "–", "not reported", "5.00", "2.00", "1 ok"]


def test_notes_name_sources_and_where_to_transcribe_missing_numbers(tables):
    markdown = (tables / "demo__digits__smoke.md").read_text()
    assert "alpha NLL: Demo 2026, Table 1 (tolerance ±1)" in markdown
    assert "gamma NLL: missing; transcribe from Demo 2026, Table 3" in markdown
    assert "budget smoke" in markdown


@pytest.mark.parametrize(
    "name", ["demo__digits__smoke.md", "demo__digits__smoke.tex", "demo__claims.md", "demo__claims.tex", "README.md"]
)
def test_files_match_the_golden_copies(tables, name):
    assert (tables / name).read_text() == (GOLDEN / name).read_text()


def test_tables_never_train(tables, tmp_path, monkeypatch):
    import benchmarks.train

    monkeypatch.setattr(benchmarks.train, "run", lambda *a, **k: pytest.fail("tables trained a model"))
    generate.write_tables(tmp_path / "results", tmp_path / "again")
    assert (tmp_path / "again" / "README.md").read_text() == (tables / "README.md").read_text()


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_any_metric_can_be_a_column(metric, tmp_path, monkeypatch):
    _spec(tmp_path, monkeypatch, ('show = ["kl"]', f'show = ["{metric}"]'))
    for seed, value in ((0, 3.0), (1, 5.0)):
        entry = value if METRICS[metric].timing else {"value": value, "version": METRICS[metric].version}
        _write(tmp_path / "results", "alpha", seed, {"nll": 90.0, metric: entry})
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    markdown = (tmp_path / "out" / "demo__digits__smoke.md").read_text()
    assert f"{METRICS[metric].label} reproduced" in markdown
    digits = METRICS[metric].digits
    assert table_rows(markdown)["alpha"][4] == f"{4:.{digits}f} ± {math.sqrt(2):.{digits}f}"
    assert generate._md(METRICS[metric].description) in markdown  # as Markdown writes it (q* escaped)


# --- digits per metric ---------------------------------------------------------------------------------------------


def test_each_metric_prints_with_its_own_digits(tmp_path, monkeypatch):
    """bits/dim of 85.00 and 86.76 nats differ in the third decimal; a cluster accuracy of 0.5734 is
    0.573; active units are a mean of counts; examples per second are whole."""
    _spec(
        tmp_path,
        monkeypatch,
        ('compare = ["nll"]', 'compare = ["bits_per_dim"]'),
        ('show = ["kl"]', 'show = ["cluster_acc", "active_units", "examples_per_s"]'),
        ('metric = "nll"\nvalue = 90.5', 'metric = "bits_per_dim"\nvalue = 0.1597'),
        ('metric = "nll"\nmethod = "alpha"\nthan = 95.0', 'metric = "cluster_acc"\nmethod = "alpha"\nthan = 0.5'),
        ('direction = "lower"\n\n[[claims]]', 'direction = "higher"\n\n[[claims]]'),
    )
    for seed, (bits, acc, units, speed) in enumerate([(0.1564, 0.5734, 20, 1234.4), (0.1566, 0.5754, 21, 1301.2)]):
        _write(
            tmp_path / "results",
            "alpha",
            seed,
            {
                "bits_per_dim": bits,
                "cluster_acc": acc,
                "active_units": {"value": units, "version": METRICS["active_units"].version},
                "examples_per_s": speed,
            },
        )
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    rows = table_rows((tmp_path / "out" / "demo__digits__smoke.md").read_text())
    # reported, reproduced, delta, verdict, cluster acc., AU, ex/s, s/epoch, runs
    assert rows["alpha"][:7] == [
        "0.1597",
        "0.1565 ± 0.0001",
        "−0.0032",
        "within tolerance",
        "0.574 ± 0.001",
        "20.5 ± 0.7",
        "1268 ± 47",
    ]
    claims = table_rows((tmp_path / "out" / "demo__claims.md").read_text().replace("| Claim", "| Method"))
    (row,) = [cells for first, cells in claims.items() if first.startswith("(1)")]
    assert row[3] == "alpha: 0.574 ± 0.001 (n=2)"


def test_a_rounded_zero_has_no_minus_sign():
    assert generate._fmt(-0.001, 2) == "0.00"
    assert generate._fmt(-0.001, 2, sign=True) == "+0.00"
    assert generate._fmt(-0.01, 2, sign=True) == "−0.01"
    assert generate._fmt(1234.5, 0) == "1234"


# --- directions ----------------------------------------------------------------------------------------------------


def test_a_metric_says_which_way_is_better_only_where_one_is(tables):
    assert all(metric.better in ("lower", "higher", None) for metric in METRICS.values())
    assert not any(hasattr(metric, "lower_is_better") for metric in METRICS.values())
    # a low KL can be posterior collapse; more active units is not better beyond what the data needs
    assert METRICS["kl"].better is None and METRICS["active_units"].better is None
    assert (METRICS["nll"].better, METRICS["elbo"].better) == ("lower", "higher")
    directions = dict(
        note.split(": ", 1) for note in _notes((tables / "demo__digits__smoke.md").read_text())[0].split("; ")
    )
    assert directions["NLL"].endswith(", lower is better")
    assert directions["KL"] == "test KL(q(z|x) ‖ p(z)) (nats)"


# --- gaps that did not converge ------------------------------------------------------------------------------------


def test_a_gap_shows_its_convergence_and_a_dagger_where_most_points_did_not_converge(tmp_path, monkeypatch):
    _spec(tmp_path, monkeypatch, ('show = ["kl"]', 'show = ["amortization_gap", "approximation_gap"]'))
    gaps = lambda amortization, approximation, stopped: {
        name: {"value": value, "estimator": {"name": "cremer2018", "stopped_fraction": stopped, "steps": 300}}
        for name, value in (("amortization_gap", amortization), ("approximation_gap", approximation))
    }
    results = tmp_path / "results"
    _write(results, "alpha", 0, {"nll": 90.0, **gaps(0.70, 1.5, 0.10)})
    _write(results, "alpha", 1, {"nll": 91.0, **gaps(0.72, 1.7, 0.14)})
    _write(results, "beta", 0, {"nll": 100.0, **gaps(2.0, 3.0, 0.90)})
    _write(results, "beta", 1, {"nll": 100.0, **gaps(2.0, 3.0, 0.80)})
    _write(results, "gamma", 0, {"nll": 88.0, "amortization_gap": 1.0})  # an older record: no stopped_fraction
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "demo__digits__smoke.md").read_text()
    rows = table_rows(markdown)
    assert rows["alpha"][4:6] == ["0.71 ± 0.01 (conv. 12 %)†", "1.60 ± 0.14 (conv. 12 %)†"]
    assert rows["beta"][4:6] == ["2.00 ± 0.00 (conv. 85 %)", "3.00 ± 0.00 (conv. 85 %)"]
    assert rows["gamma"][4:6] == ["1.00", "–"]
    notes = _notes(markdown)
    assert any(n.startswith("conv.: the mean over the seeds of the fraction of gap points") for n in notes)
    (dagger,) = [n for n in notes if n.startswith("†")]
    assert "fewer than half" in dagger
    assert "amortization gap is under-estimated and the approximation gap over-estimated" in dagger
    tex = (tmp_path / "out" / "demo__digits__smoke.tex").read_text()
    assert r"(conv. 12 \%)\textdagger{}" in tex


def test_an_nll_whose_importance_weights_are_unreliable_says_so(tmp_path, monkeypatch):
    _spec(tmp_path, monkeypatch, ('show = ["kl"]', 'show = ["kl", "ais_nll"]'))
    results = tmp_path / "results"
    for seed, share in enumerate((0.9, 0.8)):  # most points' Pareto k̂ above 0.7 in both seeds
        # AIS on its few points against IS on the same points: 1.5 and 2.5 nats better
        ais = {"value": 80.0 + seed, "minus_importance_sampled": -1.5 - seed}
        _write(results, "alpha", seed, {"nll": {"value": 90.0 + seed, "pareto_k_above_0_7": share}, "ais_nll": ais})
    _write(results, "beta", 0, {"nll": {"value": 95.0, "pareto_k_above_0_7": 0.1}, "ais_nll": 94.0})  # an older record
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "demo__digits__smoke.md").read_text()
    rows = table_rows(markdown)
    assert rows["alpha"][1] == "90.50 ± 0.71 (k̂ > 0.7 on 85 %)" and rows["beta"][1] == "95.00"
    assert rows["alpha"][5] == "80.50 ± 0.71 (−2.00 vs IS)" and rows["beta"][5] == "94.00"
    notes = _notes(markdown)
    assert any(n.startswith("k̂ > 0.7 on n %") and "the AIS column, which does not use q" in n for n in notes)
    assert any(n.startswith("vs IS: AIS's estimate minus the importance-sampled one on the same") for n in notes)
    assert (tmp_path / "out" / "demo__digits__smoke.tex").read_text().isascii()


def test_fifty_percent_is_never_shown_beside_a_dagger(tmp_path, monkeypatch):
    _spec(tmp_path, monkeypatch, ('show = ["kl"]', 'show = ["inference_gap"]'))
    entry = lambda stopped: {"value": 1.0, "estimator": {"stopped_fraction": stopped}}
    _write(tmp_path / "results", "alpha", 0, {"inference_gap": entry(0.499)})
    _write(tmp_path / "results", "beta", 0, {"inference_gap": entry(0.29)})  # 0.29 * 100 = 28.999...
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    rows = table_rows((tmp_path / "out" / "demo__digits__smoke.md").read_text())
    assert rows["alpha"][4] == "1.00 (conv. 49 %)†"
    assert rows["beta"][4] == "1.00 (conv. 29 %)†"


# --- estimator versions --------------------------------------------------------------------------------------------


def test_a_value_of_an_older_estimator_version_is_stale_for_its_metric_only(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    monkeypatch.setitem(METRICS, "nll", dataclasses.replace(METRICS["nll"], version=2))
    results = tmp_path / "results"
    _write(results, "alpha", 0, {"nll": {"value": 90.0, "version": 2}, "kl": 10.0})
    _write(results, "alpha", 1, {"nll": {"value": 91.0, "version": 2}, "kl": 11.0})
    _write(results, "alpha", 2, {"nll": 50.0, "kl": 12.0})  # no version: 1, stale
    _write(results, "beta", 0, {"nll": {"value": 100.0, "version": 1}, "kl": 20.0})
    _write(results, "beta", 1, {"nll": 101.0, "kl": 22.0})
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "demo__digits__smoke.md").read_text()
    rows = table_rows(markdown)
    assert rows["alpha"] == [
        "90.50",
        "90.50 ± 0.71 (1 stale)",
        "+0.00",
        "within tolerance",
        "11.00 ± 1.00",  # the run's other metrics are kept
        "2.00",
        "3 ok",
    ]
    assert rows["beta"][:5] == ["95.00 ± 0.30", "– (2 stale)", "–", "stale", "21.00 ± 1.41"]
    assert any(
        n.startswith("n stale: values made by an earlier version of the metric's estimator") for n in _notes(markdown)
    )
    claims = (tmp_path / "out" / "demo__claims.md").read_text()
    assert "alpha: 90.50 ± 0.71 (n=2) (1 stale)" in claims and "beta: – (2 stale)" in claims


# --- partial runs --------------------------------------------------------------------------------------------------


def test_partial_runs_count_for_the_metrics_they_have(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    if "partial" not in records.STATUSES:
        monkeypatch.setattr(records, "STATUSES", (*records.STATUSES, "partial"))
    results = tmp_path / "results"
    _write(results, "alpha", 0, {"nll": 90.0, "kl": 10.0})
    _write(results, "alpha", 1, {"nll": 92.0, "kl": 12.0})
    _write(results, "alpha", 2, {"kl": 14.0}, status="partial")  # its density group failed but for the KL
    _write(results, "alpha", 3, {"nll": 91.0}, status="partial")
    _write(results, "alpha", 4, {}, status="failed")
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "demo__digits__smoke.md").read_text()
    assert table_rows(markdown)["alpha"] == [
        "90.50",
        "91.00 ± 1.00",
        "+0.50",
        "within tolerance",
        "12.00 ± 2.00",
        "2.00",
        "1 failed, 2 ok, 2 partial",
    ]
    claims = (tmp_path / "out" / "demo__claims.md").read_text()
    assert "alpha: 91.00 ± 1.00 (n=3)" in claims


# --- LaTeX ---------------------------------------------------------------------------------------------------------

ODD_TEXT = "p̂ ≤ q × r → s − t, 5\u00a0% of 10\u202fms, é, ﬁ, α, Cremer’s “gap” <x> … †"


@pytest.fixture
def every_metric(tmp_path, monkeypatch):
    """Tables showing every metric (its label and description), the claims table, odd characters in
    a dataset note and a claim; a gap marked with a dagger, a stale value."""
    others = [name for name in METRICS if name != "nll"]
    _spec(
        tmp_path,
        monkeypatch,
        ('show = ["kl"]', f"show = {others!r}".replace("'", '"')),
        ('note = "The embedded digits."', f'note = "The embedded digits: {ODD_TEXT}"'),
        ('claim = "alpha reaches', f'claim = "{ODD_TEXT}: alpha reaches'),
    )
    monkeypatch.setitem(METRICS, "kl", dataclasses.replace(METRICS["kl"], version=2))
    for seed in (0, 1, 2):
        values = {name: 1.0 + seed for name in METRICS}
        values["amortization_gap"] = {"value": 1.0, "estimator": {"stopped_fraction": 0.25}}
        _write(tmp_path / "results", "alpha", seed, values)
        _write(tmp_path / "results", "beta", seed, values)
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    return tmp_path / "out"


def test_the_latex_is_pure_ascii_without_bare_angle_brackets(every_metric):
    texs = sorted(every_metric.glob("*.tex"))
    assert {p.name for p in texs} == {"demo__digits__smoke.tex", "demo__claims.tex"}
    for path in texs:
        tex = path.read_text(encoding="utf-8")
        odd = sorted({c for c in tex if not c.isascii()})
        assert not odd, f"{path.name}: {odd}"
        assert "<" not in tex and ">" not in tex, path.name  # OT1 prints them as ¡ and ¿
        assert "[U+" not in tex, path.name  # every character used has its LaTeX
    tex = (every_metric / "demo__digits__smoke.tex").read_text()
    for metric in METRICS.values():
        assert generate._latex_escape(metric.label) in tex
        assert generate._latex_escape(metric.description) in tex
    assert r"\textdagger{}" in tex and r"\^{p}" in tex and r"(variance \textgreater{} 0.01)" in tex


@pytest.mark.parametrize(
    "text, latex",
    [
        ("log p̂(x) − L[q*]", r"log \^{p}(x) $-$ L[q*]"),
        ("KL(q(z|x) ‖ p(z))", r"KL(q(z\textbar{}x) $\|$ p(z))"),
        ("a < b > c", r"a \textless{} b \textgreater{} c"),
        ("≤ × → ±", r"$\leq$ $\times$ $\rightarrow$ $\pm$"),
        ("5\u00a0%", r"5~\%"),
        ("café", r"caf\'{e}"),
        ("ﬁt", "fit"),
        ("Δ NLL", r"$\Delta$ NLL"),
        ("☃", r"\texttt{[U+2603]}"),
    ],
)
def test_latex_escape(text, latex):
    assert generate._latex_escape(text) == latex


def test_the_latex_compiles(every_metric, tmp_path):
    compile_latex(every_metric, "no TeX engine installed (pdflatex not on PATH): only the ASCII check above ran")


# --- the output folder -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["README.md", "demo__digits__smoke.md", "demo__claims.tex"])
@pytest.mark.parametrize("with_manifest", [False, True])
def test_a_users_file_is_never_overwritten(tmp_path, monkeypatch, name, with_manifest):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    _write(tmp_path / "results", "alpha", 0, {"nll": 90.0})
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("# My own notes\n")
    if with_manifest:  # an earlier generation, which wrote other files
        (out / generate.MANIFEST).write_text("demo__digits__smoke.tex\n")
    before = tree_digest(out)
    with pytest.raises(
        UserError, match=re.escape(f"{out / name} exists and was not written by `vlaebench tables`")
    ) as error:
        generate.write_tables(tmp_path / "results", out)
    assert "move it out of the folder or pass another --out" in str(error.value)
    assert "\n" not in str(error.value)
    assert tree_digest(out) == before  # nothing written, nothing removed


def test_only_the_suites_own_stale_tables_are_removed(tmp_path, monkeypatch):
    _spec(tmp_path, monkeypatch)
    results, out = tmp_path / "results", tmp_path / "out"
    _write(results, "alpha", 0, {"nll": 90.0})
    out.mkdir()
    (out / "notes__draft.md").write_text("a user's file named like a table\n")
    (out / "figure__1.tex").write_text("a user's LaTeX\n")
    written = generate.write_tables(results, out)
    assert out / generate.MANIFEST in written
    listed = (out / generate.MANIFEST).read_text().splitlines()
    assert sorted(line for line in listed if not line.startswith("#")) == sorted(
        ["README.md", "demo__digits__smoke.md", "demo__digits__smoke.tex", "demo__claims.md", "demo__claims.tex"]
    )
    # the claims go from the spec: their tables are stale, and removed; the user's files stay
    text = (tmp_path / "specs" / "demo.toml").read_text()
    (tmp_path / "specs" / "demo.toml").write_text(text[: text.index("# Claims")])
    generate.write_tables(results, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [generate.MANIFEST, "README.md", "demo__digits__smoke.md", "demo__digits__smoke.tex"]
        + ["notes__draft.md", "figure__1.tex"]
    )
    assert "demo__claims.md" not in (out / generate.MANIFEST).read_text()


def test_a_folder_without_a_manifest_is_adopted_file_by_file(tables, tmp_path):
    """The tables of an earlier version of the suite (no manifest): files that look generated are
    the suite's (a stale one is removed), any other file is the user's and stays."""
    (tables / generate.MANIFEST).unlink()
    stale = (
        (tables / "demo__digits__smoke.md")
        .read_text()
        .replace("### demo / digits / smoke", "### demo / digits / short")
    )
    (tables / "demo__digits__short.md").write_text(stale)
    (tables / "demo__digits__short.tex").write_text((tables / "demo__digits__smoke.tex").read_text())
    (tables / "demo__digits__long.md").write_text("### My table\n")  # named like one, but not the suite's
    (tables / "demo__digits__long.tex").write_text((tables / "demo__digits__smoke.tex").read_text())  # no twin
    generate.write_tables(tmp_path / "results", tables)
    names = {p.name for p in tables.iterdir()}
    assert not {"demo__digits__short.md", "demo__digits__short.tex"} & names
    assert {"demo__digits__long.md", "demo__digits__long.tex", generate.MANIFEST} <= names
    assert "demo__digits__long" not in (tables / generate.MANIFEST).read_text()


def test_a_manifest_naming_a_file_elsewhere_is_refused(tables, tmp_path):
    (tables / generate.MANIFEST).write_text("README.md\n../results/runs\n")
    before = tree_digest(tmp_path)
    with pytest.raises(UserError, match=r"line 2: '../results/runs' is not the name of a file in that folder"):
        generate.write_tables(tmp_path / "results", tables)
    assert tree_digest(tmp_path) == before


def test_the_committed_tables_folder_is_regenerated_in_place(tmp_path, monkeypatch):
    """report/tables, written before the manifest existed (or since, with one), is taken over."""
    monkeypatch.delenv("VLAEBENCH_SPECS", raising=False)
    shutil.copytree(REPO / "report" / "tables", tmp_path / "tables")
    written = generate.write_tables(REPO / "results", tmp_path / "tables")
    assert {p.name for p in (tmp_path / "tables").iterdir()} == {p.name for p in written}


def test_a_time_from_runs_on_different_devices_is_given_per_device(tmp_path, monkeypatch):
    """Two seeds on a GPU shared by 12 runs and one alone: their times are not averaged together (the
    mean of 75, 73 and 31 s would describe no device), but given per device, in the order the runs'
    footnote names the devices; a row on one device keeps its single value."""
    _spec(tmp_path, monkeypatch, ('show = ["kl"]', 'show = ["examples_per_s"]'))
    gpu = {"device_name": "NVIDIA H200"}
    for seed, (per_epoch, speed, sharing) in enumerate([(75.0, 700.0, 12), (73.0, 720.0, 12), (31.0, 1600.0, 1)]):
        timing = {**gpu, "s_per_epoch": per_epoch, "runs_sharing_device": sharing}
        _write(tmp_path / "results", "alpha", seed, {"nll": 90.0 + seed, "examples_per_s": speed}, timing=timing)
    _write(tmp_path / "results", "beta", 0, {"nll": 95.0, "examples_per_s": 650.0}, timing={**gpu, "s_per_epoch": 80.0})
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    text = (tmp_path / "out" / "demo__digits__smoke.md").read_text()
    rows = table_rows(text)
    # reported, reproduced, delta, verdict, ex/s, s/epoch, runs
    assert rows["alpha"][4:6] == ["1600 / 710 ± 14", "31.00 / 74.00"]
    assert rows["beta"][4:6] == ["650", "80.00"]
    assert "NVIDIA H200, NVIDIA H200 (shared by 12 runs)" in text  # the footnote's order, the cells' order
    assert any(note.startswith("a / b: a time whose runs ran on different devices") for note in _notes(text))


def test_a_claim_with_a_negative_margin_allows_that_much_the_other_way_and_says_so(tmp_path, monkeypatch):
    """ "At a comparable NLL": alpha's NLL at most 1 nat above beta's. Alpha's seeds are 0.5 worse: the
    claim holds, where the plain "lower" fails, and the table says how much was allowed."""
    _spec(
        tmp_path,
        monkeypatch,
        ("ratio = 1.05", "margin = -1.0"),
        ("claim = \"alpha's NLL is lower than beta's by a factor of 1.05\"", 'claim = "alpha is as good as beta"'),
    )
    for seed, (alpha, beta) in enumerate([(90.5, 90.0), (90.7, 90.1), (90.4, 90.0)]):
        _write(tmp_path / "results", "alpha", seed, {"nll": alpha})
        _write(tmp_path / "results", "beta", seed, {"nll": beta})
    generate.write_tables(tmp_path / "results", tmp_path / "out")
    claims = table_rows((tmp_path / "out" / "demo__claims.md").read_text().replace("| Claim", "| Method"))
    (row,) = [cells for first, cells in claims.items() if first.startswith("(2)")]
    assert row[1] == "NLL, lower, or at most 1 above"
    assert row[-1] == "holds"
