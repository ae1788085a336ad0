"""``GANMonitor`` for a Lightning Fabric loop: the same monitor, driven by the loop instead of a ``Trainer``'s hooks.

The monitor's hooks (:class:`~lightning_gan_monitor.callback.GANMonitorBase`) read a few things from a ``Trainer``
and a ``LightningModule``; here a :class:`_FabricTrainer` answers them from a ``Fabric`` (``fabric.all_gather``,
``fabric.loggers``, ``world_size``, ``is_global_zero``) and a :class:`_Models` from the generator and discriminator
the loop hands over. Everything else (sources, the device buffer and its one read-back, the rules, the messages, the
summary, checkpoints) is the Trainer path's own code. This module imports neither Lightning package: any object
with a Fabric's attributes will do, from ``lightning.fabric`` or ``lightning_fabric``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from lightning_gan_monitor.callback import GANMonitorBase, GANMonitorWarning

__all__ = ["DEFAULT_LOG_EVERY", "GANMonitor", "GANMonitorWarning"]

#: Log points every this many batches when ``log_every_n_batches`` is None (a Fabric has no ``log_every_n_steps``):
#: the Trainer's default, and the cadence at which Lightning's Fabric DCGAN example prints D(x) and D(G(z)).
DEFAULT_LOG_EVERY = 50

_FABRIC_WRAPPERS = ("lightning.fabric.wrappers", "lightning_fabric.wrappers")


class _FabricTrainer:
    """What the monitor's hooks read from a ``Trainer``, answered by a ``Fabric`` (one per fit)."""

    def __init__(self, fabric: Any, monitor: GANMonitor) -> None:
        self.fabric = fabric
        self.callbacks = [monitor]
        self.log_every_n_steps = DEFAULT_LOG_EVERY
        self.callback_metrics: dict[str, Tensor] = {}  # what the monitor logged last (its `metrics`)
        self.should_stop = False
        self.current_epoch = 0
        # one collective per check under DDP, through the fabric of the latest call
        self.strategy = SimpleNamespace(all_gather=lambda tensor: self.fabric.all_gather(tensor))

    @property
    def is_global_zero(self) -> bool:
        return bool(self.fabric.is_global_zero)

    @property
    def world_size(self) -> int:
        return int(self.fabric.world_size)

    @property
    def loggers(self) -> list[Any]:
        return list(self.fabric.loggers)  # what `fabric.log_dict` logs to


class _Models:
    """What the monitor's hooks read from a ``LightningModule``: its device and the generator and discriminator."""

    def __init__(self, device: Any, monitor: GANMonitor) -> None:
        self.device = device
        self._names = {"generator": monitor.generator_attr, "discriminator": monitor.discriminator_attr}

    def give(self, **models: nn.Module | None) -> None:
        """Keep the models given (the latest of each); a model set up by Fabric is unwrapped (see :func:`_unwrap`)."""
        for role, model in models.items():
            if model is not None:
                setattr(self, self._names[role], _unwrap(model))

    def has(self, role: str) -> bool:
        return hasattr(self, self._names[role])


def _unwrap(model: nn.Module) -> nn.Module:
    """The module ``fabric.setup`` wrapped, else ``model``.

    The monitor runs G and D outside the training step (probes, grids on rank zero only): through the DDP wrapper,
    whose forward synchronises buffers across processes, a forward on one rank alone would wait for the others.
    """
    for name in _FABRIC_WRAPPERS:
        wrappers = sys.modules.get(name)
        if wrappers is not None and isinstance(model, wrappers._FabricModule):
            return model.module
    return model


def _no_discriminator(*args: Any, **kwargs: Any) -> Tensor:
    raise RuntimeError("GANMonitor needs `discriminator=` (in `update`) to probe the discriminator")


class GANMonitor(GANMonitorBase):
    r"""Watch a GAN trained in a Lightning Fabric loop: scores, failure diagnoses with remedies, and early stopping.

    The monitor of :class:`~lightning_gan_monitor.callback.GANMonitorBase` (the same arguments, rules, messages,
    attributes and checkpoints), fed by the loop. Call :meth:`update` once per training batch with D's outputs on
    the real and on the generated batch, leave the loop when :attr:`should_stop` is True, and call :meth:`end` once
    after it (the batches since the last check are judged, the summary is written); :meth:`end_epoch` after each
    epoch draws the image grids. Or register it, ``Fabric(callbacks=[monitor])``, and call the same through
    ``fabric.call("on_train_batch_end", ...)``, ``"on_train_epoch_end"`` and ``"on_train_end"``.

    Every process must call ``update`` the same number of times and ``end`` once (under DDP a check gathers a small
    buffer from every process, and every process then decides from the same numbers: the stop falls on the same
    batch everywhere). Scores go to ``fabric.loggers`` (what ``fabric.log_dict`` logs to); a ``TensorBoardLogger``
    gets the score chart, the diagnoses, the summary and the grids too.

    Attributes:
        metrics: the values logged at the latest log point (``gan/generator_score``, ... as 0-d tensors), the Fabric
            counterpart of ``trainer.callback_metrics``.

    Example:
        >>> from lightning_gan_monitor.fabric import GANMonitor
        >>> monitor = GANMonitor(patience=50, latent_dim=[16, 1, 1])
        >>> monitor.should_stop
        False
        >>> GANMonitor(patience=-3)
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be a positive integer, got -3

    """

    def _build(self) -> None:
        super()._build()
        self._fabric: Any = None  # the Fabric that set it up (`Fabric(callbacks=[monitor])`), for `fabric.call`
        self._trainer: _FabricTrainer | None = None
        self._models: _Models | None = None
        self._running = False  # between the first `update` of a run and its `end`
        self._fresh = True  # built or loaded: the next fit starts from this state, not a reset one
        self._batch_in_epoch = 0

    @property
    def should_stop(self) -> bool:
        """Whether the monitor asks the loop to stop (the same on every process)."""
        return self._trainer is not None and self._trainer.should_stop

    @property
    def metrics(self) -> dict[str, Tensor]:
        """The values logged at the latest log point, as 0-d tensors (empty before the first run)."""
        return self._trainer.callback_metrics if self._trainer is not None else {}

    # ------------------------------------------------------------------ the object API

    def update(
        self,
        fabric: Any,
        d_real: Tensor | None = None,
        d_fake: Tensor | None = None,
        *,
        losses: Sequence[Tensor] = (),
        fake: Tensor | None = None,
        batch: Any = None,
        batch_idx: int | None = None,
        generator: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        generator_stepped: bool = True,
    ) -> bool:
        """Take one training batch; returns :attr:`should_stop`.

        Only references are kept on an ordinary batch (no synchronisation); every ``check_every_n_batches`` they
        are summed on the device and read back once, and the rules decide.

        Args:
            fabric: the ``Fabric`` that trains.
            d_real: D's outputs on the real batch (probabilities, or logits: see ``from_logits``).
            d_fake: D's outputs on the generated batch. Leave both out to let the monitor probe ``generator`` and
                ``discriminator`` every ``probe_every_n_batches`` (it then needs ``batch`` and ``latent_dim``).
            losses: the step's losses, watched for NaN/inf with D's outputs (``check_finite``).
            fake: the generated batch, for the diversity metrics (else the monitor runs ``generator``).
            batch: the training batch (the real samples at ``real_key``): the diversity metrics' reference, the grid
                of real samples, and what a probe feeds D; without it the diversity checks are off.
            batch_idx: the batch's index in its epoch; None counts the updates since the last :meth:`end_epoch`.
            generator: the generator, for image grids, diversity checks without ``fake`` and probes; given once, it
                is kept (the module ``fabric.setup`` returned or the one given to it).
            discriminator: the discriminator, needed only to probe.
            generator_stepped: whether the generator took an optimizer step in this batch (False on the batches of
                extra critic steps, with several D steps per G step): the mode-collapse rule waits for the
                generator's updates (the count a Trainer takes from the optimizers' steps).

        Raises:
            ValueError: when only one of ``d_real`` and ``d_fake`` is given, or neither and the models to probe are
                missing (the message names the arguments).
        """
        if (d_real is None) != (d_fake is None):
            raise ValueError("GANMonitor.update needs both `d_real` and `d_fake` (or neither, to probe), got one")
        outputs: dict[str, Tensor] = {}
        if d_real is not None and d_fake is not None:
            outputs = {self.d_real_key: d_real, self.d_fake_key: d_fake}
            if fake is not None:
                outputs[self.fake_key] = fake
            # every floating tensor besides D's outputs and the samples counts as a loss (as in `training_step`'s dict)
            outputs.update({f"loss_{i}": loss for i, loss in enumerate(losses)})
        elif losses:  # probing: under the one key that a dict of D's outputs may lack without a warning
            outputs = {"loss": torch.cat([loss.detach().reshape(-1) for loss in losses])}
        self._step(fabric, outputs, batch, batch_idx, generator, discriminator, generator_stepped)
        return self.should_stop

    def end_epoch(self, fabric: Any, generator: nn.Module | None = None) -> None:
        """An epoch ended: the grids of ``G(z)`` every ``image_every_n_epochs`` (rank zero, TensorBoard).

        It also closes the diversity metrics' reservoir of real samples after a whole epoch. Optional: without it,
        no grids, and the reservoir keeps offering its places to every batch.
        """
        if not self._running:
            return  # no batch this run
        assert self._models is not None
        self._models.give(generator=generator)
        self._end_epoch(fabric)

    def end(self, fabric: Any) -> None:
        """Training is over (stopped or not): judge the last batches, log them, write the summary (``summary``).

        Call it on every process (under DDP it gathers once more). The next :meth:`update` starts a new run.
        """
        if not self._running:
            return
        assert self._trainer is not None and self._models is not None
        self._trainer.fabric = fabric
        GANMonitorBase.on_train_end(self, self._trainer, self._models)  # type: ignore[arg-type]
        self._running = self._fresh = False  # `should_stop` and `metrics` stay readable until the next run

    # ------------------------------------------------------------------ Fabric's callbacks (`fabric.call`)

    def on_after_setup(self, fabric: Any, module: Any) -> None:
        """Called by ``fabric.setup(...)`` when the monitor is in ``Fabric(callbacks=[...])``: remembers the fabric."""
        self._fabric = fabric

    def on_train_batch_end(  # type: ignore[override]
        self,
        outputs: Mapping[str, Any] | None = None,
        batch: Any = None,
        batch_idx: int | None = None,
        *,
        d_real: Tensor | None = None,
        d_fake: Tensor | None = None,
        losses: Sequence[Tensor] = (),
        fake: Tensor | None = None,
        generator: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        generator_stepped: bool = True,
    ) -> None:
        """:meth:`update` through ``fabric.call("on_train_batch_end", ...)``, for ``Fabric(callbacks=[monitor])``.

        Either ``fabric.call("on_train_batch_end", outputs, batch, batch_idx)`` with ``outputs`` a dict holding
        ``d_real_key`` and ``d_fake_key`` (as a ``training_step`` returns them; its other floating tensors are
        watched as losses), or ``fabric.call("on_train_batch_end", d_real=..., d_fake=..., batch=...)`` with the
        keywords of :meth:`update`.
        """
        fabric = self._registered_fabric()
        if outputs is None:
            models = {"generator": generator, "discriminator": discriminator}
            self.update(
                fabric, d_real, d_fake, losses=losses, fake=fake, batch=batch, batch_idx=batch_idx,
                generator_stepped=generator_stepped, **models,
            )  # fmt: skip
        else:
            self._step(fabric, outputs, batch, batch_idx, generator, discriminator, generator_stepped)

    def on_train_epoch_end(self, generator: nn.Module | None = None) -> None:  # type: ignore[override]
        """``fabric.call("on_train_epoch_end")``: :meth:`end_epoch`."""
        self.end_epoch(self._registered_fabric(), generator)

    def on_train_end(self) -> None:  # type: ignore[override]
        """``fabric.call("on_train_end")``: :meth:`end`."""
        self.end(self._registered_fabric())

    def _registered_fabric(self) -> Any:
        if self._fabric is None:
            raise RuntimeError(
                "GANMonitor was called through `fabric.call(...)` before any `fabric.setup(...)`: put it in "
                "`Fabric(callbacks=[monitor])` and set up the models first, or call `monitor.update(fabric, ...)`"
            )
        return self._fabric

    # ------------------------------------------------------------------ glue to the Trainer path's hooks

    def _step(
        self,
        fabric: Any,
        outputs: Mapping[str, Any],
        batch: Any,
        batch_idx: int | None,
        generator: nn.Module | None,
        discriminator: nn.Module | None,
        generator_stepped: bool = True,
    ) -> None:
        if not self._running:
            self._start(fabric, generator, discriminator, probing=self.d_real_key not in outputs)
        assert self._trainer is not None and self._models is not None
        # no optimizer hook in a Fabric loop: the loop says whether G stepped (the mode-collapse rule waits for it)
        self._generator_updates = (self._generator_updates or 0) + int(generator_stepped)
        self._trainer.fabric = fabric
        self._models.give(generator=generator, discriminator=discriminator)
        index = self._batch_in_epoch if batch_idx is None else batch_idx
        self._batch_in_epoch += 1
        GANMonitorBase.on_train_batch_end(self, self._trainer, self._models, outputs, batch, index)  # type: ignore[arg-type]

    def _start(self, fabric: Any, generator: nn.Module | None, discriminator: nn.Module | None, probing: bool) -> None:
        """The first batch of a run: what ``setup`` and ``on_fit_start`` do in a Trainer."""
        if (probing or self.source == "probe") and (generator is None or discriminator is None):
            why = (
                "got no `d_real` and `d_fake`; pass them (D's outputs on the real and the generated batch), or"
                if probing
                else "probes (`source='probe'`):"
            )
            raise ValueError(f"GANMonitor.update {why} pass `generator=`, `discriminator=` and `batch=` to probe")
        if not self._fresh:  # a second run with the same monitor: start afresh, as `setup` does for each fit
            self._reset_run_state()
        self._fresh, self._running = False, True
        self._batch_in_epoch = 0
        self._trainer = _FabricTrainer(fabric, self)
        self._models = _Models(fabric.device, self)
        self._models.give(generator=generator, discriminator=discriminator)
        if self._models.has("generator") and not self._models.has("discriminator"):
            # D is needed only to probe, and the outputs are given: grids and diversity checks need G alone
            setattr(self._models, self.discriminator_attr, _no_discriminator)
        self.on_fit_start(self._trainer, self._models)  # type: ignore[arg-type]

    def _end_epoch(self, fabric: Any) -> None:
        assert self._trainer is not None and self._models is not None
        self._trainer.fabric = fabric
        GANMonitorBase.on_train_epoch_end(self, self._trainer, self._models)  # type: ignore[arg-type]
        self._trainer.current_epoch += 1
        self._batch_in_epoch = 0

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (e.g. saved with ``fabric.save(path, {"monitor": monitor.state_dict()})``).

        Load it before the first :meth:`update`: the run then carries on from that state.
        """
        super().load_state_dict(state_dict)
        self._fresh = True
