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

from lightning_gan_monitor.collapse import CollapseTracker, ModeCollapse
from lightning_gan_monitor.functional.diversity import RealReference, diversity_against, real_reference
from lightning_gan_monitor.functional.modes import MODE_FEATURES, mode_labels, modes_reached
from lightning_gan_monitor.metrics import DiversityScores
from lightning_gan_monitor.names import DIVERSITY_NAMES, MODE_NAMES, QUALITY_NAMES
from lightning_gan_monitor.rng import PicklesGenerators, pack_generators, unpack_generators
from lightning_gan_monitor.rules import Firing
from lightning_gan_monitor.sources import real_samples, untouched

__all__ = ["DiversityWatch", "Reservoir", "host_to_device", "pack_generators", "unpack_generators"]


def host_to_device(values: Tensor, device: torch.device) -> Tensor:
    """A small host tensor on ``device`` without a synchronisation (through pinned memory on CUDA).

    Example:
        >>> host_to_device(torch.tensor([1, 5]), torch.device("cpu"))
        tensor([1, 5])
    """
    if device.type == "cpu":
        return values
    if device.type == "cuda":
        values = values.pin_memory()
    return values.to(device, non_blocking=True)


class Reservoir(PicklesGenerators):
    """A uniform random sample of at most ``size`` of the rows seen so far (reservoir sampling, Algorithm R).

    Which rows enter is drawn on the host from the reservoir's own seeded ``torch.Generator`` (the global RNG is
    never used), so :meth:`add` never waits for the device: it costs a few host operations and, when a row enters,
    one indexed copy on the rows' device. Rows are copied (detached), so a batch is not kept alive.

    Args:
        size: the most rows kept.
        seed: seed of the reservoir's generator.

    Example:
        >>> reservoir = Reservoir(size=4, seed=0)
        >>> for start in range(0, 100, 10):
        ...     reservoir.add(torch.arange(start, start + 10.0).unsqueeze(1))
        >>> reservoir.samples().shape, reservoir.seen
        (torch.Size([4, 1]), 100)

    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`size` must be a positive integer, got {size!r}")
        self.size = size
        self.seed = seed
        self._rng = torch.Generator()
        self.reset()

    def reset(self) -> None:
        """Empty the reservoir and reseed its generator."""
        self._rng.manual_seed(self.seed)
        self.seen = 0
        self._data: Tensor | None = None

    @torch.no_grad()
    def add(self, rows: Tensor) -> None:
        """Offer every row of ``rows`` (shape (b, ...)); each enters with the probability Algorithm R gives it."""
        b = rows.shape[0]
        if b == 0:
            return
        if self._data is None:
            self._data = torch.empty((self.size, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        elif rows.shape[1:] != self._data.shape[1:]:
            raise ValueError(
                f"every real sample must have the same shape to be kept for the diversity metrics; got "
                f"{tuple(rows.shape[1:])} after {tuple(self._data.shape[1:])}"
            )
        t = torch.arange(self.seen, self.seen + b)
        # Row t enters at slot t while there is room, else at a uniform slot of [0, t] if that slot is < size.
        slot = torch.where(t < self.size, t, (torch.rand(b, generator=self._rng, dtype=torch.float64) * (t + 1)).long())
        keep = slot < self.size
        self.seen += b
        if not bool(keep.any()):  # a host tensor: no device synchronisation
            return
        # Algorithm R processes rows one by one, so of two rows drawing the same slot the later one stays.
        last = torch.full((self.size,), -1, dtype=torch.long).scatter_reduce(
            0, slot[keep], torch.arange(b)[keep], reduce="amax"
        )
        slots = torch.nonzero(last >= 0).squeeze(1)
        device = self._data.device
        self._data.index_copy_(
            0, host_to_device(slots, device), rows.detach()[host_to_device(last[slots], rows.device)].to(self._data)
        )

    def samples(self) -> Tensor:
        """The rows kept, shape (min(seen, size), ...); empty before the first :meth:`add`."""
        if self._data is None:
            return torch.empty(0)
        return self._data[: min(self.seen, self.size)]


def _distributed() -> bool:
    """Whether this process is one of several (as torchmetrics decides whether to sync)."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _Features(nn.Module):
    """Identity with a ``num_features``: feeds features already extracted to torchmetrics' FID and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


class DiversityWatch:
    """Keeps the samples the diversity metrics compare, measures them, and tracks the mode-collapse rule.

    The arguments are the monitor's of the same names (see :class:`~lightning_gan_monitor.callback.GANMonitorBase`);
    ``collapse`` is None when no collapse threshold is set.
    """

    def __init__(
        self,
        every: int,
        samples: int,
        reservoir_size: int,
        nearest_k: int,
        near_duplicate_factor: float,
        feature_extractor: nn.Module | Callable[[Tensor], Tensor] | None,
        collapse: ModeCollapse | None,
        seed: int,
        real_key: int | str,
        fake_key: str,
        generator_attr: str,
        verbose: bool,
    ) -> None:
        self.every = every
        self.real_key, self.fake_key, self.generator_attr, self.verbose = real_key, fake_key, generator_attr, verbose
        self.samples = samples
        self.feature_extractor = feature_extractor
        self.reservoir = Reservoir(reservoir_size, seed=seed)
        self.metric = DiversityScores(nearest_k=nearest_k, near_duplicate_factor=near_duplicate_factor)
        self.tracker = CollapseTracker(collapse) if collapse is not None else None
        self.reset()

    @classmethod
    def of(cls, arguments: Any) -> DiversityWatch:
        """The watch the monitor's arguments (attributes of the same names) configure, with its collapse rule."""
        a = arguments
        thresholds = (a.collapse_diversity_below, a.collapse_near_duplicates_above, a.collapse_coverage_below)
        every = a.diversity_every_n_batches
        collapse = None
        if any(t is not None for t in thresholds):
            at_once = (a.collapse_at_once_diversity_below, a.collapse_at_once_near_duplicates_above)
            critic = getattr(a, "output", None) == "critic"  # its remedies are a critic's (no labels to flip)
            collapse = ModeCollapse(a.collapse_patience, *thresholds, every, *at_once, critic=critic)
        samples = (a.diversity_samples, a.real_reservoir_size, a.nearest_k, a.near_duplicate_factor)
        names = (a.real_key, a.fake_key, a.generator_attr, a.verbose)
        return cls(every, *samples, a.feature_extractor, collapse, a.seed, *names)

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

    def to(self, device: torch.device) -> None:
        """Put the metric on ``device``."""
        self.metric.to(device)

    def _choose_source(self, batch: Any, has_fake: bool, probe_problem: str | None) -> None:
        """Where generated samples come from ("outputs", "probe" or "off"), said once."""
        try:
            real_samples(batch, self.real_key)
        except ValueError as err:
            self.fake_source = "off"
            rank_zero_info(f"GANMonitor: the diversity metrics and the mode-collapse rule are off: {err}.")
            return
        if has_fake:
            self.fake_source, how = "outputs", f"from `training_step`'s outputs ('{self.fake_key}')"
        elif probe_problem is None:
            self.fake_source = "probe"
            how = f"by running `{self.generator_attr}` on {self.samples} latent vectors of its own"
        else:
            self.fake_source = "off"
            rank_zero_info(
                "GANMonitor: the diversity metrics and the mode-collapse rule are off: there are no generated "
                f"samples. Return them from `training_step` as '{self.fake_key}' (or set `GANMonitor(fake_key=...)`), "
                f"or let the monitor run the generator: {probe_problem}."
            )
            return
        if self.verbose:
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
    ) -> dict[str, float] | None:
        """One training batch: keep its samples (no sync); at a diversity check, the values measured (else None).

        Args:
            batch: the training batch (its real samples are at ``real_key``).
            fake: the generated samples ``training_step`` returned, or None.
            batch_idx: the batch's index in its epoch.
            batches_seen: training batches seen, this one included.
            probe_problem: why the monitor cannot run the generator, or None.
            generate: called with a number of samples when the generated samples come from the generator.
        """
        if self.fake_source is None:
            self._choose_source(batch, fake is not None, probe_problem)
        if self.fake_source == "off":
            return None
        self.collect(real_samples(batch, self.real_key), fake, first_batch_of_epoch=batch_idx == 0)
        return None if batches_seen % self.every else self.measure(generate)

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

    def measure(self, generate: Callable[[int], Tensor]) -> dict[str, float] | None:
        """The diversity values (and FID/KID), synced over processes, as host floats; None if too few samples.

        Args:
            generate: called with a number of samples when the generated samples come from probing.
        """
        if self.fake_source == "outputs":
            fake = torch.cat(list(self.fakes))[-self.samples :] if self.fakes else torch.empty(0)
        else:
            fake = generate(self.samples)
        real = self.reservoir.samples()
        if fake.shape[0] < 2 or real.shape[0] < 2:
            return None
        fake_features, real_features = self._features(fake), self._features(real.to(fake.device))
        k = self.metric.nearest_k
        # the per-mode view, for low-dimensional data with enough real samples for its k-NN graph
        modes = fake_features.shape[1] <= MODE_FEATURES and real_features.shape[0] > k
        if self.feature_extractor is None and not _distributed():
            # One process, fixed features: the real side (O(m^2)) is computed once per reservoir content.
            key = (self.reservoir.seen, fake_features.shape[0], real_features.device, real_features.dtype)
            if self._reference is None or self._reference[0] != key:
                reference = real_reference(real_features, k, fake_features.shape[0])
                self._reference = (key, reference, mode_labels(real_features, k) if modes else None)
            _, reference, labels = self._reference
            tensors = list(diversity_against(fake_features, reference, self.metric.near_duplicate_factor))
            if labels is not None:
                tensors.append(modes_reached(fake_features, real_features, *labels))
        else:  # the Metric gathers every process's samples (exact under DDP)
            self.metric.reset()
            self.metric.modes = modes
            self.metric.update(fake=fake_features, real=real_features)
            computed = self.metric.compute()
            tensors = [computed[name] for name in (*DIVERSITY_NAMES, *(MODE_NAMES if modes else ()))]
        if isinstance(self.feature_extractor, nn.Module):
            tensors += self._quality(fake_features, real_features)
        values = torch.stack([t.float().reshape(()) for t in tensors]).tolist()  # one read-back
        self.last = dict(zip(DIVERSITY_NAMES, values))
        return dict(zip((*DIVERSITY_NAMES, *(MODE_NAMES if modes else ()), *QUALITY_NAMES), values))

    def judge(self, values: dict[str, float], batch: int, updates: int | None = None) -> Firing | None:
        """Feed the mode-collapse rule the values measured at ``batch`` (``updates``: the generator's so far)."""
        if self.tracker is None:
            return None
        return self.tracker.update([values[name] for name in DIVERSITY_NAMES], batch, updates)

    @property
    def collapsed(self) -> dict[str, float] | None:
        """The latest diversity values if they showed an unambiguous collapse (the rule's "at once"), else None.

        Only then is a dominance diagnosed as mode collapse first: a generator that does not learn (the dominance's
        own cause) also looks collapsed, with values short of those.
        """
        tracker = self.tracker
        return (
            dict(self.last)
            if tracker is not None and tracker.held > 0 and tracker.rule.unambiguous(self.last)
            else None
        )

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
