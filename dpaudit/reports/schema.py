"""The ``report.json`` schema: its version and a validator.

docs/report-schema.md documents every key. :func:`report_problems` checks the
keys and types that consumers (the gate, ``compare``, the renderers) rely on;
:func:`validate_report` raises on the first report that fails. Non-finite
floats are the strings ``"inf"``, ``"-inf"``, ``"nan"`` (docs/run-directory.md),
so a *number* below is an ``int``, a ``float`` or one of those strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpaudit.errors import DpauditError, InputError

REPORT_SCHEMA_VERSION = "1.0"

RIGOROUS_ACCOUNTANTS = ("rdp", "prv", "pld")
"""Accountants whose ε is a proven upper bound (up to numerical error they bound)."""

APPROXIMATE_ACCOUNTANTS = ("gdp", "edgeworth")
"""Accountants whose ε is an approximation (CLT / Edgeworth expansion), not a bound."""

AUDIT_VERDICTS = ("consistent", "violation", "not-private")
MODEL_NAMES = ("target", "baseline")


def accountant_kind(name: str) -> str:
    """``rigorous``, ``approximate`` or ``unknown`` for an accountant name."""
    if name in RIGOROUS_ACCOUNTANTS:
        return "rigorous"
    if name in APPROXIMATE_ACCOUNTANTS:
        return "approximate"
    return "unknown"


# -- a tiny structural spec language ---------------------------------------------------------

NUMBER = "number"
_NONFINITE = ("inf", "-inf", "nan")


@dataclass(frozen=True)
class Opt:
    """``None`` or ``spec``."""

    spec: Any


@dataclass(frozen=True)
class MapOf:
    """A mapping with any string keys, each value matching ``spec``."""

    spec: Any


@dataclass(frozen=True)
class OneOf:
    """A string among ``choices``."""

    choices: tuple[str, ...]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or value in _NONFINITE


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(value: Any, spec: Any, where: str, problems: list[str]) -> None:
    if isinstance(spec, Opt):
        if value is not None:
            _check(value, spec.spec, where, problems)
        return
    if isinstance(spec, MapOf):
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected an object, got {_type_name(value)}")
            return
        for key, item in value.items():
            _check(item, spec.spec, f"{where}.{key}", problems)
        return
    if isinstance(spec, OneOf):
        if value not in spec.choices:
            problems.append(f"{where}: expected one of {', '.join(spec.choices)}, got {value!r}")
        return
    if isinstance(spec, dict):
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected an object, got {_type_name(value)}")
            return
        for key, sub in spec.items():
            if key not in value:
                problems.append(f"{where}: missing key {key!r}")
            else:
                _check(value[key], sub, f"{where}.{key}", problems)
        return
    if spec == NUMBER:
        if not _is_number(value):
            problems.append(f"{where}: expected a number, got {_type_name(value)}")
        return
    if spec is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true/false, got {_type_name(value)}")
        return
    if spec is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {_type_name(value)}")
        return
    if not isinstance(value, spec):
        problems.append(
            f"{where}: expected {getattr(spec, '__name__', spec)}, got {_type_name(value)}"
        )


PAIR = list
_POLICY_ITEM = {
    "threshold": Opt(NUMBER),
    "verdict": OneOf(("pass", "fail", "not-applicable")),
    "detail": str,
    "model": str,
}
_PRIVACY = {
    "dp": bool,
    "epsilon": NUMBER,
    "epsilon_upper": MapOf(NUMBER),
    "accountant_kind": MapOf(OneOf(("rigorous", "approximate", "unknown"))),
    "delta": NUMBER,
    "primary_accountant": str,
    "mechanism": str,
    "unit": str,
    "adjacency": str,
    "sample_rate": NUMBER,
    "noise_multiplier": NUMBER,
    "max_grad_norm": Opt(NUMBER),
    "steps": int,
    "epochs": Opt(NUMBER),
}
_AUDIT = {
    "epsilon_lower": {
        "value": NUMBER,
        "confidence": NUMBER,
        "delta": NUMBER,
        "method": str,
        "n_canaries": int,
        "n_guesses": int,
        "n_correct": int,
        "threshold_selection": str,
    },
    "epsilon_upper": MapOf(NUMBER),
    "primary_accountant": str,
    "verdict": OneOf(AUDIT_VERDICTS),
    "per_accountant": MapOf(OneOf(AUDIT_VERDICTS)),
    "tightness": MapOf(NUMBER),
}
_ATTACK = {
    "auc": NUMBER,
    "auc_ci": PAIR,
    "tpr_at_fpr": MapOf({"tpr": NUMBER, "ci": PAIR}),
    "balanced_accuracy": NUMBER,
    "balanced_accuracy_ci": PAIR,
    "n_member": int,
    "n_nonmember": int,
    "min_resolvable_fpr": NUMBER,
}
_CANARIES = {
    "n_canaries": int,
    "n_inserted": int,
    "exposure_by_repetition": MapOf(
        {"mean": NUMBER, "median": NUMBER, "min": NUMBER, "max": NUMBER, "n": int}
    ),
    "max_exposure": Opt(NUMBER),
    "max_possible_exposure": Opt(NUMBER),
    "extraction": MapOf(MapOf({"rate": NUMBER, "extracted": int, "n": int})),
    "results": list,
}
_MEMORIZATION = {
    "rate": NUMBER,
    "n_evaluated": int,
    "n_memorized": int,
    "by_duplication": MapOf(dict),
}
_PII = {"extraction_rate": Opt(NUMBER), "extraction": Opt(dict), "by_kind": MapOf(dict)}
_SUMMARY = {
    "epsilon": Opt(NUMBER),
    "primary_accountant": Opt(str),
    "epsilon_lower": Opt(NUMBER),
    "audit_verdict": Opt(OneOf(AUDIT_VERDICTS)),
    "max_auc": Opt({"value": NUMBER, "attack": str}),
    "max_tpr_at_low_fpr": Opt({"value": NUMBER, "attack": str, "fpr": NUMBER}),
    "max_exposure": Opt(NUMBER),
    "pii_extraction_rate": Opt(NUMBER),
    "memorization_rate": Opt(NUMBER),
    "utility": Opt({"metric": str, "value": NUMBER, "higher_is_better": bool}),
}
_MODEL = {
    "privacy": Opt(_PRIVACY),
    "audit": Opt(_AUDIT),
    "attacks": MapOf(_ATTACK),
    "canaries": Opt(_CANARIES),
    "memorization": Opt(_MEMORIZATION),
    "pii": Opt(_PII),
    "utility": Opt(dict),
    "summary": _SUMMARY,
}
REPORT_SPEC: dict[str, Any] = {
    "schema_version": str,
    "revealed": bool,
    "run": {
        "name": str,
        "created": Opt(str),
        "dpaudit_version": Opt(str),
        "git_commit": Opt(str),
        "argv": list,
        "seeds": dict,
        "device": Opt(str),
        "stages": dict,
    },
    "generator": {"dpaudit_version": str},
    "policy": {
        "thresholds": MapOf(Opt(NUMBER)),
        "configured": bool,
        "items": MapOf(_POLICY_ITEM),
        "failed": list,
        "verdict": OneOf(("pass", "fail")),
    },
    "models": {"target": _MODEL},
    "blind_baseline": Opt({"auc": NUMBER, "auc_ci": PAIR, "warning": Opt(str)}),
    "fingerprints": {"inputs": dict, "outputs": dict, "sources": MapOf(str)},
    "versions": dict,
    "config": dict,
    "warnings": list,
}
"""Keys and types every report must have (docs/report-schema.md has the rest)."""


def report_problems(report: Any) -> list[str]:
    """Every way ``report`` departs from the schema (empty list: valid)."""
    problems: list[str] = []
    _check(report, REPORT_SPEC, "report", problems)
    if not isinstance(report, Mapping):
        return problems
    version = str(report.get("schema_version", ""))
    if version.split(".")[0] != REPORT_SCHEMA_VERSION.split(".")[0]:
        problems.append(
            f"report.schema_version: unsupported {version!r} (expected {REPORT_SCHEMA_VERSION})"
        )
    models = report.get("models")
    if isinstance(models, Mapping):
        for name, model in models.items():
            if name != "target":
                _check(model, _MODEL, f"report.models.{name}", problems)
            if (
                isinstance(model, Mapping)
                and "recovered" in model
                and report.get("revealed") is not True
            ):
                problems.append(
                    f"report.models.{name}.recovered: present in a report that is not revealed"
                )
    return problems


def validate_report(report: Any, *, source: str | Path | None = None) -> Mapping[str, Any]:
    """Return ``report`` when it matches the schema, else raise.

    Raises:
        InputError: naming ``source`` (when given) and the first few problems.
        DpauditError: the same without a file.
    """
    problems = report_problems(report)
    if problems:
        shown = "; ".join(problems[:5]) + (
            f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        if source is not None:
            raise InputError(source, f"not a valid dpaudit report: {shown}")
        raise DpauditError(f"not a valid dpaudit report: {shown}")
    return report
