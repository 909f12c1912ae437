"""Networks and likelihoods shared by the methods."""

import torch
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
    """log p(x|z) from the decoder's output ``[..., B, D]`` for images ``x`` ``[B, ...]``: independent
    Bernoulli pixels (the output is their logits), or Gaussian pixels (the output is their mean, with
    one learned scale shared by all pixels, as in the VLAE code)."""

    FAMILIES = ("bernoulli", "gaussian")

    def __init__(self, family: str):
        super().__init__()
        if family not in self.FAMILIES:
            raise ValueError(f"unknown likelihood {family!r}; valid: {', '.join(self.FAMILIES)}")
        self.family = family
        if family == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.family == "bernoulli":
            pixels = Bernoulli(logits=output, validate_args=False)
        else:
            pixels = Normal(output, self.log_scale.exp().expand_as(output), validate_args=False)
        return Independent(pixels, 1, validate_args=False).log_prob(x.flatten(1))
