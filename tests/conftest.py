import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from digits_gan import DigitsGAN, load_digits_tensor, make_dataloader  # noqa: E402
from packages import TRAINER_DEFAULTS  # noqa: E402


def read_events(log_dir) -> EventAccumulator:
    """Every scalar, text and image a TensorBoard run folder holds."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    events.Reload()
    return events


class RecordOutputs(pl.Callback):
    """Keeps every batch's D outputs as returned by `training_step`, to compute reference scores in tests."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs:
            self.batches.append((outputs["d_real"].detach().clone(), outputs["d_fake"].detach().clone()))


def make_trainer(tmp_path: Path, callbacks: list, **kwargs) -> pl.Trainer:
    return pl.Trainer(callbacks=callbacks, **{"default_root_dir": tmp_path, **TRAINER_DEFAULTS, **kwargs})


def fit_digits(
    tmp_path: Path, callbacks: list, seed: int = 0, epochs: int = 60, trainer_kwargs: dict | None = None, **gan_kwargs
) -> tuple[DigitsGAN, pl.Trainer]:
    """Train the example's digits GAN on the '3's: 5 batches of 32 per epoch, so 60 epochs are 300 batches."""
    pl.seed_everything(seed)
    model = DigitsGAN(**gan_kwargs)
    trainer = make_trainer(tmp_path, callbacks, max_epochs=epochs, **(trainer_kwargs or {}))
    trainer.fit(model, make_dataloader(load_digits_tensor(3), seed=seed))
    return model, trainer


@pytest.fixture
def digits() -> torch.Tensor:
    return load_digits_tensor(3)
