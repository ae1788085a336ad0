import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import lightning_gan_monitor
from lightning_gan_monitor.accumulate import scores_from_stats
from lightning_gan_monitor.cause import decide
from lightning_gan_monitor.diagnosis import REMEDIES, format_message, parse_message
from lightning_gan_monitor.functional import gan_score_stats
from lightning_gan_monitor.history import regime_counts, summarize
from lightning_gan_monitor.rules import (
    Converged,
    Diagnosis,
    DiscriminatorDominates,
    FailureMode,
    Firing,
    GeneratorDominates,
    NonFinite,
    Rule,
    StoppingReason,
)
from lightning_gan_monitor.tensorboard import to_markdown
from lightning_gan_monitor.tracker import ScoreTracker

HEALTHY = (0.5, 0.5)  # (D on fakes, D on reals), as probabilities
D_DOMINATES = (0.02, 0.98)
G_DOMINATES = (0.95, 0.6)
NAN = (float("nan"), 0.5)
CHANCE = ("mixed", 0.5)  # half the fakes at 0.4, half at 0.6: fake-detection accuracy exactly 0.5


def batch_stats(fake: float | str, real: float) -> torch.Tensor:
    d_fake = torch.tensor([0.4, 0.6] * 8) if fake == "mixed" else torch.full((16,), fake)
    return gan_score_stats(torch.full((16,), real), d_fake)


def observed(fake: float | str, real: float) -> tuple[list[float], bool]:
    """One batch as a check hands it to the rules: its four scores and whether a value was NaN or infinite."""
    stats = batch_stats(fake, real).tolist()
    return scores_from_stats(stats), stats[6] > 0


def default_rules(patience: int) -> list:
    return [NonFinite(patience=1), DiscriminatorDominates(patience=patience), GeneratorDominates(patience=patience)]


def run_rules(sequence, rules, smoothing=0.0, every=1, check=1) -> list[tuple[int, FailureMode | None]]:
    """Feed per-batch scores through the tracker as the callback does: observe every `every` batches, hand the
    batches over in windows of `check`, and record every firing."""
    tracker = ScoreTracker(rules, smoothing)
    batches = [observed(*s) if b == 1 or b % every == 0 else (None, False) for b, s in enumerate(sequence, start=1)]
    fired = []
    for start in range(0, len(batches), check):
        fired += [(f.batch, f.rule.failure) for f in tracker.update(batches[start : start + check])]
    return fired


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ([HEALTHY] * 50, []),
        ([HEALTHY] * 5 + [D_DOMINATES] * 30, [(15, FailureMode.DISCRIMINATOR_DOMINATES)]),
        # interrupted by one healthy batch: the count starts again
        (
            [HEALTHY] * 5 + [D_DOMINATES] * 8 + [HEALTHY] + [D_DOMINATES] * 30,
            [(24, FailureMode.DISCRIMINATOR_DOMINATES)],
        ),
        ([HEALTHY] * 5 + [G_DOMINATES] * 30, [(15, FailureMode.GENERATOR_DOMINATES)]),
        # generator score near 0 but D unsure about reals: discriminator score 0.725, not dominating
        ([HEALTHY] * 5 + [(0.05, 0.5)] * 30, []),
        ([HEALTHY] * 6 + [NAN] + [HEALTHY] * 10, [(7, FailureMode.NON_FINITE)]),
        # after firing, a rule stays quiet while its condition keeps holding, and fires again on a new stretch
        (
            [D_DOMINATES] * 30 + [HEALTHY] * 3 + [D_DOMINATES] * 12 + [HEALTHY] * 20,
            [(10, FailureMode.DISCRIMINATOR_DOMINATES), (43, FailureMode.DISCRIMINATOR_DOMINATES)],
        ),
    ],
)
@pytest.mark.parametrize("check", [1, 7, 33])
def test_rules_fire_after_patience_consecutive_batches(sequence, expected, check):
    # windows of observations processed at once find the same batches as one observation at a time
    assert run_rules(sequence, default_rules(patience=10), check=check) == expected


def test_rules_every_stretch_completed_between_two_checks_is_reported():
    # With patience 10 and a window of 64 batches, three stretches reach patience inside one window: the host looks
    # at every batch of the window, so each is reported at its exact batch.
    sequence = [D_DOMINATES] * 30 + [HEALTHY] * 3 + [D_DOMINATES] * 12 + [HEALTHY] * 5 + [D_DOMINATES] * 30
    rules = default_rules(patience=10)
    assert run_rules(sequence, rules, check=1) == [
        (10, FailureMode.DISCRIMINATOR_DOMINATES),
        (43, FailureMode.DISCRIMINATOR_DOMINATES),
        (60, FailureMode.DISCRIMINATOR_DOMINATES),
    ]
    assert run_rules(sequence, rules, check=64) == run_rules(sequence, rules, check=1)


def test_rules_count_batches_not_observations_when_probing():
    # observed every 5 batches: each observation adds 5 held batches
    sequence = [HEALTHY] * 10 + [G_DOMINATES] * 40
    assert run_rules(sequence, default_rules(patience=20), every=5) == [(30, FailureMode.GENERATOR_DOMINATES)]
    assert run_rules(sequence, default_rules(patience=20), every=5, check=4) == [(30, FailureMode.GENERATOR_DOMINATES)]


def test_rules_success_rule_fires_as_no_failure():
    rules = [*default_rules(patience=10), Converged(patience=10, tolerance=0.05)]
    assert run_rules([D_DOMINATES] * 3 + [CHANCE] * 20, rules) == [(13, None)]


def numpy_first_fire(sequence, smoothing, patience, generator_below=0.1, discriminator_above=0.9) -> int | None:
    """Independent reference: bias-corrected EMA of the scores, then the D-dominates condition for `patience`."""
    m, w, held = np.zeros(2), 0.0, 0
    for batch, (fake, real) in enumerate(sequence, start=1):
        x = np.array([fake, 0.5 * real + 0.5 * (1 - fake)])
        m, w = smoothing * m + (1 - smoothing) * x, smoothing * w + (1 - smoothing)
        g, d = m / w
        held = held + 1 if (g < generator_below and d > discriminator_above) else 0
        if held >= patience:
            return batch
    return None


@pytest.mark.parametrize("check", [1, 10, 100])
@pytest.mark.parametrize("smoothing", [0.5, 0.9, 0.97])
def test_rules_smoothing_delays_firing_as_an_ema_would(smoothing, check):
    sequence = [HEALTHY] * 20 + [D_DOMINATES] * 150
    expected = numpy_first_fire(sequence, smoothing, patience=30)
    assert expected is not None and expected > 50  # the smoothing lag is real
    assert run_rules(sequence, default_rules(patience=30), smoothing=smoothing, check=check) == [
        (expected, FailureMode.DISCRIMINATOR_DOMINATES)
    ]


def test_rules_batches_without_finite_outputs_keep_the_smoothed_scores():
    tracker = ScoreTracker(default_rules(10), smoothing=0.9)
    tracker.update([observed(0.3, 0.7)])
    before = tracker.scores
    nan = scores_from_stats(gan_score_stats(torch.full((4,), float("nan")), torch.full((4,), float("nan"))).tolist())
    tracker.update([(nan, True)])
    assert tracker.scores == before
    assert tracker.held[0] == 1  # the NaN batch counts for the non-finite rule


def test_rules_decide_orders_firings_by_batch_then_priority_and_says_where_training_stopped():
    rules = default_rules(patience=10)
    scores = dict(zip(("generator_score", "discriminator_score"), (0.05, 0.95)), fake_detection_accuracy=1.0)
    scores |= {"real_detection_accuracy": 1.0}
    firings = [Firing(rules[2], 57, 12, scores), Firing(rules[1], 53, 10, scores), Firing(rules[0], 53, 1, scores)]
    stopping, diagnoses = decide(firings, "stop", batch=60, check_every=20)
    assert stopping is diagnoses[0] and [(d.failure, d.batch) for d in diagnoses] == [
        (FailureMode.DISCRIMINATOR_DOMINATES, 53),
        (FailureMode.NON_FINITE, 53),
        (FailureMode.GENERATOR_DOMINATES, 57),
    ]
    assert "Training stopped at batch 60, the first check after batch 53" in diagnoses[0].message
    warn, diagnoses = decide(firings[:1], "warn", batch=60, check_every=20)
    assert warn is None and "Training continues (`on_failure='warn'`)." in diagnoses[0].message
    over, diagnoses = decide(firings[:1], "stop", batch=60, check_every=20, training_over=True)
    assert over is None and "Training had already reached its end (batch 60)." in diagnoses[0].message
    assert decide([], "stop", batch=60, check_every=20) == (None, [])
    # a failure under "warn" and the success rule in one window: the success rule is what stops training
    converged = Firing(Converged(patience=5), 58, 5, scores)
    stopping, diagnoses = decide([firings[0], converged], "warn", batch=60, check_every=20)
    assert stopping is diagnoses[1] and stopping.failure is None
    assert "Training stopped at batch 60" in stopping.message and "Training continues" in diagnoses[0].message


def test_rules_tracker_state_round_trips():
    tracker = ScoreTracker(default_rules(10), smoothing=0.9)
    tracker.update([observed(*D_DOMINATES)] * 7)
    restored = ScoreTracker(default_rules(10), smoothing=0.9)
    assert restored.load_state_dict(tracker.state_dict()) == []
    assert restored.state_dict() == tracker.state_dict()
    # a tracker with other rules keeps what it can and reports the rest
    other = ScoreTracker(default_rules(10)[:2], smoothing=0.9)
    assert other.load_state_dict(tracker.state_dict()) == ["held", "latched", "holding", "regime_batches"]


def test_rules_messages_state_evidence_and_remedies():
    rule = DiscriminatorDominates(patience=50)
    scores = dict(
        generator_score=0.031, discriminator_score=0.962, fake_detection_accuracy=1.0, real_detection_accuracy=1.0
    )
    message = format_message(rule, batch=170, held_for=120, scores=scores)
    assert message.startswith("Discriminator dominates after 170 training batches: for the last 120 batches (since")
    assert "below 0.1 (now 0.031)" in message and "above 0.9 (now 0.962)" in message
    for remedy in REMEDIES[FailureMode.DISCRIMINATOR_DOMINATES]:
        assert remedy in message
    assert any("label" in r for r in REMEDIES[FailureMode.DISCRIMINATOR_DOMINATES])
    assert any("dropout" in r for r in REMEDIES[FailureMode.GENERATOR_DOMINATES])
    assert "What to try" not in format_message(Converged(patience=5), 10, 5, scores)


def test_rules_module_does_not_import_lightning():
    code = (
        "import sys, lightning_gan_monitor.rules, lightning_gan_monitor.tracker, lightning_gan_monitor.metrics, "
        "lightning_gan_monitor.functional\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # and the decision path is plain Python: rules, diagnosis, history and names import no torch
    for module in ("rules", "cause", "tracker", "diagnosis", "history", "names"):
        source = (Path(lightning_gan_monitor.__file__).parent / f"{module}.py").read_text()
        assert "import torch" not in source and "from torch" not in source, module


@dataclass(frozen=True)
class Collapse(Rule):
    """Stands in for the mode-collapse rule (another branch) to check its message reads back too."""

    failure: FailureMode | None = field(init=False, default=FailureMode.MODE_COLLAPSE)

    def describe(self, scores):
        return "diversity has stayed low"


SCORES = dict(generator_score=0.97, discriminator_score=0.2, fake_detection_accuracy=0.5, real_detection_accuracy=0.4)


@pytest.mark.parametrize(
    "rule",
    [
        NonFinite(patience=1),
        DiscriminatorDominates(patience=9),
        GeneratorDominates(patience=9),
        Converged(9),
        Collapse(9),
    ],
)
def test_rules_parse_message_reads_back_what_format_message_wrote(rule):
    message = format_message(rule, 1234, 56, SCORES, note="Training stopped at batch 1240.")
    assert parse_message(message) == (rule.failure, 1234, 56)
    assert parse_message(to_markdown(message)) == (rule.failure, 1234, 56)  # as TensorBoard's text holds it
    assert {m for m in FailureMode} == {FailureMode.MODE_COLLAPSE, *(r.failure for r in default_rules(1))}


def test_rules_parse_message_rejects_other_text():
    with pytest.raises(ValueError, match=r"not a GANMonitor diagnosis: expected a first line such as .*, got 'hello'"):
        parse_message("hello\nworld")
    with pytest.raises(ValueError, match="got 'Exploded after 3 training batches"):
        parse_message("Exploded after 3 training batches: for the last 3 batches (since batch 1)")


def test_rules_tracker_counts_batches_per_regime_by_priority():
    rules = [*default_rules(patience=1000), Converged(patience=1000, tolerance=0.5)]  # converged holds always
    tracker = ScoreTracker(rules, smoothing=0.0)
    sequence = [HEALTHY] * 7 + [D_DOMINATES] * 5 + [NAN] * 2 + [G_DOMINATES] * 4 + [HEALTHY] * 3
    tracker.update([observed(*scores) for scores in sequence[:10]])
    # as if probed every 3 batches from here on: the two batches after each observation are not observed
    tracker.update([x for scores in sequence[10:] for x in (observed(*scores), (None, False), (None, False))])
    # a NaN batch keeps the last smoothed scores (D dominating) but counts as non-finite, which comes first
    expected = {"balanced": 7 + 9, "discriminator dominating": 3 + 2 * 3, "generator dominating": 12}
    expected |= {"non-finite": 6, "collapsed": None}
    assert regime_counts(rules, tracker.regime_batches) == expected


def test_rules_summary_says_how_the_run_went():
    regimes = {"balanced": 60, "discriminator dominating": 30, "generator dominating": 10, "non-finite": 0}
    scores = dict.fromkeys(["generator_score", "discriminator_score"], 0.5)
    failure = Diagnosis(FailureMode.DISCRIMINATOR_DOMINATES, 90, 30, scores, "...")
    converged = Diagnosis(None, 100, 20, scores, "...")
    stopped = summarize(100, regimes, scores, [failure], StoppingReason.FAILURE)
    assert (
        stopped.verdict
        == "Discriminator dominates after 90 training batches (since batch 61); training stopped at batch 100"
    )
    warned = summarize(120, regimes, scores, [failure, converged], StoppingReason.CONVERGED)
    assert warned.verdict.endswith("; converged after 100 training batches; training stopped at batch 120")
    text = str(summarize(100, regimes, scores, collapsed_batches=25))
    assert text.splitlines()[2] == "  discriminator dominating       30 batches  (30%)"
    assert "  collapsed                      25 batches  (25%) (measured apart: can overlap the above)" in text
    assert "collapsed                  not measured" in str(summarize(100, regimes, scores))
    partial = str(summarize(150, regimes, scores))
    assert partial.startswith("GANMonitor summary of 150 training batches (regimes of the 100 batches the rules")


def test_rules_smoothing_decays_per_batch_also_between_probes():
    from lightning_gan_monitor.rules import GeneratorDominates
    from lightning_gan_monitor.tracker import ScoreTracker

    probed = ScoreTracker([GeneratorDominates(patience=1000)], smoothing=0.9)
    low, high = [0.2, 0.5, 0.5, 0.5] + [math.nan] * 4, [0.9, 0.5, 0.5, 0.5] + [math.nan] * 4
    probed.update([(low, False), *[(None, False)] * 9, (high, False), *[(None, False)] * 9])
    # a probe every 10 batches: the first weighs 0.9**10 against the second, as 10 batches of it would
    weight = 0.9**10
    expected = (weight * (1 - 0.9) * 0.2 + (1 - weight) * 0.9) / (weight * (1 - 0.9) + (1 - weight))
    assert probed.scores["generator_score"] == pytest.approx(expected)  # 0.86: per observation it would be 0.57


def test_rules_discriminator_dominates_waits_twice_its_patience_while_the_generator_still_learns():
    from lightning_gan_monitor.tracker import ScoreTracker

    rules = [DiscriminatorDominates(patience=10), GeneratorDominates(patience=10)]
    dominated = ([0.02, 0.99, 1.0, 1.0] + [math.nan] * 4, False)
    fooled = ([0.95, 0.3, 0.0, 0.6] + [math.nan] * 4, False)
    for learning, fires_at in ((False, 10), (True, 20)):
        tracker = ScoreTracker(rules, smoothing=0.0)
        fired = tracker.update([dominated] * 30, learning=learning)
        assert [(f.rule.failure, f.batch) for f in fired] == [(FailureMode.DISCRIMINATOR_DOMINATES, fires_at)]
    tracker = ScoreTracker(rules, smoothing=0.0)  # a fooled D does not wait: a learning G is what fools it
    assert [f.batch for f in tracker.update([fooled] * 30, learning=True)] == [10]
