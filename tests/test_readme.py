"""The README's first snippet, copied as it is, against a sigmoid discriminator and a logits discriminator."""

import functools
import re
import types
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import TRAINER_DEFAULTS
from digits_gan import DigitsGAN, load_digits_tensor, make_dataloader

README = Path(__file__).resolve().parents[1] / "README.md"


def first_snippet() -> str:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[0]


class ReadyGAN(DigitsGAN):
    """The example's GAN with its data, as `trainer.fit(gan)` needs; with `sigmoid`, D's outputs are probabilities."""

    def __init__(self, sigmoid: bool) -> None:
        super().__init__()
        self.sigmoid = sigmoid

    def train_dataloader(self):
        return make_dataloader(load_digits_tensor(3))

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if self.sigmoid:
            out = {**out, "d_real": torch.sigmoid(out["d_real"]), "d_fake": torch.sigmoid(out["d_fake"])}
        return out


@pytest.mark.parametrize("sigmoid", [False, True], ids=["logits D", "sigmoid D"])
def test_readme_first_snippet_runs_as_it_is(tmp_path, sigmoid, capsys):
    code = first_snippet()
    assert "trainer.fit(gan)" in code and "from_logits" not in code.split("#")[0]
    # `pytorch_lightning` as the snippet imports it, with a Trainer that trains 40 epochs quietly into tmp_path
    settings = {**TRAINER_DEFAULTS, "default_root_dir": tmp_path, "max_epochs": 40}
    quick = types.SimpleNamespace(**{**vars(pl), "Trainer": functools.partial(pl.Trainer, **settings)})
    pl.seed_everything(0)
    scope = {"gan": ReadyGAN(sigmoid), "quick": quick}
    exec(compile(code.replace("import pytorch_lightning as pl", "pl = quick"), "README.md", "exec"), scope)
    assert capsys.readouterr().out.strip() == "None"  # healthy: `stopping_reason_message` is None, nothing stopped it
    monitor = scope["monitor"]
    assert monitor.reading == ("probabilities" if sigmoid else "logits")  # each read the right way
    assert 0.0 < monitor.scores["generator_score"] < 1.0 and monitor.failure is None


def test_readme_complete_example_runs_as_it_is_and_stays_healthy(tmp_path, monkeypatch, capsys):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)[1]
    assert "class GAN(pl.LightningModule)" in code and "trainer.fit(GAN()" in code
    monkeypatch.chdir(tmp_path)  # its Trainer writes lightning_logs/ where it runs
    pl.seed_everything(0)
    scope = {"__name__": "__main__"}
    exec(compile(code, "README.md", "exec"), scope)
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith("healthy: no failure rule fired; training ran to its end (1140 batches)")
    )
    assert (tmp_path / "lightning_logs" / "version_0").is_dir()
    assert scope["monitor"].reading == "logits"
