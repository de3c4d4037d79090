"""A complete synthetic run directory (docs/run-directory.md), written with the real value types.

No model is trained: scores, exposures and leakage are drawn so that the DP
target (ε = 3, MIA AUC about 0.52, canaries at chance exposure) contrasts with
the non-private baseline (ε = ∞, AUC about 0.9, canaries repeated 8+ times
fully exposed and extracted). Every file is produced by the same
``to_dict()``/``save()``/writer the pipeline uses, so the report tests read
exactly what a real run writes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import atomic_write_bytes, atomic_write_text, dumps, write_json
from dpaudit.attacks.blind import BlindBaselineResult
from dpaudit.attacks.canary import (
    CanaryResult,
    ExtractionResult,
    attach_extraction,
    exposure_summary,
    extraction_summary,
)
from dpaudit.attacks.memorization import MemorizationResult
from dpaudit.attacks.metrics import compute_metrics
from dpaudit.attacks.pii_detect import KindMatch
from dpaudit.attacks.pii_extraction import BucketRecall, LeakedValue, PiiExtractionResult
from dpaudit.attacks.pii_reconstruction import PiiRankingResult, RankedRecord
from dpaudit.attacks.scores import AttackScores
from dpaudit.audit.lower_bound import EpsilonLowerBound
from dpaudit.audit.verdict import judge
from dpaudit.config import load_config
from dpaudit.datasets.canaries import (
    make_canaries,
    make_one_run_canaries,
    write_canaries,
    write_inclusion,
)
from dpaudit.datasets.splits import Split
from dpaudit.rundir import RunDir, sha256_text, sha256_tree
from dpaudit.trainers.privacy import PrivacyPlan, make_ledger, write_privacy

ATTACKS = ("loss", "zlib", "mink")
N_PER_SIDE = 1000  # TPR at 0.1% FPR needs >= 1/0.001 non-members to be resolvable
TARGET_EPSILONS = {"rdp": 3.41, "prv": 2.98, "pld": 3.0, "gdp": 2.83, "edgeworth": 2.95}
PII_NAMES = (
    "Marguerite Okonkwo-Lindqvist",
    "Thaddeus Quibell",
    "Ysolde Varga-Pennington",
    "Oren Mbeki-Hartmann",
)
PII_EMAILS = ("ysolde.vp@quibell-mail.test", "oren.hartmann77@postbox.test")
PII_PHONES = ("+1 415 555 0199", "+44 20 7946 0321")


def _model_files(model_dir: Path, rng: np.random.Generator) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(model_dir / "model.safetensors", rng.bytes(4096))
    atomic_write_text(model_dir / "config.json", dumps({"model_type": "gpt2", "n_layer": 2}))
    atomic_write_text(
        model_dir / "train_log.jsonl",
        "".join(
            dumps(
                {
                    "step": s,
                    "loss": 3.0 - 0.01 * s,
                    "lot_size": 64,
                    "epsilon_rdp": None,
                    "lr": 5e-3,
                    "seconds": 0.1,
                },
                indent=None,
            )
            for s in range(1, 4)
        ),
    )


def _privacy(model_dir: Path, *, dp: bool, epsilon_scale: float) -> None:
    plan = PrivacyPlan(
        dp=dp,
        n=800,
        batch_size=64,
        sample_rate=0.08,
        steps=38,
        epochs=3.0,
        noise_multiplier=1.12 if dp else 0.0,
        max_grad_norm=1.0 if dp else None,
        delta=6e-4,
        delta_source="default 1/n^1.1",
        accountant="pld",
        noise_source="calibrated" if dp else "none",
        target_epsilon=3.0 if dp else None,
        poisson=True,
    )
    ledger = make_ledger(plan, plan.steps)
    if dp:
        from dpaudit.accounting import PrivacyLedger

        ledger = PrivacyLedger(
            mechanism=plan.mechanism,
            sample_rate=plan.sample_rate,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            steps=plan.steps,
            delta=plan.delta,
            epsilons={k: v * epsilon_scale for k, v in TARGET_EPSILONS.items()},
        )
    write_privacy(model_dir / "privacy.json", plan, ledger, complete=True)


def _utility(model_dir: Path, *, perplexity: float) -> None:
    loss = math.log(perplexity)
    write_json(
        model_dir / "metrics.json",
        {
            "train_loss": loss * 0.9,
            "train_perplexity": math.exp(loss * 0.9),
            "train_example_loss": loss * 0.9,
            "train_tokens": 30000.0,
            "eval_loss": loss,
            "eval_perplexity": perplexity,
            "eval_example_loss": loss,
            "eval_tokens": 8000.0,
            "task": "causal_lm",
            "mode": "full",
            "n_train": 830,
            "n_eval": 400,
            "first_step_loss": 7.5,
            "last_step_loss": loss,
            "steps": 38,
            "seconds_per_step": 0.21,
            "trainable_parameters": 120_000,
            "total_parameters": 120_000,
            "device": "cpu",
            "precision": "fp32",
            "lora_targets": [],
        },
    )


def _mia(out_dir: Path, shift: float, rng: np.random.Generator, seed: int) -> None:
    ids = [f"rec-{i:05d}" for i in range(2 * N_PER_SIDE)]
    member = np.r_[np.ones(N_PER_SIDE, bool), np.zeros(N_PER_SIDE, bool)]
    for k, attack in enumerate(ATTACKS):
        scale = (1.0, 0.8, 1.1)[k]
        scores = rng.normal(size=2 * N_PER_SIDE) + scale * shift * member
        s = AttackScores(
            attack=attack,
            params={"k": 0.2} if attack == "mink" else {},
            example_ids=tuple(ids),
            scores=scores,
            is_member=member,
        )
        s.save(out_dir / attack)
        compute_metrics(s, fprs=(0.001, 0.01, 0.1), bootstrap=50, seed=seed).save(out_dir / attack)


def _canaries(
    out_dir: Path, canaries: list, rng: np.random.Generator, *, private: bool
) -> dict[str, Any]:
    size = 10**6
    results, extractions = [], []
    for c in canaries:
        inserted = c.repetitions if c.included else 0
        if private or inserted == 0:
            rank = int(rng.integers(1, size // 3))
        else:
            rank = max(1, int(size / 2 ** (4.5 * inserted)))
        exposure = math.log2(size) - math.log2(rank)
        results.append(
            CanaryResult(
                canary_id=c.id,
                repetitions=c.repetitions,
                included=c.included,
                exposure=exposure,
                method="exact",
                rank=rank,
                space_size=size,
                secret_space=c.secret_space,
                logppl=20.0 - exposure / 2,
                scope="separator+secret",
                n_candidates=size,
                secret=c.secret,
            )
        )
        for strategy in ("greedy", "beam", "sample"):
            hit = (not private) and inserted >= 8
            tries = 16 if strategy == "sample" else 1
            extractions.append(
                ExtractionResult(
                    c.id, c.repetitions, c.included, strategy, hit, tries if hit else 0, tries
                )
            )
    results = attach_extraction(results, extractions)
    common = {
        "exposure_by_repetition": exposure_summary(results),
        "extraction": extraction_summary(extractions),
    }
    public = {"results": [r.to_dict(reveal=False) for r in results], **common}
    write_json(out_dir / "canary.json", public)
    return {"results": [r.to_dict(reveal=True) for r in results], **common}


def _pii(out_dir: Path, *, private: bool) -> tuple[dict, dict]:
    if private:
        leaked = (LeakedValue("PHONE", PII_PHONES[0], 6, 2),)
        per_kind = {
            "PERSON": KindMatch(12, 40, 0),
            "EMAIL": KindMatch(3, 30, 0),
            "PHONE": KindMatch(5, 30, 1),
        }
    else:
        leaked = (
            LeakedValue("PERSON", PII_NAMES[0], 9, 7),
            LeakedValue("PERSON", PII_NAMES[1], 4, 3),
            LeakedValue("EMAIL", PII_EMAILS[0], 5, 2),
            LeakedValue("PHONE", PII_PHONES[1], 3, 1),
        )
        per_kind = {
            "PERSON": KindMatch(25, 40, 14),
            "EMAIL": KindMatch(10, 30, 7),
            "PHONE": KindMatch(9, 30, 6),
        }
    matched = sum(m.matched for m in per_kind.values())
    detected = sum(m.detected for m in per_kind.values())
    truth = sum(m.truth for m in per_kind.values())
    extraction = PiiExtractionResult(
        params={
            "n_samples": 64,
            "max_new_tokens": 64,
            "strategy": "sample",
            "top_k": 40,
            "seed": 4,
        },
        n_generations=64,
        n_mentions=detected + 5,
        precision=matched / detected,
        recall=matched / truth,
        per_kind=per_kind,
        by_duplicates={
            "1": BucketRecall(60, matched // 3),
            "2-3": BucketRecall(30, matched // 3),
            "4-7": BucketRecall(10, matched - 2 * (matched // 3)),
        },
        leaked=leaked,
    )
    rows = []
    for i, name in enumerate(PII_NAMES):
        correct = (not private and i < 3) or (private and i == 0)
        guess = name if correct else PII_NAMES[(i + 1) % len(PII_NAMES)]
        rows.append(
            RankedRecord(
                record_id=f"rec-{i:05d}",
                n_candidates=5,
                rank=1 if correct else 3,
                credit=1.0 if correct else 0.0,
                duplicates=1 + i,
                truth=name,
                guess=guess,
            )
        )
    inference = PiiRankingResult(
        "pii_inference", "PERSON", {"n_distractors": 4, "seed": 4}, tuple(rows), 0
    )
    public = {
        "extraction": extraction.to_dict(reveal=False),
        "inference": inference.to_dict(reveal=False),
    }
    revealed = {
        "extraction": extraction.to_dict(reveal=True),
        "inference": inference.to_dict(reveal=True),
    }
    write_json(out_dir / "pii.json", public)
    return public, revealed


def _memorization(out_dir: Path, *, private: bool) -> None:
    by_dup = {
        1: (0.0 if private else 0.04, 300),
        2: (0.0 if private else 0.2, 2),
        4: (0.0 if private else 0.5, 2),
        8: (0.0 if private else 1.0, 2),
        16: (0.0 if private else 1.0, 2),
    }
    n_mem = 0 if private else 12 + 1 + 1 + 2 + 2
    result = MemorizationResult(
        rate=n_mem / 308,
        n_evaluated=308,
        n_skipped_too_short=22,
        memorized_ids=tuple(f"rec-{i:05d}" for i in range(n_mem)),
        by_duplication=by_dup,
        prefix_tokens=16,
        suffix_tokens=16,
    )
    write_json(out_dir / "memorization.json", result.to_dict())


def write_run(
    root: str | Path,
    name: str = "demo",
    *,
    seed: int = 0,
    epsilon_scale: float = 1.0,
    target_shift: float = 0.07,
    baseline_shift: float = 1.8,
    violation: bool = False,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write a complete run directory ``root/name`` and return its path.

    Args:
        root: the runs directory.
        name: the run name.
        seed: drives every random draw (scores, ranks, secrets).
        epsilon_scale: multiplies the target's ε under every accountant (ε = 3 at 1).
        target_shift, baseline_shift: member score shift of the MIAs (AUC ≈ Φ(shift/√2)).
        violation: make the target's empirical lower bound exceed its claimed ε.
        report: the run config's ``[report]`` section (policy thresholds, reveal).
    """
    cfg = load_config(
        overrides={
            "runs_dir": str(root),
            "name": name,
            "seed": seed,
            "train": {
                "num_references": 0,
                "target_epsilon": 3.0 * epsilon_scale,
                "accountant": "pld",
            },
            "attack": {"attacks": list(ATTACKS), "bootstrap": 50},
            "data": {"canaries_per_repetition": 2, "one_run_canaries": 200},
            "report": report or {},
        }
    )
    run = RunDir.create(cfg, argv=["dpaudit", "run", "--name", name])
    run.update(
        seeds={
            "master": seed,
            "target": seed + 1,
            "baseline": seed + 2,
            "attacks": seed + 4,
            "audit": seed + 5,
        },
        device="cpu",
    )
    rng = np.random.default_rng(seed)
    data_dir = run.subdir("data")

    canaries = make_canaries(
        prefix="my secret code is ",
        secret_space="digits:6",
        repetitions=(1, 2, 4, 8, 16),
        per_repetition=2,
        seed=seed,
    )
    canaries += [
        dataclasses.replace(c, id=f"canary-ss-x{i}", included=False)
        for i, c in enumerate(
            make_canaries(
                prefix="my secret code is ",
                secret_space="digits:6",
                repetitions=(1,),
                per_repetition=2,
                seed=seed + 99,
            )
        )
    ]
    one_run = make_one_run_canaries(
        m=200, secret_space="digits:6", prefix="the audit code is ", seed=seed
    )
    with run.stage("data", {"config": sha256_text(repr(cfg.data))}) as record:
        ids = [f"rec-{i:05d}" for i in range(2000)]
        Split(tuple(ids[:800]), tuple(ids[800:1200]), tuple(ids[1200:]), seed).save(
            data_dir / "splits.json"
        )
        write_canaries(data_dir / "canaries.jsonl", canaries + one_run)
        write_inclusion(data_dir / "inclusion.json", canaries + one_run)
        write_json(data_dir / "train_ids.json", {"ids": ids[:800]})
        record.outputs.update(sha256_tree(data_dir))

    for model, dp in (("target", True), ("baseline", False)):
        with run.stage(model, {"dp": str(dp)}) as record:
            model_dir = run.subdir(model)
            _model_files(model_dir, rng)
            _privacy(model_dir, dp=dp, epsilon_scale=epsilon_scale)
            _utility(model_dir, perplexity=(41.7 if dp else 23.9) * (1 + 0.1 * (epsilon_scale < 1)))
            record.outputs.update(sha256_tree(model_dir))

    blind = BlindBaselineResult(
        auc=0.507,
        auc_ci=(0.462, 0.553),
        n_member=N_PER_SIDE,
        n_nonmember=N_PER_SIDE,
        folds=5,
        confidence=0.95,
        warning=None,
        method="TF-IDF word 1-2-grams + char 3-5-grams, logistic regression (C=1)",
        scores=np.zeros(2 * N_PER_SIDE),
    )
    write_json(run.path / "attacks" / "blind.json", blind.to_dict())

    for model, private in (("target", True), ("baseline", False)):
        with run.stage(f"attacks/{model}", {"model": model}):
            out_dir = run.subdir("attacks", model)
            _mia(out_dir, target_shift if private else baseline_shift, rng, seed)
            revealed = {"canary": _canaries(out_dir, canaries, rng, private=private)}
            _memorization(out_dir, private=private)
            _, revealed["pii"] = _pii(out_dir, private=private)
            write_json(out_dir / "recovered.json", revealed)
            write_json(out_dir / "status.json", {"attacks": {a: "done" for a in ATTACKS}})

    models = {}
    for model, private in (("target", True), ("baseline", False)):
        if private:
            eps_lb = (
                TARGET_EPSILONS["pld"] * epsilon_scale * 1.2 if violation else 0.31 * epsilon_scale
            )
            upper = {k: v * epsilon_scale for k, v in TARGET_EPSILONS.items()}
        else:
            eps_lb, upper = 2.64, {k: math.inf for k in TARGET_EPSILONS}
        correct = 27 if private else 38
        lower = EpsilonLowerBound(
            method="one-run",
            epsilon=eps_lb,
            delta=6e-4,
            confidence=0.95,
            n_canaries=200,
            n_guesses=40,
            n_correct=correct,
            threshold_selection="union-bound(grid=12, k_plus=20, k_minus=20)",
        )
        models[model] = judge(lower, upper, "pld").to_dict()
        with run.stage(f"audit/{model}", {"model": model}):
            write_json(run.subdir("audit") / "bounds.json", {"models": dict(models)})
    return run.path


def recovered_values(run_dir: str | Path) -> list[str]:
    """Every secret and PII value held in the run's ``recovered.json`` files (for leak checks)."""
    from dpaudit.atomic import read_json

    values: set[str] = set()
    for model in ("target", "baseline"):
        data = read_json(Path(run_dir) / "attacks" / model / "recovered.json")
        values.update(r["secret"] for r in data["canary"]["results"])
        values.update(v["value"] for v in data["pii"]["extraction"]["leaked"])
        for row in data["pii"]["inference"]["records"]:
            values.update(v for v in (row["truth"], row["guess"]) if v)
    return sorted(values)
