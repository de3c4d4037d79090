"""PII extraction, reconstruction and inference (Lukas et al. 2023).

A tiny GPT-2 is overfitted (once per module, one thread) on 40 synthetic
clinical records whose people repeat 1-8 times; 40 held-out records of 40 other
people come from a different seed. An untrained tiny GPT-2 is the no-leakage
baseline. The tokenizer is trained on a third, independent corpus: a BPE
vocabulary learned on the training text merges the names of often-repeated
people into fewer tokens, which alone lets even an untrained model prefer
them (the score sums one log-probability per token).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dpaudit.atomic import dumps  # noqa: E402
from dpaudit.attacks import pii as pii_module  # noqa: E402
from dpaudit.attacks import pii_extraction as extraction_module  # noqa: E402
from dpaudit.attacks import pii_reconstruction as reconstruction_module  # noqa: E402
from dpaudit.attacks.pii import (  # noqa: E402
    MaskedText,
    duplication_bucket,
    mask_record,
    pii_duplicate_counts,
    score_candidates,
    top1_credit,
    true_rank,
)
from dpaudit.attacks.pii_detect import normalize_pii  # noqa: E402
from dpaudit.attacks.pii_extraction import (  # noqa: E402
    BucketRecall,
    pii_extraction,
    prefix_prompts,
)
from dpaudit.attacks.pii_reconstruction import (  # noqa: E402
    extract_candidate,
    pii_inference,
    pii_reconstruction,
)
from dpaudit.attacks.scoring import HFScoringModel, tiny_causal_lm  # noqa: E402
from dpaudit.datasets.records import PiiSpan, Record  # noqa: E402
from dpaudit.datasets.synth import synthesize  # noqa: E402
from dpaudit.datasets.tokenizer import train_bpe_tokenizer  # noqa: E402
from dpaudit.errors import DpauditError  # noqa: E402

DUPLICATION = (1, 2, 4, 8)
TRAIN = synthesize("clinical", 40, 0, duplication=DUPLICATION)
HELD = synthesize("clinical", 40, 1, duplication=(1,))
TOKENIZER_CORPUS = synthesize("clinical", 200, 2, duplication=(1,))
ALL_VALUES = sorted({s.value for r in TRAIN + HELD for s in r.pii}, key=len, reverse=True)


def overfit(model, tok, texts, *, epochs: int = 25, batch_size: int = 8, lr: float = 5e-3):
    """Minibatch AdamW on one thread, seeded: memorises in a few seconds.

    Minibatches of 8 reach a lower loss per second than full batches here, and
    one thread is faster than two on a busy 2-core machine (as in test_mia).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        order = torch.Generator().manual_seed(0)
        enc = tok(texts, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        target = ids.masked_fill(mask == 0, -100)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(texts), generator=order)
            for i in range(0, len(texts), batch_size):
                rows = perm[i : i + batch_size]
                width = int(mask[rows].sum(1).max())
                loss = model(
                    input_ids=ids[rows, :width],
                    attention_mask=mask[rows, :width],
                    labels=target[rows, :width],
                ).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer([r.text for r in TOKENIZER_CORPUS], vocab_size=2000)


def adapter(model, tok, batch_size: int = 64) -> HFScoringModel:
    return HFScoringModel(model, tok, device="cpu", batch_size=batch_size, progress=False)


@pytest.fixture(scope="module")
def target(tok):
    return overfit(tiny_causal_lm(tok, seed=0), tok, [r.text for r in TRAIN])


@pytest.fixture(scope="module")
def lm(target, tok):
    return adapter(target, tok)


@pytest.fixture(scope="module")
def untrained(tok):
    return adapter(tiny_causal_lm(tok, seed=1), tok)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def within_chance(result, sigmas: float = 3.0) -> bool:
    """Accuracy no more than ``sigmas`` binomial standard errors above chance.

    Records of one person share the true value, so the credit is averaged per
    person first and the people are the independent trials.
    """
    per_person: dict[str, list[float]] = {}
    for r in result.records:
        per_person.setdefault(r.truth, []).append(r.credit)
    accuracy = float(np.mean([np.mean(v) for v in per_person.values()]))
    c, n = result.chance, len(per_person)
    return accuracy <= c + sigmas * math.sqrt(c * (1 - c) / n)


def assert_no_pii(payload: str) -> None:
    leaked = [v for v in ALL_VALUES if v in payload]
    assert not leaked, f"{len(leaked)} PII value(s) in the output"


# -- pure helpers ---------------------------------------------------------------


def test_public_names_exist():
    for module in (pii_module, extraction_module, reconstruction_module):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_duplication_bucket():
    got = [duplication_bucket(n) for n in (0, 1, 2, 3, 4, 7, 8, 15, 16)]
    assert got == ["0", "1", "2-3", "2-3", "4-7", "4-7", "8-15", "8-15", "16-31"]
    with pytest.raises(DpauditError):
        duplication_bucket(-1)


def test_duplicate_counts_match_synth_metadata():
    counts = pii_duplicate_counts(TRAIN)
    for record in TRAIN:
        for span, meta in zip(record.pii, record.meta["pii_duplicates"], strict=True):
            assert counts[(span.kind, normalize_pii(span.kind, span.value))] == meta
    assert max(counts.values()) >= 4  # the corpus does repeat people


def test_prefix_prompts_stop_before_pii():
    prompts = prefix_prompts(TRAIN, n_words=3)
    assert prompts and len(prompts) == len(set(prompts))
    assert all(len(p.split()) <= 3 for p in prompts)
    assert "Routine follow-up. Patient" in prompts
    assert_no_pii("\n".join(prompts))
    with pytest.raises(DpauditError):
        prefix_prompts(TRAIN, n_words=0)


def test_mask_record_refills_every_occurrence():
    text = "Ann Lee (DOB 1980-01-02) called; Ann Lee again."
    record = Record(
        "r1",
        text,
        pii=(
            PiiSpan(0, 7, "PERSON", "Ann Lee"),
            PiiSpan(13, 23, "DATE_OF_BIRTH", "1980-01-02"),
            PiiSpan(33, 40, "PERSON", "Ann Lee"),
        ),
    )
    masked = mask_record(record, "PERSON")
    assert isinstance(masked, MaskedText)
    assert masked.pieces == ("", " (DOB 1980-01-02) called; ", " again.")
    assert masked.fill("Ann Lee") == text and masked.truth == "Ann Lee"
    hidden = mask_record(record, "PERSON", other_pii="mask")
    assert hidden.fill("X") == "X (DOB [DATE_OF_BIRTH]) called; X again."
    assert mask_record(record, "EMAIL") is None
    assert "Ann" not in repr(masked)
    for record in TRAIN:
        for kind in {s.kind for s in record.pii}:
            m = mask_record(record, kind)
            assert m.fill(m.truth) == record.text
    with pytest.raises(DpauditError, match="did you mean"):
        mask_record(record, "PERSONS")
    with pytest.raises(DpauditError):
        mask_record(record, "PERSON", other_pii="drop")


def test_extract_candidate():
    assert extract_candidate("Patient", " Ann Lee (DOB 1990", "PERSON", " (DOB ") == "Ann Lee"
    # two suffix tokens first, then one, then a delimiter, then the whole text
    assert extract_candidate("x", " Ann Lee, MRN 1", "PERSON", ", DOB 1") == "Ann Lee"
    assert extract_candidate("x", " Ann Lee; b", "PERSON", "") == "Ann Lee"
    assert extract_candidate("x", " Ann Lee", "PERSON", " regarding") == "Ann Lee"
    assert extract_candidate("x", " Ann Lee regarding it", "PERSON", " regarding") == "Ann Lee"
    # regex kinds use the recognizer, which may need the prompt's cue (MRN)
    assert extract_candidate("Contact:", " ann.lee@x.org. Next", "EMAIL", ".") == "ann.lee@x.org"
    assert extract_candidate("Patient, MRN", " 12345678, seen", "MRN", ",") == "12345678"
    assert extract_candidate("MRN 12345678 and", " nothing", "MRN", ".") is None
    assert extract_candidate("x", "   ", "PERSON", ".") is None


def test_credit_and_rank_with_ties():
    scores = np.array([-3.0, -1.0, -1.0, -5.0])
    assert top1_credit(scores, 1) == 0.5 and top1_credit(scores, 0) == 0.0
    assert top1_credit(scores, None) == 0.0 and top1_credit(np.array([]), None) == 0.0
    assert true_rank(scores, 1) == 2 and true_rank(scores, 0) == 3 and true_rank(scores, 3) == 4
    assert true_rank(np.array([2.0]), 0) == 1 and true_rank(scores, None) is None


# -- the shared ranking function ---------------------------------------------------


def test_score_candidates_matches_hand_loop(target, tok, lm):
    masked = [mask_record(r, "PERSON") for r in TRAIN[:3]]
    candidates = [["Ann Lee", m.truth, "Bob Stone Jr."] for m in masked[:2]] + [[masked[2].truth]]
    got = score_candidates(lm, masked, candidates)
    for m, cands, scores in zip(masked, candidates, got, strict=True):
        assert scores.shape == (len(cands),)
        for c, score in zip(cands, scores, strict=True):
            text = c.join(m.pieces)
            ids = torch.tensor([tok(text)["input_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(target(input_ids=ids).logits[0, :-1].double(), -1)
            expected = logp.gather(-1, ids[0, 1:, None]).sum().item()
            assert score == pytest.approx(expected, abs=1e-3)
    with pytest.raises(DpauditError):
        score_candidates(lm, masked, candidates[:2])


# -- extraction ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extracted(lm):
    return pii_extraction(
        lm, TRAIN, n_samples=40, max_new_tokens=48, prompts=prefix_prompts(TRAIN), seed=0
    )


def test_extraction_finds_training_pii(extracted):
    assert extracted.n_generations == 40
    assert extracted.precision > 0.5 and extracted.recall > 0.2
    truth = {(s.kind, normalize_pii(s.kind, s.value)) for r in TRAIN for s in r.pii}
    # leakage grows with duplication (Lukas et al. 2023), here from singletons to 4+ copies
    buckets = extracted.by_duplicates
    frequent = [b for label, b in buckets.items() if label not in ("1", "2-3")]
    assert sum(b.matched for b in frequent) / sum(b.truth for b in frequent) > buckets["1"].recall
    for leaked in extracted.leaked:
        assert (leaked.kind, normalize_pii(leaked.kind, leaked.value)) in truth
        assert leaked.times_generated >= 1 and leaked.duplicates >= 1


def test_extraction_counts_are_consistent(extracted):
    kinds = extracted.per_kind.values()
    detected, n_truth, matched = (
        sum(getattr(m, a) for m in kinds) for a in ("detected", "truth", "matched")
    )
    assert (
        matched == len(extracted.leaked) == sum(b.matched for b in extracted.by_duplicates.values())
    )
    assert n_truth == len(pii_duplicate_counts(TRAIN))
    assert n_truth == sum(b.truth for b in extracted.by_duplicates.values())
    assert extracted.precision == pytest.approx(matched / detected)
    assert extracted.recall == pytest.approx(matched / n_truth)
    assert extracted.n_mentions >= detected
    for kind, m in extracted.per_kind.items():
        assert m.matched == sum(v.kind == kind for v in extracted.leaked)
    assert set(extracted.by_duplicates) <= {"1", "2-3", "4-7", "8-15"}
    assert all(isinstance(b, BucketRecall) for b in extracted.by_duplicates.values())


def test_extraction_is_deterministic(lm, extracted):
    again = pii_extraction(
        lm, TRAIN, n_samples=40, max_new_tokens=48, prompts=prefix_prompts(TRAIN), seed=0
    )
    assert again.to_dict(reveal=True) == extracted.to_dict(reveal=True)


def test_extraction_to_dict_hides_pii(extracted):
    hidden = dumps(extracted.to_dict())
    assert_no_pii(hidden)
    assert "leaked" not in json.loads(hidden) and json.loads(hidden)["n_leaked"] > 0
    assert_no_pii(repr(extracted))
    shown = extracted.to_dict(reveal=True)
    assert len(shown["leaked"]) == len(extracted.leaked)
    assert all(v.value in dumps(shown) for v in extracted.leaked)


def test_untrained_model_extracts_nothing(untrained):
    result = pii_extraction(
        untrained, TRAIN, n_samples=40, max_new_tokens=48, prompts=prefix_prompts(TRAIN), seed=0
    )
    assert result.recall < 0.03


def test_extraction_from_empty_prompt(lm):
    result = pii_extraction(lm, TRAIN, n_samples=16, max_new_tokens=32, seed=1)
    assert result.params["prompt_source"] == "empty" and result.n_generations == 16
    assert 0.0 <= result.recall <= 1.0


def test_extraction_rejects_bad_arguments(lm):
    with pytest.raises(DpauditError):
        pii_extraction(lm, TRAIN, n_samples=0)
    with pytest.raises(DpauditError):
        pii_extraction(lm, TRAIN, n_samples=4, prompts=[])
    with pytest.raises(DpauditError, match="did you mean"):
        pii_extraction(lm, TRAIN, n_samples=4, kinds=["EMAILS"])


# -- inference -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inferred(lm):
    return pii_inference(lm, TRAIN, kind="PERSON", n_distractors=4, train_records=TRAIN)


def test_inference_beats_chance_on_training_records(inferred):
    assert inferred.n_records == len(TRAIN) and inferred.n_skipped == 0
    assert inferred.chance == pytest.approx(0.2)
    assert all(r.n_candidates == 5 and r.rank is not None for r in inferred.records)
    assert inferred.true_in_candidates == 1.0
    assert inferred.accuracy > 0.5
    assert set(inferred.by_duplicates) <= {"1", "2-3", "4-7", "8-15"}


def test_inference_is_chance_on_held_out_and_untrained(lm, untrained):
    held = pii_inference(lm, HELD, kind="PERSON", n_distractors=4, train_records=TRAIN)
    assert within_chance(held)
    assert set(held.by_duplicates) == {"0"}  # no held-out name is a training name
    blind = pii_inference(untrained, TRAIN, kind="PERSON", n_distractors=4)
    assert within_chance(blind)


def test_inference_other_kinds_and_masking(lm):
    for kind in ("MRN", "DATE_OF_BIRTH"):
        result = pii_inference(lm, TRAIN, kind=kind, n_distractors=4)
        assert result.n_skipped == sum(all(s.kind != kind for s in r.pii) for r in TRAIN)
        assert result.accuracy > 0.5
    # Without the rest of the record's PII the model has less to go on, but
    # the fillers still identify the record.
    masked = pii_inference(lm, TRAIN, kind="PERSON", n_distractors=4, other_pii="mask")
    assert masked.accuracy > masked.chance


def test_inference_candidate_sets_are_per_record(lm, inferred):
    subset = pii_inference(lm, TRAIN[5:15], kind="PERSON", population=TRAIN)
    by_id = {r.record_id: r for r in inferred.records}
    for r in subset.records:
        assert r.credit == by_id[r.record_id].credit
    with pytest.raises(DpauditError, match="fewer than"):
        pii_inference(lm, TRAIN, kind="PERSON", n_distractors=100)
    with pytest.raises(DpauditError):
        pii_inference(lm, TRAIN, n_distractors=0)
    with pytest.raises(DpauditError, match="no record"):
        pii_inference(lm, TRAIN, kind="IBAN")


def test_ranking_to_dict_hides_pii(inferred):
    hidden = dumps(inferred.to_dict())
    assert_no_pii(hidden)
    assert_no_pii(repr(inferred))
    assert_no_pii(repr(inferred.records[0]))
    data = json.loads(hidden)
    assert data["accuracy"] == pytest.approx(inferred.accuracy) and data["revealed"] is False
    shown = dumps(inferred.to_dict(reveal=True))
    assert all(r.truth in shown for r in inferred.records)


# -- reconstruction --------------------------------------------------------------------


def test_reconstruction_with_given_candidates_is_inference(lm, inferred):
    masked = {m.record_id: m for m in (mask_record(r, "PERSON") for r in TRAIN)}
    pool = sorted({m.truth for m in masked.values()})
    candidates = {
        rid: [m.truth, *[p for p in pool if p != m.truth][:4]] for rid, m in masked.items()
    }
    given = pii_reconstruction(lm, TRAIN, candidates=candidates)
    assert given.params["candidate_source"] == "given"
    assert given.chance == pytest.approx(0.2) and given.accuracy > 0.5
    with pytest.raises(DpauditError, match="no entry"):
        pii_reconstruction(lm, TRAIN, candidates={})


@pytest.mark.slow
def test_reconstruction_from_samples(lm, untrained):
    records = TRAIN[:20]
    result = pii_reconstruction(lm, records, n_candidates=8, train_records=TRAIN)
    assert result.params["candidate_source"] == "sampled"
    assert result.true_in_candidates >= result.accuracy > max(0.5, result.chance)
    assert_no_pii(dumps(result.to_dict()))
    blind = pii_reconstruction(untrained, records, n_candidates=8)
    assert blind.true_in_candidates < 0.1 and blind.accuracy < 0.1
