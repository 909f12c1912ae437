"""A gated PixelCNN (van den Oord et al., Conditional Image Generation with PixelCNN Decoders, 2016)
with a configurable receptive field, the building block of the autoregressive decoders (Chen et al.'s
Variational Lossy Autoencoder restricts it to a small window so that global structure must go
through z; Ma et al.'s MAE code mixes kernel sizes, 7 to 3, layer by layer). Not a method itself.

Two stacks, without the blind spot of plain masked convolutions: the vertical stack at (i, j) sees
only rows above i, the horizontal stack at (i, j) only the pixels left of j in row i and, through the
vertical stack, the rows above. Each of ``layers`` layers widens the window by its r = kernel // 2:
with R the sum of the layers' r, the output at (i, j) depends exactly on rows i − R − 1 .. i − 1,
columns j − R .. j + R, and on row i, columns j − R − 1 .. j − 1 (``receptive_field``). Gated
activations tanh(a) ⊙ sigmoid(b), each layer conditioned on ``condition`` feature maps (the
decoder's view of z), residual connections in the horizontal stack."""

import torch
import torch.nn.functional as F
from torch import nn


def _gate(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0))[..., :-1]


class _Above(nn.Conv2d):
    """Sees rows i − r .. i of its input, columns j − r .. j + r (padding keeps the size)."""

    def __init__(self, n_in: int, n_out: int, r: int):
        super().__init__(n_in, n_out, (r + 1, 2 * r + 1))
        self.r = r

    def forward(self, x):
        return super().forward(F.pad(x, (self.r, self.r, self.r, 0)))


class _Left(nn.Conv2d):
    """Sees columns j − r .. j of its input, in row i."""

    def __init__(self, n_in: int, n_out: int, r: int):
        super().__init__(n_in, n_out, (1, r + 1))
        self.r = r

    def forward(self, x):
        return super().forward(F.pad(x, (self.r, 0, 0, 0)))


class GatedLayer(nn.Module):
    def __init__(self, channels: int, r: int, condition_channels: int):
        super().__init__()
        self.vertical = _Above(channels, 2 * channels, r)
        self.horizontal = _Left(channels, 2 * channels, r)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.condition = nn.Conv2d(condition_channels, 4 * channels, 1) if condition_channels else None

    def forward(self, v, h, condition=None):
        v_pre = self.vertical(v)  # rows above i only: v already excludes row i
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(v_pre)
        if self.condition is not None:
            for_v, for_h = self.condition(condition).chunk(2, dim=1)
            v_pre, h_pre = v_pre + for_v, h_pre + for_h
        return _gate(v_pre), h + self.horizontal_out(_gate(h_pre))


class GatedPixelCNN(nn.Module):
    """``forward(x, condition)``: per pixel, ``outputs`` values for each of x's ``channels`` (or
    ``out_channels`` values in all) from the pixels before it in raster order (for binary images, one
    logit per pixel). The channels of one pixel are predicted together from the earlier pixels (no
    order among them: enough for binary and gray images; for colour images the PixelCNN++ mixture
    orders them, ``models.blocks.networks.discretized_logistic_mixture_log_prob``)."""

    def __init__(
        self,
        channels: int = 1,
        filters: int = 12,
        layers: int = 6,
        kernel: int | list[int] = 3,
        condition_channels: int = 0,
        outputs: int = 1,
        out_channels: int | None = None,
    ):
        super().__init__()
        kernels = [kernel] * layers if isinstance(kernel, int) else list(kernel)
        if layers < 1 or len(kernels) != layers or any(k % 2 != 1 or k < 1 for k in kernels):
            raise ValueError(
                f"kernel must be odd (or a list of one odd size per layer) and layers positive, "
                f"got kernel {kernel!r}, layers {layers!r}"
            )
        self.radii = [k // 2 for k in kernels]
        self.first_vertical = _Above(channels, filters, self.radii[0])
        self.first_horizontal = _Left(channels, filters, self.radii[0])
        self.gated = nn.ModuleList(GatedLayer(filters, r, condition_channels) for r in self.radii[1:])
        self.out_condition = nn.Conv2d(condition_channels, filters, 1) if condition_channels else None
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(filters, out_channels or channels * outputs, 1))

    def receptive_field(self) -> tuple[int, int]:
        """(rows above, half-width) of the window: rows i − rows .. i − 1 across columns j ± half-width,
        and on row i the half-width + 1 pixels to the left."""
        return sum(self.radii) + 1, sum(self.radii)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        # the first layer sees strictly above (vertical) and strictly left (horizontal) of each pixel
        v = shift_down(self.first_vertical(x))
        h = shift_right(self.first_horizontal(x)) + v
        for layer in self.gated:
            v, h = layer(v, h, condition)
        if self.out_condition is not None:  # so that even a single layer sees the condition
            h = h + self.out_condition(condition)
        return self.out(h)
