"""The test metrics against a model whose log p(x), posterior and KL are known in closed form."""

import math

import pytest
import scipy
import torch
from linear_gaussian import LinearGaussian
from torch.distributions import kl_divergence

from benchmarks import metrics
from models.blocks.mixtures import gaussian_mixture


@pytest.fixture
def data():
    return LinearGaussian().sample_data(200)


@pytest.mark.parametrize("samples, rows_per_chunk", [(1, 10_000), (7, 13), (100, 10_000), (250, 64)])
def test_importance_sampling_is_exact_with_the_true_posterior_as_proposal(data, samples, rows_per_chunk):
    # With q = p(z|x), every importance weight equals p(x): the estimate is exact for any K and any
    # chunking (chunk sizes that do not divide K or the number of points included).
    model = LinearGaussian(encoder="exact")
    torch.manual_seed(0)
    terms = metrics.importance_sampled_terms(model, data, samples, rows_per_chunk)
    torch.testing.assert_close(terms["log_px"], model.log_marginal(data), rtol=0, atol=1e-8)


def test_importance_sampling_with_a_wrong_proposal_is_within_its_standard_error(data):
    model = LinearGaussian(encoder="diagonal")
    torch.manual_seed(0)
    result = metrics.density_metrics(model, data, samples=2000)
    truth = -model.log_marginal(data).mean().item()
    # The estimator's own error: a few standard errors of the per-point estimates' difference from
    # the truth (the IS bias at K = 2000 for this mild mismatch is far smaller).
    torch.manual_seed(1)
    error = model.log_marginal(data) - metrics.importance_sampled_terms(model, data, 2000)["log_px"]
    assert abs(result["nll"]["value"] - truth) < 4 * error.std().item() / len(data) ** 0.5 + 1e-3
    assert result["nll"]["estimator"] == {
        "name": "importance_sampling",
        "proposal": "posterior",
        "samples": 2000,
        "rows_per_chunk": 10_000,
        "points": 200,
        "split": "test",
    }


def test_elbo_and_kl_match_their_closed_forms(data):
    model = LinearGaussian(encoder="diagonal")
    q = model.posterior(data)
    exact_kl = kl_divergence(q, model.prior())
    exact_posterior = model.exact_posterior(data)
    q_full = torch.distributions.MultivariateNormal(q.mean, torch.diag_embed(q.variance))
    # ELBO = log p(x) - KL(q || p(z|x)), exactly, for every point.
    exact_elbo = model.log_marginal(data) - kl_divergence(q_full, exact_posterior)
    torch.manual_seed(0)
    result = metrics.density_metrics(model, data, samples=2000)
    assert result["kl"]["estimator"]["name"] == "analytic"
    assert result["kl"]["value"] == pytest.approx(exact_kl.mean().item(), abs=1e-9)
    assert result["elbo"]["value"] == pytest.approx(exact_elbo.mean().item(), abs=0.05)
    assert result["elbo"]["value"] < -result["nll"]["value"]  # the bound is below the likelihood


def test_kl_falls_back_to_monte_carlo_when_there_is_no_closed_form(data):
    model = LinearGaussian(encoder="exact")  # a full-covariance q against a diagonal prior: no registered KL
    torch.manual_seed(0)
    result = metrics.density_metrics(model, data, samples=4000)
    prior = torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    )
    exact_kl = kl_divergence(model.exact_posterior(data), prior).mean().item()
    assert result["kl"]["estimator"]["name"] == "monte_carlo"
    assert result["kl"]["value"] == pytest.approx(exact_kl, abs=0.05)
    # With the exact posterior the ELBO is log p(x) up to the Monte-Carlo noise of recon and KL.
    assert result["elbo"]["value"] == pytest.approx(-result["nll"]["value"], abs=0.05)


def test_gaussian_pixel_likelihood_matches_its_formula():
    import math

    from models.blocks.networks import PixelLikelihood

    likelihood = PixelLikelihood("gaussian")
    with torch.no_grad():
        likelihood.log_scale.fill_(math.log(0.3))
    x, mean = torch.rand(4, 1, 2, 3), torch.rand(5, 4, 6)  # five samples of z for four images
    expected = (-0.5 * ((x.flatten(1) - mean) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(likelihood(mean, x), expected)


class MixturePosterior:
    """q(z|x_i) = Σ_k α_k N(loc_k + shift_i, diag(scale_k²)): the same mixture moved to another place
    for each point (I(k; z) does not change with a shift; a draw scored under another point's
    mixture would)."""

    def __init__(self, alpha, loc, scale):
        self.alpha, self.loc, self.scale = torch.tensor(alpha), torch.tensor(loc), torch.tensor(scale)

    def posterior(self, x):
        shift = x.view(-1, 1, 1)  # [B, 1, 1]: one shift per point
        loc = self.loc + shift
        return gaussian_mixture(self.alpha.log().expand(len(x), -1), loc, self.scale.log().expand_as(loc))


def test_mixture_usage_is_exact_where_the_components_coincide():
    alpha = [0.2, 0.3, 0.5]
    coinciding = MixturePosterior(alpha, [[0.5, -1.0]] * 3, [[0.8, 1.2]] * 3)
    usage = metrics.mixture_usage(coinciding, torch.linspace(-20, 20, 50), seed=0)
    assert usage["mixture_components"]["value"] == pytest.approx(math.exp(-sum(a * math.log(a) for a in alpha)))
    assert usage["mixture_components"]["mean_weights"] == pytest.approx(alpha)
    assert abs(usage["mixture_information"]["value"]) < 1e-5  # one Gaussian, however it is split


def test_the_information_between_component_and_draw_matches_quadrature():
    """Two overlapping components in the first dimension (the second is the same in both): I(k; z) =
    H(q) − Σ_k α_k H(q_k), by numerical integration of the one-dimensional mixture; the points in
    chunks of 64 (the last one shorter)."""
    alpha, means, scales = [0.3, 0.7], [0.0, 1.5], [1.0, 0.7]
    mixture = lambda z: sum(a * scipy.stats.norm.pdf(z, m, s) for a, m, s in zip(alpha, means, scales))  # noqa: E731
    entropy = scipy.integrate.quad(lambda z: -mixture(z) * math.log(mixture(z)), -15, 15)[0]
    exact = entropy - sum(a * scipy.stats.norm.entropy(0, s) for a, s in zip(alpha, scales))
    assert 0.1 < exact < 0.5  # well inside (0, H(α) = 0.61): partly overlapping
    posterior = MixturePosterior(alpha, [[m, 2.0] for m in means], [[s, 0.5] for s in scales])
    usage = metrics.mixture_usage(posterior, torch.linspace(-30, 30, 500), seed=0, elements=100 * 2 * 2 * 2 * 64)
    information = usage["mixture_information"]
    assert abs(information["value"] - exact) < 4 * information["sem"]
    assert information["sem"] < 0.01  # a test that can tell 0.05 nat apart


def test_a_posterior_that_is_not_a_mixture_has_no_mixture_usage(data):
    assert metrics.mixture_usage(LinearGaussian(), data, seed=0) == {}
