"""The rules for a critic (a Wasserstein critic or a hinge discriminator), over the values of ``RANK_NAMES``.

A critic's scores have no fixed offset, so the probability rules (thresholds on mean sigmoid outputs) mean nothing
for it; these look at how it orders real and generated samples (the AUC) and at the gap between its mean scores,
which :class:`~lightning_gan_monitor.tracker.ScoreTracker` smooths like the other values (plain Python, no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from lightning_gan_monitor.diagnosis import FailureMode
from lightning_gan_monitor.names import RANK_NAMES
from lightning_gan_monitor.rules import Rule

__all__ = ["CriticDominates", "CriticFooled"]


@dataclass(frozen=True)
class CriticDominates(Rule):
    """For a critic (a Wasserstein or hinge D): it separates the real and generated samples, and keeps doing so.

    It orders nearly every (real, generated) pair correctly, and the gap between its mean scores on real and on
    generated samples stays near the highest it has been (it is not narrowing: the generator is not catching up).

    A critic that separates every pair is normal for a while (a Wasserstein critic's gradients do not vanish, and a
    healthy critic learns faster than the generator at first), so this rule's ``patience`` is longer than the
    probability rules' (benchmarks/RESULTS.md: on the healthy WGAN-GP runs the gap peaked 336-446 batches in).

    Example:
        >>> rule = CriticDominates(patience=500)
        >>> rule.holds({"auc": 1.0, "gap": 6.9, "gap_peak": 7.0}, False)
        True
        >>> rule.holds({"auc": 1.0, "gap": 3.0, "gap_peak": 4.5}, False)  # narrowing: the generator catches up
        False

    """

    auc_above: float = 0.99
    gap_within: float = 0.1
    critic: ClassVar[bool] = True
    #: It fires only once the generator has had ``patience`` updates: with ``n_critic`` critic steps per generator
    #: step, ``patience`` batches are a fifth as many generator steps, too few to say it is not catching up.
    waits_for_updates: ClassVar[bool] = True
    failure: FailureMode | None = field(init=False, default=FailureMode.DISCRIMINATOR_DOMINATES)
    evidence: ClassVar[tuple[str, ...]] = (*RANK_NAMES, "gap_peak")
    shown: ClassVar[tuple[str, ...]] = ("auc", "gap")

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        return scores["auc"] > self.auc_above and scores["gap"] >= (1 - self.gap_within) * scores["gap_peak"]

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        return (
            f"the critic has ordered more than {self.auc_above:g} of the (real, generated) pairs correctly (smoothed "
            f"AUC now {scores['auc']:.3f}) and the gap between its mean scores on real and generated samples has "
            f"stayed within {self.gap_within:.0%} of its highest (now {scores['gap']:.3g}, highest "
            f"{scores['gap_peak']:.3g}): the generator is not catching up"
        )


@dataclass(frozen=True)
class CriticFooled(Rule):
    """For a critic: it orders most (real, generated) pairs the wrong way round.

    It scores generated samples above real ones: a critic that learns cannot stay there, so it has stopped learning
    or the generator outruns it.

    Example:
        >>> CriticFooled(patience=100).holds({"auc": 0.05}, False)
        True

    """

    auc_below: float = 0.2
    critic: ClassVar[bool] = True
    failure: FailureMode | None = field(init=False, default=FailureMode.GENERATOR_DOMINATES)
    evidence: ClassVar[tuple[str, ...]] = RANK_NAMES
    shown: ClassVar[tuple[str, ...]] = ("auc",)

    def holds(self, scores: Mapping[str, float], non_finite: bool) -> bool:  # noqa: D102
        return scores["auc"] < self.auc_below

    def fooled_by_order(self, scores: Mapping[str, float]) -> bool:
        """Whether the critic orders most generated samples above the real ones (its condition)."""
        return self.holds(scores, False)

    def describe(self, scores: Mapping[str, float]) -> str:  # noqa: D102
        return (
            f"the critic has ordered fewer than {self.auc_below:g} of the (real, generated) pairs correctly (smoothed "
            f"AUC now {scores['auc']:.3f})"
        )
