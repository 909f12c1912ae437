"""Gaussian mixtures shared by the methods (not a method itself).

``gaussian_mixture``: a mixture of diagonal Gaussians as one distribution, its discrete component
summed out (a mixture posterior; the Gaussian-mixture priors of GM-DGM and VLAC).
``IndependentParts``: independent distributions over consecutive parts of one vector (a ladder's
layers, each with its own mixture prior).

``MixturePosteriorVAE``: an amortized mixture of diagonal
Gaussians over the VAE's model, component 1 from the VAE's encoder and each further one from its own
encoder, its weights unrolled from the recursion q_m = (1 − ε_m) q_{m−1} + ε_m h_m of Kim &
Pavlovic (2020) (any point of the simplex is such an unrolling, so a jointly trained mixture uses it
too). ``epsilon``: "amortized" (ε_m(x), a sigmoid output of component m's encoder) or "global" (one
learned ε_m). ``active`` components are in use (saved with the weights); with one the posterior is
the VAE's."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily, constraints

from models.networks import diagonal_gaussian, mlp
from models.vae import VAE

EPSILONS = ("amortized", "global")


def gaussian_mixture(logits: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> MixtureSameFamily:
    """Σ_k softmax(logits)_k N(loc_k, diag(exp(log_scale_k)²)): ``logits`` [..., K], ``loc`` and
    ``log_scale`` [..., K, D]; log_prob sums the component out exactly (log-sum-exp)."""
    return MixtureSameFamily(Categorical(logits=logits), diagonal_gaussian(loc, log_scale), validate_args=False)


class IndependentParts(Distribution):
    """Independent distributions over consecutive parts of one vector: ``parts`` (each with an event
    shape [size]) in order; log_prob splits the vector and adds their log-densities, sample draws each
    part and concatenates."""

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, parts: list[Distribution]):
        self.parts = parts
        self.part_sizes = [part.event_shape[-1] for part in parts]
        super().__init__(parts[0].batch_shape, torch.Size([sum(self.part_sizes)]), validate_args=False)

    def part_log_probs(self, z):
        """[..., parts] each part's log-density."""
        blocks = z.split(self.part_sizes, -1)
        return torch.stack([part.log_prob(block) for part, block in zip(self.parts, blocks)], -1)

    def log_prob(self, z):
        return self.part_log_probs(z).sum(-1)

    def sample(self, sample_shape=()):
        return torch.cat([part.sample(sample_shape) for part in self.parts], -1)


def mixture_logits(epsilon_logits: torch.Tensor) -> torch.Tensor:
    """log α [B, m] of the mixture that the recursion builds from ε_2..ε_m (their logits [B, m − 1]):
    α_1 = Π_{i≥2} (1 − ε_i) and α_j = ε_j Π_{i>j} (1 − ε_i)."""
    log_keep = F.logsigmoid(-epsilon_logits)
    kept_after = log_keep.flip(-1).cumsum(-1).flip(-1)  # [j] = Σ_{i ≥ j} log(1 − ε_i)
    later = torch.cat([kept_after[..., 1:], torch.zeros_like(kept_after[..., :1])], -1)
    return torch.cat([kept_after[..., :1], F.logsigmoid(epsilon_logits) + later], -1)


class MixturePosteriorVAE(VAE):
    def __init__(self, data_shape, likelihood="bernoulli", components=4, epsilon="amortized", **vae_hyper):
        if not (isinstance(components, int) and components >= 1):
            raise ValueError(f"components must be a positive integer, got {components!r}")
        if epsilon not in EPSILONS:
            raise ValueError(f"unknown epsilon {epsilon!r}; valid: {', '.join(EPSILONS)}")
        super().__init__(data_shape, likelihood, **vae_hyper)
        self.latent_dim = self._origin.numel()
        outputs = 2 * self.latent_dim + (epsilon == "amortized")
        sizes = [math.prod(data_shape), *self.architecture["hidden"], outputs]
        self.component_encoders = nn.ModuleList(
            mlp(sizes, self.architecture["activation"], self.architecture["init"]) for _ in range(components - 1)
        )
        if epsilon == "global":
            self.epsilon_logits = nn.Parameter(torch.zeros(components - 1))
        self.register_buffer("active", torch.tensor(1))  # components in use: saved with the weights
        self.components, self.epsilon = components, epsilon

    def component_parameters(self, x: torch.Tensor):
        """The active components' means and log-scales [B, m, k], and the logits of ε_2..ε_m [B, m − 1]."""
        first = super().variational_parameters(x)
        locs, log_scales, epsilons = [first["loc"]], [first["log_scale"]], []
        k = self.latent_dim
        for encoder in self.component_encoders[: int(self.active) - 1]:
            out = encoder(x.flatten(1))
            locs.append(out[..., :k])
            log_scales.append(out[..., k : 2 * k])
            if self.epsilon == "amortized":
                epsilons.append(out[..., 2 * k])
        m = len(locs)
        if self.epsilon == "global":
            epsilon_logits = self.epsilon_logits[: m - 1].expand(len(x), -1)
        else:
            epsilon_logits = torch.stack(epsilons, -1) if epsilons else first["loc"][:, :0]
        return torch.stack(locs, 1), torch.stack(log_scales, 1), epsilon_logits

    def variational_parameters(self, x):
        loc, log_scale, epsilon_logits = self.component_parameters(x)
        if loc.shape[1] == 1:  # the VAE's q
            return {"loc": loc[:, 0], "log_scale": log_scale[:, 0]}
        return {"logits": mixture_logits(epsilon_logits), "loc": loc, "log_scale": log_scale}

    def variational_family(self, parameters):
        if "logits" not in parameters:
            return diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        return gaussian_mixture(parameters["logits"], parameters["loc"], parameters["log_scale"])
