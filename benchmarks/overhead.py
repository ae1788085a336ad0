"""What the monitor costs: time per training batch with it / without it, side by side in one run.

    python benchmarks/overhead.py            # full run (several minutes on 2 CPU cores)
    python benchmarks/overhead.py --quick    # under a minute, for CI: the ratios are reported, never asserted

Every configuration trains the same seeded GAN for the same batches; configurations are interleaved within each
repetition, so slow phases of a shared machine hit all of them. A configuration's figure is its mean time per
batch after a warm-up (a mean, not a median, because probes and checks happen every few batches), divided by the
baseline's of the same repetition; the table shows the median over repetitions.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import (
    BatchTimer,
    ConvGAN,
    DigitsGAN,
    load_digits_tensor,
    machine,
    make_dataloader,
    print_table,
    synthetic_images_loader,
    trainer,
)
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_gan_monitor import GANMonitor


class TimedMonitor(GANMonitor):
    """The monitor, timing its own per-batch hook."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook_seconds: list[float] = []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        super().on_train_batch_end(*args, **kwargs)
        self.hook_seconds.append(time.perf_counter() - start)


def hand_logged(base: type) -> type:
    """What a user would build by hand: `self.log` of the generator score every batch (+ EarlyStopping on it)."""

    class HandLogged(base):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().training_step(batch, batch_idx)
            self.log("generator_score", torch.sigmoid(out["d_fake"]).mean())
            return out

    return HandLogged


def digits_model(return_d_outputs: bool = True, hand: bool = False) -> DigitsGAN:
    return (hand_logged(DigitsGAN) if hand else DigitsGAN)(return_d_outputs=return_d_outputs)


def conv_model(return_d_outputs: bool = True, hand: bool = False) -> ConvGAN:
    return (hand_logged(ConvGAN) if hand else ConvGAN)(return_d_outputs=return_d_outputs)


MODELS: dict[str, tuple[Callable[..., Any], Callable[[], Any]]] = {
    "digits MLP": (digits_model, lambda: make_dataloader(load_digits_tensor(None), batch_size=32)),
    "DCGAN 32x32": (conv_model, lambda: synthetic_images_loader(batch_size=64)),
}

# name -> (model kwargs, callbacks factory, TensorBoard on, the baseline it is compared with)
CONFIGS: dict[str, tuple[dict[str, bool], Callable[[], list], bool, str]] = {
    "baseline": ({}, lambda: [], False, "baseline"),
    "scores from outputs": ({}, lambda: [TimedMonitor(from_logits=True)], False, "baseline"),
    "probing": ({"return_d_outputs": False}, lambda: [TimedMonitor(from_logits=True)], False, "baseline"),
    "by hand: self.log + EarlyStopping": (
        {"hand": True},
        lambda: [EarlyStopping("generator_score", mode="max", patience=10**9, check_on_train_epoch_end=True)],
        False,
        "baseline",
    ),
    "baseline + TensorBoard": ({}, lambda: [], True, "baseline + TensorBoard"),
    "scores from outputs + TensorBoard": (
        {},
        lambda: [TimedMonitor(from_logits=True)],
        True,
        "baseline + TensorBoard",
    ),
}


def run_once(model_name: str, config: str, batches: int, warmup: int, logdir: Path) -> dict[str, float]:
    make_model, make_loader = MODELS[model_name]
    model_kwargs, make_callbacks, tensorboard, _ = CONFIGS[config]
    torch.manual_seed(0)
    timer = BatchTimer()
    callbacks = [*make_callbacks(), timer]
    logger = TensorBoardLogger(logdir, name=config.replace(" ", "_")) if tensorboard else False
    gc.collect()
    # Both GANs step two optimizers per batch: `max_steps` counts optimizer steps.
    trainer(callbacks, logger=logger, max_steps=2 * batches).fit(make_model(**model_kwargs), make_loader())
    durations = timer.per_batch(skip=warmup)
    hooks = [c for c in callbacks if isinstance(c, TimedMonitor)]
    hook = hooks[0].hook_seconds[warmup:] if hooks else []
    return {
        "mean": statistics.fmean(durations),
        "hook_median_us": statistics.median(hook) * 1e6 if hook else float("nan"),
        "hook_mean_us": statistics.fmean(hook) * 1e6 if hook else float("nan"),
    }


def overhead_table(model_name: str, batches: int, warmup: int, repetitions: int, logdir: Path) -> list[dict]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for _ in range(repetitions):
        for name in CONFIGS:  # interleaved: every repetition runs every configuration once
            runs[name].append(run_once(model_name, name, batches, warmup, logdir))
    rows = []
    for name, (_, _, _, baseline) in CONFIGS.items():
        ratios = [r["mean"] / b["mean"] for r, b in zip(runs[name], runs[baseline])]
        rows.append(
            {
                "model": model_name,
                "configuration": name,
                "ms / batch": f"{statistics.median(r['mean'] for r in runs[name]) * 1e3:.2f}",
                "ratio": f"{statistics.median(ratios):.3f}",
                "ratio range": f"{min(ratios):.3f}-{max(ratios):.3f}",
                "hook µs (median / mean)": (
                    f"{statistics.median(r['hook_median_us'] for r in runs[name]):.0f} / "
                    f"{statistics.median(r['hook_mean_us'] for r in runs[name]):.0f}"
                    if runs[name][0]["hook_median_us"] == runs[name][0]["hook_median_us"]
                    else ""
                ),
            }
        )
    return rows


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


class MemoryProbe(BatchTimer):
    """Resident memory every `every` batches."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every, self.samples = every, []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ends.append(0.0)
        if len(self.ends) % self.every == 0:
            self.samples.append((len(self.ends), rss_mib()))


def memory_run(batches: int) -> dict[str, Any]:
    """Resident memory over a long run of the digits GAN with the monitor (scores from outputs, then probing)."""
    results = {}
    for label, kwargs in (("scores from outputs", {}), ("probing", {"return_d_outputs": False})):
        probe = MemoryProbe(every=max(batches // 10, 1))
        torch.manual_seed(0)
        trainer([GANMonitor(from_logits=True, on_failure="warn"), probe], max_steps=2 * batches).fit(
            DigitsGAN(**kwargs), make_dataloader(load_digits_tensor(None), batch_size=32)
        )
        (first_batch, first), (last_batch, last) = probe.samples[0], probe.samples[-1]
        results[label] = {
            "batches": last_batch,
            f"RSS at batch {first_batch} (MiB)": f"{first:.1f}",
            f"RSS at batch {last_batch} (MiB)": f"{last:.1f}",
            "growth (MiB)": f"{last - first:+.1f}",
            "max (MiB)": f"{max(m for _, m in probe.samples):.1f}",
        }
    return results


def measure(quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The overhead table's rows and the long run's memory figures."""
    if quick:
        plan, long_batches = {"digits MLP": (120, 20, 1), "DCGAN 32x32": (30, 5, 1)}, 1000
    else:
        plan, long_batches = {"digits MLP": (600, 100, 5), "DCGAN 32x32": (150, 20, 3)}, 20_000
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for model_name, (batches, warmup, repetitions) in plan.items():
            print(f"{model_name}: {batches} batches ({warmup} warm-up) x {len(CONFIGS)} configurations x {repetitions}")
            rows += overhead_table(model_name, batches, warmup, repetitions, Path(logdir))
    return rows, memory_run(long_batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (under a minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine steadier)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# GANMonitor overhead, {datetime.date.today()}\n\nMachine: {machine()}\n")
    rows, memory = measure(args.quick)
    print()
    print_table(rows, ["model", "configuration", "ms / batch", "ratio", "ratio range", "hook µs (median / mean)"])
    print("\nResident memory over a long run of the digits GAN:\n")
    columns = ["configuration", *next(iter(memory.values())).keys()]
    print_table([{"configuration": k, **v} for k, v in memory.items()], columns)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
