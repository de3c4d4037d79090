"""Tests for canaries (dpaudit.datasets.canaries)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from dpaudit.datasets.canaries import (
    DEFAULT_PREFIX,
    WORDS,
    enumerate_secrets,
    format_secret,
    in_space,
    insert_canaries,
    make_canaries,
    make_one_run_canaries,
    parse_space,
    read_canaries,
    read_inclusion,
    sample_distinct_secrets,
    sample_secret,
    secret_at,
    secret_index,
    space_size,
    write_canaries,
    write_inclusion,
)
from dpaudit.datasets.records import ONE_RUN, SECRET_SHARER, Canary, Record
from dpaudit.errors import DpauditError, InputError


def _records(n: int = 50) -> list[Record]:
    return [Record(f"rec-{i:06d}", f"text number {i}", label=i % 2) for i in range(1, n + 1)]


# --- secret spaces ---------------------------------------------------------


def test_space_sizes():
    assert space_size("digits:4") == 10**4
    assert space_size("alnum:3") == 36**3
    assert space_size("words:2") == 512**2
    assert space_size("digits:40") == 10**40  # exact int, no overflow
    assert len(WORDS) == len(set(WORDS)) == 512
    assert list(WORDS) == sorted(WORDS) and all(w.isalpha() and w.islower() for w in WORDS)


@pytest.mark.parametrize(
    "spec", ["digits", "digits:", "digits:0", "digits:65", "digit:3", "hex:4", "", "words:-1"]
)
def test_bad_spec_names_the_spec(spec):
    with pytest.raises(DpauditError, match=repr(spec).replace("[", r"\[")):
        parse_space(spec)


def test_bad_kind_suggests():
    with pytest.raises(DpauditError, match="did you mean 'digits'"):
        space_size("digit:3")


@pytest.mark.parametrize("spec", ["digits:1", "digits:3", "alnum:2", "words:1"])
def test_enumerate_matches_size_and_index(spec):
    secrets = list(enumerate_secrets(spec, limit=10**6))
    assert len(secrets) == space_size(spec) == len(set(secrets))
    for i in (0, 1, len(secrets) // 2, len(secrets) - 1):
        assert secret_at(spec, i) == secrets[i]
        assert secret_index(spec, secrets[i]) == i
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert sample_secret(spec, rng) in set(secrets)


def test_enumerate_refuses_large_spaces_eagerly():
    with pytest.raises(DpauditError, match="enumeration limit"):
        enumerate_secrets("digits:9", limit=10**6)


def test_formatting_is_space_separated():
    assert format_secret("digits:4", ["0", "4", "2", "9"]) == "0 4 2 9"
    assert format_secret("words:2", ["river", "gold"]) == "river gold"
    assert secret_at("digits:3", 42) == "0 4 2"
    with pytest.raises(DpauditError):
        format_secret("digits:4", ["1", "2"])
    with pytest.raises(DpauditError):
        format_secret("digits:2", ["1", "a"])
    assert not in_space("digits:4", "0429") and in_space("digits:4", "0 4 2 9")
    assert not in_space("alnum:2", "A b") and not in_space("words:1", "zebra")


@given(st.sampled_from(["digits:7", "alnum:5", "words:3"]), st.integers(min_value=0))
def test_index_round_trip(spec, raw):
    index = raw % space_size(spec)
    assert secret_index(spec, secret_at(spec, index)) == index


def test_sample_secret_uniform_digits():
    rng = np.random.default_rng(1)
    counts = Counter(sample_secret("digits:1", rng) for _ in range(5000))
    assert set(counts) == set("0123456789")
    assert all(abs(c - 500) < 5 * math.sqrt(450) for c in counts.values())


def test_distinct_sampling_large_and_exhaustive():
    rng = np.random.default_rng(0)
    big = sample_distinct_secrets("words:10", 200, rng)  # |R| = 2**90, rejection path
    assert len(set(big)) == 200 and all(in_space("words:10", s) for s in big)
    full = sample_distinct_secrets("digits:2", 100, rng)
    assert sorted(full) == list(enumerate_secrets("digits:2"))
    with pytest.raises(DpauditError, match="distinct"):
        sample_distinct_secrets("digits:2", 101, rng)


# --- making canaries --------------------------------------------------------


def test_make_canaries():
    canaries = make_canaries(
        prefix=DEFAULT_PREFIX,
        secret_space="digits:6",
        repetitions=(1, 4, 16),
        per_repetition=3,
        seed=0,
    )
    assert [c.id for c in canaries] == [f"canary-{i:04d}" for i in range(9)]
    assert [c.repetitions for c in canaries] == [1, 1, 1, 4, 4, 4, 16, 16, 16]
    assert all(c.included and c.prefix == DEFAULT_PREFIX for c in canaries)
    assert len({c.secret for c in canaries}) == 9
    assert all(in_space("digits:6", c.secret) for c in canaries)
    assert canaries[0].text == DEFAULT_PREFIX + canaries[0].secret
    again = make_canaries(prefix=DEFAULT_PREFIX, secret_space="digits:6", seed=0)
    assert again == make_canaries(prefix=DEFAULT_PREFIX, secret_space="digits:6", seed=0)
    with pytest.raises(DpauditError):
        make_canaries(prefix="x", secret_space="digits:6", repetitions=(0,), seed=0)
    with pytest.raises(DpauditError, match="digits:1"):
        make_canaries(prefix="x", secret_space="digits:1", per_repetition=3, seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_one_run_inclusion_is_fair_coin(seed):
    m = 2000
    canaries = make_one_run_canaries(m=m, secret_space="digits:8", prefix="code ", seed=seed)
    k = sum(c.included for c in canaries)
    assert abs(k - m / 2) < 4 * math.sqrt(m / 4)
    assert binomtest(k, m, 0.5).pvalue > 1e-4
    assert len({c.secret for c in canaries}) == m
    assert len({c.id for c in canaries}) == m and all(c.id.startswith("canary-") for c in canaries)
    assert all(in_space("digits:8", c.secret) and c.repetitions == 1 for c in canaries)


def test_one_run_coins_independent_across_canaries():
    canaries = make_one_run_canaries(m=4000, secret_space="alnum:6", prefix="", seed=9)
    bits = np.array([c.included for c in canaries], dtype=int)
    # consecutive pairs: each of the four patterns has probability 1/4
    pairs = Counter(zip(bits[:-1:2], bits[1::2], strict=True))
    assert all(
        binomtest(pairs[p], 2000, 0.25).pvalue > 1e-4 for p in [(0, 0), (0, 1), (1, 0), (1, 1)]
    )
    # coins come from their own stream: they do not depend on the secret space
    other = make_one_run_canaries(m=4000, secret_space="words:3", prefix="", seed=9)
    assert [c.included for c in other] == list(bits.astype(bool))


# --- insertion ---------------------------------------------------------------


def test_insert_honours_repetitions_and_exclusion():
    canaries = make_one_run_canaries(
        m=40, secret_space="digits:5", prefix="pin ", seed=3, repetitions=3
    )
    records = _records()
    out = insert_canaries(records, canaries, seed=0)
    ids = [r.id for r in out]
    assert len(ids) == len(set(ids))
    copies = Counter(r.meta["canary_id"] for r in out if r.id.startswith("canary-"))
    for c in canaries:
        assert copies.get(c.id, 0) == (3 if c.included else 0)
    excluded_texts = {c.text for c in canaries if not c.included}
    assert not excluded_texts & {r.text for r in out}
    assert {r.id for r in out if not r.id.startswith("canary-")} == {r.id for r in records}
    assert len(out) == len(records) + 3 * sum(c.included for c in canaries)


def test_insert_secret_sharer_counts_and_shuffle():
    canaries = make_canaries(prefix=DEFAULT_PREFIX, secret_space="digits:6", seed=1)
    out = insert_canaries(_records(), canaries, seed=5, canary_label=1)
    by_text = Counter(r.text for r in out)
    for c in canaries:
        assert by_text[c.text] == c.repetitions
    inserted = [r for r in out if "canary_id" in r.meta]
    assert {r.id for r in inserted} >= {"canary-0004#r1", "canary-0004#r16"}
    assert all(r.label == 1 for r in inserted)
    assert out == insert_canaries(_records(), canaries, seed=5, canary_label=1)
    assert [r.id for r in out] != [r.id for r in insert_canaries(_records(), canaries, seed=6)]
    positions = [i for i, r in enumerate(out) if "canary_id" in r.meta]
    assert positions != list(range(len(out) - len(positions), len(out)))  # not appended at the end


def test_insert_rejects_collisions():
    canaries = make_canaries(prefix="x ", secret_space="digits:4", seed=0)
    with pytest.raises(DpauditError, match="canary-0000"):
        insert_canaries([Record("canary-0000", "oops")], canaries, seed=0)
    with pytest.raises(DpauditError, match="unique"):
        insert_canaries([Record("a", "1"), Record("a", "2")], canaries, seed=0)
    with pytest.raises(DpauditError, match="unique"):
        insert_canaries(_records(), canaries + canaries[:1], seed=0)
    bad = Canary("secret-1", "x ", "1 2 3 4", "digits:4", 1, True)
    with pytest.raises(DpauditError, match="secret-1"):
        insert_canaries(_records(), [bad], seed=0)


# --- files --------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    canaries = make_one_run_canaries(m=30, secret_space="words:4", prefix="the key is ", seed=2)
    cpath = write_canaries(tmp_path / "data" / "canaries.jsonl", canaries)
    ipath = write_inclusion(tmp_path / "data" / "inclusion.json", canaries)
    assert read_canaries(cpath, ipath) == canaries
    blind = read_canaries(cpath)
    assert [c.secret for c in blind] == [c.secret for c in canaries]
    assert all(c.included for c in blind)
    assert read_inclusion(ipath) == {c.id: c.included for c in canaries}
    assert json.loads(ipath.read_text())["schema_version"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "canaries.jsonl",
        "inclusion.json",
    ]


def test_role_is_a_field_written_and_read(tmp_path):
    ss = make_canaries(prefix="a ", secret_space="digits:4", repetitions=(1, 2), seed=0)
    one_run = make_one_run_canaries(m=3, secret_space="digits:4", prefix="b ", seed=1)
    assert {c.role for c in ss} == {SECRET_SHARER} and {c.role for c in one_run} == {ONE_RUN}
    # the role travels in the file, whatever the id says
    odd = [dataclasses.replace(c, id=f"canary-ss-{i}") for i, c in enumerate(one_run)]
    path = write_canaries(tmp_path / "c.jsonl", ss + odd)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [d["role"] for d in lines] == [SECRET_SHARER] * 2 + [ONE_RUN] * 3
    assert [c.role for c in read_canaries(path)] == [SECRET_SHARER] * 2 + [ONE_RUN] * 3
    unassigned = Canary("canary-7", "c ", "1 2 3 4", "digits:4", 1, True)
    assert unassigned.role is None
    assert read_canaries(write_canaries(tmp_path / "u.jsonl", [unassigned])) == [unassigned]


def test_files_without_role_take_it_from_the_id_tag(tmp_path):
    rows = [
        {"id": "canary-ss-0000", "prefix": "a ", "secret": "1 2", "secret_space": "digits:2"},
        {"id": "canary-or-0000", "prefix": "a ", "secret": "3 4", "secret_space": "digits:2"},
        {"id": "canary-0000", "prefix": "a ", "secret": "5 6", "secret_space": "digits:2"},
    ]
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps({**r, "repetitions": 1}) + "\n" for r in rows))
    assert [c.role for c in read_canaries(path)] == [SECRET_SHARER, ONE_RUN, None]


def test_canaries_file_has_no_inclusion_bits(tmp_path):
    canaries = make_one_run_canaries(m=10, secret_space="digits:4", prefix="a ", seed=0)
    text = write_canaries(tmp_path / "c.jsonl", canaries).read_text(encoding="utf-8")
    assert "included" not in text and "true" not in text and "false" not in text
    assert all("included" not in json.loads(line) for line in text.splitlines())


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"id": "canary-0009", "prefix": "a "}', "missing keys"),
        ('{"id": "canary-0009", "prefix": "a ", "secret": "1 2 3 4", "secret_space": "digits:4", "repetitions": 1, "included": true}', "unexpected keys"),
        ('{"id": "canary-0009", "prefix": "a ", "secret": "1 2 3 4", "secret_space": "digits:4", "repetitions": "1"}', "repetitions"),
        ('{"id": "canary-0009", "prefix": "a ", "secret": "1234", "secret_space": "digits:4", "repetitions": 1}', "not in the space"),
        ('{"id": "canary-0009", "prefix": "a ", "secret": "1 2 3 4", "secret_space": "digit:4", "repetitions": 1}', "bad secret space"),
        ('{"id": "rec-9", "prefix": "a ", "secret": "1 2 3 4", "secret_space": "digits:4", "repetitions": 1}', "canary-"),
        ('{"id": "canary-0000", "prefix": "a ", "secret": "1 2 3 4", "secret_space": "digits:4", "repetitions": 1}', "duplicate"),
        ('{"id": "canary-0009", "prefix": "a ", "secret": "1 2 3 4", "secret_space": "digits:4", "repetitions": 1, "role": "exposure"}', "role 'exposure' is not one of"),
    ],
)  # fmt: skip
def test_malformed_canary_file_names_line(tmp_path, bad_line, message):
    canaries = make_canaries(prefix="a ", secret_space="digits:4", repetitions=(1, 2), seed=0)
    path = write_canaries(tmp_path / "c.jsonl", canaries)
    path.write_text(path.read_text(encoding="utf-8") + bad_line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        read_canaries(path)
    assert info.value.line == 3
    assert "c.jsonl:3" in str(info.value)


def test_inclusion_file_must_match(tmp_path):
    canaries = make_one_run_canaries(m=5, secret_space="digits:4", prefix="a ", seed=0)
    cpath = write_canaries(tmp_path / "c.jsonl", canaries)
    ipath = write_inclusion(tmp_path / "i.json", canaries[:4])
    with pytest.raises(InputError, match="canary-0004"):
        read_canaries(cpath, ipath)
    ipath.write_text('{"canary-0000": "yes"}', encoding="utf-8")
    with pytest.raises(InputError, match="true/false"):
        read_inclusion(ipath)
    with pytest.raises(InputError, match="not found"):
        read_canaries(tmp_path / "missing.jsonl")
