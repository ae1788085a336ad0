"""The plain-loop GANMonitor: a DCGAN loop after PyTorch's example, a SummaryWriter and any `log_metrics` logger,
two processes under `torch.distributed` (gloo) stopping together, and a fault on one of them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_events
from loop_dcgan import train
from torch.utils.tensorboard import SummaryWriter

from lightning_gan_monitor import FailureMode, GANMonitorWarning
from lightning_gan_monitor.loop import GANMonitor, unwrap
from lightning_gan_monitor.names import SCORE_NAMES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "loop_dcgan.py"
TIMEOUT_S = 240
LATENT = [16, 1, 1]


def test_loop_dcgan_logs_every_tag_to_a_summary_writer(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    monitor = GANMonitor(loggers=[writer], latent_dim=LATENT, image_every_n_epochs=2, verbose=False)
    trained, _ = train(monitor, num_epochs=4)  # 28 batches an epoch
    writer.close()
    assert trained == monitor.batches_seen == 112 and monitor.failure is None and not monitor.should_stop
    assert monitor.diversity_source == "generator" and monitor.source_in_use == "outputs"
    assert monitor.reading == "probabilities" and monitor.generator_updates == 112
    events = read_events(tmp_path)
    for name in SCORE_NAMES:  # every 50 batches (a loop has no `log_every_n_steps`) and at the end
        assert [e.step for e in events.Scalars(f"gan/{name}")] == [49, 99, 111]
    assert [e.step for e in events.Scalars("gan/diversity")] == [99]
    assert {"gan/config/text_summary", "gan/summary/text_summary"} <= set(events.Tags()["tensors"])
    assert [e.step for e in events.Images("gan/samples")] == [56, 112]  # after epochs 2 and 4
    assert monitor.metrics["gan/generator_score"].item() == pytest.approx(
        events.Scalars("gan/generator_score")[1].value
    )


def test_loop_stops_and_logs_to_any_object_with_log_metrics(tmp_path):
    from lightning.fabric.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path), name="loop")
    monitor = GANMonitor(loggers=[logger], patience=8, diversity_every_n_batches=None, log_every_n_batches=5)
    stopped_at = None
    with pytest.warns(GANMonitorWarning, match="Discriminator dominates after 8 training batches"):
        for step in range(1, 101):  # D rates every real sample 0.99 and every generated one 0.01
            if monitor.update(torch.full((8,), 0.99), torch.full((8,), 0.01), losses=[torch.tensor(0.3)]):
                stopped_at = step
                break
        monitor.end()
    logger.finalize("success")
    assert stopped_at == monitor.stopped_batch == 10 and monitor.failure is FailureMode.DISCRIMINATOR_DOMINATES
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("gan/generator_score")]
    assert [int(row["step"]) for row in rows] == [4, 9] and float(rows[0]["gan/generator_score"]) == pytest.approx(0.01)


def test_loop_training_is_bit_identical_with_and_without_the_monitor():
    monitor = GANMonitor(latent_dim=LATENT, diversity_every_n_batches=20, probe_every_n_batches=1, verbose=False)
    _, watched = train(monitor, num_epochs=2)
    _, alone = train(None, num_epochs=2)
    assert monitor.diversity_source == "generator" and not torch.isnan(torch.tensor(monitor.diversity["diversity"]))
    for a, b in zip(watched.state_dict().values(), alone.state_dict().values()):
        assert torch.equal(a, b)


def test_loop_hints_name_what_the_user_missed(caplog):
    from fabric_dcgan import Generator

    # no `batch=`: the diversity checks say to pass it (not to set `real_key`)
    monitor = GANMonitor(latent_dim=LATENT)
    with caplog.at_level("INFO"):
        monitor.update(torch.rand(4), torch.rand(4), generator=Generator())
    assert "pass `batch=` to `update`" in caplog.text and "real_key=" not in caplog.text.split("batch=")[0]
    # a convolutional G probed with a flat latent size: the message suggests the 4-D shape
    probing = GANMonitor(latent_dim=16, source="probe")
    batch = torch.rand(4, 1, 16, 16)
    with pytest.raises(RuntimeError, match=r"latent_dim=\[16, 1, 1\]` for a convolutional G") as raised:
        probing.update(batch=batch, generator=Generator(), discriminator=torch.nn.Flatten())
    assert "condition_key" not in str(raised.value)
    with pytest.raises(ValueError, match="needs both `d_real` and `d_fake`"):
        GANMonitor().update(torch.rand(4))
    assert unwrap(torch.nn.Linear(2, 2)).__class__ is torch.nn.Linear


def _run(outdir: Path, *options: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(SCRIPT), str(outdir), "--processes", "2", *options]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a hang: kill both processes
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"loop_dcgan.py timed out after {TIMEOUT_S} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    assert proc.returncode == 0, f"loop_dcgan.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    return [json.loads((outdir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.ddp
@pytest.mark.slow
def test_loop_two_processes_stop_at_the_same_batch(tmp_path):
    rank0, rank1 = _run(tmp_path, "--epochs", "24", "--lr-g", "0")  # a frozen G: D dominates
    assert rank0["failure"] == rank1["failure"] == "discriminator_dominates"
    assert rank0["stopped_batch"] == rank1["stopped_batch"] == rank0["trained"] == rank1["trained"]
    assert rank0["diagnoses"] == rank1["diagnoses"] and rank0["scores"] == rank1["scores"]
    events = read_events(tmp_path / "tensorboard")  # rank zero writes
    assert "gan/diagnosis/text_summary" in events.Tags()["tensors"]


@pytest.mark.ddp
@pytest.mark.slow
def test_loop_a_fault_on_one_process_turns_the_feature_off_on_both(tmp_path):
    rank0, rank1 = _run(tmp_path, "--epochs", "8", "--fault-rank", "1")  # G fails outside training on rank 1
    for report in (rank0, rank1):  # no hang: both ran to the end, with the diversity checks off on both
        assert report["trained"] == report["batches_seen"] == 112 and report["diversity_source"] == "off"
    assert rank0["scores"] == rank1["scores"] and rank0["failure"] is rank1["failure"] is None
    assert [w for w in rank0["warnings"] if "failed on another process by batch 100" in w]
    assert [w for w in rank1["warnings"] if "the generator failed outside training" in w]


def test_loop_under_hf_accelerate():
    accelerate = pytest.importorskip("accelerate", reason="HF Accelerate is not installed (`pip install accelerate`)")
    from fabric_dcgan import BETAS, LR, Discriminator, Generator, digits_dataset, nz, weights_init
    from torch.utils.data import DataLoader

    accelerator = accelerate.Accelerator(cpu=True)
    torch.manual_seed(0)
    netG, netD = Generator(), Discriminator()
    netG.apply(weights_init)
    netD.apply(weights_init)
    optG, optD = (torch.optim.Adam(m.parameters(), lr=LR, betas=BETAS) for m in (netG, netD))
    loader = DataLoader(digits_dataset(), batch_size=64, shuffle=True, drop_last=True)
    netG, netD, optG, optD, loader = accelerator.prepare(netG, netD, optG, optD, loader)
    bce = torch.nn.BCELoss()
    monitor = GANMonitor(latent_dim=[nz, 1, 1], verbose=False)
    for _ in range(4):  # the loop of an Accelerate script: `accelerator.backward`, prepared models and data
        for (real,) in loader:
            ones, zeros = torch.ones(real.shape[0]), torch.zeros(real.shape[0])
            optD.zero_grad()
            d_real = netD(real).view(-1)
            fake = netG(torch.randn(real.shape[0], nz, 1, 1))
            d_fake = netD(fake.detach()).view(-1)
            loss_d = bce(d_real, ones) + bce(d_fake, zeros)
            accelerator.backward(loss_d)
            optD.step()
            optG.zero_grad()
            loss_g = bce(netD(fake).view(-1), ones)
            accelerator.backward(loss_g)
            optG.step()
            if monitor.update(d_real.detach(), d_fake.detach(), losses=(loss_d, loss_g), batch=real, generator=netG):
                break
        monitor.end_epoch()
    monitor.end()
    assert monitor.batches_seen == 112 and monitor.failure is None and monitor.summary is not None
    assert monitor.diversity_source == "generator" and monitor.diversity["diversity"] > 0
