"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma, ICLR 2017) as a decoder network, the building block
of the colour decoders of Ma et al.'s MAE code (``pixelcnn++_color_32x32``) and of Chen et al.'s
CIFAR-10 VLAE; not a method itself. ``forward(x, condition)`` has ``models.blocks.pixelcnn.GatedPixelCNN``'s
interface: per pixel, ``out_channels`` values from the pixels before it in raster order, and from
``condition`` feature maps (the decoder's view of z) at the image's size.

Two streams without a blind spot: ``above`` at (i, j) sees rows above i (convolutions shifted down,
2×3), ``above_left`` also the pixels left of j in row i (shifted down and right, 2×2). ``levels``
resolutions, each halving the last (32 → 16 → 8 by strided shifted convolutions), with ``resnets`` gated
residual blocks per level on the way down in size, and on the way back up (transposed shifted
convolutions) ``resnets`` at the first level and ``resnets`` + 1 at each later one, every block of the
second pass reading the first pass's output at its depth (the U-net's skip connections). A gated
residual block: c = conv(concat_elu(x)) (+ a 1×1 map of concat_elu of the skip input), concat_elu,
dropout, conv to 2C, + a 1×1 map of the condition, x + a · sigmoid(b).
concat_elu(x) = ELU([x, −x]). The input carries a channel of ones, so that the zero padding of the
shifted convolutions is told apart from black pixels (as the paper's code does). The layers are
weight-normalised (initialised from data by ``models.blocks.convnets.data_dependent_init``), the output
layer excepted.

The suite's choice where the decoder is conditioned on feature maps (the paper's PixelCNN++ is
unconditional or class-conditional): each block adds a 1×1 convolution of the condition, averaged
down to its level's size."""

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks.convnets import normalised
from models.blocks.pixelcnn import shift_down, shift_right


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], 1))


class _DownShifted(nn.Conv2d):
    """A (height × width) convolution at (i, j) over rows i − height + 1 .. i and the columns centred
    on j; with stride 2 it halves the size."""

    def __init__(self, n_in: int, n_out: int, kernel=(2, 3), stride: int = 1):
        super().__init__(n_in, n_out, kernel, stride)
        height, width = kernel
        self.padding_sizes = ((width - 1) // 2, (width - 1) // 2, height - 1, 0)

    def forward(self, x):
        return super().forward(F.pad(x, self.padding_sizes))


class _DownRightShifted(nn.Conv2d):
    """A (height × width) convolution at (i, j) over rows i − height + 1 .. i, columns j − width + 1 .. j."""

    def __init__(self, n_in: int, n_out: int, kernel=(2, 2), stride: int = 1):
        super().__init__(n_in, n_out, kernel, stride)
        height, width = kernel
        self.padding_sizes = (width - 1, 0, height - 1, 0)

    def forward(self, x):
        return super().forward(F.pad(x, self.padding_sizes))


class _DownShiftedUp(nn.ConvTranspose2d):
    """Doubles the size: coarse row i reaches fine rows 2i and 2i + 1, columns 2j − 1 .. 2j + 1."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, (2, 3), 2)

    def forward(self, x):
        return super().forward(x)[..., 1:]  # its 2W + 1 columns, the first (column −1) dropped


class _DownRightShiftedUp(nn.ConvTranspose2d):
    """Doubles the size: coarse (i, j) reaches fine rows 2i, 2i + 1 and columns 2j, 2j + 1."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, (2, 2), 2)


class GatedResidualBlock(nn.Module):
    def __init__(self, conv, channels: int, skip_channels: int, condition_channels: int, dropout: float):
        super().__init__()
        self.first = normalised(conv(2 * channels, channels))
        self.skip = normalised(nn.Conv2d(2 * skip_channels, channels, 1)) if skip_channels else None
        self.dropout = nn.Dropout(dropout)
        self.second = normalised(conv(2 * channels, 2 * channels))
        self.condition = normalised(nn.Conv2d(condition_channels, 2 * channels, 1)) if condition_channels else None

    def forward(self, x, skip=None, condition=None):
        c = self.first(concat_elu(x))
        if self.skip is not None:
            c = c + self.skip(concat_elu(skip))
        c = self.second(self.dropout(concat_elu(c)))
        if self.condition is not None:
            c = c + self.condition(condition)
        a, b = c.chunk(2, 1)
        return x + a * torch.sigmoid(b)


class PixelCNNPlusPlus(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        filters: int = 96,
        levels: int = 3,
        resnets: int = 6,
        condition_channels: int = 0,
        out_channels: int = 100,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not (isinstance(levels, int) and levels >= 1 and isinstance(resnets, int) and resnets >= 1):
            raise ValueError(f"levels and resnets must be positive integers, got {levels!r} and {resnets!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        c, cond = filters, condition_channels
        self.levels = levels
        self.first_above = normalised(_DownShifted(channels + 1, c, (2, 3)))
        self.first_above_left = normalised(_DownShifted(channels + 1, c, (1, 3)))
        self.first_left = normalised(_DownRightShifted(channels + 1, c, (2, 1)))
        block = lambda conv, skip: GatedResidualBlock(conv, c, skip, cond, dropout)  # noqa: E731
        self.shrinking_above = nn.ModuleList(
            nn.ModuleList(block(_DownShifted, 0) for _ in range(resnets)) for _ in range(levels)
        )
        self.shrinking_above_left = nn.ModuleList(
            nn.ModuleList(block(_DownRightShifted, c) for _ in range(resnets)) for _ in range(levels)
        )
        self.halve_above = nn.ModuleList(normalised(_DownShifted(c, c, (2, 3), 2)) for _ in range(levels - 1))
        self.halve_above_left = nn.ModuleList(normalised(_DownRightShifted(c, c, (2, 2), 2)) for _ in range(levels - 1))
        # back up in size: the first level back has resnets blocks, the others resnets + 1
        counts = [resnets] + [resnets + 1] * (levels - 1)
        self.growing_above = nn.ModuleList(nn.ModuleList(block(_DownShifted, c) for _ in range(n)) for n in counts)
        self.growing_above_left = nn.ModuleList(
            nn.ModuleList(block(_DownRightShifted, 2 * c) for _ in range(n)) for n in counts
        )
        self.double_above = nn.ModuleList(normalised(_DownShiftedUp(c)) for _ in range(levels - 1))
        self.double_above_left = nn.ModuleList(normalised(_DownRightShiftedUp(c)) for _ in range(levels - 1))
        self.out = nn.Conv2d(c, out_channels, 1)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 2 ** (self.levels - 1) or width % 2 ** (self.levels - 1):
            raise ValueError(f"{self.levels} levels halve the size {self.levels - 1} times: not {height}×{width}")
        x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        # the condition at each level's size (a pool of 1 keeps it as it is)
        conditions = [None if condition is None else F.avg_pool2d(condition, 2**level) for level in range(self.levels)]
        above = [shift_down(self.first_above(x))]
        above_left = [shift_down(self.first_above_left(x)) + shift_right(self.first_left(x))]
        for level in range(self.levels):  # down in size, keeping every output for the way back
            if level:
                above.append(self.halve_above[level - 1](above[-1]))
                above_left.append(self.halve_above_left[level - 1](above_left[-1]))
            for block_above, block_above_left in zip(self.shrinking_above[level], self.shrinking_above_left[level]):
                above.append(block_above(above[-1], condition=conditions[level]))
                above_left.append(block_above_left(above_left[-1], above[-1], conditions[level]))
        u, ul = above.pop(), above_left.pop()
        for k, level in enumerate(reversed(range(self.levels))):  # back up in size, reading them in reverse
            if k:
                u, ul = self.double_above[k - 1](u), self.double_above_left[k - 1](ul)
            for block_above, block_above_left in zip(self.growing_above[k], self.growing_above_left[k]):
                u = block_above(u, above.pop(), conditions[level])
                ul = block_above_left(ul, torch.cat([u, above_left.pop()], 1), conditions[level])
        return self.out(F.elu(ul))
