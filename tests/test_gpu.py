"""Checks that need a CUDA device; skipped where there is none (CI has none)."""

from typing import Any

import pytest
import torch
from conftest import fit_digits

from lightning_gan_monitor import GANMonitor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class SyncCheckedMonitor(GANMonitor):
    """Raises if its hook synchronises with the device on a batch that is neither a check nor a log point."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        n = self.batches_seen + 1
        log_every = self.log_every_n_batches or trainer.log_every_n_steps
        ordinary = n > 1 and n % self.config.check_every and n % log_every
        if ordinary:
            self.ordinary_batches += 1
            torch.cuda.set_sync_debug_mode("error")
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    ordinary_batches = 0


@pytest.mark.parametrize("return_d_outputs", [True, False], ids=["outputs", "probing"])
def test_gpu_no_host_device_sync_on_ordinary_batches(tmp_path, return_d_outputs):
    monitor = SyncCheckedMonitor(from_logits=True, probe_every_n_batches=3)
    fit_digits(
        tmp_path,
        [monitor],
        epochs=20,
        trainer_kwargs=dict(accelerator="gpu", devices=1),
        return_d_outputs=return_d_outputs,
    )
    assert monitor.ordinary_batches > 50
    assert monitor.batches_seen > 50 and 0 <= monitor.scores["generator_score"] <= 1
