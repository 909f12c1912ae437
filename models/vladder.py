"""Variational Ladder Autoencoder (Zhao, Song & Ermon, ICML 2017), the MNIST configuration of the
official code (``ermongroup/Variational-Ladder-Autoencoder``, ``vladder_small.py``): L latent layers
z_0 (lowest) .. z_{L−1} (top) with flat N(0, I) priors. Inference climbs a ladder: h_0 = x,
h_{l+1} = g_l(h_l), and q(z_l|x) = N(μ_l(h_l), σ_l(h_l)), σ = sigmoid(·) + 0.001. Generation descends
it: the top layer passes through the most layers, u = f_top(z_top), and each lower z_l is injected
one depth closer to the pixels by a gated add, u ← f_l(u + g_l ⊙ W_l z_l) with the gate g_l started
at 0.1, so that the higher a layer, the more abstract what it can express.

Layer l of the latent is the part ``layer<l>`` (layer0 enters last, closest to the pixels): KL,
active units and clustering come per layer. The networks take 28×28 grey images (the code's MNIST),
32×32 colour ones (SVHN: the same layers with three channels; the code's SVHN model is deeper) or
64×64 colour ones (CelebA: one more strided convolution per entry of ``channels``; the code's CelebA
model is a deeper convolutional ladder), with any of the suite's pixel likelihoods.

Where the suite departs from the code: the decoder gives the pixel likelihood's parameters (Bernoulli
logits for binary images) and training maximises the ELBO (the code's reconstruction term is a
weighted L1 error, not a likelihood, so it could not be compared), with the code's KL warm-up, weight
1 − exp(−step / ``warmup_steps``); no batch normalisation (the code normalises every layer; here a
likelihood must not depend on the batch); PyTorch's default initialisation (the code draws
N(0, 0.02))."""

import math

import torch
from torch import nn
from torch.distributions import Normal

from models import register
from models.base import LatentVariableModel
from models.blocks.networks import (
    PixelLikelihood,
    diagonal_gaussian,
    diagonal_gaussian_rsample,
    sigmoid_log_scale,
    standard_normal,
    standard_normal_kl,
)


def _convolutions(image_channels: int, channels: list[int]) -> nn.Sequential:
    """H×W → H/2×W/2 → ... → H/2^k×W/2^k, one strided 4×4 convolution per entry of ``channels``
    (k of them), leaky ReLU, flattened."""
    layers = []
    for n_in, n_out in zip([image_channels, *channels], channels):
        layers += [nn.Conv2d(n_in, n_out, 4, 2, 1), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers, nn.Flatten())


def _transposed_convolutions(channels: list[int], image_channels: int) -> list[nn.Module]:
    """The mirror of ``_convolutions``: H/2^k×W/2^k → H×W, the last layer linear."""
    layers = []
    for n_in, n_out in zip(channels[::-1], channels[-2::-1]):
        layers += [nn.ConvTranspose2d(n_in, n_out, 4, 2, 1), nn.LeakyReLU(0.1)]
    return [*layers, nn.ConvTranspose2d(channels[0], image_channels, 4, 2, 1)]


def _dense(n_in: int, n_out: int, hidden: int, activation=lambda: nn.LeakyReLU(0.1)) -> nn.Sequential:
    """Two hidden layers of ``hidden`` units, then a linear layer to ``n_out``."""
    return nn.Sequential(
        nn.Linear(n_in, hidden), activation(), nn.Linear(hidden, hidden), activation(), nn.Linear(hidden, n_out)
    )


@register("vladder")
class VariationalLadderAutoencoder(LatentVariableModel):
    image_shapes = ((1, 28, 28), (28, 28), (3, 32, 32), (3, 64, 64))
    likelihoods = PixelLikelihood.FAMILIES
    TRAVERSAL_STEPS = 8

    def __init__(
        self,
        data_shape,
        likelihood="bernoulli",
        latent_dims=(2, 2, 2),
        hidden=1024,
        channels=(64, 128),
        warmup_steps=2000,
    ):
        super().__init__()
        latent_dims, channels = list(latent_dims), list(channels)
        if tuple(data_shape) not in self.image_shapes:
            raise ValueError(
                f"{self.key}'s networks are for 28×28 grey or 32×32 and 64×64 colour images, not {tuple(data_shape)}"
            )
        if not channels or data_shape[-1] % 2 ** len(channels):
            raise ValueError(
                f"channels must list the strided convolutions, one halving per entry, that "
                f"{data_shape[-2]}×{data_shape[-1]} images allow; got {channels!r}"
            )
        if len(latent_dims) < 2 or not all(isinstance(d, int) and d >= 1 for d in latent_dims):
            raise ValueError(f"latent_dims must list at least two positive sizes, bottom first; got {latent_dims!r}")
        if not warmup_steps >= 0:
            raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps!r}")
        self.image = (1, *data_shape[-2:]) if len(data_shape) == 2 else tuple(data_shape)  # (C, H, W)
        c, height, width = self.image
        side = 2 ** len(channels)  # what the convolutions divide the image's side by
        features = channels[-1] * (height // side) * (width // side)
        # inference: h_1 = g_0(x) (convolutions, then linear), h_{l+1} = g_l(h_l); heads μ_l, σ_l from h_l
        self.climb = nn.ModuleList(
            [nn.Sequential(_convolutions(c, channels), nn.Linear(features, hidden))]
            + [_dense(hidden, hidden, hidden) for _ in latent_dims[1:-1]]
        )
        self.heads = nn.ModuleList(
            [nn.Sequential(_convolutions(c, channels), nn.Linear(features, 2 * latent_dims[0]))]
            + [_dense(hidden, 2 * d, hidden) for d in latent_dims[1:]]
        )
        # generation: the top layer through three layers, each lower one added by its gate, then the layers to its depth
        self.top = _dense(latent_dims[-1], hidden, hidden, nn.ReLU)
        self.inject = nn.ModuleList(nn.Linear(d, hidden) for d in latent_dims[:-1])
        self.gates = nn.ParameterList(nn.Parameter(torch.full((hidden,), 0.1)) for _ in latent_dims[:-1])
        self.descend = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ReLU(),
                    nn.Linear(hidden, features),
                    nn.ReLU(),
                    nn.Unflatten(-1, (channels[-1], height // side, width // side)),
                    *_transposed_convolutions(channels, c),
                )
            ]
            + [nn.Sequential(nn.ReLU(), _dense(hidden, hidden, hidden, nn.ReLU)) for _ in latent_dims[1:-1]]
        )
        self.pixels = PixelLikelihood(likelihood)
        self.latent_dims, self.warmup_steps = latent_dims, warmup_steps
        self.register_buffer("_origin", torch.zeros(sum(latent_dims)))
        self.register_buffer("steps", torch.tensor(0))  # training steps taken: the KL warm-up's clock

    def latent_parts(self):
        return {f"layer{layer}": d for layer, d in enumerate(self.latent_dims)}

    def prior(self):
        return standard_normal(self._origin)

    def variational_parameters(self, x):
        h, locs, log_scales = x.reshape(-1, *self.image), [], []
        for layer, head in enumerate(self.heads):
            loc, raw_scale = head(h).chunk(2, dim=-1)
            locs.append(loc)
            log_scales.append(sigmoid_log_scale(raw_scale))
            if layer < len(self.climb):
                h = self.climb[layer](h)
        return {"loc": torch.cat(locs, -1), "log_scale": torch.cat(log_scales, -1)}

    def variational_family(self, parameters):
        return diagonal_gaussian(parameters["loc"], parameters["log_scale"])

    def decode(self, z):
        """The pixel likelihood's parameters [..., C·H·W] (Bernoulli logits, or the pixels' means) of the
        image generated from z [..., D] (its layers bottom first)."""
        leading = z.shape[:-1]
        parts = z.reshape(-1, z.shape[-1]).split(self.latent_dims, dim=-1)
        u = self.top(parts[-1])
        for layer in reversed(range(len(self.latent_dims) - 1)):
            u = self.descend[layer](u + self.gates[layer] * self.inject[layer](parts[layer]))
        return u.reshape(*leading, math.prod(self.image))

    def log_likelihood(self, x, z):
        return self.pixels(self.decode(z), x)

    def mean_image(self, z):
        return self.pixels.mean(self.decode(z))

    def image_grids(self):
        """Latent traversals, one grid per layer (the paper's figures): that layer's first two
        dimensions run over the prior's 5%..95% quantiles down the rows and across the columns (its
        other dimensions at 0), every other layer held at one draw from its prior."""
        values = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, self.TRAVERSAL_STEPS)).to(self._origin)
        held = self.prior().sample()
        grids = {}
        for layer, (start, size) in enumerate(self._layer_slices()):
            z = held.expand(len(values), len(values), -1).clone()  # [rows, columns, D]
            z[..., start : start + size] = 0
            z[..., start] = values[:, None]
            if size > 1:
                z[..., start + 1] = values[None, :]
            else:  # one dimension: one row
                z = z[:1].clone()
                z[..., start] = values
            grids[f"traversal_layer{layer}"] = self.pixels.mean(self.decode(z)).reshape(*z.shape[:2], *self.image)
        return grids

    def _layer_slices(self) -> list[tuple[int, int]]:
        """(start, size) of each layer in the flattened latent, bottom first."""
        return [(sum(self.latent_dims[:layer]), size) for layer, size in enumerate(self.latent_dims)]

    def kl_weight(self) -> torch.Tensor:
        """The code's warm-up: 1 − exp(−step / warmup_steps) after ``step`` training steps."""
        if self.warmup_steps == 0:
            return torch.ones((), device=self.steps.device)
        return 1 - torch.exp(-self.steps / self.warmup_steps)  # a tensor: no device sync in the step

    def latent_kl(self, loc, log_scale):
        """Each point's KL(q(z|x) ‖ p(z)) [B] from q's means and log-scales [B, D]: closed form."""
        return standard_normal_kl(loc, log_scale)

    def loss(self, x):
        q = self.variational_parameters(x)
        z, _ = diagonal_gaussian_rsample(q["loc"], q["log_scale"])
        recon = self.log_likelihood(x, z)
        kl = self.latent_kl(q["loc"], q["log_scale"])
        weight = self.kl_weight()
        if self.training:
            self.steps += 1
        elbo = recon - kl
        return -(recon - weight * kl).mean(), {"elbo": elbo.mean(), "recon": recon.mean(), "kl": kl.mean()}
