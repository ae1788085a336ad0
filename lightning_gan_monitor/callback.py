"""The Lightning adapter: a ``Trainer``'s hooks in, the core's verdict out to ``trainer.loggers`` and its stop flag.

It finds D's outputs in what ``training_step`` returned and hands them, the batch and the module's generator and
discriminator to the core (:class:`~lightning_gan_monitor.monitor.Monitor`). This module imports neither Lightning
package (see ``pytorch_lightning.py`` and ``lightning.py`` for the two callback classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning_utilities.core.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_gan_monitor import tensorboard
from lightning_gan_monitor.base import MonitorBase
from lightning_gan_monitor.diagnosis import GANMonitorWarning
from lightning_gan_monitor.sources import Models, Observation

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["GANMonitorBase", "GANMonitorWarning"]


class GANMonitorBase(MonitorBase):
    r"""Watch a GAN while it trains: scores, failure diagnoses with remedies, and early stopping.

    The implementation shared by the callback of each Lightning package; use the one of yours:
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
    training batches. An ordinary batch only keeps references to D's outputs (no tensor operation, no host-device
    synchronisation); every ``check_every_n_batches`` the pending batches are summed into a small buffer on the
    module's device and read back once, and the rules run as plain Python over those numbers, so training stops up
    to that many batches after a rule's patience ran out (the message names both). The attributes are those of
    :class:`~lightning_gan_monitor.base.MonitorBase`.

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

    @override
    def _build(self) -> None:
        super()._build()
        # Lightning reads `state_key` around every hook of every batch: built once, from the frozen configuration.
        # The prefix counts only when it is not the default, so checkpoints of monitors without one keep their key.
        c = self.config
        named = dict(d_real_key=c.d_real_key, d_fake_key=c.d_fake_key, generator_attr=c.generator_attr)
        named.update(discriminator_attr=c.discriminator_attr, **({"prefix": c.prefix} if c.prefix != "gan/" else {}))
        self._state_key = self._generate_state_key(**named)

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._monitor.reset()  # a fresh start per fit (which also avoids double counts after a `ddp_spawn`)
        sharing = [c for c in trainer.callbacks if isinstance(c, GANMonitorBase) and c.prefix == self.prefix]
        if len(sharing) > 1 and sharing[0] is self:
            rank_zero_warn(
                f"{len(sharing)} GANMonitors in one Trainer log under the same `prefix={self.prefix!r}`, so their "
                "logged values mix in every logger (each one's `failure`, `diagnoses`, stop decision and checkpoint "
                "state stay its own). Give each its own, e.g. `GANMonitor(prefix='d2/')`.",
                category=GANMonitorWarning,
            )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hparams = getattr(pl_module, "hparams", {})
        latent = hparams.get("latent_dim") if isinstance(hparams, Mapping) else None
        attrs = (self.generator_attr, self.discriminator_attr)
        self._models = Models(
            *(getattr(pl_module, attr, None) for attr in attrs),
            device=pl_module.device,
            latent_dim=latent if latent is not None else getattr(pl_module, "latent_dim", None),
            names=tuple(f"`pl_module.{attr}`" for attr in attrs),  # type: ignore[arg-type]
            how_to_give=tuple(  # type: ignore[arg-type]
                f"the module has no callable `{attr}` attribute; set `GANMonitor({name}=...)` to the attribute "
                "that holds it"
                for attr, name in zip(attrs, ("generator_attr", "discriminator_attr"))
            ),
        )
        self._gather = trainer.strategy.all_gather if trainer.world_size > 1 else None
        verdict = self._monitor.start(self._models, trainer.log_every_n_steps, trainer.is_global_zero)
        monitors = [c for c in trainer.callbacks if isinstance(c, GANMonitorBase)]
        if monitors[0] is self and trainer.is_global_zero:  # one layout per run: the first monitor writes them all
            for writer in self._writers(trainer.loggers):
                tensorboard.write_score_layout(writer, list(dict.fromkeys(m.prefix for m in monitors)))
        self._publish(verdict, trainer.loggers, trainer.is_global_zero)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        first = self._monitor.batches_seen == 0
        given, losses, missing = self._given(outputs, first)
        verdict = self._monitor.update(
            batch, self._models, given=given, losses=losses, batch_idx=batch_idx, all_gather=self._gather,
            logged=lambda: trainer.callback_metrics, missing=missing,
        )  # fmt: skip
        if first and self._monitor.source == "probe" and isinstance(outputs, Mapping) and set(outputs) - {"loss"}:
            rank_zero_warn(
                f"GANMonitor: `training_step` returned a dict with keys {sorted(map(str, outputs))}, without "
                f"'{self.d_real_key}' and '{self.d_fake_key}' (D's outputs on the real and the generated batch). If "
                "two of those keys hold them, set `GANMonitor(d_real_key=..., d_fake_key=...)`; until then the "
                f"monitor probes `{self.generator_attr}` and `{self.discriminator_attr}` itself, every "
                f"{self.probe_every_n_batches} batches.",
                category=GANMonitorWarning,
            )
        if verdict is not None:
            # `trainer.callback_metrics` (its dict persists) for `ModelCheckpoint(monitor="gan/coverage")`
            self._publish(verdict, trainer.loggers, trainer.is_global_zero, trainer.callback_metrics)
            trainer.should_stop = trainer.should_stop or verdict.stop

    def _given(self, outputs: Any, first: bool) -> tuple[Observation | Exception | None, list[Tensor], str]:
        """D's outputs in what ``training_step`` returned (or why not), the losses beside them, what was missing."""
        try:
            return self._find(outputs, first)
        except (TypeError, ValueError) as err:  # the core raises it at the first batch, or turns the scores off
            return err, [], ""

    def _find(self, outputs: Any, first: bool) -> tuple[Observation | None, list[Tensor], str]:
        real_key, fake_key, samples_key = self.d_real_key, self.d_fake_key, self.fake_key
        mapping = isinstance(outputs, Mapping)
        if mapping and real_key in outputs and fake_key in outputs:
            tensors = []
            for key in (real_key, fake_key, samples_key):
                value = outputs.get(key)
                if (value is not None or key != samples_key) and not isinstance(value, Tensor):
                    what = "generated samples" if key == samples_key else "discriminator outputs"
                    raise TypeError(
                        f"GANMonitor expected `training_step`'s output '{key}' to be a tensor of {what}, got "
                        f"{type(value).__name__}"
                    )
                tensors.append(None if value is None else value.detach())  # no autograd graph outlives the step
            losses = _losses(outputs, (real_key, fake_key, samples_key))
            return Observation(tensors[0], tensors[1], losses, tensors[2]), [], ""  # type: ignore[arg-type]
        empty = outputs is None or (mapping and not outputs)  # a skipped step (manual optimisation turns None into {})
        if self._monitor.source == "outputs" and not empty:
            got = f"keys {sorted(map(str, outputs))}" if mapping else type(outputs).__name__
            raise ValueError(
                f"GANMonitor expected `training_step` to return a dict with '{real_key}' and '{fake_key}' (as it did "
                f"on the first batch), got {got}. Return them on every batch."
            )
        missing = ""
        if first:
            got = "nothing" if empty else f"a mapping with keys {sorted(map(str, outputs))}" if mapping else None
            missing = (
                f"`training_step` returned {got or f'a {type(outputs).__name__}'}. Return a dict with '{real_key}' and "
                f"'{fake_key}' (D's outputs on the real batch and on the generated batch, e.g. `return {{'loss': loss, "
                f"'{real_key}': d_real.detach(), '{fake_key}': d_fake.detach()}}`), or set "
                "`GANMonitor(d_real_key=..., d_fake_key=...)` to the keys you return"
            )
        return None, _losses(outputs, ()), missing

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self._monitor.optimizer_stepped(self._models.generator, optimizer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        every, draw = self.image_every_n_epochs, False
        if trainer.is_global_zero and every is not None and (trainer.current_epoch + 1) % every == 0:
            draw = bool(self._writers(trainer.loggers))  # (warns once when there is no TensorBoard)
        verdict = self._monitor.end_epoch(self._models, trainer.current_epoch, draw)
        self._publish(verdict, trainer.loggers, trainer.is_global_zero)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The batches since the last check are judged and counted too (a run's end rarely falls on a check), and
        # those since the last log point (a stop usually falls between two) still reach the loggers.
        self._publish(self._monitor.end(self._gather), trainer.loggers, trainer.is_global_zero)


def _losses(outputs: Any, skip: tuple[str, ...]) -> list[Tensor]:
    """The floating tensors ``training_step`` returned besides D's outputs and the samples (losses), detached."""
    if isinstance(outputs, Tensor):
        return [outputs.detach()] if outputs.is_floating_point() else []
    if not isinstance(outputs, Mapping):
        return []
    return [v.detach() for k, v in outputs.items() if k not in skip and isinstance(v, Tensor) and v.is_floating_point()]
