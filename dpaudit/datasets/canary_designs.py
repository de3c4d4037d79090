"""Designs of one-run audit canaries for language models: what the secret is, what precedes it.

A one-run audit (Steinke, Nasr, Jagielski 2023) is only as strong as the
canaries' membership signal. Panda, Tang, Nasr, Choquette-Choo, Mittal (ICLR
2025, "Privacy Auditing of Large Language Models"; official code
kiddyboots216/privacy-auditing-of-llms, ``create_datasets.py``) build every
canary as ``prefix + secret`` where the prefix is ``L`` tokens drawn uniformly
from the vocabulary and the training loss and the score count **only the secret
tokens**; the designs differ in the secret:

- ``random-secret`` — dpaudit's original canary: a random secret from
  ``data.secret_space`` (``"4 8 2 9"``); the "prior approach" of Panda et al.
- ``new-token`` — each canary's secret is **one token that the tokenizer never
  produces on real text**, unique to that canary (``<canary-i>``, added as a
  special token; the model's new embedding rows start at zero). Only its own
  canary ever pulls that token's output row up, so its loss after training is a
  nearly noise-free membership signal (the strongest design of Panda et al.).
  It needs control of the vocabulary (a run trains or extends its tokenizer).
- ``unigram`` — model-free rare tokens: each secret is one of the rarest
  word tokens of the non-canary training corpus (token counts of the
  members' text), distinct across canaries while the pool allows.

Every design uses the same inclusion coins: ``m`` i.i.d. fair coins drawn from
stream 1 of ``numpy.random.SeedSequence(seed).spawn(3)``, the stream that
:func:`~dpaudit.datasets.canaries.make_one_run_canaries` uses, so the coins do
not depend on the design or on the secrets (streams 0 and 2 draw secrets and
prefixes). Canaries of a design other than ``random-secret`` carry the secret
space ``"design:<name>"`` (their secrets are not from a ``digits:N``-style space).

:func:`secret_positions` says which tokens of ``prefix + secret`` are the
secret's: those whose character span reaches past the prefix (tokenizer offset
mappings). The training loss mask (``Record.meta["loss_from_char"]``) and the
audit's scores use it, so both count exactly the same tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpaudit.datasets.canaries import (
    CANARY_ID_PREFIX,
    DESIGN_SPACE_PREFIX,
    parse_space,
    sample_distinct_secrets,
)
from dpaudit.datasets.records import ONE_RUN, Canary
from dpaudit.errors import DpauditError
from dpaudit.registry import Registry

__all__ = [
    "CANARY_DESIGNS",
    "CANARY_TOKEN_MARKER",
    "CanaryDesign",
    "DesignContext",
    "add_reserved_tokens",
    "canary_token",
    "check_corpus_free_of_canary_tokens",
    "make_design_canaries",
    "random_prefix_pool",
    "secret_positions",
    "secret_token_start",
]

CANARY_TOKEN_MARKER = "<canary-"
"""Every reserved canary token starts with this; real text containing it is refused."""
_CANARY_TOKEN = re.compile(r"<canary-[0-9]+>")


def canary_token(i: int) -> str:
    """The reserved token of canary ``i`` (0-based): ``<canary-i>``."""
    return f"{CANARY_TOKEN_MARKER}{int(i)}>"


@dataclass(frozen=True)
class DesignContext:
    """What a design may use to draw secrets.

    Attributes:
        m: number of canaries.
        tokenizer: the run's tokenizer (with reserved tokens already added), or
            ``None`` where a design needs none (``random-secret`` with a text prefix).
        corpus: the non-canary training texts (the members), for token statistics.
        secret_space: ``data.secret_space`` (``random-secret`` only).
    """

    m: int
    tokenizer: Any = None
    corpus: tuple[str, ...] = ()
    secret_space: str = "digits:4"


@dataclass(frozen=True)
class CanaryDesign:
    """One way to build audit canaries (register instances in :data:`CANARY_DESIGNS`).

    Attributes:
        name: the ``data.canary_design`` value.
        description: one line, with its source.
        reserves_tokens: the design adds :func:`canary_token` ``(i)`` for
            ``i < m`` to the tokenizer.
        separator: text put between a random prefix and the secret (a space
            before word secrets, nothing before a special token).
    """

    name: str
    description: str
    reserves_tokens: bool = False
    separator: str = ""

    def needs_tokenizer(self, prefix_tokens: int) -> bool:
        """Whether drawing canaries needs the tokenizer (random prefixes always do)."""
        return prefix_tokens > 0

    def secret_space(self, ctx: DesignContext) -> str:
        """The ``secret_space`` field of this design's canaries."""
        return f"{DESIGN_SPACE_PREFIX}{self.name}"

    def secrets(self, ctx: DesignContext, rng: np.random.Generator) -> list[str]:
        """``ctx.m`` secret texts, canary ``i`` first (raises ``NotImplementedError`` here)."""
        raise NotImplementedError


@dataclass(frozen=True)
class RandomSecretDesign(CanaryDesign):
    """``random-secret``: distinct secrets from ``data.secret_space``."""

    def secret_space(self, ctx: DesignContext) -> str:
        return parse_space(ctx.secret_space).spec

    def secrets(self, ctx: DesignContext, rng: np.random.Generator) -> list[str]:
        return sample_distinct_secrets(ctx.secret_space, ctx.m, rng)


@dataclass(frozen=True)
class NewTokenDesign(CanaryDesign):
    """``new-token``: canary ``i``'s secret is its own reserved token ``<canary-i>``."""

    def needs_tokenizer(self, prefix_tokens: int) -> bool:
        return True

    def secrets(self, ctx: DesignContext, rng: np.random.Generator) -> list[str]:
        if ctx.tokenizer is not None:
            missing = [
                t
                for t in (canary_token(0), canary_token(ctx.m - 1))
                if t not in ctx.tokenizer.get_vocab()
            ]
            if missing:
                raise DpauditError(
                    f"canary design new-token: the tokenizer lacks {missing[0]!r} "
                    "(add the reserved tokens with add_reserved_tokens first)"
                )
        return [canary_token(i) for i in range(ctx.m)]


@dataclass(frozen=True)
class UnigramDesign(CanaryDesign):
    """``unigram``: the rarest word tokens of the non-canary corpus, one per canary."""

    def needs_tokenizer(self, prefix_tokens: int) -> bool:
        return True

    def secrets(self, ctx: DesignContext, rng: np.random.Generator) -> list[str]:
        if ctx.tokenizer is None:
            raise DpauditError("canary design unigram needs a tokenizer")
        pool = rare_word_tokens(ctx.tokenizer, ctx.corpus)
        if not pool:
            raise DpauditError(
                "canary design unigram: no word token of the vocabulary occurs in the corpus"
            )
        chosen = np.resize(np.asarray(pool[: ctx.m]), ctx.m)  # reused only if the pool is short
        chosen = rng.permutation(chosen)
        texts = ctx.tokenizer.batch_decode([[int(t)] for t in chosen])
        return [str(t) for t in texts]


CANARY_DESIGNS: Registry[CanaryDesign] = Registry("canary design")
"""``data.canary_design`` name → :class:`CanaryDesign`."""

CANARY_DESIGNS.register(
    "random-secret",
    RandomSecretDesign(
        "random-secret",
        "A random secret from data.secret_space (Carlini et al. 2019; the prior approach "
        "in Panda et al. 2025)",
        separator=" ",
    ),
)
CANARY_DESIGNS.register(
    "new-token",
    NewTokenDesign(
        "new-token",
        "One reserved token per canary that real text never produces (Panda et al. 2025)",
        reserves_tokens=True,
    ),
)
CANARY_DESIGNS.register(
    "unigram",
    UnigramDesign(
        "unigram",
        "The rarest word tokens of the non-canary training corpus, one per canary "
        "(model-free; Panda et al. 2025)",
    ),
)


# -- tokens -------------------------------------------------------------------------------


def add_reserved_tokens(tokenizer: Any, m: int) -> int:
    """Add ``<canary-0>`` … ``<canary-{m-1}>`` to ``tokenizer`` as special tokens (in place).

    Special tokens are matched as whole strings before any pre-tokenization, so
    ordinary text produces them only if it contains the literal string (refused
    by :func:`check_corpus_free_of_canary_tokens`). Returns the number added.
    """
    tokens = [canary_token(i) for i in range(m)]
    return int(tokenizer.add_tokens(tokens, special_tokens=True))


def check_corpus_free_of_canary_tokens(texts: Sequence[str]) -> None:
    """Refuse a corpus that contains a reserved canary token's string.

    Raises:
        DpauditError: naming the first offending text's position.
    """
    for i, text in enumerate(texts):
        found = _CANARY_TOKEN.search(text) if CANARY_TOKEN_MARKER in text else None
        if found is not None:
            raise DpauditError(
                f"record {i} of the corpus contains the reserved canary token "
                f"{found.group(0)!r}; the new-token design needs text that never produces it "
                "(choose another data.canary_design)"
            )


def _base_ids(tokenizer: Any) -> list[int]:
    """Ids of the ordinary vocabulary: no special or added token."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(int(tokenizer.vocab_size)) if i not in special]


def random_prefix_pool(tokenizer: Any) -> np.ndarray:
    """Token ids a random prefix draws from: the ordinary vocabulary minus tokens that
    decode to nothing, to invalid UTF-8 (a lone byte of a multi-byte character) or to
    text with the canary-token marker."""
    ids = _base_ids(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in ids])
    keep = [i for i, t in zip(ids, texts, strict=True) if t and "\ufffd" not in t and "<" not in t]
    if not keep:
        raise DpauditError("the tokenizer has no ordinary token to draw random prefixes from")
    return np.asarray(keep, dtype=np.int64)


def rare_word_tokens(tokenizer: Any, corpus: Sequence[str]) -> list[int]:
    """Word tokens (a leading space, then a letter or digit) that occur in ``corpus``,
    rarest first (ties by id), each of which re-tokenizes to itself.

    These are the secrets of the ``unigram`` design: Panda et al.'s unigram canary
    takes tokens of low training-set frequency that still occur (count > 0).
    """
    ids = _base_ids(tokenizer)
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    if corpus:
        encoded = tokenizer(list(corpus), add_special_tokens=False)["input_ids"]
        flat = np.fromiter((t for row in encoded for t in row), dtype=np.int64)
        counts += np.bincount(flat, minlength=len(tokenizer))[: len(tokenizer)]
    texts = tokenizer.batch_decode([[i] for i in ids])
    words = [
        (i, t)
        for i, t in zip(ids, texts, strict=True)
        if counts[i] > 0 and len(t) > 1 and t[0] == " " and t[1].isalnum() and "\ufffd" not in t
    ]
    again = tokenizer([t for _, t in words], add_special_tokens=False)["input_ids"] if words else []
    pool = [i for (i, _), ids_ in zip(words, again, strict=True) if list(ids_) == [i]]
    return sorted(pool, key=lambda i: (int(counts[i]), i))


def _fit_prefix(
    tokenizer: Any,
    ids: np.ndarray,
    suffix: str,
    max_length: int,
) -> str:
    """Decode ``ids``; drop trailing ones until ``prefix + suffix`` fits ``max_length`` tokens."""
    n = len(ids)
    while n >= 1:
        prefix = tokenizer.decode([int(i) for i in ids[:n]])
        if CANARY_TOKEN_MARKER not in prefix:
            length = len(tokenizer(prefix + suffix)["input_ids"])
            if length <= max_length:
                return str(prefix)
        n -= 1
    raise DpauditError(
        f"an audit canary does not fit data.max_length = {max_length} tokens even with a "
        "one-token prefix; raise data.max_length"
    )


def make_design_canaries(
    design: str,
    *,
    m: int,
    seed: int,
    tokenizer: Any = None,
    corpus: Sequence[str] = (),
    prefix: str = "",
    prefix_tokens: int = 0,
    secret_space: str = "digits:4",
    max_length: int = 64,
) -> list[Canary]:
    """``m`` one-run audit canaries (role ``one-run``) of the named design.

    Args:
        design: a :data:`CANARY_DESIGNS` name.
        m: number of canaries (``>= 1``).
        seed: seeds the coins (stream 1), secrets (stream 0) and prefixes (stream 2)
            of ``numpy.random.SeedSequence(seed)``.
        tokenizer: the run's tokenizer, with :func:`add_reserved_tokens` applied
            for a design that reserves tokens; needed unless the design is
            ``random-secret`` with ``prefix_tokens = 0``.
        corpus: non-canary training texts (token statistics of ``unigram``).
        prefix: the shared text prefix, used when ``prefix_tokens = 0``.
        prefix_tokens: ``L > 0``: each canary's prefix is ``L`` tokens drawn
            uniformly (with replacement) from :func:`random_prefix_pool`,
            decoded to text (and shortened only if the canary would exceed
            ``max_length`` tokens); ``0``: every canary uses ``prefix``.
        secret_space: the space of ``random-secret``.
        max_length: the tokens a training example keeps.

    Returns:
        canaries ``canary-0000`` … in order, ``included`` = the coin, ``repetitions = 1``.

    Raises:
        DpauditError: unknown design, ``m < 1``, a needed tokenizer missing, an
            empty prefix with ``prefix_tokens = 0``, or a canary too long.
    """
    spec = CANARY_DESIGNS.get(design)
    if m < 1 or prefix_tokens < 0:
        raise DpauditError(f"need m >= 1 and prefix_tokens >= 0, got m={m}, {prefix_tokens}")
    if tokenizer is None and spec.needs_tokenizer(prefix_tokens):
        raise DpauditError(f"canary design {design!r} needs the run's tokenizer")
    if prefix_tokens == 0 and not prefix:
        raise DpauditError("audit canaries need a prefix: set data.canary_prefix or L > 0 tokens")
    secret_seq, coin_seq, prefix_seq = np.random.SeedSequence(seed).spawn(3)
    coins = np.random.default_rng(coin_seq).integers(0, 2, size=m).astype(bool)
    ctx = DesignContext(m=m, tokenizer=tokenizer, corpus=tuple(corpus), secret_space=secret_space)
    secrets = spec.secrets(ctx, np.random.default_rng(secret_seq))
    if len(secrets) != m:
        raise DpauditError(f"canary design {design!r} drew {len(secrets)} secrets, not {m}")
    if prefix_tokens > 0:
        pool = random_prefix_pool(tokenizer)
        draws = np.random.default_rng(prefix_seq).choice(pool, size=(m, prefix_tokens))
        prefixes = [
            _fit_prefix(tokenizer, draws[i], spec.separator + s, max_length) + spec.separator
            for i, s in enumerate(secrets)
        ]
    else:
        prefixes = [prefix] * m
    space = spec.secret_space(ctx)
    width = max(4, len(str(m - 1)))
    return [
        Canary(f"{CANARY_ID_PREFIX}{i:0{width}d}", p, s, space, 1, bool(c), ONE_RUN)
        for i, (p, s, c) in enumerate(zip(prefixes, secrets, coins, strict=True))
    ]


# -- which tokens are the secret's ---------------------------------------------------------


def secret_positions(
    tokenizer: Any, texts: Sequence[str], prefix_chars: Sequence[int], *, max_length: int
) -> list[np.ndarray]:
    """Per text, the indices of its tokens that belong to the secret.

    The text is tokenized as training and scoring tokenize it (default special
    tokens, truncated to ``max_length``). A token belongs to the secret when its
    character span ends after ``prefix_chars`` (so a separator space that
    byte-level BPE attaches to the first secret word counts with the secret);
    special tokens added by the tokenizer (empty spans) never do.

    Raises:
        DpauditError: a text whose secret has no token left after truncation, or
            whose first secret token is token 0 (nothing conditions it).
    """
    texts = list(texts)
    try:
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, ValueError, TypeError):
        return _positions_without_offsets(tokenizer, texts, prefix_chars, max_length)
    out = []
    for text, n, spans in zip(texts, prefix_chars, offsets, strict=True):
        pos = np.array([t for t, (a, b) in enumerate(spans) if b > n and b > a], dtype=np.int64)
        _check_positions(text, pos)
        out.append(pos)
    return out


def _positions_without_offsets(
    tokenizer: Any, texts: list[str], prefix_chars: Sequence[int], max_length: int
) -> list[np.ndarray]:
    full = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    heads = tokenizer([t[:n] for t, n in zip(texts, prefix_chars, strict=True)])["input_ids"]
    out = []
    for text, ids, head in zip(texts, full, heads, strict=True):
        k = len(head)
        if list(ids[:k]) != list(head):
            raise DpauditError(
                "cannot tell the secret's tokens apart: the tokenizer gives no offsets and the "
                "prefix's tokens do not begin the canary's tokens"
            )
        pos = np.arange(k, len(ids), dtype=np.int64)
        _check_positions(text, pos)
        out.append(pos)
    return out


def _check_positions(text: str, pos: np.ndarray) -> None:
    if pos.size == 0:
        raise DpauditError(
            f"a canary's secret has no token within data.max_length ({len(text)} characters); "
            "shorten the prefix or raise data.max_length"
        )
    if pos[0] == 0:
        raise DpauditError("a canary's secret starts at its first token: it needs a prefix")


def secret_token_start(
    tokenizer: Any, texts: Sequence[str], prefix_chars: Sequence[int], *, max_length: int
) -> list[int]:
    """Per text, the index of its first secret token (see :func:`secret_positions`)."""
    return [
        int(p[0]) for p in secret_positions(tokenizer, texts, prefix_chars, max_length=max_length)
    ]
