"""The mode-collapse rule over the diversity checks, and its tracker (plain Python over host floats).

:class:`ModeCollapse` looks at the values of ``DIVERSITY_NAMES`` that :mod:`lightning_gan_monitor.diversity` measures
every ``diversity_every_n_batches``; :class:`CollapseTracker` counts the consecutive checks at which its condition
held, and waits for the generator's updates. Its firings join the score rules' in
:func:`~lightning_gan_monitor.rules.decide`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    failure: FailureMode | None = field(init=False, default=FailureMode.MODE_COLLAPSE)
    evidence: ClassVar[tuple[str, ...]] = DIVERSITY_NAMES
    shown: ClassVar[tuple[str, ...]] = ("diversity", "near_duplicates")
    unit: ClassVar[str] = "diversity check"

    def unambiguous(self, scores: Mapping[str, float]) -> bool:
        """Whether one check's values are far beyond any healthy run's (both "at once" thresholds crossed).

        Example:
            >>> rule = ModeCollapse(3, at_once_diversity_below=0.1, at_once_near_duplicates_above=0.95)
            >>> rule.unambiguous({"diversity": 0.02, "near_duplicates": 1.0}), rule.unambiguous({"diversity": 0.15,
            ...     "near_duplicates": 0.99})
            (True, False)
        """
        below, above = self.at_once_diversity_below, self.at_once_near_duplicates_above
        if below is None or above is None:
            return False
        return scores["diversity"] < below and scores["near_duplicates"] > above

    def holds(self, scores: Mapping[str, float], non_finite: bool = False) -> bool:  # noqa: D102
        return (
            (self.diversity_below is not None and scores["diversity"] < self.diversity_below)
            or (self.near_duplicates_above is not None and scores["near_duplicates"] > self.near_duplicates_above)
            or (self.coverage_below is not None and scores["coverage"] < self.coverage_below)
        )

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        if scores.get("at_once"):
            return (
                f"the diversity ratio was below {self.at_once_diversity_below:g} and the near-duplicate rate above "
                f"{self.at_once_near_duplicates_above:g} at one diversity check, far beyond any healthy run (now "
                f"diversity {scores['diversity']:.3f}, near-duplicates {scores['near_duplicates']:.3f}, density "
                f"{scores['density']:.3f}, coverage {scores['coverage']:.3f})"
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


class CollapseTracker:
    """The :class:`ModeCollapse` rule's count of consecutive diversity checks at which its condition held.

    Example:
        >>> tracker = CollapseTracker(ModeCollapse(patience=2, every=100))
        >>> collapsed = [0.01, 1.0, 0.0, 0.0]
        >>> tracker.update(collapsed, batch=100) is None
        True
        >>> tracker.update(collapsed, batch=200)[1:3]  # fires: held at 2 checks, since batch 100
        (200, 101)

    """

    def __init__(self, rule: ModeCollapse) -> None:
        self.rule = rule
        self.reset()

    def reset(self) -> None:
        """Forget everything seen."""
        self.held = 0
        self.latched = False
        self.evidence: dict[str, float] = {}

    def update(self, values: Sequence[float], batch: int, updates: int | None = None) -> Firing | None:
        """Take the diversity values measured at training batch ``batch``; the firing, if the rule fires here.

        ``updates``: the generator's updates so far (None: as many as batches). The rule fires once its condition
        has held for ``patience`` checks and the generator has had ``patience x every`` updates (what a generator
        stepped every batch has had by then); unambiguous values (:meth:`ModeCollapse.unambiguous`) fire at once,
        after ``every`` updates.
        """
        evidence = dict(zip(DIVERSITY_NAMES, values))
        if not self.rule.holds(evidence):
            self.reset()
            return None
        self.evidence = evidence
        self.held += 1
        if self.latched:
            return None
        updates = batch if updates is None else updates
        rule = self.rule
        if self.held >= rule.patience and updates >= rule.patience * rule.every:
            self.latched = True
            return Firing(rule, batch, (self.held - 1) * rule.every + 1, evidence)
        if updates >= rule.every and rule.unambiguous(evidence):
            self.latched = True
            return Firing(rule, batch, (self.held - 1) * rule.every + 1, {**evidence, "at_once": 1.0})
        return None

    def holding_now(self) -> list[Holding]:
        """The rule, if its condition held at the latest diversity check (fired or not)."""
        return [Holding(self.rule, self.held, self.evidence)] if self.held else []

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly."""
        return {"held": self.held, "latched": self.latched, "evidence": dict(self.evidence)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (absent entries keep their value)."""
        self.held = int(state.get("held", self.held))
        self.latched = bool(state.get("latched", self.latched))
        self.evidence = {k: float(v) for k, v in state.get("evidence", self.evidence).items()}
