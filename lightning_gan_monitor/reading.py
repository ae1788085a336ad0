"""How D's outputs are read: probabilities, logits or a critic's scores, fixed by ``output``, or decided.

:class:`Reading` is asked once per check, by the accumulator, with whether an output of the window lay outside
[0, 1]. Nothing here imports Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Reading"]


class Reading:
    """How D's outputs are read: probabilities, logits or a critic's scores, fixed by ``output``, or decided.

    ``output="critic"`` (a Wasserstein critic or a hinge discriminator: scores with no fixed offset) reads them
    through their order only: the four probability scores are not computed, the values of ``RANK_NAMES`` are.

    ``output="auto"`` decides on the first window of ``check_every`` batches, not on one batch: logits as soon as an
    output lies outside [0, 1] (no probability can), probabilities once a whole window stayed inside it (a fresh logit
    D can keep every output of its first batches inside [0, 1]; one that trains for a window does not). Until then
    :meth:`choose` returns None and the caller holds the window back. The choice is said once, as provisional, in an
    info line. If outputs outside [0, 1] come later, it reads them as logits from that window on (the window itself
    included): silently when nothing was logged yet, else with a warning that the earlier scores were read as
    probabilities. ``output="logit"`` warns once if every output stayed inside [0, 1] over the first ``check_every``
    batches (a sigmoid would be applied twice); ``output="probability"`` raises at the first output outside [0, 1].

    Args:
        output: ``"auto"``, ``"probability"``, ``"logit"`` or ``"critic"`` (``from_logits``: ``True`` is
            ``"logit"``, ``False`` is ``"probability"``).
        check_every: batches of the first window, over which ``"auto"`` decides and ``output="logit"`` is checked.
        say: called with ``(message, is_warning)`` for what the reading tells the user.

    Example:
        >>> said = []
        >>> reading = Reading("auto", 20, lambda message, warn: said.append(message))
        >>> reading.choose(outside=False, first=1, last=1) is None  # one batch is not enough evidence
        True
        >>> reading.choose(outside=True, first=1, last=20), reading.decided
        (True, 'logits')
        >>> print(said[0].split(" (")[0])
        GANMonitor: reading the discriminator's outputs as logits

    """

    def __init__(self, output: bool | str, check_every: int, say: Callable[[str, bool], None]) -> None:
        self.critic = output == "critic"
        self.from_logits = {"probability": False, "logit": True, "critic": True}.get(output, output)  # type: ignore[call-overload]
        self.check_every = check_every
        self.say = say
        self.decided: str | None = None  # "logits" or "probabilities", once decided
        self._inside_only = True  # every output inside [0, 1] so far (for the check of output="logit")

    @property
    def guessed_logits(self) -> bool:
        """Whether ``output="auto"`` chose logits (the user never said so)."""
        return self.from_logits == "auto" and self.decided == "logits"

    def choose(self, outside: bool, first: int, last: int, final: bool = False, logged: bool = True) -> bool | None:
        """Whether the window of batches ``first``..``last`` is read as logits; None: not decided yet, hold it back.

        Args:
            outside: whether an output of the window lies outside [0, 1].
            first: the window's first batch.
            last: its last batch.
            final: decide now whatever the evidence (a log point, a firing, the end of fit).
            logged: whether scores were logged before this window (a later switch to logits then warns).

        Raises:
            ValueError: with ``output="probability"``, when an output is outside [0, 1].
        """
        if self.from_logits is False:
            if outside:
                raise ValueError(
                    "GANMonitor: the discriminator's outputs are not probabilities: some are outside [0, 1]. If your "
                    "discriminator returns logits (no sigmoid at the end, as with `BCEWithLogitsLoss`), pass "
                    "`GANMonitor(output='logit')`, or leave `output='auto'` (the default); if it is a Wasserstein "
                    "critic or a hinge discriminator (scores with no fixed offset), pass `GANMonitor(output='critic')`."
                )
            return False
        if self.critic:
            return True  # only the order counts, which a sigmoid keeps
        if self.from_logits is True:
            self._inside_only = self._inside_only and not outside
            if self._inside_only and last >= self.check_every and self.decided is None:
                self.decided = "logits"
                self.say(
                    f"GANMonitor: `output='logit'` (or `from_logits=True`), but every output of the discriminator was "
                    f"inside [0, 1] over the first {last} batches: they look like probabilities (a sigmoid at the end "
                    "of D), and the monitor applies a sigmoid again, which squeezes every score towards 0.5. Pass "
                    "`output='probability'` (or leave `output='auto'`) if D ends in a sigmoid.",
                    True,
                )
            return True
        if self.decided is None:
            if not outside and not final and last < self.check_every:
                return None
            self.decided = "logits" if outside else "probabilities"
            batches = f"batch{'es' if last > first else ''} {first}" + (f"-{last}" if last > first else "")
            if outside:
                self.say(
                    "GANMonitor: reading the discriminator's outputs as logits (some are outside [0, 1]; a sigmoid "
                    "turns them into probabilities). Pass `GANMonitor(output='logit')` to say so (a Wasserstein critic "
                    "or a hinge discriminator takes `output='critic'`).",
                    False,
                )
            else:
                self.say(
                    f"GANMonitor: reading the discriminator's outputs as probabilities for now (every output of "
                    f"{batches} lay in [0, 1]); outputs outside [0, 1] later switch the reading to logits. Pass "
                    "`GANMonitor(output='probability')` or `output='logit'` to say which.",
                    False,
                )
        elif self.decided == "probabilities" and outside:
            self.decided = "logits"
            if logged:
                self.say(
                    f"GANMonitor: the discriminator's outputs in batches {first}-{last} are outside [0, 1], after "
                    f"batches that were all inside it: reading them as logits from batch {first} on. The scores "
                    "logged before were computed as probabilities; if D returns logits, pass "
                    "`GANMonitor(output='logit')`.",
                    True,
                )
            else:
                self.say(
                    f"GANMonitor: the discriminator's outputs in batches {first}-{last} are outside [0, 1]: reading "
                    "them as logits from here on (nothing was logged before). Pass `GANMonitor(output='logit')` to "
                    "say so.",
                    False,
                )
        return self.decided == "logits"

    def state_dict(self) -> dict[str, Any]:
        """What was decided (for checkpoints)."""
        return {"decided": self.decided, "inside_only": self._inside_only}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.decided = state.get("decided", self.decided)
        self._inside_only = state.get("inside_only", self._inside_only)
