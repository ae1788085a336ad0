"""Both Lightning packages: each gets a ``GANMonitor`` that is a true ``Callback`` of its own, one implementation.

Representative integration tests run with ``pytorch_lightning`` and with ``lightning`` (the example models compiled
for each, see ``tests/packages.py``); one subprocess per package shows the other package is never needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import read_events
from packages import PACKAGES, ROOT, example, make_trainer, monitor_class, pl

from lightning_gan_monitor import FailureMode, GANMonitorWarning, StoppingReason
from lightning_gan_monitor.callback import GANMonitorBase


def test_packages_each_monitor_is_a_callback_of_its_package_only():
    import lightning.pytorch
    import pytorch_lightning

    from lightning_gan_monitor import GANMonitor
    from lightning_gan_monitor.lightning import GANMonitor as LightningGANMonitor
    from lightning_gan_monitor.pytorch_lightning import GANMonitor as PyTorchLightningGANMonitor

    assert GANMonitor is PyTorchLightningGANMonitor  # the 0.1 name
    assert issubclass(GANMonitor, pytorch_lightning.Callback) and not issubclass(GANMonitor, lightning.pytorch.Callback)
    assert issubclass(LightningGANMonitor, lightning.pytorch.Callback)
    assert not issubclass(LightningGANMonitor, pytorch_lightning.Callback)
    assert issubclass(GANMonitor, GANMonitorBase) and issubclass(LightningGANMonitor, GANMonitorBase)
    # the same state key, so a checkpoint written with one package resumes with the other
    assert GANMonitor(patience=5).state_key == LightningGANMonitor(patience=7).state_key
    with pytest.raises(ValueError, match="`patience` must be a positive integer, got -3"):
        LightningGANMonitor(patience=-3)


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_failure_stops_logs_to_tensorboard_and_checkpoints(tmp_path, package):
    digits = example("digits_gan", package)
    loggers = pl(package).loggers
    monitor = monitor_class(package)(patience=30, from_logits=True, log_every_n_batches=10)
    logger = loggers.TensorBoardLogger(tmp_path, name="tb")
    pl(package).seed_everything(0)
    model = digits.DigitsGAN(**digits.SCENARIOS["d-dominates"])
    trainer = make_trainer(package, tmp_path, [monitor], max_epochs=40, logger=logger)
    with pytest.warns(GANMonitorWarning, match="Training stopped at batch") as record:
        trainer.fit(model, digits.make_dataloader(digits.load_digits_tensor(3)))
    assert not [w for w in record if "TensorBoard only" in str(w.message)]  # the package's logger is recognised
    assert monitor.failure is FailureMode.DISCRIMINATOR_DOMINATES
    assert monitor.stopping_reason is StoppingReason.FAILURE
    assert model.batches_trained == monitor.stopped_batch < 200

    events = read_events(logger.log_dir)
    assert "gan/generator_score" in events.Tags()["scalars"]
    assert {"custom_scalars__config__", "gan/diagnosis/text_summary"} <= set(events.Tags()["tensors"])
    (diagnosis,) = events.Tensors("gan/diagnosis/text_summary")
    assert diagnosis.tensor_proto.string_val[0].decode().startswith("Discriminator dominates after")

    trainer.save_checkpoint(tmp_path / "run.ckpt")
    state = torch.load(tmp_path / "run.ckpt", weights_only=False)["callbacks"][monitor.state_key]
    other = monitor_class(next(p for p in PACKAGES if p != package))(patience=30, from_logits=True)
    other.load_state_dict(state)
    assert other.failure is monitor.failure and other.diagnoses == monitor.diagnoses


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_probing_never_changes_training(tmp_path, package):
    digits = example("digits_gan", package)
    results, monitor = [], monitor_class(package)(from_logits=True, probe_every_n_batches=1, check_every_n_batches=7)
    for callbacks in ([], [monitor]):
        pl(package).seed_everything(0)
        model = digits.DigitsGAN(return_d_outputs=False)
        trainer = make_trainer(package, tmp_path, callbacks, max_epochs=4)
        trainer.fit(model, digits.make_dataloader(digits.load_digits_tensor(3)))
        results.append(({k: v.clone() for k, v in model.state_dict().items()}, torch.get_rng_state()))
    (plain, rng_plain), (probed, rng_probed) = results
    assert monitor.source_in_use == "probe" and monitor.batches_seen == 20
    assert {k for k in trainer.callback_metrics if k.startswith("gan/")} == {
        "gan/generator_score",
        "gan/discriminator_score",
        "gan/fake_detection_accuracy",
        "gan/real_detection_accuracy",
    }
    for key in plain:
        assert torch.equal(plain[key], probed[key]), key
    assert torch.equal(rng_plain, rng_probed)


_WITHOUT_THE_OTHER = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
sys.path[:0] = [{tests!r}, {examples!r}]
from packages import example, make_trainer, monitor_class, pl
digits = example("digits_gan", {package!r})
monitor = monitor_class({package!r})(from_logits=True, log_every_n_batches=2, check_every_n_batches=2)
logger = pl({package!r}).loggers.TensorBoardLogger({tmp!r}, name="tb")
trainer = make_trainer({package!r}, {tmp!r}, [monitor], max_epochs=1, logger=logger)
trainer.fit(digits.DigitsGAN(), digits.make_dataloader(digits.load_digits_tensor(3)))
assert monitor.batches_seen == 5 and "gan/generator_score" in trainer.callback_metrics
assert not any(name in sys.modules and sys.modules[name] is not None for name in {blocked!r})
print("OK", type(monitor).__module__)
"""


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_work_without_the_other_package(tmp_path, package):
    blocked = ["lightning"] if package == "pytorch_lightning" else ["pytorch_lightning", "lightning_fabric"]
    script = _WITHOUT_THE_OTHER.format(
        blocked=blocked,
        tests=str(ROOT / "tests"),
        examples=str(ROOT / "examples"),
        package=package,
        tmp=str(tmp_path),
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module = (
        "lightning_gan_monitor.pytorch_lightning"
        if package == "pytorch_lightning"
        else "lightning_gan_monitor.lightning"
    )
    assert result.stdout.strip().endswith(f"OK {module}")
