"""Pictures of generated samples, whatever a GAN makes: image grids, square flat images, 2-D scatter plots.

:class:`SamplePictures` decides once what kind of picture the samples allow and draws them as (C, H, W) images for
TensorBoard's Images tab (the host writes them, :func:`~lightning_gan_monitor.tensorboard.write_grid`). No
torchvision: :func:`make_grid` is a few lines of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_gan_monitor.diagnosis import say, turned_off
from lightning_gan_monitor.sources import real_samples
from lightning_gan_monitor.tensorboard import REAL_SAMPLES_TAG, SAMPLES_TAG, tag

__all__ = [
    "EpochPictures",
    "SamplePictures",
    "as_images",
    "make_grid",
    "scatter_image",
    "scatter_limits",
    "square_image_shape",
]


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

    def draw(self, fake: Tensor, real: Tensor | None) -> tuple[list[tuple[str, Tensor]], str]:
        """The pictures of ``fake`` (and ``real``) as ``(tag, CHW image)``, and what to tell the user once (or "").

        Raises:
            ValueError: if ``image_shape`` does not fit the samples (see :func:`as_images`).
        """
        said = self.decide(fake) if self.kind is None else ""
        if self.kind == "scatter":
            if self.limits is None:
                self.limits = scatter_limits(real if real is not None and real.shape[0] else fake)
            return [(tag(SAMPLES_TAG, self.prefix), scatter_image(fake, real, self.limits))], said
        pictures = []
        if self.kind == "grid":
            images = as_images(fake, self.image_shape)
            assert images is not None
            grids = [(tag(SAMPLES_TAG, self.prefix), images)]
            if real is not None and not self.real_written:
                real_images = as_images(real, self.image_shape)
                if real_images is not None:
                    grids.append((tag(REAL_SAMPLES_TAG, self.prefix), real_images))
                self.real_written = True
            nrow = max(1, round(images.shape[0] ** 0.5))
            pictures = [(name, make_grid(batch, nrow=nrow, value_range=self.value_range)) for name, batch in grids]
        return pictures, said


class EpochPictures:
    """G's samples on the same latent vectors every ``image_every_n_epochs``, and the real samples once.

    Args:
        config: the monitor's :class:`~lightning_gan_monitor.config.MonitorConfig`.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """A new fit (the latent vectors are kept by checkpoints, see :attr:`fixed_latent`)."""
        c = self.config
        self.fixed_latent: Tensor | None = None  # drawn on the CPU: the same pictures whatever device trains
        self.real: Tensor | None = None
        self.samples = SamplePictures(c.image_shape, c.image_range, c.prefix)
        self._said: set[str] = set()

    def start(self, latent_shape: Sequence[int] | None, problem: str | None) -> None:
        """Draw the fixed latent vectors once the generator can be run (``problem`` None)."""
        if problem is None and self.fixed_latent is None and self.config.image_every_n_epochs:
            cpu = torch.Generator().manual_seed(self.config.seed)
            self.fixed_latent = torch.randn((self.config.num_image_samples, *latent_shape), generator=cpu)  # type: ignore[misc]

    def see(self, batch: Any) -> None:
        """Keep the first batch's real samples (no picture of them if the batch has none)."""
        if self.real is None and self.config.image_every_n_epochs is not None:
            with contextlib.suppress(ValueError):
                self.real = real_samples(batch, self.config.real_key)[: self.config.num_image_samples].detach().clone()

    def draw(
        self, generate: Callable[[Tensor], Tensor], epoch: int, batch: int, problem: str | None
    ) -> list[tuple[str, Tensor]]:
        """The pictures due after epoch ``epoch`` (0-based), as ``(tag, CHW image)``; ``generate`` runs G on ``z``.

        A failure turns the pictures off with one warning (``batch`` names when); training goes on.
        """
        every = self.config.image_every_n_epochs
        if every is None or (epoch + 1) % every or self.samples.kind == "none":
            return []
        if self.fixed_latent is None:
            self._say_once("no grid", f"no image grids: the monitor cannot run the generator ({problem or 'unset'}).")
            return []
        try:
            pictures, said = self.samples.draw(generate(self.fixed_latent), self.real)
        except Exception as err:
            say(turned_off("drawing the samples", batch, err, "no more pictures of them"), warning=True)
            self.samples.kind = "none"
            return []
        if said:
            self._say_once("pictures", said)
        return pictures

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            say(f"GANMonitor: {message}")
