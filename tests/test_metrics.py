import numpy as np
import pytest
import torch
from test_functional import numpy_scores

from lightning_gan_monitor import (
    DiscriminatorScore,
    FakeDetectionAccuracy,
    GANScores,
    GeneratorScore,
    RealDetectionAccuracy,
)
from lightning_gan_monitor.functional import SCORE_NAMES


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
