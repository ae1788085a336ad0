"""The real samples the diversity metrics compare with: a bounded uniform sample of the batches seen.

Filled on the host's decisions from its own seeded generator, so offering a batch never waits for the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_gan_monitor.rng import PicklesGenerators

__all__ = ["Reservoir", "host_to_device"]


def host_to_device(values: Tensor, device: torch.device) -> Tensor:
    """A small host tensor on ``device`` without a synchronisation (through pinned memory on CUDA).

    Example:
        >>> host_to_device(torch.tensor([1, 5]), torch.device("cpu"))
        tensor([1, 5])
    """
    if device.type == "cpu":
        return values
    if device.type == "cuda":
        values = values.pin_memory()
    return values.to(device, non_blocking=True)


class Reservoir(PicklesGenerators):
    """A uniform random sample of at most ``size`` of the rows seen so far (reservoir sampling, Algorithm R).

    Which rows enter is drawn on the host from the reservoir's own seeded ``torch.Generator`` (the global RNG is
    never used), so :meth:`add` never waits for the device: it costs a few host operations and, when a row enters,
    one indexed copy on the rows' device. Rows are copied (detached), so a batch is not kept alive.

    Args:
        size: the most rows kept.
        seed: seed of the reservoir's generator.

    Example:
        >>> reservoir = Reservoir(size=4, seed=0)
        >>> for start in range(0, 100, 10):
        ...     reservoir.add(torch.arange(start, start + 10.0).unsqueeze(1))
        >>> reservoir.samples().shape, reservoir.seen
        (torch.Size([4, 1]), 100)

    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`size` must be a positive integer, got {size!r}")
        self.size = size
        self.seed = seed
        self._rng = torch.Generator()
        self.reset()

    def reset(self) -> None:
        """Empty the reservoir and reseed its generator."""
        self._rng.manual_seed(self.seed)
        self.seen = 0
        self._data: Tensor | None = None

    @torch.no_grad()
    def add(self, rows: Tensor) -> None:
        """Offer every row of ``rows`` (shape (b, ...)); each enters with the probability Algorithm R gives it."""
        b = rows.shape[0]
        if b == 0:
            return
        if self._data is None:
            self._data = torch.empty((self.size, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        elif rows.shape[1:] != self._data.shape[1:]:
            raise ValueError(
                f"every real sample must have the same shape to be kept for the diversity metrics; got "
                f"{tuple(rows.shape[1:])} after {tuple(self._data.shape[1:])}"
            )
        t = torch.arange(self.seen, self.seen + b)
        # Row t enters at slot t while there is room, else at a uniform slot of [0, t] if that slot is < size.
        slot = torch.where(t < self.size, t, (torch.rand(b, generator=self._rng, dtype=torch.float64) * (t + 1)).long())
        keep = slot < self.size
        self.seen += b
        if not bool(keep.any()):  # a host tensor: no device synchronisation
            return
        # Algorithm R processes rows one by one, so of two rows drawing the same slot the later one stays.
        last = torch.full((self.size,), -1, dtype=torch.long).scatter_reduce(
            0, slot[keep], torch.arange(b)[keep], reduce="amax"
        )
        slots = torch.nonzero(last >= 0).squeeze(1)
        device = self._data.device
        self._data.index_copy_(
            0, host_to_device(slots, device), rows.detach()[host_to_device(last[slots], rows.device)].to(self._data)
        )

    def samples(self) -> Tensor:
        """The rows kept, shape (min(seen, size), ...); empty before the first :meth:`add`."""
        if self._data is None:
            return torch.empty(0)
        return self._data[: min(self.seen, self.size)]
