"""The run's history: what was logged at each log point, the time spent in each regime, the end-of-fit summary.

Plain Python, no torch: what :meth:`GANMonitor.plot` and the report (:mod:`lightning_gan_monitor.report`) read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightning_gan_monitor.diagnosis import Diagnosis, FailureMode, StoppingReason, title
from lightning_gan_monitor.rules import Rule

__all__ = ["REGIMES", "RunSummary", "ScoreHistory", "collapsed_batches", "regime_counts", "summarize"]


class ScoreHistory:
    """The values a monitor logged, kept bounded: at most ``max_points`` per tag, evenly thinned.

    While a tag has fewer than ``max_points`` values every one is kept. Past that, every other kept value is
    dropped and from then on only every 2nd (then 4th, ...) new value is kept, so the points stay evenly spaced over
    the whole run; the latest value is always kept too. Memory is O(``max_points``) per tag whatever the run length.

    Args:
        max_points: most values kept per tag; an even number of at least 2.

    Example:
        >>> history = ScoreHistory(max_points=4)
        >>> for batch in range(10, 110, 10):
        ...     history.add(batch, {"gan/generator_score": batch / 100})
        >>> history.series("gan/generator_score")
        ([10, 50, 90, 100], [0.1, 0.5, 0.9, 1.0])

    """

    def __init__(self, max_points: int = 1000) -> None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2 or max_points % 2:
            raise ValueError(f"`max_points` must be an even integer of at least 2, got {max_points!r}")
        self.max_points = max_points
        self._series: dict[str, dict[str, Any]] = {}

    @property
    def tags(self) -> list[str]:
        """The tags with at least one value, in the order they first came."""
        return list(self._series)

    def add(self, batch: int, values: Mapping[str, float]) -> None:
        """Record the values logged at training batch ``batch``."""
        for tag, value in values.items():
            series = self._series.setdefault(tag, {"points": [], "stride": 1, "count": 0, "last": None})
            if series["count"] % series["stride"] == 0:
                series["points"].append((batch, float(value)))
                if len(series["points"]) > self.max_points:
                    series["points"] = series["points"][::2]
                    series["stride"] *= 2
            series["count"] += 1
            series["last"] = (batch, float(value))

    def series(self, tag: str) -> tuple[list[int], list[float]]:
        """``(batches, values)`` of ``tag``, oldest first (empty lists for a tag never logged)."""
        series = self._series.get(tag)
        if series is None:
            return [], []
        points = list(series["points"])
        if series["last"] is not None and points[-1] != series["last"]:
            points.append(series["last"])
        return [b for b, _ in points], [v for _, v in points]

    def collapsed_batches(
        self,
        diversity_below: float | None,
        near_duplicates_above: float | None,
        coverage_below: float | None,
        confirmed: Any = None,
    ) -> int | None:
        """:func:`collapsed_batches` of this history, at most what a collapse tracker confirmed.

        ``confirmed``: a :class:`~lightning_gan_monitor.collapse.CollapseTracker`, whose ``collapsed_batches`` count
        a collapse, not a fresh or frozen generator's blur.
        """
        series = {tag: self.series(tag) for tag in self.tags}
        collapsed = collapsed_batches(series, diversity_below, near_duplicates_above, coverage_below)
        if confirmed is not None and collapsed is not None:
            collapsed = min(collapsed, confirmed.collapsed_batches)
        return collapsed

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (plain Python values, for checkpoints)."""
        return {"max_points": self.max_points, "series": {tag: dict(s) for tag, s in self._series.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self._series = {
            tag: {**s, "points": [tuple(p) for p in s["points"]], "last": tuple(s["last"]) if s["last"] else None}
            for tag, s in state.get("series", {}).items()
        }


def collapsed_batches(
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    diversity_below: float | None = None,
    near_duplicates_above: float | None = None,
    coverage_below: float | None = None,
) -> int | None:
    """Training batches judged collapsed from logged diversity values, or None if nothing to judge by.

    A value logged at batch b stands for the batches since the previous value of its tag; a batch is collapsed if
    ``gan/diversity`` was below ``diversity_below``, ``gan/near_duplicates`` above ``near_duplicates_above`` or
    ``gan/coverage`` below ``coverage_below`` (the mode-collapse rule's conditions).

    Example:
        >>> collapsed_batches({"gan/diversity": ([100, 200, 300], [0.9, 0.1, 0.05])}, diversity_below=0.2)
        200
        >>> collapsed_batches({}, diversity_below=0.2) is None
        True

    """
    intervals: list[tuple[int, int]] = []
    measured = False
    for tag, threshold, collapsed in (
        ("gan/diversity", diversity_below, lambda v, t: v < t),
        ("gan/near_duplicates", near_duplicates_above, lambda v, t: v > t),
        ("gan/coverage", coverage_below, lambda v, t: v < t),
    ):
        batches, values = series.get(tag, ((), ()))
        if threshold is None or not batches:
            continue
        measured = True
        previous = 0
        for batch, value in zip(batches, values):
            if collapsed(value, threshold):
                intervals.append((previous, batch))
            previous = batch
    if not measured:
        return None
    total, reach = 0, 0
    for start, end in sorted(intervals):  # the length of the union of (start, end]
        start = max(start, reach)
        if end > start:
            total += end - start
            reach = end
    return total


#: The regimes of the end-of-fit summary, in the order it lists them. A batch is counted in the regime of the first
#: failure rule (in priority order) whose condition held on the smoothed scores, else in "balanced".
REGIMES = ("balanced", "discriminator dominating", "generator dominating", "non-finite", "collapsed")
_REGIME_OF = {
    FailureMode.DISCRIMINATOR_DOMINATES: "discriminator dominating",
    FailureMode.GENERATOR_DOMINATES: "generator dominating",
    FailureMode.NON_FINITE: "non-finite",
    FailureMode.MODE_COLLAPSE: "collapsed",
}


def regime_counts(rules: Sequence[Rule], counts: Sequence[int]) -> dict[str, int | None]:
    """Batches per regime from ``ScoreTracker.regime_batches`` (None: no rule watched that regime).

    Example:
        >>> from lightning_gan_monitor.rules import GeneratorDominates, NonFinite
        >>> counts = regime_counts([NonFinite(patience=1), GeneratorDominates(patience=10)], [2, 30, 68])
        >>> counts["balanced"], counts["generator dominating"], counts["non-finite"], counts["collapsed"]
        (68, 30, 2, None)

    """
    regimes: dict[str, int | None] = dict.fromkeys(REGIMES)
    regimes["balanced"] = int(counts[-1])
    for rule, n in zip(rules, counts):
        if rule.failure is not None:
            regimes[_REGIME_OF[rule.failure]] = int(n)
    return regimes


@dataclass(frozen=True)
class RunSummary:
    """What a run was like, for the end-of-fit summary: time in each regime, final scores and the verdict.

    ``str(summary)`` is the text the monitor prints on rank zero and writes to TensorBoard (``gan/summary``).
    """

    #: Training batches seen.
    batches: int
    #: Batches in each of :data:`REGIMES` (None: not watched, e.g. "collapsed" without diversity metrics).
    regimes: dict[str, int | None]
    #: The final smoothed scores.
    scores: dict[str, float]
    #: Every rule that fired, in order.
    diagnoses: tuple[Diagnosis, ...] = ()
    #: Why training stopped.
    stopping_reason: StoppingReason = StoppingReason.NOT_STOPPED
    #: True when "collapsed" was measured apart from the score regimes (so it can overlap them).
    collapsed_apart: bool = False
    #: The generator's optimizer steps, where they could be counted.
    generator_updates: int | None = None

    @property
    def first_failure(self) -> Diagnosis | None:
        """The first failure diagnosis, or None."""
        return next((d for d in self.diagnoses if d.failure is not None), None)

    @property
    def verdict(self) -> str:
        """One line: the first failure with its batch, or healthy / converged, and how training ended."""
        failure = self.first_failure
        converged = next((d for d in self.diagnoses if d.failure is None), None)
        if self.stopping_reason is StoppingReason.CONVERGED and converged is not None:
            ended = f"converged after {converged.batch} training batches; training stopped at batch {self.batches}"
        elif self.stopping_reason is StoppingReason.FAILURE:
            ended = f"training stopped at batch {self.batches}"
        else:
            ended = f"training ran to its end ({self.batches} batches)"
        if failure is None:
            return f"healthy: no failure rule fired; {ended}"
        assert failure.failure is not None
        return (
            f"{title(failure.failure)} after {failure.batch} training batches (since batch {failure.onset_batch}); "
            f"{ended}"
        )

    def __str__(self) -> str:
        # "collapsed" measured apart overlaps the score regimes, so it is not part of their total
        counted = sum(
            n
            for name, n in self.regimes.items()
            if n is not None and not (name == "collapsed" and self.collapsed_apart)
        )
        updates = self.generator_updates
        shown = f" ({updates} generator updates)" if updates is not None and updates != self.batches else ""
        lines = [f"GANMonitor summary of {self.batches} training batches{shown}:"]
        if counted != self.batches:
            lines[0] = lines[0][:-1] + f" (regimes of the {counted} batches the rules have looked at):"
        for name, n in self.regimes.items():
            if n is None:
                lines.append(f"  {name:<26} not measured")
                continue
            apart = name == "collapsed" and self.collapsed_apart
            n = min(n, self.batches) if apart else n
            total = self.batches if apart else counted  # measured apart: a share of every batch
            share = f"({100 * n / total:.0f}%)" if total else ""
            note = " (measured apart: can overlap the above)" if apart else ""
            lines.append(f"  {name:<26}{n:>7} batches {share:>6}{note}")
        scores = ", ".join(
            f"{name.replace('_', ' ')} {value:.3f}" for name, value in self.scores.items() if not math.isnan(value)
        )
        lines.append(f"final smoothed scores: {scores}")
        lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)


def summarize(
    batches: int,
    regimes: Mapping[str, int | None],
    scores: Mapping[str, float],
    diagnoses: Sequence[Diagnosis] = (),
    stopping_reason: StoppingReason = StoppingReason.NOT_STOPPED,
    collapsed_batches: int | None = None,
    generator_updates: int | None = None,
) -> RunSummary:
    """The end-of-fit summary (a pure function of what the monitor counted).

    Args:
        batches: training batches seen.
        regimes: batches per regime, e.g. from :func:`regime_counts`.
        scores: the final smoothed scores.
        diagnoses: every rule that fired, in order.
        stopping_reason: why training stopped.
        collapsed_batches: batches judged collapsed by a measure outside the score rules (e.g. diversity below
            its threshold); used when ``regimes`` has no count for "collapsed".
        generator_updates: the generator's optimizer steps, where they could be counted.

    Example:
        >>> summary = summarize(100, {"balanced": 100}, {"generator_score": 0.48})
        >>> summary.verdict
        'healthy: no failure rule fired; training ran to its end (100 batches)'
        >>> print(str(summary).splitlines()[1])
          balanced                      100 batches (100%)

    """
    counts: dict[str, int | None] = {name: regimes.get(name) for name in REGIMES}
    apart = counts["collapsed"] is None and collapsed_batches is not None
    if apart:
        counts["collapsed"] = int(collapsed_batches)  # type: ignore[arg-type]
    return RunSummary(batches, counts, dict(scores), tuple(diagnoses), stopping_reason, apart, generator_updates)


class Outcome:
    """What the run came to: the failure that fired first, where the monitor stopped training, every diagnosis.

    Example:
        >>> outcome = Outcome()
        >>> outcome.stopped_batch is None, outcome.stopping_reason.value
        (True, 'not_stopped')

    """

    def __init__(self) -> None:
        self.failure: FailureMode | None = None
        self.stopped_batch: int | None = None
        self.stopping_reason = StoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        self.diagnoses: list[Diagnosis] = []

    def record(self, diagnosis: Diagnosis, stops: bool, batch: int) -> None:
        """A diagnosis made at ``batch``; ``stops``: training stops there (the first such stop is kept)."""
        self.diagnoses.append(diagnosis)
        if len(self.diagnoses) == 1:
            self.failure = diagnosis.failure
        if stops and self.stopped_batch is None:
            self.stopped_batch = batch
            failed = diagnosis.failure is not None
            self.stopping_reason = StoppingReason.FAILURE if failed else StoppingReason.CONVERGED
            self.stopping_reason_message = diagnosis.message

    def state_dict(self) -> dict[str, Any]:
        """Plain values, under the checkpoint keys of every version."""
        return {
            "failure": self.failure.value if self.failure else None,
            "stopped_batch": self.stopped_batch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (missing keys: as if nothing had fired)."""
        failure = state.get("failure")
        self.failure = FailureMode(failure) if failure else None
        self.stopped_batch = state.get("stopped_batch")
        self.stopping_reason = StoppingReason(state.get("stopping_reason", StoppingReason.NOT_STOPPED.value))
        self.stopping_reason_message = state.get("stopping_reason_message")
        self.diagnoses = [Diagnosis.from_dict(d) for d in state.get("diagnoses", [])]
