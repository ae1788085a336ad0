"""What the adapters share: the arguments, the core they drive, the public read-only state, writing a verdict.

:class:`MonitorBase` is the base of the Lightning callback, the Fabric monitor and the plain-loop monitor: each
adds only how its host calls in. :class:`LoopMonitor` is what a loop's monitor does whoever its host is (a plain
loop, a Fabric), fed through a :class:`Host`. Nothing here imports Lightning.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_gan_monitor import tensorboard
from lightning_gan_monitor.arguments import MonitorArguments
from lightning_gan_monitor.diagnosis import Diagnosis, FailureMode, StoppingReason, say
from lightning_gan_monitor.history import RunSummary
from lightning_gan_monitor.monitor import Monitor, Verdict
from lightning_gan_monitor.sources import Models, Observation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_LOG_EVERY", "Host", "LoopMonitor", "MonitorBase", "unwrap"]


def _core(path: str, doc: str) -> property:
    """A read-only attribute of the core (``path`` may be dotted)."""
    names = path.split(".")

    def get(self: MonitorBase) -> Any:
        value: Any = self._monitor
        for name in names:
            value = getattr(value, name)
        return value

    return property(get, doc=doc)


class MonitorBase(MonitorArguments):
    """The arguments, the core :class:`~lightning_gan_monitor.monitor.Monitor` and its public, read-only state.

    Attributes:
        failure: None, or the :class:`~lightning_gan_monitor.FailureMode` that fired first (also under
            ``on_failure="warn"``).
        stopped_batch: None, or the training batch at which the monitor stopped training (set only when it stops, as
            ``EarlyStopping.stopped_epoch``; the batch at which a rule fired is its ``Diagnosis.batch``).
        stopping_reason: a :class:`~lightning_gan_monitor.StoppingReason`.
        stopping_reason_message: the diagnosis text of the rule that stopped training, or None.
        diagnoses: every rule that fired, in order, as :class:`~lightning_gan_monitor.Diagnosis`.
        summary: after training, a :class:`~lightning_gan_monitor.history.RunSummary`: batches in each regime, final
            scores and the verdict (also printed on rank zero when ``verbose``, and written to TensorBoard).
        batches_seen: training batches seen this fit (as ``EarlyStopping.wait_count``, read it, never set it).
        generator_updates: the generator's optimizer steps so far, or None where they cannot be counted.
        source_in_use: where D's outputs come from (``"outputs"``, ``"probe"``, ``"off"``), None before the first
            batch (``source`` is the argument: what was asked for).
        reading: how D's outputs are read (``"probabilities"``, ``"logits"``, ``"critic"``), None until decided.
        diversity_source: where the diversity checks' samples come from (``"generator"``, ``"outputs"``, ``"off"``).
        history: the values logged at each log point (a :class:`~lightning_gan_monitor.history.ScoreHistory`).
        tracker: the score rules' :class:`~lightning_gan_monitor.tracker.ScoreTracker` (``held``,
            ``regime_batches``: read them, never change them).
        collapse_tracker: the mode-collapse rule's :class:`~lightning_gan_monitor.collapse.CollapseTracker`
            (``held``, ``movement``), None without diversity checks or collapse thresholds.
    """

    failure: FailureMode | None = _core("outcome.failure", "The failure mode that fired first, or None.")  # type: ignore[assignment]
    stopped_batch: int | None = _core(
        "outcome.stopped_batch", "The batch at which the monitor stopped training, or None."
    )  # type: ignore[assignment]
    stopping_reason: StoppingReason = _core("outcome.stopping_reason", "Why the monitor stopped training.")  # type: ignore[assignment]
    stopping_reason_message: str | None = _core("outcome.stopping_reason_message", "The diagnosis that stopped it.")  # type: ignore[assignment]
    diagnoses: list[Diagnosis] = _core("outcome.diagnoses", "Every diagnosis, in order.")  # type: ignore[assignment]
    summary: RunSummary | None = _core("summary", "The summary of the last run, after it ended.")  # type: ignore[assignment]
    batches_seen: int = _core("batches_seen", "Training batches seen this fit.")  # type: ignore[assignment]
    generator_updates: int | None = _core("generator_updates", "The generator's optimizer steps so far.")  # type: ignore[assignment]
    source_in_use: str | None = _core("source", "Where D's outputs come from.")  # type: ignore[assignment]
    reading: str | None = _core("reading", "How D's outputs are read.")  # type: ignore[assignment]
    diversity_source: str | None = _core("diversity_source", "Where the diversity checks' samples come from.")  # type: ignore[assignment]
    history: Any = _core("history", "The values logged at each log point.")
    tracker: Any = _core("tracker", "The score rules' tracker (read only).")
    collapse_tracker: Any = _core("collapse_tracker", "The mode-collapse rule's tracker (read only), or None.")

    def _build(self) -> None:
        self._monitor = Monitor(self.config)
        self._warned_tensorboard = False

    @property
    def scores(self) -> dict[str, float]:
        """The latest smoothed scores (what the rules look at), as floats; NaN before the first observation.

        The four probability scores (not for a critic), and the values of ``RANK_NAMES`` for a critic or with
        ``rank_values=True``.
        """
        return self._monitor.scores

    @property
    def diversity(self) -> dict[str, float]:
        """The diversity values of the latest diversity check (``gan/diversity`` ...), as floats; NaN before one."""
        return self._monitor.diversity

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: counters, smoothed scores, the monitor's own RNG states, what fired."""
        return self._monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (or a checkpoint of 0.1 or 0.2), warning of settings that changed."""
        self._monitor.load_state_dict(state_dict)

    def _publish(
        self, verdict: Verdict | None, loggers: Sequence[Any], rank_zero: bool, metrics: dict[str, Any] | None = None
    ) -> None:
        """Log a verdict's values to every logger (and into ``metrics``), its texts and pictures to TensorBoard."""
        if verdict is None:
            return
        if verdict.values:
            for logger in loggers:
                if hasattr(logger, "log_metrics"):  # every Lightning logger, and any object with it
                    logger.log_metrics(dict(verdict.values), step=verdict.batch - 1)
                elif tensorboard.is_summary_writer(logger):
                    for name, value in verdict.values.items():
                        logger.add_scalar(name, value, global_step=verdict.batch - 1)
            if metrics is not None:  # what `self.log(..., logger=False)` would put there, without its cost
                metrics.update({k: torch.tensor(v) for k, v in verdict.values.items() if math.isfinite(v)})
        if verdict.tensorboard and rank_zero:
            for writer in self._writers(loggers):
                for write in verdict.tensorboard:
                    write(writer)

    def _writers(self, loggers: Sequence[Any]) -> list[Any]:
        """The TensorBoard ``SummaryWriter`` of each logger that has one; warns once when there is none."""
        writers, missing = tensorboard.writers(loggers)
        if missing and not self._warned_tensorboard:
            self._warned_tensorboard = True
            say(missing, warning=True)
        return writers

    def plot(self) -> Figure:
        """The report figure of the last run, drawn from the monitor's own history (needs matplotlib).

        The same figure as :func:`lightning_gan_monitor.report.plot_run` draws from the logs, without reading them:
        the scores logged at each log point (at most 1000 points a score: past that they are thinned evenly),
        the failure bands at this monitor's thresholds, a marker at each diagnosis's batch, the summary and the
        diagnoses with their remedies. Save it with :func:`lightning_gan_monitor.report.save_report`.

        Raises:
            ImportError: without matplotlib (the message says how to install it).
            RuntimeError: before any score was logged.

        Example:
            >>> from lightning_gan_monitor import GANMonitor
            >>> GANMonitor().plot()
            Traceback (most recent call last):
            ...
            RuntimeError: GANMonitor.plot() has nothing to draw yet: call it after `trainer.fit(...)` has run ...

        """
        from lightning_gan_monitor.report import plot_history

        summary = str(self.summary) if self.summary is not None else None
        diagnoses = [d.message for d in self.diagnoses]
        return plot_history(self._monitor.history, diagnoses, self.config.saved(), summary)


#: Log points every this many batches when ``log_every_n_batches`` is None (a loop has no ``log_every_n_steps``):
#: the Trainer's default, and the cadence at which Lightning's Fabric DCGAN example prints D(x) and D(G(z)).
DEFAULT_LOG_EVERY = 50

_WRAPPERS = ("lightning.fabric.wrappers", "lightning_fabric.wrappers")
#: What a loop's `update` without D's outputs is told (the core adds how to let it probe).
_MISSING = "`update` got no `d_real` and `d_fake`: pass them (D's outputs on the real and the generated batch)"


class Host(NamedTuple):
    """What the loop's host gives the monitor: where training runs, how to gather, who writes, where to log."""

    device: torch.device
    all_gather: Callable[[Tensor], Tensor] | None
    rank_zero: bool
    loggers: Sequence[Any]


def unwrap(model: Any) -> Any:
    """The module inside a ``DistributedDataParallel`` or ``fabric.setup`` wrapper, else ``model``.

    The monitor runs G and D outside the training step (probes, pictures on rank zero only): through the DDP
    wrapper, whose forward synchronises buffers across processes, a forward on one rank alone would wait for others.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    for name in _WRAPPERS:
        wrappers = sys.modules.get(name)
        if wrappers is not None and isinstance(model, wrappers._FabricModule):
            return model.module
    return model


class LoopMonitor(MonitorBase):
    """What a loop's monitor does whoever the host is (see :class:`GANMonitor`); the subclass says the host."""

    def _build(self) -> None:
        super()._build()
        self._running = False  # between the first `update` of a run and its `end`
        self._fresh = True  # built or loaded: the next run starts from this state, not a reset one
        self._stop = False
        self._epoch = self._batch_in_epoch = 0
        self._models: Models | None = None
        self.metrics: dict[str, Tensor] = {}  # the values logged at the latest log point, as 0-d tensors

    @property
    def should_stop(self) -> bool:
        """Whether the monitor asks the loop to stop (the same on every process)."""
        return self._stop

    def _feed(
        self,
        host: Host,
        d_real: Tensor | None,
        d_fake: Tensor | None,
        *,
        losses: Sequence[Tensor],
        fake: Tensor | None,
        batch: Any,
        batch_idx: int | None,
        generator: Any,
        discriminator: Any,
        generator_stepped: bool,
    ) -> bool:
        if (d_real is None) != (d_fake is None):
            raise ValueError("GANMonitor.update needs both `d_real` and `d_fake` (or neither, to probe), got one")
        self._give(host, generator, discriminator)
        if not self._running:
            self._start(host)
        assert self._models is not None
        if generator_stepped:  # no optimizer hook in a loop: it says whether G stepped (the collapse rule waits)
            self._monitor.generator_stepped()
        given = None
        if d_real is not None and d_fake is not None:
            given = Observation(d_real.detach(), d_fake.detach(), [loss.detach() for loss in losses], fake)
        index = self._batch_in_epoch if batch_idx is None else batch_idx
        self._batch_in_epoch += 1
        verdict = self._monitor.update(
            batch, self._models, given=given, losses=losses, batch_idx=index, all_gather=host.all_gather,
            missing=_MISSING,
        )  # fmt: skip
        if verdict is not None:
            self._publish(verdict, host.loggers, host.rank_zero, self.metrics)
            self._stop = self._stop or verdict.stop
        return self._stop

    def _give(self, host: Host, generator: Any, discriminator: Any) -> None:
        """Keep the latest models given (unwrapped); a change rebuilds what the core runs."""
        old = self._models
        generator = unwrap(generator) if generator is not None else old.generator if old else None
        discriminator = unwrap(discriminator) if discriminator is not None else old.discriminator if old else None
        if old is None or old.generator is not generator or old.discriminator is not discriminator:
            how = (
                "pass `generator=` to `update` (with `discriminator=` and `batch=`, to probe)",
                "pass `discriminator=` to `update` (with `batch=`, to probe)",
            )
            self._models = Models(generator, discriminator, host.device, how_to_give=how)

    def _start(self, host: Host) -> None:
        """The first batch of a run: what ``setup`` and ``on_fit_start`` do in a Trainer."""
        if not self._fresh:  # a second run with the same monitor: start afresh, as a Trainer does for each fit
            self._monitor.reset()
        self._fresh, self._running, self._stop = False, True, False
        self._epoch = self._batch_in_epoch = 0
        self.metrics = {}
        assert self._models is not None
        verdict = self._monitor.start(self._models, DEFAULT_LOG_EVERY, host.rank_zero)
        if host.rank_zero:
            for writer in self._writers(host.loggers):
                tensorboard.write_score_layout(writer, [self.prefix])
        self._publish(verdict, host.loggers, host.rank_zero)

    def _end_epoch(self, host: Host, generator: Any) -> None:
        if not self._running:
            return  # no batch this run
        self._give(host, generator, None)
        assert self._models is not None
        every, draw = self.image_every_n_epochs, False
        if host.rank_zero and every is not None and (self._epoch + 1) % every == 0:
            draw = bool(self._writers(host.loggers))
        self._publish(self._monitor.end_epoch(self._models, self._epoch, draw), host.loggers, host.rank_zero)
        self._epoch += 1
        self._batch_in_epoch = 0

    def _end(self, host: Host) -> None:
        if not self._running:
            return
        # (`metrics` keep the last log point's values, as a Trainer's `callback_metrics` do after fit)
        self._publish(self._monitor.end(host.all_gather), host.loggers, host.rank_zero)
        self._running = False  # `should_stop` and `metrics` stay readable until the next run

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; load it before the first ``update``: the run then carries on from it."""
        super().load_state_dict(state_dict)
        self._fresh = True
