"""Both Lightning packages in tests: the package's API, its ``GANMonitor`` and the example models built on it.

``examples/digits_gan.py`` and ``tests/template_gan.py`` are written for ``pytorch_lightning``. For the ``lightning``
package the same source is compiled with its imports pointed at ``lightning.pytorch``: the very same models, but
true ``lightning.pytorch.LightningModule`` subclasses (a ``lightning`` Trainer rejects the other package's modules).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pytorch_lightning", "lightning")
_SOURCES = {
    "digits_gan": ROOT / "examples" / "digits_gan.py",
    "digits_cli": ROOT / "examples" / "digits_cli.py",
    "template_gan": ROOT / "tests" / "template_gan.py",
}


def pl(package: str) -> types.ModuleType:
    """``pytorch_lightning`` or ``lightning.pytorch``."""
    return importlib.import_module("pytorch_lightning" if package == "pytorch_lightning" else "lightning.pytorch")


def monitor_class(package: str) -> type:
    """The ``GANMonitor`` a user of ``package`` imports."""
    name = (
        "lightning_gan_monitor.pytorch_lightning"
        if package == "pytorch_lightning"
        else "lightning_gan_monitor.lightning"
    )
    return importlib.import_module(name).GANMonitor


def for_lightning(source: str) -> str:
    """Source written for ``pytorch_lightning`` with its imports pointed at the ``lightning`` package."""
    return (
        source.replace("import pytorch_lightning as pl", "import lightning.pytorch as pl")
        .replace("from pytorch_lightning.", "from lightning.pytorch.")
        .replace(
            "from lightning_gan_monitor import GANMonitor", "from lightning_gan_monitor.lightning import GANMonitor"
        )
        .replace("from digits_gan import", "from digits_gan__lightning import")
    )


def example(name: str, package: str) -> types.ModuleType:
    """``digits_gan``, ``digits_cli`` or ``template_gan`` for ``package`` (imported once, kept in ``sys.modules``)."""
    if package == "pytorch_lightning":
        return importlib.import_module(name)
    if name == "digits_cli":
        example("digits_gan", package)
    module_name = f"{name}__lightning"
    if module_name not in sys.modules:
        module = types.ModuleType(module_name)
        module.__file__ = str(_SOURCES[name])
        sys.modules[module_name] = module  # before running it: dataclasses and pickling look classes up there
        exec(compile(for_lightning(_SOURCES[name].read_text()), str(_SOURCES[name]), "exec"), module.__dict__)
    return sys.modules[module_name]


#: The suite's Trainer settings (besides `default_root_dir`), shared with `tests/conftest.py`; no Lightning import here.
TRAINER_DEFAULTS = dict(
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
    logger=False,
    deterministic=True,
    log_every_n_steps=10,
)


def make_trainer(package: str, tmp_path: Path, callbacks: list, **kwargs: Any) -> Any:
    """A Trainer of ``package`` with the suite's defaults (see ``conftest.make_trainer``)."""
    return pl(package).Trainer(callbacks=callbacks, **{"default_root_dir": tmp_path, **TRAINER_DEFAULTS, **kwargs})
