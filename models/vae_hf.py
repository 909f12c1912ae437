"""VAE with a Householder flow posterior (Tomczak & Welling 2016), as in the VLAE repository: the
encoder's diagonal Gaussian followed by T reflections z ↦ (I − 2 v_t v_tᵀ/‖v_t‖²) z, with
v_1 = Linear(h) from the encoder's last hidden layer h and v_t = Linear(v_{t−1}). Reflections
preserve volume, so log q(z_T|x) = log q(z_0|x). q's family for the inference gaps: the diagonal
Gaussian and the T vectors, per point."""

import torch
from torch import nn
from torch.distributions import TransformedDistribution

from models import register
from models.base import sampled_elbo_loss
from models.blocks.flows import HouseholderReflection
from models.blocks.networks import diagonal_gaussian
from models.vae import VAE


@register("vae_hf")
class HouseholderVAE(VAE):
    def __init__(self, data_shape, likelihood="bernoulli", T=4, **vae_hyper):
        if not (isinstance(T, int) and T >= 1):
            raise ValueError(f"T (reflections) must be a positive integer, got {T!r}")
        super().__init__(data_shape, likelihood, **vae_hyper)
        latent_dim = self._origin.numel()
        sizes = [self.encoder[-1].in_features] + [latent_dim] * (T - 1)  # the last hidden layer, then v_{t-1}
        self.reflections = nn.ModuleList(nn.Linear(n_in, latent_dim) for n_in in sizes)

    def variational_parameters(self, x):
        loc, log_scale, h = self.encoded_with_features(x)
        vectors = []
        for layer in self.reflections:
            h = layer(h)
            vectors.append(h)
        return {"loc": loc, "log_scale": log_scale, "householder": torch.stack(vectors, 1)}

    def variational_family(self, parameters):
        base = diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        steps = [HouseholderReflection(v) for v in parameters["householder"].unbind(1)]
        return TransformedDistribution(base, steps, validate_args=False)

    def loss(self, x):
        return sampled_elbo_loss(self, x, self.samples)
