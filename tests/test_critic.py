"""Critics: a WGAN-GP and a hinge GAN (tests/critic_gans.py) watched with `output="critic"`, trained for real.

Healthy runs raise no alarm; a critic that dominates (the generator frozen) and a critic that is fooled (the critic
frozen) are named; what is logged is the rank statistics of D's outputs, exactly, and never the sigmoid scores.
"""

import logging

import pytest
import pytorch_lightning as pl
import torch
from conftest import RecordOutputs, fit_digits, make_trainer, read_events
from critic_gans import CriticGAN
from digits_gan import SCENARIOS, load_digits_tensor, make_dataloader
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_gan_monitor import FailureMode, GANMonitor, GANRankScores
from lightning_gan_monitor.functional import RANK_NAMES, SCORE_NAMES
from lightning_gan_monitor.report import plot_run

BATCHES_PER_EPOCH = 28  # all 1,797 digits in batches of 64


def fit_critic(tmp_path, loss: str, batches: int, seed: int = 0, record: bool = False, monitor_kwargs=None, **gan):
    """Train for `batches` (whole epochs of 28 batches) with a monitor reading D as a critic."""
    assert batches % BATCHES_PER_EPOCH == 0
    monitor = GANMonitor(**{"output": "critic", "log_every_n_batches": 56, **(monitor_kwargs or {})})
    recorder = RecordOutputs()
    pl.seed_everything(seed, verbose=False)
    logger = TensorBoardLogger(tmp_path, name="critic")
    callbacks = [recorder, monitor] if record else [monitor]
    trainer = make_trainer(tmp_path, callbacks, max_epochs=batches // BATCHES_PER_EPOCH, logger=logger)
    trainer.fit(CriticGAN(loss, **gan), make_dataloader(load_digits_tensor(None), batch_size=64, seed=seed))
    return monitor, recorder, logger


@pytest.mark.parametrize("loss", ["wgan-gp", "hinge"])
def test_critic_healthy_runs_raise_no_alarm(tmp_path, loss):
    monitor, _, logger = fit_critic(tmp_path, loss, batches=1120)
    assert monitor.diagnoses == [] and monitor.stopped_batch is None
    assert monitor.batches_seen == 1120
    # Five critic steps per generator step: the generator has had a fifth of the updates, so the mode-collapse rule
    # (whose patience a generator stepped every batch meets at batch 300) waits; its early samples are still blurry
    # (the diversity checks found them collapsed from batch 100 on), and the rule no longer stops it at batch 300.
    updates = 40 * 6 if loss == "wgan-gp" else 1120  # G steps at batches 0, 5, ..., 25 of each 28-batch epoch
    assert monitor.generator_updates == updates
    # the summary names the updates where they differ from the batches
    assert (f"({updates} generator updates)" in str(monitor.summary)) == (loss == "wgan-gp")
    events = read_events(logger.log_dir)
    tags = set(events.Tags()["scalars"])
    assert {f"gan/{name}" for name in RANK_NAMES} <= tags
    assert not {f"gan/{name}" for name in SCORE_NAMES} & tags  # a sigmoid of a critic's score means nothing


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("loss", ["wgan-gp", "hinge"])
def test_critic_healthy_runs_of_more_seeds_raise_no_alarm(tmp_path, loss, seed):
    monitor, _, _ = fit_critic(tmp_path, loss, batches=1120, seed=seed)
    assert monitor.diagnoses == []


@pytest.mark.parametrize("loss", ["wgan-gp", "hinge"])
def test_critic_dominating_is_named_and_stopped(tmp_path, loss):
    monitor, _, logger = fit_critic(tmp_path, loss, batches=1120, freeze_generator=True)
    assert monitor.failure is FailureMode.DISCRIMINATOR_DOMINATES
    diagnosis = monitor.diagnoses[0]
    assert 500 <= diagnosis.batch <= 800 and monitor.stopped_batch is not None
    assert "critic has ordered more than 0.99" in diagnosis.message and "not catching up" in diagnosis.message
    assert diagnosis.scores["auc"] > 0.99
    assert "the generator is not learning" in diagnosis.message and "`n_critic`" in diagnosis.message
    assert "label" not in diagnosis.message and "gradients vanish" not in diagnosis.message  # advice for BCE
    # the report draws a critic's run by its AUC, with the critic's bands and the diagnosis marked
    figure = plot_run(logger.log_dir)
    (scores,) = [ax for ax in figure.axes if any(line.get_gid() == "gan/auc" for line in ax.lines)]
    assert any(line.get_gid() == "diagnosis" for line in scores.lines)
    assert "critic dominates: AUC > 0.99" in scores.get_legend().get_texts()[0].get_text()


@pytest.mark.parametrize("loss", ["wgan-gp", "hinge"])
def test_critic_fooled_is_named_generator_dominates(tmp_path, loss):
    monitor, _, _ = fit_critic(tmp_path, loss, batches=840, freeze_critic=True)
    assert monitor.failure is FailureMode.GENERATOR_DOMINATES
    assert monitor.diagnoses[0].scores["auc"] < 0.2
    assert "scores generated samples above real ones" in monitor.diagnoses[0].message


def test_critic_logged_values_are_the_rank_statistics_of_the_outputs(tmp_path):
    _, recorder, logger = fit_critic(tmp_path, "wgan-gp", batches=112, record=True)
    events = read_events(logger.log_dir)
    for name in RANK_NAMES:
        logged = {e.step: e.value for e in events.Scalars(f"gan/{name}")}
        metric = GANRankScores()
        for d_real, d_fake in recorder.batches[56:112]:  # the second log window
            metric.update(d_real, d_fake)
        assert logged[111] == pytest.approx(metric.compute()[name].item(), rel=1e-5, abs=1e-5), name


def test_critic_read_as_logits_says_how_to_read_a_critic(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        fit_critic(tmp_path, "wgan-gp", batches=56, monitor_kwargs={"output": "auto"})
    said = " ".join(r.getMessage() for r in caplog.records if "reading the discriminator" in r.getMessage())
    assert "as logits" in said and "a Wasserstein critic or a hinge discriminator takes `output='critic'`" in said


@pytest.mark.parametrize("output", ["auto", "logit"])
def test_critic_a_dominance_read_from_guessed_logits_says_a_critic_is_read_otherwise(tmp_path, output):
    # the digits GAN's D gives logits: guessed with "auto", the diagnosis says what a critic would need; given, not
    monitor = GANMonitor(output=output, on_failure="warn", verbose=False)
    fit_digits(tmp_path, [monitor], epochs=60, **SCENARIOS["g-dominates"])
    (diagnosis,) = [d for d in monitor.diagnoses if d.failure is FailureMode.GENERATOR_DOMINATES]
    caveat = "D's outputs were read as logits, as `output='auto'` guessed from outputs outside [0, 1]: pass "
    assert (caveat + "`output='logit'` to confirm it, and this note goes away" in diagnosis.message) == (
        output == "auto"
    )


def test_critic_output_and_from_logits_must_agree():
    with pytest.raises(ValueError, match="`output='critic'` and `from_logits=True` disagree"):
        GANMonitor(output="critic", from_logits=True)
    assert GANMonitor(output="logit", from_logits=True).config.reading == "logit"
    with pytest.raises(ValueError, match="`output` must be one of"):
        GANMonitor(output="wasserstein")


def test_rank_scores_metric_pairs_within_each_batch():
    metric = GANRankScores()
    metric.update(torch.tensor([3.0, 1.0]), torch.tensor([0.0, 1.0, 5.0]))
    metric.update(torch.tensor([2.0]), torch.tensor([1.0]))
    values = metric.compute()
    assert values["auc"].item() == pytest.approx((3.5 + 1) / (6 + 1))
    assert values["gap"].item() == pytest.approx(2.0 - 7.0 / 4)


def test_rank_values_of_a_bce_discriminator_are_logged_beside_its_scores(tmp_path):
    from conftest import fit_digits

    recorder, monitor = RecordOutputs(), GANMonitor(rank_values=True, log_every_n_batches=10)
    _, trainer = fit_digits(tmp_path, [recorder, monitor], epochs=4)  # 20 batches, logits
    metric = GANRankScores()
    for d_real, d_fake in recorder.batches[10:20]:
        metric.update(d_real, d_fake)
    for name in (*SCORE_NAMES, *RANK_NAMES):
        assert f"gan/{name}" in trainer.callback_metrics, name
    for name, value in metric.compute().items():
        assert trainer.callback_metrics[f"gan/{name}"].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-5)
    assert set(monitor.scores) == {*SCORE_NAMES, *RANK_NAMES}
    assert set(GANMonitor().scores) == set(SCORE_NAMES)  # off by default for a D that is not a critic
