"""The failure zoo's GAN families, written here after public code (not copied), on scikit-learn's 8x8 digits.

Each family keeps the shape of the code it follows, scaled to 8x8 images (1,797 digits, all ten classes, in [-1, 1],
batches of 64: 28 batches an epoch):

- ``lightning``: Lightning's GAN example (``examples/pytorch/domain_templates/generative_adversarial_net.py``): MLP
  generator with batch norm, a discriminator returning logits, ``binary_cross_entropy_with_logits``, manual
  optimisation, ``training_step`` returns nothing (the monitor probes), ``self.hparams.latent_dim``.
- ``tutorial``: the Lightning tutorials' basic GAN (``03-basic-gan``): the same generator, a discriminator ending in a
  sigmoid, ``binary_cross_entropy`` on probabilities; returns nothing.
- ``dcgan``: a batch-norm DCGAN with a sigmoid (PyTorch's DCGAN tutorial, bolts' ``DCGAN``): transposed convolutions,
  N(0, 0.02) initialisation, ``BCELoss``; returns nothing, latent shape ``(nz, 1, 1)``.
- ``wgangp``: a WGAN-GP (Gulrajani et al. 2017): an MLP critic, gradient penalty 10, Adam (0.5, 0.9), five critic
  steps per generator step; returns the critic's scores and the fakes.
- ``hinge``: an SNGAN-style hinge GAN: spectral norm in D, hinge loss, Adam (0.0, 0.9), one D step per G step.
- ``cgan``: a conditional GAN (PyTorch-GAN's ``cgan``, label embeddings concatenated to z and to the image), with
  ``BCEWithLogitsLoss``; returns D's outputs and the fakes; batches ``(images, labels)``.
- ``fabric``: Lightning's Fabric DCGAN example (``examples/fabric/dcgan/train_fabric.py``): the DCGAN's networks in
  a plain Fabric loop that calls ``monitor.update(fabric, d_real, d_fake, ...)``.

Induced conditions (:class:`Condition`) act at an onset batch: learning rates scaled (G frozen: 0; G slower; D frozen;
D faster), the generator's latent input zeroed (it ignores its noise) or snapped to three fixed vectors (a partial
collapse), or a NaN planted in D. They act inside the networks, so the monitor's own calls of G see them too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fabric_dcgan import weights_init

FAMILIES = ("lightning", "tutorial", "dcgan", "wgangp", "hinge", "cgan", "fabric")
CRITICS = ("wgangp", "hinge")
LATENT = 16
BATCH = 64


def digits(seed: int = 0, labels: bool = True) -> DataLoader:
    """All 1,797 digits as ``(images (B, 1, 8, 8) in [-1, 1], labels)``, 28 shuffled batches of 64 an epoch."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    parts = (images, torch.tensor(data.target)) if labels else (images,)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(*parts), batch_size=BATCH, shuffle=True, drop_last=True, generator=generator)


@dataclass(frozen=True)
class Condition:
    """What is done to a run from ``onset`` on (batches counted from 1)."""

    name: str = "healthy"
    onset: int = 0
    lr_g: float = 1.0  # G's learning rate is scaled by this from the onset
    lr_d: float = 1.0
    noise: str = "as is"  # "zeros": G ignores its noise; "three": G sees one of three fixed latent vectors
    nan: bool = False  # D's first weights become NaN at the onset


class Latent(nn.Module):
    """G's input as the condition wants it: as is, zeroed, or snapped to one of a few fixed vectors.

    ``mode``: "as is", "zeros", "three" (one of 3 fixed vectors) or "anchors" (one of ``anchors`` fixed vectors).
    """

    def __init__(self, anchors: int = 100) -> None:
        super().__init__()
        self.mode = "as is"
        self.register_buffer("three", torch.randn(3, LATENT, generator=torch.Generator().manual_seed(7)))
        self.register_buffer("anchors", torch.randn(anchors, LATENT, generator=torch.Generator().manual_seed(8)))

    def forward(self, z: Tensor) -> Tensor:
        if self.mode == "zeros":
            return torch.zeros_like(z)
        flat = z.reshape(z.shape[0], -1)
        if self.mode == "three":
            return self.three[flat[:, :3].argmax(dim=1)].to(z.dtype).reshape(z.shape)  # a third of the space each
        if self.mode == "anchors":  # a hash of the vector: the same z always meets the same anchor
            index = (flat[:, :8].abs() * 1e4).long().sum(dim=1) % self.anchors.shape[0]
            return self.anchors[index].to(z.dtype).reshape(z.shape)
        return z


class MLPGenerator(nn.Module):
    """Lightning's example's (and the tutorial's) generator: Linear blocks with batch norm, a tanh."""

    def __init__(self, conditional: bool = False, hidden: int = 64) -> None:
        super().__init__()
        self.latent = Latent()
        self.embed = nn.Embedding(10, 10) if conditional else None
        width = LATENT + (10 if conditional else 0)
        self.model = nn.Sequential(
            nn.Linear(width, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden),
            nn.BatchNorm1d(2 * hidden, 0.8),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, 64),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        z = self.latent(z)
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.model(z).view(z.shape[0], 1, 8, 8)


class MLPDiscriminator(nn.Module):
    """An MLP discriminator: logits, a sigmoid at the end, a critic (optionally spectrally normalised), conditional."""

    def __init__(
        self, end: str = "logit", spectral: bool = False, conditional: bool = False, hidden: int = 128
    ) -> None:
        super().__init__()
        wrap = spectral_norm if spectral else (lambda layer: layer)
        self.embed = nn.Embedding(10, 10) if conditional else None
        layers: list[nn.Module] = [
            wrap(nn.Linear(64 + (10 if conditional else 0), hidden)),
            nn.LeakyReLU(0.2),
            wrap(nn.Linear(hidden, hidden // 2)),
            nn.LeakyReLU(0.2),
            wrap(nn.Linear(hidden // 2, 1)),
        ]
        if end == "sigmoid":
            layers.append(nn.Sigmoid())
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        if self.embed is not None:
            x = torch.cat([x, self.embed(y)], dim=1)
        return self.model(x)


class ConvGenerator(nn.Module):
    """DCGAN's generator for 8x8: (B, nz, 1, 1) -> 2 -> 4 -> 8 pixels a side."""

    def __init__(self, width: int = 16, channels: int = 1) -> None:
        super().__init__()
        self.latent = Latent()
        w = width
        self.model = nn.Sequential(
            nn.ConvTranspose2d(LATENT, 4 * w, 2, 1, 0, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * w, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        self.apply(weights_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.model(self.latent(z))


class ConvDiscriminator(nn.Module):
    """DCGAN's discriminator for 8x8, ending in a sigmoid: 8 -> 4 -> 2 -> 1 pixels a side."""

    def __init__(self, width: int = 16, channels: int = 1) -> None:
        super().__init__()
        w = width
        self.model = nn.Sequential(
            nn.Conv2d(channels, w, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 1, 2, 1, 0, bias=False),
            nn.Sigmoid(),
        )
        self.apply(weights_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).reshape(x.shape[0], 1)


#: Per family: (learning rate of G and of D at the "base" setting, Adam betas, D steps per G step).
BASE = {
    "lightning": (2e-4, (0.5, 0.999), 1),
    "tutorial": (2e-4, (0.5, 0.999), 1),
    "dcgan": (2e-4, (0.5, 0.999), 1),
    "wgangp": (1e-4, (0.5, 0.9), 5),
    "hinge": (2e-4, (0.0, 0.9), 1),
    "cgan": (2e-4, (0.5, 0.999), 1),
    "fabric": (2e-4, (0.5, 0.999), 1),
}
#: The learning-rate settings: (G's, D's); "base" is the family's own.
LR_SETTINGS = {"base": None, "1e-3": (1e-3, 1e-3), "ttur": (1e-4, 4e-4)}


def networks(family: str) -> tuple[nn.Module, nn.Module]:
    """The family's generator and discriminator."""
    if family in ("dcgan", "fabric"):
        return ConvGenerator(), ConvDiscriminator()
    conditional = family == "cgan"
    if family == "tutorial":  # the tutorial's networks are the widest (G 128-256-512-1024, D 512-256 for MNIST)
        return MLPGenerator(hidden=128), MLPDiscriminator("sigmoid", hidden=256)
    return MLPGenerator(conditional), MLPDiscriminator(spectral=family == "hinge", conditional=conditional)


def latent_shape(family: str) -> tuple[int, ...]:
    """One latent vector's shape."""
    return (LATENT, 1, 1) if family in ("dcgan", "fabric") else (LATENT,)


def d_probabilities(family: str, outputs: Tensor) -> Tensor:
    """D's outputs as probabilities (for the ground truth); a critic's as a sigmoid of its scores."""
    return outputs if family in ("tutorial", "dcgan", "fabric") else torch.sigmoid(outputs)


class Adversary:
    """One family's networks, optimizers, loss and the induced condition: one training step, for any loop."""

    def __init__(self, family: str, lr: str, condition: Condition) -> None:
        self.family, self.condition = family, condition
        self.generator, self.discriminator = networks(family)
        base, betas, self.n_critic = BASE[family]
        self.lr_g, self.lr_d = LR_SETTINGS[lr] or (base, base)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d, betas=betas)
        self.batches = 0
        self.trace: list[list[float]] = []  # per batch: generator score, discriminator score, AUC (raw)

    def _apply_condition(self) -> None:
        c = self.condition
        active = self.batches >= c.onset
        for group in self.opt_g.param_groups:
            group["lr"] = self.lr_g * (c.lr_g if active else 1.0)
        for group in self.opt_d.param_groups:
            group["lr"] = self.lr_d * (c.lr_d if active else 1.0)
        self.generator.latent.mode = c.noise if active else "as is"
        if c.nan and self.batches == c.onset:
            with torch.no_grad():
                next(self.discriminator.parameters()).fill_(math.nan)

    def step(
        self, real: Tensor, labels: Tensor | None, backward: Any, opt_g: Any = None, opt_d: Any = None
    ) -> dict[str, Tensor]:
        """One batch: D's step (and every ``n_critic``-th batch G's); D's outputs, the losses and the fakes.

        ``opt_g``, ``opt_d``: the optimizers as the loop wraps them (Lightning's call its hooks); default: our own.
        """
        opt_g, opt_d = opt_g or self.opt_g, opt_d or self.opt_d
        self.batches += 1
        self._apply_condition()
        family = self.family
        y = labels if family == "cgan" else None
        z = torch.randn(real.shape[0], *latent_shape(family), device=real.device)
        gen = (lambda v: self.generator(v, y)) if y is not None else self.generator
        dis = (lambda v: self.discriminator(v, y)) if y is not None else self.discriminator
        fake = gen(z)
        d_real, d_fake = dis(real), dis(fake.detach())
        if family == "wgangp":
            alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
            mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
            (grad,) = torch.autograd.grad(dis(mixed).sum(), mixed, create_graph=True)
            penalty = ((grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
            d_loss = d_fake.mean() - d_real.mean() + 10.0 * penalty
        elif family == "hinge":
            d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        elif family in ("tutorial", "dcgan", "fabric"):
            d_loss = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(
                d_fake, torch.zeros_like(d_fake)
            )
        else:
            d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            d_loss = d_loss + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad()
        backward(d_loss)
        opt_d.step()
        g_loss = torch.zeros(())
        if (self.batches - 1) % self.n_critic == 0:
            on_fake = dis(fake)
            if family in CRITICS:
                g_loss = -on_fake.mean()
            elif family in ("tutorial", "dcgan", "fabric"):
                g_loss = F.binary_cross_entropy(on_fake, torch.ones_like(on_fake))
            else:
                g_loss = F.binary_cross_entropy_with_logits(on_fake, torch.ones_like(on_fake))
            opt_g.zero_grad()
            backward(g_loss)
            opt_g.step()
        self.stepped_generator = (self.batches - 1) % self.n_critic == 0
        with torch.no_grad():  # the ground truth's trace: D's outputs of this batch, as the rules' conditions read them
            p_real, p_fake = d_probabilities(family, d_real).mean(), d_probabilities(family, d_fake).mean()
            auc = (d_real.flatten().unsqueeze(1) > d_fake.flatten().unsqueeze(0)).float().mean()
            self.trace.append(torch.stack([p_fake, 0.5 * p_real + 0.5 * (1 - p_fake), auc]).tolist())
        return {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "fake": fake.detach(), "d_loss": d_loss.detach()}


class ZooGAN(pl.LightningModule):
    """A family's :class:`Adversary` as a LightningModule (manual optimisation), returning what its code returns."""

    def __init__(self, family: str, lr: str = "base", condition: Condition = Condition()) -> None:
        super().__init__()
        self.save_hyperparameters({"latent_dim": LATENT})
        self.automatic_optimization = False
        self.adversary = Adversary(family, lr, condition)
        self.generator, self.discriminator = self.adversary.generator, self.adversary.discriminator
        self.family = family

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.adversary.opt_g, self.adversary.opt_d]

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor] | None:
        real, labels = batch
        opt_g, opt_d = self.optimizers()
        out = self.adversary.step(real, labels, self.manual_backward, opt_g, opt_d)
        self.log("d_loss", out["d_loss"])
        if self.family in ("lightning", "tutorial", "dcgan"):  # their code returns nothing: the monitor probes
            return None
        return {"d_real": out["d_real"], "d_fake": out["d_fake"], "fake": out["fake"]}
