"""The Variational Ladder Autoencoder (Zhao, Song & Ermon 2017) against what it must be: every latent
layer reaches the image, lower layers only through their gated injections (the depth of each is
where its gate is), the code's KL warm-up, and a KL and active units per layer from the harness; and
the Markov-chain hierarchical VAE it argues against, whose prior and posterior are chains of
Gaussians: a density that integrates to one, and the sum of its conditionals."""

import math

import pytest
import torch
from images28 import assert_trains_and_evaluates, images

import models
from benchmarks import metrics, specs

SMALL = {"latent_dims": [2, 2, 2], "hidden": 32, "channels": [4, 8]}


def built(**hyper):
    torch.manual_seed(0)
    return models.build("vladder", (28, 28), {**SMALL, **hyper}, "bernoulli")


def reached(model, z):
    """Which layers of z the generated image depends on (by the gradient of its logits)."""
    z = z.clone().requires_grad_()
    model.decode(z).sum().backward()
    return {f"layer{layer}" for layer, g in enumerate(z.grad.split(model.latent_dims, -1)) if g.abs().sum() > 0}


def test_every_layer_reaches_the_image_and_the_lower_ones_only_through_their_gates():
    model = built()
    z = torch.randn(5, 6)
    assert reached(model, z) == {"layer0", "layer1", "layer2"}
    with torch.no_grad():
        for gate in model.gates:
            gate.zero_()
    assert reached(model, z) == {"layer2"}  # the top enters first, through every generator layer
    for layer in (0, 1):
        with torch.no_grad():
            model.gates[layer].fill_(0.1)
        assert f"layer{layer}" in reached(model, z)
        with torch.no_grad():
            model.gates[layer].zero_()


def test_each_layer_is_injected_at_the_codes_depth():
    """Weight layers between where z_l enters and the pixels, in the order a forward pass calls them:
    the code's MNIST generator has three for z_0 (FC, two transposed convolutions), three more for z_1
    and three more for the top (FC 1024 ×2, FC 1024)."""
    model = built()
    called = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.ConvTranspose2d)):
            module.register_forward_hook(lambda m, _i, _o: called.append(m))
    model.decode(torch.randn(1, 6))
    entries = [0] + [called.index(inject) for inject in reversed(model.inject)]  # top, layer1, layer0
    depths = {f"layer{2 - k}": sum(m not in list(model.inject) for m in called[at:]) for k, at in enumerate(entries)}
    assert depths == {"layer2": 9, "layer1": 6, "layer0": 3}


def test_each_layers_traversal_is_a_grid_that_varies_only_that_layer_and_is_identical_for_a_seed():
    model = built(latent_dims=[1, 2, 3]).eval()
    decoded = []
    original = model.decode
    model.decode = lambda z: decoded.append(z) or original(z)
    grids = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.no_grad():
            grids.append(model.image_grids())
    assert {name: tuple(g.shape) for name, g in grids[0].items()} == {
        "traversal_layer0": (1, 8, 1, 28, 28),  # a one-dimensional layer: one row
        "traversal_layer1": (8, 8, 1, 28, 28),
        "traversal_layer2": (8, 8, 1, 28, 28),
    }
    assert all(torch.equal(grids[0][name], grids[1][name]) for name in grids[0])
    assert not torch.equal(grids[0]["traversal_layer2"], grids[2]["traversal_layer2"])  # other held draws
    for layer, z in enumerate(decoded[:3]):  # the first seed's latents: only the traversed layer moves
        moving = {k for k, block in enumerate(z.flatten(0, 1).split([1, 2, 3], -1)) if (block != block[0]).any()}
        assert moving == {layer}
    assert (grids[0]["traversal_layer1"].std((0, 1)) > 0).any()  # and the images change with it


def test_the_kl_weight_warms_up_as_the_code_does_one_training_step_at_a_time():
    model = built(warmup_steps=10)
    x = images(8)
    weights = []
    for _ in range(3):
        weights.append(model.kl_weight().item())
        model.loss(x)
    assert weights == pytest.approx([1 - math.exp(-k / 10) for k in range(3)])
    model.eval()
    model.loss(x)  # evaluation does not move the clock
    assert int(model.steps) == 3
    torch.manual_seed(1)
    loss, logged = built(warmup_steps=0).loss(x)
    assert loss.item() == pytest.approx(-logged["elbo"].item(), rel=1e-6)  # no warm-up: the ELBO


def test_the_kl_comes_per_layer_and_adds_up():
    model = built()
    result = metrics.density_metrics(model, images(10), samples=20)
    per_dim = torch.tensor(result["kl"]["per_dim"])
    parts = {name: per_dim[where].sum().item() for name, where in metrics.part_slices(model.latent_parts()).items()}
    assert set(parts) == {"layer0", "layer1", "layer2"}
    assert sum(parts.values()) == pytest.approx(result["kl"]["value"], rel=1e-5)


def test_the_chains_prior_is_a_density_and_its_log_prob_sums_the_conditionals():
    torch.manual_seed(0)
    chain = models.build("hvae_chain", (64,), {"latent_dims": [1, 1], "hidden": 8}, "bernoulli").double()
    axis = torch.linspace(-8, 8, 321, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # (z_0, z_1)
    with torch.no_grad():
        mass = chain.prior().log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2
        assert mass.item() == pytest.approx(1.0, abs=1e-3)
        x = torch.rand(3, 64, dtype=torch.float64).round()
        q = chain.posterior(x)
        z = q.sample((5,))  # [5, 3, 2]
        first = chain.variational_parameters(x)
        up_loc, up_log_scale = chain.up[0](z[..., :1])
        normal = lambda v, loc, log_scale: torch.distributions.Normal(loc, log_scale.exp()).log_prob(v).sum(-1)
        by_hand = normal(z[..., :1], first["loc"], first["log_scale"]) + normal(z[..., 1:], up_loc, up_log_scale)
        torch.testing.assert_close(q.log_prob(z), by_hand)


def test_the_chains_kl_per_layer_is_its_conditionals_share_and_adds_up_to_its_kl():
    torch.manual_seed(0)
    chain = models.build("hvae_chain", (28, 28), {"latent_dims": [1, 2, 3], "hidden": 16}, "bernoulli")
    kl = metrics.density_metrics(chain, images(6), samples=50, parts=chain.latent_parts())["kl"]
    assert set(kl["parts"]) == {"layer0", "layer1", "layer2"} and kl["parts_estimator"]["name"] == "monte_carlo"
    assert sum(kl["parts"].values()) == pytest.approx(kl["value"], rel=1e-5)
    # each layer's share is its own conditionals': with q(z_2 | z_1) made N(0, I), p(z_2)'s, it is 0
    # (the scale's raw output at logit(0.999): sigmoid + 0.001 = 1)
    with torch.no_grad():
        chain.up[-1].net[-1].weight.zero_()
        chain.up[-1].net[-1].bias.zero_()
        chain.up[-1].net[-1].bias[3:] = torch.logit(torch.tensor(0.999))
    kl = metrics.density_metrics(chain, images(6), samples=50, parts=chain.latent_parts())["kl"]
    assert kl["parts"]["layer2"] == pytest.approx(0, abs=1e-6) and kl["parts"]["layer1"] > 0.01


@pytest.mark.parametrize("raw", [-1e4, 1e4])
def test_the_chains_scales_are_bounded_as_the_ladders_so_its_loss_stays_finite(raw):
    """Every Gaussian of the chain but its top prior has the ladder's sigmoid + 0.001 scale: however far
    its networks push it (as a diverging run's did), its loss stays finite."""
    torch.manual_seed(0)
    chain = models.build("hvae_chain", (28, 28), {"latent_dims": [2, 2, 2], "hidden": 16}, "bernoulli")
    with torch.no_grad():
        for net in [chain.encoder, *(c.net for c in (*chain.up, *chain.down))]:
            net[-1].bias[net[-1].out_features // 2 :] = raw
    scale = chain.variational_parameters(images(4))["log_scale"].exp()
    assert 0.999e-3 < scale.min() and scale.max() < 1.0011  # (0.001, 1.001), up to float32 rounding
    loss, _ = chain.loss(images(4))
    assert torch.isfinite(loss)


LADDER_SMALL = """
[training]
batch_size = 20
learning_rate = 2e-4
epochs = 2

[datasets.mnist]

[methods.vladder]
model = "vladder"
hyper = { latent_dims = [2, 2, 2], hidden = 32, channels = [4, 8], warmup_steps = 2 }

[methods.hvae_chain]
model = "hvae_chain"
hyper = { latent_dims = [2, 2, 2], hidden = 32 }
"""


@pytest.mark.parametrize("method", ["vladder", "hvae_chain"])
def test_each_method_trains_and_every_metric_group_evaluates_through_the_harness(tmp_path, monkeypatch, method):
    assert_trains_and_evaluates(tmp_path, monkeypatch, LADDER_SMALL, method, "mnist")


def test_the_spec_loads_with_nothing_reported_and_its_claims_compare_layers():
    paper = specs.load_paper("zhao2017ladder")
    assert paper.methods["vladder"].hyper["latent_dims"] == [2, 2, 2] and paper.training["learning_rate"] == 2e-4
    assert paper.methods["hvae_chain"].hyper["latent_dims"] == [2, 2, 2] and len(paper.claims) == 5
    assert all(r.value is None for r in paper.reported)
    top_against_bottom = paper.claims[0]
    assert (top_against_bottom.metric, top_against_bottom.than_metric) == ("probe_acc[layer2]", "probe_acc[layer0]")


@pytest.mark.parametrize("method", ["vladder", "hvae_chain"])
@pytest.mark.parametrize(
    "dataset, shape, latent_dims",
    [("svhn", (3, 32, 32), [5, 5, 5, 10]), ("celeba", (3, 64, 64), [10, 10, 10, 10])],
)
def test_on_colour_images_each_method_takes_the_codes_four_layers(method, dataset, shape, latent_dims):
    paper = specs.load_paper("zhao2017ladder")
    colour = specs.resolve(paper, method, dataset, specs.budget("smoke"), 0)
    mnist = specs.resolve(paper, method, "mnist", specs.budget("smoke"), 0)
    assert colour["hyper"]["latent_dims"] == latent_dims and mnist["hyper"]["latent_dims"] == [2, 2, 2]
    assert colour["dataset_options"]["likelihood"] == "gaussian"
    assert colour["dataset_options"].get("extra", "only") == "only"  # SVHN: the code trains on extra_32x32
    model = models.build(method, shape, colour["hyper"], "gaussian")
    assert model.latent_parts() == {f"layer{layer}": size for layer, size in enumerate(latent_dims)}
    x = torch.rand(2, *shape)
    loss, _ = model.loss(x)
    assert torch.isfinite(loss) and model.mean_image(model.posterior(x).sample()).shape == (2, math.prod(shape))


def test_on_celeba_the_ladder_halves_the_image_once_per_channel_entry():
    """64×64 faces through four strided convolutions to 4×4, and back through four transposed ones."""
    torch.manual_seed(0)
    model = models.build("vladder", (3, 64, 64), {**SMALL, "channels": [4, 8, 8, 16], "latent_dims": [3, 3, 3, 3]})
    feature_maps = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.register_forward_hook(lambda m, _i, out: feature_maps.append((type(m).__name__, out.shape[-1])))
    x = torch.rand(2, 3, 64, 64)
    model.decode(model.posterior(x).sample())
    encoder = [side for kind, side in feature_maps if kind == "Conv2d"]
    assert encoder == [32, 16, 8, 4] * 2  # the bottom head and the first climb, each down to 4×4
    assert [side for kind, side in feature_maps if kind == "ConvTranspose2d"] == [8, 16, 32, 64]
    with pytest.raises(ValueError, match="channels must list the strided convolutions"):
        models.build("vladder", (28, 28), {**SMALL, "channels": [4, 8, 16]})
