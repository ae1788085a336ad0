"""The benchmarks' quick modes run in the suite; what they measure is reported, only behaviour is asserted."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import latency
import mixture_modes
import overhead


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_benchmarks_overhead_quick_reports_every_configuration():
    rows, memory = overhead.measure(quick=True)
    for model in overhead.MODELS:
        reported = {r["configuration"] for r in rows if r["model"] == model}
        assert reported == set(overhead.CONFIGS)
    assert all(float(r["ratio"]) > 0 for r in rows)
    assert set(memory) == {"scores from outputs", "probing"}


@pytest.mark.slow
def test_benchmarks_latency_quick_monitor_stops_every_failure_and_no_healthy_run():
    torch.set_num_threads(1)
    rows = latency.measure(seeds=[0])
    for row in rows:
        if not row["approach"].startswith("GANMonitor"):
            continue
        (result,) = row["results"]
        if "healthy" in row["failure"]:
            assert not result["stopped"], row
        else:
            assert result["stopped"] and result["fired_at"] >= latency.SWITCH_AT, row


@pytest.mark.slow
def test_benchmarks_mixture_modes_quick_collapsing_generator_fires_and_truth_is_logged():
    torch.set_num_threads(1)
    runs = mixture_modes.measure(quick=True)
    assert [(r["mixture"], r["generator"]) for r in runs] == [("ring", "vanilla"), ("ring", "ignores its noise")]
    collapsing = runs[1]
    for run in runs:
        assert [c["batch"] for c in run["checks"]] == [100, 200, 300, 400]
        assert all(0 <= c["modes"] <= 8 and 0 <= c["coverage"] <= 1 for c in run["checks"])
    # The noise-ignoring generator draws one point: at most one mode, and the rule fires at its third check.
    assert collapsing["final_modes"] <= 1 and collapsing["fired_at"] == 300
    assert all(c["diversity"] == 0.0 and c["near_duplicates"] == 1.0 for c in collapsing["checks"])
    rho = mixture_modes.correlations(runs)
    assert set(rho) == {"coverage", "diversity", "near_duplicates", "density"}
