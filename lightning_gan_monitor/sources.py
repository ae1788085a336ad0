"""Where D's outputs come from: one pass over what ``training_step`` returned, or one probe of the module.

:class:`Sources` turns a batch into an :class:`Observation`: D's outputs on real and generated samples, the losses
the step returned and the generated samples, all detached. It reads them from the step's outputs when they hold
``d_real_key`` and ``d_fake_key``, or else probes: it runs the module's generator on latent vectors from its own
seeded ``torch.Generator`` and the discriminator on those samples and on the real batch, leaving the training
untouched (global RNG, buffers and modes restored). Nothing here imports Lightning.
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

    The arguments are the monitor's of the same names (see :class:`~lightning_gan_monitor.callback.GANMonitorBase`).
    """

    @classmethod
    def of(cls, arguments: Any) -> Sources:
        """The sources the monitor's arguments (attributes of the same names) configure."""
        a = arguments
        probe = (a.probe_every_n_batches, a.probe_batch_size, a.generator_attr, a.discriminator_attr, a.latent_dim)
        return cls(
            a.source, a.d_real_key, a.d_fake_key, a.fake_key, *probe, a.real_key, a.seed, a.verbose, a.condition_key
        )

    def __init__(
        self,
        source: str,
        d_real_key: str,
        d_fake_key: str,
        fake_key: str,
        probe_every_n_batches: int,
        probe_batch_size: int | None,
        generator_attr: str,
        discriminator_attr: str,
        latent_dim: int | Sequence[int] | None,
        real_key: int | str,
        seed: int,
        verbose: bool,
        condition_key: int | str | None = None,
    ) -> None:
        self.source = source
        self.d_real_key, self.d_fake_key, self.fake_key = d_real_key, d_fake_key, fake_key
        self.probe_every = probe_every_n_batches
        self.probe_batch_size = probe_batch_size
        self.generator_attr, self.discriminator_attr = generator_attr, discriminator_attr
        self.latent_dim = latent_dim
        self.real_key = real_key
        self.condition_key = condition_key
        self.seed = seed
        self.verbose = verbose
        self.reset()

    def reset(self) -> None:
        """Forget the module and the choice of source (a new fit); the generators' states are kept for resuming."""
        self.resolved: str | None = None  # "outputs", "probe", or "off" (failed after the first batch)
        self.probe_problem: str | None = None
        self.latent_shape: tuple[int, ...] | None = None
        self.rng: torch.Generator | None = None  # the probe's latent vectors
        self.rng_states: dict[str, Tensor | None] = {"rng": None}
        self.conditions: Tensor | None = None  # the latest real batch's conditions (labels), for G(z, y)
        self.first_conditions: Tensor | None = None  # the first batch's: the image grids' (kept in checkpoints)
        self._since_probe = 0
        self._fixed_latent: Tensor | None = None  # the diversity checks' latent vectors (drawn again on resume)
        self._steps_generator: dict[int, bool] = {}  # per optimizer (by id): whether it steps the generator

    def has_generator(self, pl_module: Any) -> bool:
        """Whether ``pl_module.<generator_attr>`` is a module (whose updates can be counted)."""
        return isinstance(getattr(pl_module, self.generator_attr, None), torch.nn.Module)

    def steps_generator(self, pl_module: Any, optimizer: Any) -> bool | None:
        """Whether ``optimizer`` updates the generator (``pl_module.<generator_attr>``); None if there is none.

        What counts a generator's updates where D takes several steps per G step (a WGAN's ``n_critic``).
        """
        known = self._steps_generator.get(id(optimizer))
        if known is None:
            if not self.has_generator(pl_module):
                return None
            ids = {id(p) for p in getattr(pl_module, self.generator_attr).parameters()}
            known = any(id(p) in ids for group in optimizer.param_groups for p in group["params"])
            self._steps_generator[id(optimizer)] = known
        return known

    # ------------------------------------------------------------------ set-up

    def setup(self, pl_module: Any) -> None:
        """Check whether the module can be probed, and seed the probe's generator on its device (or restore it)."""
        self.probe_problem = self._find_probe_problem(pl_module)
        if self.source == "probe":
            if self.probe_problem:
                raise ValueError(f"GANMonitor(source='probe') cannot probe this module: {self.probe_problem}")
            self._resolve("probe")
        if self.probe_problem is not None:
            return
        rng = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        state = self.rng_states.get("rng")
        if state is not None:
            try:
                rng.set_state(state)
            except RuntimeError:  # a checkpoint written on another kind of device
                rank_zero_warn(
                    f"GANMonitor could not restore its random generator from the checkpoint (written on another "
                    f"device type); it restarts from `seed={self.seed}`.",
                    category=GANMonitorWarning,
                )
        self.rng = rng

    def _find_probe_problem(self, pl_module: Any) -> str | None:
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
            self.latent_shape = (latent,)
        elif isinstance(latent, Sequence) and latent and all(isinstance(d, int) and d > 0 for d in latent):
            self.latent_shape = tuple(latent)
        else:
            return f"the module's latent size {latent!r} is not a positive integer; pass `GANMonitor(latent_dim=...)`"
        return None

    def _resolve(self, source: str) -> None:
        self.resolved = source
        if self.verbose:
            how = (
                f"from `training_step`'s outputs ('{self.d_real_key}', '{self.d_fake_key}')"
                if source == "outputs"
                else f"by probing `{self.generator_attr}` and `{self.discriminator_attr}` every "
                f"{self.probe_every} batches"
            )
            rank_zero_info(f"GANMonitor: taking the discriminator's outputs {how}.")

    def _choose(self, outputs: Any) -> str:
        if isinstance(outputs, Mapping) and self.d_real_key in outputs and self.d_fake_key in outputs:
            return "outputs"
        if self.source == "outputs" or self.probe_problem is not None:
            got = (
                "nothing"  # manual optimisation turns a `None` return into `{}`
                if outputs is None or (isinstance(outputs, Mapping) and not outputs)
                else f"a mapping with keys {sorted(map(str, outputs))}"
                if isinstance(outputs, Mapping)
                else f"a {type(outputs).__name__}"
            )
            how_to_probe = "" if self.source == "outputs" else f", or let it probe the module: {self.probe_problem}"
            raise ValueError(
                f"GANMonitor cannot find the discriminator's outputs: `training_step` returned {got}. Return a dict "
                f"with '{self.d_real_key}' and '{self.d_fake_key}' (D's outputs on the real batch and on the "
                "generated batch, e.g. `return {'loss': loss, "
                f"'{self.d_real_key}': d_real.detach(), '{self.d_fake_key}': d_fake.detach()}}`), or set "
                f"`GANMonitor(d_real_key=..., d_fake_key=...)` to the keys you return{how_to_probe}."
            )
        if isinstance(outputs, Mapping) and set(outputs) - {"loss"}:  # more than the loss Lightning wraps in a dict
            rank_zero_warn(
                f"GANMonitor: `training_step` returned a dict with keys {sorted(map(str, outputs))}, without "
                f"'{self.d_real_key}' and '{self.d_fake_key}' (D's outputs on the real and the generated batch). If "
                "two of those keys hold them, set `GANMonitor(d_real_key=..., d_fake_key=...)`; until then the "
                f"monitor probes `{self.generator_attr}` and `{self.discriminator_attr}` itself, every "
                f"{self.probe_every} batches.",
                category=GANMonitorWarning,
            )
        return "probe"

    # ------------------------------------------------------------------ per batch

    def observe(self, pl_module: Any, outputs: Any, batch: Any, first: bool) -> Observation | None:
        """What this batch shows (one pass over ``outputs``, or one probe), or None if nothing (a skipped step)."""
        if self.resolved == "off":  # it failed after the first batch: turned off for this fit
            return None
        if self.condition_key is not None:
            self.conditions = batch_entry(batch, self.condition_key, "condition_key", "conditions (labels)").detach()
            if self.first_conditions is None:
                self.first_conditions = self.conditions.cpu()
        if self.resolved is None:
            self._resolve(self._choose(outputs))
        if self.resolved == "probe":
            self._since_probe += 1
            if self._since_probe < self.probe_every and not first:
                return None
            self._since_probe = 0
            d_real, d_fake = self._probe(pl_module, batch)
            return Observation(d_real.detach(), d_fake.detach(), self._losses(outputs, ()), None)
        if outputs is None or (isinstance(outputs, Mapping) and not outputs):
            return None  # a skipped step (Lightning allows returning None)
        if not isinstance(outputs, Mapping) or self.d_real_key not in outputs or self.d_fake_key not in outputs:
            got = f"keys {sorted(map(str, outputs))}" if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"GANMonitor expected `training_step` to return a dict with '{self.d_real_key}' and "
                f"'{self.d_fake_key}' (as it did on the first batch), got {got}. Return them on every batch."
            )
        pair = []
        for key in (self.d_real_key, self.d_fake_key, self.fake_key):
            value = outputs.get(key)
            if (value is not None or key != self.fake_key) and not isinstance(value, Tensor):
                what = "generated samples" if key == self.fake_key else "discriminator outputs"
                raise TypeError(
                    f"GANMonitor expected `training_step`'s output '{key}' to be a tensor of {what}, got "
                    f"{type(value).__name__}"
                )
            pair.append(None if value is None else value.detach())  # no autograd graph outlives the step
        skip = (self.d_real_key, self.d_fake_key, self.fake_key)
        return Observation(pair[0], pair[1], self._losses(outputs, skip), pair[2])

    @staticmethod
    def _losses(outputs: Any, skip: Sequence[str]) -> list[Tensor]:
        """The floating tensors ``training_step`` returned besides D's outputs and the samples (losses)."""
        if isinstance(outputs, Tensor):
            return [outputs.detach()] if outputs.is_floating_point() else []
        if not isinstance(outputs, Mapping):
            return []
        return [
            v.detach() for k, v in outputs.items() if k not in skip and isinstance(v, Tensor) and v.is_floating_point()
        ]

    @torch.no_grad()
    def _probe(self, pl_module: Any, batch: Any) -> tuple[Tensor, Tensor]:
        generator: nn.Module = getattr(pl_module, self.generator_attr)
        discriminator: nn.Module = getattr(pl_module, self.discriminator_attr)
        real = real_samples(batch, self.real_key)
        assert self.rng is not None
        z = self.latent(self.probe_batch_size or real.shape[0], generator, self.rng)
        y = self.conditions
        y_fake = None if y is None else cycled(y, z.shape[0])
        with untouched(generator, discriminator, device=z.device):
            try:
                fake = _call(generator, z, y_fake)
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor's probe failed calling `pl_module.{self.generator_attr}` on latent vectors of shape "
                    f"{tuple(z.shape)}: {err}. Set `GANMonitor(latent_dim=...)` to the shape one latent vector has, "
                    f"or return '{self.d_real_key}' and '{self.d_fake_key}' from `training_step` instead"
                    f"{self._conditional_hint()}."
                ) from err
            try:
                d_fake = _call(discriminator, fake, y_fake)
                d_real = _call(discriminator, real, y)
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor's probe failed calling `pl_module.{self.discriminator_attr}` on generated samples "
                    f"of shape {tuple(fake.shape)} and real samples of shape {tuple(real.shape)}: {err}. Check "
                    "`GANMonitor(real_key=...)`, or return the discriminator's outputs from `training_step` instead"
                    f"{self._conditional_hint()}."
                ) from err
        return d_real, d_fake

    def _conditional_hint(self) -> str:
        if self.condition_key is not None:
            return ""
        return (
            "; for a conditional GAN, set `GANMonitor(condition_key=...)` to the place of the labels in the batch: "
            "the monitor then calls generator(z, y) and discriminator(x, y)"
        )

    # ------------------------------------------------------------------ running the generator

    def latent(self, n: int, generator: nn.Module, rng: torch.Generator) -> Tensor:
        """``n`` latent vectors drawn from ``rng`` on its device, in the generator's floating dtype."""
        assert self.latent_shape is not None
        param = next(generator.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        return torch.randn((n, *self.latent_shape), generator=rng, device=rng.device, dtype=dtype)

    @torch.no_grad()
    def generate(self, pl_module: Any, z: Tensor, y: Tensor | None = None) -> Tensor:
        """G of ``z``, detached, training untouched.

        A conditional generator (``condition_key``) gets ``y`` (cycled to as many as ``z``), or else the latest real
        batch's conditions.
        """
        generator: nn.Module = getattr(pl_module, self.generator_attr)
        y = y if y is not None else self.conditions
        if y is not None:
            y = cycled(y, z.shape[0]).to(z.device)
        with untouched(generator, device=z.device):
            try:
                return _call(generator, z, y).detach()
            except Exception as err:
                raise RuntimeError(
                    f"GANMonitor failed calling `pl_module.{self.generator_attr}` on latent vectors of shape "
                    f"{tuple(z.shape)} for the diversity metrics or image grids: {err}. Set "
                    f"`GANMonitor(latent_dim=...)`, or return generated samples as '{self.fake_key}' from "
                    f"`training_step`{self._conditional_hint()}."
                ) from err

    @torch.no_grad()
    def fixed_samples(self, pl_module: Any, n: int) -> Tensor:
        """G of the same ``n`` latent vectors at every call (the diversity checks'), detached, training untouched.

        The vectors are drawn once from a CPU generator seeded by ``seed`` (and the process's rank, so that under DDP
        every process brings its own), so a resumed run draws the same ones and the distance G's outputs moved
        between two checks measures what G learned. A conditional generator gets the first batch's conditions.
        """
        generator: nn.Module = getattr(pl_module, self.generator_attr)
        cached = self._fixed_latent
        if cached is None or cached.shape[0] != n:
            assert self.latent_shape is not None
            dist = torch.distributed
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            cpu = torch.Generator().manual_seed(self.seed + 2 + 1_000_003 * rank)
            param = next(generator.parameters(), None)
            dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
            cached = self._fixed_latent = torch.randn((n, *self.latent_shape), generator=cpu).to(
                pl_module.device, dtype
            )
        y = self.first_conditions if self.first_conditions is not None else self.conditions
        return self.generate(pl_module, z=cached, y=y)

    def state_dict(self) -> dict[str, Tensor | None]:
        """The probe generator's state (or the one loaded and not yet applied)."""
        return {"rng": self.rng.get_state() if self.rng is not None else self.rng_states.get("rng")}
