"""Variational Lossy Autoencoder (Chen et al., ICLR 2017) on 28×28 binary images: a ResNet encoder's
diagonal Gaussian q(z|x); an autoregressive-flow prior p(z) (``prior_steps`` steps, each a MADE
of ``prior_hidden`` ReLU units, mean-only by default as in the paper's binary experiments; the
order of the dimensions reversed between steps); and a PixelCNN decoder whose receptive field is a
small window of earlier pixels, conditioned on feature maps of z, so that what the window cannot
see (global structure) must be carried by z: a lossy code.

Training maximises the ELBO with free bits (Kingma et al. 2016): the KL term of a batch counts at
least ``free_bits_per_dim`` × the number of pixels nats (Chen et al.: 0.01 nats per data dimension),
one group for the whole latent. The KL is sampled (log q(z|x) − log p(z)): the flow prior has no
closed form. Adamax, Polyak averaging and the weight-normalised layers' data-dependent
initialisation come from the spec and the ``initialize`` hook.

The same module gives the paper's baselines and ablation rows: ``prior_steps = 0`` a Gaussian prior
(Appendix D's "PixelCNN decoder + Gaussian prior"), ``decoder = "factorized"`` independent Bernoulli
pixels from the trunk and two convolutions (Table 1's "AF VAE"), ``decoder = "unconditional"`` the
PixelCNN alone, blind to z (Tables 2–4's "Unconditional Decoder": its q can match the prior, and the
importance-sampled NLL is then its exact likelihood).

Deviations from the paper, where it is silent or the suite's blocks differ (said in the spec too):
the decoder is the suite's gated PixelCNN (``models.pixelcnn``: no blind spot; the paper's has
plain masked convolutions in ResNet blocks with tied weights), conditioned on z through
``models.convnets.LinearTrunk28`` (the closest open implementation's trunk; the paper's is "the
ResNet VAE of the IAF paper", whose layer counts it does not give)."""

import torch
from torch import nn
from torch.distributions import TransformedDistribution

from models import register
from models.base import LatentVariableModel
from models.convnets import LinearTrunk28, ResNetEncoder28, data_dependent_init
from models.flows import MADE, AutoregressiveFlowStep
from models.networks import (
    bernoulli_log_prob,
    diagonal_gaussian,
    diagonal_gaussian_rsample,
    standard_normal,
    standard_normal_log_prob,
)
from models.pixelcnn import GatedPixelCNN

DECODERS = ("pixelcnn", "factorized", "unconditional")


@register("vlossy")
class VariationalLossyAutoencoder(LatentVariableModel):
    likelihoods = ("bernoulli",)
    image_shapes = ((1, 28, 28), (28, 28))

    def __init__(
        self,
        data_shape,
        likelihood="bernoulli",
        latent_dim=64,
        prior_steps=4,
        prior_hidden=(640, 640),
        mean_only_prior=True,
        decoder="pixelcnn",
        pixelcnn_layers=6,
        pixelcnn_filters=12,
        pixelcnn_kernel=3,
        trunk_channels=4,
        free_bits_per_dim=0.01,
        samples=1,
    ):
        super().__init__()
        if tuple(data_shape) not in self.image_shapes:
            raise ValueError(f"vlossy's networks are for 28×28 images, not {tuple(data_shape)}")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; valid: {', '.join(DECODERS)}")
        if not (isinstance(prior_steps, int) and prior_steps >= 0) or not free_bits_per_dim >= 0:
            raise ValueError(
                f"prior_steps must be a non-negative integer and free_bits_per_dim non-negative, "
                f"got {prior_steps!r} and {free_bits_per_dim!r}"
            )
        self.encoder = ResNetEncoder28(2 * latent_dim)
        self.prior_steps = nn.ModuleList(
            MADE(
                latent_dim,
                list(prior_hidden),
                outputs=1 if mean_only_prior else 2,
                reverse=bool(t % 2),
                activation="relu",
            )
            for t in range(prior_steps)
        )
        conditioned = decoder == "pixelcnn"
        self.trunk = None if decoder == "unconditional" else LinearTrunk28(latent_dim, trunk_channels)
        self.pixelcnn = (
            None
            if decoder == "factorized"
            else GatedPixelCNN(
                1, pixelcnn_filters, pixelcnn_layers, pixelcnn_kernel, condition_channels=trunk_channels * conditioned
            )
        )
        # the factorized decoder's logits: the trunk's feature maps mixed by two 3×3 convolutions
        # (the trunk's ELU alone would bound them below by −1)
        self.factorized_head = (
            nn.Sequential(
                nn.Conv2d(trunk_channels, pixelcnn_filters, 3, padding=1),
                nn.ELU(),
                nn.Conv2d(pixelcnn_filters, 1, 3, padding=1),
            )
            if decoder == "factorized"
            else None
        )
        self.register_buffer("_origin", torch.zeros(latent_dim))
        self.free_bits = free_bits_per_dim * 28 * 28
        self.samples = samples

    def prior(self):
        base = standard_normal(self._origin)
        steps = [AutoregressiveFlowStep(made) for made in self.prior_steps]
        return TransformedDistribution(base, steps, validate_args=False) if steps else base

    def variational_parameters(self, x):
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": log_scale}

    def variational_family(self, parameters):
        return diagonal_gaussian(parameters["loc"], parameters["log_scale"])

    def pixel_logits(self, x, z):
        """The Bernoulli logits [..., B, 784] of x's pixels given z [..., B, D]: pixel i's from z and
        from the pixels before it in raster order (within the PixelCNN's window) only."""
        leading = z.shape[:-1]
        if self.trunk is None:  # blind to z: one pass per image, the same for every z
            return self.pixelcnn(x.reshape(-1, 1, 28, 28)).reshape(len(x), 28 * 28).expand(*leading, -1)
        features = self.trunk(z.reshape(-1, z.shape[-1]))  # [N, C, 28, 28]
        if self.pixelcnn is None:
            return self.factorized_head(features).reshape(*leading, 28 * 28)
        copies = len(features) // len(x)  # z's rows run over the batch last
        images = x.reshape(1, len(x), 1, 28, 28).expand(copies, -1, -1, -1, -1).reshape(-1, 1, 28, 28)
        return self.pixelcnn(images, features).reshape(*leading, 28 * 28)

    def log_likelihood(self, x, z):
        return bernoulli_log_prob(self.pixel_logits(x, z), x.reshape(len(x), 28 * 28))

    def sample_images(self, n: int) -> torch.Tensor:
        """``n`` binary images [n, 28, 28] from the model: z from the prior (one pass per dimension and
        flow step), then the pixels in raster order (one decoder pass each)."""
        z = self.prior().sample((n,))
        x = torch.zeros(n, 28, 28, device=z.device)
        flat = x.view(n, 28 * 28)
        for i in range(28 * 28):
            flat[:, i] = torch.bernoulli(torch.sigmoid(self.pixel_logits(x, z)[:, i]))
        return x

    def loss(self, x):
        return self.free_bits_loss(x, self.variational_parameters(x))

    def free_bits_loss(self, x, q: dict) -> tuple[torch.Tensor, dict]:
        """Minus the ELBO from one draw of z ~ q (q's parameters given), the batch's KL counted at
        least at the free-bits floor (below it the KL's gradient is switched off)."""
        z, eps = diagonal_gaussian_rsample(q["loc"], q["log_scale"], (self.samples,))
        log_q = standard_normal_log_prob(eps) - q["log_scale"].sum(-1)
        recon = self.log_likelihood(x, z).mean(0)
        kl = (log_q - self.prior().log_prob(z)).mean(0)
        elbo = recon - kl
        loss = -recon.mean() + torch.clamp(kl.mean(), min=self.free_bits)
        return loss, {"elbo": elbo.mean(), "recon": recon.mean(), "kl": kl.mean()}

    def initialize(self, x, statistics):
        """Data-dependent initialisation of the weight-normalised layers, on the first batch."""
        data_dependent_init(self, lambda: self.loss(x))
