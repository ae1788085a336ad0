"""torchmetrics ``Metric`` classes for the GAN scores; the arithmetic is in ``functional.scores``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_gan_monitor.functional import (
    NUM_STATS,
    RANK_NAMES,
    RANK_STAT_NAMES,
    SCORE_NAMES,
    check_stats,
    gan_score_stats,
    gan_scores_from_stats,
    rank_sums,
)

__all__ = [
    "DiscriminatorScore",
    "FakeDetectionAccuracy",
    "GANRankScores",
    "GANScoreStats",
    "GANScores",
    "GeneratorScore",
    "RealDetectionAccuracy",
]


class GANScoreStats(Metric):
    """Accumulates the statistics of :func:`~lightning_gan_monitor.functional.gan_score_stats`.

    The building block of the other metrics, and what :class:`~lightning_gan_monitor.GANMonitor` uses, because it
    computes a batch's statistics once and needs them for both the running scores and its failure rules.

    As input to ``update``:
        - ``stats`` (:class:`~torch.Tensor`): a vector returned by ``gan_score_stats``.

    As output of ``compute``:
        - ``scores`` (:class:`~torch.Tensor`): the vector of the four scores ordered as ``SCORE_NAMES``, over every
          batch since the last ``reset``, summed over processes.

    Example:
        >>> import torch
        >>> from lightning_gan_monitor.functional import gan_score_stats
        >>> metric = GANScoreStats()
        >>> metric.update(gan_score_stats(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6])))
        >>> metric.update(gan_score_stats(torch.tensor([0.8]), torch.tensor([0.3])))
        >>> [round(v, 3) for v in metric.compute().tolist()]
        [0.367, 0.667, 0.667, 0.667]

    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    stats: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("stats", default=torch.zeros(NUM_STATS), dist_reduce_fx="sum")

    def update(self, stats: Tensor) -> None:
        """Add one batch's statistics."""
        self.stats += stats.to(self.stats)

    def compute(self) -> Tensor:
        """The four scores over everything accumulated."""
        return gan_scores_from_stats(self.stats)


class _FromOutputs(GANScoreStats):
    """Base of the metrics fed with discriminator outputs; ``_index`` picks the score that ``compute`` returns."""

    _index: int | None = None

    def __init__(self, from_logits: bool = False, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(from_logits, bool):
            raise TypeError(f"`from_logits` must be a bool, got {from_logits!r}")
        self.from_logits = from_logits
        self.validate_args = validate_args

    def _add(self, d_real: Tensor | None, d_fake: Tensor | None) -> None:
        stats = gan_score_stats(d_real, d_fake, self.from_logits)
        if self.validate_args:  # reads back to the host; construct with validate_args=False to skip
            check_stats(stats, self.from_logits)
        super().update(stats)

    def compute(self) -> Tensor:
        """The score over everything accumulated."""
        return super().compute()[self._index]


class GANScores(_FromOutputs):
    """All four GAN scores at once, from the discriminator's outputs on real and generated samples.

    As input to ``update``:
        - ``d_real`` (:class:`~torch.Tensor`): D's outputs on real samples, any shape.
        - ``d_fake`` (:class:`~torch.Tensor`): D's outputs on generated samples, any shape.

    As output of ``compute``:
        - ``scores`` (:class:`dict`): ``generator_score``, ``discriminator_score``, ``fake_detection_accuracy`` and
          ``real_detection_accuracy``, each a scalar tensor.

    Args:
        from_logits: the outputs are logits (apply a sigmoid first).
        validate_args: check in ``update`` that probabilities lie in [0, 1] (a host-device sync per call).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: in ``update``, if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> metric = GANScores(from_logits=True)
        >>> metric.update(torch.tensor([2.0, 3.0]), torch.tensor([-1.0, 0.5]))
        >>> {k: round(v.item(), 3) for k, v in metric.compute().items()}  # doctest: +NORMALIZE_WHITESPACE
        {'generator_score': 0.446, 'discriminator_score': 0.735, 'fake_detection_accuracy': 0.5,
         'real_detection_accuracy': 1.0}

    """

    def update(self, d_real: Tensor, d_fake: Tensor) -> None:  # type: ignore[override]
        """Add one batch of discriminator outputs."""
        self._add(d_real, d_fake)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """The four scores over everything accumulated."""
        return dict(zip(SCORE_NAMES, gan_scores_from_stats(self.stats).unbind(-1)))


class GeneratorScore(_FromOutputs):
    """Generator score, mean(D(G(z))): how convincing the discriminator finds generated samples. Ideal near 0.5.

    As input to ``update``:
        - ``d_fake`` (:class:`~torch.Tensor`): D's outputs on generated samples, any shape.

    As output of ``compute``:
        - ``score`` (:class:`~torch.Tensor`): scalar in [0, 1].

    Args:
        from_logits: the outputs are logits (apply a sigmoid first).
        validate_args: check in ``update`` that probabilities lie in [0, 1] (a host-device sync per call).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: in ``update``, if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> metric = GeneratorScore()
        >>> metric.update(torch.tensor([0.2, 0.6]))
        >>> metric.compute()
        tensor(0.4000)

    """

    higher_is_better = True
    _index = 0

    def update(self, d_fake: Tensor) -> None:  # type: ignore[override]
        """Add one batch of D's outputs on generated samples."""
        self._add(None, d_fake)


class DiscriminatorScore(_FromOutputs):
    """Discriminator score, ½·mean(D(x)) + ½·mean(1 − D(G(z))): how often D is right. Ideal near 0.5.

    As input to ``update``:
        - ``d_real`` (:class:`~torch.Tensor`): D's outputs on real samples, any shape.
        - ``d_fake`` (:class:`~torch.Tensor`): D's outputs on generated samples, any shape.

    As output of ``compute``:
        - ``score`` (:class:`~torch.Tensor`): scalar in [0, 1].

    Args:
        from_logits: the outputs are logits (apply a sigmoid first).
        validate_args: check in ``update`` that probabilities lie in [0, 1] (a host-device sync per call).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: in ``update``, if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> metric = DiscriminatorScore()
        >>> metric.update(torch.tensor([0.9, 0.4]), torch.tensor([0.2, 0.6]))
        >>> metric.compute()
        tensor(0.6250)

    """

    _index = 1

    def update(self, d_real: Tensor, d_fake: Tensor) -> None:  # type: ignore[override]
        """Add one batch of discriminator outputs."""
        self._add(d_real, d_fake)


class FakeDetectionAccuracy(_FromOutputs):
    """Share of generated samples the discriminator rates below 0.5. Ideal near 0.5.

    As input to ``update``:
        - ``d_fake`` (:class:`~torch.Tensor`): D's outputs on generated samples, any shape.

    As output of ``compute``:
        - ``accuracy`` (:class:`~torch.Tensor`): scalar in [0, 1].

    Args:
        from_logits: the outputs are logits (apply a sigmoid first).
        validate_args: check in ``update`` that probabilities lie in [0, 1] (a host-device sync per call).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: in ``update``, if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> metric = FakeDetectionAccuracy(from_logits=True)
        >>> metric.update(torch.tensor([-2.0, 1.0, -0.5, 3.0]))
        >>> metric.compute()
        tensor(0.5000)

    """

    _index = 2

    def update(self, d_fake: Tensor) -> None:  # type: ignore[override]
        """Add one batch of D's outputs on generated samples."""
        self._add(None, d_fake)


class RealDetectionAccuracy(_FromOutputs):
    """Share of real samples the discriminator rates at 0.5 or above.

    As input to ``update``:
        - ``d_real`` (:class:`~torch.Tensor`): D's outputs on real samples, any shape.

    As output of ``compute``:
        - ``accuracy`` (:class:`~torch.Tensor`): scalar in [0, 1].

    Args:
        from_logits: the outputs are logits (apply a sigmoid first).
        validate_args: check in ``update`` that probabilities lie in [0, 1] (a host-device sync per call).
        kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: in ``update``, if ``from_logits=False`` and an output is outside [0, 1].

    Example:
        >>> import torch
        >>> metric = RealDetectionAccuracy()
        >>> metric.update(torch.tensor([0.9, 0.4, 0.5, 0.8]))
        >>> metric.compute()
        tensor(0.7500)

    """

    higher_is_better = True
    _index = 3

    def update(self, d_real: Tensor) -> None:  # type: ignore[override]
        """Add one batch of D's outputs on real samples."""
        self._add(d_real, None)


class GANRankScores(Metric):
    """The values that need no threshold on D's outputs (``RANK_NAMES``): for any D, and the scores of a critic.

    The AUC (the share of (real, generated) pairs D orders correctly, a tie counting half), the fake- and
    real-detection accuracies at the median output of the other side, and the gap mean(D(x)) - mean(D(G(z))) in D's
    own units, over every batch since the last ``reset``. Pairs are formed within each ``update`` (one batch): the
    states are sums (:func:`~lightning_gan_monitor.functional.rank_sums`), so under DDP the AUC is exact over the
    pairs of each process's batch, summed over processes; pairs across processes are not formed.

    Example:
        >>> import torch
        >>> metric = GANRankScores()
        >>> metric.update(torch.tensor([3.0, 1.0]), torch.tensor([0.0, 1.0, 5.0]))
        >>> {k: round(v.item(), 3) for k, v in metric.compute().items()}
        {'auc': 0.583, 'fake_detection_at_median': 0.667, 'real_detection_at_median': 0.5, 'gap': 0.0}

    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    ranks: Tensor
    counts: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("ranks", default=torch.zeros(len(RANK_STAT_NAMES)), dist_reduce_fx="sum")
        self.add_state("counts", default=torch.zeros(2), dist_reduce_fx="sum")  # finite real, finite generated

    def update(self, d_real: Tensor, d_fake: Tensor) -> None:
        """Add one batch of D's outputs on real and on generated samples."""
        self.ranks += rank_sums([d_real], [d_fake])[0].to(self.ranks)
        finite = torch.stack([d_real.isfinite().sum(), d_fake.isfinite().sum()])
        self.counts += finite.to(self.counts)

    def compute(self) -> dict[str, Tensor]:
        """The values of ``RANK_NAMES`` over everything accumulated (NaN where a count is 0)."""
        pairs, ordered, fake_below, real_above, real_sum, fake_sum = self.ranks.unbind()
        real_n, fake_n = self.counts.unbind()
        values = (ordered / pairs, fake_below / fake_n, real_above / real_n, real_sum / real_n - fake_sum / fake_n)
        return dict(zip(RANK_NAMES, values))
