"""The test metrics against a model whose log p(x), posterior and KL are known in closed form."""

import pytest
import torch
from linear_gaussian import LinearGaussian
from torch.distributions import kl_divergence

from benchmarks import metrics


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

    from models.networks import PixelLikelihood

    likelihood = PixelLikelihood("gaussian")
    with torch.no_grad():
        likelihood.log_scale.fill_(math.log(0.3))
    x, mean = torch.rand(4, 1, 2, 3), torch.rand(5, 4, 6)  # five samples of z for four images
    expected = (-0.5 * ((x.flatten(1) - mean) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(likelihood(mean, x), expected)
