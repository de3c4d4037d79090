"""PII reconstruction and inference: fill a masked PII slot by ranking candidates.

Lukas et al. 2023, "Analyzing Leakage of Personally Identifiable Information in
Language Models" (IEEE S&P), §III, reconstruction and inference games. The
adversary gets a training sentence whose target PII is masked,
``prefix [MASK] suffix``, and must name the value:

- **Reconstruction**: the adversary knows nothing else. Their attack samples
  candidates by prompting the model with the prefix (top-k sampling), then ranks
  the candidates by the model's likelihood of the *whole* sentence with the
  candidate filled in, so that the suffix, which a left-to-right model cannot
  see while sampling, still informs the choice.
- **Inference**: the adversary also holds a candidate set that contains the
  true value; here the true value plus ``k`` distractors of the same kind drawn
  from other records, so a random guess wins with probability ``1/(k+1)``.

Both games rank with one function, :func:`~dpaudit.attacks.pii.score_candidates`
(the model's log-likelihood of the filled-in sentence; ties split the win; see
:mod:`dpaudit.attacks.pii`).

Candidates for reconstruction come only from the model's own samples: the true
value is never added, so accuracy is bounded by ``true_in_candidates``, the share
of records whose samples contain it. A candidate is cut out of a sampled
continuation as follows: for kinds with a regex recognizer (``EMAIL``,
``PHONE``, ``SSN``, ...) it is the first span of that kind that
:func:`~dpaudit.attacks.pii_detect.detect_pii` tags after the prompt; for
``PERSON`` and ``ADDRESS`` it is the text up to the start of the known suffix
(its first two word/punctuation tokens, then its first one, matched with any
spacing), else up to the first delimiter (newline, ``,;:()[]<>``, or a full stop
before a space). Candidates are deduplicated by normalised value.

Other PII in the sentence is kept or masked (``other_pii``, see
:func:`~dpaudit.attacks.pii.mask_record`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpaudit.attacks.pii import (
    MaskedText,
    bucket_order,
    duplication_bucket,
    mask_record,
    pii_duplicate_counts,
    score_candidates,
    top1_credit,
    true_rank,
)
from dpaudit.attacks.pii_detect import REGEX_KINDS, detect_pii, normalize_pii
from dpaudit.attacks.scoring import ScoringModel
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, PreconditionError

__all__ = [
    "PiiRankingResult",
    "RankedRecord",
    "extract_candidate",
    "pii_inference",
    "pii_reconstruction",
    "sample_candidates",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_DELIMITER = re.compile(r"[\n,;:()\[\]<>]|\.(?=\s|$)")


def _anchor(tokens: Sequence[str]) -> re.Pattern[str]:
    body = r"\s*".join(re.escape(t) for t in tokens)
    return re.compile((r"(?<!\w)" if tokens[0][0].isalnum() else "") + body)


def extract_candidate(prompt: str, continuation: str, kind: str, suffix: str) -> str | None:
    """The candidate value that ``continuation`` (sampled after ``prompt``) proposes.

    See the module docstring for the rule; ``None`` when nothing usable is found.
    """
    if kind in REGEX_KINDS:
        spans = detect_pii(prompt + continuation, kinds=[kind])
        return next((s.value for s in spans if s.start >= len(prompt)), None)
    body = continuation.lstrip()
    tokens = _TOKEN.findall(suffix)
    end = None
    for n in sorted({min(2, len(tokens)), 1}, reverse=True) if tokens else ():
        match = _anchor(tokens[:n]).search(body, 1)
        if match:
            end = match.start()
            break
    if end is None:
        match = _DELIMITER.search(body, 1)
        end = match.start() if match else len(body)
    candidate = body[:end].strip()
    return candidate or None


def _dedupe(kind: str, values: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(normalize_pii(kind, value), value)
    return list(seen.values())


def sample_candidates(
    model: ScoringModel,
    masked: Sequence[MaskedText],
    *,
    n_candidates: int = 16,
    max_new_tokens: int = 24,
    top_k: int | None = 40,
    top_p: float | None = None,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[list[str]]:
    """Per masked text, distinct candidates cut from ``n_candidates`` samples after its prefix.

    The prompt is the prefix without trailing whitespace (a byte-level BPE model
    learned the space as part of the next word).
    """
    if n_candidates < 1:
        raise DpauditError(f"n_candidates must be at least 1, got {n_candidates}")
    prompts = [m.prefix.rstrip() for m in masked]
    samples = model.generate(
        prompts,
        max_new_tokens=max_new_tokens,
        strategy="sample",
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        num_return_sequences=n_candidates,
        seed=seed,
    )
    out = []
    for i, (m, prompt) in enumerate(zip(masked, prompts, strict=True)):
        group = samples[i * n_candidates : (i + 1) * n_candidates]
        found = (extract_candidate(prompt, s, m.kind, m.suffix) for s in group)
        out.append(_dedupe(m.kind, (c for c in found if c is not None)))
    return out


@dataclass(frozen=True)
class RankedRecord:
    """How one record's masked value ranked among its candidates.

    Attributes:
        record_id: the record.
        n_candidates: distinct candidates ranked.
        rank: 1-based rank of the true value (:func:`true_rank`), ``None`` when
            it was not among the candidates.
        credit: top-1 credit (:func:`top1_credit`).
        duplicates: training records containing the true value (``None`` when
            no training records were given).
        truth, guess: the true and the top-ranked value (sensitive; not in ``repr``).
    """

    record_id: str
    n_candidates: int
    rank: int | None
    credit: float
    duplicates: int | None
    truth: str = field(repr=False)
    guess: str | None = field(repr=False)

    @property
    def chance(self) -> float:
        """Expected credit of a uniformly random pick among the candidates."""
        return 1.0 / self.n_candidates if self.rank is not None else 0.0


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else 0.0


@dataclass(frozen=True)
class PiiRankingResult:
    """Outcome of :func:`pii_reconstruction` or :func:`pii_inference`.

    Every metric is recomputed from ``records``. ``accuracy`` is the mean top-1
    credit; ``chance`` the mean credit of a random pick (``1/|C|`` when the true
    value is among the ``|C|`` candidates, else 0); ``true_in_candidates`` the
    share of records whose candidates contain the true value.
    """

    attack: str
    kind: str
    params: dict[str, Any]
    records: tuple[RankedRecord, ...] = field(repr=False)
    n_skipped: int

    @property
    def n_records(self) -> int:
        """Records ranked (those with a ``kind`` value)."""
        return len(self.records)

    @property
    def accuracy(self) -> float:
        """Mean top-1 credit."""
        return _mean(r.credit for r in self.records)

    @property
    def chance(self) -> float:
        """Mean credit of a uniformly random pick."""
        return _mean(r.chance for r in self.records)

    @property
    def true_in_candidates(self) -> float:
        """Share of records whose candidates contain the true value (accuracy's ceiling)."""
        return _mean(r.rank is not None for r in self.records)

    @property
    def mean_candidates(self) -> float:
        """Mean number of distinct candidates per record."""
        return _mean(r.n_candidates for r in self.records)

    @property
    def by_duplicates(self) -> dict[str, dict[str, float]]:
        """Per duplication bucket of the true value: records, accuracy and chance."""
        groups: dict[str, list[RankedRecord]] = {}
        for r in self.records:
            if r.duplicates is not None:
                groups.setdefault(duplication_bucket(r.duplicates), []).append(r)
        return {
            bucket: {
                "n": len(rs),
                "accuracy": _mean(r.credit for r in rs),
                "chance": _mean(r.chance for r in rs),
            }
            for bucket, rs in sorted(groups.items(), key=lambda kv: bucket_order(kv[0]))
        }

    def to_dict(self, *, reveal: bool = False) -> dict[str, Any]:
        """JSON-ready mapping; per-record true and guessed values only with ``reveal=True``."""
        rows = []
        for r in self.records:
            row: dict[str, Any] = {
                "record_id": r.record_id,
                "n_candidates": r.n_candidates,
                "rank": r.rank,
                "credit": r.credit,
                "duplicates": r.duplicates,
            }
            if reveal:
                row.update(truth=r.truth, guess=r.guess)
            rows.append(row)
        return {
            "attack": self.attack,
            "kind": self.kind,
            "params": dict(self.params),
            "n_records": self.n_records,
            "n_skipped": self.n_skipped,
            "accuracy": self.accuracy,
            "chance": self.chance,
            "true_in_candidates": self.true_in_candidates,
            "mean_candidates": self.mean_candidates,
            "by_duplicates": self.by_duplicates,
            "records": rows,
            "revealed": reveal,
        }


def _mask_all(records: Sequence[Record], kind: str, other_pii: str) -> tuple[list[MaskedText], int]:
    masked = [mask_record(r, kind, other_pii=other_pii) for r in records]
    kept = [m for m in masked if m is not None]
    if not kept:
        raise PreconditionError(f"no record has a {kind} span to mask")
    return kept, len(masked) - len(kept)


def _rank(
    attack: str,
    model: ScoringModel,
    masked: Sequence[MaskedText],
    candidates: Sequence[Sequence[str]],
    *,
    n_skipped: int,
    params: dict[str, Any],
    train_records: Sequence[Record] | None,
) -> PiiRankingResult:
    """Score, rank and summarise: the part reconstruction and inference share."""
    kind = masked[0].kind
    counts = None if train_records is None else pii_duplicate_counts(train_records, [kind])
    rows = []
    for m, cands, scores in zip(
        masked, candidates, score_candidates(model, masked, candidates), strict=True
    ):
        truth = normalize_pii(kind, m.truth)
        true_index = next((i for i, c in enumerate(cands) if normalize_pii(kind, c) == truth), None)
        rows.append(
            RankedRecord(
                record_id=m.record_id,
                n_candidates=len(cands),
                rank=true_rank(scores, true_index),
                credit=top1_credit(scores, true_index),
                duplicates=None if counts is None else counts.get((kind, truth), 0),
                truth=m.truth,
                guess=cands[int(np.argmax(scores))] if len(cands) else None,
            )
        )
    return PiiRankingResult(attack, kind, params, tuple(rows), n_skipped)


def pii_reconstruction(
    model: ScoringModel,
    records: Sequence[Record],
    *,
    kind: str = "PERSON",
    candidates: Mapping[str, Sequence[str]] | None = None,
    n_candidates: int = 16,
    max_new_tokens: int = 24,
    top_k: int | None = 40,
    temperature: float = 1.0,
    seed: int = 0,
    other_pii: str = "keep",
    train_records: Sequence[Record] | None = None,
) -> PiiRankingResult:
    """Reconstruct each record's masked ``kind`` value (Lukas et al. 2023, §III, reconstruction).

    Args:
        model: the target model.
        records: records whose first ``kind`` value is masked (others skipped).
        kind: PII kind of the slot.
        candidates: ``{record_id: values}`` to rank instead of sampling; used as
            given (the true value counts only if present).
        n_candidates, max_new_tokens, top_k, temperature, seed: sampling of
            candidates (:func:`sample_candidates`) when ``candidates`` is ``None``.
        other_pii: ``"keep"`` or ``"mask"`` the sentence's other PII.
        train_records: the training set, to report accuracy by duplication of
            the true value (``"0"``: not a training value).

    Raises:
        DpauditError: unknown kind or mode, no record with a ``kind`` value, or a
            ``candidates`` mapping that misses a masked record.
    """
    masked, n_skipped = _mask_all(records, kind, other_pii)
    if candidates is None:
        lists = sample_candidates(
            model,
            masked,
            n_candidates=n_candidates,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            temperature=temperature,
            seed=seed,
        )
        params: dict[str, Any] = {
            "candidate_source": "sampled",
            "n_candidates": n_candidates,
            "max_new_tokens": max_new_tokens,
            "top_k": top_k,
            "temperature": temperature,
            "seed": seed,
        }
    else:
        missing = [m.record_id for m in masked if m.record_id not in candidates]
        if missing:
            raise DpauditError(
                f"candidates has no entry for {len(missing)} record(s), e.g. {missing[0]!r}"
            )
        lists = [_dedupe(kind, candidates[m.record_id]) for m in masked]
        params = {"candidate_source": "given"}
    params["other_pii"] = other_pii
    return _rank(
        "pii_reconstruction",
        model,
        masked,
        lists,
        n_skipped=n_skipped,
        params=params,
        train_records=train_records,
    )


def pii_inference(
    model: ScoringModel,
    records: Sequence[Record],
    *,
    kind: str = "PERSON",
    n_distractors: int = 4,
    population: Sequence[Record] | None = None,
    seed: int = 0,
    other_pii: str = "keep",
    train_records: Sequence[Record] | None = None,
) -> PiiRankingResult:
    """Pick each record's masked ``kind`` value among it and ``n_distractors`` others.

    Lukas et al. 2023, §III (inference game); chance is ``1/(n_distractors+1)``.
    Distractors are distinct ``kind`` values of ``population`` (default:
    ``records``) other than the true one, drawn without replacement by a
    generator seeded with ``(seed, crc32(record id))``, so a record's candidate
    set does not depend on which other records are evaluated. Evaluate held-out
    records against distractors from held-out records (the default does so), so
    that the true value and the distractors are equally (un)familiar.

    Raises:
        DpauditError: unknown kind or mode, no record with a ``kind`` value,
            ``n_distractors < 1`` or too few distinct values in the population.
    """
    if n_distractors < 1:
        raise DpauditError(f"n_distractors must be at least 1, got {n_distractors}")
    masked, n_skipped = _mask_all(records, kind, other_pii)
    pool: dict[str, str] = {}
    for record in population if population is not None else records:
        for span in record.pii:
            if span.kind == kind:
                pool.setdefault(normalize_pii(kind, span.value), span.value)
    lists = []
    for m in masked:
        truth = normalize_pii(kind, m.truth)
        others = [v for norm, v in pool.items() if norm != truth]
        if len(others) < n_distractors:
            raise PreconditionError(
                f"the population has {len(others)} other {kind} values, "
                f"fewer than n_distractors = {n_distractors}"
            )
        rng = np.random.default_rng([seed, zlib.crc32(m.record_id.encode())])
        picks = [others[i] for i in rng.choice(len(others), n_distractors, replace=False)]
        cands = [m.truth, *picks]
        lists.append([cands[i] for i in rng.permutation(len(cands))])
    params = {
        "n_distractors": n_distractors,
        "population": "records" if population is None else len(population),
        "seed": seed,
        "other_pii": other_pii,
    }
    return _rank(
        "pii_inference",
        model,
        masked,
        lists,
        n_skipped=n_skipped,
        params=params,
        train_records=train_records,
    )
