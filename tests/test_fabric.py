"""GANMonitor in a Lightning Fabric loop: a DCGAN loop shaped like Lightning's Fabric example, trained for real.

A healthy run stays quiet; an induced failure is diagnosed and stops the loop; the values reach Fabric's
``TensorBoardLogger``; ``Fabric(callbacks=[monitor])`` with ``fabric.call`` works as the object API does; the state
round-trips through ``fabric.save``/``fabric.load``; under Fabric's DDP both ranks stop at the same batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import read_events
from lightning.fabric import Fabric
from lightning.fabric.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fabric_dcgan

from lightning_gan_monitor import FailureMode, GANMonitorWarning
from lightning_gan_monitor.fabric import GANMonitor
from lightning_gan_monitor.loop import unwrap
from lightning_gan_monitor.names import SCORE_NAMES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "fabric_dcgan.py"
#: 28 batches of 64 digits an epoch on one device: 12 epochs are 336 iterations.
EPOCHS, BATCHES_PER_EPOCH = 12, 28
PATIENCE = 50
LATENT = [fabric_dcgan.nz, 1, 1]


def _train(tmp_path: Path, **kwargs) -> tuple[GANMonitor, int, list[warnings.WarningMessage]]:
    """Train the example with a monitor and a TensorBoardLogger; the monitor, the iterations, the monitor's warnings."""
    monitor_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("lr_g", "lr_d", "num_epochs")}
    fabric = Fabric(accelerator="cpu", devices=1, loggers=TensorBoardLogger(tmp_path, name="fabric"))
    fabric.launch()
    monitor = GANMonitor(patience=PATIENCE, latent_dim=LATENT, verbose=False, **monitor_kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        iterations = fabric_dcgan.train(fabric, monitor, **{"num_epochs": EPOCHS, **kwargs})
    return monitor, iterations, [w for w in caught if issubclass(w.category, GANMonitorWarning)]


def _events(tmp_path: Path) -> EventAccumulator:
    (path,) = tmp_path.rglob("events.out.tfevents.*")
    events = read_events(str(path))
    return events


def test_fabric_healthy_dcgan_run_is_quiet_and_logs_to_tensorboard(tmp_path):
    monitor, iterations, caught = _train(tmp_path, image_every_n_epochs=EPOCHS)
    assert iterations == EPOCHS * BATCHES_PER_EPOCH  # not stopped
    assert not monitor.should_stop and monitor.failure is None and monitor.diagnoses == [] and caught == []
    assert monitor.summary is not None and monitor.summary.batches == iterations
    # the scores at every log point (50 batches, Fabric has no `log_every_n_steps`) and at the end
    events = _events(tmp_path)
    for name in SCORE_NAMES:
        steps = [e.step for e in events.Scalars(f"gan/{name}")]
        assert steps == [49, 99, 149, 199, 249, 299, iterations - 1]
    assert {"gan/diversity", "gan/near_duplicates"} <= set(events.Tags()["scalars"])
    assert {"gan/summary/text_summary", "gan/config/text_summary"} <= set(events.Tags()["tensors"])
    assert {"gan/samples", "gan/real_samples"} <= set(events.Tags()["images"])  # G given to `update`: grids
    # the values of the last log point, as the monitor's `metrics` (what `trainer.callback_metrics` holds in a Trainer)
    last = events.Scalars("gan/generator_score")[-2].value
    assert monitor.metrics["gan/generator_score"].item() == pytest.approx(last)


@pytest.mark.parametrize(
    ("induced", "kwargs", "failure", "also"),
    [
        # the generator collapses (every sample a near-duplicate, diversity < 0.1) by the first diversity check,
        # before D's dominance has held for its patience: collapse first, the dominance named second
        ("D learns 10x faster", {"lr_d": 2e-3}, FailureMode.MODE_COLLAPSE, (FailureMode.DISCRIMINATOR_DOMINATES,)),
        # a generator that does not learn looks collapsed too (diversity about 0.18): the dominance comes first
        ("G does not learn", {"lr_g": 0.0}, FailureMode.DISCRIMINATOR_DOMINATES, (FailureMode.MODE_COLLAPSE,)),
        # a frozen random D is fooled: G's score climbs to 0.87-0.90 and stays (above the default 0.8)
        ("D frozen", {"lr_d": 0.0, "lr_g": 2e-3}, FailureMode.GENERATOR_DOMINATES, None),
    ],
)
def test_fabric_induced_failure_is_diagnosed_and_stops_the_loop(tmp_path, induced, kwargs, failure, also):
    monitor, iterations, caught = _train(tmp_path, **kwargs)
    assert monitor.failure is failure, induced
    # what else holds at that check is borderline here (D's condition had held for about 8 batches): it may be named
    assert also is None or set(monitor.diagnoses[0].also) <= set(also)
    assert monitor.should_stop
    stopped = monitor.stopped_batch
    assert stopped is not None and (stopped % 20 == 0 or stopped % 50 == 0)  # at a check (every 20) or a log point
    assert monitor.diagnoses[0].batch <= stopped < monitor.diagnoses[0].batch + 20
    assert iterations == stopped - 1 < EPOCHS * BATCHES_PER_EPOCH  # the loop left at that batch
    assert monitor.summary is not None and monitor.summary.batches == stopped
    assert len(caught) == 1 and str(caught[0].message).startswith(f"GANMonitor: {monitor.diagnoses[0].message}"[:40])
    events = _events(tmp_path)
    assert "gan/diagnosis/text_summary" in events.Tags()["tensors"]
    assert events.Scalars("gan/generator_score")[-1].step == stopped - 1


def _callback_loop(fabric: Fabric, monitor: GANMonitor, lr_d: float, epochs: int) -> int:
    """The example's step, driving the monitor through ``Fabric(callbacks=[monitor])`` and ``fabric.call``."""
    fabric.seed_everything(999, verbose=False)
    generator, discriminator = fabric_dcgan.Generator(), fabric_dcgan.Discriminator()
    generator.apply(fabric_dcgan.weights_init)
    discriminator.apply(fabric_dcgan.weights_init)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(0.5, 0.999))
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    discriminator, optimizer_d = fabric.setup(discriminator, optimizer_d)  # tells the monitor the fabric
    generator, optimizer_g = fabric.setup(generator, optimizer_g)
    loader = torch.utils.data.DataLoader(fabric_dcgan.digits_dataset(), batch_size=64, shuffle=True, drop_last=True)
    loader = fabric.setup_dataloaders(loader)
    criterion, seen = torch.nn.BCELoss(), 0
    for _ in range(epochs):
        for batch_idx, batch in enumerate(loader):
            real = batch[0]
            fake = generator(torch.randn(real.shape[0], fabric_dcgan.nz, 1, 1))
            d_real, d_fake = discriminator(real).view(-1), discriminator(fake.detach()).view(-1)
            loss_d = criterion(d_real, torch.ones_like(d_real)) + criterion(d_fake, torch.zeros_like(d_fake))
            optimizer_d.zero_grad()
            fabric.backward(loss_d)
            optimizer_d.step()
            loss_g = criterion(discriminator(fake).view(-1), torch.ones_like(d_fake))
            optimizer_g.zero_grad()
            fabric.backward(loss_g)
            optimizer_g.step()
            seen += 1
            # as a `training_step` would return them (Lightning's "build your own trainer" example's call)
            outputs = {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "loss_d": loss_d, "loss_g": loss_g}
            fabric.call("on_train_batch_end", outputs, batch, batch_idx)
            if monitor.should_stop:
                break
        fabric.call("on_train_epoch_end")
        if monitor.should_stop:
            break
    fabric.call("on_train_end")
    return seen


def test_fabric_callbacks_and_fabric_call_drive_the_monitor(tmp_path):
    monitor = GANMonitor(patience=PATIENCE, latent_dim=LATENT, verbose=False, diversity_every_n_batches=None)
    fabric = Fabric(accelerator="cpu", devices=1, callbacks=[monitor], loggers=TensorBoardLogger(tmp_path))
    fabric.launch()
    with pytest.warns(GANMonitorWarning, match="Discriminator dominates"):
        seen = _callback_loop(fabric, monitor, lr_d=2e-3, epochs=EPOCHS)
    assert monitor.failure is FailureMode.DISCRIMINATOR_DOMINATES and seen == monitor.stopped_batch
    assert monitor.summary is not None and monitor.summary.batches == seen
    assert "gan/generator_score" in _events(tmp_path).Tags()["scalars"]


def test_fabric_state_round_trips_through_fabric_save_and_load(tmp_path):
    monitor, _, _ = _train(tmp_path, lr_d=2e-3, diversity_every_n_batches=None)
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric.save(tmp_path / "checkpoint.ckpt", {"monitor": monitor.state_dict()})
    resumed = GANMonitor(patience=PATIENCE, latent_dim=LATENT, verbose=False, diversity_every_n_batches=None)
    resumed.load_state_dict(fabric.load(tmp_path / "checkpoint.ckpt")["monitor"])
    assert resumed.failure is monitor.failure and resumed.stopped_batch == monitor.stopped_batch
    assert resumed.diagnoses == monitor.diagnoses and resumed.scores == monitor.scores
    # a loaded monitor carries on from its state: its next batch is the one after the checkpoint's
    resumed.update(fabric, torch.full((4,), 0.9), torch.full((4,), 0.1))
    assert resumed.failure is monitor.failure and resumed.batches_seen == monitor.stopped_batch + 1


def test_fabric_update_errors_name_the_arguments():
    fabric = Fabric(accelerator="cpu", devices=1)
    monitor = GANMonitor(latent_dim=LATENT)
    with pytest.raises(ValueError, match="needs both `d_real` and `d_fake`"):
        monitor.update(fabric, d_real=torch.rand(4))
    with pytest.raises(
        ValueError, match=r"got no `d_real` and `d_fake`: pass them .*, or let it probe: pass `generator=`"
    ):
        monitor.update(fabric, batch=torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(source='probe'\) cannot probe: pass `generator=`"):
        GANMonitor(source="probe").update(fabric, torch.rand(4), torch.rand(4))
    with pytest.raises(RuntimeError, match=r"Fabric\(callbacks=\[monitor\]\)"):
        GANMonitor().on_train_batch_end({"d_real": torch.rand(4), "d_fake": torch.rand(4)})


def test_fabric_probes_the_models_without_outputs():
    """Without D's outputs the monitor probes G and D itself (Fabric's wrappers unwrapped), training untouched."""
    fabric = Fabric(accelerator="cpu", devices=1)
    generator, discriminator = fabric.setup(fabric_dcgan.Generator()), fabric.setup(fabric_dcgan.Discriminator())
    monitor = GANMonitor(latent_dim=LATENT, probe_every_n_batches=2, verbose=False, diversity_every_n_batches=None)
    batch = [fabric_dcgan.digits_dataset().tensors[0][:16]]
    before = [p.clone() for p in generator.parameters()]
    for _ in range(4):
        monitor.update(fabric, batch=batch, generator=generator, discriminator=discriminator)
    monitor.end(fabric)
    assert monitor.source_in_use == "probe"
    assert unwrap(generator) is generator.module  # run outside Fabric's (and DDP's) wrapper
    assert all(torch.equal(a, b) for a, b in zip(before, generator.parameters()))
    assert 0.0 < monitor.scores["generator_score"] < 1.0


def _run_ddp(tmp_path: Path, *options: str) -> tuple[list[dict], str]:
    """Run ``fabric_dcgan.py`` on two processes; both ranks' reports and the stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(SCRIPT), str(tmp_path), "--devices", "2", *options]
    # A session of its own, so a timeout kills rank 1 (a child of rank 0) too.
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"fabric_dcgan.py timed out\nstdout:\n{stdout}\nstderr:\n{stderr}")
    assert proc.returncode == 0, f"fabric_dcgan.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)], stderr


@pytest.mark.slow
@pytest.mark.ddp
def test_fabric_ddp_both_ranks_stop_at_the_same_batch(tmp_path):
    reports, stderr = _run_ddp(tmp_path, "--lr-d", "2e-3", "--epochs", "24")
    assert [r["world_size"] for r in reports] == [2, 2]
    # the generator collapses by the first diversity check (every rank's samples, gathered), the dominance second
    assert reports[0]["failure"] == FailureMode.MODE_COLLAPSE.value
    stopped = reports[0]["stopped_batch"]
    assert stopped is not None and stopped < 24 * BATCHES_PER_EPOCH // 2  # 14 batches a rank and epoch
    for key in ("failure", "stopped_batch", "diagnoses", "iterations", "batches_seen", "scores"):
        assert reports[0][key] == reports[1][key], key  # one gather, the same numbers, the same decision
    assert reports[0]["iterations"] == stopped - 1
    assert stderr.count("Mode collapse after") == 1  # told once, on rank zero


@pytest.mark.slow
@pytest.mark.ddp
def test_fabric_ddp_a_fault_on_one_rank_turns_the_feature_off_on_both(tmp_path):
    # G fails outside training on rank 1 from batch 100: the diversity check there, before any collective
    reports, stderr = _run_ddp(tmp_path, "--fault-rank", "1", "--epochs", "8", "--patience", "500")
    for report in reports:  # no hang: both ran to the end, with the diversity checks off on both
        assert report["iterations"] == report["batches_seen"] == 112 and report["diversity_source"] == "off"
    assert reports[0]["scores"] == reports[1]["scores"] and reports[0]["failure"] is None
    assert stderr.count("failed on another process by batch 100") == 1 and "the generator failed outside" in stderr
