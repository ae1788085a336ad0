"""Watch GAN training in PyTorch Lightning: scores, failure diagnoses with remedies, and early stopping."""

from typing import TYPE_CHECKING, Any

from lightning_gan_monitor.metrics import (
    Coverage,
    Density,
    DiscriminatorScore,
    DiversityRatio,
    DiversityScores,
    FakeDetectionAccuracy,
    GANScores,
    GANScoreStats,
    GeneratorScore,
    NearDuplicateRate,
    RealDetectionAccuracy,
)
from lightning_gan_monitor.rules import Diagnosis, FailureMode, StoppingReason

if TYPE_CHECKING:
    from lightning_gan_monitor.callback import GANMonitor, GANMonitorWarning

__version__ = "0.1.0"

__all__ = [
    "Coverage",
    "Density",
    "Diagnosis",
    "DiscriminatorScore",
    "DiversityRatio",
    "DiversityScores",
    "FailureMode",
    "FakeDetectionAccuracy",
    "GANMonitor",
    "GANMonitorWarning",
    "GANScoreStats",
    "GANScores",
    "GeneratorScore",
    "NearDuplicateRate",
    "RealDetectionAccuracy",
    "StoppingReason",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lightning is imported only when the callback is asked for, so the metrics and rules stay usable (and
    # importable) without it, and `import lightning_gan_monitor.rules` keeps the layering honest.
    if name in ("GANMonitor", "GANMonitorWarning"):
        from lightning_gan_monitor import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'lightning_gan_monitor' has no attribute {name!r}")
