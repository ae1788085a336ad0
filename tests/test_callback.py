import contextlib
import json
import logging
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import RecordOutputs, fit_digits, make_trainer, read_events
from digits_gan import SCENARIOS, DigitsGAN, load_digits_tensor, make_dataloader
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from template_gan import TemplateGAN, digit_images_loader

from lightning_gan_monitor import (
    DiscriminatorScore,
    FailureMode,
    FakeDetectionAccuracy,
    GANMonitor,
    GANMonitorWarning,
    GANScores,
    GeneratorScore,
    RealDetectionAccuracy,
    StoppingReason,
)
from lightning_gan_monitor.config import DEFAULT_CHECK_EVERY
from lightning_gan_monitor.functional import gan_scores

# The EMA (decay 0.9) needs about 30 observations to move 96% of the way to a new regime: the most the rules can
# lag behind a regime's onset on top of `patience`.
SMOOTHING_LAG = 30


def raw_onset(recorder: RecordOutputs, holds) -> int:
    """First batch (1-based) from which the per-batch, unsmoothed condition holds on every later recorded batch."""
    flags = [holds(gan_scores(r, f, from_logits=True)) for r, f in recorder.batches]
    assert flags[-1], "the regime did not hold at the end of the run"
    onset = len(flags)
    while onset > 1 and flags[onset - 2]:
        onset -= 1
    return onset


def d_dominates(s) -> bool:
    return s["generator_score"] < 0.1 and s["discriminator_score"] > 0.9


def g_dominates(s) -> bool:
    return s["generator_score"] > 0.9


def auc(d_real, d_fake) -> float:
    """The share of (real, generated) pairs D orders correctly."""
    return (d_real.flatten().unsqueeze(1) > d_fake.flatten().unsqueeze(0)).float().mean().item()


# ---------------------------------------------------------------------------------------------- healthy runs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_callback_healthy_runs_do_not_fire(tmp_path, seed):
    monitor = GANMonitor(from_logits=True)
    _, trainer = fit_digits(tmp_path, [monitor], seed=seed, epochs=80, **SCENARIOS["healthy"])
    assert monitor.failure is None and monitor.diagnoses == []
    assert monitor.stopping_reason is StoppingReason.NOT_STOPPED
    assert trainer.current_epoch == 80  # ran to the end
    assert 0.1 < monitor.scores["generator_score"] < 0.9
    # the mode-collapse rule ran (diversity measured on G's samples of the monitor's fixed latent vectors), quiet
    assert monitor.diversity_source == "generator"
    assert monitor.diversity["diversity"] > monitor.collapse_diversity_below
    assert monitor.diversity["near_duplicates"] < monitor.collapse_near_duplicates_above


# ---------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("scenario", "failure", "holds"),
    [
        ("d-dominates", FailureMode.DISCRIMINATOR_DOMINATES, d_dominates),
        ("g-dominates", FailureMode.GENERATOR_DOMINATES, g_dominates),
    ],
)
def test_callback_dominance_fires_within_patience_of_onset_and_stops(tmp_path, scenario, failure, holds):
    patience = 50
    recorder, monitor = RecordOutputs(), GANMonitor(patience=patience, from_logits=True)
    with pytest.warns(GANMonitorWarning, match="Training stopped at batch"):
        fit_digits(tmp_path, [recorder, monitor], epochs=100, **SCENARIOS[scenario])
    assert monitor.failure is failure
    assert monitor.stopping_reason is StoppingReason.FAILURE
    assert len(recorder.batches) == monitor.stopped_batch  # training stopped on that batch
    diagnosis = monitor.diagnoses[0]
    # the rule fired at the exact batch its patience ran out; the stop comes at the next check
    assert diagnosis.held_for == patience
    assert diagnosis.batch <= monitor.stopped_batch < diagnosis.batch + DEFAULT_CHECK_EVERY
    onset = raw_onset(recorder, holds)
    if failure is FailureMode.GENERATOR_DOMINATES:  # or from the batch D began to order fakes above real samples
        flags = [auc(r, f) < 0.2 for r, f in recorder.batches]
        onset = min(onset, len(flags) - next(i for i, flag in enumerate(reversed(flags)) if not flag) + 1)
    assert patience <= diagnosis.batch - onset + 1 <= patience + SMOOTHING_LAG
    assert "What to try" in monitor.stopping_reason_message
    assert f"after {diagnosis.batch} training batches" in monitor.stopping_reason_message


def test_callback_warn_reports_and_keeps_training(tmp_path):
    recorder, monitor = RecordOutputs(), GANMonitor(patience=30, from_logits=True, on_failure="warn")
    with pytest.warns(GANMonitorWarning, match=r"Training continues \(`on_failure='warn'`\)"):
        fit_digits(tmp_path, [recorder, monitor], epochs=30, **SCENARIOS["d-dominates"])
    assert len(recorder.batches) == 150  # all of it
    assert monitor.failure is FailureMode.DISCRIMINATOR_DOMINATES
    assert monitor.stopped_batch is None  # set only when the monitor stops training
    assert monitor.diagnoses[0].batch < 150
    assert monitor.stopping_reason is StoppingReason.NOT_STOPPED
    assert len(monitor.diagnoses) == 1  # reported once while the regime lasts, not every batch


def test_callback_non_finite_stops_at_the_first_nan(tmp_path):
    nan_at = SCENARIOS["non-finite"]["nan_at_batch"]
    recorder, monitor = RecordOutputs(), GANMonitor(from_logits=True)
    with pytest.warns(GANMonitorWarning, match="Non finite"):
        fit_digits(tmp_path, [recorder, monitor], epochs=(nan_at + 50) // 5, **SCENARIOS["non-finite"])
    first_nan = next(i for i, (r, f) in enumerate(recorder.batches, 1) if not torch.isfinite(torch.cat([r, f])).all())
    assert first_nan == nan_at + 1
    assert monitor.failure is FailureMode.NON_FINITE
    assert monitor.diagnoses[0].batch == first_nan
    assert first_nan <= monitor.stopped_batch < first_nan + DEFAULT_CHECK_EVERY


def test_callback_success_stop_when_discriminator_is_at_chance(tmp_path):
    # In a balanced run the fake-detection accuracy settles near 0.5 (D no better than chance): the success rule.
    monitor = GANMonitor(
        patience=1000, from_logits=True, stop_on_convergence=True, convergence_tolerance=0.1, convergence_patience=20
    )
    fit_digits(tmp_path, [monitor], epochs=40, **SCENARIOS["healthy"])
    assert monitor.stopping_reason is StoppingReason.CONVERGED
    assert monitor.failure is None
    assert monitor.stopped_batch is not None
    assert abs(monitor.diagnoses[0].scores["fake_detection_accuracy"] - 0.5) <= 0.1
    assert monitor.stopping_reason_message.startswith("Converged after")


# ---------------------------------------------------------------------------------------------- probing


def test_callback_probes_a_module_shaped_like_lightnings_gan_example(tmp_path):
    monitor = GANMonitor(from_logits=True, probe_every_n_batches=5, log_every_n_batches=10)
    trainer = make_trainer(tmp_path, [monitor], max_epochs=3, logger=CSVLogger(tmp_path))
    pl.seed_everything(0)
    trainer.fit(TemplateGAN(), digit_images_loader())
    assert monitor.source_in_use == "probe"
    assert set(trainer.callback_metrics) >= {"gan/generator_score", "gan/discriminator_score"}
    scores = monitor.scores
    assert all(0.0 <= v <= 1.0 for name, v in scores.items() if name != "gap")


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "monitor_kwargs",
    [dict(probe_every_n_batches=1), dict(probe_every_n_batches=3, probe_batch_size=17, seed=5)],
)
def test_callback_probing_never_changes_training(tmp_path, monitor_kwargs):
    # The template GAN has batch norm in G and dropout in D: a careless probe would change both.
    results = []
    for callbacks in ([], [GANMonitor(from_logits=True, **monitor_kwargs)]):
        pl.seed_everything(0)
        model = TemplateGAN()
        make_trainer(tmp_path, callbacks, max_epochs=2).fit(model, digit_images_loader())
        results.append((weights(model), torch.get_rng_state()))
    (plain, rng_plain), (probed, rng_probed) = results
    assert plain.keys() == probed.keys()
    assert any("running_mean" in k for k in plain)
    for key in plain:
        assert torch.equal(plain[key], probed[key]), key
    assert torch.equal(rng_plain, rng_probed)


def test_callback_outputs_mode_never_changes_training(tmp_path):
    results = []
    extractor = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(16))
    monitor = GANMonitor(from_logits=True, patience=5, feature_extractor=extractor, diversity_every_n_batches=10)
    for callbacks in ([], [monitor]):
        model, _ = fit_digits(tmp_path, callbacks, epochs=10)
        results.append(weights(model))
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key
    # FID/KID (whose subsets come from the global RNG) and a feature extractor with dropout and batch norm ran
    assert monitor.diversity["diversity"] > 0
    assert extractor[2].num_batches_tracked.item() == 0


def test_callback_probe_restores_eval_mode_and_buffers(tmp_path):
    class EvalDiscriminatorGAN(TemplateGAN):
        def on_train_start(self) -> None:
            self.discriminator.eval()

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            assert not self.discriminator.training and self.generator.training

    monitor = GANMonitor(from_logits=True, probe_every_n_batches=1)
    loader = digit_images_loader()
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(EvalDiscriminatorGAN(), loader)
    assert monitor.batches_seen == len(loader)


# ---------------------------------------------------------------------------------------------- checkpoints


def test_callback_state_dict_round_trip(tmp_path):
    monitor = GANMonitor(patience=30, from_logits=True, on_failure="warn")
    with pytest.warns(GANMonitorWarning):
        fit_digits(tmp_path, [monitor], epochs=20, **SCENARIOS["d-dominates"])
    state = monitor.state_dict()
    restored = GANMonitor(patience=30, from_logits=True, on_failure="warn")
    restored.load_state_dict(state)
    assert restored.failure is monitor.failure and restored.stopped_batch == monitor.stopped_batch
    assert restored.diagnoses == monitor.diagnoses
    assert restored.tracker.state_dict() == monitor.tracker.state_dict()
    assert restored.state_dict()["batches_seen"] == 100


def test_callback_resume_mid_failure_continues_the_count(tmp_path):
    patience = 60

    def run(ckpt_path=None, max_steps=-1):
        monitor = GANMonitor(patience=patience, from_logits=True)
        pl.seed_everything(0)
        trainer = make_trainer(tmp_path, [monitor], max_epochs=40, max_steps=max_steps)
        trainer.fit(DigitsGAN(**SCENARIOS["d-dominates"]), make_dataloader(load_digits_tensor(3)), ckpt_path=ckpt_path)
        return monitor, trainer

    with pytest.warns(GANMonitorWarning):
        uninterrupted, _ = run()
    # The frozen generator takes no optimizer steps: global steps are batches here.
    interrupted, trainer = run(max_steps=uninterrupted.stopped_batch - 20)
    held = list(interrupted.tracker.held)
    assert interrupted.failure is None and max(held) >= 20  # stopped mid-way through the failure condition
    trainer.save_checkpoint(tmp_path / "mid.ckpt")

    with pytest.warns(GANMonitorWarning):
        resumed, _ = run(ckpt_path=tmp_path / "mid.ckpt")
    assert resumed.failure is FailureMode.DISCRIMINATOR_DOMINATES
    assert resumed.stopped_batch == uninterrupted.stopped_batch
    assert resumed.diagnoses[0].held_for == uninterrupted.diagnoses[0].held_for


def test_callback_checkpoint_from_other_thresholds_loads_with_a_warning():
    old = GANMonitor(g_dominates_generator_above=0.9)
    state = old.state_dict()
    new = GANMonitor(g_dominates_generator_above=0.8)
    assert new.state_key == old.state_key
    with pytest.warns(GANMonitorWarning, match=r"g_dominates_generator_above: 0\.9 -> 0\.8"):
        new.load_state_dict(state)


def test_callback_older_checkpoint_without_keys_still_loads():
    monitor = GANMonitor()
    monitor.load_state_dict({"batches_seen": 12})
    assert monitor.state_dict()["batches_seen"] == 12 and monitor.failure is None


# ---------------------------------------------------------------------------------------------- logging


def test_callback_logs_scores_to_every_logger_and_callback_metrics(tmp_path):
    recorder = RecordOutputs()
    monitor = GANMonitor(from_logits=True, log_every_n_batches=10)
    logger = CSVLogger(tmp_path, name="csv")
    with pytest.warns(GANMonitorWarning, match="TensorBoard only"):
        _, trainer = fit_digits(tmp_path, [recorder, monitor], epochs=6, trainer_kwargs=dict(logger=logger))
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    gan_rows = [dict(zip(header, r.split(","))) for r in rows[1:] if r.split(",")[header.index("gan/generator_score")]]
    assert [int(r["step"]) for r in gan_rows] == [9, 19, 29]
    # Each logged value is the score over the batches since the previous log.
    last = recorder.batches[20:30]
    expected = gan_scores(torch.cat([r for r, _ in last]), torch.cat([f for _, f in last]), from_logits=True)
    for name, value in expected.items():
        assert float(gan_rows[-1][f"gan/{name}"]) == pytest.approx(value.item(), abs=1e-5)
        assert trainer.callback_metrics[f"gan/{name}"].item() == pytest.approx(value.item(), abs=1e-6)
    # and it is what the public Metrics compute, fed the same outputs batch by batch
    metrics = {
        "generator_score": (GeneratorScore(from_logits=True), lambda m, r, f: m.update(f)),
        "discriminator_score": (DiscriminatorScore(from_logits=True), lambda m, r, f: m.update(r, f)),
        "fake_detection_accuracy": (FakeDetectionAccuracy(from_logits=True), lambda m, r, f: m.update(f)),
        "real_detection_accuracy": (RealDetectionAccuracy(from_logits=True), lambda m, r, f: m.update(r)),
    }
    together = GANScores(from_logits=True)
    for d_real, d_fake in last:
        together.update(d_real, d_fake)
        for metric, update in metrics.values():
            update(metric, d_real, d_fake)
    for name, (metric, _) in metrics.items():
        logged = trainer.callback_metrics[f"gan/{name}"].item()
        assert logged == pytest.approx(metric.compute().item(), abs=1e-6) == together.compute()[name].item()


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(patience=-3), "`patience` must be a positive integer, got -3"),
        (dict(patience=2.5), "`patience` must be a positive integer, got 2.5"),
        (dict(from_logits="yes"), "`from_logits` must be True, False or 'auto', got 'yes'"),
        (dict(on_failure="raise"), "`on_failure` must be one of 'stop', 'warn', got 'raise'"),
        (dict(source="magic"), "`source` must be one of 'auto', 'outputs', 'probe'"),
        (dict(d_real_key=""), "`d_real_key` must be a non-empty string"),
        (dict(d_real_key="d", d_fake_key="d"), "`d_real_key` and `d_fake_key` must differ"),
        (dict(probe_every_n_batches=0), "`probe_every_n_batches` must be a positive integer"),
        (dict(probe_batch_size=0), "`probe_batch_size` must be a positive integer or None"),
        (dict(generator_attr="my gen"), "`generator_attr` must be an attribute name"),
        (dict(latent_dim=[100, 0]), r"`latent_dim` must be a positive integer or a list of them"),
        (dict(real_key=1.5), "`real_key` must be an int index or a string key"),
        (dict(seed="0"), "`seed` must be an integer"),
        (dict(smoothing=1.0), r"`smoothing` must be a number in \[0, 1\), got 1.0"),
        (dict(d_dominates_generator_below=1.2), r"`d_dominates_generator_below` must be a number in \[0, 1\]"),
        (dict(d_dominates_discriminator_above=-0.1), r"`d_dominates_discriminator_above` must be a number in"),
        (dict(g_dominates_generator_above=2), r"`g_dominates_generator_above` must be a number in \[0, 1\]"),
        (
            dict(d_dominates_generator_below=0.6, g_dominates_generator_above=0.5),
            "`d_dominates_generator_below` must be lower than `g_dominates_generator_above`",
        ),
        (dict(non_finite_patience=0), "`non_finite_patience` must be a positive integer"),
        (dict(convergence_tolerance=0.7), r"`convergence_tolerance` must be a number in \(0, 0.5\]"),
        (dict(convergence_tolerance=0), r"`convergence_tolerance` must be a number in \(0, 0.5\]"),
        (dict(convergence_patience=-1), "`convergence_patience` must be a positive integer or None"),
        (dict(check_every_n_batches=0), "`check_every_n_batches` must be a positive integer or None"),
        (dict(log_every_n_batches=0), "`log_every_n_batches` must be a positive integer or None"),
        (dict(fake_key=""), "`fake_key` must be a non-empty string"),
        (dict(fake_key="d_fake"), "`fake_key` must differ from `d_real_key` and `d_fake_key`"),
        (dict(feature_extractor="inception"), "`feature_extractor` must be an nn.Module or a callable"),
        (dict(diversity_every_n_batches=0), "`diversity_every_n_batches` must be a positive integer or None"),
        (dict(diversity_samples=1), "`diversity_samples` must be an integer >= 2, got 1"),
        (dict(real_reservoir_size=5), r"`real_reservoir_size` must be an integer above `nearest_k` \(5\), got 5"),
        (dict(nearest_k=0), "`nearest_k` must be a positive integer, got 0"),
        (dict(near_duplicate_factor=0), "`near_duplicate_factor` must be a positive number, got 0"),
        (dict(near_duplicate_factor=-1), r"`near_duplicate_factor` must be a number >= 0, got -1"),
        (dict(collapse_diversity_below=-0.1), "`collapse_diversity_below` must be a number >= 0 or None"),
        (dict(collapse_near_duplicates_above=1.5), r"`collapse_near_duplicates_above` must be a number in \[0, 1\]"),
        (dict(collapse_coverage_below="low"), r"`collapse_coverage_below` must be a number in \[0, 1\] or None"),
        (dict(collapse_patience=0), "`collapse_patience` must be a positive integer, got 0"),
        (dict(image_every_n_epochs=0), "`image_every_n_epochs` must be a positive integer or None"),
        (dict(image_shape=[2, 8, 8]), r"`image_shape` must be \[C, H, W\] with C in 1, 3, 4"),
        (dict(image_shape=[64]), r"`image_shape` must be \[C, H, W\]"),
        (dict(num_image_samples=0), "`num_image_samples` must be a positive integer"),
        (dict(image_range=(1, -1)), r"`image_range` must be \(low, high\) with low < high, or None"),
    ],
)
def test_callback_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GANMonitor(**kwargs)


class NoLatentGAN(TemplateGAN):
    """Returns nothing and hides its latent size: neither source works."""

    def __init__(self) -> None:
        super().__init__()
        del self.hparams["latent_dim"]
        self.latent = 16

    def training_step(self, batch):
        self.hparams.latent_dim = self.latent
        try:
            return super().training_step(batch)
        finally:
            del self.hparams["latent_dim"]


class ReturnsGAN(DigitsGAN):
    """Returns whatever `make_output(d_real, d_fake)` builds from the D outputs of the step."""

    def __init__(self, make_output, **kwargs) -> None:
        super().__init__(**kwargs)
        self.make_output = make_output

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        return self.make_output(out["d_real"], out["d_fake"])


def fit_and_expect(tmp_path, model, monitor, loader, error, match):
    with pytest.raises(error, match=match):
        make_trainer(tmp_path, [monitor], max_epochs=2).fit(model, loader)


def test_callback_no_source_of_outputs_raises_on_the_first_batch(tmp_path):
    fit_and_expect(
        tmp_path,
        NoLatentGAN(),
        GANMonitor(from_logits=True),
        digit_images_loader(),
        ValueError,
        r"cannot find the discriminator's outputs: `training_step` returned nothing\. Return a dict with 'd_real' "
        r"and 'd_fake'.*or let it probe: the latent size is unknown; pass `GANMonitor\(latent_dim=...\)`",
    )


def test_callback_source_probe_without_generator_raises_at_fit_start(tmp_path):
    fit_and_expect(
        tmp_path,
        TemplateGAN(),
        GANMonitor(source="probe", generator_attr="netG"),
        digit_images_loader(),
        ValueError,
        r"cannot probe: the module has no callable `netG` attribute; set `GANMonitor\(generator_attr",
    )


def test_callback_source_outputs_names_the_keys_it_got(tmp_path):
    fit_and_expect(
        tmp_path,
        ReturnsGAN(lambda r, f: {"real": r, "fake": f}),
        GANMonitor(source="outputs", from_logits=True),
        make_dataloader(load_digits_tensor(3)),
        ValueError,
        r"returned a mapping with keys \['fake', 'real'\].*set `GANMonitor\(d_real_key=..., d_fake_key=...\)`",
    )


def test_callback_probabilities_out_of_range_say_to_pass_from_logits(tmp_path):
    fit_and_expect(
        tmp_path,
        ReturnsGAN(lambda r, f: {"d_real": r * 10, "d_fake": f * 10}),
        GANMonitor(from_logits=False),
        make_dataloader(load_digits_tensor(3)),
        ValueError,
        r"outside \[0, 1\].*pass `GANMonitor\(output='logit'\)`.*`GANMonitor\(output='critic'\)`",
    )


def test_callback_non_tensor_outputs_raise(tmp_path):
    fit_and_expect(
        tmp_path,
        ReturnsGAN(lambda r, f: {"d_real": r.tolist(), "d_fake": f}),
        GANMonitor(from_logits=True),
        make_dataloader(load_digits_tensor(3)),
        TypeError,
        "expected `training_step`'s output 'd_real' to be a tensor of discriminator outputs, got list",
    )


def test_callback_outputs_that_stop_coming_turn_the_scores_off_with_one_warning(tmp_path):
    model = ReturnsGAN(None)
    model.make_output = lambda r, f: {"d_real": r, "d_fake": f} if model.batches_trained < 3 else {"loss": r.mean()}
    monitor = GANMonitor(from_logits=True)
    with pytest.warns(GANMonitorWarning) as record:
        make_trainer(tmp_path, [monitor], max_epochs=4).fit(model, make_dataloader(load_digits_tensor(3)))
    said = [str(w.message) for w in record if "failed at batch" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(
        "GANMonitor: finding the discriminator's outputs failed at batch 3, so it is off for the rest of this fit "
        "(no scores and no failure rule from here on); training goes on."
    )
    assert r"(as it did on the first batch), got keys ['loss']" in said[0] and "resume from a checkpoint" in said[0]
    assert model.batches_trained == 20 and monitor.source_in_use == "off"  # trained to its end


def test_callback_wrong_real_key_raises(tmp_path):
    fit_and_expect(
        tmp_path,
        TemplateGAN(),
        GANMonitor(from_logits=True, real_key=2),
        digit_images_loader(),
        ValueError,
        r"cannot find the real samples in the batch \(a list of length 2\) with `real_key=2`",
    )


def test_callback_generator_that_raises_during_a_probe(tmp_path):
    fit_and_expect(
        tmp_path,
        TemplateGAN(),
        GANMonitor(from_logits=True, latent_dim=[4, 4]),
        digit_images_loader(),
        RuntimeError,
        r"probe failed calling `pl_module.generator` on latent vectors of shape \(64, 4, 4\).*latent_dim",
    )


# ---------------------------------------------------------------------------------------------- mode collapse

#: The mode-collapse rule's patience alone: no "at once" (these tests count its checks).
PATIENCE_ONLY = {"collapse_at_once_diversity_below": None}


def test_callback_mode_collapse_fires_on_a_generator_that_ignores_its_noise(tmp_path):
    # The step returns no generated samples here: the monitor runs the generator on its own latent vectors.
    # Unambiguous (diversity 0, every sample a near-duplicate): it fires at the first check, after 100 updates.
    monitor = GANMonitor(from_logits=True, log_every_n_batches=10)
    with pytest.warns(GANMonitorWarning, match="Mode collapse after 100 training batches"):
        model, trainer = fit_digits(
            tmp_path, [monitor], epochs=100, return_d_outputs=False, **SCENARIOS["mode-collapse"]
        )
    assert monitor.diversity_source == "generator"
    assert monitor.failure is FailureMode.MODE_COLLAPSE
    assert monitor.stopping_reason is StoppingReason.FAILURE
    assert model.batches_trained == monitor.stopped_batch == 100
    (diagnosis,) = monitor.diagnoses
    assert diagnosis.held_for == 1 and diagnosis.onset_batch == 100
    assert "far beyond any healthy run, at the latest diversity check (now diversity 0.000" in diagnosis.message
    assert diagnosis.scores["diversity"] == 0.0 and diagnosis.scores["near_duplicates"] == 1.0
    message = monitor.stopping_reason_message
    for remedy in ("larger latent input", "generator capacity", "label flipping", "packing", "unrolled"):
        assert remedy in message
    assert trainer.callback_metrics["gan/near_duplicates"].item() == 1.0


def test_callback_mode_collapse_warns_once_per_stretch_and_can_be_turned_off(tmp_path):
    monitor = GANMonitor(
        from_logits=True, on_failure="warn", diversity_every_n_batches=10, collapse_patience=2, **PATIENCE_ONLY
    )
    with pytest.warns(GANMonitorWarning, match="Training continues"):
        fit_digits(tmp_path, [monitor], epochs=20, **SCENARIOS["mode-collapse"])
    assert [d.batch for d in monitor.diagnoses] == [20]  # then latched while the collapse lasts
    off = GANMonitor(from_logits=True, diversity_every_n_batches=None, image_every_n_epochs=None)
    fit_digits(tmp_path, [off], epochs=20, **SCENARIOS["mode-collapse"])
    assert off.failure is None and off.diversity_source == "off"


def test_callback_best_generator_by_coverage_with_lightnings_model_checkpoint(tmp_path):
    class CoverageAtEpochEnd(pl.Callback):
        def __init__(self) -> None:
            self.seen: list[float] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if "gan/coverage" in trainer.callback_metrics:
                self.seen.append(trainer.callback_metrics["gan/coverage"].item())

    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="gan/coverage", mode="max", save_top_k=1, every_n_epochs=5
    )
    seen = CoverageAtEpochEnd()
    monitor = GANMonitor(from_logits=True, diversity_every_n_batches=25, image_every_n_epochs=None)
    fit_digits(tmp_path, [monitor, seen, checkpoint], epochs=50, trainer_kwargs=dict(enable_checkpointing=True))
    assert len(set(seen.seen)) >= 4  # coverage changed over the run (10 checks, 250 batches)
    assert checkpoint.best_model_score.item() == pytest.approx(max(seen.seen))
    best = torch.load(checkpoint.best_model_path, weights_only=False)
    assert best["callbacks"][monitor.state_key]["diversity"][3] == pytest.approx(max(seen.seen))


def test_callback_fixed_latent_batch_and_collapse_count_survive_a_resume(tmp_path):
    def run(seed, ckpt_path=None, max_steps=-1):
        monitor = GANMonitor(
            from_logits=True, seed=seed, diversity_every_n_batches=20, collapse_patience=3, **PATIENCE_ONLY
        )
        pl.seed_everything(0)
        trainer = make_trainer(tmp_path, [monitor], max_epochs=20, max_steps=max_steps)
        with pytest.warns(GANMonitorWarning) if ckpt_path else contextlib.nullcontext():
            trainer.fit(
                DigitsGAN(**SCENARIOS["mode-collapse"]), make_dataloader(load_digits_tensor(3)), ckpt_path=ckpt_path
            )
        return monitor, trainer

    first, trainer = run(seed=0, max_steps=2 * 45)  # two optimizer steps per batch: stops after batch 45
    assert first.collapse_tracker.held == 2 and first.failure is None  # collapsed at the checks of 20 and 40
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed, _ = run(seed=123, ckpt_path=tmp_path / "mid.ckpt")  # another seed would draw another latent batch
    assert torch.equal(resumed.state_dict()["fixed_latent"], first.state_dict()["fixed_latent"])
    assert resumed.failure is FailureMode.MODE_COLLAPSE and resumed.diagnoses[0].batch == 60  # the third check


def test_callback_feature_extractor_with_fid_kid_and_bad_outputs(tmp_path):
    extractor = torch.nn.Linear(64, 8)
    monitor = GANMonitor(from_logits=True, feature_extractor=extractor, diversity_every_n_batches=25)
    _, trainer = fit_digits(tmp_path, [monitor], epochs=10)
    assert {"gan/fid", "gan/kid", "gan/diversity", "gan/coverage"} <= set(trainer.callback_metrics)
    assert trainer.callback_metrics["gan/fid"].item() > 0
    # a feature extractor that cannot work is a set-up error, found at the first batch (G's first samples)
    broken = GANMonitor(from_logits=True, feature_extractor=lambda x: x.sum(), diversity_every_n_batches=5)
    match = r"`feature_extractor` must map a batch of n samples to an \(n, d\) tensor of features; on samples of shape "
    with pytest.raises(ValueError, match=match + r"\(256, 64\) it returned shape \(\)"):
        fit_digits(tmp_path, [broken], epochs=4)
    # one that fails later (at the first diversity check, batch 5): that check turns off, training goes on
    calls = []

    def fails_later(x):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("out of memory")
        return x

    later = GANMonitor(from_logits=True, feature_extractor=fails_later, diversity_every_n_batches=5)
    with pytest.warns(GANMonitorWarning, match=r"the diversity check failed at batch 5, so it is off"):
        _, trainer = fit_digits(tmp_path, [later], epochs=4)
    assert later.batches_seen == 20 and "gan/diversity" not in trainer.callback_metrics


def test_callback_flat_square_samples_are_shown_as_images_with_one_message(tmp_path, caplog):
    logger = TensorBoardLogger(tmp_path, name="tb")
    with caplog.at_level(logging.INFO):
        fit_digits(
            tmp_path,
            [GANMonitor(from_logits=True, image_every_n_epochs=1)],
            epochs=4,
            trainer_kwargs=dict(logger=logger),
        )
    said = [r.getMessage() for r in caplog.records if "grayscale images" in r.getMessage()]
    assert said == [
        "GANMonitor: showing generated samples of shape (64,) as 8x8 grayscale images; pass "
        "`GANMonitor(image_shape=[C, H, W])` to show them otherwise."
    ]
    events = read_events(logger.log_dir)
    samples = events.Images("gan/samples")
    assert [e.step for e in samples] == [5, 10, 15, 20] and len(events.Images("gan/real_samples")) == 1
    assert (samples[0].width, samples[0].height) == (8 * 8 + 9 * 2, 8 * 8 + 9 * 2)  # 8 x 8 digits, 2 px apart


def test_callback_resumes_from_a_checkpoint_written_by_version_0_1(tmp_path):
    # tests/fixtures/make_v0_1_checkpoint.py wrote it with GANMonitor 0.1 (150 batches of a healthy digits GAN)
    fixtures = Path(__file__).parent / "fixtures"
    expected = json.loads((fixtures / "monitor_v0_1.json").read_text())
    checkpoint = torch.load(fixtures / "monitor_v0_1.ckpt", weights_only=False)
    monitor = GANMonitor(from_logits=True, patience=100)
    monitor.load_state_dict(checkpoint["callbacks"][monitor.state_key])
    assert monitor.batches_seen == expected["batches_seen"] == 150
    assert {k: monitor.scores[k] for k in expected["scores"]} == pytest.approx(expected["scores"], abs=1e-7)
    assert monitor.diversity == pytest.approx(expected["diversity"], abs=1e-7)
    assert monitor.tracker.held == expected["held"]
    assert monitor.history.tags == expected["history_tags"]

    # at 0.2's defaults, the one threshold that changed is named
    with pytest.warns(GANMonitorWarning, match=r"other settings \(g_dominates_generator_above: 0\.9 -> 0\.8\)"):
        GANMonitor(from_logits=True, patience=100).load_state_dict(checkpoint["callbacks"][monitor.state_key])

    # and a resumed run with 0.1's settings carries on from there: counts continue, the smoothed scores go on
    resumed = GANMonitor(from_logits=True, patience=100, g_dominates_generator_above=0.9)
    pl.seed_everything(0)
    trainer = make_trainer(tmp_path, [resumed], max_epochs=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GANMonitorWarning)  # nothing it could not restore
        trainer.fit(
            DigitsGAN(hidden_dim=32), make_dataloader(load_digits_tensor(3)), ckpt_path=fixtures / "monitor_v0_1.ckpt"
        )
    assert resumed.batches_seen == 200 and resumed.tracker.batches == 200
    assert sum(resumed.tracker.regime_batches) == 200
    assert resumed.failure is None and resumed.summary is not None and resumed.summary.batches == 200
    batches, _ = resumed.history.series("gan/generator_score")
    # the saved log points (every 50 batches, then the end of fit), then every 10 batches of the resumed run
    assert len(batches) == expected["history_points"]["gan/generator_score"] + 5
    assert batches[-5:] == [160, 170, 180, 190, 200]


def test_callback_resumes_from_a_checkpoint_written_by_version_0_2(tmp_path):
    # tests/fixtures/make_v0_2_checkpoint.py wrote it with GANMonitor 0.2 (150 batches, diversity checks every 50)
    fixtures = Path(__file__).parent / "fixtures"
    expected = json.loads((fixtures / "monitor_v0_2.json").read_text())
    checkpoint = torch.load(fixtures / "monitor_v0_2.ckpt", weights_only=False)
    monitor = GANMonitor(patience=100, diversity_every_n_batches=50)
    assert monitor.state_key == expected["state_key"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", GANMonitorWarning)  # the same settings: nothing to warn of
        monitor.load_state_dict(checkpoint["callbacks"][monitor.state_key])
    assert monitor.batches_seen == expected["batches_seen"] == 150 and monitor.reading == "logits"
    assert {k: monitor.scores[k] for k in expected["scores"]} == pytest.approx(expected["scores"], abs=1e-7)
    assert monitor.diversity == pytest.approx(expected["diversity"], abs=1e-7)
    assert monitor.tracker.held == expected["held"] and monitor.history.tags == expected["history_tags"]
    # a resumed run carries on from there
    resumed = GANMonitor(patience=100, diversity_every_n_batches=50)
    pl.seed_everything(0)
    trainer = make_trainer(tmp_path, [resumed], max_epochs=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GANMonitorWarning)
        trainer.fit(
            DigitsGAN(hidden_dim=32), make_dataloader(load_digits_tensor(3)), ckpt_path=fixtures / "monitor_v0_2.ckpt"
        )
    assert resumed.batches_seen == 200 and resumed.tracker.batches == 200 and resumed.failure is None
    batches, _ = resumed.history.series("gan/diversity")
    assert len(batches) == expected["history_points"]["gan/diversity"] + 1 and batches[-1] == 200


class LogsNaNLoss(DigitsGAN):
    """Logs (but does not return) a NaN loss on one batch: only `trainer.callback_metrics` shows it."""

    def __init__(self, at_batch: int) -> None:
        super().__init__()
        self.at_batch = at_batch

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("extra_loss", float("nan") if self.batches_trained == self.at_batch else 0.5)
        return out


def test_callback_nan_loss_logged_with_self_log_is_dated_to_its_batch(tmp_path):
    monitor = GANMonitor(from_logits=True, log_every_n_batches=10)
    with pytest.warns(GANMonitorWarning, match="Non finite after 30 training batches"):
        fit_digits_model(tmp_path, monitor, LogsNaNLoss(at_batch=30), epochs=20)
    assert monitor.failure is FailureMode.NON_FINITE
    assert monitor.diagnoses[0].batch == monitor.stopped_batch == 30  # the batch that logged it, a log point


def fit_digits_model(tmp_path, monitor, model, epochs):
    pl.seed_everything(0)
    make_trainer(tmp_path, [monitor], max_epochs=epochs).fit(model, make_dataloader(load_digits_tensor(3)))


def test_callback_a_dict_without_the_keys_warns_names_them_and_probes(tmp_path):
    model = ReturnsGAN(lambda r, f: {"real_logits": r, "fake_logits": f})
    monitor = GANMonitor(from_logits=True)
    with pytest.warns(GANMonitorWarning) as record:
        make_trainer(tmp_path, [monitor], max_epochs=2).fit(model, make_dataloader(load_digits_tensor(3)))
    said = [str(w.message) for w in record if "without 'd_real'" in str(w.message)]
    assert said == [
        "GANMonitor: `training_step` returned a dict with keys ['fake_logits', 'real_logits'], without 'd_real' and "
        "'d_fake' (D's outputs on the real and the generated batch). If two of those keys hold them, set "
        "`GANMonitor(d_real_key=..., d_fake_key=...)`; until then the monitor probes `generator` and "
        "`discriminator` itself, every 10 batches."
    ]
    assert monitor.source_in_use == "probe"
    # the loss alone (what Lightning makes of `return loss`) is no reason to warn
    quiet = GANMonitor(from_logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GANMonitorWarning)
        model = ReturnsGAN(lambda r, f: {"loss": torch.tensor(0.0)})
        make_trainer(tmp_path, [quiet], max_epochs=1).fit(model, make_dataloader(load_digits_tensor(3)))
