"""False alarms and detections for critics: a WGAN-GP and a hinge GAN watched with `GANMonitor(output="critic")`.

    python benchmarks/critics.py                    # every run (about 5 minutes on 2 CPU cores)
    python benchmarks/critics.py --write-results    # ... and refresh its section of benchmarks/RESULTS.md
    python benchmarks/critics.py --quick            # one seed, short runs, for CI

Both GANs are `tests/critic_gans.py` on all of scikit-learn's digits (28 batches of 64 an epoch): the WGAN-GP takes
five critic steps per generator step, the hinge GAN one. Healthy runs (several seeds) count every rule that fires at
the monitor's defaults (false alarms, mode collapse included); induced failures count the batches to the diagnosis
and check its name: the generator frozen or ten times slower (the critic dominates), the critic frozen (the critic
is fooled: "generator dominates"). The same healthy WGAN-GP runs read as logits (`output="auto"`, which is what a
critic's unbounded scores look like) show what the probability rules make of a critic.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from common import (
    load_digits_tensor,
    make_dataloader,
    markdown_table,
    provenance,
    study_main,
    trainer,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from critic_gans import CriticGAN

from lightning_gan_monitor import GANMonitor

BATCHES_PER_EPOCH = 28


@dataclass(frozen=True)
class Case:
    """A kind of run: the GAN's arguments, the failure expected (None: healthy), how the monitor reads D."""

    name: str
    loss: str
    batches: int
    expected: str | None = None
    gan: dict[str, Any] = field(default_factory=dict)
    output: str = "critic"


CASES = [
    Case("healthy", "wgan-gp", 2520),
    Case("healthy", "hinge", 2016),
    Case("generator frozen", "wgan-gp", 1204, "discriminator_dominates", {"freeze_generator": True}),
    Case("generator frozen", "hinge", 1204, "discriminator_dominates", {"freeze_generator": True}),
    Case("generator 10x slower", "wgan-gp", 1512, "discriminator_dominates", {"lr_g": 1e-5}),
    Case("generator 10x slower", "hinge", 1512, "discriminator_dominates", {"lr_g": 2e-5}),
    Case("critic frozen", "wgan-gp", 812, "generator_dominates", {"freeze_critic": True}),
    Case("critic frozen", "hinge", 812, "generator_dominates", {"freeze_critic": True}),
    Case("healthy, read as logits (output='auto')", "wgan-gp", 2520, output="auto"),
]
SEEDS = (0, 1, 2, 3, 4)
INDUCED_SEEDS = (0, 1, 2)


def run(case: Case, seed: int, batches: int) -> dict[str, Any]:
    """Train one run with a monitor that warns (never stops); every diagnosis, as (failure, batch)."""
    monitor = GANMonitor(output=case.output, on_failure="warn", verbose=False)
    pl.seed_everything(seed, verbose=False)
    trainer([monitor], max_epochs=batches // BATCHES_PER_EPOCH).fit(
        CriticGAN(case.loss, **case.gan), make_dataloader(load_digits_tensor(None), batch_size=64, seed=seed)
    )
    return {
        "seed": seed,
        "diagnoses": [(d.failure.value if d.failure else "converged", d.batch) for d in monitor.diagnoses],
        "updates": monitor.generator_updates,
    }


def measure(quick: bool = False) -> list[dict[str, Any]]:
    """Every case over its seeds (``quick``: one seed, a third of the batches, one case of each kind)."""
    rows = []
    cases = [c for c in CASES if c.loss == "wgan-gp" or c.name == "healthy"] if quick else CASES
    for case in cases:
        seeds = (0,) if quick else SEEDS if case.expected is None else INDUCED_SEEDS
        batches = case.batches // 3 // BATCHES_PER_EPOCH * BATCHES_PER_EPOCH if quick else case.batches
        print(f"{case.loss}, {case.name}: {len(seeds)} seeds x {batches} batches", flush=True)
        rows.append({"case": case, "batches": batches, "runs": [run(case, seed, batches) for seed in seeds]})
    return rows


def _first(diagnoses: list[tuple[str, int]]) -> str:
    return f"{diagnoses[0][0]} at {diagnoses[0][1]}" if diagnoses else "none"


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per case: what fired on each seed, false alarms, detections and their batches."""
    lines = []
    for row in rows:
        case, runs = row["case"], row["runs"]
        fired = [r["diagnoses"] for r in runs]
        line: dict[str, Any] = {
            "GAN": case.loss,
            "run": case.name,
            "read as": case.output,
            "seeds": len(runs),
            "batches": row["batches"],
            "first diagnosis per seed": "; ".join(_first(d) for d in fired),
        }
        if case.expected is None:
            line["result"] = f"{sum(bool(d) for d in fired)} of {len(runs)} runs with a false alarm"
        else:
            right = [d[0][1] for d in fired if d and d[0][0] == case.expected]
            line["result"] = f"{len(right)} of {len(runs)} named {case.expected.replace('_', ' ')} first" + (
                f", at batches {min(right)}-{max(right)}" if right else ""
            )
            later = [next((b for f, b in d if f == case.expected), None) for d in fired]
            later = [b for b, d in zip(later, fired) if b is not None and d[0][0] != case.expected]
            if later:
                line["result"] += f"; named later in {len(later)} more, at batches {min(later)}-{max(later)}"
        lines.append(line)
    return lines


COLUMNS = ["GAN", "run", "read as", "seeds", "batches", "first diagnosis per seed", "result"]


def report(rows: list[dict[str, Any]], note: str, load_before: str, command: str) -> str:
    """The Markdown section of RESULTS.md (also what is printed)."""
    return "\n".join(
        [
            "## Critics: false alarms and detections (WGAN-GP, hinge)",
            "",
            *provenance(command, note, load_before),
            "",
            "`tests/critic_gans.py` on all 1,797 digits (28 batches of 64 an epoch); WGAN-GP: gradient penalty 10, "
            "Adam 1e-4 (0.5, 0.9), five critic steps per generator step; hinge: spectral norm in D, Adam 2e-4 "
            "(0, 0.9), one D step per G step. The monitor's defaults with `output='critic'` and `on_failure='warn'` "
            "(every rule that fires is counted; the run is never stopped). A diagnosis's batch is where the rule's "
            "patience ran out (training would stop at the next check, within 20 batches).",
            "",
            markdown_table(table(rows), COLUMNS),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return study_main(argv, __doc__, "critics", measure, report, quick_help="one seed, short runs (for CI)")


if __name__ == "__main__":
    raise SystemExit(main())
