"""Splits are disjoint, complete, sized as asked, and a function of (ids, seed) only."""

from __future__ import annotations

import random

import pytest

from dpaudit.datasets.records import Record
from dpaudit.datasets.splits import Split, split_records
from dpaudit.errors import DpauditError

RECORDS = [Record(f"r{i:04d}", f"text {i}") for i in range(500)]


def test_split_is_a_partition_with_requested_sizes():
    s = split_records(RECORDS, member_fraction=0.4, nonmember_fraction=0.2, seed=1)
    assert (len(s.members), len(s.nonmembers), len(s.population)) == (200, 100, 200)
    parts = [set(s.members), set(s.nonmembers), set(s.population)]
    assert set.union(*parts) == {r.id for r in RECORDS}
    assert sum(map(len, parts)) == len(RECORDS)


def test_split_is_deterministic_and_order_independent():
    a = split_records(RECORDS, member_fraction=0.5, nonmember_fraction=0.25, seed=7)
    shuffled = RECORDS[:]
    random.Random(0).shuffle(shuffled)
    b = split_records(shuffled, member_fraction=0.5, nonmember_fraction=0.25, seed=7)
    assert a == b
    c = split_records(RECORDS, member_fraction=0.5, nonmember_fraction=0.25, seed=8)
    assert c.members != a.members


def test_save_load_and_select(tmp_path):
    s = split_records(RECORDS, member_fraction=0.4, nonmember_fraction=0.2, seed=3)
    path = s.save(tmp_path / "splits.json")
    assert Split.load(path) == s
    members = s.select(RECORDS, "members")
    assert [r.id for r in members] == list(s.members)
    with pytest.raises(DpauditError, match="absent from the data"):
        s.select(RECORDS[:10], "members")


def test_too_few_records():
    with pytest.raises(DpauditError, match="too few"):
        split_records(RECORDS[:2], member_fraction=0.1, nonmember_fraction=0.1, seed=0)
