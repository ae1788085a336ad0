"""TensorBoard-only extras: the score chart layout, the diagnosis, configuration and summary texts, and image grids.

Callers pass a ``torch.utils.tensorboard.SummaryWriter`` (what ``TensorBoardLogger.experiment`` is); nothing here
knows about Lightning.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CONFIG_TAG",
    "DIAGNOSIS_TAG",
    "REAL_SAMPLES_TAG",
    "SAMPLES_TAG",
    "SUMMARY_TAG",
    "SamplePictures",
    "as_images",
    "code_block",
    "from_code_block",
    "is_tensorboard_logger",
    "make_grid",
    "scatter_image",
    "scatter_limits",
    "score_layout",
    "square_image_shape",
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


#: Where each Lightning package defines its ``TensorBoardLogger`` (Fabric's last: the Trainer's subclass it).
_TENSORBOARD_LOGGER_MODULES = (
    "pytorch_lightning.loggers.tensorboard",
    "lightning.pytorch.loggers.tensorboard",
    "lightning.fabric.loggers.tensorboard",
    "lightning_fabric.loggers.tensorboard",
)


def writers(loggers: Sequence[Any]) -> tuple[list[Any], str | None]:
    """The ``SummaryWriter`` of each ``TensorBoardLogger`` among ``loggers``, and a warning or None.

    The warning says what the user misses when there are loggers but none of them is a ``TensorBoardLogger``.
    """
    found = [logger.experiment for logger in loggers if is_tensorboard_logger(logger)]
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


def square_image_shape(sample_shape: Sequence[int]) -> list[int] | None:
    """``[1, s, s]`` for flat samples of ``s * s`` values (64: 8x8 digits, 784: MNIST), else None.

    Example:
        >>> square_image_shape([64]), square_image_shape([10]), square_image_shape([3, 8, 8])
        ([1, 8, 8], None, None)

    """
    if len(sample_shape) != 1 or sample_shape[0] < 4:
        return None
    side = round(sample_shape[0] ** 0.5)
    return [1, side, side] if side * side == sample_shape[0] else None


def scatter_limits(points: Tensor, margin: float = 0.1) -> tuple[float, float, float, float]:
    """Axes ``(x_low, x_high, y_low, y_high)`` around 2-D points with a margin, kept fixed for every later plot."""
    low, high = points.float().amin(0).tolist(), points.float().amax(0).tolist()
    pad = [max(margin * (h - lo), 1e-6) for lo, h in zip(low, high)]
    return low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1]


def scatter_image(
    fake: Tensor, real: Tensor | None, limits: tuple[float, float, float, float], size: int = 256
) -> Tensor:
    """A (3, size, size) scatter plot in [0, 1]: real points gray, generated points red, fixed axes ``limits``.

    Points outside the axes are drawn on the border, so a generator that wanders off still shows.

    Example:
        >>> image = scatter_image(torch.zeros(5, 2), torch.randn(50, 2), (-3.0, 3.0, -3.0, 3.0), size=64)
        >>> image.shape, bool((image[0] > 0.8).logical_and(image[1] < 0.3).any())  # red dots
        (torch.Size([3, 64, 64]), True)

    """
    image = torch.ones(3, size, size)
    image[:, [0, -1], :] = 0.6  # a frame
    image[:, :, [0, -1]] = 0.6
    x_low, x_high, y_low, y_high = limits
    for points, color in ((real, (0.6, 0.6, 0.6)), (fake, (0.85, 0.1, 0.1))):
        if points is None or points.shape[0] == 0:
            continue
        xy = points.detach().float().cpu().reshape(points.shape[0], -1)
        col = ((xy[:, 0] - x_low) / (x_high - x_low) * (size - 1)).round().clamp(1, size - 2).long()
        row = ((y_high - xy[:, 1]) / (y_high - y_low) * (size - 1)).round().clamp(1, size - 2).long()
        for dy in (-1, 0, 1):  # 3x3 dots
            for dx in (-1, 0, 1):
                for channel, value in enumerate(color):
                    image[channel, row + dy, col + dx] = value
    return image


class SamplePictures:
    """Pictures of the generated samples for TensorBoard's Images tab, whatever kind of samples a GAN makes.

    Decided at the first picture: images (N, C, H, W) with C in 1, 3, 4, or of ``image_shape``, as grids; flat
    vectors of a square length (64, 784, 1024) as grayscale square images; 2-D points as a scatter plot of generated
    against real points on fixed axes; anything else gets no picture and one line saying which argument would give
    one. The real samples are drawn once as a grid, or in every scatter plot.

    Args:
        image_shape: the monitor's ``image_shape`` (None: decided from the samples).
        value_range: the monitor's ``image_range``.
        prefix: the monitor's ``prefix`` of every tag.

    Example:
        >>> pictures = SamplePictures(None, (-1.0, 1.0))
        >>> print(pictures.decide(torch.zeros(4, 64)))
        showing generated samples of shape (64,) as 8x8 grayscale images; pass `GANMonitor(image_shape=[C, H, W])` ...
        >>> pictures.kind, pictures.image_shape
        ('grid', [1, 8, 8])

    """

    def __init__(
        self, image_shape: Sequence[int] | None, value_range: tuple[float, float] | None, prefix: str = "gan/"
    ) -> None:
        self.image_shape = list(image_shape) if image_shape is not None else None
        self.value_range = value_range
        self.prefix = prefix
        self.kind: str | None = None  # "grid", "scatter" or "none", once decided
        self.limits: tuple[float, float, float, float] | None = None
        self.real_written = False

    def decide(self, fake: Tensor) -> str:
        """Decide the kind of picture for samples like ``fake``; what to tell the user about it (or "")."""
        shape = list(fake.shape[1:])
        if self.image_shape is not None or (len(shape) == 3 and shape[0] in (1, 3, 4)):
            self.kind = "grid"
            return ""
        square = square_image_shape(shape)
        if square is not None:
            self.kind, self.image_shape = "grid", square
            return (
                f"showing generated samples of shape {tuple(shape)} as {square[1]}x{square[2]} grayscale images; "
                "pass `GANMonitor(image_shape=[C, H, W])` to show them otherwise."
            )
        if shape == [2]:
            self.kind = "scatter"
            return "showing 2-D samples as a scatter plot of generated (red) against real (gray) points."
        self.kind = "none"
        return (
            f"no picture of the generated samples: samples of shape {tuple(shape)} are neither images (N, C, H, W) "
            "with C in 1, 3 or 4, flat square images (such as 64 = 8x8 values) nor 2-D points; if they are images, "
            "pass `GANMonitor(image_shape=[C, H, W])`."
        )

    def write(self, writers: Sequence[Any], fake: Tensor, real: Tensor | None, step: int) -> str:
        """Write the picture of ``fake`` (and ``real``) at ``step``; returns what to tell the user once (or "").

        Raises:
            ValueError: if ``image_shape`` does not fit the samples (see :func:`as_images`).
        """
        said = self.decide(fake) if self.kind is None else ""
        if self.kind == "scatter":
            if self.limits is None:
                self.limits = scatter_limits(real if real is not None and real.shape[0] else fake)
            picture = scatter_image(fake, real, self.limits)
            for writer in writers:
                write_grid(writer, tag(SAMPLES_TAG, self.prefix), picture, step)
        elif self.kind == "grid":
            images = as_images(fake, self.image_shape)
            assert images is not None
            grids = [(tag(SAMPLES_TAG, self.prefix), images)]
            if real is not None and not self.real_written:
                real_images = as_images(real, self.image_shape)
                if real_images is not None:
                    grids.append((tag(REAL_SAMPLES_TAG, self.prefix), real_images))
                self.real_written = True
            nrow = max(1, round(images.shape[0] ** 0.5))
            for name, batch in grids:
                grid = make_grid(batch, nrow=nrow, value_range=self.value_range)
                for writer in writers:
                    write_grid(writer, name, grid, step)
        return said
