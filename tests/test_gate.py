"""Release gate: exit codes and reasons per threshold, fail-closed on missing values, bad files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from _run_fixture import write_run

from dpaudit.errors import DpauditError, InputError
from dpaudit.reports import build_report
from dpaudit.reports.gate import GateResult, format_reason, gate, gate_exit_code


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate-runs")


@pytest.fixture(scope="module")
def report_path(runs) -> Path:
    run = write_run(runs, "demo")
    build_report(run, formats=("json",))
    return run / "report" / "report.json"


@pytest.fixture(scope="module")
def summary(report_path) -> dict:
    return json.loads(report_path.read_text())["models"]["target"]["summary"]


# (threshold, a passing limit, a failing limit, text of the failure reason)
CASES = [
    ("max_epsilon", 5.0, 2.0, r"target claimed ε 3\.00 \(pld\) > 2"),
    ("max_epsilon_lower", 1.0, 0.1, r"target empirical ε lower bound 0\.31 > 0\.1"),
    ("max_auc", 0.6, 0.5, r"target MIA AUC 0\.5\d\d \((loss|zlib|mink)\) > 0\.5"),
    (
        "max_tpr_at_low_fpr",
        0.05,
        0.001,
        r"target MIA TPR at 0\.1% FPR [\d.]+ \((loss|zlib|mink)\) > 0\.001",
    ),
    ("max_exposure", 10.0, 3.0, r"target canary exposure \(bits\) [\d.]+ > 3"),
    ("max_pii_extraction_rate", 0.1, 0.001, r"target PII extraction rate 0\.010 > 0\.001"),
]


@pytest.mark.parametrize(("name", "ok", "bad", "reason"), CASES, ids=[c[0] for c in CASES])
def test_each_threshold_passes_and_fails(report_path, name, ok, bad, reason):
    passed = gate(report_path, **{name: ok})
    assert passed.passed and passed.reasons == [] and gate_exit_code(passed) == 0
    assert format_reason(passed).startswith("gate passed: ")
    failed = gate(report_path, **{name: bad})
    assert not failed.passed and gate_exit_code(failed) == 1
    assert len(failed.reasons) == 1
    line = format_reason(failed)
    assert line.startswith("gate failed: target ")
    assert "\n" not in line
    assert re.fullmatch(reason, failed.reasons[0]), failed.reasons[0]


def test_boundary_value_passes(report_path, summary):
    exact = float(summary["max_auc"]["value"])
    assert gate(report_path, max_auc=exact).passed


def test_several_failures_are_all_reported(report_path):
    result = gate(report_path, max_auc=0.5, max_exposure=1.0, max_epsilon=100.0)
    assert isinstance(result, GateResult) and not result.passed
    assert len(result.reasons) == 2
    assert format_reason(result).count(";") == 1
    assert {c.name for c in result.checks} == {
        "max_auc",
        "max_exposure",
        "max_epsilon",
        "audit_consistent",
    }


def test_baseline_fails_epsilon_as_not_private(report_path):
    result = gate(report_path, max_epsilon=8.0, model="baseline")
    assert not result.passed
    assert result.reasons == ["baseline claimed ε ∞ (not private) > 8"]
    assert "baseline MIA AUC 0.9" in format_reason(gate(report_path, max_auc=0.6, model="baseline"))


def test_directory_paths_are_accepted(report_path):
    run_dir = report_path.parent.parent
    assert gate(run_dir, max_auc=0.6).source == str(report_path)
    assert gate(report_path.parent, max_auc=0.6).passed


def test_policy_from_report_when_no_threshold_given(runs):
    run = write_run(runs, "strict", seed=1, report={"max_auc": 0.5})
    build_report(run, formats=("json",))
    result = gate(run)
    assert not result.passed and "MIA AUC" in result.reasons[0]
    assert gate(run, max_auc=0.6).passed  # explicit thresholds replace the policy


def test_no_threshold_anywhere_is_an_error(report_path):
    with pytest.raises(DpauditError, match="no gate thresholds"):
        gate(report_path)


def test_audit_violation_always_fails(runs):
    run = write_run(runs, "violation", seed=2, violation=True)
    build_report(run, formats=("json",))
    result = gate(run, max_auc=0.99)
    assert not result.passed and gate_exit_code(result) == 1
    assert "the DP claim is refuted" in result.reasons[0]


def test_unmeasured_value_fails_closed(report_path, runs):
    run = runs / "nocanary"
    shutil.copytree(report_path.parent.parent, run)
    (run / "attacks" / "target" / "canary.json").unlink()
    build_report(run, formats=("json",))
    result = gate(run, max_exposure=100.0)
    assert not result.passed
    assert result.reasons == [
        "target canary exposure (bits) not measured in this run (policy requires ≤ 100)"
    ]


def test_bad_report_files_name_the_file(report_path, tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(DpauditError, match=f"{missing}: file not found"):
        gate(missing, max_auc=0.5)
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"schema_version": "1.0",\n')
    with pytest.raises(InputError, match=f"{malformed}:\\d+: malformed JSON"):
        gate(malformed, max_auc=0.5)
    not_report = tmp_path / "other.json"
    not_report.write_text(json.dumps({"schema_version": "1.0", "auc": 0.5}))
    with pytest.raises(InputError, match=f"{not_report}: not a valid dpaudit report"):
        gate(not_report, max_auc=0.5)
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        gate(a_list, max_auc=0.5)
    newer = tmp_path / "newer.json"
    data = json.loads(report_path.read_text())
    newer.write_text(json.dumps({**data, "schema_version": "2.0"}))
    with pytest.raises(InputError, match="schema_version '2.0' of report.json is not supported"):
        gate(newer, max_auc=0.5)
    with pytest.raises(InputError, match="no report.json"):
        gate(tmp_path, max_auc=0.5)


def test_bad_arguments(report_path):
    with pytest.raises(DpauditError, match="no model 'shadow'"):
        gate(report_path, max_auc=0.5, model="shadow")
    with pytest.raises(DpauditError, match="must be a number"):
        gate(report_path, max_auc="0.5")  # type: ignore[arg-type]
