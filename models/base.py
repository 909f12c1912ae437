"""The protocol every method implements, and the pieces of it that methods share.

A method is a latent-variable model p(x, z) = p(x|z) p(z) with an inference procedure q(z|x).
The harness and every metric talk to it only through this protocol:

- ``posterior(x)``: a ``torch.distributions.Distribution`` with batch shape ``[B]``: the q(z|x) the
  method uses at test time (for iterative methods, after refinement). It needs ``sample`` (and
  ``rsample`` where the family has one: a mixture's ELBO is reparameterized per component)
  and ``log_prob``; a full-covariance Gaussian, a mixture or a flow fits as well as a diagonal Gaussian.
  By default it is ``variational_family(variational_parameters(x))``:
- ``variational_parameters(x)``: q(z|x)'s parameters as a dict of unconstrained tensors, each with the
  batch as its first dimension (a mean and a log-scale; a mean and a raw Cholesky factor; mixture
  logits...), and ``variational_family(parameters)`` the distribution they define. The inference
  gaps optimise these parameters per data point, so q* stays in the method's own family. A method
  without them still works; it has no gaps.
- ``prior()``: p(z) as a distribution with empty batch shape (a Gaussian mixture whose discrete
  component is summed out, or an autoregressive-flow prior, fit too).
- ``log_likelihood(x, z)``: log p(x|z), the decoder (an MLP, or an autoregressive PixelCNN).
- ``log_joint(x, z)``: log p(x|z) + log p(z).
- ``loss(x)``: the scalar training loss and a dict of per-batch diagnostics (``elbo``, ``recon``,
  ``kl``, ...) as scalar tensors.
- ``cluster_assignments(x)``: for a method with a discrete latent (VLAC, GM-DGM), the cluster of each
  point as read from the model; None (the default) for the others, which are clustered by k-means
  on their posterior means.

``z`` is whatever ``posterior(x).sample()`` returns: one tensor for a flat latent, a tuple of layer
tensors for a ladder. The metrics never look inside it; they pass samples back to ``log_joint`` and
to ``posterior(x).log_prob`` — and only ever ask ``log_prob`` of samples drawn from that same q
object, just drawn (so a flow without an inverse, such as an inverse autoregressive flow that caches
its last output, works; ``tests/test_measurement.py`` runs every metric on one whose inverse
raises). Samples carry leading sample dimensions (``[K, B, ...]``), and ``log_joint`` /
``log_likelihood`` must broadcast over them, returning ``[K, B]``.

The metrics call ``posterior`` under ``torch.no_grad()``: a method that refines q by gradient steps
(SA-VAE, Laplace mode finding) wraps that refinement in ``torch.enable_grad()`` itself.

Training hooks, all optional (the defaults are the plain recipe VAE and IWAE use); the harness calls
them in this order: ``initialize`` (data-dependent initialisation, dataset statistics),
``configure_optimizer`` (from the spec's training table), ``evaluation_model`` (the weights that are
validated and tested: an exponential moving average when the spec asks for one), then per epoch
``on_epoch_start`` (KL warm-up, growing a mixture, annealing), the steps on ``loss``, and validation.
A method adds a training knob by overriding the hook it belongs to, not by editing the harness.

``latent_parts()`` names the parts of a structured latent (ladder layers): the metrics that can
(KL, active units, clustering) then carry a value per part beside the whole.

``mean_image(z)``: the mean of p(x|z) [..., C·H·W] (Bernoulli probabilities, a Gaussian's means), with
which the harness draws every method's samples from the prior and reconstructions of test images;
None (the default) where the decoder has no mean to draw in one pass (an autoregressive PixelCNN).
``image_grids()``: the other pictures a trained method draws of itself (component-wise generation,
layer traversals), by name, each [rows, columns, *data_shape] (or [rows, columns, C·H·W]) in the
data's space; the harness adds back the training mean of centred data and saves them as PNGs beside
the run's record. None by default.
"""

import torch
from torch import nn
from torch.distributions import Distribution, MixtureSameFamily, kl_divergence

from models.blocks import optim


class LatentVariableModel(nn.Module):
    """Base class of every method; subclasses register themselves with ``models.register``."""

    # The pixel likelihoods p(x|z) the method implements; its constructor takes ``data_shape``,
    # ``likelihood`` (one of these, from the dataset) and its hyper-parameters as keywords.
    likelihoods: tuple[str, ...] = ("bernoulli",)
    # The image shapes its networks are built for (a convolutional encoder); None: any (an MLP flattens).
    image_shapes: tuple[tuple[int, ...], ...] | None = None
    # Part of every run id: bump it when a change makes this method's earlier records incomparable
    # (a default hyper-parameter's value, the loss, the architecture). Adding a keyword with a
    # default needs no bump: run ids hash only the hyper-parameters a spec sets.
    version: int = 1

    def prior(self) -> Distribution:
        raise NotImplementedError

    def posterior(self, x: torch.Tensor) -> Distribution:
        return self.variational_family(self.variational_parameters(x))

    def variational_parameters(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def variational_family(self, parameters: dict[str, torch.Tensor]) -> Distribution:
        raise NotImplementedError

    def cluster_assignments(self, x: torch.Tensor) -> torch.Tensor | None:
        return None

    def log_likelihood(self, x: torch.Tensor, z) -> torch.Tensor:
        raise NotImplementedError

    def log_joint(self, x: torch.Tensor, z) -> torch.Tensor:
        return self.log_likelihood(x, z) + self.prior().log_prob(z)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def mean_image(self, z) -> torch.Tensor | None:
        return None

    def image_grids(self) -> dict[str, torch.Tensor]:
        return {}

    def latent_parts(self) -> dict[str, int] | None:
        """The named parts of the flattened latent, in order, with their sizes (a ladder's layers:
        ``{"layer1": 2, "layer2": 2}``); None for a latent without parts."""
        return None

    # --- training hooks ------------------------------------------------------------------------

    def initialize(self, x: torch.Tensor, statistics: dict) -> None:
        """Before the first step, with a first training batch ``x`` and the dataset's ``statistics``
        (``pixel_variance`` for centred data): data-dependent initialisation. By default each
        submodule with an ``initialize_from_data(x, statistics)`` method is given them (the pixel
        likelihood starts its scale at the data variance)."""
        for module in self.modules():
            if hasattr(module, "initialize_from_data"):
                module.initialize_from_data(x, statistics)

    def configure_optimizer(self, training: dict) -> torch.optim.Optimizer:
        """The optimizer, from the spec's training table (``models.blocks.optim.build_optimizer``: Adam or
        Adamax, gradient clipping by norm)."""
        return optim.build_optimizer(self.parameters(), training)

    def evaluation_model(self, optimizer: torch.optim.Optimizer, training: dict) -> "LatentVariableModel":
        """The model whose weights are validated and tested: this one, or with ``ema_decay`` > 0 an
        exponential moving average of its weights, updated after every optimizer step."""
        if training["ema_decay"] > 0:
            return optim.exponential_moving_average(self, optimizer, training["ema_decay"])
        return self

    def on_epoch_start(self, epoch: int, training: dict) -> dict[str, float]:
        """Before each (0-based) ``epoch``: KL warm-up, adding a mixture component, annealing. The
        values returned (e.g. ``{"kl_weight": 0.5}``) are logged in the run's curves. Parameters
        must exist from construction (the optimizer is built once); a hook may freeze or use them."""
        return {}


def reparameterized_elbo(
    model: LatentVariableModel, x: torch.Tensor, q: Distribution, samples: int, reconstruction: bool = False
):
    """Each point's ELBO E_q[log p(x, z) − log q(z|x)] from ``samples`` draws, differentiable in q's
    parameters; with ``reconstruction`` also E_q[log p(x|z)] (a pair; one more prior density a draw,
    which the inference gaps' inner loop does without). A mixture (``MixtureSameFamily``) has no
    reparameterized sample, but its ELBO is Σ_k π_k E_{q_k}[...]: each component is sampled with its
    own reparameterization and weighted by its probability."""
    if isinstance(q, MixtureSameFamily):
        components = q.component_distribution
        z = components.rsample((samples,))  # [S, B, K, D]: every component of every point
        k = components.batch_shape[-1]
        z = z.movedim(-1 - len(q.event_shape), 0).flatten(0, 1)  # [K * S, B, D]
        weights = q.mixture_distribution.probs.movedim(-1, 0)  # [K, B]
        mean = lambda t: (weights * t.unflatten(0, (k, samples)).mean(1)).sum(0)  # noqa: E731
    else:
        z = q.rsample((samples,))
        mean = lambda t: t.mean(0)  # noqa: E731
    log_joint = model.log_joint(x, z)
    elbo = mean(log_joint - q.log_prob(z))
    return (elbo, mean(log_joint - model.prior().log_prob(z))) if reconstruction else elbo


def sampled_elbo_loss(model: LatentVariableModel, x: torch.Tensor, samples: int = 1):
    """The training loss of a method whose q has no closed-form KL from the prior (a flow, a
    full-covariance Laplace posterior): minus the ELBO estimated from ``samples`` reparameterized
    draws of ``model.posterior(x)``, log p(x|z) + log p(z) − log q(z|x) averaged over them; with the
    per-batch diagnostics ``elbo``, ``recon`` and ``kl`` (both Monte-Carlo)."""
    q = model.posterior(x)
    z = q.rsample((samples,))
    recon = model.log_likelihood(x, z)
    kl = q.log_prob(z) - model.prior().log_prob(z)
    elbo = (recon - kl).mean(0)
    return -elbo.mean(), {"elbo": elbo.mean(), "recon": recon.mean(), "kl": kl.mean()}


def has_analytic_kl(q: Distribution, prior: Distribution) -> bool:
    """Whether torch.distributions knows KL(q || prior) in closed form."""
    try:
        kl_divergence(q, prior)
    except NotImplementedError:
        return False
    return True
