"""Friction a new user hit (issue 12, cases 11, 13, 15): each turned into a check."""

from __future__ import annotations

import logging
import math

import pandas as pd
from click.testing import CliRunner

from dpaudit.cli import cli


def test_verbose_controls_the_log_level():
    runner = CliRunner()
    assert runner.invoke(cli, ["config", "fields"]).exit_code == 0
    assert logging.getLogger("dpaudit").getEffectiveLevel() == logging.WARNING
    assert runner.invoke(cli, ["-v", "config", "fields"]).exit_code == 0
    assert logging.getLogger("dpaudit").getEffectiveLevel() == logging.INFO
    assert runner.invoke(cli, ["-vv", "config", "fields"]).exit_code == 0
    assert logging.getLogger("dpaudit").getEffectiveLevel() == logging.DEBUG
    runner.invoke(cli, ["config", "fields"])


def test_config_fields_lists_allowed_values_and_ranges():
    out = CliRunner().invoke(cli, ["config", "fields"]).output
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "one of: auto, jsonl, csv, tsv, parquet, text, hf" in lines["data.format"]
    assert "range: > 0, < 1" in lines["data.member_fraction"]
    assert "inf allowed" in lines["train.target_epsilon"]


def test_bound_help_names_both_calculators_in_full():
    out = CliRunner().invoke(cli, ["bound", "--help"]).output
    assert "Clopper-Pearson audit from TP/FP/TN/FN counts" in " ".join(out.split())
    assert "et al...." not in out


def test_compare_console_table_is_narrow_and_rounded():
    from dpaudit.reports.compare import console_table

    frame = pd.DataFrame(
        [
            {
                "run": "eps-inf",
                "epsilon": math.inf,
                "privacy_unit": "example",
                "epsilon_lower": 4.60123456,
                "audit_verdict": "not-private",
                "best_auc": 0.7123456,
                "tpr_at_0.1%_fpr": math.nan,
                "max_exposure": 10.234,
                "pii_extraction_rate": 0.0,
                "utility": 0.31234,
                "policy_verdict": "fail",
                "run_dir": "/a/very/long/path/that/should/not/be/printed/on/the/console",
            }
        ]
    )
    text = console_table(frame)
    assert max(len(line) for line in text.splitlines()) < 100
    row = text.splitlines()[1].split()
    assert row[:7] == ["eps-inf", "∞", "example", "4.60", "not-private", "0.712", "—"]
    assert "/a/very/long" not in text


def test_run_result_headline_states_the_verdict_and_numbers(tmp_path):
    """`dpaudit run`/`demo` end with the verdict and the headline numbers (issue 12, case 9)."""
    from _run_fixture import write_run

    from dpaudit.reports import build_report
    from dpaudit.workflows.result import RunResult

    run = write_run(tmp_path / "runs", "demo")
    build_report(run, formats=("json",))
    result = RunResult.from_run_dir(run)
    lines = result.headline()
    assert lines[0].startswith(f"verdict: {result.policy_verdict.upper()}")
    target = next(line for line in lines if line.startswith("target: "))
    summary = result.model_summary("target")
    assert f"ε = {summary['epsilon']:.2f}" in target
    assert f"best AUC {summary['max_auc']['value']:.3f}" in target
    baseline = next(line for line in lines if line.startswith("baseline: "))
    assert "ε = ∞" in baseline or "ε_lb" in baseline
    if result.policy_verdict != "pass":
        assert any(
            line.startswith("  fail:") or line.startswith("  inconclusive:") for line in lines
        )
