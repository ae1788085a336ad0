"""A DCGAN trained in a Lightning Fabric loop, shaped like Lightning's Fabric DCGAN example, with a GANMonitor.

Written here (not copied) after the shape of ``examples/fabric/dcgan/train_fabric.py`` in the Lightning repository:
a transposed-convolution generator and a convolutional discriminator with batch norm and a sigmoid at its end,
DCGAN's N(0, 0.02) initialisation, ``BCELoss``, Adam (2e-4, betas (0.5, 0.999)), and the same loop: D steps on a
real and a generated batch (gradients of both accumulated), then G steps against the updated D, and the loop itself
prints D(x) and D(G(z)) every 50 iterations. Where that example trains on 64x64 CelebA images, this one trains on
scikit-learn's 8x8 digits upsampled to 16x16 (one channel in [-1, 1]), so each network has one layer fewer and
narrower feature maps, and a CPU runs it in seconds. The lines that the monitor needs are marked ``# + GANMonitor``.

As a script, ``python tests/fabric_dcgan.py OUTDIR [--devices 2] [--lr-g 0]`` trains with Fabric (``strategy="ddp"``
with two devices: Fabric relaunches the script for rank 1) and writes ``OUTDIR/rank{r}.json`` on each rank: the
monitor's verdict and the batches that rank trained (``tests/test_fabric.py`` reads them).
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric, seed_everything
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gan_monitor.fabric import GANMonitor  # + GANMonitor

nz = 16  # latent size
WIDTH = 8  # feature maps of the first (D) / last (G) convolution
SIDE = 16  # images are SIDE x SIDE, one channel
BATCH = 64
LR = 2e-4
BETAS = (0.5, 0.999)


def digits_dataset() -> TensorDataset:
    """The 1,797 digits, upsampled to 16x16 and scaled to [-1, 1] (the range of G's tanh)."""
    pixels = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    pixels = nn.functional.interpolate(pixels, size=SIDE, mode="bilinear", align_corners=False)
    return TensorDataset(pixels * 2 - 1)


def weights_init(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions N(0, 0.02); batch norm scale N(1, 0.02) and shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Sequential):
    """(B, nz, 1, 1) latent vectors -> (B, 1, 16, 16) images: 1 -> 4 -> 8 -> 16 pixels a side."""

    def __init__(self) -> None:
        w = WIDTH
        super().__init__(
            nn.ConvTranspose2d(nz, 4 * w, kernel_size=4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * w, 2 * w, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, 1, kernel_size=4, stride=2, padding=1, bias=False),
            nn.Tanh(),
        )


class Discriminator(nn.Sequential):
    """(B, 1, 16, 16) images -> (B, 1, 1, 1) probabilities of being real: 16 -> 8 -> 4 -> 1 pixels a side."""

    def __init__(self) -> None:
        w = WIDTH
        super().__init__(
            nn.Conv2d(1, w, kernel_size=4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * w, 1, kernel_size=4, stride=1, padding=0, bias=False),
            nn.Sigmoid(),
        )


def train(
    fabric: Fabric,
    monitor: GANMonitor,
    num_epochs: int = 12,
    lr_g: float = LR,
    lr_d: float = LR,
    seed: int = 999,
    verbose: bool = False,
    fault: bool = False,
) -> int:
    """The training loop, after ``fabric.launch()``; returns the iterations trained (28 an epoch on one device)."""
    seed_everything(seed, verbose=False)
    generator, discriminator = Generator(), Discriminator()
    generator.apply(weights_init)
    discriminator.apply(weights_init)
    if fault:  # the generator raises outside training from batch 100 (the first diversity check) on this process
        from faults import arm_fault

        arm_fault(generator, after_steps=100)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=BETAS)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=BETAS)
    discriminator, opt_d = fabric.setup(discriminator, opt_d)
    generator, opt_g = fabric.setup(generator, opt_g)
    loader = fabric.setup_dataloaders(DataLoader(digits_dataset(), batch_size=BATCH, shuffle=True, drop_last=True))
    bce = nn.BCELoss()

    iterations = 0
    for epoch in range(num_epochs):
        for i, batch in enumerate(loader):
            (real,) = batch
            ones = torch.ones(real.shape[0], device=fabric.device)
            zeros = torch.zeros_like(ones)

            # D: real images towards 1, generated ones towards 0, both backward passes into the same gradients
            discriminator.zero_grad()
            on_real = discriminator(real).flatten()
            loss_real = bce(on_real, ones)
            fabric.backward(loss_real)
            fake = generator(torch.randn(real.shape[0], nz, 1, 1, device=fabric.device))
            on_fake = discriminator(fake.detach()).flatten()
            loss_fake = bce(on_fake, zeros)
            fabric.backward(loss_fake)
            opt_d.step()
            loss_d = loss_real + loss_fake

            # G: its samples towards 1 under the D just updated
            generator.zero_grad()
            on_fake_after = discriminator(fake).flatten()
            loss_g = bce(on_fake_after, ones)
            fabric.backward(loss_g)
            opt_g.step()

            if verbose and i % 50 == 0:  # what the example prints by hand
                fabric.print(
                    f"[{epoch}/{num_epochs}][{i}/{len(loader)}] loss D {loss_d.item():.4f}, "
                    f"loss G {loss_g.item():.4f}, "
                    f"D(x) {on_real.mean().item():.4f}, D(G(z)) {on_fake.mean().item():.4f} / "
                    f"{on_fake_after.mean().item():.4f}"
                )

            # + GANMonitor: D's outputs, the losses, the samples (diversity) and the generator (grids)
            monitor.update(
                fabric, on_real.detach(), on_fake.detach(), losses=(loss_d, loss_g), fake=fake, batch=batch,
                generator=generator,
            )  # fmt: skip
            if monitor.should_stop:  # + GANMonitor
                break  # + GANMonitor
            iterations += 1

        monitor.end_epoch(fabric)  # + GANMonitor
        if monitor.should_stop:  # + GANMonitor
            break  # + GANMonitor

    monitor.end(fabric)  # + GANMonitor
    return iterations


def main(argv: list[str] | None = None) -> int:
    """Train with Fabric on ``--devices`` CPU processes and write each rank's report to OUTDIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr-g", type=float, default=LR)
    parser.add_argument("--lr-d", type=float, default=LR)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--fault-rank", type=int, default=-1, help="the generator fails outside training there")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # two processes share two cores
    strategy: Any = "auto"
    if args.devices > 1:  # a short collective timeout keeps a dead rank from hanging the other
        from lightning.fabric.strategies import DDPStrategy

        strategy = DDPStrategy(timeout=timedelta(seconds=60))
    fabric = Fabric(accelerator="cpu", devices=args.devices, strategy=strategy)
    fabric.launch()
    monitor = GANMonitor(patience=args.patience, latent_dim=[nz, 1, 1], verbose=False)  # + GANMonitor
    fault = fabric.global_rank == args.fault_rank
    iterations = train(fabric, monitor, num_epochs=args.epochs, lr_g=args.lr_g, lr_d=args.lr_d, fault=fault)
    report = {
        "rank": fabric.global_rank,
        "world_size": fabric.world_size,
        "iterations": iterations,
        "batches_seen": monitor.summary.batches if monitor.summary else None,
        "failure": monitor.failure.value if monitor.failure else None,
        "stopped_batch": monitor.stopped_batch,
        "diagnoses": [{"batch": d.batch, "failure": d.failure.value if d.failure else None} for d in monitor.diagnoses],
        "scores": monitor.scores,
        "diversity_source": monitor.diversity_source,
    }
    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / f"rank{fabric.global_rank}.json").write_text(json.dumps(report, indent=2))
    fabric.barrier()  # both reports are written before rank 0, the process the test waits on, exits
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
