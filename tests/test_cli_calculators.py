"""The calculator commands: `dpaudit accountant` and `dpaudit bound`."""

from __future__ import annotations

import json
import math

from scipy import stats

from dpaudit.accounting import compute_epsilons


def test_accountant_json_matches_library(invoke):
    result = invoke(
        "accountant",
        "-q",
        "0.01",
        "-s",
        "1.0",
        "-t",
        "500",
        "-d",
        "1e-5",
        "--json",
        "--accountant",
        "pld",
        "--accountant",
        "rdp",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert set(payload) == {
        "delta",
        "sampling_rate",
        "steps",
        "adjacency",
        "unit",
        "accountants",
        "noise_multiplier",
        "epsilon",
        "tightest_rigorous",
        "errors",
    }
    assert payload["accountants"]["pld"]["kind"] == "rigorous"
    assert payload["tightest_rigorous"]["accountant"] == "pld"
    expected, _ = compute_epsilons(
        sampling_rate=0.01, noise_multiplier=1.0, steps=500, delta=1e-5, accountants=("pld", "rdp")
    )
    assert payload["epsilon"] == expected and payload["errors"] == {}
    assert payload["epsilon"]["rdp"] >= payload["epsilon"]["pld"]


def test_accountant_inverse_mode(invoke):
    result = invoke(
        "accountant",
        "-q",
        "0.01",
        "-e",
        "2",
        "-t",
        "500",
        "-d",
        "1e-5",
        "--json",
        "--accountant",
        "pld",
    )
    payload = json.loads(result.output)
    assert payload["epsilon"] == 2.0 and 0 < payload["noise_multiplier"]["pld"] < 5
    check, _ = compute_epsilons(
        sampling_rate=0.01,
        noise_multiplier=payload["noise_multiplier"]["pld"],
        steps=500,
        delta=1e-5,
        accountants=("pld",),
    )
    assert check["pld"] <= 2.0 + 1e-9


def test_accountant_reports_a_failing_accountant_and_continues(invoke):
    result = invoke(
        "accountant",
        "-q",
        "0.1",
        "-s",
        "0.5",
        "-t",
        "10000",
        "-d",
        "1e-5",
        "--accountant",
        "prv",
        "--accountant",
        "pld",
    )
    assert result.exit_code == 0
    assert "prv        failed:" in result.output and "pld        epsilon =" in result.output


def test_accountant_bad_input(invoke):
    both = invoke("accountant", "-q", "0.01", "-s", "1", "-e", "1", "-t", "10", "-d", "1e-5")
    assert both.exit_code == 2 and "exactly one" in both.output
    bad_q = invoke("accountant", "-q", "1.5", "-s", "1", "-t", "10", "-d", "1e-5")
    assert bad_q.exit_code == 2 and "--sampling-rate" in bad_q.output
    unknown = invoke(
        "accountant", "-q", "0.1", "-s", "1", "-t", "10", "-d", "1e-5", "--accountant", "pdl"
    )
    assert unknown.exit_code == 2 and "did you mean 'pld'" in unknown.output


def test_bound_threshold_matches_closed_form(invoke):
    result = invoke(
        "bound",
        "threshold",
        "--tp",
        "900",
        "--fp",
        "10",
        "--tn",
        "990",
        "--fn",
        "100",
        "--delta",
        "1e-5",
        "--confidence",
        "0.95",
        "--json",
    )
    payload = json.loads(result.output)
    fpr = stats.beta.ppf(1 - 0.025, 11, 990)  # Clopper-Pearson upper bounds at beta/2 each
    fnr = stats.beta.ppf(1 - 0.025, 101, 900)
    expected = max(math.log((1 - 1e-5 - fnr) / fpr), math.log((1 - 1e-5 - fpr) / fnr))
    assert math.isclose(payload["epsilon_lower_bound"], expected, rel_tol=1e-9)


def test_bound_one_run_reproduces_the_paper_and_the_ceiling(invoke):
    # Steinke, Nasr, Jagielski (2023): m = r = 100, v = 75, delta = 0 gives 0.702 at 95 %.
    payload = json.loads(
        invoke(
            "bound",
            "one-run",
            "--canaries",
            "100",
            "--guesses",
            "100",
            "--correct",
            "75",
            "--delta",
            "0",
            "--json",
        ).output
    )
    assert abs(payload["epsilon_lower_bound"] - 0.702) < 1e-3
    # All r guesses right: the ceiling log(x / (1 - x)), x = beta^(1/r).
    x = 0.05 ** (1 / 200)
    payload = json.loads(
        invoke(
            "bound",
            "one-run",
            "--canaries",
            "1000",
            "--guesses",
            "200",
            "--correct",
            "200",
            "--delta",
            "0",
            "--json",
        ).output
    )
    assert abs(payload["epsilon_lower_bound"] - math.log(x / (1 - x))) < 1e-5


def test_bound_bad_counts_exit_2(invoke):
    result = invoke(
        "bound", "one-run", "--canaries", "10", "--guesses", "20", "--correct", "5", "--delta", "0"
    )
    assert result.exit_code == 2 and result.output.startswith("error: ")
    result = invoke(
        "bound", "threshold", "--tp", "-1", "--fp", "0", "--tn", "0", "--fn", "0", "--delta", "0"
    )
    assert result.exit_code == 2
