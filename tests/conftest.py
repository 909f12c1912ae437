import hashlib
from pathlib import Path

import pytest

from benchmarks import cli


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
