"""D's outputs since the last check, summed per batch into a small preallocated buffer on the device, read back once.

An ordinary batch only adds references (no tensor operation, no wait for the device). A check sums every pending
batch with a fixed handful of tensor operations (:func:`~lightning_gan_monitor.functional.output_sums`) into the
buffer, reads it back in one go (under DDP, one ``all_gather``, summed over processes), and turns it into plain
floats for :mod:`lightning_gan_monitor.rules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_gan_monitor.functional.scores import SUM_NAMES, output_sums, stats_from_sums
from lightning_gan_monitor.names import STAT_NAMES

__all__ = ["Accumulator", "BatchSums", "scores_from_stats"]

#: Parts of a batch with a row of sums each: D's outputs on real samples, on generated samples, the losses.
_PARTS = ("real", "fake", "loss")
_REAL_COUNT, _FAKE_COUNT, _NON_FINITE, _OUT_OF_RANGE = (
    STAT_NAMES.index(name) for name in ("real_count", "fake_count", "non_finite", "out_of_range")
)


class BatchSums(NamedTuple):
    """One batch, read back: the statistics of ``STAT_NAMES`` and whether a returned loss was NaN or infinite."""

    stats: list[float]
    loss_non_finite: bool

    @property
    def observed(self) -> bool:
        """Whether the batch had D outputs or losses (a probing monitor observes only every few batches)."""
        return self.stats[_REAL_COUNT] + self.stats[_FAKE_COUNT] + self.stats[_NON_FINITE] > 0 or self.loss_non_finite

    @property
    def non_finite(self) -> bool:
        """Whether an output or a loss was NaN or infinite."""
        return self.stats[_NON_FINITE] > 0 or self.loss_non_finite

    @property
    def out_of_range(self) -> bool:
        """Whether a probability (``from_logits=False``) was outside [0, 1]."""
        return self.stats[_OUT_OF_RANGE] > 0


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


def _flat_cat(tensors: list[Tensor], device: torch.device) -> Tensor:
    """The tensors' values in one flat tensor on ``device`` (one ``cat`` when they differ only in their first size)."""
    first = tensors[0]
    if first.dim() > 0 and all(t.dim() == first.dim() and t.shape[1:] == first.shape[1:] for t in tensors):
        flat = torch.cat(tensors) if len(tensors) > 1 else first
    else:
        flat = torch.cat([t.reshape(-1) for t in tensors])
    return flat.reshape(-1).to(device, non_blocking=True)


class Accumulator:
    """D's outputs of the batches since the last check, summed at the check into a (capacity, 3, 5) device buffer.

    An ordinary batch only keeps references to its (detached) outputs and losses: no tensor operation, no wait for
    the device. A check sums every pending batch at once (:func:`~lightning_gan_monitor.functional.output_sums`:
    about ten tensor operations whatever the number of batches) into the preallocated buffer, per batch and part
    (real, generated, losses), and reads it back once (under DDP, one ``all_gather``, summed over processes).

    Args:
        capacity: the most batches between two reads.
        from_logits: D's outputs are logits (a sigmoid is applied before summing).

    Example:
        >>> acc = Accumulator(capacity=4, from_logits=False)
        >>> acc.add(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6]), [torch.tensor(0.7)])
        >>> acc.skip()  # a batch with nothing to observe
        >>> [[round(v, 2) for v in b.stats] for b in acc.read()]
        [[1.3, 2.0, 1.0, 0.8, 2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]

    """

    def __init__(self, capacity: int, from_logits: bool) -> None:
        self.capacity = capacity
        self.from_logits = from_logits
        self.to(torch.device("cpu"))

    def to(self, device: torch.device) -> Accumulator:
        """Allocate the buffer on ``device`` (forgetting the batches not read yet)."""
        self.buffer = torch.zeros(self.capacity, len(_PARTS), len(SUM_NAMES), device=device)
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

    def read(self, all_gather: Callable[[Tensor], Tensor] | None = None) -> list[BatchSums]:
        """The batches since the last read, summed over processes: one collective and one read-back."""
        pending, self._pending = self._pending, []
        k = len(pending)
        if k == 0:
            return []
        block = self.buffer[:k]
        block.zero_()
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
        if parts:
            sums = output_sums(
                parts,
                self.from_logits,
                rows=[r for kind in rows for r in kind],
                sizes=[n for kind in segments for n in kind],
            )
            block.view(-1, len(SUM_NAMES))[: sums.shape[0]] = sums
        if all_gather is not None:  # (processes, rows, parts, sums), summed over processes
            block = all_gather(block).reshape(-1, *block.shape).sum(0)
        return [
            BatchSums(stats_from_sums(real, fake), loss[1] < loss[4])  # type: ignore[arg-type]
            for real, fake, loss in block.tolist()
        ]
