"""Client-level one-run audit of a federation: update-canary clients against the client-level ledger.

A federated model's directory holds ``canary_clients.json`` (written by
:func:`~dpaudit.trainers.federated.run.train_federated`): m canary clients, each
included in the population by a fair coin, and each one's score ⟨θ_T − θ_0, u_k⟩
(the final model delta along the canary's own random direction; Andrew et al.
2024, *One-shot Empirical Privacy Estimation for Federated Learning*, ICLR, §3).
Those scores and coins go through the same one-run estimators as the central
audit (Steinke, Nasr, Jagielski 2023; the guess grid of the white-box gradient
canaries, whose one-sided points fit canaries that Poisson sampling may never
draw), and :func:`~dpaudit.audit.verdict.judge` compares the bound with the
*client-level* ledger (``privacy.json``, ``unit = "client"``) at the same δ. The
non-private federation of the same run, with the same canaries, is the control
(:func:`~dpaudit.audit.stage.assess_run`), so a powerless audit is reported as
``inconclusive``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from dpaudit.atomic import read_json
from dpaudit.audit.gradient_canaries import gradient_canary_audit
from dpaudit.audit.stage import BOUNDS_FILE, audit_delta, record_verdict, upper_bounds
from dpaudit.audit.verdict import AuditVerdict, judge
from dpaudit.config import RunConfig
from dpaudit.errors import DpauditError, InputError
from dpaudit.rundir import RunDir, sha256_text

__all__ = ["CANARY_DESIGN", "CANARY_SCORE", "audit_client_canaries", "run_client_audit_stage"]

CANARY_FILE = "canary_clients.json"
CANARY_DESIGN = "update-canary-clients"
CANARY_SCORE = "update-projection"


def read_canary_clients(model_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(scores, included) of ``<model_dir>/canary_clients.json``; shapes ``(m,)``.

    Raises:
        InputError: missing or malformed file (names the path).
    """
    path = Path(model_dir) / CANARY_FILE
    if not path.is_file():
        raise InputError(path, "no canary clients (federated.canary_clients = 0?)")
    data = read_json(path)
    try:
        scores = np.asarray(data["scores"], dtype=float)
        included = np.asarray(data["included"], dtype=bool)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"malformed canary clients file: {exc}") from None
    if scores.shape != included.shape or scores.ndim != 1 or scores.size < 2:
        raise InputError(path, "scores and included must be two lists of the same length >= 2")
    return scores, included


def audit_client_canaries(model_dir: str | Path, config: RunConfig) -> AuditVerdict:
    """The client-level one-run audit of the federated model in ``model_dir``.

    δ: :func:`~dpaudit.audit.stage.audit_delta` (``audit.delta``, else min(ledger δ,
    β/(200·m))); confidence ``audit.confidence``; estimator ``audit.estimator``.

    Raises:
        InputError: missing canary or ledger files.
        DpauditError: the ledger is not client-level.
    """
    from dpaudit.trainers.privacy import read_privacy

    model_dir = Path(model_dir)
    scores, included = read_canary_clients(model_dir)
    ledger, _ = read_privacy(model_dir / "privacy.json")
    if ledger.unit != "client":
        raise DpauditError(
            f"{model_dir / 'privacy.json'}: a {ledger.unit}-level ledger; canary clients audit "
            "client-level DP"
        )
    delta = audit_delta(config.audit, ledger, scores.size)
    lower = gradient_canary_audit(
        scores,
        included,
        delta=delta,
        confidence=config.audit.confidence,
        estimator=config.audit.estimator,
    )
    upper, primary = upper_bounds(model_dir / "privacy.json", delta)
    return dataclasses.replace(
        judge(lower, upper, primary), canary_design=CANARY_DESIGN, canary_score=CANARY_SCORE
    )


def run_client_audit_stage(
    run: RunDir, config: RunConfig, model_name: str, *, seed: int, resume: bool = False
) -> AuditVerdict | None:
    """Audit ``<run>/<model_name>`` at the client level; merge it into ``audit/bounds.json``.

    Returns ``None`` when skipped on ``resume`` (inputs unchanged).
    """
    model_dir = run.path / model_name
    if not (model_dir / CANARY_FILE).is_file():
        raise DpauditError(f"{model_dir}: no canary clients; set federated.canary_clients > 0")
    stage = f"audit/{model_name}"
    inputs = run.output_hashes(model_name)
    inputs["audit_config"] = sha256_text(repr(dataclasses.asdict(config.audit)))
    path = run.subdir("audit") / BOUNDS_FILE
    if resume and run.can_skip(stage, inputs) and path.is_file():
        return None
    with run.stage(stage, inputs, seed=seed):
        verdict = audit_client_canaries(model_dir, config)
        record_verdict(path, model_name, verdict)
    return verdict
