"""LightningCLI: the monitor configured from ``examples/config.yaml`` and the command line, and its errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser
from packages import PACKAGES, ROOT, example, monitor_class

from lightning_gan_monitor import GANMonitor
from lightning_gan_monitor.callback import GANMonitorBase

CONFIG = ROOT / "examples" / "config.yaml"


def monitor_of(cli) -> GANMonitorBase:
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, GANMonitorBase)]
    return monitor


@pytest.mark.parametrize("package", PACKAGES)
def test_cli_every_argument_is_typed_for_the_parser(package):
    parser = ArgumentParser(exit_on_error=False)
    added = parser.add_class_arguments(monitor_class(package), "monitor", fail_untyped=True)
    expected = [name for name in inspect.signature(GANMonitorBase.__init__).parameters if name != "self"]
    assert sorted(name.removeprefix("monitor.") for name in added) == sorted(expected)


def test_cli_example_config_trains_a_few_batches(tmp_path):
    cli = example("digits_cli", "pytorch_lightning").main(
        [
            "fit",
            f"--config={CONFIG}",
            "--trainer.max_epochs=2",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    monitor = monitor_of(cli)
    assert type(monitor) is GANMonitor
    # every value the YAML gives reached the monitor
    (entry,) = yaml.safe_load(CONFIG.read_text())["trainer"]["callbacks"]
    assert entry["class_path"] == "lightning_gan_monitor.GANMonitor"
    for key, value in entry["init_args"].items():
        assert getattr(monitor, key) == value, key
    assert monitor.batches_seen == cli.model.batches_trained == 10
    assert "gan/generator_score" in cli.trainer.callback_metrics
    assert list(Path(cli.trainer.logger.log_dir).glob("events.out.tfevents.*"))
    assert (Path(cli.trainer.log_dir) / "config.yaml").exists()  # LightningCLI saved the resolved config


def test_cli_command_line_sets_every_kind_of_argument():
    cli = example("digits_cli", "pytorch_lightning").main(
        [
            f"--config={CONFIG}",
            "--trainer.callbacks.init_args.patience=7",
            "--trainer.callbacks.init_args.on_failure=warn",
            "--trainer.callbacks.init_args.latent_dim=[16]",
            "--trainer.callbacks.init_args.real_key=images",
            "--trainer.callbacks.init_args.probe_batch_size=null",
            "--trainer.callbacks.init_args.smoothing=0.5",
        ],
        run=False,
    )
    monitor = monitor_of(cli)
    assert (monitor.patience, monitor.on_failure, monitor.latent_dim) == (7, "warn", [16])
    assert (monitor.real_key, monitor.probe_batch_size, monitor.smoothing) == ("images", None, 0.5)


@pytest.mark.parametrize(
    ("argument", "match"),
    [
        ("patience=abc", r"Parser key \"patience\":\s+Expected a <class 'int'>. Got value: abc"),
        ("on_failure=explode", r"Parser key \"on_failure\":\s+Expected a typing.Literal\['stop', 'warn'\]"),
        ("source=magic", r"Parser key \"source\":\s+Expected a typing.Literal\['auto', 'outputs', 'probe'\]"),
        ("from_logits=maybe", r"Parser key \"from_logits\""),
        ("patienc=7", r"Option 'patienc' is not accepted"),
    ],
)
def test_cli_wrong_type_or_unknown_value_is_a_clear_error(argument, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        example("digits_cli", "pytorch_lightning").main(
            [f"--config={CONFIG}", f"--trainer.callbacks.init_args.{argument}"], run=False
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'Parser key "trainer.callbacks"' in err
    assert pytest.importorskip("re").search(match, err), err[-2000:]


def test_cli_wrong_value_in_yaml_is_a_clear_error(tmp_path, capsys):
    config = yaml.safe_load(CONFIG.read_text())
    config["trainer"]["callbacks"][0]["init_args"]["check_every_n_batches"] = "often"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        example("digits_cli", "pytorch_lightning").main([f"--config={tmp_path / 'bad.yaml'}"], run=False)
    assert 'Parser key "check_every_n_batches"' in capsys.readouterr().err


def test_cli_value_the_type_allows_but_the_monitor_does_not(tmp_path):
    with pytest.raises(ValueError, match="`patience` must be a positive integer, got -3"):
        example("digits_cli", "pytorch_lightning").main(
            [f"--config={CONFIG}", "--trainer.callbacks.init_args.patience=-3"], run=False
        )


def test_cli_lightning_package_takes_its_own_monitor(tmp_path, capsys):
    cli_module = example("digits_cli", "lightning")
    config = yaml.safe_load(CONFIG.read_text())
    config["trainer"]["logger"]["class_path"] = "lightning.pytorch.loggers.TensorBoardLogger"
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    config["trainer"]["max_epochs"] = 2
    config["trainer"]["default_root_dir"] = str(tmp_path)
    config["trainer"]["callbacks"][0]["class_path"] = "lightning_gan_monitor.lightning.GANMonitor"
    (tmp_path / "lightning.yaml").write_text(yaml.safe_dump(config))
    cli = cli_module.main(["fit", f"--config={tmp_path / 'lightning.yaml'}"])
    assert type(monitor_of(cli)) is monitor_class("lightning")
    assert monitor_of(cli).batches_seen == 10 and "gan/generator_score" in cli.trainer.callback_metrics

    # the pytorch_lightning callback is no `lightning.pytorch.Callback`: LightningCLI rejects it, as the issue says
    config["trainer"]["callbacks"][0]["class_path"] = "lightning_gan_monitor.GANMonitor"
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit):
        cli_module.main([f"--config={tmp_path / 'wrong.yaml'}"], run=False)
    assert "lightning_gan_monitor.GANMonitor" in capsys.readouterr().err
