"""Shared core of the PII attacks: value identity, duplication, masked texts, ranking.

Lukas et al. 2023, "Analyzing Leakage of Personally Identifiable Information in
Language Models" (IEEE S&P), §III, define PII leakage by three games:
extraction (:mod:`dpaudit.attacks.pii_extraction`), and reconstruction and
inference (:mod:`dpaudit.attacks.pii_reconstruction`). This module holds what
they share:

- **Value identity.** A PII value is ``(kind, normalize_pii(kind, value))``
  (:func:`pii_key`), so ``"555-123-4567"`` and ``"(555) 123-4567"`` are one value.
- **Duplication.** :func:`pii_duplicate_counts` counts the records that contain
  each value; :func:`duplication_bucket` groups counts by powers of two, the
  axis along which leakage is reported.
- **Masked texts.** :func:`mask_record` turns a record into
  ``prefix [MASK] suffix`` around its first value of a kind (every occurrence
  of that value is a slot). Other PII in the sentence (``other_pii``):
  ``"keep"`` (default) leaves it in place, so the model may use, say, the date
  of birth next to the masked name; ``"mask"`` replaces each other span by
  ``[KIND]``. The paper masks them and imputes them with a masked LM; a fixed
  tag needs no second model.
- **Ranking**, the one function behind reconstruction and inference
  (:func:`score_candidates`): candidate ``c`` of masked text ``m`` scores
  ``log p(m.fill(c)) = Σ_t log p(x_t | x_<t)`` over the tokens of the filled-in
  text (:meth:`ScoringModel.token_logprobs`; the first token is context, never
  scored). The sum is the log-likelihood of the whole sentence, the quantity
  that compares sentences of different lengths; the paper reports perplexity,
  which divides by the length and would favour long candidates. The top-scored
  candidate is the guess; a tie for first among ``t`` candidates earns ``1/t``
  of a win (:func:`top1_credit`, the expected score of breaking ties at
  random), so accuracy stays comparable with chance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dpaudit.attacks.pii_detect import normalize_pii
from dpaudit.attacks.scoring import ScoringModel
from dpaudit.datasets.records import PII_KINDS, PiiSpan, Record
from dpaudit.errors import DpauditError, unknown_name

__all__ = [
    "OTHER_PII",
    "MaskedText",
    "PiiKey",
    "check_kinds",
    "duplication_bucket",
    "mask_record",
    "pii_duplicate_counts",
    "pii_key",
    "score_candidates",
    "top1_credit",
    "true_rank",
]

PiiKey = tuple[str, str]
"""``(kind, normalize_pii(kind, value))``: the identity of a PII value."""


def check_kinds(kinds: Iterable[str] | None) -> tuple[str, ...]:
    """``kinds`` without repeats (default: all of ``PII_KINDS``); unknown kinds are refused."""
    wanted = tuple(PII_KINDS) if kinds is None else tuple(dict.fromkeys(kinds))
    for kind in wanted:
        if kind not in PII_KINDS:
            raise unknown_name("PII kind", kind, PII_KINDS)
    return wanted


def pii_key(span: PiiSpan) -> PiiKey:
    """The identity of a span's value: its kind and normalised value."""
    return span.kind, normalize_pii(span.kind, span.value)


def pii_duplicate_counts(
    records: Iterable[Record], kinds: Iterable[str] | None = None
) -> dict[PiiKey, int]:
    """Number of records whose ground-truth spans contain each PII value.

    A record counts once per value however often it mentions it. Values are
    identified by :func:`pii_key`, so two spellings of one value count together.
    """
    wanted = set(check_kinds(kinds))
    counts: Counter[PiiKey] = Counter()
    for record in records:
        counts.update({pii_key(s) for s in record.pii if s.kind in wanted})
    return dict(counts)


def duplication_bucket(count: int) -> str:
    """Power-of-two bucket of a duplication count: ``"0"``, ``"1"``, ``"2-3"``, ``"4-7"``, ...

    ``"0"`` is a value that no training record contains.
    """
    if count < 0:
        raise DpauditError(f"a duplication count must be >= 0, got {count}")
    if count <= 1:
        return str(count)
    low = 1 << (count.bit_length() - 1)
    return f"{low}-{2 * low - 1}"


def bucket_order(label: str) -> int:
    """Sort key of a :func:`duplication_bucket` label (its lower end)."""
    return int(label.split("-")[0])


OTHER_PII = ("keep", "mask")
"""What to do with the PII of a sentence other than the target."""


@dataclass(frozen=True)
class MaskedText:
    """A record's text with its target PII slot(s) masked: ``value.join(pieces)`` refills it.

    Attributes:
        record_id: the record it came from.
        kind: kind of the target PII.
        pieces: the text around the slots (``len(pieces) - 1`` slots, at least one).
        truth: the true value (sensitive; not in ``repr``).
    """

    record_id: str
    kind: str
    pieces: tuple[str, ...]
    truth: str = field(repr=False)

    def fill(self, value: str) -> str:
        """The text with every slot set to ``value``."""
        return value.join(self.pieces)

    @property
    def prefix(self) -> str:
        """Text before the first slot."""
        return self.pieces[0]

    @property
    def suffix(self) -> str:
        """Text between the first slot and the next one (or the end)."""
        return self.pieces[1]


def mask_record(record: Record, kind: str, *, other_pii: str = "keep") -> MaskedText | None:
    """Mask the first ``kind`` value of ``record`` (and its repeats); ``None`` if it has none.

    Raises:
        DpauditError: unknown kind or ``other_pii`` mode, or overlapping spans.
    """
    if kind not in PII_KINDS:
        raise unknown_name("PII kind", kind, PII_KINDS)
    if other_pii not in OTHER_PII:
        raise unknown_name("other_pii mode", other_pii, OTHER_PII)
    target = next((s for s in record.pii if s.kind == kind), None)
    if target is None:
        return None
    key = pii_key(target)
    pieces, current, pos = [], [], 0
    for span in sorted(record.pii, key=lambda s: (s.start, s.end)):
        if span.start < pos:
            raise DpauditError(f"record {record.id!r}: overlapping PII spans")
        current.append(record.text[pos : span.start])
        if pii_key(span) == key:
            pieces.append("".join(current))
            current = []
        else:
            current.append(span.value if other_pii == "keep" else f"[{span.kind}]")
        pos = span.end
    current.append(record.text[pos:])
    pieces.append("".join(current))
    return MaskedText(record.id, kind, tuple(pieces), target.value)


def score_candidates(
    model: ScoringModel, masked: Sequence[MaskedText], candidates: Sequence[Sequence[str]]
) -> list[np.ndarray]:
    """Per masked text, ``log p(m.fill(c))`` for each candidate ``c`` (one batched call).

    The shared ranking function of reconstruction and inference: the sum of the
    token log-probabilities of the filled-in text.
    """
    if len(masked) != len(candidates):
        raise DpauditError(f"{len(masked)} masked texts but {len(candidates)} candidate lists")
    texts = [m.fill(c) for m, cands in zip(masked, candidates, strict=True) for c in cands]
    totals = np.array([float(np.sum(lp)) for lp in model.token_logprobs(texts)])
    bounds = np.cumsum([0] + [len(c) for c in candidates])
    return [totals[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def top1_credit(scores: np.ndarray, true_index: int | None) -> float:
    """``1/t`` when the true candidate ties for the top score with ``t - 1`` others, else 0."""
    if true_index is None or len(scores) == 0:
        return 0.0
    best = scores.max()
    return 1.0 / int(np.sum(scores == best)) if scores[true_index] == best else 0.0


def true_rank(scores: np.ndarray, true_index: int | None) -> int | None:
    """1-based rank of the true candidate, ties ranked ahead of it; ``None`` if absent."""
    if true_index is None:
        return None
    return 1 + int(np.sum(np.delete(scores, true_index) >= scores[true_index]))
