"""The mode-collapse rule over the diversity checks, and its tracker (plain Python over host floats).

:class:`ModeCollapse` looks at the values of ``DIVERSITY_NAMES`` that :mod:`lightning_gan_monitor.diversity` measures
every ``diversity_every_n_batches``; :class:`CollapseTracker` counts the consecutive checks at which its condition
held, and waits for the generator's updates. Its firings join the score rules' in
:func:`~lightning_gan_monitor.cause.decide`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from lightning_gan_monitor.diagnosis import FailureMode
from lightning_gan_monitor.names import DIVERSITY_NAMES
from lightning_gan_monitor.rules import Firing, Holding, Rule

__all__ = ["CollapseTracker", "ModeCollapse"]


@dataclass(frozen=True)
class ModeCollapse(Rule):
    """Mode collapse: low diversity, or many near-duplicates, at ``patience`` consecutive diversity checks.

    It looks at the diversity values (``DIVERSITY_NAMES``), measured every ``every`` batches, and its ``patience``
    counts those checks; :class:`CollapseTracker` tracks it. A condition whose threshold is None is not used.

    Example:
        >>> rule = ModeCollapse(patience=3)
        >>> rule.holds({"diversity": 0.05, "near_duplicates": 0.9, "density": 0.1, "coverage": 0.1})
        True
        >>> rule.holds({"diversity": 0.8, "near_duplicates": 0.0, "density": 1.0, "coverage": 0.9})
        False

    """

    diversity_below: float | None = 0.2
    near_duplicates_above: float | None = 0.5
    coverage_below: float | None = None
    every: int = 1
    #: Evidence beyond every healthy run of the calibration fires at one check: the diversity ratio below this...
    at_once_diversity_below: float | None = None
    #: ...and the near-duplicate rate above this (None: never at once).
    at_once_near_duplicates_above: float | None = None
    #: The discriminator is a critic (its remedies leave out label flipping).
    critic: bool = False
    #: A collapse is lost variety, or little variety in a generator that learns: the samples reach the data when
    #: their density or coverage is at least this (None: the condition alone is a collapse, as before 0.3)...
    near_data_above: float | None = 0.05
    #: ...or G's outputs on the fixed latent vectors moved at least this far since the check before, per 100 batches
    #: between checks (in units of the real samples' mean pairwise distance: a frozen G gives 0, one 100x slower
    #: about 0.005, 10x slower about 0.05, a learning one 0.3-1.3), while its variety is not growing...
    moving_above: float = 0.1
    #: ...or the diversity ratio fell to at most this fraction of the highest it had (at the first batch included).
    lost_below: float = 0.5
    failure: FailureMode | None = field(init=False, default=FailureMode.MODE_COLLAPSE)
    evidence: ClassVar[tuple[str, ...]] = DIVERSITY_NAMES
    shown: ClassVar[tuple[str, ...]] = ("diversity", "near_duplicates")
    unit: ClassVar[str] = "diversity check"

    def unambiguous(self, scores: Mapping[str, float]) -> bool:
        """Whether one check's values are far beyond any healthy run's.

        Both "at once" thresholds crossed, or nearly every sample (more than ``at_once_near_duplicates_above``) an
        exact twin of another (``scores["twins"]``: a partial collapse onto a few outputs; no healthy, fresh or
        frozen generator of the failure zoo had any).

        Example:
            >>> rule = ModeCollapse(3, at_once_diversity_below=0.1, at_once_near_duplicates_above=0.95)
            >>> rule.unambiguous({"diversity": 0.02, "near_duplicates": 1.0}), rule.unambiguous({"diversity": 0.15,
            ...     "near_duplicates": 0.99})
            (True, False)
        """
        below, above = self.at_once_diversity_below, self.at_once_near_duplicates_above
        if below is None or above is None:
            return False
        twins = scores.get("twins", 0.0) > above  # NaN compares False
        return (scores["diversity"] < below and scores["near_duplicates"] > above) or twins

    def confirmed(
        self, scores: Mapping[str, float], previous: float = math.nan, peak: float = math.nan, moved: float = math.nan
    ) -> bool:
        """Whether values that meet the condition are a collapse: lost variety, twins, or no variety in a learning G.

        A generator whose samples were never varied, that neither moves nor reaches the data (a fresh or frozen
        network draws nearly one grey blur for every latent vector: close together, but no two the same), has not
        collapsed: it is not learning. Nor has one whose variety is growing. Half its samples or more with an exact
        twin (``scores["twins"]``: the same output for another latent vector) are a collapse whatever else holds.
        ``previous``: the diversity ratio at the check before (or at the first batch); ``peak``: the highest so far;
        ``moved``: how far G's outputs moved since the check before. NaN: unknown.

        Example:
            >>> rule = ModeCollapse(3)
            >>> frozen = {"diversity": 0.05, "near_duplicates": 1.0, "density": 0.0, "coverage": 0.0}
            >>> rule.confirmed(frozen, previous=0.05, peak=0.05, moved=0.0)
            False
            >>> rule.confirmed(frozen, previous=0.05, peak=0.05, moved=0.6), rule.confirmed(frozen, peak=0.6)
            (True, True)
        """
        if self.near_data_above is None:
            return True
        diversity = scores["diversity"]
        if self.lost(diversity, peak) or scores.get("twins", 0.0) >= 0.5:  # lost variety; one output for many z
            return True
        if diversity > 1.1 * previous + 0.01:  # growing variety: a young generator still learning
            return False
        reach = [v for v in (scores.get("density", math.nan), scores.get("coverage", math.nan)) if v == v]
        # the threshold is per 100 batches: drift over a few checks is close to linear in the batches between them
        learning = moved >= self.moving_above * self.every / 100 or (math.isnan(moved) and not math.isnan(previous))
        return max(reach, default=0.0) >= self.near_data_above or learning

    def lost(self, diversity: float, peak: float) -> bool:
        """Whether the diversity ratio fell to ``lost_below`` of its ``peak`` (and by 0.05 at least): lost variety.

        Example:
            >>> ModeCollapse(3).lost(0.0, peak=0.16), ModeCollapse(3).lost(0.15, peak=0.16)
            (True, False)
        """
        return diversity <= self.lost_below * peak and peak - diversity >= 0.05  # NaN compares False

    def holds(self, scores: Mapping[str, float], non_finite: bool = False) -> bool:  # noqa: D102
        return (
            (self.diversity_below is not None and scores["diversity"] < self.diversity_below)
            or (self.near_duplicates_above is not None and scores["near_duplicates"] > self.near_duplicates_above)
            or (self.coverage_below is not None and scores["coverage"] < self.coverage_below)
        )

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        if scores.get("at_once"):
            checks = int(scores.get("checks", 1))
            held = f" (the collapse condition has held at {checks} consecutive checks)" if checks > 1 else ""
            if not scores["diversity"] < (self.at_once_diversity_below or 0.0):  # a few outputs, each drawn many times
                return (
                    f"{scores['twins']:.0%} of the generated samples have an exact twin (the same output for another "
                    f"latent vector), far beyond any healthy run, at the latest diversity check{held} (now diversity "
                    f"{scores['diversity']:.3f}, near-duplicates {scores['near_duplicates']:.3f}, density "
                    f"{scores['density']:.3f}, coverage {scores['coverage']:.3f})"
                )
            return (
                f"the diversity ratio has fallen below {self.at_once_diversity_below:g} and the near-duplicate rate "
                f"risen above {self.at_once_near_duplicates_above:g}, far beyond any healthy run, at the latest "
                f"diversity check{held} (now diversity {scores['diversity']:.3f}, near-duplicates "
                f"{scores['near_duplicates']:.3f}, density {scores['density']:.3f}, coverage {scores['coverage']:.3f})"
            )
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


#: G's outputs on the fixed latent vectors moved less than this (in units of the real samples' mean pairwise
#: distance) between two checks: it does not change at all (a frozen generator gives exactly 0).
STILL_BELOW = 0.01


class CollapseTracker:
    """The :class:`ModeCollapse` rule's count of consecutive diversity checks at which a collapse held.

    The condition counts only when it is a collapse (:meth:`ModeCollapse.confirmed`); when it holds without being
    one, :attr:`not_learning` keeps the values, which name a generator that is not learning beside a dominance.

    Example:
        >>> tracker = CollapseTracker(ModeCollapse(patience=2, every=100))
        >>> collapsed = {"diversity": 0.01, "near_duplicates": 1.0, "density": 0.3, "coverage": 0.0}
        >>> tracker.update(collapsed, batch=100) is None
        True
        >>> tracker.update(collapsed, batch=200)[1:3]  # fires: held at 2 checks, since batch 100
        (200, 101)

    """

    def __init__(self, rule: ModeCollapse) -> None:
        self.rule = rule
        self.reset()
        self.peak = math.nan  # the highest diversity ratio so far (G's at the first batch included)
        self.previous = math.nan  # the diversity ratio at the latest check (or at the first batch)
        #: Batches of the run over which a collapse held (a check stands for the ``every`` batches before it).
        self.collapsed_batches = 0

    def reset(self) -> None:
        """Forget the current stretch of the condition."""
        self.held = 0
        self.latched = False
        self.evidence: dict[str, float] = {}
        #: The latest check's values when they met the condition without being a collapse (else None): with
        #: ``movement``, what names a generator that is not learning.
        self.not_learning: dict[str, float] | None = None
        #: How far G's outputs on the fixed latent vectors moved before the latest check (NaN: not measured).
        self.movement = math.nan

    def start(self, initial: Mapping[str, float]) -> None:
        """The diversity values of G's samples at the first batch: the variety it started with."""
        self.peak = self.previous = float(initial["diversity"])

    def update(self, values: Mapping[str, float], batch: int, updates: int | None = None) -> Firing | None:
        """Take the values measured at training batch ``batch``; the firing, if the rule fires here.

        ``values``: the ``DIVERSITY_NAMES`` and, where measured, ``movement`` and ``twins``. ``updates``: the
        generator's updates so far (None: as many as batches). The rule fires once a collapse has held for
        ``patience`` checks and the generator has had ``patience x every`` updates (what a generator stepped every
        batch has had by then); unambiguous values (:meth:`ModeCollapse.unambiguous`) fire at once, after ``every``
        updates. Neither waits for the updates of a generator that is no fresh one: it lost its variety
        (:meth:`ModeCollapse.lost`), or half its samples or more have an exact twin (the same output for another
        latent vector, which a young generator does not draw).
        """
        evidence = {name: float(values[name]) for name in DIVERSITY_NAMES}
        rule = self.rule
        holds = rule.holds(evidence)
        movement = float(values.get("movement", math.nan))
        twins = {"twins": float(values.get("twins", math.nan))}
        confirmed = holds and rule.confirmed({**evidence, **twins}, self.previous, self.peak, movement)
        diversity = evidence["diversity"]
        # a generator that lost its variety, or draws the same output for many latent vectors, is not a fresh one
        old_enough = rule.lost(diversity, self.peak) or twins["twins"] >= 0.5
        if not math.isnan(diversity):
            self.peak = diversity if math.isnan(self.peak) else max(self.peak, diversity)
            self.previous = diversity
        if not confirmed:
            self.reset()
            self.movement = movement
            if holds:
                self.not_learning = {**evidence, "movement": movement}
            return None
        self.movement = movement
        self.not_learning = None
        self.evidence = evidence
        self.held += 1
        self.collapsed_batches += rule.every
        if self.latched:
            return None
        updates = batch if updates is None else updates
        if self.held >= rule.patience and (updates >= rule.patience * rule.every or old_enough):
            self.latched = True
            return Firing(rule, batch, (self.held - 1) * rule.every + 1, evidence)
        if (updates >= rule.every or old_enough) and rule.unambiguous({**evidence, **twins}):
            self.latched = True
            at_once = {**evidence, **twins, "at_once": 1.0, "checks": float(self.held)}
            return Firing(rule, batch, (self.held - 1) * rule.every + 1, at_once)
        return None

    def holding_now(self) -> list[Holding]:
        """The rule, if a collapse held at the latest diversity check (fired or not)."""
        return [Holding(self.rule, self.held, self.evidence)] if self.held else []

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly."""
        names = ("held", "latched", "peak", "previous", "collapsed_batches", "movement")
        return {**{name: getattr(self, name) for name in names}, "evidence": dict(self.evidence)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (absent entries keep their value)."""
        self.held = int(state.get("held", self.held))
        self.latched = bool(state.get("latched", self.latched))
        for name in ("peak", "previous", "movement"):
            setattr(self, name, float(state.get(name, getattr(self, name))))
        self.collapsed_batches = int(state.get("collapsed_batches", self.collapsed_batches))
        self.evidence = {k: float(v) for k, v in state.get("evidence", self.evidence).items()}
