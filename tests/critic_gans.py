"""GANs whose discriminator is a critic: a WGAN-GP and a hinge GAN (SNGAN-style), on scikit-learn's 8x8 digits.

Shaped like the code people train: the WGAN-GP of Gulrajani et al. (2017) (no sigmoid, gradient penalty 10, Adam
1e-4 with betas (0.5, 0.9), five critic steps per generator step) and the hinge loss of SNGAN/BigGAN (spectral
norm in D, one D step per G step), both with Lightning's manual optimisation: a training batch is one critic step,
and the generator steps on every ``n_critic``-th batch. ``training_step`` returns the critic's scores on the real
and the generated batch, and the generated batch.

Failures are induced the way the digits example does: ``freeze_generator`` (the critic separates a fixed generator
perfectly: the critic dominates) and ``freeze_critic`` (the generator climbs a fixed critic until it scores its
samples above the real ones).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

IMAGE_DIM = 64


def _critic(hidden: int, spectral: bool) -> nn.Sequential:
    wrap = spectral_norm if spectral else (lambda layer: layer)
    return nn.Sequential(
        wrap(nn.Linear(IMAGE_DIM, hidden)),
        nn.LeakyReLU(0.2),
        wrap(nn.Linear(hidden, hidden)),
        nn.LeakyReLU(0.2),
        wrap(nn.Linear(hidden, 1)),
    )


class CriticGAN(pl.LightningModule):
    """A WGAN-GP (``loss="wgan-gp"``) or a hinge GAN (``loss="hinge"``) of MLPs on flat 8x8 images in [-1, 1]."""

    def __init__(
        self,
        loss: str = "wgan-gp",
        latent_dim: int = 16,
        hidden: int = 128,
        n_critic: int | None = None,
        lr_g: float | None = None,
        lr_d: float | None = None,
        freeze_generator: bool = False,
        freeze_critic: bool = False,
    ) -> None:
        super().__init__()
        if loss not in ("wgan-gp", "hinge"):
            raise ValueError(f"`loss` must be 'wgan-gp' or 'hinge', got {loss!r}")
        wgan = loss == "wgan-gp"
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.n_critic = n_critic if n_critic is not None else (5 if wgan else 1)
        self.lr_g = lr_g if lr_g is not None else (1e-4 if wgan else 2e-4)
        self.lr_d = lr_d if lr_d is not None else (1e-4 if wgan else 2e-4)
        self.betas = (0.5, 0.9) if wgan else (0.0, 0.9)
        self.generator = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, IMAGE_DIM),
            nn.Tanh(),
        )
        self.discriminator = _critic(hidden, spectral=not wgan)
        self.generator.requires_grad_(not freeze_generator)
        self.discriminator.requires_grad_(not freeze_critic)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.generator.parameters(), lr=self.lr_g, betas=self.betas),
            torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d, betas=self.betas),
        ]

    def _gradient_penalty(self, real: Tensor, fake: Tensor) -> Tensor:
        alpha = torch.rand(real.shape[0], 1, device=real.device)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(mixed).sum(), mixed, create_graph=True)
        return ((grad.norm(2, dim=1) - 1) ** 2).mean()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], self.hparams.latent_dim, device=self.device)
        fake = self.generator(z)
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        if self.hparams.loss == "wgan-gp":
            d_loss = d_fake.mean() - d_real.mean()
            if not self.hparams.freeze_critic:
                d_loss = d_loss + 10.0 * self._gradient_penalty(real, fake.detach())
        else:
            d_loss = torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean()
        if not self.hparams.freeze_critic:
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
        if batch_idx % self.n_critic == 0 and not self.hparams.freeze_generator:
            g_loss = -self.discriminator(fake).mean()
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
        return {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "fake": fake.detach()}
