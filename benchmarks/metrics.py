"""Every metric, written once against the model protocol (``models.base``).

Each value is returned with the settings of its estimator, as it goes into the record:

- density: test NLL by importance sampling (with its Monte-Carlo standard error), ELBO, KL (analytic
  or Monte-Carlo, with the per-dimension KL where q factorizes), reconstruction, bits/dim;
- representation: active units, clustering accuracy / NMI / ARI and the linear-probe accuracy of
  the test labels;
- inference: the amortization and approximation gaps of Cremer, Li & Duvenaud (2018); where q is a
  mixture, how many of its components it uses and how far apart they lie;
- cost: the test-time inference latency per batch (the rest of the timing block is ``train.py``'s).
"""

import contextlib
import fcntl
import math
import os
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Distribution, Independent, MixtureSameFamily, kl_divergence

from benchmarks import RUNS_SHARING_DEVICE, ais, diagnostics
from models.base import has_analytic_kl, reparameterized_elbo


@dataclass(frozen=True)
class Metric:
    label: str  # the table's column
    description: str
    # "lower" or "higher" is better, or None where neither is (the notes under a table then say nothing).
    better: str | None
    timing: bool = False  # read from the record's timing block rather than its metrics
    # Bump when the estimator changes what it computes: records carry the version of each value
    # (absent: 1), and the tables leave out values of an older version as stale, metric by metric.
    version: int = 1
    # Decimals printed in the tables (reported, reproduced, std, delta) and the claims table: what
    # the seeds and the reported numbers can tell apart, no more.
    digits: int = 2


METRICS = {
    # Density, in nats: 2 decimals (papers report 2; seed-to-seed std is ~0.1 nat or more).
    "nll": Metric("NLL", "test negative log-likelihood, importance-sampled (nats)", "lower"),
    "elbo": Metric("ELBO", "test evidence lower bound (nats)", "higher"),
    # No direction: a low KL often means posterior collapse (unused latents), a high one a loose
    # fit of q to the prior; it says how much the code carries, not how good the model is.
    "kl": Metric("KL", "test KL(q(z|x) ‖ p(z)) (nats)", None),
    # Higher: the reconstructions are better (it is not by itself a better model: it trades against KL).
    "recon": Metric("Recon.", "test reconstruction term E_q log p(x|z) (nats)", "higher"),
    # 4 decimals: 1 nat on binarized MNIST is 0.0018 bits/dim (85.00 and 86.76 nats: 0.1564, 0.1597).
    "bits_per_dim": Metric(
        "bits/dim", "test NLL in bits per pixel and channel (discrete likelihoods only)", "lower", digits=4
    ),
    # No direction: how many dimensions a model needs depends on the data; more active units is
    # better only against collapse, not beyond. 1 decimal: a mean of counts over seeds.
    "active_units": Metric(
        "AU",
        "active units: latent dimensions whose posterior mean varies across the test points (variance > 0.01)",
        None,
        digits=1,
        version=2,  # 2: the Monte-Carlo noise of sampled means is subtracted (issue 9)
    ),
    # Scores in [0, 1]: 3 decimals (0.5734 is 0.573, not 0.57).
    "cluster_acc": Metric(
        "Cluster acc.",
        "clustering accuracy on the test labels, one-to-one (Hungarian) matching",
        "higher",
        digits=3,
    ),
    "probe_acc": Metric(
        "Probe acc.",
        "linear-probe accuracy: a logistic regression from the posterior means to the test labels, "
        "5-fold cross-validated on the test points",
        "higher",
        digits=3,
    ),
    # Ma et al.'s representation protocol (the MAE code's classify.py): classifiers trained on the
    # training images' posterior means, scored on the test images'; parts by labelled training codes
    "linear_acc": Metric(
        "Linear acc.",
        "test accuracy of a logistic regression on the posterior means, trained on the labelled training "
        "codes (all; parts: that many, drawn 5 times)",
        "higher",
        digits=3,
    ),
    "knn_acc": Metric(
        "k-NN acc.",
        "test accuracy of a distance-weighted 10-nearest-neighbour classifier on the posterior means, trained "
        "on the labelled training codes (all; parts: that many, drawn 5 times)",
        "higher",
        digits=3,
    ),
    "kmeans_acc": Metric(
        "k-means acc.",
        "test accuracy of k-means on the training codes, each cluster labelled by the majority of its "
        "training labels (the first K; parts: each K)",
        "higher",
        digits=3,
    ),
    "nmi": Metric("NMI", "normalized mutual information of clusters and test labels", "higher", digits=3),
    "ari": Metric("ARI", "adjusted Rand index of clusters and test labels", "higher", digits=3),
    # Gaps in nats, 2 decimals; lower: a tighter amortized q (amortization), a richer family (approximation).
    "ais_nll": Metric(
        "NLL (AIS)",
        "test NLL by annealed importance sampling from the prior (Wu et al. 2017) on the first ais_points test "
        "points: an estimate that does not use q",
        "lower",
    ),
    "amortization_gap": Metric("Amort. gap", "amortization gap L[q*] − L[q] (nats; Cremer et al. 2018)", "lower"),
    "approximation_gap": Metric(
        "Approx. gap", "approximation gap log p̂(x) − L[q*] (nats; Cremer et al. 2018)", "lower"
    ),
    "inference_gap": Metric("Inference gap", "inference gap log p̂(x) − L[q] (nats)", "lower"),
    # A mixture posterior's use of its components (no direction: how many a posterior needs depends
    # on the data). 2 decimals: both lie between 0 and log K or K.
    "mixture_components": Metric(
        "Components",
        "effective number of components of a mixture q(z|x): exp of the entropy of its weights, mean over the "
        "test points (1: one component carries it all)",
        None,
    ),
    "mixture_information": Metric(
        "I(k; z)",
        "what a mixture q(z|x) gains over its components: I(k; z) = H(q) − Σ_k α_k H(q_k) (nats), the ELBO "
        "beyond the components' weighted ELBOs; 0 where the components coincide, at most the weights' entropy",
        None,
    ),
    # Cost: seconds to 2 decimals, throughput to whole examples; latency to 3 decimals of a ms (a GPU
    # batch can take well under a millisecond).
    "s_per_epoch": Metric("s/epoch", "training wall-clock per epoch (s)", "lower", timing=True),
    "examples_per_s": Metric("ex/s", "training examples per second", "higher", timing=True, digits=0),
    "inference_latency_ms": Metric(
        "q(z|x) ms/batch", "test-time inference latency per batch (median, ms)", "lower", timing=True, digits=3
    ),
}


def metric_reference(reference: str) -> tuple[str, str | None]:
    """``"kl"`` -> ("kl", None); ``"kl[layer1]"`` -> ("kl", "layer1"): a metric, or one of its parts."""
    name, bracket, part = reference.partition("[")
    return (name, part[:-1]) if bracket and part.endswith("]") else (reference, None)


ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: Cov_x(E_q[z_j]) > 0.01
# Cremer et al.'s local optimisation (their optimize_local_q: Adam lr 1e-3, 50 samples a step, the
# average loss compared every 100 steps, stop after more than 10 checks without improvement).
GAP_OPTIMIZER = {"name": "adam", "learning_rate": 1e-3, "samples_per_step": 50, "check_every": 100, "patience": 10}
GAP_STARTS = ("encoder", "zero")  # where q*'s optimisation starts: the suite's default, or Cremer et al.'s N(0, I)
# Below half of the gap points converged (met the stopping rule before the step cap), a gap is
# marked as not converged: the amortization gap is then under-, the approximation gap over-estimated.
CONVERGED_FRACTION = 0.5
# On the CPU the importance-sampled estimates send at most this many (sample, point, pixel) values
# through the decoder at once (6 MB of float32 logits, about 1,900 MNIST rows), so that the
# likelihood's passes over them hit the cache. Measured on the 2-core EPYC of report/performance.md
# (the baselines' VAE, K = 1000, 10 points per chunk): 0.8-3 million all about as fast, passes of
# 10,000 rows (7.8 million values) 1.4-1.5x slower.
CPU_CACHE_VALUES = 1_500_000


def _flat(z) -> torch.Tensor:
    """A latent sample (a tensor, or a tuple of layer tensors for a ladder) as one [..., D] tensor."""
    if isinstance(z, (tuple, list)):
        return torch.cat([_flat(part) for part in z], dim=-1)
    return z


@torch.no_grad()
def importance_sampled_terms(
    model, x: torch.Tensor, samples: int, rows_per_chunk: int = 10_000, proposal=None, parts=None
) -> dict:
    """Per data point: log p̂(x) = logmeanexp_k [log p(x, z_k) − log q(z_k|x)], z_k ~ q(z|x), and
    the Monte-Carlo variance of that estimate (``log_px_var``, by the delta method); from the
    same samples E_q log p(x|z); and KL(q || p), analytic where torch.distributions has it (then
    ``kl_analytic`` is True), else the Monte-Carlo mean over those samples. ``kl_per_dim`` is the
    analytic KL of each latent dimension where q and p factorize over them (else None). With a
    structured latent's ``parts``, where there is no per-dimension KL but q and p give each part's
    (conditional) log-density (``part_log_probs``), ``kl_parts`` is the Monte-Carlo KL of each part
    from the same samples, E_q[log q(z_l | ·) − log p(z_l | ·)], which add up to the KL.

    ``proposal(rows)`` gives q for the points ``x[rows]``; by default the method's q(z|x).
    Work is chunked so that at most ``rows_per_chunk`` (point, sample) pairs go through the decoder
    at once: memory stays bounded for K = 5000. q is computed once per chunk of
    ``rows_per_chunk // samples`` points (it may be expensive: iterative refinement); on the CPU
    their samples then go through the decoder in near-equal passes of at most ``CPU_CACHE_VALUES``
    pixel values, so that the decoder's output stays in cache while the likelihood reads it.
    """
    proposal = proposal or (lambda rows: model.posterior(x[rows]))
    points_per_chunk = max(1, rows_per_chunk // samples)
    rows_per_pass = rows_per_chunk
    if x.device.type == "cpu":
        rows_per_pass = min(rows_per_pass, max(1, CPU_CACHE_VALUES // x[0].numel()))
    out = {key: [] for key in ("log_px", "log_px_var", "recon", "kl", "kl_per_dim", "kl_parts", "ess", "pareto_k")}
    prior = model.prior()
    analytic = None
    for start in range(0, len(x), points_per_chunk):
        rows = slice(start, start + points_per_chunk)
        x_chunk, q = x[rows], proposal(rows)
        analytic = has_analytic_kl(q, prior) if analytic is None else analytic
        per_dim = _kl_per_dim(q, prior)
        passes = math.ceil(samples / max(1, rows_per_pass // len(x_chunk)))
        terms, tail = [], diagnostics.RunningTail(samples)  # the largest weights, for Pareto k̂
        part_kl = None
        for i in range(passes):
            z = q.sample((samples // passes + (i < samples % passes),))
            log_prior = prior.log_prob(z)
            log_q = q.log_prob(z)
            if parts and per_dim is None:
                by_part = _part_log_probs(q, z, parts), _part_log_probs(prior, z, parts)
                if None not in by_part:
                    part_kl = (0 if part_kl is None else part_kl) + (by_part[0] - by_part[1]).sum(0)
            log_joint = model.log_joint(x_chunk, z)
            log_w = log_joint - log_q
            tail.update(log_w)
            terms.append(
                (
                    torch.logsumexp(log_w, 0),
                    torch.logsumexp(2 * log_w, 0),
                    (log_joint - log_prior).sum(0),
                    (log_q - log_prior).sum(0),
                )
            )
        log_sum_w = torch.logsumexp(torch.stack([t[0] for t in terms]), 0)
        log_sum_w2 = torch.logsumexp(torch.stack([t[1] for t in terms]), 0)
        out["log_px"].append(log_sum_w - math.log(samples))
        # Var(log p̂) ≈ Var(p̂) / p̂² = (K Σw² / (Σw)² − 1) / K (the delta method)
        # (clamped: with equal weights the difference is 0 up to rounding, and a negative one is no variance)
        relative = torch.exp(log_sum_w2 - 2 * log_sum_w + math.log(samples)) - 1
        out["log_px_var"].append(relative.clamp_min(0) / samples)
        out["recon"].append(sum(t[2] for t in terms) / samples)
        out["kl"].append(kl_divergence(q, prior) if analytic else sum(t[3] for t in terms) / samples)
        out["kl_per_dim"].append(per_dim)
        out["kl_parts"].append(None if part_kl is None else part_kl / samples)
        out["ess"].append(diagnostics.ess_from_sums(log_sum_w, log_sum_w2))
        out["pareto_k"].append(tail.result())
    joined = {
        key: None if any(t is None for t in out[key]) else torch.cat(out[key]) for key in ("kl_per_dim", "kl_parts")
    }
    return {
        **{key: torch.cat(out[key]) for key in ("log_px", "log_px_var", "recon", "kl", "ess", "pareto_k")},
        **joined,
        "kl_analytic": analytic,
    }


def _part_log_probs(distribution: Distribution, z: torch.Tensor, parts: dict[str, int]) -> torch.Tensor | None:
    """[..., parts] the log-density of each part of z: the distribution's own ``part_log_probs`` (a
    chain's conditionals, independent parts' densities) where its parts are ``parts``; summed per part
    where it is independent over the dimensions (a diagonal Gaussian); else None."""
    sizes = list(parts.values())
    if hasattr(distribution, "part_log_probs"):
        return distribution.part_log_probs(z) if distribution.part_sizes == sizes else None
    if isinstance(distribution, Independent) and distribution.reinterpreted_batch_ndims == 1:
        per_dim = distribution.base_dist.log_prob(z)
        return torch.stack([block.sum(-1) for block in per_dim.split(sizes, -1)], -1)
    return None


def weight_diagnostics(ess: torch.Tensor, pareto_k: torch.Tensor, samples: int) -> dict:
    """Can the importance-sampled estimate be trusted? Per point, the effective sample size of the
    weights and their Pareto k̂ (Vehtari et al.: above 0.7 the estimate is unreliable); recorded as
    medians and the fraction of unreliable points (``unreliable``: more than half of them)."""
    k = pareto_k.double()
    finite = k[~k.isnan()]
    above = (finite > diagnostics.PARETO_K_UNRELIABLE).double().mean().item() if len(finite) else math.nan
    return {
        "ess_median": ess.double().median().item(),
        "ess_min": ess.double().min().item(),
        "ess_of": samples,
        "pareto_k_median": finite.median().item() if len(finite) else math.nan,
        "pareto_k_above_0_7": above,
        "unreliable": bool(above > diagnostics.UNRELIABLE_SHARE),
    }


def _kl_per_dim(q: Distribution, prior: Distribution) -> torch.Tensor | None:
    """[B, D] KL of each latent dimension, where both sides are independent over one event dimension."""
    if not (
        isinstance(q, Independent)
        and isinstance(prior, Independent)
        and q.reinterpreted_batch_ndims == prior.reinterpreted_batch_ndims == 1
    ):
        return None
    try:
        return kl_divergence(q.base_dist, prior.base_dist)
    except NotImplementedError:
        return None


def _mean_and_sem(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    sem = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return values.mean().item(), sem


def _entry(values: torch.Tensor, unit: str, estimator: dict, **extra) -> dict:
    mean, sem = _mean_and_sem(values)
    return {"value": mean, "sem": sem, "unit": unit, "estimator": estimator, **extra}


def density_metrics(
    model, x: torch.Tensor, samples: int, rows_per_chunk: int = 10_000, discrete: bool = False, parts=None
) -> dict:
    """nll, elbo, kl, recon, each with ``sem``, the standard error of the mean over the test points;
    the nll also with ``mc_sem``, the Monte-Carlo standard error of the importance-sampling estimate
    itself (it shrinks with K; ``sem`` does not); and bits_per_dim
    when the likelihood is a probability of discrete pixels (``discrete``: Bernoulli, discretized
    logistic); a Gaussian density on continuous intensities has none. With a structured latent's
    ``parts``, the KL of each part (``kl`` ``parts``): the sum of its dimensions' analytic KL, or
    else its Monte-Carlo KL (``parts_estimator``)."""
    model.eval()
    terms = importance_sampled_terms(model, x, samples, rows_per_chunk, parts=parts)
    kl = terms["kl"]
    kl_estimator = {"name": "analytic"} if terms["kl_analytic"] else {"name": "monte_carlo", "samples": samples}
    common = {"points": len(x), "split": "test"}
    importance = {
        "name": "importance_sampling",
        "proposal": "posterior",
        "samples": samples,
        "rows_per_chunk": rows_per_chunk,
        **common,
    }
    per_dim = {} if terms["kl_per_dim"] is None else {"per_dim": terms["kl_per_dim"].mean(0).tolist()}
    metrics = {
        "nll": _entry(
            -terms["log_px"],
            "nats",
            importance,
            mc_sem=terms["log_px_var"].double().sum().sqrt().item() / len(x),
            **weight_diagnostics(terms["ess"], terms["pareto_k"], samples),
        ),
        "elbo": _entry(
            terms["recon"] - kl,
            "nats",
            {"name": "recon_minus_kl", "recon_samples": samples, "kl": kl_estimator["name"], **common},
        ),
        "kl": _entry(kl, "nats", {**kl_estimator, **common}, **per_dim),
        "recon": _entry(terms["recon"], "nats", {"name": "monte_carlo", "samples": samples, **common}),
    }
    if parts and terms["kl_per_dim"] is not None:
        per_dim_mean = terms["kl_per_dim"].mean(0)
        metrics["kl"]["parts"] = {name: per_dim_mean[where].sum().item() for name, where in part_slices(parts).items()}
    elif parts and terms["kl_parts"] is not None:
        metrics["kl"]["parts"] = dict(zip(parts, terms["kl_parts"].double().mean(0).tolist()))
        metrics["kl"]["parts_estimator"] = {"name": "monte_carlo", "samples": samples, "of": "conditional_densities"}
    if discrete:
        dims = x[0].numel()
        metrics["bits_per_dim"] = _entry(
            -terms["log_px"] / (dims * math.log(2)), "bits", {**importance, "name": "nll_over_dims_ln2", "dims": dims}
        )
    return metrics


# Draws per point where q has no closed-form mean (a flow): the mean's Monte-Carlo variance is then
# Var_q(z_j) / 1000, a tenth of the active-unit threshold for a unit-variance posterior, and it is
# subtracted besides (``active_units``).
POSTERIOR_MEAN_SAMPLES = 1000


@torch.no_grad()
def posterior_means(
    model, x: torch.Tensor, samples: int = POSTERIOR_MEAN_SAMPLES, rows_per_chunk: int = 100_000
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """E_q[z] for each point, flattened to [N, D]: the distribution's ``mean`` where it has one, else
    the average of ``samples`` draws; and then (else None) the Monte-Carlo variance of each such
    average, Var_q(z_j) / samples estimated from the same draws, [N, D]."""
    means, noise = [], []
    for xb in x.split(max(1, rows_per_chunk // samples)):
        q = model.posterior(xb)
        try:
            means.append(_flat(q.mean))
        except NotImplementedError:
            draws = _flat(q.sample((samples,)))
            means.append(draws.mean(0))
            noise.append(draws.var(0) / samples)
    return torch.cat(means).double(), torch.cat(noise).double() if noise else None


# Draws of each component per point for I(k; z): the estimate lies in [0, log K] and is averaged over
# the test points, so its Monte-Carlo error is far below the seeds' spread.
MIXTURE_SAMPLES = 100
# Scoring each draw under the whole mixture makes a [samples, K, points, K, D] tensor: at most this
# many elements at once (64 MB of float32; GM-DGM's 10 clusters of 100 dimensions: 16 points a chunk).
MIXTURE_ELEMENTS = 16_000_000


@torch.no_grad()
def mixture_usage(
    model, x: torch.Tensor, seed: int, samples: int = MIXTURE_SAMPLES, elements: int = MIXTURE_ELEMENTS
) -> dict:
    """Where q(z|x) is a mixture Σ_k α_k(x) q_k(z|x) (``MixtureSameFamily``; else nothing): how much of
    it its components carry. ``mixture_components``: exp H(α(x)), the number of components a point's
    weights spread over (1 to K), with each component's mean weight. ``mixture_information``:
    I(k; z) = Σ_k α_k E_{q_k}[log q_k(z|x) − log q(z|x)] from ``samples`` draws of each component, the
    information the draw's component leaves in z: 0 where the components coincide (q is then one of
    them, whatever the weights), H(α) where they do not overlap. It is what the mixture's ELBO has
    beyond Σ_k α_k ELBO(q_k): without it, a mixture is no better than its best component. Its draws
    come from ``seed`` without moving the global random stream that the later metrics draw from."""
    with forked_rng(x.device):
        torch.manual_seed(seed)
        return _mixture_usage(model, x, samples, elements)


def _mixture_usage(model, x, samples, elements):
    q = model.posterior(x[:1])
    if not isinstance(q, MixtureSameFamily):
        return {}
    k, d = q.component_distribution.batch_shape[-1], q.event_shape[-1]
    effective, information, weights = [], [], []
    for xb in x.split(max(1, elements // (samples * k * k * d))):
        q = model.posterior(xb)
        alpha = q.mixture_distribution.probs  # [B, K]
        components = q.component_distribution
        z = components.sample((samples,))  # [S, B, K, D]: draws of every component
        log_component = components.log_prob(z)  # [S, B, K]
        log_mixture = q.log_prob(z.movedim(2, 1)).movedim(1, 2)  # each draw under the whole mixture
        information.append((alpha * (log_component - log_mixture).mean(0)).sum(-1))
        effective.append(torch.special.entr(alpha).sum(-1).exp())
        weights.append(alpha)
    common = {"points": len(x), "split": "test"}
    return {
        "mixture_components": _entry(
            torch.cat(effective),
            "components",
            {"name": "exp_entropy_of_weights", **common},
            of=k,
            mean_weights=torch.cat(weights).double().mean(0).tolist(),
        ),
        "mixture_information": _entry(
            torch.cat(information), "nats", {"name": "monte_carlo", "samples_per_component": samples, **common}
        ),
    }


def part_slices(parts: dict[str, int] | None) -> dict[str, slice]:
    """Where each named part of a structured latent sits in the flattened latent (``latent_parts``)."""
    slices, start = {}, 0
    for name, size in (parts or {}).items():
        slices[name] = slice(start, start + size)
        start += size
    return slices


def active_units(
    means: torch.Tensor,
    threshold: float = ACTIVE_UNIT_THRESHOLD,
    parts: dict | None = None,
    noise: torch.Tensor | None = None,
    samples: int | None = None,
) -> dict:
    """The number of latent dimensions j with Var_x(E_q[z_j|x]) > ``threshold`` (Burda et al. 2016),
    and per part of a structured latent. Where the means are Monte-Carlo averages, the variance
    of their noise (``noise``: each mean's Monte-Carlo variance, from ``posterior_means``) is
    subtracted: the variance across points of a noisy mean is the true one plus the noise's average,
    so an inactive unit is not counted for its noise."""
    variance = means.var(0, unbiased=True)
    estimator = {"name": "variance_of_posterior_means", "threshold": threshold, "points": len(means), "split": "test"}
    if noise is not None:
        variance = variance - noise.mean(0)
        estimator.update(means="monte_carlo", samples=samples, noise="subtracted")
    else:
        estimator["means"] = "closed_form"
    active = variance > threshold
    entry = {
        "value": int(active.sum()),
        "of": means.shape[1],
        "unit": "dimensions",
        "per_dim_variance": variance.tolist(),
        "estimator": estimator,
    }
    if parts:
        entry["parts"] = {name: int(active[where].sum()) for name, where in part_slices(parts).items()}
    return entry


def cluster_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """The fraction of points whose cluster maps to their label under the best one-to-one map of
    clusters to labels (the Hungarian algorithm on the contingency table; clusters left unmatched
    when there are more clusters than labels count as wrong)."""
    from scipy.optimize import linear_sum_assignment

    label_ids, labels = np.unique(labels, return_inverse=True)
    cluster_ids, clusters = np.unique(clusters, return_inverse=True)
    table = np.zeros((len(cluster_ids), len(label_ids)), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return table[rows, cols].sum() / len(labels)


def clustering(model, x: torch.Tensor, labels: torch.Tensor, means: torch.Tensor, seed: int, parts=None) -> dict:
    """cluster_acc, nmi and ari of the test labels. A method with a discrete latent reads its clusters
    from the model (``cluster_assignments``); every other method gets k-means (as many clusters as
    labels) on its posterior means. With a structured latent each part is clustered too (k-means on
    that part's means, or the model's clusters of that part) and carried as the metrics' ``parts``;
    where the model clusters only per part, the value is its best part's (named in ``best_part``)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = labels.cpu().numpy()
    k = len(np.unique(labels))
    kmeans = lambda features: KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features.cpu().numpy())
    with torch.no_grad():
        assigned = model.cluster_assignments(x)
    if assigned is None:
        whole = kmeans(means)
        by_part = {name: kmeans(means[:, where]) for name, where in part_slices(parts).items()}
        estimator = {"name": "kmeans_on_posterior_means", "k": k, "n_init": 10, "random_state": seed}
    else:
        by_part = {n: c.cpu().numpy() for n, c in assigned.items()} if isinstance(assigned, dict) else {}
        whole = None if by_part else assigned.cpu().numpy()
        estimator = {"name": "model_clusters"}
    estimator.update(points=len(labels), split="test", labels=k)
    scores = {
        "cluster_acc": cluster_accuracy,
        "nmi": normalized_mutual_info_score,
        "ari": adjusted_rand_score,
    }
    result = {}
    for name, score in scores.items():
        entry = {
            "unit": "fraction",
            "estimator": {**estimator, "matching": "hungarian"} if name == "cluster_acc" else estimator,
        }
        if by_part:
            entry["parts"] = {part: float(score(labels, clusters)) for part, clusters in by_part.items()}
        if whole is not None:
            entry["value"] = float(score(labels, whole))
        else:
            entry["best_part"] = max(entry["parts"], key=entry["parts"].get)
            entry["value"] = entry["parts"][entry["best_part"]]
        result[name] = entry
    return result


PROBE_FOLDS = 5


def _logistic_classifier():
    """The linear classifier of every probe: multinomial logistic regression on standardised codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def linear_probe(means: torch.Tensor, labels: torch.Tensor, seed: int, parts=None) -> dict:
    """probe_acc: how linearly the posterior means hold the labels. A multinomial logistic regression
    (scikit-learn's, on standardised means) is fitted on four fifths of the test points and scored
    on the fifth, over 5 stratified folds (shuffled with the run's seed); the mean accuracy, for the
    whole latent and for each part (which layer holds the digit identity). With fewer test points of
    some label than folds, as many folds as that label has points; below two, no probe."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    labels = labels.cpu().numpy()
    n_folds = min(PROBE_FOLDS, int(np.unique(labels, return_counts=True)[1].min()))
    if n_folds < 2:
        return {}
    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    probe = _logistic_classifier()
    score = lambda features: float(cross_val_score(probe, features.cpu().double().numpy(), labels, cv=folds).mean())
    entry = {
        "value": score(means),
        "unit": "fraction",
        "estimator": {
            "name": "logistic_regression_cross_validated",
            "folds": n_folds,
            "features": "posterior_means",
            "points": len(labels),
            "split": "test",
            "random_state": seed,
        },
    }
    if parts:
        entry["parts"] = {name: score(means[:, where]) for name, where in part_slices(parts).items()}
    return {"probe_acc": entry}


LABEL_DRAWS = 5  # the MAE code's random subsets of labelled training codes per size
NEIGHBOURS = 10  # its k-NN: 10 neighbours, distance-weighted


def label_efficiency(
    train_means: torch.Tensor,
    train_labels: torch.Tensor,
    test_means: torch.Tensor,
    test_labels: torch.Tensor,
    label_counts: list[int],
    clusters: list[int],
    seed: int,
) -> dict:
    """Ma et al.'s representation metrics (the MAE code's classify.py, with scikit-learn): a linear
    classifier (logistic regression on standardised means) and a 10-NN classifier trained on the
    training codes and their labels, scored on the test codes: with every label (``value``) and, for
    each n of ``label_counts`` below the training set's size, the mean over ``LABEL_DRAWS`` random
    draws of n labelled codes (``parts``); and k-means on the training codes for each K of
    ``clusters``, each cluster labelled by the majority of its training labels, scored on the test
    codes (``value``: the first K)."""
    from sklearn.cluster import KMeans
    from sklearn.neighbors import KNeighborsClassifier

    x_train, y_train = train_means.cpu().double().numpy(), train_labels.cpu().numpy()
    x_test, y_test = test_means.cpu().double().numpy(), test_labels.cpu().numpy()
    classifiers = {  # name: (a classifier for n training codes, its estimator's name)
        "linear_acc": (lambda n: _logistic_classifier(), "logistic"),
        "knn_acc": (lambda n: KNeighborsClassifier(min(NEIGHBOURS, n), weights="distance"), "knn_distance_10"),
    }
    draws = np.random.default_rng(seed)
    counts = [n for n in label_counts if n < len(y_train)]
    subsets = {n: [draws.choice(len(y_train), n, replace=False) for _ in range(LABEL_DRAWS)] for n in counts}
    accuracy = lambda model, idx: float((model.fit(x_train[idx], y_train[idx]).predict(x_test) == y_test).mean())
    every = np.arange(len(y_train))
    estimator = {"features": "posterior_means", "train_points": len(y_train), "test_points": len(y_test)}
    result = {}
    for name, (build, kind) in classifiers.items():
        parts = {str(n): float(np.mean([accuracy(build(n), idx) for idx in subsets[n]])) for n in counts}
        value = accuracy(build(len(every)), every)
        result[name] = {
            "value": value,
            "parts": {**parts, "all": value},
            "unit": "fraction",
            "estimator": {**estimator, "name": kind, "draws": LABEL_DRAWS, "random_state": seed},
        }
    by_k = {}
    for k in clusters:
        assigned = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x_train)
        majority = {
            c: np.bincount(y_train[assigned.labels_ == c]).argmax() for c in range(k) if (assigned.labels_ == c).any()
        }
        predicted = np.array([majority.get(c, -1) for c in assigned.predict(x_test)])
        by_k[str(k)] = float((predicted == y_test).mean())
    if by_k:
        result["kmeans_acc"] = {
            "value": by_k[str(clusters[0])],
            "parts": by_k,
            "unit": "fraction",
            "estimator": {**estimator, "name": "kmeans_majority_label", "n_init": 10, "random_state": seed},
        }
    return result


def fit_local_posteriors(
    model, x: torch.Tensor, max_steps: int, optimizer: dict = GAP_OPTIMIZER, start: str = "encoder"
) -> tuple[dict, dict]:
    """q* for each point of ``x``: the member of the method's own variational family (its
    ``variational_family``) with the highest ELBO, found by Adam on the family's parameters, started
    from the encoder's output (``start = "encoder"``), or with every parameter zero (``"zero"``:
    N(0, I) in the Gaussian families' mean / log-scale or log-diagonal parameterisations, Cremer et
    al.'s own start; a mixture's components then coincide). Every point is optimised on its own
    (Adam's update is per element, and the loss a sum over points); a point stops when its
    ``check_every``-step average loss has not improved for more than ``patience`` checks, or at
    ``max_steps``; a point whose ELBO estimate turns non-finite stops at its last parameters with a
    finite one (counted, never dropped, and not counted as converged in ``stopped_fraction``).
    Returns q*'s parameters and how the optimisation went."""
    if start not in GAP_STARTS:
        raise ValueError(f"unknown gap start {start!r}; valid: {', '.join(GAP_STARTS)}")
    with torch.no_grad():
        encoded = model.variational_parameters(x)
    initial = encoded if start == "encoder" else {name: torch.zeros_like(value) for name, value in encoded.items()}
    params = {name: value.detach().clone().requires_grad_() for name, value in initial.items()}
    adam = torch.optim.Adam(params.values(), lr=optimizer["learning_rate"])
    n, check_every = len(x), optimizer["check_every"]
    window, best = torch.zeros(n, device=x.device), torch.full((n,), math.inf, device=x.device)
    strikes = torch.zeros(n, dtype=torch.long, device=x.device)
    stopped = torch.zeros(n, dtype=torch.bool, device=x.device)
    non_finite = torch.zeros(n, dtype=torch.bool, device=x.device)
    kept = {name: value.detach().clone() for name, value in params.items()}  # what a stopped point keeps
    trained = [p for p in model.parameters() if p.requires_grad]
    for p in trained:  # only q*'s parameters move
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for step in range(1, max_steps + 1):
                q = model.variational_family(params)
                loss = -reparameterized_elbo(model, x, q, optimizer["samples_per_step"])
                finite = torch.isfinite(loss.detach())
                with torch.no_grad():
                    moving = finite & ~stopped
                    for name, value in params.items():
                        kept[name][moving] = value[moving]
                non_finite |= ~finite
                stopped |= ~finite
                adam.zero_grad(set_to_none=True)
                torch.where(finite, loss, 0.0).sum().backward()
                adam.step()
                with torch.no_grad():
                    for name, value in params.items():
                        value[stopped] = kept[name][stopped]
                window += torch.where(finite, loss.detach(), 0.0)
                if step % check_every == 0:
                    average = window / check_every
                    improved = average < best
                    best = torch.where(improved, average, best)
                    strikes = torch.where(improved, 0, strikes + 1)
                    stopped |= strikes > optimizer["patience"]
                    window.zero_()
                    if stopped.all():
                        break
    finally:
        for p in trained:
            p.requires_grad_(True)
    return (
        {name: value.detach() for name, value in params.items()},
        {
            "steps": step,
            "stopped_fraction": (stopped & ~non_finite).float().mean().item(),  # met the rule: converged
            "non_finite_points": int(non_finite.sum()),
        },
    )


def inference_gaps(
    model,
    x: torch.Tensor,
    max_steps: int,
    samples: int,
    optimizer: dict = GAP_OPTIMIZER,
    start: str = "encoder",
    points_per_chunk: int = 100,
) -> dict:
    """Cremer, Li & Duvenaud (2018) on the points ``x``: L[q] (the amortized q(z|x)), L[q*] (q fitted
    per point, ``fit_local_posteriors``) and log p̂(x) (importance sampling with q* as the proposal),
    each with ``samples`` samples; amortization gap = L[q*] − L[q], approximation gap = log p̂(x) −
    L[q*], inference gap = their sum. None where the method exposes no variational family. The
    points are fitted ``points_per_chunk`` at a time (they are independent; the chunk bounds the
    memory of the fit's forward and backward passes through the decoder)."""
    model.eval()
    try:
        with torch.no_grad():
            model.variational_parameters(x[:1])
    except NotImplementedError:
        return {}
    amortized = importance_sampled_terms(model, x, samples)
    fitted = [fit_local_posteriors(model, chunk, max_steps, optimizer, start) for chunk in x.split(points_per_chunk)]
    q_star = {name: torch.cat([params[name] for params, _ in fitted]) for name in fitted[0][0]}
    chunks = [(len(chunk), report) for chunk, (_, report) in zip(x.split(points_per_chunk), fitted)]
    optimisation = {
        "steps": max(report["steps"] for _, report in chunks),
        "stopped_fraction": sum(n * report["stopped_fraction"] for n, report in chunks) / len(x),
        "non_finite_points": sum(report["non_finite_points"] for _, report in chunks),
    }
    local = importance_sampled_terms(
        model, x, samples, proposal=lambda rows: model.variational_family({k: v[rows] for k, v in q_star.items()})
    )
    elbo_q, elbo_q_star = amortized["recon"] - amortized["kl"], local["recon"] - local["kl"]
    estimator = {
        "name": "cremer2018",
        "points": len(x),
        "split": "test",
        "samples": samples,
        "log_px": "importance_sampling, proposal q*",
        "max_steps": max_steps,
        "start": start,
        "points_per_chunk": points_per_chunk,
        **optimisation,
        "converged": optimisation["stopped_fraction"] >= CONVERGED_FRACTION,
        "optimizer": optimizer,
    }
    return {
        "amortization_gap": _entry(elbo_q_star - elbo_q, "nats", estimator),
        "approximation_gap": _entry(local["log_px"] - elbo_q_star, "nats", estimator),
        "inference_gap": _entry(
            local["log_px"] - elbo_q,
            "nats",
            estimator,
            elbo_q=elbo_q.mean().item(),
            elbo_q_star=elbo_q_star.mean().item(),
        ),
    }


def forked_rng(device: torch.device):
    """Draws of their own: the global random state (the CPU's, and ``device``'s if a GPU) is restored
    on leaving, so what is drawn inside never shifts a run's other draws."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def synchronize(device: torch.device):
    """Wait for the device's queued work, so that wall-clock covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _random_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_random_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextlib.contextmanager
def _turn_on_shared_gpu(device: torch.device):
    """Hold the GPU alone among the runs of this machine that share it (a lock file per GPU): the runs
    of a sweep reach their memory-hungry metric groups at about the same time, and twelve of MAE's gap
    fits need more than an H200's memory; one at a time each fits."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "-")
    path = Path(tempfile.gettempdir()) / f"vlaebench-gpu-{visible}-{device.index or 0}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


@torch.no_grad()
def inference_latency(model, x: torch.Tensor, batch_size: int = 100, repeats: int = 20, warmup: int = 3) -> dict:
    """Wall-clock of test-time inference for one batch of test points (the cost that separates
    iterative from amortized inference): building q(z|x) and drawing one sample from it (a lazily
    applied flow does its work when sampled); the median over ``repeats`` after ``warmup``,
    synchronised on CUDA."""
    model.eval()
    batch = x[:batch_size]
    times = []
    for i in range(warmup + repeats):
        synchronize(x.device)
        started = time.perf_counter()
        model.posterior(batch).sample()
        synchronize(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return {
        "inference_latency_ms": 1000 * statistics.median(times),
        "inference_latency_batch": len(batch),
        "inference_latency_repeats": repeats,
        "inference_latency_of": "posterior(x) and one sample",
    }


def evaluate(
    model,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    evaluation: dict,
    seed: int,
    discrete: bool,
    distinct: int | None = None,
    train: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict, dict, dict]:
    """Every test metric of a trained model on the (binarized) test points ``x``; the wall-clock each
    group of them took and the inference latency; and the groups that failed, with their traceback.
    Each group (density, posterior means and active units, mixture usage, clustering, linear probe,
    gaps, latency) is evaluated on its own: one that fails leaves the others' values in the record.
    ``evaluation`` is the run config's: importance_samples, gap_points (None: no gaps),
    gap_max_steps, gap_samples, gap_start, and the chunk sizes importance_rows_per_chunk and
    gap_points_per_chunk. Only the first ``distinct`` points (all if None) are distinct images, the
    others further binarizations of them: the posterior means, active units, mixture usage,
    clustering and probe use those alone (the probe would otherwise find copies of one image on both
    sides of its folds). ``train`` (training images as evaluated, and their labels, given where
    ``evaluation`` sets ``probe_labels`` or ``kmeans_clusters``) gives the representation metrics of
    ``label_efficiency``."""
    metrics, seconds, errors, retried = {}, {}, {}, []
    parts = model.latent_parts()
    shared_gpu = int(os.environ.get(RUNS_SHARING_DEVICE, 1)) > 1

    def group(name, compute):
        synchronize(x.device)
        started = time.perf_counter()
        random_state = _random_state(x.device)
        try:
            try:
                return compute()
            except torch.cuda.OutOfMemoryError:
                if not shared_gpu:
                    raise
            # Out of memory beside the other runs on this GPU: give back the cached memory (here, outside
            # the handler, whose traceback held the failed attempt's tensors), wait for the GPU to itself
            # among the runs that do the same, and try once more from the same random state
            retried.append(name)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            with _turn_on_shared_gpu(x.device):
                _set_random_state(x.device, random_state)
                return compute()
        except Exception:  # recorded; the other groups go on
            errors[name] = traceback.format_exc()[-2000:]
            return None
        finally:
            synchronize(x.device)
            seconds[f"{name}_s"] = time.perf_counter() - started

    density = group(
        "density",
        lambda: density_metrics(
            model, x, evaluation["importance_samples"], evaluation["importance_rows_per_chunk"], discrete, parts
        ),
    )
    metrics.update(density or {})
    images = x[:distinct]
    means, noise = group("posterior_means", lambda: posterior_means(model, images)) or (None, None)
    if means is not None:
        metrics["active_units"] = active_units(means, parts=parts, noise=noise, samples=POSTERIOR_MEAN_SAMPLES)
        metrics.update(group("mixture", lambda: mixture_usage(model, images, seed)) or {})
        if labels is not None:
            labels = labels[:distinct]
            metrics.update(group("clustering", lambda: clustering(model, images, labels, means, seed, parts)) or {})
            metrics.update(group("probe", lambda: linear_probe(means, labels, seed, parts)) or {})
            if train is not None:  # the caller passes it where the spec asks for these metrics

                def representation():
                    train_means = posterior_means(model, train[0])[0]
                    label_counts, clusters = (
                        evaluation.get("probe_labels") or [],
                        evaluation.get("kmeans_clusters") or [],
                    )
                    return label_efficiency(train_means, train[1], means, labels, label_counts, clusters, seed)

                metrics.update(group("label_efficiency", representation) or {})
    if evaluation.get("gap_points"):
        torch.manual_seed(seed)
        gaps = lambda: inference_gaps(
            model,
            x[: evaluation["gap_points"]],
            evaluation["gap_max_steps"],
            evaluation["gap_samples"],
            start=evaluation.get("gap_start") or "encoder",
            points_per_chunk=evaluation["gap_points_per_chunk"],
        )
        metrics.update(group("gaps", gaps) or {})
    if evaluation.get("ais_points"):
        torch.manual_seed(seed)
        settings = {
            "points": evaluation["ais_points"],
            "chains": evaluation["ais_chains"],
            "steps": evaluation["ais_steps"],
            "importance_samples": evaluation["importance_samples"],  # IS on the same points, for a paired check
            "importance_rows_per_chunk": evaluation["importance_rows_per_chunk"],
        }
        metrics.update(group("ais", lambda: ais.ais_metrics(model, x, **settings)) or {})
    timing = {"eval_s": seconds, **(group("latency", lambda: inference_latency(model, x)) or {})}
    if retried:
        timing["eval_retried_alone_on_gpu"] = retried
    for name, entry in metrics.items():
        entry["version"] = METRICS[name].version
    return metrics, timing, errors


@torch.no_grad()
def elbo_single_sample(model, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean single-sample ELBO over ``x``: the validation curve, the same estimator for every method."""
    model.eval()
    total = 0.0
    for xb in x.split(batch_size):
        q = model.posterior(xb)
        z = q.sample()
        total += (model.log_joint(xb, z) - q.log_prob(z)).sum().item()
    return total / len(x)
