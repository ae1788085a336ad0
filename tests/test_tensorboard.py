import pytest
import pytorch_lightning as pl
from conftest import RecordOutputs, fit_digits
from digits_gan import SCENARIOS
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from lightning_gan_monitor import GANMonitor, GANMonitorWarning
from lightning_gan_monitor.tensorboard import score_layout, to_markdown

SCORE_TAGS = [
    "gan/generator_score",
    "gan/discriminator_score",
    "gan/fake_detection_accuracy",
    "gan/real_detection_accuracy",
]


def read_events(log_dir: str) -> EventAccumulator:
    events = EventAccumulator(log_dir, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    return events


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
