"""The Variational Lossy Autoencoder (Chen et al. 2017) against what it must be: a decoder whose pixel
i sees only z and earlier pixels (so p(x|z) is a distribution), free bits that switch the KL's
gradient off below the floor and nowhere else, an unconditional decoder whose importance-sampled
NLL is its exact likelihood, an IAF posterior whose density is the change of variables through its
steps, and every variant of the spec trained and evaluated by the harness."""

import dataclasses

import pytest
import torch
from images28 import assert_trains_and_evaluates, images, small_dataset

import models
from benchmarks import metrics, records, specs, train
from models.blocks import convnets
from models.blocks.pixelcnn_pp import PixelCNNPlusPlus

TINY = {"latent_dim": 4, "prior_hidden": [16], "pixelcnn_layers": 2, "pixelcnn_filters": 4}


def built(seed=0, **hyper):
    torch.manual_seed(seed)
    return models.build("vlossy", (28, 28), {**TINY, **hyper}, "bernoulli")


@pytest.mark.parametrize("decoder", ["pixelcnn", "unconditional"])
def test_each_pixel_logit_depends_on_z_and_earlier_pixels_only(decoder):
    model = built(decoder=decoder, **({"prior_steps": 0} if decoder == "unconditional" else {})).double()
    x = torch.rand(1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    seen_any = False
    for i in (5 * 28 + 3, 14 * 28 + 14, 27 * 28 + 27):  # pixels near the top, the middle, the last one
        pixels = x.clone().requires_grad_()
        z = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
        model.decoder_output(pixels, z).flatten(-3)[0, i].backward()
        seen = pixels.grad[0].flatten().nonzero().flatten()
        assert len(seen) == 0 or seen.max() < i  # nothing at or after pixel i in raster order
        seen_any |= len(seen) > 0
        assert (z.grad is not None and bool(z.grad.abs().sum() > 0)) == (decoder == "pixelcnn")
    assert seen_any


def test_the_factorized_decoder_can_make_every_pixel_nearly_certain():
    """Logits bounded below (an ELU output taken as logits stops at −1) would keep a blank image's
    −log p(x|z) above 784 · log(1 + e^−1) = 245 nats, whatever the weights."""
    model = built(decoder="factorized")
    with torch.no_grad():
        model.factorized_head[-1].weight.zero_()
        model.factorized_head[-1].bias.fill_(-10.0)
        assert -model.log_likelihood(torch.zeros(3, 28, 28), torch.randn(3, 4)).max().item() < 0.05


def test_free_bits_switch_off_the_kl_gradient_below_the_floor_and_only_there():
    x = images(8)
    gradients = {}
    for free_bits in (0.0, 1e6):  # a floor no KL reaches, and none
        model = built(free_bits_per_dim=free_bits)
        torch.manual_seed(1)
        loss, logged = model.loss(x)
        loss.backward()
        gradients[free_bits] = [p.grad.clone() for p in model.encoder.parameters()]
        if free_bits == 0.0:
            torch.testing.assert_close(loss, -logged["elbo"])  # the plain ELBO
        else:
            torch.testing.assert_close(loss, -logged["recon"] + free_bits * 784)
    # above the floor the KL's gradient reaches the encoder; below it only the reconstruction's does
    model = built(free_bits_per_dim=1e6)
    torch.manual_seed(1)
    q = model.variational_parameters(x)
    z = q["loc"] + q["log_scale"].exp() * torch.randn_like(q["loc"])[None]
    (-model.log_likelihood(x, z).mean()).backward()
    for reconstruction_only, floored in zip(model.encoder.parameters(), gradients[1e6], strict=True):
        torch.testing.assert_close(floored, reconstruction_only.grad)
    plain, floored = (torch.cat([g.flatten() for g in gradients[f]]) for f in (0.0, 1e6))
    assert (plain - floored).norm() > 0.1 * floored.norm()


def test_the_unconditional_decoder_has_no_code_so_its_nll_is_exact_and_its_kl_zero():
    model = built(decoder="unconditional", prior_steps=0)
    x = images(6)
    model.initialize(x, {})
    for _ in range(3):  # training changes the PixelCNN, never q: q(z|x) is p(z) by construction
        loss, logged = model.loss(x)
        torch.testing.assert_close(loss, -logged["recon"])  # no free-bits floor: there is no KL to protect
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad
        model.zero_grad()
    exact = -model.log_likelihood(x, torch.zeros(6, 4)).mean().item()
    density = metrics.density_metrics(model, x, samples=300)  # every importance weight is p(x)
    assert density["nll"]["value"] == pytest.approx(exact, rel=1e-5)
    assert density["kl"]["value"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="no code for a flow prior"):
        built(decoder="unconditional", prior_steps=2)


def test_the_prior_is_the_flow_and_its_density_changes_with_the_flow():
    gaussian, flow = built(prior_steps=0), built(prior_steps=2, mean_only_prior=False)
    z = torch.randn(5, 4)
    assert isinstance(flow.prior(), torch.distributions.TransformedDistribution)
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian.prior().log_prob(z), standard)
    assert not torch.allclose(flow.prior().log_prob(z), standard)


def test_initialisation_is_data_dependent():
    x = images(32)
    model = built()
    model.initialize(x, {})
    hidden = model.encoder.to_hidden(model.encoder.blocks(x[:, None]))
    torch.testing.assert_close(hidden.mean((0, 2, 3)), torch.zeros(hidden.shape[1]), atol=1e-4, rtol=0)


LOSSY_ON_DIGITS = """
[training]
batch_size = 20
optimizer = "adamax"
learning_rate = 2e-3
ema_decay = 0.998
epochs = 2

[datasets.mnist_static]

[methods.vlossy]
model = "vlossy"
hyper = { latent_dim = 4, prior_hidden = [16], pixelcnn_layers = 2, pixelcnn_filters = 4 }

[methods.vlossy_gaussian_prior]
model = "vlossy"
hyper = { latent_dim = 4, prior_steps = 0, pixelcnn_layers = 2, pixelcnn_filters = 4 }

[methods.af_vae]
model = "vlossy"
hyper = { latent_dim = 4, prior_hidden = [16], decoder = "factorized" }

[methods.iaf_vae]
model = "vlossy"
hyper = { latent_dim = 4, decoder = "factorized", prior_steps = 0, posterior_steps = 2, posterior_hidden = [16] }

[methods.vlossy_iaf_posterior]
model = "vlossy"
[methods.vlossy_iaf_posterior.hyper]
latent_dim = 4
prior_steps = 0
posterior_steps = 2
posterior_hidden = [16]
pixelcnn_layers = 2
pixelcnn_filters = 4

[methods.vae]
model = "vlossy"
hyper = { latent_dim = 4, decoder = "factorized", prior_steps = 0 }

[methods.pixelcnn]
model = "vlossy"
hyper = { latent_dim = 4, decoder = "unconditional", prior_steps = 0, pixelcnn_layers = 2, pixelcnn_filters = 4 }
"""


@pytest.mark.parametrize(
    "method", ["vlossy", "vlossy_gaussian_prior", "af_vae", "iaf_vae", "vlossy_iaf_posterior", "vae", "pixelcnn"]
)
def test_each_variant_trains_and_every_metric_group_evaluates_through_the_harness(tmp_path, monkeypatch, method):
    assert_trains_and_evaluates(tmp_path, monkeypatch, LOSSY_ON_DIGITS, method, "mnist_static")


def test_the_spec_loads_with_its_reported_numbers_and_claims():
    paper = specs.load_paper("chen2017lossy")
    assert set(paper.methods) == {
        "vlossy",
        "vlossy_densenet",
        "vlossy_gaussian_prior",
        "af_vae",
        "af_vae_uncorrected",
        "iaf_vae",
        "vlossy_iaf_posterior",
        "vae",
        "pixelcnn",
    }
    reported = {(r.method, r.dataset, r.metric): r.value for r in paper.reported}
    assert reported[("vlossy", "mnist_static", "nll")] == 79.03 and reported[("vlossy", "mnist", "nll")] == 78.53
    assert reported[("pixelcnn", "caltech101_silhouettes", "nll")] == 89.26
    assert paper.training["optimizer"] == "adamax" and paper.training["ema_decay"] == 0.998
    # the IAF posteriors train with the Adamax of Kingma et al.'s code (the spec says why), and so does
    # the AF VAE's control, which differs from the AF VAE in that alone
    for method in paper.methods:
        resolved = specs.resolve(paper, method, paper.methods[method].datasets[0], specs.budget("smoke"), 0)
        uncorrected = "iaf" in method or method == "af_vae_uncorrected"
        assert resolved["training"]["optimizer"] == ("adamax_uncorrected" if uncorrected else "adamax")
    control, af_vae = (
        specs.resolve(paper, m, "mnist_static", specs.budget("smoke"), 0) for m in ("af_vae_uncorrected", "af_vae")
    )
    assert control["hyper"] == af_vae["hyper"] and control["model"] == af_vae["model"]
    assert paper.evaluation["importance_samples"] == 4096
    assert reported[("iaf_vae", "mnist_static", "nll")] == 79.88
    assert reported[("vlossy_densenet", "cifar10", "bits_per_dim")] == 2.95  # Table 5's best row
    assert len(paper.claims) == 10


# --- the colour configuration (Appendix B, CIFAR-10) -----------------------------------------------------

COLOUR_TINY = {
    "latent_channels": 2,
    "encoder_channels": [4, 8],
    "prior_steps": 2,
    "prior_hidden": [8],
    "pixelcnn_layers": 2,
    "pixelcnn_filters": 4,
    "pixelcnn_resnets": 1,
    "mixture_components": 2,
}


def colour_model(**hyper):
    torch.manual_seed(0)
    return models.build("vlossy", (3, 32, 32), {**COLOUR_TINY, **hyper}, "discretized_logistic")


def colour_images(n):
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0)) / 255.0


@pytest.mark.parametrize("decoder", ["pixelcnn", "pixelcnn++", "unconditional"])
def test_on_colour_images_each_pixels_mixture_depends_on_z_and_earlier_pixels_only(decoder):
    """All three channels of a pixel are left out of its own mixture's parameters: the mixture orders
    them itself (G given R, B given both)."""
    model = colour_model(decoder=decoder, prior_steps=0 if decoder == "unconditional" else 2).double()
    for i, j in ((3, 5), (16, 16), (31, 31)):
        pixels = colour_images(1).double().requires_grad_()
        z = torch.randn(1, 2 * 64, dtype=torch.float64, requires_grad=True)
        model.decoder_output(pixels, z)[0, :, i, j].sum().backward()
        seen = pixels.grad[0].abs().sum(0).flatten().nonzero().flatten()  # positions, over the channels
        assert len(seen) > 0 and seen.max() < i * 32 + j
        assert (z.grad is not None and bool(z.grad.abs().sum() > 0)) == (decoder != "unconditional")


@pytest.mark.parametrize("decoder", ["pixelcnn", "pixelcnn++", "factorized", "unconditional"])
def test_on_colour_images_every_decoder_trains_with_free_bits_over_the_3072_dimensions(decoder):
    unconditional = decoder == "unconditional"
    model = colour_model(decoder=decoder, free_bits_per_dim=1.0, prior_steps=0 if unconditional else 2)
    x = colour_images(4)
    loss, logged = model.loss(x)
    loss.backward()
    # far below the floor: the KL counts as 1 nat per dimension of the image (no floor without a code)
    torch.testing.assert_close(loss, -logged["recon"] + (0.0 if unconditional else 3 * 32 * 32 * 1.0))
    assert logged["recon"] < 0 and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.posterior(x).sample().shape == (4, 2 * 8 * 8)  # z: 2 maps of 8×8, flattened


def test_on_colour_images_the_densenet_encoder_is_initialised_from_data_and_trains_and_binary_images_refuse_it():
    model = colour_model(encoder="densenet", decoder="factorized")
    assert type(model.encoder) is convnets.DenseNetEncoder32
    x = colour_images(4)
    model.initialize(x, {})
    features = model.encoder.net[:-2](x)  # the last normalised layer's outputs: zero mean on the batch
    torch.testing.assert_close(features.mean((0, 2, 3)), torch.zeros(96), atol=1e-4, rtol=0)
    loss, _ = model.loss(x)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.encoder.parameters())
    with pytest.raises(ValueError, match="unknown encoder 'densenet' on .* images; valid: resnet"):
        built(encoder="densenet")
    with pytest.raises(ValueError, match="the pixelcnn\\+\\+ decoder is for 32×32 colour images"):
        built(decoder="pixelcnn++")


def test_on_colour_images_the_prior_is_a_pixelcnn_flow_over_the_latent_maps_and_samples_are_8_bit_images():
    model = colour_model(decoder="factorized")  # one pass: a PixelCNN decoder takes 1,024, one per pixel
    z = model.prior().sample((3,))
    assert z.shape == (3, 128) and torch.isfinite(model.prior().log_prob(z)).all()
    images = model.sample_images(2)
    assert images.shape == (2, 3, 32, 32)
    assert model._sample_pixels(torch.randn(2, 20)).shape == (2, 3)  # one pixel of each image, as the PixelCNN's loop
    torch.testing.assert_close(images * 255, (images * 255).round())  # on the 8-bit grid
    assert 0 <= images.min() and images.max() <= 1
    with pytest.raises(ValueError, match="takes the discretized_logistic likelihood"):
        models.build("vlossy", (3, 32, 32), COLOUR_TINY, "gaussian")


def test_a_runs_pictures_are_samples_drawn_pixel_by_pixel_binary_or_8_bit(tmp_path, monkeypatch):
    from models import vlossy

    monkeypatch.setattr(vlossy, "SAMPLES_SIDE", 2)  # 784 decoder passes for 4 samples (a run draws 36)
    torch.manual_seed(0)
    # the colour model with the factorized decoder: its pixels in one pass (a PixelCNN takes 1,024)
    for model in [models.build("vlossy", (28, 28), TINY, "bernoulli"), colour_model(decoder="factorized")]:
        with torch.no_grad():  # as the harness draws them
            grids = train.picture_grids(model, dataclasses.replace(small_dataset(), shape=model.image))
        samples = grids["samples"]
        assert set(grids) == {"samples"} and samples.shape == (2, 2, *model.image)
        levels = 1 if model.image == (1, 28, 28) else 255  # Bernoulli pixels, or the 8-bit grid
        torch.testing.assert_close(samples * levels, (samples * levels).round())
        assert 0 <= samples.min() and samples.max() <= 1 and samples.std() > 0
        saved = records.save_image_grids(tmp_path, "0123456789abcdef", grids)
        assert (tmp_path / saved["samples"]).is_file()


@pytest.mark.parametrize(
    "paper, method",
    [
        ("chen2017lossy", m)
        for m in ("vlossy", "vlossy_densenet", "vlossy_gaussian_prior", "af_vae", "iaf_vae", "vlossy_iaf_posterior")
        + ("vae", "pixelcnn")
    ]
    + [("ma2019mae", "mae[eta=1]"), ("ma2019mae", "vae_pixelcnn")],
)
def test_the_specs_cifar10_configuration_builds_the_colour_networks(paper, method):
    spec = specs.load_paper(paper)
    config = specs.resolve(spec, method, "cifar10", specs.budget("smoke"), 0)
    assert config["dataset_options"]["likelihood"] == "discretized_logistic"
    if method == "vlossy_densenet":  # Table 5's row: on CIFAR-10 alone
        assert spec.methods[method].datasets == ("cifar10",)
    else:
        binary = specs.resolve(spec, method, "mnist", specs.budget("smoke"), 0)
        assert binary["hyper"] == spec.methods[method].hyper  # the binary configuration is untouched
    model = models.build(spec.methods[method].model, (3, 32, 32), config["hyper"], "discretized_logistic")
    assert model.image == (3, 32, 32) and model.parameters_per_pixel == 100  # 10 logistics
    densenet = paper == "ma2019mae" or method == "vlossy_densenet"  # the MAE code's, Table 5's best row
    encoder = convnets.DenseNetEncoder32 if densenet else convnets.ResNetEncoder32
    assert type(model.encoder) is (type(None) if method == "pixelcnn" else encoder)  # the PixelCNN alone has none
    if paper == "ma2019mae":  # the code's decoder: PixelCNN++ of 3 levels of 6 blocks of 96 maps, dropout 0.5
        assert type(model.pixelcnn) is PixelCNNPlusPlus and len(model.pixelcnn.growing_above_left[-1]) == 7
        assert model.pixelcnn.out.in_channels == 96 and model.pixelcnn.shrinking_above[0][0].dropout.p == 0.5
    prior = {"vlossy": 6, "vlossy_densenet": 6, "af_vae": 6, "mae[eta=1]": 8, "vae_pixelcnn": 8}.get(method, 0)
    posterior = {"iaf_vae": 6, "vlossy_iaf_posterior": 6}.get(method, 0)
    assert (len(model.prior_steps), len(model.posterior_steps)) == (prior, posterior)


@pytest.mark.parametrize("colour", [False, True], ids=["binary", "colour"])
def test_an_iaf_posteriors_log_density_is_its_gaussians_minus_its_steps_log_determinant(colour):
    """q's log-density at its own draws against the change of variables through the steps (autograd
    Jacobian of each point's flow), and the context changes the steps."""
    iaf = {"prior_steps": 0, "posterior_steps": 2, "posterior_hidden": [8], "decoder": "factorized"}
    model = (colour_model(latent_channels=1, **iaf) if colour else built(**iaf)).double()
    x = colour_images(2).double() if colour else images(2).double()
    parameters = model.variational_parameters(x)
    assert parameters["context"].shape == parameters["loc"].shape == (2, 64 if colour else 4)
    q = model.variational_family(parameters)
    z0 = q.base_dist.sample((2,))
    z = z0
    for step in q.transforms:
        z = step(z)
    log_q = q.log_prob(z)
    base = q.base_dist.log_prob(z0)
    for i in range(2):
        steps = model._iaf_steps({"context": parameters["context"][i : i + 1]})

        def flow(v, steps=steps):
            out = v[None]
            for step in steps:
                out = step(out)
            return out[0]

        for s in range(2):
            log_det = torch.linalg.slogdet(torch.autograd.functional.jacobian(flow, z0[s, i])).logabsdet
            torch.testing.assert_close(log_q[s, i], base[s, i] - log_det)
    assert (z - z0).abs().max() > 1e-3  # the steps move z
    other = model._iaf_steps({"context": parameters["context"].flip(0)})
    assert not torch.allclose(other[0](z0), q.transforms[0](z0))  # and read the context


def test_an_iaf_posterior_needs_a_code_and_mae_refuses_one():
    with pytest.raises(ValueError, match="no code for a flow prior or posterior"):
        built(decoder="unconditional", prior_steps=0, posterior_steps=2)
    with pytest.raises(ValueError, match="MAE's regulariser compares diagonal Gaussian posteriors"):
        models.build("mae", (28, 28), {**TINY, "posterior_steps": 1}, "bernoulli")
