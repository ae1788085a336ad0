"""Pure tensor functions (torch only, no Lightning): the GAN scores and the diversity maths.

``lightning_gan_monitor.functional.<name>`` is the public name of each; the modules split them by idea.
"""

from lightning_gan_monitor.functional.diversity import (
    DIVERSITY_NAMES,
    RealReference,
    coverage,
    density,
    density_coverage,
    diversity_against,
    diversity_ratio,
    diversity_scores,
    near_duplicate_rate,
    pairwise_distances,
    real_reference,
)
from lightning_gan_monitor.functional.scores import (
    NUM_STATS,
    SCORE_NAMES,
    STAT_NAMES,
    SUM_NAMES,
    check_stats,
    discriminator_score,
    fake_detection_accuracy,
    gan_score_stats,
    gan_score_stats_batches,
    gan_scores,
    gan_scores_from_stats,
    generator_score,
    output_sums,
    real_detection_accuracy,
    stats_from_sums,
)

__all__ = [
    "DIVERSITY_NAMES",
    "NUM_STATS",
    "SCORE_NAMES",
    "STAT_NAMES",
    "SUM_NAMES",
    "RealReference",
    "check_stats",
    "coverage",
    "density",
    "density_coverage",
    "discriminator_score",
    "diversity_against",
    "diversity_ratio",
    "diversity_scores",
    "fake_detection_accuracy",
    "gan_score_stats",
    "gan_score_stats_batches",
    "gan_scores",
    "gan_scores_from_stats",
    "generator_score",
    "near_duplicate_rate",
    "output_sums",
    "pairwise_distances",
    "real_detection_accuracy",
    "real_reference",
    "stats_from_sums",
]
