"""Networks and likelihoods shared by the methods."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


INITS = ("pytorch", "glorot")


def mlp(sizes: list[int], activation: str, init: str = "pytorch") -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last).
    ``init``: PyTorch's default, or Glorot & Bengio's uniform weights with zero biases."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(n_in, n_out))
        if init == "glorot":
            nn.init.xavier_uniform_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


def diagonal_gaussian(loc: torch.Tensor, log_scale: torch.Tensor) -> Independent:
    """N(loc, diag(exp(log_scale)^2)) over the last dimension."""
    return Independent(Normal(loc, log_scale.exp(), validate_args=False), 1, validate_args=False)


def standard_normal(like: torch.Tensor) -> Independent:
    """N(0, I) with the shape, dtype and device of ``like``."""
    return diagonal_gaussian(torch.zeros_like(like), torch.zeros_like(like))


class PixelLikelihood(nn.Module):
    """log p(x|z) from the decoder's output ``[..., B, D]`` for images ``x`` ``[B, ...]``:

    - ``bernoulli``: independent binary pixels; the output is their logits.
    - ``gaussian``: the output is the pixels' mean, with one learned scale shared by all pixels (as
      in the VLAE code), a density on continuous intensities.
    - ``discretized_logistic``: a logistic of the output's mean and one learned shared scale,
      integrated over each of the 256 intensity bins of width 1/255 (the outer bins reach to ±∞):
      a probability of 8-bit pixels, so its NLL converts to bits/dim (Salimans et al. 2017, one
      component).
    """

    FAMILIES = ("bernoulli", "gaussian", "discretized_logistic")
    DISCRETE = ("bernoulli", "discretized_logistic")  # probabilities of pixel values, not densities: bits/dim
    BINS = 256

    def __init__(self, family: str):
        super().__init__()
        if family not in self.FAMILIES:
            raise ValueError(f"unknown likelihood {family!r}; valid: {', '.join(self.FAMILIES)}")
        self.family = family
        if family != "bernoulli":
            self.log_scale = nn.Parameter(torch.zeros(()))

    def init_scale(self, variance: float) -> None:
        """Start the shared scale at the data's variance (the VLAE code's initialisation)."""
        with torch.no_grad():
            self.log_scale.fill_(0.5 * math.log(variance))

    def forward(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if self.family == "bernoulli":
            return Independent(Bernoulli(logits=output, validate_args=False), 1, validate_args=False).log_prob(x)
        if self.family == "gaussian":
            pixels = Normal(output, self.log_scale.exp().expand_as(output), validate_args=False)
            return Independent(pixels, 1, validate_args=False).log_prob(x)
        return discretized_logistic_log_prob(x, output, self.log_scale, self.BINS).sum(-1)


def discretized_logistic_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, bins: int = 256):
    """log P(x) per pixel for ``x`` on the grid {0, 1/(bins-1), ..., 1}: the mass of a logistic
    (loc, exp(log_scale)) over x's bin; the first and last bins take the tails."""
    half_bin = 0.5 / (bins - 1)
    inv_scale = torch.exp(-log_scale)
    upper = inv_scale * (x - loc + half_bin)
    lower = inv_scale * (x - loc - half_bin)
    log_cdf_upper = F.logsigmoid(upper)  # log F(upper)
    log_survival_lower = F.logsigmoid(-lower)  # log (1 − F(lower))
    # log (F(upper) − F(lower)), stably: F(u) − F(l) = F(u)(1 − F(l))(1 − e^{−(u−l)})
    log_mass = log_cdf_upper + log_survival_lower + torch.log(-torch.expm1(lower - upper))
    return torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1 - half_bin, log_survival_lower, log_mass))
