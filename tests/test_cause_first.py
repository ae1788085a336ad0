"""The cause first: a collapsed generator is named mode collapse, early when the evidence is unambiguous, and before
the discriminator's dominance that follows from it; every failure that holds at the check is named. Real training runs
of the example's digits GAN and of the GAN shaped like Lightning's example, at the monitor's defaults.
"""

import pytorch_lightning as pl
from conftest import fit_digits, make_trainer
from digits_gan import DigitsGAN, load_digits_tensor, make_dataloader
from template_gan import TemplateGAN, digit_images_loader
from torch import nn

from lightning_gan_monitor import FailureMode, GANMonitor
from lightning_gan_monitor.diagnosis import GENERATOR_STEPS, REMEDIES


class ScaledNoise(nn.Module):
    """Shrinks the latent vectors: the generator draws a few nearly identical images (ambiguous collapse)."""

    def forward(self, z):
        return z * 0.07


def test_cause_first_noise_ignoring_generator_is_named_collapse_at_the_first_check(tmp_path):
    monitor = GANMonitor()
    fit_digits(tmp_path, [monitor], epochs=40, ignore_noise=True)  # 200 batches
    first = monitor.diagnoses[0]
    assert first.failure is FailureMode.MODE_COLLAPSE and first.batch == 100 and monitor.stopped_batch == 100
    assert "far beyond any healthy run, at the latest diversity check (now" in first.message
    assert "for the last 1 batch (since batch 100)" in first.message


def test_cause_first_collapse_is_named_within_150_batches_also_when_the_discriminator_dominates(tmp_path):
    # This generator moves (0.7: it learns, with no variety), so the dominance would wait twice its patience; counted
    # as not learning (its collapse is still confirmed by its exact twins), the dominance fires within the run
    monitor = GANMonitor(on_failure="warn", collapse_moving_above=100.0)
    fit_digits(tmp_path, [monitor], epochs=60, ignore_noise=True, lr_d=2e-3)
    first = monitor.diagnoses[0]
    assert first.failure is FailureMode.MODE_COLLAPSE and first.batch <= 150
    # the dominance, not yet fired, is named second at the same check, with the reason for the order
    assert first.also == (FailureMode.DISCRIMINATOR_DOMINATES,)
    assert "Also holding at this check: the discriminator dominates (held for" in first.message
    assert "named after the mode collapse because a collapsed generator's few kinds of samples" in first.message
    # the discriminator's dominance, which fires later, is named mode collapse first too
    assert all(d.failure is FailureMode.MODE_COLLAPSE for d in monitor.diagnoses), monitor.diagnoses
    later = [d for d in monitor.diagnoses if "while the discriminator dominates" in d.message]
    assert later and "the discriminator's dominance follows from it" in later[0].message
    remedies = [line.removeprefix("  - ") for line in later[0].message.splitlines() if line.startswith("  - ")]
    collapse, dominance = REMEDIES[FailureMode.MODE_COLLAPSE], REMEDIES[FailureMode.DISCRIMINATOR_DOMINATES]
    assert remedies == [*collapse, *dominance]


def test_cause_first_a_frozen_nearly_noise_blind_generator_is_named_not_learning_beside_the_dominance(tmp_path):
    # A generator that does not learn also looks collapsed (here: diversity about 0.14, nearly every sample a
    # near-duplicate); its outputs do not move and lie near no real sample: not a collapse. The dominance, its own
    # cause, keeps its name, and the message says the generator is not learning, with its optimizer to check first.
    monitor = GANMonitor(on_failure="warn")
    pl.seed_everything(0)
    model = DigitsGAN(freeze_generator=True, lr_d=2e-3)  # the example's d-dominates scenario...
    model.generator.insert(0, ScaledNoise())  # ...with a generator that draws a few nearly identical images
    make_trainer(tmp_path, [monitor], max_epochs=60).fit(model, make_dataloader(load_digits_tensor(3)))
    first = monitor.diagnoses[0]
    assert first.failure is FailureMode.DISCRIMINATOR_DOMINATES and first.batch < 200, monitor.diagnoses
    assert first.also == ()  # the collapse condition holds, but no collapse: its values are a fact about G
    assert "The generator is not learning: its outputs on the monitor's fixed latent vectors did not move" in (
        first.message
    )
    assert "but lie near no real sample (density 0.000, coverage 0.000), as a fresh generator's do: not a mode " in (
        first.message
    )
    remedies = [line.removeprefix("  - ") for line in first.message.splitlines() if line.startswith("  - ")]
    assert remedies[0] == GENERATOR_STEPS
    assert all(d.failure is not FailureMode.MODE_COLLAPSE for d in monitor.diagnoses)


def test_cause_first_healthy_generators_do_not_fire_at_once(tmp_path):
    # the digits example and the GAN shaped like Lightning's example (least diverse at its first check: 0.25)
    monitor = GANMonitor()
    fit_digits(tmp_path, [monitor], epochs=60)
    assert monitor.diagnoses == []
    template = GANMonitor(latent_dim=16, diversity_every_n_batches=50)
    pl.seed_everything(0)
    make_trainer(tmp_path, [template], max_epochs=6).fit(TemplateGAN(), digit_images_loader())  # 168 batches
    assert template.diagnoses == [], template.diagnoses
