"""The checks of the monitor's constructor arguments: a ``ValueError`` naming the argument, the expected, the got."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

__all__ = ["OUTPUTS", "check_arguments", "resolve_output"]


#: How D's outputs can be read (``output``).
OUTPUTS = ("auto", "probability", "logit", "critic")


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
    if not isinstance(a.rank_values, bool):
        raise ValueError(f"`rank_values` must be True or False, got {a.rank_values!r}")
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
    _number("collapse_at_once_diversity_below", a.collapse_at_once_diversity_below, 0.0)
    _number("collapse_at_once_near_duplicates_above", a.collapse_at_once_near_duplicates_above, 0.0, 1.0)
    _number("collapse_near_data_above", a.collapse_near_data_above, 0.0, 1.0)
    _number("collapse_moving_above", a.collapse_moving_above, 0.0, allow_none=False)
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
