"""Pure tensor functions behind the GAN scores (torch only, no Lightning).

Every score is a ratio of sums, so the functions are split the torchmetrics way: :func:`output_sums` turns
discriminator outputs into a few sums and counts per part (which add up across batches and processes),
``gan_score_stats`` arranges them as the sufficient statistics of ``STAT_NAMES``, and ``gan_scores_from_stats`` turns
accumulated statistics into the four scores. The public one-shot functions (``generator_score`` ...) chain them.
The monitor calls :func:`output_sums` once per batch, so it is written as a fixed handful of tensor operations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_gan_monitor.names import NUM_STATS, RANK_NAMES, RANK_STAT_NAMES, SCORE_NAMES, STAT_NAMES

__all__ = [
    "NUM_STATS",
    "RANK_NAMES",
    "RANK_STAT_NAMES",
    "SCORE_NAMES",
    "STAT_NAMES",
    "SUM_NAMES",
    "check_stats",
    "discriminator_score",
    "fake_detection_accuracy",
    "gan_score_stats",
    "gan_score_stats_batches",
    "gan_scores",
    "gan_scores_from_stats",
    "generator_score",
    "output_sums",
    "rank_scores",
    "rank_sums",
    "rank_sums_flat",
    "real_detection_accuracy",
]

#: The columns of :func:`output_sums`, per part of the outputs.
SUM_NAMES: tuple[str, ...] = ("sum", "finite", "at_least_half", "out_of_range", "count")


def _flat(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of discriminator outputs, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers (probabilities or logits), got dtype {x.dtype}")
    return x.detach().reshape(-1)


#: The columns of both readings' sums (``from_logits=None``), from the eight flags summed by ``output_sums``.
_BOTH = torch.tensor([0, 1, 2, 3, 4, 5, 1, 6, 7, 4])


@functools.lru_cache(maxsize=32)
def _parts_matrix(sizes: tuple[int, ...], rows: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(rows, n) 0/1 matrix summing each part's values into its row, and vectors of n ones and zeros (per shape)."""
    row = torch.repeat_interleave(torch.tensor(rows), torch.tensor(sizes))
    matrix = (row.unsqueeze(0) == torch.arange(max(rows) + 1).unsqueeze(1)).float()
    n = sum(sizes)
    return matrix.to(device), torch.ones(n, device=device), torch.zeros(n, device=device)


def output_sums(
    parts: Sequence[Tensor],
    from_logits: bool | None = False,
    rows: Sequence[int] | None = None,
    out: Tensor | None = None,
    sizes: Sequence[int] | None = None,
) -> Tensor:
    """Per part, the sums and counts of ``SUM_NAMES``: a (len(parts), 5) float32 tensor (or (len(parts), 2, 5)).

    For each part (e.g. D's outputs on real samples, on generated samples, the losses): the sum of the probabilities
    over its finite values, the number of finite values, of values rated at least 0.5, of finite probabilities outside
    [0, 1] (0 with ``from_logits``), and of values. A fixed number of tensor operations whatever the number of parts,
    and never a synchronisation with the device: the monitor runs it once per check over every batch since the last.

    Args:
        parts: tensors of any shape on one device (flattened; half precision is summed in float32).
        from_logits: the values are logits; a sigmoid turns them into probabilities first. None: both readings,
            as probabilities (``[..., 0, :]``) and as logits (``[..., 1, :]``), for a caller that decides later.
        rows: the row of the result each part is added to (e.g. ``(0, 1, 2, 2)`` to add two losses into one row);
            None: part i in row i.
        out: an optional float32 tensor of the result's shape to write into (e.g. a preallocated buffer).
        sizes: the parts' values, concatenated, are these segments instead (each with its row in ``rows``): how the
            monitor sums many batches' outputs concatenated in a few tensors.

    Example:
        >>> output_sums([torch.tensor([0.9, 0.4]), torch.tensor([0.2, float("nan")])]).tolist()
        [[1.2999999523162842, 2.0, 1.0, 0.0, 2.0], [0.20000000298023224, 1.0, 0.0, 0.0, 2.0]]

    """
    flat = [x.detach().reshape(-1) for x in parts]
    x = torch.cat(flat).float() if len(flat) > 1 else flat[0].float()
    segments = tuple(sizes) if sizes is not None else tuple(t.numel() for t in flat)
    index = tuple(rows) if rows is not None else tuple(range(len(segments)))
    matrix, ones, zeros = _parts_matrix(segments, index, x.device)
    finite = x.isfinite()
    if from_logits is None:  # both: [p, finite, p >= 0.5, out of range, count, s, s >= 0.5, 0] with s = sigmoid(x)
        p, s = x.where(finite, 0.0), x.sigmoid().where(finite, 0.0)
        out_of_range = (p.clamp(0.0, 1.0) != p).float()
        flags = torch.stack((p, finite.float(), (p >= 0.5).float(), out_of_range, ones, s, (s >= 0.5).float(), zeros))
        both = torch.mm(matrix, flags.T).index_select(1, _BOTH.to(x.device)).view(-1, 2, len(SUM_NAMES))
        return both if out is None else out.copy_(both)
    p = (x.sigmoid() if from_logits else x).where(finite, 0.0)
    out_of_range = zeros if from_logits else (p.clamp(0.0, 1.0) != p).float()  # a sigmoid is always in range
    flags = torch.stack((p, finite.float(), (p >= 0.5).float(), out_of_range, ones))
    return torch.mm(matrix, flags.T, out=out)


#: The most outputs per part of a batch that :func:`rank_sums` orders (more, as from a PatchGAN's map of outputs, are
#: subsampled evenly: the order statistics of 4,096 outputs are a close estimate, at a bounded cost).
RANK_MAX_OUTPUTS = 4096


@functools.lru_cache(maxsize=32)
def _layout(sizes: tuple[int, ...], batches: tuple[int, ...], k: int, device: torch.device) -> tuple[Any, ...]:
    """Where each kept value of concatenated segments goes in a (k, width) table: (take, row, column, width).

    Segment j (``sizes[j]`` values) belongs to batch ``batches[j]``; a batch's segments fill its row left to right.
    A segment of more than ``RANK_MAX_OUTPUTS`` values keeps an even subsample of them (``take``: None if all are
    kept).
    """
    take: list[int] = []
    row: list[int] = []
    column: list[int] = []
    filled, start = [0] * k, 0
    for n, b in zip(sizes, batches):
        kept = list(range(start, start + n, -(-n // RANK_MAX_OUTPUTS) if n else 1))
        take += kept
        row += [b] * len(kept)
        column += range(filled[b], filled[b] + len(kept))
        filled[b] += len(kept)
        start += n
    as_tensor = functools.partial(torch.tensor, dtype=torch.long, device=device)
    return (as_tensor(take) if len(take) < start else None), as_tensor(row), as_tensor(column), max(*filled, 1)


def _table(flat: Tensor, sizes: Sequence[int], batches: Sequence[int], k: int) -> Tensor:
    """The values of concatenated segments as a (k, width) float table, a batch a row, padded with +inf."""
    take, row, column, width = _layout(tuple(sizes), tuple(batches), k, flat.device)
    values = (flat if take is None else flat.index_select(0, take)).float()
    table = values.new_full((k, width), float("inf"))
    return table.index_put_((row, column), values.where(values.isfinite(), float("inf")))


def _median(ordered: Tensor, n: Tensor) -> Tensor:
    """Per row, the median of the first ``n`` values of an ordered (k, width) table (inf where ``n`` is 0)."""
    low, high = ((n - 1).clamp(min=0) // 2).unsqueeze(1), (n // 2).clamp(max=ordered.shape[1] - 1).unsqueeze(1)
    return ((ordered.gather(1, low) + ordered.gather(1, high)) / 2).where(n.unsqueeze(1) > 0, float("inf"))


def rank_sums_flat(
    real: Tensor, real_sizes: Sequence[int], fake: Tensor, fake_sizes: Sequence[int], batches: Sequence[Sequence[int]]
) -> Tensor:
    """:func:`rank_sums` of batches whose outputs come concatenated: a (k, 6) tensor.

    ``real`` is segments of ``real_sizes`` values, the j-th belonging to batch ``batches[0][j]``; ``fake`` likewise,
    with ``batches[1]``. How the monitor calls it at a check, on the outputs it has already concatenated: about
    twenty tensor operations whatever the number of batches (the layout of the table is cached per set of sizes).
    """
    k = max((b + 1 for part in batches for b in part), default=0)
    real_table, fake_table = _table(real, real_sizes, batches[0], k), _table(fake, fake_sizes, batches[1], k)
    real_sorted, fake_sorted = real_table.sort(dim=1).values, fake_table.sort(dim=1).values  # left-out values last
    real_n, fake_n = real_table.isfinite().sum(1), fake_table.isfinite().sum(1)
    # per real value: the generated values below it, plus those equal to it (a tie counts half: each twice, / 2)
    below = torch.searchsorted(fake_sorted, real_sorted, side="left")
    below = (below + torch.searchsorted(fake_sorted, real_sorted, side="right")).where(real_sorted.isfinite(), 0)
    real_median, fake_median = _median(real_sorted, real_n), _median(fake_sorted, fake_n)
    fake_below = torch.searchsorted(fake_sorted, real_median, side="left").squeeze(1)
    real_above = real_n - torch.searchsorted(real_sorted, fake_median, side="right").squeeze(1).clamp(max=real_n)
    finite_sums = [t.where(t.isfinite(), 0.0).sum(1) for t in (real_table, fake_table)]
    counts = (real_n * fake_n, below.sum(1) / 2, fake_below.where(real_n > 0, 0), real_above.where(fake_n > 0, 0))
    return torch.stack([*(x.float() for x in counts), *finite_sums], dim=1)


def rank_sums(d_real: Sequence[Tensor], d_fake: Sequence[Tensor]) -> Tensor:
    """Per batch, the sums of ``RANK_STAT_NAMES``, which need no threshold on D's outputs: a (k, 6) tensor.

    Batch i pairs ``d_real[i]`` with ``d_fake[i]`` (any shapes, flattened; NaN and infinite values are left out):
    the (real, generated) pairs of the batch, those D orders correctly (the real one scored higher; a tie counts
    half), the generated outputs below the median real output, the real outputs above the median generated one, and
    the sums of the raw outputs (for the gap).
    A part of more than ``RANK_MAX_OUTPUTS`` values (a PatchGAN's map) is subsampled evenly to that many.
    They hold for any D whose outputs order samples, probabilities, logits (a sigmoid keeps the order) or a critic's
    scores, and add up over batches and processes. A fixed number of tensor operations for any k (the batches are
    padded to the longest), never a synchronisation with the device.

    Example:
        >>> rank_sums([torch.tensor([3.0, 1.0])], [torch.tensor([0.0, 1.0, 5.0])]).tolist()
        [[6.0, 3.5, 2.0, 1.0, 4.0, 6.0]]
        >>> rank_sums([torch.tensor([]), torch.tensor([0.5])], [torch.tensor([0.25]), torch.tensor([])]).tolist()
        [[0.0, 0.0, 0.0, 0.0, 0.0, 0.25], [0.0, 0.0, 0.0, 0.0, 0.5, 0.0]]
    """
    if len(d_real) != len(d_fake):
        raise ValueError(f"`d_real` and `d_fake` must list the same batches, got {len(d_real)} and {len(d_fake)}")
    real = [x.detach().reshape(-1) for x in d_real]
    fake = [x.detach().reshape(-1) for x in d_fake]
    batches = list(range(len(real)))
    return rank_sums_flat(
        torch.cat(real), [x.numel() for x in real], torch.cat(fake), [x.numel() for x in fake], (batches, batches)
    )


def rank_scores(ranks: Sequence[float], real_count: float, fake_count: float) -> list[float]:
    """The values of ``RANK_NAMES`` from summed :func:`rank_sums` and the counts of finite outputs (host floats).

    The AUC (pairs ordered correctly), the fake- and real-detection accuracies at the median output of the other
    side, and the gap between the mean raw outputs; NaN where a count is 0.

    Example:
        >>> rank_scores([6.0, 3.5, 2.0, 1.0, 4.0, 6.0], real_count=2, fake_count=3)
        [0.5833333333333334, 0.6666666666666666, 0.5, 0.0]
    """
    pairs, ordered, fake_below, real_above, real_sum, fake_sum = ranks
    return [
        ordered / pairs if pairs else math.nan,
        fake_below / fake_count if fake_count else math.nan,
        real_above / real_count if real_count else math.nan,
        real_sum / real_count - fake_sum / fake_count if real_count and fake_count else math.nan,
    ]


def gan_score_stats_batches(
    d_real: Sequence[Tensor | None], d_fake: Sequence[Tensor | None], from_logits: bool = False
) -> Tensor:
    """Sufficient statistics of several batches, a (k, ``NUM_STATS``) tensor (row i is batch i's).

    Example:
        >>> import torch
        >>> stats = gan_score_stats_batches([torch.tensor([0.9]), torch.tensor([0.4, 0.5])],
        ...                                 [torch.tensor([0.2]), None])
        >>> [[round(v, 3) for v in row] for row in stats[:, :6].tolist()]
        [[0.9, 1.0, 1.0, 0.2, 1.0, 1.0], [0.9, 2.0, 1.0, 0.0, 0.0, 0.0]]
    """
    if len(d_fake) != len(d_real):
        raise ValueError(
            f"`d_real` and `d_fake` must list the same number of batches, got {len(d_real)} and {len(d_fake)}"
        )
    return torch.stack([gan_score_stats(r, f, from_logits) for r, f in zip(d_real, d_fake)])


def stats_from_sums(real: Sequence[float], fake: Sequence[float]) -> list[float]:
    """The statistics of ``STAT_NAMES`` from the :func:`output_sums` rows of the real and the generated outputs.

    Plain Python (the monitor calls it on numbers already read back); works on tensors too.

    Example:
        >>> stats_from_sums([1.3, 2.0, 1.0, 0.0, 2.0], [0.2, 1.0, 0.0, 0.0, 2.0])
        [1.3, 2.0, 1.0, 0.2, 1.0, 1.0, 1.0, 0.0]
    """
    r_sum, r_finite, r_high, r_out, r_count = real
    f_sum, f_finite, f_high, f_out, f_count = fake
    non_finite = (r_count - r_finite) + (f_count - f_finite)
    return [r_sum, r_finite, r_high, f_sum, f_finite, f_finite - f_high, non_finite, r_out + f_out]


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
    real = None if d_real is None else _flat(d_real, "d_real")
    fake = None if d_fake is None else _flat(d_fake, "d_fake")
    device = (real if real is not None else fake).device  # type: ignore[union-attr]
    empty = torch.empty(0, device=device)
    sums = output_sums([empty if real is None else real, empty if fake is None else fake], from_logits)
    return torch.stack(stats_from_sums(sums[0], sums[1]))  # type: ignore[arg-type]


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
