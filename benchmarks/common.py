"""Shared pieces of the benchmarks: the GANs they train, timing, and table printing."""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from digits_gan import DigitsGAN, load_digits_tensor, make_dataloader

__all__ = [
    "RESULTS",
    "BatchTimer",
    "ConvGAN",
    "DigitsGAN",
    "adversarial_step",
    "load_average",
    "load_digits_tensor",
    "machine",
    "make_dataloader",
    "markdown_table",
    "print_table",
    "provenance",
    "synthetic_images_loader",
    "trainer",
    "write_section",
]

#: Where the benchmarks write their figures (`--write-results`); each script owns one marked section.
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def quiet_study() -> str:
    """Set a study up as the long ones run: one thread, Lightning's and other warnings off (a monitor feature that
    turns itself off is an error: a bug to see); returns the load average at the start."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    warnings.filterwarnings("error", message=".*failed at batch")
    for name in ("lightning", "pytorch_lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    return load_average()


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.machine()}, {model}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), pytorch-lightning {pl.__version__}, Python {platform.python_version()}"
    )


def provenance(command: str, note: str, load_before: str) -> list[str]:
    """The lines that open a section of RESULTS.md: when and by what command, the machine and how busy it was."""
    return [
        f"Measured {datetime.date.today()} by `{command}`" + (f" ({note})" if note else "") + ".",
        "",
        f"Machine: {machine()}. Load average (1 min): {load_before} at the start, {load_average()} at the end.",
    ]


def load_average() -> str:
    """The 1-minute load average against the number of cores: how busy the machine was (other processes)."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


class BatchTimer(pl.Callback):
    """Time of every training batch, measured between consecutive ends of batches (so every callback's
    `on_train_batch_end` is inside); put it last in the callbacks list.

    Two clocks: wall time (what a user waits for) and the main thread's CPU time, which leaves out the time other
    processes held the cores, so it is steadier on a shared machine (with `torch.set_num_threads(1)` all the work of
    a CPU training step runs on that thread).
    """

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []

    def on_train_batch_end(self, *args: Any) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.thread_time())

    def per_batch(self, skip: int, cpu: bool = False) -> list[float]:
        """Durations of the batches after the first `skip` (warm-up), in wall or CPU seconds."""
        ends = (self.cpu_ends if cpu else self.ends)[skip:]
        return [b - a for a, b in itertools.pairwise(ends)]


def trainer(
    callbacks: list,
    max_steps: int = -1,
    max_epochs: int = -1,
    logger: Any = False,
    log_every_n_steps: int = 50,
    **kwargs: Any,
) -> pl.Trainer:
    return pl.Trainer(
        callbacks=callbacks,
        max_steps=max_steps,
        max_epochs=max_epochs,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=log_every_n_steps,
        **kwargs,
    )


def adversarial_step(module: pl.LightningModule, real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One discriminator step, then one generator step (non-saturating loss), with manual optimisation.

    `module` has `generator`, `discriminator` (logits), `hparams.latent_dim` and the optimizers `[G, D]`. Returns D's
    logits on the real and on the generated batch (from the discriminator step) and the generated batch, detached.
    """
    opt_g, opt_d = module.optimizers()
    bce = nn.functional.binary_cross_entropy_with_logits
    fake = module.generator(torch.randn(real.shape[0], module.hparams.latent_dim, device=module.device))
    d_real, d_fake = module.discriminator(real), module.discriminator(fake.detach())
    d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
    opt_d.zero_grad()
    module.manual_backward(d_loss)
    opt_d.step()
    d_gen = module.discriminator(fake)
    g_loss = bce(d_gen, torch.ones_like(d_gen))
    opt_g.zero_grad()
    module.manual_backward(g_loss)
    opt_g.step()
    return d_real.detach(), d_fake.detach(), fake.detach()


class ConvGAN(pl.LightningModule):
    """A small DCGAN for 32x32 single-channel images: a heavier step than the digits MLP."""

    def __init__(self, latent_dim: int = 64, width: int = 32, return_d_outputs: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        w = width
        self.generator = nn.Sequential(
            nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, 4 * w, 4, 1, 0, bias=False),  # 4x4
            nn.BatchNorm2d(4 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(2 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(w),
            nn.ReLU(True),
            nn.ConvTranspose2d(w, 1, 4, 2, 1, bias=False),  # 32x32
            nn.Tanh(),
        )
        self.discriminator = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1, bias=False),  # 16x16
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False),  # 4x4
            nn.BatchNorm2d(4 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * w, 1, 4, 1, 0, bias=False),  # 1x1 logit
        )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.generator.parameters(), 2e-4, betas=(0.5, 0.999)),
            torch.optim.Adam(self.discriminator.parameters(), 2e-4, betas=(0.5, 0.999)),
        ]

    def training_step(self, batch: list[Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        (real,) = batch
        d_real, d_fake, _ = adversarial_step(self, real)
        if self.hparams.return_d_outputs:
            return {"d_real": d_real, "d_fake": d_fake}
        return None


def synthetic_images_loader(n: int = 2048, batch_size: int = 64, seed: int = 0) -> DataLoader:
    """Random Gaussian blobs on 32x32 images in [-1, 1]: structured enough for a GAN to learn, made on the spot."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(n, 2, 1, 1, generator=g) * 20 + 6
    sigma = torch.rand(n, 1, 1, generator=g) * 3 + 2
    images = torch.exp(-((xx - centres[:, 0]) ** 2 + (yy - centres[:, 1]) ** 2) / (2 * sigma**2))
    data = (images * 2 - 1).unsqueeze(1)
    return DataLoader(TensorDataset(data), batch_size=batch_size, shuffle=True, drop_last=True, generator=g)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of `rows` (a missing cell is left empty)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of `rows` (also printed)."""
    text = markdown_table(rows, columns)
    print(text)
    return text


def write_section(script: str, text: str, path: Path = RESULTS, name: str | None = None) -> None:
    """Put `text` in `path` between the markers of section `name`, replacing what was there (or append it).

    Only what lies between `<!-- begin NAME -->` and `<!-- end NAME -->` changes, so each script refreshes its own
    figures and the hand-written parts of the file (and other scripts' sections) stay as they are. `name` is the
    section's (the script's name unless a script writes several).
    """
    name = name or script
    begin, end = f"<!-- begin {name} (written by benchmarks/{script}.py) -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = path.read_text() if path.exists() else ""
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        updated = head + block + rest.split(end, 1)[1]
    else:
        updated = (current.rstrip() + "\n\n" if current.strip() else "") + block + "\n"
    path.write_text(updated)


def study_main(
    argv: list[str] | None,
    doc: str,
    name: str,
    measure: Any,
    report: Any,
    quick_help: str | None = None,
) -> int:
    """The command line of a study that writes a section of RESULTS.md (``critics``, ``false_alarms``, ...).

    ``measure(quick)`` (``measure()`` without ``quick_help``: no ``--quick``) returns the rows;
    ``report(rows, note, load_before, command)`` the section's text, which is printed, and with ``--write-results``
    written to RESULTS.md under ``name``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if quick_help:
        parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--write-results", action="store_true", help="refresh the section of benchmarks/RESULTS.md")
    parser.add_argument("--note", default="", help="said next to the date in RESULTS.md, e.g. how busy the machine was")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = load_average()
    quick = bool(getattr(args, "quick", False))
    command = f"python benchmarks/{name}.py" + (" --quick" if quick else "")
    text = report(measure(quick) if quick_help else measure(), args.note, load_before, command)
    print(text)
    if args.write_results:
        write_section(name, text)
    return 0
