"""A run at a glance: the score plot, failure bands, fired rules, sample grids and diagnosis, from the logs.

``plot_run(logdir)`` reads the TensorBoard event files the monitor wrote (one run, or every run under a folder,
drawn two a row) and returns a matplotlib :class:`~matplotlib.figure.Figure`; ``save_report`` writes it as PNG,
SVG, PDF or a self-contained HTML page; ``python -m lightning_gan_monitor report LOGDIR -o report.png`` does both.
:meth:`GANMonitor.plot() <lightning_gan_monitor.GANMonitor.plot>` draws the same figure from the monitor's own
:class:`~lightning_gan_monitor.history.ScoreHistory`.

matplotlib is an optional extra (``pip install "lightning-gan-monitor[report]"``), imported only when a figure is
drawn; nothing here imports Lightning.
"""

from __future__ import annotations

import base64
import html
import io
import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_gan_monitor.diagnosis import FailureMode, parse_message
from lightning_gan_monitor.events import DEFAULT_CONFIG, RunData, find_runs, read_run, read_runs
from lightning_gan_monitor.history import ScoreHistory, collapsed_batches
from lightning_gan_monitor.panels import DIVERSITY_TAGS, QUALITY_TAGS, draw_diversity, draw_scores
from lightning_gan_monitor.tensorboard import (
    REAL_SAMPLES_TAG,
    SAMPLES_TAG,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_CONFIG",
    "FORMATS",
    "INSTALL_HINT",
    "RunData",
    "ScoreHistory",
    "check_output",
    "collapsed_batches",
    "find_runs",
    "plot_history",
    "plot_run",
    "plot_runs",
    "read_run",
    "save_report",
    "write_report",
]

#: How to get the optional plotting dependency.
INSTALL_HINT = 'pip install "lightning-gan-monitor[report]"'
#: File types :func:`save_report` writes, by suffix.
FORMATS = (".png", ".svg", ".pdf", ".html")
ACCURACY_TAGS = ("gan/fake_detection_accuracy", "gan/real_detection_accuracy")
_WIDTH = 6.4  # inches per run
_COLUMNS = 2  # runs side by side at most; more wrap into further rows
_TEXT_COLUMNS = 110  # characters per line of the text panel at its font size
_TEXT_LINES = 34  # most lines of text drawn per run (the HTML page has the full text)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(f"The GAN monitor report needs matplotlib; install it with: {INSTALL_HINT}") from None


# ---------------------------------------------------------------------------------------------- drawing


def plot_run(logdir: str | os.PathLike, dpi: float = 100) -> Figure:
    """The report of the run in ``logdir``, or of every run under it (two a row), as a matplotlib Figure.

    For each run: the generator and discriminator scores over training batches with each failure condition's band
    shaded (at the thresholds the run used, read from ``gan/config``), a marker where a rule fired labelled with the
    failure mode; diversity/coverage when logged; the fixed-noise sample grids at the first, middle and last step
    when logged; the summary and the diagnosis with its remedies.

    Args:
        logdir: a run's folder (e.g. ``lightning_logs/version_0``) or a folder of runs (e.g. ``lightning_logs``).
        dpi: resolution of the figure (pixels per inch; the figure is 6.4 inches wide per run).

    Raises:
        ImportError: without matplotlib (the message says how to install it).
        FileNotFoundError: for a folder that does not exist or holds no event files.
        ValueError: for event files without any GAN monitor tag.

    Example:
        >>> from lightning_gan_monitor.report import plot_run
        >>> plot_run("lightning_logs/digits_healthy")  # doctest: +SKIP
        <Figure size 640x1009 with 3 Axes>

    """
    _require_matplotlib()
    return plot_runs(read_runs(logdir), dpi=dpi)


def plot_history(
    history: ScoreHistory, diagnoses: list[str], config: dict[str, Any], summary: str | None = None
) -> Figure:
    """The figure of one run from a monitor's own history (what :meth:`GANMonitor.plot` draws).

    Raises:
        RuntimeError: before any score was logged.
    """
    if not history.tags:
        raise RuntimeError(
            "GANMonitor.plot() has nothing to draw yet: call it after `trainer.fit(...)` has run for at least "
            "one log point (`log_every_n_batches`, or the end of fit)"
        )
    scalars = {tag: history.series(tag) for tag in history.tags}
    return plot_runs([RunData("GANMonitor", scalars, diagnoses=diagnoses, config=config, summary=summary)])


def plot_runs(runs: Sequence[RunData], dpi: float = 100) -> Figure:
    """Draw runs in a grid of at most two columns, so that it stays readable at screen width (see :func:`plot_run`).

    Example:
        >>> run = RunData("demo", scalars={"gan/generator_score": ([10, 20], [0.4, 0.05]),
        ...                                "gan/discriminator_score": ([10, 20], [0.6, 0.97])})
        >>> figure = plot_runs([run])
        >>> [ax.get_title() for ax in figure.axes][:1]
        ['demo']

    """
    _require_matplotlib()
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("`runs` must hold at least one RunData, got none")
    has_diversity = any(tag in run.scalars for run in runs for tag in DIVERSITY_TAGS + QUALITY_TAGS)
    has_images = any(run.images.get(SAMPLES_TAG) or run.images.get(REAL_SAMPLES_TAG) for run in runs)
    texts = [_wrap(run.text) for run in runs]
    text_height = 0.3 + 0.125 * max(len(text.splitlines()) for text in texts)
    rows = [("scores", 3.0)]
    rows += [("diversity", 2.2)] if has_diversity else []
    rows += [("images", 1.9)] if has_images else []
    rows += [("text", text_height)]
    columns = min(len(runs), _COLUMNS)
    blocks = -(-len(runs) // columns)  # each block: one row of runs, each run a column of panels
    height = blocks * sum(h for _, h in rows) + 0.4
    figure = Figure(figsize=(_WIDTH * columns, height), dpi=dpi, layout="constrained")
    figure.suptitle("GAN monitor report", fontsize=11, fontweight="bold")
    grid = figure.add_gridspec(blocks * len(rows), columns, height_ratios=[h for _, h in rows] * blocks)
    first_scores = None
    diversity_axes = None
    for index, (run, text) in enumerate(zip(runs, texts)):
        fired = _fired(run)
        block, column = divmod(index, columns)
        for row, (kind, _) in enumerate(rows):
            cell = grid[block * len(rows) + row, column]
            if kind == "scores":
                score_axes = figure.add_subplot(cell, sharey=first_scores)
                first_scores = first_scores or score_axes
                draw_scores(score_axes, run, fired)
            elif kind == "diversity":
                ax = figure.add_subplot(cell, sharex=score_axes, sharey=diversity_axes)
                diversity_axes = diversity_axes or ax
                draw_diversity(ax, run, fired)
            elif kind == "images":
                _draw_images(figure, cell, run)
            else:
                ax = figure.add_subplot(cell)
                ax.set_axis_off()
                ax.text(0, 1, text, va="top", ha="left", family="monospace", fontsize=6.5, transform=ax.transAxes)
    return figure


def _wrap(text: str) -> str:
    lines: list[str] = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        hanging = " " * (indent + 2 if line.lstrip().startswith("- ") else indent)
        lines += textwrap.wrap(line, _TEXT_COLUMNS, subsequent_indent=hanging, drop_whitespace=True) or [""]
    if len(lines) > _TEXT_LINES:
        lines = [*lines[: _TEXT_LINES - 1], "... (the full text is in TensorBoard's Text tab and the HTML report)"]
    return "\n".join(lines)


def _fired(run: RunData) -> list[tuple[FailureMode | None, int, int]]:
    """``(failure, batch, held_for)`` of each diagnosis; one that cannot be read is drawn without a marker."""
    fired = []
    for text in run.diagnoses:
        try:
            fired.append(parse_message(text))
        except ValueError as err:
            warnings.warn(f"{run.name}: a diagnosis is drawn without its marker: {err}", stacklevel=3)
    return fired


def _draw_images(figure: Figure, cell: Any, run: RunData) -> None:
    import matplotlib.image

    samples = run.images.get(SAMPLES_TAG, [])
    # first, middle and last grids (fewer if fewer were logged), then the real samples for comparison
    picks = sorted({0, len(samples) // 2, len(samples) - 1}) if samples else []
    shown = [(f"samples, batch {samples[i][0]}", samples[i][1]) for i in picks]  # one x unit: training batches
    shown += [("real samples", run.images[REAL_SAMPLES_TAG][-1][1])] if run.images.get(REAL_SAMPLES_TAG) else []
    if not shown:
        ax = figure.add_subplot(cell)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no sample grids logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        return
    inner = cell.subgridspec(1, max(len(shown), 4))
    for index, (title, png) in enumerate(shown):
        ax = figure.add_subplot(inner[0, index])
        image = matplotlib.image.imread(io.BytesIO(png), format="png")
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])


# ---------------------------------------------------------------------------------------------- writing


def check_output(output: str | os.PathLike) -> Path:
    """Check up front that a report can be written to ``output`` (known suffix, an existing writable folder).

    Raises:
        ValueError: for a suffix other than .png, .svg, .pdf or .html.
        FileNotFoundError: if the folder does not exist.
        NotADirectoryError: if the "folder" is a file.
        IsADirectoryError: if ``output`` is a folder.
        PermissionError: if the folder or the file cannot be written.

    Example:
        >>> check_output("report.jpg")
        Traceback (most recent call last):
        ...
        ValueError: `output` must end in .png, .svg, .pdf or .html, got 'report.jpg'

    """
    path = Path(output)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"`output` must end in .png, .svg, .pdf or .html, got '{output}'")
    folder = path.parent
    cannot = f"cannot write the report to '{output}'"
    if path.is_dir():
        raise IsADirectoryError(f"{cannot}: it is a folder; give a file name such as {path / 'report.png'}")
    if not folder.exists():
        raise FileNotFoundError(f"{cannot}: the folder '{folder}' does not exist; create it first")
    if not folder.is_dir():
        raise NotADirectoryError(f"{cannot}: '{folder}' is a file, not a folder")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"{cannot}: permission denied; choose a path you can write to")
    return path


def save_report(
    figure: Figure,
    output: str | os.PathLike,
    dpi: float | None = None,
    texts: Mapping[str, str] | None = None,
    title: str = "GAN monitor report",
) -> Path:
    """Write a report figure as PNG, SVG or PDF, or as an HTML page with the PNG embedded, by ``output``'s suffix.

    Args:
        figure: from :func:`plot_run` or :meth:`GANMonitor.plot() <lightning_gan_monitor.GANMonitor.plot>`.
        output: the file to write; its suffix (.png, .svg, .pdf, .html) picks the format.
        dpi: resolution of PNG (and HTML) output; None keeps the figure's.
        texts: for HTML, run name -> full text (summary and diagnoses), shown under the image as selectable text.
        title: the HTML page's title.

    Returns:
        The path written.

    Raises:
        ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError: see
            :func:`check_output`; OSError: if writing fails anyway (the message names the path).

    Example:
        >>> from lightning_gan_monitor.report import save_report
        >>> save_report(plot_run("lightning_logs"), "report.html")  # doctest: +SKIP
        PosixPath('report.html')

    """
    path = check_output(output)
    suffix = path.suffix.lower()
    dpi = figure.get_dpi() if dpi is None else dpi
    try:
        if suffix != ".html":
            figure.savefig(path, format=suffix[1:], dpi=dpi)
            return path
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        sections = "".join(
            f"<h2>{html.escape(name)}</h2>\n<pre>{html.escape(text)}</pre>\n" for name, text in (texts or {}).items()
        )
        page = (
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            "<style>body{font-family:sans-serif;margin:1em}img{max-width:100%}pre{white-space:pre-wrap}</style>\n"
            f'</head>\n<body>\n<h1>{html.escape(title)}</h1>\n<img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{encoded}">\n{sections}</body>\n</html>\n'
        )
        path.write_text(page, encoding="utf-8")
    except OSError as err:
        raise OSError(f"cannot write the report to '{output}': {err.strerror or err}") from err
    return path


def write_report(logdir: str | os.PathLike, output: str | os.PathLike, dpi: float = 100) -> tuple[Path, int]:
    """Read the runs under ``logdir``, draw them and write the report; what the command line does.

    The output path is checked before the event files are read, so a typo fails fast.

    Returns:
        ``(path written, number of runs drawn)``.

    Example:
        >>> write_report("lightning_logs", "report.png")  # doctest: +SKIP
        (PosixPath('report.png'), 4)

    """
    check_output(output)
    _require_matplotlib()
    runs = read_runs(logdir)
    figure = plot_runs(runs, dpi=dpi)
    path = save_report(figure, output, dpi=dpi, texts={run.name: run.text for run in runs})
    return path, len(runs)
