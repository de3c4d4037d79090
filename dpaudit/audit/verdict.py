"""Compare an empirical ε lower bound with the accountants' upper bounds.

A correct DP implementation, accounted correctly, satisfies ε_lb ≤ ε_ub with
probability at least the bound's confidence. ``violation`` therefore means the
training or its accounting is broken (or a 1 − confidence fluke); ``consistent``
means the audit found no contradiction, with tightness ε_lb / ε_ub saying how
much of the claim the attack could confirm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dpaudit.audit.lower_bound import EpsilonLowerBound
from dpaudit.runfiles.audit import AuditEntry

CONSISTENT = "consistent"
VIOLATION = "violation"
NOT_PRIVATE = "not-private"


@dataclass(frozen=True)
class AuditVerdict:
    """ε_lb against every accountant's ε_ub, and the verdict against the claimed one.

    Attributes:
        lower: the empirical lower bound.
        upper: ε_ub by accountant, all at ``lower.delta``.
        primary_accountant: the accountant whose ε is the claim.
        verdict: ``consistent``, ``violation`` or ``not-private`` (no finite claim).
        per_accountant: the same verdict against each accountant.
        tightness: ε_lb / ε_ub by accountant (0 when ε_ub is infinite).
    """

    lower: EpsilonLowerBound
    upper: dict[str, float]
    primary_accountant: str
    verdict: str
    per_accountant: dict[str, str] = field(default_factory=dict)
    tightness: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a mapping (ε may be ``inf``; JSON writers encode it)."""
        return {
            "lower": self.lower.to_dict(),
            "upper": dict(self.upper),
            "primary_accountant": self.primary_accountant,
            "verdict": self.verdict,
            "per_accountant": dict(self.per_accountant),
            "tightness": dict(self.tightness),
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
    return AuditVerdict(lower, upper, primary_accountant, _one(lower.epsilon, claim), per, tight)
