"""The failure zoo: GAN families written after public code, at several learning rates, healthy and induced failures.

Every run is set up as the README says for its kind of GAN (``GANMonitor()``; ``output="critic"`` for a WGAN-GP or a
hinge D; ``condition_key=1`` for the conditional GAN; ``latent_dim=[16, 1, 1]`` for the DCGANs; the Fabric monitor in
the Fabric loop) and stops at the first failure it names. The ground truth is measured outside the monitor at the
end of the run (at the stop, or after all its batches): a digit classifier (scikit-learn's logistic regression on the
digits) on 1,000 of G's samples, their share of near-duplicates, and the run's own D on fresh real and generated
samples. A run whose set-up failed by itself (a "healthy" run whose G collapsed, a dominance that never took hold) is
labelled by what the ground truth shows, not by what was induced.

    python benchmarks/zoo.py                        # the whole grid (about 420 runs; hours on 2 cores)
    python benchmarks/zoo.py --family lightning     # one family's part, into benchmarks/zoo_runs/ (run in parallel)
    python benchmarks/zoo.py --merge --write-results  # the parts' table into RESULTS.md
    python benchmarks/zoo.py --quick                # a CI-sized subset (what the test suite runs)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, provenance, quiet_study, write_section
from zoo_gans import CRITICS, FAMILIES, Adversary, Condition, ZooGAN, d_probabilities, digits, latent_shape

RUNS = Path(__file__).resolve().parent / "zoo_runs"

#: The conditions: what is induced, from which batch, and the failure a monitor should name first.
CONDITIONS: dict[str, tuple[Condition, str | None]] = {
    "healthy": (Condition(), None),
    "G frozen (lr 0) from the start": (Condition("g0", 0, lr_g=0.0), "discriminator_dominates"),
    "G 10x slower": (Condition("g10", 0, lr_g=0.1), "discriminator_dominates"),
    "G 100x slower": (Condition("g100", 0, lr_g=0.01), "discriminator_dominates"),
    "G frozen at 200": (Condition("g0@200", 200, lr_g=0.0), "discriminator_dominates"),
    "D 10x faster at 200": (Condition("d10@200", 200, lr_d=10.0), "discriminator_dominates"),
    "D frozen": (Condition("d0", 0, lr_d=0.0), "generator_dominates"),
    "G ignores its noise at 200": (Condition("zeros@200", 200, noise="zeros"), "mode_collapse"),
    "partial collapse (3 latents) at 200": (Condition("three@200", 200, noise="three"), "mode_collapse"),
    "NaN at 200": (Condition("nan@200", 200, nan=True), "non_finite"),
}
#: Conditions also run at the other learning-rate settings.
AT_EVERY_LR = ("healthy", "G frozen (lr 0) from the start", "D frozen", "G ignores its noise at 200")
SEEDS = (0, 1, 2)
#: Families whose D ends in a sigmoid and whose loss is ``BCELoss``.
SIGMOID = ("tutorial", "dcgan", "fabric")


def grid(quick: bool = False) -> list[dict[str, Any]]:
    """Every run of the zoo: family, learning-rate setting, condition, seed, batches."""
    if quick:  # one seed; a healthy run and the cases, on three families
        return [
            {"family": f, "lr": "base", "condition": c, "seed": 0, "batches": 400}
            for f in ("lightning", "cgan", "fabric")
            for c in ("healthy", "G frozen (lr 0) from the start", "G ignores its noise at 200")
        ]
    runs = []
    for family in FAMILIES:
        batches = 900 if family in CRITICS else 600  # a critic's dominance rule waits 5 x patience
        for condition in CONDITIONS:
            if condition.startswith("NaN") and family in SIGMOID:
                continue  # BCELoss raises on NaN input: such a run ends in PyTorch before any monitor could act
            for lr in ("base", "1e-3", "ttur") if condition in AT_EVERY_LR else ("base",):
                runs += [
                    {"family": family, "lr": lr, "condition": condition, "seed": s, "batches": batches} for s in SEEDS
                ]
    return runs


def monitor_arguments(family: str) -> dict[str, Any]:
    """What the README says to pass for this kind of GAN."""
    if family in CRITICS:
        return {"output": "critic"}
    if family == "cgan":
        return {"condition_key": 1}
    if family in ("dcgan", "fabric"):
        return {"latent_dim": list(latent_shape(family))}
    return {}


class StopAt(pl.Callback):
    """Ends the run after ``batches`` training batches."""

    def __init__(self, batches: int) -> None:
        self.batches, self.seen = batches, 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.seen += 1
        if self.seen >= self.batches:
            trainer.should_stop = True


def _train_lightning(case: dict[str, Any], condition: Condition) -> tuple[Any, Adversary]:
    from lightning_gan_monitor import GANMonitor

    monitor = GANMonitor(on_failure="stop", verbose=False, **monitor_arguments(case["family"]))
    module = ZooGAN(case["family"], case["lr"], condition)
    trainer = pl.Trainer(
        max_epochs=math.ceil(case["batches"] / 28),
        callbacks=[monitor, StopAt(case["batches"])],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, digits(case["seed"]))
    return monitor, module.adversary


def _train_fabric(case: dict[str, Any], condition: Condition) -> tuple[Any, Adversary]:
    from lightning.fabric import Fabric

    from lightning_gan_monitor.fabric import GANMonitor

    fabric = Fabric(accelerator="cpu", devices=1)
    monitor = GANMonitor(on_failure="stop", verbose=False, **monitor_arguments("fabric"))
    adversary = Adversary("fabric", case["lr"], condition)
    loader = fabric.setup_dataloaders(digits(case["seed"]))
    seen = 0
    while seen < case["batches"] and not monitor.should_stop:
        for batch in loader:
            out = adversary.step(batch[0], None, fabric.backward)
            monitor.update(
                fabric, out["d_real"].flatten(), out["d_fake"].flatten(), losses=(out["d_loss"],), fake=out["fake"],
                batch=batch, generator=adversary.generator, generator_stepped=adversary.stepped_generator,
            )  # fmt: skip
            seen += 1
            if monitor.should_stop or seen >= case["batches"]:
                break
        monitor.end_epoch(fabric)
    monitor.end(fabric)
    return monitor, adversary


_CLASSIFIER: Any = None


def classifier() -> Any:
    """A digit classifier trained on all of scikit-learn's digits (in [-1, 1]): the ground truth's eyes."""
    global _CLASSIFIER
    if _CLASSIFIER is None:
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression

        data = load_digits()
        _CLASSIFIER = LogisticRegression(max_iter=3000).fit(data.data / 8.0 - 1.0, data.target)
    return _CLASSIFIER


@torch.no_grad()
def ground_truth(adversary: Adversary, seed: int) -> dict[str, Any]:
    """What G's samples and D's outputs show at the end of the run, measured without the monitor."""
    family = adversary.family
    rng = torch.Generator().manual_seed(1000 + seed)
    z = torch.randn(1000, *latent_shape(family), generator=rng)
    y = torch.randint(0, 10, (1000,), generator=rng)
    g, d = adversary.generator, adversary.discriminator
    fake = (g(z, y) if family == "cgan" else g(z)).reshape(1000, -1)
    loader = digits(seed)
    real = torch.cat([b[0] for b in loader])[:1000].reshape(-1, 64)
    real_labels = torch.cat([b[1] for b in loader])[:1000]
    truth: dict[str, Any] = {"finite": bool(torch.isfinite(fake).all())}
    if not truth["finite"]:
        return {**truth, "classes": 0, "confidence": math.nan, "duplicates": math.nan, "near_data": math.nan}
    probs = classifier().predict_proba(fake.clamp(-1, 1).numpy())
    counts = Counter(probs.argmax(1).tolist())
    truth["classes"] = sum(1 for n in counts.values() if n >= 30)  # classes with at least 3% of the samples
    truth["confidence"] = float(probs.max(1).mean())
    d_rr = torch.cdist(real, real).fill_diagonal_(math.inf)
    real_nn = d_rr.min(1).values.median()
    d_ff = torch.cdist(fake, fake).fill_diagonal_(math.inf)
    truth["duplicates"] = float((d_ff.min(1).values <= 0.1 * real_nn).float().mean())
    truth["near_data"] = float(torch.cdist(fake, real).min(1).values.median() / real_nn)
    n = 512
    args_fake = (fake[:n].reshape(n, 1, 8, 8),) + ((y[:n],) if family == "cgan" else ())
    args_real = (real[:n].reshape(n, 1, 8, 8),) + ((real_labels[:n],) if family == "cgan" else ())
    on_fake, on_real = d(*args_fake).flatten(), d(*args_real).flatten()
    if not (torch.isfinite(on_fake).all() and torch.isfinite(on_real).all()):
        return {**truth, "finite": False}
    truth["auc"] = float((on_real.unsqueeze(1) > on_fake.unsqueeze(0)).float().mean())
    truth["d_fake"] = float(d_probabilities(family, on_fake).mean())
    return truth


def label(case: dict[str, Any], truth: dict[str, Any]) -> str | None:
    """The failure the ground truth shows (None: healthy), given what was induced."""
    _, induced = CONDITIONS[case["condition"]]
    critic = case["family"] in CRITICS
    if not truth["finite"]:
        return "non_finite"
    collapsed = truth["duplicates"] >= 0.5 or truth["classes"] <= 2
    d_dominates = truth["auc"] > 0.99 and (critic or truth["d_fake"] < 0.1)
    g_dominates = truth["auc"] < 0.3 or (not critic and truth["d_fake"] > 0.8)
    if induced == "mode_collapse":
        return induced if collapsed else None
    if induced == "discriminator_dominates":
        if critic and CONDITIONS[case["condition"]][0].lr_d > 1:
            return None  # a Wasserstein critic trained harder is what WGAN asks for, not a failure
        return induced if d_dominates else None
    if induced == "generator_dominates":
        return induced if g_dominates else None
    if induced is not None:
        return induced
    # a healthy set-up: what went wrong by itself (a collapse of a G that learned; either network winning; a
    # critic that separates every pair is normal while G learns, so that alone is no failure)
    if collapsed and truth["near_data"] <= 3:
        return "mode_collapse"
    if d_dominates and not critic:
        return "discriminator_dominates"
    return "generator_dominates" if g_dominates else None


def truth_onset(case: dict[str, Any], trace: list[list[float]], expected: str | None) -> int | None:
    """The first batch from which D's raw outputs of every later batch meet the condition of ``expected``.

    A dominance's onset, measured outside the monitor: unsmoothed, batch by batch (a critic's dominance: AUC above
    0.99; a probability D's: generator score below 0.1 and discriminator score above 0.9; a fooled D: generator score
    above 0.8 or AUC below 0.2). Other failures (and runs whose condition never held to the end): the induced onset.
    """
    critic = case["family"] in CRITICS
    conditions = {
        "discriminator_dominates": (lambda g, d, a: a > 0.99) if critic else (lambda g, d, a: g < 0.1 and d > 0.9),
        "generator_dominates": (lambda g, d, a: a < 0.2) if critic else (lambda g, d, a: g > 0.8 or a < 0.2),
    }
    onset = CONDITIONS[case["condition"]][0].onset
    holds = conditions.get(expected)
    if holds is None or not trace or not holds(*trace[-1]):
        return onset
    first = len(trace)
    while first > 1 and holds(*trace[first - 2]):
        first -= 1
    return max(first, onset)


def run(case: dict[str, Any]) -> dict[str, Any]:
    """One run of the grid, with what the monitor said and the ground truth."""
    condition, _ = CONDITIONS[case["condition"]]
    pl.seed_everything(case["seed"], verbose=False)
    start = time.perf_counter()
    train = _train_fabric if case["family"] == "fabric" else _train_lightning
    monitor, adversary = train(case, condition)
    truth = ground_truth(adversary, case["seed"])
    expected = label(case, truth)
    diagnoses = [
        (d.failure.value if d.failure else None, d.batch, [f.value for f in d.also]) for d in monitor.diagnoses
    ]
    return {
        **case,
        "onset": condition.onset,
        "truth": truth,
        "expected": expected,
        "truth_onset": truth_onset(case, adversary.trace, expected),
        "named": diagnoses[0][0] if diagnoses else None,
        "also": diagnoses[0][2] if diagnoses else [],
        "diagnosed_at": diagnoses[0][1] if diagnoses else None,
        "stopped_at": monitor.stopped_batch,
        "message": monitor.diagnoses[0].message if monitor.diagnoses else "",
        "seconds": round(time.perf_counter() - start, 1),
    }


def measure(cases: list[dict[str, Any]], out: Path | None = None) -> list[dict[str, Any]]:
    """Run the cases (appending each result to ``out``, a JSON-lines file, when given; cases already there skip)."""
    done: dict[str, dict[str, Any]] = {}
    if out is not None and out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[_key(row)] = row
    rows = []
    for case in cases:
        if _key(case) in done:
            rows.append(done[_key(case)])
            continue
        row = run(case)
        rows.append(row)
        if out is not None:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


def _key(case: dict[str, Any]) -> str:
    return f"{case['family']}|{case['lr']}|{case['condition']}|{case['seed']}"


_SHORT = {
    None: "nothing",
    "discriminator_dominates": "D dominates",
    "generator_dominates": "G dominates",
    "mode_collapse": "collapse",
    "non_finite": "non-finite",
}


def confusion(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The confusion matrix: true condition (by the ground truth) x the name given first."""
    names = list(_SHORT)
    table = defaultdict(Counter)
    for r in rows:
        table[r["expected"]][r["named"]] += 1
    columns = ["truth \\ named first", *[_SHORT[n] for n in names], "right"]
    out = []
    for truth in names:
        if truth not in table:
            continue
        counts = table[truth]
        total = sum(counts.values())
        out.append(
            {
                columns[0]: f"{_SHORT[truth]} ({total})",
                **{_SHORT[n]: counts.get(n, 0) or "" for n in names},
                "right": f"{counts.get(truth, 0) / total:.0%}",
            }
        )
    return out, columns


def per_condition(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per family and condition: runs, the ground truth, what was named first, latency from the onset."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["condition"])].append(r)
    out = []
    for (family, condition), runs in groups.items():
        named = Counter(_SHORT[r["named"]] for r in runs)
        truth = Counter(_SHORT[r["expected"]] for r in runs)
        right = [r for r in runs if r["named"] == r["expected"] and r["named"] is not None]
        latency = sorted(r["stopped_at"] - r["truth_onset"] for r in right if r["stopped_at"] is not None)
        out.append(
            {
                "family": family,
                "condition": condition,
                "runs (lr settings)": f"{len(runs)} ({', '.join(sorted({r['lr'] for r in runs}))})",
                "ground truth": ", ".join(f"{k} {v}" for k, v in truth.most_common()),
                "named first": ", ".join(f"{k} {v}" for k, v in named.most_common()),
                "right": f"{sum(r['named'] == r['expected'] for r in runs)}/{len(runs)}",
                "stop after the onset": f"{latency[0]}-{latency[-1]}" if latency else "",
            }
        )
    return out, list(out[0]) if out else []


def wrong(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run named wrong (or a false alarm), with the first line of its message."""
    lines = []
    for r in rows:
        if r["named"] != r["expected"]:
            t = r["truth"]
            lines.append(
                f"- {r['family']}, {r['condition']}, lr {r['lr']}, seed {r['seed']}: truth {_SHORT[r['expected']]}, "
                f"named {_SHORT[r['named']]}"
                + (f" at {r['diagnosed_at']}" if r["diagnosed_at"] else "")
                + f" (classes {t.get('classes')}, duplicates {t.get('duplicates', math.nan):.2f}, "
                f"AUC {t.get('auc', math.nan):.2f}, D(G(z)) {t.get('d_fake', math.nan):.2f})"
            )
    return lines


#: How a message names each failure (its verdict, or the sentence naming it beside another).
_MENTIONS = {
    "mode_collapse": ("mode collapse", "show mode collapse"),
    "discriminator_dominates": ("discriminator dominates", "discriminator's dominance"),
    "generator_dominates": ("generator dominates", "generator's dominance"),
    "non_finite": ("non-finite", "NaN"),
}


def also_true(row: dict[str, Any]) -> list[str]:
    """The failures besides the expected one that the ground truth shows at the end of a run."""
    t, critic = row["truth"], row["family"] in CRITICS
    if not t["finite"]:
        return []
    shown = []
    if t["duplicates"] >= 0.5 or t["classes"] <= 2:
        shown.append("mode_collapse")
    if t["auc"] > 0.99 and not critic and t["d_fake"] < 0.1:
        shown.append("discriminator_dominates")
    if t["auc"] < 0.2:
        shown.append("generator_dominates")
    return [f for f in shown if f != row["expected"]]


def unnamed(rows: list[dict[str, Any]]) -> list[str]:
    """Runs named right whose first message leaves out a failure the ground truth also shows."""
    lines = []
    for r in rows:
        if r["named"] is None or r["named"] != r["expected"]:
            continue
        missing = [f for f in also_true(r) if not any(m in r["message"] for m in _MENTIONS[f])]
        if missing:
            lines.append(f"- {r['family']}, {r['condition']}, lr {r['lr']}, seed {r['seed']}: {', '.join(missing)}")
    return lines


def report(rows: list[dict[str, Any]], note: str, load_before: str, command: str) -> str:
    """The RESULTS.md section."""
    healthy = [r for r in rows if r["expected"] is None]
    false_alarms = [r for r in healthy if r["named"] is not None]
    induced = [r for r in rows if r["expected"] is not None]
    right = [r for r in induced if r["named"] == r["expected"]]
    matrix, matrix_columns = confusion(rows)
    detail, detail_columns = per_condition(rows)
    lines = [
        "## The failure zoo: GANs written after public code",
        "",
        *provenance(command, note, load_before),
        "",
        f"{len(rows)} runs over {len({r['family'] for r in rows})} families; each stops at the first failure named. "
        f"**False alarms: {len(false_alarms)} of {len(healthy)} runs the ground truth calls healthy. Named right "
        f"first: {len(right)} of {len(induced)} induced or self-inflicted failures "
        f"({len(right) / max(len(induced), 1):.0%}).**",
        "",
        markdown_table(matrix, matrix_columns),
        "",
        markdown_table(detail, detail_columns),
        "",
        "Runs named wrong:",
        "",
        *(wrong(rows) or ["- none"]),
        "",
        "Runs named right whose message leaves out another failure the ground truth shows at the end (a collapse: "
        "half the samples near-duplicates or at most 2 classes; D winning: AUC above 0.99 and D(G(z)) below 0.1; D "
        "fooled: AUC below 0.2):",
        "",
        *(unnamed(rows) or ["- none"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized subset")
    parser.add_argument("--family", choices=FAMILIES, help="run one family's part into zoo_runs/")
    parser.add_argument("--merge", action="store_true", help="the table of every part in zoo_runs/")
    parser.add_argument("--write-results", action="store_true", help="write the section of RESULTS.md")
    parser.add_argument("--note", default="", help="a note on the machine's load")
    args = parser.parse_args(argv)
    load_before = quiet_study()
    if args.merge:
        rows = []
        for path in sorted(RUNS.glob("*.jsonl")):
            rows += [json.loads(line) for line in path.read_text().splitlines()]
        keep = {_key(c) for c in grid()}
        rows = [{**r, "expected": label(r, r["truth"])} for r in rows if _key(r) in keep]  # one labelling for all
    else:
        cases = grid(args.quick)
        out = None
        if args.family:
            cases = [c for c in cases if c["family"] == args.family]
            RUNS.mkdir(exist_ok=True)
            out = RUNS / f"{args.family}.jsonl"
        rows = measure(cases, out)
    text = report(rows, args.note, load_before, "python benchmarks/zoo.py" + (" --quick" if args.quick else ""))
    print(text)
    if args.write_results and not args.quick:
        write_section("zoo", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
