"""TensorBoard-only extras: the score chart layout, the diagnosis, configuration and summary texts, and pictures.

Callers pass a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger.experiment`` is); nothing here
knows about Lightning.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

__all__ = [
    "CONFIG_TAG",
    "DIAGNOSIS_TAG",
    "REAL_SAMPLES_TAG",
    "SAMPLES_TAG",
    "SUMMARY_TAG",
    "code_block",
    "from_code_block",
    "is_summary_writer",
    "is_tensorboard_logger",
    "score_layout",
    "tag",
    "to_markdown",
    "write_config",
    "write_diagnosis",
    "write_grid",
    "write_score_layout",
    "write_summary",
    "writers",
]

#: Tag of the diagnosis text in TensorBoard's Text tab.
DIAGNOSIS_TAG = "gan/diagnosis"
#: Tag of the monitor's configuration (thresholds, patience, ...) as JSON, written once at the start of fit, so a
#: report drawn from the logs alone shades the bands the run really used.
CONFIG_TAG = "gan/config"
#: Tag of the end-of-fit summary (regimes, final scores, verdict).
SUMMARY_TAG = "gan/summary"
#: Tag of the grid of generated samples from the fixed latent batch, in the Images tab.
SAMPLES_TAG = "gan/samples"
#: Tag of the grid of real samples (written once, for comparison).
REAL_SAMPLES_TAG = "gan/real_samples"


def score_layout(prefix: str = "gan/") -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout: generator and discriminator scores on one chart, like MATLAB's score plot.

    Example:
        >>> score_layout()["GAN monitor"]["Scores: generator vs discriminator (ideal 0.5)"]
        ['Multiline', ['gan/generator_score', 'gan/discriminator_score']]

    """
    return {
        "GAN monitor" if prefix == "gan/" else f"GAN monitor ({prefix})": {
            "Scores: generator vs discriminator (ideal 0.5)": [
                "Multiline",
                [f"{prefix}generator_score", f"{prefix}discriminator_score"],
            ],
            "Detection accuracy: fake vs real": [
                "Multiline",
                [f"{prefix}fake_detection_accuracy", f"{prefix}real_detection_accuracy"],
            ],
            "Order of D's outputs: AUC, detection at the median (chance 0.5; a critic's scores)": [
                "Multiline",
                [f"{prefix}auc", f"{prefix}fake_detection_at_median", f"{prefix}real_detection_at_median"],
            ],
            "Gap: mean D(x) - mean D(G(z)) (a Wasserstein critic's distance estimate)": ["Multiline", [f"{prefix}gap"]],
            "Diversity: ratio, near-duplicates, coverage (mode collapse)": [
                "Multiline",
                [
                    *(f"{prefix}{name}" for name in ("diversity", "near_duplicates", "coverage", "density")),
                    f"{prefix}mode_coverage",  # low-dimensional data only
                ],
            ],
        }
    }


def write_score_layout(writer: Any, prefixes: Sequence[str] = ("gan/",)) -> None:
    """Add the custom-scalars layout of every monitor (one category per tag prefix) to ``writer``.

    TensorBoard keeps one layout per run, so the monitors of one Trainer write theirs together.
    """
    layout: dict[str, dict[str, list[Any]]] = {}
    for prefix in prefixes:
        layout |= score_layout(prefix)
    writer.add_custom_scalars(layout)


def tag(name: str, prefix: str = "gan/") -> str:
    """A tag under ``prefix``: one of the constants above (``DIAGNOSIS_TAG`` ...) or a bare name.

    Example:
        >>> tag(SAMPLES_TAG, "d2/"), tag("generator_score")
        ('d2/samples', 'gan/generator_score')

    """
    return prefix + name.removeprefix("gan/")


def write_diagnosis(writer: Any, message: str, step: int, prefix: str = "gan/") -> None:
    """Add a diagnosis to TensorBoard's Text tab (rendered as Markdown: paragraphs, then the remedies as a list)."""
    writer.add_text(tag(DIAGNOSIS_TAG, prefix), to_markdown(message), global_step=step)
    writer.flush()


def to_markdown(message: str) -> str:
    r"""A diagnosis message as Markdown.

    Example:
        >>> print(to_markdown("Bad.\nWhat to try:\n  - less\n  - more"))
        Bad.
        <BLANKLINE>
        What to try:
        <BLANKLINE>
        - less
        - more

    """
    lines: list[str] = []
    for line in message.splitlines():
        lines += ["- " + line[4:]] if line.startswith("  - ") else [line, ""]
    return "\n".join(lines).strip()


def code_block(text: str) -> str:
    r"""Text as a Markdown code block (indented by four spaces), so TensorBoard keeps its lines and alignment.

    Example:
        >>> code_block("a\n  b")
        '    a\n      b'
        >>> from_code_block(code_block("a\n  b"))
        'a\n  b'

    """
    return "\n".join("    " + line for line in text.splitlines())


def from_code_block(markdown: str) -> str:
    """The text inside :func:`code_block`."""
    return "\n".join(line[4:] if line.startswith("    ") else line for line in markdown.splitlines())


def write_config(writer: Any, config: Mapping[str, Any], step: int = 0, prefix: str = "gan/") -> None:
    """Add the monitor's configuration as JSON (in a code block) under :data:`CONFIG_TAG`."""
    text = code_block(json.dumps(dict(config), indent=2, sort_keys=True, default=repr))
    writer.add_text(tag(CONFIG_TAG, prefix), text, global_step=step)
    writer.flush()


def write_summary(writer: Any, summary: str, step: int, prefix: str = "gan/") -> None:
    """Add the end-of-fit summary under :data:`SUMMARY_TAG` (a code block keeps its table aligned)."""
    writer.add_text(tag(SUMMARY_TAG, prefix), code_block(summary), global_step=step)
    writer.flush()


def write_grid(writer: Any, tag: str, grid: Tensor, step: int) -> None:
    """Add a (C, H, W) grid from :func:`make_grid` to TensorBoard's Images tab."""
    writer.add_image(tag, grid, global_step=step, dataformats="CHW")
    writer.flush()


#: Where each Lightning package defines its ``TensorBoardLogger`` (Fabric's last: the Trainer's subclass it).
_TENSORBOARD_LOGGER_MODULES = (
    "pytorch_lightning.loggers.tensorboard",
    "lightning.pytorch.loggers.tensorboard",
    "lightning.fabric.loggers.tensorboard",
    "lightning_fabric.loggers.tensorboard",
)


def writers(loggers: Sequence[Any]) -> tuple[list[Any], str | None]:
    """The ``SummaryWriter`` of each ``TensorBoardLogger`` in ``loggers`` (or the writer itself), and a warning or None.

    The warning says what the user misses when there are loggers but none of them is a ``TensorBoardLogger``.
    """
    found = [
        logger if is_summary_writer(logger) else logger.experiment
        for logger in loggers
        if is_summary_writer(logger) or is_tensorboard_logger(logger)
    ]
    if found or not loggers:
        return found, None
    names = ", ".join(type(logger).__name__ for logger in loggers)
    return found, (
        f"GANMonitor writes the score chart and the diagnosis text to TensorBoard only; with {names} it logs the "
        "scores alone. Add a `TensorBoardLogger` to see them."
    )


def is_tensorboard_logger(logger: Any) -> bool:
    """Whether ``logger`` is a ``TensorBoardLogger`` of either Lightning package (or a subclass).

    Only packages already imported are looked at: a logger's class is imported before it exists, and checking never
    imports a package the user does not have.
    """
    types = tuple(sys.modules[name].TensorBoardLogger for name in _TENSORBOARD_LOGGER_MODULES if name in sys.modules)
    return isinstance(logger, types)


def is_summary_writer(logger: Any) -> bool:
    """Whether ``logger`` is a ``torch.utils.tensorboard.SummaryWriter`` (as a plain loop logs), never importing it."""
    module = sys.modules.get("torch.utils.tensorboard.writer")
    return module is not None and isinstance(logger, module.SummaryWriter)
