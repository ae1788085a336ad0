"""The Lightning callback: thin glue between the trainer's hooks and the plain objects in the other modules."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

import torch

# The very functions both Lightning packages re-export (and whose rank both Trainers set): importing them from here
# keeps this module free of either package.
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_gan_monitor import tensorboard
from lightning_gan_monitor.functional import (
    SCORE_NAMES,
    STAT_NAMES,
    gan_score_stats_batches,
    host_to_device,
    non_finite_rows,
)
from lightning_gan_monitor.metrics import GANScoreStats
from lightning_gan_monitor.rules import (
    Converged,
    Diagnosis,
    DiscriminatorDominates,
    FailureDetector,
    FailureMode,
    GeneratorDominates,
    NonFinite,
    Rule,
    StoppingReason,
    decide,
    format_message,
)

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["GANMonitorBase", "GANMonitorWarning"]

_OUT_OF_RANGE = STAT_NAMES.index("out_of_range")
#: Default `check_every_n_batches`: a check costs a fixed few hundred microseconds on a CPU (and one read-back from
#: an accelerator), whatever the number of batches it processes; benchmarks/RESULTS.md has the measurements.
DEFAULT_CHECK_EVERY = 20
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
)


class GANMonitorWarning(UserWarning):
    """A failure diagnosis, or a problem with how the monitor is set up (filter it with ``warnings``)."""


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


def _probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}")


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}")


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
        verbose: report a success stop and set-up choices (which source is used) on rank zero.

    Raises:
        ValueError: for an argument outside its allowed values (the message names it).

    Attributes:
        failure: None, or the :class:`~lightning_gan_monitor.FailureMode` that fired first.
        stopped_batch: None, or the number of training batches seen when the first rule fired.
        stopping_reason: a :class:`~lightning_gan_monitor.StoppingReason`.
        stopping_reason_message: the diagnosis text of the first rule that fired, or None.
        diagnoses: every rule that fired, in order, as :class:`~lightning_gan_monitor.rules.Diagnosis`.

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

        self._rules = self._build_rules()
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
        self._detector.reset()
        self._running.reset()

    def __getstate__(self) -> dict[str, Any]:
        # `ddp_spawn` pickles the callback to its workers, sharing tensors through shared memory, and a
        # `torch.Generator` (whose pickled state is a temporary tensor, freed before the worker maps it) fails there:
        # carry its device and state as plain bytes instead.
        state = self.__dict__.copy()
        if self._rng is not None:
            state["_rng"] = (str(self._rng.device), self._rng.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        rng = state.get("_rng")
        if isinstance(rng, tuple):
            device, rng_state = rng
            state["_rng"] = torch.Generator(device=device)
            state["_rng"].set_state(torch.frombuffer(bytearray(rng_state), dtype=torch.uint8))
        self.__dict__.update(state)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            d_real_key=self.d_real_key,
            d_fake_key=self.d_fake_key,
            generator_attr=self.generator_attr,
            discriminator_attr=self.discriminator_attr,
        )

    @property
    def scores(self) -> dict[str, float]:
        """The latest smoothed scores (what the rules look at), as floats; NaN before the first observation."""
        return dict(zip(SCORE_NAMES, self._detector.scores.tolist()))

    # ------------------------------------------------------------------ hooks

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # States created before a `ddp_spawn` live in shared memory; a fresh start per fit also avoids double counts.
        if stage == "fit":
            self._reset_run_state()

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        self._detector.to(device)
        self._running.to(device)
        self._out_of_range = self._out_of_range.to(device)
        self._loss_non_finite = self._loss_non_finite.to(device)
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
        log = self._log_every and self._batches_seen % self._log_every == 0
        if log or self._batches_seen == 1 or self._batches_seen % self._check_every == 0:
            self._check(trainer)
        if log:
            self._log_scores(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The batches since the last log point (a stop usually falls between two) still reach the loggers.
        self._log_scores(trainer, pl_module, callback_metrics=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "batches_seen": self._batches_seen,
            "since_observation": self._since_observation,
            "detector": self._detector.state_dict(),
            "running": self._running.stats.detach().cpu(),
            "out_of_range": self._out_of_range.detach().cpu(),
            "rng_state": self._rng.get_state() if self._rng is not None else self._rng_state,
            "failure": self.failure.value if self.failure else None,
            "stopped_batch": self.stopped_batch,
            "stopping_reason": self.stopping_reason.value,
            "stopping_reason_message": self.stopping_reason_message,
            "diagnoses": [{**asdict(d), "failure": d.failure.value if d.failure else None} for d in self.diagnoses],
            "config": self._config(),
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
        failure = state_dict.get("failure")
        self.failure = FailureMode(failure) if failure else None
        self.stopped_batch = state_dict.get("stopped_batch")
        self.stopping_reason = StoppingReason(state_dict.get("stopping_reason", StoppingReason.NOT_STOPPED.value))
        self.stopping_reason_message = state_dict.get("stopping_reason_message")
        self.diagnoses = [
            Diagnosis(**{**d, "failure": FailureMode(d["failure"]) if d["failure"] else None})
            for d in state_dict.get("diagnoses", [])
        ]

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
        skip = (self.d_real_key, self.d_fake_key)
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
        with _untouched(generator, discriminator, z.device):
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

    def _check(self, trainer: pl.Trainer) -> None:
        events = self._flush()
        packed = torch.cat([events.flatten(), self._out_of_range.reshape(1)])
        # One collective and one read-back; every rank then takes the same decision from the same numbers.
        rows = trainer.strategy.all_gather(packed).reshape(-1, packed.numel()).tolist()
        if not self.from_logits and any(row[-1] > 0 for row in rows):
            raise ValueError(
                "GANMonitor: the discriminator's outputs are not probabilities: some are outside [0, 1]. If your "
                "discriminator returns logits (no sigmoid at the end, as with `BCEWithLogitsLoss`), pass "
                "`GANMonitor(from_logits=True)`."
            )
        per_rule = [[row[6 * r : 6 * r + 6] for r in range(len(self._rules))] for row in rows]
        index, process = decide(per_rule, self._rules)
        should_stop = False
        if index >= 0:
            batch, held, *scores = per_rule[process][index]
            should_stop = self._fire(trainer, self._rules[index], index, int(batch), int(held), scores)
        should_stop = trainer.strategy.reduce_boolean_decision(should_stop, all=False)
        trainer.should_stop = trainer.should_stop or should_stop

    def _fire(
        self, trainer: pl.Trainer, rule: Rule, index: int, batch: int, held_for: int, scores: list[float]
    ) -> bool:
        self._detector.latch(index)
        named = dict(zip(SCORE_NAMES, scores))
        note = "" if trainer.world_size == 1 else " (on at least one process)"
        message = format_message(rule, batch, held_for, named, note)
        diagnosis = Diagnosis(rule.failure, batch, held_for, named, message)
        self.diagnoses.append(diagnosis)
        stop = rule.failure is None or self.on_failure == "stop"
        if self.stopped_batch is None:
            self.failure = rule.failure
            self.stopped_batch = self._batches_seen
            self.stopping_reason_message = message
        if stop and self.stopping_reason is StoppingReason.NOT_STOPPED:
            self.stopping_reason = StoppingReason.CONVERGED if rule.failure is None else StoppingReason.FAILURE
        if rule.failure is None:
            rank_zero_info(f"GANMonitor: {message} Stopping training.")
        else:
            action = "Stopping training." if stop else "Training continues (`on_failure='warn'`)."
            rank_zero_warn(f"GANMonitor: {message}\n{action}", category=GANMonitorWarning)
        if trainer.is_global_zero:
            for writer in self._tensorboard_writers(trainer):
                tensorboard.write_diagnosis(writer, message, self._batches_seen)
        return stop

    # ------------------------------------------------------------------ logging

    def _log_scores(self, trainer: pl.Trainer, pl_module: pl.LightningModule, callback_metrics: bool = True) -> None:
        if self._running.update_count == 0:  # nothing observed since the last log (the same on every rank)
            return
        values = dict(zip((f"gan/{name}" for name in SCORE_NAMES), self._running.compute().unbind()))
        self._running.reset()
        finite = {k: v for k, v in values.items() if not torch.isnan(v)}
        step = self._batches_seen - 1  # Lightning logs `self.log` values of batch k at step k - 1
        for logger in trainer.loggers:
            logger.log_metrics({k: v.item() for k, v in finite.items()}, step=step)
        if not callback_metrics:  # Lightning allows `self.log` only in some hooks
            return
        # Also in `trainer.callback_metrics`, for `ModelCheckpoint(monitor="gan/...")` and the progress bar.
        pl_module.log_dict(finite, on_step=True, on_epoch=False, logger=False, batch_size=1)
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
def _untouched(generator: nn.Module, discriminator: nn.Module, device: torch.device) -> Iterator[None]:
    """Run a probe without changing training: the global RNG, every buffer and the modules' modes are restored."""
    buffers = {id(b): b for module in (generator, discriminator) for b in module.buffers()}
    saved = {key: b.detach().clone() for key, b in buffers.items()}
    modes = [(m, m.training) for module in (generator, discriminator) for m in module.modules()]
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
