"""Train a small MLP GAN on scikit-learn's 8x8 digits and watch it with :class:`GANMonitor`.

The dataset ships with scikit-learn, so the example needs no download and trains in well under a minute on a laptop CPU.
Five scenarios show what the monitor reports:

- ``healthy``: balanced training; no rule should fire.
- ``d-dominates``: the generator is frozen and the discriminator learns fast, so ``D(G(z))`` collapses toward 0.
- ``g-dominates``: the discriminator is frozen and the generator learns fast, so it fools the fixed ``D`` completely.
- ``non-finite``: healthy settings, but a NaN is planted in ``D`` partway through, so the run diverges for real.
- ``mode-collapse``: the generator ignores its noise, so it can only ever draw one image.

Example:
    pip install -e ".[examples]"
    python examples/digits_gan.py --scenario d-dominates
    tensorboard --logdir lightning_logs

"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SCENARIOS: dict[str, dict[str, Any]] = {
    # the DCGAN defaults: generator score stays near 0.5 and samples pass for the digit after ~500 batches
    "healthy": {},
    # a fixed random G is easy to reject: with 10x D's learning rate D(G(z)) is near 0 within ~20 batches
    "d-dominates": {"freeze_generator": True, "lr_d": 2e-3},
    # G climbs the fixed D's logit to its maximum over [-1, 1]^64 within ~15 batches
    "g-dominates": {"freeze_discriminator": True, "lr_g": 2e-3},
    # healthy for 100 batches, then D's outputs are NaN from the 101st batch on
    "non-finite": {"nan_at_batch": 100},
    # G draws the same image whatever its noise: diversity 0 and every sample a duplicate from the first batch on
    "mode-collapse": {"ignore_noise": True},
}
"""Constructor arguments of :class:`DigitsGAN` for each scenario of :func:`main`."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a small GAN on 8x8 digits and watch it with GANMonitor.")
    parser.add_argument("--scenario", choices=list(SCENARIOS), default="healthy", help="what to demonstrate")
    parser.add_argument(
        "--digit", type=int, choices=range(-1, 10), default=3, metavar="{0..9,-1}", help="digit to learn; -1: all"
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=500,
        help="one digit gives 5 batches an epoch (all digits: 56, so lower this); the default is 2500 batches",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every RNG")
    parser.add_argument("--logdir", default="lightning_logs", help="TensorBoard log directory")
    parser.add_argument(
        "--source",
        choices=["outputs", "probe"],
        default="outputs",
        help="score D's logits returned by training_step (outputs), or let the monitor run G and D itself (probe)",
    )
    parser.add_argument("--patience", type=int, default=100, help="batches a rule must hold before it fires")
    parser.add_argument("--on-failure", choices=["stop", "warn"], default="stop", help="what to do when a rule fires")
    return parser


if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
    _parser().print_help()  # at once: before torch and Lightning are imported
    raise SystemExit(0)

import math  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

IMAGE_DIM = 64  # 8x8 pixels, flattened


def load_digits_tensor(digit: int | None = 3) -> Tensor:
    """Load scikit-learn's bundled 8x8 digits as flat images scaled to ``[-1, 1]``.

    Args:
        digit: Keep only images of this digit (0-9); ``None`` keeps all of them.

    Returns:
        A float32 tensor of shape ``(N, 64)`` with values in ``[-1, 1]``, matching the generator's tanh output.

    Raises:
        ValueError: If ``digit`` is not ``None`` or an integer in 0-9.

    Example:
        >>> x = load_digits_tensor(3)
        >>> x.shape, x.dtype
        (torch.Size([183, 64]), torch.float32)
        >>> bool(x.min() >= -1) and bool(x.max() <= 1)
        True

    """
    if digit is not None and digit not in range(10):
        raise ValueError(f"`digit` must be None or an integer in 0-9, got {digit!r}")
    digits = load_digits()
    images = torch.as_tensor(digits.data, dtype=torch.float32)
    if digit is not None:
        images = images[torch.as_tensor(digits.target) == digit]
    return images / 8.0 - 1.0  # pixel intensities are 0..16


def make_dataloader(data: Tensor, batch_size: int = 32, seed: int = 0) -> DataLoader:
    """Wrap images in a shuffled, reproducible :class:`~torch.utils.data.DataLoader`.

    A batch is a one-element list ``[x]``, as :class:`~torch.utils.data.TensorDataset` yields it.

    Args:
        data: Images of shape ``(N, 64)``.
        batch_size: Images per batch; the last incomplete batch is dropped so every batch has this size.
        seed: Seed of the loader's own generator, so the shuffle order does not depend on the global RNG.

    Returns:
        The data loader.

    Example:
        >>> loader = make_dataloader(load_digits_tensor(3), batch_size=32)
        >>> len(loader)
        5
        >>> [x.shape for x in next(iter(loader))]
        [torch.Size([32, 64])]

    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(data), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0, generator=generator
    )


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, negative_slope: float = 0.2) -> nn.Sequential:
    """Two hidden LeakyReLU layers, He-initialised.

    PyTorch's default ``nn.Linear`` init shrinks the signal at every layer: a fresh discriminator then gives no
    image in ``[-1, 1]^64`` a logit above ~0.7, so even a frozen one could never be fooled. He init keeps the
    scale, which lets the ``g-dominates`` scenario happen and changes little for balanced training.
    """
    layers = [nn.Linear(in_dim, hidden_dim), nn.Linear(hidden_dim, hidden_dim), nn.Linear(hidden_dim, out_dim)]
    for layer in layers[:-1]:
        nn.init.kaiming_normal_(layer.weight, a=negative_slope, nonlinearity="leaky_relu")
    nn.init.kaiming_normal_(layers[-1].weight, nonlinearity="linear")
    for layer in layers:
        nn.init.zeros_(layer.bias)
    return nn.Sequential(layers[0], nn.LeakyReLU(negative_slope), layers[1], nn.LeakyReLU(negative_slope), layers[2])


class IgnoreNoise(nn.Module):
    """Replaces every latent vector by zeros: a generator behind it maps all noise to one output (total collapse).

    Example:
        >>> IgnoreNoise()(torch.randn(2, 3))
        tensor([[0., 0., 0.],
                [0., 0., 0.]])

    """

    def forward(self, z: Tensor) -> Tensor:
        """Return zeros shaped like ``z``."""
        return torch.zeros_like(z)


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class DigitsGAN(pl.LightningModule):
    """A two-layer MLP GAN for 8x8 digits, trained with manual optimisation.

    Each training step draws ``z ~ N(0, I)``, updates the discriminator on a real and a generated batch, then
    updates the generator with the non-saturating loss. The discriminator returns logits; its outputs from the
    discriminator step are returned from :meth:`training_step` so a monitor can score them without extra passes.

    Args:
        latent_dim: Size of the latent vector ``z``.
        hidden_dim: Width of both hidden layers of both networks.
        lr_g: Adam learning rate of the generator.
        lr_d: Adam learning rate of the discriminator.
        betas: Adam betas of both optimizers.
        freeze_generator: Never update the generator, so it keeps its initial weights.
        freeze_discriminator: Never update the discriminator, so it keeps its initial weights.
        nan_at_batch: Once this many batches have been trained, plant a NaN in the discriminator so its outputs
            (and then every weight) become non-finite. ``None`` never does.
        return_d_outputs: Return ``{"d_real": ..., "d_fake": ..., "fake": ...}`` (D's logits and the generated
            batch) from :meth:`training_step`; when ``False`` it returns ``None`` and a monitor has to probe the
            networks itself.
        ignore_noise: The generator ignores its latent input (zeros it), so it collapses onto a single image.

    Attributes:
        generator: ``latent_dim`` -> 64 pixels in ``[-1, 1]`` (tanh).
        discriminator: 64 pixels -> one logit, shape ``(B, 1)``.
        batches_trained: Training batches run so far by this instance.

    Example:
        >>> model = DigitsGAN(latent_dim=8)
        >>> model.generator(torch.zeros(2, 8)).shape, model.discriminator(torch.zeros(2, 64)).shape
        (torch.Size([2, 64]), torch.Size([2, 1]))

    """

    def __init__(
        self,
        latent_dim: int = 16,
        hidden_dim: int = 128,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        freeze_generator: bool = False,
        freeze_discriminator: bool = False,
        nan_at_batch: int | None = None,
        return_d_outputs: bool = True,
        ignore_noise: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(_mlp(latent_dim, hidden_dim, IMAGE_DIM), nn.Tanh())
        if ignore_noise:
            self.generator.insert(0, IgnoreNoise())
        self.discriminator = _mlp(IMAGE_DIM, hidden_dim, 1)
        # requires_grad=False keeps gradients from piling up in a network that never steps
        self.generator.requires_grad_(not freeze_generator)
        self.discriminator.requires_grad_(not freeze_discriminator)
        self.batches_trained = 0
        self._nan_planted = False

    def forward(self, z: Tensor) -> Tensor:
        """Generate images from latent vectors ``z`` of shape ``(B, latent_dim)``; returns ``(B, 64)``."""
        return self.generator(z)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Return one Adam optimizer per network: ``[generator, discriminator]``."""
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=tuple(hp.betas))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=tuple(hp.betas))
        return [opt_g, opt_d]

    def training_step(self, batch: list[Tensor], batch_idx: int) -> dict[str, Tensor] | None:
        """Run one discriminator step, then one generator step.

        Args:
            batch: A one-element list holding real images of shape ``(B, 64)``.
            batch_idx: Index of the batch within the epoch.

        Returns:
            ``{"d_real": logits, "d_fake": logits, "fake": images}``: D's logits of shape ``(B, 1)`` from the
            discriminator step and the generated images ``(B, 64)``, all detached; ``None`` when
            ``return_d_outputs`` is ``False``.

        """
        (real,) = batch
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        if hp.nan_at_batch is not None and self.batches_trained >= hp.nan_at_batch and not self._nan_planted:
            # one NaN weight in the first layer reaches every logit, and through the gradients every weight
            with torch.no_grad():
                self.discriminator[0].weight[0, 0] = math.nan
            self._nan_planted = True

        z = torch.randn(real.shape[0], hp.latent_dim, device=self.device, dtype=real.dtype)
        fake = self.generator(z)

        logits_real = self.discriminator(real)
        logits_fake = self.discriminator(fake.detach())
        d_loss = _bce(logits_real, 1.0) + _bce(logits_fake, 0.0)
        if not hp.freeze_discriminator:
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()

        # non-saturating loss: maximise log D(G(z)) rather than minimise log(1 - D(G(z)))
        logits_gen = self.discriminator(fake)
        g_loss = _bce(logits_gen, 1.0)
        if not hp.freeze_generator:
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()

        self.log("d_loss", d_loss.detach(), prog_bar=True)
        self.log("g_loss", g_loss.detach(), prog_bar=True)
        self.batches_trained += 1
        if not hp.return_d_outputs:
            return None
        return {"d_real": logits_real.detach(), "d_fake": logits_fake.detach(), "fake": fake.detach()}


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn's 8x8 digits as a :class:`~pytorch_lightning.LightningDataModule` (for LightningCLI configs).

    Args:
        digit: Keep only images of this digit (0-9); ``None`` keeps all of them.
        batch_size: Images per batch (the last incomplete batch is dropped).
        seed: Seed of the loader's shuffle.

    Example:
        >>> data = DigitsDataModule(digit=3, batch_size=32)
        >>> len(data.train_dataloader())
        5

    """

    def __init__(self, digit: int | None = 3, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        if digit is not None and digit not in range(10):
            raise ValueError(f"`digit` must be None or an integer in 0-9, got {digit!r}")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        self.digit = digit
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        """The shuffled, reproducible training batches (see :func:`make_dataloader`)."""
        return make_dataloader(load_digits_tensor(self.digit), batch_size=self.batch_size, seed=self.seed)


def main(argv: list[str] | None = None) -> int:
    """Train one scenario with a :class:`~lightning_gan_monitor.GANMonitor` attached and print what it found.

    Args:
        argv: Command-line arguments; ``None`` reads ``sys.argv``.

    Returns:
        The process exit status: 1 if a failure rule stopped the run, else 0.

    """
    args = _parser().parse_args(argv)

    # imported here so the model and data above can be used without the package installed
    from lightning_gan_monitor import GANMonitor

    pl.seed_everything(args.seed)
    data = load_digits_tensor(None if args.digit < 0 else args.digit)
    loader = make_dataloader(data, seed=args.seed)
    model = DigitsGAN(**SCENARIOS[args.scenario], return_d_outputs=args.source == "outputs")
    # the monitor reads D's logits from training_step's outputs, or probes G and D when the step returns None
    # image_shape shows the flat 64-pixel samples as 8x8 images in TensorBoard's Images tab (gan/samples)
    monitor = GANMonitor(patience=args.patience, from_logits=True, on_failure=args.on_failure, image_shape=[1, 8, 8])
    logger = TensorBoardLogger(args.logdir, name=f"digits_{args.scenario}")
    trainer = pl.Trainer(
        max_epochs=args.max_epochs,
        logger=logger,
        callbacks=[monitor, EveryEpochs(50)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=5,  # an epoch of one digit is 5 batches
        deterministic=True,
    )
    # Intra-op threads only add synchronisation to matmuls this small; on a busy CPU they slowed a run several-fold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.fit(model, loader)
    finally:
        torch.set_num_threads(threads)
    # the monitor has printed its diagnosis and summary; the exit status says whether a rule stopped the run
    print(f"TensorBoard logs in {logger.log_dir}; view them with: tensorboard --logdir {args.logdir}")
    return 1 if monitor.stopped_batch is not None and monitor.failure is not None else 0


class EveryEpochs(pl.Callback):
    """One line every ``every`` epochs (the example's progress, in place of a progress bar)."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        epoch = trainer.current_epoch + 1
        if epoch % self.every == 0:
            print(f"epoch {epoch}/{trainer.max_epochs}: {pl_module.batches_trained} batches trained", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
