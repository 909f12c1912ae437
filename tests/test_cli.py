"""The ``vlaebench`` command: list, user errors (one line, exit 2, nothing altered), malformed specs,
corrupt records, skip/force and tables. Training only on digits with the smoke budget."""

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tree_digest

from benchmarks import EXIT_UNAVAILABLE, cli, records, specs

RUN = ("run", "--paper", "baselines", "--method", "vae", "--dataset", "digits", "--budget", "smoke", "--seeds", "0")


def record_files(results: Path) -> list[Path]:
    return sorted((Path(results) / "runs").glob("*.json"))


def assert_user_error(code, out, err, *needles, exit_code=2):
    """Exit 2 (or ``exit_code``), exactly one stderr line ``vlaebench: error: ...`` containing every
    needle, no traceback."""
    assert code == exit_code, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vlaebench: error: "), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    assert "Traceback" not in out + err
    return lines[0]


# --- one real run, shared: each test works on its own copy ------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """``run`` of vae on digits, smoke budget, seed 0, once per module: (exit code, stdout, results)."""
    results = tmp_path_factory.mktemp("shared") / "R"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([*RUN, "--results", str(results), "--quiet"])
    return code, out.getvalue(), err.getvalue(), results


@pytest.fixture
def results(digits_run, tmp_path):
    """A private copy of the shared results folder (one ok record)."""
    code, out, err, shared = digits_run
    assert code == 0, (out, err)
    copy = tmp_path / "R"
    shutil.copytree(shared, copy)
    return copy


def test_run_digits_smoke_writes_one_record(digits_run):
    code, out, err, results = digits_run
    assert code == 0, (out, err)
    assert "Traceback" not in out + err
    files = record_files(results)
    assert len(files) == 1
    # the record, the kept weights and the pictures (samples, reconstructions), no stray temporary
    # file, no checkpoint left
    run_id = files[0].stem.rsplit("__", 1)[1]
    pictures = [results / "figures" / run_id / f"{name}.png" for name in ("samples", "reconstructions")]
    assert sorted(p for p in results.rglob("*") if p.is_file()) == sorted(
        [*files, results / "weights" / f"{run_id}.pt", *pictures]
    )
    path = files[0]
    assert path.name.startswith("baselines__vae__digits__smoke__seed0__")
    assert str(path) in out and out.startswith("ok")
    record = json.loads(path.read_text())
    assert (record["paper"], record["method"], record["dataset"], record["budget"], record["seed"]) == (
        "baselines",
        "vae",
        "digits",
        "smoke",
        0,
    )
    assert record["status"] == "ok"
    assert record["run_id"] == specs.run_id(record["config"])
    assert path.name.endswith(f"__{record['run_id']}.json")
    assert record["config"]["training"]["epochs"] == 3  # the smoke cap on the spec's 3280
    assert record["timing"]["epochs"] == 3
    nll = record["metrics"]["nll"]["value"]
    assert math.isfinite(nll) and nll > 0


# --- list -----------------------------------------------------------------------------------------------


def test_list(run_cli):
    code, out, err = run_cli("list")
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert "papers:" in lines
    assert any(line.strip().startswith("baselines:") for line in lines)
    for method in ("vae", "iwae[samples=5]", "iwae[samples=50]"):
        assert f"method {method} " in out
    assert "claim: The IWAE (k = 50) reaches a lower test NLL than the VAE" in out
    assert "86.76" in out  # a reported number
    # a dataset's options, and the settings a paper uses on it alone
    assert "cifar10 (likelihood=discretized_logistic, training batch_size=64, " in out
    assert "evaluation importance_samples=512)" in out
    methods = next(line for line in lines if line.startswith("methods:"))
    assert {"vae", "iwae"} <= {m.strip() for m in methods.split(":", 1)[1].split(",")}
    datasets = next(line for line in lines if line.startswith("datasets:"))
    assert {"digits", "mnist"} <= {d.strip() for d in datasets.split(":", 1)[1].split(",")}
    assert "budgets:" in lines
    for budget in ("smoke", "short", "nightly", "paper"):
        assert any(line.strip().startswith(f"{budget}:") for line in lines), budget


# --- bad input --------------------------------------------------------------------------------------------


@pytest.fixture
def populated(tmp_path):
    """A results folder with something in it, to show that a refused command leaves it alone."""
    results = tmp_path / "R"
    (results / "runs").mkdir(parents=True)
    (results / "runs" / "keep.json").write_text('{"not": "a record but must survive"}\n')
    (results / "notes.txt").write_text("hello\n")
    return results


def run_args(**overrides):
    args = {"--paper": "baselines", "--method": "vae", "--dataset": "digits", "--budget": "smoke", "--seeds": "0"}
    args.update(overrides)
    return ["run", *[x for kv in args.items() for x in kv]]


@pytest.mark.parametrize(
    "overrides, needles",
    [
        ({"--paper": "no_such_paper"}, ["no_such_paper", "baselines"]),
        ({"--method": "no_such_method"}, ["no_such_method", "vae", "iwae[samples=5]", "iwae[samples=50]"]),
        ({"--dataset": "no_such_dataset"}, ["no_such_dataset", "digits", "mnist"]),
        ({"--budget": "no_such_budget"}, ["no_such_budget", "smoke", "short", "nightly", "paper"]),
        ({"--seeds": "zero"}, ["zero", "comma-separated", "integers"]),
        ({"--seeds": "0,1.5"}, ["0,1.5", "comma-separated", "integers"]),
        ({"--seeds": "-1"}, ["-1", "non-negative"]),
        ({"--seeds": ","}, ["','", "comma-separated"]),
        ({"--device": "nonsense"}, ["nonsense", "cpu", "cuda"]),
        ({"--seeds": "0,1,0"}, ["0,1,0", "seed 0 given twice"]),
        ({"--seeds": "99999999999999999999"}, ["99999999999999999999", "at most 4294967295"]),
    ],
    ids=[
        "paper",
        "method",
        "dataset",
        "budget",
        "seeds-word",
        "seeds-float",
        "seeds-negative",
        "seeds-empty",
        "device-name",
        "seeds-duplicate",
        "seeds-out-of-range",
    ],
)
def test_bad_input(run_cli, populated, overrides, needles):
    before = tree_digest(populated)
    code, out, err = run_cli(*run_args(**overrides), "--results", populated, "--quiet")
    assert_user_error(code, out, err, *needles)
    assert tree_digest(populated) == before


def test_bad_input_fails_before_any_training(run_cli, tmp_path):
    # Several methods and seeds, one bad: nothing may be trained or written.
    results = tmp_path / "R"
    code, out, err = run_cli(
        "run",
        "--paper",
        "baselines",
        "--dataset",
        "digits",
        "--budget",
        "smoke",
        "--seeds",
        "0,1,x",
        "--results",
        results,
        "--quiet",
    )
    assert_user_error(code, out, err, "0,1,x")
    assert out == ""
    assert not results.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: --device cuda is valid")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_unavailable_cuda(run_cli, populated, device):
    before = tree_digest(populated)
    code, out, err = run_cli(*run_args(**{"--device": device}), "--results", populated, "--quiet")
    assert_user_error(code, out, err, device, "CUDA", "cpu")
    assert tree_digest(populated) == before


# --- malformed specs ------------------------------------------------------------------------------------------


@pytest.fixture
def spec_file(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    path = folder / "baselines.toml"
    shutil.copyfile(Path(specs.HERE) / "papers" / "baselines.toml", path)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(folder))
    return path


def edit(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_spec_copy_is_used_and_valid(run_cli, spec_file, tmp_path):
    # The control: the unbroken copy works, and it is the one read (a new title shows).
    edit(spec_file, 'title = "Baselines:', 'title = "Copied baselines:')
    code, out, err = run_cli("list")
    assert code == 0, err
    assert "Copied baselines:" in out


@pytest.mark.parametrize("command", ["list", "run"])
@pytest.mark.parametrize(
    "breakage, needles",
    [
        (("batch_size = 20", "batch_size = = 20"), ["not valid TOML"]),
        (('model = "vae"', 'model = "no_such_model"'), ["no_such_model", "vae", "iwae"]),
        (
            ('["vae", "mnist", 86.76, "MNIST, VAE, k = 1"]', '["vae", "mnist", "MNIST, VAE, k = 1"]'),
            ["reported_tables[0] rows[0]", "4 values"],
        ),
        (("samples = 1 }", "samples = 1, bogus_knob = 3 }"), ["bogus_knob", "latent_dim"]),
        (("samples = 1 }", "samples = 0 }"), ["methods.vae", "samples", "positive integers"]),
        (
            (
                'activation = "tanh", init = "glorot", samples = 1 }',
                'activation = "sigmoid", init = "glorot", samples = 1 }',
            ),
            ["methods.vae", "sigmoid", "relu"],
        ),
        (("learning_rate = 1e-3", 'learning_rate = "fast"'), ["learning_rate", "fast"]),
        (("tolerance = 1.0", "tolerance = -1.0"), ["tolerance", "-1.0"]),
        (('compare = ["nll"]', 'compare = "nll"'), ["evaluation.compare", "list"]),
        (('["vae", "mnist", 86.76,', '["vae", "mnist", "small",'), ["rows[0] value", "small"]),
        (('than = "vae"', 'than = "nobody"'), ["claims[0] than", "nobody", "iwae[samples=5]"]),
    ],
    ids=[
        "toml-syntax",
        "unregistered-model",
        "reported-row-too-short",
        "unknown-hyper",
        "hyper-the-method-cannot-use",
        "unbuildable-hyper-value",
        "learning-rate-not-a-number",
        "negative-tolerance",
        "compare-not-a-list",
        "value-not-a-number",
        "claim-unknown-method",
    ],
)
def test_malformed_spec(run_cli, spec_file, populated, command, breakage, needles):
    edit(spec_file, *breakage)
    before = tree_digest(populated)
    argv = ("list",) if command == "list" else (*RUN, "--results", populated, "--quiet")
    code, out, err = run_cli(*argv)
    assert_user_error(code, out, err, spec_file, *needles)
    assert tree_digest(populated) == before


# --- corrupt records --------------------------------------------------------------------------------------------


def test_tables_refuses_corrupt_record(run_cli, results, tmp_path):
    broken = results / "runs" / "zz_broken.json"
    broken.write_text('{"run_id": "abc", "status": ')
    before = tree_digest(results)
    out_dir = tmp_path / "O"
    code, out, err = run_cli("tables", "--results", results, "--out", out_dir)
    assert_user_error(code, out, err, broken)
    assert tree_digest(results) == before
    assert not out_dir.exists() or not any(out_dir.iterdir())  # no tables from a partial read


def test_tables_refuses_record_missing_fields(run_cli, results, tmp_path):
    broken = results / "runs" / "aa_partial.json"
    broken.write_text(json.dumps({"run_id": "abc", "status": "ok"}))
    before = tree_digest(results)
    code, out, err = run_cli("tables", "--results", results, "--out", tmp_path / "O")
    assert_user_error(code, out, err, broken, "missing")
    assert tree_digest(results) == before


@pytest.mark.parametrize(
    "garbage", [b"not json at all {", b"\xff\xfe\x00garbage", b"[1, 2, 3]\n"], ids=["text", "binary", "not-an-object"]
)
def test_run_refuses_corrupt_existing_record(run_cli, results, garbage):
    (path,) = record_files(results)
    path.write_bytes(garbage)
    before = tree_digest(results)
    code, out, err = run_cli(*RUN, "--results", results, "--quiet")
    assert_user_error(code, out, err, path)
    assert path.read_bytes() == garbage
    assert tree_digest(results) == before


# --- skip and force ---------------------------------------------------------------------------------------------


def test_second_run_skips(run_cli, results):
    (path,) = record_files(results)
    before = tree_digest(results)
    code, out, err = run_cli(*RUN, "--results", results, "--quiet")
    assert code == 0, err
    assert out.startswith("skipped")
    assert str(path) in out
    assert tree_digest(results) == before


def test_force_reruns_with_identical_metrics(run_cli, results):
    (path,) = record_files(results)
    old = json.loads(path.read_text())
    old_inode = os.stat(path).st_ino
    code, out, err = run_cli(*RUN, "--results", results, "--quiet", "--force")
    assert code == 0, err
    assert "skipped" not in out
    assert out.startswith("ok")
    assert record_files(results) == [path]  # rewritten in place, same name, nothing else
    assert [p for p in results.rglob("*") if p.is_file() and p.suffix not in (".pt", ".png")] == [path]
    assert os.stat(path).st_ino != old_inode  # a new file renamed over the old one
    new = json.loads(path.read_text())
    assert new["run_id"] == old["run_id"]
    assert new["provenance"]["started"] >= old["provenance"]["started"]
    # CPU determinism: the same seed gives the same numbers
    assert new["metrics"] == old["metrics"]
    assert new["curves"] == old["curves"]
    assert new["earlier_attempts"] == [old]  # the record it replaced, whole


# --- tables -----------------------------------------------------------------------------------------------------


def test_tables(run_cli, results, tmp_path):
    (path,) = record_files(results)
    record = json.loads(path.read_text())
    nll = f"{record['metrics']['nll']['value']:.2f}"
    before = tree_digest(results)
    out_dir = tmp_path / "O"
    code, out, err = run_cli("tables", "--results", results, "--out", out_dir)
    assert code == 0, err
    for name in ("baselines__digits__smoke.md", "baselines__digits__smoke.tex", "README.md"):
        assert (out_dir / name).is_file(), name
        assert str(out_dir / name) in out
    md = (out_dir / "baselines__digits__smoke.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("|")}
    assert {"vae", "iwae[samples=5]", "iwae[samples=50]"} <= set(rows)
    assert nll in rows["vae"]
    assert "1 ok" in rows["vae"]
    assert nll not in rows["iwae[samples=5]"] and nll not in rows["iwae[samples=50]"]
    tex = (out_dir / "baselines__digits__smoke.tex").read_text()
    assert nll in tex and "iwae[samples=50]" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex
    assert nll in (out_dir / "README.md").read_text()
    assert tree_digest(results) == before  # tables reads records, never writes them


def test_tables_is_reproducible(run_cli, results, tmp_path):
    code1, _, err1 = run_cli("tables", "--results", results, "--out", tmp_path / "O1")
    code2, _, err2 = run_cli("tables", "--results", results, "--out", tmp_path / "O2")
    assert code1 == code2 == 0, (err1, err2)
    assert tree_digest(tmp_path / "O1") == tree_digest(tmp_path / "O2")


def test_argument_errors_are_one_line(capsys, populated):
    before = tree_digest(populated)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--paper", "baselines", "--results", str(populated)])
    assert exit_.value.code == 2
    assert_user_error(2, *capsys.readouterr(), "--budget")
    assert tree_digest(populated) == before


def test_tables_refuses_an_empty_results_folder(run_cli, tmp_path):
    code, out, err = run_cli("tables", "--results", tmp_path / "typo", "--out", tmp_path / "O")
    assert_user_error(code, out, err, "no run records", "typo")
    assert not (tmp_path / "O").exists()


def test_a_leftover_temporary_file_is_not_read_as_a_record(run_cli, results, tmp_path):
    (results / "runs" / ".abc123.json.tmp").write_text('{"half a rec')  # a write killed mid-way
    code, out, err = run_cli("tables", "--results", results, "--out", tmp_path / "O")
    assert code == 0, err


def test_force_keeps_an_ok_record_when_the_rerun_fails(run_cli, results, monkeypatch):
    from models.vae import VAE

    (path,) = record_files(results)
    before = path.read_bytes()
    monkeypatch.setattr(VAE, "loss", lambda self, x: (_ for _ in ()).throw(RuntimeError("broken")))
    code, out, err = run_cli(*RUN, "--results", results, "--quiet", "--force")
    assert code == 1
    assert out.startswith("failed") and "kept the earlier ok record" in out
    assert path.read_bytes() == before


def test_rerun_failed_redoes_only_the_runs_whose_record_is_not_ok(run_cli, results):
    (path,) = record_files(results)
    before = tree_digest(results)
    code, out, _ = run_cli(*RUN, "--results", results, "--quiet", "--rerun-failed")
    assert code == 0 and out.startswith("skipped") and tree_digest(results) == before  # ok: kept
    first = {**json.loads(path.read_text()), "status": "timeout", "stop_reason": "max_wall_s"}
    second = records.replacing({**first, "status": "failed", "stop_reason": "exception"}, first)
    records.write(second, path)
    code, out, err = run_cli(*RUN, "--results", results, "--quiet", "--rerun-failed")
    assert code == 0, err
    rerun = json.loads(path.read_text())
    assert out.startswith("ok") and rerun["status"] == "ok"
    # nothing of the attempts it replaces is lost: both earlier records, oldest first, whole
    assert rerun["earlier_attempts"] == [first, {k: v for k, v in second.items() if k != "earlier_attempts"}]
    assert records.read(path)["run_id"] == first["run_id"]  # still a valid record


def test_data_status_lists_every_dataset(run_cli, tmp_path):
    code, out, err = run_cli("data", "status", "--data-dir", tmp_path)
    assert code == 0, err
    for name in ("digits", "mnist", "fashion_mnist"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "FashionMNIST/raw" in out  # what to place where


def test_data_prepare_refuses_an_unknown_dataset(run_cli):
    assert_user_error(
        *run_cli("data", "prepare", "imagenet"), "imagenet", "digits, mnist, mnist_static, mnist_gray, fashion_mnist"
    )


def test_data_prepare_says_what_is_missing(run_cli, tmp_path):
    assert_user_error(
        *run_cli("data", "prepare", "mnist", "--data-dir", tmp_path),
        "MNIST/raw",
        "train-images-idx3-ubyte",
        exit_code=EXIT_UNAVAILABLE,  # not on this machine: a sweep counts its runs as unavailable
    )


def test_a_missing_dataset_is_an_error_when_named_and_left_out_otherwise(run_cli, tmp_path, monkeypatch):
    spec = (Path(__file__).parent / "specs" / "demo.toml").read_text()
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "demo.toml").write_text(
        spec.replace("[datasets.digits]", "[datasets.omniglot]\n\n[datasets.digits]")
    )
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path / "specs"))
    empty = tmp_path / "data"  # a data directory without chardata.mat: no download is tried
    empty.mkdir()
    args = (
        "run",
        "--paper",
        "demo",
        "--method",
        "alpha",
        "--budget",
        "smoke",
        "--results",
        tmp_path / "R",
        "--data-dir",
        empty,
        "--quiet",
    )
    named = run_cli(*args, "--dataset", "omniglot")
    assert_user_error(*named, "omniglot not found", "chardata.mat", exit_code=EXIT_UNAVAILABLE)
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "unavailable omniglot: its runs are left out" in out
    assert [p.name.split("__")[2] for p in record_files(tmp_path / "R")] == ["digits"]


def test_a_list_of_methods_plans_each_once_and_a_variant_name_keeps_its_commas(run_cli, tmp_path):
    import argparse

    def planned(methods: str) -> list[str]:
        args = argparse.Namespace(paper="park2019vlae", dataset="mnist", method=methods, budget="smoke", seeds="0")
        return [config["method"] for config in cli._plan(args)]

    assert planned("vae, vlae[T=1],vlae[T=4]") == ["vae", "vlae[T=1]", "vlae[T=4]"]
    assert planned("savae,savae[T=2]") == ["savae[T=1]", "savae[T=2]", "savae[T=4]", "savae[T=8]"]  # a base, once
    assert cli._names("m[a=1,b=2],vae") == ["m[a=1,b=2]", "vae"]
    for bad, needles in ((",", ["--method", "no method"]), ("vae,vlae[T=3]", ["vlae[T=3]", "valid", "vlae[T=4]"])):
        results = tmp_path / "results"
        code, out, err = run_cli(
            "run", "--paper", "park2019vlae", "--method", bad, "--budget", "smoke", "--results", results
        )
        assert_user_error(code, out, err, *needles)
        assert not results.exists()


def test_several_papers_and_datasets_plan_each_paper_on_the_listed_datasets_it_uses(run_cli, tmp_path):
    import argparse

    def planned(papers: str, datasets: str) -> set[tuple[str, str]]:
        args = argparse.Namespace(paper=papers, dataset=datasets, method=None, budget="smoke", seeds="0")
        return {(config["paper"], config["dataset"]) for config in cli._plan(args)}

    assert planned("zhao2017ladder, ma2019mae", "mnist,fashion_mnist") == {
        ("zhao2017ladder", "mnist"),
        ("zhao2017ladder", "fashion_mnist"),
        ("ma2019mae", "mnist"),
    }
    everywhere = planned("all", "mnist,svhn")
    assert ("park2019vlae", "svhn") in everywhere and ("zhao2017ladder", "svhn") in everywhere
    assert not any(dataset not in ("mnist", "svhn") for _, dataset in everywhere)
    # a dataset that none of the papers uses, or one paper without it, is refused before anything runs
    results = tmp_path / "results"
    code, out, err = run_cli(
        "run",
        "--paper",
        "zhao2017ladder,ma2019mae",
        "--dataset",
        "mnist,digits",
        "--budget",
        "smoke",
        "--results",
        str(results),
    )
    assert_user_error(code, out, err, "no paper of zhao2017ladder, ma2019mae uses dataset 'digits'")
    code, out, err = run_cli("run", "--paper", "ma2019mae", "--dataset", "fashion_mnist", "--budget", "smoke")
    assert_user_error(code, out, err, "paper 'ma2019mae' has no dataset 'fashion_mnist'")
    assert not results.exists()
