import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from lightning_gan_monitor.functional import gan_score_stats
from lightning_gan_monitor.rules import (
    REMEDIES,
    Converged,
    Diagnosis,
    DiscriminatorDominates,
    FailureDetector,
    FailureMode,
    GeneratorDominates,
    NonFinite,
    Rule,
    StoppingReason,
    decide,
    format_message,
    parse_message,
    regime_counts,
    summarize,
)
from lightning_gan_monitor.tensorboard import to_markdown

HEALTHY = (0.5, 0.5)  # (D on fakes, D on reals), as probabilities
D_DOMINATES = (0.02, 0.98)
G_DOMINATES = (0.95, 0.6)
NAN = (float("nan"), 0.5)
CHANCE = ("mixed", 0.5)  # half the fakes at 0.4, half at 0.6: fake-detection accuracy exactly 0.5


def batch_stats(fake: float | str, real: float) -> torch.Tensor:
    d_fake = torch.tensor([0.4, 0.6] * 8) if fake == "mixed" else torch.full((16,), fake)
    return gan_score_stats(torch.full((16,), real), d_fake)


def default_rules(patience: int) -> list:
    return [NonFinite(patience=1), DiscriminatorDominates(patience=patience), GeneratorDominates(patience=patience)]


def run_rules(sequence, rules, smoothing=0.0, every=1, check=1) -> list[tuple[int, FailureMode | None]]:
    """Feed per-batch scores through the detector as the callback does: observe every `every` batches, process the
    observations in windows of `check`, and fire (then latch) the earliest rule of each window."""
    detector = FailureDetector(rules, smoothing)
    observed = [(b, s) for b, s in enumerate(sequence, start=1) if b == 1 or b % every == 0]
    gaps = [b - previous for (b, _), previous in zip(observed, [0] + [b for b, _ in observed])]
    fired = []
    for start in range(0, len(observed), check):
        window = observed[start : start + check]
        stats = torch.stack([batch_stats(*scores) for _, scores in window])
        n = torch.tensor(gaps[start : start + check])
        events = detector.update(stats, n)
        index, _ = decide([events.tolist()], rules)
        if index >= 0:
            detector.latch(index)
            fired.append((int(events[index, 0]), rules[index].failure))
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


def test_rules_two_stretches_completed_between_two_checks_are_reported_once():
    # The documented limit of checking every `check` batches: with patience 10 and a window of 64 batches, three
    # stretches reach patience inside one window; the first is reported at its exact batch, the middle one is not,
    # and the last one, still going on, is reported at the next check.
    sequence = [D_DOMINATES] * 30 + [HEALTHY] * 3 + [D_DOMINATES] * 12 + [HEALTHY] * 5 + [D_DOMINATES] * 30
    rules = default_rules(patience=10)
    assert run_rules(sequence, rules, check=1) == [
        (10, FailureMode.DISCRIMINATOR_DOMINATES),
        (43, FailureMode.DISCRIMINATOR_DOMINATES),
        (60, FailureMode.DISCRIMINATOR_DOMINATES),
    ]
    assert run_rules(sequence, rules, check=64) == [
        (10, FailureMode.DISCRIMINATOR_DOMINATES),
        (65, FailureMode.DISCRIMINATOR_DOMINATES),  # the third stretch straddles the check: found in the next window
    ]


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
    detector = FailureDetector(default_rules(10), smoothing=0.9)
    detector.update(batch_stats(0.3, 0.7), torch.tensor([1]))
    before = detector.scores.clone()
    detector.update(gan_score_stats(torch.full((4,), float("nan")), torch.full((4,), float("nan"))), torch.tensor([1]))
    assert torch.equal(detector.scores, before)
    assert detector.held[0].item() == 1  # the NaN batch counts for the non-finite rule


def test_rules_decide_takes_the_earliest_firing_across_processes():
    rules = default_rules(patience=10)
    quiet = [-1.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    g_dom = [[-1.0, 0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0, 0]]
    assert decide([[quiet, quiet, [57, 12, 0.95, 0.3, 0, 1]], [quiet, quiet, [53, 10, 0.96, 0.3, 0, 1]]], rules) == (
        2,
        1,
    )
    # the same batch on two rules: the earlier rule in priority order wins
    assert decide([[quiet, [40, 10, 0.05, 0.95, 1, 1], [40, 10, 0.95, 0.2, 0, 1]]], rules) == (1, 0)
    assert decide([[quiet, quiet, quiet], [quiet, *g_dom]], rules) == (-1, -1)


def test_rules_detector_state_round_trips():
    detector = FailureDetector(default_rules(10), smoothing=0.9)
    detector.update(batch_stats(*D_DOMINATES).expand(7, -1), torch.ones(7, dtype=torch.long))
    restored = FailureDetector(default_rules(10), smoothing=0.9)
    assert restored.load_state_dict(detector.state_dict()) == []
    for name, value in detector.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    # a detector with other rules keeps what it can and reports the rest
    other = FailureDetector(default_rules(10)[:2], smoothing=0.9)
    assert other.load_state_dict(detector.state_dict()) == ["held", "latched"]


def test_rules_long_windows_are_split_into_chunks():
    sequence = [HEALTHY] * 30 + [G_DOMINATES] * 170
    assert run_rules(sequence, default_rules(patience=25), smoothing=0.9, check=200) == run_rules(
        sequence, default_rules(patience=25), smoothing=0.9, check=1
    )


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
        "import sys, lightning_gan_monitor.rules, lightning_gan_monitor.metrics, lightning_gan_monitor.functional\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


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
    message = format_message(rule, 1234, 56, SCORES, note=" (on at least one process)")
    assert parse_message(message) == (rule.failure, 1234, 56)
    assert parse_message(to_markdown(message)) == (rule.failure, 1234, 56)  # as TensorBoard's text holds it
    assert {m for m in FailureMode} == {FailureMode.MODE_COLLAPSE, *(r.failure for r in default_rules(1))}


def test_rules_parse_message_rejects_other_text():
    with pytest.raises(ValueError, match=r"not a GANMonitor diagnosis: expected a first line such as .*, got 'hello'"):
        parse_message("hello\nworld")
    with pytest.raises(ValueError, match="got 'Exploded after 3 training batches"):
        parse_message("Exploded after 3 training batches: for the last 3 batches (since batch 1)")


def test_rules_detector_counts_batches_per_regime_by_priority():
    rules = [*default_rules(patience=1000), Converged(patience=1000, tolerance=0.5)]  # converged holds always
    detector = FailureDetector(rules, smoothing=0.0)
    sequence = [HEALTHY] * 7 + [D_DOMINATES] * 5 + [NAN] * 2 + [G_DOMINATES] * 4 + [HEALTHY] * 3
    stats = torch.stack([batch_stats(*scores) for scores in sequence])
    detector.update(stats[:10], torch.ones(10, dtype=torch.long))
    detector.update(stats[10:], torch.full((11,), 3))  # as if probed every 3 batches: each stands for 3
    # a NaN batch keeps the last smoothed scores (D dominating) but counts as non-finite, which comes first
    expected = {"balanced": 7 + 9, "discriminator dominating": 3 + 2 * 3, "generator dominating": 12}
    expected |= {"non-finite": 6, "collapsed": None}
    assert regime_counts(rules, detector.regime_batches.tolist()) == expected
    restored = FailureDetector(rules, smoothing=0.0)
    restored.load_state_dict(detector.state_dict())
    assert torch.equal(restored.regime_batches, detector.regime_batches)
    older = {k: v for k, v in detector.state_dict().items() if k != "regime_batches"}  # a 0.1 checkpoint
    assert FailureDetector(rules, smoothing=0.0).load_state_dict(older) == []


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
