import base64
import inspect
import logging
import re
import struct
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import RecordOutputs, fit_digits, read_events
from digits_gan import SCENARIOS
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from lightning_gan_monitor import FailureMode, GANMonitor, GANMonitorWarning, StoppingReason
from lightning_gan_monitor.__main__ import main
from lightning_gan_monitor.diagnosis import format_message
from lightning_gan_monitor.functional import gan_scores
from lightning_gan_monitor.report import (
    DEFAULT_CONFIG,
    RunData,
    ScoreHistory,
    collapsed_batches,
    plot_run,
    plot_runs,
    save_report,
)
from lightning_gan_monitor.rules import Rule
from lightning_gan_monitor.tensorboard import code_block, to_markdown, write_config

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
PATIENCE = 30
# scenario -> epochs of 5 batches: long enough for each failure to fire (non-finite: the NaN comes at batch 101)
EPOCHS = {"healthy": 20, "d-dominates": 20, "g-dominates": 20, "non-finite": 25}
TITLES = {
    "d-dominates": "Discriminator dominates",
    "g-dominates": "Generator dominates",
    "non-finite": "Non finite",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict[str, tuple[GANMonitor, RecordOutputs]]]:
    """Each scenario of the example trained with a real TensorBoardLogger into <root>/<scenario>/version_0."""
    root = tmp_path_factory.mktemp("report") / "logs"
    monitors = {}
    for scenario, epochs in EPOCHS.items():
        monitor, recorder = GANMonitor(patience=PATIENCE, from_logits=True, log_every_n_batches=10), RecordOutputs()
        logger = TensorBoardLogger(root, name=scenario, version=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GANMonitorWarning)
            fit_digits(
                root, [recorder, monitor], epochs=epochs, trainer_kwargs=dict(logger=logger), **SCENARIOS[scenario]
            )
        monitors[scenario] = monitor, recorder
    return root, monitors


def axes_of(figure, gid: str):
    return [ax for ax in figure.axes if any(line.get_gid() == gid for line in ax.lines)]


def line(ax, gid: str):
    (found,) = [line for line in ax.lines if line.get_gid() == gid]
    return found


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------ what is drawn


@pytest.mark.parametrize("scenario", list(EPOCHS))
def test_report_draws_the_logged_scores_and_the_fired_rule_at_its_batch(runs, scenario):
    root, monitors = runs
    monitor, _ = monitors[scenario]
    figure = plot_run(root / scenario)
    (ax,) = axes_of(figure, "gan/generator_score")
    assert ax.get_title() == f"{scenario}/version_0"
    events = read_events(root / scenario / "version_0")
    for tag in ("gan/generator_score", "gan/discriminator_score"):
        logged = events.Scalars(tag)
        drawn = line(ax, tag)
        # x is training batches: Lightning (and the monitor) log batch k's values at step k - 1
        assert list(drawn.get_xdata()) == [e.step + 1 for e in logged]
        assert list(drawn.get_ydata()) == [e.value for e in logged]
    markers = [line for line in ax.lines if line.get_gid() == "diagnosis"]
    text = "\n".join(t.get_text() for t in figure.texts + [t for a in figure.axes for t in a.texts])
    if scenario == "healthy":
        assert monitor.diagnoses == [] and markers == []
        assert "verdict: healthy: no failure rule fired" in text and "No rule fired." in text
        return
    (diagnosis,) = monitor.diagnoses
    (marker,) = markers
    assert list(marker.get_xdata()) == [diagnosis.batch, diagnosis.batch]
    assert marker.get_label() == f"{TITLES[scenario]} fired at batch {diagnosis.batch}"
    assert f"{TITLES[scenario]} (batch {diagnosis.batch})" in [t.get_text() for t in ax.texts]
    assert "What to try:" in text and f"verdict: {TITLES[scenario]} after {diagnosis.batch} training batches" in text


def test_report_shades_the_thresholds_the_run_used_or_the_defaults(tmp_path):
    monitor = GANMonitor(
        patience=PATIENCE, from_logits=True, d_dominates_generator_below=0.2, g_dominates_generator_above=0.8
    )
    logger = TensorBoardLogger(tmp_path, name="custom", version=0)
    with pytest.warns(GANMonitorWarning, match="Discriminator dominates"):
        fit_digits(tmp_path, [monitor], epochs=10, trainer_kwargs=dict(logger=logger), **SCENARIOS["d-dominates"])
    labels = [p.get_label() for p in plot_run(tmp_path / "custom").axes[0].patches]
    assert "D dominates: generator score < 0.2" in labels and "G dominates: generator score > 0.8" in labels
    # logs without `gan/config` (version 0.1) get the defaults, which are GANMonitor's
    with SummaryWriter(tmp_path / "old") as writer:
        writer.add_scalar("gan/generator_score", 0.4, 9)
    labels = [p.get_label() for p in plot_run(tmp_path / "old").axes[0].patches]
    assert "D dominates: generator score < 0.1" in labels and "...and discriminator > 0.9" in labels
    defaults = inspect.signature(GANMonitor).parameters
    changed = {"g_dominates_generator_above": 0.9}  # version 0.1's default, lowered to 0.8 in 0.2
    assert {key: defaults[key].default for key in DEFAULT_CONFIG} == {**DEFAULT_CONFIG, **{k: 0.8 for k in changed}}
    assert {k: DEFAULT_CONFIG[k] for k in changed} == changed


def test_report_lays_out_runs_two_a_row(runs):
    root, monitors = runs
    figure = plot_run(root)
    score_axes = axes_of(figure, "gan/generator_score")
    assert [ax.get_title() for ax in score_axes] == [f"{s}/version_0" for s in sorted(EPOCHS)]
    # a score plot, a diversity panel, a text panel and a strip of sample grids per run (the flat 64-value digits are
    # shown as 8x8 images); the runs stopped before the first diversity check (batch 100) have an empty diversity panel
    diversity_axes = [ax for ax in figure.axes if ax.get_ylabel().startswith("diversity, near-duplicates")]
    measured = ["gan/diversity" in monitors[s][0].history.tags for s in sorted(EPOCHS)]
    assert any(measured) and not all(measured)
    assert [bool(ax.get_lines()) for ax in diversity_axes] == measured
    image_axes = [ax for ax in figure.axes if ax.get_images()]
    empty = [ax for ax in figure.axes if any(t.get_text() == "no sample grids logged" for t in ax.texts)]
    assert len(empty) <= 1 and len(image_axes) >= 2 * (len(EPOCHS) - len(empty))  # grids and real samples
    assert len(figure.axes) == 3 * len(EPOCHS) + len(image_axes) + len(empty)
    # every plotted series shows, however few points it has (a diversity series often has one)
    series = [line for ax in figure.axes for line in ax.lines if (line.get_gid() or "").startswith("gan/")]
    assert series and all(line.get_marker() not in ("None", None, "") for line in series)
    # two runs a row, so four runs stay readable at screen width: two columns, two rows of runs, in order
    positions = [(round(ax.get_position().x0, 3), -round(ax.get_position().y0, 3)) for ax in score_axes]
    assert len({x for x, _ in positions}) == 2 and len({y for _, y in positions}) == 2
    assert positions == sorted(positions, key=lambda p: (p[1], p[0]))
    assert figure.get_size_inches()[0] == pytest.approx(6.4 * 2)


def write_collapse_run(log_dir: Path, grids: list[np.ndarray]) -> None:
    """Event files with the tags the mode-collapse branch logs, written by tensorboard's own writer."""

    @dataclass(frozen=True)
    class Collapse(Rule):
        failure: FailureMode | None = field(init=False, default=FailureMode.MODE_COLLAPSE)

        def describe(self, scores):
            return "diversity has stayed below 0.3"

    with SummaryWriter(log_dir) as writer:
        write_config(writer, {"collapse_diversity_below": 0.3, "collapse_near_duplicates_above": 0.5})
        for batch in range(10, 210, 10):
            writer.add_scalar("gan/generator_score", 0.5, batch - 1)
            writer.add_scalar("gan/discriminator_score", 0.6, batch - 1)
        for i, batch in enumerate(range(50, 250, 50)):
            writer.add_scalar("gan/diversity", 1.0 - 0.25 * i, batch - 1)
            writer.add_scalar("gan/near_duplicates", 0.2 * i, batch - 1)
            writer.add_scalar("gan/density", 0.9, batch - 1)
            writer.add_scalar("gan/coverage", 0.8 - 0.2 * i, batch - 1)
        for step, grid in enumerate(grids):
            writer.add_image("gan/samples", grid, step, dataformats="HW")
        writer.add_image("gan/real_samples", np.full((16, 16), 128, dtype=np.uint8), 0, dataformats="HW")
        message = format_message(Collapse(patience=100), 180, 100, {})
        writer.add_text("gan/diagnosis", to_markdown(message), 180)


def test_report_draws_diversity_coverage_and_sample_grids_when_logged(tmp_path):
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(5)]
    write_collapse_run(tmp_path / "collapse", grids)
    figure = plot_run(tmp_path / "collapse")
    (ax,) = axes_of(figure, "gan/diversity")
    events = read_events(tmp_path / "collapse")
    for tag in ("gan/diversity", "gan/near_duplicates", "gan/density", "gan/coverage"):
        assert list(line(ax, tag).get_ydata()) == [e.value for e in events.Scalars(tag)]  # float32, as logged
        assert list(line(ax, tag).get_xdata()) == [50, 100, 150, 200]
    labels = [p.get_label() for p in ax.patches] + [line.get_label() for line in ax.lines]
    assert "collapse: diversity < 0.3" in labels and "collapse: near-duplicates > 0.5" in labels
    (marker,) = [line for line in ax.lines if line.get_gid() == "diagnosis"]
    assert list(marker.get_xdata()) == [180, 180] and marker.get_label() == "Mode collapse fired at batch 180"
    images = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in images] == [
        "samples, batch 0",
        "samples, batch 2",
        "samples, batch 4",
        "real samples",
    ]
    for ax, grid in zip(images, [grids[0], grids[2], grids[4]]):
        drawn = np.asarray(ax.images[0].get_array())
        drawn = drawn[..., 0] if drawn.ndim == 3 else drawn  # tensorboard stores a grey grid as RGB
        np.testing.assert_allclose(drawn, grid / 255, atol=1e-6)


# ------------------------------------------------------------------ files and the command line


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf", ".html"])
def test_report_command_writes_each_format(runs, tmp_path, suffix, capsys):
    root, monitors = runs
    output = tmp_path / f"report{suffix}"
    assert main(["report", str(root / "d-dominates"), "-o", str(output), "--dpi", "50"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {output} (1 run)"
    width, height = plot_run(root / "d-dominates").get_size_inches()
    data = output.read_bytes()
    if suffix == ".png":
        assert png_size(data)[0] == round(width * 50) and png_size(data)[1] in (int(height * 50), round(height * 50))
    elif suffix == ".svg":
        svg = ET.fromstring(data)
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert float(svg.get("width").removesuffix("pt")) == pytest.approx(width * 72)
        assert float(svg.get("height").removesuffix("pt")) == pytest.approx(height * 72)
    elif suffix == ".pdf":
        assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
        box = [float(v) for v in re.search(rb"/MediaBox \[ *([\d. ]+)\]", data).group(1).split()]
        assert box == pytest.approx([0, 0, width * 72, height * 72])
    else:
        page = data.decode()
        assert page.startswith("<!DOCTYPE html>")
        (encoded,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
        size = png_size(base64.b64decode(encoded))
        assert size[0] == round(width * 50) and size[1] in (int(height * 50), round(height * 50))  # either rounding
        diagnosis = monitors["d-dominates"][0].diagnoses[0].message
        assert "<h2>d-dominates/version_0</h2>" in page
        assert diagnosis.splitlines()[0].replace("'", "&#x27;") in page


def test_report_errors_are_clear_in_python_and_on_the_command_line(runs, tmp_path, capsys):
    root, _ = runs
    with pytest.raises(FileNotFoundError, match=r"`logdir` '.*nowhere' does not exist"):
        plot_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no TensorBoard event files \(events.out.tfevents.\*\) under"):
        plot_run(tmp_path / "empty")
    with SummaryWriter(tmp_path / "other") as writer:
        writer.add_scalar("loss", 1.0, 0)
    with pytest.raises(ValueError, match=r"hold no GAN monitor tags .* train with GANMonitor .* \(runs found: other\)"):
        plot_run(tmp_path / "other")
    # a folder mixing runs with and without the monitor's tags draws the former and names the latter
    with SummaryWriter(tmp_path / "mixed" / "other") as writer:
        writer.add_scalar("loss", 1.0, 0)
    with SummaryWriter(tmp_path / "mixed" / "gan") as writer:
        writer.add_scalar("gan/generator_score", 0.5, 0)
    with pytest.warns(UserWarning, match="left out of the report, no GAN monitor tags: other"):
        assert [ax.get_title() for ax in axes_of(plot_run(tmp_path / "mixed"), "gan/generator_score")] == ["gan"]

    figure = plot_run(root / "healthy")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"cannot write the report to .*: '.*a_file' is a file, not a folder"):
        save_report(figure, tmp_path / "a_file" / "report.png")
    with pytest.raises(FileNotFoundError, match=r"the folder '.*missing' does not exist; create it first"):
        save_report(figure, tmp_path / "missing" / "report.png")
    with pytest.raises(ValueError, match=r"`output` must end in .png, .svg, .pdf or .html, got '.*report.jpg'"):
        save_report(figure, tmp_path / "report.jpg")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder; give a file name such as"):
        save_report(figure, tmp_path / "folder.png")
    if sys.platform == "linux":  # a failure while writing (even root cannot create files in /proc)
        with pytest.raises(OSError, match=re.escape("cannot write the report to '/proc/report.png'")):
            save_report(figure, "/proc/report.png")

    cases = [
        ([str(tmp_path / "empty"), "-o", str(tmp_path / "r.png")], "error: no TensorBoard event files"),
        ([str(tmp_path / "other"), "-o", str(tmp_path / "r.png")], "error: the event files under .* hold no GAN"),
        ([str(root), "-o", str(tmp_path / "missing" / "r.png")], "error: cannot write the report to"),
        ([str(root), "-o", str(tmp_path / "r.gif")], "error: `output` must end in .png, .svg, .pdf or .html"),
    ]
    for argv, message in cases:
        assert main(["report", *argv]) == 1
        assert re.match(message, capsys.readouterr().err)
    assert not (tmp_path / "r.png").exists()


def test_report_command_runs_as_a_module_and_fails_with_exit_status_1(tmp_path):
    command = [sys.executable, "-m", "lightning_gan_monitor", "report", str(tmp_path), "-o", str(tmp_path / "r.png")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: no TensorBoard event files (events.out.tfevents.*) under '{tmp_path}'")


def test_report_command_rejects_a_bad_dpi(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--dpi", "0", "logs"])
    assert exit_info.value.code == 2 and "--dpi: must be a positive number, got '0'" in capsys.readouterr().err


def test_report_without_matplotlib_says_how_to_install_it(runs, tmp_path, monkeypatch, capsys):
    root, monitors = runs
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is not installed
    hint = re.escape('install it with: pip install "lightning-gan-monitor[report]"')
    with pytest.raises(ImportError, match=f"The GAN monitor report needs matplotlib; {hint}"):
        plot_run(root)
    with pytest.raises(ImportError, match=hint):
        monitors["healthy"][0].plot()
    assert main(["report", str(root), "-o", str(tmp_path / "r.png")]) == 1
    assert capsys.readouterr().err.startswith("error: The GAN monitor report needs matplotlib")


# ------------------------------------------------------------------ from the monitor: plot(), history, summary


def test_monitor_plot_draws_its_own_history(runs):
    root, monitors = runs
    monitor, _ = monitors["d-dominates"]
    figure = monitor.plot()
    (ax,) = axes_of(figure, "gan/generator_score")
    events = read_events(root / "d-dominates" / "version_0")
    for tag in ("gan/generator_score", "gan/discriminator_score"):
        assert list(line(ax, tag).get_xdata()) == [e.step + 1 for e in events.Scalars(tag)]
        assert list(line(ax, tag).get_ydata()) == [e.value for e in events.Scalars(tag)]  # float32, as logged
    (marker,) = [line for line in ax.lines if line.get_gid() == "diagnosis"]
    assert list(marker.get_xdata()) == [monitor.diagnoses[0].batch] * 2
    texts = "\n".join(t.get_text() for a in figure.axes for t in a.texts)
    assert "GANMonitor summary of 50 training batches" in texts
    # the history travels in checkpoints
    restored = GANMonitor(patience=PATIENCE, from_logits=True)
    restored.load_state_dict(monitor.state_dict())
    (restored_ax,) = axes_of(restored.plot(), "gan/generator_score")
    for tag in ("gan/generator_score", "gan/discriminator_score"):
        assert list(line(restored_ax, tag).get_ydata()) == list(line(ax, tag).get_ydata())
    with pytest.raises(RuntimeError, match=r"GANMonitor.plot\(\) has nothing to draw yet"):
        GANMonitor().plot()


def reference_regimes(recorder: RecordOutputs, smoothing: float = 0.9) -> dict[str, int]:
    """Independent reference: bias-corrected EMA of each batch's scores, then the regime of every batch."""
    counts = dict.fromkeys(["balanced", "discriminator dominating", "generator dominating", "non-finite"], 0)
    m, w = np.zeros(3), 0.0
    for d_real, d_fake in recorder.batches:
        if not (torch.isfinite(d_real).all() and torch.isfinite(d_fake).all()):
            counts["non-finite"] += 1
            continue
        s = gan_scores(d_real, d_fake, from_logits=True)
        auc = (d_real.flatten().unsqueeze(1) > d_fake.flatten().unsqueeze(0)).float().mean().item()
        x = np.array([s["generator_score"].item(), s["discriminator_score"].item(), auc])
        m, w = smoothing * m + (1 - smoothing) * x, smoothing * w + (1 - smoothing)
        g, d, a = m / w
        fooled = g > 0.8 or a < 0.2  # D rates fakes as real, or orders them above real samples
        regime = "discriminator dominating" if g < 0.1 and d > 0.9 else "generator dominating" if fooled else None
        counts[regime or "balanced"] += 1
    return counts


def test_monitor_summary_counts_regimes_and_reports_the_verdict(runs, caplog):
    root, monitors = runs
    for scenario, (monitor, recorder) in monitors.items():
        summary = monitor.summary
        assert summary.batches == len(recorder.batches)
        # "collapsed" is measured only by runs that reached a diversity check (batch 100), and none of these is
        if "gan/diversity" in monitor.history.tags:
            _, diversity = monitor.history.series("gan/diversity")
            _, duplicates = monitor.history.series("gan/near_duplicates")
            assert min(diversity) >= monitor.collapse_diversity_below, scenario
            assert max(duplicates) <= monitor.collapse_near_duplicates_above, scenario
            collapsed = 0
        else:
            collapsed = None
        assert summary.regimes == {**reference_regimes(recorder), "collapsed": collapsed}, scenario
        (event,) = read_events(root / scenario / "version_0").Tensors("gan/summary/text_summary")
        assert event.step == summary.batches
        assert event.tensor_proto.string_val[0].decode() == code_block(str(summary))
        if scenario == "healthy":
            assert summary.verdict == "healthy: no failure rule fired; training ran to its end (100 batches)"
        else:
            diagnosis = monitor.diagnoses[0]
            assert summary.verdict == (
                f"{TITLES[scenario]} after {diagnosis.batch} training batches (since batch "
                f"{diagnosis.onset_batch}); training stopped at batch {summary.batches}"
            )
    # printed on rank zero at the end of fit
    with caplog.at_level(logging.INFO):
        monitor = GANMonitor(patience=PATIENCE, from_logits=True)
        fit_digits(root.parent / "again", [monitor], epochs=2)
    assert str(monitor.summary) in caplog.text and "verdict: healthy" in caplog.text


def test_monitor_judges_the_batches_after_the_last_check_at_the_end_of_fit(tmp_path):
    # checks at batches 1, 20 and 40; D-dominates completes its patience at batch 46 and the run ends at 50
    monitor = GANMonitor(patience=PATIENCE, from_logits=True, check_every_n_batches=20, log_every_n_batches=100)
    with pytest.warns(
        GANMonitorWarning, match=r"Discriminator dominates after 46 training batches(.|\n)*already reached its end"
    ):
        _, trainer = fit_digits(tmp_path, [monitor], epochs=10, **SCENARIOS["d-dominates"])
    assert monitor.failure is FailureMode.DISCRIMINATOR_DOMINATES and monitor.diagnoses[0].batch == 46
    # reported, but it stopped nothing: the run had already trained its 50 batches
    assert monitor.stopping_reason is StoppingReason.NOT_STOPPED and trainer.current_epoch == 10
    assert sum(n for n in monitor.summary.regimes.values() if n is not None) == 50


def test_score_history_stays_bounded_and_evenly_spaced():
    history = ScoreHistory(max_points=8)
    for batch in range(1, 1001):
        history.add(batch, {"gan/generator_score": batch / 1000})
    batches, values = history.series("gan/generator_score")
    assert len(batches) <= 9 and batches[-1] == 1000 and values[-1] == 1.0  # the latest value is always kept
    gaps = np.diff(batches[:-1])
    assert batches[0] == 1 and len(set(gaps)) == 1 and gaps[0] == 128
    restored = ScoreHistory(max_points=8)
    restored.load_state_dict(history.state_dict())
    restored.add(1001, {"gan/generator_score": 0.0})
    history.add(1001, {"gan/generator_score": 0.0})
    assert restored.series("gan/generator_score") == history.series("gan/generator_score")
    with pytest.raises(ValueError, match="`max_points` must be an even integer of at least 2, got 7"):
        ScoreHistory(max_points=7)


def test_collapsed_batches_is_the_union_of_both_conditions():
    series = {
        "gan/diversity": ([100, 200, 300, 400], [0.9, 0.1, 0.9, 0.9]),  # batches 101-200 collapsed
        "gan/near_duplicates": ([150, 300, 450], [0.1, 0.8, 0.9]),  # batches 151-300 and 301-450
    }
    assert collapsed_batches(series, diversity_below=0.2, near_duplicates_above=0.5) == 350  # 101-450
    assert collapsed_batches(series, diversity_below=0.2) == 100
    assert collapsed_batches(series) is None


def test_plot_runs_needs_a_run():
    with pytest.raises(ValueError, match="`runs` must hold at least one RunData, got none"):
        plot_runs([])
    assert RunData("x").setting("g_dominates_generator_above") == 0.9
