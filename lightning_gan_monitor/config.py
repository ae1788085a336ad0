"""The monitor's configuration: every argument once, with its default, checked, frozen, handed whole to the parts.

:class:`MonitorConfig` is what each adapter's constructor builds from its arguments (documented on
:class:`~lightning_gan_monitor.arguments.MonitorArguments`) and what the core and its parts read. Nothing here imports
Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

from torch import Tensor, nn

from lightning_gan_monitor.checks import check_arguments, resolve_output
from lightning_gan_monitor.critic import CriticDominates, CriticFooled
from lightning_gan_monitor.rules import Converged, DiscriminatorDominates, GeneratorDominates, NonFinite, Rule

__all__ = [
    "CRITIC_PATIENCE_FACTOR",
    "DEFAULT_CHECK_EVERY",
    "DEFAULT_COLLAPSE_DIVERSITY_BELOW",
    "DEFAULT_COLLAPSE_NEAR_DUPLICATES_ABOVE",
    "DEFAULT_COLLAPSE_PATIENCE",
    "DEFAULT_DIVERSITY_EVERY",
    "MonitorConfig",
]

#: A critic's dominance rule waits this many times ``patience`` unless ``critic_patience`` is given.
CRITIC_PATIENCE_FACTOR = 5
#: Default `check_every_n_batches`: how often the buffer is read back and the rules run (benchmarks/RESULTS.md).
DEFAULT_CHECK_EVERY = 20
#: Defaults of the mode-collapse rule, calibrated on healthy and collapsing runs (benchmarks/RESULTS.md).
DEFAULT_DIVERSITY_EVERY = 100
DEFAULT_COLLAPSE_DIVERSITY_BELOW = 0.2
DEFAULT_COLLAPSE_NEAR_DUPLICATES_ABOVE = 0.5
DEFAULT_COLLAPSE_PATIENCE = 3

#: The arguments saved with a checkpoint (and written to TensorBoard) to tell a resumed run what changed.
SAVED_KEYS = (
    *("patience", "from_logits", "output", "smoothing", "d_dominates_generator_below"),
    *("d_dominates_discriminator_above", "d_dominates_auc_above", "d_dominates_gap_within", "critic_patience"),
    "g_dominates_auc_below",
    *("g_dominates_generator_above", "check_finite", "non_finite_patience", "stop_on_convergence"),
    *("convergence_tolerance", "convergence_patience", "diversity_every_n_batches", "diversity_samples"),
    *("real_reservoir_size", "nearest_k", "near_duplicate_factor", "collapse_diversity_below"),
    *("collapse_near_duplicates_above", "collapse_coverage_below", "collapse_patience"),
    *("collapse_at_once_diversity_below", "collapse_at_once_near_duplicates_above"),
    *("collapse_near_data_above", "collapse_moving_above"),
)


@dataclass(frozen=True, eq=False)
class MonitorConfig:
    """The monitor's arguments (see :class:`~lightning_gan_monitor.arguments.MonitorArguments` for each), checked.

    Example:
        >>> MonitorConfig(patience=50).check_every
        20
        >>> MonitorConfig(patience=-3)
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be a positive integer, got -3

    """

    patience: int = 100
    from_logits: bool | Literal["auto"] = "auto"
    output: Literal["auto", "probability", "logit", "critic"] = "auto"
    rank_values: bool = False
    on_failure: Literal["stop", "warn"] = "stop"
    source: Literal["auto", "outputs", "probe"] = "auto"
    d_real_key: str = "d_real"
    d_fake_key: str = "d_fake"
    probe_every_n_batches: int = 10
    probe_batch_size: int | None = None
    generator_attr: str = "generator"
    discriminator_attr: str = "discriminator"
    latent_dim: int | list[int] | None = None
    real_key: int | str = 0
    seed: int = 0
    smoothing: float = 0.9
    d_dominates_generator_below: float = 0.1
    d_dominates_discriminator_above: float = 0.9
    g_dominates_generator_above: float = 0.8
    d_dominates_auc_above: float = 0.99
    d_dominates_gap_within: float = 0.1
    critic_patience: int | None = None
    g_dominates_auc_below: float = 0.2
    check_finite: bool = True
    non_finite_patience: int = 1
    stop_on_convergence: bool = False
    convergence_tolerance: float = 0.05
    convergence_patience: int | None = None
    check_every_n_batches: int | None = None
    log_every_n_batches: int | None = None
    verbose: bool = True
    fake_key: str = "fake"
    feature_extractor: nn.Module | Callable[[Tensor], Tensor] | None = None
    diversity_every_n_batches: int | None = DEFAULT_DIVERSITY_EVERY
    diversity_samples: int = 256
    real_reservoir_size: int = 512
    nearest_k: int = 5
    near_duplicate_factor: float = 0.25
    collapse_diversity_below: float | None = DEFAULT_COLLAPSE_DIVERSITY_BELOW
    collapse_near_duplicates_above: float | None = DEFAULT_COLLAPSE_NEAR_DUPLICATES_ABOVE
    collapse_coverage_below: float | None = None
    collapse_patience: int = DEFAULT_COLLAPSE_PATIENCE
    collapse_at_once_diversity_below: float | None = 0.1
    collapse_at_once_near_duplicates_above: float | None = 0.9
    collapse_near_data_above: float | None = 0.05
    collapse_moving_above: float = 0.1
    image_every_n_epochs: int | None = 10
    image_shape: list[int] | None = None
    num_image_samples: int = 64
    image_range: tuple[float, float] | None = (-1.0, 1.0)
    prefix: str = "gan/"
    condition_key: int | str | None = None

    def __post_init__(self) -> None:
        check_arguments(self.arguments())
        normal = {
            name: float(getattr(self, name))
            for name in (
                *("smoothing", "d_dominates_generator_below", "d_dominates_discriminator_above"),
                *("g_dominates_generator_above", "d_dominates_auc_above", "d_dominates_gap_within"),
                *("g_dominates_auc_below", "convergence_tolerance", "near_duplicate_factor", "collapse_moving_above"),
            )
        }
        normal["image_shape"] = list(self.image_shape) if self.image_shape is not None else None  # type: ignore[assignment]
        normal["image_range"] = tuple(self.image_range) if self.image_range is not None else None  # type: ignore[assignment]
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    def arguments(self) -> dict[str, Any]:
        """Every argument by name (a shallow copy: the feature extractor is the same object)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def saved(self) -> dict[str, Any]:
        """The arguments a checkpoint saves (and TensorBoard shows) so that a resumed run can say what changed."""
        return {key: getattr(self, key) for key in SAVED_KEYS}

    @property
    def reading(self) -> str:
        """How D's outputs are read: ``output``, or what ``from_logits`` says."""
        return resolve_output(self.output, self.from_logits)

    @property
    def check_every(self) -> int:
        """Batches between two checks."""
        return self.check_every_n_batches or DEFAULT_CHECK_EVERY

    def rules(self) -> list[Rule]:
        """The score rules these arguments configure, in priority order."""
        rules: list[Rule] = [NonFinite(patience=self.non_finite_patience)] if self.check_finite else []
        critic = self.reading == "critic"
        if critic:
            patience = self.critic_patience or CRITIC_PATIENCE_FACTOR * self.patience
            auc, within = self.d_dominates_auc_above, self.d_dominates_gap_within
            rules.append(CriticDominates(patience, auc_above=auc, gap_within=within))
            rules.append(CriticFooled(patience=self.patience, auc_below=self.g_dominates_auc_below))
        else:
            below, above = self.d_dominates_generator_below, self.d_dominates_discriminator_above
            rules.append(DiscriminatorDominates(self.patience, generator_below=below, discriminator_above=above))
            above, auc = self.g_dominates_generator_above, self.g_dominates_auc_below
            rules.append(GeneratorDominates(patience=self.patience, generator_above=above, auc_below=auc))
        if self.stop_on_convergence:
            patience = self.convergence_patience or self.patience
            key = "auc" if critic else "fake_detection_accuracy"
            rules.append(Converged(patience=patience, tolerance=self.convergence_tolerance, key=key))
        return rules
