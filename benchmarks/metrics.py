"""Every metric, written once against the model protocol (``models.base``).

Each value is returned with the settings of its estimator, as it goes into the record.
"""

import math

import torch
from torch.distributions import kl_divergence

from models.base import has_analytic_kl

# name -> (description, lower is better)
METRICS = {
    "nll": ("test negative log-likelihood, importance-sampled (nats)", True),
    "elbo": ("test evidence lower bound (nats)", False),
    "kl": ("test KL(q(z|x) ‖ p(z)) (nats)", True),
    "recon": ("test reconstruction term E_q log p(x|z) (nats)", False),
}


@torch.no_grad()
def importance_sampled_terms(model, x: torch.Tensor, samples: int, rows_per_chunk: int = 10_000) -> dict:
    """Per data point: log p̂(x) = logmeanexp_k [log p(x, z_k) − log q(z_k|x)], z_k ~ q(z|x); from the
    same samples E_q log p(x|z); and KL(q || p), analytic where torch.distributions has it (then
    ``kl_analytic`` is True), else the Monte-Carlo mean over those samples.

    Work is chunked so that at most ``rows_per_chunk`` (point, sample) pairs go through the decoder
    at once: memory stays bounded for K = 5000, and small chunks keep the matrix products in cache.
    q(z|x) is computed once per chunk of points (it may be expensive: iterative refinement).
    """
    points_per_chunk = max(1, rows_per_chunk // samples)
    samples_per_chunk = min(samples, rows_per_chunk)
    out = {"log_px": [], "recon": [], "kl": []}
    prior = model.prior()
    analytic = None
    for x_chunk in x.split(points_per_chunk):
        q = model.posterior(x_chunk)
        analytic = has_analytic_kl(q, prior) if analytic is None else analytic
        terms = []
        for start in range(0, samples, samples_per_chunk):
            z = q.sample((min(samples_per_chunk, samples - start),))
            log_prior = prior.log_prob(z)
            log_q = q.log_prob(z)
            log_joint = model.log_joint(x_chunk, z)
            terms.append((torch.logsumexp(log_joint - log_q, 0), (log_joint - log_prior).sum(0), (log_q - log_prior).sum(0)))
        out["log_px"].append(torch.logsumexp(torch.stack([t[0] for t in terms]), 0) - math.log(samples))
        out["recon"].append(sum(t[1] for t in terms) / samples)
        out["kl"].append(kl_divergence(q, prior) if analytic else sum(t[2] for t in terms) / samples)
    return {**{key: torch.cat(values) for key, values in out.items()}, "kl_analytic": analytic}


def _mean_and_sem(values: torch.Tensor) -> tuple[float, float]:
    values = values.double()
    sem = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return values.mean().item(), sem


def evaluate(model, x: torch.Tensor, samples: int, rows_per_chunk: int = 10_000) -> dict:
    """The test metrics of a trained model on the (binarized) points ``x``: nll, elbo, kl, recon."""
    model.eval()
    terms = importance_sampled_terms(model, x, samples, rows_per_chunk)
    kl = terms["kl"]
    kl_estimator = {"name": "analytic"} if terms["kl_analytic"] else {"name": "monte_carlo", "samples": samples}
    elbo = terms["recon"] - kl
    common = {"points": len(x), "split": "test"}
    importance = {"name": "importance_sampling", "proposal": "posterior", "samples": samples,
                  "rows_per_chunk": rows_per_chunk, **common}
    metrics = {}
    for name, values, estimator in [
        ("nll", -terms["log_px"], importance),
        ("elbo", elbo, {"name": "recon_minus_kl", "recon_samples": samples, "kl": kl_estimator["name"], **common}),
        ("kl", kl, {**kl_estimator, **common}),
        ("recon", terms["recon"], {"name": "monte_carlo", "samples": samples, **common}),
    ]:
        mean, sem = _mean_and_sem(values)
        metrics[name] = {"value": mean, "sem": sem, "unit": "nats", "estimator": estimator}
    return metrics


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
