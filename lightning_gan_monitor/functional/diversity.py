"""Diversity maths: pairwise distances between generated and real samples (torch only, no Lightning).

The diversity metrics (``diversity_ratio``, ``near_duplicate_rate``, ``density`` and ``coverage``) compare a set of
generated samples with a set of real ones through pairwise distances: they are not sums over batches, so they take
whole sets (n x d feature matrices) and cost O(n^2 d).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_gan_monitor.names import DIVERSITY_NAMES

__all__ = [
    "DIVERSITY_NAMES",
    "TWIN_FACTOR",
    "RealReference",
    "coverage",
    "density",
    "density_coverage",
    "diversity_against",
    "diversity_ratio",
    "diversity_scores",
    "movement",
    "near_duplicate_rate",
    "pairwise_distances",
    "real_reference",
    "twin_rate",
]


#: A twin lies within this fraction of the real samples' median nearest-neighbour distance of another sample: the
#: same output for another latent vector (a fresh or young generator's samples lie close together, never that close).
TWIN_FACTOR = 0.01


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


def _within(d_ff: Tensor, groups: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The mean distance of the pairs, each sample's nearest other one, and which have another (within ``groups``).

    Without ``groups``, every pair of the set; with them, pairs of the same group only. No host synchronisation.
    """
    n = d_ff.shape[0]
    if groups is None:
        pairs = ~torch.eye(n, dtype=torch.bool, device=d_ff.device)
    else:
        groups = groups.to(d_ff.device)
        pairs = (groups.unsqueeze(0) == groups.unsqueeze(1)).fill_diagonal_(False)
    mean = (d_ff * pairs).sum() / pairs.sum()  # NaN without a pair
    return mean, d_ff.masked_fill(~pairs, float("inf")).min(dim=1).values, pairs.any(dim=1)


def _share_within(nearest: Tensor, has_other: Tensor, threshold: Tensor | float) -> Tensor:
    """The share of the samples that have another one (in their group) whose nearest is within ``threshold``."""
    return ((nearest <= threshold) & has_other).sum() / has_other.sum()  # NaN when none has another


def _spread_ratio(d_ff: Tensor, d_rr: Tensor) -> Tensor:
    spread_real = _mean_off_diagonal(d_rr)
    return torch.where(spread_real > 0, _mean_off_diagonal(d_ff) / spread_real, float("nan"))


def _duplicates(d_ff: Tensor, d_rr: Tensor, factor: float) -> Tensor:
    size = min(d_ff.shape[0], d_rr.shape[0])
    if size < 2:
        return torch.full((), float("nan"), device=d_ff.device)
    threshold = factor * _nearest_other(d_rr[:size, :size]).median()
    return (_nearest_other(d_ff[:size, :size]) <= threshold).float().mean()


def _radii(d_rr: Tensor, nearest_k: int) -> Tensor:
    """Each real sample's distance to its ``nearest_k``-th nearest real neighbour, from the real-real distances."""
    # The k+1-th smallest distance of a row counts the point itself (0) first, as in Naeem et al.'s code; an
    # identical copy of the point is an ordinary neighbour, so duplicated real samples get a radius of 0.
    return d_rr.topk(nearest_k + 1, dim=1, largest=False).values[:, -1]  # the k+1-th smallest: faster than kthvalue


def _density_coverage(d_rr: Tensor, d_rf: Tensor, nearest_k: int) -> tuple[Tensor, Tensor]:
    if d_rr.shape[0] <= nearest_k:
        nan = torch.full((), float("nan"), device=d_rr.device)
        return nan, nan
    radii = _radii(d_rr, nearest_k)
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
    return diversity_against(fake, real_reference(real, nearest_k, fake.shape[0]), near_duplicate_factor)


class RealReference(NamedTuple):
    """What the diversity values need of a real set, computed once (:func:`real_reference`) and reused.

    A real set that does not change (the monitor's reservoir after its first epoch) needs its O(m^2) part, the
    real-real distances and what follows from them, only once; each diversity check then costs the generated side.
    """

    #: The real features, (m, d).
    real: Tensor
    #: Mean distance between two real samples.
    spread: Tensor
    #: Generated sets of this many samples are compared with the first ``size`` real samples for near-duplicates.
    fakes: int
    #: Median distance of each of the first ``min(fakes, m)`` real samples to its nearest other one among them.
    nearest_median: Tensor
    #: Each real sample's distance to its ``nearest_k``-th nearest real neighbour (None when m <= ``nearest_k``).
    radii: Tensor | None
    nearest_k: int


def real_reference(real: Tensor, nearest_k: int = 5, fakes: int | None = None) -> RealReference:
    """The real side of :func:`diversity_scores`, for generated sets of ``fakes`` samples (default: m).

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
        >>> reference = real_reference(real, nearest_k=1, fakes=3)
        >>> torch.equal(diversity_against(torch.zeros(3, 1), reference), diversity_scores(torch.zeros(3, 1), real, 1))
        True

    """
    _check_k(nearest_k)
    real = _features(real, "real")
    d_rr = pairwise_distances(real)
    m = real.shape[0]
    size = min(fakes if fakes is not None else m, m)
    nan = torch.full((), float("nan"), device=real.device)
    nearest_median = _nearest_other(d_rr[:size, :size]).median() if size >= 2 else nan
    radii = _radii(d_rr, nearest_k) if m > nearest_k else None
    return RealReference(real, _mean_off_diagonal(d_rr), size, nearest_median, radii, nearest_k)


def diversity_against(
    fake: Tensor,
    reference: RealReference,
    near_duplicate_factor: float = 0.25,
    groups: Tensor | None = None,
    with_twins: bool = False,
) -> Tensor:
    """The four diversity values (``DIVERSITY_NAMES``) of ``fake`` against a :func:`real_reference`.

    The same numbers as :func:`diversity_scores` on the reference's real set, at the cost of the generated side.

    With ``groups`` (one id per generated sample, e.g. the training batch it came from), the diversity ratio and the
    near-duplicate rate look only at pairs within a group: samples of one moment, so that a generator drawing one
    image that drifts from batch to batch is not read as diverse; a sample's nearest neighbour is then sought among
    as many others as a group holds, and so is a real sample's for the near-duplicate threshold (a reference made
    for ``fakes`` = the largest group). Density and coverage take every sample. ``with_twins`` appends a fifth value,
    :func:`twin_rate` at ``TWIN_FACTOR`` of the real median nearest-neighbour distance, from the same distances.

    Raises:
        ValueError: for a bad ``near_duplicate_factor``, or features of another size than the reference's.

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> drifting = torch.tensor([[0.0], [0.0], [2.0], [2.0]])  # two batches of one sample each
        >>> reference = real_reference(real, nearest_k=1, fakes=2)
        >>> diversity_against(drifting, reference, groups=torch.tensor([0, 0, 1, 1]))[:2]
        tensor([0., 1.])

    """
    _check_factor(near_duplicate_factor, "near_duplicate_factor")
    fake, real = _pair(fake, reference.real)
    group_size = fake.shape[0] if groups is None else int(torch.bincount(groups.cpu()).max())
    size = min(group_size, real.shape[0])
    if size >= 2 and size != reference.fakes:  # a reference made for another number of generated samples
        reference = real_reference(real, reference.nearest_k, group_size)
    d_ff = pairwise_distances(fake)
    nan = torch.full((), float("nan"), device=fake.device)
    mean_ff, _, _ = _within(d_ff, groups)
    # near-duplicates among as many generated samples as real ones set the threshold (all of them, per group)
    _, nearest, has_other = _within(d_ff[:size, :size], None) if groups is None else _within(d_ff, groups)
    spread = torch.where(reference.spread > 0, mean_ff / reference.spread, float("nan"))
    duplicates = _share_within(nearest, has_other, near_duplicate_factor * reference.nearest_median)
    twins = _share_within(nearest, has_other, TWIN_FACTOR * reference.nearest_median)
    if size < 2:
        duplicates = twins = nan
    if reference.radii is None:
        density_ = coverage_ = nan
    else:
        inside = pairwise_distances(real, fake) <= reference.radii.unsqueeze(1)  # (m, n): fake j in real i's ball
        density_ = inside.sum(dim=0).float().mean() / reference.nearest_k
        coverage_ = inside.any(dim=1).float().mean()
    values = torch.stack([spread, duplicates, density_, coverage_]).float()
    return torch.cat([values, twins.float().reshape(1)]) if with_twins else values


def twin_rate(fake: Tensor, threshold: Tensor | float, groups: Tensor | None = None) -> Tensor:
    """The share of samples with a twin: another sample (of its group, with ``groups``) within ``threshold``.

    With a threshold far below the real samples' nearest-neighbour distance (the monitor takes 1% of their median),
    a twin is the same output for another latent vector: what a collapsed generator draws, and a young one, whose
    samples lie close together but apart, does not.

    Example:
        >>> twin_rate(torch.tensor([[0.0], [0.0], [1.0], [2.0]]), 0.01)
        tensor(0.5000)
    """
    _, nearest, has_other = _within(pairwise_distances(_features(fake, "fake")), groups)
    return _share_within(nearest, has_other, threshold)


def movement(before: Tensor, after: Tensor, spread: Tensor) -> Tensor:
    """How far samples moved: the mean distance between ``before[i]`` and ``after[i]``, over ``spread``.

    Used on G's outputs for one fixed batch of latent vectors at two diversity checks: 0 for a generator that did not
    change at all (frozen parameters, a learning rate of 0), about 1 for one whose outputs moved as far as two
    real samples lie apart (``spread``: the real samples' mean pairwise distance, :attr:`RealReference.spread`).

    Example:
        >>> movement(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor(3.0 ** 0.5))
        tensor(1.)
    """
    before, after = _features(before, "before"), _features(after, "after")
    if before.shape != after.shape:
        raise ValueError(f"`before` and `after` must have the same shape, got {before.shape} and {after.shape}")
    return (after - before).norm(dim=1).mean() / spread
