"""The report's panels: scores (or a critic's AUC) with the failure bands, diversity values, the rules that fired.

Drawn by :mod:`lightning_gan_monitor.report`, which alone imports this module (matplotlib is imported there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_gan_monitor.diagnosis import FailureMode
from lightning_gan_monitor.events import SCORE_TAGS, RunData

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["DIVERSITY_TAGS", "QUALITY_TAGS", "draw_diversity", "draw_scores"]

#: Drawn in the diversity panel when logged (from the mode-collapse metrics).
DIVERSITY_TAGS = ("gan/diversity", "gan/near_duplicates", "gan/density", "gan/coverage", "gan/mode_coverage")
#: Drawn on the diversity panel's right axis when logged (their scale is not the others').
QUALITY_TAGS = ("gan/fid", "gan/kid")
_COLORS = {
    FailureMode.DISCRIMINATOR_DOMINATES: "tab:red",
    FailureMode.GENERATOR_DOMINATES: "tab:orange",
    FailureMode.MODE_COLLAPSE: "tab:purple",
    FailureMode.NON_FINITE: "black",
    None: "tab:green",
}


def _draw_markers(ax: Axes, fired: list[tuple[FailureMode | None, int, int]], modes: set[FailureMode | None]) -> None:
    """A dashed line at the batch where each rule fired, labelled, and the stretch over which it had held."""
    for failure, batch, held_for in fired:
        if failure not in modes:
            continue
        title = "Converged" if failure is None else failure.value.replace("_", " ").capitalize()
        color = _COLORS[failure]
        ax.axvspan(batch - held_for, batch, color=color, alpha=0.08, lw=0)
        ax.axvline(batch, color=color, ls="--", lw=1.2, label=f"{title} fired at batch {batch}", gid="diagnosis")
        ax.annotate(
            f"{title} (batch {batch})",
            # above the plotting area, where it cannot hide a curve
            xy=(batch, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color=color,
            fontweight="bold",
            annotation_clip=False,
        )


def _draw_critic(ax: Axes, run: RunData) -> None:
    """A critic's run (no probability scores): its AUC and fake-detection accuracy at the median, with its bands."""
    above, below = run.setting("d_dominates_auc_above"), run.setting("g_dominates_auc_below")
    red, orange = _COLORS[FailureMode.DISCRIMINATOR_DOMINATES], _COLORS[FailureMode.GENERATOR_DOMINATES]
    ax.axhspan(
        above, 1, color=red, alpha=0.13, lw=0, label=f"critic dominates: AUC > {above:g} (and gap not narrowing)"
    )
    ax.axhspan(0, below, color=orange, alpha=0.15, lw=0, label=f"critic fooled: AUC < {below:g}")
    for tag, color in (("gan/auc", "tab:blue"), ("gan/fake_detection_at_median", "tab:green")):
        if tag in run.scalars:
            batches, values = run.scalars[tag]
            label = tag.removeprefix("gan/").replace("_", " ")
            ax.plot(batches, values, color=color, lw=1.4, marker="o", ms=2.5, label=label, gid=tag)


def draw_scores(ax: Axes, run: RunData, fired: list[tuple[FailureMode | None, int, int]]) -> None:
    """The generator and discriminator scores with the failure bands (a critic's run: its AUC and its bands)."""
    if "gan/auc" in run.scalars and not any(tag in run.scalars for tag in SCORE_TAGS):
        _draw_critic(ax, run)
        _finish_scores(ax, run, fired, "AUC, detection at the median (chance 0.5)")
        return
    g_below = run.setting("d_dominates_generator_below")
    d_above = run.setting("d_dominates_discriminator_above")
    g_above = run.setting("g_dominates_generator_above")
    red, orange = _COLORS[FailureMode.DISCRIMINATOR_DOMINATES], _COLORS[FailureMode.GENERATOR_DOMINATES]
    ax.axhspan(0, g_below, color=red, alpha=0.13, lw=0, label=f"D dominates: generator score < {g_below:g}")
    ax.axhspan(d_above, 1, fc="none", ec=red, alpha=0.5, hatch="///", lw=0, label=f"...and discriminator > {d_above:g}")
    ax.axhspan(g_above, 1, color=orange, alpha=0.15, lw=0, label=f"G dominates: generator score > {g_above:g}")
    for tag, color in zip(SCORE_TAGS, ("tab:blue", "tab:green")):
        if tag in run.scalars:
            batches, values = run.scalars[tag]
            label = tag.removeprefix("gan/").replace("_", " ")
            ax.plot(batches, values, color=color, lw=1.4, marker="o", ms=2.5, label=label, gid=tag)  # 1 point shows
    _finish_scores(ax, run, fired, "score (ideal 0.5)")


def _finish_scores(ax: Axes, run: RunData, fired: list[tuple[FailureMode | None, int, int]], ylabel: str) -> None:
    ax.axhline(0.5, color="gray", lw=0.6, ls=":")
    modes = {None, FailureMode.DISCRIMINATOR_DOMINATES, FailureMode.GENERATOR_DOMINATES, FailureMode.NON_FINITE}
    if not any(tag in run.scalars for tag in DIVERSITY_TAGS):  # else mode collapse is marked on its own panel
        modes.add(FailureMode.MODE_COLLAPSE)
    _draw_markers(ax, fired, modes)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.set_title(run.name, fontsize=10, fontweight="bold", pad=14)  # room for the labels of the rules that fired
    ax.set_xlabel("training batches", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    # below the axes, so it never hides a curve
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
    if not any(tag in run.scalars for tag in (*SCORE_TAGS, "gan/auc")):
        ax.text(0.5, 0.5, "no scores logged", ha="center", va="center", transform=ax.transAxes, color="gray")


def draw_diversity(ax: Axes, run: RunData, fired: list[tuple[FailureMode | None, int, int]]) -> None:
    """The diversity values with the mode-collapse bands (FID and KID on a right axis when logged)."""
    colors = dict(zip(DIVERSITY_TAGS, ("tab:purple", "tab:brown", "tab:cyan", "tab:olive", "tab:pink")))
    drawn = False
    for tag in DIVERSITY_TAGS:
        if tag in run.scalars:
            batches, values = run.scalars[tag]
            ax.plot(
                batches, values, color=colors[tag], lw=1.3, marker="o", ms=2.5, label=tag.removeprefix("gan/"), gid=tag
            )
            drawn = True
    purple = _COLORS[FailureMode.MODE_COLLAPSE]
    below = run.setting("collapse_diversity_below")
    if below is not None and "gan/diversity" in run.scalars:
        ax.axhspan(0, below, color=purple, alpha=0.12, lw=0, label=f"collapse: diversity < {below:g}")
    above = run.setting("collapse_near_duplicates_above")
    if above is not None and "gan/near_duplicates" in run.scalars:
        ax.axhline(above, color="tab:brown", ls="--", lw=0.9, label=f"collapse: near-duplicates > {above:g}")
    _draw_markers(ax, fired, {FailureMode.MODE_COLLAPSE})
    quality = [tag for tag in QUALITY_TAGS if tag in run.scalars]
    if quality:
        twin = ax.twinx()
        for tag, style in zip(quality, ("-", "--")):
            batches, values = run.scalars[tag]
            twin.plot(
                batches,
                values,
                color="gray",
                ls=style,
                lw=1.0,
                marker="o",
                ms=2.5,
                label=tag.removeprefix("gan/"),
                gid=tag,
            )
        twin.set_ylabel(" / ".join(tag.removeprefix("gan/").upper() for tag in quality), fontsize=8)
        twin.tick_params(labelsize=7)
        twin.legend(fontsize=6, loc="upper right")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("training batches", fontsize=8)
    ax.set_ylabel("diversity, near-duplicates,\ndensity, coverage", fontsize=8)  # and mode coverage, when logged
    ax.tick_params(labelsize=7)
    if drawn:
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
    else:
        ax.text(0.5, 0.5, "no diversity metrics logged", ha="center", va="center", transform=ax.transAxes)
