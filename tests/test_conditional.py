"""A conditional GAN (G(z, y), D(x, y)), shaped like a small conditional DCGAN, monitored by probing with labels."""

import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import make_trainer, read_events
from pytorch_lightning.loggers import TensorBoardLogger
from template_gan import digit_images_loader
from torch import nn

from lightning_gan_monitor import GANMonitor, GANMonitorWarning


class Generator(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.project = nn.Linear(latent_dim + 8, 32 * 2 * 2)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.ConvTranspose2d(16, 1, 4, 2, 1)
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y)], dim=1)).view(-1, 32, 2, 2)
        return torch.tanh(self.up(h))


class Discriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, 32, 4, 2, 1))
        self.head = nn.Linear(32 * 2 * 2 + 8, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([F.leaky_relu(self.conv(x), 0.2).flatten(1), self.embed(y)], dim=1))


class ConditionalGAN(pl.LightningModule):
    """Manual optimisation, logits, `training_step` returns nothing: the monitor has to probe, with labels."""

    def __init__(self, latent_dim: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator, self.discriminator = Generator(latent_dim), Discriminator()

    def training_step(self, batch, batch_idx) -> None:
        images, labels = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(images), self.hparams.latent_dim)
        fake = self.generator(z, labels)
        d_real, d_fake = self.discriminator(images, labels), self.discriminator(fake.detach(), labels)
        d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        d_loss = d_loss + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_out = self.discriminator(fake, labels)
        g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()

    def configure_optimizers(self):
        return [
            torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (self.generator, self.discriminator)
        ]


def train(tmp_path, callbacks, epochs=4, logger=False) -> ConditionalGAN:
    pl.seed_everything(0)
    model = ConditionalGAN()
    make_trainer(tmp_path, callbacks, max_epochs=epochs, logger=logger).fit(model, digit_images_loader(batch_size=64))
    return model


def test_conditional_gan_is_probed_with_its_labels_and_training_is_untouched(tmp_path):
    monitor = GANMonitor(condition_key=1, diversity_every_n_batches=50, image_every_n_epochs=2)
    logger = TensorBoardLogger(tmp_path, name="tb")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GANMonitorWarning)  # nothing failed, nothing was turned off
        watched = train(tmp_path, [monitor], logger=logger)
    assert monitor.source_in_use == "probe" and monitor.reading == "logits"
    assert 0 < monitor.scores["generator_score"] < 1 and monitor.diversity["diversity"] > 0  # probed G(z, y)
    assert monitor.state_dict()["fixed_conditions"] is not None and len(monitor.state_dict()["fixed_conditions"]) == 64
    events = read_events(logger.log_dir)
    assert [e.step for e in events.Images("gan/samples")] == [58, 116]  # G(z, y) of the fixed z and labels
    # the monitor's probes, diversity checks and grids leave the training as it would have been without it
    alone = train(tmp_path / "alone", [])
    for (name, a), b in zip(watched.state_dict().items(), alone.state_dict().values()):
        assert torch.equal(a, b), name
    # the labels of the grids travel in checkpoints
    assert torch.equal(monitor.state_dict()["fixed_conditions"], monitor.state_dict()["fixed_conditions"])


def test_conditional_gan_without_condition_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(RuntimeError, match=r"For a conditional GAN, set `GANMonitor\(condition_key=...\)`"):
        train(tmp_path, [GANMonitor(latent_dim=16)], epochs=1)


def test_condition_key_must_name_another_entry_than_the_real_samples():
    with pytest.raises(ValueError, match=r"`condition_key` must be None, or an int index or a string key .* got 0"):
        GANMonitor(condition_key=0)
