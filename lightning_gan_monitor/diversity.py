"""Where the diversity metrics' samples come from: a bounded reservoir of real samples (torch only, no Lightning)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_gan_monitor.functional import host_to_device

__all__ = ["Reservoir", "pack_generators", "unpack_generators"]


class _PackedGenerator(NamedTuple):
    device: str
    state: bytes


def pack_generators(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of an object's ``__dict__`` with each ``torch.Generator`` as its device and state in plain bytes.

    ``ddp_spawn`` pickles callbacks to its workers sharing tensors through shared memory, and a ``torch.Generator``
    (whose pickled state is a temporary tensor, freed before the worker maps it) fails there; bytes travel anywhere.
    :func:`unpack_generators` undoes it.

    Example:
        >>> packed = pack_generators({"rng": torch.Generator().manual_seed(3), "n": 1})
        >>> torch.equal(unpack_generators(packed)["rng"].get_state(), torch.Generator().manual_seed(3).get_state())
        True

    """
    return {
        key: _PackedGenerator(str(value.device), value.get_state().numpy().tobytes())
        if isinstance(value, torch.Generator)
        else value
        for key, value in state.items()
    }


def unpack_generators(state: dict[str, Any]) -> dict[str, Any]:
    """The ``torch.Generator`` objects of :func:`pack_generators` back (in place; returns ``state``)."""
    for key, value in state.items():
        if isinstance(value, _PackedGenerator):
            generator = torch.Generator(device=value.device)
            generator.set_state(torch.frombuffer(bytearray(value.state), dtype=torch.uint8))
            state[key] = generator
    return state


class Reservoir:
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

    def __getstate__(self) -> dict[str, Any]:
        return pack_generators(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(unpack_generators(state))

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
