"""torchmetrics ``Metric`` classes for the GAN scores and the diversity metrics; the arithmetic is in ``functional``.

``lightning_gan_monitor.metrics.<name>`` is the public name of each; the modules split them by idea, as
``functional`` does.
"""

from lightning_gan_monitor.metrics.diversity import (
    Coverage,
    Density,
    DiversityRatio,
    DiversityScores,
    ModeCoverage,
    NearDuplicateRate,
)
from lightning_gan_monitor.metrics.scores import (
    DiscriminatorScore,
    FakeDetectionAccuracy,
    GANRankScores,
    GANScores,
    GANScoreStats,
    GeneratorScore,
    RealDetectionAccuracy,
)

__all__ = [
    "Coverage",
    "Density",
    "DiscriminatorScore",
    "DiversityRatio",
    "DiversityScores",
    "FakeDetectionAccuracy",
    "GANRankScores",
    "GANScoreStats",
    "GANScores",
    "GeneratorScore",
    "ModeCoverage",
    "NearDuplicateRate",
    "RealDetectionAccuracy",
]
