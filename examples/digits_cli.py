"""The digits GAN of ``digits_gan.py`` behind a LightningCLI: every setting, the monitor's included, from YAML.

Example:
    pip install -e ".[examples,cli]"
    python examples/digits_cli.py fit --config examples/config.yaml
    python examples/digits_cli.py fit --config examples/config.yaml --model.freeze_generator=true --model.lr_d=2e-3
    python examples/digits_cli.py fit --help   # every argument of the model, the data and the Trainer

The monitor is configured under ``trainer.callbacks`` in ``config.yaml`` (``class_path`` and ``init_args``); a
wrong type or an unknown value there is rejected by LightningCLI with the key it was given for.
"""

from __future__ import annotations

import torch
from digits_gan import DigitsDataModule, DigitsGAN
from pytorch_lightning.cli import LightningCLI


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Run the CLI.

    Args:
        args: Command-line arguments; ``None`` reads ``sys.argv``.
        run: Run the subcommand (``fit``, ...); ``False`` only parses and instantiates (``args`` then has no
            subcommand).

    Returns:
        The :class:`~pytorch_lightning.cli.LightningCLI`, whose ``trainer``, ``model`` and ``datamodule`` are set.

    """
    # Intra-op threads only add synchronisation to matmuls this small (as in digits_gan.py: about 8x slower per batch).
    torch.set_num_threads(1)
    # overwrite: a second run into the same log directory would otherwise refuse to save its config.yaml
    return LightningCLI(DigitsGAN, DigitsDataModule, args=args, run=run, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
