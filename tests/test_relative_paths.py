"""Secrets at rest and provenance paths (issue: files at rest, absolute paths).

- ``manifest.json`` and the report record paths as given, relative to the working directory
  when they lie under it, and the program of a command line by its name, never the
  interpreter's path; ``DPAUDIT_ABSOLUTE_PATHS=1`` records absolute paths instead. The SHA-256
  hashes stay, so provenance remains verifiable.
- The report lists the run's owner-only files (secrets, PII, coin flips) with their modes.
- Readers of the recorded paths (resume checks, ``load_prepared``) still work.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from _run_fixture import write_run

from dpaudit.rundir import (
    ABSOLUTE_PATHS_ENV,
    RunDir,
    recorded_argv,
    recorded_config,
    recorded_path,
    same_setting,
    sha256_file,
)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """cwd = tmp_path, umask 022, no opt-in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ABSOLUTE_PATHS_ENV, raising=False)
    old = os.umask(0o022)
    try:
        yield tmp_path
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the rules ---------------------------------------------------------------------------------


def test_recorded_path_rules(in_tmp, monkeypatch):
    inside = in_tmp / "data" / "x.jsonl"
    assert recorded_path(inside) == "data/x.jsonl"
    assert recorded_path(in_tmp) == "."
    assert recorded_path("data/x.jsonl") == "data/x.jsonl"  # relative: as given
    assert recorded_path("../elsewhere/x.csv") == "../elsewhere/x.csv"
    assert recorded_path("gpt2") == "gpt2"  # a hub id
    outside = Path(os.path.abspath(in_tmp / ".." / "other" / "x.csv"))
    assert recorded_path(outside) == str(outside)  # not under the cwd: as given
    monkeypatch.setenv(ABSOLUTE_PATHS_ENV, "1")
    inside.parent.mkdir()
    inside.write_text("{}\n")
    assert recorded_path("data/x.jsonl") == str(inside.resolve())
    assert recorded_path("gpt2") == "gpt2"  # not a file: as given


def test_recorded_argv_names_the_program_not_the_interpreter(in_tmp, monkeypatch):
    argv = [
        "/opt/venv/bin/dpaudit",
        "audit-checkpoint",
        "--model",
        str(in_tmp / "model"),
        f"--out={in_tmp / 'runs' / 'a'}",
        "--set",
        f"data.path={in_tmp / 'd.csv'}",
    ]
    assert recorded_argv(argv) == [
        "dpaudit",
        "audit-checkpoint",
        "--model",
        "model",
        "--out=runs/a",
        "--set",
        "data.path=d.csv",
    ]
    assert recorded_argv(["/usr/lib/python3/site-packages/dpaudit/__main__.py", "run"]) == [
        "python -m dpaudit",
        "run",
    ]
    monkeypatch.setenv(ABSOLUTE_PATHS_ENV, "1")
    assert recorded_argv(argv) == argv


def test_path_settings_compare_by_location(in_tmp):
    assert same_setting("data.path", "d.csv", str(in_tmp / "d.csv"))
    assert not same_setting("data.path", "d.csv", str(in_tmp / "e.csv"))
    assert not same_setting("data.synth_n", 500, 2000)
    config = recorded_config({"runs_dir": str(in_tmp / "runs"), "data": {"path": None}})
    assert config == {"runs_dir": "runs", "data": {"path": None}}


# -- a run ---------------------------------------------------------------------------------------


def _texts(run: Path) -> dict[str, str]:
    out = {"manifest.json": (run / "manifest.json").read_text()}
    for name in ("report.json", "report.md", "report.html"):
        if (run / "report" / name).is_file():
            out[name] = (run / "report" / name).read_text()
    return out


def _report_of(run: Path, formats=("json", "md", "html")) -> dict:
    from dpaudit.workflows.run import run_report

    run_report(run, formats=formats)
    return json.loads((run / "report" / "report.json").read_text())


def test_run_records_no_absolute_path_and_lists_owner_only_files(in_tmp):
    run = write_run(in_tmp / "runs", "demo")  # absolute runs_dir, under the cwd
    data = in_tmp / "corpus.csv"
    data.write_text("text\nhello\n")
    RunDir(run).record_inputs({"dataset": data})
    assert _mode(run) == 0o700  # a new run directory is owner-only
    report = _report_of(run)
    texts = _texts(run)
    assert set(texts) == {"manifest.json", "report.json", "report.md", "report.html"}
    for name, text in texts.items():
        assert str(in_tmp) not in text, name
    manifest = json.loads(texts["manifest.json"])
    assert manifest["config"]["runs_dir"] == "runs"
    assert manifest["inputs"]["dataset"] == {"path": "corpus.csv", "sha256": sha256_file(data)}
    assert report["fingerprints"]["inputs"]["dataset"]["path"] == "corpus.csv"

    rest = report["run"]["files_at_rest"]
    assert {
        "data/inclusion.json",
        "data/splits.json",
        "data/train_ids.json",
        "data/canaries.jsonl",
        "attacks/target/recovered.json",
        "target/train_log.jsonl",
    } <= set(rest["private"])
    assert set(rest["private"].values()) == {"0600"}
    assert rest["run_dir_mode"] == "0700"
    assert "0600" in rest["statement"] and "0700" in rest["statement"]
    assert "manifest.json" not in rest["private"] and "report/report.json" not in rest["private"]
    for name in ("report.md", "report.html"):
        assert "Files at rest" in texts[name] and "data/inclusion.json" in texts[name]


def test_a_file_readable_by_others_is_named(in_tmp):
    run = write_run(in_tmp / "runs", "demo")
    os.chmod(run / "data" / "inclusion.json", 0o644)
    rest = _report_of(run, formats=("json",))["run"]["files_at_rest"]
    assert rest["private"]["data/inclusion.json"] == "0644"
    assert "Readable by others now: data/inclusion.json (0644)" in rest["statement"]


def test_opt_in_records_absolute_paths(in_tmp, monkeypatch):
    monkeypatch.setenv(ABSOLUTE_PATHS_ENV, "1")
    run = write_run("runs", "demo")  # relative runs_dir: recorded absolute
    data = in_tmp / "corpus.csv"
    data.write_text("text\nhello\n")
    RunDir(run).record_inputs({"dataset": "corpus.csv"})
    report = _report_of(run, formats=("json",))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["runs_dir"] == str(in_tmp / "runs")
    assert manifest["inputs"]["dataset"]["path"] == str(data)
    assert report["config"]["runs_dir"] == str(in_tmp / "runs")
    assert report["fingerprints"]["inputs"]["dataset"]["path"] == str(data)


def test_older_absolute_manifest_is_reported_relative(in_tmp):
    """A run recorded by an older dpaudit (absolute paths): the report still records them relative."""
    run = write_run(in_tmp / "runs", "demo")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["runs_dir"] = str(in_tmp / "runs")
    manifest["argv"] = [str(in_tmp / ".venv" / "bin" / "dpaudit"), "run", str(in_tmp / "x.toml")]
    manifest["inputs"] = {"dataset": {"path": str(in_tmp / "corpus.csv"), "sha256": "0" * 64}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    report = _report_of(run, formats=("json",))
    assert str(in_tmp) not in json.dumps(report)
    assert report["run"]["argv"] == ["dpaudit", "run", "x.toml"]


def test_resume_accepts_the_same_dataset_recorded_relative(in_tmp):
    """The resume check compares a recorded relative path with the absolute one given now."""
    from dpaudit.config import load_config
    from dpaudit.workflows.integrity import open_run, settings_conflicts

    data = in_tmp / "corpus.csv"
    data.write_text("text\n" + "".join(f"record number {i}\n" for i in range(40)))
    config = load_config(
        overrides={"runs_dir": str(in_tmp / "runs"), "name": "r", "data": {"path": str(data)}}
    )
    run = open_run(config, argv=["dpaudit", "prepare"])
    with run.stage("data", {"dataset": sha256_file(data)}):
        pass
    manifest = run.manifest()
    assert manifest["config"]["data"]["path"] == "corpus.csv"
    assert settings_conflicts(run, manifest, config) == []
    assert not open_run(config, resume=True).manifest().get("config_changed_on_resume")
    other = in_tmp / "other.csv"
    other.write_text(data.read_text())
    moved = load_config(
        overrides={"runs_dir": str(in_tmp / "runs"), "name": "r", "data": {"path": str(other)}}
    )
    assert [c.split(":")[0] for c in settings_conflicts(run, manifest, moved)] == ["data.path"]


# -- a checkpoint audit ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random GPT-2 and its tokenizer saved as a checkpoint, and member/non-member files."""
    pytest.importorskip("torch")
    from _tiny_lm import make_texts

    from dpaudit.attacks.scoring import tiny_causal_lm
    from dpaudit.datasets.loaders import write_records
    from dpaudit.datasets.records import Record
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("relative")
    texts = make_texts(48, seed=11)
    tok = train_bpe_tokenizer(texts, vocab_size=300)
    tiny_causal_lm(tok, seed=0).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    write_records(root / "members.jsonl", [Record(f"m{i}", t) for i, t in enumerate(texts[:24])])
    write_records(root / "nonmembers.jsonl", [Record(f"n{i}", t) for i, t in enumerate(texts[24:])])
    return root


def _audit(root: Path, out: str):
    import torch

    import dpaudit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return dpaudit.audit_checkpoint(
            root / "model",  # absolute paths, under the cwd
            members=root / "members.jsonl",
            nonmembers=root / "nonmembers.jsonl",
            out=root / out,
            attacks=["loss"],
            parts="mia",
            progress=False,
            sets=["data.max_length=32", "attack.bootstrap=0"],
        )
    finally:
        torch.set_num_threads(threads)


def test_checkpoint_audit_records_relative_paths(checkpoint, monkeypatch):
    from dpaudit.datasets.loaders import load_records
    from dpaudit.datasets.tokenizer import load_tokenizer
    from dpaudit.workflows.run import config_of_run

    monkeypatch.chdir(checkpoint)
    monkeypatch.delenv(ABSOLUTE_PATHS_ENV, raising=False)
    result = _audit(checkpoint, "audit-rel")
    run = result.run_dir
    texts = _texts(run)
    assert {"manifest.json", "report.json"} <= set(texts)
    for name, text in texts.items():
        assert str(checkpoint) not in text, name
    manifest = json.loads(texts["manifest.json"])
    assert manifest["inputs"]["members"] == {
        "path": "members.jsonl",
        "sha256": sha256_file(checkpoint / "members.jsonl"),
    }
    assert manifest["inputs"]["model/model.safetensors"]["path"] == "model/model.safetensors"
    assert manifest["config"]["data"]["path"] == "members.jsonl"
    assert manifest["config"]["data"]["tokenizer"] == "model"
    assert manifest["argv"] == ["dpaudit.audit_checkpoint", "model"]
    rest = json.loads(texts["report.json"])["run"]["files_at_rest"]
    assert rest["private"].get("data/splits.json") == "0600"
    assert rest["run_dir_mode"] == "0700"
    # what reads the recorded paths back still finds them (from the same directory)
    config = config_of_run(run)
    assert load_records(config.data.path)[0].id == "m0"
    assert load_tokenizer(config.data.tokenizer) is not None


def test_checkpoint_audit_opt_in_records_absolute_paths(checkpoint, monkeypatch):
    monkeypatch.chdir(checkpoint)
    monkeypatch.setenv(ABSOLUTE_PATHS_ENV, "1")
    run = _audit(checkpoint, "audit-abs").run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    members = str((checkpoint / "members.jsonl").resolve())
    assert manifest["inputs"]["members"]["path"] == members
    assert manifest["config"]["data"]["path"] == members
    assert members in (run / "report" / "report.json").read_text()
