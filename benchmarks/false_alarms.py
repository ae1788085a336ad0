"""False alarms: every rule that fires on healthy GANs of several kinds at the monitor's defaults, and how close their
diversity values come to the mode-collapse thresholds.

    python benchmarks/false_alarms.py                    # every run (about 10 minutes on 2 CPU cores)
    python benchmarks/false_alarms.py --write-results    # ... and refresh its section of benchmarks/RESULTS.md
    python benchmarks/false_alarms.py --quick            # one seed of each kind, short runs, for CI

Healthy runs: the digits example (the '3's, batch 32) at two learning rates, the GAN shaped like Lightning's own
example (`tests/template_gan.py`: all digits, `training_step` returns nothing, so the monitor probes), and the
MLP GAN of `mixture_modes.py` on the ring of 8 and the grid of 25 Gaussians. The monitor runs with its defaults and
`on_failure="warn"`, so every firing is counted and no run is cut short. At each diversity check the values are
recorded with the generator's updates, to see how far they stay from the "at once" collapse thresholds
(`collapse_at_once_*`) and for how many checks in a row they stay below a diversity of 0.35 (what a rule catching
the ring's long natural collapse, `mixture_modes.py`, would have to fire on).
The critics' healthy runs are in `critics.py`; the induced failures' latencies in `latency.py`.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
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
from mixture_modes import MixtureGAN, sample
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from template_gan import TemplateGAN, digit_images_loader

from lightning_gan_monitor import GANMonitor

DEFAULTS = inspect.signature(GANMonitor).parameters
AT_ONCE = (
    DEFAULTS["collapse_at_once_diversity_below"].default,
    DEFAULTS["collapse_at_once_near_duplicates_above"].default,
)
LOW_DIVERSITY = 0.35


@dataclass(frozen=True)
class Kind:
    """A kind of healthy run: how to build the GAN and its data, and how long to train."""

    name: str
    batches: int
    seeds: tuple[int, ...]


KINDS = [
    Kind("digits example, lr 2e-4", 1500, (0, 1, 2, 3, 4)),
    Kind("digits example, lr 1e-4", 1500, (0, 1, 2, 3, 4)),
    Kind("Lightning-shaped GAN (probed), all digits", 840, (0, 1, 2, 3, 4)),
    Kind("ring of 8 Gaussians", 1500, (0, 1, 2)),
    Kind("grid of 25 Gaussians", 1500, (0, 1, 2)),
]


class Checks(pl.Callback):
    """The monitor's diversity values and the generator's updates at each diversity check."""

    def __init__(self, monitor: GANMonitor) -> None:
        self.monitor, self.rows, self.batches = monitor, [], 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.batches += 1
        if self.batches % self.monitor.diversity_every_n_batches == 0:
            updates = self.monitor.generator_updates
            self.rows.append({"batch": self.batches, "updates": updates, **self.monitor.diversity})


def build(kind: Kind, seed: int) -> tuple[pl.LightningModule, DataLoader]:
    if kind.name.startswith("digits"):
        lr = 1e-4 if "1e-4" in kind.name else 2e-4
        return DigitsGAN(lr_g=lr, lr_d=lr), make_dataloader(load_digits_tensor(3), seed=seed)
    if kind.name.startswith("Lightning"):
        return TemplateGAN(), digit_images_loader(seed=seed)
    name = "ring" if kind.name.startswith("ring") else "grid"
    data = sample(name, 20_000, torch.Generator().manual_seed(seed))
    return MixtureGAN(), DataLoader(TensorDataset(data), batch_size=256, shuffle=True, drop_last=True)


def run(kind: Kind, seed: int, batches: int) -> dict[str, Any]:
    monitor = GANMonitor(on_failure="warn", verbose=False, image_every_n_epochs=None)
    checks = Checks(monitor)
    pl.seed_everything(seed, verbose=False)
    model, loader = build(kind, seed)
    trainer([monitor, checks], max_steps=2 * batches).fit(model, loader)  # two optimizer steps a batch
    counted = [r for r in checks.rows if (r["updates"] or r["batch"]) >= monitor.diversity_every_n_batches]
    return {
        "seed": seed,
        "diagnoses": [(d.failure.value if d.failure else "converged", d.batch) for d in monitor.diagnoses],
        "min_diversity": min((r["diversity"] for r in counted), default=float("nan")),
        "max_near_duplicates": max((r["near_duplicates"] for r in counted), default=float("nan")),
        "at_once": [r["batch"] for r in counted if r["diversity"] < AT_ONCE[0] and r["near_duplicates"] > AT_ONCE[1]],
        "low_run": longest_run([r["diversity"] < LOW_DIVERSITY for r in counted]),
    }


def longest_run(flags: list[bool]) -> int:
    """The most consecutive true flags.

    Example:
        >>> longest_run([True, False, True, True])
        2
    """
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def measure(quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        seeds = kind.seeds[:1] if quick else kind.seeds
        batches = 300 if quick else kind.batches
        print(f"{kind.name}: {len(seeds)} seeds x {batches} batches", flush=True)
        rows.append({"kind": kind, "batches": batches, "runs": [run(kind, s, batches) for s in seeds]})
    return rows


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lines = []
    for row in rows:
        runs = row["runs"]
        fired = [r for r in runs if r["diagnoses"]]
        lines.append(
            {
                "healthy GAN": row["kind"].name,
                "runs x batches": f"{len(runs)} x {row['batches']}",
                "runs with a firing (defaults)": f"{len(fired)}"
                + (": " + "; ".join(f"seed {r['seed']}: {r['diagnoses']}" for r in fired) if fired else ""),
                "lowest diversity at a check": f"{min(r['min_diversity'] for r in runs):.3f}",
                "highest near-duplicates at a check": f"{max(r['max_near_duplicates'] for r in runs):.3f}",
                AT_ONCE_COLUMN: sum(len(r["at_once"]) for r in runs),
                LOW_COLUMN: max(r["low_run"] for r in runs),
            }
        )
    return lines


AT_ONCE_COLUMN = f"checks meeting the 'at once' values (diversity < {AT_ONCE[0]:g}, near-duplicates > {AT_ONCE[1]:g})"
LOW_COLUMN = f"most checks in a row with diversity < {LOW_DIVERSITY:g}"
COLUMNS = [
    "healthy GAN",
    "runs x batches",
    "runs with a firing (defaults)",
    "lowest diversity at a check",
    "highest near-duplicates at a check",
    AT_ONCE_COLUMN,
    LOW_COLUMN,
]


def report(rows: list[dict[str, Any]], note: str, load_before: str, command: str) -> str:
    total = sum(len(r["runs"]) for r in rows)
    alarms = sum(1 for r in rows for run in r["runs"] if run["diagnoses"])
    return "\n".join(
        [
            "## False alarms on healthy GANs",
            "",
            *provenance(command, note, load_before),
            "",
            f"{alarms} of {total} healthy runs had a rule fire at the monitor's defaults (`on_failure='warn'`: every "
            "firing counted, no run cut short). The diversity values are those of the checks after the generator's "
            "first 100 updates (where a rule may fire).",
            "",
            markdown_table(table(rows), COLUMNS),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    quick_help = "one seed of each kind, short runs (for CI)"
    return study_main(argv, __doc__, "false_alarms", measure, report, quick_help=quick_help)


if __name__ == "__main__":
    raise SystemExit(main())
