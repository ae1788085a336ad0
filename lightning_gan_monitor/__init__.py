"""Watch GAN training in PyTorch Lightning: scores, failure diagnoses with remedies, and early stopping."""

from typing import TYPE_CHECKING, Any

from lightning_gan_monitor.diagnosis import Diagnosis, FailureMode, GANMonitorWarning, StoppingReason
from lightning_gan_monitor.metrics import (
    Coverage,
    Density,
    DiscriminatorScore,
    DiversityRatio,
    DiversityScores,
    FakeDetectionAccuracy,
    GANRankScores,
    GANScores,
    GANScoreStats,
    GeneratorScore,
    NearDuplicateRate,
    RealDetectionAccuracy,
)

if TYPE_CHECKING:
    from lightning_gan_monitor.pytorch_lightning import GANMonitor

__version__ = "0.3.0"

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
    "GANRankScores",
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
    # importable) without it, and `import lightning_gan_monitor.rules` keeps the layering honest. `GANMonitor` is the
    # `pytorch_lightning` callback (the 0.1 API); users of the `lightning` package take
    # `lightning_gan_monitor.lightning.GANMonitor`, and neither ever imports the other package.
    if name == "GANMonitor":
        from lightning_gan_monitor.pytorch_lightning import GANMonitor

        return GANMonitor
    raise AttributeError(f"module 'lightning_gan_monitor' has no attribute {name!r}")
