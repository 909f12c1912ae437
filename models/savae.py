"""Semi-amortized VAE (Kim, Wiseman, Miller, Sontag & Rush, ICML 2018) as Park et al. (2019)
configure it: the encoder's diagonal Gaussian (μ, log σ) refined by T steps of stochastic
gradient *ascent* on each point's ELBO, each from one reparameterized sample and with the point's
gradient clipped to norm ``svi_clip``, step size ``svi_lr``; trained end to end through the T
steps (the loss is minus the ELBO at the refined parameters).

Two differences from the VLAE repository's SA-VAE, both deliberate: it adds the gradient of the
batch-mean *loss* (a step down the ELBO, and scaled by 1/B); here each point's own ELBO is
climbed. Plain SGD without momentum, as Park et al.'s supplement says (Kim et al.'s code uses
momentum 0.5 and 20 steps)."""

import torch

from models import register
from models.blocks.networks import diagonal_gaussian_rsample, standard_normal_kl
from models.vae import VAE


@register("savae")
class SAVAE(VAE):
    def __init__(self, data_shape, likelihood="bernoulli", T=4, svi_lr=0.1, svi_clip=5.0, **vae_hyper):
        if not (isinstance(T, int) and T >= 0):
            raise ValueError(f"T (refinement steps) must be a non-negative integer, got {T!r}")
        if not (svi_lr > 0 and svi_clip > 0):
            raise ValueError(f"svi_lr and svi_clip must be positive, got {svi_lr!r} and {svi_clip!r}")
        super().__init__(data_shape, likelihood, **vae_hyper)
        self.T, self.svi_lr, self.svi_clip = T, svi_lr, svi_clip

    def variational_parameters(self, x):
        encoded = super().variational_parameters(x)
        return self.refine(x, encoded["loc"], encoded["log_scale"])

    def refine(self, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """T clipped SGD steps up each point's single-sample ELBO. Under autograd (training) the steps
        stay in the graph; otherwise (evaluation, under ``torch.no_grad``) each step's gradient is
        taken and the result detached."""
        end_to_end = torch.is_grad_enabled()
        with torch.enable_grad():
            for _ in range(self.T):
                if not end_to_end:
                    loc, log_scale = loc.detach().requires_grad_(), log_scale.detach().requires_grad_()
                z, _ = diagonal_gaussian_rsample(loc, log_scale)
                elbo = self.log_likelihood(x, z) - standard_normal_kl(loc, log_scale)
                grad_loc, grad_log_scale = torch.autograd.grad(elbo.sum(), (loc, log_scale), create_graph=end_to_end)
                norm = torch.cat([grad_loc, grad_log_scale], -1).norm(dim=-1, keepdim=True)
                step = self.svi_lr * (self.svi_clip / norm).clamp(max=1.0)
                loc, log_scale = loc + step * grad_loc, log_scale + step * grad_log_scale
        if not end_to_end:
            loc, log_scale = loc.detach(), log_scale.detach()
        return {"loc": loc, "log_scale": log_scale}
