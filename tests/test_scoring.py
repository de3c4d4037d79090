"""HFScoringModel against slow references: per-text loops, hand-computed statistics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dpaudit.attacks.scoring import (  # noqa: E402
    HFScoringModel,
    ScoringModel,
    TokenStats,
    tiny_causal_lm,
    tiny_classifier,
)
from dpaudit.datasets.tokenizer import train_bpe_tokenizer  # noqa: E402
from dpaudit.errors import DpauditError  # noqa: E402

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
    "Patient Alice Smith, born 1970-01-02, called about her results on Monday morning.",
    "a",
    "",
    "Short one.",
    "Transfer of 1200 EUR to account DE44 5001 0517 5407 3249 31 was flagged as unusual.",
    "The quick brown fox jumps over the lazy dog.",  # duplicate on purpose
]


@pytest.fixture(scope="module")
def tok():
    corpus = TEXTS * 3 + ["the fox and the dog went to the bank on monday"] * 3
    return train_bpe_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="module")
def lm(tok):
    return tiny_causal_lm(tok, seed=0)


def adapter(model, tok, **kwargs) -> HFScoringModel:
    kwargs.setdefault("progress", False)
    kwargs.setdefault("device", "cpu")
    return HFScoringModel(model, tok, **kwargs)


def reference_logits(model, tok, text: str, max_length: int = 128) -> tuple[list[int], np.ndarray]:
    """One text, batch of one, no padding: token ids and float64 logits."""
    ids = tok(text)["input_ids"][:max_length]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    return ids, logits


def reference_logprobs(model, tok, text: str, max_length: int = 128) -> np.ndarray:
    if len(tok(text)["input_ids"][:max_length]) < 2:
        return np.zeros(0)
    ids, logits = reference_logits(model, tok, text, max_length)
    logits = logits[:-1]
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return logits[np.arange(len(ids) - 1), ids[1:]] - log_z


def test_implements_protocol(lm, tok):
    assert isinstance(adapter(lm, tok), ScoringModel)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_token_logprobs_match_per_text_loop(lm, tok, batch_size):
    got = adapter(lm, tok, batch_size=batch_size).token_logprobs(TEXTS)
    assert len(got) == len(TEXTS)
    for text, lp in zip(TEXTS, got, strict=True):
        want = reference_logprobs(lm, tok, text)
        assert lp.shape == want.shape
        np.testing.assert_allclose(lp, want, atol=1e-5, rtol=0)


def test_scores_tokens_one_to_t_minus_one(lm, tok):
    stats = adapter(lm, tok).token_stats(TEXTS)
    for text, s in zip(TEXTS, stats, strict=True):
        n = len(tok(text)["input_ids"])
        assert isinstance(s, TokenStats)
        assert s.n_tokens == max(n - 1, 0)
        assert s.logprobs.shape == s.mu.shape == s.sigma.shape
        assert np.all(s.logprobs <= 0)


def test_truncates_at_max_length(lm, tok):
    long = " ".join(["word"] * 200)
    assert len(tok(long)["input_ids"]) > 20
    lp = adapter(lm, tok, max_length=20).token_logprobs([long])[0]
    assert lp.shape == (19,)
    np.testing.assert_allclose(lp, reference_logprobs(lm, tok, long, max_length=20), atol=1e-5)


def test_mu_sigma_by_hand(lm, tok):
    text = TEXTS[2]
    ids, logits = reference_logits(lm, tok, text)
    logits = logits[:-1]
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    p = np.exp(logp)
    mu = (p * logp).sum(-1)
    sigma = np.sqrt((p * logp**2).sum(-1) - mu**2)
    s = adapter(lm, tok, batch_size=4).token_stats(TEXTS)[2]
    np.testing.assert_allclose(s.mu, mu, atol=1e-4)
    np.testing.assert_allclose(s.sigma, sigma, atol=1e-4)
    np.testing.assert_allclose(s.logprobs, logp[np.arange(len(ids) - 1), ids[1:]], atol=1e-5)


def test_cache_avoids_second_forward_pass(lm, tok):
    calls = []
    handle = lm.register_forward_hook(lambda *args: calls.append(1))
    try:
        sm = adapter(lm, tok, batch_size=32)
        first = sm.token_stats(TEXTS)
        assert len(calls) == 1
        again = sm.token_logprobs(TEXTS)
        sm.token_stats(list(reversed(TEXTS)))
        assert len(calls) == 1
        assert all(a is f.logprobs for a, f in zip(again, first, strict=True))
        sm.token_logprobs(["a brand new text"])
        assert len(calls) == 2
        sm.clear_cache()
        sm.token_logprobs(TEXTS[:1])
        assert len(calls) == 3
    finally:
        handle.remove()


def test_cached_arrays_are_read_only(lm, tok):
    lp = adapter(lm, tok).token_logprobs(TEXTS[:1])[0]
    with pytest.raises(ValueError):
        lp[0] = 0.0


def test_peft_wrapped_model(lm, tok):
    peft = pytest.importorskip("peft")
    import copy

    wrapped = peft.get_peft_model(
        copy.deepcopy(lm), peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    got = adapter(wrapped, tok, batch_size=3).token_logprobs(TEXTS)
    # LoRA's B matrix starts at zero, so the wrapped model computes the base model.
    for text, lp in zip(TEXTS, got, strict=True):
        np.testing.assert_allclose(lp, reference_logprobs(lm, tok, text), atol=1e-5)
    out = adapter(wrapped, tok).generate(TEXTS[:2], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


# -- token trees (exposure enumeration) --------------------------------------------------


def _llama(tok):
    import dataclasses

    from dpaudit.config import TrainConfig
    from dpaudit.trainers.models import build_model

    cfg = dataclasses.replace(TrainConfig(), model="embedded:llama-tiny")
    return build_model(cfg, tok, seed=0, max_length=64).model.eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt2-peft"])
def test_branch_logprobs_match_per_text_reference(lm, tok, arch):
    """Context cache + one forward per stem = the per-text reference, for every leaf."""
    model = lm
    if arch == "llama":  # rotary positions must continue after the cached context
        model = _llama(tok)
    elif arch == "gpt2-peft":
        peft = pytest.importorskip("peft")
        import copy

        model = peft.get_peft_model(
            copy.deepcopy(lm), peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
        )
    context = tok("Patient Alice")["input_ids"]
    vocab = [i for i in range(5, 60)]
    stems = [[], [11], [12, 13], [14, 15], [16, 17, 18]]  # uneven lengths share no batch
    branches = [vocab[:7], vocab[7:9], vocab[9:20], vocab[20:21], vocab[21:40]]
    got = adapter(model, tok, batch_size=2).branch_logprobs(context, stems, branches)
    for stem, leaves, (path, leaf_lp) in zip(stems, branches, got, strict=True):
        ids = context + stem
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1).numpy()
        want_path = [logp[len(context) + j - 1, t] for j, t in enumerate(stem)]
        np.testing.assert_allclose(path, want_path, atol=2e-5)
        np.testing.assert_allclose(leaf_lp, logp[-1, leaves], atol=2e-5)
    with pytest.raises(DpauditError, match="context token"):
        adapter(model, tok).branch_logprobs([], [[1]], [[2]])


# -- generation --------------------------------------------------------------------------

PROMPTS = ["The quick brown", "Patient Alice Smith, born", "Hi", "Transfer of 1200 EUR to"]


def test_greedy_is_deterministic_and_batching_invariant(lm, tok):
    batched = adapter(lm, tok, batch_size=4).generate(PROMPTS, max_new_tokens=6)
    assert len(batched) == len(PROMPTS) and all(isinstance(t, str) for t in batched)
    assert adapter(lm, tok, batch_size=4).generate(PROMPTS, max_new_tokens=6) == batched
    one_by_one = adapter(lm, tok, batch_size=1).generate(PROMPTS, max_new_tokens=6)
    assert one_by_one == batched  # left padding does not change the continuation


def test_greedy_returns_continuation_only(lm, tok):
    sm = adapter(lm, tok)
    prompt = PROMPTS[0]
    cont = sm.generate([prompt], max_new_tokens=5)[0]
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        full = lm.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=5,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    assert cont == tok.decode(full[0, ids.shape[1] :], skip_special_tokens=True)


def test_sampling_reproducible_under_seed(lm, tok):
    sm = adapter(lm, tok, batch_size=2)
    state = torch.random.get_rng_state()
    a = sm.generate(
        PROMPTS, strategy="sample", max_new_tokens=8, seed=7, num_return_sequences=2, top_k=50
    )
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    b = sm.generate(
        PROMPTS, strategy="sample", max_new_tokens=8, seed=7, num_return_sequences=2, top_k=50
    )
    c = sm.generate(
        PROMPTS, strategy="sample", max_new_tokens=8, seed=8, num_return_sequences=2, top_k=50
    )
    assert a == b
    assert a != c
    assert len(a) == 2 * len(PROMPTS)


def test_beam_search(lm, tok):
    out = adapter(lm, tok).generate(
        PROMPTS, strategy="beam", num_beams=3, num_return_sequences=2, max_new_tokens=5
    )
    assert len(out) == 2 * len(PROMPTS) and all(isinstance(t, str) for t in out)
    with pytest.raises(DpauditError, match="exceeds num_beams"):
        adapter(lm, tok).generate(PROMPTS, strategy="beam", num_beams=2, num_return_sequences=3)


def test_unknown_strategy_suggests(lm, tok):
    with pytest.raises(DpauditError, match="did you mean 'greedy'"):
        adapter(lm, tok).generate(PROMPTS, strategy="greedyy")


# -- classification ------------------------------------------------------------------------


def test_classify_batched_matches_one_by_one(tok):
    clf = tiny_classifier(tok, num_labels=3, seed=1)
    texts = [t for t in TEXTS if t]
    batched = adapter(clf, tok, batch_size=4).classify(texts)
    assert batched.shape == (len(texts), 3)
    for text, row in zip(texts, batched, strict=True):
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            want = clf(input_ids=ids).logits[0].double().numpy()
        np.testing.assert_allclose(row, want, atol=1e-5)


def test_tiny_models_are_seeded(tok):
    a, b, c = tiny_causal_lm(tok, seed=3), tiny_causal_lm(tok, seed=3), tiny_causal_lm(tok, seed=4)
    wa, wb, wc = (m.transformer.wte.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.config.n_embd == 64 and a.config.n_layer == 2 and not a.config.tie_word_embeddings


def test_progress_bars_name_the_model(lm, tok, capsys):
    adapter(lm, tok, progress=True, label="ref-3").score_batch(TEXTS[:2])
    assert "scoring ref-3" in capsys.readouterr().err
