"""The monitor's TensorBoard logs read back: one :class:`RunData` per run (plain Python and ``tensorboard``).

What the report (:mod:`lightning_gan_monitor.report`) draws; nothing here imports matplotlib or Lightning.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_gan_monitor.collapse import ModeCollapse
from lightning_gan_monitor.critic import CriticDominates, CriticFooled
from lightning_gan_monitor.rules import (
    DiscriminatorDominates,
)
from lightning_gan_monitor.tensorboard import (
    CONFIG_TAG,
    DIAGNOSIS_TAG,
    SUMMARY_TAG,
    from_code_block,
)

__all__ = ["DEFAULT_CONFIG", "SCORE_TAGS", "RunData", "find_runs", "monitor_prefixes", "read_run", "read_runs"]

SCORE_TAGS = ("gan/generator_score", "gan/discriminator_score")
#: The thresholds a report shades when a run's logs hold no ``gan/config`` (logs of version 0.1): the monitor's
#: defaults, taken from the rules so they cannot drift apart (a test also checks them against ``GANMonitor``),
#: except where version 0.2 changed a default: there, version 0.1's.
DEFAULT_CONFIG: dict[str, Any] = {
    "d_dominates_generator_below": DiscriminatorDominates.generator_below,
    "d_dominates_discriminator_above": DiscriminatorDominates.discriminator_above,
    "g_dominates_generator_above": 0.9,  # version 0.1's default (0.2: GeneratorDominates.generator_above, 0.8)
    "collapse_diversity_below": ModeCollapse.diversity_below,
    "collapse_near_duplicates_above": ModeCollapse.near_duplicates_above,
    "collapse_coverage_below": ModeCollapse.coverage_below,
    "d_dominates_auc_above": CriticDominates.auc_above,
    "g_dominates_auc_below": CriticFooled.auc_below,
}


@dataclass
class RunData:
    """What a report draws for one run.

    Scalars are ``(batches, values)`` with batches counted from the start of training (an event file's step plus
    one: Lightning logs the values of batch k at step k - 1, and so does the monitor).
    """

    #: Column title: the run's folder relative to the folder the report was asked for.
    name: str
    #: tag -> (training batches, values).
    scalars: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    #: tag -> [(step, encoded PNG)], oldest first.
    images: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    #: Diagnosis texts (as :func:`~lightning_gan_monitor.rules.format_message` wrote them), in order.
    diagnoses: list[str] = field(default_factory=list)
    #: The monitor's configuration (thresholds, patience, ...); missing keys fall back to :data:`DEFAULT_CONFIG`.
    config: dict[str, Any] = field(default_factory=dict)
    #: The end-of-fit summary text, if the run got to its end.
    summary: str | None = None

    def setting(self, key: str) -> Any:
        """A configuration value of the run, else the monitor's default (None if neither is known)."""
        return self.config.get(key, DEFAULT_CONFIG.get(key))

    @property
    def text(self) -> str:
        """The summary, then each diagnosis with its remedies (what the report's text panel shows)."""
        parts = [self.summary] if self.summary else []
        parts += self.diagnoses
        if not self.diagnoses:
            parts.append("No rule fired.")
        return "\n\n".join(parts)


def _from_markdown(text: str) -> str:
    """A diagnosis as :func:`~lightning_gan_monitor.tensorboard.to_markdown` wrote it, back to its plain form."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join("  " + line if line.startswith("- ") else line for line in lines)


def find_runs(logdir: str | os.PathLike) -> list[Path]:
    """The folders under ``logdir`` (itself included) that hold TensorBoard event files, sorted.

    Raises:
        FileNotFoundError: if ``logdir`` does not exist or holds no event file.
        NotADirectoryError: if ``logdir`` is not a folder.

    Example:
        >>> find_runs("no/such/folder")
        Traceback (most recent call last):
        ...
        FileNotFoundError: `logdir` 'no/such/folder' does not exist; pass the folder your TensorBoardLogger wrote to ...

    """
    root = Path(logdir)
    if not root.exists():
        raise FileNotFoundError(
            f"`logdir` '{logdir}' does not exist; pass the folder your TensorBoardLogger wrote to (e.g. "
            "lightning_logs, or one run's lightning_logs/version_0)"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"`logdir` '{logdir}' is not a folder; pass the folder that holds the event files")
    runs = sorted({path.parent for path in root.rglob("events.out.tfevents.*") if path.is_file()})
    if not runs:
        raise FileNotFoundError(
            f"no TensorBoard event files (events.out.tfevents.*) under '{logdir}'; pass the folder your "
            "TensorBoardLogger wrote to (e.g. lightning_logs), from a run trained with GANMonitor"
        )
    return runs


def _load(run_dir: str | os.PathLike) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 0 keeps every event: the default reservoir would keep a random few images and texts.
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def monitor_prefixes(tags: dict[str, list[str]]) -> list[str]:
    """The ``prefix`` of each monitor that logged into one run (``["gan/"]`` when none is recognised).

    Example:
        >>> monitor_prefixes({"scalars": ["gan/generator_score", "d2/generator_score", "loss"], "tensors": []})
        ['gan/', 'd2/']

    """
    ends = {"scalars": "generator_score", "tensors": "config/text_summary"}
    found = {t.removesuffix(end) for kind, end in ends.items() for t in tags.get(kind, []) if t.endswith(end)}
    return sorted(found, key=lambda prefix: (prefix != "gan/", prefix)) or ["gan/"]  # the default first


def read_run(run_dir: str | os.PathLike, name: str | None = None, prefix: str = "gan/", events: Any = None) -> RunData:
    """One monitor's tags in one folder's event files (returned empty of scalars if it has none).

    The tags are read under the monitor's ``prefix`` and kept under their default names (``gan/generator_score``
    ...), which the report draws.

    Args:
        run_dir: a folder holding event files (as :func:`find_runs` returns them).
        name: the run's title; None: the folder's name.
        prefix: the monitor's ``prefix``.
        events: the folder's ``EventAccumulator``, already loaded (None: load it).

    """
    events = events if events is not None else _load(run_dir)
    tags = events.Tags()
    run = RunData(name=name if name is not None else Path(run_dir).name)
    for tag in tags["scalars"]:
        if tag.startswith(prefix):
            scalars = events.Scalars(tag)
            run.scalars[_default(tag, prefix)] = ([e.step + 1 for e in scalars], [e.value for e in scalars])
    for tag in tags["images"]:
        if tag.startswith(prefix):
            run.images[_default(tag, prefix)] = [(e.step, e.encoded_image_string) for e in events.Images(tag)]

    def texts(tag: str) -> list[str]:
        tensor_tag = f"{prefix}{tag.removeprefix('gan/')}/text_summary"
        if tensor_tag not in tags["tensors"]:
            return []
        return [e.tensor_proto.string_val[0].decode() for e in events.Tensors(tensor_tag)]

    run.diagnoses = [_from_markdown(text) for text in texts(DIAGNOSIS_TAG)]
    configs = texts(CONFIG_TAG)
    if configs:
        try:
            run.config = json.loads(from_code_block(configs[-1]))
        except json.JSONDecodeError:
            warnings.warn(f"{run_dir}: unreadable `{CONFIG_TAG}` text; shading the default thresholds", stacklevel=2)
    summaries = texts(SUMMARY_TAG)
    run.summary = from_code_block(summaries[-1]) if summaries else None
    return run


def _default(tag: str, prefix: str) -> str:
    return "gan/" + tag.removeprefix(prefix)


def _has_monitor_tags(run: RunData) -> bool:
    return bool(run.scalars or run.images or run.diagnoses or run.summary or run.config)


def read_runs(logdir: str | os.PathLike) -> list[RunData]:
    """Every run under ``logdir`` that the GAN monitor logged, named by its folder relative to ``logdir``.

    Runs without any ``gan/`` tag are left out with a warning, unless none has one.

    Raises:
        FileNotFoundError: if there are no event files (see :func:`find_runs`).
        ValueError: if no event file holds a GAN monitor tag.

    """
    root = Path(logdir)
    runs, skipped = [], []
    run_dirs = find_runs(root)
    for run_dir in run_dirs:
        relative = run_dir.relative_to(root).as_posix()
        # one run is named with its folder too (`digits_healthy/version_0`, not just `version_0`)
        name = root.resolve().name if relative == "." else relative
        name = f"{root.resolve().name}/{relative}" if len(run_dirs) == 1 and relative != "." else name
        events = _load(run_dir)
        prefixes = monitor_prefixes(events.Tags())
        for prefix in prefixes:  # several monitors in one run (each with its prefix): a run each
            titled = name if prefix == "gan/" else f"{name} ({prefix})"
            run = read_run(run_dir, titled, prefix, events)
            (runs if _has_monitor_tags(run) else skipped).append(run)
    if not runs:
        raise ValueError(
            f"the event files under '{logdir}' hold no GAN monitor tags (such as {SCORE_TAGS[0]}); train with "
            "GANMonitor in the callbacks and a TensorBoardLogger (Lightning's default logger), and pass that "
            f"logger's folder (runs found: {', '.join(run.name for run in skipped)})"
        )
    if skipped:
        warnings.warn(
            f"left out of the report, no GAN monitor tags: {', '.join(run.name for run in skipped)}", stacklevel=2
        )
    return runs
