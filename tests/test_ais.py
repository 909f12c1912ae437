"""Annealed importance sampling against probabilistic PCA's exact log p(x): it converges as the
intermediate distributions grow, stays below log p(x) in expectation, and never uses q."""

import pytest
import torch
from linear_gaussian import LinearGaussian

import models
from benchmarks import ais


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tensors of a few hundred values, thousands of passes: a second thread only adds contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def points():
    # Not sample_data's default seed 1: the data's latents would then be the very numbers the chains
    # start from under torch.manual_seed(1).
    return LinearGaussian().sample_data(40, seed=12345)


class NoPosterior(LinearGaussian):
    """A deliberately bad encoder that AIS must never ask for."""

    def posterior(self, x):
        raise AssertionError("AIS called posterior()")

    def variational_parameters(self, x):
        raise AssertionError("AIS called variational_parameters()")


def errors(model, x, steps, seed=0, **options):
    torch.manual_seed(seed)
    result = ais.ais(model, x, chains=16, steps=steps, leapfrog_steps=5, **options)
    return result, result["log_px"] - model.log_marginal(x)


def test_schedules_run_from_zero_to_one():
    for kind in ais.SCHEDULES:
        betas = ais.schedule(50, kind)
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all() and len(betas) == 51
    sigmoid = ais.schedule(100, "sigmoid").diff()
    assert sigmoid[0] < sigmoid[50] > sigmoid[-1]  # small steps at both ends
    with pytest.raises(ValueError, match="geometric"):
        ais.schedule(10, "geometric")


def test_one_step_is_importance_sampling_from_the_prior(points):
    model = LinearGaussian()
    torch.manual_seed(3)
    result = ais.ais(model, points, chains=8, steps=1, pilot_chains=0)
    torch.manual_seed(3)
    z = model.prior().sample((8, len(points)))
    expected = torch.logsumexp(model.log_likelihood(points, z), 0) - torch.log(torch.tensor(8.0))
    torch.testing.assert_close(result["log_px"], expected.double())


def test_ais_converges_to_the_exact_log_likelihood_from_below(points):
    model = LinearGaussian(encoder="diagonal")
    few, few_error = errors(model, points, steps=10)
    many, many_error = errors(model, points, steps=400)
    many_sem = many_error.std().item() / len(points) ** 0.5
    # With many steps: within a few of its own standard errors of log p(x) (its bias, about
    # −Var(p̂)/2p² ≈ −0.01 nats here, is below its noise). Below it, up to that noise: E[log p̂] ≤
    # log p(x), a stochastic lower bound.
    assert abs(many_error.mean().item()) < 4 * many_sem
    assert many_error.mean().item() < 2 * many_sem
    assert many_sem < 0.05
    # With few steps it is further below: the bias shrinks as the schedule refines. (Its weights are
    # heavy-tailed, so its mean is noisy: its median is compared too.)
    assert few_error.mean().item() < many_error.mean().item() - 4 * many_sem
    assert few_error.median().item() < many_error.median().item() - 0.1
    assert few["log_weights"].shape == many["log_weights"].shape == (16, len(points))
    assert 0.5 < many["acceptance_rate"] < 0.9  # the step sizes adapted towards 0.65
    assert few["weights_ess"] < many["weights_ess"] <= 16


def test_a_bad_encoder_changes_nothing_and_is_never_called(points):
    exact, exact_error = errors(LinearGaussian(encoder="exact"), points, steps=50)
    bad, bad_error = errors(NoPosterior(encoder="diagonal"), points, steps=50)  # same seed
    torch.testing.assert_close(bad["log_px"], exact["log_px"], rtol=0, atol=0)
    entry = ais.ais_metrics(NoPosterior(encoder="diagonal"), points, points=10, chains=4, steps=20, leapfrog_steps=2)
    assert entry["ais_nll"]["estimator"]["start"] == "prior"


def test_model_parameters_get_no_gradient_and_the_entry_is_complete():
    torch.manual_seed(0)
    model = models.build("vae", (1, 8, 8), {"latent_dim": 2, "hidden": [16]})
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.3))
    with torch.no_grad():  # as the metrics call it
        entry = ais.ais_metrics(model, x, points=5, chains=3, steps=20, leapfrog_steps=2, schedule_kind="linear")
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    nll = entry["ais_nll"]
    assert nll["unit"] == "nats" and nll["value"] > 0 and nll["sem"] > 0
    estimator = nll["estimator"]
    assert {k: estimator[k] for k in ("name", "points", "chains", "steps", "leapfrog_steps", "schedule", "split")} == {
        "name": "annealed_importance_sampling",
        "points": 5,
        "chains": 3,
        "steps": 20,
        "leapfrog_steps": 2,
        "schedule": "linear",
        "split": "test",
    }
    assert 0 < estimator["acceptance_rate"] <= 1


class LadderPrior:
    """A prior over a tuple of two layers, as a ladder's would be."""

    def sample(self, shape=()):
        return torch.randn(*shape, 2), torch.randn(*shape, 3)

    def log_prob(self, z):
        raise AssertionError("not reached")


class Ladder(LinearGaussian):
    def prior(self):
        return LadderPrior()


def test_a_tuple_latent_is_not_applicable(points):
    with pytest.raises(ais.NotApplicable, match="tuple") as raised:
        ais.ais(Ladder(), points, chains=2, steps=3)
    assert isinstance(raised.value, NotImplementedError)
    assert ais.ais_metrics(Ladder(), points, points=4, chains=2, steps=3) == {}


def test_the_importance_sampled_nll_is_paired_with_ais_on_its_own_points(points):
    # With the exact posterior as q, every importance weight is p(x): IS is exact, point by point.
    model = LinearGaussian(encoder="exact")
    exact_nll = -model.log_marginal(points[:5])
    assert abs(exact_nll.mean() - (-model.log_marginal(points)).mean()) > 0.5  # the first points are not all
    torch.manual_seed(4)
    entry = ais.ais_metrics(model, points, points=5, chains=4, steps=30, leapfrog_steps=2, importance_samples=50)
    torch.manual_seed(4)  # the IS draws come after AIS's: the same chains
    ais_nll = -ais.ais(model, points[:5], chains=4, steps=30, leapfrog_steps=2)["log_px"]
    nll = entry["ais_nll"]
    assert nll["value"] == pytest.approx(ais_nll.mean().item(), abs=1e-12)
    assert nll["importance_sampled"] == pytest.approx(exact_nll.mean().item(), abs=1e-9)
    difference = ais_nll - exact_nll
    assert nll["minus_importance_sampled"] == pytest.approx(difference.mean().item(), abs=1e-9)
    # paired: the spread of the differences, not of the points' NLLs
    assert nll["minus_importance_sampled_sem"] == pytest.approx(difference.std().item() / 5**0.5, rel=1e-6)
    assert nll["estimator"]["importance_samples"] == 50
    without = ais.ais_metrics(model, points, points=5, chains=4, steps=30, leapfrog_steps=2)["ais_nll"]
    assert "minus_importance_sampled" not in without and "importance_samples" not in without["estimator"]
