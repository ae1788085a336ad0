"""The rules and the decision, as plain Python over host numbers (no torch, no Lightning).

A check reads the batches since the last check back from the device once (:mod:`lightning_gan_monitor.accumulate`)
and hands them on as plain floats: :class:`~lightning_gan_monitor.tracker.ScoreTracker` smooths the scores and
counts, per rule, for how many consecutive batches its condition has held;
:class:`~lightning_gan_monitor.collapse.CollapseTracker` does the same for the mode-collapse rule over diversity
checks; :func:`decide` turns what fired into ``(stop, diagnoses)``, in the spirit of Lightning's
``EarlyStopping._evaluate_stopping_criteria``. Every rank feeds them the same gathered numbers, so every rank takes
the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from lightning_gan_monitor.diagnosis import (
    Diagnosis,
    FailureMode,
    StoppingReason,
    format_message,
    remedies_for,
    stop_note,
    title,
)
from lightning_gan_monitor.names import DIVERSITY_NAMES, RANK_NAMES, SCORE_NAMES

#: The values the score rules see, smoothed: the four probability scores, then the rank values (``RANK_NAMES``).
VALUE_NAMES: tuple[str, ...] = (*SCORE_NAMES, *RANK_NAMES)

__all__ = [
    "VALUE_NAMES",
    "CollapseFirst",
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
    "decide",
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

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:
        """Whether the condition holds for the smoothed ``scores`` (NaN never meets a threshold)."""
        raise NotImplementedError

    def describe(self, scores: Mapping[str, float]) -> str:
        """The condition and the values that meet it, in words."""
        raise NotImplementedError


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
    """Generator score near 1: the discriminator takes generated samples for real ones.

    Example:
        >>> GeneratorDominates(patience=10).holds({"generator_score": 0.95}, False)
        True

    """

    generator_above: float = 0.8
    failure: FailureMode | None = field(init=False, default=FailureMode.GENERATOR_DOMINATES)
    shown: ClassVar[tuple[str, ...]] = ("generator_score", "discriminator_score")

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        return scores["generator_score"] > self.generator_above

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed generator score has stayed above {self.generator_above:g} (now "
            f"{scores['generator_score']:.3f})"
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


@dataclass(frozen=True)
class CollapseFirst(Rule):
    """A dominance rule that fired while the diversity checks showed mode collapse: the collapse is named first.

    A generator that draws one kind of sample is easy for the discriminator to reject (or fools a weak one with
    it), so the dominance follows from the collapse: the diagnosis is ``MODE_COLLAPSE``, its message names both
    (the collapse first, with the reason for the order) and lists the collapse's remedies before the dominance's.

    Example:
        >>> rule = CollapseFirst(100, DiscriminatorDominates(100), (("diversity", 0.02), ("near_duplicates", 1.0)))
        >>> rule.failure, rule.remedies[0]
        (<FailureMode.MODE_COLLAPSE: 'mode_collapse'>, 'a larger latent input (more latent dimensions)')

    """

    dominance: Rule | None = None
    collapse: tuple[tuple[str, float], ...] = ()
    failure: FailureMode | None = field(init=False, default=FailureMode.MODE_COLLAPSE)
    evidence: ClassVar[tuple[str, ...]] = (*VALUE_NAMES, *DIVERSITY_NAMES)

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        assert self.dominance is not None
        return self.dominance.holds(scores, non_finite)

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        assert self.dominance is not None and self.dominance.failure is not None
        c = dict(self.collapse)
        return (
            f"the diversity checks have shown mode collapse (diversity {c['diversity']:.3f}, near-duplicates "
            f"{c['near_duplicates']:.3f}) while the {title(self.dominance.failure).lower()}: "
            f"{self.dominance.describe(scores)}"
        )

    @property
    def explanation(self) -> str:
        """Why the collapse is named first."""
        assert self.dominance is not None
        if self.dominance.failure is FailureMode.GENERATOR_DOMINATES:
            how = "the generator's dominance goes with it (a generator draws only the one kind of sample it found "
            how += "the discriminator accepts)"
        else:
            how = "the discriminator's dominance follows from it (one kind of sample is easy to reject)"
        return f"the generator has collapsed, and {how}: the collapse is the cause to treat first, its remedies first"

    @property
    def remedies(self) -> tuple[str, ...]:
        """The collapse's remedies, then the dominance's."""
        assert self.dominance is not None and self.dominance.failure is not None
        critic = getattr(self.dominance, "critic", False)
        return remedies_for(FailureMode.MODE_COLLAPSE, critic) + remedies_for(self.dominance.failure, critic)


#: Why the diagnosis is named before a failure whose condition holds beside it: (named, also holding) -> the reason.
_ORDER_REASONS = {
    (FailureMode.MODE_COLLAPSE, FailureMode.DISCRIMINATOR_DOMINATES): (
        "a collapsed generator's few kinds of samples are easy to reject, so the dominance can follow from the "
        "collapse: try the collapse's remedies first, the dominance's if it outlasts them"
    ),
    (FailureMode.MODE_COLLAPSE, FailureMode.GENERATOR_DOMINATES): (
        "a collapsed generator draws the few kinds of sample the discriminator accepts, so the dominance goes "
        "with the collapse: try the collapse's remedies first"
    ),
    (FailureMode.DISCRIMINATOR_DOMINATES, FailureMode.MODE_COLLAPSE): (
        "the diversity values are short of an unambiguous collapse, and a generator that a dominating "
        "discriminator keeps from learning looks collapsed too: treat the dominance first, the collapse if it "
        "outlasts it"
    ),
    (FailureMode.GENERATOR_DOMINATES, FailureMode.MODE_COLLAPSE): (
        "the diversity values are short of an unambiguous collapse, and a generator held on what a weak "
        "discriminator accepts looks collapsed too: treat the dominance first, the collapse if it outlasts it"
    ),
}


_NOUNS = {
    FailureMode.MODE_COLLAPSE: "mode collapse",
    FailureMode.DISCRIMINATOR_DOMINATES: "discriminator's dominance",
    FailureMode.GENERATOR_DOMINATES: "generator's dominance",
    FailureMode.NON_FINITE: "non-finite values",
}


_DOMINANCE = frozenset({FailureMode.DISCRIMINATOR_DOMINATES, FailureMode.GENERATOR_DOMINATES})


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


def _named(rule: Rule) -> set[FailureMode | None]:
    """The failures a diagnosis by ``rule`` names (:class:`CollapseFirst` names its dominance too)."""
    return {rule.failure, getattr(getattr(rule, "dominance", None), "failure", None)}


def beside(named: Rule, holding: Sequence[Holding]) -> list[Holding]:
    """The failures in ``holding`` that a diagnosis by ``named`` does not name already (none for a success rule)."""
    if named.failure is None:
        return []
    return [h for h in holding if h.rule.failure is not None and h.rule.failure not in _named(named)]


def also_holding(primary: FailureMode, others: Sequence[Holding]) -> str:
    """The sentence naming the other failures whose condition holds at the check, and why they come after ``primary``.

    Example:
        >>> dominance = Holding(DiscriminatorDominates(patience=100), 40, {"generator_score": 0.02,
        ...                     "discriminator_score": 0.99})
        >>> print(also_holding(FailureMode.NON_FINITE, [dominance]))  # doctest: +NORMALIZE_WHITESPACE
        Also holding at this check: the discriminator dominates (held for 40 of the 100 batches its rule waits for:
        generator score 0.020, discriminator score 0.990), named after the non-finite values because they make
        every other reading unreliable: fix them first.
    """
    parts = []
    for other in others:
        if primary is FailureMode.NON_FINITE:
            reason = "they make every other reading unreliable: fix them first"
        else:
            reason = _ORDER_REASONS.get((primary, other.rule.failure), "its rule fired first")
        parts.append(f"{other.describe()}, named after the {_NOUNS[primary]} because {reason}")
    return f"Also holding at this check: {'; and '.join(parts)}." if parts else ""


class Firing(NamedTuple):
    """A rule whose condition had held for its ``patience``: which, at which batch, for how long, on what evidence."""

    rule: Rule
    batch: int
    held_for: int
    evidence: dict[str, float]


def decide(
    firings: Sequence[Firing],
    on_failure: str,
    batch: int,
    check_every: int,
    training_over: bool = False,
    collapse: Mapping[str, float] | None = None,
    holding: Sequence[Holding] = (),
    caveat: str = "",
) -> tuple[Diagnosis | None, list[Diagnosis]]:
    """Whether to stop, and the diagnosis of every firing (a pure function: the same numbers give the same answer).

    Args:
        firings: what fired since the last check, from the trackers' ``update`` (:mod:`lightning_gan_monitor.tracker`,
            :mod:`lightning_gan_monitor.collapse`).
        on_failure: ``"stop"`` or ``"warn"``; a success rule (``Converged``) always stops.
        batch: the training batch of this check (where training stops if it does).
        check_every: batches between two checks, for the message.
        training_over: the check at the end of fit: nothing is left to stop.
        collapse: the latest diversity values, when they met the mode-collapse condition (None: they did not): a
            dominance rule that fires then is diagnosed as mode collapse first (:class:`CollapseFirst`).
        holding: the failure rules whose condition holds at this check (the trackers' ``holding_now``): a
            diagnosis names every other one after its own, with the reason for the order (:func:`also_holding`),
            and lists them in ``also``.
        caveat: a sentence for the diagnosis of a dominance (how D's outputs were read, when the monitor guessed).

    Returns:
        ``(stopping, diagnoses)``: the diagnosis that stops training (the first firing that does), or None to go on;
        and every diagnosis, in the order their rules fired (by batch, then rule priority).

    Example:
        >>> fired = Firing(NonFinite(patience=1), 101, 1, {})
        >>> stopping, (diagnosis,) = decide([fired], "stop", batch=120, check_every=20)
        >>> stopping is diagnosis, diagnosis.failure, diagnosis.batch
        (True, <FailureMode.NON_FINITE: 'non_finite'>, 101)
        >>> first_line = diagnosis.message.splitlines()[0]
        >>> print(first_line[first_line.index("Training"):])
        Training stopped at batch 120, the first check after batch 101 (the monitor checks every 20 batches).

    """
    ordered = sorted(firings, key=lambda f: f.batch)  # stable: rules of one batch keep their priority order
    if collapse is not None:  # cause first: a collapsed generator is what lets a discriminator dominate
        ordered = [
            f._replace(
                rule=CollapseFirst(f.rule.patience, f.rule, tuple(collapse.items())),
                evidence={**f.evidence, **collapse},
            )
            if f.rule.failure in _DOMINANCE
            else f
            for f in ordered
        ]
    stops = [not training_over and (f.rule.failure is None or on_failure == "stop") for f in ordered]
    diagnoses, stopping = [], None
    for firing, stops_here in zip(ordered, stops):
        if training_over:
            note = f"Training had already reached its end (batch {batch})."
        else:
            note = stop_note(firing.rule.failure, firing.batch, batch if stops_here else None, check_every)
        others = beside(firing.rule, holding)
        also = also_holding(firing.rule.failure, others) if firing.rule.failure is not None else ""
        critic = getattr(firing.rule, "critic", False)  # the other rules of a critic's run advise for a critic too
        more = [r for h in others if h.rule.failure for r in remedies_for(h.rule.failure, critic)]
        text = " ".join(filter(None, (also, caveat if _DOMINANCE & _named(firing.rule) else "", note)))
        message = format_message(firing.rule, firing.batch, firing.held_for, firing.evidence, text, more)
        failures = tuple(h.rule.failure for h in others if h.rule.failure is not None)
        diagnoses.append(
            Diagnosis(firing.rule.failure, firing.batch, firing.held_for, firing.evidence, message, also=failures)
        )
        if stops_here and stopping is None:
            stopping = diagnoses[-1]
    return stopping, diagnoses
