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
learned ε_m). ``kl_estimate``: how its training ELBO is estimated (``KL_ESTIMATES``). ``active``
components are in use (saved with the weights); with one the posterior is the VAE's."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily, constraints, kl_divergence

from models.base import reparameterized_elbo
from models.blocks.networks import diagonal_gaussian, mlp
from models.vae import VAE

EPSILONS = ("amortized", "global")
# "sampled": log p(x, z) − log q(z|x) at each component's draws (``reparameterized_elbo``);
# "per_component": each component's KL from the prior in closed form, only the reconstruction and
# I(k; z) sampled (``per_component_kl_elbo``). The same expectation; the first is the suite's default.
KL_ESTIMATES = ("sampled", "per_component")


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


def per_component_kl_elbo(model, x: torch.Tensor, q: MixtureSameFamily, samples: int):
    """Each point's ELBO of the mixture q = Σ_k α_k q_k, and its reconstruction term E_q[log p(x|z)]
    (a pair, as ``reparameterized_elbo(..., reconstruction=True)``), from

        ELBO = Σ_k α_k (E_{q_k}[log p(x|z)] − KL(q_k ‖ p)) + I(k; z),
        I(k; z) = Σ_k α_k E_{q_k}[log q_k(z) − log q(z)],

    with each KL(q_k ‖ p) in closed form and the rest from ``samples`` reparameterized draws of each
    component (the draws ``reparameterized_elbo`` takes). Sampling log p(z) − log q(z) instead adds
    a variance that grows with z's dimension, where I(k; z) lies between 0 and H(α)."""
    components = q.component_distribution  # batch [B, K], event [D]
    z = components.rsample((samples,))  # [S, B, K, D]
    information = (components.log_prob(z) - q.log_prob(z.movedim(-2, 0)).movedim(0, -1)).mean(0)  # [B, K]
    k = components.batch_shape[-1]
    recon = model.log_likelihood(x, z.movedim(-2, 0).flatten(0, 1)).unflatten(0, (k, samples)).mean(1).T  # [B, K]
    weights = q.mixture_distribution.probs
    elbo = (weights * (recon - kl_divergence(components, model.prior()) + information)).sum(-1)
    return elbo, (weights * recon).sum(-1)


def mixture_logits(epsilon_logits: torch.Tensor) -> torch.Tensor:
    """log α [B, m] of the mixture that the recursion builds from ε_2..ε_m (their logits [B, m − 1]):
    α_1 = Π_{i≥2} (1 − ε_i) and α_j = ε_j Π_{i>j} (1 − ε_i)."""
    log_keep = F.logsigmoid(-epsilon_logits)
    kept_after = log_keep.flip(-1).cumsum(-1).flip(-1)  # [j] = Σ_{i ≥ j} log(1 − ε_i)
    later = torch.cat([kept_after[..., 1:], torch.zeros_like(kept_after[..., :1])], -1)
    return torch.cat([kept_after[..., :1], F.logsigmoid(epsilon_logits) + later], -1)


class MixturePosteriorVAE(VAE):
    def __init__(
        self, data_shape, likelihood="bernoulli", components=4, epsilon="amortized", kl_estimate="sampled", **vae_hyper
    ):
        if not (isinstance(components, int) and components >= 1):
            raise ValueError(f"components must be a positive integer, got {components!r}")
        if epsilon not in EPSILONS:
            raise ValueError(f"unknown epsilon {epsilon!r}; valid: {', '.join(EPSILONS)}")
        if kl_estimate not in KL_ESTIMATES:
            raise ValueError(f"unknown kl_estimate {kl_estimate!r}; valid: {', '.join(KL_ESTIMATES)}")
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
        self.components, self.epsilon, self.kl_estimate = components, epsilon, kl_estimate

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

    def mixture_elbo(self, x, q: MixtureSameFamily):
        """Each point's ELBO of the mixture q and its reconstruction term, estimated as ``kl_estimate`` says."""
        if self.kl_estimate == "per_component":
            return per_component_kl_elbo(self, x, q, self.samples)
        return reparameterized_elbo(self, x, q, self.samples, reconstruction=True)
