"""Inference gaps, active units, clustering and the NLL's Monte-Carlo error against cases whose
answer is known: probabilistic PCA (exact log p(x) and posterior), constructed posteriors, known
relabellings."""

import itertools
import math

import numpy as np
import pytest
import torch
from linear_gaussian import LinearGaussian
from torch.distributions import MultivariateNormal, kl_divergence

from benchmarks import metrics
from models.base import LatentVariableModel
from models.blocks.networks import diagonal_gaussian, standard_normal

# Faster than Cremer et al.'s lr 1e-3 on this 3-dimensional problem, and as many samples per step
# as it takes for q* to settle within the tests' tolerances.
QUICK = {**metrics.GAP_OPTIMIZER, "learning_rate": 0.005, "samples_per_step": 1000, "check_every": 50, "patience": 5}


@pytest.fixture(scope="module")
def points():
    return LinearGaussian().sample_data(20)


def best_diagonal(model, x) -> tuple[torch.Tensor, torch.Tensor]:
    """The diagonal Gaussian closest to the exact posterior N(m, Λ⁻¹) in KL(q || p): mean m,
    variances 1 / diag(Λ)."""
    exact = model.exact_posterior(x)
    return exact.mean, 1 / exact.precision_matrix.diagonal(dim1=-2, dim2=-1)


def as_full(loc, variance):
    return MultivariateNormal(loc, torch.diag_embed(variance))


def test_gaps_vanish_when_the_encoder_is_the_exact_posterior(points):
    model = LinearGaussian(encoder="exact")  # the full-covariance family, which holds the posterior
    torch.manual_seed(0)
    gaps = metrics.inference_gaps(model, points, max_steps=300, samples=2000, optimizer=QUICK)
    assert gaps["amortization_gap"]["value"] == pytest.approx(0, abs=0.01)
    assert gaps["approximation_gap"]["value"] == pytest.approx(0, abs=0.01)
    assert gaps["inference_gap"]["value"] == pytest.approx(0, abs=0.01)


def fits_recorded(monkeypatch) -> list:
    """The (q*, optimisation report) of every fit that ``metrics.inference_gaps`` makes from now on."""
    fits, fit = [], metrics.fit_local_posteriors

    def recording(*args, **kwargs):
        fits.append(fit(*args, **kwargs))
        return fits[-1]

    monkeypatch.setattr(metrics, "fit_local_posteriors", recording)
    return fits


def test_a_wrong_encoder_has_a_positive_amortization_gap_and_q_star_recovers_the_best_of_its_family(
    points, monkeypatch
):
    model = LinearGaussian(encoder="diagonal")
    fits = fits_recorded(monkeypatch)
    torch.manual_seed(1)
    gaps = metrics.inference_gaps(model, points, max_steps=4000, samples=20_000, optimizer=QUICK)
    [(q_star, optimisation)] = fits
    mean, variance = best_diagonal(model, points)
    torch.testing.assert_close(q_star["loc"], mean, atol=0.03, rtol=0)
    torch.testing.assert_close((2 * q_star["log_scale"]).exp(), variance, atol=0, rtol=0.1)
    assert optimisation["stopped_fraction"] == 1.0  # every point met the stopping rule before the cap

    # The gaps against their closed forms: L[q] = log p(x) − KL(q || p(z|x)) for every q.
    exact = model.exact_posterior(points)
    q = model.posterior(points)
    kl_amortized = kl_divergence(as_full(q.mean, q.variance), exact).mean().item()
    kl_best = kl_divergence(as_full(mean, variance), exact).mean().item()
    assert kl_amortized - kl_best > 0.5  # the case is not trivial
    assert gaps["amortization_gap"]["value"] == pytest.approx(kl_amortized - kl_best, abs=0.03)
    assert gaps["approximation_gap"]["value"] == pytest.approx(kl_best, abs=0.03)
    estimator = gaps["amortization_gap"]["estimator"]
    assert estimator["points"] == 20 and estimator["samples"] == 20_000 and estimator["optimizer"] == QUICK


def test_q_star_recovers_the_true_posterior_when_the_family_holds_it(points, monkeypatch):
    model = LinearGaussian(encoder="full")  # full covariance, but off the true posterior
    points = points[:8]  # the full-covariance family is the slowest to fit
    fits = fits_recorded(monkeypatch)
    torch.manual_seed(0)
    gaps = metrics.inference_gaps(model, points, max_steps=4000, samples=20_000, optimizer=QUICK)
    exact = model.exact_posterior(points)
    kl_amortized = kl_divergence(model.posterior(points), exact).mean().item()
    assert kl_amortized > 0.5
    assert gaps["amortization_gap"]["value"] == pytest.approx(kl_amortized, abs=0.03)
    assert gaps["approximation_gap"]["value"] == pytest.approx(0, abs=0.03)
    [(q_star_parameters, _)] = fits
    q_star = model.variational_family(q_star_parameters)
    torch.testing.assert_close(q_star.mean, exact.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(q_star.covariance_matrix, exact.covariance_matrix, atol=0.01, rtol=0.1)


def test_a_mixture_family_is_optimised_as_a_mixture(points):
    # Two diagonal components can do at least as well as one: q* reaches the best diagonal Gaussian's
    # ELBO (or beyond), from an encoder output that is far from it.
    model = LinearGaussian(encoder="mixture")
    torch.manual_seed(0)
    # q*'s ELBO, not its parameters, is checked: fewer samples a step do
    gaps = metrics.inference_gaps(
        model,
        points,
        max_steps=4000,
        samples=20_000,
        optimizer={**QUICK, "learning_rate": 0.01, "samples_per_step": 100},
    )
    mean, variance = best_diagonal(model, points)
    exact = model.exact_posterior(points)
    best_diagonal_elbo = (model.log_marginal(points) - kl_divergence(as_full(mean, variance), exact)).mean().item()
    assert gaps["amortization_gap"]["value"] > 0.5
    assert gaps["inference_gap"]["elbo_q_star"] > best_diagonal_elbo - 0.03
    assert gaps["approximation_gap"]["value"] >= -0.03


def test_a_method_without_a_variational_family_has_no_gaps(points):
    class OnlyPosterior(LinearGaussian):
        def posterior(self, x):
            return self.exact_posterior(x)

        def variational_parameters(self, x):
            raise NotImplementedError

    assert metrics.inference_gaps(OnlyPosterior(), points, max_steps=10, samples=10) == {}


def test_the_nll_monte_carlo_error_is_what_the_estimates_scatter_by():
    model = LinearGaussian(encoder="diagonal")
    x = model.sample_data(50)
    truth = -model.log_marginal(x).mean().item()
    estimates, errors = [], []
    for seed in range(30):
        torch.manual_seed(seed)
        nll = metrics.density_metrics(model, x, samples=500)["nll"]
        estimates.append(nll["value"])
        errors.append(nll["mc_sem"])
    # The reported Monte-Carlo error matches the spread of independent estimates, and the truth is
    # within a few of them (at K = 500 the estimator's downward bias in log p is a fraction of it).
    assert np.std(estimates, ddof=1) == pytest.approx(np.mean(errors), rel=0.35)
    assert abs(np.mean(estimates) - truth) < 3 * np.mean(errors)
    assert abs(estimates[0] - truth) < 3 * errors[0]


def test_per_dimension_kl_adds_up_to_the_kl(points):
    model = LinearGaussian(encoder="diagonal")
    result = metrics.density_metrics(model, points, samples=10)
    assert sum(result["kl"]["per_dim"]) == pytest.approx(result["kl"]["value"], rel=1e-9)
    assert "per_dim" not in metrics.density_metrics(LinearGaussian(encoder="exact"), points, samples=10)["kl"]


def test_bits_per_dim_only_for_discrete_likelihoods(points):
    model = LinearGaussian(encoder="diagonal")
    torch.manual_seed(0)
    discrete = metrics.density_metrics(model, points, samples=10, discrete=True)
    assert discrete["bits_per_dim"]["value"] == pytest.approx(discrete["nll"]["value"] / (6 * math.log(2)))
    assert "bits_per_dim" not in metrics.density_metrics(model, points, samples=10)


class ConstructedPosterior(LatentVariableModel):
    """q(z|x) = N(m(x), 0.1²): the mean of dimension j is x[:, j] · spread[j]."""

    def __init__(self, spread):
        super().__init__()
        self.spread = torch.tensor(spread, dtype=torch.float64)

    def prior(self):
        return standard_normal(self.spread)

    def variational_parameters(self, x):
        loc = x[:, : len(self.spread)] * self.spread
        return {"loc": loc, "log_scale": torch.full_like(loc, math.log(0.1))}

    def variational_family(self, parameters):
        return diagonal_gaussian(parameters["loc"], parameters["log_scale"])


def test_active_units_count_exactly_the_dimensions_that_carry_information():
    # Var(E_q[z_j]) = spread_j² for standard-normal x: 1, 0.0144, 0.0064 (under the 0.01 line), 0, 0.25.
    model = ConstructedPosterior([1.0, 0.12, 0.08, 0.0, 0.5])
    x = torch.randn(20_000, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = metrics.active_units(metrics.posterior_means(model, x)[0])
    assert result["value"] == 3 and result["of"] == 5
    assert result["estimator"]["threshold"] == 0.01


@pytest.mark.parametrize("seed", range(5))
def test_cluster_accuracy_matches_brute_force_over_every_matching(seed):
    rng = np.random.default_rng(seed)
    k_clusters = 4 + seed % 2  # also more clusters than labels: the extra cluster counts as wrong
    labels, clusters = rng.integers(0, 4, 30), rng.integers(0, k_clusters, 30)
    best = max(
        np.mean([mapping[c] == label for c, label in zip(clusters, labels)])
        for mapping in (
            dict(zip(range(k_clusters), perm))
            for perm in itertools.permutations(list(range(4)) + [-1] * (k_clusters - 4))
        )
    )
    assert metrics.cluster_accuracy(labels, clusters) == pytest.approx(best)


def test_any_relabelling_of_the_true_labels_is_a_perfect_clustering():
    labels = np.random.default_rng(0).integers(0, 10, 500)
    for seed in range(3):
        relabel = np.random.default_rng(seed).permutation(10) + 100  # other names, too
        assert metrics.cluster_accuracy(labels, relabel[labels]) == 1.0


class Clustered(ConstructedPosterior):
    """A method with a discrete latent: its clusters are the labels, relabelled."""

    def cluster_assignments(self, x):
        return (x[:, -1].long() + 3) % 10


def test_clusters_are_read_from_the_model_where_it_has_a_discrete_latent_else_k_means():
    labels = torch.arange(300) % 10
    x = torch.cat([torch.randn(300, 2, dtype=torch.float64), labels[:, None].double()], 1)
    clustered = Clustered([1.0, 1.0])
    result = metrics.clustering(clustered, x, labels, metrics.posterior_means(clustered, x)[0], seed=0)
    assert result["cluster_acc"]["value"] == 1.0 and result["nmi"]["value"] == pytest.approx(1.0)
    assert (
        result["ari"]["value"] == pytest.approx(1.0) and result["cluster_acc"]["estimator"]["name"] == "model_clusters"
    )

    # Ten well-separated blobs of posterior means: k-means finds them whatever their names.
    centres = np.random.default_rng(0).normal(0, 20, (10, 2))
    blobs = torch.from_numpy(centres[labels.numpy()]) + 0.1 * torch.randn(300, 2, dtype=torch.float64)
    plain = ConstructedPosterior([1.0, 1.0])
    x = torch.cat([blobs, torch.zeros(300, 1, dtype=torch.float64)], 1)
    result = metrics.clustering(plain, x, labels, metrics.posterior_means(plain, x)[0], seed=0)
    assert result["cluster_acc"]["value"] == 1.0
    assert result["cluster_acc"]["estimator"]["name"] == "kmeans_on_posterior_means"


def test_the_linear_probe_reads_the_labels_from_the_part_that_holds_them_linearly():
    """Part ``digit`` places each label at a corner of a simplex (linearly separable: a probe scores
    1); part ``noise`` is independent of the labels (chance, 0.1)."""
    rng = np.random.default_rng(0)
    labels = torch.arange(1000) % 10
    digit = torch.from_numpy(np.eye(10)[labels.numpy()] * 3 + rng.normal(0, 0.3, (1000, 10)))
    noise = torch.from_numpy(rng.normal(0, 1, (1000, 4)))
    result = metrics.linear_probe(torch.cat([digit, noise], 1), labels, seed=0, parts={"digit": 10, "noise": 4})
    probe = result["probe_acc"]
    assert probe["parts"]["digit"] == 1.0 and probe["value"] == 1.0
    assert abs(probe["parts"]["noise"] - 0.1) < 0.05
    assert probe["estimator"]["folds"] == 5 and probe["estimator"]["points"] == 1000
    # as many folds as the rarest label has points; a label with one point: nothing to cross-validate
    assert metrics.linear_probe(digit[:20], labels[:20], seed=0)["probe_acc"]["estimator"]["folds"] == 2
    assert metrics.linear_probe(digit[:10], labels[:10], seed=0) == {}


def test_a_point_whose_elbo_turns_non_finite_keeps_its_last_finite_q_star(points):
    class Fragile(LinearGaussian):
        """log p(x, z) is -inf once the first latent's sample goes past 3 for the first point."""

        def log_joint(self, x, z):
            log_joint = super().log_joint(x, z)
            broken = torch.zeros_like(log_joint, dtype=torch.bool)
            broken[..., 0] = (z[..., 0, 0] > 3).any(0, keepdim=True).expand_as(broken[..., 0])
            return log_joint.masked_fill(broken, -math.inf)

    model = Fragile(encoder="diagonal")
    start = model.variational_parameters(points)
    start_loc = start["loc"].clone()
    with torch.no_grad():
        start["loc"][0, 0] = 2.9  # the first point starts on the edge
    model.variational_parameters = lambda x: {k: v.clone() for k, v in start.items()}
    torch.manual_seed(0)
    q_star, optimisation = metrics.fit_local_posteriors(model, points, max_steps=200, optimizer=QUICK)
    assert optimisation["non_finite_points"] == 1
    # stopped, not converged: none met the stopping rule, whose earliest stop (6 checks of 50 steps
    # without improvement after the first) is past 200 steps
    assert optimisation["stopped_fraction"] == 0.0
    assert torch.isfinite(q_star["loc"]).all() and torch.isfinite(q_star["log_scale"]).all()
    assert q_star["loc"][0, 0] == pytest.approx(2.9)  # never moved: its first estimate was already -inf
    assert (q_star["loc"][1:] - start_loc[1:]).abs().max() > 0.01  # the others were optimised


# --- the measurement review (issue 9) -------------------------------------------------------------------------


class RaisingInverse(torch.distributions.transforms.Transform):
    """z = y: a flow step that, like an inverse autoregressive flow, cannot invert a point it did
    not produce (its inverse raises); it keeps its last output (cache_size 1), as IAF does."""

    domain = codomain = torch.distributions.constraints.real_vector
    bijective = True

    def __init__(self):
        super().__init__(cache_size=1)

    def _call(self, y):
        return y.clone()

    def _inverse(self, z):
        raise RuntimeError("this flow has no inverse: log_prob only of its own samples")

    def log_abs_det_jacobian(self, y, z):
        return torch.zeros(z.shape[:-1], dtype=z.dtype)


class FlowPosterior(ConstructedPosterior):
    """The constructed posterior behind a flow step: the same distribution, but no closed-form mean
    and no inverse, as a flow posterior has."""

    def posterior(self, x):
        q = self.variational_family(self.variational_parameters(x))
        return torch.distributions.TransformedDistribution(q, [RaisingInverse()])

    def variational_parameters(self, x):
        parameters = super().variational_parameters(x)
        return {**parameters, "log_scale": torch.zeros_like(parameters["log_scale"])}  # unit scale: noisy means

    def log_likelihood(self, x, z):
        return -0.5 * (x[..., : z.shape[-1]] - z).pow(2).sum(-1)


def test_active_units_behind_a_flow_count_only_the_informative_dimensions():
    # Two informative units of six, each behind a unit-variance posterior: the Monte-Carlo means'
    # noise alone would put about half of the four others over the line (the review's 3-5 of 6).
    model = FlowPosterior([1.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    x = torch.randn(2000, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for seed in range(3):
        torch.manual_seed(seed)
        means, noise = metrics.posterior_means(model, x)
        assert noise is not None  # sampled: the flow has no mean
        result = metrics.active_units(means, noise=noise, samples=metrics.POSTERIOR_MEAN_SAMPLES)
        assert result["value"] == 2, result["per_dim_variance"]
        assert result["estimator"]["noise"] == "subtracted"
        # without the correction the noise alone (1 / samples per unit) is what remains
        uncorrected = means.var(0)[2:]
        assert uncorrected.mean().item() == pytest.approx(1 / metrics.POSTERIOR_MEAN_SAMPLES, rel=0.3)


def test_the_metrics_ask_log_prob_only_of_the_posteriors_own_samples():
    # models/base.py promises this, so a flow without an inverse works: every metric runs on it.
    model = FlowPosterior([1.0, 0.5, 0.0])
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(0)
    density = metrics.density_metrics(model, x, samples=64, rows_per_chunk=100)
    assert density["kl"]["estimator"]["name"] == "monte_carlo"  # no closed form behind a flow
    assert math.isfinite(density["nll"]["value"]) and math.isfinite(metrics.elbo_single_sample(model, x))
    assert metrics.inference_latency(model, x, batch_size=10, repeats=2, warmup=0)["inference_latency_ms"] > 0
    with pytest.raises(RuntimeError, match="no inverse"):  # the control: a point it did not produce
        model.posterior(x).log_prob(torch.zeros(50, 3, dtype=torch.float64))


def test_inference_latency_times_building_q_and_one_sample():
    model = FlowPosterior([1.0])
    x = torch.randn(20, 1, dtype=torch.float64)
    sampled = []
    posterior = model.posterior

    def spied(x):
        q = posterior(x)
        original = q.sample
        q.sample = lambda *a, **k: sampled.append(1) or original(*a, **k)
        return q

    model.posterior = spied
    result = metrics.inference_latency(model, x, batch_size=10, repeats=4, warmup=1)
    assert len(sampled) == 5 and result["inference_latency_of"] == "posterior(x) and one sample"


def test_the_nll_monte_carlo_error_is_zero_not_nan_when_every_weight_is_equal():
    class PriorIsPosterior(ConstructedPosterior):
        """log p(x|z) does not depend on z and q = p(z): every log-weight is the same number."""

        def variational_parameters(self, x):
            return {"loc": torch.zeros(len(x), 3), "log_scale": torch.zeros(len(x), 3)}

        def prior(self):
            return standard_normal(torch.zeros(3))

        def log_likelihood(self, x, z):
            return torch.full(z.shape[:-1], -7.3)

    x = torch.zeros(40, 3)
    for seed in range(5):
        torch.manual_seed(seed)
        terms = metrics.importance_sampled_terms(PriorIsPosterior([1.0, 1.0, 1.0]), x, 1000, rows_per_chunk=3000)
        assert (terms["log_px_var"] >= 0).all()
        nll = metrics.density_metrics(PriorIsPosterior([1.0, 1.0, 1.0]), x, 1000)["nll"]
        assert nll["mc_sem"] == pytest.approx(0.0, abs=1e-6) and nll["value"] == pytest.approx(7.3, abs=1e-5)


def test_the_analytic_kl_is_the_closed_form_of_a_diagonal_gaussian(points):
    model = LinearGaussian(encoder="diagonal")
    q = model.posterior(points)
    mean, variance = q.mean, q.variance
    closed_form = 0.5 * (mean.pow(2) + variance - 1 - variance.log()).sum(-1)
    result = metrics.density_metrics(model, points, samples=10)
    assert result["kl"]["value"] == pytest.approx(closed_form.mean().item(), rel=1e-12)
    # and Monte Carlo agrees with it: log q(z) - log p(z) averaged over many draws of q
    torch.manual_seed(0)
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - model.prior().log_prob(z)).mean(0)
    torch.testing.assert_close(monte_carlo, closed_form, atol=0.02, rtol=0)


@pytest.mark.parametrize("budget", ["smoke", "short"])  # nightly's 10,000 steps end as short's does, slower
def test_gaps_at_each_budgets_step_cap_are_right_or_marked_as_not_converged(points, budget):
    # Cremer et al.'s optimiser as the runs use it (GAP_OPTIMIZER), at the step cap of each budget:
    # the gaps either equal their closed forms, or the record says most points did not converge.
    from benchmarks import specs

    caps = specs.budget(budget).caps
    model = LinearGaussian(encoder="diagonal")
    exact = model.exact_posterior(points)
    q = model.posterior(points)
    mean, variance = best_diagonal(model, points)
    best_kl = kl_divergence(as_full(mean, variance), exact)
    amortization = (kl_divergence(as_full(q.mean, q.variance), exact) - best_kl).mean().item()
    approximation = best_kl.mean().item()
    torch.manual_seed(0)
    gaps = metrics.inference_gaps(model, points, caps["gap_max_steps"], samples=5000)
    estimator = gaps["amortization_gap"]["estimator"]
    right = (
        abs(gaps["amortization_gap"]["value"] - amortization) < 0.05
        and abs(gaps["approximation_gap"]["value"] - approximation) < 0.05
    )
    assert right or not estimator["converged"], (budget, gaps["approximation_gap"]["value"], approximation)
    assert estimator["converged"] == (estimator["stopped_fraction"] >= metrics.CONVERGED_FRACTION)
    if budget == "smoke":  # 300 steps: no point can meet the stopping rule (it needs 1,100), and it says so
        assert not right and not estimator["converged"] and estimator["stopped_fraction"] == 0


def test_cremers_own_start_from_zero_reaches_the_same_q_star(points):
    model = LinearGaussian(encoder="diagonal")
    torch.manual_seed(0)
    q_star, _ = metrics.fit_local_posteriors(model, points[:5], max_steps=1500, optimizer=QUICK, start="zero")
    mean, variance = best_diagonal(model, points[:5])
    torch.testing.assert_close(q_star["loc"], mean, atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="valid: encoder, zero"):
        metrics.fit_local_posteriors(model, points, max_steps=1, start="prior")


def test_the_gap_fit_in_chunks_of_points_equals_the_fit_of_all_points_at_once(points):
    model = LinearGaussian(encoder="diagonal")
    points = points[:8]  # chunks of 3, 3 and 2: a short last chunk too
    torch.manual_seed(0)
    whole = metrics.inference_gaps(model, points, 600, samples=2000, optimizer=QUICK, points_per_chunk=len(points))
    torch.manual_seed(0)
    chunked = metrics.inference_gaps(model, points, 600, samples=2000, optimizer=QUICK, points_per_chunk=3)
    assert chunked["amortization_gap"]["estimator"]["points_per_chunk"] == 3
    for name in ("amortization_gap", "approximation_gap"):
        assert chunked[name]["value"] == pytest.approx(whole[name]["value"], abs=3 * whole[name]["sem"] + 0.01)


# --- Ma et al.'s representation metrics -------------------------------------------------------------------


def _classes(n, dim=12, spread=0.05, seed=0, classes=10):
    """Codes of ``classes`` well-separated centres (the first ``classes`` axes, scaled) and their labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = 5 * torch.eye(classes, dim, dtype=torch.float64)
    return centres[labels] + spread * torch.randn(n, dim, generator=generator, dtype=torch.float64), labels


def test_separable_codes_are_classified_and_clustered_without_error_from_every_label_count():
    (train, y_train), (test, y_test) = _classes(2000), _classes(500, seed=1)
    result = metrics.label_efficiency(train, y_train, test, y_test, [100, 1000, 10000], [10, 20], seed=0)
    for name in ("linear_acc", "knn_acc"):
        # 10,000 is more than the 2,000 training codes: no part for it; "all" is the value
        assert result[name]["parts"] == {"100": 1.0, "1000": 1.0, "all": 1.0} and result[name]["value"] == 1.0
    # k-means: each cluster named by its training codes' majority label, also with more clusters than labels
    assert result["kmeans_acc"]["parts"] == {"10": 1.0, "20": 1.0} and result["kmeans_acc"]["value"] == 1.0


def test_kmeans_names_clusters_by_the_training_labels_not_by_the_test_labels():
    """With the test labels a known permutation of the training ones, the codes of a test image sit
    with training codes of another label: a mapping fitted on the test labels would still score 1."""
    (train, y_train), (test, y_test) = _classes(1000), _classes(300, seed=1)
    permuted = (y_test + 1) % 10
    result = metrics.label_efficiency(train, y_train, test, permuted, [], [10], seed=0)
    assert result["kmeans_acc"]["value"] == 0.0
    assert result["linear_acc"]["value"] == 0.0 and result["knn_acc"]["value"] == 0.0


def test_fewer_labels_give_a_worse_classifier_where_classes_overlap():
    """Each part is a classifier trained on that many labels, not on every one."""
    (train, y_train), (test, y_test) = (_classes(n, dim=40, spread=4.0, seed=s) for n, s in ((5000, 0), (1000, 1)))
    result = metrics.label_efficiency(train, y_train, test, y_test, [100], [], seed=0)
    for name in ("linear_acc", "knn_acc"):
        assert result[name]["parts"]["100"] < result[name]["value"] - 0.05, result[name]
    assert "kmeans_acc" not in result and result["linear_acc"]["estimator"]["draws"] == 5
