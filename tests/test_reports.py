"""Reports: report.json schema and contents, secrecy, determinism, self-contained HTML, compare."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from _run_fixture import recovered_values, write_run

from dpaudit.errors import DpauditError
from dpaudit.reports import (
    REPORT_SCHEMA_VERSION,
    build_report,
    collect_report,
    report_problems,
    validate_report,
)
from dpaudit.reports.compare import COLUMNS, compare_runs
from dpaudit.rundir import RunDir
from dpaudit.runfiles.report import ModelSection, Report

POLICY = {
    "max_epsilon": 8.0,
    "max_auc": 0.6,
    "max_tpr_at_low_fpr": 0.05,
    "max_exposure": 10.0,
    "max_pii_extraction_rate": 0.1,
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    path = write_run(tmp_path_factory.mktemp("runs"), "demo", report=POLICY)
    build_report(path, generated="2025-01-01 00:00 UTC")
    return path


@pytest.fixture(scope="module")
def report(run_dir) -> dict:
    return json.loads((run_dir / "report" / "report.json").read_text())


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / run_dir.name
    shutil.copytree(run_dir, dest)
    shutil.rmtree(dest / "report", ignore_errors=True)
    return dest


def _num(value) -> float:
    return float(value)


# -- schema ------------------------------------------------------------------------------------


def test_report_files_written_and_valid(run_dir, report):
    assert sorted(p.name for p in (run_dir / "report").iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
    ]
    assert report["schema_version"] == REPORT_SCHEMA_VERSION == "1.1"
    assert validate_report(report) is report
    assert report_problems(report) == []
    assert set(report) == set(Report.model_fields)


def test_run_section_and_provenance(report):
    run = report["run"]
    for key in ("name", "created", "dpaudit_version", "git_commit", "argv", "seeds", "device"):
        assert key in run
    assert run["name"] == "demo"
    assert run["argv"] == ["dpaudit", "run", "--name", "demo"]
    assert run["seeds"]["master"] == 0 and run["device"] == "cpu"
    fp = report["fingerprints"]
    assert re.fullmatch(r"[0-9a-f]{64}", fp["outputs"]["target"]["model.safetensors"])
    assert (
        fp["outputs"]["target"]["model.safetensors"]
        != fp["outputs"]["baseline"]["model.safetensors"]
    )
    assert "attacks/target/loss/metrics.json" in fp["sources"]
    assert "attacks/target/recovered.json" not in fp["sources"]  # not read without reveal
    assert report["versions"]["dpaudit"] == "0.1.0"
    assert report["config"]["report"]["max_auc"] == 0.6


@pytest.mark.parametrize("model", ["target", "baseline"])
def test_model_sections_have_required_keys_and_types(report, model):
    m = report["models"][model]
    privacy = m["privacy"]
    for key in (
        "epsilon_upper",
        "delta",
        "primary_accountant",
        "mechanism",
        "unit",
        "adjacency",
        "sample_rate",
        "noise_multiplier",
        "max_grad_norm",
        "steps",
        "epochs",
    ):
        assert key in privacy, key
    assert set(privacy["epsilon_upper"]) == {"rdp", "prv", "pld", "gdp", "edgeworth"}
    assert privacy["accountant_kind"] == {
        "rdp": "rigorous",
        "prv": "rigorous",
        "pld": "rigorous",
        "gdp": "approximate",
        "edgeworth": "approximate",
    }
    assert isinstance(privacy["steps"], int) and privacy["unit"] == "example"

    audit = m["audit"]
    lb = audit["epsilon_lower"]
    for key in (
        "value",
        "confidence",
        "method",
        "n_canaries",
        "n_guesses",
        "n_correct",
        "threshold_selection",
    ):
        assert key in lb, key
    assert (
        lb["method"] == "one-run"
        and lb["confidence"] == 0.95
        and lb["n_correct"] <= lb["n_guesses"]
    )
    assert audit["verdict"] in ("consistent", "violation", "not-private")
    assert set(audit["tightness"]) == set(privacy["epsilon_upper"])

    assert set(m["attacks"]) == {"loss", "zlib", "mink"}
    for attack in m["attacks"].values():
        assert 0.0 <= attack["auc"] <= 1.0
        lo, hi = attack["auc_ci"]
        assert lo <= attack["auc"] <= hi
        assert set(attack["tpr_at_fpr"]) == {"0.001", "0.01", "0.1"}
        assert set(attack["tpr_at_fpr"]["0.001"]) == {"tpr", "ci"}
        assert 0.5 <= attack["balanced_accuracy"] <= 1.0
        assert "roc" not in attack  # curves stay in metrics.json

    canaries = m["canaries"]
    assert set(canaries["exposure_by_repetition"]) == {"0", "1", "2", "4", "8", "16"}
    assert canaries["max_possible_exposure"] == pytest.approx(math.log2(10**6))
    assert canaries["extraction"]["16"]["greedy"]["n"] == 2
    assert all("secret" not in r for r in canaries["results"])
    assert 0.0 <= m["memorization"]["rate"] <= 1.0 and "memorized_ids" not in m["memorization"]
    assert set(m["pii"]["by_kind"]) == {"PERSON", "EMAIL", "PHONE"}
    assert "leaked" not in m["pii"]["extraction"]
    assert m["utility"]["headline"]["metric"] == "eval_perplexity"
    assert "recovered" not in m


def test_dp_target_shows_less_leakage_than_baseline(report):
    t, b = report["models"]["target"]["summary"], report["models"]["baseline"]["summary"]
    assert _num(t["epsilon"]) == pytest.approx(3.0) and b["epsilon"] == "inf"
    assert _num(t["max_auc"]["value"]) < 0.6 < 0.85 < _num(b["max_auc"]["value"])
    assert _num(t["max_tpr_at_low_fpr"]["value"]) < _num(b["max_tpr_at_low_fpr"]["value"])
    assert _num(t["max_exposure"]) < 8 < 19 < _num(b["max_exposure"])
    assert _num(t["pii_extraction_rate"]) < _num(b["pii_extraction_rate"])
    assert t["audit_verdict"] == "consistent" and b["audit_verdict"] == "not-private"
    assert t["utility"]["value"] > b["utility"]["value"]  # the price of privacy: higher perplexity


def test_policy_section(report):
    pol = report["policy"]
    assert pol["configured"] and pol["verdict"] == "pass" and pol["failed"] == []
    assert pol["thresholds"] == POLICY
    assert {k: v["verdict"] for k, v in pol["items"].items()} == {
        "max_epsilon": "pass",
        "max_auc": "pass",
        "max_tpr_at_low_fpr": "pass",
        "max_exposure": "pass",
        "max_pii_extraction_rate": "pass",
        "audit_consistent": "pass",
    }
    assert pol["items"]["max_auc"]["attack"] in ("loss", "zlib", "mink")


def test_policy_overrides_fail_and_unmeasured_fails(run_dir, tmp_path):
    strict = collect_report(run_dir, policy_overrides={"max_auc": 0.5, "max_epsilon": 1.0})
    assert strict["policy"]["verdict"] == "fail"
    assert sorted(strict["policy"]["failed"]) == ["max_auc", "max_epsilon"]
    assert re.match(
        r"target MIA AUC 0\.5\d+ \((loss|zlib|mink)\) > 0\.5$",
        strict["policy"]["items"]["max_auc"]["detail"],
    )
    copy = _copy(run_dir, tmp_path)
    (copy / "attacks" / "target" / "canary.json").unlink()
    missing = collect_report(copy)
    item = missing["policy"]["items"]["max_exposure"]
    assert item["verdict"] == "fail" and "not measured" in item["detail"]
    assert any("no canary exposure results" in w for w in missing["warnings"])
    with pytest.raises(DpauditError, match="did you mean 'max_auc'"):
        collect_report(run_dir, policy_overrides={"max_aucc": 0.5})


def test_unconfigured_policy_passes_with_audit_only(tmp_path):
    path = write_run(tmp_path, "nopolicy", seed=3)
    r = collect_report(path)
    assert not r["policy"]["configured"] and r["policy"]["verdict"] == "pass"
    assert r["policy"]["items"]["max_auc"]["verdict"] == "not-applicable"


def test_audit_violation_fails_policy(tmp_path):
    path = write_run(tmp_path, "broken", seed=4, violation=True)
    r = collect_report(path)
    assert r["models"]["target"]["audit"]["verdict"] == "violation"
    assert r["policy"]["verdict"] == "fail" and r["policy"]["failed"] == ["audit_consistent"]


def test_schema_validator_reports_problems(report):
    broken = json.loads(json.dumps(report))
    del broken["models"]["baseline"]["audit"]["epsilon_lower"]["confidence"]
    broken["models"]["target"]["attacks"]["loss"]["auc"] = "high"
    broken["models"]["target"]["recovered"] = {}
    problems = report_problems(broken)
    assert any("baseline.audit.epsilon_lower: missing key 'confidence'" in p for p in problems)
    assert any("attacks.loss.auc: expected a number" in p for p in problems)
    assert any("not revealed" in p for p in problems)
    with pytest.raises(DpauditError, match="not a valid dpaudit report"):
        validate_report(broken)
    assert report_problems({**report, "schema_version": "2.0"})


def test_malformed_run_file_is_named(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    bad = copy / "attacks" / "target" / "loss" / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(DpauditError, match=re.escape(str(bad))):
        build_report(copy)
    with pytest.raises(DpauditError, match="not a dpaudit run directory"):
        build_report(tmp_path / "nowhere")


# -- secrecy -----------------------------------------------------------------------------------


def _text_without_images(path: Path) -> str:
    return DATA_URI.sub("data:image/png;base64,", path.read_text(encoding="utf-8"))


def _found(value: str, text: str) -> bool:
    return re.search(r"(?<![\w.])" + re.escape(value) + r"(?!\w)", text) is not None


def test_recovered_secrets_and_pii_absent_without_reveal(run_dir):
    values = recovered_values(run_dir)
    assert len(values) >= 15
    for name in ("report.json", "report.md", "report.html"):
        text = _text_without_images(run_dir / "report" / name)
        leaked = [v for v in values if _found(v, text)]
        assert leaked == [], f"{name} leaks {leaked}"


def test_reveal_lists_recovered_values(run_dir, tmp_path):
    out = tmp_path / "revealed"
    r = build_report(run_dir, reveal=True, out_dir=out)
    assert r["revealed"] and validate_report(r)
    assert "attacks/target/recovered.json" in r["fingerprints"]["sources"]
    secrets = [c["secret"] for c in r["models"]["baseline"]["recovered"]["canaries"]]
    assert len(secrets) == 12
    html, md, js = (
        (out / name).read_text() for name in ("report.html", "report.md", "report.json")
    )
    assert "CONFIDENTIAL" in html and "CONFIDENTIAL" in md
    for m in ("target", "baseline"):
        rec = r["models"][m]["recovered"]
        shown = [c["secret"] for c in rec["canaries"]] + [p["value"] for p in rec["pii_extracted"]]
        shown += [p["truth"] for p in rec["pii_inferred"]]
        assert rec["pii_extracted"] and rec["pii_inferred"]
        for v in shown:
            assert _found(v, html) and _found(v, md) and _found(v, js), v
    assert "Oren Mbeki-Hartmann" not in js  # PII no attack recovered stays out even with reveal


# -- determinism and self-containment ----------------------------------------------------------


def test_rebuild_gives_identical_report_json(run_dir, tmp_path):
    first = (run_dir / "report" / "report.json").read_bytes()
    copy = _copy(run_dir, tmp_path)
    build_report(copy, formats=("json",), generated="another time")
    # The CLI may record the report itself as a stage: that must not change report.json.
    with RunDir(copy).stage("report", {"run": "x"}):
        pass
    build_report(copy, formats=("json",))
    again = (copy / "report" / "report.json").read_bytes()
    assert again == first
    assert json.loads(first) == collect_report(run_dir)
    text = first.decode()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # sorted keys


def test_html_is_self_contained_with_embedded_pngs(run_dir):
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    images = DATA_URI.findall(html)
    assert len(images) == 4  # audit, ROC, exposure, PII
    for payload in images:
        assert base64.b64decode(payload)[:8] == PNG_MAGIC
    lowered = html.lower()
    for forbidden in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert forbidden not in lowered, forbidden
    for section in (
        "DP guarantee as claimed",
        "Empirical audit",
        "Membership-inference attacks",
        "Canaries",
        "Memorization and PII leakage",
        "Utility vs baseline",
        "Provenance",
    ):
        assert section in html
    assert "@media print" in html and "2025-01-01 00:00 UTC" in html
    assert "PASS" in html and "approximate" in html and "rigorous" in html


def test_html_escapes_run_text(tmp_path):
    path = write_run(tmp_path, "esc", seed=5)
    report = collect_report(path)
    report["run"]["argv"] = ["dpaudit", "<script>alert(1)</script>"]
    from dpaudit.reports.render_html import render_html
    from dpaudit.reports.render_md import render_markdown

    html = render_html(report)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "data:image/png" in html  # figures that need no ROC curves still render
    report["run"]["argv"] = ["x|y"]
    assert "| Command line | x\\|y |" in render_markdown(report)


def test_markdown_has_tables_and_no_images(run_dir):
    md = (run_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Privacy audit report: demo")
    assert "## Verdict: **PASS**" in md and "| Check | Threshold |" in md
    assert "data:image" not in md and "report.html" in md
    for section in (
        "## DP guarantee as claimed",
        "## Empirical audit",
        "## Membership-inference attacks",
        "## Canaries",
        "## Memorization and PII leakage",
        "## Utility vs baseline",
        "## Provenance",
    ):
        assert section in md


def test_unknown_format_refused(run_dir, tmp_path):
    with pytest.raises(DpauditError, match="unknown report format 'pdf'"):
        build_report(run_dir, formats=("pdf",), out_dir=tmp_path)


def test_schema_doc_documents_every_key():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "report-schema.md").read_text(
        encoding="utf-8"
    )
    for key in [*Report.model_fields, *ModelSection.model_fields]:
        assert f"`{key}`" in doc, key


# -- compare -----------------------------------------------------------------------------------


def test_compare_two_runs(run_dir, tmp_path):
    other = write_run(tmp_path / "runs", "eps8", seed=1, epsilon_scale=8 / 3, target_shift=0.3)
    assert not (other / "report").exists()
    out = tmp_path / "cmp"
    frame = compare_runs([run_dir, other], out)
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["run"]) == ["demo", "eps8"]
    assert frame["epsilon"].tolist() == pytest.approx([3.0, 8.0])
    assert (frame["best_auc"] > 0.5).all() and (frame["utility_metric"] == "eval_perplexity").all()
    assert frame.loc[0, "policy_verdict"] == "pass"
    assert (other / "report" / "report.json").is_file()  # built because it was missing
    csv = (out / "comparison.csv").read_text()
    assert csv.splitlines()[0] == ",".join(COLUMNS)
    html = (out / "comparison.html").read_text()
    assert base64.b64decode(DATA_URI.search(html).group(1))[:8] == PNG_MAGIC
    assert "https://" not in html and "<script" not in html and "eps8" in html
    baseline = compare_runs([run_dir], tmp_path / "cmp2", model="baseline")
    assert math.isinf(baseline.loc[0, "epsilon"])
    with pytest.raises(DpauditError):
        compare_runs([], out)


def test_public_names_import():
    import dpaudit.reports as reports
    from dpaudit.reports import compare, gate, plots, policy, schema

    for module in (reports, compare, gate, plots):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    assert policy.CONFIG_THRESHOLDS == (
        "max_epsilon",
        "max_auc",
        "max_tpr_at_low_fpr",
        "max_exposure",
        "max_pii_extraction_rate",
    )
    assert (
        schema.accountant_kind("pld") == "rigorous"
        and schema.accountant_kind("gdp") == "approximate"
    )


def test_report_flags_delta_at_least_one_over_n(run_dir, tmp_path):
    """A δ ≥ 1/n permits publishing a random record outright: the report says so."""
    run = _copy(run_dir, tmp_path)
    path = run / "target" / "privacy.json"
    ledger = json.loads(path.read_text())
    ledger.update(delta=0.02, n_examples=100)  # 1/n = 0.01
    path.write_text(json.dumps(ledger))
    report = build_report(run, formats=["json"])
    flagged = [w for w in report["warnings"] if "≥ 1/n" in w]
    assert len(flagged) == 1 and flagged[0].startswith("target: δ = 0.02")
    clean = build_report(_copy(run_dir, tmp_path / "again"), formats=["json"])
    assert not [w for w in clean["warnings"] if "≥ 1/n" in w]


def test_console_table_wraps_headers_to_fit_the_terminal():
    from dpaudit.reports.fmt import text_table

    header = ["aggregation", "attacker rounds", "mean clients/round", "target-token acc."]
    rows = [["trimmed-mean", "3", "4.0", "0.85"], ["mean", "0", "3.5", "0.01"]]
    wide = text_table(header, rows, right_from=1, width=200)
    assert len(wide) == 3 and wide[0].split() == " ".join(header).split()
    narrow = text_table(header, rows, right_from=1, width=55)
    assert len(narrow) == 2 + 2  # two header lines, then the rows unwrapped
    assert max(len(x) for x in narrow) <= 55 < max(len(x) for x in wide)
    assert narrow[-2].split() == rows[0] and narrow[-1].split() == rows[1]
    # each column's header words, read top to bottom, are the header
    assert narrow[0].split() == ["aggregation", "attacker", "mean", "target-token"]
    assert narrow[1].split() == ["rounds", "clients/round", "acc."]
