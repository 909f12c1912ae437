"""The protocol every method implements, and the pieces of it that methods share.

A method is a latent-variable model p(x, z) = p(x|z) p(z) with an inference procedure q(z|x).
The harness and every metric talk to it only through this protocol:

- ``posterior(x)``: a ``torch.distributions.Distribution`` with batch shape ``[B]``: the q(z|x) the
  method uses at test time (for iterative methods, after refinement). It needs ``sample``/``rsample``
  and ``log_prob``; a full-covariance Gaussian, a mixture or a flow fits as well as a diagonal Gaussian.
- ``prior()``: p(z) as a distribution with empty batch shape (a Gaussian mixture whose discrete
  component is summed out, or an autoregressive-flow prior, fit too).
- ``log_likelihood(x, z)``: log p(x|z), the decoder (an MLP, or an autoregressive PixelCNN).
- ``log_joint(x, z)``: log p(x|z) + log p(z).
- ``loss(x)``: the scalar training loss and a dict of per-batch diagnostics (``elbo``, ``recon``,
  ``kl``, ...) as plain floats-to-be.

``z`` is whatever ``posterior(x).sample()`` returns: one tensor for a flat latent, a tuple of layer
tensors for a ladder. The metrics never look inside it; they pass samples back to ``log_joint`` and
to ``posterior(x).log_prob``. Samples carry leading sample dimensions (``[K, B, ...]``), and
``log_joint``/``log_likelihood`` must broadcast over them, returning ``[K, B]``.
"""

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence


class LatentVariableModel(nn.Module):
    """Base class of every method; subclasses register themselves with ``models.register``."""

    def prior(self) -> Distribution:
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def log_likelihood(self, x: torch.Tensor, z) -> torch.Tensor:
        raise NotImplementedError

    def log_joint(self, x: torch.Tensor, z) -> torch.Tensor:
        return self.log_likelihood(x, z) + self.prior().log_prob(z)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


def kl_to_prior(q: Distribution, prior: Distribution, z=None) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example: analytic when torch knows it, else a Monte-Carlo mean over
    the samples ``z`` (shape ``[S, B, ...]``) drawn from q."""
    try:
        return kl_divergence(q, prior)
    except NotImplementedError:
        if z is None:
            raise
        return (q.log_prob(z) - prior.log_prob(z)).mean(0)


def has_analytic_kl(q: Distribution, prior: Distribution) -> bool:
    try:
        kl_divergence(q, prior)
    except NotImplementedError:
        return False
    return True
