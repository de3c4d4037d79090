"""Tests for the PII recognizers and leaked-PII matching (dpaudit.attacks.pii_detect)."""

from __future__ import annotations

import sys
import types
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpaudit.attacks.pii_detect import (
    GAZETTEER_KINDS,
    REGEX_KINDS,
    Gazetteer,
    KindMatch,
    detect_pii,
    iban_valid,
    luhn_valid,
    match_leaked,
    normalize_pii,
    ssn_valid,
)
from dpaudit.datasets import synth
from dpaudit.datasets.records import PiiSpan
from dpaudit.datasets.synth import DOMAINS, synthesize
from dpaudit.errors import DpauditError


@pytest.fixture(scope="module")
def corpora():
    return {d: synthesize(d, 500, 0) for d in DOMAINS}


def _per_kind_counts(records, **kwargs):
    """Per-kind true positives, false positives and misses, record by record."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for record in records:
        truth = Counter((s.kind, normalize_pii(s.kind, s.value)) for s in record.pii)
        found = Counter(
            (s.kind, normalize_pii(s.kind, s.value)) for s in detect_pii(record.text, **kwargs)
        )
        for key, n in found.items():
            tp[key[0]] += min(n, truth[key])
            fp[key[0]] += n - min(n, truth[key])
        for key, n in truth.items():
            fn[key[0]] += n - min(n, found[key])
    return tp, fp, fn


@pytest.mark.parametrize("domain", DOMAINS)
def test_recall_and_precision_on_synthetic_corpus(corpora, domain):
    records = corpora[domain]
    truth_kinds = {s.kind for r in records for s in r.pii}
    gazetteer = Gazetteer(
        {k: {s.value for r in records for s in r.pii if s.kind == k} for k in GAZETTEER_KINDS}
    )
    tp, fp, fn = _per_kind_counts(records, known_values=gazetteer, use_presidio=False)
    assert set(tp) == truth_kinds
    for kind in truth_kinds:
        assert tp[kind] / (tp[kind] + fn[kind]) >= 0.95, (kind, tp[kind], fn[kind])
        assert tp[kind] / (tp[kind] + fp[kind]) >= 0.9, (kind, tp[kind], fp[kind])


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_detections_once_the_true_pii_is_redacted(corpora, domain):
    # Every detection in the remaining text (order numbers, amounts, times, blood
    # pressures, years...) would be a false positive.
    false_positives = []
    for record in corpora[domain]:
        text, last = "", 0
        for span in record.pii:
            text += record.text[last : span.start] + "[REDACTED]"
            last = span.end
        text += record.text[last:]
        false_positives += detect_pii(text, use_presidio=False)
    assert false_positives == []


def test_spans_are_exact_and_regex_only_finds_no_names(corpora):
    for record in corpora["banking"][:100]:
        spans = detect_pii(record.text, use_presidio=False)
        assert {s.kind for s in spans} <= set(REGEX_KINDS)
        assert set(spans) == {s for s in record.pii if s.kind in REGEX_KINDS}


def test_luhn_rejects_a_changed_digit():
    assert luhn_valid("4111 1111 1111 1111")
    assert not luhn_valid("4111 1111 1111 1121")
    assert detect_pii("card 4111-1111-1111-1111") == [
        PiiSpan(5, 24, "CREDIT_CARD", "4111-1111-1111-1111")
    ]
    assert detect_pii("card 4111-1111-1111-1121") == []
    assert luhn_valid is synth.luhn_valid  # reused, not duplicated


def test_card_next_to_other_numbers():
    text = "paid 2024 4111111111111111 2024 and Amex 3782 822463 10005."
    assert [s.value for s in detect_pii(text, kinds=["CREDIT_CARD"])] == [
        "4111111111111111",
        "3782 822463 10005",
    ]


def test_iban_mod97():
    assert iban_valid("GB82 WEST 1234 5698 7654 32")  # published example
    assert iban_valid("DE89 3704 0044 0532 0130 00")  # published example
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("GB82 WEST 1234 5698 7654 3")  # wrong length for GB
    text = "Pay GB82 WEST 1234 5698 7654 32 I said."
    assert detect_pii(text) == [PiiSpan(4, 31, "IBAN", "GB82 WEST 1234 5698 7654 32")]
    assert detect_pii("Pay GB82 WEST 1234 5698 7654 33 now") == []


def test_iban_beats_a_luhn_valid_card_inside_it():
    # Find a German IBAN whose 18-digit BBAN is also Luhn-valid: the longer
    # checksum-validated match must win.
    for account in range(1000):
        iban = synth._iban_de(37040044, account)
        if luhn_valid(iban[5:]):
            break
    assert detect_pii(f"account {iban} please") == [PiiSpan(8, 8 + len(iban), "IBAN", iban)]


@pytest.mark.parametrize(
    "ssn",
    ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "123-00-4567", "123-45-0000"],
)
def test_ssn_rejects_never_issued_numbers(ssn):
    assert not ssn_valid(ssn)
    assert detect_pii(f"SSN {ssn}.") == []


def test_ssn_accepts_valid_number():
    assert ssn_valid("536-22-1234")
    assert detect_pii("SSN 536-22-1234.") == [PiiSpan(4, 15, "SSN", "536-22-1234")]


def test_dates_are_validated_and_policy_applies():
    text = "born 02/30/1990, visit 2999-01-01, seen 2020-05-06; DOB Sept. 3, 1971"
    assert [s.value for s in detect_pii(text)] == ["2020-05-06", "Sept. 3, 1971"]
    assert [s.value for s in detect_pii(text, date_policy="context")] == ["Sept. 3, 1971"]
    with pytest.raises(DpauditError, match="date policy"):
        detect_pii(text, date_policy="sometimes")


def test_phone_formats_and_noise():
    text = "Call (212) 555-0199, +1 212-555-0199, 212.555.0199 or +44 20 7946 0958."
    assert [s.value for s in detect_pii(text)] == [
        "(212) 555-0199",
        "+1 212-555-0199",
        "212.555.0199",
        "+44 20 7946 0958",
    ]
    noise = "Order #123456, $1,234.56 at 12:34, BP 120/80, ref 112-555-0199, year 2019."
    assert detect_pii(noise) == []


def test_gazetteer_finds_names_case_insensitively_and_on_word_boundaries():
    known = {
        "PERSON": {"Ann Lee", "Bo Chen", "Ann", "Mary"},
        "ADDRESS": {"1 Main St, Springfield, IL 62704"},
    }
    text = (
        "ann  Lee met Anna Lee, Mary-Jo and Bo Chen (ann@lee.org) at 1 Main St, "
        "Springfield, IL 62704."
    )
    spans = detect_pii(text, known_values=known, use_presidio=False)
    assert [(s.kind, s.value) for s in spans] == [
        ("PERSON", "ann  Lee"),
        ("PERSON", "Bo Chen"),
        ("EMAIL", "ann@lee.org"),
        ("ADDRESS", "1 Main St, Springfield, IL 62704"),
    ]
    assert all(text[s.start : s.end] == s.value for s in spans)
    assert Gazetteer(known).kinds == {"PERSON", "ADDRESS"}
    with pytest.raises(DpauditError, match="did you mean 'PERSON'"):
        Gazetteer({"PERSONS": {"x"}})


def test_unknown_kind_is_a_user_error():
    with pytest.raises(DpauditError, match="did you mean 'EMAIL'"):
        detect_pii("x", kinds=["EMAILS"])


def test_kinds_filter():
    text = "Mail a@b.com or call 212-555-0199"
    assert [s.kind for s in detect_pii(text, kinds=["PHONE"])] == ["PHONE"]


def test_presidio_when_importable(monkeypatch):
    calls = []

    class FakeEngine:
        def analyze(self, text, entities, language):
            calls.append(entities)
            start = text.index("Zoe Park")
            return [
                types.SimpleNamespace(start=start, end=start + 8, entity_type="PERSON", score=0.85)
            ]

    module = types.ModuleType("presidio_analyzer")
    module.AnalyzerEngine = FakeEngine
    monkeypatch.setitem(sys.modules, "presidio_analyzer", module)
    text = "Zoe Park wrote from zoe@park.org"
    assert [(s.kind, s.value) for s in detect_pii(text)] == [
        ("PERSON", "Zoe Park"),
        ("EMAIL", "zoe@park.org"),
    ]
    # A PERSON gazetteer replaces Presidio unless it is asked for explicitly.
    assert detect_pii(text, kinds=["PERSON"], known_values={"PERSON": {"Zoe"}}) == [
        PiiSpan(0, 3, "PERSON", "Zoe")
    ]
    assert len(calls) == 1
    assert detect_pii(text, kinds=["PERSON"], use_presidio=False) == []


def test_presidio_required_but_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # import fails
    assert detect_pii("Zoe Park", kinds=["PERSON"]) == []
    with pytest.raises(DpauditError, match="presidio_analyzer is not installed"):
        detect_pii("Zoe Park", use_presidio=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="0123456789 -./()+@abcDEGBXMRN,:", max_size=80))
def test_spans_are_consistent_on_arbitrary_text(text):
    spans = detect_pii(text, use_presidio=False)
    end = -1
    for span in spans:
        assert text[span.start : span.end] == span.value
        assert span.start >= end
        end = span.end


def test_normalisation():
    assert normalize_pii("PHONE", "(212) 555-0199") == normalize_pii("PHONE", "+1 212.555.0199")
    assert normalize_pii("DATE_OF_BIRTH", "June 9, 1972") == "1972-06-09"
    assert normalize_pii("DATE_OF_BIRTH", "06/09/1972") == "1972-06-09"
    assert normalize_pii("CREDIT_CARD", "4111 1111-1111 1111") == "4111111111111111"
    assert normalize_pii("IBAN", "gb82 west 1234 5698 7654 32") == "GB82WEST12345698765432"
    assert normalize_pii("EMAIL", "Ann.Lee@Mail.COM") == "ann.lee@mail.com"
    assert normalize_pii("PERSON", " Ann   LEE ") == "ann lee"


def test_match_leaked_hand_made_example():
    truth = [
        PiiSpan(0, 0, "EMAIL", "ann.lee@mail.com"),
        PiiSpan(0, 0, "PHONE", "(212) 555-0199"),
        PiiSpan(0, 0, "PERSON", "Ann Lee"),
        PiiSpan(0, 0, "PERSON", "Ann Lee"),  # repeats count once
        PiiSpan(0, 0, "SSN", "536-22-1234"),
    ]
    detected = [
        PiiSpan(0, 0, "EMAIL", "Ann.Lee@Mail.com"),  # match after casefold
        PiiSpan(0, 0, "PHONE", "+1 212-555-0199"),  # match after digits-only
        PiiSpan(0, 0, "PHONE", "+1 212-555-0199"),
        PiiSpan(0, 0, "CREDIT_CARD", "4111 1111 1111 1111"),  # not training PII
        PiiSpan(0, 0, "PERSON", "Bo Chen"),  # not training PII
    ]
    precision, recall, per_kind = match_leaked(detected, truth)
    assert precision == pytest.approx(2 / 4)
    assert recall == pytest.approx(2 / 4)
    assert per_kind == {
        "CREDIT_CARD": KindMatch(detected=1, truth=0, matched=0),
        "EMAIL": KindMatch(1, 1, 1),
        "PERSON": KindMatch(1, 1, 0),
        "PHONE": KindMatch(1, 1, 1),
        "SSN": KindMatch(0, 1, 0),
    }
    assert per_kind["PHONE"].precision == 1.0 and per_kind["SSN"].recall == 0.0
    assert match_leaked([], []) == (0.0, 0.0, {})
