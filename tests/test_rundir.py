"""Run directory: manifest contents and hashing, stage records, resume decisions, atomic writes."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from dpaudit.atomic import atomic_open, atomic_path, dumps, read_json, write_json
from dpaudit.config import RunConfig, load_config
from dpaudit.errors import DpauditError, InputError
from dpaudit.rundir import RunDir, sha256_file, sha256_tree


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.npy") as tmp:
        np.save(tmp, np.arange(3))
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_strict_json_refuses_unknown_types_and_keeps_infinities(tmp_path):
    with pytest.raises(TypeError, match="refusing to serialise"):
        dumps({"x": object()})
    with pytest.raises(TypeError):
        dumps({"x": {1, 2}})
    text = dumps({"a": math.inf, "b": np.float32(0.5), "c": np.arange(2), "d": np.bool_(True)})
    assert json.loads(text) == {"a": "inf", "b": 0.5, "c": [0, 1], "d": True}
    path = write_json(tmp_path / "x.json", {"k": 1})
    assert read_json(path) == {"schema_version": "1.0", "k": 1}
    (tmp_path / "bad.json").write_text('{"a":\n}')
    with pytest.raises(InputError, match=r"bad.json:2: malformed JSON"):
        read_json(tmp_path / "bad.json")


def test_hashes_match_hashlib(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"dpaudit" * 1000)
    assert sha256_file(f) == hashlib.sha256(b"dpaudit" * 1000).hexdigest()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    tree = sha256_tree(tmp_path)
    assert tree == {"a.bin": sha256_file(f), "sub/b.txt": hashlib.sha256(b"b").hexdigest()}


def test_manifest_records_provenance_inputs_and_stages(tmp_path):
    cfg = load_config(sets=["seed=5"], overrides={"runs_dir": str(tmp_path), "name": "r1"})
    run = RunDir.create(cfg, argv=["dpaudit", "run", "x.toml"])
    m = run.manifest()
    assert m["schema_version"] == "1.0"
    assert m["argv"] == ["dpaudit", "run", "x.toml"]
    assert m["seeds"] == {"master": 5}
    assert m["config"]["seed"] == 5 and m["config"]["train"]["model"] == "embedded:gpt2-tiny"
    for pkg in ("dpaudit", "python", "torch", "transformers", "peft", "opacus"):
        assert pkg in m["versions"]
    assert (run.path / "config.toml").read_text().startswith('name = "r1"')
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "a"}\n')
    hashes = run.record_inputs({"dataset": data})
    assert run.manifest()["inputs"]["dataset"]["sha256"] == hashes["dataset"] == sha256_file(data)

    with run.stage("train", {"dataset": hashes["dataset"]}) as rec:
        rec.outputs["w"] = "abc"
    stage = run.manifest()["stages"]["train"]
    assert stage["status"] == "done" and stage["seconds"] >= 0 and stage["outputs"] == {"w": "abc"}
    assert run.can_skip("train", {"dataset": hashes["dataset"]})
    assert not run.can_skip("train", {"dataset": "0" * 64})
    assert not run.can_skip("attack", {})

    with pytest.raises(ValueError), run.stage("attack", {}):
        raise ValueError("bad\nsecond line")
    failed = run.manifest()["stages"]["attack"]
    assert failed["status"] == "failed" and failed["error"] == "ValueError: bad"
    assert not run.can_skip("attack", {})


def test_existing_run_needs_resume(tmp_path):
    cfg = RunConfig(name="r", runs_dir=str(tmp_path))
    first = RunDir.create(cfg)
    with first.stage("data", {"x": "1"}):
        pass
    with pytest.raises(DpauditError, match="--resume"):
        RunDir.create(cfg)
    again = RunDir.create(cfg, resume=True)
    assert again.can_skip("data", {"x": "1"})
    assert again.manifest()["created"] == first.manifest()["created"]
    with pytest.raises(DpauditError, match="not a dpaudit run directory"):
        RunDir(tmp_path / "nothing").manifest()


def test_output_hashes_prefix_each_stage(tmp_path):
    run = RunDir.create(RunConfig(name="o", runs_dir=str(tmp_path)))
    with run.stage("target") as rec:
        rec.outputs.update({"model.safetensors": "aa", "privacy.json": "bb"})
    with run.stage("data") as rec:
        rec.outputs["splits.json"] = "cc"
    assert run.output_hashes("target", "references", "data") == {
        "target/model.safetensors": "aa",
        "target/privacy.json": "bb",
        "data/splits.json": "cc",
    }
