"""The rules' state over the batches: the smoothed scores and, per rule, how long its condition has held.

:class:`ScoreTracker` takes the batches since the last check as plain host floats (read back once by
:mod:`lightning_gan_monitor.accumulate`), smooths the values of ``VALUE_NAMES`` and counts, per rule of
:mod:`lightning_gan_monitor.rules`, the consecutive batches its condition has held; what fires goes to
:func:`~lightning_gan_monitor.cause.decide`. Plain Python: no torch, no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_gan_monitor.names import RANK_NAMES, SCORE_NAMES
from lightning_gan_monitor.rules import VALUE_NAMES, Firing, Holding, Rule

__all__ = ["Batch", "ScoreTracker"]

#: One batch as the rules see it: its four scores (NaN where it had no such outputs) or None when nothing was
#: observed in it (a probing monitor observes every few batches), and whether a value was NaN or infinite.
Batch = tuple[Sequence[float] | None, bool]


class ScoreTracker:
    """The smoothed scores and, per rule, for how many consecutive batches its condition has held (host state).

    :meth:`update` takes the batches since the last check one by one, so a rule is found to fire at the exact batch
    its patience ran out, even though the host only looks at checks. A rule fires once per stretch of its condition
    (it is latched until the condition breaks).

    Args:
        rules: the rules to track, in priority order.
        smoothing: decay per batch of the bias-corrected exponential moving average of the scores (0: none).

    Example:
        >>> from lightning_gan_monitor.rules import GeneratorDominates
        >>> tracker = ScoreTracker([GeneratorDominates(patience=3)], smoothing=0.0)
        >>> dominated = ([0.95, 0.3, 0.0, 0.6], False)
        >>> [(f.batch, f.held_for) for f in tracker.update([dominated] * 4)]
        [(3, 3)]

    """

    def __init__(self, rules: Sequence[Rule], smoothing: float) -> None:
        self.rules = tuple(rules)
        self.smoothing = smoothing
        self.reset()

    def reset(self) -> None:
        """Forget everything seen."""
        n = len(self.rules)
        self.batches = 0
        self.gap = 0  # batches since the last observed one
        self.ema = [0.0] * len(VALUE_NAMES)
        self.weight = [0.0] * len(VALUE_NAMES)
        self.gap_peak = -math.inf  # the highest smoothed gap so far (for CriticDominates)
        self.held = [0] * n
        self.latched = [False] * n
        self.holding = [False] * n
        #: Batches per rule in which it was the first failure rule whose condition held, then (last) those where
        #: none held: the summary's regimes.
        self.regime_batches = [0] * (n + 1)

    @property
    def scores(self) -> dict[str, float]:
        """The bias-corrected smoothed values of ``VALUE_NAMES`` (NaN where nothing has been seen)."""
        return {
            name: ema / weight if weight > 0 else math.nan
            for name, ema, weight in zip(VALUE_NAMES, self.ema, self.weight)
        }

    def holding_now(self) -> list[Holding]:
        """The failure rules whose condition held at the latest observed batch, fired or not, in priority order."""
        scores = self.scores
        return [
            Holding(rule, held, scores)
            for rule, holding, held in zip(self.rules, self.holding, self.held)
            if holding and rule.failure is not None
        ]

    def update(self, batches: Sequence[Batch], updates: float | None = None, learning: bool = False) -> list[Firing]:
        """Take the batches since the last check, in order; returns the firings among them, in order.

        ``updates``: the generator's updates so far (None: not counted). A rule that ``waits_for_updates`` fires only
        once they reach its ``patience``, at the first check after (its condition keeps counting meanwhile).
        ``learning``: the generator's outputs still move as a learning one's do (the latest diversity check): a rule
        waits ``while_learning`` times its ``patience`` then.

        A batch with nothing observed changes nothing; the next observed batch stands for it too (its condition
        counts for every batch since the previous observation, and the moving average decays over every batch
        since it), so ``patience`` and ``smoothing`` count batches, not observations.
        """
        firings = []
        for scores, non_finite in batches:
            self.batches += 1
            if scores is not None or non_finite:
                # the decay is per batch: an observation every 10 batches (a probe) weighs the one before by 0.9**10,
                # so the smoothed scores follow a probed D as closely in batches as one whose outputs are returned
                decay = self.smoothing ** (self.gap + 1)
                for i, x in enumerate(scores or ()):
                    if not math.isnan(x):  # a score with no finite input keeps its value
                        self.ema[i] = decay * self.ema[i] + (1 - decay) * x
                        self.weight[i] = decay * self.weight[i] + (1 - decay)
                smoothed = self.scores
                if not math.isnan(smoothed["gap"]):
                    self.gap_peak = max(self.gap_peak, smoothed["gap"])
                smoothed["gap_peak"] = self.gap_peak
                self.holding = [rule.holds(smoothed, non_finite) for rule in self.rules]
                gap, self.gap = self.gap + 1, 0
                for i, rule in enumerate(self.rules):
                    if not self.holding[i]:
                        self.held[i], self.latched[i] = 0, False
                        continue
                    self.held[i] += gap
                    waiting = rule.waits_for_updates and updates is not None and updates < rule.patience
                    patience = rule.patience * (rule.while_learning if learning else 1)
                    if self.held[i] >= patience and not self.latched[i] and not waiting:
                        self.latched[i] = True
                        evidence = {k: smoothed[k] for k in rule.evidence if not math.isnan(smoothed.get(k, math.nan))}
                        firings.append(Firing(rule, self.batches, self.held[i], evidence))
            else:
                self.gap += 1
            regime = next((i for i, r in enumerate(self.rules) if self.holding[i] and r.failure), len(self.rules))
            self.regime_batches[regime] += 1
        return firings

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly."""
        names = ("batches", "gap", "ema", "weight", "held", "latched", "holding", "regime_batches", "gap_peak")
        return {name: getattr(self, name) for name in names}

    def load_state_dict(self, state: Mapping[str, Any]) -> list[str]:
        """Restore :meth:`state_dict`; returns the names it could not restore (absent, or sized for other rules)."""
        skipped = []
        state = dict(state)
        for name in ("ema", "weight"):  # saved before the rank values were smoothed too: they start afresh
            if isinstance(state.get(name), list) and len(state[name]) == len(SCORE_NAMES):
                state[name] = [*state[name], *[0.0] * len(RANK_NAMES)]
        for name, value in state.items():
            current = getattr(self, name, None)
            if isinstance(current, list) and (not isinstance(value, list) or len(value) != len(current)):
                skipped.append(name)
            elif current is not None:
                setattr(self, name, list(value) if isinstance(value, list) else value)
        return skipped
