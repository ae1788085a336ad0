"""Does the monitor see mode collapse? Ground truth from the 2-D mixtures of the unrolled-GAN/VEEGAN/PacGAN papers.

    python benchmarks/mixture_modes.py            # full run: both mixtures, several seeds (minutes on 2 CPU cores)
    python benchmarks/mixture_modes.py --quick    # the ring only, one seed, for CI (well under a minute)

A ring of 8 Gaussians (radius 2, std 0.02) and a 5x5 grid of 25 (spacing 2, std 0.05). A generated point is
high-quality if it lies within 3 standard deviations of its nearest mode; a mode is captured if it is the nearest
mode of at least one high-quality point (out of 2500 generated points). Vanilla GANs train over several seeds, and a
deliberately collapsing generator (it ignores its noise) as a control. At each of the monitor's diversity checks the
true number of modes captured is logged beside the monitor's ``gan/coverage``, ``gan/mode_coverage`` and
``gan/diversity``, and beside coverage and mode coverage with other sample sizes and k (on 2500 generated points and
a fresh real sample); the report gives their Spearman rank correlation over all checks of all runs, and whether the
mode-collapse rule (default settings, ``on_failure="warn"`` so that runs go on) fired on the runs that captured at
most 2 modes, and never on the runs that captured them all.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import adversarial_step, machine, print_table, trainer
from scipy.stats import spearmanr
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_gan_monitor import FailureMode, GANMonitor
from lightning_gan_monitor.functional import coverage, mode_coverage

#: Mode coverage measured beside the monitor's: (generated samples, real samples, k, scale of the reach).
MODE_VARIANTS = (
    (256, 512, 5, 3.0),
    (256, 512, 10, 3.0),
    (1024, 1024, 5, 3.0),
    (256, 512, 5, 2.0),
    (256, 512, 5, 5.0),
    (1024, 512, 5, 3.0),
    (1024, 512, 5, 5.0),
)
#: Coverage measured beside the monitor's, at each check: (generated samples, real samples, k). The first is what
#: the monitor measures at its defaults (a training batch of 256 against a reservoir of 512, k = 5).
COVERAGE_VARIANTS = ((256, 512, 5), (256, 512, 10), (256, 512, 20), (1024, 1024, 5), (1024, 1024, 20), (2500, 2048, 5))


def mode_variant(n: int, m: int, k: int, scale: float) -> str:
    """The name of a mode-coverage variant in the checks and the correlations."""
    return f"mode coverage n={n} m={m} k={k}" + (f" scale={scale:g}" if scale != 3.0 else "")


def mixture(name: str) -> tuple[Tensor, float]:
    """The modes' centres, (k, 2), and the standard deviation of each mode."""
    if name == "ring":
        angles = torch.arange(8) * (2 * math.pi / 8)
        return torch.stack([2 * torch.cos(angles), 2 * torch.sin(angles)], dim=1), 0.02
    if name == "grid":
        axis = torch.arange(-4.0, 5.0, 2.0)
        return torch.cartesian_prod(axis, axis), 0.05
    raise ValueError(f"unknown mixture {name!r}")


def sample(name: str, n: int, generator: torch.Generator) -> Tensor:
    centres, std = mixture(name)
    which = torch.randint(len(centres), (n,), generator=generator)
    return centres[which] + std * torch.randn(n, 2, generator=generator)


def modes_captured(points: Tensor, name: str) -> tuple[int, float]:
    """(modes captured, share of high-quality points) by the definition of the papers."""
    centres, std = mixture(name)
    distances = torch.cdist(points, centres)
    nearest, which = distances.min(dim=1)
    good = nearest <= 3 * std
    return len(set(which[good].tolist())), good.float().mean().item()


class MixtureGAN(pl.LightningModule):
    """MLP GAN for 2-D points, as in the unrolled-GAN paper's mixture experiments (smaller, for CPUs)."""

    def __init__(self, latent_dim: int = 16, hidden: int = 128, lr: float = 1e-3, ignore_noise: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        layers: list[nn.Module] = [nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()]
        self.generator = nn.Sequential(*layers, nn.Linear(hidden, 2))
        if ignore_noise:
            self.generator.insert(0, _Zeros())
        self.discriminator = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        lr = self.hparams.lr
        return [
            torch.optim.Adam(self.generator.parameters(), lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.discriminator.parameters(), lr, betas=(0.5, 0.999)),
        ]

    def training_step(self, batch: list[Tensor], batch_idx: int) -> dict[str, Tensor]:
        (real,) = batch
        d_real, d_fake, fake = adversarial_step(self, real)
        return {"d_real": d_real, "d_fake": d_fake, "fake": fake}


class _Zeros(nn.Module):
    def forward(self, z: Tensor) -> Tensor:
        return torch.zeros_like(z)


class TruthAtChecks(pl.Callback):
    """At each diversity check of ``monitor``: the true modes captured beside the monitor's values."""

    def __init__(self, monitor: GANMonitor, name: str, seed: int) -> None:
        self.monitor, self.name, self.rows = monitor, name, []
        self.rng = torch.Generator().manual_seed(10_000 + seed)
        self.batches = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.batches += 1
        if self.batches % self.monitor.diversity_every_n_batches:
            return
        with torch.no_grad():
            points = pl_module.generator(torch.randn(2500, pl_module.hparams.latent_dim, generator=self.rng))
        modes, quality = modes_captured(points, self.name)
        real = sample(self.name, 2048, self.rng)
        variants = {
            f"coverage n={n} m={m} k={k}": coverage(points[:n], real[:m], k).item() for n, m, k in COVERAGE_VARIANTS
        }
        for n, m, k, scale in MODE_VARIANTS:
            variants[mode_variant(n, m, k, scale)] = mode_coverage(points[:n], real[:m], k, scale).item()
        logged = trainer.callback_metrics["gan/mode_coverage"].item()  # the monitor's, at this check
        row = {"batch": self.batches, "modes": modes, "high_quality": quality, **self.monitor.diversity}
        self.rows.append({**row, "mode_coverage": logged, **variants})


def run(name: str, seed: int, batches: int, collapse: bool) -> dict[str, Any]:
    pl.seed_everything(seed, verbose=False)
    data = sample(name, 20_000, torch.Generator().manual_seed(seed))
    loader = DataLoader(TensorDataset(data), batch_size=256, shuffle=True, drop_last=True)
    monitor = GANMonitor(from_logits=True, on_failure="warn", image_every_n_epochs=None, verbose=False)
    truth = TruthAtChecks(monitor, name, seed)
    model = MixtureGAN(ignore_noise=collapse)
    start = time.perf_counter()
    trainer([monitor, truth], max_steps=2 * batches).fit(model, loader)  # two optimizer steps per batch
    fired = [d for d in monitor.diagnoses if d.failure is FailureMode.MODE_COLLAPSE]
    return {
        "mixture": name,
        "generator": "ignores its noise" if collapse else "vanilla",
        "seed": seed,
        "checks": truth.rows,
        "final_modes": truth.rows[-1]["modes"],
        "total_modes": len(mixture(name)[0]),
        "fired_at": fired[0].batch if fired else None,
        "seconds": time.perf_counter() - start,
    }


def measure(quick: bool = False, seeds: list[int] | None = None, batches: int | None = None) -> list[dict[str, Any]]:
    """Every run's checks and verdict."""
    mixtures = ["ring"] if quick else ["ring", "grid"]
    seeds = seeds if seeds is not None else ([0] if quick else [0, 1, 2, 3, 4])
    batches = batches or (400 if quick else 3000)
    runs = []
    for name in mixtures:
        for seed in seeds:
            runs.append(run(name, seed, batches, collapse=False))
        runs.append(run(name, seeds[0], batches, collapse=True))
    return runs


def correlations(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Spearman rank correlation, over every check of every run, of the share of modes captured with each value."""
    checks = [(c, r["total_modes"]) for r in runs for c in r["checks"]]
    share = [c["modes"] / total for c, total in checks]
    result = {}
    variants = [key for key in checks[0][0] if "coverage n=" in key] if checks else []
    for key in ("coverage", "mode_coverage", "diversity", "near_duplicates", "density", *variants):
        values = [c[key] for c, _ in checks]
        result[key] = float(spearmanr(share, values).statistic)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the ring, one seed, 400 batches (for CI)")
    parser.add_argument("--batches", type=int, default=None, help="training batches per run")
    parser.add_argument("--dump", default=None, help="also write every run's checks to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine steadier)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# Mode collapse on 2-D mixtures, {datetime.date.today()}\n\nMachine: {machine()}\n")
    runs = measure(args.quick, batches=args.batches)
    if args.dump:
        Path(args.dump).write_text(json.dumps(runs, indent=1))
    rows = [
        {
            "mixture": r["mixture"],
            "generator": r["generator"],
            "seed": r["seed"],
            "modes at the end": f"{r['final_modes']} / {r['total_modes']}",
            "coverage at the end": f"{r['checks'][-1]['coverage']:.3f}",
            "diversity at the end": f"{r['checks'][-1]['diversity']:.3f}",
            "near-duplicates at the end": f"{r['checks'][-1]['near_duplicates']:.3f}",
            "MODE_COLLAPSE fired at batch": r["fired_at"] if r["fired_at"] is not None else "no",
            "s": f"{r['seconds']:.0f}",
        }
        for r in runs
    ]
    print_table(rows, list(rows[0]))
    print("\nSpearman rank correlation with the share of true modes captured, over every check of every run:\n")
    print_table(
        [{"value": k, "Spearman rho": f"{v:.3f}"} for k, v in correlations(runs).items()], ["value", "Spearman rho"]
    )
    few = [r for r in runs if r["final_modes"] <= 2]
    all_ = [r for r in runs if r["final_modes"] == r["total_modes"]]
    for label, group in (("at most 2 modes", few), ("every mode", all_)):
        fired = sum(r["fired_at"] is not None for r in group)
        print(f"\nRuns ending with {label}: {len(group)}, the rule fired on {fired}.")
    print("\nPer check (batch: modes captured, coverage, mode coverage, diversity):")
    for r in runs:
        trace = ", ".join(
            f"{c['batch']}: {c['modes']} {c['coverage']:.2f} {c['mode_coverage']:.2f} {c['diversity']:.2f}"
            for c in r["checks"]
        )
        print(f"- {r['mixture']} {r['generator']} seed {r['seed']}: {trace}")
    print(f"\nmedian seconds per run: {statistics.median(r['seconds'] for r in runs):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
