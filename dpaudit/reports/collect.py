"""Build the report mapping (``report.json``) from a run directory alone.

Reads only files documented in docs/run-directory.md, never live objects, so a
report can be rebuilt at any time and gives the same ``report.json`` byte for
byte (nothing in it depends on when or where it was rendered). Keys are
documented in docs/report-schema.md.

Public files are read through a whitelist of keys: a value that is not listed
(a secret or a PII value written by mistake into a public file) never reaches
the report. Recovered secrets and PII come only from ``recovered.json``, and
only when the report is built with ``reveal=True``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpaudit import __version__
from dpaudit.atomic import read_json, to_jsonable
from dpaudit.errors import DpauditError, InputError
from dpaudit.reports import policy
from dpaudit.reports.schema import (
    MODEL_NAMES,
    REPORT_SCHEMA_VERSION,
    accountant_kind,
    validate_report,
)
from dpaudit.rundir import RunDir, sha256_file

__all__ = ["RunData", "collect", "collect_report"]

_PRIVACY_KEYS = (
    "delta",
    "mechanism",
    "unit",
    "adjacency",
    "sample_rate",
    "noise_multiplier",
    "max_grad_norm",
    "steps",
    "epochs",
    "planned_steps",
    "planned_epochs",
    "complete",
    "delta_source",
    "noise_source",
    "target_epsilon",
    "batch_size",
    "n_examples",
    "poisson_sampling",
)
_CANARY_RESULT_KEYS = (
    "canary_id",
    "repetitions",
    "included",
    "insertions",
    "exposure",
    "method",
    "rank",
    "space_size",
    "secret_space",
    "extracted",
    "scope",
    "n_candidates",
)
_MEMORIZATION_KEYS = (
    "rate",
    "n_evaluated",
    "n_skipped_too_short",
    "by_duplication",
    "prefix_tokens",
    "suffix_tokens",
)
_EXTRACTION_KEYS = (
    "params",
    "n_generations",
    "n_mentions",
    "precision",
    "recall",
    "n_leaked",
    "per_kind",
    "by_duplicates",
)
_RANKING_KEYS = (
    "attack",
    "kind",
    "params",
    "n_records",
    "n_skipped",
    "accuracy",
    "chance",
    "true_in_candidates",
    "mean_candidates",
    "by_duplicates",
)
_UTILITY_KEYS = (
    "task",
    "mode",
    "eval_loss",
    "eval_perplexity",
    "eval_example_loss",
    "eval_accuracy",
    "eval_f1",
    "train_loss",
    "train_perplexity",
    "train_example_loss",
    "train_accuracy",
    "train_f1",
    "n_train",
    "n_eval",
    "steps",
    "seconds_per_step",
    "trainable_parameters",
    "total_parameters",
    "precision",
)
_HEADLINE_UTILITY = (("eval_perplexity", False), ("eval_accuracy", True), ("eval_loss", False))


@dataclass
class RunData:
    """What :func:`collect` read: the report mapping and the ROC curves for plotting.

    Attributes:
        report: the JSON-ready report (exactly what ``report.json`` holds).
        curves: ``{model: {attack: {"fpr": [...], "tpr": [...]}}}`` from each
            ``metrics.json`` (kept out of ``report.json`` to keep it small).
        run_dir: the run directory.
    """

    report: dict[str, Any]
    curves: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    run_dir: Path = Path(".")


class _Reader:
    """Reads files of one run directory and records the SHA-256 of each file read."""

    def __init__(self, root: Path):
        self.root = root
        self.hashes: dict[str, str] = {}

    def track(self, path: Path) -> Path:
        self.hashes[path.relative_to(self.root).as_posix()] = sha256_file(path)
        return path

    def json(self, *parts: str) -> Any | None:
        """The JSON at ``root/parts`` (``None`` when absent); malformed files raise InputError."""
        path = self.root.joinpath(*parts)
        if not path.is_file():
            return None
        data = read_json(path)
        if not isinstance(data, dict):
            raise InputError(path, "expected a JSON object")
        self.track(path)
        return data


def _pick(data: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data}


def _f(value: Any) -> float:
    return float(value) if value is not None else math.nan


# -- one section per file ---------------------------------------------------------------------


def _privacy(reader: _Reader, model: str, warnings: list[str]) -> dict[str, Any] | None:
    from dpaudit.trainers.privacy import read_privacy

    path = reader.root / model / "privacy.json"
    if not path.is_file():
        warnings.append(f"{model}: no privacy ledger ({model}/privacy.json)")
        return None
    try:
        ledger, payload = read_privacy(path)
    except InputError:
        raise
    except DpauditError as exc:
        raise InputError(path, str(exc)) from None
    reader.track(path)
    primary = str(payload.get("primary_accountant", "pld"))
    epsilons = {k: float(v) for k, v in sorted(ledger.epsilons.items())}
    out = _pick(payload, _PRIVACY_KEYS)
    out.update(
        dp=ledger.mechanism != "none",
        epsilon=float(payload.get("epsilon", epsilons.get(primary, math.inf))),
        epsilon_upper=epsilons,
        accountant_kind={k: accountant_kind(k) for k in epsilons},
        accountant_errors=dict(ledger.errors),
        primary_accountant=primary,
        unit=ledger.unit,
        adjacency=ledger.adjacency,
    )
    out.setdefault("epochs", None)
    if payload.get("complete") is False:
        warnings.append(
            f"{model}: training did not complete; ε is for the {ledger.steps} steps taken"
        )
    for name, message in sorted(ledger.errors.items()):
        warnings.append(f"{model}: accountant {name} failed: {message}")
    if ledger.mechanism == "claimed":
        warnings.append(
            f"{model}: ε = {out['epsilon']:g} at δ = {ledger.delta:g} is the publisher's claim; dpaudit did not "
            "train or account this model, only audits the claim"
        )
    elif out["dp"] and accountant_kind(primary) == "approximate":
        warnings.append(
            f"{model}: the claimed ε comes from {primary}, an approximate accountant, not a proven upper bound"
        )
    elif out["dp"] and accountant_kind(primary) == "unknown":
        warnings.append(
            f"{model}: the claimed ε comes from {primary!r}, an accountant dpaudit does not know"
        )
    return out


def _audit(
    bounds: Mapping[str, Any] | None,
    model: str,
    path: Path,
    privacy: Mapping | None,
    warnings: list[str],
) -> dict[str, Any] | None:
    from dpaudit.audit.lower_bound import EpsilonLowerBound

    entry = (bounds or {}).get("models", {}).get(model)
    if entry is None:
        warnings.append(f"{model}: no empirical audit (audit/bounds.json)")
        return None
    try:
        lower = EpsilonLowerBound.from_dict(entry["lower"])
        upper = {k: float(v) for k, v in sorted(entry["upper"].items())}
        out = {
            "epsilon_lower": {
                "value": lower.epsilon,
                "confidence": lower.confidence,
                "delta": lower.delta,
                "method": lower.method,
                "n_canaries": lower.n_canaries,
                "n_guesses": lower.n_guesses,
                "n_correct": lower.n_correct,
                "threshold_selection": lower.threshold_selection,
            },
            "epsilon_upper": upper,
            "primary_accountant": str(entry["primary_accountant"]),
            "verdict": str(entry["verdict"]),
            "per_accountant": {
                k: str(v) for k, v in sorted(entry.get("per_accountant", {}).items())
            },
            "tightness": {k: float(v) for k, v in sorted(entry.get("tightness", {}).items())},
        }
    except (KeyError, TypeError, ValueError, AttributeError, DpauditError) as exc:
        raise InputError(path, f"models.{model}: invalid audit entry: {exc}") from None
    out["claimed_epsilon"] = upper.get(out["primary_accountant"], math.inf)
    if privacy is not None and not math.isclose(lower.delta, float(privacy["delta"])):
        warnings.append(
            f"{model}: the audit tests δ = {lower.delta:g}, the ledger reports δ = {float(privacy['delta']):g}; "
            "audit ε upper bounds are recomputed at the audit's δ"
        )
    return out


def _tpr_at(roc: Mapping[str, Any], budget: float) -> float | None:
    fpr, tpr = roc.get("fpr"), roc.get("tpr")
    if fpr is None or tpr is None or len(fpr) == 0:
        return None
    ok = [t for f, t in zip(fpr, tpr, strict=True) if f <= budget]
    return float(max(ok)) if ok else 0.0


def _attacks(
    reader: _Reader, model: str
) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    from dpaudit.attacks.scores import METRICS_FILE, AttackMetrics

    root = reader.root / "attacks" / model
    attacks: dict[str, Any] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    if not root.is_dir():
        return attacks, curves
    for directory in sorted(p for p in root.iterdir() if (p / METRICS_FILE).is_file()):
        metrics = AttackMetrics.load(directory)
        reader.track(directory / METRICS_FILE)
        data = metrics.to_dict()
        roc = data.pop("roc", {})
        data.pop("seed", None)
        data["min_resolvable_fpr"] = 1.0 / metrics.n_nonmember if metrics.n_nonmember else math.nan
        low = next(
            (v for k, v in data["tpr_at_fpr"].items() if math.isclose(float(k), policy.LOW_FPR)),
            None,
        )
        data["tpr_at_low_fpr"] = (
            {"tpr": low["tpr"], "ci": low["ci"], "fpr": policy.LOW_FPR, "source": "stored"}
            if low is not None
            else {
                "tpr": _tpr_at(roc, policy.LOW_FPR),
                "ci": None,
                "fpr": policy.LOW_FPR,
                "source": "roc",
            }
        )
        attacks[directory.name] = data
        if roc:
            curves[directory.name] = {
                "fpr": list(roc.get("fpr", [])),
                "tpr": list(roc.get("tpr", [])),
            }
    return attacks, curves


def _canaries(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if data is None or not data.get("results"):
        return None
    results = [_pick(r, _CANARY_RESULT_KEYS) for r in data["results"]]
    results.sort(key=lambda r: str(r.get("canary_id")))
    for r in results:
        if "insertions" not in r:
            r["insertions"] = int(r.get("repetitions", 0)) if r.get("included") else 0
    inserted = [r for r in results if r["insertions"] > 0]
    sizes = {
        str(r.get("secret_space", "")): int(r["space_size"]) for r in results if r.get("space_size")
    }
    extracted = [r for r in inserted if r.get("extracted") is not None]
    return {
        "n_canaries": len(results),
        "n_inserted": len(inserted),
        "exposure_by_repetition": dict(data.get("exposure_by_repetition", {})),
        "max_exposure": max((_f(r.get("exposure")) for r in inserted), default=None),
        "max_exposure_not_inserted": max(
            (_f(r.get("exposure")) for r in results if r["insertions"] == 0), default=None
        ),
        "secret_spaces": {
            spec: {"size": n, "log2_size": math.log2(n)} for spec, n in sorted(sizes.items())
        },
        "max_possible_exposure": max((math.log2(n) for n in sizes.values()), default=None),
        "methods": dict(sorted(Counter(str(r.get("method")) for r in results).items())),
        "extraction": dict(data.get("extraction", {})),
        "extracted_greedy": {
            "extracted": sum(bool(r["extracted"]) for r in extracted),
            "n": len(extracted),
        },
        "results": results,
    }


def _memorization(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    out = _pick(data, _MEMORIZATION_KEYS)
    out["n_memorized"] = len(data.get("memorized_ids", []))
    return out


def _pii(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if data is None or not data:
        return None
    out: dict[str, Any] = {
        "extraction": None,
        "extraction_rate": None,
        "rankings": {},
        "by_kind": {},
    }
    by_kind: dict[str, dict[str, Any]] = {}
    extraction = data.get("extraction")
    if isinstance(extraction, Mapping):
        ex = _pick(extraction, _EXTRACTION_KEYS)
        ex["rate"] = ex.get("recall")
        out["extraction"], out["extraction_rate"] = ex, ex.get("recall")
        for kind, m in sorted(ex.get("per_kind", {}).items()):
            by_kind.setdefault(kind, {}).update(
                extraction_rate=m.get("recall"),
                extraction_precision=m.get("precision"),
                extracted=m.get("matched"),
                truth=m.get("truth"),
                detected=m.get("detected"),
            )
    for key, value in sorted(data.items()):
        if key == "extraction" or not isinstance(value, Mapping) or "accuracy" not in value:
            continue
        ranking = _pick(value, _RANKING_KEYS)
        out["rankings"][key] = ranking
        kind = str(ranking.get("kind", "?"))
        by_kind.setdefault(kind, {}).update(
            {f"{key}_accuracy": ranking.get("accuracy"), f"{key}_chance": ranking.get("chance")}
        )
    out["by_kind"] = dict(sorted(by_kind.items()))
    return out


def _utility(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    out = _pick(data, _UTILITY_KEYS)
    out["headline"] = next(
        (
            {"metric": key, "value": data[key], "higher_is_better": better}
            for key, better in _HEADLINE_UTILITY
            if data.get(key) is not None
        ),
        None,
    )
    return out


def _recovered(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Secrets and PII the attacks recovered, from ``recovered.json`` (reveal only)."""
    data = data or {}
    canaries = [
        {
            "canary_id": r.get("canary_id"),
            "secret": r.get("secret"),
            "insertions": r.get("insertions", 0),
            "exposure": r.get("exposure"),
            "extracted": r.get("extracted"),
        }
        for r in (data.get("canary") or {}).get("results", [])
    ]
    canaries.sort(
        key=lambda r: (
            -_f(r["exposure"]) if r["exposure"] is not None else 0.0,
            str(r["canary_id"]),
        )
    )
    pii = data.get("pii") or {}
    leaked = list((pii.get("extraction") or {}).get("leaked", []))
    inferred = []
    for key, value in sorted(pii.items()):
        if key == "extraction" or not isinstance(value, Mapping):
            continue
        for row in value.get("records", []):
            if float(row.get("credit", 0)) >= 1.0 and "truth" in row:
                inferred.append(
                    {
                        "attack": key,
                        "kind": value.get("kind"),
                        "record_id": row.get("record_id"),
                        "truth": row.get("truth"),
                        "guess": row.get("guess"),
                    }
                )
    return {"canaries": canaries, "pii_extracted": leaked, "pii_inferred": inferred}


def _summary(model: Mapping[str, Any]) -> dict[str, Any]:
    privacy, audit, attacks = model["privacy"], model["audit"], model["attacks"]
    epsilon = privacy["epsilon"] if privacy else (audit["claimed_epsilon"] if audit else None)
    primary = (
        privacy["primary_accountant"]
        if privacy
        else (audit["primary_accountant"] if audit else None)
    )
    best_auc = max(sorted(attacks.items()), key=lambda kv: _f(kv[1]["auc"]), default=None)
    with_low = [
        (k, v) for k, v in sorted(attacks.items()) if v["tpr_at_low_fpr"]["tpr"] is not None
    ]
    best_low = max(with_low, key=lambda kv: _f(kv[1]["tpr_at_low_fpr"]["tpr"]), default=None)
    utility = model["utility"]
    return {
        "epsilon": epsilon,
        "primary_accountant": primary,
        "delta": privacy["delta"] if privacy else None,
        "epsilon_lower": audit["epsilon_lower"]["value"] if audit else None,
        "epsilon_lower_confidence": audit["epsilon_lower"]["confidence"] if audit else None,
        "audit_verdict": audit["verdict"] if audit else None,
        "max_auc": {"value": best_auc[1]["auc"], "attack": best_auc[0]} if best_auc else None,
        "max_tpr_at_low_fpr": (
            {
                "value": best_low[1]["tpr_at_low_fpr"]["tpr"],
                "attack": best_low[0],
                "fpr": policy.LOW_FPR,
            }
            if best_low
            else None
        ),
        "max_exposure": model["canaries"]["max_exposure"] if model["canaries"] else None,
        "pii_extraction_rate": model["pii"]["extraction_rate"] if model["pii"] else None,
        "memorization_rate": model["memorization"]["rate"] if model["memorization"] else None,
        "utility": utility["headline"] if utility else None,
    }


def _model(
    reader: _Reader, name: str, bounds: Mapping | None, reveal: bool, warnings: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    privacy = _privacy(reader, name, warnings)
    audit = _audit(bounds, name, reader.root / "audit" / "bounds.json", privacy, warnings)
    attacks, curves = _attacks(reader, name)
    if not attacks:
        warnings.append(
            f"{name}: no membership-inference results (attacks/{name}/<attack>/metrics.json)"
        )
    canaries = _canaries(reader.json("attacks", name, "canary.json"))
    if canaries is None:
        warnings.append(f"{name}: no canary exposure results (attacks/{name}/canary.json)")
    elif canaries["methods"].get("extrapolated"):
        warnings.append(
            f"{name}: exposure of {canaries['methods']['extrapolated']} canaries is extrapolated "
            "(skew-normal fit), which can understate the highest exposures by several bits"
        )
    model: dict[str, Any] = {
        "privacy": privacy,
        "audit": audit,
        "attacks": attacks,
        "canaries": canaries,
        "memorization": _memorization(reader.json("attacks", name, "memorization.json")),
        "pii": _pii(reader.json("attacks", name, "pii.json")),
        "utility": _utility(reader.json(name, "metrics.json")),
    }
    model["summary"] = _summary(model)
    if reveal:
        recovered = reader.json("attacks", name, "recovered.json")
        if recovered is None:
            warnings.append(
                f"{name}: reveal requested but attacks/{name}/recovered.json is missing"
            )
        model["recovered"] = _recovered(recovered)
    return model, curves


def _run_section(run: RunDir, manifest: Mapping[str, Any]) -> dict[str, Any]:
    config = manifest.get("config") or {}
    stages = {
        name: _pick(record, ("status", "seconds", "finished", "error"))
        for name, record in sorted((manifest.get("stages") or {}).items())
        if not name.startswith("report")
    }
    return {
        "name": str(config.get("name") or run.path.name),
        "created": manifest.get("created"),
        "dpaudit_version": manifest.get("dpaudit_version"),
        "git_commit": manifest.get("git_commit"),
        "argv": list(manifest.get("argv") or []),
        "seeds": dict(manifest.get("seeds") or {}),
        "device": manifest.get("device"),
        "platform": manifest.get("platform"),
        "stages": stages,
        "config_changed_on_resume": bool(manifest.get("config_changed_on_resume", False)),
    }


def _fingerprints(manifest: Mapping[str, Any], sources: Mapping[str, str]) -> dict[str, Any]:
    stages = manifest.get("stages") or {}
    return {
        "inputs": dict(manifest.get("inputs") or {}),
        "outputs": {
            name: dict(sorted(record.get("outputs", {}).items()))
            for name, record in sorted(stages.items())
            if record.get("outputs") and not name.startswith("report")
        },
        "sources": dict(sorted(sources.items())),
    }


def _thresholds(
    config: Mapping[str, Any], override: Mapping[str, Any] | None
) -> dict[str, float | None]:
    report_cfg = config.get("report") or {}
    out = {k: report_cfg.get(k) for k in policy.CONFIG_THRESHOLDS}
    for key, value in (override or {}).items():
        if key not in policy.CONFIG_THRESHOLDS:
            from dpaudit.errors import unknown_name

            raise unknown_name("policy threshold", key, policy.CONFIG_THRESHOLDS)
        out[key] = value
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def collect(
    run_dir: str | Path,
    *,
    reveal: bool | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
) -> RunData:
    """Read a run directory into the report mapping and the ROC curves.

    Args:
        run_dir: the run directory (with ``manifest.json``).
        reveal: list recovered secrets and PII (from ``recovered.json``);
            ``None`` follows the run's ``report.reveal`` setting.
        policy_overrides: thresholds replacing the run's ``[report]`` ones
            (names from :data:`dpaudit.reports.policy.CONFIG_THRESHOLDS`).

    Raises:
        DpauditError: not a run directory, no target model, or a malformed
            file (named in the message).
    """
    run = RunDir(run_dir)
    manifest = run.manifest()
    config = manifest.get("config") or {}
    if reveal is None:
        reveal = bool((config.get("report") or {}).get("reveal", False))
    reader = _Reader(run.path)
    warnings: list[str] = []
    bounds = reader.json("audit", "bounds.json")
    present = [
        m for m in MODEL_NAMES if (run.path / m).is_dir() or (run.path / "attacks" / m).is_dir()
    ]
    if "target" not in present:
        raise DpauditError(
            f"{run.path}: no target model (no target/ or attacks/target/); run `dpaudit train` first"
        )
    models: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name in present:
        models[name], curves[name] = _model(reader, name, bounds, reveal, warnings)
    blind = reader.json("attacks", "blind.json")
    blind_section = (
        _pick(
            blind,
            (
                "auc",
                "auc_ci",
                "n_member",
                "n_nonmember",
                "folds",
                "confidence",
                "warning",
                "method",
            ),
        )
        if blind is not None
        else None
    )
    if blind_section is not None:
        blind_section.setdefault("warning", None)
    thresholds = _thresholds(config, policy_overrides)
    checks = policy.evaluate(models["target"]["summary"], thresholds, model="target")
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "revealed": bool(reveal),
        "run": _run_section(run, manifest),
        "generator": {"dpaudit_version": __version__},
        "policy": {
            "thresholds": thresholds,
            "configured": any(v is not None for v in thresholds.values()),
            "items": {c.name: c.to_dict() for c in checks},
            "failed": [c.name for c in checks if c.verdict == policy.FAIL],
            "verdict": policy.overall(checks),
            "model": "target",
        },
        "models": models,
        "blind_baseline": blind_section,
        "fingerprints": _fingerprints(manifest, reader.hashes),
        "versions": dict(manifest.get("versions") or {}),
        "config": dict(config),
        "warnings": warnings,
    }
    report = to_jsonable(report)
    validate_report(report)
    return RunData(report=report, curves=curves, run_dir=run.path)


def collect_report(
    run_dir: str | Path,
    *,
    reveal: bool | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report mapping of a run (what ``report.json`` holds); see :func:`collect`."""
    return collect(run_dir, reveal=reveal, policy_overrides=policy_overrides).report
