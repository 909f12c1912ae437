"""The shared building blocks of the autoregressive methods (Chen et al. 2017, Ma et al. 2019): the
gated PixelCNN's causality and receptive field, and the autoregressive flow prior's Jacobian,
log-determinant and inverse, all against autograd; the convolutional networks' data-dependent
initialisation against the statistics it promises."""

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Independent, Normal, TransformedDistribution

from models import convnets
from models.flows import MADE, AutoregressiveFlowStep
from models.pixelcnn import GatedPixelCNN


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
