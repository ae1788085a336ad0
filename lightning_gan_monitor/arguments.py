"""The monitor's constructor arguments: their defaults, their documentation, and checks whose messages name them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Literal

from torch import Tensor, nn

from lightning_gan_monitor.rules import (
    Converged,
    CriticDominates,
    CriticFooled,
    DiscriminatorDominates,
    GeneratorDominates,
    NonFinite,
    Rule,
)

#: How D's outputs can be read (``output``).
OUTPUTS = ("auto", "probability", "logit", "critic")
#: A critic's dominance rule waits this many times ``patience`` unless ``critic_patience`` is given.
CRITIC_PATIENCE_FACTOR = 5


def resolve_output(output: str, from_logits: bool | str) -> str:
    """The reading of D's outputs that ``output`` and the older ``from_logits`` ask for together.

    Example:
        >>> resolve_output("auto", True), resolve_output("critic", "auto")
        ('logit', 'critic')
        >>> resolve_output("critic", True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `output='critic'` and `from_logits=True` disagree: pass `output` alone ...
    """
    if from_logits == "auto":
        return output
    implied = "logit" if from_logits else "probability"
    if output not in ("auto", implied):
        raise ValueError(
            f"`output={output!r}` and `from_logits={from_logits!r}` disagree: pass `output` alone "
            f"(`from_logits={from_logits!r}` is `output={implied!r}`)"
        )
    return implied


__all__ = ["MonitorArguments", "check_arguments"]


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


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first argument of ``GANMonitor`` outside its allowed values.

    Example:
        >>> check_arguments({"patience": -3})
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be a positive integer, got -3

    """
    a = SimpleNamespace(**arguments)
    _positive_int("patience", a.patience)
    if not isinstance(a.from_logits, bool) and a.from_logits != "auto":
        raise ValueError(f"`from_logits` must be True, False or 'auto', got {a.from_logits!r}")
    _choice("output", a.output, OUTPUTS)
    resolve_output(a.output, a.from_logits)
    _choice("on_failure", a.on_failure, ("stop", "warn"))
    _choice("source", a.source, ("auto", "outputs", "probe"))
    for name, key in (("d_real_key", a.d_real_key), ("d_fake_key", a.d_fake_key)):
        if not isinstance(key, str) or not key:
            raise ValueError(f"`{name}` must be a non-empty string, got {key!r}")
    if a.d_real_key == a.d_fake_key:
        raise ValueError(f"`d_real_key` and `d_fake_key` must differ, both are {a.d_real_key!r}")
    _positive_int("probe_every_n_batches", a.probe_every_n_batches)
    _positive_int("probe_batch_size", a.probe_batch_size, allow_none=True)
    for name, attr in (("generator_attr", a.generator_attr), ("discriminator_attr", a.discriminator_attr)):
        if not isinstance(attr, str) or not attr.isidentifier():
            raise ValueError(f"`{name}` must be an attribute name, got {attr!r}")
    if a.latent_dim is not None:
        dims = [a.latent_dim] if isinstance(a.latent_dim, int) else a.latent_dim
        if (
            not isinstance(dims, Sequence)
            or not dims
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)
        ):
            raise ValueError(
                f"`latent_dim` must be a positive integer or a list of them (e.g. [100, 1, 1]), got {a.latent_dim!r}"
            )
    if a.condition_key is not None and (
        isinstance(a.condition_key, bool)
        or not isinstance(a.condition_key, (int, str))
        or a.condition_key == a.real_key
    ):
        raise ValueError(
            "`condition_key` must be None, or an int index or a string key into the batch other than `real_key`, got "
            f"{a.condition_key!r}"
        )
    if isinstance(a.real_key, bool) or not isinstance(a.real_key, (int, str)):
        raise ValueError(f"`real_key` must be an int index or a string key into the batch, got {a.real_key!r}")
    if isinstance(a.seed, bool) or not isinstance(a.seed, int):
        raise ValueError(f"`seed` must be an integer, got {a.seed!r}")
    if isinstance(a.smoothing, bool) or not isinstance(a.smoothing, (int, float)) or not 0.0 <= a.smoothing < 1.0:
        raise ValueError(f"`smoothing` must be a number in [0, 1), got {a.smoothing!r}")
    for name in ("d_dominates_generator_below", "d_dominates_discriminator_above", "g_dominates_generator_above"):
        _probability(name, getattr(a, name))
    if a.d_dominates_generator_below >= a.g_dominates_generator_above:
        raise ValueError(
            "`d_dominates_generator_below` must be lower than `g_dominates_generator_above`, got "
            f"{a.d_dominates_generator_below} >= {a.g_dominates_generator_above}: a generator score cannot mean "
            "that both networks dominate"
        )
    _probability("d_dominates_auc_above", a.d_dominates_auc_above)
    _probability("d_dominates_gap_within", a.d_dominates_gap_within)
    _probability("g_dominates_auc_below", a.g_dominates_auc_below)
    if a.g_dominates_auc_below >= a.d_dominates_auc_above:
        raise ValueError(
            "`g_dominates_auc_below` must be lower than `d_dominates_auc_above`, got "
            f"{a.g_dominates_auc_below} >= {a.d_dominates_auc_above}"
        )
    _positive_int("critic_patience", a.critic_patience, allow_none=True)
    _positive_int("non_finite_patience", a.non_finite_patience)
    if (
        isinstance(a.convergence_tolerance, bool)
        or not isinstance(a.convergence_tolerance, (int, float))
        or not 0.0 < a.convergence_tolerance <= 0.5
    ):
        raise ValueError(
            "`convergence_tolerance` must be a number in (0, 0.5] (a distance from 0.5), got "
            f"{a.convergence_tolerance!r}"
        )
    _positive_int("convergence_patience", a.convergence_patience, allow_none=True)
    _positive_int("check_every_n_batches", a.check_every_n_batches, allow_none=True)
    _positive_int("log_every_n_batches", a.log_every_n_batches, allow_none=True)
    if not isinstance(a.fake_key, str) or not a.fake_key:
        raise ValueError(f"`fake_key` must be a non-empty string, got {a.fake_key!r}")
    if a.fake_key in (a.d_real_key, a.d_fake_key):
        raise ValueError(f"`fake_key` must differ from `d_real_key` and `d_fake_key`, got {a.fake_key!r}")
    if a.feature_extractor is not None and not callable(a.feature_extractor):
        raise ValueError(
            "`feature_extractor` must be an nn.Module or a callable mapping samples to (n, d) features, or None, "
            f"got {type(a.feature_extractor).__name__}"
        )
    _positive_int("diversity_every_n_batches", a.diversity_every_n_batches, allow_none=True)
    _positive_int("nearest_k", a.nearest_k)
    if isinstance(a.diversity_samples, bool) or not isinstance(a.diversity_samples, int) or a.diversity_samples < 2:
        raise ValueError(f"`diversity_samples` must be an integer >= 2, got {a.diversity_samples!r}")
    if (
        isinstance(a.real_reservoir_size, bool)
        or not isinstance(a.real_reservoir_size, int)
        or a.real_reservoir_size <= a.nearest_k
    ):
        raise ValueError(
            f"`real_reservoir_size` must be an integer above `nearest_k` ({a.nearest_k}), got {a.real_reservoir_size!r}"
        )
    _number("near_duplicate_factor", a.near_duplicate_factor, 0.0, allow_none=False)
    if a.near_duplicate_factor == 0:
        raise ValueError(f"`near_duplicate_factor` must be a positive number, got {a.near_duplicate_factor!r}")
    _number("collapse_diversity_below", a.collapse_diversity_below, 0.0)
    _number("collapse_near_duplicates_above", a.collapse_near_duplicates_above, 0.0, 1.0)
    _number("collapse_coverage_below", a.collapse_coverage_below, 0.0, 1.0)
    _positive_int("collapse_patience", a.collapse_patience)
    _positive_int("image_every_n_epochs", a.image_every_n_epochs, allow_none=True)
    if a.image_shape is not None and (
        not isinstance(a.image_shape, Sequence)
        or len(a.image_shape) not in (2, 3)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in a.image_shape)
        or (len(a.image_shape) == 3 and a.image_shape[0] not in (1, 3, 4))
    ):
        raise ValueError(
            "`image_shape` must be [C, H, W] with C in 1, 3, 4, or [H, W] (e.g. [1, 8, 8] for flat 8x8 samples), "
            f"got {a.image_shape!r}"
        )
    _positive_int("num_image_samples", a.num_image_samples)
    if not isinstance(a.prefix, str) or not a.prefix or a.prefix != a.prefix.strip():
        raise ValueError(
            f"`prefix` must be a non-empty string without surrounding spaces (e.g. 'gan/'), got {a.prefix!r}"
        )
    if a.image_range is not None and (
        not isinstance(a.image_range, Sequence)
        or len(a.image_range) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a.image_range)
        or not a.image_range[0] < a.image_range[1]
    ):
        raise ValueError(f"`image_range` must be (low, high) with low < high, or None, got {a.image_range!r}")


#: Default `check_every_n_batches`: how often the buffer is read back and the rules run (benchmarks/RESULTS.md).
DEFAULT_CHECK_EVERY = 20
#: Defaults of the mode-collapse rule, calibrated on healthy and collapsing runs (benchmarks/RESULTS.md).
DEFAULT_DIVERSITY_EVERY = 100
DEFAULT_COLLAPSE_DIVERSITY_BELOW = 0.2
DEFAULT_COLLAPSE_NEAR_DUPLICATES_ABOVE = 0.5
DEFAULT_COLLAPSE_PATIENCE = 3


#: The arguments saved with a checkpoint (and written to TensorBoard) to tell a resumed run what changed.
_CONFIG_KEYS = (
    *("patience", "from_logits", "output", "smoothing", "d_dominates_generator_below"),
    *("d_dominates_discriminator_above", "d_dominates_auc_above", "d_dominates_gap_within", "critic_patience"),
    "g_dominates_auc_below",
    *("g_dominates_generator_above", "check_finite", "non_finite_patience", "stop_on_convergence"),
    *("convergence_tolerance", "convergence_patience", "diversity_every_n_batches", "diversity_samples"),
    *("real_reservoir_size", "nearest_k", "near_duplicate_factor", "collapse_diversity_below"),
    *("collapse_near_duplicates_above", "collapse_coverage_below", "collapse_patience"),
)


class MonitorArguments:
    """The monitor's arguments: checked up front, each kept as a public attribute of the same name.

    The base of :class:`~lightning_gan_monitor.callback.GANMonitorBase`, which builds its parts in :meth:`_build`.
    """

    def __init__(
        self,
        patience: int = 100,
        from_logits: bool | Literal["auto"] = "auto",
        output: Literal["auto", "probability", "logit", "critic"] = "auto",
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
        d_dominates_auc_above: float = 0.99,
        d_dominates_gap_within: float = 0.1,
        critic_patience: int | None = None,
        g_dominates_auc_below: float = 0.2,
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
        prefix: str = "gan/",
        condition_key: int | str | None = None,
    ) -> None:
        """Check and keep the arguments, then build the monitor's parts.

        Args:
            patience: consecutive training batches a failure condition must hold before its rule fires.
            from_logits: the older way to say ``output``: ``True`` is ``"logit"``, ``False`` is ``"probability"``,
                ``"auto"`` leaves it to ``output``.
            output: what D's outputs are. ``"probability"``: D ends in a sigmoid; ``"logit"``: no sigmoid at its end
                (``BCEWithLogitsLoss``), a sigmoid is applied first; ``"critic"``: a Wasserstein critic or a hinge
                discriminator, whose scores have no fixed offset: only their order and gap are read (``gan/auc``
                ...), the four probability scores are not logged, and the critic rules apply (see
                ``d_dominates_auc_above``); ``"auto"``: probability or logit, decided at the first check (logits if
                an output is outside [0, 1]) and said once, switching to logits later if such outputs appear.
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
            d_dominates_auc_above: for a critic, "discriminator dominates" needs the smoothed AUC (``gan/auc``) above
                this...
            d_dominates_gap_within: ...and the smoothed gap (``gan/gap``) within this fraction of its highest so far,
                for ``critic_patience`` batches.
            critic_patience: see ``d_dominates_auc_above``; None is 5 x ``patience`` (a healthy critic separates
                every pair for hundreds of batches while it learns faster than the generator).
            g_dominates_auc_below: for a critic, "generator dominates" when the smoothed AUC is below this (the critic
                scores generated samples above real ones) for ``patience`` batches.
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
            verbose: report a success stop, set-up choices (which source is used) and the end-of-fit summary on rank
                zero.
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
            image_every_n_epochs: log a grid of ``G(z)`` for a fixed latent batch to TensorBoard as ``gan/samples``
                every this many epochs (and real samples once as ``gan/real_samples``); None turns the grids off.
            image_shape: shape of one sample as an image, ``[C, H, W]`` or ``[H, W]``, for flat samples (e.g.
                ``[1, 8, 8]``); None shows (N, C, H, W) samples with C in 1, 3 or 4 and skips other data.
            num_image_samples: images per grid (the size of the fixed latent batch).
            image_range: sample values shown as black and white, ``(low, high)``; None scales each grid to its own
                range.
            condition_key: for a conditional GAN, the place of the conditions (labels) in the batch, an index or a
                key as ``real_key``; the monitor then calls ``generator(z, y)`` and ``discriminator(x, y)`` with the
                real batch's labels (cycled for more samples; the image grids keep the first batch's). None: an
                unconditional GAN.
            prefix: the start of every tag the monitor logs (``gan/generator_score``, ``gan/diagnosis``, ...): give
                each monitor of one Trainer its own (e.g. ``"d1/"`` and ``"d2/"`` for two discriminators).

        Raises:
            ValueError: for an argument outside its allowed values (the message names it).
        """
        super().__init__()
        check_arguments({k: v for k, v in locals().items() if k not in ("self", "__class__")})
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
        self.output = output
        self.d_dominates_auc_above = float(d_dominates_auc_above)
        self.d_dominates_gap_within = float(d_dominates_gap_within)
        self.critic_patience = critic_patience
        self.g_dominates_auc_below = float(g_dominates_auc_below)
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
        self.prefix = prefix
        self.condition_key = condition_key
        self._build()

    def _config(self) -> dict[str, Any]:
        """The arguments a checkpoint saves (and TensorBoard shows) so that a resumed run can say what changed."""
        return {key: getattr(self, key) for key in _CONFIG_KEYS}

    def _rules(self) -> list[Rule]:
        """The score rules these arguments configure, in priority order."""
        rules: list[Rule] = [NonFinite(patience=self.non_finite_patience)] if self.check_finite else []
        critic = self._output() == "critic"
        if critic:
            patience = self.critic_patience or CRITIC_PATIENCE_FACTOR * self.patience
            auc, within = self.d_dominates_auc_above, self.d_dominates_gap_within
            rules.append(CriticDominates(patience, auc_above=auc, gap_within=within))
            rules.append(CriticFooled(patience=self.patience, auc_below=self.g_dominates_auc_below))
        else:
            below, above = self.d_dominates_generator_below, self.d_dominates_discriminator_above
            rules.append(DiscriminatorDominates(self.patience, generator_below=below, discriminator_above=above))
            rules.append(GeneratorDominates(patience=self.patience, generator_above=self.g_dominates_generator_above))
        if self.stop_on_convergence:
            patience = self.convergence_patience or self.patience
            key = "auc" if critic else "fake_detection_accuracy"
            rules.append(Converged(patience=patience, tolerance=self.convergence_tolerance, key=key))
        return rules

    def _output(self) -> str:
        """How D's outputs are read: ``output``, or what ``from_logits`` says."""
        return resolve_output(self.output, self.from_logits)

    def _build(self) -> None:
        """Build what depends on the arguments (the callback's trackers, sources and buffers)."""
