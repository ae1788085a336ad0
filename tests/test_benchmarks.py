"""The benchmarks' quick modes run in the suite; what they measure is reported, only behaviour is asserted."""

import sys
import types
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common
import critics
import false_alarms
import hook_share
import latency
import mixture_modes
import overhead

from lightning_gan_monitor import GANMonitor


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("log_every", "probing"), [(50, False), (1, False), (50, True)])
def test_benchmarks_hook_share_times_hooks_checks_and_log_points(log_every, probing):
    torch.set_num_threads(1)
    row = hook_share.measure(log_every, probing, batches=60)
    assert row["batches"] == 60 and row["share in hooks"].endswith("%")
    checks = {1, *range(20, 61, 20), *range(log_every, 61, log_every)}  # batch 1, every 20 and every log point
    assert row["checks"] == len(checks)


@pytest.mark.slow
def test_benchmarks_overhead_quick_reports_every_configuration():
    torch.set_num_threads(1)
    results = overhead.measure(overhead.QUICK)
    rows = results["overhead"]
    for model in overhead.MODELS:
        reported = {r["configuration"] for r in rows if r["model"] == model}
        assert reported == {c.name for c in overhead.CONFIGS}
    assert all(float(r["ratio"]) > 0 and float(r["CPU-time ratio"]) > 0 for r in rows)
    for row in rows:  # the hook is timed exactly where a monitor runs
        callbacks = overhead.CONFIG_BY_NAME[row["configuration"]].callbacks(overhead.MODELS[row["model"]])
        has_monitor = any(isinstance(c, overhead.TimedMonitor) for c in callbacks)
        assert bool(row["hook µs (median / mean)"]) == has_monitor, row

    memory = results["memory"]
    assert [r["configuration"] for r in memory] == overhead.MEMORY_CONFIGS
    for row in memory:
        assert len(row["_own"]) == 3 and all(own > 0 for own in row["_own"])  # the monitor's tensors were found
        assert row["_own"][-1] == row["_own"][0], row  # bounded state: nothing accumulates batch after batch

    text = overhead.report(results, overhead.QUICK, "a note", "0.0 on 2 cores")
    assert text.startswith("## Overhead") and "a note" in text and common.machine() in text
    assert "digits GAN, scores from outputs: ratio <= 1.02" in text


def test_benchmarks_diversity_cost_table_has_one_row_per_size():
    rows = overhead.diversity_cost({"cdist": lambda x: torch.cdist(x, x).mean()}, sizes=[8, 16], repeats=2)
    assert [r["n"] for r in rows] == [8, 16]
    assert all(float(r["cdist"]) >= 0 for r in rows)


def test_benchmarks_tensor_bytes_counts_each_storage_once():
    monitor = GANMonitor(from_logits=True, diversity_every_n_batches=None)
    buffer = overhead.tensor_bytes(monitor)  # the core's buffer, reached through the adapter
    assert buffer > 0
    # the package's own objects are walked (lists and dicts in them too), each storage counted once
    latent = torch.zeros(8, 16)
    monitor.held = types.SimpleNamespace(tensors=[latent])
    assert overhead.tensor_bytes(monitor) == buffer  # a SimpleNamespace is not the package's: not walked
    monitor.held = [latent, {"view": latent[:2]}, torch.zeros(3, dtype=torch.float64)]
    assert overhead.tensor_bytes(monitor) == buffer + 8 * 16 * 4 + 3 * 8


def test_benchmarks_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nHand-written introduction.\n")
    common.write_section("overhead", "## Overhead\n\nfirst", path)
    common.write_section("latency", "## Detection latency\n\nlatency figures", path)
    common.write_section("overhead", "## Overhead\n\nsecond", path)
    text = path.read_text()
    assert text.startswith("# Results\n\nHand-written introduction.\n")
    assert "second" in text and "first" not in text and "latency figures" in text
    assert text.index("## Overhead") < text.index("## Detection latency")
    assert text.count("<!-- begin overhead") == 1 and text.count("<!-- end overhead -->") == 1


@pytest.mark.slow
def test_benchmarks_latency_quick_monitor_stops_every_failure_and_no_healthy_run():
    torch.set_num_threads(1)
    rows = latency.measure(latency.QUICK)
    assert {(r["failure"], r["approach"]) for r in rows} == {
        (f, a)
        for f in latency.QUICK.failures
        for a in latency.QUICK.approaches
        if a.startswith(latency.FAILURES[f].get("only", ""))
    }
    # both kinds of approach run: the monitor, and EarlyStopping at epoch end and after every batch
    assert {a.split(" (")[0].split(",")[0] for a in latency.QUICK.approaches} == {"GANMonitor", "EarlyStopping"}
    assert len(latency.QUICK.approaches) == 3
    rules = {
        "discriminator dominates": "discriminator_dominates",
        "generator dominates": "generator_dominates",
        "non-finite": "non_finite",
        "mode collapse": "mode_collapse",
        "mode collapse while D dominates": "mode_collapse",
    }
    assert set(rules) < set(latency.QUICK.failures)
    onset = latency.QUICK.switch_at
    for row in rows:
        if not row["approach"].startswith("GANMonitor"):
            continue
        (result,) = row["results"]
        if "healthy" in row["failure"]:
            assert not result["stopped"], row
        else:
            assert result["stopped"] and result["fired_at"] >= onset, row
            assert result["rule"] == rules[row["failure"]], row
            # training stops at the first check after the rule fired: within check_every_n_batches (20)
            assert result["fired_at"] <= result["trained"] < result["fired_at"] + 20, row
    # The noise-ignoring generator is unambiguous: the collapse rule fires at the first diversity check (every 100
    # batches) after the onset and stops at once, also while the discriminator dominates; a healthy run reaches the
    # third check, where the rule's patience would run out, so it had the chance to raise a false alarm.
    every = GANMonitor().diversity_every_n_batches
    first_check = (onset // every + 1) * every
    for failure in ("mode collapse", "mode collapse while D dominates"):
        collapse = {r["approach"]: r["results"][0] for r in rows if r["failure"] == failure}
        assert collapse["GANMonitor (defaults: patience 100)"]["trained"] == first_check, failure
    collapse = {r["approach"]: r["results"][0] for r in rows if r["failure"] == "mode collapse"}
    assert latency.QUICK.max_batches > first_check + 2 * every
    # EarlyStopping on the logged `gan/diversity` stops after the first check that sees the collapse
    assert collapse["EarlyStopping, every batch"]["trained"] == first_check
    assert latency.report(rows, latency.QUICK, "", "0.0").startswith("## Detection latency")


@pytest.mark.slow
def test_benchmarks_mixture_modes_quick_collapsing_generator_fires_and_truth_is_logged():
    torch.set_num_threads(1)
    runs = mixture_modes.measure(quick=True)
    assert [(r["mixture"], r["generator"]) for r in runs] == [("ring", "vanilla"), ("ring", "ignores its noise")]
    collapsing = runs[1]
    for run in runs:
        assert [c["batch"] for c in run["checks"]] == [100, 200, 300, 400]
        assert all(0 <= c["modes"] <= 8 and 0 <= c["coverage"] <= 1 for c in run["checks"])
    # The noise-ignoring generator draws one point: at most one mode, and the rule fires at its first check (at once).
    assert collapsing["final_modes"] <= 1 and collapsing["fired_at"] == 100
    assert all(c["diversity"] == 0.0 and c["near_duplicates"] == 1.0 for c in collapsing["checks"])
    assert all(c["mode_coverage"] <= 1 / 8 for c in collapsing["checks"])  # the monitor's: one of 8 modes at most
    rho = mixture_modes.correlations(runs)
    variants = {f"coverage n={n} m={m} k={k}" for n, m, k in mixture_modes.COVERAGE_VARIANTS}
    variants |= {mixture_modes.mode_variant(*variant) for variant in mixture_modes.MODE_VARIANTS}
    assert set(rho) == {"coverage", "mode_coverage", "diversity", "near_duplicates", "density", *variants}


@pytest.mark.slow
def test_benchmarks_critics_quick_runs_every_kind_and_healthy_runs_stay_quiet():
    torch.set_num_threads(1)
    rows = critics.measure(quick=True)
    assert [(r["case"].loss, r["case"].name) for r in rows] == [
        (c.loss, c.name) for c in critics.CASES if c.loss == "wgan-gp" or c.name == "healthy"
    ]
    for row in rows:
        (run,) = row["runs"]
        if row["case"].name == "healthy":
            assert run["diagnoses"] == [], row
    text = critics.report(rows, "a note", "0.0 on 2 cores", "python benchmarks/critics.py --quick")
    assert text.startswith("## Critics") and "0 of 1 runs with a false alarm" in text


@pytest.mark.slow
def test_benchmarks_false_alarms_quick_runs_every_kind_quietly():
    torch.set_num_threads(1)
    rows = false_alarms.measure(quick=True)
    assert [r["kind"].name for r in rows] == [k.name for k in false_alarms.KINDS]
    for row in rows:
        (run,) = row["runs"]
        assert run["diagnoses"] == [] and run["at_once"] == [], row
        assert 0 <= run["max_near_duplicates"] <= 1
    text = false_alarms.report(rows, "", "0.0 on 2 cores", "python benchmarks/false_alarms.py --quick")
    assert "0 of 5 healthy runs had a rule fire" in text


@pytest.mark.slow
def test_benchmarks_zoo_quick_names_the_issue_cases_and_reports_a_confusion_matrix():
    import zoo

    torch.set_num_threads(1)
    rows = zoo.measure(zoo.grid(quick=True))
    assert {r["family"] for r in rows} == {"lightning", "cgan", "fabric"}
    for (
        row
    ) in rows:  # healthy quiet, a frozen generator named dominance (never collapse), a noise-ignoring one collapse
        assert row["named"] == row["expected"], (row["family"], row["condition"], row["named"], row["message"][:200])
    frozen = [r for r in rows if r["condition"].startswith("G frozen")]
    assert frozen and all(r["expected"] == "discriminator_dominates" for r in frozen)
    collapsed = [r for r in rows if r["condition"].startswith("G ignores")]
    assert all(r["stopped_at"] - r["onset"] <= 150 for r in collapsed)
    text = zoo.report(rows, "a note", "0.0 on 2 cores", "python benchmarks/zoo.py --quick")
    assert (
        text.startswith("## The failure zoo") and "False alarms: 0 of 3" in text and "| truth \\ named first |" in text
    )


def test_benchmarks_zoo_ground_truth_labels_follow_what_the_samples_show():
    import zoo

    case = {"family": "lightning", "condition": "healthy"}
    healthy = {"finite": True, "classes": 9, "duplicates": 0.0, "near_data": 1.5, "auc": 0.9, "d_fake": 0.4}
    assert zoo.label(case, healthy) is None
    assert zoo.label(case, {**healthy, "duplicates": 0.9}) == "mode_collapse"  # a healthy set-up that collapsed
    induced = {"family": "lightning", "condition": "G ignores its noise at 200"}
    assert zoo.label(induced, healthy) is None  # the induced collapse did not take hold
    critic = {"family": "wgangp", "condition": "D 10x faster at 200"}
    assert zoo.label(critic, {**healthy, "auc": 1.0, "d_fake": 0.05}) is None  # a harder-trained critic is no failure
    assert zoo.label(case, {**healthy, "finite": False}) == "non_finite"


@pytest.mark.slow
def test_benchmarks_stacked_digits_quick_counts_modes_and_names_the_partial_collapse():
    import stacked_digits

    torch.set_num_threads(1)
    images, modes = stacked_digits.stacked(100, seed=0)
    assert images.shape == (100, 3, 8, 8) and int(modes.min()) >= 0 and int(modes.max()) < 1000
    assert stacked_digits.captured(images)[0] > 50  # the classifier reads real stacks as their modes
    runs = stacked_digits.measure(quick=True)
    healthy, partial = runs
    assert healthy["named first"] == "nothing"
    assert partial["collapse named at"] is not None and partial["collapse named at"] - partial["collapse_at"] <= 150
    text = stacked_digits.report(runs, "", "0.0 on 2 cores", "python benchmarks/stacked_digits.py --quick")
    assert "Spearman rank correlation with the modes captured" in text
