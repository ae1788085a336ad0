"""``GANMonitor`` for a Lightning Fabric loop: the plain-loop monitor with a ``Fabric`` as its host.

A ``Fabric`` gives what the core asks for: ``fabric.device``, ``fabric.all_gather``, ``fabric.is_global_zero`` and
``fabric.loggers`` (what ``fabric.log_dict`` logs to). The monitor can also be registered,
``Fabric(callbacks=[monitor])``, and driven through ``fabric.call(...)``. This module imports neither Lightning
package: any object with a Fabric's attributes will do, from ``lightning.fabric`` or ``lightning_fabric``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from lightning_gan_monitor.base import DEFAULT_LOG_EVERY, Host, LoopMonitor
from lightning_gan_monitor.diagnosis import GANMonitorWarning

__all__ = ["DEFAULT_LOG_EVERY", "GANMonitor", "GANMonitorWarning"]


def _host(fabric: Any) -> Host:
    gather = fabric.all_gather if int(fabric.world_size) > 1 else None
    return Host(fabric.device, gather, bool(fabric.is_global_zero), list(fabric.loggers))


class GANMonitor(LoopMonitor):
    r"""Watch a GAN trained in a Lightning Fabric loop: scores, failure diagnoses with remedies, and early stopping.

    The arguments, rules, messages, attributes and checkpoints of the Lightning callback. Call :meth:`update` once
    per training batch with D's outputs on the real and on the generated batch and the batch itself, leave the loop
    when :attr:`should_stop` is True, and call :meth:`end` once after it (without it the last batches are not
    judged and no summary is written); :meth:`end_epoch` after each epoch draws the pictures of ``G(z)``. Or
    register it, ``Fabric(callbacks=[monitor])``, and call the same through ``fabric.call("on_train_batch_end",
    ...)``, ``"on_train_epoch_end"`` and ``"on_train_end"``.

    Every process must call ``update`` the same number of times and ``end`` once (under DDP a check gathers a small
    buffer from every process, and every process then decides from the same numbers: the stop falls on the same
    batch everywhere). Scores go to ``fabric.loggers``; a ``TensorBoardLogger`` gets the score chart, the
    diagnoses, the summary and the pictures too.

    Attributes:
        metrics: the values logged at the latest log point (``gan/generator_score``, ... as 0-d tensors), the Fabric
            counterpart of ``trainer.callback_metrics``.

    Example:
        >>> from lightning_gan_monitor.fabric import GANMonitor
        >>> monitor = GANMonitor(patience=50, latent_dim=[16, 1, 1])
        >>> monitor.should_stop
        False

    """

    def _build(self) -> None:
        super()._build()
        self._fabric: Any = None  # the Fabric that set it up (`Fabric(callbacks=[monitor])`), for `fabric.call`

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

        The arguments after ``fabric`` (the ``Fabric`` that trains) are those of
        :meth:`lightning_gan_monitor.loop.GANMonitor.update`; a model set up by Fabric is unwrapped.

        Raises:
            ValueError: when only one of ``d_real`` and ``d_fake`` is given, or neither and the models to probe are
                missing (the message names the arguments).
        """
        return self._feed(
            _host(fabric), d_real, d_fake, losses=losses, fake=fake, batch=batch, batch_idx=batch_idx,
            generator=generator, discriminator=discriminator, generator_stepped=generator_stepped,
        )  # fmt: skip

    def end_epoch(self, fabric: Any, generator: nn.Module | None = None) -> None:
        """An epoch ended: the pictures of ``G(z)`` every ``image_every_n_epochs`` (rank zero, TensorBoard).

        It also closes the diversity metrics' reservoir of real samples after a whole epoch. Optional: without it,
        no pictures, and the reservoir keeps offering its places to every batch.
        """
        self._end_epoch(_host(fabric), generator)

    def end(self, fabric: Any) -> None:
        """Training is over (stopped or not): judge the last batches, log them, write the summary (``summary``).

        Call it on every process (under DDP it gathers once more). The next :meth:`update` starts a new run.
        """
        self._end(_host(fabric))

    # ------------------------------------------------------------------ Fabric's callbacks (`fabric.call`)

    def on_after_setup(self, fabric: Any, module: Any) -> None:
        """Called by ``fabric.setup(...)`` when the monitor is in ``Fabric(callbacks=[...])``: remembers the fabric."""
        self._fabric = fabric

    def on_train_batch_end(
        self, outputs: Mapping[str, Any] | None = None, batch: Any = None, batch_idx: int | None = None, **keywords: Any
    ) -> None:
        """:meth:`update` through ``fabric.call("on_train_batch_end", ...)``, for ``Fabric(callbacks=[monitor])``.

        Either ``fabric.call("on_train_batch_end", outputs, batch, batch_idx)`` with ``outputs`` a dict holding
        ``d_real_key`` and ``d_fake_key`` (as a ``training_step`` returns them; its other floating tensors are
        watched as losses, ``fake_key`` holds the samples), or ``fabric.call("on_train_batch_end", d_real=...,
        d_fake=..., batch=...)`` with the keywords of :meth:`update`.
        """
        if outputs is not None:
            keys = (self.d_real_key, self.d_fake_key, self.fake_key)
            keywords["d_real"], keywords["d_fake"] = outputs.get(self.d_real_key), outputs.get(self.d_fake_key)
            keywords.setdefault("fake", outputs.get(self.fake_key))
            keywords.setdefault(
                "losses",
                [v for k, v in outputs.items() if k not in keys and isinstance(v, Tensor) and v.is_floating_point()],
            )
        self.update(self._registered_fabric(), batch=batch, batch_idx=batch_idx, **keywords)

    def on_train_epoch_end(self, generator: nn.Module | None = None) -> None:
        """``fabric.call("on_train_epoch_end")``: :meth:`end_epoch`."""
        self.end_epoch(self._registered_fabric(), generator)

    def on_train_end(self) -> None:
        """``fabric.call("on_train_end")``: :meth:`end`."""
        self.end(self._registered_fabric())

    def _registered_fabric(self) -> Any:
        if self._fabric is None:
            raise RuntimeError(
                "GANMonitor was called through `fabric.call(...)` before any `fabric.setup(...)`: put it in "
                "`Fabric(callbacks=[monitor])` and set up the models first, or call `monitor.update(fabric, ...)`"
            )
        return self._fabric
