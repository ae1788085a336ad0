"""The Lightning callback: thin glue between the trainer's hooks and the plain objects in the other modules."""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

import torch

# The very functions both Lightning packages re-export (and whose rank both Trainers set): importing them from here
# keeps this module free of either package.
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_gan_monitor import tensorboard
from lightning_gan_monitor.diversity import Reservoir, pack_generators, unpack_generators
from lightning_gan_monitor.functional import (
    DIVERSITY_NAMES,
    SCORE_NAMES,
    STAT_NAMES,
    gan_score_stats_batches,
    host_to_device,
    non_finite_rows,
)
from lightning_gan_monitor.metrics import DiversityScores, GANScoreStats
from lightning_gan_monitor.report import ScoreHistory, collapsed_batches
from lightning_gan_monitor.rules import (
    CollapseDetector,
    Converged,
    Diagnosis,
    DiscriminatorDominates,
    FailureDetector,
    FailureMode,
    GeneratorDominates,
    ModeCollapse,
    NonFinite,
    Rule,
    RunSummary,
    StoppingReason,
    decide,
    format_message,
    regime_counts,
    summarize,
)

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from matplotlib.figure import Figure

__all__ = ["GANMonitorBase", "GANMonitorWarning"]

_OUT_OF_RANGE = STAT_NAMES.index("out_of_range")
#: Default `check_every_n_batches`: a check costs a fixed number of tensor operations (and one read-back from an
#: accelerator), whatever the number of batches it processes; benchmarks/RESULTS.md has the measurements.
DEFAULT_CHECK_EVERY = 20
#: Defaults of the mode-collapse rule, calibrated on healthy and collapsing runs (benchmarks/RESULTS.md).
DEFAULT_DIVERSITY_EVERY = 100
DEFAULT_COLLAPSE_DIVERSITY_BELOW = 0.2
DEFAULT_COLLAPSE_NEAR_DUPLICATES_ABOVE = 0.5
DEFAULT_COLLAPSE_PATIENCE = 3
_CONFIG_KEYS = (
    "patience",
    "from_logits",
    "smoothing",
    "d_dominates_generator_below",
    "d_dominates_discriminator_above",
    "g_dominates_generator_above",
    "check_finite",
    "non_finite_patience",
    "stop_on_convergence",
    "convergence_tolerance",
    "convergence_patience",
    "diversity_every_n_batches",
    "diversity_samples",
    "real_reservoir_size",
    "nearest_k",
    "near_duplicate_factor",
    "collapse_diversity_below",
    "collapse_near_duplicates_above",
    "collapse_coverage_below",
    "collapse_patience",
)


class GANMonitorWarning(UserWarning):
    """A failure diagnosis, or a problem with how the monitor is set up (filter it with ``warnings``)."""


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


def _probability(name: str, value: Any) -> None:
    _number(name, value, 0.0, 1.0, allow_none=False)


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _number(name: str, value: Any, low: float, high: float = float("inf"), allow_none: bool = True) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        where = f"in [{low:g}, {high:g}]" if high != float("inf") else f">= {low:g}"
        raise ValueError(f"`{name}` must be a number {where}{' or None' if allow_none else ''}, got {value!r}")


class _Features(nn.Module):
    """Identity with a ``num_features``: feeds features already extracted to torchmetrics' FID and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


class GANMonitorBase:
    r"""Watch a GAN while it trains: scores, failure diagnoses with remedies, and early stopping.

    This is the implementation shared by the callback of each Lightning package; use the one of yours:
    ``lightning_gan_monitor.GANMonitor`` (a ``pytorch_lightning.Callback``) or
    ``lightning_gan_monitor.lightning.GANMonitor`` (a ``lightning.pytorch.Callback``). This class imports neither.

    The monitor needs the discriminator's outputs on a real batch and on a generated batch. It takes them from
    what ``training_step`` returns (a mapping with ``d_real_key`` and ``d_fake_key``: free), or else probes the
    module every ``probe_every_n_batches``: it runs ``pl_module.<generator_attr>`` on latent vectors from its own
    seeded ``torch.Generator`` and ``pl_module.<discriminator_attr>`` on those samples and on the real batch,
    without touching the training (global RNG, batch-norm statistics and every other buffer are restored).

    From those outputs it keeps the generator score mean(D(G(z))), the discriminator score
    ½·mean(D(x)) + ½·mean(1 − D(G(z))) and the fake/real detection accuracies, logs them as ``gan/<score>`` to
    every logger, smooths them, and fires a rule when a failure condition has held for ``patience`` consecutive
    training batches. An ordinary batch costs next to nothing: the batches since the last check are processed
    together every ``check_every_n_batches``, on the module's device, with one read-back to the host; so training
    stops up to that many batches after a rule's patience ran out (the diagnosis names the exact batch).

    Args:
        patience: consecutive training batches a failure condition must hold before its rule fires.
        from_logits: the discriminator outputs logits (no sigmoid at its end); a sigmoid is applied first.
        on_failure: ``"stop"`` sets ``trainer.should_stop`` when a failure rule fires; ``"warn"`` only reports.
        source: where D's outputs come from: ``"auto"`` (the training step's outputs if they hold the keys, else
            probing), ``"outputs"`` or ``"probe"``.
        d_real_key: key of D's outputs on the real batch in the mapping returned by ``training_step``.
        d_fake_key: key of D's outputs on the generated batch in that mapping.
        probe_every_n_batches: when probing, probe once every this many training batches.
        probe_batch_size: latent vectors per probe; None uses the real batch's size.
        generator_attr: attribute of the LightningModule holding the generator (used when probing).
        discriminator_attr: attribute of the LightningModule holding the discriminator (used when probing).
        latent_dim: shape of one latent vector, an int (``(B, latent_dim)``) or a sequence such as ``[100, 1, 1]``;
            None reads ``pl_module.hparams.latent_dim``, then ``pl_module.latent_dim``.
        real_key: which part of a batch holds the real samples: an index into a tuple/list batch or a key into a
            dict batch; a tensor batch is used whole.
        seed: seed of the monitor's own random generator for the probe's latent vectors.
        smoothing: decay of the exponential moving average the rules look at (0: no smoothing; 0.9 averages over
            about 10 observations).
        d_dominates_generator_below: "discriminator dominates" needs the smoothed generator score below this...
        d_dominates_discriminator_above: ...and the smoothed discriminator score above this.
        g_dominates_generator_above: "generator dominates" when the smoothed generator score is above this.
        check_finite: stop (or warn) when D's outputs or the losses become NaN or infinite.
        non_finite_patience: consecutive batches with non-finite values before that rule fires.
        stop_on_convergence: also stop, as a success, once the smoothed fake-detection accuracy has stayed within
            ``convergence_tolerance`` of 0.5 for ``convergence_patience`` batches (D is no better than chance).
        convergence_tolerance: see ``stop_on_convergence``.
        convergence_patience: see ``stop_on_convergence``; None uses ``patience``.
        check_every_n_batches: process the batches seen since the last check and decide every this many batches
            (and on the first batch and at each log point); None is 20. A diagnosis names the exact batch at which
            a rule's patience ran out; training stops at the check, up to this many batches later.
        log_every_n_batches: log the scores, averaged over the batches since the last log, every this many
            batches; None follows ``Trainer(log_every_n_steps=...)``.
        verbose: report a success stop, set-up choices (which source is used) and the end-of-fit summary on rank zero.
        fake_key: key of generated samples in the mapping ``training_step`` returns, for the diversity metrics;
            without it the monitor runs ``pl_module.<generator_attr>`` on latent vectors from its own generator.
        feature_extractor: an ``nn.Module`` or callable mapping a batch of samples to (n, d) feature vectors, in
            which the diversity metrics measure distances (default: the flattened samples). With an ``nn.Module``
            the monitor also logs ``gan/fid`` and ``gan/kid`` through ``torchmetrics.image`` on the same features.
        diversity_every_n_batches: measure ``gan/diversity``, ``gan/near_duplicates``, ``gan/density`` and
            ``gan/coverage`` (O(n^2) in the samples) and apply the mode-collapse rule every this many batches; None
            turns them off.
        diversity_samples: generated samples per diversity check (the latest ones from ``training_step``, or one
            probe of that many).
        real_reservoir_size: most real samples kept (a uniform sample of the first epoch of each fit) as the
            diversity metrics' reference.
        nearest_k: the k of density and coverage (Naeem et al. 2020 use 5).
        near_duplicate_factor: a generated sample is a near-duplicate if its nearest generated neighbour is at most
            this times the real samples' median nearest-neighbour distance away.
        collapse_diversity_below: mode collapse when the diversity ratio is below this (None: not used)...
        collapse_near_duplicates_above: ...or the near-duplicate rate above this (None: not used)...
        collapse_coverage_below: ...or the coverage below this (None, the default: not used)...
        collapse_patience: ...at this many consecutive diversity checks.
        image_every_n_epochs: log a grid of ``G(z)`` for a fixed latent batch to TensorBoard as ``gan/samples`` every
            this many epochs (and real samples once as ``gan/real_samples``); None turns the grids off.
        image_shape: shape of one sample as an image, ``[C, H, W]`` or ``[H, W]``, for flat samples (e.g.
            ``[1, 8, 8]``); None shows (N, C, H, W) samples with C in 1, 3 or 4 and skips other data.
        num_image_samples: images per grid (the size of the fixed latent batch).
        image_range: sample values shown as black and white, ``(low, high)``; None scales each grid to its own range.

    Raises:
        ValueError: for an argument outside its allowed values (the message names it).

    Attributes:
        failure: None, or the :class:`~lightning_gan_monitor.FailureMode` that fired first.
        stopped_batch: None, or the number of training batches seen when the first rule fired.
        stopping_reason: a :class:`~lightning_gan_monitor.StoppingReason`.
        stopping_reason_message: the diagnosis text of the first rule that fired, or None.
        diagnoses: every rule that fired, in order, as :class:`~lightning_gan_monitor.rules.Diagnosis`.
        summary: after ``fit``, a :class:`~lightning_gan_monitor.rules.RunSummary`: batches in each regime, final
            scores and the verdict (also printed on rank zero when ``verbose``, and written to TensorBoard).

    Example:
        >>> from lightning_gan_monitor import GANMonitor
        >>> monitor = GANMonitor(patience=50, from_logits=True)
        >>> monitor.failure is None
        True
        >>> GANMonitor(patience=-3)
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be a positive integer, got -3

    """

    def __init__(
        self,
        patience: int = 100,
        from_logits: bool = False,
        on_failure: Literal["stop", "warn"] = "stop",
        source: Literal["auto", "outputs", "probe"] = "auto",
        d_real_key: str = "d_real",
        d_fake_key: str = "d_fake",
        probe_every_n_batches: int = 10,
        probe_batch_size: int | None = None,
        generator_attr: str = "generator",
        discriminator_attr: str = "discriminator",
        latent_dim: int | list[int] | None = None,
        real_key: int | str = 0,
        seed: int = 0,
        smoothing: float = 0.9,
        d_dominates_generator_below: float = 0.1,
        d_dominates_discriminator_above: float = 0.9,
        g_dominates_generator_above: float = 0.9,
        check_finite: bool = True,
        non_finite_patience: int = 1,
        stop_on_convergence: bool = False,
        convergence_tolerance: float = 0.05,
        convergence_patience: int | None = None,
        check_every_n_batches: int | None = None,
        log_every_n_batches: int | None = None,
        verbose: bool = True,
        fake_key: str = "fake",
        feature_extractor: nn.Module | Callable[[Tensor], Tensor] | None = None,
        diversity_every_n_batches: int | None = DEFAULT_DIVERSITY_EVERY,
        diversity_samples: int = 256,
        real_reservoir_size: int = 512,
        nearest_k: int = 5,
        near_duplicate_factor: float = 0.25,
        collapse_diversity_below: float | None = DEFAULT_COLLAPSE_DIVERSITY_BELOW,
        collapse_near_duplicates_above: float | None = DEFAULT_COLLAPSE_NEAR_DUPLICATES_ABOVE,
        collapse_coverage_below: float | None = None,
        collapse_patience: int = DEFAULT_COLLAPSE_PATIENCE,
        image_every_n_epochs: int | None = 10,
        image_shape: list[int] | None = None,
        num_image_samples: int = 64,
        image_range: tuple[float, float] | None = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        _positive_int("patience", patience)
        if not isinstance(from_logits, bool):
            raise ValueError(f"`from_logits` must be True or False, got {from_logits!r}")
        _choice("on_failure", on_failure, ("stop", "warn"))
        _choice("source", source, ("auto", "outputs", "probe"))
        for name, key in (("d_real_key", d_real_key), ("d_fake_key", d_fake_key)):
            if not isinstance(key, str) or not key:
                raise ValueError(f"`{name}` must be a non-empty string, got {key!r}")
        if d_real_key == d_fake_key:
            raise ValueError(f"`d_real_key` and `d_fake_key` must differ, both are {d_real_key!r}")
        _positive_int("probe_every_n_batches", probe_every_n_batches)
        _positive_int("probe_batch_size", probe_batch_size, allow_none=True)
        for name, attr in (("generator_attr", generator_attr), ("discriminator_attr", discriminator_attr)):
            if not isinstance(attr, str) or not attr.isidentifier():
                raise ValueError(f"`{name}` must be an attribute name, got {attr!r}")
        if latent_dim is not None:
            dims = [latent_dim] if isinstance(latent_dim, int) else latent_dim
            if (
                not isinstance(dims, Sequence)
                or not dims
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
            ):
                raise ValueError(
                    f"`latent_dim` must be a positive integer or a list of them (e.g. [100, 1, 1]), got {latent_dim!r}"
                )
        if isinstance(real_key, bool) or not isinstance(real_key, (int, str)):
            raise ValueError(f"`real_key` must be an int index or a string key into the batch, got {real_key!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"`seed` must be an integer, got {seed!r}")
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
            raise ValueError(f"`smoothing` must be a number in [0, 1), got {smoothing!r}")
        for name in ("d_dominates_generator_below", "d_dominates_discriminator_above", "g_dominates_generator_above"):
            _probability(name, locals()[name])
        if d_dominates_generator_below >= g_dominates_generator_above:
            raise ValueError(
                "`d_dominates_generator_below` must be lower than `g_dominates_generator_above`, got "
                f"{d_dominates_generator_below} >= {g_dominates_generator_above}: a generator score cannot mean "
                "that both networks dominate"
            )
        _positive_int("non_finite_patience", non_finite_patience)
        if (
            isinstance(convergence_tolerance, bool)
            or not isinstance(convergence_tolerance, (int, float))
            or not 0.0 < convergence_tolerance <= 0.5
        ):
            raise ValueError(
                "`convergence_tolerance` must be a number in (0, 0.5] (a distance from 0.5), got "
                f"{convergence_tolerance!r}"
            )
        _positive_int("convergence_patience", convergence_patience, allow_none=True)
        _positive_int("check_every_n_batches", check_every_n_batches, allow_none=True)
        _positive_int("log_every_n_batches", log_every_n_batches, allow_none=True)
        if not isinstance(fake_key, str) or not fake_key:
            raise ValueError(f"`fake_key` must be a non-empty string, got {fake_key!r}")
        if fake_key in (d_real_key, d_fake_key):
            raise ValueError(f"`fake_key` must differ from `d_real_key` and `d_fake_key`, got {fake_key!r}")
        if feature_extractor is not None and not callable(feature_extractor):
            raise ValueError(
                "`feature_extractor` must be an nn.Module or a callable mapping samples to (n, d) features, or None, "
                f"got {type(feature_extractor).__name__}"
            )
        _positive_int("diversity_every_n_batches", diversity_every_n_batches, allow_none=True)
        _positive_int("nearest_k", nearest_k)
        if isinstance(diversity_samples, bool) or not isinstance(diversity_samples, int) or diversity_samples < 2:
            raise ValueError(f"`diversity_samples` must be an integer >= 2, got {diversity_samples!r}")
        if (
            isinstance(real_reservoir_size, bool)
            or not isinstance(real_reservoir_size, int)
            or real_reservoir_size <= nearest_k
        ):
            raise ValueError(
                f"`real_reservoir_size` must be an integer above `nearest_k` ({nearest_k}), got {real_reservoir_size!r}"
            )
        _number("near_duplicate_factor", near_duplicate_factor, 0.0, allow_none=False)
        if near_duplicate_factor == 0:
            raise ValueError(f"`near_duplicate_factor` must be a positive number, got {near_duplicate_factor!r}")
        _number("collapse_diversity_below", collapse_diversity_below, 0.0)
        _number("collapse_near_duplicates_above", collapse_near_duplicates_above, 0.0, 1.0)
        _number("collapse_coverage_below", collapse_coverage_below, 0.0, 1.0)
        _positive_int("collapse_patience", collapse_patience)
        _positive_int("image_every_n_epochs", image_every_n_epochs, allow_none=True)
        if image_shape is not None and (
            not isinstance(image_shape, Sequence)
            or len(image_shape) not in (2, 3)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in image_shape)
            or (len(image_shape) == 3 and image_shape[0] not in (1, 3, 4))
        ):
            raise ValueError(
                "`image_shape` must be [C, H, W] with C in 1, 3, 4, or [H, W] (e.g. [1, 8, 8] for flat 8x8 samples), "
                f"got {image_shape!r}"
            )
        _positive_int("num_image_samples", num_image_samples)
        if image_range is not None and (
            not isinstance(image_range, Sequence)
            or len(image_range) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in image_range)
            or not image_range[0] < image_range[1]
        ):
            raise ValueError(f"`image_range` must be (low, high) with low < high, or None, got {image_range!r}")

        self.patience = patience
        self.from_logits = from_logits
        self.on_failure = on_failure
        self.source = source
        self.d_real_key = d_real_key
        self.d_fake_key = d_fake_key
        self.probe_every_n_batches = probe_every_n_batches
        self.probe_batch_size = probe_batch_size
        self.generator_attr = generator_attr
        self.discriminator_attr = discriminator_attr
        self.latent_dim = latent_dim
        self.real_key = real_key
        self.seed = seed
        self.smoothing = float(smoothing)
        self.d_dominates_generator_below = float(d_dominates_generator_below)
        self.d_dominates_discriminator_above = float(d_dominates_discriminator_above)
        self.g_dominates_generator_above = float(g_dominates_generator_above)
        self.check_finite = check_finite
        self.non_finite_patience = non_finite_patience
        self.stop_on_convergence = stop_on_convergence
        self.convergence_tolerance = float(convergence_tolerance)
        self.convergence_patience = convergence_patience
        self.check_every_n_batches = check_every_n_batches
        self.log_every_n_batches = log_every_n_batches
        self.verbose = verbose
        self.fake_key = fake_key
        self.feature_extractor = feature_extractor
        self.diversity_every_n_batches = diversity_every_n_batches
        self.diversity_samples = diversity_samples
        self.real_reservoir_size = real_reservoir_size
        self.nearest_k = nearest_k
        self.near_duplicate_factor = float(near_duplicate_factor)
        self.collapse_diversity_below = collapse_diversity_below
        self.collapse_near_duplicates_above = collapse_near_duplicates_above
        self.collapse_coverage_below = collapse_coverage_below
        self.collapse_patience = collapse_patience
        self.image_every_n_epochs = image_every_n_epochs
        self.image_shape = list(image_shape) if image_shape is not None else None
        self.num_image_samples = num_image_samples
        self.image_range = tuple(image_range) if image_range is not None else None

        self._rules = self._build_rules()
        self._collapse: CollapseDetector | None = None
        if diversity_every_n_batches is not None and (
            collapse_diversity_below is not None
            or collapse_near_duplicates_above is not None
            or collapse_coverage_below is not None
        ):
            rule = ModeCollapse(
                patience=collapse_patience,
                diversity_below=collapse_diversity_below,
                near_duplicates_above=collapse_near_duplicates_above,
                coverage_below=collapse_coverage_below,
                every=diversity_every_n_batches,
            )
            self._collapse = CollapseDetector(rule)
        self._diversity = DiversityScores(nearest_k=nearest_k, near_duplicate_factor=near_duplicate_factor)
        self._reservoir = Reservoir(real_reservoir_size, seed=seed)
        self._detector = FailureDetector(self._rules, self.smoothing)
        self._running = GANScoreStats(sync_on_compute=True)
        self._reset_run_state()

    # ------------------------------------------------------------------ configuration

    def _build_rules(self) -> list[Rule]:
        rules: list[Rule] = []
        if self.check_finite:
            rules.append(NonFinite(patience=self.non_finite_patience))
        rules.append(
            DiscriminatorDominates(
                patience=self.patience,
                generator_below=self.d_dominates_generator_below,
                discriminator_above=self.d_dominates_discriminator_above,
            )
        )
        rules.append(GeneratorDominates(patience=self.patience, generator_above=self.g_dominates_generator_above))
        if self.stop_on_convergence:
            rules.append(
                Converged(patience=self.convergence_patience or self.patience, tolerance=self.convergence_tolerance)
            )
        return rules

    def _config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    def _reset_run_state(self) -> None:
        self.failure: FailureMode | None = None
        self.stopped_batch: int | None = None
        self.stopping_reason = StoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None
        self.diagnoses: list[Diagnosis] = []
        self._batches_seen = 0
        self._since_observation = 0
        self._resolved_source: str | None = None
        self._probe_problem: str | None = None
        self._latent_shape: tuple[int, ...] | None = None
        self._rng: torch.Generator | None = None
        self._rng_state: Tensor | None = None
        self._out_of_range = torch.zeros(())
        self._loss_non_finite = torch.zeros((), dtype=torch.bool)
        self._check_every = self.check_every_n_batches or 1
        # D outputs (and returned losses) of the batches since the last check, processed together at the check
        self._pending: list[tuple[Tensor, Tensor, int, list[Tensor]]] = []
        self._log_every = self.log_every_n_batches or 0
        self._warned_no_tensorboard = False
        # what was logged at each log point, bounded (evenly thinned past 1000 points a tag), for `plot()`
        self._history = ScoreHistory()
        self.summary: RunSummary | None = None
        self._detector.reset()
        self._running.reset()
        # diversity metrics, the mode-collapse rule and the image grids
        self._fake_source: str | None = None  # "outputs", "probe", or "off"
        self._fakes: deque[Tensor] = deque()
        self._fakes_count = 0
        self._sample_rng: torch.Generator | None = None
        self._sample_rng_state: Tensor | None = None
        self._fixed_latent: Tensor | None = None
        self._real_images: Tensor | None = None
        self._real_grid_written = False
        self._saw_epoch_start = False
        self._reservoir_open = True
        self._reservoir.reset()
        self._diversity.reset()
        self._quality_metrics: tuple[Any, Any] | None = None
        self._no_collapse_event = CollapseDetector.no_event()
        self._said: set[str] = set()
        self._last_diversity = torch.full((len(DIVERSITY_NAMES),), float("nan"))
        if self._collapse is not None:
            self._collapse.reset()

    def __getstate__(self) -> dict[str, Any]:
        # `ddp_spawn` pickles the callback to its workers: its generators travel as bytes (see `pack_generators`)
        return pack_generators(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(unpack_generators(state))

    @property
    @override
    def state_key(self) -> str:
        # Lightning reads this around every hook of every batch (about 8 times a batch) and building it costs a
        # `repr` of a dict: build it once for each set of the attributes it depends on.
        keys = (self.d_real_key, self.d_fake_key, self.generator_attr, self.discriminator_attr)
        cached = self.__dict__.get("_state_key_cache")
        if cached is None or cached[0] != keys:
            cached = self._state_key_cache = (
                keys,
                self._generate_state_key(
                    d_real_key=self.d_real_key,
                    d_fake_key=self.d_fake_key,
                    generator_attr=self.generator_attr,
                    discriminator_attr=self.discriminator_attr,
                ),
            )
        return cached[1]

    @property
    def scores(self) -> dict[str, float]:
        """The latest smoothed scores (what the rules look at), as floats; NaN before the first observation."""
        return dict(zip(SCORE_NAMES, self._detector.scores.tolist()))

    @property
    def diversity(self) -> dict[str, float]:
        """The diversity values of the latest diversity check (``gan/diversity`` ...), as floats; NaN before one."""
        return dict(zip(DIVERSITY_NAMES, self._last_diversity.tolist()))

    # ------------------------------------------------------------------ hooks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # States created before a `ddp_spawn` live in shared memory; a fresh start per fit also avoids double counts.
        if stage == "fit":
            self._reset_run_state()
            monitors = [c for c in trainer.callbacks if isinstance(c, GANMonitorBase)]
            if len(monitors) > 1 and monitors[0] is self:
                rank_zero_warn(
                    f"{len(monitors)} GANMonitors in one Trainer all log under the same `gan/*` names, so their "
                    "logged values mix in every logger (each one's `failure`, `diagnoses`, stop decision and "
                    "checkpoint state stay its own). Keep one monitor per Trainer to read its logs.",
                    category=GANMonitorWarning,
                )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        self._detector.to(device)
        self._running.to(device)
        self._out_of_range = self._out_of_range.to(device)
        self._loss_non_finite = self._loss_non_finite.to(device)
        self._diversity.to(device)
        self._no_collapse_event = self._no_collapse_event.to(device)
        if self._collapse is not None:
            self._collapse.to(device)
        if self.check_every_n_batches is None:
            self._check_every = DEFAULT_CHECK_EVERY
        if self.log_every_n_batches is None:
            self._log_every = trainer.log_every_n_steps
        self._probe_problem = self._find_probe_problem(pl_module)
        if self.source == "probe":
            if self._probe_problem:
                raise ValueError(f"GANMonitor(source='probe') cannot probe this module: {self._probe_problem}")
            self._resolve_source("probe")
        if self._probe_problem is None:
            self._rng = torch.Generator(device=device)
            self._rng.manual_seed(self.seed)
            if self._rng_state is not None:
                try:
                    self._rng.set_state(self._rng_state)
                except RuntimeError:  # a checkpoint written on another kind of device
                    rank_zero_warn(
                        "GANMonitor could not restore its probe RNG from the checkpoint (written on another device "
                        f"type); it restarts from `seed={self.seed}`.",
                        category=GANMonitorWarning,
                    )
            self._sample_rng = torch.Generator(device=device)
            self._sample_rng.manual_seed(self.seed + 1)
            if self._sample_rng_state is not None:
                with contextlib.suppress(RuntimeError):  # written on another kind of device: start afresh
                    self._sample_rng.set_state(self._sample_rng_state)
            if self._fixed_latent is None and self.image_every_n_epochs is not None:
                # Drawn on the CPU, so the grids show the same latent vectors whatever device trains.
                cpu = torch.Generator().manual_seed(self.seed)
                self._fixed_latent = torch.randn((self.num_image_samples, *self._latent_shape), generator=cpu)
        if trainer.is_global_zero:
            self._write_layouts(trainer)

    @override
    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batches_seen += 1
        self._since_observation += 1
        pair = self._observe(pl_module, outputs, batch)
        if pair is not None:
            losses = self._returned_losses(outputs) if self.check_finite else []
            self._pending.append((*pair, self._since_observation, losses))
            self._since_observation = 0
        if self._real_images is None and self.image_every_n_epochs is not None:
            with contextlib.suppress(ValueError):  # no real samples found: the grid of real samples is skipped
                self._real_images = self._real_samples(batch)[: self.num_image_samples].detach().clone()
        collapse_event = None
        if self.diversity_every_n_batches is not None:
            self._saw_epoch_start = self._saw_epoch_start or batch_idx == 0
            self._collect_samples(pl_module, outputs, batch)
            if self._fake_source != "off" and self._batches_seen % self.diversity_every_n_batches == 0:
                collapse_event = self._measure_diversity(trainer, pl_module)
        log = self._log_every and self._batches_seen % self._log_every == 0
        if log or self._batches_seen == 1 or self._batches_seen % self._check_every == 0 or collapse_event is not None:
            self._check(trainer, collapse_event)
        if log:
            self._log_scores(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A uniform sample of one whole epoch is a uniform sample of the data: later epochs would only add repeats.
        if self._saw_epoch_start or self._reservoir.seen >= self.real_reservoir_size:
            self._reservoir_open = False
        every = self.image_every_n_epochs
        if every is not None and (trainer.current_epoch + 1) % every == 0 and trainer.is_global_zero:
            self._write_grids(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The batches since the last check are judged and counted too (a run's end rarely falls on a check).
        self._check(trainer, training_over=True)
        # The batches since the last log point (a stop usually falls between two) still reach the loggers.
        self._log_scores(trainer, pl_module, callback_metrics=False)
        self.summary = self._summarize()
        if trainer.is_global_zero:
            if self.verbose:
                rank_zero_info(str(self.summary))
            for writer in self._tensorboard_writers(trainer):
                tensorboard.write_summary(writer, str(self.summary), self._batches_seen)

    def _summarize(self) -> RunSummary:
        # One read-back at the end of fit; under DDP the regimes are rank zero's (each process smooths its own scores)
        regimes = regime_counts(self._rules, self._detector.regime_batches.tolist())
        collapsed = collapsed_batches(
            {tag: self._history.series(tag) for tag in self._history.tags},
            self.collapse_diversity_below,
            self.collapse_near_duplicates_above,
            self.collapse_coverage_below,
        )
        return summarize(
            self._batches_seen, regimes, self.scores, self.diagnoses, self.stopping_reason, collapsed_batches=collapsed
        )

    def plot(self) -> Figure:
        """The report figure of the last ``fit``, drawn from the monitor's own history (needs matplotlib).

        The same figure as :func:`lightning_gan_monitor.report.plot_run` draws from the logs, without reading them:
        the scores logged at each log point (at most 1000 points a score: past that they are thinned evenly),
        the failure bands at this monitor's thresholds, a marker at each diagnosis's batch, the summary and the
        diagnoses with their remedies. Save it with :func:`lightning_gan_monitor.report.save_report`.

        Raises:
            ImportError: without matplotlib (the message says how to install it).
            RuntimeError: before any score was logged.

        Example:
            >>> from lightning_gan_monitor import GANMonitor
            >>> GANMonitor().plot()
            Traceback (most recent call last):
            ...
            RuntimeError: GANMonitor.plot() has nothing to draw yet: call it after `trainer.fit(...)` has run ...

        """
        from lightning_gan_monitor.report import RunData, plot_runs

        if not self._history.tags:
            raise RuntimeError(
                "GANMonitor.plot() has nothing to draw yet: call it after `trainer.fit(...)` has run for at least "
                "one log point (`log_every_n_batches`, or the end of fit)"
            )
        run = RunData(
            name="GANMonitor",
            scalars={tag: self._history.series(tag) for tag in self._history.tags},
            diagnoses=[d.message for d in self.diagnoses],
            config=self._config(),
            summary=str(self.summary) if self.summary is not None else None,
        )
        return plot_runs([run])

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "batches_seen": self._batches_seen,
            "since_observation": self._since_observation,
            "detector": self._detector.state_dict(),
            "running": self._running.stats.detach().cpu(),
            "out_of_range": self._out_of_range.detach().cpu(),
            "rng_state": self._rng.get_state() if self._rng is not None else self._rng_state,
            "sample_rng_state": (
                self._sample_rng.get_state() if self._sample_rng is not None else self._sample_rng_state
            ),
            "fixed_latent": self._fixed_latent,
            "diversity": self._last_diversity.detach().cpu(),
            "collapse": self._collapse.state_dict() if self._collapse is not None else None,
            "failure": self.failure.value if self.failure else None,
            "stopped_batch": self.stopped_batch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
            "diagnoses": [{**asdict(d), "failure": d.failure.value if d.failure else None} for d in self.diagnoses],
            "config": self._config(),
            "history": self._history.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("config", {})
        changed = {k: (saved[k], v) for k, v in self._config().items() if k in saved and saved[k] != v}
        if changed:
            rank_zero_warn(
                "GANMonitor is resuming from a checkpoint written with other settings ("
                + ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                + "); the counters and smoothed scores carry on under the new settings.",
                category=GANMonitorWarning,
            )
        self._batches_seen = state_dict.get("batches_seen", 0)
        self._since_observation = state_dict.get("since_observation", 0)
        skipped = self._detector.load_state_dict(state_dict["detector"]) if "detector" in state_dict else []
        if skipped:
            rank_zero_warn(
                f"GANMonitor could not restore {', '.join(skipped)} from the checkpoint (its rules differ); "
                "those start afresh.",
                category=GANMonitorWarning,
            )
        if "running" in state_dict:
            self._running.stats = state_dict["running"].to(self._running.stats)
        self._out_of_range = state_dict.get("out_of_range", self._out_of_range)
        self._rng_state = state_dict.get("rng_state")
        self._sample_rng_state = state_dict.get("sample_rng_state")
        self._last_diversity = state_dict.get("diversity", self._last_diversity)
        fixed_latent = state_dict.get("fixed_latent")
        if fixed_latent is not None:
            self._fixed_latent = fixed_latent
        if self._collapse is not None and state_dict.get("collapse"):
            self._collapse.load_state_dict(state_dict["collapse"])
        failure = state_dict.get("failure")
        self.failure = FailureMode(failure) if failure else None
        self.stopped_batch = state_dict.get("stopped_batch")
        self.stopping_reason = StoppingReason(state_dict.get("stopping_reason", StoppingReason.NOT_STOPPED.value))
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
        self.diagnoses = [
            Diagnosis(**{**d, "failure": FailureMode(d["failure"]) if d["failure"] else None})
            for d in state_dict.get("diagnoses", [])
        ]
        if "history" in state_dict:
            self._history.load_state_dict(state_dict["history"])

    # ------------------------------------------------------------------ where D's outputs come from

    def _observe(self, pl_module: pl.LightningModule, outputs: Any, batch: Any) -> tuple[Tensor, Tensor] | None:
        """D's outputs on the batch's real and generated samples (detached), or None if there is nothing to observe."""
        if self._resolved_source is None:
            self._resolve_source(self._choose_source(outputs))
        if self._resolved_source == "outputs":
            if outputs is None or (isinstance(outputs, Mapping) and not outputs):
                return None  # a skipped step (Lightning allows returning None)
            d_real, d_fake = self._outputs_pair(outputs)
        else:
            if self._since_observation < self.probe_every_n_batches and self._batches_seen > 1:
                return None
            d_real, d_fake = self._probe(pl_module, batch)
        return d_real.detach(), d_fake.detach()  # no autograd graph outlives the step

    def _has_keys(self, outputs: Any) -> bool:
        return isinstance(outputs, Mapping) and self.d_real_key in outputs and self.d_fake_key in outputs

    def _choose_source(self, outputs: Any) -> str:
        if self._has_keys(outputs):
            return "outputs"
        if self.source == "outputs" or self._probe_problem is not None:
            got = (
                "nothing"  # manual optimisation turns a `None` return into `{}`
                if outputs is None or (isinstance(outputs, Mapping) and not outputs)
                else f"a mapping with keys {sorted(map(str, outputs))}"
                if isinstance(outputs, Mapping)
                else f"a {type(outputs).__name__}"
            )
            how_to_probe = "" if self.source == "outputs" else f", or let it probe the module: {self._probe_problem}"
            raise ValueError(
                f"GANMonitor cannot find the discriminator's outputs: `training_step` returned {got}. Return a dict "
                f"with '{self.d_real_key}' and '{self.d_fake_key}' (D's outputs on the real batch and on the "
                "generated batch, e.g. `return {'loss': loss, "
                f"'{self.d_real_key}': d_real.detach(), '{self.d_fake_key}': d_fake.detach()}}`), or set "
                f"`GANMonitor(d_real_key=..., d_fake_key=...)` to the keys you return{how_to_probe}."
            )
        return "probe"

    def _resolve_source(self, source: str) -> None:
        self._resolved_source = source
        if self.verbose:
            how = (
                f"from `training_step`'s outputs ('{self.d_real_key}', '{self.d_fake_key}')"
                if source == "outputs"
                else f"by probing `{self.generator_attr}` and `{self.discriminator_attr}` every "
                f"{self.probe_every_n_batches} batches"
            )
            rank_zero_info(f"GANMonitor: taking the discriminator's outputs {how}.")

    def _outputs_pair(self, outputs: Any) -> tuple[Tensor, Tensor]:
        if not self._has_keys(outputs):
            got = f"keys {sorted(map(str, outputs))}" if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"GANMonitor expected `training_step` to return a dict with '{self.d_real_key}' and "
                f"'{self.d_fake_key}' (as it did on the first batch), got {got}. Return them on every batch."
            )
        pair = outputs[self.d_real_key], outputs[self.d_fake_key]
        for key, value in zip((self.d_real_key, self.d_fake_key), pair):
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"GANMonitor expected `training_step`'s output '{key}' to be a tensor of discriminator "
                    f"outputs, got {type(value).__name__}"
                )
        return pair

    def _returned_losses(self, outputs: Any) -> list[Tensor]:
        """The floating tensors ``training_step`` returned besides D's outputs (losses), to check for NaN/inf."""
        if isinstance(outputs, Tensor):
            return [outputs.detach()] if outputs.is_floating_point() else []
        if not isinstance(outputs, Mapping):
            return []
        skip = (self.d_real_key, self.d_fake_key, self.fake_key)
        return [
            v.detach() for k, v in outputs.items() if k not in skip and isinstance(v, Tensor) and v.is_floating_point()
        ]

    def _find_probe_problem(self, pl_module: pl.LightningModule) -> str | None:
        """Why this module cannot be probed (a sentence naming what to set), or None."""
        for name, attr in (("generator_attr", self.generator_attr), ("discriminator_attr", self.discriminator_attr)):
            if not callable(getattr(pl_module, attr, None)):
                return (
                    f"the module has no callable `{attr}` attribute; set `GANMonitor({name}=...)` to the attribute "
                    "that holds it"
                )
        latent = self.latent_dim
        if latent is None:
            hparams = getattr(pl_module, "hparams", {})
            latent = hparams.get("latent_dim") if isinstance(hparams, Mapping) else None
            latent = latent if latent is not None else getattr(pl_module, "latent_dim", None)
        if latent is None:
            return (
                "the latent size is unknown; pass `GANMonitor(latent_dim=...)` or store it as "
                "`self.hparams.latent_dim` (e.g. via `self.save_hyperparameters()`) or `self.latent_dim`"
            )
        if isinstance(latent, int) and not isinstance(latent, bool) and latent > 0:
            self._latent_shape = (latent,)
        elif isinstance(latent, Sequence) and latent and all(isinstance(d, int) and d > 0 for d in latent):
            self._latent_shape = tuple(latent)
        else:
            return f"the module's latent size {latent!r} is not a positive integer; pass `GANMonitor(latent_dim=...)`"
        return None

    def _real_samples(self, batch: Any) -> Tensor:
        key = self.real_key
        if isinstance(batch, Tensor):
            return batch
        in_mapping = isinstance(batch, Mapping) and key in batch
        in_sequence = isinstance(batch, (list, tuple)) and isinstance(key, int) and -len(batch) <= key < len(batch)
        if not (in_mapping or in_sequence):
            if isinstance(batch, Mapping):
                what = f"a dict with keys {sorted(map(str, batch))}"
            elif isinstance(batch, (list, tuple)):
                what = f"a {type(batch).__name__} of length {len(batch)}"
            else:
                what = f"a {type(batch).__name__}"
            raise ValueError(
                f"GANMonitor cannot find the real samples in the batch ({what}) with `real_key={key!r}`; set "
                "`GANMonitor(real_key=...)` to the index (tuple/list batch) or key (dict batch) of the real samples"
            )
        sample = batch[key]
        if not isinstance(sample, Tensor):
            raise ValueError(
                f"GANMonitor expected the batch's `real_key={key!r}` entry to be a tensor of real samples, got "
                f"{type(sample).__name__}; set `GANMonitor(real_key=...)`"
            )
        return sample

    def _probe(self, pl_module: pl.LightningModule, batch: Any) -> tuple[Tensor, Tensor]:
        generator: nn.Module = getattr(pl_module, self.generator_attr)
        discriminator: nn.Module = getattr(pl_module, self.discriminator_attr)
        real = self._real_samples(batch)
        n = self.probe_batch_size or real.shape[0]
        assert self._latent_shape is not None and self._rng is not None
        param = next(generator.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        z = torch.randn((n, *self._latent_shape), generator=self._rng, device=self._rng.device, dtype=dtype)
        with _untouched(generator, discriminator, device=z.device):
            try:
                fake = generator(z)
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor's probe failed calling `pl_module.{self.generator_attr}` on latent vectors of shape "
                    f"{tuple(z.shape)}: {err}. Set `GANMonitor(latent_dim=...)` to the shape one latent vector has, "
                    f"or return '{self.d_real_key}' and '{self.d_fake_key}' from `training_step` instead."
                ) from err
            try:
                d_fake = discriminator(fake)
                d_real = discriminator(real)
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor's probe failed calling `pl_module.{self.discriminator_attr}` on generated samples "
                    f"of shape {tuple(fake.shape)} and real samples of shape {tuple(real.shape)}: {err}. Check "
                    "`GANMonitor(real_key=...)`, or return the discriminator's outputs from `training_step` instead."
                ) from err
        return d_real, d_fake

    # ------------------------------------------------------------------ decision

    def _flush(self) -> Tensor:
        """Process the pending batches (tensor ops only); returns the detector's events of that window."""
        if not self._pending:
            return torch.full((len(self._rules), 6), -1.0, device=self._out_of_range.device)
        reals, fakes, gaps, losses = zip(*self._pending)
        self._pending = []
        device = self._out_of_range.device
        stats = gan_score_stats_batches(reals, fakes, self.from_logits).to(device, non_blocking=True)
        non_finite = None
        if self.check_finite:
            non_finite = non_finite_rows(losses, device)
            non_finite[0] |= self._loss_non_finite
            self._loss_non_finite = torch.zeros_like(self._loss_non_finite)
        events = self._detector.update(stats, host_to_device(gaps, device), non_finite)
        self._running.update(stats.sum(0))
        self._out_of_range += stats[:, _OUT_OF_RANGE].sum()
        return events

    def _all_rules(self) -> list[Rule]:
        return [*self._rules, self._collapse.rule] if self._collapse is not None else self._rules

    def _check(self, trainer: pl.Trainer, collapse_event: Tensor | None = None, training_over: bool = False) -> None:
        events = self._flush()
        parts = [events.flatten()]
        if self._collapse is not None:  # the mode-collapse rule's row: the same on every rank (synced metrics)
            parts.append(self._no_collapse_event if collapse_event is None else collapse_event.to(events.device))
        packed = torch.cat([*parts, self._out_of_range.reshape(1)])
        # One collective and one read-back; every rank then takes the same decision from the same numbers.
        rows = trainer.strategy.all_gather(packed).reshape(-1, packed.numel()).tolist()
        if not self.from_logits and any(row[-1] > 0 for row in rows):
            raise ValueError(
                "GANMonitor: the discriminator's outputs are not probabilities: some are outside [0, 1]. If your "
                "discriminator returns logits (no sigmoid at the end, as with `BCEWithLogitsLoss`), pass "
                "`GANMonitor(from_logits=True)`."
            )
        rules = self._all_rules()
        per_rule = [[row[6 * r : 6 * r + 6] for r in range(len(rules))] for row in rows]
        index, process = decide(per_rule, rules)
        should_stop = False
        if index >= 0:
            batch, held, *scores = per_rule[process][index]
            should_stop = self._fire(trainer, rules[index], index, int(batch), int(held), scores, training_over)
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop

    def _fire(
        self,
        trainer: pl.Trainer,
        rule: Rule,
        index: int,
        batch: int,
        held_for: int,
        scores: list[float],
        training_over: bool = False,
    ) -> bool:
        if index < len(self._rules):
            self._detector.latch(index)
        elif self._collapse is not None:
            self._collapse.latch()
        named = dict(zip(rule.evidence, scores))
        note = "" if trainer.world_size == 1 else " (on at least one process)"
        message = format_message(rule, batch, held_for, named, note)
        diagnosis = Diagnosis(rule.failure, batch, held_for, named, message)
        self.diagnoses.append(diagnosis)
        # A rule found at the end of fit is reported, but it stopped nothing: training had already ended.
        stop = not training_over and (rule.failure is None or self.on_failure == "stop")
        if self.stopped_batch is None:
            self.failure = rule.failure
            self.stopped_batch = self._batches_seen
            self.stopping_reason_message = message
        if stop and self.stopping_reason is StoppingReason.NOT_STOPPED:
            self.stopping_reason = StoppingReason.CONVERGED if rule.failure is None else StoppingReason.FAILURE
        if training_over:
            action = "Training had already reached its end."
        elif stop:
            action = "Stopping training."
        else:
            action = "Training continues (`on_failure='warn'`)."
        if rule.failure is None:
            rank_zero_info(f"GANMonitor: {message} {action}")
        else:
            rank_zero_warn(f"GANMonitor: {message}\n{action}", category=GANMonitorWarning)
        if trainer.is_global_zero:
            for writer in self._tensorboard_writers(trainer):
                tensorboard.write_diagnosis(writer, message, self._batches_seen)
        return stop

    # ------------------------------------------------------------------ diversity, mode collapse, image grids

    def _say(self, key: str, message: str) -> None:
        """An info message, once per fit."""
        if key not in self._said:
            self._said.add(key)
            rank_zero_info(f"GANMonitor: {message}")

    def _collect_samples(self, pl_module: pl.LightningModule, outputs: Any, batch: Any) -> None:
        """Keep references to the latest generated samples and offer the real ones to the reservoir (no sync)."""
        if self._fake_source is None:
            self._fake_source = self._choose_fake_source(outputs, batch)
        if self._fake_source == "off":
            return
        if self._reservoir_open:
            self._reservoir.add(self._real_samples(batch))
        if self._fake_source == "outputs" and isinstance(outputs, Mapping) and self.fake_key in outputs:
            fake = outputs[self.fake_key]
            if not isinstance(fake, Tensor):
                raise TypeError(
                    f"GANMonitor expected `training_step`'s output '{self.fake_key}' to be a tensor of generated "
                    f"samples, got {type(fake).__name__}"
                )
            self._fakes.append(fake.detach())
            self._fakes_count += fake.shape[0]
            while self._fakes_count - self._fakes[0].shape[0] >= self.diversity_samples:
                self._fakes_count -= self._fakes.popleft().shape[0]

    def _choose_fake_source(self, outputs: Any, batch: Any) -> str:
        try:
            self._real_samples(batch)
        except ValueError as err:
            self._say("off", f"the diversity metrics and the mode-collapse rule are off: {err}.")
            return "off"
        if isinstance(outputs, Mapping) and self.fake_key in outputs:
            how = f"from `training_step`'s outputs ('{self.fake_key}')"
            source = "outputs"
        elif self._probe_problem is None:
            how = f"by running `{self.generator_attr}` on {self.diversity_samples} latent vectors of its own"
            source = "probe"
        else:
            self._say(
                "off",
                "the diversity metrics and the mode-collapse rule are off: there are no generated samples. Return "
                f"them from `training_step` as '{self.fake_key}' (or set `GANMonitor(fake_key=...)`), or let the "
                f"monitor run the generator: {self._probe_problem}.",
            )
            return "off"
        if self.verbose:
            self._say(
                "fakes",
                f"taking generated samples for the diversity metrics {how}, every "
                f"{self.diversity_every_n_batches} batches.",
            )
        return source

    def _generated_samples(self, pl_module: pl.LightningModule) -> Tensor:
        if self._fake_source == "outputs":
            if not self._fakes:
                return torch.empty(0)
            return torch.cat(list(self._fakes))[-self.diversity_samples :]
        generator: nn.Module = getattr(pl_module, self.generator_attr)
        assert self._latent_shape is not None and self._sample_rng is not None
        return self._run_generator(generator, self._latent((self.diversity_samples, *self._latent_shape), generator))

    def _latent(self, shape: tuple[int, ...], generator: nn.Module) -> Tensor:
        assert self._sample_rng is not None
        param = next(generator.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        rng = self._sample_rng
        return torch.randn(shape, generator=rng, device=rng.device, dtype=dtype)

    def _run_generator(self, generator: nn.Module, z: Tensor) -> Tensor:
        with _untouched(generator, device=z.device):
            try:
                return generator(z).detach()
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor failed calling `pl_module.{self.generator_attr}` on latent vectors of shape "
                    f"{tuple(z.shape)} for the diversity metrics or image grids: {err}. Set "
                    f"`GANMonitor(latent_dim=...)`, or return generated samples as '{self.fake_key}' from "
                    "`training_step`."
                ) from err

    def _extract(self, samples: Tensor) -> Tensor:
        """The samples as (n, d) feature vectors: flattened, or through ``feature_extractor``."""
        if self.feature_extractor is None:
            return samples.reshape(samples.shape[0], -1)
        extractor = self.feature_extractor
        modules = (extractor,) if isinstance(extractor, nn.Module) else ()
        with _untouched(*modules, device=samples.device):
            features = extractor(samples)
        if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] != samples.shape[0]:
            got = f"shape {tuple(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"`feature_extractor` must map a batch of n samples to an (n, d) tensor of features; on samples of "
                f"shape {tuple(samples.shape)} it returned {got}"
            )
        return features.detach()

    def _measure_diversity(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor | None:
        """Compute and log the diversity values (synced over processes); the collapse rule's event row, or None."""
        fake, real = self._generated_samples(pl_module), self._reservoir.samples()
        if fake.shape[0] < 2 or real.shape[0] < 2:
            return None
        fake_features, real_features = self._extract(fake), self._extract(real.to(fake.device))
        self._diversity.reset()
        self._diversity.update(fake=fake_features, real=real_features)
        values = torch.stack([self._diversity.compute()[name] for name in DIVERSITY_NAMES])
        self._last_diversity = values
        logged = {f"gan/{name}": v for name, v in zip(DIVERSITY_NAMES, values.unbind())}
        if isinstance(self.feature_extractor, nn.Module):
            logged.update(self._quality(fake_features, real_features))
        self._log_values(trainer, pl_module, logged)
        if self._collapse is None:
            return None
        return self._collapse.update(values, self._batches_seen)

    def _quality(self, fake: Tensor, real: Tensor) -> dict[str, Tensor]:
        """FID and KID of torchmetrics on the features already extracted (its own extractor is never run)."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        if self._quality_metrics is None:
            with warnings.catch_warnings():  # KID warns that it keeps every feature: here a bounded set
                warnings.simplefilter("ignore", UserWarning)
                fid = FrechetInceptionDistance(feature=_Features(fake.shape[1]), reset_real_features=True)
                kid = KernelInceptionDistance(feature=_Features(fake.shape[1]), subsets=20, reset_real_features=True)
            self._quality_metrics = (fid.to(fake.device), kid.to(fake.device))
        fid, kid = self._quality_metrics
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
        return {"gan/fid": fid.compute(), "gan/kid": kid_mean}

    def _log_values(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        values: dict[str, Tensor],
        callback_metrics: bool = True,
    ) -> None:
        """Log scalar tensors (one read-back) to every logger and the history; NaN/inf values are left out."""
        if not values:
            return
        host = dict(zip(values, torch.stack([v.float().reshape(()) for v in values.values()]).tolist()))
        host = {k: v for k, v in host.items() if math.isfinite(v)}
        self._history.add(self._batches_seen, host)
        step = self._batches_seen - 1  # Lightning logs `self.log` values of batch k at step k - 1
        for logger in trainer.loggers:
            logger.log_metrics(dict(host), step=step)
        if callback_metrics and host:  # Lightning allows `self.log` only in some hooks
            # Also in `trainer.callback_metrics`, for `ModelCheckpoint(monitor="gan/coverage", mode="max")` and the
            # progress bar.
            finite = {k: values[k].float() for k in host}
            pl_module.log_dict(finite, on_step=True, on_epoch=False, logger=False, batch_size=1)

    def _write_grids(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        writers = self._tensorboard_writers(trainer)
        if not writers:
            return
        if self._fixed_latent is None:
            self._say(
                "no grid",
                f"no image grids: the monitor cannot run the generator ({self._probe_problem or 'not set up'}).",
            )
            return
        fake = self._run_generator(getattr(pl_module, self.generator_attr), self._fixed_latent.to(pl_module.device))
        images = tensorboard.as_images(fake, self.image_shape)
        if images is None:
            self._say(
                "not images",
                f"no image grids: generated samples of shape {tuple(fake.shape[1:])} are not images (N, C, H, W) "
                "with C in 1, 3, 4; pass `GANMonitor(image_shape=[C, H, W])` to show them as images.",
            )
            return
        nrow = max(1, round(images.shape[0] ** 0.5))
        grids = [(tensorboard.SAMPLES_TAG, images)]
        if not self._real_grid_written and self._real_images is not None:
            grids.append((tensorboard.REAL_SAMPLES_TAG, tensorboard.as_images(self._real_images, self.image_shape)))
            self._real_grid_written = True
        for tag, batch in grids:
            if batch is None:
                continue
            grid = tensorboard.make_grid(batch, nrow=nrow, value_range=self.image_range)
            for writer in writers:
                tensorboard.write_grid(writer, tag, grid, self._batches_seen)

    # ------------------------------------------------------------------ logging

    def _log_scores(self, trainer: pl.Trainer, pl_module: pl.LightningModule, callback_metrics: bool = True) -> None:
        if self._running.update_count == 0:  # nothing observed since the last log (the same on every rank)
            return
        values = dict(zip((f"gan/{name}" for name in SCORE_NAMES), self._running.compute().unbind()))
        self._running.reset()
        self._log_values(trainer, pl_module, values, callback_metrics)
        if not callback_metrics:
            return
        if self.check_finite:
            losses = [v for k, v in trainer.callback_metrics.items() if "loss" in k and isinstance(v, Tensor)]
            if losses:
                bad = ~torch.stack([torch.isfinite(v).all() for v in losses]).all()
                self._loss_non_finite = self._loss_non_finite | bad.to(self._loss_non_finite.device)

    def _tensorboard_writers(self, trainer: pl.Trainer) -> list[Any]:
        writers = [logger.experiment for logger in trainer.loggers if _is_tensorboard_logger(logger)]
        if not writers and trainer.loggers and not self._warned_no_tensorboard:
            self._warned_no_tensorboard = True
            rank_zero_warn(
                "GANMonitor writes the score chart and the diagnosis text to TensorBoard only; with "
                f"{', '.join(type(logger).__name__ for logger in trainer.loggers)} it logs the scores alone. Add a "
                "`TensorBoardLogger` to see them.",
                category=GANMonitorWarning,
            )
        return writers

    def _write_layouts(self, trainer: pl.Trainer) -> None:
        for writer in self._tensorboard_writers(trainer):
            tensorboard.write_score_layout(writer)
            # the thresholds etc. of this run, so a report drawn from the logs shades the bands it really used
            tensorboard.write_config(writer, {**self._config(), "on_failure": self.on_failure}, self._batches_seen)


#: Where each Lightning package defines its ``TensorBoardLogger``.
_TENSORBOARD_LOGGER_MODULES = ("pytorch_lightning.loggers.tensorboard", "lightning.pytorch.loggers.tensorboard")


def _is_tensorboard_logger(logger: Any) -> bool:
    """Whether ``logger`` is a ``TensorBoardLogger`` of either Lightning package (or a subclass).

    Only packages already imported are looked at: a logger's class is imported before it exists, and checking never
    imports a package the user does not have.
    """
    types = tuple(sys.modules[name].TensorBoardLogger for name in _TENSORBOARD_LOGGER_MODULES if name in sys.modules)
    return isinstance(logger, types)


def __getattr__(name: str) -> Any:
    # `lightning_gan_monitor.callback.GANMonitor` is the 0.1 class, the `pytorch_lightning` one; imported on demand so
    # that `lightning` users, who import this module through `lightning_gan_monitor.lightning`, never load it.
    if name == "GANMonitor":
        from lightning_gan_monitor.pytorch_lightning import GANMonitor

        return GANMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _untouched(*modules: nn.Module, device: torch.device) -> Iterator[None]:
    """Run a probe without changing training: the global RNG, every buffer and the modules' modes are restored."""
    buffers = {id(b): b for module in modules for b in module.buffers()}
    saved = {key: b.detach().clone() for key, b in buffers.items()}
    modes = [(m, m.training) for module in modules for m in module.modules()]
    devices = [device] if device.type != "cpu" else []
    try:
        # Dropout and other random layers draw from the global RNG: fork it so training sees the same draws.
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            yield
    finally:
        for key, b in buffers.items():
            b.copy_(saved[key])
        for m, training in modes:
            m.training = training
