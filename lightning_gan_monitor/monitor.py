"""The core: one monitor for any training loop, fed per batch by a thin adapter; it imports no Lightning.

:class:`Monitor` is built from one :class:`~lightning_gan_monitor.config.MonitorConfig` and owns the run state and
its ``state_dict``. The host hands it, per batch, the training batch and D's outputs it found (references only), and
at a check an ``all_gather`` (under DDP). A check is one trip: :mod:`~lightning_gan_monitor.accumulate` reads the
batches since the last check once and returns host values, :mod:`~lightning_gan_monitor.tracker` and
:mod:`~lightning_gan_monitor.collapse` decide, :mod:`~lightning_gan_monitor.cause` and
:mod:`~lightning_gan_monitor.diagnosis` name it, and a :class:`Verdict` goes back to the adapter: stop or not, the
diagnoses, the values to log and what to write to TensorBoard.
"""

from __future__ import annotations

import functools
import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_info
from torch import Tensor

from lightning_gan_monitor import tensorboard
from lightning_gan_monitor.accumulate import Accumulator
from lightning_gan_monitor.agreement import Faults
from lightning_gan_monitor.cause import decide
from lightning_gan_monitor.checkpoint import from_version_1, not_restored, settings_changed
from lightning_gan_monitor.collapse import CollapseTracker
from lightning_gan_monitor.config import MonitorConfig
from lightning_gan_monitor.diagnosis import GUESSED_LOGITS, Diagnosis, say
from lightning_gan_monitor.diversity import DiversityWatch
from lightning_gan_monitor.history import Outcome, RunSummary, ScoreHistory, regime_counts, summarize
from lightning_gan_monitor.names import DIVERSITY_NAMES, RANK_NAMES, SCORE_NAMES
from lightning_gan_monitor.pictures import EpochPictures
from lightning_gan_monitor.reading import Reading
from lightning_gan_monitor.rules import VALUE_NAMES
from lightning_gan_monitor.sources import Models, Observation, Sources
from lightning_gan_monitor.tracker import ScoreTracker

__all__ = ["Models", "Monitor", "Observation", "Verdict"]

Gather = Callable[[Tensor], Tensor]


@dataclass
class Verdict:
    """What the host must do after a check: stop or not, and what to log and write (host values only)."""

    #: The training batch of the check (1-based).
    batch: int
    #: Whether the host should stop training (the same on every process).
    stop: bool = False
    #: The diagnoses made at this check.
    diagnoses: list[Diagnosis] = field(default_factory=list)
    #: Values to log, by tag (``prefix`` included), at step ``batch - 1`` (where Lightning logs batch ``batch``).
    values: dict[str, float] = field(default_factory=dict)
    #: What to write to each TensorBoard ``SummaryWriter`` (texts, the score chart, pictures): call each with it.
    tensorboard: list[Callable[[Any], None]] = field(default_factory=list)


class Monitor:
    """Watch a GAN: scores, failure diagnoses with remedies, a stop decision; the core every adapter drives.

    An ordinary batch only keeps references to D's outputs (no tensor operation, no host-device synchronisation);
    every ``check_every_n_batches`` they are read back once, and the rules decide over plain host numbers.

    Args:
        config: the arguments (see :class:`~lightning_gan_monitor.arguments.MonitorArguments` for each).

    Example:
        >>> import torch
        >>> monitor = Monitor(MonitorConfig(patience=5, diversity_every_n_batches=None, image_every_n_epochs=None))
        >>> models = Models(None, None, torch.device("cpu"))
        >>> _ = monitor.start(models, log_every=50)
        >>> for _ in range(40):  # D rates every real sample 0.99 and every generated one 0.01
        ...     given = Observation(torch.full((8,), 0.99), torch.full((8,), 0.01), [], None)
        ...     verdict = monitor.update(torch.zeros(8, 2), models, given=given)
        ...     if verdict is not None and verdict.stop:
        ...         break
        >>> monitor.outcome.failure, monitor.outcome.stopped_batch
        (<FailureMode.DISCRIMINATOR_DOMINATES: 'discriminator_dominates'>, 20)

    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._tracker = ScoreTracker(config.rules(), config.smoothing)
        self._sources = Sources(config)
        self._watch = DiversityWatch(config) if config.diversity_every_n_batches is not None else None
        # The rank values are always summed (the rules read the AUC); they are logged for a critic or on request.
        self._accumulator = Accumulator(config.check_every, ranked=config.reading == "critic" or config.rank_values)
        self._pictures = EpochPictures(config)
        parts = {"scores": self._sources, "diversity": self._watch}  # each turns itself off (`off`, `turn_off`)
        self._faults = Faults({name: part for name, part in parts.items() if part is not None})
        self.reset()

    def reset(self) -> None:
        """Start afresh (a new fit); the random generators' states are kept for resuming."""
        c = self.config
        self.outcome = Outcome()  # the failure that fired first, where training stopped, every diagnosis
        self.summary: RunSummary | None = None
        self.history = ScoreHistory()  # what was logged at each log point, bounded, for `plot()`
        self._batches = 0
        self._updates: int | None = None  # None: the generator's optimizer steps cannot be counted
        self._log_every = c.log_every_n_batches or 0
        self._accumulator.reading = Reading(c.reading, c.check_every, say)
        self._accumulator.reset()
        self._tracker.reset()
        self._sources.reset()
        if self._watch is not None:
            self._watch.reset(tracker=True)
        self._pictures.reset()
        self._faults.take()  # none from an earlier fit
        self._diversity_due = False

    # ------------------------------------------------------------------ public, read-only state

    @property
    def batches_seen(self) -> int:
        """Training batches seen this fit (a resumed run counts on)."""
        return self._batches

    @property
    def generator_updates(self) -> int | None:
        """The generator's optimizer steps so far, or None where the host cannot count them."""
        return self._updates

    @property
    def source(self) -> str | None:
        """Where D's outputs come from: ``"outputs"`` (handed over), ``"probe"``, ``"off"``; None before a batch."""
        return self._sources.resolved

    @property
    def reading(self) -> str | None:
        """How D's outputs are read: ``"probabilities"``, ``"logits"``, ``"critic"``, or None before it is decided."""
        reading = self._accumulator.reading
        if reading.critic:
            return "critic"
        fixed = {False: "probabilities", True: "logits"}.get(reading.from_logits)
        return fixed or reading.decided

    @property
    def diversity_source(self) -> str | None:
        """Where the diversity checks' samples come from: ``"generator"``, ``"outputs"``, ``"off"``, or None."""
        return self._watch.fake_source if self._watch is not None else "off"

    @property
    def scores(self) -> dict[str, float]:
        """The latest smoothed scores (what the rules look at), as floats; NaN before the first observation."""
        critic = self.config.reading == "critic"
        names = (() if critic else SCORE_NAMES) + (RANK_NAMES if self._accumulator.ranked else ())
        smoothed = self._tracker.scores
        return {name: smoothed[name] for name in names}

    @property
    def diversity(self) -> dict[str, float]:
        """The diversity values of the latest diversity check, as floats; NaN before one."""
        return dict(self._watch.last) if self._watch is not None else dict.fromkeys(DIVERSITY_NAMES, math.nan)

    @property
    def tracker(self) -> ScoreTracker:
        """The score rules' tracker (its ``held``, ``regime_batches``, ``rules``: read them, do not change them)."""
        return self._tracker

    @property
    def collapse_tracker(self) -> CollapseTracker | None:
        """The mode-collapse rule's tracker (``held``, ``movement``, ...: read only), None without diversity checks."""
        return self._watch.tracker if self._watch is not None else None

    # ------------------------------------------------------------------ the host's calls

    def start(self, models: Models, log_every: int, rank_zero: bool = True) -> Verdict:
        """The fit starts: buffers on the models' device, the probe checked; returns what to write first.

        Args:
            models: what the host offers to run G and D.
            log_every: the host's logging cadence, used when ``log_every_n_batches`` is None.
            rank_zero: whether this process writes (the configuration text goes to TensorBoard).
        """
        self._accumulator.to(models.device)
        if self._watch is not None:
            self._watch.to(models.device)
        if not self.config.log_every_n_batches:
            self._log_every = log_every
        self._sources.setup(models)
        if self._updates is None and isinstance(models.generator, torch.nn.Module):
            self._updates = 0  # a generator to count the updates of (a resumed run keeps its count)
        self._pictures.start(self._sources.latent_shape, self._sources.generator_problem)
        verdict = Verdict(self._batches)
        if rank_zero:  # the thresholds of this run, so a report drawn from the logs shades the bands it really used
            config = {**self.config.saved(), "on_failure": self.config.on_failure}
            verdict.tensorboard.append(
                functools.partial(
                    tensorboard.write_config, config=config, step=self._batches, prefix=self.config.prefix
                )
            )
        return verdict

    def generator_stepped(self) -> None:
        """The generator took an optimizer step (what the mode-collapse rule waits for)."""
        self._updates = (self._updates or 0) + 1

    def optimizer_stepped(self, generator: Any, optimizer: Any) -> None:
        """``optimizer`` is about to step: counted if it updates ``generator`` (a Trainer's optimizer hook)."""
        if self._sources.steps_generator(generator, optimizer):
            self.generator_stepped()

    @torch.no_grad()
    def update(
        self,
        batch: Any,
        models: Models,
        *,
        given: Observation | BaseException | None = None,
        losses: Sequence[Tensor] = (),
        batch_idx: int = 0,
        all_gather: Gather | None = None,
        logged: Callable[[], Mapping[str, Any]] | None = None,
        missing: str = "",
    ) -> Verdict | None:
        """One training batch; at a check, the :class:`Verdict` (else None: nothing to do).

        Args:
            batch: the training batch (its real samples at ``real_key``).
            models: what the host offers to run G and D.
            given: D's outputs (and losses, samples) the host found, None to probe, or the error the host met
                looking for them (at the first batch it is raised; later the scores turn off on every process).
            losses: the step's losses when ``given`` is None (watched for NaN/inf with the probe's outputs).
            batch_idx: the batch's index in its epoch.
            all_gather: the host's ``all_gather`` under DDP (None on one process); called once per check.
            logged: at a log point, what the host has logged this batch (losses among it are checked for NaN/inf).
            missing: at the first batch without ``given``, what the host saw and how to hand D's outputs over.
        """
        self._batches += 1
        seen = self._batches
        observation = None
        try:
            if isinstance(given, BaseException):
                raise given
            observation = self._sources.observe(models, given, batch, seen == 1, losses, missing)
        except Exception as err:  # at the first batch, a set-up problem: an error; later, scores off, training on
            self._fault("scores", err)
        if observation is None:
            self._accumulator.skip()
        else:
            losses = observation.losses if self.config.check_finite else ()
            self._accumulator.add(observation.d_real, observation.d_fake, losses)
        self._pictures.see(batch)
        if self._watch is not None:
            fake = observation.fake if observation is not None else None
            generate = functools.partial(self._sources.fixed_samples, models)
            try:
                due = self._watch.step(batch, fake, batch_idx, seen, self._sources.generator_problem, generate)
            except Exception as err:
                self._fault("diversity", err)
                due = True  # the other processes may measure: agree at this batch's check
            self._diversity_due = self._diversity_due or due
        log = bool(self._log_every) and seen % self._log_every == 0
        if log or self._diversity_due or seen == 1 or seen % self.config.check_every == 0:
            return self._check(all_gather, log, logged=logged if log else None)
        return None

    def end_epoch(self, models: Models, epoch: int, draw: bool = True) -> Verdict | None:
        """Epoch ``epoch`` (0-based) ended: the pictures of ``G(z)`` every ``image_every_n_epochs`` when ``draw``.

        ``draw``: this process writes pictures (rank zero) and the host has somewhere to write them.
        """
        if self._watch is not None:
            self._watch.end_epoch()
        if not draw:
            return None
        generate = functools.partial(self._sources.generate, models, y=self._sources.first_conditions)  # y: a cGAN's
        pictures = self._pictures.draw(
            lambda z: generate(z=z.to(models.device)), epoch, self._batches, self._sources.generator_problem
        )
        verdict = Verdict(self._batches)
        for name, picture in pictures:
            write = functools.partial(tensorboard.write_grid, tag=name, grid=picture, step=self._batches)
            verdict.tensorboard.append(write)
        return verdict if pictures else None

    def end(self, all_gather: Gather | None = None) -> Verdict:
        """Training is over (stopped or not): judge and log the batches since the last check, and sum the run up."""
        verdict = self._check(all_gather, log=True, training_over=True)
        c = self.config
        regimes = regime_counts(self._tracker.rules, self._tracker.regime_batches)
        thresholds = (c.collapse_diversity_below, c.collapse_near_duplicates_above, c.collapse_coverage_below)
        collapsed = self.history.collapsed_batches(*thresholds, confirmed=self.collapse_tracker)
        outcome = self.outcome
        self.summary = summarize(
            self._batches, regimes, self.scores, outcome.diagnoses, outcome.stopping_reason, collapsed, self._updates
        )
        if c.verbose:
            rank_zero_info(str(self.summary))
        summary = functools.partial(
            tensorboard.write_summary, summary=str(self.summary), step=self._batches, prefix=c.prefix
        )
        verdict.tensorboard.append(summary)
        return verdict

    # ------------------------------------------------------------------ the check: one trip

    def _check(
        self,
        all_gather: Gather | None,
        log: bool,
        training_over: bool = False,
        logged: Callable[[], Mapping[str, Any]] | None = None,
    ) -> Verdict:
        c = self.config
        verdict = Verdict(self._batches)
        if logged is not None and c.check_finite:
            # losses logged but not handed over: dated to this batch, the one that logged them
            self._accumulator.add_losses([v for k, v in logged().items() if "loss" in k and isinstance(v, Tensor)])
        # One collective (under DDP) and one read-back; every process then decides from the same numbers.
        due, self._diversity_due = self._diversity_due, False
        faults = self._faults.take()
        readout = self._accumulator.check(self._batches, all_gather, log, training_over or due, faults)
        self._faults.agree(readout.faults, faults, self._batches)
        firings = []
        if due and self._watch is not None and not self._watch.off:
            try:
                values = self._watch.measure()
            except Exception as err:  # on every process alike (its collectives ran everywhere)
                self._faults.report("diversity", err, self._batches, now=True)
                values = None
            if values is not None:
                self._log(verdict, {f"gan/{k}": v for k, v in values.items()})
                firing = self._watch.judge(values, self._batches, updates=self._updates)
                firings = [firing] if firing is not None else []
        if readout.observed is None:  # output="auto" has not decided yet: these batches are judged once it has
            return verdict
        updates: float | None = self._updates
        if self._watch is not None and self._watch.generator_still:
            updates = None  # a generator that does not move at all needs no more updates to show it is not learning
        learning = self._watch is not None and self._watch.generator_learning
        fired = [*self._tracker.update(readout.observed, updates, learning), *firings]
        if readout.logged is not None:
            self._log(verdict, dict(zip((f"gan/{name}" for name in VALUE_NAMES), readout.logged)))
        if not fired:
            return verdict
        watch = self._watch
        collapse = watch.collapsed if watch is not None else None  # cause first, when it shows
        holding = self._tracker.holding_now()  # named beside a diagnosis
        if watch is not None and watch.tracker is not None:
            holding += watch.tracker.holding_now()
        caveat = GUESSED_LOGITS if self._accumulator.reading.guessed_logits else ""
        note = watch.generator_note() if watch is not None else ("", ())
        smoothed = self._tracker.scores  # a D that orders fakes above real samples: the cause before a collapse
        fooled = next(((r, smoothed) for r in self._tracker.rules if r.fooled_by_order(smoothed)), None)
        stopping, diagnoses = decide(
            fired, c.on_failure, self._batches, c.check_every, training_over, collapse, holding, caveat, note, fooled
        )
        for diagnosis in diagnoses:
            self._report(verdict, diagnosis, stops=diagnosis is stopping)
        verdict.stop = stopping is not None
        return verdict

    def _report(self, verdict: Verdict, diagnosis: Diagnosis, stops: bool) -> None:
        self.outcome.record(diagnosis, stops, self._batches)
        verdict.diagnoses.append(diagnosis)
        say(f"GANMonitor: {diagnosis.message}", warning=diagnosis.failure is not None)
        write = functools.partial(
            tensorboard.write_diagnosis, message=diagnosis.message, step=self._batches, prefix=self.config.prefix
        )
        verdict.tensorboard.append(write)

    def _log(self, verdict: Verdict, values: dict[str, float]) -> None:
        """Host floats named ``gan/<name>``: into the history, and under ``prefix`` into the verdict (finite only)."""
        # rounded to float32, as Lightning's `callback_metrics` holds them, so every logger shows the same number
        values = {k: v for k, v in zip(values, array("f", values.values()).tolist()) if math.isfinite(v)}
        if values:
            self.history.add(self._batches, values)  # by the default names, which plot() and the summary read
            verdict.values.update({tensorboard.tag(name, self.config.prefix): v for name, v in values.items()})

    # ------------------------------------------------------------------ faults: agreed by every process

    def _fault(self, name: str, err: Exception) -> None:
        """An optional feature failed here: at the first batch a set-up problem (raised); later, off at the check.

        Finding D's outputs needs no other process: it stops here at once. The diversity check's collectives run at
        the check, on every process or (once the faults are gathered) on none.
        """
        if self._batches <= 1:
            raise err
        self._faults.report(name, err, self._batches, now=name == "scores")

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: counters, smoothed scores, the monitor's own RNG states, what fired."""
        sources = self._sources.state_dict()
        accumulated = self._accumulator.state_dict()
        collapse = self._watch.tracker if self._watch is not None else None
        return {
            "version": 2,
            "batches_seen": self._batches,
            "generator_updates": self._updates,
            "since_probe": sources["since_probe"],
            "tracker": self._tracker.state_dict(),
            "reading": accumulated["reading"],
            "log_stats": accumulated["log_stats"],
            "rng_state": sources["rng"],
            "fixed_latent": self._pictures.fixed_latent,
            "fixed_conditions": sources["conditions"],
            "diversity": list(self.diversity.values()),
            "collapse": collapse.state_dict() if collapse is not None else None,
            **self.outcome.state_dict(),
            "config": self.config.saved(),
            "history": self.history.state_dict(),
            "held": accumulated["held"],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (or a checkpoint of 0.1 or 0.2), warning of settings that changed."""
        saved = state_dict.get("config", {})
        changed = {k: (saved[k], v) for k, v in self.config.saved().items() if k in saved and saved[k] != v}
        if changed:
            say(settings_changed(changed), warning=True)
        state = from_version_1(dict(state_dict)) if "detector" in state_dict else state_dict
        self._batches = state.get("batches_seen", 0)
        self._updates = state.get("generator_updates")
        skipped = self._tracker.load_state_dict(state.get("tracker", {}))
        if skipped:
            say(not_restored(skipped), warning=True)
        accumulated = {key: state.get(key) for key in ("reading", "log_stats", "held")}
        self._accumulator.load_state_dict({**accumulated, "reading": accumulated["reading"] or {}})
        # (a "sample_rng_state" of 0.1 and 0.2, the diversity checks' generator, is not needed: they use fixed vectors)
        keys = {"rng": "rng_state", "since_probe": "since_probe", "conditions": "fixed_conditions"}
        self._sources.load_state_dict({mine: state.get(theirs) for mine, theirs in keys.items()})
        if state.get("fixed_latent") is not None:
            self._pictures.fixed_latent = state["fixed_latent"]
        if self._watch is not None:
            last = state.get("diversity") or self._watch.last.values()
            self._watch.last = dict(zip(DIVERSITY_NAMES, map(float, last)))
            if self._watch.tracker is not None and state.get("collapse"):
                self._watch.tracker.load_state_dict(state["collapse"])
        self.outcome.load_state_dict(state)
        if "history" in state:
            self.history.load_state_dict(state["history"])
