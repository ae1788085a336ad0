"""Share of training time spent inside the monitor's hooks, and the cost of one check and of one log point.

    python benchmarks/hook_share.py                    # about 2 minutes on 2 CPU cores
    python benchmarks/hook_share.py --write-results    # ... and refresh its section of benchmarks/RESULTS.md
    python benchmarks/hook_share.py --batches 300      # shorter (CI's quick test)

The digits GAN (CPU, `torch.set_num_threads(1)`), the monitor's defaults (diversity metrics on, image grids off
without a TensorBoard logger), in three settings: scores from `training_step`'s outputs at the Trainer's
`log_every_n_steps=50` and `=1`, and probing at 50. Every hook of the monitor is timed with `perf_counter`, and so
are its `_check` (the read-back and the decision) and `_log_scores` (a log point); the share is the hooks' time over
the whole `fit`'s wall time. It times whatever `lightning_gan_monitor` is importable, so the same command run
against an older checkout (`PYTHONPATH=path/to/old/checkout`) gives the figures to compare, on the same machine.
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from common import DigitsGAN, load_average, load_digits_tensor, machine, make_dataloader, trainer, write_section

import lightning_gan_monitor
from lightning_gan_monitor import GANMonitor

HOOKS = ("on_train_batch_end", "on_train_epoch_end", "on_train_end", "on_fit_start", "setup")


class TimedMonitor(GANMonitor):
    """The monitor, timing its hooks, its checks and (0.1) its separate log step, each with the batch it ran at."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = [*HOOKS, "_check", *(["_log_scores"] if hasattr(self, "_log_scores") else [])]
        self.timings: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
        for name in names:
            setattr(self, name, self._timed(name, getattr(self, name)))

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.timings[name].append((self._batches_seen, time.perf_counter() - start))

        return timed


def measure(log_every: int, probing: bool, batches: int) -> dict[str, Any]:
    monitor = TimedMonitor(from_logits=True, on_failure="warn")
    torch.manual_seed(0)
    model = DigitsGAN(return_d_outputs=not probing)
    fit = trainer([monitor], max_steps=2 * batches, log_every_n_steps=log_every)
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
    check = statistics.fmean(plain) if plain else math.nan
    return {
        "monitor": lightning_gan_monitor.__version__,
        "setting": f"{'probing' if probing else 'outputs'}, log_every_n_steps={log_every}",
        "batches": monitor._batches_seen,
        "ms / batch": f"{total / monitor._batches_seen * 1e3:.2f}",
        "share in hooks": f"{hooks / total * 100:.2f}%",
        "ordinary batch µs (median)": f"{statistics.median(d for _, d in t['on_train_batch_end']) * 1e6:.0f}",
        "checks": len(per_batch),
        "check µs (mean)": f"{check * 1e6:.0f}" if plain else "every check is a log point",
        "log point µs (mean, on top of a check)": (
            f"{(statistics.fmean(logged) - (check if plain else 0.0)) * 1e6:.0f}" if logged else ""
        ),
    }


COLUMNS = [
    "monitor",
    "setting",
    "batches",
    "ms / batch",
    "share in hooks",
    "ordinary batch µs (median)",
    "checks",
    "check µs (mean)",
    "log point µs (mean, on top of a check)",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = load_average()
    rows = [measure(50, False, args.batches), measure(1, False, args.batches), measure(50, True, args.batches)]
    from common import markdown_table

    text = "\n".join(
        [
            "## Time inside the monitor's hooks",
            "",
            f"Measured {datetime.date.today()} by `python benchmarks/hook_share.py --batches {args.batches}`"
            + (f" ({args.note})" if args.note else "")
            + ".",
            "",
            f"Machine: {machine()}. Load average (1 min): {load_before} at the start, {load_average()} at the end.",
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
