"""TensorBoard-only extras: the score chart layout, the diagnosis text and image grids.

Callers pass a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger.experiment`` is); nothing here
knows about Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DIAGNOSIS_TAG",
    "REAL_SAMPLES_TAG",
    "SAMPLES_TAG",
    "as_images",
    "make_grid",
    "score_layout",
    "to_markdown",
    "write_diagnosis",
    "write_grid",
    "write_score_layout",
]

#: Tag of the diagnosis text in TensorBoard's Text tab.
DIAGNOSIS_TAG = "gan/diagnosis"
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


def as_images(samples: Tensor, image_shape: Sequence[int] | None = None) -> Tensor | None:
    """Samples as a (N, C, H, W) image batch with C in 1, 3 or 4, or None if they are not images.

    Args:
        samples: a batch of samples, shape (N, ...).
        image_shape: the shape of one sample seen as an image, ``[C, H, W]`` or ``[H, W]`` (one channel), e.g.
            ``[1, 8, 8]`` for flat 64-value samples; None takes (N, C, H, W) samples as they are.

    Raises:
        ValueError: if ``image_shape`` does not hold as many values as one sample, or its channels are not 1, 3 or 4.

    Example:
        >>> as_images(torch.zeros(5, 64), [1, 8, 8]).shape
        torch.Size([5, 1, 8, 8])
        >>> as_images(torch.zeros(5, 64)) is None
        True

    """
    if image_shape is not None:
        shape = (1, *image_shape) if len(image_shape) == 2 else tuple(image_shape)
        per_sample = samples[0].numel() if samples.shape[0] else 0
        if len(shape) != 3 or shape[0] not in (1, 3, 4) or torch.Size(shape).numel() != per_sample:
            raise ValueError(
                f"`image_shape` {list(image_shape)} cannot show samples of shape {tuple(samples.shape[1:])} as "
                "images: give [C, H, W] (C in 1, 3, 4) or [H, W] with as many values as one sample"
            )
        return samples.reshape(samples.shape[0], *shape)
    if samples.dim() == 4 and samples.shape[1] in (1, 3, 4):
        return samples
    return None


def make_grid(
    images: Tensor,
    nrow: int = 8,
    padding: int = 2,
    pad_value: float = 1.0,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
) -> Tensor:
    """Tile a batch of images into one (C, H', W') image with values in [0, 1], as ``torchvision.utils.make_grid``.

    Images fill rows of ``nrow`` from the top left, with ``padding`` pixels of ``pad_value`` around each.

    Args:
        images: (N, C, H, W) images, N >= 1.
        nrow: images per row.
        padding: pixels between images and around the grid.
        pad_value: value of the padding, in [0, 1] (after scaling).
        value_range: the values mapped to 0 and 1 (others are clipped); None uses the batch's own min and max.

    Raises:
        ValueError: for images not shaped (N, C, H, W) with N >= 1, or a bad ``nrow``, ``padding`` or
            ``value_range``.

    Example:
        >>> grid = make_grid(torch.zeros(10, 1, 8, 8), nrow=4, padding=2)
        >>> grid.shape  # 3 rows of 4 images: (3 * (8 + 2) + 2, 4 * (8 + 2) + 2)
        torch.Size([1, 32, 42])

    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"`images` must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"`nrow` must be a positive integer, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"`padding` must be a non-negative integer, got {padding!r}")
    images = images.detach().float()
    if value_range is None:
        low, high = images.min(), images.max()
    else:
        low, high = (torch.tensor(float(v)) for v in value_range)
        if not low < high:
            raise ValueError(f"`value_range` must be (low, high) with low < high, got {value_range!r}")
    images = ((images - low) / (high - low).clamp(min=1e-12)).clamp(0, 1)
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), float(pad_value))
    for i, image in enumerate(images.cpu()):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[:, top : top + h, left : left + w] = image
    return grid


def write_grid(writer: Any, tag: str, grid: Tensor, step: int) -> None:
    """Add a (C, H, W) grid from :func:`make_grid` to TensorBoard's Images tab."""
    writer.add_image(tag, grid, global_step=step, dataformats="CHW")
    writer.flush()
