"""The report (``vlaebench report``) on hand-written records of the demo paper: its summary counts
each reported number and claim by verdict at the largest budget, never averages budgets together,
lists every run (failed and stale ones too), draws the figures, embeds everything in one HTML page,
is byte-identical on a rerun, never trains, and never overwrites a file it did not write."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_tables import HERE, _record

from benchmarks import UserError, records, specs, train
from benchmarks.cli import main
from report import document


def _write(results: Path, *args, budget: str = "smoke", curves: dict | None = None, timing: dict | None = None):
    config, record = _record(*args)
    if budget != "smoke":
        config = specs.resolve(specs.load_paper("demo"), args[0], "digits", specs.budget(budget), args[1])
        record.update(config=config, budget=budget, run_id=specs.run_id(config))
    record["curves"] = curves or {}
    record["timing"].update(timing or {})
    record["provenance"] = {"git_sha": "0123456789abcdef", "git_dirty": False, "finished": "2026-11-25T12:00:00+00:00"}
    records.write(record, records.path_for(results, config, record["run_id"]))
    return record


@pytest.fixture
def report(tmp_path, monkeypatch):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    results = tmp_path / "results"
    curves = {"epoch": [1, 2], "valid_elbo": [-120.0, -110.0]}
    for seed, nll in enumerate([90.0, 91.0, 92.0]):
        _write(results, "alpha", seed, nll, 10.0, curves=curves, timing={"train_wall_s": 10.0 + seed, "epochs": 2})
    _write(results, "alpha", 3, 50.0, 1.0, "ok", True)  # stale
    _write(results, "beta", 0, 100.0, 20.0, timing={"train_wall_s": 20.0})
    _write(results, "beta", 1, 102.0, 22.0, timing={"train_wall_s": 21.0})
    _write(results, "beta", 2, None, None, "diverged")
    _write(results, "gamma", 0, 88.123, 5.0, timing={"train_wall_s": 5.0})
    for seed in range(2):  # at another budget, far from the smoke runs: never averaged with them
        _write(results, "alpha", seed, 200.0 + seed, 3.0, budget="short")
    written = document.write_report(results, tmp_path / "out")
    return tmp_path / "out", written


def _summary(readme: str) -> list[str]:
    line = next(line for line in readme.splitlines() if line.startswith("| [demo]"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_summary_judges_each_number_and_claim_at_the_largest_budget(report):
    out, _ = report
    readme = (out / "README.md").read_text()
    paper, reported, claims, budgets, hardware = _summary(readme)
    # at short, alpha's 200.5 is outside 90.5 ± 1; beta has runs at smoke only: 101 is outside 95 ± 1; gamma missing
    assert reported == "0 within tolerance, 2 outside, 1 missing, 0 not run"
    assert budgets == "smoke, short" and hardware == "Hand-written CPU"
    # "alpha below 95": at short, two seeds (inconclusive); "alpha below beta": beta has no short runs,
    # so it is judged at smoke, where beta has two ok seeds (inconclusive), not called "no runs"
    assert claims == "0 holds, 0 fails, 2 inconclusive, 0 no runs"
    assert re.search(r"\| inconclusive +\|$", readme, flags=re.M)  # the claims table is in the page


def test_budgets_are_never_averaged_together(report):
    out, _ = report
    readme = (out / "README.md").read_text()
    smoke = readme[readme.index("#### demo / digits / smoke") :]
    short = readme[readme.index("#### demo / digits / short") :]
    alpha = lambda section: next(line for line in section.splitlines() if line.startswith("| alpha"))  # noqa: E731
    assert "91.00 ± 1.00" in alpha(smoke) and "200.50 ± 0.71" in alpha(short)


def test_every_run_is_listed_with_its_provenance_failed_and_stale_ones_too(report):
    out, _ = report
    readme = (out / "README.md").read_text()
    provenance = readme[readme.index("#### demo: provenance of every run") :]
    rows = [line for line in provenance.splitlines() if line.startswith("| `")]
    assert len(rows) == 10
    assert sum("diverged" in row for row in rows) == 1 and sum("ok, stale" in row for row in rows) == 1
    assert all("0123456789" in row and "2026-11-25T12:00:00" in row for row in rows)


def test_figures_are_drawn_and_the_html_page_embeds_everything(report):
    out, written = report
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "demo__digits__smoke__curves.png" in figures and "demo__digits__smoke__nll_vs_time.png" in figures
    assert "demo__digits__short__curves.png" not in figures  # no curves recorded at short
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no external asset
    assert "<table>" in page and "Summary" in page
    readme = (out / "README.md").read_text()
    assert "](figures/demo__digits__smoke__curves.png)" in readme


def test_every_reproduced_cell_links_to_its_runs_on_the_page(report):
    out, _ = report
    page = (out / "index.html").read_text()
    targets = re.findall(r'href="#([^"]+)"', page)
    anchors = set(re.findall(r'id="([^"]+)"', page))
    assert sum(t.startswith("runs-") for t in targets) > 10
    assert not set(targets) - anchors  # no link leads nowhere
    # alpha's smoke NLL cell links to a footnote naming its three kept runs, not the stale one
    cell = re.search(r"<td>91.00 ± 1.00 <a href=\"#([^\"]+)\">", page)
    footnote = re.search(rf'<li><a id="{cell[1]}"></a>(.*?)</li>', page)[1]
    assert footnote.count("<code>") == 3 and "0123456789" in footnote and "2026-11-25" in footnote


def test_a_rerun_on_unchanged_records_is_byte_identical_and_never_trains(report, monkeypatch):
    out, written = report
    before = {p: p.read_bytes() for p in written}
    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("the report trained"))
    again = document.write_report(out.parent / "results", out)
    assert sorted(again) == sorted(written)
    assert all(p.read_bytes() == before[p] for p in again)


def test_a_users_file_is_never_overwritten(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLAEBENCH_SPECS", str(HERE / "specs"))
    _write(tmp_path / "results", "alpha", 0, 90.0, 10.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    with pytest.raises(UserError, match="not written by `vlaebench report`"):
        document.write_report(tmp_path / "results", out)
    assert (out / "README.md").read_text() == "my notes\n" and not (out / "index.html").exists()
    (out / "README.md").unlink()
    (out / "figures").mkdir()
    (out / "figures" / "mine.png").write_bytes(b"x")
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(out)]) == 2
    assert "figures holds files" in capsys.readouterr().err and (out / "figures" / "mine.png").read_bytes() == b"x"


def test_the_page_renders_in_a_headless_browser(report, tmp_path):
    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if browser is None:
        pytest.skip("no headless browser installed (chromium not on PATH): the HTML is checked as text above")
    out, _ = report
    shot = tmp_path / "page.png"
    common = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ]
    url = (out / "index.html").as_uri()
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    if dom.returncode != 0 and not dom.stdout:  # the browser itself could not start here (not the page's doing)
        pytest.skip(f"{browser} could not start: {dom.stderr.strip()[-300:]}")
    assert "Summary" in dom.stdout and "<table>" in dom.stdout
    assert ":CONSOLE" not in dom.stderr, dom.stderr  # the page logs nothing: no script error, no missing asset
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("L").getextrema()
    assert colours[0] < 100 < colours[1]  # text on a background: not a blank page


def test_the_committed_report_sums_up_the_committed_records(monkeypatch):
    """report/README.md is regenerated whenever records are committed: its summary is what the
    committed records give now."""
    monkeypatch.delenv("VLAEBENCH_SPECS", raising=False)
    repo = HERE.parent
    papers = [specs.load_paper(key) for key in specs.paper_keys()]
    frame = document.generate.annotated_frame(repo / "results")
    summary = document._table(document.SUMMARY_HEADER, document.summary_rows(frame, papers))
    assert summary in (repo / "report" / "README.md").read_text()
