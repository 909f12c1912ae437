"""Can an importance-sampled estimate be trusted? Diagnostics of the importance weights of each point.

The test NLL is log p̂(x) = logmeanexp_k log w_k with w_k = p(x, z_k) / q(z_k|x), z_k ~ q(z|x). Its
value says nothing of whether K samples were enough: a q much narrower than p(z|x) gives weights
whose largest few dominate, and the estimate sits below log p(x) while its delta-method variance
looks small. Two per-point diagnostics, computed from ``[K, B]`` log-weights (K samples of B points):

- ``ess``: the effective sample size of the normalised weights, (Σw)² / Σw², between 1 (one weight
  dominates) and K (all equal). ``ess_from_sums`` gives it from logsumexp(log w) and
  logsumexp(2 log w), which a chunked estimator already accumulates.
- ``pareto_k``: Vehtari, Simpson, Gelman, Yao & Gabry's k̂ ("Pareto smoothed importance sampling"):
  the shape of a generalized Pareto distribution (GPD) fitted to the largest M = ⌈min(K/5, 3√K)⌉
  weights' exceedances over the next largest, by Zhang & Stephens's (2009) estimator with Vehtari et
  al.'s weakly informative prior (the estimate shrunk towards 0.5 as if by 10 more observations).
  The weights have 1/k̂ finite moments: k̂ < 0.5, a finite variance, the estimate is reliable;
  0.5-0.7, finite mean, usable with care (its error falls more slowly than 1/√K); k̂ > 0.7, the
  estimate is unreliable at any practical K (its bias can be large, and the ESS and the Monte-Carlo
  standard error are themselves unreliable).

``RunningTail`` keeps the M + 1 largest log-weights of each point across chunks of samples, so that
k̂ of K = 5000 samples needs O(M) memory per point rather than O(K); ``pareto_k`` of all the
log-weights at once and ``RunningTail`` fed them chunk by chunk give the same k̂.
"""

import math

import torch

PARETO_K_RELIABLE = 0.5  # below: finite variance of the weights
PARETO_K_UNRELIABLE = 0.7  # above: do not trust the estimate (Vehtari et al.)
UNRELIABLE_SHARE = 0.5  # above this share of its points past PARETO_K_UNRELIABLE, an estimate is flagged
MIN_TAIL = 5  # fewer tail weights than this (K ≤ 20): k̂ is not computed (NaN)
PRIOR_SHAPE, PRIOR_STRENGTH = 0.5, 10  # Vehtari et al.'s weakly informative prior on k
# Elements of the [grid, tail, points] tensor of the GPD fit held at once (32 MB of float64).
FIT_ELEMENTS = 4_000_000


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """[B] effective sample size (Σw)² / Σw² of ``log_weights`` [K, B] (any normalisation)."""
    log_weights = log_weights.double()
    return ess_from_sums(torch.logsumexp(log_weights, 0), torch.logsumexp(2 * log_weights, 0))


def ess_from_sums(log_sum_w: torch.Tensor, log_sum_w2: torch.Tensor) -> torch.Tensor:
    """The ESS from log Σw and log Σw² (what ``metrics.importance_sampled_terms`` accumulates)."""
    return torch.exp(2 * log_sum_w.double() - log_sum_w2.double())


def tail_size(samples: int) -> int:
    """M, the number of largest weights the generalized Pareto distribution is fitted to, for K =
    ``samples``: ⌈min(K/5, 3√K)⌉ (Vehtari et al.): 20 of 100, 95 of 1000, 213 of 5000."""
    return math.ceil(min(0.2 * samples, 3 * math.sqrt(samples)))


def pareto_k(log_weights: torch.Tensor) -> torch.Tensor:
    """[B] Pareto k̂ of each point's ``log_weights`` [K, B] (float64). NaN where K ≤ 20 (too few tail
    weights) or where a log-weight is NaN or +inf or all are −inf; −inf where the tail is flat (the
    largest M + 1 weights equal to within the input's rounding: bounded weights, as when q is the
    exact posterior); +inf where the tail spans more than float64's range (> 700 nats)."""
    tail = RunningTail(len(log_weights))
    tail.update(log_weights)
    return tail.result()


class RunningTail:
    """The M + 1 largest log-weights of each point, over chunks of its K samples: ``update`` with
    each chunk's [k, B] log-weights (the chunks' k summing to ``samples``), then ``result`` for k̂.
    Memory: (M + 1) × B values; each update is a ``torch.topk`` of (M + 1 + k) × B values."""

    def __init__(self, samples: int):
        self.samples = samples
        self.size = min(tail_size(samples) + 1, samples)
        self.top: torch.Tensor | None = None  # [≤ size, B], largest first
        self.seen = 0

    def update(self, log_weights: torch.Tensor) -> None:
        merged = log_weights if self.top is None else torch.cat([self.top, log_weights])
        self.top = torch.topk(merged, min(self.size, len(merged)), dim=0).values
        self.seen += len(log_weights)

    def result(self) -> torch.Tensor:
        """[B] k̂ of the ``samples`` log-weights seen (see ``pareto_k``)."""
        if self.seen != self.samples:
            raise ValueError(f"RunningTail: saw {self.seen} samples of each point, expected {self.samples}")
        return pareto_k_of_tail(self.top, self.samples)


def pareto_k_of_tail(top: torch.Tensor, samples: int) -> torch.Tensor:
    """[B] k̂ from the M + 1 largest of each point's ``samples`` log-weights, ``top`` [M + 1, B] in
    descending order: the M largest weights' exceedances over the (M + 1)-th are fitted, each point
    on its own, in float64, relative to the point's largest weight (k̂ does not depend on the
    weights' scale)."""
    m = tail_size(samples)
    points = top.shape[1]
    if m < MIN_TAIL:
        return torch.full((points,), math.nan, dtype=torch.float64, device=top.device)
    resolution = 8 * torch.finfo(top.dtype).eps  # differences below the input's rounding are ties
    top = top.double()
    largest, threshold = top[0], top[m]
    # exceedances w − u, relative to the largest weight: exp(log w − max) − exp(log u − max)
    spread = top[:m] - threshold
    ties = (spread <= resolution * largest.abs().clamp(min=1)) | top[:m].isneginf()  # zero weights tie at zero
    exceedances = torch.where(ties, 0.0, torch.exp(top[:m] - largest) - torch.exp(threshold - largest))
    flat = ties.all(0)
    # a tail weight above the threshold whose exceedance underflows: the tail spans more than
    # float64's range (> 700 nats), which M ≤ 1000 GPD draws do only for a shape k in the hundreds
    beyond_range = (~ties & (exceedances <= 0)).any(0)
    invalid = ~torch.isfinite(largest) | torch.isnan(top).any(0)
    k = torch.empty(points, dtype=torch.float64, device=top.device)
    per_chunk = max(1, FIT_ELEMENTS // (m * _grid_size(m)))
    for start in range(0, points, per_chunk):
        k[start : start + per_chunk] = _fit_gpd_shape(exceedances[:, start : start + per_chunk].flip(0))
    k = torch.where(flat, -math.inf, torch.where(beyond_range, math.inf, k))
    return torch.where(invalid, math.nan, k)


def _grid_size(n: int) -> int:
    return 30 + math.isqrt(n)


def _fit_gpd_shape(y: torch.Tensor) -> torch.Tensor:
    """[B] the generalized Pareto shape k̂ of each column of ``y`` [n, B] (non-negative exceedances,
    ascending), by Zhang & Stephens (2009) with Vehtari et al.'s prior.

    With θ = k/σ the GPD's log-likelihood, maximised over k for a given θ, is the profile
    ℓ(θ) = n (log(θ / k(θ)) − k(θ) − 1), k(θ) = mean log(1 + θ y). Zhang & Stephens take the posterior
    mean of θ over a grid of 30 + ⌊√n⌋ values placed by the sample's largest value and first quartile
    (every 1 + θ y > 0 on it), each weighted by exp ℓ(θ) (a flat prior on the grid), and k̂ = k(θ̂).
    Vehtari et al. then shrink k̂ towards 0.5 by a prior worth 10 observations: (n k̂ + 5) / (n + 10)."""
    n = len(y)
    grid = _grid_size(n)
    largest = y[-1]
    quartile = y[math.floor(n / 4 + 0.5) - 1]
    # Ties at the threshold (or weights below it by more than float64's range) can leave the first
    # quartile at zero: the smallest positive exceedance then sets the grid's spacing instead.
    smallest_positive = torch.where(y > 0, y, math.inf).min(0).values
    quartile = torch.where(quartile > 0, quartile, smallest_positive)
    j = torch.arange(1, grid + 1, dtype=torch.float64, device=y.device).unsqueeze(1)
    # Zhang & Stephens's grid of b = −θ, all below 1/max(y)
    b = 1 / largest + (1 - torch.sqrt(grid / (j - 0.5))) / (3 * quartile)  # [grid, B]
    theta = -b
    k_of_theta = torch.log1p(theta.unsqueeze(1) * y).mean(1)  # [grid, B]
    profile = n * (torch.log(theta / k_of_theta) - k_of_theta - 1)
    weights = torch.softmax(torch.nan_to_num(profile, nan=-math.inf), 0)
    theta_hat = (weights * theta).sum(0)
    k = torch.log1p(theta_hat * y).mean(0)
    return (n * k + PRIOR_STRENGTH * PRIOR_SHAPE) / (n + PRIOR_STRENGTH)
