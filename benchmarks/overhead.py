"""What the monitor costs: time per training batch with it / without it, side by side in one run.

    python benchmarks/overhead.py                    # full run (about an hour on 2 CPU cores)
    python benchmarks/overhead.py --reduced          # fewer repetitions and batches (about 10 minutes)
    python benchmarks/overhead.py --write-results    # ... and refresh its section of benchmarks/RESULTS.md
    python benchmarks/overhead.py --quick            # about half a minute, for CI: ratios reported, never asserted
    python benchmarks/overhead.py --accelerator gpu  # the same on one GPU (its own section of RESULTS.md; minutes)

Every configuration trains the same seeded GAN for the same batches; configurations are interleaved within each
repetition, so slow phases of a shared machine hit all of them. A configuration's figure is its mean time per
batch after a warm-up (a mean, not a median, because probes, checks and log points happen every few batches),
divided by the baseline's of the same repetition; the table shows the median over repetitions, in wall time and in
the main thread's CPU time (steadier when other processes share the cores).

It also reports the monitor's own hook in microseconds per batch, resident memory and the monitor's own tensor
memory over a long run (20,000 batches of the digits GAN), and how the cost of the mode-collapse (diversity) metrics
grows with the number of samples.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import (
    BatchTimer,
    ConvGAN,
    DigitsGAN,
    load_average,
    load_digits_tensor,
    machine,
    make_dataloader,
    markdown_table,
    synthetic_images_loader,
    trainer,
    write_section,
)
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from lightning_gan_monitor import GANMonitor, functional


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


@dataclass(frozen=True)
class Model:
    """A GAN to measure on: its class (both take `return_d_outputs`), its data, and the shape of one sample."""

    module: type[pl.LightningModule]
    loader: Callable[[], Any]
    image_shape: tuple[int, ...]  # (C, H, W) of one generated sample, for the monitor's image grids

    def make(self, probing: bool, hand: bool) -> pl.LightningModule:
        return (hand_logged(self.module) if hand else self.module)(return_d_outputs=not probing)


MODELS: dict[str, Model] = {
    "digits MLP": Model(DigitsGAN, lambda: make_dataloader(load_digits_tensor(None), batch_size=32), (1, 8, 8)),
    "DCGAN 32x32": Model(ConvGAN, lambda: synthetic_images_loader(batch_size=64), (1, 32, 32)),
}


def monitor(**kwargs: Any) -> Callable[[Model], list[pl.Callback]]:
    """Callbacks factory: a timed monitor with `kwargs`; a callable value is called with the model (e.g. its shape)."""

    def make(model: Model) -> list[pl.Callback]:
        resolved = {k: v(model) if callable(v) else v for k, v in kwargs.items()}
        # Warn, never stop: a rule that fires (the DCGAN's D wins after about 150 batches) must not cut a run short.
        return [TimedMonitor(from_logits=True, on_failure="warn", **resolved)]

    return make


def hand_early_stopping(model: Model) -> list[pl.Callback]:
    return [EarlyStopping("generator_score", mode="max", patience=10**9, check_on_train_epoch_end=True)]


@dataclass(frozen=True)
class Config:
    """One row of the overhead table: a way of training the model, compared with `baseline`."""

    name: str
    callbacks: Callable[[Model], list[pl.Callback]] = field(default=lambda model: [])
    probing: bool = False  # `training_step` returns nothing, so the monitor probes
    hand: bool = False  # the module logs its generator score with `self.log` every batch
    tensorboard: bool = False
    baseline: str = "baseline"


# The scores alone: the mode-collapse metrics (on by default) and the image grids turned off.
SCORES_ONLY = dict(diversity_every_n_batches=None, image_every_n_epochs=None)
# The mode-collapse metrics (every 100 batches) and the image grids (every 10 epochs) at their default frequencies.
WITH_COLLAPSE = dict(image_shape=lambda model: list(model.image_shape))

# One configuration per line.
CONFIGS: list[Config] = [
    Config("baseline"),
    Config("scores from outputs", monitor(**SCORES_ONLY)),
    Config("defaults: scores from outputs + mode collapse + image grids", monitor(**WITH_COLLAPSE)),
    Config("probing", monitor(**SCORES_ONLY), probing=True),
    Config("probing + mode collapse + image grids", monitor(**WITH_COLLAPSE), probing=True),
    Config("by hand: self.log + EarlyStopping", hand_early_stopping, hand=True),
    Config("baseline + TensorBoard", tensorboard=True, baseline="baseline + TensorBoard"),
    Config(
        "scores from outputs + TensorBoard", monitor(**SCORES_ONLY), tensorboard=True, baseline="baseline + TensorBoard"
    ),
    Config(
        "probing + mode collapse + image grids + TensorBoard",
        monitor(**WITH_COLLAPSE),
        probing=True,
        tensorboard=True,
        baseline="baseline + TensorBoard",
    ),
]
CONFIG_BY_NAME = {config.name: config for config in CONFIGS}

# The configurations of the long memory run (names from CONFIGS).
MEMORY_CONFIGS: list[str] = ["scores from outputs", "probing", "probing + mode collapse + image grids"]

# The diversity metrics whose cost is measured against the number of samples n: name -> function of an (n, d)
# tensor of samples (taken as the generated set; a real set of the same size is derived from it).
DIVERSITY_METRICS: dict[str, Callable[[Tensor], Tensor]] = {
    "diversity ratio": lambda x: functional.diversity_ratio(x * 0.5, x),
    "near-duplicate rate": lambda x: functional.near_duplicate_rate(x * 0.5, x),
    "density and coverage": lambda x: functional.density_coverage(x * 0.5, x)[1],
    "all four (one check)": lambda x: functional.diversity_scores(x * 0.5, x),
}


@dataclass(frozen=True)
class Plan:
    """How much to measure: per model (batches, warm-up, repetitions), the long run, the diversity sizes."""

    models: dict[str, tuple[int, int, int]]
    long_batches: int
    diversity_sizes: tuple[int, ...]
    diversity_repeats: int
    command: str = "python benchmarks/overhead.py"


FULL = Plan({"digits MLP": (600, 100, 5), "DCGAN 32x32": (150, 20, 3)}, 20_000, (64, 128, 256, 512, 1024, 2048), 20)
# The digits GAN (where the targets are) as in FULL with fewer repetitions, a short DCGAN run and a 5,000-batch long
# run: about 10 minutes on 2 quiet cores, against about an hour for FULL.
REDUCED = Plan(
    {"digits MLP": (600, 100, 3), "DCGAN 32x32": (40, 10, 1)},
    5_000,
    (64, 128, 256, 512, 1024, 2048),
    10,
    "python benchmarks/overhead.py --reduced",
)
# Every configuration path, with few batches: for CI (reports, never asserts a timing).
QUICK = Plan(
    {"digits MLP": (40, 10, 1), "DCGAN 32x32": (4, 1, 1)}, 300, (64, 256), 2, "python benchmarks/overhead.py --quick"
)


# On one GPU: both GANs, longer DCGAN runs (its step is where a GPU user's time goes), a 3,000-batch long run.
GPU = Plan(
    {"digits MLP": (600, 100, 3), "DCGAN 32x32": (300, 50, 3)},
    3_000,
    (256, 1024, 4096),
    10,
    "python benchmarks/overhead.py --accelerator gpu",
)

#: Where training runs: "cpu" or "gpu" (Lightning's accelerator names); set by `--accelerator`.
ACCELERATOR = "cpu"


def run_once(model_name: str, config: Config, batches: int, warmup: int, logdir: Path) -> dict[str, float]:
    model = MODELS[model_name]
    torch.manual_seed(0)
    timer = BatchTimer()
    callbacks = [*config.callbacks(model), timer]
    logger = TensorBoardLogger(logdir, name=config.name.replace(" ", "_")) if config.tensorboard else False
    gc.collect()
    # Both GANs step two optimizers per batch: `max_steps` counts optimizer steps.
    trainer(callbacks, logger=logger, max_steps=2 * batches, accelerator=ACCELERATOR, devices=1).fit(
        model.make(config.probing, config.hand), model.loader()
    )
    hooks = [c for c in callbacks if isinstance(c, TimedMonitor)]
    hook = hooks[0].hook_seconds[warmup:] if hooks else []
    return {
        "mean": statistics.fmean(timer.per_batch(skip=warmup)),
        "cpu_mean": statistics.fmean(timer.per_batch(skip=warmup, cpu=True)),
        "hook_median_us": statistics.median(hook) * 1e6 if hook else math.nan,
        "hook_mean_us": statistics.fmean(hook) * 1e6 if hook else math.nan,
    }


def overhead_table(model_name: str, batches: int, warmup: int, repetitions: int, logdir: Path) -> list[dict]:
    runs: dict[str, list[dict[str, float]]] = {config.name: [] for config in CONFIGS}
    for _ in range(repetitions):
        for config in CONFIGS:  # interleaved: every repetition runs every configuration once
            runs[config.name].append(run_once(model_name, config, batches, warmup, logdir))
    rows = []
    for config in CONFIGS:
        mine, base = runs[config.name], runs[config.baseline]
        ratios = [r["mean"] / b["mean"] for r, b in zip(mine, base)]
        cpu_ratios = [r["cpu_mean"] / b["cpu_mean"] for r, b in zip(mine, base)]
        timed = not math.isnan(mine[0]["hook_median_us"])
        rows.append(
            {
                "model": model_name,
                "configuration": config.name,
                "compared with": config.baseline if config.name != config.baseline else "",
                "ms / batch": f"{statistics.median(r['mean'] for r in mine) * 1e3:.2f}",
                "ratio": f"{statistics.median(ratios):.3f}",
                "ratio range": f"{min(ratios):.3f}-{max(ratios):.3f}",
                "CPU-time ratio": f"{statistics.median(cpu_ratios):.3f}",
                "hook µs (median / mean)": (
                    f"{statistics.median(r['hook_median_us'] for r in mine):.0f} / "
                    f"{statistics.median(r['hook_mean_us'] for r in mine):.0f}"
                    if timed
                    else ""
                ),
            }
        )
    return rows


OVERHEAD_COLUMNS = [
    "model",
    "configuration",
    "compared with",
    "ms / batch",
    "ratio",
    "ratio range",
    "CPU-time ratio",
    "hook µs (median / mean)",
]


def rss_mib() -> float:
    """Resident memory of this process."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor reachable from `obj`'s attributes (lists, dicts, nested objects), each storage once.

    This is the monitor's own memory: its running sums, smoothed scores, counters, pending batches, buffers.
    """
    seen_objects: set[int] = set()
    storages: dict[int, int] = {}

    def visit(value: Any) -> None:
        if isinstance(value, Tensor):
            storage = value.untyped_storage()
            storages[storage.data_ptr() or id(storage)] = storage.nbytes()
            return
        if isinstance(value, torch.Generator):
            storages[id(value)] = value.get_state().numel()
            return
        if id(value) in seen_objects or isinstance(value, (str, bytes, int, float, bool, type(None))):
            return
        seen_objects.add(id(value))
        if isinstance(value, dict):
            items: Sequence[Any] = list(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
        elif isinstance(value, torch.nn.Module):  # also torchmetrics metrics, whose states are plain attributes
            items = [*value.parameters(), *value.buffers(), *vars(value).values()]
        elif hasattr(value, "__dict__") and any(
            cls.__module__.startswith("lightning_gan_monitor") for cls in type(value).__mro__
        ):
            items = list(vars(value).values())
        else:
            return
        for item in items:
            visit(item)

    visit(obj)
    return sum(storages.values())


class MemoryProbe(pl.Callback):
    """Resident memory and the monitor's tensor memory at the given batches."""

    def __init__(self, at: Sequence[int], monitor: GANMonitor) -> None:
        self.at, self.monitor, self.batches = set(at), monitor, 0
        self.samples: list[tuple[int, float, int]] = []

    def on_train_batch_end(self, *args: Any) -> None:
        self.batches += 1
        if self.batches in self.at:
            gc.collect()
            self.samples.append((self.batches, rss_mib(), tensor_bytes(self.monitor)))


def memory_run(batches: int) -> list[dict[str, Any]]:
    """Resident memory and the monitor's tensor memory over a long run of the digits GAN, per configuration."""
    model = MODELS["digits MLP"]
    # Multiples of 100 (of the default 20-batch checks and 50-batch log points): right after a check and a log point,
    # so every sample finds the monitor in the same phase (its pending references, at most 20 batches' worth, just
    # released; the logged scores' buffers allocated).
    at = sorted({max(100, round(b / 100) * 100) for b in (batches // 10, batches // 2, batches)})
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for name in MEMORY_CONFIGS:
            config = CONFIG_BY_NAME[name]
            callbacks = config.callbacks(model)
            watched = next(c for c in callbacks if isinstance(c, GANMonitor))
            watched.on_failure = "warn"  # a long run must not be cut short by a diagnosis
            probe = MemoryProbe(at, watched)
            logger = TensorBoardLogger(logdir, name=name.replace(" ", "_")) if config.tensorboard else False
            torch.manual_seed(0)
            trainer([*callbacks, probe], logger=logger, max_steps=2 * batches, accelerator=ACCELERATOR, devices=1).fit(
                model.make(config.probing, config.hand), model.loader()
            )
            row: dict[str, Any] = {"configuration": name}
            for batch, rss, own in probe.samples:
                row[f"batch {batch}"] = f"{rss:.1f} MiB / {own / 1024:.1f} KiB"
            first, last = probe.samples[0], probe.samples[-1]
            row["RSS growth"] = f"{last[1] - first[1]:+.1f} MiB"
            row["monitor tensors growth"] = f"{(last[2] - first[2]) / 1024:+.1f} KiB"
            row["_rss"] = [s[1] for s in probe.samples]
            row["_own"] = [s[2] for s in probe.samples]
            rows.append(row)
    return rows


def diversity_cost(
    metrics: dict[str, Callable[[Tensor], Tensor]], sizes: Sequence[int], repeats: int, dim: int = 64
) -> list[dict[str, Any]]:
    """Milliseconds per call of each diversity metric on n samples of `dim` features (median of `repeats`)."""
    rows = []
    g = torch.Generator().manual_seed(0)
    device = "cuda" if ACCELERATOR == "gpu" else "cpu"
    for n in sizes:
        samples = torch.randn(n, dim, generator=g).to(device)
        row: dict[str, Any] = {"n": n}
        for name, fn in metrics.items():
            fn(samples)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn(samples)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            row[name] = f"{statistics.median(times) * 1e3:.2f}"
        rows.append(row)
    return rows


def measure(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """The overhead table's rows, the long run's memory rows and the diversity cost rows."""
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for model_name, (batches, warmup, repetitions) in plan.models.items():
            print(f"{model_name}: {batches} batches ({warmup} warm-up) x {len(CONFIGS)} configurations x {repetitions}")
            rows += overhead_table(model_name, batches, warmup, repetitions, Path(logdir))
    print(f"memory: {plan.long_batches} batches x {len(MEMORY_CONFIGS)} configurations")
    memory = memory_run(plan.long_batches)
    diversity = diversity_cost(DIVERSITY_METRICS, plan.diversity_sizes, plan.diversity_repeats)
    return {"overhead": rows, "memory": memory, "diversity": diversity}


def targets(results: dict[str, list[dict[str, Any]]], long_batches: int) -> list[dict[str, Any]]:
    """The issue's targets on the digits GAN, each with the measured figure and whether it is met."""

    def ratio(config: str) -> float | None:
        found = [r for r in results["overhead"] if r["model"] == "digits MLP" and r["configuration"] == config]
        return float(found[0]["ratio"]) if found else None

    rows = []
    for config, limit in (("scores from outputs", 1.02), ("probing + mode collapse + image grids", 1.05)):
        measured = ratio(config)
        rows.append(
            {
                "target": f"digits GAN, {config}: ratio <= {limit}",
                "measured": "not measured (no such configuration in this version)" if measured is None else measured,
                "met": "" if measured is None else ("yes" if measured <= limit else "no"),
            }
        )
    for row in results["memory"]:
        own_growth = row["_own"][-1] - row["_own"][0]
        rss = row["_rss"]
        rows.append(
            {
                "target": f"memory flat over {long_batches} batches, {row['configuration']}: the monitor's "
                "tensors do not grow, resident memory grows by less than 2%",
                "measured": f"monitor tensors {own_growth / 1024:+.1f} KiB, RSS {rss[-1] - rss[0]:+.1f} MiB "
                f"({(rss[-1] - rss[0]) / rss[0] * 100:+.1f}%)",
                "met": "yes" if own_growth <= 0 and rss[-1] - rss[0] <= 0.02 * rss[0] else "no",
            }
        )
    return rows


def report(results: dict[str, list[dict[str, Any]]], plan: Plan, note: str, load_before: str) -> str:
    """The Markdown section of RESULTS.md (also what is printed)."""
    memory_columns = ["configuration", *(k for k in results["memory"][0] if k.startswith("batch ")), "RSS growth"]
    memory_columns.append("monitor tensors growth")
    parts = [
        "## Overhead" + (" on one GPU" if ACCELERATOR == "gpu" else ""),
        "",
        f"Measured {datetime.date.today()} by `{plan.command}`" + (f" ({note})" if note else "") + ".",
        "",
        f"Machine: {machine()}"
        + (f", {torch.cuda.get_device_name()}" if ACCELERATOR == "gpu" else "")
        + f". Load average (1 min): {load_before} at the start, {load_average()} at the end.",
        "",
        "Time per training batch with the monitor divided by the same training without it (`ratio`: wall time; "
        "`CPU-time ratio`: the main thread's CPU time, which leaves out the time other processes held the cores). "
        "Batches, warm-up, repetitions: "
        + "; ".join(f"{m} {b}, {w}, {r}" for m, (b, w, r) in plan.models.items())
        + ". The hook's own cost is the monitor's `on_train_batch_end` (median: an ordinary batch; mean: with the "
        "checks every 20 batches and the log points every 50).",
        "",
        markdown_table(results["overhead"], OVERHEAD_COLUMNS),
        "",
        f"### Targets (digits GAN, {ACCELERATOR.upper()})",
        "",
        markdown_table(targets(results, plan.long_batches), ["target", "measured", "met"]),
        "",
        f"### Memory over {plan.long_batches} batches of the digits GAN",
        "",
        "Each cell: resident memory of the process / the monitor's own tensors (every tensor reachable from it), "
        "sampled at multiples of 100 batches, right after a check and a log point, when the references to the "
        "pending batches' D outputs (at most `check_every_n_batches` = 20 batches' worth) have just been released.",
        "",
        markdown_table(results["memory"], memory_columns),
        "",
        "### Cost of the diversity metrics against the number of samples n",
        "",
    ]
    if DIVERSITY_METRICS:
        parts += [
            f"Milliseconds per call on n generated and n real samples of 64 features (median of "
            f"{plan.diversity_repeats}).",
            "",
            markdown_table(results["diversity"], ["n", *DIVERSITY_METRICS]),
        ]
    else:
        parts.append("No diversity metrics in this version of the package (they come with the mode-collapse rule).")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (about half a minute)")
    parser.add_argument("--reduced", action="store_true", help="fewer repetitions and batches (about 10 minutes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared machine steadier)")
    parser.add_argument("--write-results", action="store_true", help="refresh the section of benchmarks/RESULTS.md")
    parser.add_argument("--note", default="", help="said next to the date in RESULTS.md, e.g. how busy the machine was")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu", help="train on the CPU or on one GPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    plan = (
        GPU
        if args.accelerator == "gpu" and not args.quick
        else QUICK
        if args.quick
        else REDUCED
        if args.reduced
        else FULL
    )
    load_before = load_average()
    text = report(measure(plan), plan, args.note, load_before)
    print(text)
    if args.write_results:
        write_section("overhead", text, name="overhead-gpu" if ACCELERATOR == "gpu" else "overhead")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
