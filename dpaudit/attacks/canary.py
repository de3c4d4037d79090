"""Canary exposure and extraction (Carlini, Liu, Erlingsson, Kos, Song 2019, "The Secret Sharer").

A canary is ``prefix + secret`` with the secret drawn uniformly from a space
``R`` (:mod:`dpaudit.datasets.canaries`). Its **log-perplexity** (Sec. 4) is

    ``Px(s) = -log Pr(s | prefix) = -Σ_{t in secret tokens} log p(x_t | x_<t)``

in nats (the paper writes log2; rank and exposure do not depend on the base).
Which tokens are "the secret's" is decided once per ``(prefix, space)`` group
by :func:`scoring_context`, on token ids, and recorded in the result's ``scope``:

- ``"secret"``: the tokenization of ``prefix`` alone is a token prefix of the
  tokenization of ``prefix + secret`` (for every candidate); exactly the
  tokens after it are scored, each conditioned on the whole prefix.
- ``"separator+secret"``: it is not, but it is once the prefix's trailing
  whitespace is moved to the secret side. Byte-level BPE (GPT-2) attaches a
  space to the following word (``"is 4"`` is ``is``, ``Ġ4``), so the default
  prefix ``"my secret code is "`` falls here: the scored tokens are
  ``" 4 8 2"``, i.e. ``-log Pr(" " + secret | prefix.rstrip())``. The separator
  is the same for every candidate.
- ``"text"`` (fallback, with a warning): neither aligns, or the model exposes
  no tokenizer; every scored token of the full text counts (tokens 1..T-1,
  see :mod:`dpaudit.attacks.scoring`). Candidates then differ from ``Px`` by
  the prefix's own log-probability, which is not exactly constant when the
  boundary token changes with the secret.

Alignment is re-checked on every scored candidate; if one breaks it, the group
is rescored in ``"text"`` scope, so the ranking never mixes two definitions.

**Exposure** is :mod:`dpaudit.attacks.exposure`'s: exact rank over all of ``R``
when ``|R| <= enumeration_limit`` (each group's space is scored once and shared
by its canaries), else the skew-normal extrapolation from sampled candidates.

**Extraction**: the paper confirms exposure by extracting secrets with a
shortest-path search over candidates; here the standard decoders (greedy, beam,
sampling) generate from the prefix (the same context as scoring) and a secret
counts as extracted when a continuation starts with it, whitespace-normalised
and followed by a non-alphanumeric character or the end.

Secrets never appear in ``repr`` or in :meth:`CanaryResult.to_dict` unless
``reveal=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpaudit.attacks.exposure import (
    ExposureEstimate,
    compute_exposure,
    exposure_by_repetition,
)
from dpaudit.attacks.scoring import GENERATION_STRATEGIES, ScoringModel
from dpaudit.datasets.canaries import enumerate_secrets, parse_space, sample_secret, secret_index
from dpaudit.datasets.records import Canary
from dpaudit.errors import DpauditError, PreconditionError, unknown_name

SCOPES = ("secret", "separator+secret", "text")
"""What a canary's log-perplexity counts (see the module docstring)."""

Tokenize = Callable[[Sequence[str]], list[list[int]]]


# -- which tokens are the secret's ------------------------------------------------------


def scoring_context(tokenize: Tokenize, prefix: str, texts: Sequence[str]) -> tuple[str, str, int]:
    """Choose the context whose tokens condition, and are not part of, the scored secret.

    Args:
        tokenize: ``texts -> token ids`` exactly as the model tokenizes them.
        prefix: the canaries' prefix.
        texts: full texts ``prefix + secret`` that must all agree.

    Returns:
        ``(scope, context, n_context_tokens)``: ``("secret", prefix, n)`` or
        ``("separator+secret", prefix.rstrip(), n)`` when the context's token
        ids (``n >= 1`` of them) begin every text's token ids, with at least
        one token after them; else ``("text", prefix, 0)``.
    """
    full = tokenize(list(texts))
    options = [("secret", prefix)]
    if prefix.rstrip() != prefix:
        options.append(("separator+secret", prefix.rstrip()))
    for scope, context in options:
        ids = tokenize([context])[0]
        n = len(ids)
        if n >= 1 and all(len(f) > n and f[:n] == ids for f in full):
            return scope, context, n
    return "text", prefix, 0


class _Misaligned(Exception):
    """A candidate broke the group's token alignment; rescore the group in ``text`` scope."""


def _tokenizer_fn(model: ScoringModel) -> Tokenize | None:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None
    return lambda texts: [list(x) for x in tokenizer(list(texts))["input_ids"]]


def _logprobs(model: ScoringModel, texts: list[str]) -> list[np.ndarray]:
    """Token log-probs without filling the adapter's cache (10^6 candidates would)."""
    score_batch = getattr(model, "score_batch", None)
    if callable(score_batch):
        return [s.logprobs for s in score_batch(texts)]
    return model.token_logprobs(texts)


ENUMERATIONS = ("prefix-tree", "per-candidate")
"""How an exact exposure scored the candidates of ``R`` (see :class:`_LogPerplexity`)."""


class _LogPerplexity:
    """``secrets -> Px`` for one prefix and scope; checks alignment on every batch.

    Two ways to score, the same numbers up to float rounding (tested):

    - ``"prefix-tree"`` (the default when the scorer offers ``branch_logprobs``,
      e.g. :class:`~dpaudit.attacks.scoring.HFScoringModel`, and the scope is not
      ``"text"``): candidates sharing every secret token but the last form one
      branch of a token tree. The context runs through the model once (its
      key/value cache is reused), each branch's stem runs once, and its leaves
      are read from the stem's next-token distribution, so a ``digits:N`` space
      (one token per digit) costs ``10^(N-1)`` short forwards instead of ``10^N``
      full ones. Enumeration order keeps siblings in the same batch.
    - ``"per-candidate"``: one full forward per candidate text.
    """

    def __init__(self, model: ScoringModel, prefix: str, scope: str, context: str):
        self.model, self.prefix, self.scope = model, prefix, scope
        tokenize = _tokenizer_fn(model)
        self.tokenize = tokenize
        self.max_length = getattr(model, "max_length", None)
        self.context_ids = (
            tokenize([context])[0] if scope != "text" and tokenize is not None else []
        )
        self.branch = getattr(model, "branch_logprobs", None)
        self.enumeration = (
            "prefix-tree" if callable(self.branch) and self.context_ids else "per-candidate"
        )

    def _checked_ids(self, texts: list[str]) -> list[list[int]]:
        assert self.tokenize is not None
        n = len(self.context_ids)
        all_ids = self.tokenize(texts)
        for ids in all_ids:
            if self.max_length is not None and len(ids) > self.max_length:
                raise PreconditionError(
                    f"canary text has {len(ids)} tokens, more than the scorer's max_length "
                    f"{self.max_length}; shorten the prefix or raise max_length"
                )
            if self.scope != "text" and (len(ids) <= n or ids[:n] != self.context_ids):
                raise _Misaligned
        return all_ids

    def __call__(self, secrets: Sequence[str]) -> np.ndarray:
        texts = [self.prefix + s for s in secrets]
        if self.enumeration == "prefix-tree":
            return self._tree(texts)
        lps = _logprobs(self.model, texts)
        if self.tokenize is None:
            return np.array([-float(np.sum(lp, dtype=np.float64)) for lp in lps])
        n = len(self.context_ids)
        out = np.empty(len(texts))
        for i, (ids, lp) in enumerate(zip(self._checked_ids(texts), lps, strict=True)):
            if len(lp) != len(ids) - 1:
                raise DpauditError(f"scorer returned {len(lp)} log-probs for {len(ids)} tokens")
            out[i] = -float(np.sum(lp[max(n - 1, 0) :], dtype=np.float64))
        return out

    def _tree(self, texts: list[str]) -> np.ndarray:
        n = len(self.context_ids)
        stems: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        for i, ids in enumerate(self._checked_ids(texts)):
            stems.setdefault(tuple(ids[n:-1]), []).append((i, ids[-1]))
        assert callable(self.branch)
        scored = self.branch(
            self.context_ids, list(stems), [[tok for _, tok in g] for g in stems.values()]
        )
        out = np.empty(len(texts))
        for group, (path, leaves) in zip(stems.values(), scored, strict=True):
            stem_sum = float(np.sum(path, dtype=np.float64))
            for (i, _), leaf in zip(group, leaves, strict=True):
                out[i] = -(stem_sum + float(leaf))
        return out


def canary_logppl(
    model: ScoringModel, prefix: str, secrets: Sequence[str]
) -> tuple[np.ndarray, str]:
    """Log-perplexities ``Px`` (nats) of ``prefix + secret`` and the scope they count.

    The scope is chosen by :func:`scoring_context` from these texts alone.
    """
    secrets = list(secrets)
    tokenize = _tokenizer_fn(model)
    if tokenize is None:
        scope, context = "text", prefix
    else:
        scope, context, _ = scoring_context(tokenize, prefix, [prefix + s for s in secrets])
    return _LogPerplexity(model, prefix, scope, context)(secrets), scope


def secret_losses(
    model: ScoringModel,
    prefixes: Sequence[str],
    secrets: Sequence[str],
    *,
    reduce: str = "mean",
) -> np.ndarray:
    """Cross-entropy (nats) of each secret's tokens given its own prefix, shape ``(n,)``.

    ``prefix + secret`` is scored as one text; the secret's tokens are those
    :func:`~dpaudit.datasets.canary_designs.secret_positions` finds (tokens whose
    characters reach past the prefix), the same tokens the trainer's loss mask
    counts. ``reduce="mean"`` averages over them (Panda et al. 2025's canary loss),
    ``"sum"`` adds them up (the log-perplexity ``Px`` of Carlini et al. 2019).

    Raises:
        DpauditError: the model exposes no tokenizer, an unknown ``reduce``, or a
            secret truncated away.
    """
    from dpaudit.datasets.canary_designs import secret_positions

    if reduce not in ("mean", "sum"):
        raise DpauditError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    prefixes, secrets = list(prefixes), list(secrets)
    if len(prefixes) != len(secrets):
        raise DpauditError(f"{len(prefixes)} prefixes for {len(secrets)} secrets")
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise DpauditError("scoring canary secrets needs a model with a tokenizer")
    texts = [p + s for p, s in zip(prefixes, secrets, strict=True)]
    max_length = getattr(model, "max_length", None) or 10**9
    positions = secret_positions(
        tokenizer, texts, [len(p) for p in prefixes], max_length=max_length
    )
    out = np.empty(len(texts))
    for i, (lp, pos) in enumerate(zip(_logprobs(model, texts), positions, strict=True)):
        if len(lp) < int(pos[-1]):
            raise DpauditError(f"scorer returned {len(lp)} log-probs, need {int(pos[-1])}")
        picked = np.asarray(lp, dtype=np.float64)[pos - 1]  # log-prob of token t is lp[t-1]
        out[i] = -float(picked.mean() if reduce == "mean" else picked.sum())
    return out


# -- exposure ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryResult:
    """Exposure of one canary (the secret is kept out of ``repr``).

    Attributes:
        canary_id, repetitions, included: from the :class:`Canary`.
        exposure: bits, ``log2|R| - log2 rank`` (exact) or its extrapolation.
        method: ``"exact"`` or ``"extrapolated"``.
        rank: 1-based rank among all of ``R`` (exact only).
        space_size: ``|R|``.
        extracted: set by :func:`attach_extraction`; ``None`` until then.
        secret_space: the space spec.
        logppl: the canary's log-perplexity in nats, over ``scope``.
        scope: which tokens ``logppl`` counts (:data:`SCOPES`).
        n_candidates: candidates scored (``|R|`` or the sample size).
        enumeration: how an exact exposure scored ``R`` (:data:`ENUMERATIONS`);
            ``None`` when extrapolated.
        secret: the secret; masked by :meth:`to_dict` unless ``reveal=True``.
    """

    canary_id: str
    repetitions: int
    included: bool
    exposure: float
    method: str
    rank: int | None
    space_size: int
    extracted: bool | None = None
    secret_space: str = ""
    logppl: float = float("nan")
    scope: str = "text"
    n_candidates: int = 0
    enumeration: str | None = None
    secret: str = field(default="", repr=False)

    @property
    def insertions(self) -> int:
        """Copies actually in the training set: ``repetitions`` if included, else 0."""
        return self.repetitions if self.included else 0

    def to_dict(self, *, reveal: bool = False) -> dict[str, Any]:
        """JSON-ready fields; the secret is ``"<N> symbols, masked"`` unless ``reveal``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["insertions"] = self.insertions
        if not reveal:
            length = parse_space(self.secret_space).length if self.secret_space else "?"
            out["secret"] = f"{length} symbols, masked"
        return out


@contextlib.contextmanager
def _adapter_bars_off(model: Any) -> Iterator[None]:
    """Silence the adapter's per-call progress bar while we show one for the whole space."""
    if not hasattr(model, "progress"):
        yield
        return
    before = model.progress
    model.progress = False
    try:
        yield
    finally:
        model.progress = before


def _group_rng(seed: int, prefix: str, spec: str) -> np.random.Generator:
    """Independent of the other groups and of their order."""
    return np.random.default_rng([seed, zlib.crc32(f"{spec}\x00{prefix}".encode())])


def _validate(canaries: Sequence[Canary]) -> None:
    ids = [c.id for c in canaries]
    if len(set(ids)) != len(ids):
        raise DpauditError("canary ids are not unique")
    for c in canaries:
        try:
            secret_index(c.secret_space, c.secret)
        except DpauditError as exc:
            raise DpauditError(f"canary {c.id!r}: {exc}") from None


def _group_exposure(
    model: ScoringModel,
    prefix: str,
    spec: str,
    secrets: list[str],
    *,
    enumeration_limit: int,
    n_samples: int,
    batch_size: int,
    seed: int,
    progress: bool,
) -> tuple[str, str, list[ExposureEstimate]]:
    """Exposure of one prefix and space's secrets: ``(scope, enumeration, estimates)``."""
    from tqdm.auto import tqdm

    size = parse_space(spec).size
    tokenize = _tokenizer_fn(model)
    if tokenize is None:
        scope, context = "text", prefix
    else:
        scope, context, _ = scoring_context(tokenize, prefix, [prefix + s for s in secrets])

    def everything() -> Any:
        bar = {"total": size, "desc": f"exposure {spec}", "unit": "cand", "leave": False}
        return tqdm(enumerate_secrets(spec, limit=None), disable=not progress, **bar)

    def sample(k: int, rng: np.random.Generator) -> list[str]:
        return [sample_secret(spec, rng) for _ in range(k)]

    used: list[str] = []

    def run(scope: str, context: str) -> list[ExposureEstimate]:
        scorer = _LogPerplexity(model, prefix, scope, context)
        used[:] = [scorer.enumeration]
        return compute_exposure(
            scorer,
            secrets,
            space_size=size,
            enumerate_fn=everything,
            sample_fn=sample,
            limit=enumeration_limit,
            n_samples=n_samples,
            rng=_group_rng(seed, prefix, spec),
            batch_size=batch_size,
        )

    try:
        estimates = run(scope, context)
    except _Misaligned:
        scope = "text"
        estimates = run(scope, prefix)
    if scope == "text":
        warnings.warn(
            f"canaries of space {spec}: the prefix's tokens do not align with the canary "
            "text's; scoring the whole text instead of the secret's tokens",
            stacklevel=3,
        )
    return scope, used[0], estimates


def canary_exposure(
    model: ScoringModel,
    canaries: Sequence[Canary],
    *,
    enumeration_limit: int = 10**6,
    n_samples: int = 5000,
    batch_size: int = 1024,
    seed: int = 0,
    progress: bool = True,
) -> list[CanaryResult]:
    """Exposure of each canary (Carlini et al. 2019, Sec. 4), in input order.

    Canaries are grouped by ``(prefix, secret_space)``; each group's candidates
    are scored once. Exact when ``|R| <= enumeration_limit`` (every candidate of
    ``R`` scored, ``batch_size`` per call, with a progress bar), else
    extrapolated from ``n_samples`` candidates drawn uniformly (with
    replacement) under a generator seeded from ``seed`` and the group.

    Raises:
        DpauditError: duplicate ids, a secret outside its space, a text longer
            than the scorer's ``max_length``.
    """
    canaries = list(canaries)
    _validate(canaries)
    groups: dict[tuple[str, str], list[Canary]] = {}
    for c in canaries:
        groups.setdefault((c.prefix, parse_space(c.secret_space).spec), []).append(c)
    by_id: dict[str, CanaryResult] = {}
    with _adapter_bars_off(model):
        for (prefix, spec), members in groups.items():
            scope, enumeration, estimates = _group_exposure(
                model,
                prefix,
                spec,
                [c.secret for c in members],
                enumeration_limit=enumeration_limit,
                n_samples=n_samples,
                batch_size=batch_size,
                seed=seed,
                progress=progress,
            )
            for c, est in zip(members, estimates, strict=True):
                by_id[c.id] = CanaryResult(
                    canary_id=c.id,
                    repetitions=c.repetitions,
                    included=c.included,
                    exposure=est.exposure,
                    method=est.method,
                    rank=est.rank,
                    space_size=est.space_size,
                    secret_space=spec,
                    logppl=est.logppl,
                    scope=scope,
                    n_candidates=est.n_candidates,
                    enumeration=enumeration if est.method == "exact" else None,
                    secret=c.secret,
                )
    return [by_id[c.id] for c in canaries]


def exposure_summary(results: Sequence[CanaryResult]) -> dict[int, dict[str, float]]:
    """Exposure statistics per number of insertions (0 for canaries left out of training)."""
    return exposure_by_repetition(
        {r.canary_id: r.exposure for r in results}, {r.canary_id: r.insertions for r in results}
    )


# -- extraction -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractionResult:
    """Whether one decoding strategy reproduced one canary's secret from its prefix.

    Attributes:
        canary_id, repetitions, included: from the :class:`Canary`.
        strategy: ``greedy``, ``beam`` (top beam only) or ``sample``.
        extracted: ``hits > 0``.
        hits: continuations that start with the secret.
        tries: continuations generated (``n_samples`` for ``sample``, else 1).
    """

    canary_id: str
    repetitions: int
    included: bool
    strategy: str
    extracted: bool
    hits: int
    tries: int

    @property
    def insertions(self) -> int:
        """Copies actually in the training set: ``repetitions`` if included, else 0."""
        return self.repetitions if self.included else 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["insertions"] = self.insertions
        return out


def _normalise(text: str) -> str:
    return " ".join(text.split())


def starts_with_secret(continuation: str, secret: str) -> bool:
    """``continuation`` begins with ``secret`` (whitespace runs collapsed, leading ones dropped)
    and the secret is followed by the end or a non-alphanumeric character."""
    text, want = _normalise(continuation), _normalise(secret)
    return text.startswith(want) and (len(text) == len(want) or not text[len(want)].isalnum())


def canary_extraction(
    model: ScoringModel,
    canaries: Sequence[Canary],
    *,
    strategies: Sequence[str] = ("greedy", "beam", "sample"),
    n_samples: int = 16,
    num_beams: int = 5,
    temperature: float = 1.0,
    top_k: int | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> list[ExtractionResult]:
    """Try to extract each canary's secret by decoding from its prefix.

    The prompt is the scoring context of :func:`scoring_context` (the prefix,
    or the prefix without its trailing whitespace when the tokenizer attaches
    that whitespace to the secret's first token, as GPT-2's does: prompting
    with a dangling space token is out of distribution). ``greedy`` and
    ``beam`` (``num_beams``, judged on the top beam) produce one continuation,
    ``sample`` produces ``n_samples`` under ``seed``. ``max_new_tokens``
    defaults to the longest secret's token count plus 2.

    Returns:
        One result per canary and strategy, canary-major.
    """
    for s in strategies:
        if s not in GENERATION_STRATEGIES:
            raise unknown_name("generation strategy", s, GENERATION_STRATEGIES)
    if n_samples < 1:
        raise DpauditError(f"n_samples must be at least 1, got {n_samples}")
    canaries = list(canaries)
    _validate(canaries)
    if not canaries:
        return []
    tokenize = _tokenizer_fn(model)
    prompts: list[str] = []
    needed = 0
    for c in canaries:
        if tokenize is None:
            prompts.append(c.prefix)
            needed = max(needed, 4 * parse_space(c.secret_space).length + 4)
            continue
        _, context, n = scoring_context(tokenize, c.prefix, [c.text])
        prompts.append(context)
        needed = max(needed, len(tokenize([c.text])[0]) - n + 2)
    new_tokens = max_new_tokens if max_new_tokens is not None else needed
    results: dict[tuple[str, str], ExtractionResult] = {}
    for strategy in strategies:
        tries = n_samples if strategy == "sample" else 1
        kwargs: dict[str, Any] = {"max_new_tokens": new_tokens, "strategy": strategy, "seed": seed}
        if strategy == "beam":
            kwargs["num_beams"] = num_beams
        if strategy == "sample":
            kwargs.update(num_return_sequences=n_samples, temperature=temperature, top_k=top_k)
        texts = model.generate(prompts, **kwargs)
        for i, c in enumerate(canaries):
            hits = sum(starts_with_secret(t, c.secret) for t in texts[i * tries : (i + 1) * tries])
            results[(c.id, strategy)] = ExtractionResult(
                c.id, c.repetitions, c.included, strategy, hits > 0, int(hits), tries
            )
    return [results[(c.id, s)] for c in canaries for s in strategies]


def attach_extraction(
    results: Sequence[CanaryResult],
    extractions: Sequence[ExtractionResult],
    *,
    strategy: str = "greedy",
) -> list[CanaryResult]:
    """Copies of ``results`` with ``extracted`` set from ``strategy``'s extraction (``None`` if absent)."""
    found = {e.canary_id: e.extracted for e in extractions if e.strategy == strategy}
    return [dataclasses.replace(r, extracted=found.get(r.canary_id)) for r in results]


def extraction_summary(
    extractions: Sequence[ExtractionResult],
) -> dict[int, dict[str, dict[str, float]]]:
    """Extraction success per number of insertions and strategy.

    Returns:
        ``{insertions: {strategy: {"rate", "extracted", "n"}}}``, sorted by
        insertions (0 for canaries left out of training).
    """
    groups: dict[int, dict[str, list[bool]]] = {}
    for e in extractions:
        groups.setdefault(e.insertions, {}).setdefault(e.strategy, []).append(e.extracted)
    return {
        k: {
            s: {"rate": float(np.mean(v)), "extracted": int(sum(v)), "n": len(v)}
            for s, v in by_strategy.items()
        }
        for k, by_strategy in sorted(groups.items())
    }


__all__ = [
    "SCOPES",
    "CanaryResult",
    "ExtractionResult",
    "attach_extraction",
    "canary_exposure",
    "canary_extraction",
    "canary_logppl",
    "exposure_summary",
    "extraction_summary",
    "scoring_context",
    "starts_with_secret",
]
