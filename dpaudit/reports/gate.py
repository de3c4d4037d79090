"""Release gate: pass or fail a ``report.json`` against thresholds, for CI pipelines.

:func:`gate` reads a report (never a live model), judges one model's headline
numbers with the same rules as the report's policy section
(:mod:`dpaudit.reports.policy`: ``value <= threshold`` passes, a threshold
whose value was not measured fails, an audit ``violation`` always fails, and
an ``inconclusive`` check — an audit without power, a TPR the sample cannot
resolve — fails unless ``allow_inconclusive``), and returns a :class:`GateResult`. :func:`gate_exit_code` maps it to a process exit
code (0 pass, 1 fail); a bad report file raises
:class:`~dpaudit.errors.DpauditError` naming the file (exit code 2 in the CLI).

An incomplete run always fails, with exit code 1 like any failed check
(:func:`incomplete_run`: a stage started and never finished, or failed; a
ledger covering part of the planned steps): the report is well formed, but
its numbers may describe a partial model, so it cannot pass a release.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpaudit.atomic import read_json
from dpaudit.errors import DpauditError, InputError
from dpaudit.reports import policy
from dpaudit.reports.schema import validate_report

__all__ = [
    "GateResult",
    "format_reason",
    "gate",
    "gate_exit_code",
    "incomplete_run",
    "load_report",
    "resolve_report_path",
]

EXIT_PASS = 0
EXIT_FAIL = 1


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`gate`.

    Attributes:
        passed: no check failed (nor was inconclusive, unless allowed).
        reasons: one line per failed (or inconclusive) check, e.g.
            ``"target MIA AUC 0.91 (loss) > 0.6"``.
        inconclusive: the checks that were inconclusive (allowed or not).
        checks: every check made (passed, failed and not-applicable).
        model: the model judged.
        source: the report file read.
    """

    passed: bool
    reasons: list[str]
    checks: tuple[policy.PolicyCheck, ...] = field(default=())
    model: str = "target"
    source: str = ""
    inconclusive: tuple[str, ...] = ()


def resolve_report_path(path: str | Path) -> Path:
    """``path`` itself, or for a directory its ``report.json`` or ``report/report.json``."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "report.json", path / "report" / "report.json"):
            if candidate.is_file():
                return candidate
        raise InputError(path, "no report.json here or in report/; run `dpaudit report` first")
    return path


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``report.json``.

    Raises:
        InputError: missing, malformed or not a valid report (the message names the file).
    """
    path = resolve_report_path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "not a dpaudit report (expected a JSON object)")
    validate_report(data, source=path)
    return data


def gate(
    report_json_path: str | Path,
    *,
    model: str = "target",
    allow_inconclusive: bool = False,
    **thresholds: float | None,
) -> GateResult:
    """Judge ``model`` in a report against thresholds.

    Thresholds given here are checked; when none is given, the report's own
    policy thresholds (the run's ``[report]`` section) are used. The audit
    consistency check (``ε_lb <= claimed ε``) is always made, and so is the
    completeness check (:func:`incomplete_run`): a run with a stage that never
    finished fails, whatever ``allow_inconclusive``.

    Args:
        report_json_path: a ``report.json``, or a run or report directory holding one.
        model: ``target`` (default) or ``baseline``.
        allow_inconclusive: pass despite inconclusive checks (they are still
            listed in ``GateResult.inconclusive``).
        **thresholds: limits by name in
            :data:`~dpaudit.reports.policy.POLICY_THRESHOLDS` (``None``: not
            given). Built in: ``max_epsilon`` (claimed ε, primary accountant;
            a non-private model fails), ``max_epsilon_lower`` (empirical ε
            lower bound), ``max_auc`` and ``max_tpr_at_low_fpr`` (best over
            all attacks; TPR at 0.1% FPR), ``max_exposure`` (bits, of an
            inserted canary), ``max_pii_extraction_rate`` (share of training
            PII values extracted).

    Raises:
        DpauditError: an unknown threshold (did-you-mean), a bad report file
            (named), an unknown model, or no threshold at all (neither given
            nor in the report's policy).
    """
    for name in thresholds:
        policy.POLICY_THRESHOLDS.get(name)
    path = resolve_report_path(report_json_path)
    report = load_report(path)
    if model not in report["models"]:
        raise InputError(
            path, f"no model {model!r} in this report (has: {', '.join(sorted(report['models']))})"
        )
    given = {name: thresholds.get(name) for name in policy.POLICY_THRESHOLDS.names()}
    for name, value in given.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise DpauditError(f"gate threshold {name} must be a number, got {value!r}")
    thresholds = {k: v for k, v in given.items() if v is not None}
    if not thresholds:
        thresholds = {k: v for k, v in report["policy"]["thresholds"].items() if v is not None}
        if not thresholds:
            raise DpauditError(
                f"{path}: no gate thresholds given and the run's [report] policy sets none; "
                "pass at least one (e.g. max_auc=0.6)"
            )
    checks = policy.evaluate(report["models"][model]["summary"], thresholds, model=model)
    reasons = incomplete_run(report, path, model)
    reasons += [c.detail for c in checks if c.verdict == policy.FAIL]
    unsure = tuple(c.detail for c in checks if c.verdict == policy.INCONCLUSIVE)
    if not allow_inconclusive:
        reasons += list(unsure)
    return GateResult(
        passed=not reasons,
        reasons=reasons,
        checks=tuple(checks),
        model=model,
        source=str(path),
        inconclusive=unsure,
    )


def _run_manifest(report_path: Path) -> dict[str, Any] | None:
    """The live manifest of the run a report sits in (``<run>/report/report.json``), or
    ``None`` for a report kept elsewhere or a manifest that cannot be read (the report's
    own copy of the stages is judged then)."""
    from dpaudit.rundir import MANIFEST, RunDir

    run_dir = report_path.parent.parent
    if report_path.parent.name != "report" or not (run_dir / MANIFEST).is_file():
        return None
    try:
        return RunDir(run_dir).manifest()
    except DpauditError:
        return None


def incomplete_run(report: Mapping[str, Any], path: Path, model: str) -> list[str]:
    """One reason when the run behind ``report`` did not finish, else nothing.

    A stage recorded as ``running`` (started, never finished: the process was
    killed), ``failed`` or ``pending``, in the report or in the manifest of the
    run the report sits in (its current state wins), or a ledger of ``model``
    that covers only part of its planned steps: the numbers judged may come from
    a partial model. ``report*`` stages are not judged.
    """
    stages = {
        name: dict(record)
        for name, record in ((report.get("run") or {}).get("stages") or {}).items()
    }
    live = _run_manifest(Path(path))
    if live is not None:
        stages.update(live.get("stages") or {})
    problems = []
    for name, record in sorted(stages.items()):
        status = record.get("status")
        if name.startswith("report") or status == "done":
            continue
        if status == "running":
            problems.append(f"stage {name} started and never finished (interrupted?)")
        else:
            problems.append(f"stage {name} {status}")
    privacy = (report["models"][model].get("privacy") or {}) if model in report["models"] else {}
    if privacy.get("complete") is False:
        planned = privacy.get("planned_steps")
        problems.append(
            f"{model} training incomplete ({privacy.get('steps')}"
            + (f" of {planned}" if planned else "")
            + " steps)"
        )
    if not problems:
        return []
    return [
        "run incomplete: "
        + "; ".join(problems)
        + " (finish it with --resume, or start it over with --force)"
    ]


def gate_exit_code(result: GateResult) -> int:
    """0 when the gate passed, 1 when it failed."""
    return EXIT_PASS if result.passed else EXIT_FAIL


def format_reason(result: GateResult) -> str:
    """One line for the terminal or a CI log.

    ``gate failed: target MIA AUC 0.91 (loss) > 0.6; ...`` or
    ``gate passed: target MIA AUC 0.52 (loss) ≤ 0.6; ...``.
    """
    if not result.passed:
        word = (
            "failed"
            if any(r not in result.inconclusive for r in result.reasons)
            else "inconclusive"
        )
        hint = " (--allow-inconclusive to pass anyway)" if word == "inconclusive" else ""
        return f"gate {word}: " + "; ".join(result.reasons) + hint
    made = [c.detail for c in result.checks if c.verdict == policy.PASS]
    allowed = [f"{d} (allowed)" for d in result.inconclusive]
    return "gate passed: " + ("; ".join(made + allowed) if made or allowed else "no check applied")
