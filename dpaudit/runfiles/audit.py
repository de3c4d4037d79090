"""``audit/bounds.json``: the empirical ε lower bound of each model against its ledger."""

from __future__ import annotations

from typing import ClassVar, Literal

from dpaudit.runfiles.base import JsonFloat, RunFile, RunModel, describe

__all__ = ["AUDIT_VERDICTS", "AuditEntry", "AuditVerdictName", "BoundsFile", "LowerBoundEntry"]

AuditVerdictName = Literal["consistent", "violation", "not-private"]
AUDIT_VERDICTS: tuple[str, ...] = ("consistent", "violation", "not-private")


class LowerBoundEntry(RunModel):
    """The empirical lower bound ε_lb (`EpsilonLowerBound.to_dict()`).

    If the training is (ε, `delta`)-DP, `epsilon` > ε happens with probability
    at most 1 − `confidence`.
    """

    method: str = describe("`one-run` (Steinke et al. 2023) or `threshold` (Clopper-Pearson).")
    epsilon: JsonFloat = describe("The bound, finite and ≥ 0.")
    delta: JsonFloat = describe("δ of the DP claim tested.")
    confidence: JsonFloat = describe("1 − β, for the reported value as a whole.")
    n_canaries: int = describe("Canaries audited.")
    n_guesses: int = describe("Membership guesses made (abstentions excluded).")
    n_correct: int = describe("Correct guesses.")
    threshold_selection: str = describe(
        "How the guessing rule was fixed: `fixed`, `heldout(...)`, `bonferroni(...)` or "
        "`union-bound(...)`."
    )


class AuditEntry(RunModel):
    """ε_lb against every accountant's ε_ub (`AuditVerdict.to_dict()`)."""

    lower: LowerBoundEntry = describe("The empirical lower bound.")
    upper: dict[str, JsonFloat] = describe(
        'Accountant → ε_ub at the audit\'s δ (`"inf"` without DP).', keys="accountant"
    )
    primary_accountant: str = describe("The accountant whose ε is the claim.")
    verdict: AuditVerdictName = describe(
        "`consistent` (ε_lb ≤ claimed ε), `violation` (ε_lb > claimed ε: the implementation "
        "or accounting is broken, or a 1 − confidence fluke) or `not-private` (no finite claim)."
    )
    per_accountant: dict[str, AuditVerdictName] = describe(
        "Accountant → the same verdict against that accountant.",
        keys="accountant",
        default_factory=dict,
    )
    tightness: dict[str, JsonFloat] = describe(
        "Accountant → ε_lb / ε_ub (0 when ε_ub is infinite).",
        keys="accountant",
        default_factory=dict,
    )


class BoundsFile(RunFile):
    """The empirical audit of every audited model, merged as each audit stage finishes."""

    KIND: ClassVar[str] = "bounds.json"
    PATH: ClassVar[str] = "audit/bounds.json"

    models: dict[str, AuditEntry] = describe(
        "Model (`target`, `baseline`) → its audit.", keys="model", default_factory=dict
    )

    def with_model(self, name: str, entry: AuditEntry) -> BoundsFile:
        """A copy with ``models[name] = entry`` (the other models kept)."""
        return BoundsFile(models={**self.models, name: entry})
