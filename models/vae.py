"""Variational autoencoder (Kingma & Welling, ICLR 2014): diagonal-Gaussian q(z|x) from an MLP
encoder, N(0, I) prior, Bernoulli (or Gaussian) pixels from an MLP decoder, trained on the ELBO with the analytic
KL and the reconstruction term averaged over ``samples`` draws of z (Burda et al.'s "VAE, k").

``loss`` (here and in IWAE) computes with q's and p(z)'s closed forms (``models.blocks.networks``) rather
than with the distributions of ``posterior`` and ``prior``: a subclass that changes either overrides
``loss`` too."""

import math

import torch

from models import register
from models.base import LatentVariableModel
from models.blocks.networks import (
    PixelLikelihood,
    diagonal_gaussian,
    diagonal_gaussian_rsample,
    mlp,
    standard_normal,
    standard_normal_kl,
)


@register("vae")
class VAE(LatentVariableModel):
    likelihoods = PixelLikelihood.FAMILIES
    encoder_outputs = 2  # per latent dimension: q's mean and log-scale

    def __init__(
        self,
        data_shape,
        likelihood="bernoulli",
        latent_dim=50,
        hidden=(500, 500),
        activation="relu",
        init="pytorch",
        samples=1,
    ):
        super().__init__()
        if not (isinstance(samples, int) and samples >= 1) or not (isinstance(latent_dim, int) and latent_dim >= 1):
            raise ValueError(f"samples and latent_dim must be positive integers, got {samples!r} and {latent_dim!r}")
        self.likelihood = PixelLikelihood(likelihood)
        x_dim = math.prod(data_shape)
        self.encoder = mlp([x_dim, *hidden, self.encoder_outputs * latent_dim], activation, init)
        self.decoder = mlp([latent_dim, *reversed(hidden), x_dim], activation, init)
        self.register_buffer("_origin", torch.zeros(latent_dim))
        self.samples = samples
        self.architecture = {"hidden": tuple(hidden), "activation": activation, "init": init}  # for more encoders

    def prior(self):
        return standard_normal(self._origin)

    def variational_parameters(self, x):
        loc, log_scale = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": log_scale}

    def encoded_with_features(self, x):
        """q's mean and log-scale, and the encoder's last hidden layer they come from (x itself
        without one): what a flow posterior conditions on."""
        h = self.encoder[:-1](x.flatten(1))
        loc, log_scale = self.encoder[-1](h).chunk(2, dim=-1)
        return loc, log_scale, h

    def variational_family(self, parameters):
        return diagonal_gaussian(parameters["loc"], parameters["log_scale"])

    def log_likelihood(self, x, z):
        return self.likelihood(self.decoder(z), x)

    def mean_image(self, z):
        return self.likelihood.mean(self.decoder(z))

    def loss(self, x):
        # Plain tensors rather than posterior() and prior(), and one draw of z without a sample
        # dimension: the distribution objects and a [1, B, D] latent each cost about 5 % of a step at
        # batch 20 (the baselines' MLP 784-200-200-50).
        q = self.variational_parameters(x)
        z, _ = diagonal_gaussian_rsample(q["loc"], q["log_scale"], (self.samples,) if self.samples > 1 else ())
        recon = self.log_likelihood(x, z)
        recon = recon.mean(0) if self.samples > 1 else recon
        kl = standard_normal_kl(q["loc"], q["log_scale"])
        elbo = recon - kl
        return -elbo.mean(), {"elbo": elbo.mean(), "recon": recon.mean(), "kl": kl.mean()}
