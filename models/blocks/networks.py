"""Networks and likelihoods shared by the methods."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal


def _evaluation_on_cpu(t: torch.Tensor) -> bool:
    """Whether ``t`` is float32/float64 on the CPU with no gradient to track: where the fast paths below
    (for evaluation, with no backward pass to serve) apply."""
    no_grad = not (t.requires_grad and torch.is_grad_enabled())
    return no_grad and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


class Tanh(nn.Tanh):
    """``nn.Tanh``; without gradient on the CPU computed as 2 sigmoid(2x) - 1, within 2e-7 of it and
    3x faster there (ATen's sigmoid is vectorised, its tanh is not: 0.4 against 1.3 ns a value on the
    EPYC of report/performance.md; in a 200-200 decoder it was 1 s of the 8.5 s test NLL)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _evaluation_on_cpu(x):
            return torch.sigmoid(2 * x).mul_(2).sub_(1)
        return torch.tanh(x)


ACTIVATIONS = {"relu": nn.ReLU, "tanh": Tanh, "elu": nn.ELU}


INITS = ("pytorch", "glorot", "he")


def mlp(sizes: list[int], activation: str, init: str = "pytorch") -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last).
    ``init``: PyTorch's default; Glorot & Bengio's uniform weights with zero biases; or He et al.'s
    uniform weights as the VLAE code draws them (``kaiming_uniform_(a=2^(1/3), mode="fan_out")``: a
    gain for two ReLU layers then a linear one, Park et al.'s supplement), biases as PyTorch's."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(n_in, n_out))
        if init == "glorot":
            nn.init.xavier_uniform_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        elif init == "he":
            nn.init.kaiming_uniform_(layers[-1].weight, a=2 ** (1 / 3), mode="fan_out")
    return nn.Sequential(*layers)


def sigmoid_log_scale(raw: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(raw) + 0.001): the ladder code's standard deviation, bounded in (0.001, 1.001), so
    that no Gaussian of a layer can collapse to a point or blow up (an unbounded exp can)."""
    return torch.log(torch.sigmoid(raw) + 1e-3)


def diagonal_gaussian(loc: torch.Tensor, log_scale: torch.Tensor) -> Independent:
    """N(loc, diag(exp(log_scale)^2)) over the last dimension."""
    return Independent(Normal(loc, log_scale.exp(), validate_args=False), 1, validate_args=False)


def standard_normal(like: torch.Tensor) -> Independent:
    """N(0, I) with the shape, dtype and device of ``like``."""
    return diagonal_gaussian(torch.zeros_like(like), torch.zeros_like(like))


def standard_normal_kl(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, diag(exp(log_scale)^2)) || N(0, I)) in closed form, summed over the last dimension:
    what ``kl_divergence(diagonal_gaussian(loc, log_scale), standard_normal(loc))`` gives, without
    building the distributions (the training losses call it every step)."""
    return 0.5 * (loc.pow(2) + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(-1)


def diagonal_gaussian_kl(
    loc: torch.Tensor, log_scale: torch.Tensor, other_loc: torch.Tensor, other_log_scale: torch.Tensor
) -> torch.Tensor:
    """KL(N(loc, exp(log_scale)²) ‖ N(other_loc, exp(other_log_scale)²)) of each dimension, in closed
    form (broadcasting; sum the last dimension for two diagonal Gaussians)."""
    log_ratio = 2 * (log_scale - other_log_scale)  # log σ² / σ'²
    return 0.5 * (log_ratio.exp() + (loc - other_loc).pow(2) * torch.exp(-2 * other_log_scale) - log_ratio - 1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) over the last dimension."""
    return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * 0.5 * math.log(2 * math.pi)


def diagonal_gaussian_rsample(loc: torch.Tensor, log_scale: torch.Tensor, sample_shape: tuple[int, ...] = ()):
    """Reparameterized draws z = loc + exp(log_scale) * eps, [*sample_shape, *loc.shape], as
    ``diagonal_gaussian(loc, log_scale).rsample(sample_shape)`` draws them, and their eps ~ N(0, I):
    log q(z) = standard_normal_log_prob(eps) - log_scale.sum(-1)."""
    eps = torch.randn((*sample_shape, *loc.shape), dtype=loc.dtype, device=loc.device)
    return loc + log_scale.exp() * eps, eps


def full_covariance_gaussian(loc: torch.Tensor, tril: torch.Tensor) -> MultivariateNormal:
    """N(loc, L Lᵀ) from unconstrained parameters: ``tril``'s strict lower triangle is L's, its diagonal
    the log of L's (so any real ``tril`` gives a valid covariance, and all zeros give N(loc, I))."""
    return MultivariateNormal(
        loc, scale_tril=tril.tril(-1) + torch.diag_embed(tril.diagonal(dim1=-2, dim2=-1).exp()), validate_args=False
    )


def tril_parameters(scale_tril: torch.Tensor) -> torch.Tensor:
    """The unconstrained ``tril`` of ``full_covariance_gaussian`` for a Cholesky factor ``scale_tril``."""
    return scale_tril.tril(-1) + torch.diag_embed(scale_tril.diagonal(dim1=-2, dim2=-1).log())


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of independent Bernoulli pixels with ``logits`` [..., B, D] for ``x`` [B, D] (binary,
    or intensities in [0, 1]), summed over D: sum_d x_d l_d - log(1 + e^(l_d)), what
    torch.distributions' ``Bernoulli(logits=logits).log_prob(x)`` gives, summed.

    Under autograd and off the CPU it is that (as binary cross-entropy, one fused kernel with a fused
    backward). On the CPU without gradient (evaluation: [K, B, 784] logits for K = 1000) it takes
    four passes over the logits instead of about ten, and ATen's softplus (a scalar loop, 3.4 ns a
    value on the 2-core EPYC of report/performance.md) is replaced by its vectorised sigmoid and log
    (0.2 and 0.5 ns): x l - softplus(l) = (x l - max(l, 0)) + log sigmoid(|l|), and as each
    sigmoid(|l|) lies in [1/2, 1), they are multiplied together by 16 before one log (a product
    >= 2^-16). Its error is float32's rounding, no larger than that of the distribution's log_prob.
    """
    if not _evaluation_on_cpu(logits):
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    linear = torch.relu(logits).addcmul_(logits, x, value=-1).sum(-1)  # sum_d max(l, 0) - x l, first:
    factors = logits.abs().sigmoid_()  # while the decoder's output is still in cache
    width = factors.shape[-1]
    for _ in range(4):  # fold the last half onto the first, four times: products of up to 16 factors
        half = width // 2
        factors[..., :half].mul_(factors[..., width - half : width])
        width -= half
    return factors[..., :width].log().sum(-1) - linear


class PixelLikelihood(nn.Module):
    """log p(x|z) from the decoder's output ``[..., B, D]`` for images ``x`` ``[B, ...]``:

    - ``bernoulli``: independent binary pixels; the output is their logits.
    - ``gaussian``: the output is the pixels' mean, with one learned scale shared by all pixels (as
      in the VLAE code), a density on continuous intensities.
    - ``discretized_logistic``: a logistic of the output's mean and one learned shared scale,
      integrated over each of the 256 intensity bins of width 1/255 (the outer bins reach to ±∞):
      a probability of 8-bit pixels, so its NLL converts to bits/dim (Salimans et al. 2017, one
      component).
    """

    FAMILIES = ("bernoulli", "gaussian", "discretized_logistic")
    BINS = 256

    def __init__(self, family: str):
        super().__init__()
        if family not in self.FAMILIES:
            raise ValueError(f"unknown likelihood {family!r}; valid: {', '.join(self.FAMILIES)}")
        self.family = family
        if family != "bernoulli":
            self.log_scale = nn.Parameter(torch.zeros(()))

    def init_scale(self, variance: float) -> None:
        """Start the shared scale at the data's variance (the VLAE code's initialisation)."""
        with torch.no_grad():
            self.log_scale.fill_(0.5 * math.log(variance))

    def initialize_from_data(self, x: torch.Tensor, statistics: dict) -> None:
        """The model's ``initialize`` hook: a learned scale starts at the data variance where the
        dataset gives one (centred data)."""
        if self.family != "bernoulli" and "pixel_variance" in statistics:
            self.init_scale(statistics["pixel_variance"])

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        """The pixels' intensities to show for the decoder's ``output``: their expectation (Bernoulli),
        or the location of their density."""
        return torch.sigmoid(output) if self.family == "bernoulli" else output

    def score_and_curvature(self, output: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient of log p(x|output) in the decoder's ``output`` [B, D], and its curvature: the
        diagonal of minus its Hessian (Bernoulli: s(1 − s) [B, D] with s = sigmoid(output); Gaussian:
        1/σ², one number [] for every pixel). Through a piecewise-linear decoder with Jacobian J, Jᵀ score and
        Jᵀ diag(curvature) J are then the gradient and minus the Hessian of log p(x|z) in z (a
        Laplace approximation's precision, Park et al. 2019)."""
        x = x.flatten(1)
        if self.family == "bernoulli":
            probability = torch.sigmoid(output)
            return x - probability, probability * (1 - probability)
        if self.family == "gaussian":
            precision = torch.exp(-2 * self.log_scale)
            return (x - output) * precision, precision  # one number: the same for every pixel
        raise ValueError(f"no closed-form curvature for the {self.family} likelihood")

    def forward(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if self.family == "bernoulli":
            return bernoulli_log_prob(output, x)
        if self.family == "gaussian":
            pixels = Normal(output, self.log_scale.exp().expand_as(output), validate_args=False)
            return Independent(pixels, 1, validate_args=False).log_prob(x)
        return discretized_logistic_log_prob(x, output, self.log_scale, self.BINS).sum(-1)


def discretized_logistic_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, bins: int = 256):
    """log P(x) per pixel for ``x`` on the grid {0, 1/(bins-1), ..., 1}: the mass of a logistic
    (loc, exp(log_scale)) over x's bin; the first and last bins take the tails."""
    half_bin = 0.5 / (bins - 1)
    inv_scale = torch.exp(-log_scale)
    upper = inv_scale * (x - loc + half_bin)
    lower = inv_scale * (x - loc - half_bin)
    log_cdf_upper = F.logsigmoid(upper)  # log F(upper)
    log_survival_lower = F.logsigmoid(-lower)  # log (1 − F(lower))
    # log (F(upper) − F(lower)), stably: F(u) − F(l) = F(u)(1 − F(l))(1 − e^{−(u−l)})
    log_mass = log_cdf_upper + log_survival_lower + torch.log(-torch.expm1(lower - upper))
    return torch.where(x < half_bin, log_cdf_upper, torch.where(x > 1 - half_bin, log_survival_lower, log_mass))


MIXTURE_PARAMETERS = 10  # per component: a mixture logit, and per channel a mean, a log-scale, a coefficient


def _mixture_parts(params: torch.Tensor):
    """``params`` [..., 10K, H, W] → mixture logits [..., K, H, W]; means, log-scales and tanh'd
    channel coefficients [..., 3, K, H, W]."""
    k = params.shape[-3] // MIXTURE_PARAMETERS
    logits, means, log_scales, coefficients = params.split([k, 3 * k, 3 * k, 3 * k], dim=-3)
    per_channel = (*params.shape[:-3], 3, k, *params.shape[-2:])
    return (
        logits,
        means.reshape(per_channel),
        log_scales.reshape(per_channel).clamp(min=-7.0),  # PixelCNN++'s floor on the scales
        torch.tanh(coefficients.reshape(per_channel)),
    )


def discretized_logistic_mixture_log_prob(x: torch.Tensor, params: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """log P(x) [..., B] of colour images ``x`` [B, 3, H, W] on the grid {0, 1/(bins−1), ..., 1} under
    PixelCNN++'s discretized logistic mixture (Salimans et al. 2017), ``params`` [..., B, 10K, H, W]
    per pixel: K mixture logits, then K means, K log-scales and K coefficients for each of the three
    channels. Within a component the channels are autoregressive: G's mean moves with the pixel's R
    (coefficient α), B's with its R and G (β, γ), so that one pixel's three values are a joint
    distribution without masks across channels in the network."""
    logits, means, log_scales, coefficients = _mixture_parts(params)
    r, g = x[:, 0:1], x[:, 1:2]  # [B, 1, H, W]: broadcast over the components
    centred = torch.stack(
        [
            means[..., 0, :, :, :],
            means[..., 1, :, :, :] + coefficients[..., 0, :, :, :] * r,
            means[..., 2, :, :, :] + coefficients[..., 1, :, :, :] * r + coefficients[..., 2, :, :, :] * g,
        ],
        dim=-4,
    )
    per_channel = discretized_logistic_log_prob(x.unsqueeze(-3), centred, log_scales, bins)  # [..., B, 3, K, H, W]
    per_pixel = torch.logsumexp(per_channel.sum(-4) + F.log_softmax(logits, dim=-3), dim=-3)
    return per_pixel.flatten(-2).sum(-1)


def sample_discretized_logistic_mixture(params: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """One pixel [N, 3] on the grid from its mixture parameters [N, 10K]: a component, then R, G and B
    in turn, each a logistic draw about its mean (given the channels before it), clamped and rounded."""
    logits, means, log_scales, coefficients = (t[..., 0, 0] for t in _mixture_parts(params[..., None, None]))
    component = torch.distributions.Categorical(logits=logits).sample()[:, None, None].expand(-1, 3, 1)
    mean, log_scale, coefficient = (t.gather(-1, component)[..., 0] for t in (means, log_scales, coefficients))
    u = torch.rand_like(mean).clamp(1e-5, 1 - 1e-5)
    noise = log_scale.exp() * (torch.log(u) - torch.log1p(-u))
    grid = lambda v: torch.round(v.clamp(0, 1) * (bins - 1)) / (bins - 1)
    r = grid(mean[:, 0] + noise[:, 0])
    g = grid(mean[:, 1] + coefficient[:, 0] * r + noise[:, 1])
    b = grid(mean[:, 2] + coefficient[:, 1] * r + coefficient[:, 2] * g + noise[:, 2])
    return torch.stack([r, g, b], dim=-1)
