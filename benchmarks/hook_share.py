"""Share of training time spent inside the monitor's hooks, and the cost of one check and of one log point.

    python benchmarks/hook_share.py                          # about a minute on 2 CPU cores
    python benchmarks/hook_share.py --compare ../old-checkout  # the same, first for another version of the package
    python benchmarks/hook_share.py --write-results          # ... and refresh its section of benchmarks/RESULTS.md

The digits GAN (CPU, `torch.set_num_threads(1)`), the monitor's defaults (diversity metrics on, image grids off
without a TensorBoard logger), in three settings: scores from `training_step`'s outputs at the Trainer's
`log_every_n_steps=50` and `=1`, and probing at 50. Every hook of the monitor is timed with `perf_counter`, and so
are its `_check` (the read-back and the decision) and `_log_scores` (a log point); the share is the hooks' time over
the whole `fit`'s wall time. `--compare CHECKOUT` first runs the same measurement with another checkout's package
(e.g. `git worktree add ../v0.1 v0.1`), so both versions are measured in one run on the same machine.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

import lightning_gan_monitor
from lightning_gan_monitor import GANMonitor

HOOKS = ("on_train_batch_end", "on_train_epoch_end", "on_train_end", "on_fit_start", "setup")


def seen(monitor: Any) -> int:
    """Batches the monitor saw: `batches_seen` (0.3 and later, public) or `_batches_seen` (before)."""
    return monitor.batches_seen if hasattr(type(monitor), "batches_seen") else monitor._batches_seen


class TimedMonitor(GANMonitor):
    """The monitor, timing its hooks, its checks and (0.1) its separate log step, each with the batch it ran at."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = [*HOOKS, "_check", *(["_log_scores"] if hasattr(self, "_log_scores") else [])]
        self.timings: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
        for name in names:
            # 0.3 and later: the check is the core's (`_monitor`); before, the callback's own
            owner = self if hasattr(self, name) else self._monitor
            setattr(owner, name, self._timed(name, getattr(owner, name)))

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.timings[name].append((seen(self), time.perf_counter() - start))

        return timed


def measure(log_every: int, probing: bool, batches: int) -> dict[str, Any]:
    monitor = TimedMonitor(from_logits=True, on_failure="warn")
    torch.manual_seed(0)
    model = DigitsGAN(return_d_outputs=not probing)
    fit = trainer([monitor], max_steps=2 * batches, log_every_n_steps=log_every)
    gc.collect()  # what earlier fits left for the collector is not charged to this one's hooks
    start = time.perf_counter()
    fit.fit(model, make_dataloader(load_digits_tensor(None), batch_size=32))
    total = time.perf_counter() - start
    t = monitor.timings
    hooks = sum(d for name in HOOKS for _, d in t[name])
    # A check and the logging of the same batch are one unit (in 0.1 `_log_scores` ran right after `_check`; in 0.2
    # a log point is part of the check): the cost of a check is that of the checks at batches that are not log
    # points, and the cost of a log point is what a check at a log point costs on top.
    per_batch: dict[int, float] = {}
    for name in ("_check", "_log_scores"):
        for batch, duration in t.get(name, []):
            per_batch[batch] = per_batch.get(batch, 0.0) + duration
    last = max(per_batch)
    plain = [d for b, d in per_batch.items() if b % log_every and b not in (1, last)]
    logged = [d for b, d in per_batch.items() if b % log_every == 0 and b != last]
    # medians: a rare slow check (the first one that builds a buffer, a lazy import) would swamp a mean of 60
    check = statistics.median(plain) if plain else math.nan
    ends = t["on_train_batch_end"]
    diversity = [d for b, d in ends if b % 100 == 0 and b != last]  # a check (and, at 50 or 1, a log point) inside
    return {
        "monitor": lightning_gan_monitor.__version__,
        "setting": f"{'probing' if probing else 'outputs'}, log_every_n_steps={log_every}",
        "batches": seen(monitor),
        "ms / batch": f"{total / seen(monitor) * 1e3:.2f}",
        "share in hooks": f"{hooks / total * 100:.2f}%",
        "ordinary batch µs (median)": f"{statistics.median(d for _, d in t['on_train_batch_end']) * 1e6:.0f}",
        "checks": len(per_batch),
        "check µs (median)": f"{check * 1e6:.0f}" if plain else "every check is a log point",
        "log point µs (median, on top of a check)": (
            f"{(statistics.median(logged) - (check if plain else 0.0)) * 1e6:.0f}" if logged else ""
        ),
        "diversity check µs (median, with its check)": f"{statistics.median(diversity) * 1e6:.0f}" if diversity else "",
        "log point µs (median, a check included)": f"{statistics.median(logged) * 1e6:.0f}" if logged else "",
        "first batch µs": f"{ends[0][1] * 1e6:.0f}",
    }


COLUMNS = [
    "monitor",
    "setting",
    "batches",
    "ms / batch",
    "share in hooks",
    "ordinary batch µs (median)",
    "checks",
    "check µs (median)",
    "log point µs (median, on top of a check)",
    "log point µs (median, a check included)",
    "diversity check µs (median, with its check)",
    "first batch µs",
]


def rows_of(batches: int) -> list[dict[str, Any]]:
    measure(50, False, 200)  # warm-up: first-time costs in the process (lazy imports, allocations) land here
    return [measure(50, False, batches), measure(1, False, batches), measure(50, True, batches)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--compare", metavar="CHECKOUT", help="also time the package of another checkout, first")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (what --compare reads)")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.json:
        print(json.dumps(rows_of(args.batches)))
        return 0
    load_before = load_average()
    rows = []
    if args.compare:
        env = {**os.environ, "PYTHONPATH": str(Path(args.compare).resolve())}
        command = [sys.executable, __file__, "--batches", str(args.batches), "--json"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    rows += rows_of(args.batches)
    command = f"python benchmarks/hook_share.py --batches {args.batches}"
    if args.compare:
        command += " --compare CHECKOUT_OF_THE_OTHER_VERSION"
    text = "\n".join(
        [
            "## Time inside the monitor's hooks",
            "",
            f"Measured {datetime.date.today()} by `{command}`" + (f" ({args.note})" if args.note else "") + ".",
            "",
            f"Machine: {machine()}. Load average (1 min): {load_before} at the start, {load_average()} at the end.",
            "",
            "The digits GAN (CPU, one thread, batches of 32, manual optimisation), the monitor's defaults (diversity "
            "metrics every 100 batches; no logger, so no image grids). `share in hooks`: time inside the monitor's "
            "hooks over the `fit`'s wall time. `check µs`: a check at a batch that is not a log point; `log point "
            "µs`: what a check at a log point costs on top of that (in 0.1 a log point was a separate step after "
            "the check). Diversity checks are inside the hooks' share, not in the check's cost; `diversity check µs`: "
            "a batch with a diversity check (batches 100, 200, ...: log points too), its check and log point included: "
            "compare with `log point µs (median, a check included)`; "
            "`first batch µs`: the first batch's hook (from 0.3 on it draws G's first samples for the collapse rule).",
            "",
            markdown_table(rows, COLUMNS),
        ]
    )
    print(text)
    if args.write_results:
        write_section("hook_share", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
