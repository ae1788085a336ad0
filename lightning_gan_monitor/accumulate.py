"""D's outputs since the last check, summed per batch into a small preallocated buffer on the device, read back once.

An ordinary batch only adds references (no tensor operation, no wait for the device). A check sums every pending
batch with a fixed handful of tensor operations (:func:`~lightning_gan_monitor.functional.output_sums`) into the
buffer, reads it back in one go (under DDP, one ``all_gather``, summed over processes), and turns it into plain
floats for :mod:`lightning_gan_monitor.rules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_gan_monitor.functional.scores import SUM_NAMES, output_sums, rank_scores, rank_sums_flat, stats_from_sums
from lightning_gan_monitor.names import NUM_STATS, RANK_NAMES, RANK_STAT_NAMES, SCORE_NAMES, STAT_NAMES
from lightning_gan_monitor.reading import Reading

__all__ = ["Accumulator", "BatchSums", "Readout", "Window", "scores_from_stats", "values_from"]

#: Parts of a batch with a row of sums each: D's outputs on real samples, on generated samples, the losses.
_PARTS = ("real", "fake", "loss")
_REAL_COUNT, _FAKE_COUNT, _NON_FINITE = (STAT_NAMES.index(name) for name in ("real_count", "fake_count", "non_finite"))
_FINITE, _OUTSIDE, _COUNT = (SUM_NAMES.index(name) for name in ("finite", "out_of_range", "count"))
#: Columns of a batch's row in the buffer: (part, reading, sum) for the sums, then the rank sums.
_SUMS = len(_PARTS) * 2 * len(SUM_NAMES)


class BatchSums(NamedTuple):
    """One batch, read back: its ``STAT_NAMES``, whether a loss was NaN or infinite, its ``RANK_STAT_NAMES``."""

    stats: list[float]
    loss_non_finite: bool
    ranks: list[float]

    @property
    def observed(self) -> bool:
        """Whether the batch had D outputs or losses (a probing monitor observes only every few batches)."""
        return self.stats[_REAL_COUNT] + self.stats[_FAKE_COUNT] + self.stats[_NON_FINITE] > 0 or self.loss_non_finite

    @property
    def non_finite(self) -> bool:
        """Whether an output or a loss was NaN or infinite."""
        return self.stats[_NON_FINITE] > 0 or self.loss_non_finite


def scores_from_stats(stats: Sequence[float]) -> list[float]:
    """The four scores (``SCORE_NAMES``) from summed statistics, in plain Python; NaN where a count is 0.

    The host twin of :func:`~lightning_gan_monitor.functional.gan_scores_from_stats`.

    Example:
        >>> scores_from_stats([1.3, 2.0, 1.0, 0.8, 2.0, 1.0, 0.0, 0.0])
        [0.4, 0.625, 0.5, 0.5]
    """
    real_sum, real_count, real_detected, fake_sum, fake_count, fake_detected = stats[:6]
    real = real_sum / real_count if real_count else math.nan
    fake = fake_sum / fake_count if fake_count else math.nan
    return [
        fake,
        0.5 * real + 0.5 * (1 - fake),
        fake_detected / fake_count if fake_count else math.nan,
        real_detected / real_count if real_count else math.nan,
    ]


def values_from(stats: Sequence[float], ranks: Sequence[float] | None, critic: bool) -> list[float]:
    """The values of ``VALUE_NAMES`` (the four scores, then ``RANK_NAMES``) from summed statistics and rank sums.

    For a critic the four probability scores are NaN (not computed, so never logged nor judged): the sigmoid of a
    score with no fixed offset means nothing. ``ranks`` None (not summed): the rank values are NaN.

    Example:
        >>> values_from([1.3, 2.0, 1.0, 0.8, 2.0, 1.0, 0.0, 0.0], [4.0, 3.0, 1.0, 2.0, 1.3, 0.8], critic=True)
        [nan, nan, nan, nan, 0.75, 0.5, 1.0, 0.25]
    """
    scores = [math.nan] * len(SCORE_NAMES) if critic else scores_from_stats(stats)
    if ranks is None:
        return scores + [math.nan] * len(RANK_NAMES)
    return scores + rank_scores(ranks, stats[_REAL_COUNT], stats[_FAKE_COUNT])


def _flat_cat(tensors: list[Tensor], device: torch.device) -> Tensor:
    """The tensors' values in one flat tensor on ``device`` (one ``cat`` when they differ only in their first size)."""
    first = tensors[0]
    if first.dim() > 0 and all(t.dim() == first.dim() and t.shape[1:] == first.shape[1:] for t in tensors):
        flat = torch.cat(tensors) if len(tensors) > 1 else first
    else:
        flat = torch.cat([t.reshape(-1) for t in tensors])
    return flat.reshape(-1).to(device, non_blocking=True)


class Window(NamedTuple):
    """The batches since the last check, read back under both readings of D's outputs."""

    #: Per batch: ``[part][reading][sum]``, parts (real, generated, losses), readings (probabilities, logits).
    rows: list[list[list[list[float]]]]
    #: Per batch: the sums of ``RANK_STAT_NAMES`` (the same under every reading: a sigmoid keeps the order).
    ranks: list[list[float]]

    @classmethod
    def of(cls, block: list[list[float]]) -> Window:
        """From the buffer's rows as read back."""
        n = len(SUM_NAMES)
        rows = [[[row[i : i + n] for i in range(j, j + 2 * n, n)] for j in range(0, _SUMS, 2 * n)] for row in block]
        return cls(rows, [row[_SUMS:] for row in block])

    @property
    def outside(self) -> bool:
        """Whether an output was outside [0, 1] (so D's outputs cannot be probabilities)."""
        return any(real[0][_OUTSIDE] + fake[0][_OUTSIDE] > 0 for real, fake, _ in self.rows)  # [0]: as probabilities

    def __len__(self) -> int:
        return len(self.rows)

    def then(self, later: Window) -> Window:
        """The batches of this window, then those of ``later`` (a window held back until D's reading is decided)."""
        return Window(self.rows + later.rows, self.ranks + later.ranks)

    def batches(self, logits: bool) -> list[BatchSums]:
        """The batches' statistics with D's outputs read as logits or as probabilities."""
        r = int(logits)
        return [
            BatchSums(stats_from_sums(real[r], fake[r]), loss[0][_FINITE] < loss[0][_COUNT], ranks)  # type: ignore[arg-type]
            for (real, fake, loss), ranks in zip(self.rows, self.ranks)
        ]


class Readout(NamedTuple):
    """What one check read back, in host numbers: every process's, so every process decides the same."""

    #: Per batch: its ``VALUE_NAMES`` values (None if nothing was observed) and whether a value was NaN or infinite;
    #: None while ``output="auto"`` has not decided how to read D's outputs (the window is held back until it has).
    observed: list[tuple[list[float] | None, bool]] | None
    #: At a log point: the ``VALUE_NAMES`` values over the batches since the last one.
    logged: list[float] | None
    #: Per optional feature (:class:`~lightning_gan_monitor.agreement.Faults`): the processes it failed on.
    faults: list[float]


class Accumulator:
    """D's outputs of the batches since the last check, summed at the check into a (capacity, 36) device buffer.

    An ordinary batch only keeps references to its (detached) outputs and losses: no tensor operation, no wait for
    the device. A check sums every pending batch at once (:func:`~lightning_gan_monitor.functional.output_sums`:
    about ten tensor operations whatever the number of batches) into the preallocated buffer, per batch and part
    (real, generated, losses) and both readings of D's outputs (as probabilities and as logits: the caller decides
    which applies) and the sums that need only their order (:func:`~lightning_gan_monitor.functional.rank_sums`),
    and reads it back once (under DDP, one ``all_gather``, summed over processes).

    Args:
        capacity: the most batches between two reads.

    Example:
        >>> acc = Accumulator(capacity=4)
        >>> acc.add(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6]), [torch.tensor(0.7)])
        >>> acc.skip()  # a batch with nothing to observe
        >>> window, faults = acc.read()
        >>> window.outside, [[round(v, 2) for v in b.stats] for b in window.batches(logits=False)]
        (False, [[1.3, 2.0, 1.0, 0.8, 2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])

    """

    def __init__(self, capacity: int, ranks: bool = True, reading: Reading | None = None, ranked: bool = False) -> None:
        self.capacity = capacity
        self.ranks = ranks  # also sum what needs the order of D's outputs (about 0.6 ms more a check on a CPU)
        self.reading = reading if reading is not None else Reading("auto", capacity, lambda message, warn: None)
        self.ranked = ranked  # the rank values are logged (a critic, or `rank_values=True`)
        self.to(torch.device("cpu"))
        self.reset()

    def reset(self) -> None:
        """Forget the batches since the last log point and the window held back (a new fit)."""
        self.held: Window | None = None  # batches read back before D's reading was decided (output="auto")
        self.log_sums = [0.0] * (NUM_STATS + len(RANK_STAT_NAMES))  # summed since the last log point (host)
        self.logged = False  # a log point has passed (a later switch of the reading then warns)

    def to(self, device: torch.device) -> Accumulator:
        """Allocate the buffer on ``device`` (forgetting the batches not read yet); its last row carries faults."""
        self.buffer = torch.zeros(self.capacity + 1, _SUMS + len(RANK_STAT_NAMES), device=device)
        self._pending: list[list[Tensor] | None] = []  # per batch: d_real, d_fake, then its losses (or None)
        return self

    @property
    def pending(self) -> int:
        """Batches added since the last read."""
        return len(self._pending)

    def add(self, d_real: Tensor, d_fake: Tensor, losses: Sequence[Tensor] = ()) -> None:
        """Keep this batch's outputs (and losses) until the next read; detached, so no autograd graph is kept."""
        self._full()
        self._pending.append([d_real.detach(), d_fake.detach(), *(loss.detach() for loss in losses)])

    def add_losses(self, losses: Sequence[Tensor]) -> None:
        """More losses of the latest batch (e.g. those logged with ``self.log``), to check for NaN/inf."""
        if not losses or not self._pending:
            return
        latest = self._pending[-1]
        if latest is None:  # nothing observed in it: empty outputs, so only the losses count
            empty = self.buffer.new_empty(0)
            latest = self._pending[-1] = [empty, empty]
        latest.extend(loss.detach() for loss in losses)

    def skip(self) -> None:
        """A batch with nothing observed: its row stays zero."""
        self._full()
        self._pending.append(None)

    def _full(self) -> None:
        if len(self._pending) == self.capacity:
            raise RuntimeError(f"GANMonitor's buffer holds {self.capacity} batches: read it at least that often")

    def read(
        self, all_gather: Callable[[Tensor], Tensor] | None = None, faults: Sequence[float] = ()
    ) -> tuple[Window, list[float]]:
        """The batches since the last read and the faults, summed over processes: one collective, one read-back."""
        pending, self._pending = self._pending, []
        k = len(pending)
        if k == 0 and all_gather is None and not any(faults):
            return Window([], []), [0.0] * len(faults)
        block = self.buffer[: k + 1]  # row k: the faults
        block.zero_()
        if any(faults):
            block[k, : len(faults)] = torch.tensor(list(faults), dtype=block.dtype)
        # The outputs of every pending batch, concatenated by kind (a few operations, not a few per batch), then
        # summed per batch and part by one matrix product into the buffer.
        kinds: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
        segments: tuple[list[int], list[int], list[int]] = ([], [], [])
        rows: tuple[list[int], list[int], list[int]] = ([], [], [])
        for i, batch in enumerate(pending):
            for j, part in enumerate(batch or ()):
                kind = min(j, 2)  # every loss into the batch's third row
                kinds[kind].append(part)
                segments[kind].append(part.numel())
                rows[kind].append(3 * i + kind)
        parts = [_flat_cat(tensors, block.device) for tensors in kinds if tensors]
        if self.ranks and kinds[0] and kinds[1]:  # D's outputs of a batch: what needs their order, per batch
            batches = [r // len(_PARTS) for r in rows[0]], [r // len(_PARTS) for r in rows[1]]
            ranks = rank_sums_flat(parts[0], segments[0], parts[1], segments[1], batches)
            block[: ranks.shape[0], _SUMS:] = ranks
        if parts:
            sums = output_sums(
                parts,
                from_logits=None,  # both readings
                rows=[r for kind in rows for r in kind],
                sizes=[n for kind in segments for n in kind],
            )
            if sums.shape[0] < len(_PARTS) * k:  # the last batches had no losses (or nothing at all)
                sums = torch.nn.functional.pad(sums, (0, 0, 0, 0, 0, len(_PARTS) * k - sums.shape[0]))
            block[:k, :_SUMS] = sums.view(k, _SUMS)
        if all_gather is not None:  # (processes, rows, sums), summed over processes
            block = all_gather(block).reshape(-1, *block.shape).sum(0)
        values = block.tolist()
        return Window.of(values[:k]), values[k][: len(faults)]

    def check(
        self,
        last: int,
        all_gather: Callable[[Tensor], Tensor] | None = None,
        log: bool = False,
        final: bool = False,
        faults: Sequence[float] = (),
    ) -> Readout:
        """One check: read the batches up to ``last`` once, read D's outputs as decided, and add up what is logged.

        Args:
            last: the latest batch (the window ends there).
            all_gather: the host's ``all_gather`` under DDP (None on one process).
            log: a log point: also return the values over the batches since the previous one.
            final: D's reading must be decided now (a log point, a diagnosis, the end of training).
            faults: per optional feature, 1 if it failed on this process since the last check.
        """
        window, faults_read = self.read(all_gather, faults)
        if self.held is not None:
            window, self.held = self.held.then(window), None
        first = last - len(window) + 1
        logits = self.reading.choose(window.outside, first, last, final or log, self.logged)
        if logits is None:  # output="auto" has not seen enough to decide: these batches are judged once it has
            self.held = window
            return Readout(None, None, faults_read)
        critic = self.reading.critic
        observed = []
        for b in window.batches(logits):
            observed.append((values_from(b.stats, b.ranks, critic) if b.observed else None, b.non_finite))
            self.log_sums = [total + value for total, value in zip(self.log_sums, [*b.stats, *b.ranks])]
        logged = None
        if log:
            sums, self.log_sums = self.log_sums, [0.0] * len(self.log_sums)
            logged = values_from(sums[:NUM_STATS], sums[NUM_STATS:] if self.ranked else None, critic)
            self.logged = True
        return Readout(observed, logged, faults_read)

    def state_dict(self) -> dict[str, Any]:
        """The reading, the since-log sums and the window held back (plain floats, for checkpoints)."""
        held = [self.held.rows, self.held.ranks] if self.held is not None else None
        return {"reading": self.reading.state_dict(), "log_stats": list(self.log_sums), "held": held}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a checkpoint from before the rank sums holds the statistics alone)."""
        self.reading.load_state_dict(state.get("reading", {}))
        saved = [float(v) for v in state.get("log_stats") or self.log_sums]
        self.log_sums = saved + [0.0] * (len(self.log_sums) - len(saved))
        held = state.get("held")
        self.held = Window(*held) if held else None
