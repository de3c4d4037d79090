"""Trainers: models, modes, data, sampling and the privacy plan (no training loops)."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import numpy as np
import pytest

from dpaudit.config import TrainConfig
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError

WORDS = "alpha beta gamma delta patient doctor visit code number account".split()


@pytest.fixture(scope="module")
def records() -> list[Record]:
    rng = random.Random(0)
    return [
        Record(f"r{i}", " ".join(rng.choice(WORDS) for _ in range(6)), label=i % 2)
        for i in range(60)
    ]


@pytest.fixture(scope="module")
def tokenizer(records):
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer([r.text for r in records], vocab_size=300)


def test_import_does_not_load_torch():
    code = "import sys, dpaudit.trainers; assert 'torch' not in sys.modules; print(len(dpaudit.trainers.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 5


def test_public_names_resolve():
    import dpaudit.trainers as trainers

    for name in trainers.__all__:
        assert getattr(trainers, name) is not None


def test_default_delta():
    from dpaudit.trainers.privacy import default_delta

    assert default_delta(800) == 1e-5  # 1/800^1.1 = 6.3e-4, capped at 1e-5
    assert default_delta(150) == 1e-5
    assert default_delta(10_000) == 1e-5  # 3.98e-5, capped
    assert default_delta(100_000) == 3e-6  # 3.16e-6, rounded down
    assert default_delta(1_000_000) == 2e-7  # 2.51e-7
    for n in (2, 7, 99, 1234, 10**6):
        d = default_delta(n)
        assert d <= min(1e-5, n**-1.1)
        assert d == 1e-5 or n**-1.1 < 2 * d  # below the cap: rounded down by less than half


def test_plan_steps_and_rate():
    from dpaudit.trainers.privacy import plan_privacy

    cfg = TrainConfig(batch_size=20, physical_batch_size=10, epochs=3.0, noise_multiplier=1.3)
    plan = plan_privacy(cfg, 150, dp=True)
    assert plan.sample_rate == 20 / 150 and plan.steps == 23  # 3 / q = 22.5, rounded half up
    assert (
        plan.noise_multiplier == 1.3 and plan.noise_source == "config" and plan.delta == 1e-5
    )  # min(1e-5, 1/150^1.1)
    off = plan_privacy(cfg, 150, dp=False)
    assert off.mechanism == "none" and off.noise_multiplier == 0.0
    with pytest.raises(DpauditError, match="exceeds"):
        plan_privacy(cfg, 10, dp=True)


def test_calibration_reaches_target():
    from dpaudit.accounting import compute_epsilons
    from dpaudit.trainers.privacy import plan_privacy

    cfg = TrainConfig(
        batch_size=20, physical_batch_size=10, epochs=2.0, target_epsilon=3.0, accountant="pld"
    )
    plan = plan_privacy(cfg, 200, dp=True)
    eps, _ = compute_epsilons(
        sampling_rate=plan.sample_rate,
        noise_multiplier=plan.noise_multiplier,
        steps=plan.steps,
        delta=plan.delta,
        accountants=("pld",),
    )
    assert plan.noise_source == "calibrated" and plan.target_epsilon == 3.0
    assert eps["pld"] <= 3.0 + 1e-9
    assert eps["pld"] > 2.8  # not wastefully conservative


def test_poisson_sampler_deterministic_and_rate():
    from dpaudit.trainers.data import PoissonSampler, ShuffleSampler, physical_batches

    s = PoissonSampler(1000, 0.05, seed=3)
    assert s.lot(7) == PoissonSampler(1000, 0.05, seed=3).lot(7)
    assert s.lot(7) != s.lot(8)
    sizes = [len(s.lot(t)) for t in range(200)]
    assert abs(np.mean(sizes) - 50) < 3
    sh = ShuffleSampler(10, 4, seed=1)
    first = sh.lot(0) + sh.lot(1) + sh.lot(2)[:2]
    assert sorted(first) == list(range(10))  # one pass covers every example once
    assert [len(c) for c in physical_batches(list(range(11)), 4)] == [4, 4, 3]
    assert physical_batches([], 4) == []


def test_collate_masks_padding(tokenizer, records):
    from dpaudit.trainers.data import IGNORE_INDEX, collate, encode_records

    ex = encode_records(
        records[:3] + [Record("short", "alpha")], tokenizer, max_length=32, task="causal_lm"
    )
    inputs, targets = collate(
        ex, [0, 3], pad_id=tokenizer.pad_token_id, task="causal_lm", input_names=("position_ids",)
    )
    assert inputs["input_ids"].shape == targets.shape == inputs["position_ids"].shape
    assert inputs["position_ids"].is_contiguous()
    short = len(ex.input_ids[3])
    assert (targets[1, short:] == IGNORE_INDEX).all() and (targets[1, :short] != IGNORE_INDEX).all()
    assert (inputs["attention_mask"][1, short:] == 0).all()


def test_encode_refuses_missing_labels(tokenizer):
    from dpaudit.trainers.data import encode_records

    with pytest.raises(DpauditError, match="no label"):
        encode_records([Record("a", "alpha beta")], tokenizer, max_length=8, task="classification")
    with pytest.raises(DpauditError, match="outside"):
        encode_records(
            [Record("a", "alpha", label=3)],
            tokenizer,
            max_length=8,
            task="classification",
            num_labels=2,
        )


def test_embedded_gpt2_shape(tokenizer):
    from dpaudit.trainers.models import build_model, count_parameters

    built = build_model(TrainConfig(), tokenizer, seed=0, max_length=32)
    m = built.model
    assert (
        m.config.n_embd == 128 and m.config.n_layer == 2 and m.config.vocab_size == len(tokenizer)
    )
    assert m.get_input_embeddings().weight is not m.get_output_embeddings().weight
    assert built.input_names == ("position_ids",)  # never token_type_ids for GPT-2
    trainable, total = count_parameters(m)
    assert trainable == total
    again = build_model(TrainConfig(), tokenizer, seed=0, max_length=32).model
    assert all((a == b).all() for a, b in zip(m.parameters(), again.parameters(), strict=True))


def test_head_mode_freezes_body(tokenizer):
    from dpaudit.trainers.models import build_model

    gpt = build_model(TrainConfig(mode="head"), tokenizer, seed=0, max_length=32)
    assert set(gpt.trainable) == {
        n
        for n, _ in gpt.model.named_parameters()
        if n.startswith(("lm_head.", "transformer.h.1.", "transformer.ln_f."))
    }
    assert not any(n.startswith(("transformer.wte", "transformer.h.0.")) for n in gpt.trainable)
    cfg = TrainConfig(model="embedded:bert-tiny", task="classification", mode="head")
    bert = build_model(cfg, tokenizer, seed=0, max_length=32)
    assert bert.input_names == ("position_ids", "token_type_ids")
    assert {
        n.split(".")[1] if n.startswith("bert.") else n.split(".")[0] for n in bert.trainable
    } == {"classifier", "pooler", "encoder"}
    assert all(n.startswith("bert.encoder.layer.1.") for n in bert.trainable if ".encoder." in n)


def test_lora_mode_trains_adapters_and_classifier_head(tokenizer):
    from dpaudit.trainers.models import build_model

    lm = build_model(TrainConfig(mode="lora", lora_rank=4), tokenizer, seed=0, max_length=32)
    assert lm.lora_targets == ("c_attn",)
    assert lm.trainable and all("lora_" in n for n in lm.trainable)
    cfg = TrainConfig(model="embedded:bert-tiny", task="classification", mode="lora")
    cls = build_model(cfg, tokenizer, seed=0, max_length=32)
    assert set(cls.lora_targets) == {"query", "value"}
    assert any("classifier" in n for n in cls.trainable)
    assert all("lora_" in n or "classifier" in n for n in cls.trainable)


def test_model_errors(tokenizer, tmp_path):
    from dpaudit.trainers.models import build_model, load_pretrained, resolve_device

    with pytest.raises(DpauditError, match="classifier"):
        build_model(TrainConfig(model="embedded:bert-tiny"), tokenizer, seed=0, max_length=32)
    grown = build_model(TrainConfig(), tokenizer, seed=0, max_length=256).model
    assert grown.config.n_positions == 256  # embedded models grow to max_length
    saved = tmp_path / "saved"
    build_model(TrainConfig(), tokenizer, seed=0, max_length=32).model.save_pretrained(saved)
    loaded = build_model(TrainConfig(model=str(saved)), tokenizer, seed=0, max_length=32)
    assert loaded.model.config.n_positions == 128
    with pytest.raises(DpauditError, match="exceeds"):
        build_model(TrainConfig(model=str(saved)), tokenizer, seed=0, max_length=4096)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"model_type": "gpt2"}')
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(DpauditError, match="only pickle weights") as err:
        load_pretrained(pickled, task="causal_lm")
    assert "\n" not in str(err.value)
    with pytest.raises(DpauditError, match="missing/model: model directory not found"):
        load_pretrained(str(tmp_path / "missing" / "model"), task="causal_lm")  # never the hub
    with pytest.raises(DpauditError, match="not a device"):
        resolve_device("gpu7")
    assert resolve_device("cpu").type == "cpu"


def test_resolve_device_is_the_one_parser():
    import torch

    from dpaudit.attacks import scoring
    from dpaudit.trainers.models import resolve_device

    assert scoring.resolve_device is resolve_device  # the attacks use the trainers' parser
    cuda = torch.cuda.is_available()
    assert resolve_device("auto").type == ("cuda" if cuda else "cpu")
    assert resolve_device("cpu:0") == torch.device("cpu", 0)
    bad = ["tpu", "gpu7", "cuda:x", "mps", "meta", "cuda:999"] + (
        [] if cuda else ["cuda", "cuda:0"]
    )
    for spec in bad:
        with pytest.raises(DpauditError) as err:
            resolve_device(spec, setting="attack.device")
        message = str(err.value)
        assert message.startswith(f"attack.device = {spec!r}") and "\n" not in message
    with pytest.raises(DpauditError, match="only cpu and cuda"):
        resolve_device("mps")
    if not cuda:
        with pytest.raises(DpauditError, match="no CUDA device is visible"):
            resolve_device("cuda:0")


def test_macro_f1_is_sklearns():
    import math

    from sklearn.metrics import f1_score

    from dpaudit.trainers.evaluate import macro_f1

    # per class 2TP / (2TP + FP + FN): 0.5, 0.8 and 0 (class 2 never predicted right)
    assert macro_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, 0]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # a class that only the predictions contain counts (as 0)
    assert macro_f1([0, 0], [0, 1]) == pytest.approx((2 / 3 + 0.0) / 2)
    assert math.isnan(macro_f1([], []))
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 4, 200).tolist(), rng.integers(0, 4, 200).tolist()
    assert macro_f1(labels, preds) == f1_score(labels, preds, average="macro")


def test_membership_balanced():
    from dpaudit.trainers.references import assign_membership

    m = assign_membership(500, 8, seed=1)
    assert m.shape == (500, 8) and m.dtype == bool
    assert (m.sum(axis=1) == 4).all()
    assert abs(m.sum(axis=0).mean() - 250) < 1e-9 and (np.abs(m.sum(axis=0) - 250) < 60).all()
    assert (m == assign_membership(500, 8, seed=1)).all()
    odd = assign_membership(2000, 5, seed=2)
    assert set(np.unique(odd.sum(axis=1))) == {2, 3}
    assert abs(odd.mean() - 0.5) < 0.03


def test_config_variant_is_frozen():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dp = False  # type: ignore[misc]
