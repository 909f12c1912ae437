"""GM-DGM, the Gaussian-mixture deep generative model that VLAC is compared with, as the author's own
code defines it (github.com/MatthewWilletts/GM-DGM, ``src/models/gm_dgm.py``; its use as VLAC's
baseline is likely but not verified, ../shared/reference/papers.md):

    p(x, y, z) = p(y) p(z | y) p(x | z),   p(y) uniform over K clusters,
    p(z | y) = N(m(y), diag exp(v(y)))     (m, v: dense layers of the one-hot y),
    q(y, z | x) = q(y | x) q(z | x, y)     (MLPs; q(z | x, y) reads x and the one-hot y),

trained on Σ_y q(y|x) ELBO(x, y) + H[q(y|x)], with ELBO(x, y) = E_q(z|x,y)[log p(x|z)] −
KL(q(z|x,y) ‖ p(z|y)) + log p(y): the cluster summed out exactly, one decoder pass per cluster. A
point's cluster is argmax_y q(y|x). The code's MNIST settings are the defaults (MLPs of 500-500 ReLU,
z of 100, Adam 3e-4, batch 100, one sample).

Where the suite departs from the code: the KL term is in closed form (the code samples it); the
code's L2 penalty (``l2_reg`` = 0.5) is not applied (its scaling was not verified).

For the harness, q(z|x) = Σ_y q(y|x) q(z|x, y) and p(z) = Σ_y p(y) p(z|y) are mixtures with the cluster
summed out: the test NLL is the importance-sampled marginal likelihood, and the test ELBO (with those
marginal densities) is at least the training bound."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from models import register
from models.base import LatentVariableModel
from models.blocks.mixtures import gaussian_mixture
from models.blocks.networks import PixelLikelihood, diagonal_gaussian_kl, diagonal_gaussian_rsample, mlp


@register("gmdgm")
class GaussianMixtureDGM(LatentVariableModel):
    likelihoods = PixelLikelihood.FAMILIES

    def __init__(
        self, data_shape, likelihood="bernoulli", clusters=10, latent_dim=100, hidden=(500, 500), activation="relu"
    ):
        super().__init__()
        if not (isinstance(clusters, int) and clusters >= 1):
            raise ValueError(f"clusters must be a positive integer, got {clusters!r}")
        pixels = math.prod(data_shape)
        hidden = list(hidden)
        self.classifier = mlp([pixels, *hidden, clusters], activation)  # q(y|x)'s logits
        self.encoder = mlp([pixels + clusters, *hidden, 2 * latent_dim], activation)  # q(z|x,y)
        self.decoder = mlp([latent_dim, *hidden, pixels], activation)
        self.prior_loc = nn.Linear(clusters, latent_dim)  # m(y), v(y): dense layers of the one-hot y
        self.prior_log_variance = nn.Linear(clusters, latent_dim)
        self.pixels = PixelLikelihood(likelihood)
        self.clusters, self.latent_dim, self.data_shape = clusters, latent_dim, tuple(data_shape)

    def _one_hot(self) -> torch.Tensor:
        weight = self.prior_loc.weight
        return torch.eye(self.clusters, dtype=weight.dtype, device=weight.device)

    def cluster_prior(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p(y) [K] and p(z|y)'s means and log-scales [K, d]."""
        one_hot = self._one_hot()
        log_weights = one_hot.new_full((self.clusters,), -math.log(self.clusters))
        return log_weights, self.prior_loc(one_hot), 0.5 * self.prior_log_variance(one_hot)

    def prior(self):
        return gaussian_mixture(*self.cluster_prior())

    def variational_parameters(self, x):
        """q(y|x)'s logits [B, K] and each cluster's q(z|x, y) means and log-scales [B, K, d]."""
        flat = x.flatten(1)
        one_hot = self._one_hot().expand(len(x), -1, -1)  # [B, K, K]
        inputs = torch.cat([flat.unsqueeze(1).expand(-1, self.clusters, -1), one_hot], -1)
        loc, log_scale = self.encoder(inputs).chunk(2, -1)
        return {"logits": self.classifier(flat), "loc": loc, "log_scale": log_scale}

    def variational_family(self, parameters):
        return gaussian_mixture(parameters["logits"], parameters["loc"], parameters["log_scale"])

    def cluster_assignments(self, x):
        return self.classifier(x.flatten(1)).argmax(-1)

    def log_likelihood(self, x, z):
        return self.pixels(self.decoder(z), x)

    def mean_image(self, z):
        return self.pixels.mean(self.decoder(z))

    def bound_terms(self, x) -> dict[str, torch.Tensor]:
        """log q(y|x) [B, K] and, per cluster y, one reparameterized draw's log p(x|z) and
        KL(q(z|x,y) ‖ p(z|y)) [B, K]."""
        q = self.variational_parameters(x)
        z, _ = diagonal_gaussian_rsample(q["loc"], q["log_scale"])  # [B, K, d]
        recon = self.log_likelihood(x, z.movedim(1, 0)).movedim(0, 1)  # the decoder once per cluster
        _, prior_loc, prior_log_scale = self.cluster_prior()
        kl = diagonal_gaussian_kl(q["loc"], q["log_scale"], prior_loc, prior_log_scale).sum(-1)
        return {"log_q_y": F.log_softmax(q["logits"], -1), "recon": recon, "kl": kl}

    def loss(self, x):
        terms = self.bound_terms(x)
        log_q_y, log_p_y = terms["log_q_y"], -math.log(self.clusters)
        q_y = log_q_y.exp()
        # Σ_y q(y|x) [ELBO(x, y) − log q(y|x)]: the cluster summed out, its entropy included
        elbo = (q_y * (terms["recon"] - terms["kl"] + log_p_y - log_q_y)).sum(-1)
        recon = (q_y * terms["recon"]).sum(-1)
        return -elbo.mean(), {"elbo": elbo.mean(), "recon": recon.mean(), "kl": (recon - elbo).mean()}

    def image_grids(self):
        """Component-wise generation: row y draws z from p(z | y)."""
        _, loc, log_scale = self.cluster_prior()
        z = loc.unsqueeze(1) + log_scale.exp().unsqueeze(1) * torch.randn(
            self.clusters, 8, self.latent_dim, device=loc.device
        )
        return {"components": self.pixels.mean(self.decoder(z)).reshape(self.clusters, 8, *self.data_shape)}
