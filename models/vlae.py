"""Variational Laplace autoencoder (Park, Kim & Kim, ICML 2019): the VAE's model with q(z|x) a
full-covariance Gaussian at the posterior's mode, its precision minus the Hessian of log p(x, z).

A ReLU decoder is piecewise linear: around a point μ it is exactly g(z) = W_μ z + b_μ, with W_μ
its Jacobian (the weights with the ReLUs' 0/1 masks at μ between them). There the posterior of a
Gaussian decoder is that of probabilistic PCA, and its mean is one Newton step on log p(x, z):

    Λ = W_μᵀ C W_μ + I,   μ* = μ + Λ⁻¹ (W_μᵀ s − μ)

with s and C the gradient and curvature of log p(x|g) in the decoder's output (Gaussian: (x − g)/σ²
and 1/σ²; Bernoulli logits: x − sigmoid(g) and sigmoid(g)(1 − sigmoid(g)), the released code's
``solve_mu``). Starting from the encoder's μ₀, T damped steps μ_{t+1} = μ_t + λ_t (μ* − μ_t) find
the mode; q(z|x) = N(μ_T, Λ(μ_T)⁻¹). Training backpropagates through all T steps (nothing is
detached, as in the released code), so the encoder learns only through its start.

The damping λ_t: ``update_rate`` λ₀ and ``update_decay``: "harmonic" λ₀/(t + 1) (the released code
at 801bb4b: 0.5, 0.25, 0.17, ...), "geometric" λ₀ · 0.9^t (its first release, with λ₀ = 1), or
"none". q's family for the inference gaps is every full-covariance Gaussian (``tril``
parameters), so L[q*] optimises a mean and a Cholesky factor per point."""

import torch
from torch import nn
from torch.distributions import MultivariateNormal

from models import register
from models.base import sampled_elbo_loss
from models.blocks.networks import full_covariance_gaussian, tril_parameters
from models.vae import VAE

DECAYS = ("harmonic", "geometric", "none")


@register("vlae")
class VLAE(VAE):
    likelihoods = ("bernoulli", "gaussian")
    encoder_outputs = 1  # the mean alone, the start of the mode search (the released code's logvar head is unused)

    def __init__(self, data_shape, likelihood="bernoulli", T=4, update_rate=0.5, update_decay="harmonic", **vae_hyper):
        if not (isinstance(T, int) and T >= 0):
            raise ValueError(f"T (mode updates) must be a non-negative integer, got {T!r}")
        if update_decay not in DECAYS:
            raise ValueError(f"unknown update_decay {update_decay!r}; valid: {', '.join(DECAYS)}")
        if not 0 < update_rate <= 1:
            raise ValueError(f"update_rate must be in (0, 1], got {update_rate!r}")
        super().__init__(data_shape, likelihood, **vae_hyper)
        if not all(isinstance(layer, (nn.Linear, nn.ReLU)) for layer in self.decoder):
            activation = vae_hyper.get("activation")
            raise ValueError(f"vlae's mode update needs a piecewise-linear decoder: relu, not {activation!r}")
        self.T, self.update_rate, self.update_decay = T, update_rate, update_decay

    def step_size(self, t: int) -> float:
        if self.update_decay == "harmonic":
            return self.update_rate / (t + 1)
        if self.update_decay == "geometric":
            return self.update_rate * 0.9**t
        return self.update_rate

    def linearize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's last hidden features [B, H] at ``z`` [B, k] and their exact Jacobian in z
        [B, H, k] (with no hidden layer: z and the identity); the output layer is the caller's."""
        *hidden_layers, _ = [layer for layer in self.decoder if isinstance(layer, nn.Linear)]
        h, jacobian = z, None  # None: the identity
        for layer in hidden_layers:
            h = layer(h)
            active = (h > 0).to(h.dtype)
            h = h * active
            jacobian = (layer.weight if jacobian is None else layer.weight @ jacobian) * active[..., None]
        if jacobian is None:
            jacobian = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device).expand(len(z), -1, -1)
        return h, jacobian

    def output_gram(self) -> torch.Tensor:
        """Wᵀ W of the decoder's output layer [H, H]: the same at every step of the mode search."""
        weight = self.decoder[-1].weight
        return weight.T @ weight

    def precision_and_gradient(
        self, x: torch.Tensor, mu: torch.Tensor, output_gram: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Λ(μ) [B, k, k] and ∇ log p(x, z)|_μ [B, k]: Λ⁻¹ times the gradient is the Newton step.

        With M the hidden features' Jacobian and W the output layer, the decoder's Jacobian is W M.
        Where the curvature is one number c for every pixel (Gaussian output), Jᵀ C J = c Mᵀ (Wᵀ W) M:
        an [H, H] product shared by the batch in place of each point's [D, k] Jacobian (D = 784 to
        3,072 pixels against H = 500 units). ``output_gram``: Wᵀ W, where the caller has it."""
        hidden, hidden_jacobian = self.linearize(mu)
        output_layer = self.decoder[-1]
        score, curvature = self.likelihood.score_and_curvature(output_layer(hidden), x)
        hidden_jacobian_t = hidden_jacobian.transpose(1, 2)
        if curvature.dim() == 0:
            gram = self.output_gram() if output_gram is None else output_gram
            curvature_term = hidden_jacobian_t @ ((curvature * gram) @ hidden_jacobian)
        else:
            jacobian = output_layer.weight @ hidden_jacobian
            curvature_term = jacobian.transpose(1, 2) @ (curvature[..., None] * jacobian)
        identity = torch.eye(mu.shape[-1], dtype=mu.dtype, device=mu.device)  # the prior's precision
        gradient = (hidden_jacobian_t @ (score @ output_layer.weight)[..., None]).squeeze(-1) - mu
        return curvature_term + identity, gradient

    def variational_parameters(self, x):
        mu = self.encoder(x.flatten(1))
        gram = self.output_gram() if self.likelihood.family == "gaussian" else None  # one curvature for all pixels
        for t in range(self.T):
            precision, gradient = self.precision_and_gradient(x, mu, gram)
            mu = mu + self.step_size(t) * torch.linalg.solve(precision, gradient)
        precision, _ = self.precision_and_gradient(x, mu, gram)
        laplace = MultivariateNormal(mu, precision_matrix=precision, validate_args=False)
        return {"loc": mu, "tril": tril_parameters(laplace.scale_tril)}

    def variational_family(self, parameters):
        return full_covariance_gaussian(parameters["loc"], parameters["tril"])

    def loss(self, x):
        return sampled_elbo_loss(self, x, self.samples)
