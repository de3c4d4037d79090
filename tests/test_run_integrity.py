"""Run integrity (issue 12): a command never rebuilds a finished stage's inputs behind its back,
a refusal writes nothing, the gate fails an unfinished run, one manifest keeps every stage's
provenance, and run names stay inside the runs directory (docs/decisions.md#run-integrity)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

# A tiny run: 120 synthetic records (150 with the --set below), one epoch, 3 DP-SGD steps.
TINY = """
name = "s"
seed = 0
[data]
synth_n = 120
one_run_canaries = 10
vocab_size = 400
max_length = 40
canary_repetitions = [1, 8]
canaries_per_repetition = 1
secret_space = "digits:2"
[train]
epochs = 1.0
batch_size = 32
physical_batch_size = 32
target_epsilon = 4.0
baseline = false
num_references = 0
checkpoint_every = 100
[attack]
bootstrap = 20
extraction_samples = 1
attacks = ["loss"]
[audit]
delta = 1e-5
"""
TRAINED_WITH = ("--set", "data.synth_n=150")  # the setting the fixture run was trained with

# Runs `dpaudit ARGS` and dies like a SIGKILL (no handler runs) right after the first checkpoint.
KILLED_MID_TRAINING = """
import os, sys
import dpaudit.trainers.dp_sgd as dp_sgd
_save = dp_sgd._checkpoint
def _killed(*args, **kwargs):
    _save(*args, **kwargs)
    os._exit(137)
dp_sgd._checkpoint = _killed
from dpaudit.cli import main
sys.argv = ["dpaudit", *sys.argv[1:]]
main()
"""


def _cli(*args: str | Path):
    """``dpaudit ARGS`` in-process, with ``sys.argv`` set as a shell would (the manifest records it)."""
    from dpaudit.cli import cli

    argv = [str(a) for a in args]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["dpaudit", *argv])
        return CliRunner().invoke(cli, argv, catch_exceptions=False)


def _refused(result, *fragments: str) -> str:
    """Exit 2 with one error line (no traceback) holding every fragment; returns that line.

    (Progress bars of a model load may precede it on stderr.)"""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _tree(path: Path) -> dict[str, str]:
    """Every file and directory under ``path``: relative path -> SHA-256 (``dir`` for directories)."""
    return {
        str(p.relative_to(path)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
    }


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``dpaudit train tiny.toml --name s --set data.synth_n=150`` (data + DP target)."""
    root = tmp_path_factory.mktemp("integrity")
    (root / "tiny.toml").write_text(TINY)
    result = _cli(
        "train", root / "tiny.toml", "--runs-dir", root / "runs", "--name", "s", *TRAINED_WITH
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def runs(trained, tmp_path):
    """A private copy of the fixture's runs directory; ``(config, runs dir, run dir)``."""
    shutil.copytree(trained / "runs", tmp_path / "runs")
    return trained / "tiny.toml", tmp_path / "runs", tmp_path / "runs" / "s"


# -- 1. a stage command must not rebuild an existing run's data --------------------------------


def test_train_references_refuses_to_rebuild_the_data(runs):
    config, runs_dir, run = runs
    before = _tree(run)
    where = ("--runs-dir", runs_dir, "--name", "s")
    _refused(
        _cli("train-references", config, *where, "--num", "2"),
        "the run's stages (data, target) were built with other settings",
        "data.synth_n: 150 in the run, 120 now",
        "--force",
    )
    assert _tree(run) == before  # data/ kept: the target's splits
    # The same for the main job and for --resume of the stage command itself.
    _refused(_cli("run", config, *where, "--resume"), "data.synth_n: 150 in the run, 120 now")
    _refused(_cli("train", config, *where, "--resume"), "data.synth_n: 150 in the run, 120 now")
    _refused(_cli("train", config, *where, *TRAINED_WITH), "--resume", "--force")
    _refused(_cli("train", config, *where, "--resume", "--force"), "cannot be combined")
    _refused(_cli("train-references", config, *where, *TRAINED_WITH), "pass --num K")
    assert _tree(run) == before
    # With the run's settings, --resume skips the finished stages and changes no file of data/.
    resumed = _cli("train", config, *where, *TRAINED_WITH, "--resume")
    assert resumed.exit_code == 0 and "target: unchanged, skipped (--resume)" in resumed.output
    data = {k: v for k, v in before.items() if k.startswith("data")}
    assert {k: v for k, v in _tree(run).items() if k.startswith("data")} == data
    # --force starts over: a new run with the settings given now.
    fresh = _cli("prepare", config, *where, "--force")
    assert fresh.exit_code == 0, fresh.output
    manifest = _manifest(run)
    assert set(manifest["stages"]) == {"data"} and not (run / "target").exists()
    assert manifest["config"]["data"]["synth_n"] == 120


def test_attack_and_audit_refuse_a_model_trained_on_another_split(runs):
    """What the old `train-references` did: data/ rebuilt under a trained target."""
    config, runs_dir, run = runs
    other = _cli("prepare", config, "--runs-dir", runs_dir, "--name", "other")
    assert other.exit_code == 0, other.output
    shutil.rmtree(run / "data")
    shutil.copytree(runs_dir / "other" / "data", run / "data")
    _refused(
        _cli("attack", "mia", "--run", run, "--attacks", "loss"),
        f"{run / 'target' / 'train_ids.json'}: the model's training list",
        "the data changed after training",
    )
    _refused(_cli("audit", run), "train_ids.json")
    assert set(_manifest(run)["stages"]) == {"data", "target"}  # nothing ran, nothing recorded


# -- 2. a refused --resume leaves the run exactly as it was -------------------------------------


def test_a_refused_resume_changes_no_file(runs):
    config, runs_dir, run = runs
    before = _tree(run)
    where = ("--runs-dir", runs_dir, "--name", "s", "--resume")
    _refused(_cli("train", config, *where, "--set", "data.synth_n=320"), "data.synth_n: 150")
    assert _tree(run) == before
    _refused(
        _cli("train", config, *where, *TRAINED_WITH, "--set", "train.epochs=2"),
        "train.epochs: 1.0 in the run, 2.0 now",
    )
    assert _tree(run) == before


# -- 3. the gate fails a run killed mid-training ------------------------------------------------


def test_gate_fails_a_run_killed_mid_training(trained, tmp_path):
    runs_dir, run = tmp_path / "runs", tmp_path / "runs" / "killed"
    args = ["train", str(trained / "tiny.toml"), "--runs-dir", str(runs_dir), "--name", "killed"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_TRAINING, *args, "--set", "train.checkpoint_every=1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert _manifest(run)["stages"]["target"]["status"] == "running"
    assert not (run / "target" / "complete.json").exists()
    assert _cli("report", run).exit_code == 0  # renders (the ledger marked incomplete)
    for extra in ((), ("--allow-inconclusive",)):
        gated = _cli("gate", run, "--max-epsilon", "10", *extra)
        assert gated.exit_code == 1, gated.output
        assert "run incomplete: stage target started and never finished" in gated.output
        assert "target training incomplete (1 of " in gated.output
    # A training stage with a checkpoint has started: its recipe is fixed too, before any write.
    before = _tree(run)
    _refused(_cli(*args, "--resume", "--set", "train.epochs=2"), "train.epochs: 1.0 in the run")
    assert _tree(run) == before
    # Finished with --resume, the same run passes.
    assert _cli(*args, "--resume").exit_code == 0
    assert _cli("report", run).exit_code == 0
    passed = _cli("gate", run, "--max-epsilon", "10")
    assert passed.exit_code == 0 and passed.output.startswith("gate passed:"), passed.output


# -- 4. a refused audit-checkpoint creates nothing ----------------------------------------------


def test_a_refused_checkpoint_audit_creates_nothing_and_can_be_rerun(trained, tmp_path):
    run = trained / "runs" / "s"
    texts = [json.loads(line)["text"] for line in (run / "data" / "corpus.jsonl").open()]
    members, nonmembers, short = (tmp_path / f"{n}.jsonl" for n in ("m", "n", "short"))
    members.write_text("".join(json.dumps({"text": t}) + "\n" for t in [*texts[:20], ""]))
    nonmembers.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[100:120]))
    short.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("a b c", "hello there")))
    out = tmp_path / "audit"
    command = ["audit-checkpoint", "--model", run / "target", "--nonmembers", nonmembers]
    command += ["--out", out]
    for _ in range(2):  # the same command again: refused for the same reason, not for --out
        _refused(_cli(*command, "--members", members), f"{members}: 1 record(s) with an empty text")
        assert not out.exists()
    # Only a part that cannot run on these members: refused (with others it is skipped, noted).
    short_only = _cli(*command, "--members", short, "--parts", "memorization")
    _refused(short_only, "memorization will be skipped: no record has the 32 tokens")
    assert not out.exists()


# -- 5. one manifest accumulates every stage's provenance ----------------------------------------


def test_train_then_train_references_keeps_both_commands_and_seeds(runs):
    config, runs_dir, run = runs
    refs = ["train-references", str(config), "--runs-dir", str(runs_dir), "--name", "s"]
    result = _cli(*refs, *TRAINED_WITH, "--num", "1")
    assert result.exit_code == 0, result.output
    manifest = _manifest(run)
    stages = manifest["stages"]
    assert manifest["argv"][:2] == ["dpaudit", "train"]  # the command that created the run
    assert stages["data"]["argv"][:2] == stages["target"]["argv"][:2] == ["dpaudit", "train"]
    assert stages["references"]["argv"] == ["dpaudit", *refs, *TRAINED_WITH, "--num", "1"]
    assert {k: stages[k]["seed"] for k in ("data", "target", "references")} == {
        "data": 0,
        "target": 1,
        "references": 3,
    }
    assert {"master": 0, "target": 1, "references": 3}.items() <= manifest["seeds"].items()
    for name in ("data", "target", "references"):
        record = stages[name]
        assert record["status"] == "done" and record["seconds"] >= 0 and record["finished"]
    assert manifest["config"]["train"]["num_references"] == 1  # --num is recorded


# -- 6. run names stay inside the runs directory ------------------------------------------------


def test_run_names_stay_inside_the_runs_directory(tmp_path):
    from dpaudit.config import RunConfig
    from dpaudit.errors import ConfigError

    config, runs_dir = tmp_path / "tiny.toml", tmp_path / "runs"
    config.write_text(TINY)
    for name in ("../escape", "", ".", "..", "a/b", "/abs"):
        _refused(_cli("prepare", config, "--runs-dir", runs_dir, "--name", name), "run name")
        with pytest.raises(ConfigError, match="one directory name inside runs_dir"):
            RunConfig(name=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]  # nothing written
    runs_dir.mkdir()
    (runs_dir / "afile").write_text("mine")
    (runs_dir / "notes").mkdir()
    (runs_dir / "notes" / "keep.txt").write_text("mine")
    before = _tree(runs_dir)
    where = ("--runs-dir", runs_dir, "--name")
    _refused(_cli("prepare", config, *where, "afile"), "exists and is not a directory")
    _refused(_cli("prepare", config, *where, "notes"), "is not a dpaudit run")
    _refused(_cli("prepare", config, *where, "notes", "--force"), "is not a dpaudit run")
    inside_a_file = f"runs_dir={runs_dir / 'afile'}"
    _refused(_cli("prepare", config, "--name", "x", "--set", inside_a_file), "is not a directory")
    assert _tree(runs_dir) == before
