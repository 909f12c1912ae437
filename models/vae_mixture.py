"""A non-recursive mixture posterior (the baseline of Kim & Pavlovic 2020): the same amortized
mixture of M diagonal Gaussians as ``rme`` (``models.blocks.mixtures``), every component in use from the
first step and all trained together, with the decoder, on the mixture's ELBO."""

from models import register
from models.blocks.mixtures import MixturePosteriorVAE


@register("vae_mixture")
class JointMixtureVAE(MixturePosteriorVAE):
    def __init__(self, data_shape, likelihood="bernoulli", **mixture_hyper):
        super().__init__(data_shape, likelihood, **mixture_hyper)
        self.active.fill_(self.components)

    def loss(self, x):
        if self.components == 1:
            return super().loss(x)
        elbo, recon = self.mixture_elbo(x, self.posterior(x))
        return -elbo.mean(), {"elbo": elbo.mean(), "recon": recon.mean(), "kl": (recon - elbo).mean()}
