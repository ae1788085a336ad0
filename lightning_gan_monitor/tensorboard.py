"""TensorBoard-only extras: the score chart layout, the diagnosis, configuration and summary texts.

Callers pass a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger.experiment`` is); nothing here
knows about Lightning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CONFIG_TAG",
    "DIAGNOSIS_TAG",
    "SUMMARY_TAG",
    "code_block",
    "from_code_block",
    "score_layout",
    "to_markdown",
    "write_config",
    "write_diagnosis",
    "write_score_layout",
    "write_summary",
]

#: Tag of the diagnosis text in TensorBoard's Text tab.
DIAGNOSIS_TAG = "gan/diagnosis"
#: Tag of the monitor's configuration (thresholds, patience, ...) as JSON, written once at the start of fit, so a
#: report drawn from the logs alone shades the bands the run really used.
CONFIG_TAG = "gan/config"
#: Tag of the end-of-fit summary (regimes, final scores, verdict).
SUMMARY_TAG = "gan/summary"


def score_layout(prefix: str = "gan/") -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout: generator and discriminator scores on one chart, like MATLAB's score plot.

    Example:
        >>> score_layout()["GAN monitor"]["Scores: generator vs discriminator (ideal 0.5)"]
        ['Multiline', ['gan/generator_score', 'gan/discriminator_score']]

    """
    return {
        "GAN monitor": {
            "Scores: generator vs discriminator (ideal 0.5)": [
                "Multiline",
                [f"{prefix}generator_score", f"{prefix}discriminator_score"],
            ],
            "Detection accuracy: fake vs real": [
                "Multiline",
                [f"{prefix}fake_detection_accuracy", f"{prefix}real_detection_accuracy"],
            ],
        }
    }


def write_score_layout(writer: Any, prefix: str = "gan/") -> None:
    """Add the custom-scalars layout to ``writer`` (a ``SummaryWriter``)."""
    writer.add_custom_scalars(score_layout(prefix))


def write_diagnosis(writer: Any, message: str, step: int) -> None:
    """Add a diagnosis to TensorBoard's Text tab (rendered as Markdown: paragraphs, then the remedies as a list)."""
    writer.add_text(DIAGNOSIS_TAG, to_markdown(message), global_step=step)
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


def write_config(writer: Any, config: Mapping[str, Any], step: int = 0) -> None:
    """Add the monitor's configuration as JSON (in a code block) under :data:`CONFIG_TAG`."""
    writer.add_text(
        CONFIG_TAG, code_block(json.dumps(dict(config), indent=2, sort_keys=True, default=repr)), global_step=step
    )
    writer.flush()


def write_summary(writer: Any, summary: str, step: int) -> None:
    """Add the end-of-fit summary under :data:`SUMMARY_TAG` (a code block keeps its table aligned)."""
    writer.add_text(SUMMARY_TAG, code_block(summary), global_step=step)
    writer.flush()
