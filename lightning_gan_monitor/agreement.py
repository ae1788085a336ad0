"""Faults of optional features, agreed by every process: off where one failed, then off everywhere at one check.

An optional feature (finding D's outputs, the diversity check) that fails after the first batch is turned off and
training goes on. Under DDP a process that decided alone to skip a collective would leave the others waiting in it,
so :class:`Faults` turns a feature off at once only for what needs no other process, and hands the check a row of
flags that its one gather sums over the processes; every process then turns off what failed anywhere, at the same
batch. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Protocol

from lightning_gan_monitor.diagnosis import FEATURES, GANMonitorWarning, say, turned_off, turned_off_elsewhere

__all__ = ["Faults", "Part"]


class Part(Protocol):
    """A part of the monitor with an optional feature: it turns itself off and says whether it is off."""

    off: bool

    def turn_off(self) -> None:
        """No more of this feature this fit."""


class Faults:
    """The faults of this process since the last check, and what every process does once they are gathered.

    Args:
        parts: the parts with an optional feature, by the feature's name in ``diagnosis.FEATURES``, in the order of
            the check's row of flags.

    Example:
        >>> class Scores:
        ...     off = False
        ...     def turn_off(self): self.off = True
        >>> faults = Faults({"scores": Scores()})
        >>> faults.take(), faults.agree([1.0], [0.0], batch=40), faults.parts["scores"].off  # failed elsewhere
        ([0.0], None, True)

    """

    def __init__(self, parts: Mapping[str, Part]) -> None:
        self.parts = dict(parts)
        self.here = [0.0] * len(self.parts)

    def report(self, name: str, err: Exception, batch: int, now: bool = False) -> None:
        """``name`` failed here at ``batch``: warn with the error (once), flag it; ``now``: off here at once."""
        index = list(self.parts).index(name)
        if not self.here[index]:
            warnings.warn(
                turned_off(*FEATURES[name][:1], batch, err, FEATURES[name][1]), GANMonitorWarning, stacklevel=3
            )
        self.here[index] = 1.0
        if now:
            self.parts[name].turn_off()

    def take(self) -> list[float]:
        """The flags for the check's gather (1: failed here since the last check); they start afresh."""
        flags, self.here = self.here, [0.0] * len(self.parts)
        return flags

    def agree(self, everywhere: Sequence[float], here: Sequence[float], batch: int) -> None:
        """Turn off what failed on any process; say so once where it did not fail here.

        ``everywhere``: the gathered flags; ``here``: this process's, as :meth:`take` gave them.
        """
        for (name, part), anywhere, mine in zip(self.parts.items(), everywhere, here):
            if not anywhere:
                continue
            if not mine and not part.off:
                say(turned_off_elsewhere(*FEATURES[name][:1], batch, FEATURES[name][1]), warning=True)
            part.turn_off()
