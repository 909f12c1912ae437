"""Bad input, as a table: each case gets one line that says what is wrong (and what is valid),
exit status 2, no traceback, and nothing in the results folder touched."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tree_digest

from benchmarks import records

HERE = Path(__file__).parent
RUN = ["run", "--paper", "faults", "--method", "vae", "--dataset", "digits", "--budget", "faults", "--quiet"]


@pytest.fixture
def results(tmp_path, monkeypatch, run_cli):
    """A results folder with one real record, specs and budgets of the fault tests (copies, to break)."""
    shutil.copytree(HERE / "specs", tmp_path / "specs")
    shutil.copy(HERE / "budgets.toml", tmp_path / "budgets.toml")
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path / "specs"))
    monkeypatch.setenv("VLAEBENCH_BUDGETS", str(tmp_path / "budgets.toml"))
    assert run_cli(*RUN, "--results", tmp_path / "R")[0] == 0
    return tmp_path / "R"


def break_spec(results: Path, old: str, new: str) -> None:
    path = results.parent / "specs" / "faults.toml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def add_to_spec(results: Path, text: str) -> None:
    path = results.parent / "specs" / "faults.toml"
    path.write_text(path.read_text() + text)


def newer_record(results: Path) -> None:
    (path,) = records.runs_dir(results).glob("*.json")
    record = json.loads(path.read_text())
    record["schema_version"] = records.SCHEMA_VERSION + 1
    (path.parent / "zz_newer.json").write_text(json.dumps(record))


def escaping_record(results: Path) -> None:
    (path,) = records.runs_dir(results).glob("*.json")
    record = json.loads(path.read_text())
    record["run_id"] = "../../../etc/passwd"
    (path.parent / "zz_escape.json").write_text(json.dumps(record))


def mnist_files(results: Path, damage: str) -> Path:
    """MNIST's four idx files in torchvision's layout, their gzip streams cut short or of the wrong content."""
    raw = results.parent / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, shape in (
        ("train-images-idx3-ubyte", (10, 28, 28)),
        ("train-labels-idx1-ubyte", (10,)),
        ("t10k-images-idx3-ubyte", (4, 28, 28)),
        ("t10k-labels-idx1-ubyte", (4,)),
    ):
        array = rng.integers(0, 10, shape, dtype=np.uint8)
        content = bytes([0, 0, 8, array.ndim]) + np.asarray(shape, dtype=">u4").tobytes() + array.tobytes()
        compressed = gzip.compress(content)
        (raw / f"{name}.gz").write_bytes(compressed[:-20] if damage == "truncated" else compressed)
    return results.parent / "data"


CASES = {
    "unknown training key": (
        lambda r: break_spec(r, "epochs = 10", "epochs = 10\nwarp_speed = 9"),
        RUN,
        ["warp_speed", "batch_size"],
    ),
    "negative epochs": (lambda r: break_spec(r, "epochs = 10", "epochs = -10"), RUN, ["epochs", "-10"]),
    "unknown metric": (lambda r: break_spec(r, 'compare = ["nll"]', 'compare = ["nlll"]'), RUN, ["nlll", "nll", "kl"]),
    "tolerance without a value": (
        lambda r: add_to_spec(
            r,
            '\n[[reported]]\nmethod = "vae"\ndataset = "digits"\nmetric = "nll"\n'
            'missing = "Table 1"\ntolerance = 1.0\nsource = "tests"\n',
        ),
        RUN,
        ["reported[0]", "tolerance", "needs a value"],
    ),
    "claim naming an unknown method": (
        lambda r: add_to_spec(
            r,
            '\n[[claims]]\nclaim = "x"\nsource = "tests"\ndataset = "digits"\n'
            'metric = "nll"\nmethod = "nobody"\nthan = "vae"\ndirection = "lower"\n',
        ),
        RUN,
        ["claims[0] method", "nobody", "vae"],
    ),
    "unknown selection": (
        lambda r: break_spec(r, 'selection = "best_valid"', 'selection = "best_test"'),
        RUN,
        ["best_test", "last", "best_valid"],
    ),
    "record of a newer schema": (newer_record, ["tables"], ["zz_newer.json", "schema_version"]),
    "run id escaping the folder": (escaping_record, ["tables"], ["zz_escape.json", "run_id", "hexadecimal"]),
    "paper key escaping the specs": (
        lambda r: None,
        [*RUN[:2], "../specs/faults", *RUN[3:]],
        ["unknown paper", "../specs/faults", "faults"],
    ),
    "seed out of range": (lambda r: None, [*RUN, "--seeds", "99999999999999999999"], ["at most 4294967295"]),
    "truncated data file": (lambda r: None, [], ["cannot read idx file", "ended before"]),
    "wrong-checksum data file": (lambda r: None, [], ["checksum mismatch"]),
    "evaluate without kept weights": (
        lambda r: shutil.rmtree(r / "weights"),
        ["evaluate", "--paper", "faults", "--method", "vae", "--budget", "faults", "--importance-samples", "50"],
        ["no kept weights", "--force"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(results, run_cli, case):
    prepare, argv, needles = CASES[case]
    if case in ("truncated data file", "wrong-checksum data file"):
        data_dir = mnist_files(results, "truncated" if case.startswith("truncated") else "content")
        argv = ["data", "prepare", "mnist", "--data-dir", data_dir]
    else:
        prepare(results)
    before = tree_digest(results)
    code, out, err = run_cli(*argv, *([] if argv[0] == "data" else ["--results", results]))
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlaebench: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in out + err
    assert tree_digest(results) == before
