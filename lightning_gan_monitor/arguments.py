"""The monitor's constructor arguments and their documentation; :mod:`~lightning_gan_monitor.config` keeps them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn

from lightning_gan_monitor.config import (
    DEFAULT_COLLAPSE_DIVERSITY_BELOW,
    DEFAULT_COLLAPSE_NEAR_DUPLICATES_ABOVE,
    DEFAULT_COLLAPSE_PATIENCE,
    DEFAULT_DIVERSITY_EVERY,
    MonitorConfig,
)

__all__ = ["MonitorArguments"]


class MonitorArguments:
    """The monitor's arguments: checked up front, each kept as a public attribute of the same name.

    The base of every adapter (the Lightning callback, the Fabric and the plain-loop monitors): the signature
    ``LightningCLI`` reads and the documentation of each argument. The checked, frozen values are :attr:`config`,
    a :class:`~lightning_gan_monitor.config.MonitorConfig`; each adapter builds its core from it in :meth:`_build`.
    """

    def __init__(
        self,
        patience: int = 100,
        from_logits: bool | Literal["auto"] = "auto",
        output: Literal["auto", "probability", "logit", "critic"] = "auto",
        rank_values: bool = False,
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
        g_dominates_generator_above: float = 0.8,
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
        collapse_at_once_diversity_below: float | None = 0.1,
        collapse_at_once_near_duplicates_above: float | None = 0.9,
        collapse_near_data_above: float | None = 0.05,
        collapse_moving_above: float = 0.1,
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
            rank_values: also log, for a D that is not a critic, what needs no threshold on its outputs
                (``gan/auc``, ``gan/fake_detection_at_median``, ``gan/real_detection_at_median``, ``gan/gap``), as
                for a critic. They are computed in any case (the "generator dominates" rule reads the AUC); off by
                default only to keep the logs to the four scores.
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
            smoothing: decay per training batch of the exponential moving average the rules look at (0: no
                smoothing; 0.9 averages over about 10 batches, also when probing observes every 10th).
            d_dominates_generator_below: "discriminator dominates" needs the smoothed generator score below this...
            d_dominates_discriminator_above: ...and the smoothed discriminator score above this.
            g_dominates_generator_above: "generator dominates" when the smoothed generator score is above this.
            d_dominates_auc_above: for a critic, "discriminator dominates" needs the smoothed AUC (``gan/auc``) above
                this...
            d_dominates_gap_within: ...and the smoothed gap (``gan/gap``) within this fraction of its highest so far,
                for ``critic_patience`` batches.
            critic_patience: see ``d_dominates_auc_above``; None is 5 x ``patience`` (a healthy critic separates
                every pair for hundreds of batches while it learns faster than the generator).
            g_dominates_auc_below: "generator dominates" when the smoothed AUC is below this (D scores generated
                samples above real ones) for ``patience`` batches: for a critic, and for any other D beside
                ``g_dominates_generator_above`` (the AUC needs no calibration of D's probabilities).
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
            collapse_patience: ...at this many consecutive diversity checks, once the generator has had
                ``collapse_patience`` x ``diversity_every_n_batches`` updates.
            collapse_at_once_diversity_below: evidence beyond every healthy run of the calibration fires at one
                diversity check (after ``diversity_every_n_batches`` generator updates), and a dominance that fires
                while a check shows it is diagnosed as mode collapse first: the diversity ratio below this...
            collapse_at_once_near_duplicates_above: ...and the near-duplicate rate above this. None for either: never
                at once, and a dominance keeps its name.
            collapse_near_data_above: a collapse is lost variety, or little variety in a generator that learns, not
                the grey blur a fresh or frozen generator draws for every latent vector: the collapse condition
                counts only if the diversity ratio fell to half its highest (G's at the first batch included), or
                half the samples or more have an exact twin (the same output for another latent vector), or the
                samples reach the data (their density or coverage at least this) or G's outputs on the monitor's
                fixed latent vectors moved at least ``collapse_moving_above`` since the check before, while its
                variety is not growing. Otherwise a dominance's diagnosis says the generator is
                not learning. None: the condition alone is a collapse (version 0.2).
            collapse_moving_above: see ``collapse_near_data_above``; in units of the real samples' mean pairwise
                distance (logged as ``gan/movement``: 0 for a frozen generator).
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
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        #: The arguments, checked and frozen: what the monitor and its parts read.
        self.config = MonitorConfig(**arguments)
        for name, value in self.config.arguments().items():
            setattr(self, name, value)  # public, as Lightning's callbacks keep their arguments
        self._build()

    def _build(self) -> None:
        """Build what depends on the arguments (the core :class:`~lightning_gan_monitor.monitor.Monitor`)."""
