"""What the user reads: failure modes, remedies, the diagnosis text and its parser (plain Python, no torch).

The rules (:mod:`lightning_gan_monitor.rules`) decide *whether* something is wrong; this module says *what* it means
and what to try. The report reads diagnoses back from TensorBoard's text, so :func:`parse_message` inverts the first
line of :func:`format_message`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Protocol

__all__ = [
    "DISCRIMINATOR_STEPS",
    "FEATURES",
    "GENERATOR_STEPS",
    "GUESSED_LOGITS",
    "REMEDIES",
    "Diagnosis",
    "FailureMode",
    "GANMonitorWarning",
    "StoppingReason",
    "format_message",
    "not_learning",
    "parse_message",
    "say",
    "still_learning",
    "stop_note",
    "title",
    "turned_off",
    "turned_off_elsewhere",
]


class GANMonitorWarning(UserWarning):
    """A failure diagnosis, or a problem with how the monitor is set up (filter it with ``warnings``).

    Printed as its message alone, which names the monitor: a diagnosis is for the person watching the run, and the
    file and line that raised it (the monitor's own) would tell them nothing.
    """


_format_warning = warnings.formatwarning


def _format_monitor_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    if issubclass(category, GANMonitorWarning):
        return f"{message}\n"
    return _format_warning(message, category, filename, lineno, line)


# Chained, not replaced: Lightning formats its own warnings the same way (`lightning_fabric.utilities.warnings`).
warnings.formatwarning = _format_monitor_warning


#: The optional features that turn themselves off when they fail: what each is, what the run does without it.
FEATURES = {
    "scores": ("finding the discriminator's outputs", "no scores and no failure rule from here on"),
    "diversity": ("the diversity check", "no diversity metrics and no mode-collapse rule from here on"),
}


def turned_off(what: str, batch: int, err: BaseException, consequence: str) -> str:
    """The warning of an optional feature that failed and turned itself off; training goes on.

    Example:
        >>> print(turned_off("the diversity check", 100, ValueError("bad"), "no mode-collapse rule").split(" (")[0])
        GANMonitor: the diversity check failed at batch 100, so it is off for the rest of this fit
    """
    return (
        f"GANMonitor: {what} failed at batch {batch}, so it is off for the rest of this fit ({consequence}); training "
        f"goes on. The error: {type(err).__name__}: {str(err).rstrip('.')}. Fix the cause and resume from a checkpoint "
        "to turn it on again."
    )


def turned_off_elsewhere(what: str, batch: int, consequence: str) -> str:
    """The warning of an optional feature turned off on every process because it failed on another one.

    Example:
        >>> print(turned_off_elsewhere("the diversity check", 100, "no mode-collapse rule").split(" for the rest")[0])
        GANMonitor: the diversity check failed on another process by batch 100, so it is off on every process
    """
    return (
        f"GANMonitor: {what} failed on another process by batch {batch}, so it is off on every process for the rest "
        f"of this fit ({consequence}); training goes on. That process's warning names the error."
    )


#: Said with a dominance when ``output="auto"`` guessed logits (the user never said so).
GUESSED_LOGITS = (
    "D's outputs were read as logits, as `output='auto'` guessed from outputs outside [0, 1]: pass `output='logit'` "
    "to confirm it, and this note goes away (only a Wasserstein critic or a hinge discriminator, whose scores are "
    "not logits, needs `output='critic'`)."
)


def say(message: str, warning: bool = False) -> None:
    """Tell the user, on rank zero: a :class:`GANMonitorWarning`, or an info line."""
    from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn

    if warning:
        rank_zero_warn(message, category=GANMonitorWarning)
    else:
        rank_zero_info(message)


class FailureMode(Enum):
    """The ways a GAN run goes wrong that the monitor recognises.

    Example:
        >>> FailureMode("discriminator_dominates")
        <FailureMode.DISCRIMINATOR_DOMINATES: 'discriminator_dominates'>

    """

    DISCRIMINATOR_DOMINATES = "discriminator_dominates"
    GENERATOR_DOMINATES = "generator_dominates"
    MODE_COLLAPSE = "mode_collapse"
    NON_FINITE = "non_finite"


class StoppingReason(Enum):
    """Why the monitor stopped training, as ``EarlyStopping.stopping_reason`` does.

    Example:
        >>> StoppingReason.NOT_STOPPED.value
        'not_stopped'

    """

    NOT_STOPPED = "not_stopped"
    FAILURE = "failure"
    CONVERGED = "converged"


#: The first thing to try for a generator that does not learn (and for a dominating D, which such a G lets win).
GENERATOR_STEPS = (
    "check that the generator's optimizer steps at all and at a useful rate (frozen parameters, a learning rate of 0 "
    "or far below the discriminator's)"
)
#: The first thing to try for a fooled D.
DISCRIMINATOR_STEPS = (
    "check that the discriminator's optimizer steps at all (frozen parameters, a learning rate of 0, a "
    "`requires_grad_(False)` left on)"
)


#: What to try for each failure mode, most effective first.
REMEDIES: dict[FailureMode, tuple[str, ...]] = {
    FailureMode.DISCRIMINATOR_DOMINATES: (
        "one-sided label smoothing or flipping: train D on real labels of 0.9 instead of 1, or flip a few percent "
        "of the real labels to 0",
        "add dropout to the discriminator (e.g. 0.3 after each hidden layer)",
        "give the generator more capacity (more filters or hidden units) so it can keep up",
        "give the discriminator less capacity (fewer filters or hidden units)",
        "lower the discriminator's learning rate, or update it less often than the generator",
    ),
    FailureMode.GENERATOR_DOMINATES: (
        DISCRIMINATOR_STEPS,
        "give the discriminator more capacity (more filters or hidden units)",
        "add dropout to the generator",
        "give the generator less capacity (fewer filters or hidden units)",
        "lower the generator's learning rate, or update the discriminator more often",
    ),
    FailureMode.MODE_COLLAPSE: (
        "a larger latent input (more latent dimensions)",
        "more generator capacity",
        "one-sided label flipping",
        "minibatch discrimination or packing (PacGAN)",
        "unrolled discriminator updates",
    ),
    FailureMode.NON_FINITE: (
        "lower the learning rates (or warm them up)",
        "clip gradients (`Trainer(gradient_clip_val=...)` with automatic optimisation, "
        "`self.clip_gradients(...)` with manual)",
        "use a numerically safe loss: `BCEWithLogitsLoss` on logits instead of `BCELoss` after a sigmoid",
        "with 16-bit precision, try `precision='bf16-mixed'` or 32-bit",
    ),
}

#: What to try when the discriminator is a critic (a Wasserstein or hinge D), where they differ from the above.
CRITIC_REMEDIES: dict[FailureMode, tuple[str, ...]] = {
    FailureMode.DISCRIMINATOR_DOMINATES: (
        "give the generator more capacity (more filters or hidden units) so it can keep up",
        "raise the generator's learning rate, or take fewer critic steps per generator step (`n_critic`)",
        "give the critic less capacity, or constrain it more (a larger gradient penalty, spectral normalisation)",
        GENERATOR_STEPS,
    ),
    FailureMode.GENERATOR_DOMINATES: (
        DISCRIMINATOR_STEPS.replace("discriminator", "critic"),
        "take more critic steps per generator step (`n_critic`), or raise the critic's learning rate",
        "give the critic more capacity (more filters or hidden units)",
        "lower the generator's learning rate",
    ),
    FailureMode.MODE_COLLAPSE: (  # no labels to flip in a critic's loss
        "a larger latent input (more latent dimensions)",
        "more generator capacity",
        "minibatch discrimination or packing (PacGAN)",
        "unrolled critic updates",
    ),
}

#: Why a critic's failure matters, where it differs from a probability discriminator's.
CRITIC_EXPLANATIONS: dict[FailureMode, str] = {
    FailureMode.DISCRIMINATOR_DOMINATES: (
        "the critic tells every generated sample from the real ones and the distance it measures is not shrinking: "
        "the generator is not learning (or too slowly) to close the gap"
    ),
    FailureMode.GENERATOR_DOMINATES: (
        "the critic scores generated samples above real ones, so it no longer gives the generator a useful signal: "
        "it has stopped learning, or the generator outruns it"
    ),
}

_EXPLANATIONS: dict[FailureMode, str] = {
    FailureMode.DISCRIMINATOR_DOMINATES: (
        "the discriminator rejects almost every generated sample, so the generator's gradients vanish and it "
        "stops learning"
    ),
    FailureMode.GENERATOR_DOMINATES: (
        "the discriminator accepts generated samples as real, so it no longer gives the generator a useful signal"
    ),
    FailureMode.MODE_COLLAPSE: (
        "the generator produces a small variety of nearly identical samples: it has collapsed onto a few modes of "
        "the data and ignores much of its latent input"
    ),
    FailureMode.NON_FINITE: "the training has diverged: the discriminator's outputs or the losses are NaN or infinite",
}


@dataclass(frozen=True)
class Diagnosis:
    """A rule that fired: what, when, on what evidence, and what to try."""

    #: The failure mode, or None for the success rule.
    failure: FailureMode | None
    #: The training batch at which the condition had held for ``patience`` batches (the rule's patience ran out).
    batch: int
    #: For how many consecutive batches the condition had held.
    held_for: int
    #: The evidence at that moment: the smoothed scores (or the diversity values, for mode collapse).
    scores: dict[str, float]
    #: The human-readable diagnosis, with remedies for a failure.
    message: str
    #: The other failures whose condition held at the same check (named after this one in ``message``).
    also: tuple[FailureMode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoints."""
        failure = self.failure.value if self.failure else None
        return {**asdict(self), "failure": failure, "also": [f.value for f in self.also]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Diagnosis:
        """The inverse of :meth:`to_dict` (a checkpoint saved before ``also`` existed has none)."""
        failure = FailureMode(values["failure"]) if values["failure"] else None
        return cls(**{**values, "failure": failure, "also": tuple(FailureMode(f) for f in values.get("also", ()))})

    @property
    def onset_batch(self) -> int:
        """The first batch of the run in which the condition held."""
        return self.batch - self.held_for + 1


def not_learning(values: dict[str, float] | None, movement: float, still: bool) -> tuple[str, tuple[str, ...]]:
    """The sentence naming a generator that is not learning, and its remedy first; ``("", ())`` if nothing says so.

    Args:
        values: a diversity check's values that met the collapse condition without being a collapse (few kinds of
            samples near no real sample), or None.
        movement: how far G's outputs on the monitor's fixed latent vectors moved since the check before, in units
            of the real samples' mean pairwise distance (NaN: not measured).
        still: whether that is too little to be learning at all.

    Example:
        >>> print(not_learning(None, 0.0, still=True)[0])  # doctest: +NORMALIZE_WHITESPACE
        The generator is not learning: its outputs on the monitor's fixed latent vectors did not move between the
        last two diversity checks (movement 0.000 of the real samples' spread).
    """
    parts = []
    if still:
        parts.append(
            "its outputs on the monitor's fixed latent vectors did not move between the last two diversity checks "
            f"(movement {movement:.3f} of the real samples' spread)"
        )
    if values is not None:
        moved = (
            "" if still or movement != movement else f"; it moved {movement:.3f} of their spread since the check before"
        )
        parts.append(
            f"its samples show little variety (diversity {values['diversity']:.3f}, near-duplicates "
            f"{values['near_duplicates']:.3f}) but lie near no real sample (density {values['density']:.3f}, coverage "
            f"{values['coverage']:.3f}), as a fresh generator's do: not a mode collapse{moved}"
        )
    if not parts:
        return "", ()
    return f"The generator is not learning: {'; and '.join(parts)}.", (GENERATOR_STEPS,)


def still_learning(movement: float) -> str:
    """The sentence for a dominance whose generator still moves: it waited twice its patience for it.

    Example:
        >>> print(still_learning(0.21))  # doctest: +NORMALIZE_WHITESPACE
        The generator still moves (0.210 of the real samples' spread since the last diversity check), so the rule
        waited twice its patience for it to catch up.
    """
    return (
        f"The generator still moves ({movement:.3f} of the real samples' spread since the last diversity check), so "
        "the rule waited twice its patience for it to catch up."
    )


def title(failure: FailureMode) -> str:
    """The failure's name as a title: "Discriminator dominates"."""
    return failure.value.replace("_", " ").capitalize()


class _Described(Protocol):
    failure: FailureMode | None

    def describe(self, scores: dict[str, float]) -> str: ...


def format_message(
    rule: _Described,
    batch: int,
    held_for: int,
    scores: dict[str, float],
    note: str = "",
    more_remedies: Sequence[str] = (),
    first_remedies: Sequence[str] = (),
) -> str:
    """The diagnosis text: the verdict, the evidence and, for a failure, the remedies.

    ``first_remedies`` (what the evidence points to first) come before the rule's own, ``more_remedies`` (those of
    failures named beside it) after them; a remedy is said once.

    Example:
        >>> from lightning_gan_monitor.rules import GeneratorDominates
        >>> rule = GeneratorDominates(patience=50)
        >>> scores = dict(generator_score=0.97, discriminator_score=0.2, fake_detection_accuracy=0.0,
        ...               real_detection_accuracy=0.4)
        >>> print(format_message(rule, 120, 60, scores).splitlines()[0])
        Generator dominates after 120 training batches: for the last 60 batches (since batch 61) ...

    """
    name = "Converged" if rule.failure is None else title(rule.failure)
    batches = f"{held_for} batches" if held_for != 1 else "1 batch"
    first = (
        f"{name} after {batch} training batches: for the last {batches} (since batch {batch - held_for + 1}) "
        f"{rule.describe(scores)}."
    )
    critic = getattr(rule, "critic", False)  # a critic's rules explain and advise in a critic's terms
    if rule.failure is not None:
        explanations = CRITIC_EXPLANATIONS if critic and rule.failure in CRITIC_EXPLANATIONS else _EXPLANATIONS
        first += f" This means {getattr(rule, 'explanation', None) or explanations[rule.failure]}."
    lines = [f"{first} {note}" if note else first]
    if rule.failure is not None:
        lines.append("What to try:")
        remedies = getattr(rule, "remedies", None) or remedies_for(rule.failure, critic)
        lines += [f"  - {remedy}" for remedy in dict.fromkeys([*first_remedies, *remedies, *more_remedies])]
    return "\n".join(lines)


def remedies_for(failure: FailureMode, critic: bool = False) -> tuple[str, ...]:
    """What to try for ``failure``, most effective first (a critic's where they differ).

    Example:
        >>> remedies_for(FailureMode.NON_FINITE)[0]
        'lower the learning rates (or warm them up)'
    """
    return (CRITIC_REMEDIES if critic and failure in CRITIC_REMEDIES else REMEDIES)[failure]


_FIRST_LINE = re.compile(
    r"^(?P<title>[A-Z][a-z ]*?) after (?P<batch>\d+) training batches: for the last (?P<held>\d+) batch(es)?"
)


def parse_message(message: str) -> tuple[FailureMode | None, int, int]:
    """The failure mode, batch and "held for" of a diagnosis text written by :func:`format_message`.

    The report reads diagnoses back from TensorBoard's text, so this is the inverse of :func:`format_message`'s
    first line (a test ties the two together for every rule).

    Args:
        message: a diagnosis text (plain or as :func:`~lightning_gan_monitor.tensorboard.to_markdown` wrote it).

    Returns:
        ``(failure, batch, held_for)``: the :class:`FailureMode` (None for "Converged"), the training batch at
        which the rule's patience ran out (:attr:`Diagnosis.batch`), and for how many batches the condition held.

    Raises:
        ValueError: if the text does not start as :func:`format_message` writes it.

    Example:
        >>> parse_message("Generator dominates after 120 training batches: for the last 60 batches (since batch 61)")
        (<FailureMode.GENERATOR_DOMINATES: 'generator_dominates'>, 120, 60)

    """
    match = _FIRST_LINE.match(message.lstrip())
    name = match["title"] if match else ""
    failure = None if name == "Converged" else next((m for m in FailureMode if title(m) == name), "unknown")
    if match is None or failure == "unknown":
        first = message.strip().splitlines()[0] if message.strip() else ""
        raise ValueError(
            "not a GANMonitor diagnosis: expected a first line such as 'Generator dominates after 120 training "
            f"batches: for the last 60 batches ...', got {first[:120]!r}"
        )
    return failure, int(match["batch"]), int(match["held"])


def stop_note(failure: FailureMode | None, batch: int, stopped_at: int | None, check_every: int) -> str:
    """What happened to training, in one sentence, naming the batch at which it stopped.

    Args:
        failure: the diagnosed failure (None: the success rule).
        batch: the batch at which the rule's patience ran out.
        stopped_at: the batch at which training stops, or None if it goes on (``on_failure="warn"``) or had ended.
        check_every: batches between two checks (why ``stopped_at`` can be later than ``batch``).

    Example:
        >>> stop_note(FailureMode.NON_FINITE, 101, 120, 20)
        'Training stopped at batch 120, the first check after batch 101 (the monitor checks every 20 batches).'
        >>> stop_note(FailureMode.NON_FINITE, 101, None, 20)
        "Training continues (`on_failure='warn'`)."

    """
    if stopped_at is None:
        return "Training continues (`on_failure='warn'`)." if failure is not None else "Training continues."
    if stopped_at == batch:
        return f"Training stopped at batch {stopped_at}."
    return (
        f"Training stopped at batch {stopped_at}, the first check after batch {batch} (the monitor checks every "
        f"{check_every} batches)."
    )
