import pytest
import pytorch_lightning as pl
import torch
from conftest import RecordOutputs, fit_digits, make_trainer
from digits_gan import SCENARIOS, DigitsGAN, load_digits_tensor, make_dataloader
from pytorch_lightning.loggers import CSVLogger
from template_gan import TemplateGAN, digit_images_loader

from lightning_gan_monitor import FailureMode, GANMonitor, GANMonitorWarning, StoppingReason
from lightning_gan_monitor.callback import DEFAULT_CHECK_EVERY
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


# ---------------------------------------------------------------------------------------------- healthy runs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_callback_healthy_runs_do_not_fire(tmp_path, seed):
    monitor = GANMonitor(from_logits=True)
    _, trainer = fit_digits(tmp_path, [monitor], seed=seed, epochs=80, **SCENARIOS["healthy"])
    assert monitor.failure is None and monitor.diagnoses == []
    assert monitor.stopping_reason is StoppingReason.NOT_STOPPED
    assert trainer.current_epoch == 80  # ran to the end
    assert 0.1 < monitor.scores["generator_score"] < 0.9


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
    with pytest.warns(GANMonitorWarning, match="Stopping training"):
        fit_digits(tmp_path, [recorder, monitor], epochs=100, **SCENARIOS[scenario])
    assert monitor.failure is failure
    assert monitor.stopping_reason is StoppingReason.FAILURE
    assert len(recorder.batches) == monitor.stopped_batch  # training stopped on that batch
    diagnosis = monitor.diagnoses[0]
    # the rule fired at the exact batch its patience ran out; the stop comes at the next check
    assert diagnosis.held_for == patience
    assert diagnosis.batch <= monitor.stopped_batch < diagnosis.batch + DEFAULT_CHECK_EVERY
    onset = raw_onset(recorder, holds)
    assert patience <= diagnosis.batch - onset + 1 <= patience + SMOOTHING_LAG
    assert "What to try" in monitor.stopping_reason_message
    assert f"after {diagnosis.batch} training batches" in monitor.stopping_reason_message


def test_callback_warn_reports_and_keeps_training(tmp_path):
    recorder, monitor = RecordOutputs(), GANMonitor(patience=30, from_logits=True, on_failure="warn")
    with pytest.warns(GANMonitorWarning, match=r"Training continues \(`on_failure='warn'`\)"):
        fit_digits(tmp_path, [recorder, monitor], epochs=30, **SCENARIOS["d-dominates"])
    assert len(recorder.batches) == 150  # all of it
    assert monitor.failure is FailureMode.DISCRIMINATOR_DOMINATES
    assert monitor.stopped_batch is not None and monitor.stopped_batch < 150
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
    assert monitor._resolved_source == "probe"
    assert set(trainer.callback_metrics) >= {"gan/generator_score", "gan/discriminator_score"}
    scores = monitor.scores
    assert all(0.0 <= v <= 1.0 for v in scores.values())


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
    for callbacks in ([], [GANMonitor(from_logits=True, patience=5)]):
        model, _ = fit_digits(tmp_path, callbacks, epochs=10)
        results.append(weights(model))
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


def test_callback_probe_restores_eval_mode_and_buffers(tmp_path):
    class EvalDiscriminatorGAN(TemplateGAN):
        def on_train_start(self) -> None:
            self.discriminator.eval()

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            assert not self.discriminator.training and self.generator.training

    monitor = GANMonitor(from_logits=True, probe_every_n_batches=1)
    loader = digit_images_loader()
    make_trainer(tmp_path, [monitor], max_epochs=1).fit(EvalDiscriminatorGAN(), loader)
    assert monitor._batches_seen == len(loader)


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
    for name, value in monitor._detector.state_dict().items():
        assert torch.equal(restored._detector.state_dict()[name], value), name
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
    held = interrupted._detector.held.clone()
    assert interrupted.failure is None and held.max() >= 20  # stopped mid-way through the failure condition
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


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(patience=-3), "`patience` must be a positive integer, got -3"),
        (dict(patience=2.5), "`patience` must be a positive integer, got 2.5"),
        (dict(from_logits="yes"), "`from_logits` must be True or False"),
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
        r"and 'd_fake'.*or let it probe the module: the latent size is unknown; pass `GANMonitor\(latent_dim=...\)`",
    )


def test_callback_source_probe_without_generator_raises_at_fit_start(tmp_path):
    fit_and_expect(
        tmp_path,
        TemplateGAN(),
        GANMonitor(source="probe", generator_attr="netG"),
        digit_images_loader(),
        ValueError,
        r"cannot probe this module: the module has no callable `netG` attribute; set `GANMonitor\(generator_attr",
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
        GANMonitor(),
        make_dataloader(load_digits_tensor(3)),
        ValueError,
        r"outside \[0, 1\].*pass `GANMonitor\(from_logits=True\)`",
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


def test_callback_outputs_that_stop_coming_raise(tmp_path):
    model = ReturnsGAN(None)
    model.make_output = lambda r, f: {"d_real": r, "d_fake": f} if model.batches_trained < 3 else {"loss": r.mean()}
    fit_and_expect(
        tmp_path,
        model,
        GANMonitor(from_logits=True),
        make_dataloader(load_digits_tensor(3)),
        ValueError,
        r"\(as it did on the first batch\), got keys \['loss'\]",
    )


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
