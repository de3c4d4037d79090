"""End to end through the CLI on a tiny run: data -> train -> references -> attacks -> audit."""

from __future__ import annotations

import json

import numpy as np
import pytest

SMALL = """
name = "e2e"
seed = 0
[data]
synth_n = 300
one_run_canaries = 60
vocab_size = 400
max_length = 40
canary_repetitions = [1, 16]
canaries_per_repetition = 1
secret_space = "digits:3"
[train]
epochs = 2.0
batch_size = 32
physical_batch_size = 32
target_epsilon = 4.0
num_references = 2
checkpoint_every = 4
[attack]
bootstrap = 20
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
        for name in ("model.safetensors", "config.json", "tokenizer.json", "privacy.json", "metrics.json",
                     "train_log.jsonl"):
            assert (path / model / name).is_file(), (model, name)
        assert not list((path / model).glob("*.bin"))
    target = json.loads((path / "target" / "privacy.json").read_text())
    assert target["mechanism"] == "poisson-subsampled-gaussian" and target["adjacency"] == "add/remove"
    assert target["unit"] == "example" and target["epsilons"]["pld"] <= 4.0 + 1e-9
    baseline = json.loads((path / "baseline" / "privacy.json").read_text())
    assert baseline["mechanism"] == "none" and baseline["epsilons"]["pld"] == "inf"


def test_ledger_equals_the_accountant_command(run):
    path, _, _, runner = run
    from dpaudit.cli import cli

    ledger = json.loads((path / "target" / "privacy.json").read_text())
    result = runner.invoke(cli, ["accountant", "-q", repr(ledger["sample_rate"]), "-s", repr(ledger["noise_multiplier"]),
                                 "-t", str(ledger["steps"]), "-d", repr(ledger["delta"]), "--json"])
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
        secrets = [json.loads(line)["secret"] for line in (path / "data" / "canaries.jsonl").read_text().splitlines()]
        public = (path / "attacks" / model / "canary.json").read_text() + (path / "attacks" / model / "pii.json").read_text()
        assert not any(f'"{s}"' in public for s in secrets)  # secrets are masked outside recovered.json
        assert set(canary["exposure_by_repetition"]) >= {"16"}
    assert (path / "attacks" / "blind.json").is_file()
    bounds = json.loads((path / "audit" / "bounds.json").read_text())["models"]
    target = bounds["target"]
    assert target["verdict"] == "consistent"
    assert target["lower"]["epsilon"] <= target["upper"]["pld"]
    assert bounds["baseline"]["verdict"] == "not-private"
    assert "consistent" in outputs["audit"]


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
