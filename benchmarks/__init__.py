"""vlaebench: the harness that trains every method under fixed seeds and budgets and records it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: results/ and report/ live here


class UserError(Exception):
    """Bad input from the user (a name, a spec, a record, missing data): the CLI prints the message
    as one line and exits non-zero, without a traceback."""


class DataUnavailable(UserError):
    """A dataset that is not on this machine and cannot be fetched: the CLI exits with
    ``EXIT_UNAVAILABLE``, so that a sweep counts its runs as unavailable, not crashed."""


EXIT_UNAVAILABLE = 3
# Set by the sweep when several of its runs share one GPU: their timings are not each run's alone.
RUNS_SHARING_DEVICE = "VLAEBENCH_RUNS_SHARING_DEVICE"
