"""``dpaudit audit-checkpoint``: auditing a checkpoint trained elsewhere, and safe loading.

A tiny model is trained by the real pipeline; its ``target/`` directory is then
copied away and audited as a foreign checkpoint. The attacks and the audit must
give exactly what the pipeline gives on the same examples.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

TINY = """
name = "src"
seed = 0
[data]
synth_n = 200
one_run_canaries = 40
vocab_size = 400
max_length = 40
canary_repetitions = [1, 8]
canaries_per_repetition = 1
secret_space = "digits:2"
[train]
epochs = 2.0
batch_size = 32
physical_batch_size = 32
target_epsilon = 4.0
baseline = false
num_references = 0
checkpoint_every = 100
[attack]
bootstrap = 20
extraction_samples = 1
attacks = ["loss", "zlib", "mink", "minkpp"]
[audit]
delta = 1e-5
"""
MIA = ("loss", "zlib", "mink", "minkpp")
# The pipeline's data.max_length and attack settings, so that scores are comparable.
SETS = (
    "--set",
    "data.max_length=40",
    "--set",
    "attack.bootstrap=20",
    "--set",
    "attack.extraction_samples=1",
)


def _one_error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def dpaudit_cli():
    """The dpaudit CLI (``audit-checkpoint`` is one of its commands)."""
    from dpaudit.cli import cli

    return cli


@pytest.fixture(scope="module")
def source(tmp_path_factory, dpaudit_cli):
    """A pipeline run (train, attack mia, audit), its target copied away, and the audit input files."""
    from click.testing import CliRunner

    import dpaudit

    root = tmp_path_factory.mktemp("checkpoint")
    (root / "tiny.toml").write_text(TINY)
    runner = CliRunner()
    run = root / "runs" / "src"
    for args in (
        ["train", str(root / "tiny.toml"), "--runs-dir", str(root / "runs")],
        ["attack", "mia", "--run", str(run)],
        ["audit", str(run)],
    ):
        result = runner.invoke(dpaudit_cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    files = dpaudit.export_audit_inputs(run, root)
    model = root / "model"
    shutil.copytree(run / "target", model)
    ledger = json.loads((run / "target" / "privacy.json").read_text())
    return {
        "root": root,
        "run": run,
        "model": model,
        "files": files,
        "runner": runner,
        "epsilon": ledger["epsilons"]["pld"],
        "delta": ledger["delta"],
    }


def _args(src, out, *extra):
    f = src["files"]
    return [
        "audit-checkpoint",
        "--model",
        str(src["model"]),
        "--members",
        str(f["members"]),
        "--nonmembers",
        str(f["nonmembers"]),
        "--out",
        str(out),
        *SETS,
        *extra,
    ]


def _claim(src):
    data = src["run"] / "data"
    return (
        "--canaries",
        str(data / "canaries.jsonl"),
        "--canary-inclusion",
        str(data / "inclusion.json"),
        "--claimed-epsilon",
        repr(src["epsilon"]),
        "--delta",
        repr(src["delta"]),
    )


@pytest.fixture(scope="module")
def audited(source, dpaudit_cli):
    out = source["root"] / "audit"
    result = source["runner"].invoke(
        dpaudit_cli, _args(source, out, *_claim(source)), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_attacks_equal_the_pipeline(source, audited):
    from dpaudit.attacks.scores import AttackScores

    out, output = audited
    for attack in MIA:
        mine = json.loads((out / "attacks" / "target" / attack / "metrics.json").read_text())
        theirs = json.loads(
            (source["run"] / "attacks" / "target" / attack / "metrics.json").read_text()
        )
        assert mine["auc"] == pytest.approx(theirs["auc"], abs=1e-9), attack
        a = AttackScores.load(out / "attacks" / "target" / attack)
        b = AttackScores.load(source["run"] / "attacks" / "target" / attack)
        assert list(a.example_ids) == list(b.example_ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-9)
    for name in ("canary.json", "memorization.json", "pii.json", "recovered.json", "status.json"):
        assert (out / "attacks" / "target" / name).is_file(), name
    assert (out / "attacks" / "blind.json").is_file()
    # 40 canaries cannot reach the claim (ceiling < ε) and there is no control: inconclusive
    assert "→ inconclusive" in output


def test_audit_equals_the_pipeline_against_the_claim(source, audited):
    from dpaudit.trainers.privacy import read_privacy

    out, _ = audited
    mine = json.loads((out / "audit" / "bounds.json").read_text())["models"]["target"]
    theirs = json.loads((source["run"] / "audit" / "bounds.json").read_text())["models"]["target"]
    assert mine["verdict"] == theirs["verdict"] == "inconclusive"
    assert mine["ceiling"] == theirs["ceiling"] < source["epsilon"]
    assert mine["lower"] == theirs["lower"]
    assert (
        mine["upper"] == {"claimed": pytest.approx(source["epsilon"])}
        and mine["primary_accountant"] == "claimed"
    )
    ledger, payload = read_privacy(out / "target" / "privacy.json")
    assert ledger.mechanism == "claimed" and ledger.epsilons == {
        "claimed": pytest.approx(source["epsilon"])
    }
    assert ledger.delta == source["delta"] and payload["primary_accountant"] == "claimed"


def test_run_directory_layout(source, audited):
    from dpaudit.rundir import sha256_file

    out, _ = audited
    assert not [
        p for p in (out / "target").iterdir() if p.suffix in (".safetensors", ".bin", ".pt")
    ]
    origin = json.loads((out / "target" / "source.json").read_text())
    digest = sha256_file(source["model"] / "model.safetensors")
    assert origin["weights"] == {"model.safetensors": digest} and origin["format"] == "safetensors"
    assert (
        origin["trust_remote_code"] is False
        and origin["tokenizer_size"] <= origin["embedding_rows"]
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["model/model.safetensors"]["sha256"] == digest
    assert {"members", "nonmembers", "canaries", "canary_inclusion"} <= set(manifest["inputs"])
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert manifest["config"]["data"]["path"] == str(source["files"]["members"].resolve())
    splits = json.loads((out / "data" / "splits.json").read_text())
    members = [
        json.loads(line)["id"] for line in source["files"]["members"].read_text().splitlines()
    ]
    assert splits["members"] == members and not set(splits["members"]) & set(splits["nonmembers"])
    for name in ("canaries.jsonl", "inclusion.json"):
        assert (out / "data" / name).read_text() == (source["run"] / "data" / name).read_text()


def test_report_is_built_from_the_run(audited):
    out, output = audited
    assert "report: " in output and (out / "report" / "report.html").is_file()
    report = json.loads((out / "report" / "report.json").read_text())
    target = report["models"]["target"]
    assert target["summary"]["audit_verdict"] == "inconclusive"
    assert target["privacy"]["mechanism"] == "claimed" and set(target["attacks"]) == set(MIA)


def test_pickle_only_checkpoint_needs_allow_pickle(source, audited, dpaudit_cli):
    import torch
    from safetensors.torch import load_file

    pickled = source["root"] / "pickled"
    shutil.copytree(source["model"], pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    src = {**source, "model": pickled}
    refused = src["runner"].invoke(
        dpaudit_cli,
        _args(src, src["root"] / "p1", "--attacks", "loss", "--parts", "mia", "--no-report"),
    )
    assert "--allow-pickle" in _one_error_line(refused) and "pytorch_model.bin" in refused.output
    assert not (src["root"] / "p1").exists()
    out = src["root"] / "p2"
    result = src["runner"].invoke(
        dpaudit_cli,
        _args(src, out, "--attacks", "loss", "--parts", "mia", "--allow-pickle", "--no-report"),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    origin = json.loads((out / "target" / "source.json").read_text())
    assert origin["format"].startswith("pickle") and origin["weights_loaded"] == [
        "pytorch_model.bin"
    ]
    auc = json.loads((out / "attacks" / "target" / "loss" / "metrics.json").read_text())["auc"]
    expected = json.loads(
        (audited[0] / "attacks" / "target" / "loss" / "metrics.json").read_text()
    )["auc"]
    assert auc == pytest.approx(expected, abs=1e-9)


def test_load_scoring_model_accepts_loaded_and_pickled_models(source, tmp_path):
    import torch
    from safetensors.torch import load_file

    from dpaudit.attacks.stage import load_scoring_model
    from dpaudit.config import RunConfig
    from dpaudit.trainers.safe_load import load_model

    pickled = tmp_path / "pickled"
    shutil.copytree(source["model"], pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    config, text = RunConfig(), ["my secret code is 4 2"]
    expected = load_scoring_model(source["model"], config, progress=False).token_logprobs(text)[0]
    loaded = load_model(source["model"])
    for model in (
        load_scoring_model(pickled, config, allow_pickle=True, progress=False),
        load_scoring_model(loaded, config, progress=False),
        load_scoring_model((loaded.model, loaded.tokenizer), config, progress=False),
    ):
        np.testing.assert_allclose(model.token_logprobs(text)[0], expected, rtol=0, atol=1e-6)


def _bigger_tokenizer(src):
    from dpaudit.datasets.tokenizer import load_tokenizer

    wrong = src["root"] / "wrong-tokenizer"
    if not wrong.exists():
        shutil.copytree(src["model"], wrong)
        tok = load_tokenizer(wrong)
        tok.add_tokens([f"zzextra{i}" for i in range(50)])
        tok.save_pretrained(str(wrong))
    return wrong


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "overlap",
        "same-text",
        "epsilon-without-delta",
        "canaries-without-inclusion",
        "tokenizer",
        "existing-run",
    ],
)
def test_bad_inputs_are_one_line_errors(case, source, audited, dpaudit_cli):
    src = {**source, "files": dict(source["files"])}
    root, out, extra = src["root"], src["root"] / f"bad-{case}", []
    members = src["files"]["members"].read_text().splitlines()
    expect = {
        "missing": "file not found",
        "empty": "empty file",
        "overlap": "both members and non-members",
        "same-text": "have the text of a member",
        "epsilon-without-delta": "go together",
        "canaries-without-inclusion": "--canary-inclusion",
        "tokenizer": "embedding rows",
        "existing-run": "already holds a dpaudit run",
    }[case]
    if case == "missing":
        src["files"]["members"] = root / "nope.jsonl"
    elif case == "empty":
        (root / "empty.jsonl").write_text("")
        src["files"]["members"] = root / "empty.jsonl"
    elif case in ("overlap", "same-text"):
        row = json.loads(members[0])
        if case == "same-text":
            row["id"] = "another-id"
        (root / f"{case}.jsonl").write_text(
            src["files"]["nonmembers"].read_text() + json.dumps(row) + "\n"
        )
        src["files"]["nonmembers"] = root / f"{case}.jsonl"
    elif case == "epsilon-without-delta":
        extra = ["--claimed-epsilon", "1.0"]
    elif case == "canaries-without-inclusion":
        extra = [
            "--canaries",
            str(src["run"] / "data" / "canaries.jsonl"),
            "--claimed-epsilon",
            "1",
            "--delta",
            "1e-5",
        ]
    elif case == "tokenizer":
        src["model"] = _bigger_tokenizer(src)
    elif case == "existing-run":
        out = audited[0]
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    result = src["runner"].invoke(
        dpaudit_cli, _args(src, out, "--attacks", "loss", "--parts", "mia", "--no-report", *extra)
    )
    assert expect in _one_error_line(result)
    assert (
        sorted(p.name for p in out.iterdir()) if out.exists() else None
    ) == before  # nothing written


def test_python_api_returns_the_verdict(source):
    import dpaudit

    data, f = source["run"] / "data", source["files"]
    result = dpaudit.audit_checkpoint(
        source["model"],
        members=f["members"],
        nonmembers=f["nonmembers"],
        out=source["root"] / "api",
        canaries=data / "canaries.jsonl",
        canary_inclusion=data / "inclusion.json",
        claimed_epsilon=source["epsilon"],
        delta=source["delta"],
        attacks=["loss"],
        parts="mia",
        progress=False,
        report=False,
        sets=["data.max_length=40", "attack.bootstrap=20", "attack.extraction_samples=1"],
    )
    assert result.report is None and result.run_dir == source["root"] / "api"  # no report asked
    assert result.audit_verdicts == {"target": "inconclusive"}  # from audit/bounds.json
    assert result.policy_verdict is None and result.passed is None
    scores = source["root"] / "api" / "attacks" / "target" / "loss" / "metrics.json"
    assert 0 <= json.loads(scores.read_text())["auc"] <= 1
    source_json = json.loads((source["root"] / "api" / "target" / "source.json").read_text())
    assert source_json["weights"]


def test_python_api_refuses_unknown_options(source, tmp_path):
    import dpaudit
    from dpaudit.errors import DpauditError

    f = source["files"]
    with pytest.raises(DpauditError, match="did you mean 'claimed_epsilon'"):
        dpaudit.audit_checkpoint(
            source["model"],
            members=f["members"],
            nonmembers=f["nonmembers"],
            out=tmp_path / "x",
            claimed_epsilom=1.0,
        )
    assert not (tmp_path / "x").exists()


def test_references_trained_here_and_given(source, dpaudit_cli):
    from dpaudit.datasets.loaders import load_records, write_records

    root, runner = source["root"], source["runner"]
    population = root / "population-small.jsonl"
    write_records(population, load_records(source["files"]["population"])[:16])
    out = root / "refs-trained"
    args = _args(
        source,
        out,
        "--attacks",
        "loss,reference,lira,rmia",
        "--train-references",
        "2",
        "--population",
        str(population),
        "--parts",
        "mia",
        "--no-report",
        "--set",
        "train.dp=false",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.physical_batch_size=16",
    )
    result = runner.invoke(dpaudit_cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    status = json.loads((out / "attacks" / "target" / "status.json").read_text())["attacks"]
    assert status == dict.fromkeys(("loss", "reference", "lira", "rmia"), "done")
    assert np.load(out / "references" / "membership.npy").shape == (80, 2)

    plain = root / "plain-ref"
    shutil.copytree(out / "references" / "ref-0", plain)
    out2 = root / "refs-given"
    result = runner.invoke(
        dpaudit_cli,
        _args(
            source,
            out2,
            "--attacks",
            "loss,reference,lira",
            "--references",
            str(plain),
            "--parts",
            "mia",
            "--no-report",
        ),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    status = json.loads((out2 / "attacks" / "target" / "status.json").read_text())["attacks"]
    assert status["reference"] == "done" and "membership.npy" in status["lira"]


def test_reference_directories_are_recognised(source, tmp_path):
    from dpaudit.trainers.references import assign_membership
    from dpaudit.workflows.checkpoint_audit import _reference_dirs

    root = tmp_path / "references"
    for j in range(3):
        (root / f"ref-{j}").mkdir(parents=True)
    np.save(root / "membership.npy", assign_membership(4, 3, seed=0))
    (root / "population_ids.json").write_text(json.dumps({"ids": list("abcd")}))
    dirs, membership, ids, _ = _reference_dirs([root])
    assert (
        [d.name for d in dirs] == ["ref-0", "ref-1", "ref-2"]
        and membership.shape == (4, 3)
        and ids == list("abcd")
    )
    dirs, membership, _, _ = _reference_dirs([root / "ref-2", root / "ref-0"])
    np.testing.assert_array_equal(membership, np.load(root / "membership.npy")[:, [2, 0]])
    _, membership, _, why = _reference_dirs([root / "ref-0", source["model"]])
    assert membership is None and "membership.npy" in why


# ----------------------------------------------------------------------------- safe loading


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    import torch

    from dpaudit.errors import DpauditError
    from dpaudit.trainers.safe_load import read_pickle_state

    torch.save({"w": torch.zeros(2), "x": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(DpauditError, match=r"weights_only=True") as info:
        read_pickle_state([tmp_path / "pytorch_model.bin"])
    # Our own message: never torch's advice to re-run with weights_only=False.
    message = str(info.value)
    assert "weights_only=False" not in message and "will likely succeed" not in message
    assert "\n" not in message and "safetensors" in message


def test_gguf_only_directory_is_named(tmp_path):
    from dpaudit.errors import DpauditError
    from dpaudit.trainers.safe_load import load_model

    (tmp_path / "model.Q4_1.gguf").write_bytes(b"GGUF")
    with pytest.raises(DpauditError, match=r"GGUF model \(model.Q4_1.gguf\)"):
        load_model(str(tmp_path))


def test_hub_id_offline_is_one_line(monkeypatch):
    from dpaudit.errors import DpauditError
    from dpaudit.trainers.safe_load import load_model

    with pytest.raises(DpauditError) as info:
        load_model("dpaudit-tests/no-such-model", local_files_only=True)
    assert "\n" not in str(info.value) and "hub" in str(info.value)
    with pytest.raises(DpauditError, match="not found"):
        load_model("/no/such/model/dir")


def test_adapter_safetensors_and_pickle(source, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpaudit.datasets.tokenizer import load_tokenizer
    from dpaudit.errors import DpauditError
    from dpaudit.trainers.safe_load import load_model

    tok = load_tokenizer(source["model"])
    torch.manual_seed(0)
    base = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_embd=32,
            n_layer=1,
            n_head=2,
            n_positions=64,
            tie_word_embeddings=False,
        )
    )
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(str(tmp_path / "base"))
    lora = LoraConfig(
        r=4,
        target_modules=["c_attn"],
        fan_in_fan_out=True,
        init_lora_weights=False,  # random B: the adapter changes the outputs
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # transformers deprecations raised inside PEFT
        peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([tok("the patient was seen")["input_ids"]])
    with torch.no_grad():
        expected = peft_model.eval()(ids).logits
    loaded = load_model(tmp_path / "base", adapter=tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, expected, rtol=1e-5, atol=1e-5)
    assert set(loaded.source["adapter_weights"]) == {"adapter_model.safetensors"}

    pickled = tmp_path / "adapter-pickle"
    pickled.mkdir()
    shutil.copy(tmp_path / "adapter" / "adapter_config.json", pickled)
    torch.save(get_peft_model_state_dict(peft_model), pickled / "adapter_model.bin")
    with pytest.raises(DpauditError, match="--allow-pickle"):
        load_model(tmp_path / "base", adapter=pickled)
    loaded = load_model(tmp_path / "base", adapter=pickled, allow_pickle=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(DpauditError, match="PEFT adapter directory"):
        load_model(tmp_path / "adapter")
