"""A run that diverges, fails or runs out of time is recorded as such, and the other runs go on."""

import json

import pytest
import torch

from benchmarks import data, specs, train
from models.vae import VAE

DIGITS = data.load("digits")
DIGITS_VAE = ("run", "--paper", "baselines", "--method", "vae", "--dataset", "digits", "--budget", "smoke")


def _config(seed=0, **training):
    config = specs.resolve(specs.load_paper("baselines"), "vae", "digits", specs.budget("smoke"), seed)
    config["training"].update(epochs=1, **training)
    return config


def _run(config):
    return train.run(config, specs.run_id(config), DIGITS, torch.device("cpu"), progress=False)


def test_a_non_finite_loss_ends_the_run_as_diverged(monkeypatch):
    calls = []

    def loss(self, x):
        calls.append(1)
        value = torch.tensor(float("nan") if len(calls) == 3 else 1.0, requires_grad=True)
        return value, {"elbo": -value.detach()}

    monkeypatch.setattr(VAE, "loss", loss)
    record = _run(_config())
    assert (record["status"], record["stop_reason"]) == ("diverged", "non_finite_loss")
    assert "at step 3 (epoch 1)" in record["error"]
    assert record["metrics"] == {} and record["timing"]["steps"] == 2


def test_an_exception_is_recorded_with_its_traceback(monkeypatch):
    def broken(self, x, z):
        raise RuntimeError("the decoder is on fire")

    monkeypatch.setattr(VAE, "log_likelihood", broken)
    record = _run(_config())
    assert (record["status"], record["stop_reason"]) == ("failed", "exception")
    assert "RuntimeError: the decoder is on fire" in record["error"] and "Traceback" in record["error"]
    assert record["timing"]["device"] == "cpu"


def test_the_wall_clock_cap_ends_the_run_as_timeout_and_it_is_still_evaluated():
    record = _run(_config(max_wall_s=1e-9))
    assert (record["status"], record["stop_reason"]) == ("timeout", "max_wall_s")
    assert record["timing"]["steps"] == 1
    # every metric of a record, gaps included at this budget (digits: binary pixels, labelled)
    assert set(record["metrics"]) == {
        "nll",
        "elbo",
        "kl",
        "recon",
        "bits_per_dim",
        "active_units",
        "cluster_acc",
        "nmi",
        "ari",
        "probe_acc",
        "amortization_gap",
        "approximation_gap",
        "inference_gap",
        "ais_nll",
    }
    assert {"eval_s", "eval_wall_s", "inference_latency_ms", "s_per_epoch", "peak_memory_bytes"} <= set(
        record["timing"]
    )


def test_other_runs_go_on_after_a_failure(monkeypatch, tmp_path, run_cli):
    original = VAE.loss
    seeds_seen = []

    def loss_failing_for_seed_0(self, x):
        if not seeds_seen:
            seeds_seen.append(torch.initial_seed())
        if seeds_seen[0] == 0:
            raise RuntimeError("seed 0 breaks")
        return original(self, x)

    monkeypatch.setattr(VAE, "loss", loss_failing_for_seed_0)
    code, out, err = run_cli(*DIGITS_VAE, "--seeds", "0", "--results", tmp_path, "--quiet")
    assert code == 1 and out.startswith("failed")
    seeds_seen.clear()
    seeds_seen.append(1)  # from here on, behave
    code, out, err = run_cli(*DIGITS_VAE, "--seeds", "0,1", "--results", tmp_path, "--quiet")
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "runs").glob("*.json"))
    assert statuses == ["failed", "ok"]
    assert "skipped" in out and "ok " in out


def test_a_non_finite_test_metric_marks_the_run_diverged(monkeypatch):
    from benchmarks import metrics

    density_metrics = metrics.density_metrics

    def overflowing(*args, **kwargs):
        result = density_metrics(*args, **kwargs)
        result["nll"]["value"] = float("inf")
        return result

    monkeypatch.setattr(metrics, "density_metrics", overflowing)
    record = _run(_config())
    assert (record["status"], record["stop_reason"]) == ("diverged", "non_finite_metric")
    assert "nll" in record["error"]


def test_a_gaussian_dataset_trains_and_evaluates_end_to_end():
    # The digits as continuous intensities: the path CIFAR-10 and SVHN take, without their files.
    gaussian = data.prepare(
        data._make(
            "digits",
            DIGITS.shape,
            DIGITS.train.numpy(),
            DIGITS.train[:250].numpy(),
            DIGITS.train[250:500].numpy(),
            None,
            {},
        ),
        "gaussian",
    )
    assert len(torch.unique(gaussian.test)) > 2  # not binarized
    record = train.run(_config(), "gaussian-run", gaussian, torch.device("cpu"), progress=False)
    assert record["status"] == "ok", record["error"]
    assert record["dataset_info"]["likelihood"] == "gaussian"
    metrics = record["metrics"]
    assert all(torch.isfinite(torch.tensor(m["value"])) for m in metrics.values())
    assert -metrics["nll"]["value"] >= metrics["elbo"]["value"] - 0.5  # a density bound, possibly positive


def test_centred_data_start_the_likelihood_scale_at_the_data_variance(monkeypatch):
    from models.blocks.networks import PixelLikelihood

    centred = data.prepare(data.load_digits(), "gaussian", center=True)
    started_at = []
    monkeypatch.setattr(PixelLikelihood, "init_scale", lambda self, variance: started_at.append(variance))
    record = train.run(_config(), "centred-run", centred, torch.device("cpu"), progress=False)
    assert record["status"] == "ok", record["error"]
    assert started_at == [centred.pixel_variance]


def test_a_failing_metric_group_keeps_the_others_and_marks_the_run_partial(monkeypatch):
    from benchmarks import metrics

    def broken(*args, **kwargs):
        raise RuntimeError("the gap fit ran out of memory")

    monkeypatch.setattr(metrics, "inference_gaps", broken)
    record = _run(_config())
    assert (record["status"], record["stop_reason"]) == ("partial", "metric_error")
    assert "metric group(s) failed: gaps" in record["error"] and "ran out of memory" in record["error"]
    # the NLL computed before the failure, and everything after it, are kept
    assert {"nll", "elbo", "kl", "active_units", "cluster_acc"} <= set(record["metrics"])
    assert "amortization_gap" not in record["metrics"]
    assert record["timing"]["inference_latency_ms"] > 0 and "gaps_s" in record["timing"]["eval_s"]
    assert all(m["version"] == metrics.METRICS[name].version for name, m in record["metrics"].items())


def test_peak_memory_is_each_runs_own(monkeypatch):
    # A run that holds 400 MB, then an ordinary one in the same process: the second's peak is its
    # own, not the process's (the review saw 1.5 GB or 4 GB for identical runs, by their order).
    original = VAE.loss
    allocated = []

    def hungry(self, x):
        if not allocated:  # once: a peak is a peak (filling 400 MB every step took seconds)
            allocated.append(torch.ones(100_000_000)[-1].item())  # 400 MB, touched
        return original(self, x)

    monkeypatch.setattr(VAE, "loss", hungry)
    big = _run(_config())
    monkeypatch.setattr(VAE, "loss", original)
    small = _run(_config())
    assert big["timing"]["peak_memory_kind"] == small["timing"]["peak_memory_kind"] == "run_peak_rss"
    assert big["timing"]["peak_memory_bytes"] - small["timing"]["peak_memory_bytes"] > 300e6


@pytest.mark.parametrize("convolutions", [True, False])
def test_a_gpu_record_says_whether_float32_ran_in_tensorfloat32(monkeypatch, convolutions):
    # No GPU is needed: the record reads torch's settings, which a CUDA device would obey.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", convolutions)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        said = train.determinism(torch.device("cuda"))
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.benchmark = benchmark
    assert said["tf32_convolutions"] is convolutions
    assert said["tf32_matmul"] is torch.backends.cuda.matmul.allow_tf32 is False  # torch's default
    assert "tf32_convolutions" not in train.determinism(torch.device("cpu"))


@pytest.mark.parametrize("sharing", [1, 12])
def test_a_group_out_of_gpu_memory_on_a_shared_gpu_is_retried_alone_from_the_same_random_state(monkeypatch, sharing):
    """Twelve MAE runs on one H200 reached their gap fits together and all ran out of memory. On a
    GPU shared by several runs (the sweep says so), a group that runs out of CUDA memory is tried once
    more, holding the GPU's lock, from the random state it started with: the values are those of a run
    that never ran out. On a GPU of its own the failure is the run's: recorded, not retried."""
    from benchmarks import RUNS_SHARING_DEVICE, metrics

    real_gaps = metrics.inference_gaps
    attempts = []

    def once_out_of_memory(*args, **kwargs):
        attempts.append(torch.get_rng_state())
        if len(attempts) == 1:
            torch.rand(3)  # the failed attempt had drawn, as a real one would
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 192.00 MiB")
        return real_gaps(*args, **kwargs)

    undisturbed = _run(_config())
    monkeypatch.setenv(RUNS_SHARING_DEVICE, str(sharing))
    monkeypatch.setattr(metrics, "inference_gaps", once_out_of_memory)
    record = _run(_config())
    if sharing == 1:
        assert record["status"] == "partial" and "OutOfMemoryError" in record["error"]
        assert "amortization_gap" not in record["metrics"] and "eval_retried_alone_on_gpu" not in record["timing"]
        return
    assert record["status"] == "ok", record["error"]
    assert record["timing"]["eval_retried_alone_on_gpu"] == ["gaps"]
    assert torch.equal(attempts[0], attempts[1])  # the retry started from the same random state
    for name in ("amortization_gap", "approximation_gap", "nll", "ais_nll"):
        assert record["metrics"][name]["value"] == undisturbed["metrics"][name]["value"], name


def test_one_run_at_a_time_holds_a_shared_gpu_for_its_retry():
    """The retry's lock: while one holder has the GPU, another (here a thread, with its own open file,
    as another process would have) waits, and goes on once the first lets go."""
    import threading

    from benchmarks import metrics

    device, entered = torch.device("cuda", 0), threading.Event()

    def second():
        with metrics._turn_on_shared_gpu(device):
            entered.set()

    with metrics._turn_on_shared_gpu(device):
        waiting = threading.Thread(target=second)
        waiting.start()
        assert not entered.wait(0.5)
    waiting.join(timeout=30)
    assert entered.is_set()
