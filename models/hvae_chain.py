"""The hierarchical VAE that Zhao, Song & Ermon (ICML 2017) argue against: the same latent layers as
the ladder, z_0 (lowest) .. z_{L−1} (top), stacked in a Markov chain. Generation runs down the chain,
p(z_{L−1}) = N(0, I), p(z_l | z_{l+1}) and p(x | z_0), each conditional a diagonal Gaussian (or the
pixels' Bernoulli) from an MLP of the layer above; inference runs up it, q(z_0 | x) then
q(z_{l+1} | z_l). The paper proves that such a chain, trained on the ELBO, can represent everything in
its lowest layer and leave the others unused; the suite measures whether it does.

q(z|x) and p(z) are chains, not factorised Gaussians: their densities are the sums of the layers'
conditional log-densities, sampled ancestrally (``GaussianChain``). The inference gaps optimise
q(z_0|x)'s mean and scale per point, the upper conditionals being the model's networks (as an IAF's
MADEs are).

Every Gaussian of the chain but the top prior N(0, I) has the ladder code's standard deviation,
sigmoid(·) + 0.001, as the ladder's posterior has (``sigmoid_log_scale``): the same latent layers,
the same bounds, so that the two models differ in their structure alone."""

import math

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from models import register
from models.base import LatentVariableModel, sampled_elbo_loss
from models.blocks.networks import PixelLikelihood, mlp, sigmoid_log_scale

LOG_2PI = math.log(2 * math.pi)


def _gaussian_log_prob(z, loc, log_scale):
    return (-0.5 * ((z - loc) * torch.exp(-log_scale)).pow(2) - log_scale - 0.5 * LOG_2PI).sum(-1)


class GaussianChain(Distribution):
    """A Markov chain of diagonal Gaussian blocks over one flattened vector: the first block
    N(``loc``, exp(``log_scale``)²), each next block a Gaussian whose (loc, log-scale) a ``step``
    computes from the block before. ``blocks`` are the (start, size) of each block in the vector, in
    the chain's order (a prior runs top-down, a posterior bottom-up)."""

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, log_scale, steps, blocks, batch_shape):
        self.loc, self.log_scale, self.steps, self.blocks = loc, log_scale, steps, blocks
        self._vector_order = sorted(range(len(blocks)), key=lambda k: blocks[k][0])  # chain order -> vector order
        super().__init__(torch.Size(batch_shape), torch.Size([sum(size for _, size in blocks)]), validate_args=False)

    def _split(self, z):
        return [z[..., start : start + size] for start, size in self.blocks]

    def rsample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape + torch.Size([self.blocks[0][1]])
        block = self.loc + self.log_scale.exp() * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        drawn = [block]
        for step in self.steps:
            loc, log_scale = step(block)
            block = loc + log_scale.exp() * torch.randn_like(loc)
            drawn.append(block)
        return torch.cat([drawn[k] for k in self._vector_order], -1)

    @property
    def part_sizes(self) -> list[int]:
        """The blocks' sizes in the vector's order."""
        return [size for _, size in sorted(self.blocks)]

    def part_log_probs(self, z):
        """[..., blocks] each block's conditional log-density given the block before it in the chain,
        in the vector's order: they add up to ``log_prob`` (a layer's share of a KL)."""
        parts = self._split(z)
        conditionals = [_gaussian_log_prob(parts[0], self.loc, self.log_scale)]
        for step, previous, block in zip(self.steps, parts[:-1], parts[1:]):
            loc, log_scale = step(previous)
            conditionals.append(_gaussian_log_prob(block, loc, log_scale))
        return torch.stack([conditionals[k] for k in self._vector_order], -1)

    def log_prob(self, z):
        return self.part_log_probs(z).sum(-1)


class _Conditional(nn.Module):
    """(loc, log-scale) of a Gaussian block from the block before it: an MLP, its scale the ladder's."""

    def __init__(self, n_in, n_out, hidden):
        super().__init__()
        self.net = mlp([n_in, hidden, hidden, 2 * n_out], "relu")

    def forward(self, previous):
        loc, raw_scale = self.net(previous).chunk(2, dim=-1)
        return loc, sigmoid_log_scale(raw_scale)


@register("hvae_chain")
class MarkovChainHierarchicalVAE(LatentVariableModel):
    likelihoods = PixelLikelihood.FAMILIES
    version = 2  # 2: every conditional's scale bounded as the ladder's (unbounded, it diverged on a GPU)

    def __init__(self, data_shape, likelihood="bernoulli", latent_dims=(2, 2, 2), hidden=1024, samples=1):
        super().__init__()
        latent_dims = list(latent_dims)
        if len(latent_dims) < 2 or not all(isinstance(d, int) and d >= 1 for d in latent_dims):
            raise ValueError(f"latent_dims must list at least two positive sizes, bottom first; got {latent_dims!r}")
        x_dim = math.prod(data_shape)
        self.likelihood = PixelLikelihood(likelihood)
        self.encoder = mlp([x_dim, hidden, hidden, 2 * latent_dims[0]], "relu")
        self.up = nn.ModuleList(_Conditional(a, b, hidden) for a, b in zip(latent_dims[:-1], latent_dims[1:]))
        self.down = nn.ModuleList(_Conditional(b, a, hidden) for a, b in zip(latent_dims[:-1], latent_dims[1:]))
        self.decoder = mlp([latent_dims[0], hidden, hidden, x_dim], "relu")
        starts = [sum(latent_dims[:layer]) for layer in range(len(latent_dims))]
        self.bottom_up = list(zip(starts, latent_dims))
        self.latent_dims, self.samples = latent_dims, samples
        self.register_buffer("_top", torch.zeros(latent_dims[-1]))

    def latent_parts(self):
        return {f"layer{layer}": d for layer, d in enumerate(self.latent_dims)}

    def prior(self):
        return GaussianChain(self._top, self._top, list(reversed(self.down)), self.bottom_up[::-1], ())

    def variational_parameters(self, x):
        loc, raw_scale = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": sigmoid_log_scale(raw_scale)}

    def variational_family(self, parameters):
        loc = parameters["loc"]
        return GaussianChain(loc, parameters["log_scale"], list(self.up), self.bottom_up, loc.shape[:-1])

    def log_likelihood(self, x, z):
        return self.likelihood(self.decoder(z[..., : self.latent_dims[0]]), x)

    def mean_image(self, z):
        return self.likelihood.mean(self.decoder(z[..., : self.latent_dims[0]]))

    def loss(self, x):
        return sampled_elbo_loss(self, x, self.samples)
