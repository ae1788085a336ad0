"""The per-mode view of coverage (`gan/mode_coverage`): the functional, the Metric and the monitor on 2-D mixtures."""

import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import fit_digits, make_trainer, read_events
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_gan_monitor import GANMonitor
from lightning_gan_monitor.functional import MODE_FEATURES, coverage, mode_coverage, mode_labels
from lightning_gan_monitor.metrics import ModeCoverage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mixture_modes


def _ring(n, seed):
    return mixture_modes.sample("ring", n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_modes_are_the_mixtures_modes_and_mode_coverage_counts_those_reached(name):
    real = mixture_modes.sample(name, 512, torch.Generator().manual_seed(0))
    centres, std = mixture_modes.mixture(name)
    labels, _, modes = mode_labels(real)
    assert modes == len(centres)  # every Gaussian is one connected component of the 5-NN graph
    nearest = torch.cdist(real, centres).argmin(dim=1)
    assert all(len(set(nearest[labels == c].tolist())) == 1 for c in range(modes))
    one = centres[:1] + std * torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    every = mixture_modes.sample(name, 256, torch.Generator().manual_seed(2))
    assert mode_coverage(one, real).item() == pytest.approx(1 / len(centres))
    assert mode_coverage(every, real).item() == 1.0
    # coverage, on the same samples, mixes in how well each mode is filled: below 1 with every mode reached
    assert coverage(every, real).item() < 1.0


def test_modes_samples_far_from_every_mode_reach_none_and_bad_arguments_are_named():
    real = _ring(512, 0)
    assert mode_coverage(torch.full((8, 2), 10.0), real).item() == 0.0
    with pytest.raises(ValueError, match="`nearest_k` must be a positive integer, got 0"):
        mode_coverage(real, real, nearest_k=0)
    with pytest.raises(ValueError, match="`scale` must be a positive number, got -1"):
        mode_coverage(real, real, scale=-1)
    with pytest.raises(ValueError, match="mode coverage needs more real samples than `nearest_k`=5, got 3"):
        mode_coverage(real, real[:3])


def test_modes_metric_over_several_updates_equals_the_function_on_their_union():
    real, fake = _ring(512, 0), _ring(600, 1)
    fake = fake[fake[:, 0] > 0.5][:150]  # the 3 modes on the right of the ring
    metric = ModeCoverage()
    metric.update(fake=fake[:100], real=real[:200])
    metric.update(fake=fake[100:], real=real[200:])
    assert metric.compute() == mode_coverage(fake, real) == 3 / 8


def _fit_ring(tmp_path, **kwargs):
    pl.seed_everything(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_ring(4096, 0)), batch_size=256, shuffle=True)
    logger = TensorBoardLogger(tmp_path, name="ring")
    monitor = GANMonitor(from_logits=True, on_failure="warn", image_every_n_epochs=None, **kwargs)
    trainer = make_trainer(tmp_path, [monitor], max_steps=2 * 200, logger=logger)  # two optimizer steps a batch
    trainer.fit(mixture_modes.MixtureGAN(ignore_noise=True), loader)
    return monitor, trainer, read_events(logger.log_dir)


def test_modes_monitor_logs_mode_coverage_for_2d_samples_the_same_on_both_paths(tmp_path):
    # the generator ignores its noise: one point, at most one of the 8 modes
    monitor, trainer, events = _fit_ring(tmp_path / "reference")
    logged = events.Scalars("gan/mode_coverage")
    assert [e.step for e in logged] == [99, 199] and all(e.value <= 1 / 8 for e in logged)
    assert trainer.callback_metrics["gan/mode_coverage"].item() == logged[-1].value
    assert "gan/mode_coverage" in monitor.history.tags
    # a feature extractor (here the identity) goes through the Metric, which DDP uses: the same numbers
    metric_path, _, events = _fit_ring(tmp_path / "metric", feature_extractor=lambda x: x)
    assert [e.value for e in events.Scalars("gan/mode_coverage")] == [e.value for e in logged]
    assert metric_path.diversity == pytest.approx(monitor.diversity)


def test_modes_not_measured_for_images(tmp_path):
    # 8x8 digits have 64 features, more than MODE_FEATURES: their k-NN graph does not fall apart into modes
    assert MODE_FEATURES < 64
    monitor = GANMonitor(image_every_n_epochs=None)
    trainer = fit_digits(tmp_path, [monitor], epochs=25)[1]
    assert "gan/coverage" in trainer.callback_metrics and "gan/mode_coverage" not in trainer.callback_metrics
