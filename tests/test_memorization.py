"""Verbatim memorization (Carlini et al. 2023) on a tiny GPT-2 overfit on repeated texts.

The model (one per module) trains with plain AdamW on 4 texts repeated 16
times and 6 texts seen once; 6 more texts from the same generator are held out.
"""

from __future__ import annotations

import pytest
from _tiny_lm import make_texts, overfit

from dpaudit.attacks.memorization import (
    MemorizationResult,
    dedupe_records,
    greedy_continuations,
    verbatim_memorization,
)
from dpaudit.attacks.scoring import HFScoringModel, tiny_causal_lm
from dpaudit.datasets.records import Record
from dpaudit.datasets.tokenizer import train_bpe_tokenizer
from dpaudit.errors import DpauditError

torch = pytest.importorskip("torch")


K, N = 8, 8
_TEXTS = make_texts(16, seed=11)
REPEATED, SEEN_ONCE, HELD_OUT = _TEXTS[:4], _TEXTS[4:10], _TEXTS[10:]
TRAIN = [Record(f"rep-{i}-{c:02d}", t) for i, t in enumerate(REPEATED) for c in range(16)] + [
    Record(f"once-{i}", t) for i, t in enumerate(SEEN_ONCE)
]
HELD = [Record(f"held-{i}", t, meta={"duplicates": 0}) for i, t in enumerate(HELD_OUT)]
SHORT = [Record("short-0", "Hi."), Record("short-1", "Lena paid")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy machine they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(_TEXTS, vocab_size=400)


@pytest.fixture(scope="module")
def scorer(tok):
    model = overfit(tiny_causal_lm(tok, seed=0), tok, [r.text for r in TRAIN], steps=60)
    return HFScoringModel(model, tok, device="cpu", batch_size=8, progress=False)


@pytest.fixture(scope="module")
def unique_train():
    return dedupe_records(TRAIN)


def hand_greedy(model, prompt: list[int], n: int) -> list[int]:
    """One token at a time, full forward pass each step, no cache."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt) :]


def test_texts_are_long_enough(tok):
    assert min(len(tok(t)["input_ids"]) for t in _TEXTS) >= K + N
    assert max(len(tok(r.text)["input_ids"]) for r in SHORT) < K + N


def test_dedupe_counts_copies(unique_train):
    records, counts = unique_train
    assert [r.id for r in records] == [f"rep-{i}-00" for i in range(4)] + [
        f"once-{i}" for i in range(6)
    ]
    assert counts == {**{f"rep-{i}-00": 16 for i in range(4)}, **{f"once-{i}": 1 for i in range(6)}}


def test_repeated_texts_are_memorized_and_held_out_are_not(scorer, unique_train):
    records, counts = unique_train
    result = verbatim_memorization(
        scorer, records + HELD + SHORT, prefix_tokens=K, suffix_tokens=N, duplicates=counts
    )
    assert isinstance(result, MemorizationResult)
    assert result.n_evaluated == len(records) + len(HELD)
    assert result.n_skipped_too_short == len(SHORT)
    assert result.by_duplication[16] == (1.0, 4)
    assert result.by_duplication[0] == (0.0, len(HELD))
    assert sorted(result.by_duplication) == [0, 1, 16]
    assert set(result.memorized_ids) >= {f"rep-{i}-00" for i in range(4)}
    assert not any(i.startswith("held-") for i in result.memorized_ids)
    n_mem = len(result.memorized_ids)
    assert result.rate == pytest.approx(n_mem / result.n_evaluated)
    assert result.to_dict()["by_duplication"]["16"] == {"rate": 1.0, "n": 4}


def test_meta_duplicates_are_the_default(scorer):
    records = [Record("a", REPEATED[0], meta={"duplicates": 16}), Record("b", HELD_OUT[0])]
    result = verbatim_memorization(scorer, records, prefix_tokens=K, suffix_tokens=N)
    assert result.by_duplication == {1: (0.0, 1), 16: (1.0, 1)}
    assert result.memorized_ids == ("a",)


def test_batched_greedy_matches_hand_loop(scorer, tok):
    """Every example, with mixed prompt lengths and a batch size that splits groups."""
    texts = REPEATED + SEEN_ONCE + HELD_OUT
    prompts = [tok(t)["input_ids"][: K - 3 + (i % 4) * 2] for i, t in enumerate(texts)]
    got = greedy_continuations(scorer.model, prompts, N, batch_size=3)
    want = [hand_greedy(scorer.model, p, N) for p in prompts]
    assert got == want


def test_bad_input(scorer):
    with pytest.raises(DpauditError, match="no record has the 16 tokens"):
        verbatim_memorization(scorer, SHORT, prefix_tokens=K, suffix_tokens=N)
    with pytest.raises(DpauditError, match="'a'.*integer"):
        verbatim_memorization(scorer, [Record("a", REPEATED[0], meta={"duplicates": "2"})])
    with pytest.raises(DpauditError, match=".model and .tokenizer"):
        verbatim_memorization(object(), [Record("a", REPEATED[0])])
    with pytest.raises(DpauditError, match="positions"):
        greedy_continuations(scorer.model, [[1, 2, 3]], 200)


def test_public_names_exist():
    import dpaudit.attacks.memorization as module

    for name in module.__all__:
        assert hasattr(module, name), name
