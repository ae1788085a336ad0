"""The rules, as plain Python over host numbers (no torch, no Lightning).

A check reads the batches since the last check back from the device once (:mod:`lightning_gan_monitor.accumulate`)
and hands them on as plain floats: :class:`~lightning_gan_monitor.tracker.ScoreTracker` smooths the scores and
counts, per rule, for how many consecutive batches its condition has held;
:class:`~lightning_gan_monitor.collapse.CollapseTracker` does the same for the mode-collapse rule over diversity
checks; :func:`~lightning_gan_monitor.cause.decide` turns what fired into ``(stop, diagnoses)``, the cause first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from lightning_gan_monitor.diagnosis import (
    Diagnosis,
    FailureMode,
    StoppingReason,
    title,
)
from lightning_gan_monitor.names import RANK_NAMES, SCORE_NAMES

#: The values the score rules see, smoothed: the four probability scores, then the rank values (``RANK_NAMES``).
VALUE_NAMES: tuple[str, ...] = (*SCORE_NAMES, *RANK_NAMES)

__all__ = [
    "VALUE_NAMES",
    "Converged",
    "Diagnosis",
    "DiscriminatorDominates",
    "FailureMode",
    "Firing",
    "GeneratorDominates",
    "Holding",
    "NonFinite",
    "Rule",
    "StoppingReason",
]


@dataclass(frozen=True)
class Rule:
    """A condition on the smoothed scores that fires once it has held for ``patience`` consecutive batches."""

    patience: int

    #: The failure this rule diagnoses; None for a success rule.
    failure: FailureMode | None = field(init=False, default=None)
    #: Names of the values the rule looks at (the keys of ``Diagnosis.scores``).
    evidence: ClassVar[tuple[str, ...]] = SCORE_NAMES
    #: The values that show its condition, named when it holds beside another rule's diagnosis.
    shown: ClassVar[tuple[str, ...]] = ()
    #: What its ``patience`` counts.
    unit: ClassVar[str] = "batch"
    #: Whether it also waits until the generator has had ``patience`` updates (see ``ScoreTracker.update``).
    waits_for_updates: ClassVar[bool] = False
    #: How many times ``patience`` it waits while the generator's outputs still move as a learning one's do.
    while_learning: ClassVar[int] = 1

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:
        """Whether the condition holds for the smoothed ``scores`` (NaN never meets a threshold)."""
        raise NotImplementedError

    def describe(self, scores: Mapping[str, float]) -> str:
        """The condition and the values that meet it, in words."""
        raise NotImplementedError

    def fooled_by_order(self, scores: Mapping[str, float]) -> bool:
        """Whether the rule sees D order most generated samples above the real ones (a fooled D: named first)."""
        return False


@dataclass(frozen=True)
class DiscriminatorDominates(Rule):
    """Generator score near 0 and discriminator score near 1.

    Example:
        >>> DiscriminatorDominates(patience=10).holds({"generator_score": 0.05, "discriminator_score": 0.95}, False)
        True

    """

    generator_below: float = 0.1
    discriminator_above: float = 0.9
    failure: FailureMode | None = field(init=False, default=FailureMode.DISCRIMINATOR_DOMINATES)
    #: A generator whose outputs move as a learning one's do has not stopped learning: the condition must hold
    #: twice as long (a D learning 4x faster held Lightning's example at 0.08-0.10 for 200 batches, then it caught up).
    while_learning: ClassVar[int] = 2
    shown: ClassVar[tuple[str, ...]] = ("generator_score", "discriminator_score")

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        return (
            scores["generator_score"] < self.generator_below
            and scores["discriminator_score"] > self.discriminator_above
        )

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed generator score has stayed below {self.generator_below:g} (now "
            f"{scores['generator_score']:.3f}) and the smoothed discriminator score above "
            f"{self.discriminator_above:g} (now {scores['discriminator_score']:.3f})"
        )


@dataclass(frozen=True)
class GeneratorDominates(Rule):
    """The discriminator is fooled: it rates generated samples as real, or orders them above the real ones.

    Two signs, either enough: the generator score near 1 (D's mean probability on generated samples), or the AUC
    near 0 (D scores most generated samples above most real ones). The AUC needs no calibration of D's outputs, so
    it catches a fooled D whose probabilities sit below ``generator_above`` (a frozen D that G climbs to 0.7), and a
    D that learns cannot stay there: a healthy D's AUC is above 0.5 within a few batches.

    Example:
        >>> GeneratorDominates(patience=10).holds({"generator_score": 0.95}, False)
        True
        >>> GeneratorDominates(patience=10).holds({"generator_score": 0.7, "auc": 0.01}, False)
        True

    """

    generator_above: float = 0.8
    #: Or the smoothed AUC below this (None: the generator score alone).
    auc_below: float | None = 0.2
    failure: FailureMode | None = field(init=False, default=FailureMode.GENERATOR_DOMINATES)
    evidence: ClassVar[tuple[str, ...]] = (*SCORE_NAMES, "auc")
    shown: ClassVar[tuple[str, ...]] = ("generator_score", "discriminator_score", "auc")

    def fooled_by_order(self, scores: Mapping[str, float]) -> bool:
        """Whether D orders most generated samples above the real ones (the AUC below ``auc_below``)."""
        return self.auc_below is not None and scores.get("auc", math.nan) < self.auc_below

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        return scores["generator_score"] > self.generator_above or self.fooled_by_order(scores)

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        auc = scores.get("auc", math.nan)
        if scores.get("generator_score", math.nan) > self.generator_above:
            text = (
                f"the smoothed generator score has stayed above {self.generator_above:g} (now "
                f"{scores['generator_score']:.3f})"
            )
            return text + (f"; the smoothed AUC is {auc:.3f}" if not math.isnan(auc) else "")
        return (
            f"the discriminator has ordered fewer than {self.auc_below:g} of the (real, generated) pairs correctly "
            f"(smoothed AUC now {auc:.3f}; generator score {scores['generator_score']:.3f}, fake-detection accuracy "
            f"{scores['fake_detection_accuracy']:.3f}): it rates generated samples above real ones"
        )


@dataclass(frozen=True)
class NonFinite(Rule):
    """NaN or infinity in the discriminator's outputs or in the losses.

    Example:
        >>> NonFinite(patience=1).holds({}, non_finite=True)
        True

    """

    failure: FailureMode | None = field(init=False, default=FailureMode.NON_FINITE)
    shown: ClassVar[tuple[str, ...]] = ()

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        return non_finite

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        return "the discriminator's outputs or the losses have been NaN or infinite"


@dataclass(frozen=True)
class Converged(Rule):
    """Success: the discriminator is no better than chance on generated samples.

    Example:
        >>> Converged(patience=10, tolerance=0.05).holds({"fake_detection_accuracy": 0.52}, False)
        True

    """

    tolerance: float = 0.05
    evidence: ClassVar[tuple[str, ...]] = VALUE_NAMES
    #: The value that sits at 0.5 at chance: the fake-detection accuracy, or for a critic the AUC.
    key: str = "fake_detection_accuracy"

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        return abs(scores[self.key] - 0.5) <= self.tolerance

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        what = "fake-detection accuracy" if self.key == "fake_detection_accuracy" else self.key.replace("_", " ")
        return (
            f"the smoothed {what} has stayed within {self.tolerance:g} of 0.5 (now {scores[self.key]:.3f}): the "
            "discriminator is no better than chance on generated samples"
        )


class Holding(NamedTuple):
    """A failure rule whose condition holds at a check, fired or not: named beside another rule's diagnosis."""

    rule: Rule
    #: For how many consecutive batches (diversity checks, for mode collapse) it has held.
    held: int
    #: The values it read (smoothed scores, or a diversity check's values).
    scores: Mapping[str, float]

    def describe(self) -> str:
        """The failure, how long its condition has held and the values that show it, in words.

        Example:
            >>> scores = {"generator_score": 0.02, "discriminator_score": 0.99}
            >>> Holding(DiscriminatorDominates(patience=100), 40, scores).describe()
            'the discriminator dominates (held for 40 of the 100 batches its rule waits for: generator score 0.020, discriminator score 0.990)'
        """  # noqa: E501
        rule, held = self.rule, self.held
        assert rule.failure is not None
        plural = rule.unit + ("es" if rule.unit.endswith("h") else "s")
        if held >= rule.patience:
            how_long = f"held for {held} {plural if held != 1 else rule.unit}"
        else:
            how_long = f"held for {held} of the {rule.patience} {plural} its rule waits for"
        values = ", ".join(f"{k.replace('_', ' ')} {self.scores[k]:.3f}" for k in rule.shown if k in self.scores)
        return f"the {title(rule.failure).lower()} ({how_long}{': ' + values if values else ''})"


class Firing(NamedTuple):
    """A rule whose condition had held for its ``patience``: which, at which batch, for how long, on what evidence."""

    rule: Rule
    batch: int
    held_for: int
    evidence: dict[str, float]
