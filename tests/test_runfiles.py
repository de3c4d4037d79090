"""Typed run files: definitions, versions, the inf/nan convention, readers and writers, generated docs."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _run_fixture import write_run
from pydantic import BaseModel

from dpaudit.atomic import dumps
from dpaudit.errors import DpauditError, InputError
from dpaudit.reports import collect_report
from dpaudit.reports.schema import parse_report
from dpaudit.rundir import RunDir
from dpaudit.runfiles import docs
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
from dpaudit.runfiles.base import RunFile, RunModel
from dpaudit.runfiles.io import read_run_file, write_run_file
from dpaudit.runfiles.manifest import ManifestFile
from dpaudit.runfiles.privacy import PrivacyFile, UtilityFile
from dpaudit.runfiles.report import Report

# -- files exactly as the previous release (schema 1.0, atomic.write_json) wrote them -------------

PRIVACY_NO_DP = {
    "adjacency": "add/remove",
    "batch_size": 64,
    "complete": True,
    "delta": 0.0006,
    "delta_source": "default 1/n^1.1",
    "epochs": 3.04,
    "epsilon": "inf",
    "epsilons": {"edgeworth": "inf", "gdp": "inf", "pld": "inf", "prv": "inf", "rdp": "inf"},
    "errors": {},
    "max_grad_norm": None,
    "mechanism": "none",
    "n_examples": 800,
    "noise_multiplier": 0.0,
    "noise_source": "none",
    "planned_epochs": 3.0,
    "planned_steps": 38,
    "poisson_sampling": True,
    "primary_accountant": "pld",
    "sample_rate": 0.08,
    "schema_version": "1.0",
    "steps": 38,
    "target_epsilon": None,
    "unit": "example",
}
PRIVACY_CLAIMED = {
    "schema_version": "1.0",
    "mechanism": "claimed",
    "sample_rate": 0.0,
    "noise_multiplier": 0.0,
    "max_grad_norm": None,
    "steps": 0,
    "delta": 1e-5,
    "epsilons": {"claimed": 8.0},
    "unit": "example",
    "adjacency": "add/remove",
    "errors": {},
    "epsilon": 8.0,
    "primary_accountant": "claimed",
    "epochs": None,
    "planned_epochs": None,
    "planned_steps": None,
    "complete": None,
    "delta_source": "claim",
    "noise_source": "unknown",
    "target_epsilon": None,
    "batch_size": None,
    "n_examples": None,
    "poisson_sampling": None,
    "note": "the (ε, δ) claimed by the model's publisher; dpaudit did not train or account this model",
}
UTILITY = {
    "device": "cpu",
    "eval_example_loss": 3.73,
    "eval_loss": 3.73,
    "eval_perplexity": 41.7,
    "eval_tokens": 8000.0,
    "first_step_loss": 7.5,
    "last_step_loss": 3.73,
    "lora_targets": [],
    "mode": "full",
    "n_eval": 400,
    "n_train": 830,
    "precision": "fp32",
    "schema_version": "1.0",
    "seconds_per_step": 0.21,
    "steps": 38,
    "task": "causal_lm",
    "total_parameters": 120000,
    "train_example_loss": 3.36,
    "train_loss": 3.36,
    "train_perplexity": 28.7,
    "train_tokens": 30000.0,
    "trainable_parameters": 120000,
}
ATTACK_METRICS = {
    "auc": 0.8943625,
    "auc_ci": [0.8792775, 0.9077967],
    "balanced_accuracy": 0.80625,
    "balanced_accuracy_ci": ["nan", "nan"],
    "ci_level": 0.95,
    "n_bootstrap": 0,
    "n_member": 400,
    "n_nonmember": 400,
    "roc": {"fpr": [0.0, 0.0, 1.0], "tpr": [0.0, 0.0025, 1.0]},
    "schema_version": "1.0",
    "seed": 0,
    "tpr_at_fpr": {"0.001": {"ci": ["nan", "nan"], "tpr": 0.1625}},
}
BLIND = {
    "auc": 0.507,
    "auc_ci": [0.462, 0.553],
    "confidence": 0.95,
    "folds": 5,
    "method": "TF-IDF word 1-2-grams + char 3-5-grams, logistic regression (C=1)",
    "n_member": 400,
    "n_nonmember": 400,
    "schema_version": "1.0",
    "warning": None,
}
CANARY_RESULT = {
    "canary_id": "canary-0000",
    "exposure": 4.5,
    "extracted": False,
    "included": True,
    "insertions": 1,
    "logppl": "nan",
    "method": "exact",
    "n_candidates": 1000000,
    "rank": 44194,
    "repetitions": 1,
    "scope": "separator+secret",
    "secret": "6 symbols, masked",
    "secret_space": "digits:6",
    "space_size": 1000000,
}
CANARY = {
    "exposure_by_repetition": {"1": {"max": 4.5, "mean": 4.5, "median": 4.5, "min": 4.5, "n": 1}},
    "extraction": {"1": {"greedy": {"extracted": 0, "n": 1, "rate": 0.0}}},
    "results": [CANARY_RESULT],
    "schema_version": "1.0",
}
MEMORIZATION = {
    "by_duplication": {"1": {"n": 300, "rate": 0.04}},
    "memorized_ids": ["rec-00000"],
    "n_evaluated": 308,
    "n_skipped_too_short": 22,
    "prefix_tokens": 16,
    "rate": 0.05844155844155844,
    "schema_version": "1.0",
    "suffix_tokens": 16,
}
EXTRACTION = {
    "attack": "pii_extraction",
    "by_duplicates": {"1": {"matched": 9, "recall": 0.15, "truth": 60}},
    "n_generations": 64,
    "n_leaked": 1,
    "n_mentions": 49,
    "params": {"n_samples": 64, "seed": 4},
    "per_kind": {
        "EMAIL": {"detected": 10, "matched": 7, "precision": 0.7, "recall": 0.23, "truth": 30}
    },
    "precision": 0.61,
    "recall": 0.27,
    "revealed": False,
}
RANKING = {
    "accuracy": 1.0,
    "attack": "pii_inference",
    "by_duplicates": {"1": {"accuracy": 1.0, "chance": 0.2, "n": 1}},
    "chance": 0.2,
    "kind": "PERSON",
    "mean_candidates": 5.0,
    "n_records": 1,
    "n_skipped": 0,
    "params": {"n_distractors": 4, "seed": 4},
    "records": [
        {"credit": 1.0, "duplicates": 1, "n_candidates": 5, "rank": 1, "record_id": "rec-00000"}
    ],
    "revealed": False,
    "true_in_candidates": 1.0,
}
PII = {"extraction": EXTRACTION, "inference": RANKING, "schema_version": "1.0"}
RECOVERED = {
    "canary": {
        "exposure_by_repetition": {},
        "extraction": {},
        "results": [{**CANARY_RESULT, "secret": "8 5 0 6 1 6"}],
    },
    "pii": {
        "extraction": {
            **EXTRACTION,
            "revealed": True,
            "leaked": [
                {"duplicates": 9, "kind": "EMAIL", "times_generated": 7, "value": "a@b.test"}
            ],
        },
        "inference": {
            **RANKING,
            "revealed": True,
            "records": [
                {**RANKING["records"][0], "truth": "Thaddeus Quibell", "guess": "Thaddeus Quibell"}
            ],
        },
    },
    "schema_version": "1.0",
}
BOUNDS = {
    "models": {
        "target": {
            "lower": {
                "confidence": 0.95,
                "delta": 0.0006,
                "epsilon": 0.31,
                "method": "one-run",
                "n_canaries": 200,
                "n_correct": 27,
                "n_guesses": 40,
                "threshold_selection": "union-bound(grid=12, k_plus=20, k_minus=20)",
            },
            "per_accountant": {"pld": "consistent", "rdp": "not-private"},
            "primary_accountant": "pld",
            "tightness": {"pld": 0.10333333333333333, "rdp": 0.0},
            "upper": {"pld": 3.0, "rdp": "inf"},
            "verdict": "consistent",
        }
    },
    "schema_version": "1.0",
}
MANIFEST = {
    "argv": ["dpaudit", "run", "--name", "demo"],
    "config": {"name": "demo", "train": {"target_epsilon": "inf"}},
    "created": "2025-01-01T00:00:00+00:00",
    "device": "cpu",
    "dpaudit_version": "0.1.0",
    "git_commit": None,
    "inputs": {"dataset": {"path": "/data/x.jsonl", "sha256": "ab" * 32}},
    "platform": "Linux",
    "schema_version": "1.0",
    "seeds": {"master": 0, "target": 1},
    "stages": {
        "data": {
            "error": None,
            "finished": "2025-01-01T00:00:01+00:00",
            "inputs": {"config": "cd" * 32},
            "outputs": {"splits.json": "ef" * 32},
            "seconds": 0.007,
            "started": "2025-01-01T00:00:00+00:00",
            "status": "done",
        }
    },
    "updated": "2025-01-01T00:00:01+00:00",
    "versions": {"dpaudit": "0.1.0", "opacus": None},
}

PREVIOUS_RELEASE = [
    ("privacy.json", PrivacyFile, PRIVACY_NO_DP),
    ("privacy.json", PrivacyFile, PRIVACY_CLAIMED),
    ("metrics.json", UtilityFile, UTILITY),
    ("metrics.json", AttackMetricsFile, ATTACK_METRICS),
    ("blind.json", BlindFile, BLIND),
    (
        "status.json",
        StatusFile,
        {"attacks": {"lira": "skipped: no reference models"}, "schema_version": "1.0"},
    ),
    ("canary.json", CanaryFile, CANARY),
    ("canary.json", CanaryFile, {"schema_version": "1.0"}),  # a run without Secret-Sharer canaries
    ("memorization.json", MemorizationFile, MEMORIZATION),
    ("pii.json", PiiFile, PII),
    ("pii.json", PiiFile, {"schema_version": "1.0"}),  # no training record has PII
    ("recovered.json", RecoveredFile, RECOVERED),
    ("recovered.json", RecoveredFile, {"schema_version": "1.0"}),
    ("bounds.json", BoundsFile, BOUNDS),
    ("manifest.json", ManifestFile, MANIFEST),
]


def _all_models() -> list[type[BaseModel]]:
    out, stack = [], [RunModel]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return [m for m in out if m.__module__.startswith("dpaudit.runfiles")]


def _keeps(old, new, where="file"):
    """``new`` says everything ``old`` said; a key it adds is empty (``null``, false, {}, [])."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        for key in old:
            assert key in new, f"{where}.{key} lost"
            _keeps(old[key], new[key], f"{where}.{key}")
        for key in set(new) - set(old):
            added = new[key]
            assert added is None or added is False or added in ({}, []), f"{where}.{key}: {added!r}"
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), where
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _keeps(a, b, f"{where}[{i}]")
    else:
        assert new == old and type(new) is type(old), f"{where}: {old!r} -> {new!r}"


# -- definitions --------------------------------------------------------------------------------


def test_committed_docs_are_generated_from_the_definitions():
    stale = docs.generate(check=True)
    assert stale == [], (
        f"stale: {', '.join(p.name for p in stale)}; run python -m dpaudit.runfiles.docs"
    )


def test_every_field_is_described_and_every_file_versioned():
    models = _all_models()
    assert len(models) > 40
    for model in models:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
    files = [m for m in models if issubclass(m, RunFile) and m is not RunFile]
    assert set(docs.RUN_FILES) | {Report} == set(files)
    for file in files:
        assert file.model_fields["schema_version"].default == file.SCHEMA_VERSION, file
        assert file.SCHEMA_VERSION in file.READS and file.PATH and file.KIND != "run file"
        assert file.model_config["frozen"] and file.model_config["extra"] == "forbid"


def test_generated_docs_hold_every_key_and_the_prose():
    run_dir = docs.run_directory_md()
    for file in docs.RUN_FILES:
        assert f"### `{file.PATH}`" in run_dir
        for name in file.model_fields:
            assert f"| `{name}` |" in run_dir, (file.__name__, name)
    assert "A stage is skipped on `--resume`" in run_dir and "runs/<name>/" in run_dir
    schema = docs.report_schema_md()
    assert schema.startswith("<!-- Generated by `python -m dpaudit.runfiles.docs`")
    assert "## `models.<m>.privacy`" in schema and "## `comparison.csv`" in schema
    assert '| `accountant_kind` | object: `<accountant>` → `"rigorous"` or' in schema
    assert "log2\\|R\\|" in schema  # table cells escape the pipe


def test_generator_writes_and_checks(tmp_path):
    assert {p.name for p in docs.generate(tmp_path)} == {"run-directory.md", "report-schema.md"}
    assert docs.generate(tmp_path, check=True) == []
    (tmp_path / "report-schema.md").write_text("old\n")
    assert docs.main(["--check", "--docs", str(tmp_path)]) == 1
    assert docs.main(["--docs", str(tmp_path)]) == 0
    assert (tmp_path / "report-schema.md").read_text() == docs.report_schema_md()


# -- the inf/nan convention ---------------------------------------------------------------------


def test_non_finite_floats_are_strings_in_json_and_floats_in_python(tmp_path):
    ledger = PrivacyFile.from_dict(PRIVACY_NO_DP)
    assert ledger.epsilon == math.inf and ledger.epsilons["pld"] == math.inf
    assert ledger.to_dict()["epsilon"] == "inf" and ledger.model_dump()["epsilon"] == math.inf
    metrics = AttackMetricsFile.from_dict(
        {**ATTACK_METRICS, "auc_ci": (np.float64("nan"), -math.inf)}
    )
    assert math.isnan(metrics.auc_ci[0]) and metrics.to_dict()["auc_ci"] == ["nan", "-inf"]
    path = write_run_file(tmp_path / "metrics.json", metrics)
    text = path.read_text()
    assert '"-inf"' in text and "NaN" not in text and "Infinity" not in text
    assert text == dumps(metrics.to_dict())  # sorted keys, 2-space indent, newline
    back = read_run_file(path, AttackMetricsFile)
    assert back.to_dict() == metrics.to_dict()


@pytest.mark.parametrize("bad", [True, "high", "Infinity", None, [1.0]])
def test_a_number_is_a_number(bad):
    with pytest.raises(DpauditError, match=r"not a valid attack metrics.json: auc: expected"):
        AttackMetricsFile.from_dict({**ATTACK_METRICS, "auc": bad})


# -- files of the previous release, versions, problems ------------------------------------------


@pytest.mark.parametrize(("name", "model", "data"), PREVIOUS_RELEASE)
def test_previous_release_files_load_and_round_trip(tmp_path, name, model, data):
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    file = read_run_file(path, model)
    assert file.schema_version == "1.0"
    _keeps(data, file.to_dict())
    write_run_file(path, file)
    assert read_run_file(path, model) == file


def test_unsupported_version_is_one_line_naming_it(tmp_path):
    path = tmp_path / "privacy.json"
    path.write_text(json.dumps({**PRIVACY_NO_DP, "schema_version": "2.0"}))
    with pytest.raises(InputError) as info:
        read_run_file(path, PrivacyFile)
    assert str(info.value) == (
        f"{path}: schema_version '2.0' of privacy.json is not supported (this dpaudit reads '1.0')"
    )
    path.write_text(json.dumps({k: v for k, v in BLIND.items() if k != "schema_version"}))
    with pytest.raises(InputError, match=r"schema_version None of blind.json is not supported"):
        read_run_file(path, BlindFile)


def test_invalid_file_names_the_file_and_the_keys(tmp_path):
    path = tmp_path / "bounds.json"
    entry = BOUNDS["models"]["target"]
    broken = {**entry, "verdict": "fine", "lower": {**entry["lower"], "n_guesses": "many"}}
    del broken["primary_accountant"]
    path.write_text(json.dumps({**BOUNDS, "models": {"target": broken}, "extra": 1}))
    with pytest.raises(InputError) as info:
        read_run_file(path, BoundsFile)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: not a valid bounds.json: ")
    assert "models.target.lower.n_guesses: expected an integer, got string" in message
    assert "models.target: missing key 'primary_accountant'" in message
    assert (
        "models.target.verdict: expected 'consistent', 'violation', 'inconclusive' or 'not-private'"
        in message
    )
    assert "unknown key 'extra'" in message
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        read_run_file(path, BoundsFile)


def test_public_files_refuse_secrets():
    with pytest.raises(DpauditError, match="holds masked secrets only"):
        CanaryFile.from_dict({**CANARY, "results": RECOVERED["canary"]["results"]})
    with pytest.raises(DpauditError, match="lists no leaked values"):
        PiiFile.from_dict({**RECOVERED["pii"], "schema_version": "1.0"})
    with pytest.raises(DpauditError, match="inference: a public pii.json lists no true"):
        PiiFile.from_dict({"inference": RECOVERED["pii"]["inference"]})
    assert RecoveredFile.from_dict(RECOVERED).pii.extraction.leaked[0].value == "a@b.test"


def test_from_dict_accepts_what_writers_hand_over():
    # int keys (exposure_summary), numpy scalars and tuples, as the attack results produce them
    canary = CanaryFile.from_dict(
        {
            "results": [CANARY_RESULT],
            "exposure_by_repetition": {
                1: {"mean": np.float64(4.5), "median": 4.5, "min": 4.5, "max": 4.5, "n": 1}
            },
            "extraction": {1: {"greedy": {"rate": 1.0, "extracted": np.int64(1), "n": 1}}},
        }
    )
    assert canary.to_dict()["exposure_by_repetition"]["1"]["mean"] == 4.5
    assert canary.extraction["1"]["greedy"].extracted == 1


# -- readers and writers ------------------------------------------------------------------------


def test_privacy_writer_and_reader(tmp_path):
    from dpaudit.accounting import PrivacyLedger
    from dpaudit.trainers.privacy import PrivacyPlan, read_privacy, write_privacy

    plan = PrivacyPlan(
        True, 800, 64, 0.08, 38, 3.0, 1.1, 1.0, 6e-4, "config", "pld", "config", None, True
    )
    ledger = PrivacyLedger(
        "poisson-subsampled-gaussian", 0.08, 1.1, 1.0, 20, 6e-4, {"pld": 2.5, "rdp": math.inf}
    )
    path = write_privacy(tmp_path / "privacy.json", plan, ledger, complete=False)
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == "1.0" and raw["epsilons"]["rdp"] == "inf"
    assert raw["epochs"] == pytest.approx(1.6) and raw["complete"] is False
    back, payload = read_privacy(path)
    assert back == ledger and payload["primary_accountant"] == "pld"


def test_attack_metrics_save_load(tmp_path):
    from dpaudit.attacks.scores import AttackMetrics

    m = AttackMetrics.from_dict({k: v for k, v in ATTACK_METRICS.items() if k != "schema_version"})
    m.save(tmp_path)
    back = AttackMetrics.load(tmp_path)
    assert back.auc == m.auc and math.isnan(back.balanced_accuracy_ci[0])
    assert back.tpr_at_fpr == {0.001: (0.1625, back.tpr_at_fpr[0.001][1])}
    (tmp_path / "metrics.json").write_text(json.dumps({**ATTACK_METRICS, "schema_version": "0.9"}))
    with pytest.raises(InputError, match=r"schema_version '0.9' of attack metrics.json"):
        AttackMetrics.load(tmp_path)


def test_bounds_merge_keeps_other_models(tmp_path):
    from dpaudit.audit.stage import record_verdict
    from dpaudit.audit.verdict import AuditVerdict

    target = AuditVerdict.from_entry(BoundsFile.from_dict(BOUNDS).models["target"])
    assert target.upper["rdp"] == math.inf and target.lower.n_correct == 27
    path = tmp_path / "bounds.json"
    record_verdict(path, "target", target)
    record_verdict(path, "baseline", target)
    bounds = read_run_file(path, BoundsFile)
    assert sorted(bounds.models) == ["baseline", "target"]
    assert bounds.models["target"] == target.to_entry()
    assert json.loads(path.read_text())["models"]["target"]["upper"]["rdp"] == "inf"


def test_manifest_is_typed(tmp_path):
    from dpaudit.config import load_config

    cfg = load_config(overrides={"runs_dir": str(tmp_path), "name": "m"})
    run = RunDir.create(cfg, argv=["dpaudit"])
    run.update(seeds={"master": 3}, device="cpu")
    assert run.manifest_file().seeds == {"master": 3}
    with pytest.raises(DpauditError, match=r"manifest.json: .*unknown key 'colour'"):
        run.update(colour="blue")
    with pytest.raises(DpauditError, match=r"seeds.master: expected an integer"):
        run.update(seeds={"master": "x"})
    data = json.loads((run.path / "manifest.json").read_text())
    (run.path / "manifest.json").write_text(json.dumps({**data, "schema_version": "3.1"}))
    with pytest.raises(InputError, match=r"schema_version '3.1' of manifest.json is not supported"):
        run.manifest()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs"), "typed", seed=7)


def test_report_is_its_definition(run_dir):
    report = collect_report(run_dir, reveal=True)
    model = parse_report(report)
    assert model.to_dict() == report  # what report.json holds is exactly Report.to_dict()
    assert set(report["models"]["target"]) == set(type(model.models["target"]).model_fields)
    assert "recovered" not in collect_report(run_dir)["models"]["target"]
    utility = report["models"]["target"]["utility"]
    assert "eval_accuracy" not in utility and utility["headline"]["metric"] == "eval_perplexity"


def test_report_refuses_run_files_it_cannot_read(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "attacks" / "target" / "memorization.json").unlink()
    assert collect_report(copy)["models"]["target"]["memorization"] is None
    ledger = copy / "target" / "privacy.json"
    ledger.write_text(json.dumps({**json.loads(ledger.read_text()), "schema_version": "9.0"}))
    with pytest.raises(DpauditError) as info:
        collect_report(copy)
    assert str(info.value) == (
        f"{ledger}: schema_version '9.0' of privacy.json is not supported (this dpaudit reads '1.0')"
    )
    canary = copy / "attacks" / "target" / "canary.json"
    data = json.loads(canary.read_text())
    data["results"][0]["secret"] = "1 2 3 4 5 6"
    ledger.write_text(json.dumps({**json.loads(ledger.read_text()), "schema_version": "1.0"}))
    canary.write_text(json.dumps(data))
    with pytest.raises(DpauditError, match=re.escape(f"{canary}: not a valid canary.json")):
        collect_report(copy)
