"""The audit stage: one-run (or threshold) ε lower bound on the audit canaries, vs the ledger.

The audit canaries (``canary-or-*``) were each included in training by a fair
coin (bits in ``data/inclusion.json``). Each one's membership score is minus
its log-perplexity −log Pr(secret | prefix) under the trained model; the
auditor turns scores and bits into an :class:`EpsilonLowerBound` and
:func:`~dpaudit.audit.verdict.judge` compares it with the ledger's ε at the
same δ. Written to ``audit/bounds.json`` under ``models.<model>``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.audit.lower_bound import EpsilonLowerBound
from dpaudit.audit.methods import AUDIT_METHODS
from dpaudit.audit.verdict import AuditVerdict, judge
from dpaudit.config import RunConfig
from dpaudit.datasets.prepare import PreparedData
from dpaudit.errors import DpauditError
from dpaudit.rundir import RunDir, sha256_text
from dpaudit.runfiles.audit import BoundsFile
from dpaudit.runfiles.io import read_run_file, write_run_file

BOUNDS_FILE = "bounds.json"


def lower_bound_from_scores(
    scores: np.ndarray, included: np.ndarray, config: RunConfig, *, delta: float, seed: int
) -> EpsilonLowerBound:
    """The configured audit method (:data:`~dpaudit.audit.methods.AUDIT_METHODS`) on these canaries."""
    method = AUDIT_METHODS.get(config.audit.method)
    return method.run(scores, included, config.audit, delta=delta, seed=seed)


def upper_bounds(privacy_path: Path, delta: float) -> tuple[dict[str, float], str]:
    """ε by accountant at ``delta`` from a ledger (recomputed when δ differs), and the primary accountant."""
    from dpaudit.accounting import compute_epsilons
    from dpaudit.trainers.privacy import read_privacy

    ledger, payload = read_privacy(privacy_path)
    primary = str(payload.get("primary_accountant", "pld"))
    if ledger.mechanism == "none":
        return {name: float("inf") for name in ledger.epsilons}, primary
    if delta == ledger.delta:
        return dict(ledger.epsilons), primary
    eps, _ = compute_epsilons(
        sampling_rate=ledger.sample_rate,
        noise_multiplier=ledger.noise_multiplier,
        steps=ledger.steps,
        delta=delta,
        accountants=tuple(ledger.epsilons),
    )
    return eps, primary


def mislabelled_canary_scores(model: Any, canaries: Any, config: RunConfig) -> np.ndarray:
    """Classifier canaries: log-probability of each canary's assigned (mislabelled) label.

    A random text carries no signal for its label, so a high probability of the
    assigned label is evidence that the canary was trained on (Jagielski et al.
    2020; Nasr et al. 2021).
    """
    from scipy.special import log_softmax

    from dpaudit.datasets.prepare import canary_label

    logits = np.asarray(model.classify([c.text for c in canaries]), dtype=float)
    labels = [
        canary_label(c.id, seed=config.seed, num_labels=config.train.num_labels) for c in canaries
    ]
    return log_softmax(logits, axis=1)[np.arange(len(canaries)), labels]


def audit_model(
    model: Any, prepared: PreparedData, config: RunConfig, privacy_path: Path, *, seed: int
) -> AuditVerdict:
    """Score the audit canaries with ``model`` and judge the bound against the ledger.

    Language models: minus the log-perplexity of the secret given the prefix.
    Classifiers: the log-probability of the canary's mislabelled label.
    """
    from dpaudit.attacks.canary import canary_logppl
    from dpaudit.trainers.privacy import read_privacy

    canaries = prepared.one_run
    if not canaries:
        raise DpauditError("no audit canaries in this run (data.one_run_canaries = 0)")
    prefixes = {c.prefix for c in canaries}
    if len(prefixes) != 1:
        raise DpauditError("audit canaries must share one prefix")
    if config.train.task == "classification":
        scores = mislabelled_canary_scores(model, canaries, config)
    else:
        logppl, _ = canary_logppl(model, prefixes.pop(), [c.secret for c in canaries])
        scores = -np.asarray(logppl)
    included = np.array([c.included for c in canaries], dtype=bool)
    ledger, _ = read_privacy(privacy_path)
    delta = config.audit.delta if config.audit.delta is not None else ledger.delta
    lower = lower_bound_from_scores(scores, included, config, delta=delta, seed=seed)
    upper, primary = upper_bounds(privacy_path, delta)
    return judge(lower, upper, primary)


def run_audit_stage(
    run: RunDir,
    config: RunConfig,
    prepared: PreparedData,
    model_name: str,
    *,
    seed: int,
    resume: bool = False,
    progress: bool = True,
    model: Any = None,
) -> AuditVerdict | None:
    """Audit ``<run>/<model_name>``; merge the result into ``audit/bounds.json``.

    ``model`` is the model to score (anything ``load_scoring_model`` accepts);
    default the weights in ``<run>/<model_name>/``. The claim is read from
    ``<run>/<model_name>/privacy.json`` either way.
    """
    from dpaudit.attacks.stage import load_scoring_model

    model_dir = run.path / model_name
    if model is None and not model_dir.is_dir():
        raise DpauditError(f"{model_dir}: no trained model; run `dpaudit train` first")
    stage = f"audit/{model_name}"
    inputs = run.output_hashes(model_name)
    inputs["audit_config"] = sha256_text(repr(dataclasses.asdict(config.audit)))
    path = run.subdir("audit") / BOUNDS_FILE
    if resume and run.can_skip(stage, inputs) and path.is_file():
        return None
    with run.stage(stage, inputs):
        scorer = load_scoring_model(
            model_dir if model is None else model, config, progress=progress
        )
        verdict = audit_model(scorer, prepared, config, model_dir / "privacy.json", seed=seed)
        record_verdict(path, model_name, verdict)
    return verdict


def record_verdict(path: Path, model_name: str, verdict: AuditVerdict) -> Path:
    """Merge ``verdict`` into ``audit/bounds.json`` (:class:`BoundsFile`) as ``models.<model_name>``.

    The other models' entries are kept. Raises ``InputError`` when an existing
    file is not a valid ``bounds.json``.
    """
    bounds = read_run_file(path, BoundsFile) if path.is_file() else BoundsFile()
    return write_run_file(path, bounds.with_model(model_name, verdict.to_entry()))


def verdict_line(model_name: str, verdict: AuditVerdict) -> str:
    """One line for the CLI."""
    lb = verdict.lower
    claim = verdict.upper.get(verdict.primary_accountant, float("inf"))
    return (
        f"audit/{model_name}: ε_lb = {lb.epsilon:.3f} ({lb.method}, {lb.confidence:.0%} confidence, "
        f"{lb.n_correct}/{lb.n_guesses} correct) vs ε_ub = {claim:.3f} ({verdict.primary_accountant}) "
        f"→ {verdict.verdict}"
    )
