"""GANMonitor under two-process CPU DDP: the stop decision and the logged scores are the same on every rank.

Each test runs ``tests/ddp_script.py`` (Lightning relaunches it for rank 1) and reads the reports both ranks wrote.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_gan_monitor.functional import SCORE_NAMES, gan_scores

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "ddp_script.py"
TIMEOUT_S = 300
# The script's defaults, repeated here because the assertions depend on them.
SCRIPTED_LOGIT = 8.0
PATIENCE = 20
SMOOTHING = 0.9
LOG_EVERY = 10
DOMINATE_RANK = -1  # every rank: the rules judge the scores of the global batch (summed over ranks)
FROM_BATCH = 15


def _run(outdir: Path, *options: str) -> list[dict[str, Any]]:
    """Run the script on two processes; return both ranks' reports, each with its recorded outputs."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        str(SCRIPT),
        str(outdir),
        "--patience",
        str(PATIENCE),
        "--log-every",
        str(LOG_EVERY),
        *options,
    ]
    # A session of its own, so a timeout kills rank 1 (a child of rank 0) too.
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"ddp_script.py timed out after {TIMEOUT_S} s\nstdout:\n{stdout}\nstderr:\n{stderr}")
    assert proc.returncode == 0, f"ddp_script.py failed ({proc.returncode})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    reports = []
    for rank in (0, 1):
        path = outdir / f"rank{rank}.json"
        assert path.exists(), f"rank {rank} wrote no report\nstderr:\n{stderr}"
        report = json.loads(path.read_text())
        report["outputs"] = torch.load(outdir / f"rank{rank}_outputs.pt")
        reports.append(report)
    return reports


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("outputs", "logged")}


def _smoothing_lag(logit: float, smoothing: float) -> int:
    """Most observations of the scripted outputs the smoothed scores need to meet "discriminator dominates".

    The bias-corrected EMA puts weight at least ``1 - smoothing**j`` on the last ``j`` observations, whatever came
    before; the worst case has the earlier scores at the far end (generator score 1, discriminator score 0).
    """
    p_fake = 1 / (1 + math.exp(logit))  # sigmoid(-logit): the scripted D(G(z)); D(x) is 1 - p_fake
    j = 1
    # the default thresholds: generator score below 0.1 and discriminator score above 0.9
    while not (smoothing**j + p_fake < 0.1 and (1 - smoothing**j) * (1 - p_fake) > 0.9):
        j += 1
    return j


def _expected_scores(d_real: torch.Tensor, d_fake: torch.Tensor) -> dict[str, float]:
    """The four scores of logits, in float64 (the reference the logged float32 values are held to)."""
    real, fake = torch.sigmoid(d_real.double()), torch.sigmoid(d_fake.double())
    values = (fake.mean(), 0.5 * real.mean() + 0.5 * (1 - fake.mean()), (fake < 0.5).double().mean())
    values += ((real >= 0.5).double().mean(),)
    return {f"gan/{name}": v.item() for name, v in zip(SCORE_NAMES, values)}


def _replay_stop(reports: list[dict[str, Any]], check_every: int) -> int | None:
    """Where "discriminator dominates" should fire, replaying the rule on the global batches' outputs (float64)."""
    held = 0
    ema = [0.0, 0.0]  # generator score, discriminator score of the batch over both ranks
    weight = 0.0
    n_batches = reports[0]["outputs"]["d_fake"].shape[0]
    for batch in range(1, n_batches + 1):
        weight = SMOOTHING * weight + 1 - SMOOTHING
        p_real = torch.cat([torch.sigmoid(r["outputs"]["d_real"][batch - 1].double()) for r in reports]).mean().item()
        p_fake = torch.cat([torch.sigmoid(r["outputs"]["d_fake"][batch - 1].double()) for r in reports]).mean().item()
        for i, score in enumerate((p_fake, 0.5 * p_real + 0.5 * (1 - p_fake))):
            ema[i] = SMOOTHING * ema[i] + (1 - SMOOTHING) * score
        g, d = (value / weight for value in ema)
        held = held + 1 if g < 0.1 and d > 0.9 else 0
        if (batch == 1 or batch % check_every == 0) and held >= PATIENCE:
            return batch
    return None


@pytest.mark.ddp
@pytest.mark.parametrize("check_every", [1, 5])
def test_ddp_stops_on_the_same_batch_on_every_rank(tmp_path: Path, check_every: int) -> None:
    reports = _run(
        tmp_path,
        "--check-every",
        str(check_every),
        "--dominate-on-rank",
        str(DOMINATE_RANK),
        "--from-batch",
        str(FROM_BATCH),
        "--max-epochs",
        "3",
    )
    rank0, rank1 = reports
    for report in reports:
        assert report["failure"] == "discriminator_dominates", _summary(report)
        assert report["stopping_reason"] == "failure"
    assert rank0["stopped_batch"] == rank1["stopped_batch"]
    assert rank0["batches"] == rank1["batches"] == rank0["stopped_batch"]  # not one batch more on either rank
    assert rank0["monitor_batches_seen"] == rank1["monitor_batches_seen"] == rank0["batches"]
    assert rank0["global_step"] == rank1["global_step"]
    assert rank0["batches"] < rank0["max_batches"]

    # The condition holds from scripted batch `lag` at the latest, patience counts it for PATIENCE batches, and the
    # next check comes at most `check_every - 1` batches later; it cannot fire before PATIENCE scripted batches.
    lag = _smoothing_lag(SCRIPTED_LOGIT, SMOOTHING)
    assert lag == 22
    stopped = rank0["stopped_batch"]
    assert FROM_BATCH + PATIENCE - 1 <= stopped <= FROM_BATCH + (lag - 1) + (PATIENCE - 1) + (check_every - 1)
    assert stopped % check_every == 0
    assert stopped == _replay_stop(reports, check_every)


@pytest.mark.ddp
def test_ddp_logged_scores_are_synced(tmp_path: Path) -> None:
    reports = _run(tmp_path, "--check-every", "5", "--max-epochs", "3")
    rank0, rank1 = reports
    for report in reports:
        assert report["failure"] is None, _summary(report)
        assert report["stopping_reason"] == "not_stopped"
    n_batches = rank0["batches"]
    assert rank1["batches"] == n_batches == rank0["max_batches"]
    assert n_batches % LOG_EVERY != 0  # the last log is not on the last batch, which makes the window meaningful

    # The monitor logs every LOG_EVERY batches the scores over the batches since its previous log.
    log_batches = list(range(LOG_EVERY, n_batches + 1, LOG_EVERY))
    assert rank0["log_batches"] == rank1["log_batches"] == log_batches
    assert rank0["callback_metrics"] == rank1["callback_metrics"] == rank0["logged"][-1]
    assert set(rank0["callback_metrics"]) == {f"gan/{name}" for name in SCORE_NAMES}

    window = slice(log_batches[-2], log_batches[-1])  # batches log_batches[-2] + 1 .. log_batches[-1], 0-based
    d_real = torch.cat([r["outputs"]["d_real"][window] for r in reports])
    d_fake = torch.cat([r["outputs"]["d_fake"][window] for r in reports])
    expected = _expected_scores(d_real, d_fake)
    assert rank0["callback_metrics"] == pytest.approx(expected, abs=1e-6)

    # The ranks saw different data, so the synced value is not one rank's own.
    for report in reports:
        local = gan_scores(report["outputs"]["d_real"][window], report["outputs"]["d_fake"][window], from_logits=True)
        assert any(abs(local[k].item() - expected[f"gan/{k}"]) > 1e-3 for k in SCORE_NAMES)


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("strategy", "package", "launcher"),
    [("ddp_spawn", "pytorch_lightning", "spawn"), ("ddp_fork", "lightning", "fork")],
)
def test_ddp_spawn_and_fork_stop_together_sync_scores_and_count_once(tmp_path, strategy, package, launcher):
    # One run per launcher serves three checks; the two launchers are split over the two packages.
    check_every = 5
    reports = _run(
        tmp_path,
        f"--strategy={strategy}",
        f"--package={package}",
        f"--check-every={check_every}",
        f"--dominate-on-rank={DOMINATE_RANK}",
        f"--from-batch={FROM_BATCH}",
        "--max-epochs=3",
        "--prefit-batches=12",
    )
    rank0, rank1 = reports
    for report in reports:
        assert (report["package"], report["start_method"], report["world_size"]) == (package, launcher, 2)

    # The stop: on the same batch on both ranks, where replaying the rule on both ranks' outputs says.
    for report in reports:
        assert report["failure"] == "discriminator_dominates", _summary(report)
    assert rank0["stopped_batch"] == rank1["stopped_batch"] == _replay_stop(reports, check_every)
    assert rank0["batches"] == rank1["batches"] == rank0["monitor_batches_seen"] == rank0["stopped_batch"]

    # Synced scores: every logged window equals the scores over both ranks' outputs of those batches.
    assert rank0["log_batches"] == rank1["log_batches"] == list(range(LOG_EVERY, rank0["stopped_batch"] + 1, LOG_EVERY))
    start = 0
    for end, logged0, logged1 in zip(rank0["log_batches"], rank0["logged"], rank1["logged"]):
        d_real = torch.cat([r["outputs"]["d_real"][start:end] for r in reports])
        d_fake = torch.cat([r["outputs"]["d_fake"][start:end] for r in reports])
        expected = _expected_scores(d_real, d_fake)
        assert logged0 == logged1 == pytest.approx(expected, abs=1e-6), end
        start = end

    # Nothing double counted: the monitor's state was filled by 12 batches of a one-process fit before the processes
    # started; after the first check each rank holds exactly the first batch of both ranks, summed.
    both = [a + b for a, b in zip(rank0["first_check"]["own"], rank1["first_check"]["own"])]
    for report in reports:
        first = report["first_check"]
        assert first["running"] == pytest.approx(both, abs=1e-5)
        assert first["detector_batches"] == 1
    assert rank0["first_check"]["own"] != pytest.approx(rank1["first_check"]["own"], abs=1e-6)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_a_fault_on_one_rank_turns_the_feature_off_on_both(tmp_path: Path) -> None:
    # G fails outside training on rank 0 from batch 100: its diversity check fails before any collective
    reports = _run(tmp_path, "--fault-rank", "0", "--max-epochs", "5", "--patience", "500", "--check-every", "20")
    for report in reports:  # no hang: both ran to the end, with the diversity checks off on both
        assert report["batches"] == report["monitor_batches_seen"] == report["max_batches"] == 140
        assert report["diversity_source"] == "off" and report["failure"] is None
    assert reports[0]["callback_metrics"] == reports[1]["callback_metrics"]
