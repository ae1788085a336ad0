"""Pure tensor functions behind the GAN scores (torch only, no Lightning).

Every score is a ratio of sums, so the functions are split the torchmetrics way: ``gan_score_stats`` turns one
batch of discriminator outputs into a small vector of sufficient statistics (sums and counts, which add up across
batches and processes), and ``gan_scores_from_stats`` turns accumulated statistics into the four scores. The public
one-shot functions (``generator_score`` ...) chain the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "STAT_NAMES",
    "discriminator_score",
    "fake_detection_accuracy",
    "gan_score_stats",
    "gan_score_stats_batches",
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
    return x.detach().reshape(-1)


def _side_stats(parts: Sequence[Tensor | None], from_logits: bool, fake: bool, device: torch.device) -> Tensor:
    """Per-batch (sum, count, detected, non-finite, out-of-range) of one side, as a (k, 5) tensor."""
    k = len(parts)
    present = [(i, x) for i, x in enumerate(parts) if x is not None]
    if not present:
        return torch.zeros(k, 5, device=device)
    x = _cat_on(device, [t for _, t in present])
    finite = torch.isfinite(x)
    p = torch.where(finite, torch.sigmoid(x) if from_logits else x, 0.0)
    detected = ((p < 0.5) & finite) if fake else (p >= 0.5)
    out_of_range = torch.zeros_like(finite) if from_logits else (p < 0) | (p > 1)
    # one conversion for the four flags instead of one each: a check's cost is mostly the number of tensor ops
    flags = torch.stack([finite, detected, ~finite, out_of_range], dim=1).to(p.dtype)
    values = torch.cat([p.unsqueeze(1), flags], dim=1)
    if k == 1:
        return values.sum(0, keepdim=True)
    return _segment_sum(values, [i for i, _ in present], [t.numel() for _, t in present], k)


def _cat_on(device: torch.device, tensors: Sequence[Tensor]) -> Tensor:
    """Flat tensors as one float32 vector on ``device``; converted once, after the concatenation (fewer ops)."""
    if any(t.device != device for t in tensors):
        tensors = [t.to(device, non_blocking=True) for t in tensors]
    x = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
    # Scores are means of many values: accumulate in float32 even for half/bfloat16 outputs.
    return x.to(torch.float32)


def _segment_sum(values: Tensor, indices: Sequence[int], sizes: Sequence[int], k: int) -> Tensor:
    """Sum consecutive runs of ``values`` rows (run j: ``sizes[j]`` rows, added to row ``indices[j]`` of k).

    ``indices`` is non-decreasing (the runs were concatenated in row order).
    """
    rows = [0] * k
    for i, n in zip(indices, sizes):
        rows[i] += n
    if rows.count(rows[0]) == k:  # every row has as many values (same batch sizes, nothing missing): no index
        return values.reshape(k, rows[0], *values.shape[1:]).sum(1)
    # The sizes are known on the host, so building the segment ids never waits for the device.
    segment = host_to_device(torch.tensor(indices).repeat_interleave(torch.tensor(sizes)), values.device)
    return torch.zeros(k, *values.shape[1:], device=values.device, dtype=values.dtype).index_add_(0, segment, values)


def host_to_device(values: Sequence[int] | Tensor, device: torch.device) -> Tensor:
    """A small host tensor on ``device`` without a synchronisation (through pinned memory on CUDA).

    Example:
        >>> host_to_device([1, 5], torch.device("cpu"))
        tensor([1, 5])
    """
    tensor = values if isinstance(values, Tensor) else torch.tensor(values)
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def non_finite_rows(tensors: Sequence[Sequence[Tensor]], device: torch.device) -> Tensor:
    """Per group (e.g. the losses one step returned), whether any value is NaN or infinite: a (k,) bool tensor.

    Example:
        >>> losses = [[torch.tensor(1.0)], [], [torch.tensor(2.0), torch.tensor(float("nan"))]]
        >>> non_finite_rows(losses, torch.device("cpu"))
        tensor([False, False,  True])
    """
    k = len(tensors)
    present = [(i, t if t.dim() == 1 else t.reshape(-1)) for i, group in enumerate(tensors) for t in group]
    if not present:
        return torch.zeros(k, dtype=torch.bool, device=device)
    values = (~torch.isfinite(_cat_on(device, [t for _, t in present]))).float()
    return _segment_sum(values, [i for i, _ in present], [t.numel() for _, t in present], k) > 0


def gan_score_stats_batches(
    d_real: Sequence[Tensor | None], d_fake: Sequence[Tensor | None], from_logits: bool = False
) -> Tensor:
    """Sufficient statistics of several batches at once, a (k, ``NUM_STATS``) tensor (row i is batch i).

    The same numbers as :func:`gan_score_stats` on each batch, computed with a fixed number of tensor operations
    whatever k is: this is how the monitor processes the batches between two checks.

    Example:
        >>> import torch
        >>> stats = gan_score_stats_batches([torch.tensor([0.9]), torch.tensor([0.4, 0.5])],
        ...                                 [torch.tensor([0.2]), None])
        >>> [[round(v, 3) for v in row] for row in stats[:, :6].tolist()]
        [[0.9, 1.0, 1.0, 0.2, 1.0, 1.0], [0.9, 2.0, 1.0, 0.0, 0.0, 0.0]]
    """
    k = len(d_real)
    if len(d_fake) != k:
        raise ValueError(f"`d_real` and `d_fake` must list the same number of batches, got {k} and {len(d_fake)}")
    if any(r is None and f is None for r, f in zip(d_real, d_fake)):
        raise ValueError("`gan_score_stats` needs at least one of `d_real` and `d_fake`, got neither")
    reals = [None if x is None else _flat_float(x, "d_real") for x in d_real]
    fakes = [None if x is None else _flat_float(x, "d_fake") for x in d_fake]
    device = next(x.device for x in (*reals, *fakes) if x is not None)
    real = _side_stats(reals, from_logits, fake=False, device=device)
    fake = _side_stats(fakes, from_logits, fake=True, device=device)
    return torch.cat([real[:, :3], fake[:, :3], real[:, 3:] + fake[:, 3:]], dim=1)


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
    return gan_score_stats_batches([d_real], [d_fake], from_logits)[0]


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
