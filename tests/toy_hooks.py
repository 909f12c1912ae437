"""A toy method that uses every training hook and a latent with parts, to show that the harness
takes them without edits (tests/test_harness.py registers it for the tests that need it)."""

import torch

from models.blocks.networks import diagonal_gaussian
from models.vae import VAE


class ToyHooks(VAE):
    """The VAE with a latent in two named parts (``top``, ``bottom``), a KL weight warmed up over
    ``warmup_epochs`` (``on_epoch_start``), a data-dependent initialisation of the decoder's output
    bias to the logits of the first batch's mean image (``initialize``), and an optimizer whose
    parameters are recorded after every step (to check the moving average against)."""

    def __init__(self, data_shape, likelihood="bernoulli", hidden=(16,), warmup_epochs=2):
        super().__init__(data_shape, likelihood, latent_dim=4, hidden=hidden, activation="relu")
        self.warmup_epochs = warmup_epochs
        self.kl_weight = 1.0
        self.seen = {"initialize": [], "steps_before_initialize": 0, "parameters_after_step": []}

    def latent_parts(self):
        return {"top": 2, "bottom": 2}

    def initialize(self, x, statistics):
        super().initialize(x, statistics)
        self.seen["initialize"].append(tuple(x.shape))
        with torch.no_grad():
            mean = x.flatten(1).mean(0).clamp(1e-3, 1 - 1e-3)
            self.decoder[-1].bias.copy_(torch.log(mean) - torch.log1p(-mean))

    def configure_optimizer(self, training):
        self.seen["parameters_at_start"] = torch.cat([p.detach().flatten().clone() for p in self.parameters()])
        optimizer = super().configure_optimizer(training)
        optimizer.register_step_post_hook(
            lambda *_: self.seen["parameters_after_step"].append(
                torch.cat([p.detach().flatten().clone() for p in self.parameters()])
            )
        )
        return optimizer

    def on_epoch_start(self, epoch, training):
        self.kl_weight = min(1.0, (epoch + 1) / self.warmup_epochs)
        return {"kl_weight": self.kl_weight}

    def loss(self, x):
        if not self.seen["initialize"]:
            self.seen["steps_before_initialize"] += 1
        parameters = self.variational_parameters(x)
        q = diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        recon = self.log_likelihood(x, q.rsample())
        kl = torch.distributions.kl_divergence(q, self.prior())
        elbo = recon - kl
        return -(recon - self.kl_weight * kl).mean(), {"elbo": elbo.mean(), "recon": recon.mean(), "kl": kl.mean()}
