"""Where D's outputs come from: what the host handed over, or one probe of G and D.

:class:`Sources` turns a batch into an :class:`Observation`: D's outputs on real and generated samples, the losses
and the generated samples, all detached. It takes them from the host (the adapter found them in ``training_step``'s
outputs, or the loop passed them to ``update``), or else probes: it runs the generator on latent vectors from its
own seeded ``torch.Generator`` and the discriminator on those samples and on the real batch, leaving the training
untouched (global RNG, buffers and modes restored). :class:`Models` is what every host has to offer for that.
Nothing here imports Lightning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_gan_monitor.diagnosis import GANMonitorWarning
from lightning_gan_monitor.rng import PicklesGenerators

__all__ = [
    "Models",
    "Observation",
    "Sources",
    "batch_entry",
    "cycled",
    "real_samples",
    "untouched",
]


class Observation(NamedTuple):
    """What one batch shows the monitor (every tensor detached; ``fake`` None when the step returned none)."""

    d_real: Tensor
    d_fake: Tensor
    losses: list[Tensor]
    fake: Tensor | None


class Models(NamedTuple):
    """What the host offers the monitor to run G and D (probes, diversity checks, pictures): every host has it.

    Args:
        generator: the generator (unwrapped from any DDP wrapper), or None if the host has none to offer.
        discriminator: the discriminator, or None.
        device: where training runs (the monitor's buffer lives there).
        latent_dim: the latent size the host knows of (a LightningModule's ``hparams.latent_dim``), or None.
        names: how messages name the two models (``pl_module.generator``, ``generator``).
        how_to_give: per model, what to do when it is missing (a sentence naming an argument).
    """

    generator: Any
    discriminator: Any
    device: torch.device
    latent_dim: Any = None
    names: tuple[str, str] = ("`generator`", "`discriminator`")
    how_to_give: tuple[str, str] = ("pass `generator=` to `update`", "pass `discriminator=` to `update`")


@contextlib.contextmanager
def untouched(*modules: nn.Module, device: torch.device) -> Iterator[None]:
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


def real_samples(batch: Any, key: int | str) -> Tensor:
    """The real samples of ``batch``: the tensor itself, or entry ``key`` of a tuple/list or dict batch.

    Raises:
        ValueError: naming ``real_key`` when the batch has no such tensor entry.

    Example:
        >>> real_samples((torch.zeros(2, 3), torch.ones(2)), 0).shape
        torch.Size([2, 3])

    """
    if batch is None:  # a loop's `update` without `batch=`: no `real_key` can help
        raise ValueError(
            "GANMonitor got no training batch: pass `batch=` to `update` (the batch D saw, whose real samples are at "
            "`real_key`)"
        )
    return batch if isinstance(batch, Tensor) else batch_entry(batch, key, "real_key", "real samples")


def batch_entry(batch: Any, key: int | str, argument: str, what: str) -> Tensor:
    """Entry ``key`` of a tuple/list or dict batch, a tensor.

    Raises:
        ValueError: naming ``argument`` when the batch has no such tensor entry.

    Example:
        >>> batch_entry((torch.zeros(2, 3), torch.tensor([4, 7])), 1, "condition_key", "labels")
        tensor([4, 7])

    """
    in_mapping = isinstance(batch, Mapping) and key in batch
    in_sequence = isinstance(batch, (list, tuple)) and isinstance(key, int) and -len(batch) <= key < len(batch)
    if not (in_mapping or in_sequence):
        if isinstance(batch, Mapping):
            found = f"a dict with keys {sorted(map(str, batch))}"
        elif isinstance(batch, (list, tuple)):
            found = f"a {type(batch).__name__} of length {len(batch)}"
        else:
            found = f"a {type(batch).__name__}"
        raise ValueError(
            f"GANMonitor cannot find the {what} in the batch ({found}) with `{argument}={key!r}`; set "
            f"`GANMonitor({argument}=...)` to the index (tuple/list batch) or key (dict batch) of the {what}"
        )
    entry = batch[key]
    if not isinstance(entry, Tensor):
        raise ValueError(
            f"GANMonitor expected the batch's `{argument}={key!r}` entry to be a tensor of {what}, got "
            f"{type(entry).__name__}; set `GANMonitor({argument}=...)`"
        )
    return entry


def cycled(values: Tensor, n: int) -> Tensor:
    """The first ``n`` of ``values`` repeated along the first dimension (labels for ``n`` generated samples).

    Example:
        >>> cycled(torch.tensor([1, 2, 3]), 7)
        tensor([1, 2, 3, 1, 2, 3, 1])

    """
    return torch.cat([values] * -(-n // values.shape[0]))[:n]


def _call(module: Any, x: Tensor, y: Tensor | None) -> Tensor:
    """``module(x)``, or ``module(x, y)`` for a conditional GAN."""
    return module(x) if y is None else module(x, y)


class Sources(PicklesGenerators):
    """Finds D's outputs (and the losses and generated samples) of each batch; owns the probe's random generators.

    Args:
        config: the monitor's :class:`~lightning_gan_monitor.config.MonitorConfig`.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget the models and the choice of source (a new fit); the generators' states are kept for resuming."""
        self.resolved: str | None = None  # "outputs", "probe", or "off" (turned off after a fault)
        self.probe_problem: str | None = None  # why G and D cannot be probed
        self.generator_problem: str | None = None  # why G cannot be run (diversity checks, pictures)
        self.latent_shape: tuple[int, ...] | None = None
        self.rng: torch.Generator | None = None  # the probe's latent vectors
        self.rng_states: dict[str, Tensor | None] = {"rng": None}
        self.conditions: Tensor | None = None  # the latest real batch's conditions (labels), for G(z, y)
        self.first_conditions: Tensor | None = None  # the first batch's: the image grids' (kept in checkpoints)
        self.since_probe = 0
        self._fixed_latent: Tensor | None = None  # the diversity checks' latent vectors (drawn again on resume)
        self._steps_generator: dict[int, bool] = {}  # per optimizer (by id): whether it steps the generator

    def turn_off(self) -> None:
        """No more observations this fit (a fault the processes agreed on)."""
        self.resolved = "off"

    @property
    def off(self) -> bool:
        """Whether it was turned off."""
        return self.resolved == "off"

    def steps_generator(self, generator: Any, optimizer: Any) -> bool | None:
        """Whether ``optimizer`` updates ``generator``; None if there is no generator module.

        What counts a generator's updates where D takes several steps per G step (a WGAN's ``n_critic``).
        """
        known = self._steps_generator.get(id(optimizer))
        if known is None:
            if not isinstance(generator, nn.Module):
                return None
            ids = {id(p) for p in generator.parameters()}
            known = any(id(p) in ids for group in optimizer.param_groups for p in group["params"])
            self._steps_generator[id(optimizer)] = known
        return known

    # ------------------------------------------------------------------ set-up

    def setup(self, models: Models) -> None:
        """Check whether the models can be probed, and seed the probe's generator on their device (or restore it)."""
        self.generator_problem, self.probe_problem = self._find_problems(models)
        if self.config.source == "probe":
            if self.probe_problem:
                raise ValueError(f"GANMonitor(source='probe') cannot probe: {self.probe_problem}")
            self._resolve("probe", models)
        if self.generator_problem is not None:
            return
        rng = torch.Generator(device=models.device).manual_seed(self.config.seed)
        state = self.rng_states.get("rng")
        if state is not None:
            try:
                rng.set_state(state)
            except RuntimeError:  # a checkpoint written on another kind of device
                rank_zero_warn(
                    f"GANMonitor could not restore its random generator from the checkpoint (written on another "
                    f"device type); it restarts from `seed={self.config.seed}`.",
                    category=GANMonitorWarning,
                )
        self.rng = rng

    def _find_problems(self, models: Models) -> tuple[str | None, str | None]:
        """Why the monitor cannot run G, and why it cannot probe (G and D): sentences naming what to set, or None."""
        if not callable(models.generator):
            return models.how_to_give[0], models.how_to_give[0]
        latent = self.config.latent_dim if self.config.latent_dim is not None else models.latent_dim
        problem = None
        if latent is None:
            problem = (
                "the latent size is unknown; pass `GANMonitor(latent_dim=...)` (or store it as "
                "`self.hparams.latent_dim` in a LightningModule, e.g. via `self.save_hyperparameters()`)"
            )
        elif isinstance(latent, int) and not isinstance(latent, bool) and latent > 0:
            self.latent_shape = (latent,)
        elif isinstance(latent, Sequence) and latent and all(isinstance(d, int) and d > 0 for d in latent):
            self.latent_shape = tuple(latent)
        else:
            problem = f"the latent size {latent!r} is not a positive integer; pass `GANMonitor(latent_dim=...)`"
        if problem is None and not callable(models.discriminator):
            return None, models.how_to_give[1]
        return problem, problem

    def _resolve(self, source: str, models: Models) -> None:
        self.resolved = source
        if self.config.verbose:
            how = (
                "from what the training step hands over"
                if source == "outputs"
                else f"by probing {models.names[0]} and {models.names[1]} every {self.config.probe_every_n_batches} "
                "batches"
            )
            rank_zero_info(f"GANMonitor: taking the discriminator's outputs {how}.")

    # ------------------------------------------------------------------ per batch

    def observe(
        self,
        models: Models,
        given: Observation | None,
        batch: Any,
        first: bool,
        losses: Sequence[Tensor] = (),
        missing: str = "",
    ) -> Observation | None:
        """What this batch shows: ``given`` (D's outputs the host found), one probe, or None (nothing this batch).

        Args:
            models: what the host offers to probe with.
            given: D's outputs the host handed over, or None.
            batch: the training batch (its real samples feed a probe).
            first: whether this is the first batch of the fit (a probe then runs whatever the cadence).
            losses: the step's losses, when probing (else ``given`` holds them).
            missing: at the first batch without ``given``, what the host saw instead and how to hand D's outputs
                over: the error when the monitor cannot probe either.
        """
        if self.resolved == "off":
            return None
        if self.config.condition_key is not None:
            key = self.config.condition_key
            self.conditions = batch_entry(batch, key, "condition_key", "conditions (labels)").detach()
            if self.first_conditions is None:
                self.first_conditions = self.conditions.cpu()
        if self.resolved is None:
            if given is None and (self.config.source == "outputs" or self.probe_problem is not None):
                how_to_probe = "" if self.config.source == "outputs" else f", or let it probe: {self.probe_problem}"
                raise ValueError(f"GANMonitor cannot find the discriminator's outputs: {missing}{how_to_probe}.")
            self._resolve("outputs" if given is not None else "probe", models)
        if self.resolved == "probe":
            self.since_probe += 1
            if self.since_probe < self.config.probe_every_n_batches and not first:
                return None
            self.since_probe = 0
            d_real, d_fake = self._probe(models, batch)
            return Observation(d_real.detach(), d_fake.detach(), [loss.detach() for loss in losses], None)
        return given

    @torch.no_grad()
    def _probe(self, models: Models, batch: Any) -> tuple[Tensor, Tensor]:
        generator, discriminator = models.generator, models.discriminator
        real = real_samples(batch, self.config.real_key)
        assert self.rng is not None
        z = self.latent(self.config.probe_batch_size or real.shape[0], generator, self.rng)
        y = self.conditions
        y_fake = None if y is None else cycled(y, z.shape[0])
        with untouched(generator, discriminator, device=z.device):
            try:
                fake = _call(generator, z, y_fake)
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor's probe failed calling {models.names[0]} on latent vectors of shape "
                    f"{tuple(z.shape)}: {err}. {self._latent_hint(err)}".rstrip()
                ) from err
            try:
                d_fake = _call(discriminator, fake, y_fake)
                d_real = _call(discriminator, real, y)
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor's probe failed calling {models.names[1]} on generated samples of shape "
                    f"{tuple(fake.shape)} and real samples of shape {tuple(real.shape)}: {err}. Check "
                    f"`GANMonitor(real_key=...)`, or hand the discriminator's outputs over instead. "
                    f"{self._conditional_hint(err)}".rstrip()
                ) from err
        return d_real, d_fake

    def _latent_hint(self, err: Exception) -> str:
        """What to set when G fails on the monitor's latent vectors: their shape, or the conditions it wants."""
        conditional = self._conditional_hint(err)
        if conditional or not any(word in str(err).lower() for word in ("shape", "size", "dimension", "expected")):
            return conditional  # not a shape error: no hint on the latent shape
        shape = self.latent_shape or ()
        example = f"e.g. `latent_dim={[*shape, 1, 1]}` for a convolutional G taking (B, {shape[0]}, 1, 1)"
        example = example if len(shape) == 1 else "e.g. `latent_dim=[100, 1, 1]`"
        return f"Set `GANMonitor(latent_dim=...)` to the shape one latent vector has ({example})."

    def _conditional_hint(self, err: Exception) -> str:
        """A hint naming ``condition_key`` when the call failed for want of an argument (a conditional model)."""
        if self.config.condition_key is not None or not isinstance(err, TypeError) or "argument" not in str(err):
            return ""
        return (
            "For a conditional GAN, set `GANMonitor(condition_key=...)` to the place of the labels in the batch: the "
            "monitor then calls generator(z, y) and discriminator(x, y)."
        )

    # ------------------------------------------------------------------ running the generator

    def latent(self, n: int, generator: nn.Module, rng: torch.Generator) -> Tensor:
        """``n`` latent vectors drawn from ``rng`` on its device, in the generator's floating dtype."""
        assert self.latent_shape is not None
        return torch.randn((n, *self.latent_shape), generator=rng, device=rng.device, dtype=_dtype(generator))

    @torch.no_grad()
    def generate(self, models: Models, z: Tensor, y: Tensor | None = None) -> Tensor:
        """G of ``z``, detached, training untouched.

        A conditional generator (``condition_key``) gets ``y`` (cycled to as many as ``z``), or else the latest real
        batch's conditions.
        """
        generator = models.generator
        y = y if y is not None else self.conditions
        if y is not None:
            y = cycled(y, z.shape[0]).to(z.device)
        with untouched(*[generator] if isinstance(generator, nn.Module) else [], device=z.device):
            try:
                return _call(generator, z, y).detach()
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor failed calling {models.names[0]} on latent vectors of shape {tuple(z.shape)} for "
                    f"the diversity metrics or image grids: {err}. {self._latent_hint(err)}".rstrip()
                ) from err

    @torch.no_grad()
    def fixed_samples(self, models: Models, n: int) -> Tensor:
        """G of the same ``n`` latent vectors at every call (the diversity checks'), detached, training untouched.

        The vectors are drawn once from a CPU generator seeded by ``seed`` (and the process's rank, so that under DDP
        every process brings its own), so a resumed run draws the same ones and the distance G's outputs moved
        between two checks measures what G learned. A conditional generator gets the first batch's conditions.
        """
        cached = self._fixed_latent
        if cached is None or cached.shape[0] != n:
            assert self.latent_shape is not None
            dist = torch.distributed
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            cpu = torch.Generator().manual_seed(self.config.seed + 2 + 1_000_003 * rank)
            latent = torch.randn((n, *self.latent_shape), generator=cpu)
            cached = self._fixed_latent = latent.to(models.device, _dtype(models.generator))
        y = self.first_conditions if self.first_conditions is not None else self.conditions
        return self.generate(models, z=cached, y=y)

    def state_dict(self) -> dict[str, Any]:
        """The probe generator's state (or the one loaded and not yet applied), and the batches since a probe."""
        rng = self.rng.get_state() if self.rng is not None else self.rng_states.get("rng")
        return {"rng": rng, "since_probe": self.since_probe, "conditions": self.first_conditions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (applied to the generator at :meth:`setup`)."""
        self.rng_states = {"rng": state.get("rng")}
        self.since_probe = state.get("since_probe", 0)
        if state.get("conditions") is not None:
            self.first_conditions = state["conditions"]


def _dtype(generator: Any) -> torch.dtype:
    """The generator's floating dtype (float32 for a callable without parameters)."""
    param = next(generator.parameters(), None) if isinstance(generator, nn.Module) else None
    return param.dtype if param is not None and param.is_floating_point() else torch.float32
