"""Compare an empirical ε lower bound with the accountants' upper bounds, and judge the audit's power.

A correct DP implementation, accounted correctly, satisfies ε_lb ≤ ε_ub with
probability at least the bound's confidence. ``violation`` therefore means the
training or its accounting is broken (or a 1 − confidence fluke). No violation
is evidence only if the audit could have found one (:func:`assess_power`):
its *ceiling* (the ε_lb if every guess were right) must reach the claimed ε,
and a non-private control trained in the same run must itself be detected;
otherwise the verdict is ``inconclusive``, never ``consistent``. A
``consistent`` verdict says what was tested and how strongly (ε_lb, ceiling,
control), not that the true ε lies between the bounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dpaudit.audit.lower_bound import EpsilonLowerBound
from dpaudit.runfiles.audit import AuditEntry

CONSISTENT = "consistent"
VIOLATION = "violation"
INCONCLUSIVE = "inconclusive"
NOT_PRIVATE = "not-private"


@dataclass(frozen=True)
class AuditVerdict:
    """ε_lb against every accountant's ε_ub, and the verdict against the claimed one.

    Attributes:
        lower: the empirical lower bound.
        upper: ε_ub by accountant, all at ``lower.delta``.
        primary_accountant: the accountant whose ε is the claim.
        verdict: ``consistent``, ``violation``, ``inconclusive`` (no violation, but
            the audit had no power to find one: ``reasons``) or ``not-private``.
        per_accountant: ε_lb against each accountant alone (``consistent`` /
            ``violation`` / ``not-private``; power is judged on the verdict only).
        tightness: ε_lb / ε_ub by accountant (0 when ε_ub is infinite).
        ceiling: the ε_lb if every guess were right, or ``None`` when unknown.
        control: the non-private control ``{"model", "epsilon_lower",
            "threshold", "detected"}``, or ``None``.
        reasons: why the verdict is ``inconclusive``.
        estimates: other estimators on the same guesses, ``{name: {"epsilon",
            "ceiling", "guarantee"}}``, reported beside the primary one.
        canary_design: the audit canaries' design (``data.canary_design``; for
            classifiers ``mislabelled``), or ``None`` when not recorded.
        canary_score: the statistic actually scored (``loss``, ``loss-drop``,
            ``logppl``; ``loss`` when ``loss-drop`` found no base model).
    """

    lower: EpsilonLowerBound
    upper: dict[str, float]
    primary_accountant: str
    verdict: str
    per_accountant: dict[str, str] = field(default_factory=dict)
    tightness: dict[str, float] = field(default_factory=dict)
    ceiling: float | None = None
    control: dict[str, Any] | None = None
    reasons: tuple[str, ...] = ()
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)
    canary_design: str | None = None
    canary_score: str | None = None

    @property
    def claimed_epsilon(self) -> float:
        """ε_ub of the primary accountant (the claim), ``inf`` without one."""
        return float(self.upper.get(self.primary_accountant, math.inf))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a mapping (ε may be ``inf``; JSON writers encode it)."""
        return {
            "lower": self.lower.to_dict(),
            "upper": dict(self.upper),
            "primary_accountant": self.primary_accountant,
            "verdict": self.verdict,
            "per_accountant": dict(self.per_accountant),
            "tightness": dict(self.tightness),
            "ceiling": self.ceiling,
            "control": None if self.control is None else dict(self.control),
            "reasons": list(self.reasons),
            "estimates": {k: dict(v) for k, v in self.estimates.items()},
            "canary_design": self.canary_design,
            "canary_score": self.canary_score,
        }

    def to_entry(self) -> AuditEntry:
        """The ``audit/bounds.json`` entry of this verdict (:class:`~dpaudit.runfiles.audit.AuditEntry`)."""
        return AuditEntry.from_dict(self.to_dict())

    @classmethod
    def from_entry(cls, entry: AuditEntry) -> AuditVerdict:
        """Inverse of :meth:`to_entry`.

        Raises:
            DpauditError: the lower bound is not a valid :class:`EpsilonLowerBound`.
        """
        return cls(
            lower=EpsilonLowerBound.from_dict(entry.lower.model_dump()),
            upper=dict(entry.upper),
            primary_accountant=entry.primary_accountant,
            verdict=entry.verdict,
            per_accountant=dict(entry.per_accountant),
            tightness=dict(entry.tightness),
            ceiling=entry.ceiling,
            control=None if entry.control is None else entry.control.model_dump(),
            reasons=tuple(entry.reasons),
            estimates={k: dict(v) for k, v in entry.estimates.items()},
            canary_design=entry.canary_design,
            canary_score=entry.canary_score,
        )


def _one(lower: float, upper: float) -> str:
    if not math.isfinite(upper):
        return NOT_PRIVATE
    return VIOLATION if lower > upper else CONSISTENT


def judge(
    lower: EpsilonLowerBound, upper: Mapping[str, float], primary_accountant: str
) -> AuditVerdict:
    """The verdict of ``lower`` against ``upper[primary_accountant]`` (the claim)."""
    upper = {k: float(v) for k, v in upper.items()}
    per = {name: _one(lower.epsilon, eps) for name, eps in upper.items()}
    tight = {
        name: (lower.epsilon / eps if math.isfinite(eps) and eps > 0 else 0.0)
        for name, eps in upper.items()
    }
    claim = upper.get(primary_accountant, math.inf)
    ceiling = getattr(lower, "ceiling", None)
    return AuditVerdict(
        lower,
        upper,
        primary_accountant,
        _one(lower.epsilon, claim),
        per,
        tight,
        ceiling=None if ceiling is None else float(ceiling),
    )


def assess_power(
    verdict: AuditVerdict,
    *,
    control: AuditVerdict | None,
    control_model: str = "baseline",
    min_control_epsilon: float = 1.0,
    require_control: bool = True,
) -> AuditVerdict:
    """``verdict``, made ``inconclusive`` when the audit could not have shown a violation.

    A ``consistent`` verdict stays only if (1) the audit's ceiling (ε_lb with
    every guess right) reaches the claimed ε, and (2) the non-private
    ``control`` of the same run — same canaries, estimator and δ — reached
    ε_lb > ``min_control_epsilon`` (when there is no control and
    ``require_control``, the power was not demonstrated). ``violation`` and
    ``not-private`` are returned unchanged (a violation needs no power
    argument); the control is recorded either way.

    Args:
        verdict: the audited model's verdict (from :func:`judge`).
        control: the non-private control's verdict, or ``None``.
        control_model: its name, for the record and the reason.
        min_control_epsilon: the control counts as detected strictly above this ε_lb.
        require_control: with no control, call the audit inconclusive.
    """
    record = None
    if control is not None:
        record = {
            "model": control_model,
            "epsilon_lower": float(control.lower.epsilon),
            "threshold": float(min_control_epsilon),
            "detected": bool(control.lower.epsilon > min_control_epsilon),
        }
    reasons: list[str] = []
    claim = verdict.claimed_epsilon
    # Re-assessing an inconclusive verdict starts again from "no violation found".
    base = CONSISTENT if verdict.verdict == INCONCLUSIVE else verdict.verdict
    if base == CONSISTENT:
        if verdict.ceiling is not None and verdict.ceiling < claim:
            reasons.append(
                f"the audit's ceiling ε = {verdict.ceiling:.2f} (every guess right) is below the "
                f"claimed ε = {claim:.2f} (the ledger's ε at the audit's δ = "
                f"{verdict.lower.delta:.0e}): it could not have shown a violation (more "
                "canaries raise the ceiling)"
            )
        if record is not None and not record["detected"]:
            reasons.append(
                f"the non-private control ({control_model}) reached only ε_lb = "
                f"{record['epsilon_lower']:.2f}, not above the {min_control_epsilon:g} a working "
                "audit must show on a model without DP (audit.control_min_epsilon): the attack "
                "certifies too little of the leakage that is there"
            )
        elif record is None and require_control:
            reasons.append(
                "no non-private control in this run (train.baseline = false): the audit's power "
                "was not demonstrated"
            )
    return dataclasses.replace(
        verdict,
        verdict=INCONCLUSIVE if reasons else base,
        control=record,
        reasons=tuple(reasons),
    )
