"""``GANMonitor`` for the ``pytorch_lightning`` package (also ``lightning_gan_monitor.GANMonitor``, the 0.1 name).

Only this module imports ``pytorch_lightning``; the implementation, shared with
:mod:`lightning_gan_monitor.lightning`, is :class:`~lightning_gan_monitor.callback.GANMonitorBase`.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import Callback

from lightning_gan_monitor.callback import GANMonitorBase, GANMonitorWarning

__all__ = ["GANMonitor", "GANMonitorWarning"]


class GANMonitor(GANMonitorBase, Callback):
    r"""Watch a GAN while it trains: scores, failure diagnoses with remedies, and early stopping.

    A ``pytorch_lightning.Callback``; its arguments, attributes and behaviour are those of
    :class:`~lightning_gan_monitor.callback.GANMonitorBase`.

    Example:
        >>> import pytorch_lightning as pl
        >>> from lightning_gan_monitor import GANMonitor
        >>> isinstance(GANMonitor(from_logits=True), pl.Callback)
        True

    """
