"""The names of what the monitor measures, shared by every module (plain Python: no torch, no Lightning)."""

from __future__ import annotations

__all__ = [
    "DIVERSITY_NAMES",
    "MODE_NAMES",
    "NUM_STATS",
    "QUALITY_NAMES",
    "RANK_NAMES",
    "RANK_STAT_NAMES",
    "SCORE_NAMES",
    "STAT_NAMES",
]

#: The four scores, in the order every vector of scores uses (logged as ``gan/<name>``).
SCORE_NAMES: tuple[str, ...] = (
    "generator_score",
    "discriminator_score",
    "fake_detection_accuracy",
    "real_detection_accuracy",
)
#: The sufficient statistics of a batch of D's outputs (sums and counts: they add up over batches and processes).
STAT_NAMES: tuple[str, ...] = (
    "real_sum",  # sum of D(x) over finite real outputs
    "real_count",  # number of finite real outputs
    "real_detected",  # number of real outputs rated >= 0.5
    "fake_sum",  # sum of D(G(z)) over finite fake outputs
    "fake_count",  # number of finite fake outputs
    "fake_detected",  # number of fake outputs rated < 0.5
    "non_finite",  # number of NaN/inf outputs (real and fake)
    "out_of_range",  # number of finite probabilities outside [0, 1] (always 0 with ``from_logits=True``)
)
NUM_STATS = len(STAT_NAMES)
#: What needs no fixed threshold on D's outputs (the only scores of a critic; for another D with ``rank_values``),
#: logged as ``gan/<name>``: the share of (real, generated) pairs D orders correctly (the AUC: 0.5 is chance, 1 perfect
#: separation); the share of generated outputs below the median real one, and of real outputs above the median
#: generated one (0.5 is chance, 1 perfect); and the gap mean(D(x)) - mean(D(G(z))) in D's own units (a Wasserstein
#: critic's estimate of the distance between the real and the generated distributions).
RANK_NAMES: tuple[str, ...] = ("auc", "fake_detection_at_median", "real_detection_at_median", "gap")
#: Their sums per batch (they add up over batches and processes; with the counts of finite outputs of STAT_NAMES):
#: pairs, pairs ordered correctly, generated outputs below the median real one, real ones above the median generated
#: one, and the sums of D's finite raw outputs on real and on generated samples.
RANK_STAT_NAMES: tuple[str, ...] = (
    "pairs",
    "ordered_pairs",
    "fake_below_real_median",
    "real_above_fake_median",
    "real_raw_sum",
    "fake_raw_sum",
)
#: The diversity values, in the order every vector of them uses (logged as ``gan/<name>``).
DIVERSITY_NAMES: tuple[str, ...] = ("diversity", "near_duplicates", "density", "coverage")
#: The per-mode view of coverage, logged for low-dimensional samples or features (``functional.modes``).
MODE_NAMES: tuple[str, ...] = ("mode_coverage",)
#: Sample quality against the real reservoir, logged when ``feature_extractor`` is an ``nn.Module``.
QUALITY_NAMES: tuple[str, ...] = ("fid", "kid")
