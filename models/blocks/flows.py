"""Flow building blocks shared by the methods (not methods themselves): Householder reflections
(Tomczak & Welling 2016), MADE (Germain et al. 2015) and its PixelCNN form for latent feature maps,
the inverse autoregressive flow step (Kingma et al. 2016) and the autoregressive flow step of a
prior (Chen et al. 2017), as
``torch.distributions`` transforms so that a flow posterior or prior is a ``TransformedDistribution``
of a Gaussian.

An inverse autoregressive flow computes its output from its input in one pass, but inverting it
takes one pass per dimension; like the released code of the papers, the suite never inverts it:
its step keeps its last input and output (``cache_size = 1``), so the posterior's ``log_prob`` is
exact for the posterior's own samples and raises for any other point (the metrics ask only for
the former, ``models/base.py``)."""

import torch
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from models.blocks.pixelcnn import GatedPixelCNN


class HouseholderReflection(Transform):
    """z ↦ (I − 2 v vᵀ / ‖v‖²) z for one vector ``v`` per point ([B, D], broadcast over leading
    sample dimensions of z). A reflection is its own inverse and preserves volume."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, v: torch.Tensor):
        super().__init__()
        self._unit = v / v.norm(dim=-1, keepdim=True)

    def _call(self, z):
        return z - 2 * self._unit * (z * self._unit).sum(-1, keepdim=True)

    def _inverse(self, y):
        return self._call(y)

    def log_abs_det_jacobian(self, z, y):
        return torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)


ACTIVATIONS = {"prelu": nn.PReLU, "relu": nn.ReLU}  # the VLAE code's IAF; Chen et al.'s AF prior


class MaskedLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """An autoregressive network: for an input z [..., D] (and an optional ``context`` [B, C] added to
    the first hidden layer, the encoder's features in an IAF posterior), ``outputs`` values per
    dimension, where output d depends only on the inputs that come before d in the order (1..D, or
    D..1 with ``reverse``; alternating orders between flow steps lets every dimension depend on
    every other). Hidden units get degrees 1..D−1 in turn (Germain et al. 2015), ``activation`` after each."""

    def __init__(
        self,
        dim: int,
        hidden: list[int],
        context: int = 0,
        outputs: int = 2,
        reverse: bool = False,
        activation: str = "prelu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown MADE activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        order = torch.arange(1, dim + 1)
        order = order.flip(0) if reverse else order
        degrees = [order]
        for size in hidden:
            degrees.append(torch.arange(size) % max(1, dim - 1) + 1)
        layers = []
        for previous, current in zip(degrees[:-1], degrees[1:]):
            mask = current[:, None] >= previous[None, :]
            layers += [MaskedLinear(len(previous), len(current), mask), ACTIVATIONS[activation]()]
        output_degrees = order.repeat(outputs)
        layers.append(MaskedLinear(len(degrees[-1]), dim * outputs, output_degrees[:, None] > degrees[-1][None, :]))
        self.layers = nn.ModuleList(layers)
        self.context = nn.Linear(context, hidden[0], bias=False) if context else None
        self.dim, self.outputs = dim, outputs
        self.passes = dim  # how many passes invert an autoregressive step: one per dimension

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        h = self.layers[0](z)
        if self.context is not None:
            h = h + self.context(context)
        for layer in self.layers[1:]:
            h = layer(h)
        return h.chunk(self.outputs, dim=-1)


class SpatialMADE(nn.Module):
    """MADE's role for a latent of feature maps (Chen et al.'s CIFAR-10 prior: "each step is a
    PixelCNN"): z [..., C·H·W], C maps of H × W flattened, gives ``outputs`` values per dimension, those
    of position p from the positions before p in raster order only (after p with ``reverse``). The
    C channels of one position are computed together, so an autoregressive step over it inverts in
    H · W passes (``passes``). The network is a gated PixelCNN of ``len(hidden)`` layers of
    ``hidden[0]`` feature maps, 3 × 3 kernels; ``context`` maps of the same side ([B, context·H·W],
    an IAF posterior's encoder features) condition every position at every layer."""

    def __init__(
        self, channels: int, side: int, hidden: list[int], outputs: int = 1, reverse: bool = False, context: int = 0
    ):
        super().__init__()
        if not hidden or len(set(hidden)) != 1:
            raise ValueError(f"a PixelCNN flow step's hidden layers must be one or more of one width, got {hidden!r}")
        self.pixelcnn = GatedPixelCNN(channels, hidden[0], len(hidden), 3, condition_channels=context, outputs=outputs)
        self.maps, self.context_maps = (channels, side, side), (context, side, side)
        self.dim, self.outputs, self.passes, self.reverse = channels * side * side, outputs, side * side, reverse

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        maps = z.reshape(-1, *self.maps)
        if context is not None:  # [B, ...] for every draw of z [..., B, D]
            context = context.expand(*z.shape[:-1], context.shape[-1]).reshape(-1, *self.context_maps)
        if self.reverse:  # the last position first: reversed raster order
            maps, context = maps.flip(-2, -1), None if context is None else context.flip(-2, -1)
        out = self.pixelcnn(maps, context)
        out = out.flip(-2, -1) if self.reverse else out
        return tuple(t.reshape(z.shape) for t in out.chunk(self.outputs, dim=1))


class InverseAutoregressiveStep(Transform):
    """One IAF step (Kingma et al. 2016, their numerically stable form, as in the VLAE code):
    (m, s) = MADE(z, context), σ = sigmoid(s + 1), z ↦ σ ⊙ z + (1 − σ) ⊙ m, log |det| = Σ log σ. The
    +1 starts σ near 1, each step near the identity (Kingma et al.'s "forget gate bias")."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, made: MADE, context: torch.Tensor):
        super().__init__(cache_size=1)
        self.made, self.context = made, context
        self._log_det = (None, None)  # the last input and its log |det|

    def _call(self, z):
        m, s = self.made(z, self.context)
        log_gate = nn.functional.logsigmoid(s + 1)
        gate = log_gate.exp()
        self._log_det = (z, log_gate.sum(-1))
        return gate * z + (1 - gate) * m

    def _inverse(self, y):
        raise NotImplementedError(
            "an inverse autoregressive flow is not inverted: its log_prob is defined only for its own samples"
        )

    def log_abs_det_jacobian(self, z, y):
        last_input, log_det = self._log_det
        if z is last_input:
            return log_det
        _, s = self.made(z, self.context)
        return nn.functional.logsigmoid(s + 1).sum(-1)


class AutoregressiveFlowStep(Transform):
    """One step of an autoregressive flow prior (Chen et al. 2017, "AF prior"), from noise ε to z:
    z_d = m_d(z_<d) + exp(s_d(z_<d)) ε_d, with (m, s) = MADE(z); a MADE with one output per dimension
    gives the mean-only step of Chen et al.'s binary-image experiments (s ≡ 0: volume-preserving,
    "more numerically stable"). Its density direction is parallel (ε = (z − m(z)) exp(−s(z)) in one
    pass, log |dz/dε| = Σ s(z)); sampling inverts it one dimension at a time (D passes, or one per
    position for a ``SpatialMADE``), as an AF prior does."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, made: MADE):
        super().__init__()
        self.made = made

    def _shift_and_log_scale(self, z):
        if self.made.outputs == 1:
            (m,) = self.made(z)
            return m, torch.zeros_like(m)
        return self.made(z)

    def _call(self, eps):
        z = torch.zeros_like(eps)
        for _ in range(self.made.passes):  # after pass d the first d dimensions (in MADE's order) are exact
            m, s = self._shift_and_log_scale(z)
            z = m + s.exp() * eps
        return z

    def _inverse(self, z):
        m, s = self._shift_and_log_scale(z)
        return (z - m) * torch.exp(-s)

    def log_abs_det_jacobian(self, eps, z):
        if self.made.outputs == 1:
            return torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        _, s = self.made(z)
        return s.sum(-1)
