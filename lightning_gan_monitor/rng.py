"""The monitor's own random generators: pickled and saved in checkpoints by their states (plain data).

A ``torch.Generator`` cannot be pickled, and its state is a device-specific tensor; these helpers turn generators
into (device, state) pairs and back, so a monitor (or its reservoir) can be deep-copied, pickled for ``ddp_spawn``,
and resumed on another device.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

__all__ = ["PicklesGenerators", "pack_generators", "unpack_generators"]


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


class PicklesGenerators:
    """Pickles its ``torch.Generator`` attributes as bytes: ``ddp_spawn`` pickles the callback to its workers."""

    def __getstate__(self) -> dict[str, Any]:
        return pack_generators(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(unpack_generators(state))
