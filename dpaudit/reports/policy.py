"""Judging one model's headline numbers against release thresholds.

Pure functions over a report's ``models.<m>.summary`` mapping (see
docs/report-schema.md), shared by the report's ``policy`` section and by
:func:`dpaudit.reports.gate.gate`, so that the report and the gate can never
disagree about the same numbers.

Rules:

- a measured value **passes** when ``value <= threshold`` and **fails** when it
  is larger (an infinite ε, a non-private model, always fails ``max_epsilon``);
- a threshold that is not set is **not-applicable**;
- a threshold that is set but whose value was not measured in the run (no
  canaries, no PII attack, no audit) **fails**: a release check that could not
  be made is not a pass (fail-closed);
- ``audit_consistent`` has no threshold: it fails when the empirical lower
  bound ε_lb exceeds the claimed ε (the audit refutes the DP claim), passes
  when it does not, and is not-applicable for a non-private model or a run
  without an audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpaudit.reports import fmt

PASS = "pass"
FAIL = "fail"
NOT_APPLICABLE = "not-applicable"
VERDICTS = (PASS, FAIL, NOT_APPLICABLE)

LOW_FPR = 0.001
"""The FPR at which ``max_tpr_at_low_fpr`` reads the TPR (0.1%)."""

CONFIG_THRESHOLDS = (
    "max_epsilon",
    "max_auc",
    "max_tpr_at_low_fpr",
    "max_exposure",
    "max_pii_extraction_rate",
)
"""Thresholds of the ``[report]`` config section (``ReportConfig``)."""

THRESHOLDS = ("max_epsilon", "max_epsilon_lower", *CONFIG_THRESHOLDS[1:])
"""Every threshold the gate understands (``max_epsilon_lower`` is gate-only)."""

AUDIT_CHECK = "audit_consistent"

_LABELS = {
    "max_epsilon": "claimed ε",
    "max_epsilon_lower": "empirical ε lower bound",
    "max_auc": "MIA AUC",
    "max_tpr_at_low_fpr": "MIA TPR at 0.1% FPR",
    "max_exposure": "canary exposure (bits)",
    "max_pii_extraction_rate": "PII extraction rate",
}

DESCRIPTIONS = {
    "max_epsilon": "Claimed ε (primary accountant) at most",
    "max_epsilon_lower": "Empirical ε lower bound at most",
    "max_auc": "Best membership-inference AUC at most",
    "max_tpr_at_low_fpr": "Best MIA true-positive rate at 0.1% false positives at most",
    "max_exposure": "Highest exposure of an inserted canary (bits) at most",
    "max_pii_extraction_rate": "Share of training PII values extracted by sampling at most",
    AUDIT_CHECK: "Empirical audit does not contradict the claimed ε",
}
"""One line per check, in the words a privacy officer reads (HTML and Markdown)."""


@dataclass(frozen=True)
class PolicyCheck:
    """One threshold checked against one model.

    Attributes:
        name: the threshold (``max_auc``, ...) or ``audit_consistent``.
        model: ``target`` or ``baseline``.
        threshold: the limit (``None``: not set, or ``audit_consistent``).
        value: the measured value (``None``: not measured).
        verdict: ``pass``, ``fail`` or ``not-applicable``.
        detail: one line, e.g. ``"target MIA AUC 0.91 (loss) > 0.6"``.
        attack: the attack behind an AUC/TPR value, else ``None``.
    """

    name: str
    model: str
    threshold: float | None
    value: Any
    verdict: str
    detail: str
    attack: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "value": self.value,
            "verdict": self.verdict,
            "detail": self.detail,
            "model": self.model,
            "attack": self.attack,
        }


def _measured(summary: Mapping[str, Any], name: str) -> tuple[Any, str | None]:
    """The summary value behind a threshold, and the attack it came from."""
    if name == "max_epsilon":
        return summary.get("epsilon"), summary.get("primary_accountant")
    if name == "max_epsilon_lower":
        return summary.get("epsilon_lower"), None
    if name in ("max_auc", "max_tpr_at_low_fpr"):
        entry = summary.get(name)
        if not entry:
            return None, None
        return entry.get("value"), entry.get("attack")
    if name == "max_exposure":
        return summary.get("max_exposure"), None
    if name == "max_pii_extraction_rate":
        return summary.get("pii_extraction_rate"), None
    raise KeyError(name)


def show_value(name: str, value: Any) -> str:
    """A measured value as reports print it: ε with 2 decimals, rates with 3, exposure 3 digits."""
    if name in ("max_epsilon", "max_epsilon_lower"):
        return fmt.eps(value)
    if name == "max_exposure":
        return fmt.num(value, 3)
    return fmt.fixed(value, 3)


def check_threshold(
    summary: Mapping[str, Any], name: str, limit: Any, *, model: str
) -> PolicyCheck:
    """Judge ``summary``'s value for ``name`` against ``limit`` (see the module rules)."""
    value, source = _measured(summary, name)
    label = f"{model} {_LABELS[name]}"
    attack = source if name in ("max_auc", "max_tpr_at_low_fpr") else None
    limit_f = fmt.as_float(limit)
    if limit_f is None:
        shown = show_value(name, value) if value is not None else "not measured"
        return PolicyCheck(
            name, model, None, value, NOT_APPLICABLE, f"{label} {shown} (no threshold)", attack
        )
    x = fmt.as_float(value)
    if x is None:
        return PolicyCheck(
            name,
            model,
            limit_f,
            None,
            FAIL,
            f"{label} not measured in this run (policy requires ≤ {fmt.threshold(limit_f)})",
            attack,
        )
    where = f" ({source})" if source else ""
    if name == "max_epsilon" and x == float("inf"):
        where = " (not private)"
    ok = x <= limit_f  # NaN compares False: an undefined value fails
    sign = "≤" if ok else ">"
    detail = f"{label} {show_value(name, value)}{where} {sign} {fmt.threshold(limit_f)}"
    return PolicyCheck(name, model, limit_f, value, PASS if ok else FAIL, detail, attack)


def check_audit(summary: Mapping[str, Any], *, model: str) -> PolicyCheck:
    """``audit_consistent``: fail when the audit's verdict is ``violation``."""
    verdict = summary.get("audit_verdict")
    lower, claim = summary.get("epsilon_lower"), summary.get("epsilon")
    if verdict is None:
        return PolicyCheck(
            AUDIT_CHECK,
            model,
            None,
            None,
            NOT_APPLICABLE,
            f"{model}: no empirical audit in this run",
        )
    if verdict == "not-private":
        return PolicyCheck(
            AUDIT_CHECK,
            model,
            None,
            verdict,
            NOT_APPLICABLE,
            f"{model}: not trained with DP, no claim to audit (ε_lb {fmt.eps(lower)})",
        )
    if verdict == "violation":
        return PolicyCheck(
            AUDIT_CHECK,
            model,
            None,
            verdict,
            FAIL,
            f"{model} empirical ε lower bound {fmt.eps(lower)} > claimed ε {fmt.eps(claim)}: the DP claim is refuted",
        )
    return PolicyCheck(
        AUDIT_CHECK,
        model,
        None,
        verdict,
        PASS,
        f"{model} empirical ε lower bound {fmt.eps(lower)} ≤ claimed ε {fmt.eps(claim)}",
    )


def evaluate(
    summary: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    *,
    model: str = "target",
    include_audit: bool = True,
) -> list[PolicyCheck]:
    """Every check of ``thresholds`` (names from :data:`THRESHOLDS`) plus ``audit_consistent``.

    Raises:
        KeyError: an unknown threshold name.
    """
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise KeyError(f"unknown thresholds {unknown}")
    checks = [
        check_threshold(summary, name, thresholds.get(name), model=model)
        for name in THRESHOLDS
        if name in thresholds
    ]
    if include_audit:
        checks.append(check_audit(summary, model=model))
    return checks


def overall(checks: list[PolicyCheck]) -> str:
    """``fail`` if any check fails, else ``pass``."""
    return FAIL if any(c.verdict == FAIL for c in checks) else PASS
