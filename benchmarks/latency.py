"""How many batches a run trains past the onset of a failure before it is stopped: GANMonitor vs EarlyStopping.

    python benchmarks/latency.py                    # full run (a few minutes on 2 CPU cores)
    python benchmarks/latency.py --write-results    # ... and refresh its section of benchmarks/RESULTS.md
    python benchmarks/latency.py --quick            # one seed, shorter epochs and an earlier onset, for CI

The digits GAN trains on all of scikit-learn's digits repeated 4 times (224 batches per epoch, so epochs are long)
and a failure is switched on at a known batch (300): the generator freezes while the discriminator speeds up (D
dominates), the discriminator freezes while the generator speeds up (G dominates), a NaN is planted in D, or the
generator starts ignoring its noise (mode collapse: it draws one image), or it does so while the discriminator speeds
up (mode collapse while D dominates: the cause must be named first). The same runs without a switch (healthy) show
whether an approach stops healthy training too (a false alarm).

EarlyStopping watches the generator score that the module logs each batch with `self.log`, with a divergence
threshold equal to the monitor's rule (0.1 for D dominating, 0.8 for G dominating):
- "EarlyStopping, epoch end": its default, checked at the end of each training epoch on the epoch's mean;
- "EarlyStopping, every batch": the most favourable setting we found: checked after a one-batch validation run
  every batch (`val_check_interval=1`) on the latest batch's raw value, so it reacts at once but also to noise.
For mode collapse, which the generator score does not show, EarlyStopping watches `gan/diversity` instead (logged by
a GANMonitor that only warns, every `diversity_every_n_batches` = 100 batches) with a divergence threshold equal to the
monitor's `collapse_diversity_below` (0.2); at epoch end it sees the latest check's value (logged per check, not
averaged), and checking it every batch is as early as it can react. The healthy runs are watched both ways.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from common import (
    DigitsGAN,
    load_average,
    load_digits_tensor,
    machine,
    make_dataloader,
    markdown_table,
    trainer,
    write_section,
)
from digits_gan import IgnoreNoise
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from lightning_gan_monitor import GANMonitor
from lightning_gan_monitor.config import DEFAULT_COLLAPSE_DIVERSITY_BELOW

SWITCH_AT = 300


class LoggedGAN(DigitsGAN):
    """The example's GAN, logging its generator score each batch (what EarlyStopping can watch)."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        score = torch.sigmoid(out["d_fake"]).mean()
        self.log("generator_score", score, on_step=True, on_epoch=True)
        self.batch_scores.append(score.item())
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> None:  # only there so EarlyStopping can run often
        pass

    def on_fit_start(self) -> None:
        self.batch_scores: list[float] = []


class Switch(pl.Callback):
    """At batch `at`, change the GAN's hyperparameters and learning rates: the failure's onset. `ignore_noise=True`
    also puts an `IgnoreNoise` in front of the generator, as `DigitsGAN(ignore_noise=True)` has from the start."""

    def __init__(self, at: int, lr_g: float | None = None, lr_d: float | None = None, **hparams: Any) -> None:
        self.at, self.lr, self.hparams = at, (lr_g, lr_d), hparams

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.batches_trained == self.at:
            pl_module.hparams.update(self.hparams)
            if self.hparams.get("ignore_noise"):
                pl_module.generator.insert(0, IgnoreNoise())
            for optimizer, lr in zip(pl_module.optimizers(), self.lr):
                if lr is not None:
                    for group in optimizer.optimizer.param_groups:
                        group["lr"] = lr


#: EarlyStopping's signal for mode collapse (the default is the generator score `generator_score`).
DIVERSITY = {"watch": "gan/diversity", "threshold": DEFAULT_COLLAPSE_DIVERSITY_BELOW, "mode": "max"}

FAILURES: dict[str, dict[str, Any]] = {
    "discriminator dominates": {"switch": {"freeze_generator": True, "lr_d": 2e-3}, "threshold": 0.1, "mode": "max"},
    "generator dominates": {"switch": {"freeze_discriminator": True, "lr_g": 2e-3}, "threshold": 0.8, "mode": "min"},
    "non-finite": {"nan": True, "threshold": 0.1, "mode": "max"},
    "mode collapse": {"switch": {"ignore_noise": True}, **DIVERSITY},
    "mode collapse while D dominates": {"switch": {"ignore_noise": True, "lr_d": 2e-3}, **DIVERSITY},
    "healthy (no failure)": {"threshold": 0.1, "mode": "max"},
    # the monitor's runs would repeat the row above: only EarlyStopping, on the other signal
    "healthy (no failure), EarlyStopping on gan/diversity": {**DIVERSITY, "only": "EarlyStopping"},
}


def early_stopping(failure: dict[str, Any], **kwargs: Any) -> list[pl.Callback]:
    """EarlyStopping on the failure's signal; on `gan/diversity`, after a GANMonitor that logs it and never stops."""
    watch = failure.get("watch", "generator_score")
    callbacks: list[pl.Callback] = []
    if watch.startswith("gan/"):
        callbacks.append(GANMonitor(from_logits=True, on_failure="warn", verbose=False))
    # strict=False: `gan/diversity` exists only from the first diversity check on (batch 100)
    stopper = EarlyStopping(
        watch,
        mode=failure["mode"],
        divergence_threshold=failure["threshold"],
        patience=10**6,
        strict=not watch.startswith("gan/"),
        **kwargs,
    )
    return [*callbacks, stopper]


APPROACHES: dict[str, tuple[Callable[[dict], list], dict[str, Any]]] = {
    "GANMonitor (defaults: patience 100)": (lambda f: [GANMonitor(from_logits=True)], {}),
    "GANMonitor (patience 25)": (lambda f: [GANMonitor(patience=25, from_logits=True)], {}),
    "EarlyStopping, epoch end": (lambda f: early_stopping(f), {}),
    "EarlyStopping, every batch": (
        lambda f: early_stopping(f, check_on_train_epoch_end=False),
        {"val_check_interval": 1, "limit_val_batches": 1},
    ),
}


@dataclass(frozen=True)
class Plan:
    """Seeds, the batch at which the failure starts, how many times the digits are repeated in an epoch (each copy
    is 56 batches of 32), and how many batches the run may go on after the onset and two epochs."""

    seeds: tuple[int, ...]
    switch_at: int
    repeat: int
    extra: int
    approaches: tuple[str, ...] = tuple(APPROACHES)
    failures: tuple[str, ...] = tuple(FAILURES)

    @property
    def epoch(self) -> int:
        return self.repeat * (len(load_digits_tensor(None)) // 32)

    @property
    def max_batches(self) -> int:
        return self.switch_at + 2 * self.epoch + self.extra


FULL = Plan(seeds=(0, 1, 2), switch_at=SWITCH_AT, repeat=4, extra=100)  # 224-batch epochs, 848 batches at most
# Every failure and kind of approach, shorter: one seed, 56-batch epochs, onset at batch 60, 302 batches at most (a
# healthy run reaches the third diversity check, batch 300, where the collapse rule's patience would run out), the
# monitor with its defaults only (a shorter patience is the same code), and the healthy runs watched by EarlyStopping
# on the generator score only (the collapse runs already watch `gan/diversity`).
QUICK = Plan(
    seeds=(0,),
    switch_at=60,
    repeat=1,
    extra=130,
    approaches=tuple(a for a in APPROACHES if "patience 25" not in a),
    failures=tuple(f for f in FAILURES if "gan/diversity" not in f),
)


def run(failure: str, approach: str, seed: int, plan: Plan) -> dict[str, Any]:
    spec = FAILURES[failure]
    make_callbacks, trainer_kwargs = APPROACHES[approach]
    callbacks = make_callbacks(spec)
    if "switch" in spec:
        callbacks.append(Switch(plan.switch_at, **spec["switch"]))
    pl.seed_everything(seed, verbose=False)
    data = load_digits_tensor(None).repeat(plan.repeat, 1)
    model = LoggedGAN(**({"nan_at_batch": plan.switch_at} if spec.get("nan") else {}))
    val = DataLoader(TensorDataset(data[:32]), batch_size=32)
    # two optimizer steps per batch until a network freezes: cap by epochs, and stop at max_batches ourselves
    callbacks.append(StopAt(plan.max_batches))
    trainer(callbacks, max_epochs=10**6, **trainer_kwargs).fit(model, make_dataloader(data, seed=seed), val)
    trained = model.batches_trained
    stopped = trained < plan.max_batches
    monitors = [c for c in callbacks if isinstance(c, GANMonitor)]
    stopping = [m for m in monitors if m.on_failure == "stop"]  # not the one that only logs for EarlyStopping
    diagnosis = stopping[0].diagnoses[0] if stopping and stopping[0].diagnoses else None
    fired = diagnosis.batch if diagnosis else None
    rule = diagnosis.failure.value if diagnosis and diagnosis.failure else None
    return {"trained": trained, "stopped": stopped, "fired_at": fired, "rule": rule}


class StopAt(pl.Callback):
    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.batches_trained >= self.batches:
            trainer.should_stop = True


def measure(plan: Plan) -> list[dict[str, Any]]:
    """One row per failure and approach."""
    onset = plan.switch_at
    rows = []
    for failure in plan.failures:
        for approach in plan.approaches:
            if not approach.startswith(FAILURES[failure].get("only", "")):
                continue
            results = [run(failure, approach, seed, plan) for seed in plan.seeds]
            row: dict[str, Any] = {"failure": failure, "approach": approach, "results": results}
            if "healthy" in failure:
                row["false alarm (stopped, at batch)"] = ", ".join(
                    f"yes, {r['trained']}" if r["stopped"] else "no" for r in results
                )
            else:
                past = [r["trained"] - onset for r in results if r["stopped"]]
                row["batches past onset before stop (per seed)"] = ", ".join(
                    str(r["trained"] - onset) if r["stopped"] else f"not stopped (>{plan.max_batches - onset})"
                    for r in results
                )
                row["median"] = statistics.median(past) if past else ""
                row["rule fired at (GANMonitor)"] = ", ".join(
                    str(r["fired_at"] - onset) for r in results if r["fired_at"] is not None
                )
                row["rule that fired"] = ", ".join(sorted({r["rule"] for r in results if r["rule"]}))
            rows.append(row)
    return rows


COLUMNS = [
    "failure",
    "approach",
    "batches past onset before stop (per seed)",
    "median",
    "rule fired at (GANMonitor)",
    "rule that fired",
    "false alarm (stopped, at batch)",
]


def report(rows: list[dict[str, Any]], plan: Plan, note: str, load_before: str) -> str:
    """The Markdown section of RESULTS.md (also what is printed)."""
    return "\n".join(
        [
            "## Detection latency",
            "",
            f"Measured {datetime.date.today()} by `python benchmarks/latency.py{'' if plan is FULL else ' --quick'}`"
            + (f" ({note})" if note else "")
            + ".",
            "",
            f"Machine: {machine()}. Load average (1 min): {load_before} at the start, {load_average()} at the end.",
            "",
            f"The digits GAN with {plan.epoch}-batch epochs; the failure starts at batch {plan.switch_at}; seeds "
            f"{', '.join(map(str, plan.seeds))}; a run that is not stopped ends after {plan.max_batches} batches. "
            "`batches past onset before stop`: batches trained from the onset to the end of training. `rule fired "
            "at`: where the monitor's diagnosis places the moment its rule's patience ran out (training stops at the "
            "next check, up to `check_every_n_batches - 1` = 19 batches later). EarlyStopping watches the generator "
            "score the module logs with `self.log` each batch, with a divergence threshold equal to the monitor's "
            "rule (0.1 when D dominates, 0.8 when G dominates); `epoch end` is its default, `every batch` the most "
            "favourable setting we found (a one-batch validation run after every batch so that it checks the "
            "latest batch's raw value). Mode collapse (from the onset the generator ignores its noise and draws one "
            "image; in the second collapse row the discriminator also learns 10x faster from then on) does not show "
            "in the generator score: there EarlyStopping watches `gan/diversity`, logged by a "
            "GANMonitor that only warns at each diversity check (every 100 batches), with a divergence threshold "
            "equal to the monitor's `collapse_diversity_below` (0.2); the healthy runs are watched on both signals. "
            "`rule that fired`: the failure mode of the monitor's first diagnosis.",
            "",
            markdown_table(rows, COLUMNS),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short epochs (for CI)")
    parser.add_argument("--write-results", action="store_true", help="refresh the section of benchmarks/RESULTS.md")
    parser.add_argument("--note", default="", help="said next to the date in RESULTS.md, e.g. how busy the machine was")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    plan = QUICK if args.quick else FULL
    load_before = load_average()
    text = report(measure(plan), plan, args.note, load_before)
    print(text)
    if args.write_results:
        write_section("latency", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
