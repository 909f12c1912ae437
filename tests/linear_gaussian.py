"""Probabilistic PCA: a latent-variable model whose log p(x) and posterior are exact, to check the
estimators against ground truth."""

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from models.base import LatentVariableModel
from models.blocks.networks import diagonal_gaussian, full_covariance_gaussian, standard_normal, tril_parameters


class LinearGaussian(LatentVariableModel):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I). ``encoder``: "exact" (the true posterior, full
    covariance), or a deliberately wrong one, the true means shifted by 0.3: "diagonal" (the
    diagonal of the true covariance inflated by 1.5), "full" (the true covariance inflated by
    1.5), "mixture" (two equally weighted diagonal components, the second shifted back by 0.6)."""

    def __init__(self, latent_dim=3, data_dim=6, sigma=0.5, encoder="exact", seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64))
        self.register_buffer("b", torch.randn(data_dim, generator=g, dtype=torch.float64))
        self.sigma, self.encoder = sigma, encoder

    def prior(self):
        return standard_normal(torch.zeros(self.W.shape[1], dtype=torch.float64))

    def log_likelihood(self, x, z):
        mean = z @ self.W.T + self.b
        return diagonal_gaussian(mean, torch.full_like(mean, self.sigma).log()).log_prob(x)

    def exact_posterior(self, x) -> MultivariateNormal:
        precision = torch.eye(self.W.shape[1], dtype=torch.float64) + self.W.T @ self.W / self.sigma**2
        covariance = torch.linalg.inv(precision)
        mean = (x - self.b) @ self.W @ covariance / self.sigma**2
        return MultivariateNormal(mean, covariance.expand(len(x), -1, -1))

    def variational_parameters(self, x):
        """Full covariance: the mean and the Cholesky factor with a log-diagonal; diagonal: the mean
        and the log-scales; mixture: the components' logits, means and log-scales."""
        exact = self.exact_posterior(x)
        if self.encoder in ("exact", "full"):
            shift, inflation = (0.0, 1.0) if self.encoder == "exact" else (0.3, 1.5)
            return {"loc": exact.mean + shift, "tril": tril_parameters(inflation**0.5 * exact.scale_tril)}
        log_scale = (1.5 * exact.variance).sqrt().log()
        if self.encoder == "diagonal":
            return {"loc": exact.mean + 0.3, "log_scale": log_scale}
        return {
            "logits": torch.zeros(len(x), 2, dtype=x.dtype),
            "loc": torch.stack([exact.mean + 0.3, exact.mean - 0.3], 1),
            "log_scale": torch.stack([log_scale, log_scale], 1),
        }

    def variational_family(self, parameters):
        if "tril" in parameters:
            return full_covariance_gaussian(parameters["loc"], parameters["tril"])
        components = diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        if "logits" in parameters:
            return MixtureSameFamily(Categorical(logits=parameters["logits"]), components)
        return components

    def log_marginal(self, x) -> torch.Tensor:
        covariance = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b), dtype=torch.float64)
        return MultivariateNormal(self.b, covariance).log_prob(x)

    def sample_data(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, len(self.b), generator=g, dtype=torch.float64)
