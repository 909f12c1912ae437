"""MAE (Ma, Zhou & Hovy 2019) against what it must be: the pairwise KL of the official code against
torch.distributions' closed form, its diversity and smoothness against a hand loop over the pairs,
the plain VAE with the same networks at eta = gamma = 0, a regulariser that pushes posteriors apart,
and both methods of the spec trained and evaluated by the harness."""

import statistics

import pytest
import torch
from images28 import assert_trains_and_evaluates, images
from torch.distributions import Normal, kl_divergence

import models
from benchmarks import specs
from models.mae import diversity_and_smoothness, pairwise_kl

TINY = {"latent_dim": 4, "prior_hidden": [16], "pixelcnn_layers": 2, "pixelcnn_filters": 4}


def posteriors(b=5, d=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=generator, dtype=torch.float64), 0.5 * torch.randn(
        b, d, generator=generator, dtype=torch.float64
    )


def test_pairwise_kl_is_the_closed_form_of_every_ordered_pair_and_dimension():
    loc, log_scale = posteriors()
    kl = pairwise_kl(loc, log_scale)
    for i in range(5):
        for j in range(5):
            expected = kl_divergence(Normal(loc[i], log_scale[i].exp()), Normal(loc[j], log_scale[j].exp()))
            torch.testing.assert_close(kl[i, j], expected)


def test_diversity_is_the_mean_over_pairs_and_smoothness_the_unbiased_std_of_their_totals():
    loc, log_scale = posteriors()
    diversity, smoothness = diversity_and_smoothness(loc, log_scale)
    kl = pairwise_kl(loc, log_scale)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]  # the diagonal (zero) is not a pair
    torch.testing.assert_close(diversity, sum(kl[i, j] for i, j in pairs) / len(pairs))
    totals = [kl[i, j].sum().item() for i, j in pairs]
    assert smoothness.item() == pytest.approx(statistics.stdev(totals), rel=1e-12)


def test_a_step_on_the_diversity_term_pushes_the_posteriors_apart():
    loc, log_scale = (t.requires_grad_() for t in posteriors())
    before = diversity_and_smoothness(loc, log_scale)[0].sum().item()
    regulariser = -torch.nn.functional.logsigmoid(diversity_and_smoothness(loc, log_scale)[0]).sum()
    regulariser.backward()
    with torch.no_grad():
        after = diversity_and_smoothness(loc - 0.01 * loc.grad, log_scale - 0.01 * log_scale.grad)[0].sum().item()
    assert after > before


def test_with_eta_and_gamma_zero_it_is_the_vae_with_the_same_networks():
    """The same networks, MAE's encoder read as log σ² (the code's): the plain VAE whose encoder gives
    half of those outputs as log σ is the same model."""
    x = images(8)
    torch.manual_seed(0)
    plain = models.build("vlossy", (28, 28), TINY, "bernoulli")
    with torch.no_grad():  # the rows of the encoder's output layer that give log σ, halved (exactly)
        plain.encoder.out.weight[TINY["latent_dim"] :] *= 0.5
        plain.encoder.out.bias[TINY["latent_dim"] :] *= 0.5
    torch.manual_seed(0)
    mae = models.build("mae", (28, 28), {**TINY, "eta": 0.0, "gamma": 0.0}, "bernoulli")
    torch.manual_seed(1)
    expected = plain.loss(x)[0]
    torch.manual_seed(1)
    assert mae.loss(x)[0].item() == expected.item()
    torch.manual_seed(0)
    regularised = models.build("mae", (28, 28), {**TINY, "eta": 1.0, "gamma": 0.01}, "bernoulli")
    torch.manual_seed(1)
    loss, logged = regularised.loss(x)
    q = regularised.variational_parameters(x)
    diversity, smoothness = diversity_and_smoothness(q["loc"], q["log_scale"])
    added = -torch.nn.functional.logsigmoid(diversity).sum() + 0.01 * smoothness
    torch.testing.assert_close(loss, expected + added)
    assert logged["posterior_divergence"].item() == pytest.approx(diversity.sum().item())


def test_a_batch_of_one_has_no_pair_and_trains_on_the_free_bits_elbo_alone():
    # a training set one image past a multiple of the batch size ends each epoch on such a batch
    torch.manual_seed(0)
    mae = models.build("mae", (28, 28), {**TINY, "eta": 1.0, "gamma": 0.01}, "bernoulli")
    x = images(1)
    torch.manual_seed(1)
    loss, _ = mae.loss(x)
    torch.manual_seed(1)
    assert torch.isfinite(loss) and loss.item() == mae.free_bits_loss(x, mae.variational_parameters(x))[0].item()


def test_the_encoder_gives_log_variances_clipped_on_colour_images_as_the_codes():
    x = images(8)
    torch.manual_seed(0)
    binary = models.build("mae", (28, 28), TINY, "bernoulli")
    raw = binary.encoder(x).chunk(2, dim=-1)[1]
    torch.testing.assert_close(binary.variational_parameters(x)["log_scale"], 0.5 * raw)
    colour = models.build(
        "mae",
        (3, 32, 32),
        {
            "latent_channels": 2,
            "encoder_channels": [4, 8],
            "prior_steps": 0,
            "pixelcnn_layers": 2,
            "pixelcnn_filters": 4,
        },
        "discretized_logistic",
    )
    with torch.no_grad():
        colour.encoder.net[-1].weight *= 100  # outputs far beyond ±7
    pictures = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    raw = colour.encoder(pictures).chunk(2, dim=-1)[1]
    log_scale = colour.variational_parameters(pictures)["log_scale"]
    assert raw.abs().max() > 7 and log_scale.abs().max() == 3.5  # log σ² in [-7, 7]
    torch.testing.assert_close(log_scale, 0.5 * raw.clamp(-7, 7))


MAE_SMALL = """
[training]
batch_size = 20
clip_grad_norm = 5.0
ema_decay = 0.999
epochs = 2

[datasets.mnist]

[methods.mae]
model = "mae"
hyper = { eta = 1.0, gamma = 0.01, latent_dim = 4, prior_hidden = [16], pixelcnn_layers = 2, pixelcnn_kernel = [5, 3] }

[methods.vae_pixelcnn]
model = "mae"
hyper = { latent_dim = 4, prior_hidden = [16], pixelcnn_layers = 2, pixelcnn_kernel = [5, 3] }
"""


@pytest.mark.parametrize("method", ["mae", "vae_pixelcnn"])
def test_each_method_trains_and_every_metric_group_evaluates_through_the_harness(tmp_path, monkeypatch, method):
    assert_trains_and_evaluates(tmp_path, monkeypatch, MAE_SMALL, method, "mnist")


def test_the_representation_metrics_come_from_the_training_codes_through_the_harness(tmp_path, monkeypatch):
    from images28 import SMALL_SPEC_HEADER, TINY_BUDGET, small_dataset

    from benchmarks import train

    header = SMALL_SPEC_HEADER.replace(
        'compare = ["nll"]', 'compare = ["nll"]\nprobe_labels = [10]\nkmeans_clusters = [3]'
    )
    (tmp_path / "small.toml").write_text(header + MAE_SMALL)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    config = specs.resolve(specs.load_paper("small"), "mae", "mnist", TINY_BUDGET, 0)
    assert config["evaluation"]["probe_labels"] == [10] and config["identity"]["evaluation"]["kmeans_clusters"] == [3]
    record = train.run(config, specs.run_id(config), small_dataset(), torch.device("cpu"), progress=False)
    assert record["status"] == "ok", record["error"]
    for name, parts in (("linear_acc", {"10", "all"}), ("knn_acc", {"10", "all"}), ("kmeans_acc", {"3"})):
        entry = record["metrics"][name]
        assert set(entry["parts"]) == parts and 0 <= entry["value"] <= 1
        assert entry["estimator"]["train_points"] == 100  # every training image's code
    assert "label_efficiency_s" in record["timing"]["eval_s"]


@pytest.mark.parametrize(
    "setting, error",
    [
        ("probe_labels = [0]", "evaluation.probe_labels: expected integers of at least 1, got 0"),
        ("kmeans_clusters = [1]", "evaluation.kmeans_clusters: expected integers of at least 2, got 1"),
        ('probe_labels = "100"', "evaluation.probe_labels: expected a list"),
    ],
)
def test_a_bad_representation_setting_is_refused_with_what_is_valid(tmp_path, monkeypatch, setting, error):
    from images28 import SMALL_SPEC_HEADER

    from benchmarks import UserError

    (tmp_path / "small.toml").write_text(SMALL_SPEC_HEADER.replace("compare", setting + "\ncompare") + MAE_SMALL)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    with pytest.raises(UserError, match=error):
        specs.load_paper("small")


def test_the_spec_loads_with_every_number_missing_and_its_claims():
    paper = specs.load_paper("ma2019mae")
    grid = ["mae[eta=0.1]", "mae[eta=1]", "mae[eta=10]"]  # the paper's eta is not known: a small grid
    assert set(paper.methods) == {*grid, "vae_pixelcnn"}
    assert [paper.methods[m].hyper["eta"] for m in grid] == [0.1, 1.0, 10.0]
    assert all(paper.methods[m].hyper["gamma"] == 0.01 for m in grid)
    assert paper.methods["vae_pixelcnn"].hyper["eta"] == 0
    assert all(r.value is None for r in paper.reported)  # nothing guessed
    assert paper.evaluation["importance_samples"] == 4096 and len(paper.claims) == 6 * len(grid)
    comparable = [c for c in paper.claims if c.metric == "nll"]  # "at a comparable NLL": at most 1 nat above
    assert [(c.than, c.direction, c.margin) for c in comparable] == [("vae_pixelcnn", "lower", -1.0)] * len(grid)
    assert {c.method for c in paper.claims} == set(grid)  # each claim checked at every point of the grid
