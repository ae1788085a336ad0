"""Train ``DigitsGAN`` with a :class:`GANMonitor` on two CPU processes (DDP, gloo) and write what each rank saw.

Run as ``python tests/ddp_script.py OUTDIR [options]``; ``tests/test_ddp.py`` does. ``--strategy`` picks the launcher:
``ddp`` (Lightning relaunches this script, with the same arguments, for rank 1), ``ddp_spawn`` (two fresh processes
to which the trainer, the model and the monitor are pickled) or ``ddp_fork``; ``--package`` picks
``pytorch_lightning`` or ``lightning`` (the example compiled for it, see ``tests/packages.py``). Each rank writes,
from inside the process that trained (a spawned worker's objects never come back to this one),
``OUTDIR/rank{r}.json`` (the monitor's verdict, the batches it trained, the ``gan/*`` values in
``trainer.callback_metrics``, every time the monitor logged, and its local state after the first check) and
``OUTDIR/rank{r}_outputs.pt`` (the ``d_real`` and ``d_fake`` logits each training step returned, per batch).

``--dominate-on-rank R --from-batch K`` makes rank ``R`` alone return scripted outputs from its ``K``-th batch on
(real logits +8, fake logits -8); ``R = -1``: every rank does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import arm_fault
from packages import example, monitor_class
from packages import pl as lightning_api

from lightning_gan_monitor.functional import SCORE_NAMES, gan_score_stats

# Chosen at import time: the classes below subclass that package's, and a spawned worker re-imports this script with
# the same arguments to find them.
PACKAGE = "lightning" if "--package=lightning" in sys.argv else "pytorch_lightning"
pl = lightning_api(PACKAGE)
digits_gan = example("digits_gan", PACKAGE)
DigitsGAN, load_digits_tensor, make_dataloader = (
    digits_gan.DigitsGAN,
    digits_gan.load_digits_tensor,
    digits_gan.make_dataloader,
)
GANMonitor = monitor_class(PACKAGE)

#: Logit magnitude of the scripted outputs: sigmoid(8) ~ 0.99966.
SCRIPTED_LOGIT = 8.0


class RecordingGAN(DigitsGAN):
    """``DigitsGAN`` that records what each training step returns and, on one rank, can script those outputs.

    Args:
        dominate_on_rank: rank that returns scripted outputs, or None for none.
        from_batch: first batch (1-based, counted on that rank) whose outputs are scripted.
        kwargs: passed to :class:`DigitsGAN`.

    """

    def __init__(self, dominate_on_rank: int | None = None, from_batch: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dominate_on_rank = dominate_on_rank
        self.from_batch = from_batch
        self.recorded: list[tuple[Tensor, Tensor]] = []

    def training_step(self, batch: list[Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        outputs = super().training_step(batch, batch_idx)
        assert outputs is not None
        if self.dominate_on_rank in (self.global_rank, -1) and self.batches_trained >= self.from_batch:
            outputs = {
                "d_real": torch.full_like(outputs["d_real"], SCRIPTED_LOGIT),
                "d_fake": torch.full_like(outputs["d_fake"], -SCRIPTED_LOGIT),
            }
        self.recorded.append((outputs["d_real"].detach().cpu(), outputs["d_fake"].detach().cpu()))
        return outputs


class Reporter(pl.Callback):
    """Writes this rank's report at the end of fit, in the process that trained."""

    def __init__(self, outdir: Path, max_epochs: int) -> None:
        self.outdir = outdir
        self.max_epochs = max_epochs
        self.first_check: dict[str, Any] = {}

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        monitor = _monitor(trainer)
        if monitor.batches_seen == 1:  # the monitor (before this callback) has just checked, on every rank
            d_real, d_fake = pl_module.recorded[0]
            own = gan_score_stats(d_real, d_fake, from_logits=True).tolist()
            self.first_check = {
                "running": list(
                    monitor.state_dict()["log_stats"][: len(own)]
                ),  # the statistics (the rank sums follow, zero here)
                "own": own,
                "detector_batches": monitor.tracker.batches,
            }

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        monitor = _monitor(trainer)
        rank = trainer.global_rank
        # what the monitor logged at its log points (every `log_every_n_batches`; not the end of fit's extra one)
        series = {name: monitor.history.series(f"gan/{name}") for name in SCORE_NAMES}
        batches = series[SCORE_NAMES[0]][0]
        every = monitor.log_every_n_batches
        logged = [
            (b, {f"gan/{n}": series[n][1][i] for n in SCORE_NAMES}) for i, b in enumerate(batches) if b % every == 0
        ]
        report = {
            "rank": rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "launcher": type(trainer.strategy.launcher).__name__ if trainer.strategy.launcher else None,
            "start_method": getattr(trainer.strategy.launcher, "_start_method", None),
            "package": PACKAGE,
            "failure": monitor.failure.value if monitor.failure else None,
            "stopped_batch": monitor.stopped_batch,
            "stopping_reason": monitor.stopping_reason.value,
            "diagnoses": [{"batch": d.batch, "held_for": d.held_for} for d in monitor.diagnoses],
            "batches": pl_module.batches_trained,
            "monitor_batches_seen": monitor.batches_seen,
            "max_batches": trainer.num_training_batches * self.max_epochs,
            "global_step": trainer.global_step,
            "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("gan/")},
            "log_batches": [batch for batch, _ in logged],
            "logged": [scores for _, scores in logged],
            "first_check": self.first_check,
            "diversity_source": monitor.diversity_source,
        }
        self.outdir.mkdir(parents=True, exist_ok=True)
        d_real, d_fake = zip(*pl_module.recorded) if pl_module.recorded else ((), ())
        outputs = {"d_real": torch.stack(d_real), "d_fake": torch.stack(d_fake)}
        torch.save(outputs, self.outdir / f"rank{rank}_outputs.pt")
        (self.outdir / f"rank{rank}.json").write_text(json.dumps(report, indent=2))
        trainer.strategy.barrier()  # both reports are written before rank 0, the process the test waits on, exits


def _monitor(trainer: Any) -> Any:
    (monitor,) = [c for c in trainer.callbacks if isinstance(c, GANMonitor)]
    return monitor


def main(argv: list[str] | None = None) -> int:
    """Train on two processes and write each rank's report to OUTDIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dominate-on-rank", type=int, default=None)
    parser.add_argument("--from-batch", type=int, default=1)
    parser.add_argument("--check-every", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--digit", type=int, default=-1, help="-1: all digits (28 batches per rank and epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-rank", type=int, default=-1, help="the generator fails outside training there")
    parser.add_argument("--strategy", choices=["ddp", "ddp_spawn", "ddp_fork"], default="ddp")
    parser.add_argument("--package", choices=["pytorch_lightning", "lightning"], default="pytorch_lightning")
    parser.add_argument(
        "--prefit-batches",
        type=int,
        default=0,
        help="first train the monitor alone for this many batches (one process)",
    )
    args = parser.parse_args(argv)
    if args.package != PACKAGE:
        parser.error("write `--package=lightning` as one argument (it is read before parsing)")

    pl.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(1)  # two processes share two cores
    loader = make_dataloader(load_digits_tensor(None if args.digit < 0 else args.digit), seed=args.seed)
    if args.strategy == "ddp_spawn":
        # A DataLoader's `torch.Generator` cannot be sent to a spawned process on our CI machines (torch's
        # file-descriptor sharing of its state fails); Lightning's DistributedSampler shuffles with its own seed.
        loader = torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True, drop_last=True)
    monitor = GANMonitor(
        patience=args.patience,
        from_logits=True,
        check_every_n_batches=args.check_every,
        log_every_n_batches=args.log_every,
        verbose=False,
    )
    if args.prefit_batches:
        # Leaves state in the monitor (counters, metric states, its probe generator) from before the processes start.
        prefit = pl.Trainer(
            max_steps=2 * args.prefit_batches,  # two optimizer steps per batch
            callbacks=[monitor],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
            default_root_dir=args.outdir,
        )
        prefit.fit(DigitsGAN(), loader)
        assert monitor.batches_seen == args.prefit_batches
    model = RecordingGAN(dominate_on_rank=args.dominate_on_rank, from_batch=args.from_batch)
    if int(os.environ.get("LOCAL_RANK", 0)) == args.fault_rank:  # (Lightning's `ddp` sets it for the other rank)
        arm_fault(model.generator, after_steps=100)  # from the first diversity check (batch 100) on
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        # "ddp", but: DigitsGAN's generator takes no part in the discriminator's backward pass (two
        # `manual_backward` calls per step), and a short collective timeout keeps a dead rank from hanging the other
        strategy=pl.strategies.DDPStrategy(
            start_method=args.strategy.removeprefix("ddp_") if args.strategy != "ddp" else "popen",
            find_unused_parameters=True,
            timeout=timedelta(seconds=60),
        ),
        max_epochs=args.max_epochs,
        callbacks=[monitor, Reporter(args.outdir, args.max_epochs)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=args.outdir,
    )
    trainer.fit(model, loader)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
