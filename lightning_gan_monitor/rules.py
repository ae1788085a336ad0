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
            scores: the smoothed scores, ordered as ``SCORE_NAMES`` in the last dimension (NaN where nothing was
                seen yet); leading dimensions are observations.
            non_finite: bool tensor of the leading shape: NaN/inf outputs or losses in that observation.

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
        return (scores[..., _G] < self.generator_below) & (scores[..., _D] > self.discriminator_above)

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
        return scores[..., _G] > self.generator_above

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
        return (scores[..., _FAKE_ACC] - 0.5).abs() <= self.tolerance

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


def decide(events: Sequence[Sequence[Sequence[float]]], rules: Sequence[Rule]) -> tuple[int, int]:
    """Which rule fires, from every process's events (a pure function, identical on every rank).

    Args:
        events: per process, per rule, the row ``[batch, held_for, *scores]`` returned by
            :meth:`FailureDetector.update`, where ``batch`` is -1 if the rule did not fire on that process.
        rules: the rules, in priority order.

    Returns:
        ``(rule_index, process_index)`` of the earliest firing (ties go to the earlier rule, then process), or
        ``(-1, -1)`` if no rule fires.

    Example:
        >>> rules = [NonFinite(patience=1), GeneratorDominates(patience=10)]
        >>> no = [-1, 0, 0.5, 0.5, 0.5, 0.5]
        >>> decide([[no, no], [no, [42, 10, 0.95, 0.3, 0.0, 0.6]]], rules)
        (1, 1)
        >>> decide([[no, no]], rules)
        (-1, -1)
    """
    fired = [(rows[r][0], r, p) for p, rows in enumerate(events) for r in range(len(rules)) if rows[r][0] >= 0]
    if not fired:
        return -1, -1
    _, rule, process = min(fired)
    return rule, process


class FailureDetector:
    """Smoothed scores and per-rule counters, kept as tensors on the training device.

    :meth:`update` takes the statistics of a whole window of observations (the batches between two checks) and
    processes them with a fixed number of tensor operations, as if they had come one by one: the exponential
    moving average in closed form, and each rule's "held for" counter at every observation with cumulative sums. So
    a rule is found to fire at the exact batch its patience ran out, even though the host only looks at checks.

    Args:
        rules: the rules to track, in priority order.
        smoothing: decay of the exponential moving average of the per-observation scores (0 disables smoothing);
            the average is bias-corrected, so the first observation is taken as is.
        device: where the state lives.

    Example:
        >>> import torch
        >>> from lightning_gan_monitor.functional import gan_score_stats
        >>> detector = FailureDetector([GeneratorDominates(patience=3)], smoothing=0.0)
        >>> stats = gan_score_stats(torch.tensor([0.5]), torch.tensor([0.95])).expand(4, -1)
        >>> events = detector.update(stats, n_batches=torch.ones(4, dtype=torch.long))
        >>> events[0, :2].tolist(), detector.held.tolist()
        ([3.0, 3.0], [4])
    """

    #: Observations processed together; longer windows are split (the closed-form average builds a k x k matrix).
    chunk = 64
    _STATE = ("ema", "ema_weight", "held", "latched", "batches")

    def __init__(self, rules: Sequence[Rule], smoothing: float, device: torch.device | str = "cpu") -> None:
        self.rules = tuple(rules)
        self.smoothing = smoothing
        self._future_masks: dict[torch.device, Tensor] = {}
        self.reset(device)

    def reset(self, device: torch.device | str = "cpu") -> None:
        """Forget everything seen, and put the state on ``device``."""
        n = len(self.rules)
        self.ema = torch.zeros(len(SCORE_NAMES), device=device)
        self.ema_weight = torch.zeros(len(SCORE_NAMES), device=device)
        self.held = torch.zeros(n, dtype=torch.long, device=device)
        self.latched = torch.zeros(n, dtype=torch.bool, device=device)
        self.batches = torch.zeros((), dtype=torch.long, device=device)
        self._event_is_current = torch.zeros(n, dtype=torch.bool, device=device)
        self._patience = torch.tensor([rule.patience for rule in self.rules], device=device)

    def to(self, device: torch.device | str) -> FailureDetector:
        """Move the state to ``device``."""
        for name in (*self._STATE, "_patience", "_event_is_current"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def scores(self) -> Tensor:
        """The bias-corrected smoothed scores (NaN where nothing has been seen)."""
        return torch.where(self.ema_weight > 0, self.ema / self.ema_weight.clamp(min=1e-12), math.nan)

    @torch.no_grad()
    def update(self, stats: Tensor, n_batches: Tensor, non_finite: Tensor | None = None) -> Tensor:
        """Take a window of observations; tensor ops only, so it never waits for the device.

        Args:
            stats: (k, ``NUM_STATS``) statistics from
                :func:`~lightning_gan_monitor.functional.gan_score_stats_batches`, one row per observation.
            n_batches: (k,) integers, training batches each observation stands for (1 when every batch is
                observed; a probing monitor observes only every few batches, and the rules count batches).
            non_finite: optional (k,) bool, NaN/inf seen elsewhere (e.g. in the losses).

        Returns:
            (number of rules, 2 + 4) float tensor: per rule ``[batch, held_for, *smoothed scores]`` at the first
            observation of the window where it fired (its condition had held for ``patience`` batches and it had
            not fired in that stretch yet), with ``batch`` counted from the start of training, or -1.
        """
        stats = stats.reshape(-1, stats.shape[-1]).to(self.ema.device)
        n_batches = n_batches.reshape(-1).to(self.ema.device)
        events, current = None, None
        for start in range(0, stats.shape[0], self.chunk):
            window = slice(start, start + self.chunk)
            bad = None if non_finite is None else non_finite.reshape(-1)[window].to(self.ema.device)
            chunk_events, chunk_current, unbroken = self._update_window(stats[window], n_batches[window], bad)
            if events is None or current is None:
                events, current = chunk_events, chunk_current
            else:  # keep the earlier chunk's firing; it is current only if no break followed it
                earlier = events[:, 0] >= 0
                current = torch.where(earlier, current & unbroken, chunk_current)
                events = torch.where(earlier.unsqueeze(1), events, chunk_events)
        assert events is not None
        self._event_is_current = current
        return events

    def _update_window(
        self, stats: Tensor, n_batches: Tensor, non_finite: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        k, device = stats.shape[0], stats.device
        x = gan_scores_from_stats(stats)  # (k, 4) per-observation scores
        decay = torch.where(torch.isnan(x), 1.0, self.smoothing)  # a score with no finite input keeps its value
        gain = 1 - decay
        # m_t = sum_{i<=t} gain_i x_i prod_{i<j<=t} decay_j + m_0 prod_{j<=t} decay_j, with the products from log sums
        log_sums = decay.clamp(min=1e-30).log().cumsum(0)
        ratio = torch.exp(log_sums.unsqueeze(1) - log_sums.unsqueeze(0))  # [t, i] = prod_{i<j<=t} decay_j
        ratio = ratio.masked_fill(self._future_mask(k, device), 0.0)
        carried = torch.exp(log_sums)
        # the average and its weight in one product: a check's cost is mostly the number of tensor ops
        inputs = torch.stack([gain * torch.nan_to_num(x), gain])
        ema, weight = (
            torch.einsum("tic,sic->stc", ratio, inputs)
            + carried * torch.stack([self.ema, self.ema_weight]).unsqueeze(1)
        ).unbind(0)
        scores = torch.where(weight > 0, ema / weight.clamp(min=1e-12), math.nan)

        bad = stats[:, _NON_FINITE] > 0
        if non_finite is not None:
            bad = bad | non_finite
        holds = torch.stack([rule.holds(scores, bad) for rule in self.rules], dim=1)  # (k, rules)
        # held_t: batches since the last observation where the condition failed (or since the window began)
        steps = torch.arange(k, device=device).unsqueeze(1)
        last_break = torch.cummax(torch.where(holds, -1, steps), dim=0).values
        total = torch.cumsum(n_batches, 0)
        total0 = torch.cat([total.new_zeros(1), total])
        held = torch.where(last_break >= 0, total.unsqueeze(1) - total0[last_break + 1], self.held + total.unsqueeze(1))
        latched = self.latched & (last_break < 0)
        ready = (held >= self._patience) & ~latched
        first = ready.int().argmax(0)  # the first observation where each rule is ready (0 if never)
        rules = torch.arange(len(self.rules), device=device)
        batch = torch.where(ready.any(0), self.batches + total[first], -1)
        events = torch.cat([batch.unsqueeze(1).float(), held[first, rules].unsqueeze(1).float(), scores[first]], 1)

        # whether a firing happened in the stretch still going on at the end of the window (then it latches)
        current = ready.any(0) & (last_break[first, rules] == last_break[-1])

        self.ema, self.ema_weight = ema[-1], weight[-1]
        self.held, self.latched = held[-1], latched[-1]
        self.batches = self.batches + total[-1]
        return events, current, last_break[-1] < 0

    def _future_mask(self, k: int, device: torch.device) -> Tensor:
        """(k, k, 1) bool, True where i > t: a view of one mask for the longest window, built once per device."""
        mask = self._future_masks.get(device)
        if mask is None:
            mask = torch.ones(self.chunk, self.chunk, dtype=torch.bool, device=device).triu(1).unsqueeze(-1)
            self._future_masks[device] = mask
        return mask[:k, :k]

    def latch(self, index: int) -> None:
        """Rule ``index`` was reported from the last :meth:`update`: keep it quiet while that stretch lasts.

        If the reported firing belongs to a stretch that already ended within the window, the rule stays unlatched,
        so a newer stretch that also reached ``patience`` in that window is reported at the next update (late by up
        to a window). A stretch that both starts and completes between the reported one and the end of the window
        (possible only when ``patience`` is under half the window) is not reported on its own.
        """
        self.latched[index] = self._event_is_current[index]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors moved to the CPU)."""
        return {name: getattr(self, name).detach().cpu() for name in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> list[str]:
        """Restore :meth:`state_dict`; returns the names it could not restore (absent, or shaped for other rules)."""
        skipped = []
        for name in self._STATE:
            current = getattr(self, name)
            if name in state and state[name].shape == current.shape:
                setattr(self, name, state[name].to(device=current.device, dtype=current.dtype))
            else:
                skipped.append(name)
        return skipped
