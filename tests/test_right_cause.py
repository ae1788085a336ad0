"""The right cause on GANs written after public code: a generator that is not learning is not a collapse, a fooled
discriminator is caught whatever its calibration, diversity is measured at one moment. Real training runs, monitors
set up as the README says.
"""

import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import fit_digits, make_trainer
from template_gan import TemplateGAN, digit_images_loader

from lightning_gan_monitor import FailureMode, GANMonitor
from lightning_gan_monitor.collapse import CollapseTracker, ModeCollapse
from lightning_gan_monitor.diagnosis import DISCRIMINATOR_STEPS, GENERATOR_STEPS
from lightning_gan_monitor.functional.diversity import diversity_against, real_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from zoo_gans import Condition, ZooGAN, digits


class SlowGenerator(TemplateGAN):
    """Lightning's example with the generator's learning rate scaled (0: a frozen generator, as a typo makes it)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        return [
            torch.optim.Adam(self.generator.parameters(), lr=hp.lr * self.factor, betas=(hp.b1, hp.b2)),
            torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr, betas=(hp.b1, hp.b2)),
        ]


def remedies(message: str) -> list[str]:
    return [line.removeprefix("  - ") for line in message.splitlines() if line.startswith("  - ")]


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.0, 0.01])
def test_right_cause_a_generator_that_does_not_learn_is_named_dominance_not_collapse(tmp_path, factor):
    # Lightning's example shape, G's learning rate 0 (or 100x below D's): its samples stay the grey blur a fresh
    # network draws (diversity 0.16, near-duplicates 0.87, near no real sample), the collapse condition holds at
    # every check, and D comes to reject them. Version 0.2 said "Mode collapse after 100 training batches".
    monitor = GANMonitor()
    pl.seed_everything(0)
    make_trainer(tmp_path, [monitor], max_epochs=20).fit(SlowGenerator(factor), digit_images_loader())
    assert monitor.diagnoses, "nothing named"
    assert all(d.failure is not FailureMode.MODE_COLLAPSE for d in monitor.diagnoses), monitor.diagnoses
    first = monitor.diagnoses[0]
    assert first.failure is FailureMode.DISCRIMINATOR_DOMINATES
    assert "The generator is not learning:" in first.message
    if factor == 0.0:  # a generator that does not move at all: the fact is said
        assert "did not move between the last two diversity checks (movement 0.000" in first.message
    assert remedies(first.message)[0] == GENERATOR_STEPS
    assert monitor.summary.regimes["collapsed"] == 0  # no "collapsed" share above a dominance it is not


@pytest.mark.slow
def test_right_cause_a_frozen_discriminator_of_a_conditional_gan_is_named_generator_dominates(tmp_path):
    # A conditional GAN after PyTorch-GAN's cgan (BCE with logits): against a frozen D the generator score levels
    # off near 0.6-0.7, under `g_dominates_generator_above`, but D orders nearly every generated sample above the
    # real ones (AUC near 0): that names it, with D's optimizer first among the remedies.
    monitor = GANMonitor(condition_key=1)
    pl.seed_everything(0)
    module = ZooGAN("cgan", "base", Condition("d0", 0, lr_d=0.0))
    make_trainer(tmp_path, [monitor], max_epochs=10).fit(module, digits(0))
    first = monitor.diagnoses[0]
    assert first.failure is FailureMode.GENERATOR_DOMINATES and first.batch <= 150, monitor.diagnoses
    assert first.scores["generator_score"] < monitor.g_dominates_generator_above
    assert first.scores["auc"] < 0.2
    assert "the discriminator has ordered fewer than 0.2 of the (real, generated) pairs correctly" in first.message
    assert remedies(first.message)[0] == DISCRIMINATOR_STEPS


@pytest.mark.slow
def test_right_cause_a_fooled_discriminator_is_named_before_the_collapse_it_brings(tmp_path):
    # D frozen, G at 1e-3: G collapses onto what the fixed D accepts; the cause is the D that no longer learns.
    monitor = GANMonitor()
    pl.seed_everything(0)
    module = ZooGAN("lightning", "1e-3", Condition("d0", 0, lr_d=0.0))
    make_trainer(tmp_path, [monitor], max_epochs=10).fit(module, digits(0))
    first = monitor.diagnoses[0]
    assert first.failure is FailureMode.GENERATOR_DOMINATES, monitor.diagnoses
    assert "while the diversity checks show mode collapse" in first.message
    assert "a learning D would reject a generator's one kind of sample" in first.message
    said = remedies(first.message)
    assert said[0] == DISCRIMINATOR_STEPS and "a larger latent input (more latent dimensions)" in said


@pytest.mark.slow
@pytest.mark.parametrize("reachable", [True, False])
def test_right_cause_a_drifting_collapsed_generator_at_lr_1e3_is_named_collapse_by_batch_150(tmp_path, reachable):
    # The noise-ignoring generator at lr 1e-3, returning its fakes: one image that drifts from batch to batch. Pooled
    # over 8 returned batches it measured diversity 0.16-0.37 in version 0.2; G's samples of one moment measure 0.
    kwargs = {} if reachable else {"generator_attr": "no_such_attribute"}  # the monitor cannot run G itself
    monitor = GANMonitor(**kwargs)
    fit_digits(tmp_path, [monitor], epochs=40, ignore_noise=True, lr_g=1e-3, lr_d=1e-3)
    first = monitor.diagnoses[0]
    assert first.failure is FailureMode.MODE_COLLAPSE and first.batch <= 150, monitor.diagnoses
    assert first.scores["diversity"] == 0.0 and first.scores["near_duplicates"] == 1.0
    assert monitor.diversity_source == ("generator" if reachable else "outputs")
    assert monitor.collapse_tracker.movement > 0.1  # it moves: it learns, with no variety


def test_right_cause_diversity_within_each_batch_does_not_read_drift_as_variety():
    real = torch.randn(256, 64)
    drifting = torch.cat([torch.full((32, 64), float(k)) / 4 for k in range(8)])  # one image per batch, moving
    groups = torch.arange(8).repeat_interleave(32)
    reference = real_reference(real, fakes=32)
    within = diversity_against(drifting, reference, groups=groups)
    pooled = diversity_against(drifting, real_reference(real, fakes=256))
    assert within[0] == 0.0 and within[1] == 1.0  # no variety, every sample a twin
    assert pooled[0] > 0.3 and pooled[1] == 1.0  # pooled, the drift looked like variety


def test_right_cause_a_collapse_is_lost_variety_or_no_variety_in_a_learning_generator():
    rule = ModeCollapse(patience=3, every=100, at_once_diversity_below=0.1, at_once_near_duplicates_above=0.9)
    fresh = {"diversity": 0.05, "near_duplicates": 1.0, "density": 0.0, "coverage": 0.0}
    frozen = CollapseTracker(rule)
    frozen.start(fresh)
    assert frozen.update({**fresh, "movement": 0.0}, batch=100) is None  # still at its first samples: not learning
    assert frozen.held == 0 and frozen.not_learning is not None
    drifting = CollapseTracker(rule)
    drifting.start(fresh)
    firing = drifting.update({**fresh, "movement": 0.6}, batch=100)  # moves, and stays one image: collapsed
    assert firing is not None and firing.rule is rule
    lost = CollapseTracker(rule)
    lost.start({**fresh, "diversity": 0.6})
    assert lost.update({**fresh, "movement": 0.0}, batch=100) is not None  # had variety, lost it
    # a partial collapse onto three outputs: varied enough (diversity 0.3), but every sample an exact twin, slow, far
    # from the data, and a generator with 40 updates (a WGAN-GP's n_critic): named at once all the same
    three = {"diversity": 0.3, "near_duplicates": 1.0, "density": 0.0, "coverage": 0.0, "movement": 0.05}
    partial = CollapseTracker(rule)
    partial.start({**three, "diversity": 0.25})
    firing = partial.update({**three, "twins": 1.0}, batch=200, updates=40)
    assert firing is not None and firing.evidence["at_once"] == 1.0
    assert "100% of the generated samples have an exact twin" in rule.describe(firing.evidence)
    young = CollapseTracker(rule)  # the same values without twins: a young generator, not judged
    young.start({**three, "diversity": 0.25})
    assert young.update({**three, "twins": 0.0}, batch=200, updates=40) is None


def test_right_cause_an_at_once_collapse_after_several_checks_says_so():
    rule = ModeCollapse(patience=3, every=100, at_once_diversity_below=0.1, at_once_near_duplicates_above=0.9)
    text = rule.describe({"diversity": 0.05, "near_duplicates": 0.95, "density": 0.2, "coverage": 0.0, "at_once": 1.0})
    assert "at the latest diversity check (now diversity 0.050" in text
    text = rule.describe(
        {"diversity": 0.05, "near_duplicates": 0.95, "density": 0.2, "coverage": 0, "at_once": 1, "checks": 4}
    )
    assert "at the latest diversity check (the collapse condition has held at 4 consecutive checks)" in text
