"""The harness's second pass: stable run identity, training hooks owned by the model, grids,
includes, compact reported tables, claims, metrics with parts, and the records as one DataFrame."""

import dataclasses
import inspect
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import torchvision.utils
from conftest import table_rows
from toy_hooks import ToyHooks

import models
from benchmarks import UserError, data, metrics, records, specs, train
from benchmarks.data import Dataset
from models.blocks import optim
from report import claims, document, generate

HERE = Path(__file__).parent
COMMITTED = sorted((HERE.parent / "results" / "runs").glob("baselines__vae__digits__smoke__seed0__*.json"))
DIGITS = data.load("digits")


def spec_folder(tmp_path, monkeypatch, **texts) -> Path:
    """A specs folder holding copies of the real specs plus ``texts`` (key -> TOML), in use."""
    folder = tmp_path / "specs"
    shutil.copytree(specs.HERE / "papers", folder, dirs_exist_ok=True)
    for key, text in texts.items():
        (folder / f"{key}.toml").write_text(text)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(folder))
    return folder


# --- stable run identity --------------------------------------------------------------------------------------


@pytest.fixture
def committed_record(tmp_path, monkeypatch):
    """A copy of a committed record and of the specs; the record is current before any change."""
    assert COMMITTED, "the committed digits smoke record of the baselines' VAE is missing"
    spec_folder(tmp_path, monkeypatch)
    record = records.read(COMMITTED[0])
    assert specs.current_run_id(record) == record["run_id"]
    return record


def test_a_new_keyword_with_a_default_leaves_records_current(committed_record, monkeypatch):
    from models.vae import VAE

    original = VAE.__init__
    signature = inspect.signature(original)

    def init(self, *args, dropout=0.0, **kwargs):
        original(self, *args, **kwargs)

    extra = inspect.Parameter("dropout", inspect.Parameter.KEYWORD_ONLY, default=0.0)
    init.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
    monkeypatch.setattr(VAE, "__init__", init)
    assert "dropout" in models.hyper_parameters("vae")  # the new keyword is seen...
    assert specs.current_run_id(committed_record) == committed_record["run_id"]  # ...and changes no run id


def test_a_new_training_key_or_metric_leaves_records_current(committed_record, monkeypatch):
    monkeypatch.setitem(specs.TRAINING_DEFAULTS, "label_smoothing", 0.0)
    monkeypatch.setitem(metrics.METRICS, "new_metric", metrics.Metric("New", "a metric added later", "lower"))
    assert specs.current_run_id(committed_record) == committed_record["run_id"]


@pytest.mark.parametrize(
    "change",
    ["method version", "protocol version", "spec hyper-parameter", "budget cap"],
)
def test_a_changed_choice_or_version_makes_records_stale(committed_record, monkeypatch, change):
    from models.vae import VAE

    if change == "method version":
        monkeypatch.setattr(VAE, "version", VAE.version + 1)
    elif change == "protocol version":
        monkeypatch.setattr(specs, "PROTOCOL_VERSION", specs.PROTOCOL_VERSION + 1)
    elif change == "spec hyper-parameter":
        path = specs.papers_dir() / "baselines.toml"
        vae = 'hidden = [200, 200], activation = "tanh", init = "glorot", samples = '
        path.write_text(path.read_text().replace(vae + "1", vae + "2"))
    else:
        smoke = specs.load_budgets()["smoke"]
        monkeypatch.setattr(
            specs,
            "load_budgets",
            lambda: {"smoke": specs.Budget("smoke", smoke.description, {**smoke.caps, "max_epochs": 4})},
        )
    current = specs.current_run_id(committed_record)
    assert current is not None and current != committed_record["run_id"]


def test_the_tables_call_a_record_stale_only_after_a_version_bump(committed_record, tmp_path, monkeypatch):
    from models.vae import VAE

    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    shutil.copy(COMMITTED[0], results / "runs")
    assert generate.annotated_frame(results)["current"].tolist() == [True]
    monkeypatch.setattr(VAE, "version", VAE.version + 1)
    assert generate.annotated_frame(results)["current"].tolist() == [False]


# --- training hooks -------------------------------------------------------------------------------------------

TOY_SPEC = """
[paper]
title = "Toy"
citation = "Nobody, tests"

[evaluation]
importance_samples = 20
compare = ["nll"]
show = ["kl[top]", "cluster_acc[bottom]"]

[training]
batch_size = 100
epochs = 3
optimizer = "adamax"
learning_rate = 2e-3
clip_grad_norm = 1.0
ema_decay = 0.9

[datasets.digits]

[methods.toy]
model = "toy_hooks"
hyper = { warmup_epochs = 2 }

[[claims]]
claim = "The toy's NLL is below 10,000 nats"
source = "tests"
dataset = "digits"
metric = "nll"
method = "toy"
than = 10000
direction = "lower"
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    models.register("toy_hooks")(ToyHooks)
    try:
        spec_folder(tmp_path, monkeypatch, toy=TOY_SPEC)
        yield specs.resolve(specs.load_paper("toy"), "toy", "digits", specs.budget("smoke"), 0)
    finally:
        del models._REGISTRY["toy_hooks"]


def test_a_method_using_every_hook_trains_through_the_unchanged_harness(toy, monkeypatch):
    clipped = []
    clip = torch.nn.utils.clip_grad_norm_
    counted = lambda parameters, max_norm, **kw: clipped.append(max_norm) or clip(parameters, max_norm, **kw)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counted)
    torch.manual_seed(0)
    model = models.build("toy_hooks", DIGITS.shape, toy["hyper"])
    trained = train.train(model, DIGITS, toy, torch.device("cpu"), progress=False)
    assert trained["status"] == "ok", trained["error"]
    steps = trained["timing"]["steps"]
    assert steps == 3 * 13  # 1,297 digits in batches of 100, 3 epochs

    # data-dependent initialisation: once, on a first batch, before any step
    assert model.seen["initialize"] == [(100, 1, 8, 8)] and model.seen["steps_before_initialize"] == 0
    # Adamax, its gradient clipped to the spec's norm before every step
    assert isinstance(trained["optimizer"], torch.optim.Adamax)
    assert clipped == [1.0] * steps
    # the per-epoch hook: the KL weight warmed up over two epochs, logged in the curves
    assert trained["curves"]["kl_weight"] == [0.5, 1.0, 1.0]
    # the evaluated weights are the exponential moving average (0.9) of the weights after each step,
    # from the initial ones
    evaluated = trained["evaluated"]
    assert evaluated is not model
    average = model.seen["parameters_at_start"]
    for after_step in model.seen["parameters_after_step"]:
        average = 0.9 * average + 0.1 * after_step
    torch.testing.assert_close(torch.cat([p.flatten() for p in evaluated.parameters()]), average)
    assert not torch.allclose(average, torch.cat([p.detach().flatten() for p in model.parameters()]))


def test_the_moving_average_averages_the_weights_and_takes_the_counts_as_they_are():
    """An integer buffer (RME's components in use, the ladder's step counter) is copied into the
    averaged model, not averaged: torch's average truncates, so 1 -> 2 stayed 1 and a constant 3 fell to 2."""
    from models.blocks import optim

    model = torch.nn.Linear(2, 1)
    model.register_buffer("active", torch.tensor(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    evaluated = optim.exponential_moving_average(model, optimizer, 0.9995)
    average = model.weight.detach().clone()
    for step in range(3):
        model.active.fill_(3 if step == 0 else 4)
        optimizer.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        average = 0.9995 * average + 0.0005 * model.weight.detach()
        assert evaluated.active.item() == model.active.item() and evaluated.active.dtype == torch.long
    torch.testing.assert_close(evaluated.weight, average)


def test_uncorrected_adamax_takes_the_steps_of_kingma_et_als_code():
    """m ← β1 m + (1 − β1) g, u ← max(β2 u, |g|), w ← w − lr · m / u, with no bias correction of m
    (openai/iaf's Adamax): the first step is a tenth of torch's. The count survives a checkpoint, and
    the learning rate the harness sets each epoch is the one scaled."""
    torch.manual_seed(0)
    weights = torch.nn.Parameter(torch.randn(6))
    training = {
        "optimizer": "adamax_uncorrected",
        "learning_rate": 2e-3,
        "adam_betas": [0.9, 0.999],
        "adam_eps": 1e-8,
        "weight_decay": 0.0,
        "clip_grad_norm": 0.0,
    }
    optimizer = optim.build_optimizer([weights], training)
    expected, m, u = weights.detach().clone(), torch.zeros(6), torch.zeros(6)
    gradients = torch.randn(8, 6)
    for step, g in enumerate(gradients):
        if step == 4:  # resumed from a checkpoint, at a lower rate
            saved = optimizer.state_dict()
            optimizer = optim.build_optimizer([weights], training)
            optimizer.load_state_dict(saved)
            optimizer.param_groups[0]["lr"] = 1e-3
        lr = 2e-3 if step < 4 else 1e-3
        weights.grad = g.clone()
        optimizer.step()
        m, u = 0.9 * m + 0.1 * g, torch.maximum(0.999 * u, g.abs())
        expected -= lr * m / u
        torch.testing.assert_close(weights.detach(), expected)
        assert optimizer.param_groups[0]["lr"] == lr  # the schedule's rate is left as it was set
    # torch's Adamax, bias-corrected, moves ten times as far at the first step
    corrected, uncorrected = (torch.zeros(6, requires_grad=True) for _ in range(2))
    for w, name in ((corrected, "adamax"), (uncorrected, "adamax_uncorrected")):
        w.grad = gradients[0].clone()
        optim.build_optimizer([w], {**training, "optimizer": name}).step()
    torch.testing.assert_close(uncorrected.detach(), 0.1 * corrected.detach())


def test_a_method_with_latent_parts_gets_per_part_metrics(toy):
    record = train.run(toy, specs.run_id(toy), DIGITS, torch.device("cpu"), progress=False)
    assert record["status"] == "ok", record["error"]
    kl = record["metrics"]["kl"]
    assert set(kl["parts"]) == {"top", "bottom"}
    assert sum(kl["parts"].values()) == pytest.approx(kl["value"], rel=1e-6)
    assert kl["parts"]["top"] == pytest.approx(sum(kl["per_dim"][:2]), rel=1e-6)
    units = record["metrics"]["active_units"]
    assert units["parts"]["top"] + units["parts"]["bottom"] == units["value"]
    assert set(record["metrics"]["cluster_acc"]["parts"]) == {"top", "bottom"}
    assert all(0 <= v <= 1 for v in record["metrics"]["cluster_acc"]["parts"].values())
    # a part is a column of the records' frame, and a table can show it
    frame = records.frame([record])
    assert frame.loc[0, "kl[top]"] == kl["parts"]["top"]


def test_the_default_hooks_keep_the_plain_recipe():
    config = specs.resolve(specs.load_paper("baselines"), "vae", "digits", specs.budget("smoke"), 0)
    config["training"]["epochs"] = 1
    model = models.build("vae", DIGITS.shape, config["hyper"])
    trained = train.train(model, DIGITS, config, torch.device("cpu"), progress=False)
    assert trained["evaluated"] is model  # no moving average unless the spec asks
    optimizer = trained["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["eps"] == 1e-4
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks  # nothing per step
    assert set(trained["curves"]) == {"epoch", "lr", "train_elbo", "valid_elbo"}


# --- grids, includes, compact reported tables -----------------------------------------------------------------


def test_a_grid_expands_to_named_variants_with_their_own_run_ids():
    paper = specs.load_paper("baselines")
    assert [m for m in paper.methods if m.startswith("iwae")] == ["iwae[samples=5]", "iwae[samples=50]"]
    assert paper.select("iwae") == ["iwae[samples=5]", "iwae[samples=50]"]
    assert paper.select("iwae[samples=50]") == ["iwae[samples=50]"]
    configs = [specs.resolve(paper, m, "mnist", specs.budget("short"), 0) for m in paper.select("iwae")]
    assert [c["hyper"]["samples"] for c in configs] == [5, 50]
    assert [c["identity"]["hyper"]["samples"] for c in configs] == [5, 50]
    assert configs[0]["identity"]["method"] == "iwae[samples=5]"
    assert len({specs.run_id(c) for c in configs}) == 2
    with pytest.raises(UserError, match=r"no method 'iwae\[samples=7\]'"):
        paper.select("iwae[samples=7]")


def test_selecting_one_variant_runs_only_it(run_cli, tmp_path):
    code, out, err = run_cli(
        "run",
        "--paper",
        "baselines",
        "--method",
        "iwae[samples=5]",
        "--dataset",
        "digits",
        "--budget",
        "smoke",
        "--results",
        tmp_path,
        "--quiet",
    )
    assert code == 0, err
    (path,) = (tmp_path / "runs").glob("*.json")
    assert path.name.startswith("baselines__iwae-samples-5__digits__smoke__seed0__")
    assert json.loads(path.read_text())["method"] == "iwae[samples=5]"


GRID_AND_INCLUDE = """
[paper]
title = "Includes"
citation = "Nobody, tests"

[evaluation]
importance_samples = 10
compare = ["nll"]

[training]
batch_size = 64

[datasets.digits]

[methods.vae]
include = "baselines.vae"
hyper = { activation = "relu" }
grid = { latent_dim = [2, 4], "training.learning_rate" = [0.01] }

[[reported_tables]]
source = "Nobody, Table 9"
metric = "nll"
tolerance = 0.5
columns = ["method", "dataset", "value"]
rows = [["vae[latent_dim=2,training.learning_rate=0.01]", "digits", 40.0]]
"""


def test_an_include_reuses_another_specs_method_and_overrides_what_it_sets(tmp_path, monkeypatch):
    spec_folder(tmp_path, monkeypatch, includes=GRID_AND_INCLUDE)
    paper = specs.load_paper("includes")
    baseline = specs.load_paper("baselines").methods["vae"]
    assert list(paper.methods) == [
        "vae[latent_dim=2,training.learning_rate=0.01]",
        "vae[latent_dim=4,training.learning_rate=0.01]",
    ]
    method = paper.methods["vae[latent_dim=4,training.learning_rate=0.01]"]
    assert method.model == "vae" and method.citation == baseline.citation
    assert method.hyper == {**baseline.hyper, "activation": "relu", "latent_dim": 4}
    # the including paper's training applies (batch 64, not the baselines' 20), and the grid's learning rate
    assert method.training["batch_size"] == 64 and method.training["learning_rate"] == 0.01
    (entry,) = paper.reported
    assert (entry.method, entry.value, entry.tolerance, entry.source) == (
        "vae[latent_dim=2,training.learning_rate=0.01]",
        40.0,
        0.5,
        "Nobody, Table 9",
    )


def test_a_method_may_include_one_of_its_own_papers_methods_but_not_in_a_cycle(tmp_path, monkeypatch):
    own = """
[paper]
title = "Own includes"
citation = "Nobody, tests"

[evaluation]
importance_samples = 10
compare = ["nll"]

[datasets.digits]

[methods.vae]
include = "baselines.vae"

[methods.small]
include = "own.vae"
hyper = { latent_dim = 2 }
"""
    spec_folder(tmp_path, monkeypatch, own=own)
    paper = specs.load_paper("own")
    assert paper.methods["small"].hyper == {**paper.methods["vae"].hyper, "latent_dim": 2}
    spec_folder(tmp_path, monkeypatch, own=own.replace('include = "baselines.vae"', 'include = "own.small"'))
    with pytest.raises(UserError, match=r"include cycle own\.vae -> own\.small -> own\.vae"):
        specs.load_paper("own")


@pytest.mark.parametrize(
    "breakage, needles",
    [
        (('include = "baselines.vae"', 'include = "baselines.nope"'), ["include", "nope", "iwae"]),
        (('include = "baselines.vae"', 'include = "includes.vae"'), ["include cycle"]),
        (('include = "baselines.vae"', 'include = "vae"'), ["<paper>.<method>"]),
        (("latent_dim = [2, 4]", "latent_dim = []"), ["latent_dim", "non-empty list"]),
        (("latent_dim = [2, 4]", "bogus = [1]"), ["grid", "bogus", "latent_dim"]),
        (('"digits", 40.0]', '"digits"]'), ["reported_tables[0] rows[0]", "3 values"]),
        (('"digits", 40.0]', '"digits", "forty"]'), ["value", "forty"]),
    ],
    ids=["unknown-method", "cycle", "no-paper", "empty-grid", "unknown-grid-key", "short-row", "value-not-a-number"],
)
def test_malformed_includes_grids_and_tables_are_refused(tmp_path, monkeypatch, breakage, needles):
    assert breakage[0] in GRID_AND_INCLUDE
    spec_folder(tmp_path, monkeypatch, includes=GRID_AND_INCLUDE.replace(*breakage))
    with pytest.raises(UserError) as error:
        specs.load_paper("includes")
    for needle in needles:
        assert needle in str(error.value)


CLAIM_TABLE = """
[[claims]]
claim = "k = 2 beats the VAE"
source = "Nobody, Table 9"
dataset = "digits"
metric = "nll"
method = "vae[latent_dim=2,training.learning_rate=0.01]"
than = "vae[latent_dim=4,training.learning_rate=0.01]"
direction = "lower"

[[claim_tables]]
source = "Nobody, Table 9"
metric = "nll"
direction = "lower"
level = 0.1
columns = ["claim", "method", "than", "dataset"]
rows = [
    [
        "k = 2 beats the VAE",
        "vae[latent_dim=2,training.learning_rate=0.01]",
        "vae[latent_dim=4,training.learning_rate=0.01]",
        "digits",
    ],
    ["k = 4 beats 40 nats", "vae[latent_dim=4,training.learning_rate=0.01]", 40.0, "digits"],
]
"""


def test_claim_tables_expand_to_the_claims_their_rows_and_shared_keys_spell_out(tmp_path, monkeypatch):
    spec_folder(tmp_path, monkeypatch, includes=GRID_AND_INCLUDE + CLAIM_TABLE)
    single, first, second = specs.load_paper("includes").claims
    assert first == dataclasses.replace(single, level=0.1)  # the same claim, with the table's level
    assert (second.than, second.metric, second.direction, second.level) == (40.0, "nll", "lower", 0.1)
    broken = CLAIM_TABLE.replace('40.0, "digits"]', '40.0, "digits", "extra"]')
    spec_folder(tmp_path, monkeypatch, includes=GRID_AND_INCLUDE + broken)
    with pytest.raises(UserError, match=r"claim_tables\[0\] rows\[1\]: expected 4 values"):
        specs.load_paper("includes")
    unknown = CLAIM_TABLE.replace('"k = 4 beats 40 nats", "vae[', '"k = 4 beats 40 nats", "nope[')
    spec_folder(tmp_path, monkeypatch, includes=GRID_AND_INCLUDE + unknown)
    with pytest.raises(UserError, match=r"claim_tables\[0\] rows\[1\] method: 'nope"):
        specs.load_paper("includes")


# --- claims ---------------------------------------------------------------------------------------------------


def claim(direction="lower", than="b", margin=0.0, ratio=None, level=0.05):
    return specs.Claim("a beats b", "tests", "digits", "nll", "a", than, direction, margin, ratio, level)


@pytest.mark.parametrize(
    "values, than, kind, expected",
    [
        ([80.0, 80.5, 79.8], [90.0, 90.4, 89.7], {}, "holds"),  # a clear win
        ([90.0, 90.4, 89.7], [80.0, 80.5, 79.8], {}, "fails"),  # a clear loss
        ([80.0, 80.5], [90.0, 90.4, 89.7], {}, "inconclusive"),  # two seeds on a side
        ([85.0, 87.0, 86.1], [86.0, 85.2, 87.1], {}, "fails"),  # overlapping seeds: not shown at the level
        ([], [90.0, 90.4, 89.7], {}, "no runs"),
        ([80.0, 80.5, 79.8], [90.0, 90.4, 89.7], {"margin": 20.0}, "fails"),  # a win, but not by the claimed margin
        ([80.0, 80.5, 79.8], [90.0, 90.4, 89.7], {"margin": 5.0}, "holds"),
        ([88.0, 88.3, 87.9], [87.5, 87.6, 87.4], {"margin": -1.0}, "holds"),  # worse, but by less than 1
        ([89.0, 89.3, 88.9], [87.5, 87.6, 87.4], {"margin": -1.0}, "fails"),  # worse by more than 1
        ([88.0, 88.3, 87.9], [87.5, 87.6, 87.4], {}, "fails"),  # without the allowance: a loss
        ([1.0, 1.1, 0.9], [20.0, 21.0, 19.0], {"ratio": 10.0}, "holds"),  # ten times lower
        ([1.0, 1.1, 0.9], [5.0, 5.5, 4.5], {"ratio": 10.0}, "fails"),  # only five times
        ([80.0, 80.5, 79.8], 100.0, {}, "holds"),  # against a number
        ([80.0, 80.5, 79.8], 75.0, {}, "fails"),
        ([12, 12, 12], [10, 10, 10], {"direction": "higher"}, "holds"),  # no variance: by the values
        ([10, 10, 10], [10, 10, 10], {"direction": "higher"}, "fails"),
    ],
)
def test_claim_verdicts(values, than, kind, expected):
    assert claims.verdict(claim(**kind), values, than)["verdict"] == expected


def test_a_constant_side_is_tested_by_the_other_sides_variance_without_a_warning():
    """Every seed of one method keeps all 50 units active, the other's keep 48, 46 and 43: Welch's test
    with one side constant is the one-sample test of the other side against that constant, and scipy's
    precision-loss warning on the constant side (which the report printed) is not raised."""
    values, than = [50.0, 50.0, 50.0], [48.0, 46.0, 43.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = claims.verdict(claim(direction="higher"), values, than)
    assert result["p"] == pytest.approx(scipy.stats.ttest_1samp(than, 50.0, alternative="less").pvalue)
    assert result["verdict"] == "holds"


def test_a_borderline_win_holds_at_a_loose_level_and_fails_at_a_strict_one():
    values, than = [85.0, 85.6, 84.9, 85.3], [85.9, 86.4, 85.4, 86.1]
    p = claims.verdict(claim(), values, than)["p"]
    assert 0.001 < p < 0.1
    assert claims.verdict(claim(level=0.1), values, than)["verdict"] == "holds"
    assert claims.verdict(claim(level=0.001), values, than)["verdict"] == "fails"


def hand_record(config: dict, metrics: dict, timing: dict | None = None) -> dict:
    """A record of a run that never trained: the given metrics and timing, status ok."""
    return {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": specs.run_id(config),
        "paper": config["paper"],
        "method": config["method"],
        "dataset": config["dataset"],
        "budget": config["budget"],
        "seed": config["seed"],
        "config": config,
        "status": "ok",
        "stop_reason": "max_epochs",
        "error": None,
        "curves": {},
        "provenance": {},
        "metrics": metrics,
        "timing": timing or {},
    }


def test_the_tables_show_each_claims_verdict_at_each_budget(toy, tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1, 2):
        config = {**toy, "seed": seed, "identity": {**toy["identity"], "seed": seed}}
        record = hand_record(config, {"nll": {"value": 50.0 + seed, "unit": "nats", "estimator": {}}})
        records.write(record, records.path_for(results, config, record["run_id"]))
    written = generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "toy__claims.md").read_text()
    assert tmp_path / "out" / "toy__claims.tex" in written
    (row,) = [line for line in markdown.splitlines() if line.startswith("| (1)")]
    assert "smoke" in row and "toy: 51.00 ± 1.00 (n=3)" in row and row.rstrip(" |").endswith("holds")
    assert "tests; level 0.05" in markdown


LAYER_CLAIMS = """
[[claims]]
claim = "The top layer clusters better than the bottom one"
source = "tests"
dataset = "digits"
metric = "cluster_acc[top]"
method = "toy"
than = "toy"
than_metric = "cluster_acc[bottom]"
direction = "higher"
"""


def test_a_claim_can_compare_two_metrics_of_one_method_layer_against_layer(toy, tmp_path, monkeypatch):
    spec_folder(tmp_path, monkeypatch, toy=TOY_SPEC + LAYER_CLAIMS)
    paper = specs.load_paper("toy")
    results = tmp_path / "results"
    for seed in (0, 1, 2):
        config = specs.resolve(paper, "toy", "digits", specs.budget("smoke"), seed)
        parts = {"top": 0.80 + 0.01 * seed, "bottom": 0.30 + 0.01 * seed}
        record = hand_record(config, {"cluster_acc": {"value": parts["top"], "parts": parts, "estimator": {}}})
        records.write(record, records.path_for(results, config, record["run_id"]))
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "toy__claims.md").read_text()
    (row,) = [line for line in markdown.splitlines() if line.startswith("| (2)")]
    assert "toy cluster_acc[top]: 0.810 ± 0.010 (n=3)" in row and "toy cluster_acc[bottom]: 0.310 ± 0.010 (n=3)" in row
    assert row.rstrip(" |").endswith("holds")
    with pytest.raises(UserError, match="than_metric: compares with a method's metric, but than is a number"):
        spec_folder(tmp_path, monkeypatch, toy=TOY_SPEC + LAYER_CLAIMS.replace('than = "toy"', "than = 0.5"))
        specs.load_paper("toy")


BY_GRID = """
[paper]
title = "Grid layout"
citation = "Nobody, tests"

[evaluation]
importance_samples = 10
compare = ["nll"]
cost_relative_to = "vae"

[datasets.digits]

[methods.vae]
include = "baselines.vae"

[methods.small]
include = "baselines.vae"
grid = { latent_dim = [2, 4] }

[[reported]]
method = "small[latent_dim=2]"
dataset = "digits"
metric = "nll"
value = 40.0
tolerance = 1.0
source = "Nobody, Table 9"
"""


def test_a_grid_gets_a_table_in_the_papers_layout_with_costs_relative_to_the_reference(tmp_path, monkeypatch):
    spec_folder(tmp_path, monkeypatch, bygrid=BY_GRID)
    paper = specs.load_paper("bygrid")
    results = tmp_path / "results"
    runs = {"vae": (50.0, 1.0, 2.0), "small[latent_dim=2]": (45.0, 3.0, 2.0)}  # nll, s/epoch, latency (ms)
    for method, (nll, per_epoch, latency) in runs.items():
        for seed in (0, 1):
            config = specs.resolve(paper, method, "digits", specs.budget("smoke"), seed)
            record = hand_record(
                config,
                {"nll": {"value": nll + seed, "unit": "nats", "estimator": {}}},
                {"s_per_epoch": per_epoch, "inference_latency_ms": latency},
            )
            records.write(record, records.path_for(results, config, record["run_id"]))
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "bygrid__digits__smoke__by-latent_dim.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Method",
        "without latent_dim",
        "latent_dim = 2",
        "latent_dim = 4",
    ]
    rows = table_rows(markdown)
    assert rows["vae"] == ["50.50 ± 0.71; train ×1; test ×1", "–", "–"]
    assert rows["small"] == ["–", "45.50 ± 0.71 (paper 40.00); train ×3; test ×1", "–"]


TIMING_CLAIM = """
[[claims]]
claim = "The small VAE trains faster than the VAE"
source = "tests"
dataset = "digits"
metric = "s_per_epoch"
method = "small[latent_dim=2]"
than = "vae"
direction = "lower"
"""


@pytest.mark.parametrize("small_device", ["CPU A", "GPU B"])
def test_times_are_compared_only_between_runs_on_the_same_devices(tmp_path, monkeypatch, small_device):
    """A ratio of two machines' seconds, or a claim about speed decided by them, would measure the
    machines: the grid shows no cost ratio and the claim is inconclusive when the devices differ."""
    spec_folder(tmp_path, monkeypatch, bygrid=BY_GRID + TIMING_CLAIM)
    paper = specs.load_paper("bygrid")
    results = tmp_path / "results"
    runs = {"vae": (2.0, "CPU A"), "small[latent_dim=2]": (1.0, small_device)}  # s/epoch, device
    for method, (per_epoch, device) in runs.items():
        for seed in (0, 1, 2):
            config = specs.resolve(paper, method, "digits", specs.budget("smoke"), seed)
            timing = {"s_per_epoch": per_epoch + 0.01 * seed, "inference_latency_ms": 1.0, "device_name": device}
            record = hand_record(config, {"nll": {"value": 45.0, "unit": "nats", "estimator": {}}}, timing)
            records.write(record, records.path_for(results, config, record["run_id"]))
    generate.write_tables(results, tmp_path / "out")
    cell = table_rows((tmp_path / "out" / "bygrid__digits__smoke__by-latent_dim.md").read_text())["small"][1]
    (claim,) = generate.claim_verdicts(paper, generate.annotated_frame(results))
    if small_device == "CPU A":
        assert cell.endswith("; train ×0.5; test ×1") and claim["verdict"] == "holds"
    else:
        assert cell.endswith("; costs: not on vae's devices") and claim["verdict"] == "inconclusive"


def test_a_claim_naming_an_unknown_method_is_refused(tmp_path, monkeypatch, toy):
    spec_folder(tmp_path, monkeypatch, toy=TOY_SPEC.replace('method = "toy"', 'method = "nobody"'))
    with pytest.raises(UserError, match=r"claims\[0\] method: 'nobody' is not a method of the spec; valid: toy"):
        specs.load_paper("toy")


def test_the_baselines_claims_name_their_sources():
    paper = specs.load_paper("baselines")
    assert len(paper.claims) >= 3
    assert all("Burda et al. 2016" in c.source for c in paper.claims)
    assert {c.method for c in paper.claims} <= set(paper.methods)


# --- records as a table ---------------------------------------------------------------------------------------


def test_records_frame_has_a_row_per_run_and_a_column_per_metric():
    committed = records.load_all(HERE.parent / "results")
    frame = records.frame(committed)
    assert len(frame) == len(committed)
    identity = {"run_id", "paper", "method", "dataset", "budget", "seed", "status"}
    assert identity | {"nll", "kl", "s_per_epoch"} <= set(frame)
    row = frame.set_index("run_id").loc[committed[0]["run_id"]]
    assert row["nll"] == committed[0]["metrics"]["nll"]["value"]
    assert row["s_per_epoch"] == committed[0]["timing"]["s_per_epoch"]


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8)], ids=["grey", "colour"])
def test_picture_grids_are_torchvisions_grey_ones_in_one_channel(tmp_path, shape):
    from PIL import Image

    grid = torch.rand(3, 4, *shape, generator=torch.Generator().manual_seed(0))
    written = records.save_image_grids(tmp_path, "0123456789abcdef", {"samples": grid})
    torchvision.utils.save_image(grid.reshape(12, *shape), tmp_path / "reference.png", nrow=4)
    with Image.open(tmp_path / written["samples"]) as image, Image.open(tmp_path / "reference.png") as reference:
        assert image.mode == ("L" if shape[0] == 1 else "RGB") and image.size == reference.size
        expected = np.asarray(reference)[..., 0] if shape[0] == 1 else np.asarray(reference)
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_pictures_of_centred_data_add_the_training_mean_back(tmp_path):
    """A Gaussian decoder whose means are all 0 draws, in centred data's space, the training mean: the
    saved pictures must show it (0.25 → grey 64), not black."""
    from PIL import Image

    mean = torch.full((1, 8, 8), 0.25)
    test = torch.zeros(32, 1, 8, 8)  # centred test images: each is the mean
    data = Dataset("centred", (1, 8, 8), "gaussian", test, test, test, None, pixel_variance=1.0, pixel_mean=mean)
    model = models.build("vae", (1, 8, 8), {"latent_dim": 2, "hidden": [4]}, "gaussian")
    torch.nn.init.zeros_(model.decoder[-1].weight)
    torch.nn.init.zeros_(model.decoder[-1].bias)
    record = {"seed": 0, "run_id": "0123456789abcdef", "status": "ok", "error": None}
    train.draw_figures(record, model, data, tmp_path)
    assert set(record["figures"]) == {"samples", "reconstructions"} and record["status"] == "ok"
    for path in record["figures"].values():
        with Image.open(tmp_path / path) as image:
            first = np.asarray(image.convert("L"))[2:10, 2:10]  # the first picture, inside the 2-pixel padding
        assert (first == 64).all(), first


NLL_CLAIMS = """
[[claim_tables]]
source = "tests"
metric = "nll"
direction = "lower"
dataset = "digits"
columns = ["claim", "method", "than"]
rows = [
    ["The small VAE reaches a lower NLL than the VAE", "small[latent_dim=2]", "vae"],
    ["The VAE reaches a lower NLL than the small VAE at latent_dim = 4", "vae", "small[latent_dim=4]"],
]
"""


def nll_claim_runs(tmp_path, monkeypatch, runs: dict) -> tuple:
    """The NLL claims' paper and a results folder of three seeds a method, from ``runs``: method ->
    (nll, ais_nll or None, AIS minus IS on the AIS points or None); each seed adds 0.1 to all three."""
    spec_folder(tmp_path, monkeypatch, bygrid=BY_GRID + NLL_CLAIMS)
    paper = specs.load_paper("bygrid")
    results = tmp_path / "results"
    for method, (nll, ais_nll, ais_minus_is) in runs.items():
        for seed in (0, 1, 2):
            config = specs.resolve(paper, method, "digits", specs.budget("smoke"), seed)
            measured = {"nll": {"value": nll + 0.1 * seed, "unit": "nats", "estimator": {}}}
            if ais_nll is not None:
                measured["ais_nll"] = {"value": ais_nll + 0.1 * seed, "unit": "nats", "estimator": {}}
                if ais_minus_is is not None:
                    measured["ais_nll"]["minus_importance_sampled"] = ais_minus_is + 0.1 * seed
            record = hand_record(config, measured)
            records.write(record, records.path_for(results, config, record["run_id"]))
    return paper, results


def test_a_claim_on_the_nll_is_also_tested_on_ais_where_both_sides_have_it(tmp_path, monkeypatch):
    """The small VAE's NLL is the lower by IS, but not by AIS (its q made IS the tighter): the claim
    holds, and its AIS test says it fails; a side without AIS leaves that test out."""
    paper, results = nll_claim_runs(
        tmp_path,
        monkeypatch,
        {
            "vae": (50.0, 44.0, None),
            "small[latent_dim=2]": (45.0, 44.5, None),
            "small[latent_dim=4]": (52.0, None, None),
        },
    )
    first, second = generate.claim_verdicts(paper, generate.annotated_frame(results))
    assert first["verdict"] == "holds" and first["on_ais"]["verdict"] == "fails"
    assert second["verdict"] == "holds" and second["on_ais"] is None
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "bygrid__claims.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Claim"))
    on_ais = [c.strip() for c in header.strip("|").split("|")].index("On AIS")
    cells = [
        [c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("| (")
    ]
    assert cells[0][on_ais].startswith("fails (p ") and cells[1][on_ais] == "–"
    assert "On AIS: a claim on the NLL tested in the same way on the AIS estimate" in markdown
    [summary] = document.summary_rows(generate.annotated_frame(results), [paper])
    assert summary[2] == "2 holds, 0 fails, 0 inconclusive, 0 no runs; on AIS 0 of 1 hold"


def test_a_claim_is_not_tested_on_ais_where_a_sides_ais_reads_above_its_own_is(tmp_path, monkeypatch):
    """AIS and IS with q both bound log p(x) from below: where a side's AIS reads above its own
    importance-sampled NLL on the same points, AIS is the looser and has not converged, so the claim's
    AIS test is inconclusive and names that side; a side whose AIS reads below its IS is no reason."""
    paper, results = nll_claim_runs(
        tmp_path,
        monkeypatch,
        {
            "vae": (50.0, 44.0, -1.5),
            "small[latent_dim=2]": (45.0, 47.0, 2.0),
            "small[latent_dim=4]": (52.0, 51.0, -0.5),
        },
    )
    first, second = generate.claim_verdicts(paper, generate.annotated_frame(results))
    assert first["verdict"] == "holds" and first["on_ais"]["verdict"] == "inconclusive"
    assert first["on_ais"]["why"] == "AIS above IS: small[latent_dim=2] +2.10" and first["on_ais"]["p"] is None
    assert second["on_ais"]["verdict"] == "holds" and "why" not in second["on_ais"]  # both AIS below IS: tested
    generate.write_tables(results, tmp_path / "out")
    markdown = (tmp_path / "out" / "bygrid__claims.md").read_text()
    assert "inconclusive (AIS above IS: small[latent_dim=2] +2.10)" in markdown
    [summary] = document.summary_rows(generate.annotated_frame(results), [paper])
    assert summary[2] == "2 holds, 0 fails, 0 inconclusive, 0 no runs; on AIS 1 of 1 hold, 1 not converged"
