"""Checkpoints of version 0.1 in today's terms (:meth:`~lightning_gan_monitor.monitor.Monitor.load_state_dict`).

A checkpoint holds plain counters, host floats and the monitor's own RNG states (no tensor on the device), read
with ``.get(key, default)`` so that older checkpoints load; 0.1's held tensors and other names, translated here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["from_version_1", "not_restored", "settings_changed"]


def from_version_1(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of version 0.1 (tensors on the device: the detector's, the running sums) in today's terms."""
    detector = {k: v.tolist() if isinstance(v, Tensor) else v for k, v in state["detector"].items()}
    tracker = {
        "batches": int(detector.get("batches", state.get("batches_seen", 0))),
        "gap": state.get("since_observation", 0),
        "ema": detector.get("ema"),
        "weight": detector.get("ema_weight"),
        "held": detector.get("held"),
        "latched": detector.get("latched"),
        "regime_batches": detector.get("regime_batches"),
    }
    tracker = {k: v for k, v in tracker.items() if v is not None}
    tracker["holding"] = [held > 0 for held in tracker.get("held", [])]
    collapse = state.get("collapse")
    diversity = state.get("diversity")
    return {
        **state,
        "since_probe": state.get("since_observation", 0),
        "tracker": tracker,
        "log_stats": state["running"].tolist() if isinstance(state.get("running"), Tensor) else None,
        "diversity": diversity.tolist() if isinstance(diversity, Tensor) else diversity,
        "collapse": {k: v.item() for k, v in collapse.items()} if collapse else None,
    }


def settings_changed(changed: dict[str, tuple[Any, Any]]) -> str:
    """The warning of a run resumed under other settings than its checkpoint's (``name: (saved, now)``)."""
    pairs = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    return (
        f"GANMonitor is resuming from a checkpoint written with other settings ({pairs}); the counters and smoothed "
        "scores carry on under the new settings."
    )


def not_restored(skipped: Sequence[str]) -> str:
    """The warning of rules' states a checkpoint could not give back (its rules differ)."""
    return (
        f"GANMonitor could not restore {', '.join(skipped)} from the checkpoint (its rules differ); those start afresh."
    )
