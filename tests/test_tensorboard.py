import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import RecordOutputs, fit_digits, make_trainer, read_events
from digits_gan import SCENARIOS
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from lightning_gan_monitor import FailureMode, GANMonitor, GANMonitorWarning
from lightning_gan_monitor.pictures import SamplePictures, as_images, make_grid
from lightning_gan_monitor.report import plot_run
from lightning_gan_monitor.tensorboard import REAL_SAMPLES_TAG, SAMPLES_TAG, score_layout, to_markdown

SCORE_TAGS = [
    "gan/generator_score",
    "gan/discriminator_score",
    "gan/fake_detection_accuracy",
    "gan/real_detection_accuracy",
]


@pytest.fixture(scope="module")
def dominated_run(tmp_path_factory) -> tuple[GANMonitor, EventAccumulator, RecordOutputs]:
    tmp_path = tmp_path_factory.mktemp("tb")
    recorder, monitor = RecordOutputs(), GANMonitor(patience=30, from_logits=True, log_every_n_batches=10)
    logger = TensorBoardLogger(tmp_path, name="run")
    with pytest.warns(GANMonitorWarning):
        fit_digits(
            tmp_path, [recorder, monitor], epochs=40, trainer_kwargs=dict(logger=logger), **SCENARIOS["d-dominates"]
        )
    return monitor, read_events(logger.log_dir), recorder


def test_tensorboard_scalars_are_logged_every_n_batches_and_at_the_stop(dominated_run):
    monitor, events, recorder = dominated_run
    assert set(SCORE_TAGS) <= set(events.Tags()["scalars"])
    steps = [e.step for e in events.Scalars("gan/generator_score")]
    # every 10 batches (Lightning's step for batch k is k - 1), then the partial window up to the stop
    expected = list(range(9, monitor.stopped_batch, 10))
    if monitor.stopped_batch % 10:
        expected.append(monitor.stopped_batch - 1)
    assert steps == expected
    assert len(recorder.batches) == monitor.stopped_batch
    assert events.Scalars("gan/generator_score")[-1].value < 0.1


def test_tensorboard_score_chart_layout_puts_both_scores_on_one_chart(dominated_run):
    _, events, _ = dominated_run
    (event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    (category,) = layout.category
    assert category.title == "GAN monitor"
    charts = {chart.title: list(chart.multiline.tag) for chart in category.chart}
    assert charts["Scores: generator vs discriminator (ideal 0.5)"] == SCORE_TAGS[:2]
    assert charts["Detection accuracy: fake vs real"] == SCORE_TAGS[2:]
    assert len(score_layout()["GAN monitor"]) == len(charts)


def test_tensorboard_diagnosis_text_is_written_at_the_stop(dominated_run):
    monitor, events, _ = dominated_run
    (event,) = events.Tensors("gan/diagnosis/text_summary")
    assert events.SummaryMetadata("gan/diagnosis/text_summary").plugin_data.plugin_name == "text"
    assert event.step == monitor.stopped_batch
    text = event.tensor_proto.string_val[0].decode()
    assert text == to_markdown(monitor.stopping_reason_message)
    assert text.startswith("Discriminator dominates after") and "\n- one-sided label smoothing" in text


def test_tensorboard_other_loggers_get_scalars_and_one_warning(tmp_path):
    monitor = GANMonitor(patience=30, from_logits=True)
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    with pytest.warns(GANMonitorWarning) as record:
        fit_digits(tmp_path, [monitor], epochs=10, trainer_kwargs=dict(logger=loggers[:1]), **SCENARIOS["d-dominates"])
    tensorboard_only = [w for w in record if "TensorBoard only" in str(w.message)]
    assert len(tensorboard_only) == 1
    assert "gan/generator_score" in (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    # with both loggers, no such warning and both get the scalars
    pl.seed_everything(0)
    monitor = GANMonitor(patience=30, from_logits=True)
    with pytest.warns(GANMonitorWarning) as record:
        fit_digits(tmp_path, [monitor], epochs=10, trainer_kwargs=dict(logger=loggers), **SCENARIOS["d-dominates"])
    assert not [w for w in record if "TensorBoard only" in str(w.message)]
    assert "gan/generator_score" in read_events(loggers[1].log_dir).Tags()["scalars"]


# ---------------------------------------------------------------------------------------------- image grids


def test_tensorboard_make_grid_layout_and_scaling():
    images = torch.stack([torch.full((1, 4, 3), float(i)) for i in range(5)])  # image i is all i
    grid = make_grid(images, nrow=3, padding=1, pad_value=0.5, value_range=(0, 4))
    assert grid.shape == (1, 2 * (4 + 1) + 1, 3 * (3 + 1) + 1)
    for i in range(5):
        top, left = 1 + (i // 3) * 5, 1 + (i % 3) * 4
        assert torch.all(grid[:, top : top + 4, left : left + 3] == i / 4), i
    assert grid[0, 0, 0] == 0.5 and grid[0, 6:10, 9:12].eq(0.5).all()  # padding, and the empty sixth cell
    rgb = make_grid(torch.rand(2, 3, 5, 5) * 10 - 5, value_range=None)
    assert rgb.shape == (3, 9, 16) and rgb.min() >= 0 and rgb.max() <= 1


def test_tensorboard_as_images_and_grid_errors():
    assert as_images(torch.zeros(4, 3, 2, 2)).shape == (4, 3, 2, 2)
    assert as_images(torch.zeros(4, 16), [4, 4]).shape == (4, 1, 4, 4)
    assert as_images(torch.zeros(4, 2, 8, 8)) is None  # two channels: not an image
    with pytest.raises(ValueError, match=r"`image_shape` \[1, 4, 4\] cannot show samples of shape \(64,\)"):
        as_images(torch.zeros(4, 64), [1, 4, 4])
    with pytest.raises(ValueError, match=r"`images` must have shape \(N, C, H, W\)"):
        make_grid(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="`nrow` must be a positive integer, got 0"):
        make_grid(torch.zeros(1, 1, 2, 2), nrow=0)
    with pytest.raises(ValueError, match="`padding` must be a non-negative integer"):
        make_grid(torch.zeros(1, 1, 2, 2), padding=-1)
    with pytest.raises(ValueError, match="`value_range` must be"):
        make_grid(torch.zeros(1, 1, 2, 2), value_range=(1, 1))


@pytest.fixture(scope="module")
def collapse_run(tmp_path_factory) -> tuple[GANMonitor, EventAccumulator]:
    tmp_path = tmp_path_factory.mktemp("collapse")
    monitor = GANMonitor(from_logits=True, image_every_n_epochs=5, image_shape=[1, 8, 8], num_image_samples=16)
    logger = TensorBoardLogger(tmp_path, name="run")
    with pytest.warns(GANMonitorWarning, match="Mode collapse after"):
        fit_digits(tmp_path, [monitor], epochs=80, trainer_kwargs=dict(logger=logger), **SCENARIOS["mode-collapse"])
    return monitor, read_events(logger.log_dir)


def grid_cells(event) -> list[np.ndarray]:
    """The 16 8x8 cells of a 4x4 grid image with 2 pixels of padding."""
    picture = np.array(Image.open(io.BytesIO(event.encoded_image_string)).convert("L")).astype(int)
    return [picture[2 + r * 10 : 10 + r * 10, 2 + c * 10 : 10 + c * 10] for r in range(4) for c in range(4)]


def test_tensorboard_grids_of_fixed_latent_samples_and_real_samples(collapse_run):
    monitor, events = collapse_run
    assert {SAMPLES_TAG, REAL_SAMPLES_TAG} <= set(events.Tags()["images"])
    samples, real = events.Images(SAMPLES_TAG), events.Images(REAL_SAMPLES_TAG)
    # a grid every 5 epochs (25 batches) until the stop; the real grid once
    assert [e.step for e in samples] == list(range(25, monitor.stopped_batch + 1, 25))
    assert len(real) == 1
    # 16 images of 8x8 in a 4x4 grid with 2 pixels of padding: 4 * 10 + 2 pixels a side
    for event in (samples[-1], real[0]):
        assert (event.height, event.width) == (42, 42)
        picture = np.array(Image.open(io.BytesIO(event.encoded_image_string)))
        assert picture.shape[:2] == (42, 42)
    # The collapsed generator draws the same digit in every cell; real digits differ.
    fake_cells, real_cells = grid_cells(samples[-1]), grid_cells(real[0])
    assert max(np.abs(c - fake_cells[0]).max() for c in fake_cells) <= 1
    assert max(np.abs(c - real_cells[0]).max() for c in real_cells) > 50


def test_tensorboard_diversity_scalars_and_collapse_diagnosis(collapse_run):
    monitor, events = collapse_run
    assert monitor.failure is FailureMode.MODE_COLLAPSE
    for tag in ("gan/diversity", "gan/near_duplicates", "gan/density", "gan/coverage"):
        # the first check (batch 100) shows an unambiguous collapse: the rule fires there, and training stops
        assert [e.step for e in events.Scalars(tag)] == [99], tag
    assert all(e.value == 1.0 for e in events.Scalars("gan/near_duplicates"))
    (text,) = events.Tensors("gan/diagnosis/text_summary")
    assert text.tensor_proto.string_val[0].decode().startswith("Mode collapse after 100 training batches")


def test_tensorboard_2d_samples_get_a_scatter_plot_on_fixed_axes(tmp_path, caplog):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import mixture_modes

    torch.manual_seed(0)
    points = mixture_modes.sample("ring", 512, torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(points), batch_size=64, shuffle=True)
    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = GANMonitor(from_logits=True, image_every_n_epochs=2, diversity_every_n_batches=None)
    with caplog.at_level(logging.INFO):
        make_trainer(tmp_path, [monitor], max_epochs=6, logger=logger).fit(mixture_modes.MixtureGAN(), loader)
    assert any(
        "as a scatter plot of generated (red) against real (gray) points" in r.getMessage() for r in caplog.records
    )
    events = read_events(logger.log_dir)
    plots = events.Images("gan/samples")
    assert [e.step for e in plots] == [16, 32, 48] and "gan/real_samples" not in events.Tags()["images"]
    pixels = [np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")) for e in plots]
    for image in pixels:
        assert image.shape == (256, 256, 3)
        red = (image[..., 0] > 180) & (image[..., 1] < 80)
        gray = (image[..., 0] == image[..., 1]) & (image[..., 0] > 120) & (image[..., 0] < 180)
        assert red.sum() > 50 and gray.sum() > 500  # generated and real points both drawn
    (tmp_path / "scatter.png").write_bytes(plots[-1].encoded_image_string)  # looked at during development
    # the report shows the same plot
    figure = plot_run(logger.log_dir)
    assert [ax.get_title() for ax in figure.axes if ax.get_images()] == [
        "samples, batch 16",
        "samples, batch 32",
        "samples, batch 48",
    ]


@pytest.mark.parametrize(
    ("shape", "kind", "said"),
    [
        ((4, 64), "grid", "as 8x8 grayscale images"),
        ((4, 784), "grid", "as 28x28 grayscale images"),
        ((4, 2), "scatter", "as a scatter plot"),
        ((4, 3, 32, 32), "grid", ""),
        ((4, 10), "none", "samples of shape (10,) are neither images"),
        ((4, 2, 8, 8), "none", "if they are images, pass `GANMonitor(image_shape=[C, H, W])`"),
    ],
)
def test_tensorboard_pictures_for_every_kind_of_sample(shape, kind, said):
    pictures = SamplePictures(None, (-1.0, 1.0))
    message = pictures.decide(torch.zeros(shape))
    assert pictures.kind == kind and said in message and (message == "") == (said == "")
