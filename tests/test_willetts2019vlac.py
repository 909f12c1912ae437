"""VLAC (the ladder with a Gaussian-mixture prior per layer) and GM-DGM against what they must be: with
one component VLAC is the ladder; the discrete variables summed out in closed form equal the sum over
every assignment; the mixture priors are densities; and on well-separated clusters pushed through a
fixed random decoder both recover the clusters at the smoke budget's three epochs, through the harness,
which also saves their component-wise generation as PNGs."""

import dataclasses
import itertools
import math

import pytest
import torch
from images28 import TINY_BUDGET, small_dataset
from PIL import Image
from torch.distributions import Normal, kl_divergence

import models
from benchmarks import metrics, specs, train

SMALL_LADDER = {"hidden": 32, "channels": [4, 8]}


def test_with_one_component_at_the_standard_normal_the_mixture_elbo_is_the_ladders():
    hyper = {**SMALL_LADDER, "latent_dims": [2, 3, 2], "warmup_steps": 0}
    torch.manual_seed(0)
    ladder = models.build("vladder", (28, 28), hyper, "bernoulli")
    torch.manual_seed(0)  # the ladder's networks are built first: the same weights
    vlac = models.build("vlac", (28, 28), {**hyper, "components": 1}, "bernoulli")
    with torch.no_grad():
        for parameter in [*vlac.component_locs, *vlac.component_log_scales]:
            parameter.zero_()
    x = (torch.rand(6, 28, 28) > 0.5).float()
    losses = []
    for model in (ladder, vlac):
        torch.manual_seed(1)
        losses.append(model.loss(x))
    torch.testing.assert_close(losses[1][0], losses[0][0])
    torch.testing.assert_close(losses[1][1]["kl"], losses[0][1]["kl"])
    z = torch.randn(4, 7)
    torch.testing.assert_close(vlac.prior().log_prob(z), ladder.prior().log_prob(z))


def test_each_layers_monte_carlo_kl_is_the_ladders_analytic_one_with_one_standard_component():
    hyper = {**SMALL_LADDER, "latent_dims": [2, 3, 2]}
    torch.manual_seed(0)
    ladder = models.build("vladder", (28, 28), hyper, "bernoulli")
    torch.manual_seed(0)
    vlac = models.build("vlac", (28, 28), {**hyper, "components": 1}, "bernoulli")
    with torch.no_grad():
        for parameter in [*vlac.component_locs, *vlac.component_log_scales]:
            parameter.zero_()
    x = (torch.rand(6, 28, 28) > 0.5).float()
    exact, sampled = (
        metrics.density_metrics(model, x, samples=4000, parts=model.latent_parts())["kl"] for model in (ladder, vlac)
    )
    assert "parts_estimator" not in exact and sampled["parts_estimator"]["name"] == "monte_carlo"
    for layer in ("layer0", "layer1", "layer2"):
        assert sampled["parts"][layer] == pytest.approx(exact["parts"][layer], abs=0.05)


def test_the_clusters_summed_out_in_closed_form_equal_the_sum_over_every_assignment():
    """Σ over every (c_0, c_1) of Π_l q(c_l|x) · Σ_l [KL(q(z_l|x) ‖ p(z_l|c_l)) + log q(c_l|x) − log π],
    with the KLs from torch.distributions and q(c_l|x) ∝ π exp(−KL); that q is the optimum (any other
    categorical gives a larger term) and each row of it sums to one."""
    torch.manual_seed(0)
    vlac = models.build(
        "vlac", (28, 28), {**SMALL_LADDER, "latent_dims": [2, 3], "components": [2, 3]}, "bernoulli"
    ).double()
    with torch.no_grad():
        for log_scale in vlac.component_log_scales:
            log_scale.normal_(0, 0.5)
    loc, log_scale = torch.randn(4, 5, dtype=torch.float64), 0.3 * torch.randn(4, 5, dtype=torch.float64)
    kls = []  # per layer [B, K_l]
    for layer, (mean, scale) in enumerate(zip(loc.split([2, 3], -1), log_scale.split([2, 3], -1))):
        q = Normal(mean.unsqueeze(1), scale.exp().unsqueeze(1))
        p = Normal(vlac.component_locs[layer].detach(), vlac.component_log_scales[layer].detach().exp())
        kls.append(kl_divergence(q, p).sum(-1))
    log_pi = [torch.tensor(1 / k, dtype=torch.float64).log() for k in (2, 3)]
    log_q = [(lp - kl).log_softmax(-1) for lp, kl in zip(log_pi, kls)]
    brute = torch.zeros(4, dtype=torch.float64)
    for c in itertools.product(range(2), range(3)):
        weight = log_q[0][:, c[0]].exp() * log_q[1][:, c[1]].exp()
        brute += weight * sum(kls[i][:, c[i]] + log_q[i][:, c[i]] - log_pi[i] for i in range(2))
    with torch.no_grad():
        torch.testing.assert_close(vlac.latent_kl(loc, log_scale), brute)
        posteriors = vlac.cluster_log_posteriors(loc, log_scale)
    for mine, expected in zip(posteriors, log_q):
        torch.testing.assert_close(mine, expected)
        torch.testing.assert_close(mine.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    other = torch.rand(4, 3, dtype=torch.float64).log_softmax(-1)  # another q(c_1|x)
    with torch.no_grad():
        optimal = vlac.layer_cluster_terms(loc, log_scale)[1]
    assert ((other.exp() * (kls[1] + other - log_pi[1])).sum(-1) > optimal).all()


def test_gmdgm_sums_the_cluster_out_as_a_loop_over_the_clusters_does():
    torch.manual_seed(0)
    model = models.build("gmdgm", (64,), {"clusters": 3, "latent_dim": 4, "hidden": [16]}, "bernoulli")
    x = torch.rand(5, 64).round()
    torch.manual_seed(1)
    loss, logged = model.loss(x)
    torch.manual_seed(1)
    eps = torch.randn(5, 3, 4)  # the draws the loss takes, in its order: one per point and cluster
    with torch.no_grad():
        log_q_y = model.classifier(x).log_softmax(-1)
        prior_loc = model.prior_loc(torch.eye(3))
        prior_scale = (0.5 * model.prior_log_variance(torch.eye(3))).exp()
        bound = torch.zeros(5)
        for y in range(3):
            one_hot = torch.eye(3)[y].expand(5, -1)
            loc, log_scale = model.encoder(torch.cat([x, one_hot], -1)).chunk(2, -1)
            z = loc + log_scale.exp() * eps[:, y]
            recon = torch.distributions.Bernoulli(logits=model.decoder(z)).log_prob(x).sum(-1)
            kl = kl_divergence(Normal(loc, log_scale.exp()), Normal(prior_loc[y], prior_scale[y])).sum(-1)
            bound += log_q_y[:, y].exp() * (recon - kl + math.log(1 / 3) - log_q_y[:, y])
        torch.testing.assert_close(-loss, bound.mean())
        torch.testing.assert_close(logged["elbo"], bound.mean())
        q = model.posterior(x)
    torch.testing.assert_close(q.mixture_distribution.probs.sum(-1), torch.ones(5))
    assert model.cluster_assignments(x).tolist() == log_q_y.argmax(-1).tolist()


@pytest.mark.parametrize("key", ["vlac", "gmdgm"])
def test_the_mixture_prior_is_a_density(key):
    """Its log_prob over a fine grid of 2-D latents (one dimension a layer for VLAC) sums to one."""
    torch.manual_seed(0)
    hyper = {
        "vlac": {**SMALL_LADDER, "latent_dims": [1, 1], "components": [2, 3]},
        "gmdgm": {"clusters": 3, "latent_dim": 2, "hidden": [8]},
    }
    model = models.build(key, (28, 28), hyper[key], "bernoulli").double()
    axis = torch.linspace(-10, 10, 401, dtype=torch.float64)
    with torch.no_grad():
        mass = model.prior().log_prob(torch.cartesian_prod(axis, axis)).exp().sum() * (axis[1] - axis[0]) ** 2
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


# --- clusters recovered, through the harness --------------------------------------------------


def separated_clusters(n: int, seed: int, k: int = 4):
    """``n`` images of ``k`` well-separated Gaussian clusters in a 6-D latent pushed through one fixed
    random decoder (pixel probabilities, binarized per batch by the harness), and their clusters."""
    fixed = torch.Generator().manual_seed(1234)
    centres = 4 * torch.randn(k, 6, generator=fixed)
    w1, w2 = torch.randn(6, 64, generator=fixed), torch.randn(64, 784, generator=fixed) / 4
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % k
    z = centres[labels] + 0.5 * torch.randn(n, 6, generator=g)
    return torch.sigmoid(3 * torch.tanh(z @ w1) @ w2).reshape(n, 28, 28), labels


CLUSTER_SPEC = """
[paper]
title = "Clusters, small"
citation = "Nobody, tests"

[evaluation]
importance_samples = 10
compare = ["cluster_acc"]

[training]
batch_size = 20
learning_rate = 1e-3

[datasets.mnist]

[methods.vlac]
model = "vlac"
hyper = { latent_dims = [2, 2, 2], components = 4, hidden = 64, channels = [8, 16], warmup_steps = 0 }

[methods.gmdgm]
model = "gmdgm"
hyper = { clusters = 4, latent_dim = 16, hidden = [64] }
"""

SMOKE_EPOCHS = specs.Budget(
    "smoke_epochs",
    "the smoke budget's training, a tiny evaluation",
    TINY_BUDGET.caps | {"max_epochs": 3, "test_points": 200},
)


def clusters_dataset():
    train_x, _ = separated_clusters(2000, seed=0)
    valid_x, _ = separated_clusters(100, seed=1)
    test_x, test_labels = separated_clusters(200, seed=2)
    g = torch.Generator().manual_seed(3)
    return dataclasses.replace(
        small_dataset(),
        train=train_x,
        valid=torch.bernoulli(valid_x, generator=g),
        test=torch.bernoulli(test_x, generator=g),
        test_labels=test_labels,
    )


@pytest.mark.parametrize("method", ["vlac", "gmdgm"])
def test_on_well_separated_clusters_each_method_recovers_them_at_the_smoke_budget(tmp_path, monkeypatch, method):
    """Chance is 0.25 (4 equal clusters; a model that ignores its input scores exactly that); the mean
    over three seeds must be at least twice it. k-means on the pixels scores 1.0."""
    (tmp_path / "clusters.toml").write_text(CLUSTER_SPEC)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    data, accuracies = clusters_dataset(), []
    for seed in range(3):
        config = specs.resolve(specs.load_paper("clusters"), method, "mnist", SMOKE_EPOCHS, seed)
        run_id = specs.run_id(config)
        record = train.run(config, run_id, data, torch.device("cpu"), progress=False, results=tmp_path / "results")
        assert record["status"] == "ok", record["error"]
        accuracies.append(record["metrics"]["cluster_acc"]["value"])
    assert sum(accuracies) / 3 >= 0.5, accuracies
    # the last run's component-wise generation: a PNG per layer, a row of 28-pixel images per component
    components = {"components_layer0", "components_layer1", "components_layer2"} if method == "vlac" else {"components"}
    assert set(record["figures"]) == components | {"samples", "reconstructions"}
    for name in components:
        with Image.open(tmp_path / "results" / record["figures"][name]) as image:
            assert image.size == (8 * 30 + 2, 4 * 30 + 2)  # torchvision's grid: 2 pixels of padding
    if method == "vlac":
        clusters = record["metrics"]["cluster_acc"]
        assert set(clusters["parts"]) == {"layer0", "layer1", "layer2"}
        assert clusters["value"] == clusters["parts"][clusters["best_part"]] == max(clusters["parts"].values())


def test_the_spec_loads_with_nothing_reported_and_claims_against_gmdgm():
    paper = specs.load_paper("willetts2019vlac")
    assert set(paper.methods) == {"vlac", "gmdgm"}
    assert paper.methods["gmdgm"].training["learning_rate"] == 3e-4 and paper.training["learning_rate"] == 2e-4
    assert all(r.value is None and r.missing for r in paper.reported)
    against = [c for c in paper.claims if c.than == "gmdgm"]
    assert {c.dataset for c in against} == {"mnist", "svhn"} and all(c.metric == "cluster_acc" for c in against)
    for method in paper.methods.values():  # the networks build for both datasets
        models.build(method.model, (28, 28), method.hyper, "bernoulli")
        models.build(method.model, (3, 32, 32), method.hyper, "gaussian")
