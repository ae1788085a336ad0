from pathlib import Path

import numpy as np
import pytest
import torch
from test_functional import numpy_diversity, numpy_scores

from lightning_gan_monitor import (
    Coverage,
    Density,
    DiscriminatorScore,
    DiversityRatio,
    DiversityScores,
    FakeDetectionAccuracy,
    GANScores,
    GeneratorScore,
    NearDuplicateRate,
    RealDetectionAccuracy,
)
from lightning_gan_monitor.functional import DIVERSITY_NAMES, SCORE_NAMES, diversity_scores


def batches(from_logits: bool, n: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    draw = (lambda size: rng.normal(0, 2, size)) if from_logits else (lambda size: rng.uniform(0, 1, size))
    return [(torch.tensor(draw((16, 1))), torch.tensor(draw((24, 1)))) for _ in range(n)]


@pytest.mark.parametrize("from_logits", [False, True])
def test_metrics_classes_match_numpy_over_several_batches(from_logits):
    data = batches(from_logits)
    expected = numpy_scores(
        np.concatenate([r.numpy() for r, _ in data]), np.concatenate([f.numpy() for _, f in data]), from_logits
    )
    metrics = {
        "generator_score": (GeneratorScore(from_logits=from_logits), lambda m, r, f: m.update(f)),
        "discriminator_score": (DiscriminatorScore(from_logits=from_logits), lambda m, r, f: m.update(r, f)),
        "fake_detection_accuracy": (FakeDetectionAccuracy(from_logits=from_logits), lambda m, r, f: m.update(f)),
        "real_detection_accuracy": (RealDetectionAccuracy(from_logits=from_logits), lambda m, r, f: m.update(r)),
    }
    together = GANScores(from_logits=from_logits)
    for d_real, d_fake in data:
        together.update(d_real, d_fake)
        for metric, update in metrics.values():
            update(metric, d_real, d_fake)
    computed = together.compute()
    for name in SCORE_NAMES:
        assert metrics[name][0].compute().item() == pytest.approx(expected[name], abs=1e-6), name
        assert computed[name].item() == pytest.approx(expected[name], abs=1e-6), name


def test_metrics_reset_forgets_earlier_batches():
    metric = GeneratorScore()
    metric.update(torch.tensor([0.9, 0.9]))
    metric.reset()
    metric.update(torch.tensor([0.1, 0.3]))
    assert metric.compute().item() == pytest.approx(0.2)


def test_metrics_out_of_range_raises_unless_validation_is_off():
    with pytest.raises(ValueError, match="pass `from_logits=True`"):
        GeneratorScore().update(torch.tensor([2.0]))
    metric = GeneratorScore(validate_args=False)
    metric.update(torch.tensor([0.5]))  # no read-back to the host in update
    assert metric.compute().item() == 0.5


def test_metrics_from_logits_must_be_bool():
    with pytest.raises(TypeError, match="`from_logits` must be a bool"):
        GANScores(from_logits="yes")


def test_metrics_states_are_sum_reduced_for_ddp():
    metric = GANScores()
    assert metric._reductions["stats"].__name__ == "dim_zero_sum"


# ---------------------------------------------------------------------------------------------- diversity


def diversity_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(60, 4, generator=g)
    fake = torch.cat([torch.randn(30, 4, generator=g), torch.randn(1, 4, generator=g).repeat(20, 1)])
    return fake, real


def test_metrics_diversity_classes_match_functional_over_several_updates():
    fake, real = diversity_data()
    expected = dict(zip(DIVERSITY_NAMES, diversity_scores(fake, real, nearest_k=3, near_duplicate_factor=0.3)))
    numpy_expected = numpy_diversity(fake.numpy(), real.numpy(), 3, 0.3)
    together = DiversityScores(nearest_k=3, near_duplicate_factor=0.3)
    singles = {
        "diversity": DiversityRatio(nearest_k=3, near_duplicate_factor=0.3),
        "near_duplicates": NearDuplicateRate(nearest_k=3, near_duplicate_factor=0.3),
        "density": Density(nearest_k=3, near_duplicate_factor=0.3),
        "coverage": Coverage(nearest_k=3, near_duplicate_factor=0.3),
    }
    for metric in (together, *singles.values()):
        for chunk in range(0, 60, 20):  # samples arrive in pieces; the metric keeps the whole sets
            metric.update(fake=fake[chunk : chunk + 20] if chunk < 50 else None, real=real[chunk : chunk + 20])
    computed = together.compute()
    for name in DIVERSITY_NAMES:
        assert computed[name].item() == pytest.approx(expected[name].item(), abs=1e-6), name
        assert singles[name].compute().item() == pytest.approx(expected[name].item(), abs=1e-6), name
        assert computed[name].item() == pytest.approx(numpy_expected[name], rel=1e-5, abs=1e-6), name


def test_metrics_diversity_reset_errors_and_cat_states():
    metric = DiversityScores()
    assert metric._reductions["fake"].__name__ == "dim_zero_cat"
    assert metric._reductions["real"].__name__ == "dim_zero_cat"
    with pytest.raises(ValueError, match=r"needs both generated and real samples; call `update\(fake=\.\.\., real"):
        metric.compute()
    with pytest.raises(ValueError, match="`nearest_k` must be a positive integer, got -1"):
        DiversityScores(nearest_k=-1)
    with pytest.raises(ValueError, match="`near_duplicate_factor` must be a positive number, got 0"):
        Coverage(near_duplicate_factor=0)


def _gloo_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    fake, real = diversity_data()
    # Uneven shares: rank 0 holds 30 generated and 25 real samples, rank 1 the rest.
    cut_fake, cut_real = 30, 25
    metric = DiversityScores(nearest_k=3)
    metric.update(fake=fake[:cut_fake] if rank == 0 else fake[cut_fake:])
    metric.update(real=real[:cut_real] if rank == 0 else real[cut_real:])
    values = torch.stack([v for v in metric.compute().values()])
    torch.save(values, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.ddp
def test_metrics_diversity_is_exact_under_a_real_two_process_gloo_group(tmp_path):
    # Pairwise metrics are not sums over processes: the cat states gather both processes' samples, so both get the
    # values of one process holding every sample.
    torch.multiprocessing.spawn(_gloo_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    fake, real = diversity_data()
    expected = diversity_scores(fake, real, nearest_k=3)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(rank0, rank1)
    assert torch.allclose(rank0, expected, atol=1e-6)
    local = diversity_scores(fake[:30], real[:25], nearest_k=3)
    assert not torch.allclose(local, expected, atol=1e-3)  # one process's own values would be wrong
