"""Gradient inversion on text (dpaudit.attacks.gradient_inversion, .inversion_trials).

Real models (tiny GPT-2 and Llama built from configs), real gradients of dpaudit's
training loss, real attacks; expected values are the batch the gradient came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpaudit.attacks.gradient_inversion import (
    find_probes,
    inversion_metrics,
    invert_update,
    rouge_l,
    set_metrics,
    span_basis,
    token_set_leak,
)
from dpaudit.attacks.inversion_trials import Defence, client_update, run_inversion_trials

VOCAB = 300


def _gpt2(width: int = 64, tied: bool = False):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_embd=width,
        n_layer=2,
        n_head=4,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def gpt2():
    return _gpt2()


def _texts(n: int, length: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(1, VOCAB, size=length)] for _ in range(n)]


def test_rouge_l_and_set_metrics_closed_forms():
    # LCS([1,2,3,4], [1,3,4]) = 3: recall 3/4, precision 1, F1 = 2·0.75/1.75 (Lin 2004, Eq. 4)
    assert rouge_l([1, 2, 3, 4], [1, 3, 4]) == pytest.approx(2 * 0.75 / 1.75)
    assert rouge_l([1, 2], [3, 4]) == 0.0 and rouge_l([5, 6, 7], [5, 6, 7]) == 1.0
    assert set_metrics([[1, 2, 3]], {2, 3, 9}) == {"precision": 2 / 3, "recall": 2 / 3}
    m = inversion_metrics([[1, 2, 3], [4, 5]], [(1, 2, 3)])
    assert m == {"token_precision": 1.0, "token_recall": 0.6, "rouge_l": 0.5, "exact_rate": 0.5}


def test_span_basis_recovers_the_inputs_span_in_both_layouts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 32))  # 5 token inputs of width 32
    delta = rng.normal(size=(5, 48))
    for grad, rows in ((delta.T @ x, True), (x.T @ delta, False)):  # nn.Linear / Conv1D
        basis = span_basis(grad, rows=rows)
        assert basis.shape == (32, 5)
        inside = x[2] @ basis @ basis.T
        assert np.allclose(inside, x[2])
        outside = rng.normal(size=32)
        assert np.linalg.norm(outside - outside @ basis @ basis.T) > 0.5 * np.linalg.norm(outside)


def test_undefended_update_gives_away_a_single_short_example(gpt2):
    text = _texts(1, 10, seed=1)[0]
    update, noise = client_update(gpt2, [text], pad_id=0)
    assert noise == 0.0
    leak = token_set_leak(update, model=gpt2)
    # every token the model reads as input (all but the last, which only appears as a label)
    assert leak.applicable and leak.tokens == frozenset(text[:-1])
    rec = invert_update(gpt2, update, max_length=12, batch_size=1)
    assert rec.status == "ok" and rec.last_token == "output-layer"
    assert rec.sequences == (tuple(text),)  # every token, in order
    assert rec.ranks[0] == len(text) - 1 < rec.width
    # a FedAvg-style update θ_k − θ = −η·g gives the same text (scale and sign are fitted)
    step = {k: -0.1 * v for k, v in update.items()}
    assert invert_update(gpt2, step, max_length=12, batch_size=1).sequences == (tuple(text),)


def test_a_batch_is_recovered_text_by_text_until_it_fills_the_width(gpt2):
    batch = [t[: 6 + k] for k, t in enumerate(_texts(4, 12, seed=2))]  # lengths 6..9, padded
    update, _ = client_update(gpt2, batch, pad_id=0)
    rec = invert_update(gpt2, update, max_length=12, batch_size=4)
    assert sorted(rec.sequences) == sorted(tuple(t) for t in batch)
    assert inversion_metrics(batch, rec.sequences)["exact_rate"] == 1.0
    # 8 texts × 12 tokens > width 64: the span holds every input, the test has no power
    big = _texts(8, 12, seed=3)
    update, _ = client_update(gpt2, big, pad_id=0)
    rec = invert_update(gpt2, update, max_length=12, batch_size=8)
    assert rec.sequences == () and "no power" in rec.status


def test_clipping_alone_does_not_defend_but_noise_does(gpt2):
    text = _texts(1, 10, seed=4)[0]
    clipped, noise = client_update(gpt2, [text], pad_id=0, defence=Defence("dp", 0.0, 0.1))
    assert noise == 0.0
    # clipping rescales the gradient; the last-token fit absorbs the scale
    assert invert_update(gpt2, clipped, max_length=12).sequences == (tuple(text),)
    recalls, rouges = [], []
    for sigma in (1e-4, 1e-3, 1e-2, 1e-1):
        noisy, noise = client_update(
            gpt2, [text], pad_id=0, defence=Defence("dp", sigma, 1.0), seed=1
        )
        assert noise == pytest.approx(sigma)
        leak = token_set_leak(noisy, model=gpt2, noise_std=noise)
        recalls.append(set_metrics([text], leak.tokens)["recall"])
        rec = invert_update(gpt2, noisy, max_length=12, noise_std=noise)
        rouges.append(inversion_metrics([text], rec.sequences)["rouge_l"])
    assert recalls == sorted(recalls, reverse=True) and recalls[-1] < 0.3 < recalls[0]
    assert rouges == sorted(rouges, reverse=True) and rouges[-1] == 0.0


def test_lora_updates_leak_only_while_the_batch_fits_the_rank():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        _gpt2(),
        LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True),
    ).eval()
    text = _texts(1, 12, seed=5)[0]
    fresh, _ = client_update(model, [text], pad_id=0)
    assert not token_set_leak(fresh).applicable  # no embedding rows travel
    # at PEFT's initialisation B = 0, so the gradient of A is exactly zero
    assert invert_update(model, fresh, max_length=12).status == "empty span"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    short = text[:7]  # 6 counted inputs ≤ r = 8
    update, _ = client_update(model, [short], pad_id=0)
    probe = find_probes(model, list(update))[0]
    assert [key for key, _ in probe.params] == [
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight"
    ]
    rec = invert_update(model, update, max_length=12)
    assert rec.sequences and rec.sequences[0] == tuple(short[:-1])  # no lm_head: last token lost
    update, _ = client_update(model, [text], pad_id=0)  # 11 inputs > r: the span is too small
    assert invert_update(model, update, max_length=12).sequences != (tuple(text[:-1]),)


def test_rotary_tied_llama_is_searched_without_positions():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            pad_token_id=0,
        )
    ).eval()
    text = _texts(1, 8, seed=6)[0]
    update, _ = client_update(model, [text], pad_id=0)
    leak = token_set_leak(update, model=model)
    assert not leak.applicable and "tied" in (leak.reason or "")
    rec = invert_update(model, update, max_length=10)
    assert rec.last_token == "not recovered"  # tied output layer: no completion
    assert tuple(text[:-1]) in rec.sequences


def test_trials_grid_reports_each_defence(gpt2):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(
        _gpt2(), LoraConfig(r=8, target_modules=["c_attn"], fan_in_fan_out=True)
    ).eval()
    clients = [_texts(3, 10, seed=10 + k) for k in range(4)]
    cells, skipped = run_inversion_trials(
        {"full": gpt2, "lora": lora},
        clients,
        pad_id=0,
        defences=[Defence("none"), Defence("dp", 0.1, 1.0), Defence("lora")],
        batch_sizes=[1],
        lengths=[8],
        trials=3,
        seed=0,
    )
    assert skipped == []
    by = {c.defence: c for c in cells}
    assert by["none"].trials == 3 and by["none"].exact_rate == 1.0 and by["none"].rouge_l == 1.0
    assert by["dp"].rouge_l == 0.0 and by["dp"].leak_recall is not None
    assert by["lora"].leak_precision is None and by["lora"].leak_note
