"""TensorBoard-only extras: the score chart layout and the diagnosis text.

Callers pass a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger.experiment`` is); nothing here
knows about Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DIAGNOSIS_TAG", "score_layout", "to_markdown", "write_diagnosis", "write_score_layout"]

#: Tag of the diagnosis text in TensorBoard's Text tab.
DIAGNOSIS_TAG = "gan/diagnosis"


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
