"""VAE with an inverse autoregressive flow posterior (Kingma et al. 2016), as in the VLAE
repository: the encoder's diagonal Gaussian followed by T IAF steps, each a MADE of one hidden
layer of ``iaf_hidden`` PReLU units conditioned on the encoder's last hidden layer h, the order of
the dimensions reversed from one step to the next. q's family for the inference gaps: the
diagonal Gaussian and the context h, per point (the MADEs' weights are the model's).

Its log-density is exact for its own samples and undefined elsewhere (``models.blocks.flows``)."""

from torch import nn
from torch.distributions import TransformedDistribution

from models import register
from models.base import sampled_elbo_loss
from models.blocks.flows import MADE, InverseAutoregressiveStep
from models.blocks.networks import diagonal_gaussian
from models.vae import VAE


@register("vae_iaf")
class IAFVAE(VAE):
    def __init__(self, data_shape, likelihood="bernoulli", T=4, iaf_hidden=500, **vae_hyper):
        if not (isinstance(T, int) and T >= 1):
            raise ValueError(f"T (flow steps) must be a positive integer, got {T!r}")
        super().__init__(data_shape, likelihood, **vae_hyper)
        latent_dim, context = self._origin.numel(), self.encoder[-1].in_features  # the last hidden layer's size
        self.steps = nn.ModuleList(
            MADE(latent_dim, [iaf_hidden], context=context, reverse=bool(t % 2)) for t in range(T)
        )

    def variational_parameters(self, x):
        loc, log_scale, h = self.encoded_with_features(x)
        return {"loc": loc, "log_scale": log_scale, "context": h}

    def variational_family(self, parameters):
        base = diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        steps = [InverseAutoregressiveStep(made, parameters["context"]) for made in self.steps]
        return TransformedDistribution(base, steps, validate_args=False)

    def loss(self, x):
        return sampled_elbo_loss(self, x, self.samples)
