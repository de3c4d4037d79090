"""Audit power: ceiling and control make a no-violation audit inconclusive; unresolvable TPRs are unknown."""

from __future__ import annotations

import json
import shutil

import pytest
from _run_fixture import write_run

from dpaudit.audit.lower_bound import EpsilonLowerBound
from dpaudit.audit.verdict import assess_power, judge
from dpaudit.reports import build_report
from dpaudit.reports.gate import format_reason, gate, gate_exit_code


def _lower(epsilon: float, ceiling: float | None) -> EpsilonLowerBound:
    kwargs = {} if ceiling is None else {"ceiling": ceiling}
    return EpsilonLowerBound(
        method="one-run",
        epsilon=epsilon,
        delta=1e-6,
        confidence=0.95,
        n_canaries=1000,
        n_guesses=200,
        n_correct=150,
        threshold_selection="fixed",
        **kwargs,
    )


def _verdicts(target_lb: float, ceiling: float, control_lb: float | None, claim: float = 4.0):
    target = judge(_lower(target_lb, ceiling), {"pld": claim, "gdp": claim * 0.9}, "pld")
    control = (
        None
        if control_lb is None
        else judge(_lower(control_lb, ceiling), {"pld": float("inf")}, "pld")
    )
    return target, control


def test_powerful_audit_stays_consistent():
    target, control = _verdicts(1.2, ceiling=5.5, control_lb=3.0)
    out = assess_power(target, control=control, min_control_epsilon=1.0)
    assert out.verdict == "consistent" and out.reasons == ()
    assert out.control == {
        "model": "baseline",
        "epsilon_lower": 3.0,
        "threshold": 1.0,
        "detected": True,
    }


@pytest.mark.parametrize(
    "ceiling,control_lb,require,word",
    [
        (3.0, 3.0, True, "ceiling ε = 3.00"),  # could never reach the claim of 4
        (5.5, 0.4, True, "control (baseline) reached only ε_lb = 0.40"),
        (5.5, None, True, "no non-private control"),
    ],
)
def test_powerless_audit_is_inconclusive(ceiling, control_lb, require, word):
    target, control = _verdicts(0.0, ceiling=ceiling, control_lb=control_lb)
    out = assess_power(target, control=control, require_control=require)
    assert out.verdict == "inconclusive"
    assert any(word in r for r in out.reasons), out.reasons
    again = assess_power(out, control=control, require_control=require)  # idempotent
    assert again.verdict == "inconclusive" and again.reasons == out.reasons


def test_no_control_allowed_when_not_required():
    target, _ = _verdicts(0.5, ceiling=5.5, control_lb=None)
    assert assess_power(target, control=None, require_control=False).verdict == "consistent"


def test_violation_needs_no_power_argument():
    target, control = _verdicts(6.0, ceiling=5.5, control_lb=0.0, claim=2.0)
    assert assess_power(target, control=control).verdict == "violation"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("power"), "p", report={"max_auc": 0.9})


def _copy(run, tmp_path):
    dest = tmp_path / run.name
    shutil.copytree(run, dest)
    shutil.rmtree(dest / "report", ignore_errors=True)
    return dest


def test_inconclusive_audit_in_report_and_gate(base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    path = run / "audit" / "bounds.json"
    bounds = json.loads(path.read_text())
    entry = bounds["models"]["target"]
    entry.update(
        verdict="inconclusive",
        ceiling=2.5,
        reasons=["the audit's ceiling ε = 2.50 (every guess right) is below the claimed ε = 3.00"],
    )
    path.write_text(json.dumps(bounds))
    report = build_report(run, formats=["json", "md", "html"])
    assert report["policy"]["verdict"] == "inconclusive"
    item = report["policy"]["items"]["audit_consistent"]
    assert item["verdict"] == "inconclusive" and "ceiling" in item["detail"]
    assert report["models"]["target"]["summary"]["audit_ceiling"] == 2.5
    md = (run / "report" / "report.md").read_text()
    assert "## Verdict: **INCONCLUSIVE**" in md and "PASS**" not in md
    # the per-accountant comparison does not say CONSISTENT beside an inconclusive audit
    assert "NO VIOLATION (audit inconclusive)" in md and "| CONSISTENT |" not in md
    assert 'class="verdict inconclusive"' in (run / "report" / "report.html").read_text()
    result = gate(run)
    assert gate_exit_code(result) == 1 and "inconclusive" in format_reason(result)
    allowed = gate(run, allow_inconclusive=True)
    assert gate_exit_code(allowed) == 0 and allowed.inconclusive


def test_tpr_at_low_fpr_not_resolvable_is_unknown(base_run, tmp_path):
    """400 non-members cannot resolve 0.1% FPR: no interval, and the policy says unknown, not pass."""
    run = _copy(base_run, tmp_path)
    for metrics in (run / "attacks" / "target").glob("*/metrics.json"):
        data = json.loads(metrics.read_text())
        data["n_nonmember"] = 400
        metrics.write_text(json.dumps(data))
    report = build_report(run, formats=["json"])
    low = report["models"]["target"]["attacks"]["loss"]["tpr_at_low_fpr"]
    assert low["resolvable"] is False and low["ci"] is None
    assert report["models"]["target"]["summary"]["max_tpr_at_low_fpr"]["resolvable"] is False
    # the tables say so too: no value and no interval at 0.1% FPR, the note explains
    build_report(run, formats=["md"])
    md = (run / "report" / "report.md").read_text()
    loss_row = next(x for x in md.splitlines() if x.startswith("| loss | target |"))
    assert loss_row.split("|")[4].strip() == "n/r" and "n/r: not resolvable" in md
    assert loss_row.split("|")[5].strip() != "n/r"  # 1% FPR is resolved by 400 non-members
    result = gate(run, max_tpr_at_low_fpr=0.5)
    assert gate_exit_code(result) == 1 and "not resolvable" in result.reasons[0]
    fine = _copy(base_run, tmp_path / "fine")
    build_report(fine, formats=["json"])
    assert gate_exit_code(gate(fine, max_tpr_at_low_fpr=0.5)) == 0  # 1,000 non-members resolve it


def test_black_box_audit_reports_every_estimator_side_by_side():
    """bounds.json `estimates`: each estimator on the same guesses and grid as the primary."""
    import numpy as np

    from dpaudit.audit.lower_bound import audit_one_run
    from dpaudit.audit.stage import side_by_side
    from dpaudit.config import RunConfig

    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    scores = rng.normal(size=1000) + 2.0 * included
    config = RunConfig()
    out = side_by_side(scores, included, config, delta=1e-5)
    assert set(out) == {"steinke", "fdp-epsdelta", "fdp-gdp"}
    primary = audit_one_run(scores, included, delta=1e-5, confidence=0.95)
    assert out["steinke"]["epsilon"] == primary.epsilon > 1.0
    assert out["steinke"]["ceiling"] == primary.ceiling
    assert out["fdp-epsdelta"]["guarantee"] == "lower-bound"
    assert out["fdp-gdp"]["guarantee"] == "gdp-lower-bound"
    assert out["fdp-gdp"]["epsilon"] >= out["steinke"]["epsilon"]
    at_zero = side_by_side(scores, included, config, delta=0.0)
    assert at_zero["fdp-gdp"]["epsilon"] is None and "error" in at_zero["fdp-gdp"]
