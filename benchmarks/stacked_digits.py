"""Images' modes: stacked digits (three digits as the channels, 1,000 modes), the protocol of VEEGAN's and PacGAN's
stacked-MNIST tables, on scikit-learn's 8x8 digits.

A real sample stacks three random digits as the red, green and blue channels of one 8x8 image; its mode is the
triple of their classes (1,000 modes). A DCGAN with 3 channels (the zoo's, ``zoo_gans.ConvGenerator``) trains on
20,000 of them, watched by the monitor as the README says (``GANMonitor(latent_dim=[16, 1, 1])``, with
``on_failure="warn"`` so the runs go on). At each diversity check a digit classifier (logistic regression on the
digits) reads each channel of 2,600 of G's samples: the modes captured (triples with at least one sample) and the
KL divergence of their histogram from the uniform one, as those papers count them. The report gives the Spearman
rank correlation of the monitor's coverage, mode coverage, diversity and near-duplicates with the modes captured, over
every check of every run, and what the monitor named on a partial collapse (from batch 400 on G sees one of 100 fixed
latent vectors: at most 100 modes) and on a full one (it ignores its noise).

    python benchmarks/stacked_digits.py              # 3 healthy seeds, a partial and a full collapse (minutes)
    python benchmarks/stacked_digits.py --quick      # one short healthy run and a partial collapse (for CI)
    python benchmarks/stacked_digits.py --write-results
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytorch_lightning as pl
import torch
from common import markdown_table, provenance, quiet_study, study_main
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from zoo import classifier
from zoo_gans import LATENT, ConvDiscriminator, ConvGenerator

from lightning_gan_monitor import FailureMode, GANMonitor

MODES = 1000


def stacked(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` stacked digits (n, 3, 8, 8) in [-1, 1] and their modes (the class triple as a number 0-999)."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 8.0 - 1.0
    labels = torch.tensor(data.target)
    pick = torch.randint(0, len(images), (n, 3), generator=torch.Generator().manual_seed(seed))
    modes = labels[pick[:, 0]] * 100 + labels[pick[:, 1]] * 10 + labels[pick[:, 2]]
    return images[pick], modes


def modes_of(samples: Tensor) -> Tensor:
    """Each sample's mode as the digit classifier reads its three channels; -1 where a channel is no clear digit."""
    flat = samples.clamp(-1, 1).reshape(-1, 64).numpy()
    probs = torch.as_tensor(classifier().predict_proba(flat)).reshape(-1, 3, 10)
    confidence, classes = probs.max(dim=2)
    modes = classes[:, 0] * 100 + classes[:, 1] * 10 + classes[:, 2]
    return torch.where((confidence >= 0.5).all(dim=1), modes, -1)


def captured(samples: Tensor) -> tuple[int, float]:
    """The modes captured (a sample whose three channels read as clear digits) and the KL divergence of their
    histogram from the uniform one (over the clear samples; inf when there are none)."""
    counts = Counter(m for m in modes_of(samples).tolist() if m >= 0)
    n = sum(counts.values())
    kl = sum(c / n * math.log(c / n * MODES) for c in counts.values()) if n else math.inf
    return len(counts), kl


class StackedGAN(pl.LightningModule):
    """The zoo's DCGAN with three channels (BCE on a sigmoid D, Adam 2e-4, betas (0.5, 0.999))."""

    def __init__(self, collapse_at: int | None = None, collapse: str = "anchors") -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = ConvGenerator(channels=3), ConvDiscriminator(channels=3)
        self.collapse_at, self.collapse = collapse_at, collapse
        self.batches = 0

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        adam = lambda net: torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))  # noqa: E731
        return [adam(self.generator), adam(self.discriminator)]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        (real,) = batch
        self.batches += 1
        if self.collapse_at is not None and self.batches >= self.collapse_at:
            self.generator.latent.mode = self.collapse
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(real.shape[0], LATENT, 1, 1))
        bce = torch.nn.functional.binary_cross_entropy
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad(), self.manual_backward(d_loss), opt_d.step()
        on_fake = self.discriminator(fake)
        g_loss = bce(on_fake, torch.ones_like(on_fake))
        opt_g.zero_grad(), self.manual_backward(g_loss), opt_g.step()
        return {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "fake": fake.detach()}


class TruthAtChecks(pl.Callback):
    """At each diversity check: the modes G captures beside the monitor's values."""

    def __init__(self, monitor: GANMonitor, seed: int) -> None:
        self.monitor, self.rows, self.batches = monitor, [], 0
        self.rng = torch.Generator().manual_seed(5000 + seed)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.batches += 1
        if self.batches % self.monitor.diversity_every_n_batches:
            return
        samples = pl_module.generator(torch.randn(2600, LATENT, 1, 1, generator=self.rng))
        modes, kl = captured(samples)
        self.rows.append({"batch": self.batches, "modes": modes, "kl": kl, **self.monitor.diversity})


def run(seed: int, batches: int, collapse_at: int | None = None, collapse: str = "anchors") -> dict[str, Any]:
    """One run: its checks, what the monitor named first, and where."""
    pl.seed_everything(seed, verbose=False)
    images, _ = stacked(20_000, seed)
    loader = DataLoader(TensorDataset(images), batch_size=64, shuffle=True, drop_last=True)
    monitor = GANMonitor(latent_dim=[LATENT, 1, 1], on_failure="warn", verbose=False, image_every_n_epochs=None)
    truth = TruthAtChecks(monitor, seed)
    epochs = math.ceil(batches / len(loader))
    trainer = pl.Trainer(
        max_epochs=epochs, max_steps=2 * batches, callbacks=[monitor, truth], logger=False, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(StackedGAN(collapse_at, collapse), loader)
    first = monitor.diagnoses[0] if monitor.diagnoses else None
    collapses = [d.batch for d in monitor.diagnoses if d.failure is FailureMode.MODE_COLLAPSE]
    kind = "healthy" if collapse_at is None else f"{'partial' if collapse == 'anchors' else 'full'} @{collapse_at}"
    return {
        "run": f"{kind}, seed {seed}",
        "checks": truth.rows,
        "named first": f"{first.failure.value} at {first.batch}" if first and first.failure else "nothing",
        "collapse named at": collapses[0] if collapses else None,
        "collapse_at": collapse_at,
    }


def measure(quick: bool = False) -> list[dict[str, Any]]:
    """Every run of the study."""
    if quick:
        return [run(0, 300), run(0, 600, collapse_at=200)]
    runs = [run(seed, 1500) for seed in (0, 1, 2)]
    runs.append(run(0, 1500, collapse_at=400))
    runs.append(run(0, 1500, collapse_at=400, collapse="zeros"))
    return runs


def correlations(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Spearman rank correlation of each monitor value with the modes captured, over every check of every run."""
    checks = [c for r in runs for c in r["checks"]]
    modes = [c["modes"] for c in checks]
    return {
        key: float(spearmanr(modes, [c[key] for c in checks]).statistic)
        for key in ("coverage", "diversity", "near_duplicates", "density")
    }


def report(runs: list[dict[str, Any]], note: str, load_before: str, command: str) -> str:
    """The RESULTS.md section."""
    rows = [
        {
            "run": r["run"],
            "modes captured (of 1,000) at each check": ", ".join(f"{c['modes']}" for c in r["checks"]),
            "coverage at each check": ", ".join(f"{c['coverage']:.2f}" for c in r["checks"]),
            "named first": r["named first"],
            "collapse named (batches after onset)": ""
            if r["collapse named at"] is None
            else f"{r['collapse named at']} ({r['collapse named at'] - r['collapse_at']})"
            if r["collapse_at"] is not None
            else str(r["collapse named at"]),
        }
        for r in runs
    ]
    rho = correlations(runs)
    return "\n".join(
        [
            "## Images' modes: stacked digits (1,000 modes)",
            "",
            *provenance(command, note, load_before),
            "",
            markdown_table(rows, list(rows[0])),
            "",
            "Spearman rank correlation with the modes captured, over every check of every run: "
            + ", ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in rho.items())
            + ".",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    quiet_study()
    return study_main(argv, __doc__, "stacked_digits", measure, report, "one short healthy run and a partial collapse")


if __name__ == "__main__":
    raise SystemExit(main())
