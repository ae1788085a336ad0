"""Failure modes, the rules that detect them, and the remedies to suggest (torch only, no Lightning).

The split follows Lightning's ``SpikeDetection``: :class:`FailureDetector` is a plain object holding the smoothed
scores and one "held for" counter per rule as tensors on the training device, so updating it never waits for the
device; :func:`decide` is a pure function over host numbers, called only every ``check_every_n_batches``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_gan_monitor.functional import DIVERSITY_NAMES, SCORE_NAMES, STAT_NAMES, gan_scores_from_stats

__all__ = [
    "REGIMES",
    "REMEDIES",
    "CollapseDetector",
    "Converged",
    "Diagnosis",
    "DiscriminatorDominates",
    "FailureDetector",
    "FailureMode",
    "GeneratorDominates",
    "ModeCollapse",
    "NonFinite",
    "Rule",
    "RunSummary",
    "StoppingReason",
    "decide",
    "format_message",
    "parse_message",
    "regime_counts",
    "summarize",
]

_NON_FINITE = STAT_NAMES.index("non_finite")
_G, _D, _FAKE_ACC, _REAL_ACC = range(4)


class FailureMode(Enum):
    """The ways a GAN run goes wrong that the monitor recognises.

    Example:
        >>> FailureMode("discriminator_dominates")
        <FailureMode.DISCRIMINATOR_DOMINATES: 'discriminator_dominates'>

    """

    DISCRIMINATOR_DOMINATES = "discriminator_dominates"
    GENERATOR_DOMINATES = "generator_dominates"
    MODE_COLLAPSE = "mode_collapse"
    NON_FINITE = "non_finite"


class StoppingReason(Enum):
    """Why the monitor stopped training, as ``EarlyStopping.stopping_reason`` does.

    Example:
        >>> StoppingReason.NOT_STOPPED.value
        'not_stopped'

    """

    NOT_STOPPED = "not_stopped"
    FAILURE = "failure"
    CONVERGED = "converged"


#: What to try for each failure mode, most effective first.
REMEDIES: dict[FailureMode, tuple[str, ...]] = {
    FailureMode.DISCRIMINATOR_DOMINATES: (
        "one-sided label smoothing or flipping: train D on real labels of 0.9 instead of 1, or flip a few percent "
        "of the real labels to 0",
        "add dropout to the discriminator (e.g. 0.3 after each hidden layer)",
        "give the generator more capacity (more filters or hidden units) so it can keep up",
        "give the discriminator less capacity (fewer filters or hidden units)",
        "lower the discriminator's learning rate, or update it less often than the generator",
    ),
    FailureMode.GENERATOR_DOMINATES: (
        "give the discriminator more capacity (more filters or hidden units)",
        "add dropout to the generator",
        "give the generator less capacity (fewer filters or hidden units)",
        "lower the generator's learning rate, or update the discriminator more often",
    ),
    FailureMode.MODE_COLLAPSE: (
        "a larger latent input (more latent dimensions)",
        "more generator capacity",
        "one-sided label flipping",
        "minibatch discrimination or packing (PacGAN)",
        "unrolled discriminator updates",
    ),
    FailureMode.NON_FINITE: (
        "lower the learning rates (or warm them up)",
        "clip gradients (`Trainer(gradient_clip_val=...)` with automatic optimisation, "
        "`self.clip_gradients(...)` with manual)",
        "use a numerically safe loss: `BCEWithLogitsLoss` on logits instead of `BCELoss` after a sigmoid",
        "with 16-bit precision, try `precision='bf16-mixed'` or 32-bit",
    ),
}

_EXPLANATIONS: dict[FailureMode, str] = {
    FailureMode.DISCRIMINATOR_DOMINATES: (
        "the discriminator rejects almost every generated sample, so the generator's gradients vanish and it "
        "stops learning"
    ),
    FailureMode.GENERATOR_DOMINATES: (
        "the discriminator accepts generated samples as real, so it no longer gives the generator a useful signal"
    ),
    FailureMode.MODE_COLLAPSE: (
        "the generator produces a small variety of nearly identical samples: it has collapsed onto a few modes of "
        "the data and ignores much of its latent input"
    ),
    FailureMode.NON_FINITE: "the training has diverged: the discriminator's outputs or the losses are NaN or infinite",
}


@dataclass(frozen=True)
class Rule:
    """A condition on the smoothed scores that fires once it has held for ``patience`` consecutive batches.

    Subclasses define :meth:`holds` (tensor ops only, so it runs on the device without a sync) and
    :meth:`describe` (the evidence, in words).
    """

    patience: int

    #: The failure this rule diagnoses; None for a success rule.
    failure: FailureMode | None = field(init=False, default=None)
    #: Names of the values the rule looks at (the last 4 entries of its event row, and ``Diagnosis.scores``).
    evidence: ClassVar[tuple[str, ...]] = SCORE_NAMES

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:
        """Whether the condition holds now, as a bool tensor.

        Args:
            scores: the smoothed scores, ordered as ``SCORE_NAMES`` in the last dimension (NaN where nothing was
                seen yet); leading dimensions are observations.
            non_finite: bool tensor of the leading shape: NaN/inf outputs or losses in that observation.

        """
        raise NotImplementedError

    def describe(self, scores: dict[str, float]) -> str:
        """The condition and the values that meet it, in words."""
        raise NotImplementedError


@dataclass(frozen=True)
class DiscriminatorDominates(Rule):
    """Generator score near 0 and discriminator score near 1.

    Example:
        >>> import torch
        >>> rule = DiscriminatorDominates(patience=10)
        >>> rule.holds(torch.tensor([0.05, 0.95, 1.0, 1.0]), torch.tensor(False))
        tensor(True)

    """

    generator_below: float = 0.1
    discriminator_above: float = 0.9
    failure: FailureMode | None = field(init=False, default=FailureMode.DISCRIMINATOR_DOMINATES)

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return (scores[..., _G] < self.generator_below) & (scores[..., _D] > self.discriminator_above)

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed generator score has stayed below {self.generator_below:g} (now "
            f"{scores['generator_score']:.3f}) and the smoothed discriminator score above "
            f"{self.discriminator_above:g} (now {scores['discriminator_score']:.3f})"
        )


@dataclass(frozen=True)
class GeneratorDominates(Rule):
    """Generator score near 1: the discriminator takes generated samples for real ones.

    Example:
        >>> import torch
        >>> GeneratorDominates(patience=10).holds(torch.tensor([0.95, 0.3, 0.0, 0.6]), torch.tensor(False))
        tensor(True)

    """

    generator_above: float = 0.9
    failure: FailureMode | None = field(init=False, default=FailureMode.GENERATOR_DOMINATES)

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return scores[..., _G] > self.generator_above

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed generator score has stayed above {self.generator_above:g} (now "
            f"{scores['generator_score']:.3f})"
        )


@dataclass(frozen=True)
class NonFinite(Rule):
    """NaN or infinity in the discriminator's outputs or in the losses.

    Example:
        >>> import torch
        >>> NonFinite(patience=1).holds(torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor(True))
        tensor(True)

    """

    failure: FailureMode | None = field(init=False, default=FailureMode.NON_FINITE)

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return non_finite

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return "the discriminator's outputs or the losses have been NaN or infinite"


@dataclass(frozen=True)
class Converged(Rule):
    """Success: the discriminator is no better than chance on generated samples.

    Example:
        >>> import torch
        >>> Converged(patience=10, tolerance=0.05).holds(torch.tensor([0.5, 0.5, 0.52, 0.5]), torch.tensor(False))
        tensor(True)

    """

    tolerance: float = 0.05

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return (scores[..., _FAKE_ACC] - 0.5).abs() <= self.tolerance

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed fake-detection accuracy has stayed within {self.tolerance:g} of 0.5 (now "
            f"{scores['fake_detection_accuracy']:.3f}): the discriminator is no better than chance on generated "
            "samples"
        )


@dataclass(frozen=True)
class ModeCollapse(Rule):
    """Mode collapse: low diversity, or many near-duplicates, at ``patience`` consecutive diversity checks.

    Unlike the other rules it looks at the diversity values of
    :func:`~lightning_gan_monitor.functional.diversity_scores` (ordered as ``DIVERSITY_NAMES``), measured every
    ``every`` batches, and its ``patience`` counts those checks; :class:`CollapseDetector` tracks it. A condition
    whose threshold is None is not used; a NaN value never meets a condition.

    Example:
        >>> import torch
        >>> rule = ModeCollapse(patience=3)
        >>> rule.holds(torch.tensor([0.05, 0.9, 0.1, 0.1]))  # diversity 0.05, 90% near-duplicates
        tensor(True)
        >>> rule.holds(torch.tensor([0.8, 0.0, 1.0, 0.9]))
        tensor(False)

    """

    diversity_below: float | None = 0.2
    near_duplicates_above: float | None = 0.5
    coverage_below: float | None = None
    every: int = 1
    failure: FailureMode | None = field(init=False, default=FailureMode.MODE_COLLAPSE)
    evidence: ClassVar[tuple[str, ...]] = DIVERSITY_NAMES

    def holds(self, scores: Tensor, non_finite: Tensor | None = None) -> Tensor:
        """Whether the condition holds for diversity values ``scores`` (last dimension as ``DIVERSITY_NAMES``)."""
        diversity, duplicates, _, coverage = scores.unbind(-1)
        condition = torch.zeros_like(diversity, dtype=torch.bool)
        if self.diversity_below is not None:
            condition |= diversity < self.diversity_below
        if self.near_duplicates_above is not None:
            condition |= duplicates > self.near_duplicates_above
        if self.coverage_below is not None:
            condition |= coverage < self.coverage_below
        return condition

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        parts = []
        if self.diversity_below is not None:
            parts.append(f"the diversity ratio has been below {self.diversity_below:g}")
        if self.near_duplicates_above is not None:
            parts.append(f"the near-duplicate rate above {self.near_duplicates_above:g}")
        if self.coverage_below is not None:
            parts.append(f"the coverage below {self.coverage_below:g}")
        if self.diversity_below is None:  # the verb goes with the first condition
            parts[0] = parts[0].replace(" rate above", " rate has been above").replace(" below", " has been below")
        return (
            f"{' or '.join(parts)} at {self.patience} consecutive diversity checks (every {self.every} batches; now "
            f"diversity {scores['diversity']:.3f}, near-duplicates {scores['near_duplicates']:.3f}, density "
            f"{scores['density']:.3f}, coverage {scores['coverage']:.3f})"
        )


@dataclass(frozen=True)
class Diagnosis:
    """A rule that fired: what, when, on what evidence, and what to try."""

    #: The failure mode, or None for the success rule.
    failure: FailureMode | None
    #: Training batches seen when the monitor noticed (at a check).
    batch: int
    #: For how many consecutive batches the condition had held.
    held_for: int
    #: The smoothed scores at that moment.
    scores: dict[str, float]
    #: The human-readable diagnosis, with remedies for a failure.
    message: str

    @property
    def onset_batch(self) -> int:
        """The first batch of the run in which the condition held."""
        return self.batch - self.held_for + 1


def _title(failure: FailureMode) -> str:
    return failure.value.replace("_", " ").capitalize()


def format_message(rule: Rule, batch: int, held_for: int, scores: dict[str, float], note: str = "") -> str:
    """The diagnosis text: the verdict, the evidence and, for a failure, the remedies.

    Example:
        >>> rule = GeneratorDominates(patience=50)
        >>> scores = dict(generator_score=0.97, discriminator_score=0.2, fake_detection_accuracy=0.0,
        ...               real_detection_accuracy=0.4)
        >>> print(format_message(rule, 120, 60, scores).splitlines()[0])
        Generator dominates after 120 training batches: for the last 60 batches (since batch 61) ...

    """
    title = "Converged" if rule.failure is None else _title(rule.failure)
    lines = [
        f"{title} after {batch} training batches: for the last {held_for} batches (since batch "
        f"{batch - held_for + 1}) {rule.describe(scores)}{note}."
    ]
    if rule.failure is None:
        return lines[0]
    lines[0] += f" This means {_EXPLANATIONS[rule.failure]}."
    lines.append("What to try:")
    lines += [f"  - {remedy}" for remedy in REMEDIES[rule.failure]]
    return "\n".join(lines)


_FIRST_LINE = re.compile(
    r"^(?P<title>[A-Z][a-z ]*?) after (?P<batch>\d+) training batches: for the last (?P<held>\d+) batches"
)


def parse_message(message: str) -> tuple[FailureMode | None, int, int]:
    """The failure mode, batch and "held for" of a diagnosis text written by :func:`format_message`.

    The report reads diagnoses back from TensorBoard's text, so this is the inverse of :func:`format_message`'s
    first line (a test ties the two together for every rule).

    Args:
        message: a diagnosis text (plain or as :func:`~lightning_gan_monitor.tensorboard.to_markdown` wrote it).

    Returns:
        ``(failure, batch, held_for)``: the :class:`FailureMode` (None for "Converged"), the training batch at
        which the rule's patience ran out (:attr:`Diagnosis.batch`), and for how many batches the condition held.

    Raises:
        ValueError: if the text does not start as :func:`format_message` writes it.

    Example:
        >>> parse_message("Generator dominates after 120 training batches: for the last 60 batches (since batch 61)")
        (<FailureMode.GENERATOR_DOMINATES: 'generator_dominates'>, 120, 60)

    """
    match = _FIRST_LINE.match(message.lstrip())
    title = match["title"] if match else ""
    failure = None if title == "Converged" else next((m for m in FailureMode if _title(m) == title), "unknown")
    if match is None or failure == "unknown":
        first = message.strip().splitlines()[0] if message.strip() else ""
        raise ValueError(
            "not a GANMonitor diagnosis: expected a first line such as 'Generator dominates after 120 training "
            f"batches: for the last 60 batches ...', got {first[:120]!r}"
        )
    return failure, int(match["batch"]), int(match["held"])


def decide(events: Sequence[Sequence[Sequence[float]]], rules: Sequence[Rule]) -> tuple[int, int]:
    """Which rule fires, from every process's events (a pure function, identical on every rank).

    Args:
        events: per process, per rule, the row ``[batch, held_for, *scores]`` returned by
            :meth:`FailureDetector.update`, where ``batch`` is -1 if the rule did not fire on that process.
        rules: the rules, in priority order.

    Returns:
        ``(rule_index, process_index)`` of the earliest firing (ties go to the earlier rule, then process), or
        ``(-1, -1)`` if no rule fires.

    Example:
        >>> rules = [NonFinite(patience=1), GeneratorDominates(patience=10)]
        >>> no = [-1, 0, 0.5, 0.5, 0.5, 0.5]
        >>> decide([[no, no], [no, [42, 10, 0.95, 0.3, 0.0, 0.6]]], rules)
        (1, 1)
        >>> decide([[no, no]], rules)
        (-1, -1)
    """
    fired = [(rows[r][0], r, p) for p, rows in enumerate(events) for r in range(len(rules)) if rows[r][0] >= 0]
    if not fired:
        return -1, -1
    _, rule, process = min(fired)
    return rule, process


#: The regimes of the end-of-fit summary, in the order it lists them. A batch is counted in the regime of the first
#: failure rule (in priority order) whose condition held on the smoothed scores, else in "balanced".
REGIMES = ("balanced", "discriminator dominating", "generator dominating", "non-finite", "collapsed")
_REGIME_OF = {
    FailureMode.DISCRIMINATOR_DOMINATES: "discriminator dominating",
    FailureMode.GENERATOR_DOMINATES: "generator dominating",
    FailureMode.NON_FINITE: "non-finite",
    FailureMode.MODE_COLLAPSE: "collapsed",
}


def regime_counts(rules: Sequence[Rule], counts: Sequence[int]) -> dict[str, int | None]:
    """Batches per regime from :attr:`FailureDetector.regime_batches` (None: no rule watched that regime).

    Example:
        >>> counts = regime_counts([NonFinite(patience=1), GeneratorDominates(patience=10)], [2, 30, 68])
        >>> counts["balanced"], counts["generator dominating"], counts["non-finite"], counts["collapsed"]
        (68, 30, 2, None)

    """
    regimes: dict[str, int | None] = dict.fromkeys(REGIMES)
    regimes["balanced"] = int(counts[-1])
    for rule, n in zip(rules, counts):
        if rule.failure is not None:
            regimes[_REGIME_OF[rule.failure]] = int(n)
    return regimes


@dataclass(frozen=True)
class RunSummary:
    """What a run was like, for the end-of-fit summary: time in each regime, final scores and the verdict.

    ``str(summary)`` is the text the monitor prints on rank zero and writes to TensorBoard (``gan/summary``).
    """

    #: Training batches seen.
    batches: int
    #: Batches in each of :data:`REGIMES` (None: not watched, e.g. "collapsed" without diversity metrics).
    regimes: dict[str, int | None]
    #: The final smoothed scores.
    scores: dict[str, float]
    #: Every rule that fired, in order.
    diagnoses: tuple[Diagnosis, ...] = ()
    #: Why training stopped.
    stopping_reason: StoppingReason = StoppingReason.NOT_STOPPED
    #: True when "collapsed" was measured apart from the score regimes (so it can overlap them).
    collapsed_apart: bool = False

    @property
    def first_failure(self) -> Diagnosis | None:
        """The first failure diagnosis, or None."""
        return next((d for d in self.diagnoses if d.failure is not None), None)

    @property
    def verdict(self) -> str:
        """One line: the first failure with its batch, or healthy / converged, and how training ended."""
        failure = self.first_failure
        converged = next((d for d in self.diagnoses if d.failure is None), None)
        if self.stopping_reason is StoppingReason.CONVERGED and converged is not None:
            ended = f"converged after {converged.batch} training batches; training stopped at batch {self.batches}"
        elif self.stopping_reason is StoppingReason.FAILURE:
            ended = f"training stopped at batch {self.batches}"
        else:
            ended = f"training ran to its end ({self.batches} batches)"
        if failure is None:
            return f"healthy: no failure rule fired; {ended}"
        assert failure.failure is not None
        return (
            f"{_title(failure.failure)} after {failure.batch} training batches (since batch {failure.onset_batch}); "
            f"{ended}"
        )

    def __str__(self) -> str:
        # "collapsed" measured apart overlaps the score regimes, so it is not part of their total
        counted = sum(
            n
            for name, n in self.regimes.items()
            if n is not None and not (name == "collapsed" and self.collapsed_apart)
        )
        lines = [f"GANMonitor summary of {self.batches} training batches:"]
        if counted != self.batches:
            lines[0] = lines[0][:-1] + f" (regimes of the {counted} batches the rules have looked at):"
        for name, n in self.regimes.items():
            if n is None:
                lines.append(f"  {name:<26} not measured")
                continue
            share = f"({100 * n / counted:.0f}%)" if counted else ""
            note = " (measured apart: can overlap the above)" if name == "collapsed" and self.collapsed_apart else ""
            lines.append(f"  {name:<26}{n:>7} batches {share:>6}{note}")
        scores = ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in self.scores.items())
        lines.append(f"final smoothed scores: {scores}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def summarize(
    batches: int,
    regimes: Mapping[str, int | None],
    scores: Mapping[str, float],
    diagnoses: Sequence[Diagnosis] = (),
    stopping_reason: StoppingReason = StoppingReason.NOT_STOPPED,
    collapsed_batches: int | None = None,
) -> RunSummary:
    """The end-of-fit summary (a pure function of what the monitor counted).

    Args:
        batches: training batches seen.
        regimes: batches per regime, e.g. from :func:`regime_counts`.
        scores: the final smoothed scores.
        diagnoses: every rule that fired, in order.
        stopping_reason: why training stopped.
        collapsed_batches: batches judged collapsed by a measure outside the score rules (e.g. diversity below
            its threshold); used when ``regimes`` has no count for "collapsed".

    Example:
        >>> summary = summarize(100, {"balanced": 100}, {"generator_score": 0.48})
        >>> summary.verdict
        'healthy: no failure rule fired; training ran to its end (100 batches)'
        >>> print(str(summary).splitlines()[1])
          balanced                      100 batches (100%)

    """
    counts: dict[str, int | None] = {name: regimes.get(name) for name in REGIMES}
    apart = counts["collapsed"] is None and collapsed_batches is not None
    if apart:
        counts["collapsed"] = int(collapsed_batches)  # type: ignore[arg-type]
    return RunSummary(batches, counts, dict(scores), tuple(diagnoses), stopping_reason, apart)


class FailureDetector:
    """Smoothed scores and per-rule counters, kept as tensors on the training device.

    :meth:`update` takes the statistics of a whole window of observations (the batches between two checks) and
    processes them with a fixed number of tensor operations, as if they had come one by one: the exponential
    moving average in closed form, and each rule's "held for" counter at every observation with cumulative sums. So
    a rule is found to fire at the exact batch its patience ran out, even though the host only looks at checks.

    Args:
        rules: the rules to track, in priority order.
        smoothing: decay of the exponential moving average of the per-observation scores (0 disables smoothing);
            the average is bias-corrected, so the first observation is taken as is.
        device: where the state lives.

    Example:
        >>> import torch
        >>> from lightning_gan_monitor.functional import gan_score_stats
        >>> detector = FailureDetector([GeneratorDominates(patience=3)], smoothing=0.0)
        >>> stats = gan_score_stats(torch.tensor([0.5]), torch.tensor([0.95])).expand(4, -1)
        >>> events = detector.update(stats, n_batches=torch.ones(4, dtype=torch.long))
        >>> events[0, :2].tolist(), detector.held.tolist()
        ([3.0, 3.0], [4])
    """

    #: Observations processed together; longer windows are split (the closed-form average builds a k x k matrix).
    chunk = 64
    _STATE = ("ema", "ema_weight", "held", "latched", "batches")

    def __init__(self, rules: Sequence[Rule], smoothing: float, device: torch.device | str = "cpu") -> None:
        self.rules = tuple(rules)
        self.smoothing = smoothing
        self._future_masks: dict[torch.device, Tensor] = {}
        self.reset(device)

    def reset(self, device: torch.device | str = "cpu") -> None:
        """Forget everything seen, and put the state on ``device``."""
        n = len(self.rules)
        self.ema = torch.zeros(len(SCORE_NAMES), device=device)
        self.ema_weight = torch.zeros(len(SCORE_NAMES), device=device)
        self.held = torch.zeros(n, dtype=torch.long, device=device)
        self.latched = torch.zeros(n, dtype=torch.bool, device=device)
        self.batches = torch.zeros((), dtype=torch.long, device=device)
        self._event_is_current = torch.zeros(n, dtype=torch.bool, device=device)
        self._patience = torch.tensor([rule.patience for rule in self.rules], device=device)
        #: Batches counted per rule, where it was the first failure rule whose condition held, then (last) those
        #: where none held: the summary's regimes, counted on the device, read back once at the end of fit.
        self.regime_batches = torch.zeros(n + 1, dtype=torch.long, device=device)
        self._is_failure = torch.tensor([rule.failure is not None for rule in self.rules], device=device)

    def to(self, device: torch.device | str) -> FailureDetector:
        """Move the state to ``device``."""
        for name in (*self._STATE, "regime_batches", "_patience", "_event_is_current", "_is_failure"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def scores(self) -> Tensor:
        """The bias-corrected smoothed scores (NaN where nothing has been seen)."""
        return torch.where(self.ema_weight > 0, self.ema / self.ema_weight.clamp(min=1e-12), math.nan)

    @torch.no_grad()
    def update(self, stats: Tensor, n_batches: Tensor, non_finite: Tensor | None = None) -> Tensor:
        """Take a window of observations; tensor ops only, so it never waits for the device.

        Args:
            stats: (k, ``NUM_STATS``) statistics from
                :func:`~lightning_gan_monitor.functional.gan_score_stats_batches`, one row per observation.
            n_batches: (k,) integers, training batches each observation stands for (1 when every batch is
                observed; a probing monitor observes only every few batches, and the rules count batches).
            non_finite: optional (k,) bool, NaN/inf seen elsewhere (e.g. in the losses).

        Returns:
            (number of rules, 2 + 4) float tensor: per rule ``[batch, held_for, *smoothed scores]`` at the first
            observation of the window where it fired (its condition had held for ``patience`` batches and it had
            not fired in that stretch yet), with ``batch`` counted from the start of training, or -1.
        """
        stats = stats.reshape(-1, stats.shape[-1]).to(self.ema.device)
        n_batches = n_batches.reshape(-1).to(self.ema.device)
        events, current = None, None
        for start in range(0, stats.shape[0], self.chunk):
            window = slice(start, start + self.chunk)
            bad = None if non_finite is None else non_finite.reshape(-1)[window].to(self.ema.device)
            chunk_events, chunk_current, unbroken = self._update_window(stats[window], n_batches[window], bad)
            if events is None or current is None:
                events, current = chunk_events, chunk_current
            else:  # keep the earlier chunk's firing; it is current only if no break followed it
                earlier = events[:, 0] >= 0
                current = torch.where(earlier, current & unbroken, chunk_current)
                events = torch.where(earlier.unsqueeze(1), events, chunk_events)
        assert events is not None
        self._event_is_current = current
        return events

    def _update_window(
        self, stats: Tensor, n_batches: Tensor, non_finite: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        k, device = stats.shape[0], stats.device
        x = gan_scores_from_stats(stats)  # (k, 4) per-observation scores
        decay = torch.where(torch.isnan(x), 1.0, self.smoothing)  # a score with no finite input keeps its value
        gain = 1 - decay
        # m_t = sum_{i<=t} gain_i x_i prod_{i<j<=t} decay_j + m_0 prod_{j<=t} decay_j, with the products from log sums
        log_sums = decay.clamp(min=1e-30).log().cumsum(0)
        ratio = torch.exp(log_sums.unsqueeze(1) - log_sums.unsqueeze(0))  # [t, i] = prod_{i<j<=t} decay_j
        ratio = ratio.masked_fill(self._future_mask(k, device), 0.0)
        carried = torch.exp(log_sums)
        # the average and its weight in one product: a check's cost is mostly the number of tensor ops
        inputs = torch.stack([gain * torch.nan_to_num(x), gain])
        ema, weight = (
            torch.einsum("tic,sic->stc", ratio, inputs)
            + carried * torch.stack([self.ema, self.ema_weight]).unsqueeze(1)
        ).unbind(0)
        scores = torch.where(weight > 0, ema / weight.clamp(min=1e-12), math.nan)

        bad = stats[:, _NON_FINITE] > 0
        if non_finite is not None:
            bad = bad | non_finite
        holds = torch.stack([rule.holds(scores, bad) for rule in self.rules], dim=1)  # (k, rules)
        failing = holds & self._is_failure
        regime = torch.where(failing.any(1), failing.int().argmax(1), len(self.rules))
        regimes = torch.arange(len(self.rules) + 1, device=device)
        self.regime_batches = self.regime_batches + ((regime.unsqueeze(1) == regimes) * n_batches.unsqueeze(1)).sum(0)
        # held_t: batches since the last observation where the condition failed (or since the window began)
        steps = torch.arange(k, device=device).unsqueeze(1)
        last_break = torch.cummax(torch.where(holds, -1, steps), dim=0).values
        total = torch.cumsum(n_batches, 0)
        total0 = torch.cat([total.new_zeros(1), total])
        held = torch.where(last_break >= 0, total.unsqueeze(1) - total0[last_break + 1], self.held + total.unsqueeze(1))
        latched = self.latched & (last_break < 0)
        ready = (held >= self._patience) & ~latched
        first = ready.int().argmax(0)  # the first observation where each rule is ready (0 if never)
        rules = torch.arange(len(self.rules), device=device)
        batch = torch.where(ready.any(0), self.batches + total[first], -1)
        events = torch.cat([batch.unsqueeze(1).float(), held[first, rules].unsqueeze(1).float(), scores[first]], 1)

        # whether a firing happened in the stretch still going on at the end of the window (then it latches)
        current = ready.any(0) & (last_break[first, rules] == last_break[-1])

        self.ema, self.ema_weight = ema[-1], weight[-1]
        self.held, self.latched = held[-1], latched[-1]
        self.batches = self.batches + total[-1]
        return events, current, last_break[-1] < 0

    def _future_mask(self, k: int, device: torch.device) -> Tensor:
        """(k, k, 1) bool, True where i > t: a view of one mask for the longest window, built once per device."""
        mask = self._future_masks.get(device)
        if mask is None:
            mask = torch.ones(self.chunk, self.chunk, dtype=torch.bool, device=device).triu(1).unsqueeze(-1)
            self._future_masks[device] = mask
        return mask[:k, :k]

    def latch(self, index: int) -> None:
        """Rule ``index`` was reported from the last :meth:`update`: keep it quiet while that stretch lasts.

        If the reported firing belongs to a stretch that already ended within the window, the rule stays unlatched,
        so a newer stretch that also reached ``patience`` in that window is reported at the next update (late by up
        to a window). A stretch that both starts and completes between the reported one and the end of the window
        (possible only when ``patience`` is under half the window) is not reported on its own.
        """
        self.latched[index] = self._event_is_current[index]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors moved to the CPU)."""
        state = {name: getattr(self, name).detach().cpu() for name in self._STATE}
        return {**state, "regime_batches": self.regime_batches.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Restore :meth:`state_dict`; returns the names it could not restore (absent, or shaped for other rules)."""
        skipped = []
        for name in self._STATE:
            current = getattr(self, name)
            if name in state and state[name].shape == current.shape:
                setattr(self, name, state[name].to(device=current.device, dtype=current.dtype))
            else:
                skipped.append(name)
        # Optional: checkpoints of version 0.1 have no regime counts; the summary then counts from the resume on.
        regimes = state.get("regime_batches")
        if regimes is not None and regimes.shape == self.regime_batches.shape:
            self.regime_batches = regimes.to(self.regime_batches)
        return skipped


class CollapseDetector:
    """The :class:`ModeCollapse` rule's counter, fed with one row of diversity values per diversity check.

    Tensor state on the training device, like :class:`FailureDetector`: :meth:`update` never waits for the device.

    Args:
        rule: the rule to track.
        device: where the state lives.

    Example:
        >>> import torch
        >>> detector = CollapseDetector(ModeCollapse(patience=2, every=100))
        >>> collapsed = torch.tensor([0.01, 1.0, 0.0, 0.0])
        >>> detector.update(collapsed, batch=100)[:2].tolist()
        [-1.0, 1.0]
        >>> detector.update(collapsed, batch=200)[:2].tolist()  # fires: held at 2 checks, since batch 100
        [200.0, 101.0]

    """

    _STATE = ("held", "latched")

    def __init__(self, rule: ModeCollapse, device: torch.device | str = "cpu") -> None:
        self.rule = rule
        self.reset(device)

    def reset(self, device: torch.device | str = "cpu") -> None:
        """Forget everything seen, and put the state on ``device``."""
        self.held = torch.zeros((), dtype=torch.long, device=device)
        self.latched = torch.zeros((), dtype=torch.bool, device=device)
        self._fired = torch.zeros((), dtype=torch.bool, device=device)

    def to(self, device: torch.device | str) -> CollapseDetector:
        """Move the state to ``device``."""
        self.held, self.latched, self._fired = self.held.to(device), self.latched.to(device), self._fired.to(device)
        return self

    @staticmethod
    def no_event(device: torch.device | str = "cpu") -> Tensor:
        """The event row of a check without a diversity measurement."""
        return torch.tensor([-1.0, 0.0, *[math.nan] * len(DIVERSITY_NAMES)], device=device)

    @torch.no_grad()
    def update(self, scores: Tensor, batch: int) -> Tensor:
        """Take the diversity values measured at training batch ``batch``.

        Returns:
            The event row ``[batch, held_for, *scores]``: ``batch`` is -1 unless the rule fires here (it held at
            ``patience`` consecutive checks and had not fired in that stretch yet); ``held_for`` counts the batches
            from the first check of the stretch to this one.
        """
        scores = scores.to(self.held.device, torch.float32)
        holds = self.rule.holds(scores)
        self.held = torch.where(holds, self.held + 1, 0)
        self.latched = self.latched & holds
        self._fired = (self.held >= self.rule.patience) & ~self.latched
        held_for = torch.where(self.held > 0, (self.held - 1) * self.rule.every + 1, 0)
        fired_at = torch.where(self._fired, batch, -1)
        return torch.cat([torch.stack([fired_at, held_for]).float(), scores])

    def latch(self) -> None:
        """The last firing was reported: keep quiet until the condition has cleared."""
        self.latched = self.latched | self._fired

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors moved to the CPU)."""
        return {name: getattr(self, name).detach().cpu() for name in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (absent entries keep their value)."""
        for name in self._STATE:
            if name in state:
                current = getattr(self, name)
                setattr(self, name, state[name].to(device=current.device, dtype=current.dtype))
