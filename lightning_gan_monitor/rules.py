"""Failure modes, the rules that detect them, and the remedies to suggest (torch only, no Lightning).

The split follows Lightning's ``SpikeDetection``: :class:`FailureDetector` is a plain object holding the smoothed
scores and one "held for" counter per rule as tensors on the training device, so updating it never waits for the
device; :func:`decide` is a pure function over host numbers, called only every ``check_every_n_batches``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor

from lightning_gan_monitor.functional import SCORE_NAMES, STAT_NAMES, gan_scores_from_stats

__all__ = [
    "REMEDIES",
    "Converged",
    "Diagnosis",
    "DiscriminatorDominates",
    "FailureDetector",
    "FailureMode",
    "GeneratorDominates",
    "NonFinite",
    "Rule",
    "StoppingReason",
    "decide",
]

_NON_FINITE = STAT_NAMES.index("non_finite")
_G, _D, _FAKE_ACC, _REAL_ACC = range(4)


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

_EXPLANATIONS: dict[FailureMode, str] = {
    FailureMode.DISCRIMINATOR_DOMINATES: (
        "the discriminator rejects almost every generated sample, so the generator's gradients vanish and it "
        "stops learning"
    ),
    FailureMode.GENERATOR_DOMINATES: (
        "the discriminator accepts generated samples as real, so it no longer gives the generator a useful signal"
    ),
    FailureMode.MODE_COLLAPSE: "the generator produces a small variety of nearly identical samples",
    FailureMode.NON_FINITE: "the training has diverged: the discriminator's outputs or the losses are NaN or infinite",
}


@dataclass(frozen=True)
class Rule:
    """A condition on the smoothed scores that fires once it has held for ``patience`` consecutive batches.

    Subclasses define :meth:`holds` (tensor ops only, so it runs on the device without a sync) and
    :meth:`describe` (the evidence, in words).
    """

    patience: int

    #: The failure this rule diagnoses; None for a success rule.
    failure: FailureMode | None = field(init=False, default=None)

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:
        """Whether the condition holds now, as a bool tensor.

        Args:
            scores: the smoothed scores, ordered as ``SCORE_NAMES`` (NaN where nothing was seen yet).
            non_finite: bool tensor, the latest batch had NaN/inf outputs or losses.

        """
        raise NotImplementedError

    def describe(self, scores: dict[str, float]) -> str:
        """The condition and the values that meet it, in words."""
        raise NotImplementedError


@dataclass(frozen=True)
class DiscriminatorDominates(Rule):
    """Generator score near 0 and discriminator score near 1.

    Example:
        >>> import torch
        >>> rule = DiscriminatorDominates(patience=10)
        >>> rule.holds(torch.tensor([0.05, 0.95, 1.0, 1.0]), torch.tensor(False))
        tensor(True)

    """

    generator_below: float = 0.1
    discriminator_above: float = 0.9
    failure: FailureMode | None = field(init=False, default=FailureMode.DISCRIMINATOR_DOMINATES)

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return (scores[_G] < self.generator_below) & (scores[_D] > self.discriminator_above)

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed generator score has stayed below {self.generator_below:g} (now "
            f"{scores['generator_score']:.3f}) and the smoothed discriminator score above "
            f"{self.discriminator_above:g} (now {scores['discriminator_score']:.3f})"
        )


@dataclass(frozen=True)
class GeneratorDominates(Rule):
    """Generator score near 1: the discriminator takes generated samples for real ones.

    Example:
        >>> import torch
        >>> GeneratorDominates(patience=10).holds(torch.tensor([0.95, 0.3, 0.0, 0.6]), torch.tensor(False))
        tensor(True)

    """

    generator_above: float = 0.9
    failure: FailureMode | None = field(init=False, default=FailureMode.GENERATOR_DOMINATES)

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return scores[_G] > self.generator_above

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed generator score has stayed above {self.generator_above:g} (now "
            f"{scores['generator_score']:.3f})"
        )


@dataclass(frozen=True)
class NonFinite(Rule):
    """NaN or infinity in the discriminator's outputs or in the losses.

    Example:
        >>> import torch
        >>> NonFinite(patience=1).holds(torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor(True))
        tensor(True)

    """

    failure: FailureMode | None = field(init=False, default=FailureMode.NON_FINITE)

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return non_finite

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return "the discriminator's outputs or the losses have been NaN or infinite"


@dataclass(frozen=True)
class Converged(Rule):
    """Success: the discriminator is no better than chance on generated samples.

    Example:
        >>> import torch
        >>> Converged(patience=10, tolerance=0.05).holds(torch.tensor([0.5, 0.5, 0.52, 0.5]), torch.tensor(False))
        tensor(True)

    """

    tolerance: float = 0.05

    def holds(self, scores: Tensor, non_finite: Tensor) -> Tensor:  # noqa: D102
        return (scores[_FAKE_ACC] - 0.5).abs() <= self.tolerance

    def describe(self, scores: dict[str, float]) -> str:  # noqa: D102
        return (
            f"the smoothed fake-detection accuracy has stayed within {self.tolerance:g} of 0.5 (now "
            f"{scores['fake_detection_accuracy']:.3f}): the discriminator is no better than chance on generated "
            "samples"
        )


@dataclass(frozen=True)
class Diagnosis:
    """A rule that fired: what, when, on what evidence, and what to try."""

    #: The failure mode, or None for the success rule.
    failure: FailureMode | None
    #: Training batches seen when the monitor noticed (at a check).
    batch: int
    #: For how many consecutive batches the condition had held.
    held_for: int
    #: The smoothed scores at that moment.
    scores: dict[str, float]
    #: The human-readable diagnosis, with remedies for a failure.
    message: str

    @property
    def onset_batch(self) -> int:
        """The first batch of the run in which the condition held."""
        return self.batch - self.held_for + 1


def format_message(rule: Rule, batch: int, held_for: int, scores: dict[str, float], note: str = "") -> str:
    """The diagnosis text: the verdict, the evidence and, for a failure, the remedies.

    Example:
        >>> rule = GeneratorDominates(patience=50)
        >>> scores = dict(generator_score=0.97, discriminator_score=0.2, fake_detection_accuracy=0.0,
        ...               real_detection_accuracy=0.4)
        >>> print(format_message(rule, 120, 60, scores).splitlines()[0])
        Generator dominates after 120 training batches: for the last 60 batches (since batch 61) ...

    """
    title = "Converged" if rule.failure is None else rule.failure.value.replace("_", " ").capitalize()
    lines = [
        f"{title} after {batch} training batches: for the last {held_for} batches (since batch "
        f"{batch - held_for + 1}) {rule.describe(scores)}{note}."
    ]
    if rule.failure is None:
        return lines[0]
    lines[0] += f" This means {_EXPLANATIONS[rule.failure]}."
    lines.append("What to try:")
    lines += [f"  - {remedy}" for remedy in REMEDIES[rule.failure]]
    return "\n".join(lines)


def decide(
    held: Sequence[Sequence[float]], latched: Sequence[Sequence[float]], rules: Sequence[Rule]
) -> tuple[int, int]:
    """Which rule fires now, from every process's counters (a pure function, identical on every rank).

    A rule fires when on some process its condition has held for at least ``patience`` batches and it has not
    already fired during that same stretch. Rules are tried in order, so earlier rules win ties.

    Args:
        held: per process, per rule, the number of consecutive batches the condition has held.
        latched: per process, per rule, nonzero if the rule already fired during the current stretch.
        rules: the rules, in priority order.

    Returns:
        ``(rule_index, process_index)`` of the rule that fires and of the process with the strongest evidence, or
        ``(-1, -1)`` if none fires.

    Example:
        >>> rules = [NonFinite(patience=1), GeneratorDominates(patience=10)]
        >>> decide([[0, 4], [0, 12]], [[0, 0], [0, 0]], rules)
        (1, 1)
        >>> decide([[0, 4], [0, 12]], [[0, 0], [0, 1]], rules)
        (-1, -1)

    """
    for r, rule in enumerate(rules):
        ready = [
            (proc_held[r], p)
            for p, (proc_held, proc_latched) in enumerate(zip(held, latched))
            if proc_held[r] >= rule.patience and not proc_latched[r]
        ]
        if ready:
            return r, max(ready)[1]
    return -1, -1


class FailureDetector:
    """Smoothed scores and per-rule counters, kept as tensors on the training device.

    Args:
        rules: the rules to track, in priority order.
        smoothing: decay of the exponential moving average of the per-observation scores (0 disables smoothing);
            the average is bias-corrected, so the first observation is taken as is.
        device: where the state lives.

    Example:
        >>> import torch
        >>> from lightning_gan_monitor.functional import gan_score_stats
        >>> detector = FailureDetector([GeneratorDominates(patience=3)], smoothing=0.0)
        >>> for _ in range(4):
        ...     detector.update(gan_score_stats(torch.tensor([0.5]), torch.tensor([0.95])), n_batches=1)
        >>> detector.held.tolist()
        [4]

    """

    def __init__(self, rules: Sequence[Rule], smoothing: float, device: torch.device | str = "cpu") -> None:
        self.rules = tuple(rules)
        self.smoothing = smoothing
        self.reset(device)

    def reset(self, device: torch.device | str = "cpu") -> None:
        """Forget everything seen, and put the state on ``device``."""
        n = len(self.rules)
        self.ema = torch.zeros(len(SCORE_NAMES), device=device)
        self.ema_weight = torch.zeros(len(SCORE_NAMES), device=device)
        self.held = torch.zeros(n, dtype=torch.long, device=device)
        self.latched = torch.zeros(n, dtype=torch.bool, device=device)

    def to(self, device: torch.device | str) -> FailureDetector:
        """Move the state to ``device``."""
        for name in ("ema", "ema_weight", "held", "latched"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def scores(self) -> Tensor:
        """The bias-corrected smoothed scores (NaN where nothing has been seen)."""
        return torch.where(self.ema_weight > 0, self.ema / self.ema_weight.clamp(min=1e-12), math.nan)

    @torch.no_grad()
    def update(self, stats: Tensor, n_batches: int, non_finite: Tensor | None = None) -> None:
        """Take one observation; tensor ops only, so it never waits for the device.

        Args:
            stats: one batch's statistics from :func:`~lightning_gan_monitor.functional.gan_score_stats`.
            n_batches: training batches since the previous observation (the rules count batches, and a probing
                monitor observes only every few batches).
            non_finite: optional bool tensor, NaN/inf seen elsewhere (e.g. in the losses).

        """
        batch_scores = gan_scores_from_stats(stats)
        seen = ~torch.isnan(batch_scores)  # a score whose inputs were all non-finite keeps its old value
        decay = torch.where(seen, self.smoothing, 1.0)
        self.ema = decay * self.ema + (1 - decay) * torch.nan_to_num(batch_scores)
        self.ema_weight = decay * self.ema_weight + (1 - decay)
        bad = stats[_NON_FINITE] > 0
        if non_finite is not None:
            bad = bad | non_finite
        scores = self.scores
        conditions = torch.stack([rule.holds(scores, bad) for rule in self.rules])
        self.held = torch.where(conditions, self.held + n_batches, 0)
        self.latched = self.latched & conditions

    def packed(self) -> Tensor:
        """The state that :func:`decide` needs, as one float vector (one transfer, one collective)."""
        return torch.cat([self.held.float(), self.latched.float(), self.scores])

    def unpack(self, rows: Sequence[Sequence[float]]) -> tuple[list[list[float]], ...]:
        """``(held, latched, scores)`` lists, one row per process, from host copies of (gathered) :meth:`packed`."""
        n = len(self.rules)
        return (
            [list(row[:n]) for row in rows],
            [list(row[n : 2 * n]) for row in rows],
            [list(row[2 * n :]) for row in rows],
        )

    def latch(self, index: int) -> None:
        """Mark rule ``index`` as fired until its condition stops holding."""
        self.latched[index] = True

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors moved to the CPU)."""
        return {name: getattr(self, name).detach().cpu() for name in ("ema", "ema_weight", "held", "latched")}

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Restore :meth:`state_dict`; returns the names it could not restore (absent, or shaped for other rules)."""
        device = self.ema.device
        skipped = []
        for name in ("ema", "ema_weight", "held", "latched"):
            current = getattr(self, name)
            if name in state and state[name].shape == current.shape:
                setattr(self, name, state[name].to(device=device, dtype=current.dtype))
            else:
                skipped.append(name)
        return skipped
