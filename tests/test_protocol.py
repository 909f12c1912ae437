"""Every registered method conforms to the model protocol (models/base.py): registering a method is
enough to have it tested here."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.distributions import Distribution

import models
from benchmarks import metrics, specs, train
from benchmarks.data import binarize, load
from models.base import has_analytic_kl
from models.blocks.networks import discretized_logistic_log_prob

DIGITS = load("digits")
DIGITS_28 = torch.nn.functional.interpolate(DIGITS.train[:16].reshape(16, 1, 8, 8), size=28, mode="bilinear")
COLOUR = (3, 32, 32)
DIGITS_COLOUR = torch.nn.functional.pad(DIGITS_28, (2, 2, 2, 2)).expand(-1, 3, -1, -1)  # 28×28 in a 32×32 frame


# Narrower than their defaults, for the methods whose default networks would take minutes here (the
# protocol does not depend on width): 100 importance samples of 16 images through a PixelCNN decoder
# or the ladder's layers of 1,024 units.
PIXELCNN_NARROW = {
    "latent_dim": 8,
    "prior_hidden": [32],
    "pixelcnn_layers": 2,
    "pixelcnn_filters": 4,
    "latent_channels": 2,  # the colour networks'
    "encoder_channels": [8, 16],
    "mixture_components": 2,
}
NARROW = {
    "vlossy": PIXELCNN_NARROW,
    "mae": {**PIXELCNN_NARROW, "eta": 1.0, "gamma": 0.01},
    "vladder": {"hidden": 64, "channels": [8, 16]},
    "vlac": {"hidden": 64, "channels": [8, 16]},
    "hvae_chain": {"hidden": 64},
    "gmdgm": {"hidden": [64], "latent_dim": 8},
}


def shape(case) -> tuple[int, ...]:
    """The digits' 8×8, or 28×28 for a method whose networks are built for that (enlarged digits), or
    32×32 colour for a likelihood the method takes on colour images only (enlarged and framed)."""
    key, likelihood = case
    shapes = models.registry()[key].image_shapes
    if shapes is None or DIGITS.shape in shapes:
        return DIGITS.shape
    try:
        models.build(key, (1, 28, 28), NARROW.get(key, {}), likelihood)
    except ValueError:
        return COLOUR
    return (1, 28, 28)


CASES = [(key, likelihood) for key, cls in sorted(models.registry().items()) for likelihood in cls.likelihoods]


@pytest.fixture(params=CASES, ids=[f"{key}-{likelihood}" for key, likelihood in CASES])
def case(request):
    return request.param


RUN = {**specs.TRAINING_DEFAULTS, "epochs": 4}  # a short run's training table, for the per-epoch hook


@pytest.fixture
def model(case):
    """The method as it ends a run (``on_epoch_start`` of its last epoch: a growing mixture complete)."""
    torch.manual_seed(0)
    built = models.build(case[0], shape(case), NARROW.get(case[0], {}), case[1])
    built.on_epoch_start(RUN["epochs"] - 1, RUN)
    return built


@pytest.fixture
def x(case):
    torch.manual_seed(0)
    images = {DIGITS.shape: DIGITS.train[:16], COLOUR: DIGITS_COLOUR}.get(shape(case), DIGITS_28)
    # intensities in [0, 1]; binary for a Bernoulli likelihood, 8-bit for a discrete one
    return {"bernoulli": binarize, "discretized_logistic": lambda x: torch.round(x * 255) / 255}.get(
        case[1], lambda x: x
    )(images)


def test_posterior_is_a_batch_shaped_distribution(model, x):
    q = model.posterior(x)
    assert isinstance(q, Distribution)
    assert q.batch_shape == (16,)
    z = q.rsample((3,)) if q.has_rsample else q.sample((3,))  # a mixture has no reparameterized sample
    assert q.log_prob(z).shape == (3, 16)
    assert torch.isfinite(q.log_prob(z)).all()


def test_log_joint_broadcasts_over_samples_and_adds_prior_and_likelihood(model, x, case):
    z = model.posterior(x).sample((5,))
    log_joint = model.log_joint(x, z)
    assert log_joint.shape == (5, 16)
    torch.testing.assert_close(log_joint, model.log_likelihood(x, z) + model.prior().log_prob(z))
    if case[1] != "gaussian":  # a probability, not a density: log p(x|z) <= 0
        assert (model.log_likelihood(x, z) <= 0).all()


def test_loss_is_a_finite_scalar_with_diagnostics_and_trains_every_parameter(case, x):
    # over the epochs of a short run: a method may train some parameters only at some stage (a
    # recursive mixture trains each component while it is the newest)
    torch.manual_seed(0)
    model = models.build(case[0], shape(case), NARROW.get(case[0], {}), case[1])
    trained = set()
    for epoch in range(RUN["epochs"]):
        model.on_epoch_start(epoch, RUN)
        model.zero_grad(set_to_none=True)
        loss, diagnostics = model.loss(x)
        assert loss.shape == () and torch.isfinite(loss)
        assert {"elbo", "recon", "kl"} <= set(diagnostics)
        assert all(torch.isfinite(v) for v in diagnostics.values())
        if has_analytic_kl(model.posterior(x), model.prior()):  # a Monte-Carlo estimate may fall below 0
            assert diagnostics["kl"] >= 0
        loss.backward()
        trained |= {name for name, p in model.named_parameters() if p.grad is not None}
    untrained = [name for name, p in model.named_parameters() if p.requires_grad and name not in trained]
    assert not untrained


def test_importance_sampled_likelihood_is_above_the_elbo(model, x):
    # at the smoke budget's K; where the KL is a Monte-Carlo estimate from the same draws, the bound
    # holds at every K (Jensen), and an analytic KL differs from it by the draws' noise only
    torch.manual_seed(0)
    result = metrics.density_metrics(model, x, samples=specs.budget("smoke").caps["importance_samples"])
    assert -result["nll"]["value"] >= result["elbo"]["value"] - 0.05
    assert result["elbo"]["value"] == pytest.approx(result["recon"]["value"] - result["kl"]["value"])


def test_registering_a_key_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        models.register("vae")(type("Duplicate", (models.LatentVariableModel,), {}))


def test_discretized_logistic_is_a_distribution_over_the_256_intensities():
    from scipy.stats import logistic

    grid = torch.arange(256, dtype=torch.float64) / 255
    for loc, scale in [(0.3, 0.05), (-0.2, 0.5), (0.999, 1e-3), (0.5, 10.0)]:
        log_p = discretized_logistic_log_prob(
            grid, torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64).log()
        )
        assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-9)
        # an inner bin holds the logistic's mass between its edges; the first bin the lower tail
        edges = (np.array([0.5, 1.5]) / 255, np.array([-np.inf, 0.5 / 255]))
        for k, (low, high) in zip((1, 0), edges):
            mass = logistic.cdf(high, loc, scale) - logistic.cdf(low, loc, scale)
            if mass > 1e-12:  # scipy's difference of CDFs underflows where the log-space formula does not
                assert log_p[k].item() == pytest.approx(np.log(mass), rel=1e-6)


def test_pictures_show_prior_samples_and_each_test_image_over_its_reconstruction(model, x, case):
    if type(model).mean_image is models.base.LatentVariableModel.mean_image:
        return  # an autoregressive decoder: no mean image, its samples drawn pixel by pixel (test_chen2017lossy)
    data = SimpleNamespace(test=x, shape=shape(case))
    torch.manual_seed(0)
    with torch.no_grad():
        grids = train.picture_grids(model, data)
    assert grids["samples"].shape == (8, 8, *shape(case))
    pairs = grids["reconstructions"]
    assert pairs.shape == (4, 8, *shape(case))  # 16 test images: 2 rows of originals, each over its reconstructions
    assert torch.equal(pairs[0::2].reshape(x.shape), x)
    assert not torch.equal(pairs[1::2], pairs[0::2]) and torch.isfinite(pairs).all()
    if case[1] == "bernoulli":  # probabilities
        assert 0 <= pairs[1::2].min() and pairs[1::2].max() <= 1 and 0 <= grids["samples"].min()
