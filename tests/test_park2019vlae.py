"""The methods of Park et al. (2019) against ground truth: VLAE's mode update and Laplace posterior
on probabilistic PCA (where both are exact) and on ReLU decoders (against autograd), SA-VAE's
refinement direction, and the Householder and IAF log-determinants (against autograd)."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import MultivariateNormal

import models
from benchmarks import data, metrics, specs, train
from models.blocks.flows import MADE, HouseholderReflection, InverseAutoregressiveStep
from models.blocks.networks import diagonal_gaussian
from models.vae import VAE
from tests.linear_gaussian import LinearGaussian


def linear_vlae(truth: LinearGaussian, **hyper) -> models.LatentVariableModel:
    """VLAE whose decoder is the linear map of ``truth`` (no hidden layer): probabilistic PCA."""
    latent_dim, data_dim = truth.W.shape[1], truth.W.shape[0]
    model = models.build("vlae", (data_dim,), {"latent_dim": latent_dim, "hidden": [], **hyper}, "gaussian").double()
    with torch.no_grad():
        model.decoder[0].weight.copy_(truth.W)
        model.decoder[0].bias.copy_(truth.b)
        model.likelihood.log_scale.fill_(torch.tensor(truth.sigma).log())
    return model


def test_one_undamped_mode_update_on_probabilistic_pca_is_the_exact_posterior():
    truth = LinearGaussian(latent_dim=3, data_dim=6, sigma=0.5)
    torch.manual_seed(0)
    model = linear_vlae(truth, T=1, update_rate=1.0, update_decay="none")
    x = truth.sample_data(50)
    exact = truth.exact_posterior(x)
    q = model.posterior(x)
    assert (model.encoder(x) - exact.mean).abs().min() > 1e-3  # the start is the untrained encoder's
    torch.testing.assert_close(q.mean, exact.mean)
    torch.testing.assert_close(q.covariance_matrix, exact.covariance_matrix)
    damped = linear_vlae(truth, T=1, update_rate=0.5)  # the control: half a step is not there
    assert (damped.posterior(x).mean - exact.mean).abs().max() > 1e-2


def test_amortization_gap_of_vlae_on_probabilistic_pca_is_zero_at_the_smoke_settings():
    # The budgets' smoke settings (300 steps of the production optimiser, 100 samples): q is exact,
    # so L[q] = log p(x) and both gaps are zero up to the fit's own noise.
    truth = LinearGaussian(latent_dim=3, data_dim=6, sigma=0.5)
    torch.manual_seed(0)
    model = linear_vlae(truth, T=1, update_rate=1.0, update_decay="none")
    x = truth.sample_data(20)
    gaps = metrics.inference_gaps(model, x, max_steps=300, samples=100)
    elbo_q = gaps["inference_gap"]["elbo_q"]
    assert elbo_q == pytest.approx(truth.log_marginal(x).mean().item(), abs=1e-6)
    assert abs(gaps["amortization_gap"]["value"]) < 0.02
    assert abs(gaps["approximation_gap"]["value"]) < 0.02


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_mode_updates_on_a_relu_decoder_climb_log_p_x_z_from_a_good_start(likelihood):
    torch.manual_seed(0)
    model = models.build("vlae", (12,), {"latent_dim": 3, "hidden": [16, 16], "T": 1}, likelihood).double()
    z_true = torch.randn(200, 3, dtype=torch.float64)
    with torch.no_grad():
        output = model.decoder(z_true)
        if likelihood == "bernoulli":
            x = torch.bernoulli(torch.sigmoid(output))
        else:
            x = output + 0.1 * torch.randn_like(output)
            model.likelihood.log_scale.fill_(torch.tensor(0.1).log())
        mu = z_true.clone()  # a good start: the latent that made x
        start = model.log_joint(x, mu)
        for t in range(4):
            precision, gradient = model.precision_and_gradient(x, mu)
            mu = mu + model.step_size(t) * torch.linalg.solve(precision, gradient)
        end = model.log_joint(x, mu)
    assert (end >= start - 1e-9).float().mean() > 0.97, (end - start).min()
    assert (end - start).mean() > 0.1


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_laplace_posterior_is_the_multivariate_normal_of_the_autograd_hessian(likelihood):
    torch.manual_seed(0)
    model = models.build("vlae", (12,), {"latent_dim": 3, "hidden": [16, 16], "T": 2}, likelihood).double()
    x = torch.rand(5, 12, dtype=torch.float64).round()
    q = model.posterior(x)
    z = q.sample((7,))
    for i in range(len(x)):
        mu, point = q.mean[i], x[i : i + 1]
        # −∇² log p(x, z) at the mode, from autograd (for a piecewise-linear decoder Jᵀ C J + I)
        hessian = torch.autograd.functional.hessian(lambda v, point=point: model.log_joint(point, v[None])[0], mu)
        expected = MultivariateNormal(mu, precision_matrix=-hessian)
        torch.testing.assert_close(q.log_prob(z)[:, i], expected.log_prob(z[:, i]))


def test_mode_search_moves_towards_the_mode_and_is_trained_end_to_end():
    torch.manual_seed(0)
    model = models.build("vlae", (12,), {"latent_dim": 3, "hidden": [16, 16], "T": 4}, "bernoulli")
    x = torch.rand(32, 12).round()
    loss, _ = model.loss(x)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def _elbo(model, x, parameters, samples=4000):
    torch.manual_seed(1)
    q = model.variational_family(parameters)
    z = q.sample((samples,))
    return (model.log_joint(x, z) - q.log_prob(z)).mean(0)


def test_savae_refinement_raises_each_points_elbo_on_a_fixed_model():
    torch.manual_seed(0)
    model = models.build("savae", (64,), {"latent_dim": 4, "hidden": [32], "T": 5, "svi_lr": 0.05}, "bernoulli")
    x = torch.rand(100, 64).round()
    with torch.no_grad():
        encoded = VAE.variational_parameters(model, x)  # the encoder's output, unrefined
        refined = model.variational_parameters(x)
        gain = _elbo(model, x, refined) - _elbo(model, x, encoded)
    assert (gain > 0).float().mean() > 0.95, gain.min()  # the VLAE repository's step would lower it


def test_savae_is_trained_through_its_refinement():
    torch.manual_seed(0)
    model = models.build("savae", (64,), {"latent_dim": 4, "hidden": [32], "T": 2}, "bernoulli")
    loss, _ = model.loss(torch.rand(8, 64).round())
    loss.backward()
    # the loss sees only the refined parameters: the encoder's gradient comes through the steps
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_householder_reflection_is_orthogonal_with_zero_log_determinant():
    torch.manual_seed(0)
    v = torch.randn(1, 5, dtype=torch.float64)
    reflection = HouseholderReflection(v)
    z = torch.randn(1, 5, dtype=torch.float64)
    matrix = jacobian(lambda u: reflection(u[None])[0], z[0])
    torch.testing.assert_close(matrix, torch.eye(5, dtype=torch.float64) - 2 * v.T @ v / v.pow(2).sum())
    assert torch.linalg.slogdet(matrix).logabsdet.abs() < 1e-12
    assert reflection.log_abs_det_jacobian(z, reflection(z)).item() == 0
    torch.testing.assert_close(reflection.inv(reflection(z)), z)


@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_step_log_determinant_matches_autograd_and_is_autoregressive(reverse):
    torch.manual_seed(0)
    made = MADE(5, [20], context=3, reverse=reverse).double()
    context = torch.randn(1, 3, dtype=torch.float64)
    step = InverseAutoregressiveStep(made, context)
    z = torch.randn(1, 5, dtype=torch.float64)
    matrix = jacobian(lambda u: InverseAutoregressiveStep(made, context)(u[None])[0], z[0])
    ordered = matrix.flip(0, 1) if reverse else matrix
    torch.testing.assert_close(ordered, ordered.tril())  # output d depends on inputs up to d only
    torch.testing.assert_close(step.log_abs_det_jacobian(z, step(z))[0], torch.linalg.slogdet(matrix).logabsdet)


def test_iaf_posterior_density_is_exact_for_its_own_samples_and_refused_elsewhere():
    torch.manual_seed(0)
    model = models.build("vae_iaf", (64,), {"latent_dim": 4, "hidden": [32], "T": 3, "iaf_hidden": 16}, "bernoulli")
    x = torch.rand(6, 64).round()
    with torch.no_grad():
        parameters = model.variational_parameters(x)
        q = model.variational_family(parameters)
        base = diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        torch.manual_seed(3)
        sample = q.sample()
        torch.manual_seed(3)
        z = base.sample()  # the same draw, pushed through the steps by hand
        expected = base.log_prob(z)
        for made in model.steps:
            step = InverseAutoregressiveStep(made, parameters["context"])
            out = step(z)
            expected = expected - step.log_abs_det_jacobian(z, out)
            z = out
        torch.testing.assert_close(sample, z)
        torch.testing.assert_close(q.log_prob(sample), expected)
        with pytest.raises(NotImplementedError, match="not inverted"):
            q.log_prob(torch.zeros_like(sample))


def test_householder_posterior_density_is_the_base_density_of_the_reflected_back_point():
    torch.manual_seed(0)
    model = models.build("vae_hf", (64,), {"latent_dim": 4, "hidden": [32], "T": 3}, "bernoulli")
    x = torch.rand(6, 64).round()
    with torch.no_grad():
        parameters = model.variational_parameters(x)
        q = model.variational_family(parameters)
        point = torch.randn(6, 4)  # any point: reflections invert
        back = point
        for v in reversed(parameters["householder"].unbind(1)):
            back = HouseholderReflection(v)(back)
        base = diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        torch.testing.assert_close(q.log_prob(point), base.log_prob(back))


@pytest.mark.parametrize(
    "key, own",
    [
        ("vlae", {"T", "update_rate", "update_decay"}),
        ("savae", {"T", "svi_lr", "svi_clip"}),
        ("vae_hf", {"T"}),
        ("vae_iaf", {"T", "iaf_hidden"}),
    ],
)
def test_methods_built_on_the_vae_take_its_hyper_parameters_besides_their_own(key, own):
    # what a spec may set and the record writes out: the method's own keywords and the VAE's it forwards
    vae = models.hyper_parameters("vae")
    hyper = models.hyper_parameters(key)
    assert set(hyper) == own | set(vae)
    assert {k: hyper[k] for k in vae} == vae


PARK_ON_DIGITS = """
[paper]
title = "Park et al.'s methods on digits, small"
citation = "Nobody, tests"

[evaluation]
importance_samples = 20
compare = ["nll"]

[training]
batch_size = 100
epochs = 2

[datasets.digits]

[methods.vlae]
model = "vlae"
hyper = { latent_dim = 4, hidden = [32, 32], T = 2 }

[methods.savae]
model = "savae"
hyper = { latent_dim = 4, hidden = [32, 32], T = 2 }

[methods.vae_hf]
model = "vae_hf"
hyper = { latent_dim = 4, hidden = [32, 32], T = 2 }

[methods.vae_iaf]
model = "vae_iaf"
hyper = { latent_dim = 4, hidden = [32, 32], T = 2, iaf_hidden = 16 }
"""


@pytest.mark.parametrize("method", ["vlae", "savae", "vae_hf", "vae_iaf"])
def test_each_method_trains_and_every_metric_group_evaluates_through_the_harness(tmp_path, monkeypatch, method):
    (tmp_path / "park_digits.toml").write_text(PARK_ON_DIGITS)
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    config = specs.resolve(specs.load_paper("park_digits"), method, "digits", specs.budget("smoke"), 0)
    record = train.run(config, specs.run_id(config), data.load("digits"), torch.device("cpu"), progress=False)
    assert record["status"] == "ok", record["error"]
    found = record["metrics"]
    for metric in ("nll", "elbo", "kl", "active_units", "cluster_acc", "amortization_gap", "ais_nll"):
        assert metric in found and math.isfinite(found[metric]["value"]), metric
    assert found["nll"]["value"] <= -found["elbo"]["value"] + 0.5  # importance sampling tightens the bound
    assert record["timing"]["inference_latency_ms"] > 0
