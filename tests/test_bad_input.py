"""The bad-input battery (issue 12): every kind fails fast, on one line, writing nothing.

Each kind is one parametrised test. Every case asserts exit code 2 from the
CLI, one output line naming the file or option at fault, no traceback,
nothing written (the runs directory or ``--out`` stays absent) and a bounded
time: the call runs in a daemon thread that must finish within 30 s, so a hang
(a FIFO read) fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dpaudit.cli import cli

TIMEOUT_S = 30.0


def _bounded(fn: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"did not finish within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _refused(args: list[str], name: str, *absent: Path) -> str:
    """Run the CLI; assert exit 2, one line naming ``name``, no traceback, ``absent`` not written."""
    result = _bounded(lambda: CliRunner().invoke(cli, args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert name in lines[0], lines[0]
    for path in absent:
        assert not path.exists(), f"{path} was written"
    return lines[0]


def _config(tmp_path: Path, data: Path | str | None = None, extra: str = "") -> Path:
    """A tiny run config (5 records fit a batch of 2) reading ``data``."""
    path_line = f"path = {json.dumps(str(data))}\n" if data is not None else ""
    text = (
        'name = "bad"\n'
        f"{extra}"
        f"[data]\n{path_line}"
        "[train]\nbatch_size = 2\nphysical_batch_size = 2\n"
    )
    config = tmp_path / "bad.toml"
    config.write_text(text)
    return config


def _records(path: Path, n: int = 5, **fields: Any) -> Path:
    path.write_text(
        "".join(json.dumps({"text": f"record number {i}", **fields}) + "\n" for i in range(n))
    )
    return path


# --------------------------------------------------------------------------- 1. unbounded reads


def _fifo(d: Path) -> Path:
    path = d / "data.jsonl"
    os.mkfifo(path)
    return path


def _dev_zero(d: Path) -> Path:
    path = d / "data.jsonl"
    path.symlink_to("/dev/zero")
    return path


def _dev_null(d: Path) -> Path:
    path = d / "data.jsonl"
    path.symlink_to("/dev/null")
    return path


def _deep(d: Path) -> Path:
    path = _records(d / "data.jsonl", 3)
    with path.open("a") as handle:
        handle.write('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    return path


def _over_cap(d: Path) -> Path:
    return _records(d / "data.jsonl", 200)  # > the 1000-byte cap the test sets


def _huge_int(d: Path) -> Path:
    path = _records(d / "data.jsonl", 3)
    with path.open("a") as handle:
        handle.write('{"text": "x", "meta": ' + "9" * 5000 + "}\n")
    return path


UNBOUNDED = [
    pytest.param(_fifo, "a FIFO", id="fifo"),
    pytest.param(_dev_zero, "a device", id="symlink-to-dev-zero"),
    pytest.param(_dev_null, "a device", id="symlink-to-dev-null"),
    pytest.param(_deep, ":4: JSON nested too deeply", id="nested-100k-deep"),
    pytest.param(_over_cap, "input limit", id="over-size-cap"),
    pytest.param(_huge_int, ":4: malformed JSON", id="integer-5000-digits"),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
@pytest.mark.parametrize("make, message", UNBOUNDED)
@pytest.mark.parametrize("command", ["prepare", "datasets-check", "json-readers"])
def test_unbounded_reads(tmp_path, monkeypatch, make, message, command):
    """Records (``prepare``, ``datasets check``) and the JSON run-file readers
    (``read_json``: ``inclusion.json`` and every run file; ``read_canaries``)."""
    import dpaudit.inputs as inputs

    if make is _over_cap:
        monkeypatch.setattr(inputs, "MAX_READ_BYTES", 1000)
    data = make(tmp_path)
    runs = tmp_path / "runs"
    if command == "json-readers":
        from dpaudit.atomic import read_json
        from dpaudit.datasets.canaries import read_canaries
        from dpaudit.errors import InputError

        if make in (_deep, _huge_int):  # one value (line 1), not JSONL of records
            data.write_text(data.read_text().splitlines()[-1].rsplit(": ", 1)[1][:-1] + "\n")
            message = message.replace(":4:", ":1:")
        for reader, where in ((read_json, ""), (read_canaries, message[:3])):
            with pytest.raises(InputError) as info:
                _bounded(lambda reader=reader: reader(data))
            assert str(info.value).startswith(str(data)), info.value
            assert message.lstrip(":1234") in str(info.value)
            assert where in str(info.value)
        return
    if command == "prepare":
        args = ["prepare", str(_config(tmp_path, data)), "--runs-dir", str(runs)]
    else:
        args = ["datasets", "check", str(data)]
    line = _refused(args, str(data), runs)
    assert message in line


# --------------------------------------------------------------------------- 2. a named cause


def _surrogate(d: Path) -> list[str]:
    path = _records(d / "data.jsonl", 4)
    with path.open("a") as handle:
        handle.write('{"text": "broken \\ud800 text"}\n')
    return ["prepare", str(_config(d, path)), "--runs-dir", str(d / "runs")]


def _surrogate_check(d: Path) -> list[str]:
    return ["datasets", "check", _surrogate(d)[1].replace("bad.toml", "data.jsonl")]


def _seed_option(d: Path) -> list[str]:
    data = _records(d / "data.jsonl")
    return ["prepare", str(_config(d, data)), "--runs-dir", str(d / "runs"), "--seed", str(2**70)]


def _seed_file(d: Path) -> list[str]:
    data = _records(d / "data.jsonl")
    config = _config(d, data, extra=f"seed = {2**70}\n")
    return ["prepare", str(config), "--runs-dir", str(d / "runs")]


def _seed_check(d: Path) -> list[str]:
    return ["config", "check", str(_config(d, extra=f"seed = {2**32}\n"))]


def _seed_set(d: Path) -> list[str]:
    data = _records(d / "data.jsonl")
    return ["train", str(_config(d, data)), "--runs-dir", str(d / "runs"), "--set", "seed=-1"]


def _missing_train(d: Path) -> list[str]:
    return ["train", str(_config(d, d / "absent.jsonl")), "--runs-dir", str(d / "runs")]


def _missing_check(d: Path) -> list[str]:
    return ["config", "check", str(_config(d, d / "absent.jsonl"))]


def _symlink_loop(d: Path) -> list[str]:
    (d / "a.jsonl").symlink_to(d / "b.jsonl")
    (d / "b.jsonl").symlink_to(d / "a.jsonl")
    return ["prepare", str(_config(d, d / "a.jsonl")), "--runs-dir", str(d / "runs")]


def _loop_check(d: Path) -> list[str]:
    (d / "a.jsonl").symlink_to(d / "a.jsonl")
    return ["datasets", "check", str(d / "a.jsonl")]


def _under_file(d: Path) -> list[str]:
    data = _records(d / "data.jsonl")
    (d / "afile").write_text("x")
    return ["prepare", str(_config(d, data)), "--runs-dir", str(d / "afile" / "runs")]


def _read_only_fs(d: Path) -> list[str]:
    data = _records(d / "data.jsonl")
    return ["prepare", str(_config(d, data)), "--runs-dir", f"/proc/dpaudit-{d.name}"]


def _read_only_dir(d: Path) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory")
    data = _records(d / "data.jsonl")
    (d / "ro").mkdir()
    (d / "ro").chmod(0o500)
    return ["prepare", str(_config(d, data)), "--runs-dir", str(d / "ro" / "runs")]


def _report_read_only_fs(d: Path, run: Path) -> list[str]:
    return ["report", str(run), "--format", "json", "--out", f"/proc/dpaudit-{d.name}"]


def _report_under_file(d: Path, run: Path) -> list[str]:
    (d / "afile").write_text("x")
    return ["report", str(run), "--format", "json", "--out", str(d / "afile" / "report")]


NEEDS_RUN = (_report_read_only_fs, _report_under_file)

NAMED = [
    pytest.param(_surrogate, "data.jsonl:5: text holds a lone UTF-16 surrogate", id="surrogate"),
    pytest.param(_surrogate_check, "data.jsonl:5", id="surrogate-datasets-check"),
    pytest.param(_seed_option, f"option: run.seed = {2**70}", id="seed-2^70-option"),
    pytest.param(_seed_file, "seed", id="seed-2^70-config"),
    pytest.param(_seed_check, "4294967295", id="seed-2^32-config-check"),
    pytest.param(_seed_set, "--set", id="seed-negative-set"),
    pytest.param(_missing_train, "absent.jsonl: file not found", id="missing-data-train"),
    pytest.param(_missing_check, "absent.jsonl: file not found", id="missing-data-check"),
    pytest.param(_symlink_loop, "a.jsonl: cannot read", id="symlink-loop"),
    pytest.param(_loop_check, "a.jsonl: cannot read", id="self-symlink-datasets-check"),
    pytest.param(_under_file, "afile", id="runs-dir-under-a-file"),
    pytest.param(_read_only_fs, "/proc/dpaudit-", id="runs-dir-read-only-fs"),
    pytest.param(_read_only_dir, "not writable", id="runs-dir-read-only-dir"),
    pytest.param(_report_read_only_fs, "cannot write the report", id="report-out-read-only-fs"),
    pytest.param(_report_under_file, "afile/report: cannot write", id="report-out-under-a-file"),
]


@pytest.mark.parametrize("make, name", NAMED)
def test_named_cause(tmp_path, recorded_run, make, name):
    args = make(tmp_path, recorded_run) if make in NEEDS_RUN else make(tmp_path)
    _refused(args, name, tmp_path / "runs", tmp_path / "afile" / "runs", tmp_path / "ro" / "runs")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64, n_embd=8, n_layer=1, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    GPT2LMHeadModel(config).save_pretrained(root)
    return root


def _header(good: bytes) -> tuple[int, dict[str, Any]]:
    n = struct.unpack("<Q", good[:8])[0]
    return n, json.loads(good[8 : 8 + n])


def _offsets_past_end(good: bytes) -> bytes:
    n, header = _header(good)
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"] = [0, 10**9]
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + good[8 + n :]


SAFETENSORS = [
    pytest.param(lambda good: good[: len(good) // 2], id="truncated"),
    pytest.param(lambda good: b"", id="empty"),
    pytest.param(lambda good: b"not a safetensors file " * 20, id="garbage"),
    pytest.param(lambda good: struct.pack("<Q", 2**62) + good[8:], id="header-length-2^62"),
    pytest.param(_offsets_past_end, id="offsets-past-end"),
]


@pytest.mark.parametrize("corrupt", SAFETENSORS)
def test_corrupt_safetensors(tmp_path, tiny_model, corrupt):
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(tiny_model / "config.json", model / "config.json")
    good = (tiny_model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(corrupt(good))
    members = _records(tmp_path / "members.jsonl")
    nonmembers = tmp_path / "nonmembers.jsonl"
    nonmembers.write_text("".join(json.dumps({"text": f"other {i}"}) + "\n" for i in range(5)))
    out = tmp_path / "out"
    args = ["audit-checkpoint", "--model", str(model), "--members", str(members)]
    args += ["--nonmembers", str(nonmembers), "--out", str(out)]
    line = _refused(args, str(model / "model.safetensors"), out)
    assert "not a valid safetensors file" in line


# --------------------------------------------------------------------------- 3. checked too late


def _five(d: Path) -> Path:
    return _records(d / "data.jsonl")


LATE = [
    pytest.param(_five, 'secret_space = "hex:4"', "", "data.secret_space", id="secret-hex"),
    pytest.param(_five, 'secret_space = "digits:0"', "", "data.secret_space", id="secret-digits0"),
    pytest.param(_five, "", 'model = "embedded:gpt3"', "train.model", id="embedded-gpt3"),
    pytest.param(_five, "", 'device = "tpu"', "train.device", id="device-tpu"),
    pytest.param(_five, "", 'device = "cuda:x"', "train.device", id="device-cuda-x"),
    pytest.param(
        _five,
        "",
        'device = "cuda:7"',
        "train.device",
        id="device-cuda-not-visible",
        marks=pytest.mark.skipif(
            __import__("torch").cuda.device_count() > 7, reason="8 CUDA devices visible"
        ),
    ),
    pytest.param(_five, "", "batch_size = 64", "train.batch_size", id="batch-over-data"),
    pytest.param(lambda d: _records(d / "data.jsonl", 1), "", "", "too few", id="single-record"),
    pytest.param(
        _five, "", 'task = "classification"', "has no label", id="unlabeled-classification"
    ),
]


@pytest.mark.parametrize("make, data_extra, train_extra, name", LATE)
@pytest.mark.parametrize("command", ["config-check", "train"])
def test_checked_before_writing(tmp_path, make, data_extra, train_extra, name, command):
    data = make(tmp_path)
    config = tmp_path / "late.toml"
    train = "\n".join(
        line
        for line in ("batch_size = 2", "physical_batch_size = 2", train_extra)
        if line and not (train_extra.startswith("batch_size") and line == "batch_size = 2")
    )
    config.write_text(
        f'name = "late"\n[data]\npath = {json.dumps(str(data))}\n{data_extra}\n[train]\n{train}\n'
    )
    runs = tmp_path / "runs"
    if command == "train":
        args = ["train", str(config), "--runs-dir", str(runs)]
    else:
        args = ["config", "check", str(config)]
    line = _refused(args, name, runs)
    assert str(config) in line  # the file (and line) the setting came from


# --------------------------------------------------------------------------- 4. corrupt run files


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory) -> Path:
    """A synthetic run whose attack stages recorded their scores' hashes, as the real stage does."""
    from _run_fixture import write_run

    from dpaudit.attacks.scores import score_hashes
    from dpaudit.rundir import RunDir

    run_path = write_run(tmp_path_factory.mktemp("runs"), "demo")
    run = RunDir(run_path)
    manifest = run.manifest()
    for model in ("target", "baseline"):
        record = manifest["stages"][f"attacks/{model}"]
        record["outputs"] = score_hashes(run_path / "attacks" / model)
        assert record["outputs"], "the fixture wrote no scores"
    run._write(manifest)
    return run_path


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPT = [
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[:100]), "does not match", id="truncated"),
    pytest.param(lambda p: p.write_bytes(b"garbage" * 50), "does not match", id="garbage"),
    pytest.param(_flip_byte, "does not match", id="one-byte-flipped"),
    pytest.param(lambda p: p.unlink(), "missing", id="deleted"),
]


@pytest.mark.parametrize("corrupt, message", CORRUPT)
def test_corrupt_scores(tmp_path, recorded_run, corrupt, message):
    run = tmp_path / "demo"
    shutil.copytree(recorded_run, run)
    scores = run / "attacks" / "target" / "loss" / "scores.parquet"
    corrupt(scores)
    out = tmp_path / "report"
    line = _refused(["report", str(run), "--format", "json", "--out", str(out)], str(scores), out)
    assert message in line


def test_recorded_scores_report(tmp_path, recorded_run):
    """Control: intact scores with recorded hashes still make a report."""
    out = tmp_path / "report"
    result = _bounded(
        lambda: CliRunner().invoke(
            cli, ["report", str(recorded_run), "--format", "json", "--out", str(out)]
        )
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.json").is_file()
