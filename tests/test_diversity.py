"""The real-sample reservoir (lightning_gan_monitor/diversity.py)."""

import pytest
import torch

from lightning_gan_monitor import DiversityScores
from lightning_gan_monitor.config import MonitorConfig
from lightning_gan_monitor.diversity import DiversityWatch, Reservoir
from lightning_gan_monitor.functional import diversity_against, diversity_scores, real_reference


def test_diversity_reservoir_keeps_everything_until_full_then_a_bounded_uniform_sample():
    reservoir = Reservoir(size=50, seed=0)
    reservoir.add(torch.arange(30.0).unsqueeze(1))
    assert torch.equal(reservoir.samples().squeeze(1), torch.arange(30.0))
    for start in range(30, 2000, 64):
        reservoir.add(torch.arange(start, min(start + 64, 2000), dtype=torch.float32).unsqueeze(1))
    kept = reservoir.samples().squeeze(1)
    assert kept.shape == (50,) and reservoir.seen == 2000
    assert len(set(kept.tolist())) == 50  # distinct rows: no slot written twice with a stale row
    # Uniform over the stream: the kept rows' mean is near the stream's (999.5), not biased to early or late rows.
    means = []
    for seed in range(20):
        r = Reservoir(size=50, seed=seed)
        for start in range(0, 2000, 64):
            r.add(torch.arange(start, min(start + 64, 2000), dtype=torch.float32).unsqueeze(1))
        means.append(r.samples().mean().item())
    assert abs(sum(means) / len(means) - 999.5) < 80  # standard error about 577 / sqrt(50 * 20) = 18


def test_diversity_reservoir_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        r = Reservoir(size=8, seed=3)
        for start in range(0, 200, 16):
            r.add(torch.arange(start, start + 16.0).unsqueeze(1))
        runs.append(r.samples().clone())
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(torch.get_rng_state(), state)


def test_diversity_reservoir_copies_rows_and_rejects_other_shapes():
    r = Reservoir(size=4)
    batch = torch.zeros(2, 3)
    r.add(batch)
    batch += 1  # the caller reuses its buffer: the kept rows must not change
    assert r.samples().sum() == 0
    with pytest.raises(ValueError, match=r"same shape.*got \(5,\) after \(3,\)"):
        r.add(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="`size` must be a positive integer, got 0"):
        Reservoir(size=0)


@pytest.mark.parametrize("n_fake", [2, 40, 64, 100])
def test_diversity_against_a_reference_equals_diversity_scores(n_fake):
    g = torch.Generator().manual_seed(0)
    real = torch.randn(64, 5, generator=g)
    reference = real_reference(real, nearest_k=5, fakes=40)  # made for 40: other sizes rebuild what they need
    for fake in (torch.randn(n_fake, 5, generator=g), real[:n_fake] * 0.1, torch.zeros(n_fake, 5)):
        assert torch.equal(diversity_against(fake, reference), diversity_scores(fake, real, nearest_k=5))


def test_diversity_watch_reuses_the_real_side_and_matches_the_metric():
    config = MonitorConfig(
        diversity_every_n_batches=10, diversity_samples=32, real_reservoir_size=64, verbose=False,
        collapse_diversity_below=None, collapse_near_duplicates_above=None,
    )  # fmt: skip
    watch = DiversityWatch(config)
    g = torch.Generator().manual_seed(1)
    watch.collect(torch.randn(64, 8, generator=g), None, first_batch_of_epoch=True)
    watch.fake_source = "probe"
    metric = DiversityScores(nearest_k=5, near_duplicate_factor=0.25)
    for _ in range(3):
        fake = torch.randn(32, 8, generator=g) * 0.5
        watch.prepare(lambda n, fake=fake: fake)
        values = watch.measure()
        metric.reset()
        metric.update(fake=fake, real=watch.reservoir.samples())
        expected = {k: v.item() for k, v in metric.compute().items()}
        assert {k: values[k] for k in expected} == pytest.approx(expected, abs=1e-7, nan_ok=True)
    assert watch._reference is not None  # built once, at the first measurement
