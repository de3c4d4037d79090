"""Canary exposure and extraction: against brute force, on a tiny trained GPT-2, and with toy scorers.

The trained model (one per module) is a tiny GPT-2 fitted with plain AdamW on
40 filler texts plus Secret-Sharer canaries from ``digits:3`` (|R| = 1000):
one inserted once, one inserted 16 times, one left out.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from _tiny_lm import make_texts, overfit

from dpaudit.attacks.canary import (
    CanaryResult,
    ExtractionResult,
    attach_extraction,
    canary_exposure,
    canary_extraction,
    canary_logppl,
    exposure_summary,
    extraction_summary,
    scoring_context,
    starts_with_secret,
)
from dpaudit.attacks.scoring import HFScoringModel, tiny_causal_lm
from dpaudit.datasets.canaries import enumerate_secrets, insert_canaries, make_canaries
from dpaudit.datasets.records import Canary, Record
from dpaudit.datasets.tokenizer import train_bpe_tokenizer
from dpaudit.errors import DpauditError

torch = pytest.importorskip("torch")

PREFIX = "my secret code is "
SPACE = "digits:3"


# -- toy scorers (no torch) -------------------------------------------------------------


class CharTokenizer:
    """One token per character, except the merges in ``merges`` (greedy, left to right)."""

    def __init__(self, merges: tuple[str, ...] = ()):
        self.merges = merges

    def _ids(self, text: str) -> list[int]:
        out, i = [], 0
        while i < len(text):
            m = next((m for m in self.merges if text.startswith(m, i)), None)
            piece = m or text[i]
            out.append(1000 + self.merges.index(m) if m else ord(piece))
            i += len(piece)
        return out

    def __call__(self, texts):
        return {"input_ids": [self._ids(t) for t in texts]}


class GptLikeTokenizer:
    """Splits like GPT-2's pre-tokenizer: a space attaches to the following word."""

    def __call__(self, texts):
        return {
            "input_ids": [[hash(p) % 10007 for p in re.findall(r" ?\S+|\s+", t)] for t in texts]
        }


class ToyModel:
    """Deterministic log-probs from token ids: ``lp_t = -(1 + (7 x_t + 3 x_{t-1}) mod 11) / 4``."""

    max_length = 128
    progress = False

    def __init__(self, tokenizer=None):
        if tokenizer is not None:
            self.tokenizer = tokenizer

    def _ids(self, text):
        tok = getattr(self, "tokenizer", None) or CharTokenizer()
        return tok([text])["input_ids"][0]

    def token_logprobs(self, texts):
        out = []
        for t in texts:
            ids = self._ids(t)
            out.append(
                np.array(
                    [
                        -(1 + (7 * b + 3 * a) % 11) / 4
                        for a, b in zip(ids[:-1], ids[1:], strict=True)
                    ]
                )
            )
        return out


def toy_logppl(model, text, n_context):
    return -float(np.sum(model.token_logprobs([text])[0][max(n_context - 1, 0) :]))


def canary(cid, secret, reps=1, included=True, prefix=PREFIX, space=SPACE):
    return Canary(cid, prefix, secret, space, reps, included)


def test_scoring_context_scopes():
    texts = [PREFIX + s for s in ("4 8 2", "0 0 1")]
    char = CharTokenizer()
    assert scoring_context(lambda t: char(t)["input_ids"], PREFIX, texts) == (
        "secret",
        PREFIX,
        len(PREFIX),
    )
    gpt = GptLikeTokenizer()
    scope, context, n = scoring_context(lambda t: gpt(t)["input_ids"], PREFIX, texts)
    assert (scope, context, n) == ("separator+secret", PREFIX.rstrip(), 4)
    # No whitespace to move and the boundary token merges prefix and secret.
    scope, context, n = scoring_context(lambda t: gpt(t)["input_ids"], "code:", ["code:4 8"])
    assert (scope, context, n) == ("text", "code:", 0)


def test_logppl_counts_only_secret_tokens():
    model = ToyModel(CharTokenizer())
    values, scope = canary_logppl(model, PREFIX, ["4 8 2", "9 9 9"])
    assert scope == "secret"
    want = [toy_logppl(model, PREFIX + s, len(PREFIX)) for s in ("4 8 2", "9 9 9")]
    np.testing.assert_allclose(values, want, rtol=0, atol=1e-12)


def test_exact_exposure_toy_matches_enumeration():
    model = ToyModel(CharTokenizer())
    secrets = ["4 8 2", "0 0 0", "9 1 7"]
    cs = [canary(f"canary-{i}", s) for i, s in enumerate(secrets)]
    got = canary_exposure(model, cs, batch_size=64, progress=False)
    every = list(enumerate_secrets(SPACE))
    all_ppl = np.array([toy_logppl(model, PREFIX + s, len(PREFIX)) for s in every])
    for r, s in zip(got, secrets, strict=True):
        own = toy_logppl(model, PREFIX + s, len(PREFIX))
        rank = int(np.sum(all_ppl <= own))  # conservative ties, the secret counts itself
        assert (r.method, r.rank, r.space_size, r.scope) == ("exact", rank, 1000, "secret")
        assert r.exposure == pytest.approx(math.log2(1000) - math.log2(rank), abs=1e-12)


def test_misaligned_candidate_rescores_group_as_text():
    """'s9' merges into one token: the canary aligns but candidate '9' does not."""
    model = ToyModel(CharTokenizer(merges=("s9",)))
    c = canary("canary-0", "3", prefix="xs", space="digits:1")
    with pytest.warns(UserWarning, match="whole text"):
        (r,) = canary_exposure(model, [c], progress=False)
    assert r.scope == "text"
    assert r.logppl == pytest.approx(toy_logppl(model, "xs3", 0), abs=1e-12)
    every = [toy_logppl(model, "xs" + s, 0) for s in "0123456789"]
    assert r.rank == sum(v <= r.logppl for v in every)


def test_no_tokenizer_scores_whole_text_and_warns():
    model = ToyModel()
    with pytest.warns(UserWarning, match="whole text"):
        (r,) = canary_exposure(model, [canary("canary-0", "1 2 3")], progress=False)
    assert r.scope == "text"
    assert r.logppl == pytest.approx(toy_logppl(model, PREFIX + "1 2 3", 0), abs=1e-12)


def test_space_is_scored_once_per_group():
    class Counting(ToyModel):
        scored = 0

        def token_logprobs(self, texts):
            Counting.scored += len(texts)
            return super().token_logprobs(texts)

    model = Counting(CharTokenizer())
    cs = [canary(f"canary-{i}", s) for i, s in enumerate(["1 2 3", "4 5 6", "7 8 9"])]
    cs.append(canary("canary-x", "1 2", prefix="other ", space="digits:2"))
    results = canary_exposure(model, cs, progress=False)
    assert [r.canary_id for r in results] == [c.id for c in cs]
    assert Counting.scored == (3 + 1000) + (1 + 100)


def test_extrapolated_is_seeded():
    model = ToyModel(CharTokenizer())
    cs = [canary("canary-0", "4 8 2")]
    a = canary_exposure(model, cs, enumeration_limit=100, n_samples=300, seed=1, progress=False)
    b = canary_exposure(model, cs, enumeration_limit=100, n_samples=300, seed=1, progress=False)
    assert a == b
    assert (a[0].method, a[0].rank, a[0].n_candidates) == ("extrapolated", None, 300)
    assert 0 <= a[0].exposure <= math.log2(1000)


def test_results_never_show_the_secret():
    r = CanaryResult(
        "canary-0", 4, True, 7.5, "exact", 3, 10**6, secret_space="digits:6", secret="4 8 2 9 1 0"
    )
    assert "4 8 2 9 1 0" not in repr(r) and "4 8 2 9 1 0" not in str(r)
    masked = r.to_dict()
    assert masked["secret"] == "6 symbols, masked"
    assert "4 8 2 9 1 0" not in str(masked)
    assert r.to_dict(reveal=True)["secret"] == "4 8 2 9 1 0"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (" 4 8 2", True),
        ("4  8\n2 and more", True),
        ("4 8 2.", True),
        ("4 8 23", False),
        ("4 8", False),
        ("1 4 8 2", False),
    ],
)
def test_starts_with_secret(text, ok):
    assert starts_with_secret(text, "4 8 2") is ok


def test_summaries_group_by_insertions():
    results = [
        CanaryResult("canary-0", 1, True, 9.0, "exact", 2, 1000, secret_space=SPACE),
        CanaryResult("canary-1", 16, True, 10.0, "exact", 1, 1000, secret_space=SPACE),
        CanaryResult("canary-2", 16, False, 1.0, "exact", 500, 1000, secret_space=SPACE),
    ]
    summary = exposure_summary(results)
    assert sorted(summary) == [0, 1, 16]
    assert summary[16]["mean"] == 10.0 and summary[0]["n"] == 1
    ex = [
        ExtractionResult("canary-0", 1, True, "greedy", False, 0, 1),
        ExtractionResult("canary-1", 16, True, "greedy", True, 1, 1),
        ExtractionResult("canary-1", 16, True, "sample", True, 3, 8),
        ExtractionResult("canary-2", 16, False, "greedy", False, 0, 1),
    ]
    assert extraction_summary(ex) == {
        0: {"greedy": {"rate": 0.0, "extracted": 0, "n": 1}},
        1: {"greedy": {"rate": 0.0, "extracted": 0, "n": 1}},
        16: {
            "greedy": {"rate": 1.0, "extracted": 1, "n": 1},
            "sample": {"rate": 1.0, "extracted": 1, "n": 1},
        },
    }
    attached = attach_extraction(results, ex)
    assert [r.extracted for r in attached] == [False, True, False]
    assert [r.extracted for r in attach_extraction(results, ex, strategy="beam")] == [None] * 3


def test_bad_input_is_named():
    model = ToyModel(CharTokenizer())
    with pytest.raises(DpauditError, match="canary-bad"):
        canary_exposure(model, [canary("canary-bad", "12 3")], progress=False)
    with pytest.raises(DpauditError, match="not unique"):
        canary_exposure(model, [canary("canary-0", "1 2 3")] * 2, progress=False)
    with pytest.raises(DpauditError, match="did you mean 'beam'"):
        canary_extraction(model, [canary("canary-0", "1 2 3")], strategies=("beams",))


# -- a tiny GPT-2 trained on canaries ---------------------------------------------------


ONCE, SIXTEEN, LEFT_OUT = make_canaries(
    prefix=PREFIX, secret_space=SPACE, repetitions=(1, 16, 1), seed=3
)
LEFT_OUT = Canary(LEFT_OUT.id, PREFIX, LEFT_OUT.secret, SPACE, 1, False)
CANARIES = [ONCE, SIXTEEN, LEFT_OUT]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy machine they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    filler = [Record(f"f-{i:02d}", t) for i, t in enumerate(make_texts(40, seed=5))]
    texts = [r.text for r in insert_canaries(filler, CANARIES, seed=0)]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    model = overfit(tiny_causal_lm(tok, seed=0), tok, texts, steps=60)
    return model, tok


@pytest.fixture(scope="module")
def scorer(trained):
    model, tok = trained
    return HFScoringModel(model, tok, device="cpu", batch_size=128, progress=False)


@pytest.fixture(scope="module")
def exact(scorer):
    return canary_exposure(scorer, CANARIES, batch_size=300, progress=False)


def brute_force_logppl(model, tok, context: str, texts: list[str]) -> np.ndarray:
    """One text at a time: float64 log-softmax, sum over the tokens after ``context``."""
    n = len(tok(context)["input_ids"])
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text)["input_ids"]
            assert ids[:n] == tok(context)["input_ids"]
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            out.append(-sum(float(logp[t - 1, ids[t]]) for t in range(n, len(ids))))
    return np.array(out)


def test_exposure_agrees_with_brute_force(trained, exact):
    model, tok = trained
    every = list(enumerate_secrets(SPACE))
    ppl = brute_force_logppl(model, tok, PREFIX.rstrip(), [PREFIX + s for s in every])
    for c, r in zip(CANARIES, exact, strict=True):
        own = ppl[every.index(c.secret)]
        rank = int(np.sum(ppl <= own))
        assert r.scope == "separator+secret"
        assert r.method == "exact" and r.rank == rank
        assert r.exposure == math.log2(1000) - math.log2(rank)
        assert r.logppl == pytest.approx(own, abs=1e-4)


class _NoTree:
    """The adapter without ``branch_logprobs``: forces one full forward per candidate."""

    def __init__(self, inner):
        self.inner = inner
        self.tokenizer, self.max_length, self.progress = inner.tokenizer, inner.max_length, False

    def score_batch(self, texts):
        return self.inner.score_batch(texts)

    def token_logprobs(self, texts):
        return self.inner.token_logprobs(texts)


def test_prefix_tree_equals_per_candidate_with_a_tenth_of_the_forwards(trained, scorer, exact):
    """The token tree ranks exactly as one forward per candidate, from ~|R|/10 stem rows."""
    model, _ = trained
    rows = []
    handle = model.register_forward_hook(
        lambda m, args, kw, out: rows.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        tree = canary_exposure(scorer, CANARIES, batch_size=300, progress=False)
        tree_rows = sum(rows)
        rows.clear()
        flat = canary_exposure(_NoTree(scorer), CANARIES, batch_size=300, progress=False)
        flat_rows = sum(rows)
    finally:
        handle.remove()
    assert [r.enumeration for r in tree] == ["prefix-tree"] * 3
    assert [r.enumeration for r in flat] == ["per-candidate"] * 3
    assert [r.rank for r in tree] == [r.rank for r in flat] == [r.rank for r in exact]
    for a, b in zip(tree, flat, strict=True):
        assert a.logppl == pytest.approx(b.logppl, abs=1e-4)
    # digits:3: 1000 texts one by one, against one row per stem (100 when every " d" is one
    # token; this tokenizer merged a few digit pairs, which makes ~200) and the context's.
    assert flat_rows >= 1000 and tree_rows <= flat_rows / 4
    extra = canary_exposure(
        scorer, CANARIES, enumeration_limit=10, n_samples=200, seed=0, progress=False
    )
    assert all(r.enumeration is None for r in extra)


def test_inserted_canary_is_exposed(exact):
    once, sixteen, left_out = (r.exposure for r in exact)
    assert sixteen >= math.log2(1000) - 1
    assert sixteen > left_out
    # A secret the model never saw ranks uniformly: P(exposure > 5 bits) ~ 3 %.
    assert left_out < 5
    assert once > left_out


def test_extrapolated_close_to_exact(scorer, exact):
    extra = canary_exposure(
        scorer, CANARIES, enumeration_limit=10, n_samples=500, seed=0, progress=False
    )
    assert all(r.method == "extrapolated" and r.rank is None for r in extra)
    # Memorised: far below every sampled candidate, so both read log2|R| (clipped).
    assert abs(extra[1].exposure - exact[1].exposure) <= 2
    # In the bulk of the distribution the fit is good to well under a bit.
    assert abs(extra[2].exposure - exact[2].exposure) <= 1


def test_greedy_extracts_the_sixteen_times_canary(scorer):
    ex = canary_extraction(scorer, CANARIES, n_samples=8, seed=0)
    got = {(e.canary_id, e.strategy): e for e in ex}
    assert got[(SIXTEEN.id, "greedy")].extracted
    assert not got[(LEFT_OUT.id, "greedy")].extracted
    assert got[(SIXTEEN.id, "sample")].tries == 8
    assert canary_extraction(scorer, CANARIES, n_samples=8, seed=0) == ex
    summary = extraction_summary(ex)
    assert summary[16]["greedy"]["rate"] == 1.0 and summary[0]["greedy"]["rate"] == 0.0


def test_public_names_exist():
    import dpaudit.attacks.canary as module

    for name in module.__all__:
        assert hasattr(module, name), name
