"""Tests for the synthetic sensitive corpus (dpaudit.datasets.synth)."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

import pytest

from dpaudit.datasets.records import Record
from dpaudit.datasets.synth import (
    DOMAINS,
    REQUIRED_KINDS,
    duplication_plan,
    luhn_check_digit,
    luhn_valid,
    synthesize,
    write_jsonl,
)
from dpaudit.errors import DpauditError

SEEDS = (0, 1, 17)
EXTRA_KINDS = {"clinical": {"MRN"}, "banking": {"IBAN"}, "support": set()}


def _luhn_reference(number: str) -> bool:
    """Independent Luhn check: double every second digit from the right."""
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for pos, d in enumerate(reversed(digits)):
        if pos % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_valid(iban: str) -> bool:
    """ISO 13616 check: move the first four chars to the end, letters to numbers, mod 97 == 1."""
    raw = iban.replace(" ", "")
    rearranged = raw[4:] + raw[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


@pytest.fixture(scope="module")
def corpora() -> dict[tuple[str, int], list[Record]]:
    return {(d, s): synthesize(d, 600, s) for d in DOMAINS for s in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("domain", DOMAINS)
def test_spans_match_text_and_all_kinds_present(corpora, domain, seed):
    records = corpora[(domain, seed)]
    kinds = set()
    for rec in records:
        last_end = 0
        for span in rec.pii:
            assert rec.text[span.start : span.end] == span.value
            assert span.start >= last_end, "spans must be ordered and non-overlapping"
            last_end = span.end
            kinds.add(span.kind)
        assert any(s.kind == "PERSON" for s in rec.pii)
    assert set(REQUIRED_KINDS) | EXTRA_KINDS[domain] <= kinds


@pytest.mark.parametrize("domain", DOMAINS)
def test_determinism(domain):
    a = [r.to_dict() for r in synthesize(domain, 200, 5)]
    b = [r.to_dict() for r in synthesize(domain, 200, 5)]
    c = [r.to_dict() for r in synthesize(domain, 200, 6)]
    assert a == b
    assert [r["text"] for r in a] != [r["text"] for r in c]


def test_domains_do_not_share_people():
    names = [
        {s.value for r in synthesize(d, 300, 3) for s in r.pii if s.kind == "PERSON"}
        for d in DOMAINS
    ]
    assert all(len(x & y) < 5 for i, x in enumerate(names) for y in names[i + 1 :])


@pytest.mark.parametrize("domain", DOMAINS)
def test_ids_unique_and_formatted(corpora, domain):
    records = corpora[(domain, 0)]
    ids = [r.id for r in records]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "rec-000001" and ids[-1] == "rec-000600"
    assert all(r.meta["domain"] == domain for r in records)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("domain", DOMAINS)
def test_duplication_as_declared(corpora, domain, seed):
    records = corpora[(domain, seed)]
    occurrences: Counter[tuple[str, str]] = Counter()
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rec in records:
        for key in {(s.kind, s.value) for s in rec.pii}:
            occurrences[key] += 1
            owners[key].add(rec.meta["user"])
    per_user = Counter(r.meta["user"] for r in records)
    for rec in records:
        assert rec.meta["pii_duplicates"] == [occurrences[(s.kind, s.value)] for s in rec.pii]
        assert rec.meta["user_records"] == per_user[rec.meta["user"]]
        bounded = [
            d
            for s, d in zip(rec.pii, rec.meta["pii_duplicates"], strict=True)
            if s.kind != "DATE_OF_BIRTH"
        ]
        assert all(d <= rec.meta["user_records"] for d in bounded)
    # every value but a date of birth belongs to exactly one person, and the name appears in all their records
    assert all(len(users) == 1 for (kind, _), users in owners.items() if kind != "DATE_OF_BIRTH")
    for rec in records:
        name = next(s.value for s in rec.pii if s.kind == "PERSON")
        assert occurrences[("PERSON", name)] == rec.meta["user_records"]
    # the person-frequency histogram is the planned one
    assert sorted(per_user.values()) == sorted(duplication_plan(len(records)))


def test_duplication_plan():
    plan = duplication_plan(600)
    assert sum(plan) == 600
    counts = Counter(plan)
    for b in (2, 4, 8, 16, 32):
        assert counts[b] == 600 // (6 * b)
    assert 600 / 4 < len(plan) < 600 / 2.5  # about n/3 people
    assert duplication_plan(0) == []
    assert Counter(duplication_plan(100, (1, 10))) == {10: 5, 1: 50}
    with pytest.raises(DpauditError):
        duplication_plan(10, (0, 2))


@pytest.mark.parametrize("domain", DOMAINS)
def test_credit_cards_luhn_and_ibans_valid(corpora, domain):
    cards = [s.value for r in corpora[(domain, 1)] for s in r.pii if s.kind == "CREDIT_CARD"]
    assert cards
    for card in cards:
        assert _luhn_reference(card) and luhn_valid(card)
        assert len([c for c in card if c.isdigit()]) == 16
    for iban in (s.value for r in corpora[(domain, 1)] for s in r.pii if s.kind == "IBAN"):
        assert _iban_valid(iban)


def test_luhn_helpers_against_reference():
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")
    for payload in ("7992739871", "411111111111111", "0", "123456789012345"):
        number = payload + luhn_check_digit(payload)
        assert _luhn_reference(number) and luhn_valid(number)
        bad = number[:-1] + str((int(number[-1]) + 1) % 10)
        assert not _luhn_reference(bad) and not luhn_valid(bad)


@pytest.mark.parametrize("domain", DOMAINS)
def test_labels(corpora, domain):
    records = corpora[(domain, 0)]
    assert set(Counter(r.label for r in records)) == {0, 1}
    assert all(r.label == r.meta["template"] % 2 for r in records)
    three = synthesize(domain, 300, 0, num_labels=3)
    assert set(r.label for r in three) == {0, 1, 2}
    with pytest.raises(DpauditError):
        synthesize(domain, 10, 0, num_labels=1)


def test_templates_are_varied(corpora):
    for domain in DOMAINS:
        records = corpora[(domain, 0)]
        assert len({r.meta["template"] for r in records}) >= 8
        assert len({r.text for r in records}) == len(records)


def test_unknown_domain_suggests():
    with pytest.raises(DpauditError, match="did you mean 'clinical'"):
        synthesize("clinicl", 10, 0)


def test_small_and_empty():
    assert synthesize("support", 0, 0) == []
    (only,) = synthesize("support", 1, 0)
    assert only.meta["user_records"] == 1 and only.meta["pii_duplicates"] == [1] * len(only.pii)


def test_write_jsonl_round_trip(tmp_path):
    records = synthesize("clinical", 50, 2)
    path = write_jsonl(records, tmp_path / "sub" / "corpus.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    back = [Record.from_dict(json.loads(line)) for line in lines]
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary left behind


def test_speed_20k():
    start = time.perf_counter()
    records = synthesize("banking", 20_000, 0)
    elapsed = time.perf_counter() - start
    assert len(records) == 20_000
    assert elapsed < 15, f"20k records took {elapsed:.1f}s"
