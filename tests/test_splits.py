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


def test_group_split_keeps_each_user_on_one_side():
    rng = random.Random(0)
    recs = [
        Record(f"r{i:03d}", f"text {i}", meta={"user": f"u{rng.randint(0, 39):02d}"})
        for i in range(300)
    ]
    split = split_records(
        recs, member_fraction=0.5, nonmember_fraction=0.25, seed=3, group_field="user"
    )
    user = {r.id: r.meta["user"] for r in recs}
    sides = [
        {user[i] for i in part} for part in (split.members, split.nonmembers, split.population)
    ]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    users = {r.meta["user"] for r in recs}
    assert len(sides[0]) == round(0.5 * len(users)) and len(sides[1]) == round(0.25 * len(users))
    assert sorted(split.members + split.nonmembers + split.population) == sorted(user)
    again = split_records(
        list(reversed(recs)),
        member_fraction=0.5,
        nonmember_fraction=0.25,
        seed=3,
        group_field="user",
    )
    assert set(again.members) == set(split.members)
    with pytest.raises(DpauditError, match="has no 'user'"):
        split_records(
            [*recs, Record("x", "no user")], member_fraction=0.5, nonmember_fraction=0.25,
            seed=0, group_field="user",
        )  # fmt: skip
