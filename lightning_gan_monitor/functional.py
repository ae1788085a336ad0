"""Pure tensor functions behind the GAN scores (torch only, no Lightning).

Every score is a ratio of sums, so the functions are split the torchmetrics way: ``gan_score_stats`` turns one
batch of discriminator outputs into a small vector of sufficient statistics (sums and counts, which add up across
batches and processes), and ``gan_scores_from_stats`` turns accumulated statistics into the four scores. The public
one-shot functions (``generator_score`` ...) chain the two.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "STAT_NAMES",
    "discriminator_score",
    "fake_detection_accuracy",
    "gan_score_stats",
    "gan_scores",
    "gan_scores_from_stats",
    "generator_score",
    "real_detection_accuracy",
]

#: Order of the entries of the vector returned by :func:`gan_score_stats`.
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
SCORE_NAMES: tuple[str, ...] = (
    "generator_score",
    "discriminator_score",
    "fake_detection_accuracy",
    "real_detection_accuracy",
)


def _flat_float(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of discriminator outputs, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers (probabilities or logits), got dtype {x.dtype}")
    # Scores are means of many values: accumulate in float32 even for half/bfloat16 outputs.
    return x.detach().reshape(-1).to(torch.float32)


def _side_stats(x: Tensor, from_logits: bool, fake: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    finite = torch.isfinite(x)
    p = torch.sigmoid(x) if from_logits else x
    p = torch.where(finite, p, torch.zeros_like(p))
    total = p.sum()
    count = finite.sum(dtype=torch.float32)
    detected = ((p < 0.5) & finite if fake else (p >= 0.5)).sum(dtype=torch.float32)
    non_finite = x.numel() - count
    out_of_range = torch.zeros_like(total) if from_logits else ((p < 0) | (p > 1)).sum(dtype=torch.float32)
    return total, count, detected, non_finite, out_of_range


def gan_score_stats(d_real: Tensor | None, d_fake: Tensor | None, from_logits: bool = False) -> Tensor:
    """Sufficient statistics of one batch of discriminator outputs, as a float32 vector ordered as ``STAT_NAMES``.

    Never synchronises with the device and never raises on values: non-finite outputs are counted (and left out of
    the sums) and probabilities outside [0, 1] are counted, so the caller decides when to look. Any shape is
    accepted and flattened, so ``(B,)``, ``(B, 1)``, ``(B, 1, 1, 1)`` and patch outputs ``(B, 1, H, W)`` all work.

    Args:
        d_real: the discriminator's outputs on real samples, or None.
        d_fake: the discriminator's outputs on generated samples, or None.
        from_logits: the outputs are logits; a sigmoid turns them into probabilities first.

    Example:
        >>> import torch
        >>> gan_score_stats(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6])).tolist()
        [1.2999999523162842, 2.0, 1.0, 0.800000011920929, 2.0, 1.0, 0.0, 0.0]

    """
    if d_real is None and d_fake is None:
        raise ValueError("`gan_score_stats` needs at least one of `d_real` and `d_fake`, got neither")
    real = _flat_float(d_real, "d_real") if d_real is not None else None
    fake = _flat_float(d_fake, "d_fake") if d_fake is not None else None
    zeros = torch.zeros(5, device=(real if real is not None else fake).device)  # type: ignore[union-attr]
    r = _side_stats(real, from_logits, fake=False) if real is not None else zeros
    f = _side_stats(fake, from_logits, fake=True) if fake is not None else zeros
    return torch.stack([r[0], r[1], r[2], f[0], f[1], f[2], r[3] + f[3], r[4] + f[4]])  # type: ignore[index]


def gan_scores_from_stats(stats: Tensor) -> Tensor:
    """The four scores from accumulated statistics, as a vector ordered as ``SCORE_NAMES``.

    A score whose inputs are missing (no finite real or fake outputs yet) is NaN.

    Example:
        >>> import torch
        >>> stats = gan_score_stats(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6]))
        >>> [round(v, 3) for v in gan_scores_from_stats(stats).tolist()]
        [0.4, 0.625, 0.5, 0.5]

    """
    real_sum, real_count, real_detected, fake_sum, fake_count, fake_detected = stats[..., :6].unbind(-1)
    nan = torch.full_like(real_sum, float("nan"))
    real_mean = torch.where(real_count > 0, real_sum / real_count.clamp(min=1), nan)
    fake_mean = torch.where(fake_count > 0, fake_sum / fake_count.clamp(min=1), nan)
    return torch.stack(
        [
            fake_mean,
            0.5 * real_mean + 0.5 * (1 - fake_mean),
            torch.where(fake_count > 0, fake_detected / fake_count.clamp(min=1), nan),
            torch.where(real_count > 0, real_detected / real_count.clamp(min=1), nan),
        ],
        dim=-1,
    )


def check_stats(stats: Tensor, from_logits: bool) -> None:
    """Raise the user-facing error for probabilities outside [0, 1] (reads ``stats`` back to the host).

    Raises:
        ValueError: if ``stats`` counts finite probabilities outside [0, 1].

    """
    if not from_logits and stats[..., STAT_NAMES.index("out_of_range")].sum() > 0:
        raise ValueError(
            "The discriminator's outputs are not probabilities: some are outside [0, 1]. If your discriminator "
            "returns logits (no sigmoid at the end, as with `BCEWithLogitsLoss`), pass `from_logits=True`."
        )


def _checked_scores(d_real: Tensor | None, d_fake: Tensor | None, from_logits: bool) -> Tensor:
    stats = gan_score_stats(d_real, d_fake, from_logits)
    check_stats(stats, from_logits)
    return gan_scores_from_stats(stats)


def gan_scores(d_real: Tensor, d_fake: Tensor, from_logits: bool = False) -> dict[str, Tensor]:
    """All four scores of one batch, keyed by ``SCORE_NAMES``.

    Raises:
        ValueError: if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> scores = gan_scores(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6]))
        >>> {k: round(v.item(), 3) for k, v in scores.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'generator_score': 0.4, 'discriminator_score': 0.625, 'fake_detection_accuracy': 0.5,
         'real_detection_accuracy': 0.5}

    """
    return dict(zip(SCORE_NAMES, _checked_scores(d_real, d_fake, from_logits).unbind(-1)))


def generator_score(d_fake: Tensor, from_logits: bool = False) -> Tensor:
    """Mean probability the discriminator gives generated samples, mean(D(G(z))). Ideal near 0.5.

    Raises:
        ValueError: if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> generator_score(torch.tensor([0.2, 0.6]))
        tensor(0.4000)
        >>> generator_score(torch.tensor([0.0]), from_logits=True)
        tensor(0.5000)

    """
    return _checked_scores(None, d_fake, from_logits)[0]


def discriminator_score(d_real: Tensor, d_fake: Tensor, from_logits: bool = False) -> Tensor:
    """Mean probability of a right call by the discriminator: ½·mean(D(x)) + ½·mean(1 − D(G(z))). Ideal near 0.5.

    Raises:
        ValueError: if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> discriminator_score(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6]))
        tensor(0.6250)

    """
    return _checked_scores(d_real, d_fake, from_logits)[1]


def fake_detection_accuracy(d_fake: Tensor, from_logits: bool = False) -> Tensor:
    """Share of generated samples that the discriminator rates below 0.5 (caught as fake). Ideal near 0.5.

    Raises:
        ValueError: if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> fake_detection_accuracy(torch.tensor([0.2, 0.6, 0.1, 0.7]))
        tensor(0.5000)

    """
    return _checked_scores(None, d_fake, from_logits)[2]


def real_detection_accuracy(d_real: Tensor, from_logits: bool = False) -> Tensor:
    """Share of real samples that the discriminator rates at 0.5 or above (recognised as real).

    Raises:
        ValueError: if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> real_detection_accuracy(torch.tensor([0.9, 0.4, 0.5, 0.8]))
        tensor(0.7500)

    """
    return _checked_scores(d_real, None, from_logits)[3]
