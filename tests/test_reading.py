"""How D's outputs are read (`from_logits`): a sigmoid D and a logits D, each with "auto", True and False."""

import logging
import warnings

import pytest
import pytorch_lightning as pl
import torch
from conftest import RecordOutputs, make_trainer
from digits_gan import DigitsGAN, load_digits_tensor, make_dataloader

from lightning_gan_monitor import GANMonitor, GANMonitorWarning, GANScores
from lightning_gan_monitor.accumulate import Reading

BATCHES = 30  # 6 epochs of 5 batches; the monitor logs every 10


class SigmoidGAN(DigitsGAN):
    """The example's GAN with a D that ends in a sigmoid (as with `BCELoss`): it returns probabilities."""

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        return {**out, "d_real": torch.sigmoid(out["d_real"]), "d_fake": torch.sigmoid(out["d_fake"])}


def run(tmp_path, sigmoid: bool, from_logits, caplog):
    recorder, monitor = RecordOutputs(), GANMonitor(from_logits=from_logits, log_every_n_batches=10)
    pl.seed_everything(0)
    model = SigmoidGAN() if sigmoid else DigitsGAN()
    trainer = make_trainer(tmp_path, [recorder, monitor], max_epochs=BATCHES // 5)
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GANMonitorWarning)
        trainer.fit(model, make_dataloader(load_digits_tensor(3)))
    said = [r.getMessage() for r in caplog.records if "reading the discriminator" in r.getMessage()]
    warned = [str(w.message) for w in caught if issubclass(w.category, GANMonitorWarning)]
    return recorder, trainer, said, warned


def logged_equals_metric(recorder, trainer, from_logits: bool) -> None:
    metric = GANScores(from_logits=from_logits)
    for d_real, d_fake in recorder.batches[20:30]:  # the last log window
        metric.update(d_real, d_fake)
    for name, value in metric.compute().items():
        assert trainer.callback_metrics[f"gan/{name}"].item() == pytest.approx(value.item(), abs=1e-6), name


def test_reading_auto_reads_a_logits_discriminator_as_logits(tmp_path, caplog):
    recorder, trainer, said, warned = run(tmp_path, sigmoid=False, from_logits="auto", caplog=caplog)
    assert said == [
        "GANMonitor: reading the discriminator's outputs as logits (some are outside [0, 1]; a sigmoid turns them "
        "into probabilities). Pass `GANMonitor(output='logit')` to say so (a Wasserstein critic or a hinge "
        "discriminator takes `output='critic'`)."
    ]
    assert warned == []
    logged_equals_metric(recorder, trainer, from_logits=True)


def test_reading_auto_reads_a_sigmoid_discriminator_as_probabilities(tmp_path, caplog):
    recorder, trainer, said, warned = run(tmp_path, sigmoid=True, from_logits="auto", caplog=caplog)
    assert said == [  # decided at the first log point (batch 10), on every batch until then
        "GANMonitor: reading the discriminator's outputs as probabilities for now (every output of batches 1-10 lay "
        "in [0, 1]); outputs outside [0, 1] later switch the reading to logits. Pass "
        "`GANMonitor(output='probability')` or `output='logit'` to say which."
    ]
    assert warned == []
    logged_equals_metric(recorder, trainer, from_logits=False)


def test_reading_true_on_a_logits_discriminator_is_silent_and_right(tmp_path, caplog):
    recorder, trainer, said, warned = run(tmp_path, sigmoid=False, from_logits=True, caplog=caplog)
    assert said == [] and warned == []
    logged_equals_metric(recorder, trainer, from_logits=True)


def test_reading_true_on_a_sigmoid_discriminator_warns_of_a_double_sigmoid(tmp_path, caplog):
    recorder, trainer, _, warned = run(tmp_path, sigmoid=True, from_logits=True, caplog=caplog)
    assert len(warned) == 1 and warned[0].startswith(
        "GANMonitor: `output='logit'` (or `from_logits=True`), but every output of the discriminator was inside "
        "[0, 1] over the first 20 batches: they look like probabilities"
    )
    assert "a sigmoid again" in warned[0] and "Pass `output='probability'`" in warned[0]
    logged_equals_metric(recorder, trainer, from_logits=True)  # what was asked for, computed as asked


def test_reading_false_on_a_sigmoid_discriminator_is_silent_and_right(tmp_path, caplog):
    recorder, trainer, said, warned = run(tmp_path, sigmoid=True, from_logits=False, caplog=caplog)
    assert said == [] and warned == []
    logged_equals_metric(recorder, trainer, from_logits=False)


def test_reading_false_on_a_logits_discriminator_is_a_clear_error(tmp_path, caplog):
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*pass `GANMonitor\(output='logit'\)`, or leave"):
        run(tmp_path, sigmoid=False, from_logits=False, caplog=caplog)


def test_reading_auto_switches_to_logits_when_outputs_leave_0_1_and_says_so():
    said = []
    reading = Reading("auto", 20, lambda message, warning: said.append((message, warning)))
    assert reading.choose(outside=False, first=1, last=1) is None  # one batch decides nothing: held back
    assert reading.choose(outside=False, first=1, last=20) is False  # a whole window inside [0, 1]
    assert reading.choose(outside=True, first=21, last=40) is True  # the window itself is read as logits
    assert reading.choose(outside=False, first=41, last=60) is True  # and every later one
    assert [warning for _, warning in said] == [False, True]
    assert said[1][0].startswith(
        "GANMonitor: the discriminator's outputs in batches 21-40 are outside [0, 1], after batches that were all "
        "inside it: reading them as logits from batch 21 on."
    )
    restored = Reading("auto", 20, lambda *_: None)
    restored.load_state_dict(reading.state_dict())
    assert restored.choose(outside=False, first=61, last=80) is True


def test_reading_auto_revises_without_a_warning_before_anything_was_logged():
    said = []
    reading = Reading("auto", 20, lambda message, warning: said.append((message, warning)))
    assert reading.choose(outside=False, first=1, last=5, final=True, logged=False) is False  # a log point at 5
    assert reading.choose(outside=True, first=6, last=20, logged=False) is True
    assert [warning for _, warning in said] == [False, False]
    assert "nothing was logged before" in said[1][0]


@pytest.mark.slow
def test_reading_auto_decides_fifty_fresh_logit_discriminators_without_a_warning(tmp_path, caplog):
    # Lightning's example shape (logits, probed) with 50 seeds: a third of fresh logit Ds put every output of their
    # first batch inside [0, 1]; one (seed 8) keeps them there for the first window of 20 batches and leaves at
    # batch 21-25, before anything was logged: the reading is revised with an info line, no warning.
    from template_gan import TemplateGAN, digit_images_loader

    readings = []
    for seed in range(50):
        monitor = GANMonitor(verbose=False, diversity_every_n_batches=None, image_every_n_epochs=None)
        pl.seed_everything(seed)
        # Lightning's default log_every_n_steps (50), as the README's users have: nothing is logged before batch 50
        trainer = make_trainer(tmp_path, [monitor], max_steps=2 * 60, log_every_n_steps=50)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GANMonitorWarning)
            trainer.fit(TemplateGAN(), digit_images_loader(seed=seed))
        assert [str(w.message) for w in caught if issubclass(w.category, GANMonitorWarning)] == [], seed
        readings.append(monitor.reading)
    assert readings == ["logits"] * 50
