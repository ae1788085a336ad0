"""Faults of optional features, agreed by every process: off where one failed, then off everywhere at one check.

An optional feature (finding D's outputs, the diversity check) that fails after the first batch is turned off and
training goes on. Under DDP a process that decided alone to skip a collective would leave the others waiting in it,
so :class:`Faults` turns a feature off at once only for what needs no other process, and hands the check a row of
flags that its one gather sums over the processes; every process then turns off what failed anywhere, at the same
batch. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

from lightning_gan_monitor.diagnosis import GANMonitorWarning, say, turned_off, turned_off_elsewhere

__all__ = ["Faults", "Feature"]


class Feature(NamedTuple):
    """An optional feature: what it is, what the run does without it, and how it turns itself off."""

    what: str
    consequence: str
    turn_off: Callable[[], None]
    is_off: Callable[[], bool]


class Faults:
    """The faults of this process since the last check, and what every process does once they are gathered.

    Args:
        features: the optional features by name, in the order of the check's row of flags.

    Example:
        >>> off = []
        >>> scores = Feature("finding D's outputs", "no scores", lambda: off.append(1), lambda: False)
        >>> faults = Faults({"scores": scores})
        >>> faults.take(), faults.agree([1.0], [0.0], batch=40), off  # another process failed: off here too
        ([0.0], None, [1])

    """

    def __init__(self, features: dict[str, Feature]) -> None:
        self.features = features
        self.here = [0.0] * len(features)

    def report(self, name: str, err: Exception, batch: int, now: bool = False) -> None:
        """``name`` failed here at ``batch``: warn with the error (once), flag it; ``now``: off here at once."""
        index = list(self.features).index(name)
        feature = self.features[name]
        if not self.here[index]:
            warnings.warn(turned_off(feature.what, batch, err, feature.consequence), GANMonitorWarning, stacklevel=3)
        self.here[index] = 1.0
        if now:
            feature.turn_off()

    def take(self) -> list[float]:
        """The flags for the check's gather (1: failed here since the last check); they start afresh."""
        flags, self.here = self.here, [0.0] * len(self.features)
        return flags

    def agree(self, everywhere: Sequence[float], here: Sequence[float], batch: int) -> None:
        """Turn off what failed on any process; say so once where it did not fail here.

        ``everywhere``: the gathered flags; ``here``: this process's, as :meth:`take` gave them.
        """
        for feature, anywhere, mine in zip(self.features.values(), everywhere, here):
            if not anywhere:
                continue
            if not mine and not feature.is_off():
                say(turned_off_elsewhere(feature.what, batch, feature.consequence), warning=True)
            feature.turn_off()
