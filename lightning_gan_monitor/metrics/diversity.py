"""torchmetrics ``Metric`` classes for the diversity metrics; the arithmetic is in ``functional.diversity``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_gan_monitor.functional import DIVERSITY_NAMES, diversity_scores, mode_coverage
from lightning_gan_monitor.functional.diversity import _check_factor, _check_k, _features

__all__ = ["Coverage", "Density", "DiversityRatio", "DiversityScores", "ModeCoverage", "NearDuplicateRate"]


class DiversityScores(Metric):
    """The four diversity values of generated samples against real ones, over all the samples given since ``reset``.

    Pairwise metrics are not sums over batches, so the states are the sample sets themselves (lists of feature
    matrices, ``dist_reduce_fx="cat"``): under DDP, ``compute`` gathers every process's samples and computes the values
    on the union, so every process gets the same numbers, those of one process holding all the samples. The cost is
    O(n^2 d) in the total number n of samples: keep the sets bounded (reset between evaluations) and modest.

    As input to ``update``:
        - ``fake`` (:class:`~torch.Tensor`): generated samples or their features, shape (n, ...), or None.
        - ``real`` (:class:`~torch.Tensor`): real samples or their features, shape (m, ...), or None.

    As output of ``compute``:
        - ``scores`` (:class:`dict`): ``diversity``, ``near_duplicates``, ``density`` and ``coverage``, each a
          scalar tensor (see :func:`~lightning_gan_monitor.functional.diversity_scores`; NaN where the sets are too
          small); with ``modes``, also ``mode_coverage`` (:func:`~lightning_gan_monitor.functional.mode_coverage`).

    Args:
        nearest_k: the k of density and coverage (5 in Naeem et al. 2020).
        near_duplicate_factor: a generated sample is a near-duplicate if its nearest generated neighbour is at most
            this times the real samples' median nearest-neighbour distance away.
        modes: also the per-mode view of coverage, ``mode_coverage`` (for low-dimensional data).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: for a bad ``nearest_k`` or ``near_duplicate_factor``.

    Example:
        >>> import torch
        >>> metric = DiversityScores(nearest_k=1)
        >>> metric.update(fake=torch.zeros(3, 1), real=torch.tensor([[0.0], [1.0]]))
        >>> metric.update(real=torch.tensor([[10.0], [11.0]]))
        >>> {k: v.item() for k, v in metric.compute().items()}
        {'diversity': 0.0, 'near_duplicates': 1.0, 'density': 2.0, 'coverage': 0.5}

    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    fake: list[Tensor]
    real: list[Tensor]

    def __init__(
        self, nearest_k: int = 5, near_duplicate_factor: float = 0.25, modes: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.modes = modes
        _check_k(nearest_k)
        _check_factor(near_duplicate_factor, "near_duplicate_factor")
        self.nearest_k = nearest_k
        self.near_duplicate_factor = float(near_duplicate_factor)
        self.add_state("fake", default=[], dist_reduce_fx="cat")
        self.add_state("real", default=[], dist_reduce_fx="cat")

    def update(self, fake: Tensor | None = None, real: Tensor | None = None) -> None:
        """Add generated and/or real samples (flattened to feature vectors)."""
        if fake is not None:
            self.fake.append(_features(fake, "fake"))
        if real is not None:
            self.real.append(_features(real, "real"))

    def _sets(self) -> tuple[Tensor, Tensor]:
        # After a sync the states are tensors (the gathered samples); an empty list state stays a list.
        if any(isinstance(state, list) and not state for state in (self.fake, self.real)):
            raise ValueError(
                f"{type(self).__name__} needs both generated and real samples; call `update(fake=..., real=...)` first"
            )
        return dim_zero_cat(self.fake), dim_zero_cat(self.real)

    def compute(self) -> Any:
        """The four values over everything accumulated (and gathered from every process)."""
        fake, real = self._sets()
        values = dict(zip(DIVERSITY_NAMES, diversity_scores(fake, real, self.nearest_k, self.near_duplicate_factor)))
        if self.modes:
            enough = real.shape[0] > self.nearest_k  # else NaN, as density and coverage
            values["mode_coverage"] = mode_coverage(fake, real, self.nearest_k) if enough else torch.tensor(math.nan)
        return values


class _OneDiversityValue(DiversityScores):
    _name = ""

    def compute(self) -> Tensor:
        """The value over everything accumulated (and gathered from every process)."""
        return super().compute()[self._name]


class DiversityRatio(_OneDiversityValue):
    """Mean pairwise distance of generated samples over that of real ones: near 1 healthy, near 0 collapsed.

    Samples accumulate as in :class:`DiversityScores` (exact under DDP); see
    :func:`~lightning_gan_monitor.functional.diversity_ratio`.

    Example:
        >>> import torch
        >>> metric = DiversityRatio()
        >>> metric.update(fake=torch.tensor([[1.0], [1.0], [2.5]]), real=torch.tensor([[0.0], [2.0], [4.0]]))
        >>> metric.compute()
        tensor(0.3750)

    """

    higher_is_better = True
    _name = "diversity"


class NearDuplicateRate(_OneDiversityValue):
    """Share of generated samples with a generated neighbour far closer than real samples' typical neighbour.

    Samples accumulate as in :class:`DiversityScores` (exact under DDP); see
    :func:`~lightning_gan_monitor.functional.near_duplicate_rate`.

    Example:
        >>> import torch
        >>> metric = NearDuplicateRate()
        >>> metric.update(fake=torch.tensor([[0.0], [0.0], [1.5], [3.0]]), real=torch.arange(4.0).unsqueeze(1))
        >>> metric.compute()
        tensor(0.5000)

    """

    higher_is_better = False
    _name = "near_duplicates"


class Density(_OneDiversityValue):
    """Density of Naeem et al. (2020): how many real k-NN balls a generated sample falls in, over k (about 1 healthy).

    Samples accumulate as in :class:`DiversityScores` (exact under DDP); see
    :func:`~lightning_gan_monitor.functional.density_coverage`.

    Example:
        >>> import torch
        >>> metric = Density(nearest_k=1)
        >>> metric.update(fake=torch.tensor([[0.5], [20.0]]), real=torch.tensor([[0.0], [1.0], [2.0], [10.0]]))
        >>> metric.compute()
        tensor(1.)

    """

    _name = "density"


class Coverage(_OneDiversityValue):
    """Coverage of Naeem et al. (2020): share of real samples whose k-NN ball holds a generated sample.

    Samples accumulate as in :class:`DiversityScores` (exact under DDP); see
    :func:`~lightning_gan_monitor.functional.density_coverage`.

    Example:
        >>> import torch
        >>> metric = Coverage(nearest_k=1)
        >>> metric.update(fake=torch.tensor([[0.5], [20.0]]), real=torch.tensor([[0.0], [1.0], [2.0], [10.0]]))
        >>> metric.compute()
        tensor(0.5000)

    """

    higher_is_better = True
    _name = "coverage"


class ModeCoverage(_OneDiversityValue):
    """Share of the real data's modes that generated samples reach: a per-mode view of coverage.

    For low-dimensional data: the modes are the connected components of the real samples' k-NN graph.

    Samples accumulate as in :class:`DiversityScores` (exact under DDP); see
    :func:`~lightning_gan_monitor.functional.mode_coverage`.

    Example:
        >>> import torch
        >>> metric = ModeCoverage(nearest_k=1)
        >>> metric.update(fake=torch.tensor([[0.5], [1.5]]), real=torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]]))
        >>> metric.compute()
        tensor(0.5000)

    """

    higher_is_better = True
    _name = "mode_coverage"

    def __init__(self, nearest_k: int = 5, near_duplicate_factor: float = 0.25, **kwargs: Any) -> None:
        super().__init__(nearest_k, near_duplicate_factor, modes=True, **kwargs)
