"""Recursive mixture inference (Kim & Pavlovic, NeurIPS 2020): the VAE's model with an amortized
mixture posterior grown one component at a time during training,

    q_m(z|x) = (1 − ε_m(x)) q_{m−1}(z|x) + ε_m(x) h_m(z|x),   q_1 = h_1 (the VAE's encoder),

each component h_m a diagonal Gaussian from its own encoder. While h_m is the newest, it is trained
on the functional-gradient criterion, E_{h_m}[log p(x, z) − log q_{m−1}(z|x)] = ELBO(h_m) +
KL(h_m ‖ q_{m−1}) (improve the bound, and differ from the current mixture), by a gradient that
reaches only h_m's encoder; the decoder and the weights ε are trained on the mixture's ELBO.
Test-time inference is one pass through the active encoders.

Choices the sources consulted leave open (../shared/reference/papers.md, "kim2020recursive"), as
settings: ``components`` (M), ``epsilon`` (``models.mixtures``), ``freeze_earlier`` (whether the
mixture's ELBO still trains the earlier components), and the schedule: component m (from 0) joins
at epoch ⌊m · E / M⌋ of the run's E epochs, so a run of any budget ends with all M. With one
component active it is exactly the VAE.

The weight λ (``criterion_weight``) of the KL term, ELBO(h_m) + λ KL(h_m ‖ q_{m−1}), is not in the
sources consulted. At λ = 1 the criterion is E_h[log p(x, z) − log q_{m−1}(z|x)], linear in h and
without an entropy: it drives h_m to a point far out where a narrow q_{m−1} is small, not to another
mode (seen on a bimodal posterior: the mixture's ELBO fell by 1,300 nats); the suite's default 0.01
keeps (1 − λ) of h_m's entropy and a push away from q_{m−1} of the order of nats.
``criterion = "entropy"`` is the boosted-VI variant the reviews compare with: the newest component
maximises ELBO(h_m) + λ H(h_m) instead."""

import torch

from models import register
from models.base import reparameterized_elbo
from models.mixtures import MixturePosteriorVAE, mixture_logits
from models.networks import diagonal_gaussian, diagonal_gaussian_rsample

CRITERIA = ("kl", "entropy")


@register("rme")
class RecursiveMixtureVAE(MixturePosteriorVAE):
    def __init__(
        self,
        data_shape,
        likelihood="bernoulli",
        freeze_earlier=True,
        criterion="kl",
        criterion_weight=0.01,
        **mixture_hyper,
    ):
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
        super().__init__(data_shape, likelihood, **mixture_hyper)
        if not criterion_weight >= 0:
            raise ValueError(f"criterion_weight must be non-negative, got {criterion_weight!r}")
        self.freeze_earlier, self.criterion, self.criterion_weight = freeze_earlier, criterion, criterion_weight

    def on_epoch_start(self, epoch, training):
        joined = sum(epoch >= m * training["epochs"] // self.components for m in range(self.components))
        self.active.fill_(max(int(self.active), joined))
        return {"components": int(self.active)}

    def loss(self, x):
        m = int(self.active)
        if m == 1:
            return super().loss(x)
        loc, log_scale, epsilon_logits = self.component_parameters(x)
        newest = slice(m - 1, m)
        earlier = slice(0, m - 1)
        keep = (lambda t: t.detach()) if self.freeze_earlier else (lambda t: t)
        # the mixture's ELBO moves the decoder and the weights (and the earlier components if not frozen)
        mixture = self.variational_family(
            {
                "logits": mixture_logits(epsilon_logits),
                "loc": torch.cat([keep(loc[:, earlier]), loc[:, newest].detach()], 1),
                "log_scale": torch.cat([keep(log_scale[:, earlier]), log_scale[:, newest].detach()], 1),
            }
        )
        elbo, recon = reparameterized_elbo(self, x, mixture, self.samples)
        # the newest component: E_h[log p(x, z) − log q_{m−1}(z|x)], through a decoder it does not move
        previous = self.variational_family(
            {"loc": loc[:, 0].detach(), "log_scale": log_scale[:, 0].detach()}
            if m == 2
            else {
                "logits": mixture_logits(epsilon_logits[:, : m - 2].detach()),
                "loc": loc[:, earlier].detach(),
                "log_scale": log_scale[:, earlier].detach(),
            }
        )
        h_loc, h_log_scale = loc[:, m - 1], log_scale[:, m - 1]
        z, _ = diagonal_gaussian_rsample(h_loc, h_log_scale, (self.samples,))
        # ELBO(h) + λ KL(h ‖ q_{m−1}) = E_h[log p(x, z) − λ log q_{m−1}(z|x)] + (1 − λ) H(h), or for
        # boosted VI ELBO(h) + λ H(h) = E_h[log p(x, z)] + (1 + λ) H(h); H(h) in closed form
        weight = self.criterion_weight
        with torch.enable_grad():
            point = z.detach().requires_grad_()
            value = self.log_joint(x, point)  # [S, B]
            if self.criterion == "kl":
                value = value - weight * previous.log_prob(point)
            (slope,) = torch.autograd.grad(value.sum(), point)
        # the reparameterization gradient of E_h[value] reaches h's encoder through z alone: the
        # decoder sits behind the detached slope (the criterion's value is kept for the loss and logs)
        surrogate = (slope * z).sum(-1).mean(0)
        entropy = diagonal_gaussian(h_loc, h_log_scale).entropy()
        entropy_factor = 1 - weight if self.criterion == "kl" else 1 + weight
        criterion = value.detach().mean(0) + surrogate - surrogate.detach() + entropy_factor * entropy
        loss = -(elbo + criterion).mean()
        return loss, {
            "elbo": elbo.mean(),
            "recon": recon.mean(),
            "kl": (recon - elbo).mean(),
            "new_component_criterion": criterion.mean(),
        }
