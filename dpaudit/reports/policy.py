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
  without an audit;
- ``utility_learned`` has no threshold and is listed only when utility shows
  the model did not learn (``summary.did_not_learn``: a classifier no better
  than always predicting the majority class): it is then **inconclusive**, since
  a model that learned nothing leaks nothing and its low numbers vouch for
  nothing (docs/decisions.md, "Parts that could not be measured").

Thresholds live in the registry :data:`POLICY_THRESHOLDS`: each
:class:`Threshold` says what it is called, how it reads its value from a
model summary and how the value is shown. Those with ``in_config`` are
settings of the ``[report]`` section; the others are gate-only. The gate's
keyword arguments and CLI options come from the registry, so
:func:`register_threshold` is the one call that adds a threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dpaudit.registry import Registry
from dpaudit.reports import fmt

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
NOT_APPLICABLE = "not-applicable"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NOT_APPLICABLE)

LOW_FPR = 0.001
"""The FPR at which ``max_tpr_at_low_fpr`` reads the TPR (0.1%)."""

AUDIT_CHECK = "audit_consistent"
AUDIT_DESCRIPTION = (
    "Empirical ε audit with power (its ceiling reaches the claim and the non-private control is "
    "detected) finds no violation of the claimed ε"
)
LEARNED_CHECK = "utility_learned"
LEARNED_DESCRIPTION = (
    "Utility shows the model learned (a classifier beats always predicting the majority "
    "class); listed only when it did not"
)


@dataclass(frozen=True)
class Threshold:
    """A release threshold: a measured value must be at most the limit.

    Attributes:
        label: the value in words, in every check's detail line ("MIA AUC").
        description: one line a privacy officer reads (HTML and Markdown reports).
        measure: ``measure(summary) -> (value, source)``: the value in a
            report's ``models.<m>.summary`` (``None``: not measured) and what it
            came from (an attack or accountant name, or ``None``).
        show: ``show(value) -> str`` as reports print the value.
        in_config: a setting of the ``[report]`` section (else gate-only).
        per_attack: the value is the best over attacks, and ``source`` names it.
    """

    label: str
    description: str
    measure: Callable[[Mapping[str, Any]], tuple[Any, str | None]]
    show: Callable[[Any], str]
    in_config: bool = True
    per_attack: bool = False
    summary_key: str | None = None
    """The summary entry holding the value; its ``resolvable = false`` makes the check inconclusive."""


POLICY_THRESHOLDS: Registry[Threshold] = Registry("policy threshold")
"""Threshold name → :class:`Threshold`, in the order checks are listed."""


def register_threshold(name: str, threshold: Threshold, *, replace: bool = False) -> Threshold:
    """Register a threshold: the gate then accepts ``name`` (``--<name>`` in the CLI).

    Raises:
        DpauditError: ``name`` is taken (unless ``replace``) or malformed.
    """
    return POLICY_THRESHOLDS.register(name, threshold, replace=replace)


def _key(key: str) -> Callable[[Mapping[str, Any]], tuple[Any, str | None]]:
    return lambda summary: (summary.get(key), None)


def _best(key: str) -> Callable[[Mapping[str, Any]], tuple[Any, str | None]]:
    def measure(summary: Mapping[str, Any]) -> tuple[Any, str | None]:
        entry = summary.get(key)
        if not entry:
            return None, None
        return entry.get("value"), entry.get("attack")

    return measure


def _fixed3(value: Any) -> str:
    return fmt.fixed(value, 3)


for _name, _threshold in (
    (
        "max_epsilon",
        Threshold(
            "claimed ε",
            "Claimed ε (primary accountant) at most",
            lambda s: (s.get("epsilon"), s.get("primary_accountant")),
            fmt.eps,
        ),
    ),
    (
        "max_epsilon_lower",
        Threshold(
            "empirical ε lower bound",
            "Empirical ε lower bound at most",
            _key("epsilon_lower"),
            fmt.eps,
            in_config=False,
        ),
    ),
    (
        "max_auc",
        Threshold(
            "MIA AUC",
            "Best membership-inference AUC at most",
            _best("max_auc"),
            _fixed3,
            per_attack=True,
        ),
    ),
    (
        "max_tpr_at_low_fpr",
        Threshold(
            "MIA TPR at 0.1% FPR",
            "Best MIA true-positive rate at 0.1% false positives at most",
            _best("max_tpr_at_low_fpr"),
            _fixed3,
            per_attack=True,
            summary_key="max_tpr_at_low_fpr",
        ),
    ),
    (
        "max_exposure",
        Threshold(
            "canary exposure (bits)",
            "Highest exposure of an inserted canary (bits) at most",
            _key("max_exposure"),
            lambda v: fmt.num(v, 3),
        ),
    ),
    (
        "max_pii_extraction_rate",
        Threshold(
            "PII extraction rate",
            "Share of training PII values extracted by sampling at most",
            _key("pii_extraction_rate"),
            _fixed3,
        ),
    ),
):
    register_threshold(_name, _threshold)
del _name, _threshold


def __getattr__(name: str) -> Any:
    """Views of :data:`POLICY_THRESHOLDS`, computed on access (plug-ins included).

    ``THRESHOLDS`` (every name the gate understands), ``CONFIG_THRESHOLDS``
    (those of the ``[report]`` section) and ``DESCRIPTIONS`` (name → one line,
    ``audit_consistent`` and ``utility_learned`` included).
    """
    if name == "THRESHOLDS":
        return POLICY_THRESHOLDS.names()
    if name == "CONFIG_THRESHOLDS":
        return tuple(n for n, t in POLICY_THRESHOLDS.items() if t.in_config)
    if name == "DESCRIPTIONS":
        out = {n: t.description for n, t in POLICY_THRESHOLDS.items()}
        return {**out, AUDIT_CHECK: AUDIT_DESCRIPTION, LEARNED_CHECK: LEARNED_DESCRIPTION}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "CONFIG_THRESHOLDS", "DESCRIPTIONS", "THRESHOLDS"])


@dataclass(frozen=True)
class PolicyCheck:
    """One threshold checked against one model.

    Attributes:
        name: the threshold (``max_auc``, ...), ``audit_consistent`` or ``utility_learned``.
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
    """The summary value behind a threshold, and the attack (or accountant) it came from."""
    if name not in POLICY_THRESHOLDS:
        raise KeyError(name)
    return POLICY_THRESHOLDS.get(name).measure(summary)


def show_value(name: str, value: Any) -> str:
    """A measured value as reports print it: ε with 2 decimals, rates with 3, exposure 3 digits."""
    return POLICY_THRESHOLDS.get(name).show(value)


def check_threshold(
    summary: Mapping[str, Any], name: str, limit: Any, *, model: str
) -> PolicyCheck:
    """Judge ``summary``'s value for ``name`` against ``limit`` (see the module rules)."""
    value, source = _measured(summary, name)
    spec = POLICY_THRESHOLDS.get(name)
    label = f"{model} {spec.label}"
    attack = source if spec.per_attack else None
    limit_f = fmt.as_float(limit)
    if limit_f is None:
        shown = show_value(name, value) if value is not None else "not measured"
        return PolicyCheck(
            name, model, None, value, NOT_APPLICABLE, f"{label} {shown} (no threshold)", attack
        )
    x = fmt.as_float(value)
    entry = summary.get(spec.summary_key) if spec.summary_key else None
    if x is not None and isinstance(entry, Mapping) and entry.get("resolvable") is False:
        return PolicyCheck(
            name,
            model,
            limit_f,
            value,
            INCONCLUSIVE,
            f"{label} not resolvable: too few non-members for this FPR ({show_value(name, value)} "
            "is the TPR at zero false positives); unknown, not a pass",
            attack,
        )
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
    if verdict == "inconclusive":
        reasons = "; ".join(summary.get("audit_reasons") or []) or "the audit had no power"
        return PolicyCheck(
            AUDIT_CHECK,
            model,
            None,
            verdict,
            INCONCLUSIVE,
            f"{model} audit inconclusive: ε_lb {fmt.eps(lower)} (ceiling "
            f"{fmt.eps(summary.get('audit_ceiling'))}): {reasons}",
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
        f"{model}: no violation found: empirical ε lower bound {fmt.eps(lower)} ≤ claimed ε "
        f"{fmt.eps(claim)} (ceiling {fmt.eps(summary.get('audit_ceiling'))}, non-private control "
        "detected); this tests the claim, it does not locate the true ε",
    )


def check_learned(summary: Mapping[str, Any], *, model: str) -> PolicyCheck | None:
    """``utility_learned``: inconclusive when utility shows the model did not learn, else ``None``.

    A model that learned nothing (a classifier no better than always predicting
    the majority class) leaks nothing either: its low attack numbers are no
    evidence that training protected the data, so the verdict cannot be a plain pass.
    """
    why = summary.get("did_not_learn")
    if not why:
        return None
    return PolicyCheck(
        LEARNED_CHECK,
        model,
        None,
        "did not learn",
        INCONCLUSIVE,
        f"{model} did not learn: {why}; its low leakage is no evidence of privacy",
    )


def evaluate(
    summary: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    *,
    model: str = "target",
    include_audit: bool = True,
) -> list[PolicyCheck]:
    """Every check of ``thresholds`` (names in :data:`POLICY_THRESHOLDS`) plus ``audit_consistent``,
    and ``utility_learned`` when utility shows the model did not learn (:func:`check_learned`).

    Raises:
        KeyError: an unknown threshold name.
    """
    names = POLICY_THRESHOLDS.names()
    unknown = sorted(set(thresholds) - set(names))
    if unknown:
        raise KeyError(f"unknown thresholds {unknown}")
    checks = [
        check_threshold(summary, name, thresholds.get(name), model=model)
        for name in names
        if name in thresholds
    ]
    if include_audit:
        checks.append(check_audit(summary, model=model))
    learned = check_learned(summary, model=model)
    if learned is not None:
        checks.append(learned)
    return checks


def overall(checks: list[PolicyCheck]) -> str:
    """``fail`` if any check fails; else ``inconclusive`` if any is inconclusive; else ``pass``."""
    if any(c.verdict == FAIL for c in checks):
        return FAIL
    return INCONCLUSIVE if any(c.verdict == INCONCLUSIVE for c in checks) else PASS
