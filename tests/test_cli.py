"""CLI behaviour: fast --help, one-line errors with exit code 2, config and dataset commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from dpaudit import __version__


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t = time.perf_counter(); import dpaudit.cli; "
        "print(time.perf_counter() - t); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) < 0.5
    assert out[1] == "False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dpaudit.cli", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 2.0  # interpreter start-up included


def test_version(invoke):
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_config_commands(invoke, tmp_path):
    result = invoke("config", "show", "configs/quickstart.toml", "--set", "train.epochs=9")
    assert result.exit_code == 0 and "epochs = 9.0" in result.output
    assert invoke("config", "check", "configs/quickstart.toml").exit_code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\ndelta = 1.5\n")
    result = invoke("config", "check", str(bad))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {bad}:2: train.delta = 1.5 must be < 1"]
    result = invoke("config", "check", "configs/quickstart.toml", "--set", "train.epoch=1")
    assert result.exit_code == 2 and "did you mean 'epochs'" in result.output
    assert "Traceback" not in result.output


def test_debug_shows_traceback(invoke, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\ndelta = 1.5\n")
    result = invoke("--debug", "config", "check", str(bad))
    assert result.exit_code == 2 and "Traceback" in result.output


def test_datasets_synth_and_check(invoke, tmp_path):
    out = tmp_path / "corpus.jsonl"
    result = invoke(
        "datasets", "synth", "--domain", "banking", "--n", "300", "--seed", "1", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 300
    result = invoke("datasets", "check", str(out))
    assert (
        result.exit_code == 0
        and "records            300" in result.output
        and "CREDIT_CARD" in result.output
    )
    result = invoke("datasets", "check", str(out), "--json")
    summary = json.loads(result.output)
    assert summary["n_records"] == 300 and summary["pii_by_kind"]["PERSON"] > 0
    # PII values never appear in the summary, only counts
    first = json.loads(out.read_text().splitlines()[0])
    assert first["pii"][0]["value"] not in result.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file"),
        (b'{"text": "a"}\n{"text": \n', ":2: malformed JSON"),
        (b'{"body": "a"}\n', ":1: missing text field 'text'"),
        (b'{"text": "\xff"}\n', ":1: not valid UTF-8"),
    ],
)
def test_datasets_check_bad_input_is_one_line_exit_2(invoke, tmp_path, content, expected):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    result = invoke("datasets", "check", str(path))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and expected in lines[0]


def test_datasets_synth_bad_options_leave_no_file(invoke, tmp_path):
    out = tmp_path / "x.jsonl"
    result = invoke("datasets", "synth", "--domain", "legal", "--out", str(out))
    assert result.exit_code == 2 and not out.exists()
    result = invoke("datasets", "synth", "--n", "0", "--out", str(out))
    assert result.exit_code == 2 and not out.exists()


def test_prepare_writes_the_data_stage(invoke, tmp_path):
    args = [
        "prepare",
        "configs/quickstart.toml",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "p",
        "--set",
        "data.synth_n=200",
        "--set",
        "data.one_run_canaries=20",
        "--set",
        "data.vocab_size=300",
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    data = tmp_path / "p" / "data"
    for name in (
        "corpus.jsonl",
        "splits.json",
        "canaries.jsonl",
        "inclusion.json",
        "train_ids.json",
    ):
        assert (data / name).is_file(), name
    assert (data / "tokenizer" / "tokenizer.json").is_file()
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["stages"]["data"]["status"] == "done"
    # a second run without --resume refuses; with --resume the stage is skipped
    again = invoke(*args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0
    assert (
        json.loads((tmp_path / "p" / "manifest.json").read_text())["stages"]["data"]
        == manifest["stages"]["data"]
    )


def test_report_no_reveal_masks_a_run_configured_to_reveal(invoke, tmp_path):
    """`report --no-reveal` re-renders masked a run whose config says reveal = true."""
    from _run_fixture import recovered_values, write_run

    run = write_run(tmp_path, "shown", report={"reveal": True})
    secrets = [v for v in recovered_values(run) if len(v) >= 4]
    assert secrets
    shown = invoke("report", str(run), "--format", "md")
    assert shown.exit_code == 0, shown.output
    text = (run / "report" / "report.md").read_text()
    assert any(s in text for s in secrets)  # the config's reveal = true applies
    masked = invoke("report", str(run), "--format", "md", "--no-reveal")
    assert masked.exit_code == 0, masked.output
    text = (run / "report" / "report.md").read_text()
    assert not any(s in text for s in secrets)


def test_audit_checkpoint_options_come_from_one_declaration(invoke):
    """Every CLI field of CheckpointAuditOptions is an option; booleans have both forms."""
    import dataclasses

    from dpaudit.workflows.options import CheckpointAuditOptions

    text = invoke("audit-checkpoint", "--help").output
    for f in dataclasses.fields(CheckpointAuditOptions):
        if not f.metadata["cli"]:
            continue
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        assert flag in text, flag
        if isinstance(f.default, bool):
            assert f"--no-{flag[2:]}" in text, flag
