"""Convolutional building blocks shared by the methods on 28×28 binary and 32×32 colour images (not
methods themselves): weight-normalised layers with data-dependent initialisation (Salimans & Kingma 2016),
the ResNet encoder of the Variational Lossy Autoencoder (Chen et al. 2017, "the ResNet VAE of the IAF
paper"), in the layout of the closest open implementation (Ma et al.'s ``resnet_binary_28x28``, whose
docstring cites Chen et al.), and that implementation's decoder trunk, the feature maps of z that a
PixelCNN decoder is conditioned on; for colour images, the ResNet VLAE's encoder of Chen et al.'s
CIFAR-10 experiment and its mirror as the trunk, and their DenseNet VLAE's encoder (Ma et al.'s
colour encoder).

Data-dependent initialisation: ``data_dependent_init(model, forward)`` runs ``forward`` once; each
weight-normalised layer, in the order the pass reaches it, rescales its gain and sets its bias so that
its outputs over that batch have mean 0 and variance 1 per channel, and passes those normalised
outputs on, so that the next layer is initialised on what it will see."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _out_dim(layer: nn.Module) -> int:
    """The weight's dimension that indexes output channels: a transposed convolution's is [in, out, ...]."""
    return 1 if isinstance(layer, nn.ConvTranspose2d) else 0


def normalised(layer: nn.Linear | nn.Conv2d | nn.ConvTranspose2d) -> nn.Module:
    """``layer`` (with a bias) with its weight as g · v / ‖v‖."""
    return weight_norm(layer, dim=_out_dim(layer))


def _is_normalised(module: nn.Module) -> bool:
    return hasattr(module, "parametrizations") and "weight" in module.parametrizations


def _normalise_outputs(module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
    channel_dim = 1  # Linear [B, C], convolutions [B, C, H, W]
    reduce = [d for d in range(output.dim()) if d != channel_dim]
    mean = output.mean(reduce)
    std = output.std(reduce, unbiased=False).clamp_min(1e-6)
    gain = module.parametrizations.weight.original0  # g, shaped to broadcast over the weight
    shape = [1] * gain.dim()
    shape[_out_dim(module)] = -1
    with torch.no_grad():
        gain.div_(std.reshape(shape))
        module.bias.sub_(mean).div_(std)
    view = [1] * output.dim()
    view[channel_dim] = -1
    return (output - mean.reshape(view)) / std.reshape(view)


def data_dependent_init(model: nn.Module, forward: Callable[[], object]) -> None:
    """Initialise every weight-normalised layer of ``model`` from one call of ``forward`` (no gradient)."""
    hooks = [m.register_forward_hook(_normalise_outputs) for m in model.modules() if _is_normalised(m)]
    try:
        with torch.no_grad():
            forward()
    finally:
        for hook in hooks:
            hook.remove()


class ResidualBlock(nn.Module):
    """ELU(shortcut(x) + conv(ELU(conv(x)))), 3×3 convolutions; with ``stride`` 2 the first convolution
    and a 1×1 shortcut halve the size (rounding up: 7 → 4)."""

    def __init__(self, n_in: int, n_out: int, stride: int = 1):
        super().__init__()
        self.first = normalised(nn.Conv2d(n_in, n_out, 3, stride, 1))
        self.second = normalised(nn.Conv2d(n_out, n_out, 3, 1, 1))
        self.shortcut = normalised(nn.Conv2d(n_in, n_out, 1, stride)) if stride != 1 or n_in != n_out else nn.Identity()

    def forward(self, x):
        return F.elu(self.shortcut(x) + self.second(F.elu(self.first(x))))


class ResNetEncoder28(nn.Module):
    """28×28 images → ``outputs`` values: residual blocks of ``channels`` each halving the size
    (28 → 14 → 7 → 4), a 4×4 convolution to ``hidden`` units, ELU, a linear layer (not normalised)."""

    def __init__(self, outputs: int, channels: tuple[int, ...] = (32, 64, 64), hidden: int = 512, in_channels: int = 1):
        super().__init__()
        sizes = [in_channels, *channels]
        self.blocks = nn.Sequential(*(ResidualBlock(a, b, 2) for a, b in zip(sizes[:-1], sizes[1:])))
        self.to_hidden = normalised(nn.Conv2d(channels[-1], hidden, 4))
        # q's parameters come from a plain layer: initialised from data, they would start with unit
        # spread over the batch and a gain so large that one Adam step took log-scales to -25 (seen
        # under MAE's regulariser, whose gradient moves them all one way)
        self.out = nn.Linear(hidden, outputs)

    def forward(self, x):
        x = x.reshape(-1, 1, 28, 28) if x.dim() < 4 else x
        return self.out(F.elu(self.to_hidden(self.blocks(x)).flatten(1)))


class LinearTrunk28(nn.Module):
    """z [N, D] → ELU(linear) feature maps [N, ``channels``, 28, 28], what the PixelCNN is conditioned on
    (Ma et al.'s ``pixelcnn_binary_28x28`` trunk)."""

    def __init__(self, latent_dim: int, channels: int = 4):
        super().__init__()
        self.linear = normalised(nn.Linear(latent_dim, channels * 28 * 28))
        self.channels = channels

    def forward(self, z):
        return F.elu(self.linear(z)).reshape(-1, self.channels, 28, 28)


class ResNetEncoder32(nn.Module):
    """32×32 colour images → ``outputs`` feature maps of 8×8, flattened (Chen et al., App. B, the ResNet
    VLAE's encoder): a 3×3 convolution to ``channels[0]`` maps, 2 residual blocks at 32×32, a strided
    convolution, 2 blocks at 16×16 of ``channels[1]``, a strided convolution, 3 blocks at 8×8, a 1×1
    convolution (not normalised: q's parameters, as ``ResNetEncoder28``'s output layer)."""

    def __init__(self, outputs: int, channels: tuple[int, int] = (48, 96)):
        super().__init__()
        wide, deep = channels
        self.net = nn.Sequential(
            normalised(nn.Conv2d(3, wide, 3, 1, 1)),
            nn.ELU(),
            *(ResidualBlock(wide, wide) for _ in range(2)),
            normalised(nn.Conv2d(wide, deep, 3, 2, 1)),
            nn.ELU(),
            *(ResidualBlock(deep, deep) for _ in range(2)),
            normalised(nn.Conv2d(deep, deep, 3, 2, 1)),
            nn.ELU(),
            *(ResidualBlock(deep, deep) for _ in range(3)),
            nn.Conv2d(deep, outputs, 1),
        )

    def forward(self, x):
        return self.net(x.reshape(-1, 3, 32, 32)).flatten(1)


class DenseBlock(nn.Module):
    """``steps`` densely connected steps: each appends ``growth`` maps, a 3×3 convolution of 4 · growth
    1×1 features (ELU between) of everything so far, and applies ELU to the whole concatenation, as
    the MAE code's DenseNet block; ``n_in`` + steps · growth maps out, at the input's size."""

    def __init__(self, n_in: int, growth: int, steps: int):
        super().__init__()
        self.steps = nn.ModuleList(
            nn.Sequential(
                normalised(nn.Conv2d(n_in + s * growth, 4 * growth, 1)),
                nn.ELU(),
                normalised(nn.Conv2d(4 * growth, growth, 3, 1, 1)),
            )
            for s in range(steps)
        )
        self.channels = n_in + steps * growth

    def forward(self, x):
        for step in self.steps:
            x = F.elu(torch.cat([x, step(x)], 1))
        return x


class DenseNetEncoder32(nn.Module):
    """32×32 colour images → ``outputs`` feature maps of 8×8, flattened: Chen et al.'s DenseNet VLAE
    encoder (Table 5; "each pair of ResNet blocks replaced by one 3-step DenseNet block") in the layout
    of Ma et al.'s ``densenet_color_32x32``: dense blocks of 3 steps growing by 15 at 32×32 (3 → 48
    maps), 3 by 16 at 16×16 (48 → 96) and 6 by 16 at 8×8 (96 → 192), a strided 3×3 convolution between
    them, a 1×1 convolution to 96 maps, and a 1×1 convolution out (not normalised, as
    ``ResNetEncoder32``'s)."""

    def __init__(self, outputs: int):
        super().__init__()
        first, second, third = DenseBlock(3, 15, 3), DenseBlock(48, 16, 3), DenseBlock(96, 16, 6)
        self.net = nn.Sequential(
            first,
            normalised(nn.Conv2d(first.channels, first.channels, 3, 2, 1)),
            nn.ELU(),
            second,
            normalised(nn.Conv2d(second.channels, second.channels, 3, 2, 1)),
            nn.ELU(),
            third,
            normalised(nn.Conv2d(third.channels, 96, 1)),
            nn.ELU(),
            nn.Conv2d(96, outputs, 1),
        )

    def forward(self, x):
        return self.net(x.reshape(-1, 3, 32, 32)).flatten(1)


class ResNetTrunk32(nn.Module):
    """z [N, C·8·8] (C maps of 8×8) → ELU feature maps [N, ``channels[0]``, 32, 32], the mirror of
    ``ResNetEncoder32``: what a colour PixelCNN decoder is conditioned on."""

    def __init__(self, latent_channels: int, channels: tuple[int, int] = (48, 96)):
        super().__init__()
        wide, deep = channels
        self.net = nn.Sequential(
            normalised(nn.Conv2d(latent_channels, deep, 1)),
            nn.ELU(),
            *(ResidualBlock(deep, deep) for _ in range(3)),
            normalised(nn.ConvTranspose2d(deep, deep, 4, 2, 1)),
            nn.ELU(),
            *(ResidualBlock(deep, deep) for _ in range(2)),
            normalised(nn.ConvTranspose2d(deep, wide, 4, 2, 1)),
            nn.ELU(),
            *(ResidualBlock(wide, wide) for _ in range(2)),
        )
        self.latent_channels, self.channels = latent_channels, wide

    def forward(self, z):
        return self.net(z.reshape(-1, self.latent_channels, 8, 8))
