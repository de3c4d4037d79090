"""``audit/bounds.json``: the empirical ε lower bound of each model against its ledger."""

from __future__ import annotations

from typing import ClassVar, Literal

from dpaudit.runfiles.base import JsonFloat, RunFile, RunModel, describe

__all__ = [
    "AUDIT_VERDICTS",
    "AuditEntry",
    "ControlEntry",
    "AuditVerdictName",
    "BoundsFile",
    "LowerBoundEntry",
]

AuditVerdictName = Literal["consistent", "violation", "inconclusive", "not-private"]
AUDIT_VERDICTS: tuple[str, ...] = ("consistent", "violation", "inconclusive", "not-private")


class ControlEntry(RunModel):
    """The non-private control audited in the same run: was leakage detected where there is some?"""

    model: str = describe("The control model (the non-private `baseline`).")
    epsilon_lower: JsonFloat = describe("The control's ε_lb (same canaries, estimator, δ).")
    threshold: JsonFloat = describe(
        "`audit.control_min_epsilon`: the control counts as detected above it."
    )
    detected: bool = describe("`epsilon_lower > threshold`.")


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
    estimator: str | None = describe(
        "One-run estimator that turned the counts into `epsilon`: `steinke` (Steinke et al. "
        "2023), `fdp-epsdelta` or `fdp-gdp` (Mahloujifar et al. 2025), or a registered one; "
        "`clopper-pearson` for the threshold method. `null` (files written before estimators "
        "existed): `steinke`, or `clopper-pearson` for the threshold method.",
        default=None,
    )
    guarantee: str | None = describe(
        "What `epsilon` promises: `lower-bound` (for every (ε, δ)-DP mechanism), "
        "`gdp-lower-bound` (only if the trade-off curve is Gaussian) or `estimate` (no "
        "finite-sample guarantee). `null` (older files): `lower-bound`.",
        default=None,
    )
    ceiling: JsonFloat | None = describe(
        "The largest `epsilon` the same audit could give (every guess right, same grid, δ "
        "and confidence); `null` when unknown.",
        default=None,
    )


class AuditEntry(RunModel):
    """ε_lb against every accountant's ε_ub (`AuditVerdict.to_dict()`)."""

    lower: LowerBoundEntry = describe("The empirical lower bound.")
    upper: dict[str, JsonFloat] = describe(
        'Accountant → ε_ub at the audit\'s δ (`"inf"` without DP).', keys="accountant"
    )
    primary_accountant: str = describe("The accountant whose ε is the claim.")
    verdict: AuditVerdictName = describe(
        "`consistent` (ε_lb ≤ claimed ε, and the audit had power: its ceiling reaches the claim and "
        "the non-private control was detected), `violation` (ε_lb > claimed ε: the implementation "
        "or accounting is broken, or a 1 − confidence fluke), `inconclusive` (no violation found, "
        "but the audit could not have shown one: see `reasons`) or `not-private` (no finite claim)."
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
    ceiling: JsonFloat | None = describe(
        "The ε_lb the same audit would report if every guess were right (its most).", default=None
    )
    control: ControlEntry | None = describe(
        "The non-private control of the same run, when there is one.", default=None
    )
    reasons: list[str] = describe(
        "Why the verdict is `inconclusive` (empty otherwise).", default_factory=list
    )
    estimates: dict[str, dict[str, JsonFloat | str | None]] = describe(
        "Estimator → `{epsilon, ceiling, guarantee}` from the same guesses, side by side with "
        "the primary (`lower.estimator`); only `lower-bound` ones can decide a violation.",
        keys="estimator",
        default_factory=dict,
    )
    canary_design: str | None = describe(
        "Design of the audit canaries (`data.canary_design`: `new-token`, `random-secret`, "
        "`unigram`; `mislabelled` for classifiers); `null` when not recorded.",
        default=None,
    )
    canary_score: str | None = describe(
        "Statistic the canaries were scored with (`loss`, `loss-drop`, `logppl`); `loss` when "
        "`loss-drop` was asked but no model before training was found; `null` when not recorded.",
        default=None,
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
