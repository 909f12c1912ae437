"""Importance-weighted autoencoder (Burda, Grosse & Salakhutdinov, ICLR 2016): the VAE's model and
encoder, trained on the k-sample bound log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x),
with k = ``samples``."""

import math

import torch

from models import register
from models.vae import VAE


@register("iwae")
class IWAE(VAE):
    def loss(self, x):
        q = self.posterior(x)
        z = q.rsample((self.samples,))
        log_weights = self.log_joint(x, z) - q.log_prob(z)
        bound = torch.logsumexp(log_weights, dim=0) - math.log(self.samples)
        kl = torch.distributions.kl_divergence(q, self.prior())
        elbo = log_weights.mean(0)
        return -bound.mean(), {
            "iwae_bound": bound.mean(),
            "elbo": elbo.mean(),
            "recon": (elbo + kl).mean(),
            "kl": kl.mean(),
        }
