"""Variational Lossy Autoencoder (Chen et al., ICLR 2017) on 28×28 binary images: a ResNet encoder's
diagonal Gaussian q(z|x); an autoregressive-flow prior p(z) (``prior_steps`` steps, each a MADE
of ``prior_hidden`` ReLU units, mean-only by default as in the paper's binary experiments; the
order of the dimensions reversed between steps); and a PixelCNN decoder whose receptive field is a
small window of earlier pixels, conditioned on feature maps of z, so that what the window cannot
see (global structure) must be carried by z: a lossy code.

On 32×32 colour images (8-bit pixels, the ``discretized_logistic`` likelihood: the paper's CIFAR-10
configuration, Appendix B) the same model has the colour networks: z is ``latent_channels`` feature
maps of 8×8 from the ResNet VLAE encoder (``encoder = "resnet"``, ``models.blocks.convnets.ResNetEncoder32``)
or the DenseNet VLAE's (``"densenet"``, ``DenseNetEncoder32``: Table 5's best row); each prior step's
network is a PixelCNN over those maps (``models.blocks.flows.SpatialMADE``, ``prior_hidden`` its layers);
the decoder trunk mirrors the ResNet encoder up to 32×32 feature maps, and the PixelCNN's output per pixel
is a mixture of ``mixture_components`` discretized logistics whose channels depend on each other
(PixelCNN++'s, ``models.blocks.networks.discretized_logistic_mixture_log_prob``). ``latent_dim`` and
``trunk_channels`` size the binary networks; ``latent_channels``, ``encoder_channels`` and
``mixture_components`` the colour ones. There ``decoder = "pixelcnn++"`` puts a PixelCNN++
(``models.blocks.pixelcnn_pp``: ``pixelcnn_levels`` resolutions of ``pixelcnn_resnets`` gated residual
blocks of ``pixelcnn_filters`` maps, dropout ``pixelcnn_dropout``; the MAE code's colour decoder) in
place of the gated PixelCNN (``pixelcnn_layers`` and ``pixelcnn_kernel`` size that one alone).

Training maximises the ELBO with free bits (Kingma et al. 2016): the KL term of a batch counts at
least ``free_bits_per_dim`` × the number of pixels nats (Chen et al.: 0.01 nats per data dimension),
one group for the whole latent. The KL is sampled (log q(z|x) − log p(z)): the flow prior has no
closed form. Adamax, Polyak averaging and the weight-normalised layers' data-dependent
initialisation come from the spec and the ``initialize`` hook.

The same module gives the paper's baselines and ablation rows: ``prior_steps = 0`` a Gaussian prior
(Appendix D's "PixelCNN decoder + Gaussian prior"), ``decoder = "factorized"`` independent Bernoulli
pixels from the trunk and two convolutions (Table 1's "AF VAE"), ``decoder = "unconditional"`` the
PixelCNN alone, blind to z (Tables 2–4's "Unconditional Decoder"), and ``posterior_steps`` > 0 an
inverse autoregressive flow posterior (Kingma et al. 2016, the gated step of ``models.blocks.flows``) on the
encoder's Gaussian, each step a MADE of ``posterior_hidden`` ReLU units (on colour images a PixelCNN
over z's maps) conditioned on a context the encoder adds, as many numbers as z has: with a Gaussian
prior and the factorized decoder Table 1's "IAF VAE", with the PixelCNN decoder the IAF posterior
that Section 4 finds 0.6 nat worse than the AF prior. The unconditional PixelCNN has no code, so no
encoder and no flow; q(z|x) is p(z) = N(0, I) itself, its KL is exactly 0 and the importance-sampled NLL
its exact likelihood (a learned q would sit anywhere under the free-bits floor, which would then
only add noise to the estimate).

Deviations from the paper, where it is silent or the suite's blocks differ (said in the spec too):
the decoder is the suite's gated PixelCNN (``models.blocks.pixelcnn``: no blind spot; the paper's has
plain masked convolutions in ResNet blocks with tied weights), conditioned on z through
``models.blocks.convnets.LinearTrunk28`` (the closest open implementation's trunk; the paper's is "the
ResNet VAE of the IAF paper", whose layer counts it does not give). On colour images: the DenseNet
encoder's growth rates are Ma et al.'s code's (the paper gives none); the paper's decoder, a shallow
PixelCNN++ with a restricted window, is the suite's gated PixelCNN with the mixture output (its window
set by its layers and kernels: three 3×3 layers and a 1×1 one see 4 rows above and 7 columns, the
paper's 7×4; ``"pixelcnn++"``, the MAE code's, has no such restriction); hard free bits, not App. C's
soft ones."""

import math

import torch
from torch import nn
from torch.distributions import TransformedDistribution

from models import register
from models.base import LatentVariableModel
from models.blocks.convnets import (
    DenseNetEncoder32,
    LinearTrunk28,
    ResNetEncoder28,
    ResNetEncoder32,
    ResNetTrunk32,
    data_dependent_init,
)
from models.blocks.flows import MADE, AutoregressiveFlowStep, InverseAutoregressiveStep, SpatialMADE
from models.blocks.networks import (
    MIXTURE_PARAMETERS,
    bernoulli_log_prob,
    diagonal_gaussian,
    diagonal_gaussian_rsample,
    discretized_logistic_mixture_log_prob,
    sample_discretized_logistic_mixture,
    standard_normal,
    standard_normal_log_prob,
)
from models.blocks.pixelcnn import GatedPixelCNN
from models.blocks.pixelcnn_pp import PixelCNNPlusPlus

DECODERS = ("pixelcnn", "pixelcnn++", "factorized", "unconditional")
ENCODERS = ("resnet", "densenet")  # on colour images; binary ones have the ResNet alone
BINARY, COLOUR = (1, 28, 28), (3, 32, 32)
LATENT_SIDE = 8  # colour images: z is feature maps of 8×8
SAMPLES_SIDE = 6  # the run's pictures: 6 × 6 samples, 28 × 28 (or 32 × 32) decoder passes each


@register("vlossy")
class VariationalLossyAutoencoder(LatentVariableModel):
    likelihoods = ("bernoulli", "discretized_logistic")
    image_shapes = ((1, 28, 28), (28, 28), COLOUR)

    def __init__(
        self,
        data_shape,
        likelihood="bernoulli",
        latent_dim=64,
        prior_steps=4,
        prior_hidden=(640, 640),
        mean_only_prior=True,
        posterior_steps=0,
        posterior_hidden=(640, 640),
        decoder="pixelcnn",
        pixelcnn_layers=6,
        pixelcnn_filters=12,
        pixelcnn_kernel=3,
        pixelcnn_levels=3,
        pixelcnn_resnets=6,
        pixelcnn_dropout=0.0,
        trunk_channels=4,
        free_bits_per_dim=0.01,
        samples=1,
        latent_channels=16,
        encoder="resnet",
        encoder_channels=(48, 96),
        mixture_components=10,
    ):
        super().__init__()
        self.image = COLOUR if tuple(data_shape) == COLOUR else BINARY
        if tuple(data_shape) not in self.image_shapes:
            raise ValueError(f"vlossy's networks are for 28×28 binary or 32×32 colour images, not {tuple(data_shape)}")
        wanted = "discretized_logistic" if self.image == COLOUR else "bernoulli"
        if likelihood != wanted:
            raise ValueError(f"vlossy on {tuple(data_shape)} images takes the {wanted} likelihood, not {likelihood!r}")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; valid: {', '.join(DECODERS)}")
        if decoder == "pixelcnn++" and self.image != COLOUR:
            raise ValueError(f"the pixelcnn++ decoder is for 32×32 colour images, not {tuple(data_shape)}")
        valid_encoders = ENCODERS if self.image == COLOUR else ENCODERS[:1]
        if encoder not in valid_encoders:
            raise ValueError(
                f"unknown encoder {encoder!r} on {tuple(data_shape)} images; valid: {', '.join(valid_encoders)}"
            )
        if not (isinstance(prior_steps, int) and prior_steps >= 0) or not free_bits_per_dim >= 0:
            raise ValueError(
                f"prior_steps must be a non-negative integer and free_bits_per_dim non-negative, "
                f"got {prior_steps!r} and {free_bits_per_dim!r}"
            )
        if not (isinstance(posterior_steps, int) and posterior_steps >= 0):
            raise ValueError(f"posterior_steps must be a non-negative integer, got {posterior_steps!r}")
        if decoder == "unconditional" and (prior_steps or posterior_steps):
            raise ValueError(
                f"the unconditional decoder has no code for a flow prior or posterior: prior_steps and "
                f"posterior_steps = 0, not {prior_steps} and {posterior_steps}"
            )
        outputs = 1 if mean_only_prior else 2
        # an IAF posterior's steps read a context from the encoder, as many numbers (maps) as z has
        encoder_outputs = 3 if posterior_steps else 2
        if self.image == COLOUR:
            latent_dim = latent_channels * LATENT_SIDE**2
            if encoder == "densenet":
                build_encoder = lambda: DenseNetEncoder32(encoder_outputs * latent_channels)
            else:
                build_encoder = lambda: ResNetEncoder32(encoder_outputs * latent_channels, tuple(encoder_channels))
            prior_network = lambda t: SpatialMADE(
                latent_channels, LATENT_SIDE, list(prior_hidden), outputs, reverse=bool(t % 2)
            )
            posterior_network = lambda t: SpatialMADE(
                latent_channels, LATENT_SIDE, list(posterior_hidden), 2, reverse=bool(t % 2), context=latent_channels
            )
            trunk = lambda: ResNetTrunk32(latent_channels, tuple(encoder_channels))
            self.parameters_per_pixel = MIXTURE_PARAMETERS * mixture_components
        else:
            build_encoder = lambda: ResNetEncoder28(encoder_outputs * latent_dim)
            prior_network = lambda t: MADE(
                latent_dim, list(prior_hidden), outputs=outputs, reverse=bool(t % 2), activation="relu"
            )
            posterior_network = lambda t: MADE(
                latent_dim, list(posterior_hidden), context=latent_dim, reverse=bool(t % 2), activation="relu"
            )
            trunk = lambda: LinearTrunk28(latent_dim, trunk_channels)
            self.parameters_per_pixel = 1  # a Bernoulli logit
        self.prior_steps = nn.ModuleList(prior_network(t) for t in range(prior_steps))
        self.posterior_steps = nn.ModuleList(posterior_network(t) for t in range(posterior_steps))
        unconditional = decoder == "unconditional"
        self.encoder = None if unconditional else build_encoder()
        self.trunk = None if unconditional else trunk()
        condition = 0 if unconditional else self.trunk.channels
        channels = self.image[0]
        if decoder == "factorized":
            self.pixelcnn = None
        elif decoder == "pixelcnn++":
            self.pixelcnn = PixelCNNPlusPlus(
                channels,
                pixelcnn_filters,
                pixelcnn_levels,
                pixelcnn_resnets,
                condition_channels=condition,
                out_channels=self.parameters_per_pixel,
                dropout=pixelcnn_dropout,
            )
        else:
            self.pixelcnn = GatedPixelCNN(
                channels,
                pixelcnn_filters,
                pixelcnn_layers,
                pixelcnn_kernel,
                condition_channels=condition,
                out_channels=self.parameters_per_pixel,
            )
        # the factorized decoder's output: the trunk's feature maps mixed by two 3×3 convolutions
        # (the trunk's ELU alone would bound Bernoulli logits below by −1)
        self.factorized_head = (
            nn.Sequential(
                nn.Conv2d(self.trunk.channels, pixelcnn_filters, 3, padding=1),
                nn.ELU(),
                nn.Conv2d(pixelcnn_filters, self.parameters_per_pixel, 3, padding=1),
            )
            if decoder == "factorized"
            else None
        )
        self.register_buffer("_origin", torch.zeros(latent_dim))
        self.free_bits = 0.0 if self.encoder is None else free_bits_per_dim * math.prod(self.image)
        self.samples = samples

    def prior(self):
        base = standard_normal(self._origin)
        steps = [AutoregressiveFlowStep(made) for made in self.prior_steps]
        return TransformedDistribution(base, steps, validate_args=False) if steps else base

    def variational_parameters(self, x):
        if self.encoder is None:  # no code: q(z|x) = p(z) = N(0, I)
            zero = self._origin.expand(len(x), -1)
            return {"loc": zero, "log_scale": zero}
        if not self.posterior_steps:
            loc, log_scale = self.encoder(x).chunk(2, dim=-1)
            return {"loc": loc, "log_scale": log_scale}
        loc, log_scale, context = self.encoder(x).chunk(3, dim=-1)
        return {"loc": loc, "log_scale": log_scale, "context": context}

    def _iaf_steps(self, parameters) -> list[InverseAutoregressiveStep]:
        return [InverseAutoregressiveStep(made, parameters["context"]) for made in self.posterior_steps]

    def variational_family(self, parameters):
        base = diagonal_gaussian(parameters["loc"], parameters["log_scale"])
        steps = self._iaf_steps(parameters)
        return TransformedDistribution(base, steps, validate_args=False) if steps else base

    def decoder_output(self, x, z):
        """The pixel distribution's parameters [..., B, P, H, W] for images x [B, ...] given z [..., B, D]
        (P = 1 Bernoulli logit, or a colour pixel's mixture parameters): pixel i's from z and from the
        pixels before it in raster order (within the PixelCNN's window) only."""
        leading, images = z.shape[:-1], x.reshape(len(x), *self.image)
        if self.trunk is None:  # blind to z: one pass per image, the same for every z
            out = self.pixelcnn(images)
            return out.expand(*leading, *out.shape[1:])
        features = self.trunk(z.reshape(-1, z.shape[-1]))  # [N, C, H, W]
        copies = len(features) // len(x)  # z's rows run over the batch last
        out = self._decode(images.expand(copies, *images.shape).reshape(-1, *self.image), features)
        return out.reshape(*leading, *out.shape[1:])

    def _decode(self, images, features):
        """The decoder's output [N, P, H, W] for images [N, C, H, W] and the trunk's features of their z."""
        return self.factorized_head(features) if self.pixelcnn is None else self.pixelcnn(images, features)

    def log_likelihood(self, x, z):
        out = self.decoder_output(x, z)
        if self.image == BINARY:
            return bernoulli_log_prob(out.flatten(-3), x.reshape(len(x), -1))
        return discretized_logistic_mixture_log_prob(x.reshape(len(x), *self.image), out)

    def sample_images(self, n: int) -> torch.Tensor:
        """``n`` images [n, C, H, W] from the model: z from the prior (one pass per dimension, or per
        position of z's maps, and flow step), the trunk's features of z once, then the pixels in
        raster order, one decoder pass each (all at once for the factorized decoder)."""
        z = self.prior().sample((n,))
        features = None if self.trunk is None else self.trunk(z)
        x = torch.zeros(n, *self.image, device=z.device)
        height, width = self.image[1:]
        every = [(slice(None), slice(None))]
        for i, j in every if self.pixelcnn is None else [(i, j) for i in range(height) for j in range(width)]:
            x[:, :, i, j] = self._sample_pixels(self._decode(x, features)[:, :, i, j])
        return x

    def image_grids(self) -> dict[str, torch.Tensor]:
        """Samples from the model, 6 × 6 (``sample_images``): an autoregressive decoder has no mean
        image, so its samples are draws, pixel by pixel (one decoder pass per pixel)."""
        return {"samples": self.sample_images(SAMPLES_SIDE**2).unflatten(0, (SAMPLES_SIDE, SAMPLES_SIDE))}

    def _sample_pixels(self, out):
        """Pixels [n, C, ...] drawn from the decoder's output for them [n, P, ...]."""
        if self.image == BINARY:
            return torch.bernoulli(torch.sigmoid(out))
        flat = out.movedim(1, -1).reshape(-1, out.shape[1])
        return sample_discretized_logistic_mixture(flat).reshape(len(out), *out.shape[2:], 3).movedim(-1, 1)

    def loss(self, x):
        return self.free_bits_loss(x, self.variational_parameters(x))

    def free_bits_loss(self, x, q: dict) -> tuple[torch.Tensor, dict]:
        """Minus the ELBO from ``samples`` draws of z ~ q (q's parameters given), the batch's KL counted at
        least at the free-bits floor (below it the KL's gradient is switched off)."""
        z, eps = diagonal_gaussian_rsample(q["loc"], q["log_scale"], (self.samples,))
        log_q = standard_normal_log_prob(eps) - q["log_scale"].sum(-1)
        for step in self._iaf_steps(q):  # an IAF posterior: each step's volume change leaves log q
            moved = step(z)
            log_q, z = log_q - step.log_abs_det_jacobian(z, moved), moved
        recon = self.log_likelihood(x, z).mean(0)
        kl = (log_q - self.prior().log_prob(z)).mean(0)
        elbo = recon - kl
        loss = -recon.mean() + torch.clamp(kl.mean(), min=self.free_bits)
        return loss, {"elbo": elbo.mean(), "recon": recon.mean(), "kl": kl.mean()}

    def initialize(self, x, statistics):
        """Data-dependent initialisation of the weight-normalised layers, on the first batch."""
        data_dependent_init(self, lambda: self.loss(x))
