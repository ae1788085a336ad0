"""Where induced dominance really sits, on three GANs: the smoothed scores the dominance rules read.

    python benchmarks/dominance_calibration.py                    # every run (about 5 minutes on 2 CPU cores)
    python benchmarks/dominance_calibration.py --write-results    # ... and refresh its section of RESULTS.md

The GANs: the digits example (logits; the '3's), the GAN shaped like Lightning's own example (`tests/template_gan.py`,
all digits, probed), and the DCGAN Fabric loop of `tests/fabric_dcgan.py` (a sigmoid D and `BCELoss`, as Lightning's
and PyTorch's DCGAN tutorials). Each trains healthy, with the discriminator frozen (the generator dominates) and with
the generator frozen while the discriminator learns 10x faster (the discriminator dominates), 3 seeds, the monitor
at its defaults with `on_failure="warn"`. Reported: the range of the smoothed generator and discriminator scores
and of the fake-detection accuracy after batch 50 on healthy runs, the longest stretch with the fake-detection
accuracy near 0, their level over the last 100 batches of the induced runs, and what fired. This is the measurement
behind the thresholds (`d_dominates_generator_below` 0.1, `d_dominates_discriminator_above` 0.9,
`g_dominates_generator_above` 0.8, lowered from 0.9 on it).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import (
    DigitsGAN,
    load_digits_tensor,
    make_dataloader,
    markdown_table,
    provenance,
    study_main,
    trainer,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fabric_dcgan
from lightning.fabric import Fabric
from template_gan import TemplateGAN, digit_images_loader

from lightning_gan_monitor import GANMonitor
from lightning_gan_monitor.fabric import GANMonitor as FabricMonitor

BATCHES = 600
SEEDS = (0, 1, 2)
RUNS = ("healthy", "D frozen", "G frozen, D 10x")
FOOLED_BELOW = 0.05  # the smoothed fake-detection accuracy of a discriminator that takes nearly every fake for real


class TunedTemplate(TemplateGAN):
    """The Lightning-shaped GAN with a learning rate per network (0 freezes one: it steps with no effect)."""

    def __init__(self, lr_g: float = 2e-4, lr_d: float = 2e-4) -> None:
        super().__init__()
        self.lrs = (lr_g, lr_d)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        return [
            torch.optim.Adam(net.parameters(), lr=lr, betas=(hp.b1, hp.b2))
            for net, lr in zip((self.generator, self.discriminator), self.lrs)
        ]


class Scores(pl.Callback):
    """The monitor's smoothed generator and discriminator scores after every batch (host floats: no sync)."""

    def __init__(self, monitor: Any) -> None:
        self.monitor, self.rows = monitor, []

    def on_train_batch_end(self, *args: Any) -> None:
        scores = self.monitor.tracker.scores
        self.rows.append((scores["generator_score"], scores["discriminator_score"], scores["fake_detection_accuracy"]))


def _lightning(gan: str, run: str, seed: int) -> tuple[list[tuple[float, float]], list[Any]]:
    monitor = GANMonitor(on_failure="warn", verbose=False, image_every_n_epochs=None, check_every_n_batches=1)
    scores = Scores(monitor)
    pl.seed_everything(seed, verbose=False)
    if gan == "digits example":
        kwargs = {
            "D frozen": {"freeze_discriminator": True},
            "G frozen, D 10x": {"freeze_generator": True, "lr_d": 2e-3},
        }
        model: pl.LightningModule = DigitsGAN(**kwargs.get(run, {}))
        loader = make_dataloader(load_digits_tensor(3), seed=seed)
    else:
        lrs = {"D frozen": {"lr_d": 0.0}, "G frozen, D 10x": {"lr_g": 0.0, "lr_d": 2e-3}}.get(run, {})
        model, loader = TunedTemplate(**lrs), digit_images_loader(seed=seed)
    trainer([monitor, scores], max_steps=2 * BATCHES).fit(model, loader)
    return scores.rows, monitor.diagnoses


def _fabric(run: str, seed: int) -> tuple[list[tuple[float, float]], list[Any]]:
    monitor = FabricMonitor(
        on_failure="warn",
        verbose=False,
        image_every_n_epochs=None,
        latent_dim=[fabric_dcgan.nz, 1, 1],
        check_every_n_batches=1,  # a check every batch, so the scores below are per batch
    )
    rows: list[tuple[float, float]] = []
    original = monitor.update

    def update(*args: Any, **kwargs: Any) -> bool:
        stop = original(*args, **kwargs)
        s = monitor.tracker.scores
        rows.append((s["generator_score"], s["discriminator_score"], s["fake_detection_accuracy"]))
        return stop

    monitor.update = update  # type: ignore[method-assign]
    lr = {"D frozen": {"lr_d": 0.0}, "G frozen, D 10x": {"lr_g": 0.0, "lr_d": 2e-3}}.get(run, {})
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric_dcgan.train(fabric, monitor, num_epochs=-(-BATCHES // 28), seed=seed, **lr)
    return rows[:BATCHES], monitor.diagnoses


def measure() -> list[dict[str, Any]]:
    rows = []
    for gan in ("digits example", "Lightning-shaped GAN", "DCGAN Fabric loop (sigmoid, BCELoss)"):
        for run in RUNS:
            print(f"{gan}, {run}", flush=True)
            results = [_fabric(run, seed) if gan.startswith("DCGAN") else _lightning(gan, run, seed) for seed in SEEDS]
            rows.append({"gan": gan, "run": run, "results": results})
    return rows


def longest_below(values: list[float], threshold: float) -> int:
    """The most consecutive values below ``threshold``.

    Example:
        >>> longest_below([0.0, 0.0, 0.5, 0.0, 0.0, 0.0], 0.05)
        3
    """
    longest = current = 0
    for value in values:
        current = current + 1 if value < threshold else 0
        longest = max(longest, current)
    return longest


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lines = []
    for row in rows:
        per_seed = []
        for scores, diagnoses in row["results"]:
            generator = [g for g, *_ in scores[50:]]
            last = statistics.median(g for g, *_ in scores[-100:])
            last_d = statistics.median(d for _, d, _ in scores[-100:])
            fake = [f for *_, f in scores[50:]]
            fired = f"{diagnoses[0].failure.value} ({diagnoses[0].batch})" if diagnoses else "nothing"
            discriminator = [d for _, d, _ in scores[50:]]
            ranges = (min(discriminator), max(discriminator), min(fake), max(fake), statistics.median(fake[-100:]))
            stretch = longest_below([f for *_, f in scores], FOOLED_BELOW)  # from the first batch
            per_seed.append((min(generator), max(generator), last, last_d, fired, *ranges, stretch))
        lines.append(
            {
                "GAN": row["gan"],
                "run": row["run"],
                "generator score after batch 50, min-max": "; ".join(f"{a:.2f}-{b:.2f}" for a, b, *_ in per_seed),
                "discriminator score after batch 50, min-max": "; ".join(f"{p[5]:.2f}-{p[6]:.2f}" for p in per_seed),
                "fake-detection accuracy after batch 50, min-max (last 100, median)": "; ".join(
                    f"{p[7]:.2f}-{p[8]:.2f} ({p[9]:.2f})" for p in per_seed
                ),
                f"most batches in a row with fake-detection accuracy < {FOOLED_BELOW:g} (from batch 1)": "; ".join(
                    str(p[10]) for p in per_seed
                ),
                "generator / discriminator score, last 100 (median)": "; ".join(
                    f"{p[2]:.2f} / {p[3]:.2f}" for p in per_seed
                ),
                "first rule that fired (at batch)": "; ".join(p[4] for p in per_seed),
            }
        )
    return lines


COLUMNS = [
    "GAN",
    "run",
    "generator score after batch 50, min-max",
    "discriminator score after batch 50, min-max",
    "fake-detection accuracy after batch 50, min-max (last 100, median)",
    f"most batches in a row with fake-detection accuracy < {FOOLED_BELOW:g} (from batch 1)",
    "generator / discriminator score, last 100 (median)",
    "first rule that fired (at batch)",
]


def report(rows: list[dict[str, Any]], note: str, load_before: str, command: str) -> str:
    return "\n".join(
        [
            "## Dominance: where induced dominance sits (three GANs)",
            "",
            *provenance(command, note, load_before),
            "",
            f"{BATCHES} batches a run, seeds {', '.join(map(str, SEEDS))} (one value per seed, separated by `;`); the "
            "smoothed scores the rules read (bias-corrected EMA, decay 0.9), after every batch.",
            "",
            markdown_table(table(rows), COLUMNS),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return study_main(argv, __doc__, "dominance_calibration", measure, report)


if __name__ == "__main__":
    raise SystemExit(main())
