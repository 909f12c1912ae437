"""Importance-weighted autoencoder (Burda, Grosse & Salakhutdinov, ICLR 2016): the VAE's model and
encoder, trained on the k-sample bound log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x),
with k = ``samples``."""

import math

import torch

from models import register
from models.blocks.networks import diagonal_gaussian_rsample, standard_normal_kl, standard_normal_log_prob
from models.vae import VAE


@register("iwae")
class IWAE(VAE):
    def loss(self, x):
        q = self.variational_parameters(x)
        z, eps = diagonal_gaussian_rsample(q["loc"], q["log_scale"], (self.samples,))
        log_q = standard_normal_log_prob(eps) - q["log_scale"].sum(-1)  # change of variables
        log_likelihood = self.log_likelihood(x, z)
        log_weights = log_likelihood + standard_normal_log_prob(z) - log_q
        bound = torch.logsumexp(log_weights, dim=0) - math.log(self.samples)
        kl = standard_normal_kl(q["loc"], q["log_scale"])
        elbo = log_weights.mean(0)
        return -bound.mean(), {
            "iwae_bound": bound.mean(),
            "elbo": elbo.mean(),
            "recon": log_likelihood.mean(),
            "kl": kl.mean(),
        }
