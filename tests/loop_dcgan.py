"""A DCGAN trained in a plain PyTorch loop, shaped like PyTorch's DCGAN example, with the plain-loop GANMonitor.

Written here (not copied) after the loop of ``dcgan/main.py`` in the ``pytorch/examples`` repository: ``netD`` steps on
a real batch labelled ``real_label = 1.`` and a generated one (``fake.detach()``) labelled ``fake_label = 0.``, then
``netG`` steps with the generated batch labelled real, ``BCELoss``, Adam (2e-4, betas (0.5, 0.999)); the example prints
D(x), D(G(z)) before and after D's step every 50 iterations. The networks and the data are those of
``tests/fabric_dcgan.py`` (the same DCGAN on scikit-learn's digits at 16x16). The lines the monitor needs are marked
``# + GANMonitor``.

As a script, ``python tests/loop_dcgan.py OUTDIR [--processes 2] [--lr-d 2e-3] [--fault-rank 0]`` trains on one
process, or on two with ``torch.distributed`` (gloo, ``DistributedDataParallel``, a ``DistributedSampler``), and
writes ``OUTDIR/rank{r}.json``: the monitor's verdict and state, the batches that rank trained, its warnings.
``--fault-rank R`` makes the generator raise on rank R whenever the monitor runs it outside training (from the
first diversity check on), so that feature fails on one process only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fabric_dcgan import BATCH, BETAS, LR, Discriminator, Generator, digits_dataset, nz, weights_init
from faults import arm_fault

from lightning_gan_monitor.loop import GANMonitor  # + GANMonitor

real_label, fake_label = 1.0, 0.0


def train(
    monitor: GANMonitor | None, num_epochs: int, lr_g: float = LR, lr_d: float = LR, seed: int = 0, fault: bool = False
) -> tuple[int, nn.Module]:
    """The training loop (``monitor`` None: without one); returns the iterations trained and the generator.

    Under ``torch.distributed`` when it is initialised.
    """
    distributed = dist.is_available() and dist.is_initialized()
    torch.manual_seed(seed)
    netG, netD = Generator(), Discriminator()
    netG.apply(weights_init)
    netD.apply(weights_init)
    if fault:  # from the first diversity check (batch 100) on, on this process only
        arm_fault(netG, after_steps=100)
    optimizerD = torch.optim.Adam(netD.parameters(), lr=lr_d, betas=BETAS)
    optimizerG = torch.optim.Adam(netG.parameters(), lr=lr_g, betas=BETAS)
    if distributed:
        netG, netD = nn.parallel.DistributedDataParallel(netG), nn.parallel.DistributedDataParallel(netD)
    dataset = digits_dataset()
    sampler = DistributedSampler(dataset, seed=seed) if distributed else None
    dataloader = DataLoader(dataset, batch_size=BATCH, shuffle=sampler is None, sampler=sampler, drop_last=True)
    criterion = nn.BCELoss()

    iterations = 0
    for epoch in range(num_epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for data in dataloader:
            # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            real_cpu = data[0]
            b_size = real_cpu.size(0)
            label = torch.full((b_size,), real_label)
            output_real = netD(real_cpu).view(-1)
            errD_real = criterion(output_real, label)
            errD_real.backward()
            noise = torch.randn(b_size, nz, 1, 1)
            fake = netG(noise)
            label.fill_(fake_label)
            output_fake = netD(fake.detach()).view(-1)
            errD_fake = criterion(output_fake, label)
            errD_fake.backward()
            errD = errD_real + errD_fake
            optimizerD.step()

            # (2) Update G: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            optimizerG.step()

            iterations += 1
            if monitor is None:
                continue
            stop = monitor.update(  # + GANMonitor
                output_real.detach(), output_fake.detach(), losses=(errD, errG), batch=data, generator=netG
            )
            if stop:  # + GANMonitor
                break
        if monitor is not None:
            monitor.end_epoch()  # + GANMonitor
            if monitor.should_stop:  # + GANMonitor
                break
    if monitor is not None:
        monitor.end()  # + GANMonitor
    return iterations, netG


def _worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    loggers: list[Any] = []
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        loggers.append(SummaryWriter(str(Path(args.outdir) / "tensorboard")))
    monitor = GANMonitor(loggers=loggers, patience=args.patience, latent_dim=[nz, 1, 1], image_every_n_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained, _ = train(
            monitor, args.epochs, lr_g=args.lr_g, lr_d=args.lr_d, seed=args.seed, fault=rank == args.fault_rank
        )
    for writer in loggers:
        writer.close()
    report = {
        "rank": rank,
        "trained": trained,
        "batches_seen": monitor.batches_seen,
        "stopped_batch": monitor.stopped_batch,
        "failure": monitor.failure.value if monitor.failure else None,
        "diagnoses": [d.batch for d in monitor.diagnoses],
        "diversity_source": monitor.diversity_source,
        "scores": monitor.scores,
        "warnings": [str(w.message) for w in caught],
        "summary": str(monitor.summary),
    }
    (Path(args.outdir) / f"rank{rank}.json").write_text(json.dumps(report))
    if world > 1:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=100)
    parser.add_argument("--lr-g", type=float, default=LR)
    parser.add_argument("--lr-d", type=float, default=LR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-rank", type=int, default=-1)
    args = parser.parse_args(argv)
    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    if args.processes == 1:
        _worker(0, 1, 0, args)
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(args.processes, port, args), nprocs=args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
