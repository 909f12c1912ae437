"""The recursive mixture posterior of Kim & Pavlovic (2020) against what it must be: the VAE when it
has one component, the recursion's mixture weights, a component of weight zero that changes
nothing, and a better bound than one Gaussian where the exact posterior is bimodal."""

import math

import pytest
import torch

import models
from benchmarks import data, metrics, specs, train
from models.base import reparameterized_elbo
from models.blocks.mixtures import per_component_kl_elbo
from models.blocks.networks import diagonal_gaussian, standard_normal_log_prob
from models.rme import mixture_logits

SMALL = {"latent_dim": 4, "hidden": [32]}


def built(key, seed=0, **hyper):
    torch.manual_seed(seed)
    return models.build(key, (64,), {**SMALL, **hyper}, "bernoulli")


@pytest.mark.parametrize("components", [1, 3])
def test_with_one_active_component_it_is_exactly_the_vae(components):
    vae, rme = built("vae"), built("rme", components=components)
    for name, value in vae.state_dict().items():  # the same encoder and decoder, drawn first
        torch.testing.assert_close(rme.state_dict()[name], value, rtol=0, atol=0)
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(1)).round()
    torch.manual_seed(2)
    expected = vae.loss(x)[0]
    torch.manual_seed(2)
    assert rme.loss(x)[0].item() == expected.item()
    torch.manual_seed(3)
    expected = metrics.density_metrics(vae, x, samples=100)["nll"]["value"]
    torch.manual_seed(3)
    assert metrics.density_metrics(rme, x, samples=100)["nll"]["value"] == expected


def test_the_mixture_weights_unroll_the_recursion_and_its_density_is_their_weighted_sum():
    epsilon = torch.tensor([[0.3, 0.6, 0.2]])  # ε_2, ε_3, ε_4
    alpha = mixture_logits(torch.logit(epsilon)).exp()[0]
    e2, e3, e4 = epsilon[0].tolist()
    expected = [(1 - e2) * (1 - e3) * (1 - e4), e2 * (1 - e3) * (1 - e4), e3 * (1 - e4), e4]
    torch.testing.assert_close(alpha, torch.tensor(expected))
    model = built("rme", components=4)
    model.on_epoch_start(9, {"epochs": 10})
    x = torch.rand(5, 64).round()
    with torch.no_grad():
        parameters = model.variational_parameters(x)
        q = model.variational_family(parameters)
        z = torch.randn(7, 5, 4)
        per_component = diagonal_gaussian(parameters["loc"], parameters["log_scale"]).log_prob(z[:, :, None])
        by_hand = torch.logsumexp(parameters["logits"].log_softmax(-1) + per_component, -1)
        torch.testing.assert_close(q.log_prob(z), by_hand)
        torch.testing.assert_close(parameters["logits"].exp().sum(-1), torch.ones(5))


def test_a_component_of_weight_zero_leaves_the_mixture_and_its_elbo_unchanged():
    model = built("rme", components=3, epsilon="global")
    model.on_epoch_start(2, {"epochs": 3})  # all three
    x = torch.rand(20, 64).round()
    with torch.no_grad():
        model.epsilon_logits[1] = -40.0  # the third component's ε → 0
        full = model.variational_parameters(x)
        model.active.fill_(2)
        two = model.variational_parameters(x)
        torch.testing.assert_close(full["logits"][:, :2].exp(), two["logits"].exp())
        z = torch.randn(100, 20, 4)
        q_full, q_two = model.variational_family(full), model.variational_family(two)
        torch.testing.assert_close(q_full.log_prob(z), q_two.log_prob(z))
        torch.manual_seed(0)
        with_zero = reparameterized_elbo(model, x, q_full, 20000)
        torch.manual_seed(0)
        without = reparameterized_elbo(model, x, q_two, 20000)
    # the same functional; the two estimates differ only by their draws (about 0.02 nats apart here)
    assert (with_zero - without).abs().max() < 0.1


def spread_mixture(key="vae_mixture", **hyper):
    """A mixture of the spec's latent size (50) whose four components differ, and a batch."""
    model = built(key, latent_dim=50, components=4, **hyper)
    model.on_epoch_start(3, {"epochs": 4})  # rme: all four joined
    x = torch.rand(30, 64, generator=torch.Generator().manual_seed(1)).round()
    return model, x


def test_the_per_component_estimate_replaces_only_each_components_sampled_kl_by_its_closed_form():
    model, x = spread_mixture()
    with torch.no_grad():
        q = model.posterior(x)
        torch.manual_seed(5)
        sampled, sampled_recon = reparameterized_elbo(model, x, q, 3, reconstruction=True)
        torch.manual_seed(5)
        closed, closed_recon = per_component_kl_elbo(model, x, q, 3)
        torch.manual_seed(5)  # the same draws by hand: [S, B, K, D]
        components = q.component_distribution
        z = components.rsample((3,))
        sampled_kl = (components.log_prob(z) - standard_normal_log_prob(z)).mean(0)  # [B, K]
        closed_kl = torch.distributions.kl_divergence(components, model.prior())
    torch.testing.assert_close(closed_recon, sampled_recon)
    # both are Σ_k α_k (recon_k − KL_k) + I(k; z) on the same draws, KL_k sampled in one and exact in the other
    torch.testing.assert_close(closed - sampled, (q.mixture_distribution.probs * (sampled_kl - closed_kl)).sum(-1))
    assert (closed - sampled).abs().mean() > 0.1  # so the comparison above has something to find


def test_with_coinciding_components_the_per_component_estimate_is_the_gaussians_closed_form_elbo():
    model, x = spread_mixture()
    with torch.no_grad():
        parameters = model.variational_parameters(x)
        same = {key: parameters[key][:, :1].expand_as(parameters[key]) for key in ("loc", "log_scale")}
        q = model.variational_family({**parameters, **same})  # I(k; z) = 0: every log q_k(z) is log q(z)
        torch.manual_seed(5)
        elbo, recon = per_component_kl_elbo(model, x, q, 3)
        gaussian = diagonal_gaussian(parameters["loc"][:, 0], parameters["log_scale"][:, 0])
        kl = torch.distributions.kl_divergence(gaussian, model.prior())
    torch.testing.assert_close(elbo, recon - kl)


def test_at_the_specs_latent_size_the_per_component_estimate_has_the_same_mean_and_less_variance():
    model, x = spread_mixture()
    draws = 400  # one draw a component and a copy of the batch, as training takes
    with torch.no_grad():
        q = model.posterior(x.repeat(draws, 1))
        torch.manual_seed(5)
        sampled = reparameterized_elbo(model, x.repeat(draws, 1), q, 1).view(draws, len(x))
        closed = per_component_kl_elbo(model, x.repeat(draws, 1), q, 1)[0].view(draws, len(x))
    standard_error = (sampled.var(0) / draws + closed.var(0) / draws).sqrt()
    assert ((sampled.mean(0) - closed.mean(0)).abs() < 4 * standard_error).float().mean() > 0.95
    assert closed.std(0).mean() < 0.6 * sampled.std(0).mean()


@pytest.mark.parametrize("key", ["vae_mixture", "rme"])
def test_each_mixture_method_trains_on_the_estimate_its_kl_estimate_names(key):
    for kl_estimate, estimate in [("per_component", per_component_kl_elbo), ("sampled", reparameterized_elbo)]:
        model, x = spread_mixture(key, kl_estimate=kl_estimate)
        torch.manual_seed(7)
        logged = model.loss(x)[1]["elbo"]
        torch.manual_seed(7)
        with torch.no_grad():
            expected = estimate(model, x, model.posterior(x), 1)
        torch.testing.assert_close(logged, (expected[0] if kl_estimate == "per_component" else expected).mean())
    with pytest.raises(ValueError, match="kl_estimate"):
        built(key, kl_estimate="closed")


class SquareDecoder(models.rme.RecursiveMixtureVAE):
    """p(z) = N(0, 1), p(x|z) = N(z², 0.5²): for x well above 0 the exact posterior has two modes, ±√x."""

    def log_likelihood(self, x, z):
        return torch.distributions.Normal(z.squeeze(-1) ** 2, 0.5).log_prob(x.squeeze(-1))


def trained_elbo(components, steps=800, **hyper):
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(256, 1, generator=generator)
    x = z**2 + 0.5 * torch.randn(256, 1, generator=generator)
    x = x[x[:, 0] > 1]  # points with two well-separated modes
    torch.manual_seed(0)
    model = SquareDecoder((1,), "bernoulli", components=components, latent_dim=1, hidden=[32], **hyper)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        model.on_epoch_start(step * 2 // steps, {"epochs": 2})  # the second component joins half-way
        loss, _ = model.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        torch.manual_seed(1)
        return reparameterized_elbo(model, x, model.posterior(x), 2000).mean().item()


def test_on_a_bimodal_posterior_the_recursive_mixture_beats_one_gaussian():
    single, mixture = trained_elbo(1), trained_elbo(2)
    # one Gaussian covers one mode, at best log 2 = 0.69 nats below log p(x); two components can cover both
    assert mixture > single + 0.3, (mixture, single)


def test_the_divergence_from_the_mixture_is_bounded_and_the_divergence_from_the_previous_one_is_not():
    """With q_{m−1} narrow, KL(h ‖ q_{m−1}) grows as h moves away faster than h's ELBO falls, so the
    "kl_previous" criterion has no maximum; KL(h ‖ q_m) ≤ −log ε_m for every draw."""
    x = torch.rand(1, 64, generator=torch.Generator().manual_seed(0)).round()
    epsilon_logits = torch.tensor([[0.0]])  # ε_2 = 1/2
    values = {}
    for criterion in ("kl_previous", "kl_mixture"):
        model = built("rme", components=2, criterion=criterion)
        model.on_epoch_start(1, {"epochs": 2})
        values[criterion] = []
        for distance in (0.0, 3.0, 10.0, 30.0):
            loc = torch.tensor([[[0.0] * 4, [distance] + [0.0] * 3]])
            log_scale = torch.tensor([[[math.log(0.1)] * 4, [0.0] * 4]])
            torch.manual_seed(0)
            value = model.new_component_criterion(x, loc, log_scale, epsilon_logits).item()
            model.criterion_weight = 0.0
            torch.manual_seed(0)
            elbo = model.new_component_criterion(x, loc, log_scale, epsilon_logits).item()
            model.criterion_weight = 1.0
            values[criterion].append(value)
            if criterion == "kl_mixture":
                assert value - elbo <= math.log(2) + 1e-3  # float32 sums of terms in the hundreds
    previous, mixture = values["kl_previous"], values["kl_mixture"]
    assert previous == sorted(previous) and previous[-1] > previous[0] + 1e4  # climbs without bound
    assert mixture[-1] < mixture[0] - 100  # far out, h's own ELBO decides


@pytest.mark.parametrize(
    "freeze_earlier, moving",
    [(True, [{"first"}, {"second"}, set()]), (False, [{"first"}, {"first", "second"}, {"first", "second"}])],
)
def test_the_earlier_components_stop_moving_once_the_next_one_joins_only_when_frozen(freeze_earlier, moving):
    model = built("rme", components=3, freeze_earlier=freeze_earlier)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(50, 64, generator=torch.Generator().manual_seed(1)).round()
    encoders = {"first": model.encoder, "second": model.component_encoders[0]}
    for epoch, expected_to_move in enumerate(moving):
        model.on_epoch_start(epoch, {"epochs": 3})
        before = {key: [p.detach().clone() for p in encoder.parameters()] for key, encoder in encoders.items()}
        for _ in range(5):  # Adam's momentum from the epoch before would move them on zero gradients
            loss, _ = model.loss(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        moved = {
            key
            for key, encoder in encoders.items()
            if not all(p.equal(b) for p, b in zip(encoder.parameters(), before[key], strict=True))
        }
        assert moved == expected_to_move, epoch


def test_components_join_on_schedule_and_the_count_is_saved_with_the_weights():
    model = built("rme", components=4)
    joined = [model.on_epoch_start(epoch, {"epochs": 8})["components"] for epoch in range(8)]
    assert joined == [1, 1, 2, 2, 3, 3, 4, 4]
    short = built("rme", components=4)  # fewer epochs than components: the first still gets one of its own
    assert [short.on_epoch_start(epoch, {"epochs": 3})["components"] for epoch in range(3)] == [1, 2, 3]
    restored = built("rme", components=4)  # as a resumed run or kept weights load it
    restored.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert restored.variational_parameters(torch.ones(3, 64))["logits"].shape == (3, 4)


def test_rme_takes_the_vaes_hyper_parameters_besides_its_own():
    own = {"components", "epsilon", "kl_estimate", "freeze_earlier", "criterion", "criterion_weight"}
    assert set(models.hyper_parameters("rme")) == own | set(models.hyper_parameters("vae"))


KIM_ON_DIGITS = """
[paper]
title = "Kim & Pavlovic's methods on digits, small"
citation = "Nobody, tests"

[evaluation]
importance_samples = 20
compare = ["nll"]

[training]
batch_size = 100
epochs = 3

[datasets.digits]

[methods.rme]
model = "rme"
hyper = { latent_dim = 4, hidden = [32], components = 3 }

[methods.rme_entropy]
model = "rme"
hyper = { latent_dim = 4, hidden = [32], components = 3, criterion = "entropy", epsilon = "global" }

[methods.vae_mixture]
model = "vae_mixture"
hyper = { latent_dim = 4, hidden = [32], components = 3 }
"""


@pytest.mark.parametrize("method", ["rme", "rme_entropy", "vae_mixture"])
def test_each_mixture_method_trains_and_every_metric_group_evaluates_through_the_harness(tmp_path, monkeypatch, method):
    (tmp_path / "kim_digits.toml").write_text(KIM_ON_DIGITS)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    config = specs.resolve(specs.load_paper("kim_digits"), method, "digits", specs.budget("smoke"), 0)
    record = train.run(config, specs.run_id(config), data.load("digits"), torch.device("cpu"), progress=False)
    assert record["status"] == "ok", record["error"]
    for metric in ("nll", "elbo", "kl", "active_units", "cluster_acc", "amortization_gap", "ais_nll"):
        assert metric in record["metrics"] and math.isfinite(record["metrics"][metric]["value"]), metric
    components = record["metrics"]["mixture_components"]  # three in use at the end: every one is measured
    assert 1 <= components["value"] <= 3 and len(components["mean_weights"]) == 3
    assert 0 <= record["metrics"]["mixture_information"]["value"] <= math.log(3) + 0.05
    if method.startswith("rme"):  # one component joined per epoch, logged in the curves
        assert record["curves"]["components"] == [1, 2, 3]


def test_the_spec_loads_with_every_claim_naming_its_methods():
    paper = specs.load_paper("kim2020recursive")
    methods = {"rme", "rme_unfrozen", "rme_entropy", "vae_mixture", "savae", "vae_iaf", "vae"}
    assert methods | {"rme_per_component_kl", "vae_mixture_per_component_kl"} == set(paper.methods)
    for variant, of, change in [  # each included from its method, one setting changed
        ("rme_unfrozen", "rme", {"freeze_earlier": False}),
        ("rme_per_component_kl", "rme", {"kl_estimate": "per_component"}),
        ("vae_mixture_per_component_kl", "vae_mixture", {"kl_estimate": "per_component"}),
    ]:
        method = paper.methods[variant]
        assert method.model == paper.methods[of].model and method.hyper == {**paper.methods[of].hyper, **change}
    assert paper.methods["savae"].hyper["T"] == 4 and paper.methods["rme_entropy"].hyper["criterion"] == "entropy"
    assert len(paper.claims) == 8 and all(r.value is None for r in paper.reported)  # nothing guessed
