"""``GANMonitor`` for the unified ``lightning`` package (``import lightning.pytorch as pl``).

Only this module imports ``lightning``, and it never imports ``pytorch_lightning``; the implementation, shared with
``lightning_gan_monitor.GANMonitor``, is :class:`~lightning_gan_monitor.callback.GANMonitorBase`.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from lightning_gan_monitor.callback import GANMonitorBase, GANMonitorWarning

__all__ = ["GANMonitor", "GANMonitorWarning"]


class GANMonitor(GANMonitorBase, Callback):
    r"""Watch a GAN while it trains: scores, failure diagnoses with remedies, and early stopping.

    A ``lightning.pytorch.Callback`` (for ``lightning.pytorch.Trainer`` and ``LightningCLI``); its arguments,
    attributes and behaviour are those of :class:`~lightning_gan_monitor.callback.GANMonitorBase`.

    Example:
        >>> import lightning.pytorch as pl
        >>> from lightning_gan_monitor.lightning import GANMonitor
        >>> isinstance(GANMonitor(from_logits=True), pl.Callback)
        True

    """
