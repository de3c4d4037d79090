"""Tokenization, batching and sampling of training examples.

Sampling follows DP-SGD (Abadi et al. 2016, Algorithm 1): each logical batch
("lot") is a Poisson sample, every example joining independently with
probability q = batch_size / n, which is what the accountants assume. Lots
are split into physical batches of at most ``physical_batch_size`` exactly as
Opacus' ``BatchMemoryManager`` does (``np.array_split`` into
⌈|lot| / physical⌉ chunks; Yousefpour et al. 2021).

Randomness is derived per step from the run seed (:func:`derive_seed`), so the
lot of step t is a function of (seed, t) alone: a resumed run samples exactly
what the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError

IGNORE_INDEX = -100
"""Target value of padding positions, ignored by the loss."""

STREAM_SAMPLER = 1
STREAM_NOISE = 2
STREAM_SHUFFLE = 3


def derive_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for (run seed, random stream, step), independent across streams."""
    state = np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(
        1, np.uint64
    )[0]
    return int(state >> np.uint64(1))


@dataclass(frozen=True)
class EncodedExamples:
    """Tokenized records.

    Attributes:
        ids: record ids, one per example (repeated ids stay repeated).
        input_ids: token ids per example, at most ``max_length`` long.
        labels: class labels (classification) or ``None`` (causal LM).
        loss_start: per example, the first token the causal-LM loss counts
            (earlier tokens are context only; 0 = all), or ``None`` for all
            examples counting every token. Set for audit canaries whose loss is
            their secret's (``Record.meta["loss_from_char"]``).
    """

    ids: tuple[str, ...]
    input_ids: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...] | None
    loss_start: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def encode_records(
    records: Sequence[Record],
    tokenizer: Any,
    *,
    max_length: int,
    task: str,
    num_labels: int | None = None,
) -> EncodedExamples:
    """Tokenize records with the tokenizer's default special tokens, truncated to ``max_length``.

    This is the tokenization the scorers use (default special tokens, score tokens
    1..T−1; docs/formulas.md#token-log-probabilities), so a model is scored on what it
    trained on.

    Raises:
        DpauditError: for a text that encodes to no tokens, or a classification
            record without a valid label.
    """
    texts = [r.text for r in records]
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"] if texts else []
    for record, ids in zip(records, encoded, strict=True):
        if len(ids) == 0:
            raise DpauditError(f"record {record.id!r}: text encodes to no tokens")
    labels = None
    if task == "classification":
        bad = [r.id for r in records if r.label is None]
        if bad:
            raise DpauditError(
                f"record {bad[0]!r} has no label; train.task = classification needs Record.label"
            )
        labels = tuple(int(r.label) for r in records)  # type: ignore[arg-type]
        if num_labels is not None:
            out = [r.id for r in records if not 0 <= int(r.label) < num_labels]  # type: ignore[arg-type]
            if out:
                raise DpauditError(
                    f"record {out[0]!r}: label outside 0..{num_labels - 1} (train.num_labels = {num_labels})"
                )
    return EncodedExamples(
        tuple(r.id for r in records),
        tuple(tuple(x) for x in encoded),
        labels,
        _loss_starts(records, tokenizer, max_length) if task == "causal_lm" else None,
    )


def _loss_starts(
    records: Sequence[Record], tokenizer: Any, max_length: int
) -> tuple[int, ...] | None:
    """First counted token per record: the secret's first token for a masked canary, else 0."""
    from dpaudit.datasets.canaries import LOSS_FROM_CHAR
    from dpaudit.datasets.canary_designs import secret_token_start

    masked = [i for i, r in enumerate(records) if LOSS_FROM_CHAR in r.meta]
    if not masked:
        return None
    starts = [0] * len(records)
    firsts = secret_token_start(
        tokenizer,
        [records[i].text for i in masked],
        [int(records[i].meta[LOSS_FROM_CHAR]) for i in masked],
        max_length=max_length,
    )
    for i, first in zip(masked, firsts, strict=True):
        starts[i] = first
    return tuple(starts)


def collate(
    examples: EncodedExamples,
    indices: Sequence[int],
    *,
    pad_id: int,
    task: str,
    input_names: Sequence[str] = ("position_ids",),
    device: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Right-pad a batch; return (model inputs, targets).

    Inputs hold ``input_ids``, ``attention_mask`` and, when the model takes
    them, contiguous batch-shaped ``position_ids`` and ``token_type_ids``
    (Opacus computes per-example gradients of every embedding from its input,
    which must carry the batch dimension; ghost clipping also needs it
    contiguous). Targets are the input ids with padding (and the context
    tokens before an example's ``loss_start``) set to :data:`IGNORE_INDEX`
    (causal LM; the loss shifts them) or the class labels.
    """
    import torch

    rows = [examples.input_ids[i] for i in indices]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[j, : len(row)] = 1
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if "position_ids" in input_names:
        inputs["position_ids"] = torch.arange(width, dtype=torch.long).repeat(len(rows), 1)
    if "token_type_ids" in input_names:
        inputs["token_type_ids"] = torch.zeros((len(rows), width), dtype=torch.long)
    if task == "causal_lm":
        targets = ids.masked_fill(mask == 0, IGNORE_INDEX)
        if examples.loss_start is not None:
            for j, i in enumerate(indices):
                targets[j, : examples.loss_start[i]] = IGNORE_INDEX
    else:
        assert examples.labels is not None
        targets = torch.tensor([examples.labels[i] for i in indices], dtype=torch.long)
    if device is not None:
        inputs = {k: v.to(device) for k, v in inputs.items()}
        targets = targets.to(device)
    return inputs, targets


class PoissonSampler:
    """Poisson lots: each of n examples joins lot t independently with probability q.

    The lot of step t depends only on (seed, t) (Abadi et al. 2016, Alg. 1).
    """

    def __init__(self, n: int, sample_rate: float, seed: int):
        self.n = n
        self.sample_rate = sample_rate
        self.seed = seed

    def lot(self, step: int) -> list[int]:
        """Indices of the examples in the lot of ``step`` (possibly empty)."""
        import torch

        gen = torch.Generator().manual_seed(derive_seed(self.seed, STREAM_SAMPLER, step))
        mask = torch.rand(self.n, generator=gen, dtype=torch.float64) < self.sample_rate
        return mask.nonzero().flatten().tolist()


class ShuffleSampler:
    """Fixed-size lots from consecutive random permutations (``poisson_sampling = False``).

    Lot t is positions [t·b, (t+1)·b) of the concatenation of per-epoch
    permutations, each derived from (seed, epoch). The accountants' Poisson
    analysis does not strictly apply to this sampling; the ledger says so.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self._cache: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._cache:
            rng = np.random.default_rng(derive_seed(self.seed, STREAM_SHUFFLE, epoch))
            self._cache = {epoch: rng.permutation(self.n).tolist()}
        return self._cache[epoch]

    def lot(self, step: int) -> list[int]:
        """Indices of the examples in the lot of ``step``."""
        start = step * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            out.append(self._perm(pos // self.n)[pos % self.n])
        return out


def physical_batches(lot: Sequence[int], max_size: int) -> list[list[int]]:
    """Split a lot into ⌈|lot|/max_size⌉ near-equal chunks, as Opacus' BatchMemoryManager does."""
    if len(lot) == 0:
        return []
    chunks = np.array_split(np.asarray(lot, dtype=np.int64), math.ceil(len(lot) / max_size))
    return [c.tolist() for c in chunks]
