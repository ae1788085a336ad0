"""The cause first: which of the failures holding at a check a diagnosis names first, why, and the decision.

:func:`decide` turns what fired since the last check (the trackers' :class:`~lightning_gan_monitor.rules.Firing`)
into ``(stop, diagnoses)``, in the spirit of Lightning's ``EarlyStopping._evaluate_stopping_criteria``: a dominance
that fires while a collapse shows beyond doubt is diagnosed as the collapse first (:class:`CollapseFirst`), a collapse
found while D is fooled as the fooled D first (:class:`FooledFirst`), and every other failure that holds is named
after the diagnosis's own, with the reason for the order (:func:`also_holding`). Plain Python: no torch, no
Lightning; every rank feeds it the same gathered numbers, so every rank takes the same decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from lightning_gan_monitor.diagnosis import Diagnosis, FailureMode, format_message, remedies_for, stop_note, title
from lightning_gan_monitor.names import DIVERSITY_NAMES
from lightning_gan_monitor.rules import (
    VALUE_NAMES,
    Firing,
    Holding,
    Rule,
)

__all__ = ["CollapseFirst", "FooledFirst", "also_holding", "beside", "decide"]


@dataclass(frozen=True)
class _Together(Rule):
    """A dominance rule's firing named together with a collapse (the diversity check's values): the cause first."""

    dominance: Rule | None = None
    collapse: tuple[tuple[str, float], ...] = ()
    evidence: ClassVar[tuple[str, ...]] = (*VALUE_NAMES, *DIVERSITY_NAMES)

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:
        assert self.dominance is not None
        return self.dominance.holds(scores, non_finite)


@dataclass(frozen=True)
class CollapseFirst(_Together):
    """A dominance rule that fired while the diversity checks showed mode collapse: the collapse is named first.

    A generator that draws one kind of sample is easy for the discriminator to reject (or fools a weak one with
    it), so the dominance follows from the collapse: the diagnosis is ``MODE_COLLAPSE``, its message names both
    (the collapse first, with the reason for the order) and lists the collapse's remedies before the dominance's.

    Example:
        >>> from lightning_gan_monitor.rules import DiscriminatorDominates
        >>> rule = CollapseFirst(100, DiscriminatorDominates(100), (("diversity", 0.02), ("near_duplicates", 1.0)))
        >>> rule.failure, rule.remedies[0]
        (<FailureMode.MODE_COLLAPSE: 'mode_collapse'>, 'a larger latent input (more latent dimensions)')

    """

    failure: FailureMode | None = field(init=False, default=FailureMode.MODE_COLLAPSE)

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


@dataclass(frozen=True)
class FooledFirst(_Together):
    """A collapse found while the discriminator orders generated samples above real ones: the fooled D comes first.

    A D that still learns would reject a generator's one kind of sample; one that scores it above the real data has
    stopped learning (frozen, a learning rate of 0) or been outrun, and the generator collapses onto what it
    accepts. The diagnosis is ``GENERATOR_DOMINATES``, naming the collapse after it, D's remedies first.

    Example:
        >>> from lightning_gan_monitor.rules import GeneratorDominates
        >>> rule = FooledFirst(100, GeneratorDominates(100), (("diversity", 0.01), ("near_duplicates", 1.0)))
        >>> rule.failure, rule.remedies[0].startswith("check that the discriminator's optimizer steps")
        (<FailureMode.GENERATOR_DOMINATES: 'generator_dominates'>, True)

    """

    failure: FailureMode | None = field(init=False, default=FailureMode.GENERATOR_DOMINATES)

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        c = dict(self.collapse)
        score = scores.get("generator_score", math.nan)
        return (
            f"the discriminator has ordered most generated samples above the real ones (smoothed AUC "
            f"{scores['auc']:.3f}" + (f", generator score {score:.3f}" if not math.isnan(score) else "") + ") while "
            f"the diversity checks show mode collapse (diversity {c['diversity']:.3f}, near-duplicates "
            f"{c['near_duplicates']:.3f})"
        )

    @property
    def explanation(self) -> str:
        """Why the fooled discriminator is named first."""
        return (
            "the discriminator no longer learns (or the generator outruns it): a learning D would reject a generator's "
            "one kind of sample, so the collapse follows from it, onto what the fooled D accepts; treat D first"
        )

    @property
    def remedies(self) -> tuple[str, ...]:
        """The fooled discriminator's remedies, then the collapse's."""
        critic = getattr(self.dominance, "critic", False)
        return remedies_for(FailureMode.GENERATOR_DOMINATES, critic) + remedies_for(FailureMode.MODE_COLLAPSE, critic)


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


def _named(rule: Rule) -> set[FailureMode | None]:
    """The failures a diagnosis by ``rule`` names (a ``CollapseFirst`` its dominance, ``FooledFirst`` its collapse)."""
    named = {rule.failure, getattr(getattr(rule, "dominance", None), "failure", None)}
    return named | ({FailureMode.MODE_COLLAPSE} if isinstance(rule, FooledFirst) else set())


def beside(named: Rule, holding: Sequence[Holding]) -> list[Holding]:
    """The failures in ``holding`` that a diagnosis by ``named`` does not name already (none for a success rule)."""
    if named.failure is None:
        return []
    return [h for h in holding if h.rule.failure is not None and h.rule.failure not in _named(named)]


def also_holding(primary: FailureMode, others: Sequence[Holding]) -> str:
    """The sentence naming the other failures whose condition holds at the check, and why they come after ``primary``.

    Example:
        >>> from lightning_gan_monitor.rules import DiscriminatorDominates, Holding
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


def decide(
    firings: Sequence[Firing],
    on_failure: str,
    batch: int,
    check_every: int,
    training_over: bool = False,
    collapse: Mapping[str, float] | None = None,
    holding: Sequence[Holding] = (),
    caveat: str = "",
    generator_note: tuple[str, Sequence[str]] = ("", ()),
    fooled: tuple[Rule, Mapping[str, float]] | None = None,
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
        generator_note: what the diversity checks say of a generator that is not learning (a sentence and the
            remedies to try first), for a diagnosis of the discriminator dominating
            (:meth:`~lightning_gan_monitor.diversity.DiversityWatch.generator_note`).
        fooled: the "generator dominates" rule and the smoothed scores, when D orders generated samples above real
            ones at this check (the AUC below the rule's ``auc_below``): a collapse that fires then is diagnosed as
            the fooled D first (:class:`FooledFirst`), and a dominance keeps its name even while a collapse shows.

    Returns:
        ``(stopping, diagnoses)``: the diagnosis that stops training (the first firing that does), or None to go on;
        and every diagnosis, in the order their rules fired (by batch, then rule priority).

    Example:
        >>> from lightning_gan_monitor.rules import Firing, NonFinite
        >>> fired = Firing(NonFinite(patience=1), 101, 1, {})
        >>> stopping, (diagnosis,) = decide([fired], "stop", batch=120, check_every=20)
        >>> stopping is diagnosis, diagnosis.failure, diagnosis.batch
        (True, <FailureMode.NON_FINITE: 'non_finite'>, 101)
        >>> first_line = diagnosis.message.splitlines()[0]
        >>> print(first_line[first_line.index("Training"):])
        Training stopped at batch 120, the first check after batch 101 (the monitor checks every 20 batches).

    """
    ordered = sorted(firings, key=lambda f: f.batch)  # stable: rules of one batch keep their priority order
    if fooled is not None:  # cause first: a D that no longer learns is what lets the generator collapse onto it
        rule, scores = fooled
        ordered = [
            f._replace(
                rule=FooledFirst(rule.patience, rule, tuple(f.evidence.items())), evidence={**scores, **f.evidence}
            )
            if f.rule.failure is FailureMode.MODE_COLLAPSE
            else f
            for f in ordered
        ]
        collapse = None
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
        stuck, first = generator_note if firing.rule.failure is FailureMode.DISCRIMINATOR_DOMINATES else ("", ())
        text = " ".join(filter(None, (stuck, also, caveat if _DOMINANCE & _named(firing.rule) else "", note)))
        message = format_message(firing.rule, firing.batch, firing.held_for, firing.evidence, text, more, first)
        failures = tuple(h.rule.failure for h in others if h.rule.failure is not None)
        diagnoses.append(
            Diagnosis(firing.rule.failure, firing.batch, firing.held_for, firing.evidence, message, also=failures)
        )
        if stops_here and stopping is None:
            stopping = diagnoses[-1]
    return stopping, diagnoses
