"""Deterministic member / non-member / population splits.

A split is a function of the record ids and the seed only: the ids are sorted,
then permuted by ``numpy.random.default_rng(seed)``, so the same data and seed
give the same split on every machine, whatever the order of the input file.

- ``members``: records the target model trains on;
- ``nonmembers``: held out, never trained on by the target; the attacks'
  negatives;
- ``population``: the rest, a pool of same-distribution records for
  reference models and RMIA's population samples.

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
    records: Sequence[Record], *, member_fraction: float, nonmember_fraction: float, seed: int
) -> Split:
    """Split records into members, non-members and population by seed.

    Raises:
        DpauditError: when a part would be empty.
    """
    if not (
        0 < member_fraction < 1
        and 0 < nonmember_fraction < 1
        and member_fraction + nonmember_fraction <= 1
    ):
        raise DpauditError(
            "member_fraction and nonmember_fraction must be in (0, 1) and sum to at most 1"
        )
    ids = sorted(r.id for r in records)
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    n_mem = int(round(member_fraction * n))
    n_non = int(round(nonmember_fraction * n))
    if n_mem < 1 or n_non < 1:
        raise DpauditError(f"{n} records are too few to split into members and non-members")
    shuffled = [ids[i] for i in order]
    return Split(
        members=tuple(shuffled[:n_mem]),
        nonmembers=tuple(shuffled[n_mem : n_mem + n_non]),
        population=tuple(shuffled[n_mem + n_non :]),
        seed=seed,
    )
