"""VLAC, Gaussian-mixture Variational Ladder Autoencoders (Willetts, Roberts & Holmes, arXiv:1909.11501):
the ladder of Zhao et al. (``models.vladder``) with a Gaussian-mixture prior on each latent layer, so
that each layer clusters the data by what it holds: p(c_l) = Cat(1/K_l), p(z_l | c_l = k) =
N(m_{l,k}, diag s²_{l,k}), the means and scales learned.

Only the abstract of the paper was available (../shared/reference/papers.md, "willetts2019vlac"); its
factorisation is not verified, and the suite's choices are these:

- Inference is the ladder's, q(z_l | x) = N(μ_l(h_l), σ_l(h_l)), and q(c_l | x) is the categorical
  that maximises the ELBO for that q(z_l | x): q(c_l = k | x) ∝ π_k exp(−KL(q(z_l|x) ‖ p(z_l|c_l=k)))
  (the analytic optimum that MFCVAE, the same group's successor, derives). Summed out exactly, layer
  l's term of the ELBO is then −log Σ_k π_k exp(−KL_k) (``layer_cluster_terms``), in closed form.
  (A GM-DGM-style q(z_l | x, c_l) would need a decoder pass for every combination of the layers'
  components.)
- The mixing weights π are uniform and fixed (as GM-DGM's p(y)); the component means start at
  N(0, I) draws, their scales at 1.
- A layer's clusters are argmax_k q(c_l = k | x); the harness scores each layer's against the labels.

The test ELBO and NLL of the harness use the marginal prior p(z_l) = Σ_k π_k p(z_l | k) (its density
in closed form): that ELBO is at least the training bound above (q(c | x) there cannot depend on z).
"""

import math

import torch
from torch import nn

from models import register
from models.blocks.mixtures import IndependentParts, gaussian_mixture
from models.blocks.networks import diagonal_gaussian_kl
from models.vladder import VariationalLadderAutoencoder


@register("vlac")
class GaussianMixtureLadder(VariationalLadderAutoencoder):
    def __init__(self, data_shape, likelihood="bernoulli", components=10, **ladder_hyper):
        super().__init__(data_shape, likelihood, **ladder_hyper)
        per_layer = [components] * len(self.latent_dims) if isinstance(components, int) else list(components)
        if len(per_layer) != len(self.latent_dims) or not all(isinstance(k, int) and k >= 1 for k in per_layer):
            raise ValueError(
                f"components must be a positive integer or one per layer ({len(self.latent_dims)}); got {components!r}"
            )
        self.components = per_layer
        self.component_locs = nn.ParameterList(
            nn.Parameter(torch.randn(k, d)) for k, d in zip(per_layer, self.latent_dims)
        )
        self.component_log_scales = nn.ParameterList(
            nn.Parameter(torch.zeros(k, d)) for k, d in zip(per_layer, self.latent_dims)
        )

    def _log_weights(self, layer: int) -> torch.Tensor:
        k = self.components[layer]
        return self.component_locs[layer].new_full((k,), -math.log(k))

    def prior(self):
        return IndependentParts(
            [
                gaussian_mixture(self._log_weights(layer), loc, log_scale)
                for layer, (loc, log_scale) in enumerate(zip(self.component_locs, self.component_log_scales))
            ]
        )

    def cluster_log_posteriors(self, loc, log_scale) -> list[torch.Tensor]:
        """Per layer, log q(c_l | x) [B, K_l] for q(z|x)'s means and log-scales [B, D]."""
        return [terms.log_softmax(-1) for terms in self._log_evidence_terms(loc, log_scale)]

    def _log_evidence_terms(self, loc, log_scale) -> list[torch.Tensor]:
        """Per layer, log π_k − KL(q(z_l|x) ‖ p(z_l|c_l=k)) [B, K_l]."""
        terms = []
        for layer, (mean, scale) in enumerate(
            zip(loc.split(self.latent_dims, -1), log_scale.split(self.latent_dims, -1))
        ):
            components = self.component_locs[layer], self.component_log_scales[layer]
            kl = diagonal_gaussian_kl(mean.unsqueeze(-2), scale.unsqueeze(-2), *components).sum(-1)
            terms.append(self._log_weights(layer) - kl)
        return terms

    def layer_cluster_terms(self, loc, log_scale) -> list[torch.Tensor]:
        """Per layer, Σ_k q(c_l=k|x) [KL(q(z_l|x) ‖ p(z_l|k)) + log q(c_l=k|x) − log π_k] [B] at the
        optimal q(c_l|x): −log Σ_k π_k exp(−KL_k)."""
        return [-torch.logsumexp(terms, -1) for terms in self._log_evidence_terms(loc, log_scale)]

    def latent_kl(self, loc, log_scale):
        return sum(self.layer_cluster_terms(loc, log_scale))

    def cluster_assignments(self, x):
        q = self.variational_parameters(x)
        posteriors = self.cluster_log_posteriors(q["loc"], q["log_scale"])
        return {f"layer{layer}": log_q.argmax(-1) for layer, log_q in enumerate(posteriors)}

    def image_grids(self):
        """Component-wise generation, one grid per layer: row k draws that layer's z from its component
        k; column j shares one draw of every other layer from its prior (so that along a column only
        the layer's cluster changes)."""
        columns = 8
        shared = self.prior().sample((columns,))  # [columns, D]
        grids = {}
        for layer, (start, size) in enumerate(self._layer_slices()):
            loc, log_scale = self.component_locs[layer], self.component_log_scales[layer]
            z = shared.expand(len(loc), -1, -1).clone()  # [K, columns, D]
            z[..., start : start + size] = loc.unsqueeze(1) + log_scale.exp().unsqueeze(1) * torch.randn_like(
                z[..., start : start + size]
            )
            grids[f"components_layer{layer}"] = self.pixels.mean(self.decode(z)).reshape(*z.shape[:2], *self.image)
        return grids
