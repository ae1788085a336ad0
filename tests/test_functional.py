import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from lightning_gan_monitor.functional import (
    DIVERSITY_NAMES,
    STAT_NAMES,
    coverage,
    density,
    density_coverage,
    discriminator_score,
    diversity_ratio,
    diversity_scores,
    fake_detection_accuracy,
    gan_score_stats,
    gan_score_stats_batches,
    gan_scores,
    gan_scores_from_stats,
    generator_score,
    near_duplicate_rate,
    pairwise_distances,
    real_detection_accuracy,
)


def numpy_scores(d_real: np.ndarray, d_fake: np.ndarray, from_logits: bool) -> dict[str, float]:
    """The definitions, written independently: scores over the finite entries only."""
    real, fake = d_real.astype(np.float64).ravel(), d_fake.astype(np.float64).ravel()
    real, fake = real[np.isfinite(real)], fake[np.isfinite(fake)]
    if from_logits:
        real, fake = 1 / (1 + np.exp(-real)), 1 / (1 + np.exp(-fake))
    return {
        "generator_score": fake.mean(),
        "discriminator_score": 0.5 * real.mean() + 0.5 * (1 - fake.mean()),
        "fake_detection_accuracy": (fake < 0.5).mean(),
        "real_detection_accuracy": (real >= 0.5).mean(),
    }


SHAPES = [(32,), (32, 1), (32, 1, 1, 1), (8, 1, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
def test_functional_scores_match_numpy_reference(shape, from_logits):
    rng = np.random.default_rng(0)
    if from_logits:
        d_real, d_fake = rng.normal(1, 2, shape), rng.normal(-1, 2, shape)
    else:
        d_real, d_fake = rng.uniform(0, 1, shape), rng.uniform(0, 1, shape)
    expected = numpy_scores(d_real, d_fake, from_logits)
    real_t, fake_t = torch.tensor(d_real, dtype=torch.float32), torch.tensor(d_fake, dtype=torch.float32)
    scores = gan_scores(real_t, fake_t, from_logits=from_logits)
    for name, value in expected.items():
        assert scores[name].item() == pytest.approx(value, abs=1e-6), name
    assert generator_score(fake_t, from_logits).item() == pytest.approx(expected["generator_score"], abs=1e-6)
    assert discriminator_score(real_t, fake_t, from_logits).item() == pytest.approx(
        expected["discriminator_score"], abs=1e-6
    )
    assert fake_detection_accuracy(fake_t, from_logits).item() == pytest.approx(expected["fake_detection_accuracy"])
    assert real_detection_accuracy(real_t, from_logits).item() == pytest.approx(expected["real_detection_accuracy"])


def test_functional_stats_add_up_across_batches():
    rng = np.random.default_rng(1)
    batches = [(rng.uniform(0, 1, n), rng.uniform(0, 1, n)) for n in (5, 17, 32)]
    total = sum(gan_score_stats(torch.tensor(r), torch.tensor(f)) for r, f in batches)
    expected = numpy_scores(np.concatenate([r for r, _ in batches]), np.concatenate([f for _, f in batches]), False)
    assert gan_scores_from_stats(total).tolist() == pytest.approx(list(expected.values()), abs=1e-6)


def test_functional_threshold_edges_at_one_half():
    # a fake rated exactly 0.5 is not detected; a real rated exactly 0.5 is
    assert fake_detection_accuracy(torch.tensor([0.5, 0.49])).item() == 0.5
    assert real_detection_accuracy(torch.tensor([0.5, 0.49])).item() == 0.5


def test_functional_non_finite_entries_are_counted_and_left_out():
    d_real = torch.tensor([0.8, float("nan"), 0.6])
    d_fake = torch.tensor([0.2, float("inf"), -float("inf"), 0.4])
    stats = gan_score_stats(d_real, d_fake)
    assert stats[STAT_NAMES.index("non_finite")].item() == 3
    assert stats[STAT_NAMES.index("out_of_range")].item() == 0
    expected = numpy_scores(d_real.numpy(), d_fake.numpy(), False)
    assert gan_scores_from_stats(stats).tolist() == pytest.approx(list(expected.values()), abs=1e-6)


def test_functional_all_non_finite_gives_nan_scores():
    scores = gan_scores(torch.full((4,), float("nan")), torch.full((4,), float("nan")))
    assert all(torch.isnan(v) for v in scores.values())


def test_functional_half_and_bfloat16_inputs_accumulate_in_float32():
    d_fake = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    reference = generator_score(d_fake)
    for dtype in (torch.float16, torch.bfloat16):
        value = generator_score(d_fake.to(dtype))
        assert value.dtype == torch.float32
        assert value.item() == pytest.approx(reference.item(), abs=5e-3)


def test_functional_detaches_inputs_with_graphs():
    logits = torch.randn(8, 1, requires_grad=True)
    assert not generator_score(logits * 2, from_logits=True).requires_grad


@pytest.mark.parametrize("bad", [torch.tensor([1.5, 0.5]), torch.tensor([-0.1, 0.5])])
def test_functional_probabilities_outside_unit_interval_raise(bad):
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*pass `from_logits=True`"):
        generator_score(bad)
    assert generator_score(bad, from_logits=True).item() > 0  # the same values are fine as logits


def test_functional_rejects_non_tensors_and_missing_inputs():
    with pytest.raises(TypeError, match=r"`d_fake` must be a torch\.Tensor"):
        generator_score([0.1, 0.2])
    with pytest.raises(TypeError, match="`d_real` must hold real numbers"):
        real_detection_accuracy(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="needs at least one of `d_real` and `d_fake`"):
        gan_score_stats(None, None)


def test_functional_empty_batch_gives_nan_without_error():
    assert torch.isnan(generator_score(torch.empty(0)))


def test_functional_stats_of_several_batches_equal_batch_by_batch_stats():
    rng = np.random.default_rng(3)
    reals = [torch.tensor(rng.normal(0, 3, (n, 1)), dtype=torch.float32) for n in (4, 0, 7, 1)]
    fakes = [torch.tensor(rng.normal(0, 3, (n,)), dtype=torch.float16) for n in (5, 3, 1, 2)]
    reals[2][0, 0], fakes[1][1] = float("nan"), float("inf")
    reals[3] = None  # a batch with fakes only
    stats = gan_score_stats_batches(reals, fakes, from_logits=True)
    assert stats.shape == (4, len(STAT_NAMES))
    for i, (r, f) in enumerate(zip(reals, fakes)):
        assert torch.allclose(stats[i], gan_score_stats(r, f, from_logits=True), atol=1e-6), i
    with pytest.raises(ValueError, match="must list the same number of batches, got 4 and 3"):
        gan_score_stats_batches(reals, fakes[:3])


# ---------------------------------------------------------------------------------------------- diversity


def numpy_diversity(fake: np.ndarray, real: np.ndarray, k: int, factor: float) -> dict[str, float]:
    """The definitions, written independently with SciPy distances (float64)."""
    fake, real = fake.reshape(len(fake), -1).astype(np.float64), real.reshape(len(real), -1).astype(np.float64)
    d_ff, d_rr, d_rf = cdist(fake, fake), cdist(real, real), cdist(real, fake)
    n, m = len(fake), len(real)
    diversity = (d_ff.sum() / (n * (n - 1))) / (d_rr.sum() / (m * (m - 1)))
    s = min(n, m)
    nn_fake = np.sort(d_ff[:s, :s] + np.diag([np.inf] * s), axis=1)[:, 0]
    nn_real = np.sort(d_rr[:s, :s] + np.diag([np.inf] * s), axis=1)[:, 0]
    duplicates = np.mean(nn_fake <= factor * np.median(nn_real))
    radii = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    inside = d_rf <= radii[:, None]
    return {
        "diversity": diversity,
        "near_duplicates": duplicates,
        "density": inside.sum() / (k * n),
        "coverage": inside.any(axis=1).mean(),
    }


def check_against_numpy(fake: np.ndarray, real: np.ndarray, k: int = 5, factor: float = 0.25) -> None:
    expected = numpy_diversity(fake, real, k, factor)
    f, r = torch.tensor(fake, dtype=torch.float32), torch.tensor(real, dtype=torch.float32)
    values = dict(zip(DIVERSITY_NAMES, diversity_scores(f, r, nearest_k=k, near_duplicate_factor=factor).tolist()))
    for name in DIVERSITY_NAMES:
        assert values[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    assert diversity_ratio(f, r).item() == pytest.approx(expected["diversity"], rel=1e-5)
    assert near_duplicate_rate(f, r, factor).item() == pytest.approx(expected["near_duplicates"])
    dens, cov = density_coverage(f, r, k)
    assert dens.item() == pytest.approx(expected["density"], rel=1e-5) == density(f, r, k).item()
    assert cov.item() == pytest.approx(expected["coverage"]) == coverage(f, r, k).item()


@pytest.mark.parametrize(("n", "m", "shape"), [(40, 60, (3,)), (60, 40, (2, 4)), (25, 25, (1, 3, 3))])
def test_functional_diversity_matches_numpy_reference(n, m, shape):
    rng = np.random.default_rng(n + m)
    real = rng.normal(size=(m, *shape))
    fake = np.concatenate([rng.normal(size=(n // 2, *shape)), rng.normal(0.5, 0.05, size=(n - n // 2, *shape))])
    check_against_numpy(fake, real)
    check_against_numpy(fake, real, k=3, factor=0.6)


def test_functional_diversity_identical_points_count_inside_balls():
    # Each real point appears 6 times, so with k = 5 every ball has radius exactly 0; fakes on real points must
    # count as inside (<=), fakes elsewhere must not.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 2))
    real = np.repeat(centres, 6, axis=0)
    fake = np.concatenate([centres[:2].repeat(3, axis=0), centres[:1] + 0.3])
    check_against_numpy(fake, real)
    _, cov = density_coverage(torch.tensor(fake), torch.tensor(real), nearest_k=5)
    assert cov.item() == 0.5  # 12 of the 24 real points (the copies of the two centres hit) are covered
    assert pairwise_distances(torch.tensor(real)).diagonal().eq(0).all()  # exact zeros, not rounding noise


def test_functional_diversity_collapse_and_healthy_extremes():
    rng = np.random.default_rng(1)
    real = torch.tensor(rng.normal(size=(200, 8)), dtype=torch.float32)
    healthy = torch.tensor(rng.normal(size=(200, 8)), dtype=torch.float32)
    collapsed = torch.tensor(rng.normal(size=(1, 8)), dtype=torch.float32).repeat(200, 1)
    h = dict(zip(DIVERSITY_NAMES, diversity_scores(healthy, real).tolist()))
    c = dict(zip(DIVERSITY_NAMES, diversity_scores(collapsed, real).tolist()))
    assert 0.9 < h["diversity"] < 1.1 and h["near_duplicates"] < 0.05 and h["coverage"] > 0.8
    assert c["diversity"] == 0.0 and c["near_duplicates"] == 1.0 and c["coverage"] < 0.1


def test_functional_diversity_small_sets_give_nan_or_clear_errors():
    one, few = torch.zeros(1, 2), torch.rand(3, 2)
    assert torch.isnan(diversity_scores(one, few, nearest_k=5)).tolist() == [True, True, True, True]
    with pytest.raises(ValueError, match="need more real samples than `nearest_k`=5, got 3"):
        density_coverage(few, few)
    with pytest.raises(ValueError, match="`nearest_k` must be a positive integer, got 0"):
        diversity_scores(few, few, nearest_k=0)
    with pytest.raises(ValueError, match="`factor` must be a positive number, got -1"):
        near_duplicate_rate(few, few, factor=-1)
    with pytest.raises(ValueError, match="`near_duplicate_factor` must be a positive number"):
        diversity_scores(few, few, near_duplicate_factor=0)
    with pytest.raises(ValueError, match="same number of features per sample, got 2 and 3"):
        diversity_scores(few, torch.rand(4, 3))
    with pytest.raises(ValueError, match=r"`fake` must have shape \(n, \.\.\.\) with n >= 1 samples, got shape \(3,\)"):
        diversity_scores(torch.rand(3), few)
    with pytest.raises(TypeError, match=r"`real` must be a torch\.Tensor"):
        diversity_ratio(few, [[0.0, 1.0]])


def _numpy_within_groups(fake, real, groups, factor=0.25):
    """Diversity ratio and near-duplicate rate over pairs of the same group, in NumPy (the threshold from real sets
    of the largest group's size)."""
    f, r, g = fake.numpy().astype(np.float64), real.numpy().astype(np.float64), groups.numpy()
    d_ff, d_rr = cdist(f, f), cdist(r, r)
    same = (g[:, None] == g[None, :]) & ~np.eye(len(f), dtype=bool)
    size = min(np.bincount(g).max(), len(r))
    d_small = d_rr[:size, :size] + np.diag(np.full(size, np.inf))
    threshold = factor * np.median(d_small.min(1))
    spread = d_rr[~np.eye(len(r), dtype=bool)].mean()
    nearest = np.where(same, d_ff, np.inf).min(1)
    return d_ff[same].mean() / spread, (nearest <= threshold).mean()


def test_functional_diversity_within_groups_matches_numpy_reference():
    from lightning_gan_monitor.functional.diversity import diversity_against, real_reference

    g = torch.Generator().manual_seed(3)
    fake, real = torch.randn(96, 5, generator=g), torch.randn(128, 5, generator=g)
    groups = torch.arange(3).repeat_interleave(32)
    values = diversity_against(fake, real_reference(real, 5, 32), groups=groups)
    spread, duplicates = _numpy_within_groups(fake, real, groups)
    assert values[0].item() == pytest.approx(spread, rel=1e-5)
    assert values[1].item() == pytest.approx(duplicates)
    pooled = diversity_against(fake, real_reference(real, 5, 96))
    assert values[2:].tolist() == pooled[2:].tolist()  # density and coverage take every sample


def test_functional_movement_and_twin_rate_match_numpy_reference():
    from lightning_gan_monitor.functional.diversity import movement, twin_rate

    g = torch.Generator().manual_seed(4)
    before, after = torch.randn(50, 7, generator=g), torch.randn(50, 7, generator=g)
    spread = torch.tensor(2.5)
    expected = np.linalg.norm(after.numpy() - before.numpy(), axis=1).mean() / 2.5
    assert movement(before, after, spread).item() == pytest.approx(expected, rel=1e-5)
    assert movement(before, before, spread).item() == 0.0
    twins = torch.cat([before[:10], before[:10], before[10:]])  # 20 of 60 samples have an exact twin
    assert twin_rate(twins, 1e-6).item() == pytest.approx(20 / 60)
    with pytest.raises(ValueError, match="`before` and `after` must have the same shape"):
        movement(before, after[:3], spread)
