"""The GitHub workflows: valid YAML, the jobs the project needs, and every `vlaebench` command in
them one that the command line accepts (a renamed option would otherwise break only at night)."""

import shlex
from pathlib import Path

import pytest
import yaml

from benchmarks.cli import parser

WORKFLOWS = Path(__file__).parent.parent / ".github" / "workflows"


def _load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def _commands(workflow: dict) -> list[str]:
    return [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]


def test_ci_runs_the_readmes_test_command_on_every_push():
    ci = _load("ci.yml")
    assert {"push", "pull_request"} <= set(ci[True])  # YAML 1.1 reads the key `on` as True
    assert any(command.strip() == "make test" for command in _commands(ci))


def test_the_nightly_job_runs_compares_and_reports_on_a_gpu_runner():
    nightly = _load("nightly.yml")
    assert "schedule" in nightly[True]
    job = nightly["jobs"]["nightly"]
    assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    invoked = [line for command in _commands(nightly) for line in command.splitlines() if "vlaebench " in line]
    subcommands = [shlex.split(line.strip())[1] for line in invoked]
    assert subcommands == ["sweep", "compare", "report"]
    for line in invoked:
        args = shlex.split(line.strip())[1:]
        try:
            parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"the nightly job calls a command the CLI refuses: {line.strip()}")
    assert "--budget nightly" in invoked[0] and "--gpus" in invoked[0]


def test_the_nightly_job_fails_on_a_slower_hot_path_and_keeps_the_history():
    job = _load("nightly.yml")["jobs"]["nightly"]
    (step,) = [s for s in job["steps"] if "--benchmark-enable" in s.get("run", "")]
    assert "--benchmark-compare-fail=median:25%" in step["run"] and "--benchmark-autosave" in step["run"]
    assert "--benchmark-storage=file://nightly-results/benchmark-history" in step["run"]
    (upload,) = [s for s in job["steps"] if s.get("with", {}).get("name") == "nightly-results"]
    assert "nightly-results/benchmark-history" in upload["with"]["path"]
    # a failed run (the sweep exits 1) or a slower hot path still leaves the comparison and the report
    later = job["steps"][job["steps"].index(step) :]
    assert all(s.get("if") == "always()" for s in later)
