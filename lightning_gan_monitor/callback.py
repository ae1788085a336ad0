"""The Lightning callback: glue between the trainer's hooks and the plain objects of the other modules.

Per batch: :mod:`~lightning_gan_monitor.sources` finds D's outputs, :mod:`~lightning_gan_monitor.accumulate` sums them
on the device, :mod:`~lightning_gan_monitor.diversity` keeps samples. At a check: one read-back, then
:mod:`~lightning_gan_monitor.rules` decides and :mod:`~lightning_gan_monitor.diagnosis` words it; at a log point the
host values go to every logger. This module imports neither Lightning package (see ``pytorch_lightning.py`` and
``lightning.py`` for the two callback classes).
"""

from __future__ import annotations

import contextlib
import functools
import math
from array import array
from typing import TYPE_CHECKING, Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_gan_monitor import tensorboard
from lightning_gan_monitor.accumulate import Accumulator, Reading, Window, values_from
from lightning_gan_monitor.arguments import DEFAULT_CHECK_EVERY, MonitorArguments
from lightning_gan_monitor.cause import decide
from lightning_gan_monitor.checkpoint import MonitorState
from lightning_gan_monitor.diagnosis import Diagnosis, FailureMode, GANMonitorWarning, StoppingReason, say, turned_off
from lightning_gan_monitor.diversity import DiversityWatch
from lightning_gan_monitor.history import RunSummary, ScoreHistory, collapsed_batches, regime_counts, summarize
from lightning_gan_monitor.names import DIVERSITY_NAMES, NUM_STATS, RANK_NAMES, RANK_STAT_NAMES, SCORE_NAMES
from lightning_gan_monitor.rules import VALUE_NAMES, Firing
from lightning_gan_monitor.sources import Sources, real_samples
from lightning_gan_monitor.tracker import ScoreTracker

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from matplotlib.figure import Figure

__all__ = ["GANMonitorBase", "GANMonitorWarning"]


class GANMonitorBase(MonitorState, MonitorArguments):
    r"""Watch a GAN while it trains: scores, failure diagnoses with remedies, and early stopping.

    This is the implementation shared by the callback of each Lightning package; use the one of yours:
    ``lightning_gan_monitor.GANMonitor`` (a ``pytorch_lightning.Callback``) or
    ``lightning_gan_monitor.lightning.GANMonitor`` (a ``lightning.pytorch.Callback``). This class imports neither.

    The monitor needs the discriminator's outputs on a real batch and on a generated batch. It takes them from
    what ``training_step`` returns (a mapping with ``d_real_key`` and ``d_fake_key``: free), or else probes the
    module every ``probe_every_n_batches``: it runs ``pl_module.<generator_attr>`` on latent vectors from its own
    seeded ``torch.Generator`` and ``pl_module.<discriminator_attr>`` on those samples and on the real batch,
    without touching the training (global RNG, batch-norm statistics and every other buffer are restored).

    From those outputs it keeps the generator score mean(D(G(z))), the discriminator score
    ½·mean(D(x)) + ½·mean(1 − D(G(z))) and the fake/real detection accuracies, logs them as ``gan/<score>`` to
    every logger, smooths them, and fires a rule when a failure condition has held for ``patience`` consecutive
    training batches. An ordinary batch only keeps references to D's outputs (no tensor operation, no host-device
    synchronisation); every ``check_every_n_batches`` the pending batches are summed into a small buffer on the
    module's device in a few tensor operations and read back once, and the rules run as plain Python over those
    numbers, so training stops up to that many batches after a rule's patience ran out (the message names both).

    Attributes:
        failure: None, or the :class:`~lightning_gan_monitor.FailureMode` that fired first (also under
            ``on_failure="warn"``).
        stopped_batch: None, or the training batch at which the monitor stopped training (set only when it stops, as
            ``EarlyStopping.stopped_epoch``; the batch at which a rule fired is its ``Diagnosis.batch``).
        stopping_reason: a :class:`~lightning_gan_monitor.StoppingReason`.
        stopping_reason_message: the diagnosis text of the rule that stopped training, or None.
        diagnoses: every rule that fired, in order, as :class:`~lightning_gan_monitor.Diagnosis`.
        summary: after ``fit``, a :class:`~lightning_gan_monitor.history.RunSummary`: batches in each regime, final
            scores and the verdict (also printed on rank zero when ``verbose``, and written to TensorBoard).

    Example:
        >>> from lightning_gan_monitor import GANMonitor
        >>> monitor = GANMonitor(patience=50, from_logits=True)
        >>> monitor.failure is None
        True
        >>> GANMonitor(patience=-3)
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be a positive integer, got -3

    """

    @override
    def _build(self) -> None:
        self._tracker = ScoreTracker(self._rules(), self.smoothing)
        self._sources = Sources.of(self)
        self._watch = DiversityWatch.of(self) if self.diversity_every_n_batches is not None else None
        # The rank values are always summed (the rules read the AUC); they are logged for a critic or on request.
        self._ranked = self._output() == "critic" or self.rank_values
        self._accumulator = Accumulator(self.check_every_n_batches or DEFAULT_CHECK_EVERY, ranks=True)
        self._reset_run_state()

    # ------------------------------------------------------------------ configuration and state

    def _reset_run_state(self) -> None:
        self.failure: FailureMode | None = None
        self.stopped_batch: int | None = None
        self.stopping_reason = StoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        self.diagnoses: list[Diagnosis] = []
        self.summary: RunSummary | None = None
        self._batches_seen = 0
        self._generator_updates: int | None = None  # None: the generator's optimizer steps cannot be counted
        self._check_every = self.check_every_n_batches or DEFAULT_CHECK_EVERY
        self._log_every = self.log_every_n_batches or 0
        self._log_stats = [0.0] * (NUM_STATS + len(RANK_STAT_NAMES))  # summed since the last log point (host)
        self._history = ScoreHistory()  # what was logged at each log point, bounded, for `plot()`
        self._reading = Reading(self._output(), self._check_every, say)
        self._held: Window | None = None  # batches read back before D's reading was decided (output="auto")
        self._tracker.reset()
        self._sources.reset()
        if self._watch is not None:
            self._watch.reset(tracker=True)
        self._fixed_latent: Tensor | None = None
        self._real_images: Tensor | None = None
        self._pictures = tensorboard.SamplePictures(self.image_shape, self.image_range, self.prefix)
        self._warned: set[str] = set()

    @property
    @override
    def state_key(self) -> str:
        # Lightning reads this around every hook of every batch: build it once per set of the attributes it uses.
        # The prefix counts only when it is not the default, so checkpoints of monitors without one keep their key.
        keys = (self.d_real_key, self.d_fake_key, self.generator_attr, self.discriminator_attr, self.prefix)
        cached = self.__dict__.get("_state_key_cache")
        if cached is None or cached[0] != keys:
            names = ("d_real_key", "d_fake_key", "generator_attr", "discriminator_attr", "prefix")
            named = dict(zip(names, keys))
            if self.prefix == "gan/":
                del named["prefix"]
            cached = self._state_key_cache = (keys, self._generate_state_key(**named))
        return cached[1]

    @property
    def scores(self) -> dict[str, float]:
        """The latest smoothed scores (what the rules look at), as floats; NaN before the first observation.

        The four probability scores (not for a critic), and the values of ``RANK_NAMES`` for a critic or with
        ``rank_values=True``.
        """
        names = (() if self._output() == "critic" else SCORE_NAMES) + (RANK_NAMES if self._ranked else ())
        smoothed = self._tracker.scores
        return {name: smoothed[name] for name in names}

    @property
    def diversity(self) -> dict[str, float]:
        """The diversity values of the latest diversity check (``gan/diversity`` ...), as floats; NaN before one."""
        return dict(self._watch.last) if self._watch is not None else dict.fromkeys(DIVERSITY_NAMES, math.nan)

    # ------------------------------------------------------------------ hooks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # A fresh start per fit (which also avoids double counts after a `ddp_spawn`).
        if stage == "fit":
            self._reset_run_state()
            sharing = [c for c in trainer.callbacks if isinstance(c, GANMonitorBase) and c.prefix == self.prefix]
            if len(sharing) > 1 and sharing[0] is self:
                rank_zero_warn(
                    f"{len(sharing)} GANMonitors in one Trainer log under the same `prefix={self.prefix!r}`, so their "
                    "logged values mix in every logger (each one's `failure`, `diagnoses`, stop decision and "
                    "checkpoint state stay its own). Give each its own, e.g. `GANMonitor(prefix='d2/')`.",
                    category=GANMonitorWarning,
                )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        self._accumulator.to(device)
        if self._watch is not None:
            self._watch.to(device)
        if self.log_every_n_batches is None:
            self._log_every = trainer.log_every_n_steps
        self._sources.setup(pl_module)
        if self._generator_updates is None and self._sources.has_generator(pl_module):
            self._generator_updates = 0  # a generator to count the updates of (a resumed run keeps its count)
        if self._sources.probe_problem is None and self._fixed_latent is None and self.image_every_n_epochs:
            # Drawn on the CPU, so the grids show the same latent vectors whatever device trains.
            cpu = torch.Generator().manual_seed(self.seed)
            shape = (self.num_image_samples, *self._sources.latent_shape)  # type: ignore[misc]
            self._fixed_latent = torch.randn(shape, generator=cpu)
        if trainer.is_global_zero:
            monitors = [c for c in trainer.callbacks if isinstance(c, GANMonitorBase)]
            for writer in self._tensorboard_writers(trainer):
                if monitors[0] is self:  # one layout per run: the first monitor writes every monitor's
                    tensorboard.write_score_layout(writer, list(dict.fromkeys(m.prefix for m in monitors)))
                # the thresholds of this run, so a report drawn from the logs shades the bands it really used
                config = {**self._config(), "on_failure": self.on_failure}
                tensorboard.write_config(writer, config, self._batches_seen, self.prefix)

    @override
    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batches_seen += 1
        seen = self._batches_seen
        try:
            observation = self._sources.observe(pl_module, outputs, batch, first=seen == 1)
        except Exception as err:  # at the first batch, a set-up problem: an error; later, scores off, training on
            self._turn_off("finding the discriminator's outputs", err, "no scores and no failure rule from here on")
            self._sources.resolved, observation = "off", None
        if observation is None:
            self._accumulator.skip()
        else:
            losses = observation.losses if self.check_finite else ()
            self._accumulator.add(observation.d_real, observation.d_fake, losses)
        if self._real_images is None and self.image_every_n_epochs is not None:
            with contextlib.suppress(ValueError):  # no real samples found: the grid of real samples is skipped
                self._real_images = real_samples(batch, self.real_key)[: self.num_image_samples].detach().clone()
        firings = []
        if self._watch is not None:
            fake = observation.fake if observation is not None else None
            problem = self._sources.probe_problem
            try:
                values = self._watch.step(
                    batch, fake, batch_idx, seen, problem, functools.partial(self._sources.fixed_samples, pl_module)
                )
            except Exception as err:
                self._turn_off(
                    "the diversity check", err, "no diversity metrics and no mode-collapse rule from here on"
                )
                self._watch.fake_source, values = "off", None
            if values is not None:
                named = {f"gan/{k}": v for k, v in values.items()}
                self._log_values(trainer, named, trainer.callback_metrics)
                firing = self._watch.judge(values, seen, updates=self._generator_updates)
                firings = [firing] if firing is not None else []
        log = bool(self._log_every) and seen % self._log_every == 0
        if log or firings or seen == 1 or seen % self._check_every == 0:
            self._check(trainer, log=log, firings=firings)

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self._sources.steps_generator(pl_module, optimizer):
            self._generator_updates = (self._generator_updates or 0) + 1

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._watch is not None:
            self._watch.end_epoch()
        every = self.image_every_n_epochs
        if every is not None and (trainer.current_epoch + 1) % every == 0 and trainer.is_global_zero:
            self._write_grids(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The batches since the last check are judged and counted too (a run's end rarely falls on a check), and
        # those since the last log point (a stop usually falls between two) still reach the loggers.
        self._check(trainer, log=True, training_over=True)
        regimes = regime_counts(self._tracker.rules, self._tracker.regime_batches)
        series = {tag: self._history.series(tag) for tag in self._history.tags}
        thresholds = (self.collapse_diversity_below, self.collapse_near_duplicates_above, self.collapse_coverage_below)
        collapsed = collapsed_batches(series, *thresholds)
        if self._watch is not None and self._watch.tracker is not None and collapsed is not None:
            collapsed = min(collapsed, self._watch.tracker.collapsed_batches)  # a collapse, not a fresh G's blur
        self.summary = summarize(
            self._batches_seen,
            regimes,
            self.scores,
            self.diagnoses,
            self.stopping_reason,
            collapsed_batches=collapsed,
            generator_updates=self._generator_updates,
        )
        if trainer.is_global_zero:
            if self.verbose:
                rank_zero_info(str(self.summary))
            for writer in self._tensorboard_writers(trainer):
                tensorboard.write_summary(writer, str(self.summary), self._batches_seen, self.prefix)

    # ------------------------------------------------------------------ the check: read back, decide, log

    def _check(
        self, trainer: pl.Trainer, log: bool, firings: list[Firing] | None = None, training_over: bool = False
    ) -> None:
        # read once (Lightning builds it on every read); not at the end of fit, where the loop has no more use for it
        metrics = trainer.callback_metrics if log and not training_over else None
        if metrics is not None and self.check_finite:
            # losses logged with `self.log` but not returned: dated to this batch, the one that logged them
            self._accumulator.add_losses([v for k, v in metrics.items() if "loss" in k and isinstance(v, Tensor)])
        # One collective (under DDP) and one read-back; every rank then decides from the same numbers.
        gather = trainer.strategy.all_gather if trainer.world_size > 1 else None
        window = self._accumulator.read(gather)
        if self._held is not None:
            window, self._held = self._held.then(window), None
        first = self._batches_seen - len(window) + 1
        final = log or bool(firings) or training_over
        logits = self._reading.choose(window.outside, first, self._batches_seen, final, bool(self._history.tags))
        if logits is None:  # output="auto" has not seen enough to decide: judge these batches once it has
            self._held = window
            return
        batches = window.batches(logits)
        critic = self._reading.critic
        observed = [(values_from(b.stats, b.ranks, critic) if b.observed else None, b.non_finite) for b in batches]
        updates: float | None = self._generator_updates
        if self._watch is not None and self._watch.generator_still:
            updates = None  # a generator that does not move at all needs no more updates to show it is not learning
        learning = self._watch is not None and self._watch.generator_learning
        fired = [*self._tracker.update(observed, updates, learning), *(firings or [])]
        for b in batches:
            self._log_stats = [total + value for total, value in zip(self._log_stats, [*b.stats, *b.ranks])]
        if log:
            sums, self._log_stats = self._log_stats, [0.0] * len(self._log_stats)
            logged = values_from(sums[:NUM_STATS], sums[NUM_STATS:] if self._ranked else None, critic)
            self._log_values(trainer, dict(zip((f"gan/{name}" for name in VALUE_NAMES), logged)), metrics)
        collapse = self._watch.collapsed if self._watch is not None else None  # cause first, when it shows
        holding = self._tracker.holding_now() if fired else []  # named beside a diagnosis: only when one is made
        if fired and self._watch is not None and self._watch.tracker is not None:
            holding += self._watch.tracker.holding_now()
        caveat = ""
        if self._reading.guessed_logits:  # the user never said: say how to confirm it (and drop this note)
            caveat = (
                "D's outputs were read as logits, as `output='auto'` guessed from outputs outside [0, 1]: pass "
                "`output='logit'` to confirm it, and this note goes away (only a Wasserstein critic or a hinge "
                "discriminator, whose scores are not logits, needs `output='critic'`)."
            )
        note = self._watch.generator_note() if fired and self._watch is not None else ("", ())
        fooled = None  # a D that orders fakes above real samples: the cause to name before a collapse
        if fired:
            smoothed = self._tracker.scores
            fooled = next(((r, smoothed) for r in self._tracker.rules if r.fooled_by_order(smoothed)), None)
        stopping, diagnoses = decide(
            fired, self.on_failure, self._batches_seen, self._check_every, training_over, collapse, holding, caveat,
            note, fooled,
        )  # fmt: skip
        for diagnosis in diagnoses:
            self._report(trainer, diagnosis, stops=diagnosis is stopping)
        trainer.should_stop = trainer.should_stop or stopping is not None

    def _report(self, trainer: pl.Trainer, diagnosis: Diagnosis, stops: bool) -> None:
        self.diagnoses.append(diagnosis)
        if len(self.diagnoses) == 1:
            self.failure = diagnosis.failure
        if stops and self.stopped_batch is None:
            self.stopped_batch = self._batches_seen
            failed = diagnosis.failure is not None
            self.stopping_reason = StoppingReason.FAILURE if failed else StoppingReason.CONVERGED
            self.stopping_reason_message = diagnosis.message
        say(f"GANMonitor: {diagnosis.message}", warning=diagnosis.failure is not None)
        if trainer.is_global_zero:
            for writer in self._tensorboard_writers(trainer):
                tensorboard.write_diagnosis(writer, diagnosis.message, self._batches_seen, self.prefix)

    def _log_values(self, trainer: pl.Trainer, values: dict[str, float], metrics: dict[str, Any] | None) -> None:
        """Log host floats named ``gan/<name>`` to the history, and under ``prefix`` to the loggers and ``metrics``.

        NaN/inf values are left out.
        """
        # rounded to float32, as `trainer.callback_metrics` holds them, so every logger shows the same number
        values = {k: v for k, v in zip(values, array("f", values.values()).tolist()) if math.isfinite(v)}
        if not values:
            return
        self._history.add(self._batches_seen, values)  # by the default names, which plot() and the summary read
        values = {tensorboard.tag(name, self.prefix): value for name, value in values.items()}
        step = self._batches_seen - 1  # Lightning logs `self.log` values of batch k at step k - 1
        for logger in trainer.loggers:
            logger.log_metrics(dict(values), step=step)
        # `trainer.callback_metrics` (the dict it returns persists) for `ModelCheckpoint(monitor="gan/coverage")` and
        # `EarlyStopping`: what `self.log(..., logger=False)` would put there, without its cost (about 1 ms).
        if metrics is not None:
            metrics.update({k: torch.tensor(v) for k, v in values.items()})

    # ------------------------------------------------------------------ diversity, mode collapse, image grids

    def _write_grids(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writers = self._tensorboard_writers(trainer)
        if not writers or self._pictures.kind == "none":
            return
        if self._fixed_latent is None:
            problem = self._sources.probe_problem or "not set up"
            self._say_once("no grid", f"no image grids: the monitor cannot run the generator ({problem}).")
            return
        try:
            z, y = self._fixed_latent.to(pl_module.device), self._sources.first_conditions  # y: conditional GANs
            fake = self._sources.generate(pl_module, z=z, y=y)
            said = self._pictures.write(writers, fake, self._real_images, self._batches_seen)
        except Exception as err:
            self._turn_off("drawing the samples", err, "no more pictures of them")
            self._pictures.kind = "none"
            return
        if said:
            self._say_once("pictures", said)

    def _turn_off(self, what: str, err: Exception, consequence: str) -> None:
        """An optional feature failed: at the first batch, a set-up problem (raised); later, off with one warning."""
        if self._batches_seen <= 1:
            raise err
        say(turned_off(what, self._batches_seen, err, consequence), warning=True)

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            say(f"GANMonitor: {message}")

    def _tensorboard_writers(self, trainer: pl.Trainer) -> list[Any]:
        writers, missing = tensorboard.writers(trainer.loggers)
        if missing and "no tensorboard" not in self._warned:
            self._warned.add("no tensorboard")
            say(missing, warning=True)
        return writers

    def plot(self) -> Figure:
        """The report figure of the last ``fit``, drawn from the monitor's own history (needs matplotlib).

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
        return plot_history(self._history, [d.message for d in self.diagnoses], self._config(), summary)
