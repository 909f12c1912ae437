"""The shared building blocks of the autoregressive methods (Chen et al. 2017, Ma et al. 2019): the
gated PixelCNN's causality and receptive field, and the autoregressive flow prior's Jacobian,
log-determinant and inverse, all against autograd; the convolutional networks' data-dependent
initialisation against the statistics it promises."""

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal, TransformedDistribution

from models.blocks import convnets
from models.blocks.flows import MADE, AutoregressiveFlowStep, SpatialMADE
from models.blocks.networks import discretized_logistic_mixture_log_prob, sample_discretized_logistic_mixture
from models.blocks.pixelcnn import GatedPixelCNN
from models.blocks.pixelcnn_pp import PixelCNNPlusPlus


def dependencies(model, size=17, at=(8, 8), condition_channels=0):
    """The set of input pixels (row, column) that output pixel ``at`` depends on, by its gradient."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    condition = torch.randn(1, condition_channels, size, size, dtype=torch.float64) if condition_channels else None
    model(x, condition)[0, 0, at[0], at[1]].backward()
    return {tuple(p) for p in (x.grad[0, 0] != 0).nonzero().tolist()}


@pytest.mark.parametrize("layers, kernel", [(1, 3), (3, 3), (2, 5), (6, 3), (4, [7, 5, 3, 3])])
def test_pixelcnn_output_depends_on_exactly_its_window_of_earlier_pixels(layers, kernel):
    torch.manual_seed(0)
    model = GatedPixelCNN(channels=1, filters=4, layers=layers, kernel=kernel).double()
    i, j = 12, 12
    rows, half = model.receptive_field()
    expected = {(a, b) for a in range(i - rows, i) for b in range(j - half, j + half + 1)}
    expected |= {(i, b) for b in range(j - half - 1, j)}
    assert dependencies(model, size=25, at=(i, j)) == expected  # nothing at or after (i, j) in raster order


def test_pixelcnn_window_grows_with_layers_and_kernel():
    small, large = GatedPixelCNN(layers=2, kernel=3), GatedPixelCNN(layers=6, kernel=3)
    assert small.receptive_field() == (3, 2) and large.receptive_field() == (7, 6)
    assert GatedPixelCNN(layers=2, kernel=5).receptive_field() == (5, 4)
    assert GatedPixelCNN(layers=7, kernel=[7, 7, 7, 5, 5, 3, 3]).receptive_field() == (16, 15)  # MAE's "small"
    with pytest.raises(ValueError, match="one odd size per layer"):
        GatedPixelCNN(layers=3, kernel=[5, 3])


def test_pixelcnn_reads_its_condition_at_every_depth():
    for layers in (1, 3):
        torch.manual_seed(0)
        model = GatedPixelCNN(filters=4, layers=layers, condition_channels=2).double()
        x = torch.randn(1, 1, 9, 9, dtype=torch.float64)
        condition = torch.randn(1, 2, 9, 9, dtype=torch.float64, requires_grad=True)
        model(x, condition)[0, 0, 4, 4].backward()
        assert condition.grad.abs().sum() > 0


@pytest.mark.parametrize("outputs", [2, 1])  # affine, and Chen et al.'s mean-only step
@pytest.mark.parametrize("reverse", [False, True])
def test_autoregressive_flow_step_is_triangular_exact_to_invert_and_its_log_determinant_matches(reverse, outputs):
    torch.manual_seed(0)
    made = MADE(5, [32, 32], reverse=reverse, outputs=outputs, activation="relu").double()
    step = AutoregressiveFlowStep(made)
    eps = torch.randn(5, dtype=torch.float64)
    z = step(eps[None])[0]
    torch.testing.assert_close(step.inv(z[None])[0], eps)  # the parallel direction undoes the sequential one
    matrix = jacobian(lambda e: step(e[None])[0], eps)  # dz/dε
    ordered = matrix.flip(0, 1) if reverse else matrix
    torch.testing.assert_close(ordered, ordered.tril())
    torch.testing.assert_close(step.log_abs_det_jacobian(eps[None], z[None])[0], torch.linalg.slogdet(matrix).logabsdet)


@pytest.mark.parametrize("outputs", [2, 1])
@pytest.mark.parametrize("reverse", [False, True])
def test_a_pixelcnn_flow_step_over_latent_maps_is_triangular_by_position_and_inverts_in_one_pass_per_position(
    reverse, outputs
):
    """z of 2 maps of 3×3: dimension (c, p) of the flow's output depends on ε at positions up to p in
    raster order (reversed with ``reverse``), on its own ε with weight exp(s), and on no other
    channel at its own position."""
    torch.manual_seed(0)
    network = SpatialMADE(channels=2, side=3, hidden=[8, 8], outputs=outputs, reverse=reverse).double()
    assert network.passes == 9 and network.dim == 18
    step = AutoregressiveFlowStep(network)
    eps = torch.randn(18, dtype=torch.float64)
    z = step(eps[None])[0]
    torch.testing.assert_close(step.inv(z[None])[0], eps)  # 9 passes, not 18, undo the parallel direction
    matrix = jacobian(lambda e: step(e[None])[0], eps).reshape(2, 9, 2, 9)  # [channel, position] × same
    if reverse:
        matrix = matrix.flip(1, 3)
    for p in range(9):
        assert matrix[:, p, :, p + 1 :].abs().sum() == 0  # nothing from later positions
        own = matrix[:, p, :, p]
        torch.testing.assert_close(own, torch.diag(own.diagonal()))  # the channels of a position: independent
    assert matrix[:, 5, :, :5].abs().max() > 0  # and something from earlier ones
    flat = matrix.flip(1, 3) if reverse else matrix
    torch.testing.assert_close(
        step.log_abs_det_jacobian(eps[None], z[None])[0], torch.linalg.slogdet(flat.reshape(18, 18)).logabsdet
    )


def logistic_mass(value, mean, scale, bins=256):
    """A discretized logistic's mass at ``value`` from scipy's logistic, written apart from the suite's."""
    from scipy.stats import logistic

    half = 0.5 / (bins - 1)
    upper = 1.0 if value > 1 - half else logistic.cdf(value + half, mean, scale)
    lower = 0.0 if value < half else logistic.cdf(value - half, mean, scale)
    return upper - lower


@pytest.mark.parametrize("colour", [(0.2, 0.7, 1.0), (0.0, 0.5, 0.2)])  # the edge bins, and inside
def test_the_logistic_mixture_is_pixelcnn_plus_plus_distribution_channel_by_channel(colour):
    """One colour pixel under a 2-component mixture, against the formula computed from scipy: the
    mixture of products over R, G, B of discretized logistics, G's mean moved by α·R, B's by β·R + γ·G."""
    torch.manual_seed(0)
    k = 2
    params = torch.randn(1, 10 * k, 1, 1, dtype=torch.float64)
    x = torch.tensor(colour, dtype=torch.float64).reshape(1, 3, 1, 1)
    got = discretized_logistic_mixture_log_prob(x, params).item()
    p = params.flatten().numpy()
    logits, means, log_scales, coeffs = p[:k], p[k : 4 * k].reshape(3, k), p[4 * k : 7 * k].reshape(3, k), p[7 * k :]
    coeffs = torch.tanh(torch.from_numpy(coeffs)).numpy().reshape(3, k)
    weights = torch.softmax(torch.from_numpy(logits), 0).numpy()
    r, g, b = colour
    total = 0.0
    for c in range(k):
        scale = [float(torch.tensor(log_scales[channel, c]).clamp(min=-7).exp()) for channel in range(3)]
        mass_r = logistic_mass(r, means[0, c], scale[0])
        mass_g = logistic_mass(g, means[1, c] + coeffs[0, c] * r, scale[1])
        mass_b = logistic_mass(b, means[2, c] + coeffs[1, c] * r + coeffs[2, c] * g, scale[2])
        total += weights[c] * mass_r * mass_g * mass_b
    assert got == pytest.approx(float(torch.tensor(total).log()), abs=1e-9)


def test_the_logistic_mixture_sums_to_one_over_every_colour_and_its_sampler_draws_from_it():
    """Every colour of one pixel on a grid of 32 levels a channel (256³ would take a minute; the code
    is the same): the probabilities add up to one, channels coupled, the edge bins open. Then the
    sampler: the frequencies of 4 levels a channel match the probabilities."""
    torch.manual_seed(1)
    k = 3  # logits, means, log-scales and coefficients: logistics about mid-grey of a trained model's width,
    # so that every level of R is drawn often and G's and B's dependence on it shows
    parts = [
        torch.randn(k),
        0.2 + 0.6 * torch.rand(3 * k),
        torch.log(0.1 + 0.1 * torch.rand(3 * k)),
        torch.randn(3 * k),
    ]
    params = torch.cat(parts).double().reshape(1, 10 * k, 1, 1)
    levels = torch.arange(32, dtype=torch.float64) / 31
    grid = torch.cartesian_prod(levels, levels, levels)
    log_p = discretized_logistic_mixture_log_prob(
        grid.reshape(-1, 3, 1, 1), params.expand(len(grid), -1, -1, -1), bins=32
    )
    assert log_p.logsumexp(0).exp().item() == pytest.approx(1.0, abs=1e-9)
    coarse = torch.linspace(0, 1, 4, dtype=torch.float64)
    grid4 = torch.cartesian_prod(coarse, coarse, coarse)
    probabilities = discretized_logistic_mixture_log_prob(
        grid4.reshape(-1, 3, 1, 1), params.expand(len(grid4), -1, -1, -1), bins=4
    ).exp()
    draws = sample_discretized_logistic_mixture(params[:, :, 0, 0].expand(100_000, -1), bins=4)
    codes = (draws * 3).round().long() @ torch.tensor([16, 4, 1])
    frequencies = torch.bincount(codes, minlength=64).double() / len(draws)
    assert (frequencies - probabilities).abs().max() < 0.01


def test_an_autoregressive_flow_prior_is_a_density_with_its_own_samples_and_any_point():
    torch.manual_seed(0)
    steps = [AutoregressiveFlowStep(MADE(3, [16], reverse=bool(t % 2)).double()) for t in range(2)]
    base = Independent(Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1)
    prior = TransformedDistribution(base, steps)
    z = prior.sample((4,))
    eps = steps[0].inv(steps[1].inv(z))
    expected = (
        base.log_prob(eps)
        - steps[1].log_abs_det_jacobian(None, z)
        - steps[0].log_abs_det_jacobian(None, steps[1].inv(z))
    )
    torch.testing.assert_close(prior.log_prob(z), expected)
    # a density: it integrates to one (a 3-D grid's Riemann sum on a box that holds nearly all its mass)
    axis = torch.linspace(-6, 6, 61, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis, axis)
    mass = prior.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 3
    assert mass.item() == pytest.approx(1.0, abs=0.03)


def test_data_dependent_init_gives_every_normalised_layer_zero_mean_unit_variance_outputs_on_its_batch():
    torch.manual_seed(0)
    encoder = convnets.ResNetEncoder28(outputs=10)
    trunk = convnets.LinearTrunk28(latent_dim=10)
    x = torch.rand(32, 28, 28).round()
    forward = lambda: trunk(encoder(x))  # noqa: E731
    convnets.data_dependent_init(torch.nn.ModuleList([encoder, trunk]), forward)
    outputs = {}
    layers = [(n, m) for n, m in [*encoder.named_modules(), *trunk.named_modules()] if convnets._is_normalised(m)]
    assert len(layers) == 11  # three blocks of three, the 4×4 convolution, the trunk's linear
    for name, layer in layers:
        layer.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
    forward()
    for name, out in outputs.items():
        per_channel = [d for d in range(out.dim()) if d != 1]
        torch.testing.assert_close(out.mean(per_channel), torch.zeros(out.shape[1]), atol=1e-4, rtol=0, msg=name)
        torch.testing.assert_close(out.std(per_channel, unbiased=False), torch.ones(out.shape[1]), atol=1e-4, rtol=0)
    assert trunk(encoder(x)).shape == (32, 4, 28, 28)


def test_the_densenet_encoder_keeps_every_earlier_map_and_has_the_layout_of_ma_et_al_s_colour_encoder():
    torch.manual_seed(0)
    block = convnets.DenseBlock(3, 15, 3)
    x = torch.randn(2, 3, 32, 32)
    out = block(x)
    assert out.shape == (2, 48, 32, 32)
    elu = torch.nn.functional.elu
    torch.testing.assert_close(out[:, :3], elu(elu(elu(x))))  # the input passes on, through each step's ELU
    encoder = convnets.DenseNetEncoder32(outputs=32)
    assert encoder(torch.rand(5, 3, 32, 32)).shape == (5, 32 * 8 * 8)

    def conv(n_in, n_out, k, normalised=True):  # weight, bias, and a weight-normalised layer's gain
        return n_in * n_out * k * k + n_out + (n_out if normalised else 0)

    def dense(n_in, growth, steps):
        return sum(conv(n_in + s * growth, 4 * growth, 1) + conv(4 * growth, growth, 3) for s in range(steps))

    layout = (
        dense(3, 15, 3)
        + conv(48, 48, 3)
        + dense(48, 16, 3)
        + conv(96, 96, 3)
        + dense(96, 16, 6)
        + conv(192, 96, 1)
        + conv(96, 32, 1, normalised=False)
    )
    assert sum(p.numel() for p in encoder.parameters()) == layout


def test_pixelcnn_plus_plus_output_depends_on_earlier_pixels_only_and_reads_its_condition():
    torch.manual_seed(0)
    model = PixelCNNPlusPlus(channels=3, filters=4, levels=3, resnets=1, condition_channels=2, out_channels=5)
    model = model.double().eval()
    # one copy of the image per output position, each copy's gradient that position's dependencies
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64).expand(64, -1, -1, -1).clone().requires_grad_()
    condition = torch.randn(1, 2, 8, 8, dtype=torch.float64).expand(64, -1, -1, -1).clone().requires_grad_()
    out = model(x, condition)
    out[torch.arange(64), :, torch.arange(64) // 8, torch.arange(64) % 8].sum().backward()
    for position in range(64):  # every position, at three resolutions: the strided and transposed layers too
        i, j = divmod(position, 8)
        seen = {tuple(p) for p in (x.grad[position].abs().sum(0) != 0).nonzero().tolist()}
        assert all(a * 8 + b < position for a, b in seen), (i, j)  # nothing at or after (i, j), in any channel
        assert (i, j - 1) in seen if j else True
        assert (i - 1, j) in seen if i else True
        assert condition.grad[position].abs().sum() > 0
    with pytest.raises(ValueError, match="3 levels halve the size 2 times: not 6×6"):
        model(torch.rand(1, 3, 6, 6, dtype=torch.float64))
