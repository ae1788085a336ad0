"""Watch GAN training in PyTorch Lightning: scores, failure diagnoses with remedies, and early stopping."""

from lightning_gan_monitor.callback import GANMonitor, GANMonitorWarning
from lightning_gan_monitor.metrics import (
    DiscriminatorScore,
    FakeDetectionAccuracy,
    GANScores,
    GANScoreStats,
    GeneratorScore,
    RealDetectionAccuracy,
)
from lightning_gan_monitor.rules import Diagnosis, FailureMode, StoppingReason

__version__ = "0.1.0"

__all__ = [
    "Diagnosis",
    "DiscriminatorScore",
    "FailureMode",
    "FakeDetectionAccuracy",
    "GANMonitor",
    "GANMonitorWarning",
    "GANScoreStats",
    "GANScores",
    "GeneratorScore",
    "RealDetectionAccuracy",
    "StoppingReason",
    "__version__",
]
