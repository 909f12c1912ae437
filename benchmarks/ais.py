"""Annealed importance sampling (AIS): an estimate of log p(x) that does not use q(z|x) at all.

The importance-sampled NLL and the approximation gap both take q (or q*) as their proposal, so a
poor q biases them together. AIS (Neal 2001), as Wu, Burda, Salakhutdinov & Grosse (2017, "On the
quantitative analysis of decoder-based generative models") use it to evaluate decoders and Cremer,
Li & Duvenaud (2018) to check their gaps, starts from the prior and reaches the posterior through a
sequence of intermediate distributions, so it needs only the decoder and the prior:

- chains start at z ~ p(z) (the prior: neither the encoder nor ``posterior`` is ever called);
- the intermediate targets are f_t(z) = p(z) p(x|z)^β_t, 0 = β_0 < β_1 < ... < β_T = 1 (``schedule``:
  Wu et al.'s sigmoid, or linear);
- each chain accumulates log w = Σ_{t=1..T} (β_t − β_{t−1}) log p(x|z_t), where z_1 ~ p(z) and z_{t+1}
  is z_t moved by a Hamiltonian Monte Carlo transition that leaves f_t invariant (``leapfrog_steps``
  leapfrog steps of a unit-mass Hamiltonian, then a Metropolis accept/reject);
- log p̂(x) = logmeanexp over the ``chains`` independent chains of each point. E[p̂(x)] = p(x), so
  E[log p̂(x)] ≤ log p(x): like the importance-sampled estimate, AIS is a stochastic lower bound,
  which tightens as T grows (for T → ∞ its bias vanishes) whatever q is.

Step size: adapted towards an acceptance rate of 0.65 with Wu et al.'s rule, per chain, on
``pilot_chains`` extra chains per point that are annealed alongside and whose weights are thrown
away: each pilot keeps an exponential moving average (decay 0.9) of its Metropolis acceptance
probability min(1, e^{−ΔH}), and after each transition multiplies its step size by 1.02 where that
average is above 0.65 and by 0.98 where it is below, within [1e-4, 0.5]. The ``chains`` that are
weighted take, at each transition, the geometric mean of their point's pilots' step sizes. A chain
whose step size followed its own acceptance would have kernels that depend on its own past, which
breaks AIS's unbiasedness: on probabilistic PCA that made log p̂(x) come out 0.015 ± 0.003 nats above
log p(x) on average, against 0.009 ± 0.003 below for a fixed step size and 0.006 ± 0.003 below with 4
pilots (500 steps, 32 chains, 40 points, 40 repetitions; the lower bound's bias, −Var(p̂)/2p², is
about −0.007 there). Wu et al.'s code shares one step size
between all the chains of a batch, which dilutes that dependence but also couples the points of a
batch. With the pilots' step sizes, independent of the weighted chains, E[p̂(x)] = p(x) exactly.
``pilot_chains=0``: no adaptation, every transition at ``initial_step_size``.

The model protocol is all it uses: ``prior()`` (``sample``, ``log_prob``) and ``log_likelihood(x,
z)``. Gradients with respect to z are taken with ``torch.autograd.grad`` under
``torch.enable_grad()`` (the metrics run under ``no_grad``), with respect to z only: the model's
parameters receive no ``.grad``. A latent that is a tuple of layers (a ladder) is not supported:
``ais`` raises ``NotApplicable``, and ``ais_metrics`` then leaves ``ais_nll`` out of the record.
"""

import math

import torch

from benchmarks import diagnostics

SCHEDULES = ("sigmoid", "linear")
SIGMOID_DELTA = 4.0  # Wu et al.'s sigmoid schedule
TARGET_ACCEPTANCE = 0.65
ADAPTATION = {"decay": 0.9, "increase": 1.02, "decrease": 0.98, "min": 1e-4, "max": 0.5}
# Settings that converge on the suite's small models (the baselines' VAE on MNIST: see ``ais_metrics``).
DEFAULTS = {"points": 100, "chains": 16, "steps": 500, "leapfrog_steps": 10, "schedule": "sigmoid", "pilot_chains": 4}
INITIAL_STEP_SIZE = 0.05


class NotApplicable(NotImplementedError):
    """AIS cannot run on this model (a tuple latent): the metric is not applicable, not failed."""


def schedule(steps: int, kind: str = "sigmoid", delta: float = SIGMOID_DELTA) -> torch.Tensor:
    """β_0 = 0, ..., β_T = 1 for T = ``steps`` (float64). ``linear``: β_t = t/T. ``sigmoid`` (Wu et
    al.): β̃_t = σ(δ (2t/T − 1)), rescaled to run from 0 to 1: (β̃_t − β̃_0) / (β̃_T − β̃_0); its steps
    are small at both ends, where log p(x|z) changes most (near β = 0) and the posterior is narrow."""
    if steps < 1:
        raise ValueError(f"AIS needs at least one intermediate distribution, got steps={steps}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    if kind == "linear":
        return t
    if kind == "sigmoid":
        raw = torch.sigmoid(delta * (2 * t - 1))
        return (raw - raw[0]) / (raw[-1] - raw[0])
    raise ValueError(f"unknown AIS schedule {kind!r}; valid: {', '.join(SCHEDULES)}")


class _Target:
    """log p(x|z), log p(z) and their gradients in z, for the chains [C, B, D] of the points x [B]."""

    def __init__(self, model, x: torch.Tensor):
        self.model, self.x, self.prior = model, x, model.prior()

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_lik = self.model.log_likelihood(self.x, z)
            log_prior = self.prior.log_prob(z)
            (grad_lik,) = torch.autograd.grad(log_lik.sum(), z, allow_unused=True)
            (grad_prior,) = torch.autograd.grad(log_prior.sum(), z, allow_unused=True)
        zero = torch.zeros_like(z)
        grad_lik = zero if grad_lik is None else grad_lik
        grad_prior = zero if grad_prior is None else grad_prior
        return z.detach(), log_lik.detach(), log_prior.detach(), grad_lik, grad_prior


def _hmc(target: _Target, state: tuple, beta: float, step_size: torch.Tensor, leapfrog_steps: int):
    """One HMC transition leaving f_β(z) = p(z) p(x|z)^β invariant, for every chain at once with its
    own step size [C, B]; returns the new state and each chain's acceptance probability."""
    z, log_lik, log_prior, grad_lik, grad_prior = state
    eps = step_size.unsqueeze(-1).to(z.dtype)
    momentum = torch.randn_like(z)
    start_h = -(log_prior + beta * log_lik) + 0.5 * momentum.pow(2).sum(-1)
    proposal = state
    p = momentum + 0.5 * eps * (grad_prior + beta * grad_lik)
    for step in range(leapfrog_steps):
        proposal = target(proposal[0] + eps * p)
        gradient = proposal[4] + beta * proposal[3]
        p = p + (0.5 if step == leapfrog_steps - 1 else 1.0) * eps * gradient
    end_h = -(proposal[2] + beta * proposal[1]) + 0.5 * p.pow(2).sum(-1)
    # a non-finite energy (the chain left the region the model computes in) is rejected
    log_accept = torch.nan_to_num((start_h - end_h).double(), nan=-math.inf).clamp(max=0)
    accept_probability = log_accept.exp()
    accepted = torch.rand_like(accept_probability) < accept_probability
    new_state = tuple(
        torch.where(accepted.view(*accepted.shape, *([1] * (new.dim() - accepted.dim()))), new, old)
        for new, old in zip(proposal, state)
    )
    return new_state, accept_probability


def ais(
    model,
    x: torch.Tensor,
    chains: int = DEFAULTS["chains"],
    steps: int = DEFAULTS["steps"],
    leapfrog_steps: int = DEFAULTS["leapfrog_steps"],
    schedule_kind: str = DEFAULTS["schedule"],
    pilot_chains: int = DEFAULTS["pilot_chains"],
    initial_step_size: float = INITIAL_STEP_SIZE,
    target_acceptance: float = TARGET_ACCEPTANCE,
    rows_per_chunk: int = 4096,
) -> dict:
    """log p̂(x) of each point of ``x`` by AIS from the prior (see the module's docstring): ``chains``
    independent chains per point through ``steps`` intermediate distributions, ``leapfrog_steps``
    leapfrog steps per HMC transition, the step sizes set by ``pilot_chains`` adapting chains per
    point. Points go through in chunks of at most ``rows_per_chunk`` (chain, point) pairs, pilots
    included. Uses the global torch random generator.

    Returns ``log_px`` [B] and ``log_weights`` [chains, B] (float64), and the run's diagnostics:
    ``acceptance_rate`` (the weighted chains' mean Metropolis acceptance probability over
    transitions, chains and points), ``step_size`` (their step sizes' mean at the last transition),
    ``weights_ess`` (the mean over points of the effective number of chains, (Σw)²/Σw², out of
    ``chains``). Raises ``NotApplicable`` for a tuple latent."""
    betas = schedule(steps, schedule_kind)
    model.eval()
    rows = chains + pilot_chains
    points_per_chunk = max(1, rows_per_chunk // rows)
    log_weights, acceptance, final_step = [], [], []
    for x_chunk in x.split(points_per_chunk):
        target = _Target(model, x_chunk)
        z = target.prior.sample((rows, len(x_chunk)))
        if isinstance(z, (tuple, list)):
            raise NotApplicable("AIS here runs HMC on a single latent tensor; this model's latent is a tuple of layers")
        state = target(z)
        log_w = torch.zeros(rows, len(x_chunk), dtype=torch.float64, device=x.device)
        pilot_step = torch.full((pilot_chains, len(x_chunk)), initial_step_size, dtype=torch.float64, device=x.device)
        average = torch.full_like(pilot_step, target_acceptance)
        step_size = torch.full_like(log_w, initial_step_size)
        accept_sum = torch.zeros(chains, len(x_chunk), dtype=torch.float64, device=x.device)
        for t in range(1, steps + 1):
            log_w += (betas[t] - betas[t - 1]).item() * state[1].double()
            if t == steps:
                break
            if pilot_chains:
                step_size = torch.cat([pilot_step.log().mean(0).exp().expand(chains, -1), pilot_step])
            state, accept = _hmc(target, state, betas[t].item(), step_size, leapfrog_steps)
            accept_sum += accept[:chains]
            if pilot_chains:
                average = ADAPTATION["decay"] * average + (1 - ADAPTATION["decay"]) * accept[chains:]
                factor = torch.where(average > target_acceptance, ADAPTATION["increase"], ADAPTATION["decrease"])
                pilot_step = (pilot_step * factor).clamp(ADAPTATION["min"], ADAPTATION["max"])
        log_weights.append(log_w[:chains])
        acceptance.append(accept_sum / max(1, steps - 1))
        final_step.append(step_size[:chains])
    log_weights = torch.cat(log_weights, 1)
    return {
        "log_px": torch.logsumexp(log_weights, 0) - math.log(chains),
        "log_weights": log_weights,
        "acceptance_rate": torch.cat(acceptance, 1).mean().item() if steps > 1 else math.nan,
        "step_size": torch.cat(final_step, 1).mean().item(),
        "weights_ess": diagnostics.ess(log_weights).mean().item(),
        "settings": {
            "chains": chains,
            "steps": steps,
            "leapfrog_steps": leapfrog_steps,
            "schedule": schedule_kind,
            "pilot_chains": pilot_chains,
            "initial_step_size": initial_step_size,
            "target_acceptance": target_acceptance,
            "rows_per_chunk": rows_per_chunk,
        },
    }


def ais_metrics(
    model,
    x: torch.Tensor,
    points: int = DEFAULTS["points"],
    chains: int = DEFAULTS["chains"],
    steps: int = DEFAULTS["steps"],
    leapfrog_steps: int = DEFAULTS["leapfrog_steps"],
    schedule_kind: str = DEFAULTS["schedule"],
    importance_samples: int | None = None,
    importance_rows_per_chunk: int = 10_000,
    **options,
) -> dict:
    """``{"ais_nll": entry}`` on the first ``points`` test points of ``x``: the mean of −log p̂(x) by
    ``ais``, ``sem`` over the points, in nats, with the estimator's settings and diagnostics; ``{}``
    where AIS is not applicable (a tuple latent), as the gaps are absent for a method without a
    variational family. ``options`` go to ``ais`` (pilot_chains, initial_step_size,
    target_acceptance, rows_per_chunk).

    With ``importance_samples`` K, the same points also get the importance-sampled NLL (q as the
    proposal, K samples, after the AIS draws): ``importance_sampled`` its mean, and
    ``minus_importance_sampled`` (with its paired ``minus_importance_sampled_sem``) the mean over
    the points of AIS's NLL minus IS's. AIS is run on a few points only; the test NLL's points are
    many more, so only this paired difference says whether AIS finds likelihood that q misses
    (below zero) or has not converged (above)."""
    from benchmarks.metrics import _entry, _mean_and_sem, importance_sampled_terms  # here: metrics imports this

    x = x[:points]
    try:
        result = ais(model, x, chains, steps, leapfrog_steps, schedule_kind, **options)
    except NotApplicable:
        return {}
    paired = {}
    if importance_samples:
        is_nll = -importance_sampled_terms(model, x, importance_samples, importance_rows_per_chunk)["log_px"].double()
        difference, difference_sem = _mean_and_sem(-result["log_px"] - is_nll)
        paired = {
            "importance_sampled": is_nll.mean().item(),
            "minus_importance_sampled": difference,
            "minus_importance_sampled_sem": difference_sem,
        }
    estimator = {
        "name": "annealed_importance_sampling",
        "points": len(x),
        "chains": chains,
        "steps": steps,
        "leapfrog_steps": leapfrog_steps,
        "schedule": schedule_kind,
        "pilot_chains": result["settings"]["pilot_chains"],
        "start": "prior",
        "split": "test",
        "acceptance_rate": result["acceptance_rate"],
        "target_acceptance": result["settings"]["target_acceptance"],
        "step_size": result["step_size"],
        "weights_ess": result["weights_ess"],
        **({"importance_samples": importance_samples} if paired else {}),
    }
    return {"ais_nll": _entry(-result["log_px"], "nats", estimator, **paired)}
