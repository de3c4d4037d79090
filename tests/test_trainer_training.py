"""Trainers: DP-SGD and non-private runs on tiny random models, end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest

from dpaudit.config import TrainConfig
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError

NAMES = "smith jones brown lee garcia miller davis wilson".split()
DAYS = "monday tuesday wednesday thursday friday".split()


def _records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        verb = "visited" if label else "called"
        text = f"patient {rng.randint(10, 99)} {verb} dr {rng.choice(NAMES)} on {rng.choice(DAYS)}"
        out.append(Record(f"r{i:03d}", text, label=label))
    return out


@pytest.fixture(scope="module")
def data():
    recs = _records(160)
    return recs[:120], recs[120:]


@pytest.fixture(scope="module")
def tokenizer(data):
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    train, held = data
    return train_bpe_tokenizer([r.text for r in train + held], vocab_size=300)


BASE = TrainConfig(
    batch_size=20,
    physical_batch_size=20,
    epochs=1.0,
    learning_rate=1e-2,
    noise_multiplier=1.0,
    checkpoint_every=1000,
)
OUTPUTS = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "privacy.json",
    "train_log.jsonl",
    "metrics.json",
    "train_ids.json",
    "complete.json",
)


def _train(records, tokenizer, out, config=BASE, **kw):
    from dpaudit.trainers import train_model

    kw.setdefault("seed", 0)
    kw.setdefault("max_length", 32)
    return train_model(
        records, config=config, tokenizer=tokenizer, out_dir=out, progress=False, **kw
    )


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _reloaded_eval(out, records, tokenizer, task):
    """Held-out metrics of the model reloaded from disk (safetensors)."""
    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.evaluate import evaluate
    from dpaudit.trainers.models import load_pretrained

    model = load_pretrained(out, task=task)
    names = (
        ("position_ids", "token_type_ids")
        if task == "classification" and "bert" in model.config.model_type
        else ("position_ids",)
    )
    ex = encode_records(records, tokenizer, max_length=32, task=task)
    import torch

    return evaluate(
        model,
        ex,
        task=task,
        pad_id=tokenizer.pad_token_id,
        input_names=names,
        device=torch.device("cpu"),
    )


def test_dp_lm_writes_everything_and_ledger_matches_accountant(data, tokenizer, tmp_path):
    from dpaudit.accounting import compute_epsilons
    from dpaudit.trainers import read_privacy

    train, held = data
    res = _train(train, tokenizer, tmp_path / "t", eval_records=held)
    for name in OUTPUTS:
        assert (tmp_path / "t" / name).is_file(), name
    assert not (tmp_path / "t" / "checkpoint").exists()  # removed once complete
    q, steps = 20 / 120, 6
    assert res.completed and res.steps == steps and res.ledger.steps == steps
    ledger, raw = read_privacy(tmp_path / "t" / "privacy.json")
    assert ledger.mechanism == "poisson-subsampled-gaussian" and ledger.sample_rate == q
    assert ledger.delta == 1e-5 and raw["delta_source"] == "default min(1e-5, 1/n^1.1)"  # capped
    expected, _ = compute_epsilons(
        sampling_rate=q, noise_multiplier=1.0, steps=steps, delta=ledger.delta
    )
    for name, eps in expected.items():
        assert ledger.epsilons[name] == pytest.approx(eps, rel=1e-9)
    assert raw["epsilon"] == ledger.epsilons["pld"] and raw["primary_accountant"] == "pld"
    assert raw["epochs"] == pytest.approx(steps * q) and raw["complete"] is True
    log = [
        json.loads(line) for line in (tmp_path / "t" / "train_log.jsonl").read_text().splitlines()
    ]
    assert [e["step"] for e in log] == list(range(1, steps + 1))
    assert all(e["epsilon_rdp"] >= ledger.epsilons["pld"] * 0.9 for e in log[-1:])
    assert sorted(log[0]) == ["epsilon_rdp", "loss", "lot_size", "lr", "seconds", "step"]
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert json.loads((tmp_path / "t" / "train_ids.json").read_text())["ids"] == [
        r.id for r in train
    ]
    # The saved model reloads from safetensors and gives the same held-out loss (same logits).
    again = _reloaded_eval(tmp_path / "t", held, tokenizer, "causal_lm")
    assert again["loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)
    assert "ε" in res.summary()


def test_non_private_overfits(data, tokenizer, tmp_path):
    train, held = data
    cfg = dataclasses.replace(BASE, dp=False, epochs=10.0, batch_size=10, physical_batch_size=10)
    res = _train(train[:30], tokenizer, tmp_path / "b", config=cfg, eval_records=held[:20])
    assert res.ledger.mechanism == "none" and all(
        math.isinf(e) for e in res.ledger.epsilons.values()
    )
    assert res.ledger.max_grad_norm is None and res.steps == 30
    m = res.metrics
    assert m["train_example_loss"] < 0.5 * m["first_step_loss"]
    assert m["train_loss"] < m["eval_loss"]  # memorised the training set


LLAMA_LORA = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.mark.parametrize(
    ("model", "mode", "targets"),
    [
        ("embedded:gpt2-tiny", "full", ()),
        # RMSNorm, rotary embeddings, grouped-query attention, tied input/output embeddings
        ("embedded:llama-tiny", "full", ()),
        ("embedded:llama-tiny", "lora", LLAMA_LORA),
    ],
)
def test_dp_step_matches_reference_clipped_sum(data, tokenizer, model, mode, targets):
    """One DP step with σ = 0 applies (Σ_i clip_C(∇ℓ_i)) / B, each ∇ℓ_i computed on its own.

    The per-example gradients Opacus computes for the whole lot (hooks, physical batches of 4)
    are checked against micro-batches of one, for GPT-2 and for a Llama-architecture model.
    The base optimizer is swapped for SGD with lr = 1 so that the update *is* the gradient
    (Adam's update is too sensitive to float noise in near-zero coordinates to compare).
    """
    import copy

    import torch

    from dpaudit.trainers.data import collate, encode_records
    from dpaudit.trainers.loop import StepRunner, example_losses
    from dpaudit.trainers.models import build_model
    from dpaudit.trainers.privacy import plan_privacy

    train, _ = data
    cfg = dataclasses.replace(
        BASE,
        model=model,
        mode=mode,
        lora_rank=4,
        lora_targets=targets,
        noise_multiplier=0.0,
        max_grad_norm=0.05 if mode == "full" else 0.005,
        physical_batch_size=4,
    )
    ex = encode_records(train, tokenizer, max_length=32, task="causal_lm")
    plan = plan_privacy(cfg, len(ex), dp=True)
    built = build_model(cfg, tokenizer, seed=0, max_length=32)
    if model == "embedded:llama-tiny":
        inner = built.model.get_base_model() if mode == "lora" else built.model
        assert inner.config.model_type == "llama"
        assert inner.config.num_key_value_heads < inner.config.num_attention_heads
        assert inner.get_input_embeddings().weight is inner.get_output_embeddings().weight
        if mode == "lora":
            assert built.lora_targets == tuple(sorted(LLAMA_LORA))
    ref = copy.deepcopy(built.model)
    runner = StepRunner(
        built=built,
        examples=ex,
        plan=plan,
        config=cfg,
        device=torch.device("cpu"),
        seed=5,
        pad_id=tokenizer.pad_token_id,
    )
    trainable = [p for p in runner.model.parameters() if p.requires_grad]
    runner.optimizer.original_optimizer = torch.optim.SGD(trainable, lr=1.0)
    lot = runner.lot(0)
    assert len(lot) > cfg.physical_batch_size  # exercises the physical split
    runner.run_step(0)

    params = [p for p in ref.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in lot:
        inputs, targets = collate(ex, [i], pad_id=tokenizer.pad_token_id, task="causal_lm")
        loss = example_losses(ref(**inputs).logits, targets, "causal_lm").sum()
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        factor = min(1.0, cfg.max_grad_norm / (float(norm) + 1e-6))
        assert float(norm) > cfg.max_grad_norm  # clipping is active
        for t, g in zip(total, grads, strict=True):
            t += factor * g
    with torch.no_grad():
        for p, t in zip(params, total, strict=True):
            p -= t / (plan.sample_rate * len(ex))
    for (name, a), b in zip(runner.model.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8), name


def test_deterministic_under_seed(data, tokenizer, tmp_path):
    train, _ = data
    cfg = dataclasses.replace(BASE, physical_batch_size=8)
    _train(train[:60], tokenizer, tmp_path / "a", config=cfg)
    _train(train[:60], tokenizer, tmp_path / "b", config=cfg)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all((a[k] == b[k]).all() for k in a)
    first = json.loads((tmp_path / "a" / "train_log.jsonl").read_text().splitlines()[0])
    from dpaudit.trainers.data import PoissonSampler

    assert first["lot_size"] == len(PoissonSampler(60, 20 / 60, seed=0).lot(0))
    assert PoissonSampler(60, 20 / 60, seed=0).lot(0) != PoissonSampler(60, 20 / 60, seed=1).lot(0)


RESUME = dataclasses.replace(
    BASE, batch_size=10, physical_batch_size=10, epochs=0.75, checkpoint_every=2
)


def _check_same_run(path, full_path, steps):
    from dpaudit.trainers import read_privacy

    full, _ = read_privacy(full_path / "privacy.json")
    ledger, _ = read_privacy(path / "privacy.json")
    assert ledger.steps == full.steps == steps and ledger.epsilons == full.epsilons
    w, ref = _weights(path), _weights(full_path)
    assert all(torch_equal(w[k], ref[k]) for k in ref)
    log = (path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in log] == list(range(1, steps + 1))


def test_resume_after_crash_equals_uninterrupted(data, tokenizer, tmp_path):
    from dpaudit.trainers import TrainHooks, read_privacy

    train = data[0][:60]  # q = 1/6, 5 steps, checkpoints after steps 2 and 4

    class Crash(TrainHooks):
        def on_step_end(self, *, step, loss, model):
            if step == 3:
                raise RuntimeError("power cut")

    _train(train, tokenizer, tmp_path / "full", config=RESUME)
    with pytest.raises(RuntimeError, match="power cut"):
        _train(train, tokenizer, tmp_path / "crash", config=RESUME, hooks=Crash())
    partial, raw = read_privacy(tmp_path / "crash" / "privacy.json")
    assert partial.steps == 2 and raw["complete"] is False  # ledger of the last checkpoint
    with pytest.raises(DpauditError, match="unfinished"):
        _train(train, tokenizer, tmp_path / "crash", config=RESUME)
    res = _train(train, tokenizer, tmp_path / "crash", config=RESUME, resume=True)
    assert res.completed and res.steps == 5
    _check_same_run(tmp_path / "crash", tmp_path / "full", 5)
    # A finished run is returned as is on resume, refused otherwise, and checked against the recipe.
    full, _ = read_privacy(tmp_path / "full" / "privacy.json")
    assert _train(train, tokenizer, tmp_path / "full", config=RESUME, resume=True).ledger == full
    with pytest.raises(DpauditError, match="finished"):
        _train(train, tokenizer, tmp_path / "full", config=RESUME)
    with pytest.raises(DpauditError, match="learning_rate"):
        _train(
            train,
            tokenizer,
            tmp_path / "full",
            resume=True,
            config=dataclasses.replace(RESUME, learning_rate=0.5),
        )


@pytest.mark.slow
def test_graceful_stop_then_resume(data, tokenizer, tmp_path):
    from dpaudit.trainers import StopTraining, TrainHooks

    train = data[0][:60]

    class Stop(TrainHooks):
        def on_step_end(self, *, step, loss, model):
            if step == 3:
                raise StopTraining

    _train(train, tokenizer, tmp_path / "full", config=RESUME)
    stopped = _train(train, tokenizer, tmp_path / "stop", config=RESUME, hooks=Stop())
    assert not stopped.completed and stopped.steps == 3 and stopped.ledger.steps == 3
    assert (tmp_path / "stop" / "checkpoint").is_dir() and not (
        tmp_path / "stop" / "complete.json"
    ).exists()
    _train(train, tokenizer, tmp_path / "stop", config=RESUME, resume=True)
    _check_same_run(tmp_path / "stop", tmp_path / "full", 5)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def _runner(cfg, train, tokenizer, hooks=None):
    import torch

    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.loop import StepRunner
    from dpaudit.trainers.models import build_model
    from dpaudit.trainers.privacy import plan_privacy

    ex = encode_records(train, tokenizer, max_length=32, task=cfg.task)
    plan = plan_privacy(cfg, len(ex), dp=cfg.dp)
    built = build_model(cfg, tokenizer, seed=0, max_length=32)
    return StepRunner(
        built=built,
        examples=ex,
        plan=plan,
        config=cfg,
        device=torch.device("cpu"),
        seed=0,
        pad_id=tokenizer.pad_token_id,
        hooks=hooks,
    )


def test_ghost_clipping_matches_hooks(data, tokenizer):
    """Ghost clipping (norms without per-example gradients) gives the same update as hooks."""
    cfg = dataclasses.replace(BASE, physical_batch_size=8, max_grad_norm=0.1)
    hooks = _runner(cfg, data[0][:40], tokenizer)
    ghost = _runner(dataclasses.replace(cfg, grad_sample_mode="ghost"), data[0][:40], tokenizer)
    for step in range(2):
        hooks.run_step(step)
        ghost.run_step(step)
    for (name, a), b in zip(hooks.model.named_parameters(), ghost.model.parameters(), strict=True):
        assert np.allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-5), name


def test_lora_lm_and_classifiers(data, tokenizer, tmp_path):
    train, held = data
    lora = dataclasses.replace(BASE, mode="lora", lora_rank=4, grad_sample_mode="ghost")
    res = _train(train[:60], tokenizer, tmp_path / "lora", config=lora, eval_records=held[:20])
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    assert res.metrics["trainable_parameters"] < res.metrics["total_parameters"] / 10
    merged = _reloaded_eval(tmp_path / "lora", held[:20], tokenizer, "causal_lm")
    assert merged["loss"] == pytest.approx(res.metrics["eval_loss"], rel=1e-5)

    _check_classifier(train, held, tokenizer, tmp_path, "embedded:bert-tiny", "lora")


def test_llama_dp_lora_trains_saves_and_reloads(data, tokenizer, tmp_path):
    """DP-LoRA on q/k/v/o of a tied-embedding Llama: written, merged, reloaded to the same loss."""
    train, held = data
    cfg = dataclasses.replace(
        BASE, model="embedded:llama-tiny", mode="lora", lora_rank=4, lora_targets=LLAMA_LORA
    )
    res = _train(train[:60], tokenizer, tmp_path / "llama", config=cfg, eval_records=held[:20])
    for name in OUTPUTS:
        assert (tmp_path / "llama" / name).is_file(), name
    assert (tmp_path / "llama" / "adapter" / "adapter_model.safetensors").is_file()
    assert res.metrics["trainable_parameters"] < res.metrics["total_parameters"] / 5
    merged = _reloaded_eval(tmp_path / "llama", held[:20], tokenizer, "causal_lm")
    assert merged["loss"] == pytest.approx(res.metrics["eval_loss"], rel=1e-5)
    ghost = dataclasses.replace(cfg, mode="full", grad_sample_mode="ghost")
    with pytest.raises(DpauditError, match="tied input/output embeddings"):
        _runner(ghost, train[:20], tokenizer)


def _check_classifier(train, held, tokenizer, tmp_path, model, mode):
    cfg = dataclasses.replace(BASE, model=model, task="classification", mode=mode)
    out = tmp_path / f"cls-{mode}"
    res = _train(train[:60], tokenizer, out, config=cfg, eval_records=held[:20])
    assert {"eval_accuracy", "eval_f1", "train_accuracy"} <= set(res.metrics)
    again = _reloaded_eval(out, held[:20], tokenizer, "classification")
    assert again["loss"] == pytest.approx(res.metrics["eval_loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "mode"), [("embedded:gpt2-tiny", "full"), ("embedded:bert-tiny", "head")]
)
def test_other_classifiers(data, tokenizer, tmp_path, model, mode):
    _check_classifier(*data, tokenizer, tmp_path, model, mode)


@pytest.mark.slow
def test_non_private_classifier_learns(data, tokenizer, tmp_path):
    train, held = data
    cfg = dataclasses.replace(
        BASE,
        model="embedded:bert-tiny",
        task="classification",
        dp=False,
        epochs=6.0,
        learning_rate=3e-3,
    )
    res = _train(train, tokenizer, tmp_path / "c", config=cfg, eval_records=held)
    assert res.metrics["eval_accuracy"] >= 0.9  # "visited" vs "called" decides the label


def test_hooks_see_per_sample_grads_and_alter_mechanism(data, tokenizer, tmp_path):
    """The self-test seam: zeroing every per-example gradient with no noise applied leaves weights unchanged."""
    from dpaudit.trainers import Mechanism, TrainHooks
    from dpaudit.trainers.models import build_model

    train, _ = data
    seen = []

    class Freeze(TrainHooks):
        recipe_key = "freeze"

        def mechanism(self, claimed):
            return Mechanism(claimed.sample_rate, 0.0, claimed.max_grad_norm)

        def on_per_sample_grads(self, *, step, params, example_ids):
            seen.append((step, len(example_ids), tuple(params[0].grad_sample.shape)))
            for p in params:
                p.grad_sample.zero_()

    res = _train(train[:60], tokenizer, tmp_path / "frozen", hooks=Freeze())
    assert res.ledger.noise_multiplier == 1.0  # the ledger states the claimed mechanism
    assert seen and all(shape[0] == n for _, n, shape in seen)
    init = build_model(BASE, tokenizer, seed=0, max_length=32).model.state_dict()
    saved = _weights(tmp_path / "frozen")
    assert all(torch_equal(saved[k], init[k]) for k in saved)
    with pytest.raises(
        DpauditError, match="hooks"
    ):  # an altered run is never reused as a normal one
        _train(train[:60], tokenizer, tmp_path / "frozen", resume=True)
    with pytest.raises(DpauditError, match="ghost"):
        _train(
            train[:60],
            tokenizer,
            tmp_path / "g",
            hooks=Freeze(),
            config=dataclasses.replace(BASE, grad_sample_mode="ghost"),
        )


@pytest.mark.parametrize("mode", ["hooks", "ghost", "off"])
def test_empty_lots_are_noise_only_steps(data, tokenizer, mode):
    import torch

    cfg = dataclasses.replace(
        BASE,
        batch_size=1,
        physical_batch_size=1,
        dp=mode != "off",
        grad_sample_mode="ghost" if mode == "ghost" else "hooks",
    )
    runner = _runner(cfg, data[0][:20], tokenizer)
    step = next(t for t in range(50) if not runner.lot(t))
    before = [p.detach().clone() for p in runner.model.parameters()]
    assert runner.run_step(step) == (None, 0)
    moved = [not torch.equal(a, b) for a, b in zip(before, runner.model.parameters(), strict=True)]
    assert all(moved) if mode != "off" else not any(moved)  # DP: the update is pure noise


def test_bad_inputs(data, tokenizer, tmp_path):
    train, _ = data
    with pytest.raises(DpauditError, match="grad_sample_mode"):
        _train(
            train[:40],
            tokenizer,
            tmp_path / "ew",
            config=dataclasses.replace(BASE, grad_sample_mode="ew"),
        )
    with pytest.raises(DpauditError, match="no label"):
        _train(
            [Record("x", "alpha beta")] * 30,
            tokenizer,
            tmp_path / "nolabel",
            config=dataclasses.replace(BASE, model="embedded:bert-tiny", task="classification"),
        )
