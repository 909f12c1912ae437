"""Dataset options: the GM-DGM code's PCA preprocessing (``pca``); what one method of a spec sets
for one dataset alone (``[methods.<name>.on.<dataset>]``: dataset options, hyper-parameters) without
changing its runs on the other datasets or the other methods' runs; and the training and evaluation
settings a paper uses on one dataset for every method (``[datasets.<name>]`` training, evaluation)."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from test_harness import spec_folder

import models
from benchmarks import UserError, data, records, specs
from benchmarks.data import Dataset
from report import generate


def _spread(n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """``n`` 8×8 images near a 5-dimensional subspace with well-separated variances."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(64, 5, generator=torch.Generator().manual_seed(99)))[0].T  # [5, 64]
    codes = torch.randn(n, 5, generator=g) * torch.tensor([10.0, 7.0, 5.0, 3.0, 2.0]) * scale
    return (0.5 + 0.01 * (codes @ basis + 0.01 * torch.randn(n, 64, generator=g))).reshape(n, 1, 8, 8)


def test_pca_projects_every_split_on_the_components_of_the_first_training_images(monkeypatch):
    monkeypatch.setattr(data, "PCA_FIT_IMAGES", 200)  # the code's 10,000, scaled to a small set
    # images past the first 200 have another spread: a PCA fitted on all of them would differ
    train = torch.cat([_spread(200, 0), _spread(100, 1, scale=30.0).flip(-1)])
    test = _spread(50, 2)
    raw = Dataset("toy", (1, 8, 8), None, train, _spread(40, 3), test, None, {})
    variant = data.prepare(raw, "gaussian", pca=5)
    assert variant.shape == (5,) and variant.test.shape == (50, 5) and variant.train.shape == (300, 5)
    reference = PCA(n_components=5, svd_solver="full").fit(train[:200].flatten(1).numpy())
    expected = reference.transform(test.flatten(1).numpy())
    signs = np.sign((variant.test.numpy() * expected).sum(0))  # a component's sign is arbitrary
    np.testing.assert_allclose(variant.test.numpy() * signs, expected, atol=1e-4)
    assert variant.pixel_variance == pytest.approx(variant.train.pow(2).mean().item())
    assert variant.pixel_mean is None and not variant.pictures  # coefficients, not pictures
    assert "first 5 principal components of the first 200 training images" in variant.info["preprocessing"]


def test_pca_with_more_components_than_images_or_pixels_is_refused():
    raw = Dataset("toy", (1, 8, 8), None, _spread(30, 0), _spread(5, 1), _spread(5, 2), None, {})
    with pytest.raises(UserError, match="pca = 40 needs at least 40 training images and pixels; .* 30 images of 64"):
        data.prepare(raw, "gaussian", pca=40)


@pytest.mark.parametrize(
    "options, error",
    [
        ({"pca": -1}, "pca = -1 is not valid; valid: an integer from 0 to 100000"),
        ({"pca": 2.5}, "pca = 2.5 is not valid; valid: an integer from 0 to 100000"),
        ({"pca": 10, "likelihood": "discretized_logistic"}, "pca = 10 goes with likelihood = 'gaussian'"),
    ],
)
def test_a_bad_pca_option_says_what_is_valid(options, error):
    with pytest.raises(UserError, match=error.replace("(", r"\(").replace(")", r"\)")):
        data.resolve_options("mnist_gray", options)


OWN_OPTIONS = """
[paper]
title = "Own options"
citation = "Nobody, 2026"

[evaluation]
importance_samples = 10
compare = ["cluster_acc"]

[datasets.mnist_gray]
likelihood = "gaussian"

[datasets.mnist]

[methods.vae]
model = "vae"
hyper = { latent_dim = 4, hidden = [16] }

[methods.gmdgm]
model = "gmdgm"
hyper = { clusters = 3, latent_dim = 4, hidden = [16] }
"""


def test_a_method_sets_dataset_options_for_itself_alone(tmp_path, monkeypatch):
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS)
    paper = specs.load_paper("own")
    plain = {m: specs.run_id(specs.resolve(paper, m, "mnist_gray", specs.budget("smoke"), 0)) for m in ("vae", "gmdgm")}
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS + "[methods.gmdgm.on.mnist_gray]\noptions = { pca = 30 }\n")
    paper = specs.load_paper("own")
    vae, gmdgm = (specs.resolve(paper, m, "mnist_gray", specs.budget("smoke"), 0) for m in ("vae", "gmdgm"))
    assert vae["dataset_options"]["pca"] == 0 and gmdgm["dataset_options"]["pca"] == 30
    assert gmdgm["dataset_options"]["likelihood"] == "gaussian"  # the paper's options, then the method's
    assert specs.run_id(vae) == plain["vae"]  # the other method's runs are the same runs
    assert specs.run_id(gmdgm) != plain["gmdgm"]
    variant = data.load("mnist_gray", options=gmdgm["dataset_options"])
    assert variant.shape == (30,) and variant.test.shape[1:] == (30,)
    model = models.build("gmdgm", variant.shape, gmdgm["hyper"], variant.likelihood)
    loss, _ = model.loss(variant.train[:8])
    assert torch.isfinite(loss)


def test_a_method_sets_hyper_parameters_for_one_dataset_alone(tmp_path, monkeypatch):
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS)
    paper = specs.load_paper("own")
    before = specs.run_id(specs.resolve(paper, "vae", "mnist", specs.budget("smoke"), 0))
    spec_folder(
        tmp_path,
        monkeypatch,
        own=OWN_OPTIONS.replace(
            "hyper = { latent_dim = 4, hidden = [16] }",
            "hyper = { latent_dim = 4, hidden = [16] }\non = { mnist_gray = { hyper = { latent_dim = 6 } } }",
        ),
    )
    paper = specs.load_paper("own")
    on_gray, on_mnist = (specs.resolve(paper, "vae", d, specs.budget("smoke"), 0) for d in ("mnist_gray", "mnist"))
    assert on_gray["hyper"]["latent_dim"] == 6 and on_gray["identity"]["hyper"] == {"latent_dim": 6, "hidden": [16]}
    assert on_mnist["hyper"]["latent_dim"] == 4 and specs.run_id(on_mnist) == before


@pytest.mark.parametrize(
    "table, error",
    [
        (
            "[methods.gmdgm.on.fashion_mnist]\noptions = { pca = 30 }",
            r"\[methods.gmdgm\] on: unknown key\(s\) fashion_mnist",
        ),
        ("[methods.gmdgm.on.mnist_gray]\noptions = { zoom = 2 }", r"on.mnist_gray.options: unknown key\(s\) zoom"),
        ("[methods.gmdgm.on.mnist_gray]\nhyper = { depth = 2 }", r"on.mnist_gray.hyper: unknown key\(s\) depth"),
        ("[methods.gmdgm.on.mnist_gray]\nseed = 2", r"on.mnist_gray: unknown key\(s\) seed; valid: hyper, options"),
        (
            '[methods.gmdgm.on.mnist_gray]\noptions = { likelihood = "discretized_logistic", pca = 30 }',
            r"on.mnist_gray.options: dataset mnist_gray: pca = 30 goes with likelihood = 'gaussian'",
        ),
        (
            "grid = { clusters = [2, 3] }\n[methods.gmdgm.on.mnist]\nhyper = { clusters = 5 }",
            "on.mnist.hyper: clusters is also the grid's; set it in one place",
        ),
    ],
)
def test_a_methods_bad_dataset_settings_are_refused_when_the_spec_loads(tmp_path, monkeypatch, table, error):
    text = OWN_OPTIONS + table + "\n"
    if table.startswith("grid"):  # the grid's key out of the method's own hyper-parameters
        text = OWN_OPTIONS.replace("clusters = 3, ", "") + table + "\n"
    spec_folder(tmp_path, monkeypatch, own=text)
    with pytest.raises(UserError, match=error):
        specs.load_paper("own")


def test_a_method_that_needs_images_refuses_pca_when_the_spec_loads(tmp_path, monkeypatch):
    text = OWN_OPTIONS.replace('model = "vae"', 'model = "vladder"').replace(
        "hyper = { latent_dim = 4, hidden = [16] }",
        "hyper = { hidden = 16, channels = [4, 8] }\non = { mnist_gray = { options = { pca = 30 } } }",
    )
    spec_folder(tmp_path, monkeypatch, own=text)
    with pytest.raises(UserError, match=r"\[methods.vae\] hyper: the method cannot be built for mnist_gray"):
        specs.load_paper("own")


ON_GRAY_ONLY = OWN_OPTIONS.replace(
    'model = "gmdgm"', 'model = "gmdgm"\ndatasets = ["mnist_gray"]\non = { mnist_gray = { options = { pca = 30 } } }'
)


def test_a_method_that_runs_on_some_datasets_alone_is_planned_resolved_and_shown_there_alone(
    tmp_path, monkeypatch, run_cli
):
    spec_folder(tmp_path, monkeypatch, own=ON_GRAY_ONLY)
    paper = specs.load_paper("own")
    assert paper.methods["gmdgm"].datasets == ("mnist_gray",) and paper.methods["vae"].datasets == (
        "mnist_gray",
        "mnist",
    )
    with pytest.raises(UserError, match="method 'gmdgm' runs on mnist_gray only, not mnist"):
        specs.resolve(paper, "gmdgm", "mnist", specs.budget("smoke"), 0)
    results = tmp_path / "results"
    code, out, err = run_cli(
        "sweep", "--paper", "own", "--budget", "smoke", "--seeds", "0", "--results", results, "--dry-run"
    )
    planned = {tuple(line.split()[3:5]) for line in out.splitlines() if line.startswith("would run")}
    assert code == 0 and planned == {("vae", "mnist_gray"), ("vae", "mnist"), ("gmdgm", "mnist_gray")}, out + err
    code, out, err = run_cli("run", "--paper", "own", "--method", "gmdgm", "--dataset", "mnist", "--budget", "smoke")
    assert (
        code == 2 and err.strip() == "vlaebench: error: paper 'own': method 'gmdgm' runs on mnist_gray only, not mnist"
    )
    no_runs = records.frame([]).assign(evaluation="", current=True, orphan=False)  # what the tables read
    tables = {d: generate.render(paper, d, None, no_runs)[0] for d in ("mnist", "mnist_gray")}
    assert "gmdgm" not in tables["mnist"] and "| gmdgm" in tables["mnist_gray"]


@pytest.mark.parametrize(
    "change, error",
    [
        (
            'datasets = ["fashion_mnist"]',
            r"\[methods.gmdgm\] datasets: \['fashion_mnist'\]: some of the paper's datasets",
        ),
        (
            'datasets = ["mnist", "mnist"]',
            r"\[methods.gmdgm\] datasets: \['mnist', 'mnist'\]: some of the paper's datasets",
        ),
        (
            "datasets = []",
            r"\[methods.gmdgm\] datasets: \[\]: some of the paper's datasets, each once; valid: mnist_gray",
        ),
        ('datasets = "mnist"', r"\[methods.gmdgm\] datasets: expected a list, got 'mnist'"),
        (
            'datasets = ["mnist"]\non = { mnist_gray = { hyper = { clusters = 2 } } }',
            r"on: unknown key\(s\) mnist_gray",
        ),
    ],
)
def test_a_bad_list_of_a_methods_datasets_is_refused_when_the_spec_loads(tmp_path, monkeypatch, change, error):
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS.replace('model = "gmdgm"', f'model = "gmdgm"\n{change}'))
    with pytest.raises(UserError, match=error):
        specs.load_paper("own")


@pytest.mark.parametrize(
    "entry",
    [
        '[[reported]]\nmethod = "gmdgm"\ndataset = "mnist"\nmetric = "nll"\nmissing = "a table"\nsource = "x"',
        '[[claims]]\nclaim = "c"\nsource = "x"\ndataset = "mnist"\nmetric = "nll"\nmethod = "vae"\nthan = "gmdgm"'
        '\ndirection = "lower"',
    ],
    ids=["reported", "claim"],
)
def test_a_number_or_claim_for_a_method_on_a_dataset_it_does_not_run_is_refused(tmp_path, monkeypatch, entry):
    spec_folder(tmp_path, monkeypatch, own=ON_GRAY_ONLY + entry + "\n")
    with pytest.raises(UserError, match="method 'gmdgm' runs on mnist_gray only, not mnist"):
        specs.load_paper("own")


ON_GRAY = '[datasets.mnist_gray]\nlikelihood = "gaussian"\n'
GRAY_SETTINGS = ON_GRAY + (
    "training = { batch_size = 64, ema_decay = 0.9995 }\nevaluation = { importance_samples = 7 }\n"
)


def test_a_dataset_sets_training_and_evaluation_for_every_method_on_it_alone(tmp_path, monkeypatch):
    # the MAE code's colour settings on CIFAR-10 (batch 64, EMA 0.9995, 512 importance samples)
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS)
    paper = specs.load_paper("own")
    before = {
        (m, d, b): specs.run_id(specs.resolve(paper, m, d, specs.budget(b), 0))
        for m in ("vae", "gmdgm")
        for d in ("mnist", "mnist_gray")
        for b in ("smoke", "paper")
    }
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS.replace(ON_GRAY, GRAY_SETTINGS))
    paper = specs.load_paper("own")
    for method in ("vae", "gmdgm"):
        gray, mnist = (specs.resolve(paper, method, d, specs.budget("paper"), 0) for d in ("mnist_gray", "mnist"))
        assert gray["training"]["batch_size"] == 64 and gray["training"]["ema_decay"] == 0.9995
        assert gray["evaluation"]["importance_samples"] == 7  # over the paper's 10
        assert gray["identity"]["training"] == {"batch_size": 64, "ema_decay": 0.9995, "epochs": 100}
        assert mnist["training"]["batch_size"] == 100 and mnist["evaluation"]["importance_samples"] == 10
        assert specs.run_id(mnist) == before[method, "mnist", "paper"]  # the other dataset's runs are the same
        assert specs.run_id(gray) != before[method, "mnist_gray", "paper"]
        smoke = specs.resolve(paper, method, "mnist_gray", specs.budget("smoke"), 0)
        assert smoke["evaluation"]["importance_samples"] == 100  # a budget's own sizes still apply
        assert smoke["training"]["epochs"] == 3 and smoke["training"]["batch_size"] == 64
    training_note, evaluation_note = generate.dataset_notes(paper, "mnist_gray")
    assert (
        "On mnist_gray, every method's training over the paper's: batch_size = 64, ema_decay = 0.9995" in training_note
    )
    assert "On mnist_gray, every method's evaluation over the paper's: importance_samples = 7" in evaluation_note
    assert generate.dataset_notes(paper, "mnist") == []


@pytest.mark.parametrize(
    "settings, error",
    [
        ("training = { batch_sise = 64 }", r"\[datasets.mnist_gray\] training: unknown key\(s\) batch_sise"),
        ("training = { ema_decay = 1.5 }", r"\[datasets.mnist_gray\] training ema_decay: expected a finite number"),
        ('evaluation = { compare = ["nll"] }', r"\[datasets.mnist_gray\] evaluation: unknown key\(s\) compare"),
        ("evaluation = { importance_samples = 0 }", "evaluation.importance_samples: expected a positive integer"),
    ],
)
def test_a_datasets_bad_settings_are_refused_when_the_spec_loads(tmp_path, monkeypatch, settings, error):
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS.replace(ON_GRAY, ON_GRAY + settings + "\n"))
    with pytest.raises(UserError, match=error):
        specs.load_paper("own")


@pytest.mark.parametrize(
    "method_training",
    ["training = { batch_size = 32 }", "grid = { 'training.batch_size' = [32, 128] }"],
    ids=["the method's training", "its grid"],
)
def test_a_training_setting_set_by_both_a_method_and_a_dataset_is_refused(tmp_path, monkeypatch, method_training):
    text = OWN_OPTIONS.replace(ON_GRAY, GRAY_SETTINGS).replace(
        'model = "vae"', 'model = "vae"\n' + method_training.replace("'", '"')
    )
    spec_folder(tmp_path, monkeypatch, own=text)
    with pytest.raises(UserError, match=r"\[methods.vae\] training: batch_size is also set by \[datasets.mnist_gray\]"):
        specs.load_paper("own")


def test_a_spec_loaded_again_is_not_built_again_and_a_failed_build_is_checked_every_time(tmp_path, monkeypatch):
    """Each load of a spec checks that its methods build; the second load of the same settings reuses
    the first's success (every paper's networks take seconds to build), while a build that failed is
    tried, and refused, at every load."""
    monkeypatch.setattr(specs, "_BUILT", set())  # as in a fresh process
    builds = []
    real_build = models.build
    monkeypatch.setattr(models, "build", lambda *args, **kwargs: builds.append(args[0]) or real_build(*args, **kwargs))
    spec_folder(tmp_path, monkeypatch, own=OWN_OPTIONS)
    specs.load_paper("own")
    assert builds  # the first load built every method
    first = len(builds)
    specs.load_paper("own")
    assert len(builds) == first
    text = OWN_OPTIONS.replace('model = "vae"', 'model = "vladder"').replace(
        "hyper = { latent_dim = 4, hidden = [16] }",
        "hyper = { hidden = 16, channels = [4, 8] }\non = { mnist_gray = { options = { pca = 30 } } }",
    )
    spec_folder(tmp_path, monkeypatch, own=text)
    for _ in range(2):
        with pytest.raises(UserError, match="the method cannot be built for mnist_gray"):
            specs.load_paper("own")
