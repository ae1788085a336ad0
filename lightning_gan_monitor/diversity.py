"""The diversity watch: real and generated samples, the diversity metrics, FID/KID and the mode-collapse rule.

Real samples fill a bounded :class:`Reservoir` during the first epoch; generated samples are the latest ones the
training step returned, or one batch of G on the monitor's own latent vectors. Every ``diversity_every_n_batches``
:class:`DiversityWatch` measures ``gan/diversity``, ``gan/near_duplicates``, ``gan/density`` and ``gan/coverage``
(a torchmetrics ``Metric``, exact under DDP) and feeds the mode-collapse rule. Nothing here imports Lightning.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_info
from torch import Tensor, nn

from lightning_gan_monitor.collapse import STILL_BELOW, CollapseTracker, ModeCollapse
from lightning_gan_monitor.diagnosis import not_learning, still_learning
from lightning_gan_monitor.functional.diversity import (
    TWIN_FACTOR,
    RealReference,
    diversity_against,
    movement,
    pairwise_distances,
    real_reference,
    twin_rate,
)
from lightning_gan_monitor.functional.modes import MODE_FEATURES, mode_labels, modes_reached
from lightning_gan_monitor.metrics import DiversityScores
from lightning_gan_monitor.names import DIVERSITY_NAMES, MODE_NAMES, QUALITY_NAMES
from lightning_gan_monitor.reservoir import Reservoir, host_to_device
from lightning_gan_monitor.rng import pack_generators, unpack_generators
from lightning_gan_monitor.rules import Firing
from lightning_gan_monitor.sources import real_samples, untouched

__all__ = ["DiversityWatch", "Reservoir", "host_to_device", "pack_generators", "unpack_generators"]


def _distributed() -> bool:
    """Whether this process is one of several (as torchmetrics decides whether to sync)."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _mean_over_processes(value: Tensor) -> Tensor:
    """The mean of a 0-d tensor over the processes (itself on one process): the same number on every rank."""
    if not _distributed():
        return value
    value = value.detach().clone().float()
    torch.distributed.all_reduce(value)
    return value / torch.distributed.get_world_size()


class _Features(nn.Module):
    """Identity with a ``num_features``: feeds features already extracted to torchmetrics' FID and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


class DiversityWatch:
    """Keeps the samples the diversity metrics compare, measures them, and tracks the mode-collapse rule.

    Args:
        config: the monitor's :class:`~lightning_gan_monitor.config.MonitorConfig` (``tracker`` is None when no
            collapse threshold is set).
    """

    def __init__(self, config: Any) -> None:
        c = self.config = config
        self.every = c.diversity_every_n_batches
        self.samples = c.diversity_samples
        self.feature_extractor = c.feature_extractor
        self.reservoir = Reservoir(c.real_reservoir_size, seed=c.seed)
        self.metric = DiversityScores(nearest_k=c.nearest_k, near_duplicate_factor=c.near_duplicate_factor)
        thresholds = (c.collapse_diversity_below, c.collapse_near_duplicates_above, c.collapse_coverage_below)
        self.tracker: CollapseTracker | None = None
        if any(t is not None for t in thresholds):
            collapse = ModeCollapse(
                c.collapse_patience,
                *thresholds,
                self.every,
                c.collapse_at_once_diversity_below,
                c.collapse_at_once_near_duplicates_above,
                critic=c.reading == "critic",  # its remedies are a critic's (no labels to flip)
                near_data_above=c.collapse_near_data_above,
                moving_above=c.collapse_moving_above,
            )
            self.tracker = CollapseTracker(collapse)
        self.reset()

    def reset(self, tracker: bool = False) -> None:
        """Forget every sample and measurement (a new fit), and with ``tracker`` the collapse rule's count."""
        if tracker and self.tracker is not None:
            self.tracker.reset()
        self.fake_source: str | None = None  # "outputs", "probe", or "off"
        self.fakes: deque[Tensor] = deque()
        self.fakes_count = 0
        self.reservoir_open = True
        self.saw_epoch_start = False
        self.reservoir.reset()
        self.metric.reset()
        self.quality: tuple[Any, Any] | None = None
        #: The real side, computed once per reservoir content: (its key, the reference, the modes or None).
        self._reference: tuple[Any, RealReference, tuple[Tensor, Tensor, int] | None] | None = None
        self.last = dict.fromkeys(DIVERSITY_NAMES, float("nan"))
        #: G's samples' features on the fixed latent vectors at the latest check (or the first batch), and at the
        #: first batch of the fit: what the movement and the variety G started with are measured against.
        self.previous: Tensor | None = None
        self.initial: Tensor | None = None
        #: The diversity values of G's samples at the first batch, measured at the first check (None before).
        self.initial_values: dict[str, float] | None = None
        self._started = False  # the collapse rule was told G's values at the first batch
        #: The share of G's samples at the latest check with a twin (:func:`~.functional.diversity.twin_rate`).
        self.twins = float("nan")
        self._prepared: tuple[Tensor, Tensor | None, Tensor, Tensor] | None = None  # see prepare()

    def to(self, device: torch.device) -> None:
        """Put the metric on ``device``."""
        self.metric.to(device)

    def _choose_source(self, batch: Any, has_fake: bool, probe_problem: str | None) -> None:
        """Where generated samples come from ("generator", "outputs" or "off"), said once.

        The generator itself whenever the monitor can run it: the same latent vectors at every check, so the values
        describe G at one moment and the distance its outputs moved says whether it learns. Else the samples
        ``training_step`` returned, measured within each batch (one moment too).
        """
        try:
            real_samples(batch, self.config.real_key)
        except ValueError as err:
            self.fake_source = "off"
            rank_zero_info(f"GANMonitor: the diversity metrics and the mode-collapse rule are off: {err}.")
            return
        if probe_problem is None:
            self.fake_source = "generator"
            how = f"by running the generator on {self.samples} fixed latent vectors of its own"
        elif has_fake:
            self.fake_source, how = "outputs", "from the generated samples the training step hands over, batch by batch"
        else:
            self.fake_source = "off"
            rank_zero_info(
                "GANMonitor: the diversity metrics and the mode-collapse rule are off: there are no generated "
                f"samples. Hand them over (`training_step`'s '{self.config.fake_key}', or `fake=` in a loop), or let "
                f"the monitor run the generator: {probe_problem}."
            )
            return
        if self.config.verbose:
            rank_zero_info(
                f"GANMonitor: taking generated samples for the diversity metrics {how}, every {self.every} batches."
            )

    def step(
        self,
        batch: Any,
        fake: Tensor | None,
        batch_idx: int,
        batches_seen: int,
        probe_problem: str | None,
        generate: Callable[[int], Tensor],
    ) -> bool:
        """One training batch: keep its samples (no sync); at a diversity check, take G's samples and say True.

        What needs only this process (G's samples, their features) is done here, so that a failure is known before
        any collective: the processes agree at the check's gather, then :meth:`measure` runs on every one or on none.

        Args:
            batch: the training batch (its real samples are at ``real_key``).
            fake: the generated samples ``training_step`` returned, or None.
            batch_idx: the batch's index in its epoch.
            batches_seen: training batches seen, this one included.
            probe_problem: why the monitor cannot run the generator, or None.
            generate: called with a number of samples for G's outputs on the monitor's fixed latent vectors.
        """
        if self.fake_source is None:
            self._choose_source(batch, fake is not None, probe_problem)
        if self.fake_source == "off":
            return False
        self.collect(real_samples(batch, self.config.real_key), fake, first_batch_of_epoch=batch_idx == 0)
        if self.fake_source == "generator" and self.previous is None:
            # G at the start (or at the first batch after a resume): what its variety and its movement are judged by
            self.previous = self._features(generate(self.samples))
            if self.initial is None and batches_seen == 1:
                self.initial = self.previous
        if batches_seen % self.every:
            return False
        self.prepare(generate)
        return True

    def turn_off(self) -> None:
        """No more diversity checks this fit (a fault the processes agreed on)."""
        self.fake_source, self._prepared = "off", None

    @property
    def off(self) -> bool:
        """Whether the diversity checks are off (turned off, or no samples to compare)."""
        return self.fake_source == "off"

    def collect(self, real: Tensor, fake: Tensor | None, first_batch_of_epoch: bool) -> None:
        """Offer the batch's real samples to the reservoir and keep a reference to its generated ones (no sync)."""
        self.saw_epoch_start = self.saw_epoch_start or first_batch_of_epoch
        if self.reservoir_open:
            self.reservoir.add(real)
        if fake is not None and self.fake_source == "outputs":
            self.fakes.append(fake)
            self.fakes_count += fake.shape[0]
            while self.fakes_count - self.fakes[0].shape[0] >= self.samples:
                self.fakes_count -= self.fakes.popleft().shape[0]

    def end_epoch(self) -> None:
        """A uniform sample of one whole epoch is a uniform sample of the data: later epochs only add repeats."""
        if self.saw_epoch_start or self.reservoir.seen >= self.reservoir.size:
            self.reservoir_open = False

    def _features(self, samples: Tensor) -> Tensor:
        """The samples as (n, d) feature vectors: flattened, or through ``feature_extractor``."""
        if self.feature_extractor is None:
            return samples.reshape(samples.shape[0], -1)
        extractor = self.feature_extractor
        modules = (extractor,) if isinstance(extractor, nn.Module) else ()
        with untouched(*modules, device=samples.device):
            features = extractor(samples)
        if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] != samples.shape[0]:
            got = f"shape {tuple(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"`feature_extractor` must map a batch of n samples to an (n, d) tensor of features; on samples of "
                f"shape {tuple(samples.shape)} it returned {got}"
            )
        return features.detach()

    def prepare(self, generate: Callable[[int], Tensor]) -> None:
        """Take this process's part of a diversity check: G's samples and the features of both sides (no collective)."""
        self._prepared = None
        groups = None
        if self.fake_source == "outputs":
            if not self.fakes:
                return
            if _distributed():  # one moment over the processes: the latest batch of each
                fake = self.fakes[-1]
            else:
                fake = torch.cat(list(self.fakes))
                groups = torch.cat([torch.full((f.shape[0],), i) for i, f in enumerate(self.fakes)])
                fake, groups = fake[-self.samples :], groups[-self.samples :]
        else:
            fake = generate(self.samples)
        real = self.reservoir.samples()
        if fake.shape[0] >= 2 and real.shape[0] >= 2:
            self._prepared = (fake, groups, self._features(fake), self._features(real.to(fake.device)))

    def measure(self) -> dict[str, float] | None:
        """The diversity values (and FID/KID) of :meth:`prepare`'s samples, synced over processes, as host floats.

        None if too few samples. With the generator as the source, also ``movement`` (how far G's outputs on the
        fixed latent vectors moved since the previous check, :func:`~.functional.diversity.movement`) and, at the
        first check, the diversity values of G's samples at the first batch (kept in :attr:`initial_values`). With
        the samples ``training_step`` returned, ``movement`` is how much more spread out they are pooled than within
        each batch (their diversity ratio over the pool less the within-batch one): 0 for a generator that does not
        change, the drift of its outputs between batches for one that does.
        """
        if self._prepared is None:
            return None
        (fake, groups, fake_features, real_features), self._prepared = self._prepared, None
        k = self.metric.nearest_k
        # the per-mode view, for low-dimensional data with enough real samples for its k-NN graph
        modes = fake_features.shape[1] <= MODE_FEATURES and real_features.shape[0] > k
        extra: list[Tensor] = []  # movement, then G's first samples' values (at the first check)
        initial = self.initial if self.initial_values is None else None
        if self.feature_extractor is None and not _distributed():
            # One process, fixed features: the real side (O(m^2)) is computed once per reservoir content.
            size = fake_features.shape[0] if groups is None else int(torch.bincount(groups).max())
            key = (self.reservoir.seen, size, real_features.device, real_features.dtype)
            if self._reference is None or self._reference[0] != key:
                reference = real_reference(real_features, k, size)
                self._reference = (key, reference, mode_labels(real_features, k) if modes else None)
            _, reference, labels = self._reference
            factor = self.metric.near_duplicate_factor
            *tensors, twins = diversity_against(fake_features, reference, factor, groups, with_twins=True)
            if labels is not None:
                tensors.append(modes_reached(fake_features, real_features, *labels))
            spread = reference.spread
            if groups is not None and int(groups.max()) > 0:  # several batches: how far G drifted between them
                pooled = pairwise_distances(fake_features).sum() / (fake.shape[0] * (fake.shape[0] - 1)) / spread
                drift = (pooled - tensors[0]).clamp(min=0)
            if initial is not None:
                extra_initial = diversity_against(initial, reference, factor)
        else:  # the Metric gathers every process's samples (exact under DDP)
            self.metric.reset()
            self.metric.modes = modes
            self.metric.update(fake=fake_features, real=real_features)
            computed = self.metric.compute()
            tensors = [computed[name] for name in (*DIVERSITY_NAMES, *(MODE_NAMES if modes else ()))]
            local = real_reference(real_features, k, fake_features.shape[0])
            spread = local.spread
            twins = _mean_over_processes(twin_rate(fake_features, TWIN_FACTOR * local.nearest_median))
            if initial is not None:
                self.metric.reset()
                self.metric.modes = False
                self.metric.update(fake=initial, real=real_features)
                computed = self.metric.compute()
                extra_initial = torch.stack([computed[name].float().reshape(()) for name in DIVERSITY_NAMES])
        moved = self.fake_source == "generator" and self.previous is not None
        if moved:
            extra.append(_mean_over_processes(movement(self.previous, fake_features, spread)))
        elif groups is not None and int(groups.max()) > 0:
            moved = True
            extra.append(drift)
        extra.append(twins)
        if initial is not None:
            extra += list(extra_initial)
        if self.fake_source == "generator":
            self.previous = fake_features
        if isinstance(self.feature_extractor, nn.Module):
            tensors += self._quality(fake_features, real_features)
        values = torch.stack([t.float().reshape(()) for t in [*tensors, *extra]]).tolist()  # one read-back
        values, extra_values = values[: len(tensors)], values[len(tensors) :]
        self.last = dict(zip(DIVERSITY_NAMES, values))
        named = dict(zip((*DIVERSITY_NAMES, *(MODE_NAMES if modes else ()), *QUALITY_NAMES), values))
        if moved:
            named["movement"] = extra_values.pop(0)
        self.twins = extra_values.pop(0)
        if initial is not None:
            self.initial_values = dict(zip(DIVERSITY_NAMES, extra_values))
        return named

    def judge(self, values: dict[str, float], batch: int, updates: int | None = None) -> Firing | None:
        """Feed the mode-collapse rule the values measured at ``batch`` (``updates``: the generator's so far)."""
        if self.tracker is None:
            return None
        if self.initial_values is not None and not self._started:
            self.tracker.start(self.initial_values)
            self._started = True
        return self.tracker.update({**values, "twins": self.twins}, batch, updates)

    @property
    def generator_still(self) -> bool:
        """Whether G's outputs on the fixed latent vectors did not move at all between the last two checks."""
        return self.tracker is not None and self.tracker.movement < STILL_BELOW

    @property
    def generator_learning(self) -> bool:
        """Whether G's outputs moved at the latest check as a learning generator's do (``collapse_moving_above``)."""
        tracker = self.tracker
        return tracker is not None and tracker.movement >= tracker.rule.moving_above * tracker.rule.every / 100

    def generator_note(self) -> tuple[str, tuple[str, ...]]:
        """What the latest check says of a generator that is not learning (a sentence and its remedies), or ``""``.

        Named beside a dominance: a generator whose outputs did not move, or whose few kinds of samples lie near no
        real sample, is not collapsed; the dominance is what keeps it from learning (or its optimizer does not step).
        """
        tracker = self.tracker
        if tracker is None:
            return "", ()
        if self.generator_learning:
            return still_learning(tracker.movement), ()
        return not_learning(tracker.not_learning, tracker.movement, tracker.movement < STILL_BELOW)

    @property
    def collapsed(self) -> dict[str, float] | None:
        """The latest diversity values if they showed a collapse beyond doubt, else None.

        A collapse (lost variety, or little variety in a generator that learns) whose values are the rule's "at once"
        ones, or whose samples nearly all have a near-duplicate (above ``at_once_near_duplicates_above``): then a
        dominance is diagnosed as mode collapse first. A generator that does not learn (the dominance's own cause)
        looks collapsed too, but is no collapse (:meth:`ModeCollapse.confirmed`).
        """
        tracker = self.tracker
        if tracker is None or tracker.held == 0:  # held counts confirmed collapses only (not a G that is not learning)
            return None
        nearly_all = self.last["near_duplicates"] > (tracker.rule.at_once_near_duplicates_above or 1.0)
        return dict(self.last) if tracker.rule.unambiguous(self.last) or nearly_all else None

    def _quality(self, fake: Tensor, real: Tensor) -> list[Tensor]:
        """FID and KID of torchmetrics on the features already extracted (its own extractor is never run)."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        if self.quality is None:
            with warnings.catch_warnings():  # KID warns that it keeps every feature: here a bounded set
                warnings.simplefilter("ignore", UserWarning)
                fid = FrechetInceptionDistance(feature=_Features(fake.shape[1]), reset_real_features=True)
                kid = KernelInceptionDistance(feature=_Features(fake.shape[1]), subsets=20, reset_real_features=True)
            self.quality = (fid.to(fake.device), kid.to(fake.device))
        fid, kid = self.quality
        fid.reset()
        kid.reset()
        for metric in (fid, kid):
            metric.update(real, real=True)
            metric.update(fake, real=False)
        kid.subset_size = min(fake.shape[0], real.shape[0])
        devices = [fake.device] if fake.device.type != "cpu" else []
        # KID draws its subsets from the global RNG: fork it so training sees the same draws.
        with torch.random.fork_rng(devices=devices, device_type=fake.device.type if devices else "cuda"):
            kid_mean, _ = kid.compute()
        return [fid.compute(), kid_mean]
