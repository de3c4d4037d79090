"""Verbatim memorization (Carlini, Ippolito, Jagielski, Lee, Tramèr, Zhang 2023,
"Quantifying Memorization Across Neural Language Models", ICLR 2023).

Definition (their Sec. 2, "k-extractable" with greedy decoding): a training
sequence of ``k + n`` tokens is **memorized** when, prompted with its first
``k`` tokens, the model's greedy continuation of ``n`` tokens equals the true
next ``n`` tokens exactly. Here the sequence is the start of each record
(``prefix_tokens = k``, ``suffix_tokens = n``; the paper uses ``n = 50``), and
the comparison is on **token ids**: decoding to text and re-encoding can change
tokens, so generation runs on ids through the Hugging Face model underneath
the adapter (:func:`greedy_continuations`), never through strings.

Records are tokenized the way training tokenizes them (the tokenizer's
default special tokens, no truncation); a record with fewer than ``k + n``
tokens is skipped and counted. Results are broken down by how many copies of
the text the training set held (the paper's duplication axis), from a
``{record id: count}`` mapping or ``record.meta["duplicates"]`` (default 1);
:func:`dedupe_records` builds both from a training list with repeated texts
(e.g. canary copies).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, PreconditionError


def _positions(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def greedy_continuations(
    model: Any, prompts: Sequence[Sequence[int]], n_tokens: int, *, batch_size: int = 32
) -> list[list[int]]:
    """Greedy-decode exactly ``n_tokens`` token ids after each prompt (no early stop at EOS).

    ``model`` is a Hugging Face causal LM (``model(input_ids, past_key_values,
    use_cache) -> logits``). Prompts are batched only with prompts of the same
    length, so no padding is ever needed and each row is computed exactly as it
    would be alone (up to floating-point reduction order). Each step takes
    ``argmax`` of the last position's logits (lowest id on ties) and feeds it
    back with the key/value cache.

    Raises:
        DpauditError: an empty prompt, ``n_tokens < 1``, or a prompt plus
            continuation longer than the model's positions.
    """
    import torch

    if n_tokens < 1 or batch_size < 1:
        raise DpauditError("n_tokens and batch_size must be at least 1")
    prompts = [list(p) for p in prompts]
    if any(not p for p in prompts):
        raise DpauditError("greedy decoding needs a non-empty prompt")
    limit = _positions(model)
    if limit is not None and prompts and max(map(len, prompts)) + n_tokens > limit:
        raise PreconditionError(
            f"prompt plus {n_tokens} generated tokens exceeds the model's {limit} positions"
        )
    device = next(model.parameters()).device
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    out: list[list[int] | None] = [None] * len(prompts)
    with torch.inference_mode():
        for _, rows in sorted(by_length.items()):
            for lo in range(0, len(rows), batch_size):
                batch = rows[lo : lo + batch_size]
                ids = torch.tensor([prompts[i] for i in batch], dtype=torch.long, device=device)
                result = model(input_ids=ids, use_cache=True)
                steps = []
                for step in range(n_tokens):
                    nxt = result.logits[:, -1, :].argmax(dim=-1, keepdim=True)
                    steps.append(nxt)
                    if step + 1 < n_tokens:
                        result = model(
                            input_ids=nxt, use_cache=True, **_cache_kwargs(model, result)
                        )
                generated = torch.cat(steps, dim=1).cpu().tolist()
                for i, row in zip(batch, generated, strict=True):
                    out[i] = row
    return out  # type: ignore[return-value]


def _cache_kwargs(model: Any, result: Any) -> dict[str, Any]:
    """The previous forward's key/value cache as keyword arguments (:func:`cache_kwargs`)."""
    from dpaudit.attacks.scoring import cache_kwargs

    cache = getattr(result, "cache", None)
    return cache_kwargs(model, cache if cache is not None else result.past_key_values)


@dataclass(frozen=True)
class MemorizationResult:
    """Verbatim memorization over a set of records (no text, ids only).

    Attributes:
        rate: memorized / evaluated.
        n_evaluated: records with at least ``prefix_tokens + suffix_tokens`` tokens.
        n_skipped_too_short: the others.
        memorized_ids: ids of the memorized records, in input order.
        by_duplication: ``{copies in training: (rate, n evaluated)}``, sorted.
        prefix_tokens: ``k``, the prompt length.
        suffix_tokens: ``n``, the tokens that must match.
    """

    rate: float
    n_evaluated: int
    n_skipped_too_short: int
    memorized_ids: tuple[str, ...]
    by_duplication: dict[int, tuple[float, int]]
    prefix_tokens: int
    suffix_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "n_evaluated": self.n_evaluated,
            "n_skipped_too_short": self.n_skipped_too_short,
            "memorized_ids": list(self.memorized_ids),
            "by_duplication": {
                str(k): {"rate": r, "n": n} for k, (r, n) in self.by_duplication.items()
            },
            "prefix_tokens": self.prefix_tokens,
            "suffix_tokens": self.suffix_tokens,
        }


def dedupe_records(records: Sequence[Record]) -> tuple[list[Record], dict[str, int]]:
    """The first record of each distinct text, and ``{its id: number of records with that text}``."""
    first: dict[str, Record] = {}
    counts: dict[str, int] = {}
    for r in records:
        keep = first.setdefault(r.text, r)
        counts[keep.id] = counts.get(keep.id, 0) + 1
    return list(first.values()), counts


def _duplicates(record: Record, duplicates: Mapping[str, int] | None) -> int:
    count = duplicates.get(record.id) if duplicates is not None else None
    if count is None:
        count = record.meta.get("duplicates", 1)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise DpauditError(
            f"record {record.id!r}: duplicate count must be an integer >= 0, got {count!r}"
        )
    return int(count)


def too_short(lengths: Sequence[int], prefix_tokens: int, suffix_tokens: int) -> str | None:
    """Why no record of these token ``lengths`` can be tested for verbatim memorization, or ``None``.

    A record is tested when it has ``prefix_tokens + suffix_tokens`` tokens;
    one is enough (the others are counted as ``n_skipped_too_short``).
    """
    need = prefix_tokens + suffix_tokens
    if any(n >= need for n in lengths):
        return None
    return (
        f"no record has the {need} tokens verbatim memorization needs ({prefix_tokens} prompt "
        f"+ {suffix_tokens} continuation; {len(lengths)} too short): lower "
        "attack.memorization_prefix_tokens and attack.memorization_suffix_tokens"
    )


def verbatim_memorization(
    model: Any,
    records: Sequence[Record],
    *,
    prefix_tokens: int = 16,
    suffix_tokens: int = 16,
    batch_size: int = 32,
    duplicates: Mapping[str, int] | None = None,
) -> MemorizationResult:
    """Fraction of records whose first ``suffix_tokens`` after ``prefix_tokens`` are greedy-extractable.

    Args:
        model: an adapter exposing ``.model`` (a Hugging Face causal LM) and
            ``.tokenizer``, e.g. :class:`~dpaudit.attacks.scoring.HFScoringModel`.
        records: the training records to test (deduplicated: see :func:`dedupe_records`).
        prefix_tokens: ``k``, the prompt length in tokens.
        suffix_tokens: ``n``, the continuation that must match token for token.
        batch_size: prompts per forward pass.
        duplicates: ``{record id: copies in training}`` (0 for held-out
            controls); overrides ``record.meta["duplicates"]``.

    Raises:
        DpauditError: a model without ``.model``/``.tokenizer``, non-positive
            lengths, or a bad duplicate count.
        PreconditionError: no record long enough (:func:`too_short`).
    """
    if prefix_tokens < 1 or suffix_tokens < 1:
        raise DpauditError("prefix_tokens and suffix_tokens must be at least 1")
    lm, tokenizer = getattr(model, "model", None), getattr(model, "tokenizer", None)
    if lm is None or tokenizer is None:
        raise DpauditError(
            "verbatim memorization decodes token ids and needs an adapter with .model and "
            ".tokenizer (HFScoringModel)"
        )
    records = list(records)
    counts = [_duplicates(r, duplicates) for r in records]
    encoded = tokenizer([r.text for r in records])["input_ids"] if records else []
    need = prefix_tokens + suffix_tokens
    kept = [i for i, ids in enumerate(encoded) if len(ids) >= need]
    unmet = too_short([len(ids) for ids in encoded], prefix_tokens, suffix_tokens)
    if unmet:
        raise PreconditionError(unmet)
    prompts = [list(encoded[i][:prefix_tokens]) for i in kept]
    generated = greedy_continuations(lm, prompts, suffix_tokens, batch_size=batch_size)
    hit = [g == list(encoded[i][prefix_tokens:need]) for i, g in zip(kept, generated, strict=True)]
    groups: dict[int, list[bool]] = {}
    for i, h in zip(kept, hit, strict=True):
        groups.setdefault(counts[i], []).append(h)
    return MemorizationResult(
        rate=float(np.mean(hit)),
        n_evaluated=len(kept),
        n_skipped_too_short=len(records) - len(kept),
        memorized_ids=tuple(records[i].id for i, h in zip(kept, hit, strict=True) if h),
        by_duplication={k: (float(np.mean(v)), len(v)) for k, v in sorted(groups.items())},
        prefix_tokens=prefix_tokens,
        suffix_tokens=suffix_tokens,
    )


__all__ = [
    "MemorizationResult",
    "dedupe_records",
    "greedy_continuations",
    "too_short",
    "verbatim_memorization",
]
