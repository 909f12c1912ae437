"""The tables laid out as a paper's (``[layout]`` of its spec), from hand-written records: a paper
that reports log p(x) instead of the NLL and bolds its best results, a grid over T in the paper's
methods × T layout, budgets never averaged together, a single seed (no std), failed and diverged runs
shown, and every reproduced cell footnoted with the runs it comes from. Exact files: golden copies
(``tests/golden/layout``)."""

import re
from pathlib import Path

import pytest
from conftest import FOOTNOTE_LINK, compile_latex, table_rows

from benchmarks import UserError, records, specs
from report import generate

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "layout"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _write(results: Path, method: str, budget: str, seed: int, nll: float | None, status="ok", day=20, earlier=()):
    paper = specs.load_paper("grid")
    config = specs.resolve(paper, method, "digits", specs.budget(budget), seed)
    metric = lambda value: {"value": value, "unit": "nats", "estimator": {"name": "hand-written"}}
    record = {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": specs.run_id(config),
        "paper": "grid",
        "method": method,
        "dataset": "digits",
        "budget": budget,
        "seed": seed,
        "config": config,
        "status": status,
        "stop_reason": "max_epochs",
        "error": None if status == "ok" else "hand-written",
        "curves": {},
        "metrics": {} if nll is None else {"nll": metric(nll), "kl": metric(nll / 10), "ais_nll": metric(nll - 1)},
        "timing": {"s_per_epoch": 2.0 if method == "alpha" else 3.0, "device_name": "Hand-written GPU"},
        "provenance": {"git_sha": SHA, "git_dirty": False, "finished": f"2026-11-{day}T12:00:00+00:00"},
    }
    if earlier:  # the records a rerun replaced
        record["earlier_attempts"] = [{**record, "status": attempt} for attempt in earlier]
    records.write(record, records.path_for(results, config, record["run_id"]))
    return record["run_id"]


@pytest.fixture
def layout(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs_layout"))
    results = tmp_path / "results"
    ids = {
        "alpha smoke": [_write(results, "alpha", "smoke", seed, nll) for seed, nll in enumerate([90.0, 91.0, 92.0])],
        "alpha short": [_write(results, "alpha", "short", 0, 85.0, day=21)],  # one seed: no std
        "hf1": [_write(results, "hf[T=1]", "smoke", seed, nll) for seed, nll in enumerate([89.0, 89.5])],
        "hf1 failed": [_write(results, "hf[T=1]", "smoke", 2, None, "failed")],
        "hf2": [_write(results, "hf[T=2]", "smoke", 0, 88.0, earlier=("timeout", "failed"))],
        "hf2 diverged": [_write(results, "hf[T=2]", "smoke", 1, None, "diverged")],
    }
    generate.write_tables(results, tmp_path / "out")
    return tmp_path / "out", ids


def _plain(cell: str) -> str:
    return FOOTNOTE_LINK.sub("", cell)


def _footnotes(markdown: str) -> dict[str, str]:
    """Each footnote's anchor and its text."""
    return dict(re.findall(r'^- <a id="([a-z0-9-]+)"></a>\S+ (.*)$', markdown, flags=re.M))


def _anchor(cell: str) -> str:
    return re.search(r"\]\(#([a-z0-9-]+)\)", cell)[1]


def test_a_paper_that_reports_log_likelihood_gets_log_likelihood(layout):
    out, _ = layout
    markdown = (out / "grid__digits__smoke.md").read_text()
    assert "| log p(x) reported " in markdown and "| Δ log p(x) " in markdown and "NLL reported" not in markdown
    rows = table_rows(markdown, links=True)
    # log p(x) = −NLL; Δ = reproduced − reported in the paper's sign; the verdict as for the NLL
    assert [_plain(c) for c in rows["alpha"][:4]] == ["−90.50", "−91.00 ± 1.00", "−0.50", "within tolerance"]
    assert _plain(rows["hf[T=2]"][1]) == "**−88.00**"
    assert _plain(rows["alpha"][5]) == "−90.00 ± 1.00"  # the AIS estimate turns too; the KL does not
    assert _plain(rows["alpha"][4]) == "9.10 ± 0.10"
    assert "log p(x): the log-likelihood as the paper reports it, −NLL" in markdown
    assert "higher is better" in markdown


def test_the_best_value_of_each_column_is_bold_reported_and_reproduced_apart(layout):
    out, _ = layout
    rows = table_rows((out / "grid__digits__smoke.md").read_text(), links=True)
    bold = {method: [i for i, c in enumerate(cells) if c.startswith("**")] for method, cells in rows.items()}
    # the highest log-likelihood reported (−88.40) and reproduced (−88.00), the highest AIS estimate
    # (−87.00); the KL has no better direction: nothing bold in its column
    assert bold == {"alpha": [], "hf[T=1]": [], "hf[T=2]": [0, 1, 5]}


def test_budgets_are_never_averaged_and_a_single_seed_has_no_std(layout):
    out, _ = layout
    short = table_rows((out / "grid__digits__short.md").read_text(), links=True)
    assert _plain(short["alpha"][1]) == "−85.00"  # one seed, its value alone
    assert _plain(short["alpha"][-1]) == "1 ok"
    smoke = table_rows((out / "grid__digits__smoke.md").read_text(), links=True)
    assert _plain(smoke["alpha"][1]) == "−91.00 ± 1.00"  # the three smoke seeds, without the short one


def test_failed_and_diverged_runs_are_shown_and_footnoted(layout):
    out, ids = layout
    markdown = (out / "grid__digits__smoke.md").read_text()
    rows, notes = table_rows(markdown, links=True), _footnotes(markdown)
    assert _plain(rows["hf[T=1]"][-1]) == "1 failed, 2 ok"
    assert _plain(rows["hf[T=2]"][-1]) == "1 diverged, 1 ok"
    every = notes[_anchor(rows["hf[T=1]"][-1])]
    assert all(f"`{run_id}`" in every for run_id in ids["hf1"])
    assert f"`{ids['hf1 failed'][0]}` (failed)" in every
    kept = notes[_anchor(rows["hf[T=1]"][1])]
    assert all(f"`{run_id}`" in kept for run_id in ids["hf1"]) and ids["hf1 failed"][0] not in kept
    # a rerun's record names the attempts it replaced, oldest first
    assert f"`{ids['hf2'][0]}` (ok; earlier: timeout, failed)" in notes[_anchor(rows["hf[T=2]"][1])]


def test_a_variant_without_a_kept_run_shows_how_its_runs_ended_in_the_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs_layout"))
    results = tmp_path / "results"
    _write(results, "alpha", "smoke", 0, 90.0)
    _write(results, "hf[T=1]", "smoke", 0, 89.0)
    timeouts = [_write(results, "hf[T=2]", "smoke", seed, None, "timeout") for seed in (0, 1)]
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "grid__digits__smoke__by-T.md").read_text()
    rows, notes = table_rows(markdown, links=True), _footnotes(markdown)
    assert _plain(rows["hf"][2]) == "2 timeout (paper −88.40)"  # not a bare "–", as if it had never run
    assert all(f"`{run_id}` (timeout)" in notes[_anchor(rows["hf"][2])] for run_id in timeouts)
    assert _plain(rows["alpha"][1]) == "–"  # alpha has no T = 1 variant


def test_every_reproduced_cell_names_its_runs_commit_budget_hardware_and_day(layout):
    out, ids = layout
    for name, budget, key, day in (("smoke", "smoke", "alpha smoke", "20"), ("short", "short", "alpha short", "21")):
        markdown = (out / f"grid__digits__{name}.md").read_text()
        rows, notes = table_rows(markdown, links=True), _footnotes(markdown)
        for cell in rows["alpha"][1:2] + rows["alpha"][4:]:  # reproduced columns, s/epoch and runs
            note = notes[_anchor(cell)]
            assert [f"`{run_id}`" in note for run_id in ids[key]] == [True] * len(ids[key]), cell
            assert f"git {SHA[:10]}; budget {budget}; Hand-written GPU; finished 2026-11-{day}" in note
        for cell in rows["alpha"][0:1] + rows["alpha"][2:4]:  # reported, Δ and verdict: no runs of ours
            assert "](#" not in cell
    latex = (out / "grid__digits__smoke.tex").read_text()
    assert r"\textsuperscript{1}" in latex and rf"\texttt{{{ids['alpha smoke'][0]}}}" in latex


def test_the_grid_is_laid_out_as_methods_by_t(layout):
    out, _ = layout
    markdown = (out / "grid__digits__smoke__by-T.md").read_text()
    assert "| Method   | without T " in markdown and "| T = 1 " in markdown and "| T = 2 " in markdown
    rows = table_rows(markdown, links=True)
    assert [_plain(c) for c in rows["alpha"]] == ["−91.00 ± 1.00 (paper −90.50); train ×1", "–", "–"]
    assert [_plain(c) for c in rows["hf"]] == [
        "–",
        "−89.25 ± 0.35; train ×1.5",
        "**−88.00** (paper −88.40); train ×1.5",  # the best of the whole grid
    ]


@pytest.mark.parametrize(
    "name",
    [
        "grid__digits__smoke.md",
        "grid__digits__smoke.tex",
        "grid__digits__smoke__by-T.md",
        "grid__digits__smoke__by-T.tex",
        "grid__digits__short.md",
        "grid__digits__short__by-T.tex",
    ],
)
def test_files_match_the_golden_copies(layout, name):
    out, _ = layout
    assert (out / name).read_text() == (GOLDEN / name).read_text()


def test_the_latex_with_bold_and_footnotes_compiles(layout):
    out, _ = layout
    compile_latex(out, "no TeX engine installed (pdflatex not on PATH)")
    assert r"\textbf{$-$88.00}" in (out / "grid__digits__smoke.tex").read_text()


@pytest.mark.parametrize(
    "layout_text, error",
    [
        ('nll_as = "bits"', "layout.nll_as: 'bits'; valid: nll, log-likelihood"),
        ("bold_best = 1", "layout.bold_best: expected true or false, got 1"),
        ("bold = true", "[layout]: unknown key(s) bold; valid: bold_best, nll_as"),
    ],
)
def test_a_malformed_layout_says_what_is_valid(tmp_path, monkeypatch, layout_text, error):
    text = (HERE / "specs_layout" / "grid.toml").read_text()
    text = text.replace('nll_as = "log-likelihood"\nbold_best = true', layout_text)
    (tmp_path / "grid.toml").write_text(text)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    with pytest.raises(UserError, match=re.escape(error)):
        specs.load_paper("grid")
