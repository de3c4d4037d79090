"""PII extraction: how much training PII a model emits when simply sampled.

Lukas et al. 2023, "Analyzing Leakage of Personally Identifiable Information in
Language Models" (IEEE S&P), §III, define three leakage games — extraction,
reconstruction and inference — over a model fine-tuned on data that contains
PII. This module implements the first; :mod:`dpaudit.attacks.pii_reconstruction`
the other two.

**Extraction** (§III, extraction game, and its attack). The adversary has only
black-box access: it samples many generations, tags PII in them, and wins with
every tagged value that is a training PII value. With ``D`` the distinct
``(kind, normalised value)`` pairs of the training records and ``G`` those
tagged in the generations (normalised by
:func:`~dpaudit.attacks.pii_detect.normalize_pii`, so spellings collapse):

- precision ``= |G ∩ D| / |G|`` — how much of what the model emits is real
  training PII;
- recall ``= |G ∩ D| / |D|`` — how much of the training PII was extracted (the
  paper's "leakage"),

both overall, per kind, and (recall only) by duplication: each training value is
put in the bucket of the number of training records that contain it (1, 2-3,
4-7, ...), since leakage grows with repetition (shown in the paper's
evaluation; Kandpal et al. 2022).

Choices made here:

- **Prompts.** The paper samples from the empty prompt (beginning of sequence).
  A model fine-tuned without a BOS token never saw that context, so generic
  prompts may be given instead: :func:`prefix_prompts` takes the first few words
  of training records *before their first PII span* (the fixed opening of a
  template, e.g. ``"Routine follow-up. Patient"``), which the adversary is
  assumed to know as the format of the data but which carry no PII. PII that
  lies wholly inside a prompt is never counted.
- **Tagging** uses :func:`~dpaudit.attacks.pii_detect.detect_pii`: regex and
  checksum recognizers for structured kinds, and for ``PERSON``/``ADDRESS`` a
  gazetteer of the training values (``known_values=True``), the standard way to
  measure leakage of *known* PII. With that gazetteer every tagged name is a
  training name, so the precision of those two kinds is 1 by construction;
  pass a mapping with a larger population (training values plus others) for a
  meaningful precision, or ``known_values=False`` to rely on Presidio when it is
  installed (otherwise these kinds are not tagged at all).
- **Duplication counts** are counted in ``train_records`` itself (records that
  contain the value, each record once). For a whole synthesized corpus this
  equals the synthesizer's ``meta["pii_duplicates"]``; for a training split of a
  corpus it is the right number, whereas the metadata counts the whole corpus.

Results never expose PII unless asked: :meth:`PiiExtractionResult.to_dict`
holds counts only, and lists the leaked values only with ``reveal=True``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dpaudit.attacks.pii import (
    PiiKey,
    bucket_order,
    check_kinds,
    duplication_bucket,
    pii_duplicate_counts,
    pii_key,
)
from dpaudit.attacks.pii_detect import (
    GAZETTEER_KINDS,
    Gazetteer,
    KindMatch,
    detect_pii,
    match_leaked,
)
from dpaudit.attacks.scoring import ScoringModel
from dpaudit.datasets.records import PiiSpan, Record
from dpaudit.errors import DpauditError

__all__ = [
    "BucketRecall",
    "LeakedValue",
    "PiiExtractionResult",
    "pii_extraction",
    "prefix_prompts",
]

_WORD = re.compile(r"\S+")


def prefix_prompts(records: Iterable[Record], n_words: int = 3) -> list[str]:
    """Generic prompts: the first ``n_words`` words of each record before its first PII span.

    Distinct prompts in first-seen order; records whose text starts with PII give
    nothing. With templated data these are the templates' fixed openings
    (``"Routine follow-up. Patient"``, ``"URGENT:"``), knowledge of the data
    format that contains no PII.
    """
    if n_words < 1:
        raise DpauditError(f"n_words must be at least 1, got {n_words}")
    prompts: dict[str, None] = {}
    for record in records:
        head = record.text[: min((s.start for s in record.pii), default=len(record.text))]
        words = _WORD.findall(head)[:n_words]
        if words:
            prompts[" ".join(words)] = None
    return list(prompts)


class BucketRecall(NamedTuple):
    """Distinct training values of one duplication bucket, and how many leaked."""

    truth: int
    matched: int

    @property
    def recall(self) -> float:
        """``matched / truth`` (0.0 for an empty bucket)."""
        return self.matched / self.truth if self.truth else 0.0


@dataclass(frozen=True)
class LeakedValue:
    """One training PII value found in the generations (sensitive: shown only on request).

    Attributes:
        kind: PII kind.
        value: its first spelling in the training records.
        duplicates: training records that contain it.
        times_generated: generations in which it was tagged.
    """

    kind: str
    value: str = field(repr=False)
    duplicates: int
    times_generated: int


@dataclass(frozen=True)
class PiiExtractionResult:
    """Outcome of :func:`pii_extraction` (Lukas et al. 2023, §III, extraction game).

    Attributes:
        params: the sampling and tagging settings (no prompt text, no PII).
        n_generations: generations sampled.
        n_mentions: PII spans tagged in them, repeats included.
        precision: distinct tagged values that are training PII / distinct tagged values.
        recall: distinct training values tagged / distinct training values.
        per_kind: per kind, distinct tagged, training and matched values.
        by_duplicates: recall per duplication bucket (:func:`duplication_bucket`).
        leaked: the matched values (PII; left out of ``repr`` and of
            :meth:`to_dict` unless ``reveal=True``).
    """

    params: dict[str, Any]
    n_generations: int
    n_mentions: int
    precision: float
    recall: float
    per_kind: dict[str, KindMatch]
    by_duplicates: dict[str, BucketRecall]
    leaked: tuple[LeakedValue, ...] = field(repr=False)

    def to_dict(self, *, reveal: bool = False) -> dict[str, Any]:
        """JSON-ready mapping of counts and rates.

        Args:
            reveal: also list the leaked values under ``"leaked"``. Off by default:
                the mapping then holds no PII value at all, only counts.
        """
        out: dict[str, Any] = {
            "attack": "pii_extraction",
            "params": dict(self.params),
            "n_generations": self.n_generations,
            "n_mentions": self.n_mentions,
            "precision": self.precision,
            "recall": self.recall,
            "n_leaked": len(self.leaked),
            "per_kind": {
                kind: {
                    "detected": m.detected,
                    "truth": m.truth,
                    "matched": m.matched,
                    "precision": m.precision,
                    "recall": m.recall,
                }
                for kind, m in self.per_kind.items()
            },
            "by_duplicates": {
                bucket: {"truth": b.truth, "matched": b.matched, "recall": b.recall}
                for bucket, b in self.by_duplicates.items()
            },
            "revealed": reveal,
        }
        if reveal:
            out["leaked"] = [
                {
                    "kind": v.kind,
                    "value": v.value,
                    "duplicates": v.duplicates,
                    "times_generated": v.times_generated,
                }
                for v in self.leaked
            ]
        return out


def _gazetteer(
    known_values: bool | Mapping[str, Iterable[str]] | Gazetteer,
    train_records: Sequence[Record],
    kinds: Sequence[str],
) -> Gazetteer | None:
    if isinstance(known_values, Gazetteer):
        return known_values
    if isinstance(known_values, Mapping):
        return Gazetteer(known_values)
    if not known_values:
        return None
    wanted = set(GAZETTEER_KINDS) & set(kinds)
    values: dict[str, set[str]] = {kind: set() for kind in wanted}
    for record in train_records:
        for span in record.pii:
            if span.kind in wanted:
                values[span.kind].add(span.value)
    return Gazetteer(values)


def _spread(prompts: Sequence[str], n_samples: int) -> list[str]:
    """``n_samples`` prompts, cycling through ``prompts`` (prompt i gets every len-th sample)."""
    return [prompts[i % len(prompts)] for i in range(n_samples)]


def pii_extraction(
    model: ScoringModel,
    train_records: Sequence[Record],
    *,
    n_samples: int = 256,
    max_new_tokens: int = 64,
    prompts: Sequence[str] | None = None,
    strategy: str = "sample",
    top_k: int | None = 40,
    top_p: float | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    known_values: bool | Mapping[str, Iterable[str]] | Gazetteer = True,
    kinds: Iterable[str] | None = None,
    date_policy: str = "any",
) -> PiiExtractionResult:
    """Sample generations, tag PII in them, and match it against the training PII.

    Lukas et al. 2023, §III (extraction game); precision and recall as in the
    module docstring.

    Args:
        model: the target model (anything with :meth:`ScoringModel.generate`).
        train_records: the model's training records; their spans are the truth.
        n_samples: generations to draw, spread evenly over the prompts.
        max_new_tokens: tokens per generation.
        prompts: generic prompts (e.g. :func:`prefix_prompts`); ``None`` samples
            from the empty prompt, as the paper does.
        strategy, top_k, top_p, temperature, seed: decoding, passed to
            :meth:`ScoringModel.generate` (top-k sampling with k=40 by default).
            ``greedy`` and ``beam`` give one distinct generation per prompt.
        known_values: gazetteer for ``PERSON``/``ADDRESS``: ``True`` (the training
            values), ``False`` (none), or a mapping / :class:`Gazetteer` of values.
        kinds: PII kinds to tag and count (default: all).
        date_policy: passed to :func:`~dpaudit.attacks.pii_detect.detect_pii`.

    Returns:
        A :class:`PiiExtractionResult`.

    Raises:
        DpauditError: ``n_samples < 1``, an empty prompt list, an unknown kind,
            or a decoding setting the model refuses.
    """
    wanted = check_kinds(kinds)
    if n_samples < 1:
        raise DpauditError(f"n_samples must be at least 1, got {n_samples}")
    if prompts is not None and not prompts:
        raise DpauditError("prompts is empty; pass None to sample from the empty prompt")
    prompt_list = _spread(list(prompts) if prompts is not None else [""], n_samples)
    gazetteer = _gazetteer(known_values, train_records, wanted)

    generations = model.generate(
        prompt_list,
        max_new_tokens=max_new_tokens,
        strategy=strategy,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        num_return_sequences=1,
        seed=seed,
    )
    detected: list[PiiSpan] = []
    times: Counter[PiiKey] = Counter()
    for prompt, generation in zip(prompt_list, generations, strict=True):
        text = prompt + generation
        spans = [
            s
            for s in detect_pii(text, kinds=wanted, known_values=gazetteer, date_policy=date_policy)
            if s.end > len(prompt)  # PII wholly inside the prompt was not generated
        ]
        detected += spans
        times.update({pii_key(s) for s in spans})

    truth = [s for r in train_records for s in r.pii if s.kind in wanted]
    match = match_leaked(detected, truth)
    duplicates = pii_duplicate_counts(train_records, wanted)
    spelling: dict[PiiKey, str] = {}
    for span in truth:
        spelling.setdefault(pii_key(span), span.value)
    leaked_keys = sorted(set(times) & set(duplicates))

    buckets: dict[str, list[int]] = {}
    for key, count in duplicates.items():
        entry = buckets.setdefault(duplication_bucket(count), [0, 0])
        entry[0] += 1
        entry[1] += key in times
    params: dict[str, Any] = {
        "n_samples": n_samples,
        "max_new_tokens": max_new_tokens,
        "prompt_source": "empty" if prompts is None else "given",
        "n_prompts": 1 if prompts is None else len(set(prompts)),
        "strategy": strategy,
        "top_k": top_k,
        "top_p": top_p,
        "temperature": temperature,
        "seed": seed,
        "known_values": known_values if isinstance(known_values, bool) else "custom",
        "kinds": list(wanted),
        "date_policy": date_policy,
    }
    return PiiExtractionResult(
        params=params,
        n_generations=len(generations),
        n_mentions=len(detected),
        precision=match.precision,
        recall=match.recall,
        per_kind=match.per_kind,
        by_duplicates={b: BucketRecall(*buckets[b]) for b in sorted(buckets, key=bucket_order)},
        leaked=tuple(
            LeakedValue(kind, spelling[(kind, norm)], duplicates[(kind, norm)], times[(kind, norm)])
            for kind, norm in leaked_keys
        ),
    )
