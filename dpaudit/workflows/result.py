"""What a workflow returns: :class:`RunResult`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpaudit.runfiles.audit import BoundsFile
from dpaudit.runfiles.io import read_run_file
from dpaudit.runfiles.report import Report

REPORT_JSON = Path("report") / "report.json"
BOUNDS_JSON = Path("audit") / "bounds.json"


@dataclass(frozen=True)
class RunResult:
    """The outcome of :func:`dpaudit.run` or :func:`dpaudit.audit_checkpoint`.

    Attributes:
        run_dir: the run directory (everything is recorded there).
        report: the content of ``report/report.json`` (see docs/report-schema.md),
            or ``None`` when no JSON report was written.
        audit_verdicts: ``{model: verdict}`` of the ε audit per audited model
            (``consistent``, ``violation``, ``not-private``, ...), from the report
            or ``audit/bounds.json``; empty when no audit ran.
        policy_verdict: ``pass`` / ``fail`` / ``inconclusive`` of the release policy, or ``None``
            without a report.
        lines: the summary lines the CLI prints.
    """

    run_dir: Path
    report: Mapping[str, Any] | None = None
    audit_verdicts: Mapping[str, str | None] = field(default_factory=dict)
    policy_verdict: str | None = None
    lines: tuple[str, ...] = ()

    @property
    def passed(self) -> bool | None:
        """Whether the release policy passed (``None`` without a report)."""
        return None if self.policy_verdict is None else self.policy_verdict == "pass"

    def model_summary(self, model: str = "target") -> Mapping[str, Any] | None:
        """The report's headline numbers of one model (``report["models"][model]["summary"]``)."""
        if self.report is None:
            return None
        entry = self.report.get("models", {}).get(model)
        return None if entry is None else entry.get("summary")

    def headline(self) -> list[str]:
        """The verdict and the headline numbers, one line each (what ``dpaudit run`` ends with).

        ``verdict: PASS|FAIL|INCONCLUSIVE`` with the failed or inconclusive
        policy items, then per model: claimed ε (accountant, δ), ε_lb with the
        audit verdict and ceiling, the best attack AUC and TPR at 0.1 % FPR,
        exposure and utility. Empty without a report.
        """
        if self.report is None:
            return []
        policy = self.report.get("policy") or {}
        verdict = str(policy.get("verdict") or "?").upper()
        lines = [f"verdict: {verdict} (release policy on the target; `dpaudit gate` for CI)"]
        for name, item in (policy.get("items") or {}).items():
            if item.get("verdict") in ("fail", "inconclusive"):
                lines.append(f"  {item['verdict']}: {item.get('detail') or name}")
        for model in self.report.get("models", {}):
            s = self.model_summary(model) or {}
            parts = []
            if s.get("epsilon") is not None:
                parts.append(
                    f"ε = {_num(s['epsilon'])} ({s.get('primary_accountant')}, δ = "
                    f"{_num(s.get('delta'), '.0e')})"
                )
            if s.get("epsilon_lower") is not None:
                audit = f"ε_lb = {_num(s['epsilon_lower'])} [{s.get('audit_verdict')}"
                if s.get("audit_ceiling") is not None:
                    audit += f", ceiling {_num(s['audit_ceiling'])}"
                parts.append(audit + "]")
            auc = s.get("max_auc") or {}
            if auc.get("value") is not None:
                parts.append(f"best AUC {_num(auc['value'], '.3f')} ({auc.get('attack')})")
            tpr = s.get("max_tpr_at_low_fpr") or {}
            if tpr.get("resolvable") is False:
                parts.append("TPR@0.1%FPR n/r (too few non-members)")
            elif tpr.get("value") is not None:
                parts.append(f"TPR@0.1%FPR {_num(tpr['value'], '.3f')}")
            if s.get("max_exposure") is not None:
                parts.append(f"exposure {_num(s['max_exposure'], '.1f')} bits")
            utility = s.get("utility") or {}
            if utility.get("value") is not None:
                parts.append(f"{utility.get('metric')} {_num(utility['value'], '.3f')}")
            lines.append(f"{model}: " + "; ".join(parts))
        return lines

    @classmethod
    def from_run_dir(
        cls, run_dir: str | Path, lines: list[str] | tuple[str, ...] = ()
    ) -> RunResult:
        """Read the result of a finished run from its directory."""
        path = Path(run_dir)
        report = (
            read_run_file(path / REPORT_JSON, Report).to_dict()
            if (path / REPORT_JSON).is_file()
            else None
        )
        verdicts: dict[str, str | None] = {}
        policy = None
        if report is not None:
            for name, model in report.get("models", {}).items():
                verdict = (model.get("summary") or {}).get("audit_verdict")
                if verdict is not None:
                    verdicts[name] = verdict
            policy = (report.get("policy") or {}).get("verdict")
        elif (path / BOUNDS_JSON).is_file():
            for name, bound in read_run_file(path / BOUNDS_JSON, BoundsFile).models.items():
                verdicts[name] = bound.verdict
        return cls(
            run_dir=path,
            report=report,
            audit_verdicts=verdicts,
            policy_verdict=policy,
            lines=tuple(lines),
        )


def _num(value: Any, spec: str = ".2f") -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if x == float("inf"):
        return "∞"
    return format(x, spec)
