"""What a checkpoint holds of the monitor, and how a resumed run continues from it (version 0.1's included).

:class:`MonitorState` gives the callback ``state_dict``/``load_state_dict``: plain counters, host floats and the
monitor's own RNG states (no tensor on the device), read with ``.get(key, default)`` so that older checkpoints load.
"""

from __future__ import annotations

from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor

from lightning_gan_monitor.accumulate import Window
from lightning_gan_monitor.diagnosis import Diagnosis, FailureMode, GANMonitorWarning, StoppingReason
from lightning_gan_monitor.names import DIVERSITY_NAMES

__all__ = ["MonitorState", "from_version_1"]


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


class MonitorState:
    """The monitor's checkpoint state (a base of :class:`~lightning_gan_monitor.callback.GANMonitorBase`)."""

    _batches_seen: int
    _generator_updates: int | None
    _log_stats: list[float]
    _fixed_latent: Tensor | None
    _sources: Any
    _tracker: Any
    _reading: Any
    _watch: Any
    _history: Any
    _held: Any
    failure: FailureMode | None
    stopped_batch: int | None
    stopping_reason: StoppingReason
    stopping_reason_message: str | None
    diagnoses: list[Diagnosis]
    diversity: dict[str, float]
    _config: Any  # MonitorArguments._config: the arguments a checkpoint saves

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: counters, smoothed scores, the monitor's own RNG states, what fired."""
        sources = self._sources.state_dict()
        collapse = self._watch.tracker if self._watch is not None else None
        return {
            "version": 2,
            "batches_seen": self._batches_seen,
            "generator_updates": self._generator_updates,
            "since_probe": self._sources._since_probe,
            "tracker": self._tracker.state_dict(),
            "reading": self._reading.state_dict(),
            "log_stats": list(self._log_stats),
            "rng_state": sources["rng"],
            "fixed_latent": self._fixed_latent,
            "fixed_conditions": self._sources.first_conditions,
            "diversity": list(self.diversity.values()),
            "collapse": collapse.state_dict() if collapse is not None else None,
            "failure": self.failure.value if self.failure else None,
            "stopped_batch": self.stopped_batch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "config": self._config(),
            "history": self._history.state_dict(),
            "held": [self._held.rows, self._held.ranks] if self._held is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (or a checkpoint of version 0.1), warning of settings that changed."""
        saved = state_dict.get("config", {})
        changed = {k: (saved[k], v) for k, v in self._config().items() if k in saved and saved[k] != v}
        if changed:
            rank_zero_warn(
                "GANMonitor is resuming from a checkpoint written with other settings ("
                + ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                + "); the counters and smoothed scores carry on under the new settings.",
                category=GANMonitorWarning,
            )
        state = from_version_1(state_dict) if "detector" in state_dict else state_dict
        self._batches_seen = state.get("batches_seen", 0)
        self._generator_updates = state.get("generator_updates")
        self._sources._since_probe = state.get("since_probe", 0)
        skipped = self._tracker.load_state_dict(state.get("tracker", {}))
        if skipped:
            rank_zero_warn(
                f"GANMonitor could not restore {', '.join(skipped)} from the checkpoint (its rules differ); "
                "those start afresh.",
                category=GANMonitorWarning,
            )
        saved = [float(v) for v in state.get("log_stats") or self._log_stats]
        # a checkpoint from before the rank sums holds the statistics alone: the rank sums start afresh
        self._log_stats = saved + [0.0] * (len(self._log_stats) - len(saved))
        self._reading.load_state_dict(state.get("reading", {}))
        # (a "sample_rng_state" of 0.1 and 0.2, the diversity checks' generator, is not needed: they use fixed vectors)
        self._sources.rng_states = {"rng": state.get("rng_state")}
        if state.get("fixed_latent") is not None:
            self._fixed_latent = state["fixed_latent"]
        if state.get("fixed_conditions") is not None:
            self._sources.first_conditions = state["fixed_conditions"]
        if self._watch is not None:
            self._watch.last = dict(zip(DIVERSITY_NAMES, map(float, state.get("diversity", self._watch.last.values()))))
            if self._watch.tracker is not None and state.get("collapse"):
                self._watch.tracker.load_state_dict(state["collapse"])
        failure = state.get("failure")
        self.failure = FailureMode(failure) if failure else None
        self.stopped_batch = state.get("stopped_batch")
        self.stopping_reason = StoppingReason(state.get("stopping_reason", StoppingReason.NOT_STOPPED.value))
        self.stopping_reason_message = state.get("stopping_reason_message")
        self.diagnoses = [Diagnosis.from_dict(d) for d in state.get("diagnoses", [])]
        if "history" in state:
            self._history.load_state_dict(state["history"])
        held = state.get("held")
        self._held = Window(*held) if held else None
