"""``GANMonitor`` for a plain PyTorch loop: call ``update`` once per batch, leave when ``should_stop``, then ``end``.

The adapter hands the core (:class:`~lightning_gan_monitor.monitor.Monitor`) what every loop has: D's outputs, the
batch, the models, the device, and under ``torch.distributed`` an ``all_gather`` and the rank. It logs to a
``torch.utils.tensorboard.SummaryWriter`` or any object with ``log_metrics(dict, step)``. The Fabric adapter
(:mod:`~lightning_gan_monitor.fabric`) shares its :class:`~lightning_gan_monitor.base.LoopMonitor`. Nothing here
imports Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning_utilities.core.rank_zero import rank_zero_only
from torch import Tensor, nn

from lightning_gan_monitor.base import DEFAULT_LOG_EVERY, Host, LoopMonitor, unwrap
from lightning_gan_monitor.diagnosis import GANMonitorWarning

__all__ = ["DEFAULT_LOG_EVERY", "GANMonitor", "GANMonitorWarning", "Host", "LoopMonitor", "unwrap"]


def _gather(tensor: Tensor) -> Tensor:
    """``tensor`` of every process, stacked (``torch.distributed``, any backend)."""
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


class GANMonitor(LoopMonitor):
    r"""Watch a GAN trained in a plain PyTorch loop: scores, failure diagnoses with remedies, and early stopping.

    The arguments, rules, messages, attributes and checkpoints of the Lightning callback, plus ``loggers``. Call
    :meth:`update` once per training batch with D's outputs on the real and on the generated batch (or with the
    models, to let it probe), leave the loop when :attr:`should_stop` is True, and call :meth:`end` once after it
    (the batches since the last check are judged, the summary is printed and written); :meth:`end_epoch` after
    each epoch draws the pictures of ``G(z)`` and closes the real samples' reservoir.

    Under ``torch.distributed`` (initialised before the first ``update``) every process must call ``update`` the
    same number of times and ``end`` once: a check gathers a small buffer from every process, and every process
    then decides from the same numbers, so the stop falls on the same batch everywhere.

    Args:
        loggers: where the values go: ``torch.utils.tensorboard.SummaryWriter`` objects (they also get the score
            chart, the diagnoses, the summary and the pictures) or any object with ``log_metrics(dict, step)``;
            under ``torch.distributed`` only rank zero writes to them.
        **arguments: the monitor's arguments (:class:`~lightning_gan_monitor.arguments.MonitorArguments`).

    Example:
        >>> import torch
        >>> from lightning_gan_monitor.loop import GANMonitor
        >>> monitor = GANMonitor(patience=5, diversity_every_n_batches=None, verbose=False)
        >>> for step in range(100):
        ...     if monitor.update(torch.full((8,), 0.99), torch.full((8,), 0.01)):
        ...         break
        >>> monitor.end()
        >>> monitor.failure.value, monitor.stopped_batch
        ('discriminator_dominates', 20)

    """

    def __init__(self, *, loggers: Sequence[Any] = (), **arguments: Any) -> None:
        super().__init__(**arguments)
        self.loggers = list(loggers)

    def _host(self, *tensors: Any) -> Host:
        dist = torch.distributed
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank = dist.get_rank() if distributed else 0
        if distributed:
            rank_zero_only.rank = rank  # (torchrun sets it through RANK; `mp.spawn` does not) the monitor says once
        device = next((t.device for t in tensors if isinstance(t, Tensor)), None)
        if device is None and self._models is not None:
            device = self._models.device
        if device is None:
            module = next((t for t in tensors if isinstance(t, nn.Module)), None)
            param = next(module.parameters(), None) if module is not None else None
            device = param.device if param is not None else torch.device("cpu")
        return Host(device, _gather if distributed else None, rank == 0, self.loggers if rank == 0 else [])

    def update(
        self,
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

        Args:
            d_real: D's outputs on the real batch (probabilities, logits or a critic's scores: see ``output``).
            d_fake: D's outputs on the generated batch. Leave both out to let the monitor probe ``generator`` and
                ``discriminator`` every ``probe_every_n_batches`` (it then needs ``batch`` and ``latent_dim``).
            losses: the step's losses, watched for NaN/inf with D's outputs (``check_finite``).
            fake: the generated batch, for the diversity metrics when the monitor cannot run ``generator``.
            batch: the training batch (the real samples at ``real_key``): the diversity metrics' reference, the
                pictures of real samples, and what a probe feeds D; without it the diversity checks are off.
            batch_idx: the batch's index in its epoch; None counts the updates since the last :meth:`end_epoch`.
            generator: the generator, for the diversity checks, pictures and probes; given once, it is kept.
            discriminator: the discriminator, needed only to probe.
            generator_stepped: whether the generator took an optimizer step in this batch (False on the batches of
                extra critic steps): the mode-collapse rule waits for the generator's updates.

        Raises:
            ValueError: when only one of ``d_real`` and ``d_fake`` is given, or neither and the monitor cannot probe
                (the message names the arguments).
        """
        host = self._host(d_real, generator)
        return self._feed(
            host, d_real, d_fake, losses=losses, fake=fake, batch=batch, batch_idx=batch_idx, generator=generator,
            discriminator=discriminator, generator_stepped=generator_stepped,
        )  # fmt: skip

    def end_epoch(self, generator: nn.Module | None = None) -> None:
        """An epoch ended: the pictures of ``G(z)`` every ``image_every_n_epochs`` (rank zero, TensorBoard)."""
        self._end_epoch(self._host(generator), generator)

    def end(self) -> None:
        """Training is over (stopped or not): judge the last batches, log them, write the summary (``summary``)."""
        self._end(self._host())
