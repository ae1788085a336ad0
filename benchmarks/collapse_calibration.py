"""The measurements behind the mode-collapse rule's defaults: diversity values over healthy and collapsing runs.

    python benchmarks/collapse_calibration.py    # several minutes on 2 CPU cores

Every run trains with a default ``GANMonitor`` (``on_failure="warn"``, so runs go on) and records the diversity
values at each diversity check (every 100 batches). Healthy runs: the digits example over several seeds, and a GAN
shaped like Lightning's own example (batch norm in G, all ten digits), whose fresh generator is far less diverse
than the data. Collapsing runs: the digits generator ignoring its noise, or getting it scaled by 0.05.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import DigitsGAN, load_digits_tensor, machine, make_dataloader, print_table, trainer
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from template_gan import TemplateGAN, digit_images_loader

from lightning_gan_monitor import GANMonitor


class Scaled(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, z: Tensor) -> Tensor:
        return z * self.scale


class Record(pl.Callback):
    def __init__(self, monitor: GANMonitor) -> None:
        self.monitor, self.rows, self.batches = monitor, [], 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.batches += 1
        if self.batches % self.monitor.diversity_every_n_batches == 0:
            self.rows.append({"batch": self.batches, **self.monitor.diversity})


def digits(seed: int, noise_scale: float = 1.0) -> tuple[pl.LightningModule, Any]:
    model = DigitsGAN()
    if noise_scale != 1.0:
        model.generator.insert(0, Scaled(noise_scale))
    return model, make_dataloader(load_digits_tensor(3), seed=seed)


def template(seed: int) -> tuple[pl.LightningModule, Any]:
    return TemplateGAN(), digit_images_loader(seed=seed)


# (kind, label, seed, model and loader factory, batches)
RUNS: list[tuple[str, str, int, Any, int]] = [
    *[("healthy", f"digits example, seed {s}", s, lambda s=s: digits(s), 1500) for s in (0, 1, 2)],
    *[("healthy", f"Lightning-example GAN (all digits), seed {s}", s, lambda s=s: template(s), 800) for s in (0, 1)],
    ("collapsing", "digits, generator ignores its noise", 0, lambda: digits(0, 0.0), 500),
    ("collapsing", "digits, noise scaled by 0.05", 0, lambda: digits(0, 0.05), 500),
]


def measure() -> list[dict[str, Any]]:
    results = []
    for kind, label, seed, make, batches in RUNS:
        pl.seed_everything(seed, verbose=False)  # the weights' initialisation and the training noise
        model, loader = make()
        monitor = GANMonitor(from_logits=True, on_failure="warn", image_every_n_epochs=None, verbose=False)
        record = Record(monitor)
        trainer([monitor, record], max_steps=2 * batches).fit(model, loader)
        fired = [d.batch for d in monitor.diagnoses if d.failure is not None and d.failure.name == "MODE_COLLAPSE"]
        results.append({"kind": kind, "run": label, "rows": record.rows, "fired": fired[0] if fired else None})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# Mode-collapse calibration, {datetime.date.today()}\n\nMachine: {machine()}\n")
    results = measure()
    table = []
    for r in results:
        rows = r["rows"]
        table.append(
            {
                "kind": r["kind"],
                "run": r["run"],
                "checks": len(rows),
                "diversity first / min / last": (
                    f"{rows[0]['diversity']:.3f} / {min(x['diversity'] for x in rows):.3f} / "
                    f"{rows[-1]['diversity']:.3f}"
                ),
                "near-duplicates first / max / last": (
                    f"{rows[0]['near_duplicates']:.3f} / {max(x['near_duplicates'] for x in rows):.3f} / "
                    f"{rows[-1]['near_duplicates']:.3f}"
                ),
                "coverage last": f"{rows[-1]['coverage']:.3f}",
                "MODE_COLLAPSE fired at": r["fired"] if r["fired"] is not None else "no",
            }
        )
    print_table(table, list(table[0]))
    print("\nPer check (batch: diversity / near-duplicates):")
    for r in results:
        trace = ", ".join(f"{x['batch']}: {x['diversity']:.2f}/{x['near_duplicates']:.2f}" for x in r["rows"])
        print(f"- {r['run']}: {trace}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
