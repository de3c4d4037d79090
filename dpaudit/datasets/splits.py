"""Deterministic member / non-member / population splits.

A split is a function of the record ids and the seed only: the ids are sorted,
then permuted by ``numpy.random.default_rng(seed)``, so the same data and seed
give the same split on every machine, whatever the order of the input file.

- ``members``: records the target model trains on;
- ``nonmembers``: held out, never trained on by the target; the attacks'
  negatives;
- ``population``: the rest, a pool of same-distribution records for
  reference models and RMIA's population samples.

With ``stratify=True`` (a classifier's data) the three parts keep the label
mix of the whole dataset (scikit-learn's stratified shuffle split, each label
within one record of its exact share): a member/non-member split whose label
shares differ lets a score that depends on the label alone, such as a DP
classifier's loss at chance accuracy, pass for membership signal
(docs/decisions.md, "Classifier audits and labels"). Unlabelled data (language
models) is split by the permutation above, unchanged.

Only ids are saved (``data/splits.json``); the text stays in the input file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpaudit.atomic import read_json, write_json
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, InputError


@dataclass(frozen=True)
class Split:
    """Id lists of the three disjoint parts of a dataset."""

    members: tuple[str, ...]
    nonmembers: tuple[str, ...]
    population: tuple[str, ...]
    seed: int

    def select(self, records: Sequence[Record], part: str) -> list[Record]:
        """The records of ``part`` (members, nonmembers or population), in split order."""
        by_id = {r.id: r for r in records}
        ids = getattr(self, part)
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DpauditError(
                f"split names {len(missing)} ids absent from the data (e.g. {missing[0]!r})"
            )
        return [by_id[i] for i in ids]

    def save(self, path: str | Path) -> Path:
        return write_json(
            path,
            {
                "seed": self.seed,
                "members": list(self.members),
                "nonmembers": list(self.nonmembers),
                "population": list(self.population),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> Split:
        data = read_json(path)
        try:
            return cls(
                tuple(data["members"]),
                tuple(data["nonmembers"]),
                tuple(data["population"]),
                int(data["seed"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InputError(
                path, "not a dpaudit split file (needs members, nonmembers, population, seed)"
            ) from None


def split_records(
    records: Sequence[Record],
    *,
    member_fraction: float,
    nonmember_fraction: float,
    seed: int,
    stratify: bool = False,
    group_field: str | None = None,
) -> Split:
    """Split records into members, non-members and population by seed.

    Args:
        stratify: keep each label's share equal in the three parts (within one
            record; :func:`stratified_split`), for a classifier's data. ``False``
            (language models): the seeded permutation of the sorted ids.
        group_field: split whole groups (``record.meta[group_field]``, e.g. the user
            of a federated client) instead of records: the fractions then count
            groups, and no group has records on both sides, so a non-member client
            is one whose data never trained the model.

    Raises:
        DpauditError: when a part would be empty, or (``stratify``) a record has
            no label or a label is too rare to be shared out.
    """
    if not (
        0 < member_fraction < 1
        and 0 < nonmember_fraction < 1
        and member_fraction + nonmember_fraction <= 1
    ):
        raise DpauditError(
            "member_fraction and nonmember_fraction must be in (0, 1) and sum to at most 1"
        )
    if group_field is not None:
        return _group_split(records, member_fraction, nonmember_fraction, seed, group_field)
    ids = sorted(r.id for r in records)
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    n_mem = int(round(member_fraction * n))
    n_non = int(round(nonmember_fraction * n))
    if n_mem < 1 or n_non < 1:
        raise DpauditError(f"{n} records are too few to split into members and non-members")
    if stratify:
        return stratified_split(records, n_member=n_mem, n_nonmember=n_non, seed=seed)
    shuffled = [ids[i] for i in order]
    return Split(
        members=tuple(shuffled[:n_mem]),
        nonmembers=tuple(shuffled[n_mem : n_mem + n_non]),
        population=tuple(shuffled[n_mem + n_non :]),
        seed=seed,
    )


def _group_split(
    records: Sequence[Record],
    member_fraction: float,
    nonmember_fraction: float,
    seed: int,
    field: str,
) -> Split:
    groups: dict[str, list[str]] = {}
    for r in records:
        key = r.meta.get(field)
        if key in (None, ""):
            raise DpauditError(
                f"record {r.id!r} has no {field!r} to split by (set data.user_field)"
            )
        groups.setdefault(str(key), []).append(r.id)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    n_mem = int(round(member_fraction * len(keys)))
    n_non = int(round(nonmember_fraction * len(keys)))
    if n_mem < 1 or n_non < 1:
        raise DpauditError(
            f"{len(keys)} {field} groups are too few to split into members and non-members"
        )
    shuffled = [keys[i] for i in order]

    def ids(part: list[str]) -> tuple[str, ...]:
        return tuple(i for k in part for i in sorted(groups[k]))

    return Split(
        members=ids(shuffled[:n_mem]),
        nonmembers=ids(shuffled[n_mem : n_mem + n_non]),
        population=ids(shuffled[n_mem + n_non :]),
        seed=seed,
    )


def stratified_split(
    records: Sequence[Record], *, n_member: int, n_nonmember: int, seed: int
) -> Split:
    """Members, non-members and population with the label mix of ``records``.

    Two scikit-learn stratified shuffle splits of the sorted ids (members from
    the rest, then non-members from the population), seeded from ``seed``:
    each label's count in a part is within one record of its share of the
    whole, so members and non-members carry the same label mix. A function of
    the ids, labels and seed only.

    Raises:
        DpauditError: a record without a label, or a label too rare to be
            shared out (fewer than 2 records, or more labels than a part has
            records).
    """
    from sklearn.model_selection import train_test_split

    by_id = {r.id: r for r in records}
    ids = sorted(by_id)
    unlabelled = [i for i in ids if by_id[i].label is None]
    if unlabelled:
        raise DpauditError(
            f"a stratified (classifier) split needs a label on every record; "
            f"{len(unlabelled)} have none (e.g. {unlabelled[0]!r})"
        )
    labels = np.array([by_id[i].label for i in ids], dtype=np.int64)
    state = int(np.random.SeedSequence(seed).generate_state(1)[0])
    n_population = len(ids) - n_member - n_nonmember
    try:
        members, rest, _, rest_labels = train_test_split(
            ids, labels, train_size=n_member, stratify=labels, random_state=state
        )
        if n_population:
            nonmembers, population = train_test_split(
                rest, train_size=n_nonmember, stratify=rest_labels, random_state=state
            )
        else:
            nonmembers, population = rest, []
    except ValueError as exc:  # a label with a single record, or more labels than a part's size
        values, counts = np.unique(labels, return_counts=True)
        mix = ", ".join(f"label {v}: {c}" for v, c in zip(values, counts, strict=True))
        raise DpauditError(
            f"cannot split {len(ids)} records into {n_member} members, {n_nonmember} "
            f"non-members and {n_population} population records with the same label mix "
            f"({mix}): {exc}; merge or drop the rarest labels, or change "
            "data.member_fraction / data.nonmember_fraction"
        ) from None
    return Split(
        members=tuple(members),
        nonmembers=tuple(nonmembers),
        population=tuple(population),
        seed=seed,
    )
