import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import cli

# Under pytest-xdist (`make test`) the workers share the cores: each takes its share of torch's
# threads, rather than every worker using them all.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // XDIST_WORKERS))


@pytest.fixture
def run_cli(capsys):
    """Run ``vlaebench ARGV...`` in-process; returns (exit code, stdout, stderr)."""

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``: to show that nothing was altered or dropped."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def compile_latex(folder: Path, skip_reason: str) -> None:
    """Every ``.tex`` table in ``folder`` through pdflatex in one document (booktabs); skipped with
    ``skip_reason`` where no TeX engine is installed."""
    if shutil.which("pdflatex") is None:
        pytest.skip(skip_reason)
    body = "".join(f"\\input{{{p.name}}}\n\\clearpage\n" for p in sorted(folder.glob("*.tex")))
    (folder / "wrapper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body + "\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "wrapper.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]


FOOTNOTE_LINK = re.compile(r" \[[⁰¹²³⁴⁵⁶⁷⁸⁹]+\]\(#[a-z0-9-]+\)")


def table_rows(markdown: str, links: bool = False) -> dict[str, list[str]]:
    """The rows of the Markdown tables in ``markdown`` by their first cell; without the footnote
    links to the runs a cell comes from, unless ``links``."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = [c if links else FOOTNOTE_LINK.sub("", c) for c in cells[1:]]
    return rows
