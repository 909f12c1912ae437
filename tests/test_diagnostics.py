"""The importance weights' diagnostics (ESS, Pareto k̂) against weights whose answer is known:
equal or dominated weights, generalized-Pareto weights of a known shape, proposals wider and much
narrower than their target."""

import math

import numpy as np
import pytest
import torch
from linear_gaussian import LinearGaussian
from scipy.stats import genpareto
from torch.distributions import Normal

from benchmarks import diagnostics


def gaussian_log_weights(proposal_scale: float, samples: int, points: int, dims: int, seed: int = 0) -> torch.Tensor:
    """[K, B] log-weights of N(0, I) as the target, N(0, proposal_scale² I) as the proposal."""
    torch.manual_seed(seed)
    target = Normal(torch.zeros((), dtype=torch.float64), 1.0)
    proposal = Normal(torch.zeros((), dtype=torch.float64), proposal_scale)
    z = proposal.sample((samples, points, dims))
    return (target.log_prob(z) - proposal.log_prob(z)).sum(-1)


def test_ess_is_k_for_equal_weights_and_one_for_a_dominating_weight():
    assert diagnostics.ess(torch.full((500, 3), -7.0)).tolist() == pytest.approx([500, 500, 500])
    dominated = torch.full((500, 2), -1000.0)
    dominated[17] = 3.0
    assert diagnostics.ess(dominated).tolist() == pytest.approx([1, 1])
    # from the sums a chunked estimator keeps, as from the weights themselves
    log_w = torch.randn(300, 4, dtype=torch.float64) * 2
    torch.testing.assert_close(
        diagnostics.ess_from_sums(torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)), diagnostics.ess(log_w)
    )
    w = log_w.exp()
    torch.testing.assert_close(diagnostics.ess(log_w), w.sum(0) ** 2 / w.pow(2).sum(0))


def test_tail_size_is_vehtari_et_al_s():
    assert [diagnostics.tail_size(k) for k in (20, 21, 100, 1000, 5000)] == [4, 5, 20, 95, 213]


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9])
def test_pareto_k_recovers_the_shape_of_generalized_pareto_weights(shape):
    # Weights drawn from a GPD: their exceedances over any threshold are GPD with the same shape.
    # 100 points of K = 10,000 (M = 300 tail weights each): k̂ scatters by about (1 + ξ)/√M ≈ 0.08 a
    # point, 0.008 on the mean; the prior's pull towards 0.5 moves it by 10/310 of (0.5 − ξ) ≤ 0.013.
    rng = np.random.default_rng(0)
    weights = genpareto(c=shape).rvs(size=(10_000, 100), random_state=rng)
    k = diagnostics.pareto_k(torch.from_numpy(np.log(weights)))
    assert k.shape == (100,) and k.dtype == torch.float64
    assert k.mean().item() == pytest.approx(shape, abs=0.04)
    assert k.std().item() < 0.15
    # and k̂ does not depend on the weights' scale
    torch.testing.assert_close(diagnostics.pareto_k(torch.from_numpy(np.log(weights) - 300)), k)


def test_a_proposal_equal_to_the_target_has_a_small_k():
    # q = p(z|x) exactly: every weight is p(x), the tail is flat (bounded weights): k̂ = −inf.
    model = LinearGaussian(encoder="exact")
    x = model.sample_data(5)
    torch.manual_seed(0)
    q = model.posterior(x)
    z = q.sample((1000,))
    k = diagnostics.pareto_k(model.log_joint(x, z) - q.log_prob(z))
    assert (k < diagnostics.PARETO_K_RELIABLE).all() and k.isneginf().all()
    # q a little wider than the target: bounded weights, k̂ well below 0.5
    k = diagnostics.pareto_k(gaussian_log_weights(1.2, samples=2000, points=50, dims=3))
    assert k.median() < 0.2 and (k < diagnostics.PARETO_K_RELIABLE).float().mean() > 0.95


def test_a_proposal_much_narrower_than_the_target_has_k_above_0_7():
    # q = N(0, 0.3²) for p = N(0, 1): w ∝ exp((1 − 0.3²) z²/2) has tail shape 1 − 0.3² = 0.91.
    k = diagnostics.pareto_k(gaussian_log_weights(0.3, samples=2000, points=50, dims=3))
    assert k.median() > diagnostics.PARETO_K_UNRELIABLE
    assert (k > diagnostics.PARETO_K_UNRELIABLE).float().mean() > 0.8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_running_tail_over_chunks_gives_the_all_at_once_k(dtype):
    log_w = gaussian_log_weights(0.6, samples=1000, points=30, dims=2).to(dtype)
    tail = diagnostics.RunningTail(1000)
    for chunk in log_w.split([7, 300, 1, 692]):
        tail.update(chunk)
    assert tail.top.shape == (diagnostics.tail_size(1000) + 1, 30)  # memory bounded by M + 1 per point
    torch.testing.assert_close(tail.result(), diagnostics.pareto_k(log_w), rtol=0, atol=0)
    short = diagnostics.RunningTail(1000)
    short.update(log_w[:999])
    with pytest.raises(ValueError, match="999"):
        short.result()


def test_degenerate_weights():
    assert diagnostics.pareto_k(torch.randn(20, 3)).isnan().all()  # M = ⌈min(K/5, 3√K)⌉ ≥ 5 needs K > 20
    assert not diagnostics.pareto_k(torch.randn(21, 3)).isnan().any()
    log_w = torch.randn(100, 5, dtype=torch.float64)
    log_w[:, 1] = math.nan
    log_w[:, 2] = -math.inf  # every weight zero
    log_w[:50, 3] = -math.inf  # half of them zero: still a tail
    log_w[:95, 4] = -math.inf  # 5 non-zero weights among the M + 1 = 21 largest: bounded, not heavy
    k = diagnostics.pareto_k(log_w)
    assert k[1].isnan() and k[2].isnan() and k[[0, 3, 4]].isfinite().all()
    assert k[4] < diagnostics.PARETO_K_UNRELIABLE
    # one weight beyond float64's range of the rest: the others underflow to ties at the threshold
    log_w = torch.randn(1000, 1, dtype=torch.float64)
    log_w[0] = 2000.0
    assert diagnostics.pareto_k(log_w).item() > diagnostics.PARETO_K_UNRELIABLE
