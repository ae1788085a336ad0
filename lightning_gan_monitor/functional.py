"""Pure tensor functions behind the GAN scores and the diversity metrics (torch only, no Lightning).

Every score is a ratio of sums, so the functions are split the torchmetrics way: ``gan_score_stats`` turns one
batch of discriminator outputs into a small vector of sufficient statistics (sums and counts, which add up across
batches and processes), and ``gan_scores_from_stats`` turns accumulated statistics into the four scores. The public
one-shot functions (``generator_score`` ...) chain the two.

The diversity metrics (``diversity_ratio``, ``near_duplicate_rate``, ``density`` and ``coverage``) compare a set of
generated samples with a set of real ones through pairwise distances: they are not sums over batches, so they take
whole sets (n x d feature matrices) and cost O(n^2 d).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DIVERSITY_NAMES",
    "STAT_NAMES",
    "coverage",
    "density",
    "density_coverage",
    "discriminator_score",
    "diversity_ratio",
    "diversity_scores",
    "fake_detection_accuracy",
    "gan_score_stats",
    "gan_score_stats_batches",
    "gan_scores",
    "gan_scores_from_stats",
    "generator_score",
    "near_duplicate_rate",
    "pairwise_distances",
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


# ---------------------------------------------------------------------------------------------- diversity

#: Order of the values returned by :func:`diversity_scores` (and logged as ``gan/<name>``).
DIVERSITY_NAMES: tuple[str, ...] = ("diversity", "near_duplicates", "density", "coverage")


def _features(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of samples or features, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (n, ...) with n >= 1 samples, got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}")
    # Distances in float32 at least: half precision loses the small nearest-neighbour distances.
    return x.detach().reshape(x.shape[0], -1).to(torch.promote_types(x.dtype, torch.float32))


def pairwise_distances(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Euclidean distances between the rows of ``x`` and of ``y`` (default ``x``); identical rows are exactly 0 apart.

    Samples of any shape are flattened to vectors. The distances come from ``|x|^2 + |y|^2 - 2 x.y`` (one matrix
    product, fast) in float64; whatever is left of a squared distance below 1e-10 of the squared norms is rounding,
    so it is set to 0: the ``<=`` tests of :func:`density_coverage` rely on identical points being exactly 0 apart.
    The result has the inputs' floating dtype (float32 at least); rounding to it keeps every ``<=`` between distances.

    Example:
        >>> pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[0., 5.],
                [5., 0.]])

    """
    x = _features(x, "x")
    y = x if y is None else _features(y, "y")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x64, y64 = x.double(), y.double()
    norms = (x64 * x64).sum(1).unsqueeze(1) + (y64 * y64).sum(1).unsqueeze(0)
    squared = norms - 2 * x64 @ y64.T
    squared = torch.where(squared <= 1e-10 * norms, 0.0, squared)
    return squared.sqrt().to(dtype)


def _mean_off_diagonal(distances: Tensor) -> Tensor:
    n = distances.shape[0]
    if n < 2:
        return torch.full((), float("nan"), device=distances.device)
    return distances.sum() / (n * (n - 1))


def _nearest_other(distances: Tensor) -> Tensor:
    """Each row's distance to its nearest other row of the same set (the diagonal is the point itself)."""
    n = distances.shape[0]
    if n < 2:
        return torch.full((n,), float("nan"), device=distances.device)
    eye = torch.eye(n, dtype=torch.bool, device=distances.device)
    return distances.masked_fill(eye, float("inf")).min(dim=1).values


def _spread_ratio(d_ff: Tensor, d_rr: Tensor) -> Tensor:
    spread_real = _mean_off_diagonal(d_rr)
    return torch.where(spread_real > 0, _mean_off_diagonal(d_ff) / spread_real, float("nan"))


def _duplicates(d_ff: Tensor, d_rr: Tensor, factor: float) -> Tensor:
    size = min(d_ff.shape[0], d_rr.shape[0])
    if size < 2:
        return torch.full((), float("nan"), device=d_ff.device)
    threshold = factor * _nearest_other(d_rr[:size, :size]).median()
    return (_nearest_other(d_ff[:size, :size]) <= threshold).float().mean()


def _density_coverage(d_rr: Tensor, d_rf: Tensor, nearest_k: int) -> tuple[Tensor, Tensor]:
    if d_rr.shape[0] <= nearest_k:
        nan = torch.full((), float("nan"), device=d_rr.device)
        return nan, nan
    # The k+1-th smallest distance of a row counts the point itself (0) first, as in Naeem et al.'s code; an
    # identical copy of the point is an ordinary neighbour, so duplicated real samples get a radius of 0.
    radii = d_rr.kthvalue(nearest_k + 1, dim=1).values
    inside = d_rf <= radii.unsqueeze(1)  # (m, n): generated sample j lies in the ball of real sample i
    return inside.sum(dim=0).float().mean() / nearest_k, inside.any(dim=1).float().mean()


def _check_factor(factor: float, name: str) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(f"`{name}` must be a positive number, got {factor!r}")


def _check_k(nearest_k: int) -> None:
    if isinstance(nearest_k, bool) or not isinstance(nearest_k, int) or nearest_k < 1:
        raise ValueError(f"`nearest_k` must be a positive integer, got {nearest_k!r}")


def _pair(fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    fake, real = _features(fake, "fake"), _features(real, "real")
    if fake.shape[1] != real.shape[1]:
        raise ValueError(
            f"`fake` and `real` must have the same number of features per sample, got {fake.shape[1]} and "
            f"{real.shape[1]}"
        )
    dtype = torch.promote_types(fake.dtype, real.dtype)
    return fake.to(dtype), real.to(dtype)


def diversity_ratio(fake: Tensor, real: Tensor) -> Tensor:
    """Mean pairwise distance between generated samples over that between real samples.

    Near 1 when the generated samples are as spread out as the real ones; near 0 when they are (nearly) all the same
    (mode collapse). It does not depend on the set sizes (a mean over pairs), so ``fake`` and ``real`` may differ in
    size. NaN if either set has fewer than 2 samples, or if the real samples are all identical.

    Args:
        fake: generated samples or their features, shape (n, ...).
        real: real samples or their features, shape (m, ...).

    Example:
        >>> real = torch.tensor([[0.0], [2.0], [4.0]])
        >>> diversity_ratio(torch.tensor([[1.0], [1.0], [1.0]]), real)
        tensor(0.)
        >>> diversity_ratio(torch.tensor([[1.0], [1.0], [2.5]]), real)
        tensor(0.3750)

    """
    fake, real = _pair(fake, real)
    return _spread_ratio(pairwise_distances(fake), pairwise_distances(real))


def near_duplicate_rate(fake: Tensor, real: Tensor, factor: float = 0.25) -> Tensor:
    """Share of generated samples whose nearest generated neighbour is far closer than real samples' typical one.

    A generated sample counts as a near-duplicate if the distance to its nearest other generated sample is at most
    ``factor`` times the median nearest-neighbour distance among real samples. Nearest-neighbour distances shrink as
    a set grows, so both are measured on sets of the same size, ``min(n, m)`` (the first rows of the larger set).
    Healthy: near 0; mode collapse: near 1. NaN if that size is below 2.

    Args:
        fake: generated samples or their features, shape (n, ...).
        real: real samples or their features, shape (m, ...).
        factor: how much closer than the real median counts as a duplicate, > 0.

    Raises:
        ValueError: if ``factor`` is not a positive number.

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> near_duplicate_rate(torch.tensor([[0.0], [0.0], [1.5], [3.0]]), real)
        tensor(0.5000)

    """
    _check_factor(factor, "factor")
    fake, real = _pair(fake, real)
    return _duplicates(pairwise_distances(fake), pairwise_distances(real), factor)


def density_coverage(fake: Tensor, real: Tensor, nearest_k: int = 5) -> tuple[Tensor, Tensor]:
    """Density and coverage of Naeem et al. (2020), "Reliable Fidelity and Diversity Metrics for Generative Models".

    Around each real sample is a ball reaching its ``nearest_k``-th nearest real neighbour. **Density** is the mean
    number of balls a generated sample falls in, divided by ``nearest_k``: about 1 when generated samples are spread
    like real ones, above 1 when they crowd into dense real regions, below 1 when they fall outside the real data.
    **Coverage** is the share of real samples whose ball holds at least one generated sample: near 1 when the
    generated samples reach every part of the real data, low when whole modes are missing. A point on a ball's
    boundary, or identical to its centre when the radius is 0 (duplicated real samples), counts as inside (``<=``).

    Args:
        fake: generated samples or their features, shape (n, ...).
        real: real samples or their features, shape (m, ...), with m > ``nearest_k``.
        nearest_k: the k of the k-nearest-neighbour balls (5 in the paper).

    Raises:
        ValueError: if ``nearest_k`` is not a positive integer or there are not more real samples than it.

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
        >>> density_coverage(torch.tensor([[0.5], [1.5]]), real, nearest_k=1)  # the mode near 11 is missed
        (tensor(2.), tensor(0.5000))

    """
    _check_k(nearest_k)
    fake, real = _pair(fake, real)
    if real.shape[0] <= nearest_k:
        raise ValueError(
            f"density and coverage need more real samples than `nearest_k`={nearest_k}, got {real.shape[0]}"
        )
    return _density_coverage(pairwise_distances(real), pairwise_distances(real, fake), nearest_k)


def density(fake: Tensor, real: Tensor, nearest_k: int = 5) -> Tensor:
    """Density of Naeem et al. (2020); see :func:`density_coverage`.

    Example:
        >>> density(torch.tensor([[0.5], [20.0]]), torch.tensor([[0.0], [1.0], [2.0], [10.0]]), nearest_k=1)
        tensor(1.)

    """
    return density_coverage(fake, real, nearest_k)[0]


def coverage(fake: Tensor, real: Tensor, nearest_k: int = 5) -> Tensor:
    """Coverage of Naeem et al. (2020); see :func:`density_coverage`.

    Example:
        >>> coverage(torch.tensor([[0.5], [20.0]]), torch.tensor([[0.0], [1.0], [2.0], [10.0]]), nearest_k=1)
        tensor(0.5000)

    """
    return density_coverage(fake, real, nearest_k)[1]


def diversity_scores(fake: Tensor, real: Tensor, nearest_k: int = 5, near_duplicate_factor: float = 0.25) -> Tensor:
    """The four diversity values at once, ordered as ``DIVERSITY_NAMES``; each distance matrix is computed once.

    Values that cannot be computed from sets this small are NaN (instead of raising): density and coverage need more
    real samples than ``nearest_k``, the others at least 2 samples on each side.

    Args:
        fake: generated samples or their features, shape (n, ...).
        real: real samples or their features, shape (m, ...).
        nearest_k: the k of :func:`density_coverage`.
        near_duplicate_factor: the ``factor`` of :func:`near_duplicate_rate`.

    Raises:
        ValueError: for a bad ``nearest_k`` or ``near_duplicate_factor``, or sets with different feature sizes.

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [10.0], [11.0]])  # two modes
        >>> fake = torch.zeros(3, 1)  # collapsed onto one point of the first mode
        >>> dict(zip(DIVERSITY_NAMES, diversity_scores(fake, real, nearest_k=1).tolist()))
        {'diversity': 0.0, 'near_duplicates': 1.0, 'density': 2.0, 'coverage': 0.5}

    """
    _check_k(nearest_k)
    _check_factor(near_duplicate_factor, "near_duplicate_factor")
    fake, real = _pair(fake, real)
    d_ff, d_rr = pairwise_distances(fake), pairwise_distances(real)
    density_, coverage_ = _density_coverage(d_rr, pairwise_distances(real, fake), nearest_k)
    values = [_spread_ratio(d_ff, d_rr), _duplicates(d_ff, d_rr, near_duplicate_factor), density_, coverage_]
    return torch.stack(values).float()
