"""MAE: Mutual Posterior-Divergence Regularization (Ma, Zhou & Hovy, ICLR 2019): the VAE with an
autoregressive-flow prior and a PixelCNN decoder (``models.vlossy``'s networks, sized by the spec)
plus a regulariser on the geometry of a minibatch's posteriors q_i = N(μ_i, diag σ_i²), as the
official code computes it (``XuezheMax/mae``, ``_postKL`` and ``MAE.loss``; the paper's equations
are not in the sources consulted):

    KL_d(i ‖ j) = ½ [σ²_id/σ²_jd + (μ_id − μ_jd)²/σ²_jd − log(σ²_id/σ²_jd) − 1]   for i ≠ j,
    diversity   D̄_d = the mean of KL_d(i ‖ j) over the B(B − 1) ordered pairs,
    smoothness  S = the unbiased standard deviation over those pairs of Σ_d KL_d(i ‖ j),
    loss        = −E_q log p(x|z) + max(free bits, KL) − η Σ_d log sigmoid(D̄_d) + γ S

(minimised, batch means). Diversity pushes the posteriors of different images apart, so that the
code cannot collapse onto the prior; the smoothness term keeps them evenly spread. η = γ = 0 is
the plain VAE with the same networks, the paper's baseline.

As in the code, the encoder's second output is log σ², not log σ (``models.vlossy``'s networks read it
as log σ, as Chen et al.'s code does), hard-clipped to [−7, 7] on colour images (the code's colour
encoder). It matters at the first steps: Adam's first step moves every weight by the learning rate,
and read as log σ the outputs of some posteriors dropped to log σ = −12 in six steps, the pairs'
KLs (which grow as σ_i²/σ_j²) to a standard deviation of 12,000 nats, and one run on a GPU to an
infinite loss; read as log σ², log σ stays above −4 over the same steps (seeds 0-4)."""

import torch
import torch.nn.functional as F

from models import register
from models.blocks.networks import diagonal_gaussian_kl
from models.vlossy import COLOUR, VariationalLossyAutoencoder


def pairwise_kl(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """KL_d(q_i ‖ q_j) [B, B, D] between the diagonal Gaussians of a batch (zero on the diagonal)."""
    return diagonal_gaussian_kl(loc[:, None], log_scale[:, None], loc[None, :], log_scale[None, :])


def diversity_and_smoothness(loc: torch.Tensor, log_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D̄ [D], each dimension's mean pairwise KL, and S, the unbiased standard deviation of the pairs'
    total KL, over the ordered pairs i ≠ j of the batch."""
    b = len(loc)
    kl = pairwise_kl(loc, log_scale)
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=loc.device)
    pairs = kl[off_diagonal]  # [B(B − 1), D]
    return pairs.mean(0), pairs.sum(-1).std()


@register("mae")
class MutualPosteriorDivergenceVAE(VariationalLossyAutoencoder):
    version = 2  # 2: the encoder gives log σ², as the code's (was log σ; a seed diverged on a GPU)

    def __init__(self, data_shape, likelihood="bernoulli", eta=0.0, gamma=0.0, **lossy_hyper):
        super().__init__(data_shape, likelihood, **lossy_hyper)
        if self.posterior_steps:
            raise ValueError("MAE's regulariser compares diagonal Gaussian posteriors: posterior_steps = 0")
        if not (eta >= 0 and gamma >= 0):
            raise ValueError(f"eta and gamma must be non-negative, got {eta!r} and {gamma!r}")
        self.eta, self.gamma = eta, gamma

    def variational_parameters(self, x):
        q = super().variational_parameters(x)
        log_variance = F.hardtanh(q["log_scale"], -7.0, 7.0) if self.image == COLOUR else q["log_scale"]
        return {**q, "log_scale": 0.5 * log_variance}

    def loss(self, x):
        q = self.variational_parameters(x)
        loss, logged = self.free_bits_loss(x, q)
        if len(x) < 2:  # no pair to compare (a last batch of one): no regulariser, where its mean would be NaN
            return loss, logged
        diversity, smoothness = diversity_and_smoothness(q["loc"], q["log_scale"])
        loss = loss - self.eta * F.logsigmoid(diversity).sum() + self.gamma * smoothness
        return loss, {**logged, "posterior_divergence": diversity.sum(), "posterior_divergence_std": smoothness}
