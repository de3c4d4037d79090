"""Summaries of a dataset for ``dpaudit datasets check``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dpaudit.datasets.records import Record


@dataclass(frozen=True)
class DatasetSummary:
    """What a user wants to see before training on a dataset."""

    n_records: int
    fields: tuple[str, ...]
    chars: dict[str, float]
    words: dict[str, float]
    labels: dict[str, int] = field(default_factory=dict)
    pii_by_kind: dict[str, int] = field(default_factory=dict)
    records_with_pii: int = 0
    distinct_pii_values: int = 0
    max_pii_duplication: int = 0
    duplicate_texts: int = 0
    canaries: int = 0
    source: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """Human-readable lines (PII values are never printed, only counts)."""

        def stats(d: dict[str, float]) -> str:
            return f"min {d['min']:.0f}, median {d['median']:.0f}, mean {d['mean']:.1f}, max {d['max']:.0f}"

        out = [
            f"records            {self.n_records}",
            f"fields             {', '.join(self.fields)}",
            f"length (chars)     {stats(self.chars)}",
            f"length (words)     {stats(self.words)}",
            f"duplicate texts    {self.duplicate_texts}",
        ]
        if self.labels:
            out.append(
                "labels             "
                + ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items()))
            )
        if self.canaries:
            out.append(f"canary records     {self.canaries}")
        if self.pii_by_kind:
            out.append(f"records with PII   {self.records_with_pii}")
            out.append(
                f"distinct PII       {self.distinct_pii_values} (most repeated value occurs {self.max_pii_duplication}x)"
            )
            out.append(
                "PII by kind        "
                + ", ".join(f"{k}: {v}" for k, v in sorted(self.pii_by_kind.items()))
            )
        else:
            out.append("PII spans          none recorded")
        out += [f"{k:<19}{v}" for k, v in self.source.items()]
        return out


def _stats(values: Sequence[int]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "mean": float(arr.mean()),
        "max": float(arr.max()),
    }


def summarize(records: Sequence[Record], source: Mapping[str, str] | None = None) -> DatasetSummary:
    """Summarise records: sizes, lengths, labels and PII counts by kind.

    ``source``: what to state about where the data comes from (package,
    source, licence, label rule of a packaged dataset), printed last.
    """
    fields = ["id", "text"]
    if any(r.label is not None for r in records):
        fields.append("label")
    if any(r.pii for r in records):
        fields.append("pii")
    meta_keys = sorted({k for r in records for k in r.meta})
    fields += [f"meta.{k}" for k in meta_keys]
    pii_kinds: Counter[str] = Counter()
    values: Counter[tuple[str, str]] = Counter()
    for r in records:
        for span in r.pii:
            pii_kinds[span.kind] += 1
            values[(span.kind, span.value)] += 1
    texts = Counter(r.text for r in records)
    return DatasetSummary(
        n_records=len(records),
        fields=tuple(fields),
        chars=_stats([len(r.text) for r in records]),
        words=_stats([len(r.text.split()) for r in records]),
        labels={
            str(k): v for k, v in Counter(r.label for r in records if r.label is not None).items()
        },
        pii_by_kind=dict(pii_kinds),
        records_with_pii=sum(1 for r in records if r.pii),
        distinct_pii_values=len(values),
        max_pii_duplication=max(values.values(), default=0),
        duplicate_texts=sum(c - 1 for c in texts.values() if c > 1),
        canaries=sum(1 for r in records if r.id.startswith("canary-")),
        source=dict(source or {}),
    )
