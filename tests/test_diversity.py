"""The real-sample reservoir (lightning_gan_monitor/diversity.py)."""

import pytest
import torch

from lightning_gan_monitor.diversity import Reservoir


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
