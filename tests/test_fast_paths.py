"""The fast paths against the plain computations they replace: the Bernoulli log-likelihood and tanh
(models/blocks/networks.py, fast on the CPU without gradient), the chunked importance-sampled estimator
(benchmarks/metrics.py), the VAE and IWAE losses written with plain tensors (models/), and the
channels-last convolutions of a model placed on the CPU (benchmarks/train.py)."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Distribution, Independent, kl_divergence

import models
from benchmarks import metrics
from models.blocks.networks import PixelLikelihood, Tanh, bernoulli_log_prob

SMALL = {"latent_dim": 3, "hidden": [16], "activation": "tanh"}


def distribution_log_prob(logits, x):
    return Independent(Bernoulli(logits=logits, validate_args=False), 1).log_prob(x)  # x may be in [0, 1]


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-9), (torch.float32, 2e-3)])
@pytest.mark.parametrize("pixels", [1, 37, 784])
@pytest.mark.parametrize("intensities", ["binary", "continuous"])
def test_bernoulli_log_prob_is_the_distributions_log_prob_summed(dtype, atol, pixels, intensities):
    torch.manual_seed(0)
    logits = (8 * torch.randn(5, 3, pixels)).to(dtype)  # [K, B, D], up to |l| ~ 40: both tails
    x = torch.rand(3, pixels, dtype=dtype)  # [B, D], broadcast over K
    x = torch.bernoulli(x) if intensities == "binary" else x
    expected = distribution_log_prob(logits.double(), x.double())
    with torch.no_grad():  # the fast path
        fast = bernoulli_log_prob(logits, x)
    assert fast.shape == (5, 3) and fast.dtype == dtype
    torch.testing.assert_close(fast.double(), expected, rtol=0, atol=atol)
    tracked = logits.clone().requires_grad_()  # under autograd: binary cross-entropy
    torch.testing.assert_close(bernoulli_log_prob(tracked, x).double(), expected, rtol=0, atol=atol)
    (grad,) = torch.autograd.grad(bernoulli_log_prob(tracked, x).sum(), tracked)
    torch.testing.assert_close(grad, (x - torch.sigmoid(logits)).expand_as(grad))


def test_the_pixel_likelihood_uses_it_for_images():
    torch.manual_seed(0)
    logits, images = torch.randn(4, 2, 36), torch.bernoulli(torch.full((2, 1, 6, 6), 0.3))
    with torch.no_grad():
        got = PixelLikelihood("bernoulli")(logits, images)
    torch.testing.assert_close(got, distribution_log_prob(logits, images.flatten(1)), rtol=0, atol=1e-4)


def test_tanh_is_torch_tanh_with_and_without_gradient():
    x = torch.linspace(-30, 30, 10_001)
    with torch.no_grad():
        torch.testing.assert_close(Tanh()(x), torch.tanh(x), rtol=0, atol=3e-7)
    tracked = x.clone().requires_grad_()
    assert torch.equal(Tanh()(tracked), torch.tanh(x))
    assert isinstance(Tanh(), torch.nn.Tanh)


class Replay(Distribution):
    """q(z|x) of some points whose samples were drawn beforehand: the estimator's passes get them in
    order, so its result can be compared with one computation over all of them at once."""

    def __init__(self, q, z):
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)
        self.q, self.z, self.used = q, z, 0

    def sample(self, sample_shape=(1,)):
        n = sample_shape[0]
        self.used += n
        return self.z[self.used - n : self.used]

    def log_prob(self, z):
        return self.q.log_prob(z)


def reference_terms(model, x, z):
    """Over all K samples [K, B, ...] at once, as the estimator is defined."""
    q, prior = model.posterior(x), model.prior()
    log_joint, log_q, log_prior = model.log_joint(x, z), q.log_prob(z), prior.log_prob(z)
    log_w = log_joint - log_q
    samples = len(z)
    log_px = torch.logsumexp(log_w, 0) - math.log(samples)  # logmeanexp
    w = torch.exp(log_w - log_w.max(0).values)
    variance = (samples * (w**2).sum(0) / w.sum(0) ** 2 - 1) / samples
    return log_w, {
        "log_px": log_px,
        "log_px_var": variance,
        "recon": (log_joint - log_prior).mean(0),
        "kl": (log_q - log_prior).mean(0),
    }


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return models.build("vae", (1, 6, 6), SMALL).eval()


@pytest.fixture
def points():
    torch.manual_seed(1)
    return torch.bernoulli(torch.full((7, 1, 6, 6), 0.3))


@pytest.mark.parametrize(
    "samples, rows_per_chunk, cache_values", [(13, 30, 5 * 36), (13, 10_000, 10**9), (40, 90, 7 * 36)]
)
def test_chunked_estimator_equals_the_single_chunk_computation_on_the_same_samples(
    vae, points, monkeypatch, samples, rows_per_chunk, cache_values
):
    # Chunks of 2 points (the last of 1), their samples in unequal passes of the decoder (13 samples
    # of 2 points at 5 rows a pass: 2, 2, 2, 2, 2, 2, 1; of the last point: 5, 4, 4).
    monkeypatch.setattr(metrics, "CPU_CACHE_VALUES", cache_values)
    torch.manual_seed(2)
    with torch.no_grad():
        z = vae.posterior(points).sample((samples,))
        log_w, expected = reference_terms(vae, points, z)
        got = metrics.importance_sampled_terms(
            vae, points, samples, rows_per_chunk, proposal=lambda rows: Replay(vae.posterior(points[rows]), z[:, rows])
        )
    assert log_w.std(0).min() > 0.5  # unequal weights (by e^2 and more): how they are combined matters
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-4, msg=key)
    assert got["kl_analytic"] is False and got["kl_per_dim"] is None  # Replay has no closed-form KL


def test_chunked_estimator_agrees_with_the_reference_within_monte_carlo_error(vae, points, monkeypatch):
    # The method's own q(z|x), sampled by the estimator in chunks and passes, against independent samples.
    monkeypatch.setattr(metrics, "CPU_CACHE_VALUES", 50 * 36)
    torch.manual_seed(3)
    got = metrics.importance_sampled_terms(vae, points, 500, rows_per_chunk=1000)
    with torch.no_grad():
        torch.manual_seed(4)
        _, expected = reference_terms(vae, points, vae.posterior(points).sample((500,)))
    mc_sem = (got["log_px_var"] + expected["log_px_var"]).sqrt()
    assert ((got["log_px"] - expected["log_px"]).abs() < 4 * mc_sem + 1e-3).all()
    q = vae.posterior(points)
    torch.testing.assert_close(got["kl"], kl_divergence(q, vae.prior()))
    torch.testing.assert_close(got["kl_per_dim"], kl_divergence(q.base_dist, vae.prior().base_dist))
    assert got["kl_analytic"] is True
    assert ((got["recon"] - expected["recon"]).abs() < 1.0).all()


def distribution_loss(model, x):
    """The losses as they were written with torch.distributions (before the plain-tensor versions)."""
    q, prior = model.posterior(x), model.prior()
    z = q.rsample((model.samples,))
    kl = kl_divergence(q, prior)
    if model.key == "vae":
        return -(model.log_likelihood(x, z).mean(0) - kl).mean()
    log_weights = model.log_likelihood(x, z) + prior.log_prob(z) - q.log_prob(z)
    return -(torch.logsumexp(log_weights, 0) - math.log(model.samples)).mean()


@pytest.mark.parametrize("key", ["vae", "iwae"])
@pytest.mark.parametrize("samples", [1, 5])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_plain_tensor_losses_equal_the_distribution_ones(key, samples, likelihood):
    torch.manual_seed(0)
    model = models.build(key, (1, 28, 28), {**SMALL, "hidden": [200, 200], "samples": samples}, likelihood)
    x = torch.rand(20, 1, 28, 28)
    x = torch.bernoulli(x) if likelihood == "bernoulli" else x
    torch.manual_seed(1)
    loss, diagnostics = model.loss(x)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.manual_seed(1)
    expected = distribution_loss(model, x)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert diagnostics["elbo"].item() == pytest.approx(-loss.item() if key == "vae" else diagnostics["elbo"].item())
    torch.testing.assert_close(diagnostics["kl"], kl_divergence(model.posterior(x), model.prior()).mean())


@pytest.mark.parametrize("method", ["vlossy", "vae"])
def test_a_model_placed_on_the_cpu_has_channels_last_convolutions_and_the_same_loss_and_gradients(method):
    from benchmarks.train import place

    torch.manual_seed(0)
    hyper = (
        {"latent_dim": 8, "prior_steps": 2, "prior_hidden": [32], "pixelcnn_layers": 3} if method == "vlossy" else SMALL
    )
    plain = models.build(method, (1, 28, 28), hyper)
    placed = place(models.build(method, (1, 28, 28), hyper), torch.device("cpu"))
    placed.load_state_dict(plain.state_dict())
    convolutions = [p for p in placed.parameters() if p.dim() == 4]
    assert bool(convolutions) == (method == "vlossy")  # the VAE has none: unchanged
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    assert all(p.is_contiguous() for p in placed.parameters() if p.dim() != 4)
    if convolutions:  # a 1×1 kernel is both layouts at once; the 3×3 ones changed
        assert any(not p.is_contiguous() for p in convolutions)
    x = torch.rand(16, 1, 28, 28).round()
    losses, gradients = [], []
    for model in (plain, placed):
        torch.manual_seed(1)
        loss, _ = model.loss(x)
        loss.backward()
        losses.append(loss.detach())
        gradients.append([p.grad for p in model.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    for placed_grad, plain_grad in zip(gradients[1], gradients[0]):
        torch.testing.assert_close(placed_grad, plain_grad, rtol=1e-3, atol=1e-5)
