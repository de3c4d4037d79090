"""The scoring-model interface the attacks talk to, and its Hugging Face adapter.

Every attack sees a model only through :class:`ScoringModel`: per-token
log-probabilities (with the per-token mean and spread that min-k%++ needs),
generation and classification. :class:`HFScoringModel` implements it over an
already-loaded Hugging Face model (GPT-2-style causal LMs, sequence
classifiers, and PEFT wrappers of either); :func:`tiny_causal_lm` and
:func:`tiny_classifier` build tiny random models so that tests exercise the real
adapter with no weights to download.

Token log-probabilities (docs/formulas.md#token-log-probabilities): each text is tokenized with the
model's tokenizer and its default special tokens, truncated to ``max_length``
tokens (by default the model's context, at most :data:`CONTEXT_CAP`), and
tokens 1..T−1 are scored, each conditioned on the earlier ones (the standard
shifted causal-LM loss). Padding is never scored, and because batches are
right-padded under a causal attention mask, batching does not change any score
(tested against a one-text-at-a-time reference). :meth:`HFScoringModel.tokens_cut`
says how many tokens of each text the truncation drops, so that callers can
count and report it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dpaudit.errors import DpauditError, PreconditionError, unknown_name
from dpaudit.trainers.models import resolve_device

GENERATION_STRATEGIES = ("greedy", "beam", "sample")

CONTEXT_CAP = 2048
"""Most tokens per text scored by default (models with a longer context are scored up to this)."""

TOKENS_PER_TEXT = 128
"""A forward pass holds at most ``batch_size * TOKENS_PER_TEXT`` tokens (long texts: smaller batches)."""


@dataclass(frozen=True)
class TokenStats:
    """Per-token statistics of one text under a causal LM, from one forward pass.

    For scored token ``t`` (1..T−1) with next-token distribution ``p`` over the
    vocabulary given tokens ``< t``:

    - ``logprobs[t-1] = log p(x_t)``;
    - ``mu[t-1] = Σ_v p(v) log p(v)`` (the mean of ``log p`` under ``p``);
    - ``sigma[t-1] = sqrt(Σ_v p(v) (log p(v) − mu)²)`` (its standard deviation).

    ``mu`` and ``sigma`` are the normalisers of min-k%++ (Zhang et al. 2025).
    The arrays are float64 and read-only (results are cached and shared).
    """

    logprobs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    @property
    def n_tokens(self) -> int:
        """Number of scored tokens (T − 1 for a text of T tokens)."""
        return int(self.logprobs.shape[0])


@runtime_checkable
class ScoringModel(Protocol):
    """What an attack may ask of a model.

    Implementations must be deterministic: the same inputs (and, for sampling,
    the same seed) give the same outputs.
    """

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, ``log p(x_t | x_<t)`` for tokens 1..T−1 (see :class:`TokenStats`)."""
        ...

    def token_stats(self, texts: Sequence[str]) -> list[TokenStats]:
        """Per text, log-probabilities plus the per-token ``mu``/``sigma`` of min-k%++."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 32,
        strategy: str = "greedy",
        num_beams: int = 4,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        num_return_sequences: int = 1,
        seed: int = 0,
    ) -> list[str]:
        """Decoded continuations (without the prompt), prompt-major."""
        ...

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        """Logits of a sequence classifier, shape ``(len(texts), num_labels)``."""
        ...


def _max_positions(config: Any) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first).

    With ``max_tokens``, a batch also holds at most that many tokens once padded
    (its first, longest text times its size), and always at least one text.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size:
            width = max(lengths[batches[-1][0]], 1)
            if (len(batches[-1]) + 1) * width <= max_tokens:
                batches[-1].append(i)
                continue
        batches.append([i])
    return batches


def _next_token_stats(logits: Any, targets: Any, chunk: int = 1024) -> tuple[Any, Any, Any]:
    """``log p(target)``, ``μ`` and ``σ`` of ``log p`` under ``p``, for rows of logits ``(N, V)``.

    Computed in float32, ``chunk`` rows at a time to bound the ``(N, V)``
    temporaries; tokens with ``p = 0`` contribute nothing to ``μ`` or ``σ``.
    """
    import torch

    parts = []
    for lo in range(0, logits.shape[0], chunk):
        logp = torch.log_softmax(logits[lo : lo + chunk].float(), dim=-1)
        p = logp.exp()
        # p = 0 only where log p = −inf: 0 · (−inf) is NaN there, and nansum drops it.
        mu = (p * logp).nansum(-1)
        dev = logp.sub(mu[:, None])  # one temporary, squared and weighted in place
        sigma = dev.square_().mul_(p).nansum(-1).sqrt()
        token_lp = logp.gather(-1, targets[lo : lo + chunk, None]).squeeze(-1)
        parts.append((token_lp, mu, sigma))
    if not parts:
        empty = logits.new_zeros(0, dtype=torch.float32)
        return empty, empty, empty
    return tuple(torch.cat(col) for col in zip(*parts, strict=True))  # type: ignore[return-value]


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """A key/value cache as the keyword argument this transformers version's forward takes.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name is
    deprecated, with removal announced); older versions only know the old one. A
    PEFT wrapper forwards keywords to its base model, whose signature decides.
    """
    import inspect

    base = getattr(model, "get_base_model", None)
    target = base() if callable(base) else model
    try:
        params: Any = inspect.signature(getattr(target, "forward", target)).parameters
    except (TypeError, ValueError):
        params = {}
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _readonly(array: Any) -> np.ndarray:
    out = np.asarray(array, dtype=np.float64)
    out.flags.writeable = False
    return out


class HFScoringModel:
    """:class:`ScoringModel` over a loaded Hugging Face model and tokenizer.

    The model is moved to ``device`` and put in eval mode. Batches are formed
    from texts of similar length (sorted, then restored to input order), run
    under ``torch.inference_mode()`` and shown with a tqdm bar when ``progress``.
    :meth:`token_stats` caches its results by text for the lifetime of the
    instance, so several attacks over the same examples share one forward pass.

    Args:
        model: a causal LM or sequence classifier, possibly PEFT-wrapped.
        tokenizer: its tokenizer (a pad token is not required).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: texts per forward pass.
        max_length: texts are truncated to this many tokens (and to the model's
            number of positions, if smaller); prompts keep their last tokens.
            ``None`` (default): the model's number of positions, at most
            :data:`CONTEXT_CAP` (:data:`CONTEXT_CAP` when the model declares none).
            :meth:`tokens_cut` counts what the truncation drops.
        progress: show a progress bar.
        label: which model this is (``target``, ``ref-0``...), named on the progress bars.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        progress: bool = True,
        label: str = "",
    ):
        if batch_size < 1:
            raise DpauditError(f"batch_size must be at least 1, got {batch_size}")
        if max_length is not None and max_length < 2:
            raise DpauditError(f"max_length must be at least 2 tokens, got {max_length}")
        self.device = resolve_device(device, setting="device")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        positions = _max_positions(getattr(model, "config", None))
        if max_length is None:
            max_length = min(positions, CONTEXT_CAP) if positions else CONTEXT_CAP
        self.max_length = min(max_length, positions) if positions else max_length
        self.progress = progress
        self.label = label
        self._cache: dict[str, TokenStats] = {}
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    # -- helpers -----------------------------------------------------------------

    def _encode(self, texts: Sequence[str], *, keep: str = "start") -> list[list[int]]:
        if keep == "start":
            enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
            return [list(x) for x in enc["input_ids"]]
        ids = self.tokenizer(list(texts), verbose=False)["input_ids"]
        return [list(x[-self.max_length :]) for x in ids]

    def tokens_cut(self, texts: Sequence[str]) -> list[int]:
        """Per text, the tokens that truncation to :attr:`max_length` drops (0: scored whole).

        Counted on the tokenization scoring uses (default special tokens
        included), so ``len(token_logprobs([t])[0]) + 1 + tokens_cut([t])[0]``
        is the text's full token count (for a text of at least two tokens).
        """
        if not texts:
            return []
        ids = self.tokenizer(list(texts), verbose=False)["input_ids"]
        return [max(0, len(x) - self.max_length) for x in ids]

    def _pad(
        self, seqs: Sequence[Sequence[int]], *, pad_id: int, left: bool = False
    ) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            if not seq:
                continue
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[row, cols] = torch.tensor(seq, dtype=torch.long)
            mask[row, cols] = 1
        return ids.to(self.device), mask.to(self.device)

    def _bar(self, batches: list[list[int]], desc: str) -> Iterator[list[int]]:
        from tqdm.auto import tqdm

        desc = f"{desc} {self.label}" if self.label else desc
        return iter(tqdm(batches, desc=desc, unit="batch", disable=not self.progress, leave=False))

    # -- log-probabilities ---------------------------------------------------------

    def score_batch(self, texts: Sequence[str]) -> list[TokenStats]:
        """Compute :class:`TokenStats` for ``texts`` with no cache (batched forward passes)."""
        import torch

        texts = list(texts)
        if not texts:
            return []
        encoded = self._encode(texts)
        out: list[TokenStats | None] = [None] * len(texts)
        empty = _readonly(np.zeros(0))
        with torch.inference_mode():
            for batch in self._bar(
                _length_batches(
                    [len(e) for e in encoded], self.batch_size, self.batch_size * TOKENS_PER_TEXT
                ),
                "scoring",
            ):
                seqs = [encoded[i] for i in batch]
                if max(len(s) for s in seqs) < 2:
                    for i in batch:
                        out[i] = TokenStats(empty, empty, empty)
                    continue
                ids, mask = self._pad(seqs, pad_id=self._pad_id)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                # Position j predicts token j+1; score it when both are real tokens.
                valid = (mask[:, :-1] * mask[:, 1:]).bool()
                token_lp, mu, sigma = _next_token_stats(logits[:, :-1][valid], ids[:, 1:][valid])
                counts = valid.sum(-1).tolist()
                parts = zip(
                    token_lp.cpu().split(counts),
                    mu.cpu().split(counts),
                    sigma.cpu().split(counts),
                    strict=True,
                )
                for i, (lp_i, mu_i, sd_i) in zip(batch, parts, strict=True):
                    out[i] = TokenStats(_readonly(lp_i), _readonly(mu_i), _readonly(sd_i))
        return out  # type: ignore[return-value]

    def branch_logprobs(
        self,
        context: Sequence[int],
        stems: Sequence[Sequence[int]],
        branches: Sequence[Sequence[int]],
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Log-probabilities along a token tree: one cached forward per stem, not per leaf.

        For each stem ``s`` (token ids that follow ``context``) returns
        ``(path, leaves)``: ``path[j] = log p(s_j | context, s_<j)`` and
        ``leaves[b] = log p(branches[i][b] | context, s)``. The context is run
        through the model once and its key/value cache reused for every stem
        (stems of equal length share a batch), so enumerating a secret space of
        ``|R| = A^N`` candidates whose last symbol is one token costs ``A^(N-1)``
        short forwards instead of ``A^N`` full ones. The same numbers as
        :meth:`score_batch` of ``context + stem + [branch]`` up to float rounding
        (tested); the truncation to :attr:`max_length` is the caller's to check.

        Raises:
            DpauditError: an empty context, stems and branches of different
                lengths, or an empty branch list.
        """
        import copy

        import torch

        context = list(context)
        if not context:
            raise DpauditError("branch_logprobs needs at least one context token")
        if len(stems) != len(branches):
            raise DpauditError(f"{len(stems)} stems for {len(branches)} branch lists")
        if any(not b for b in branches):
            raise DpauditError("every stem needs at least one branch token")
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(stems)
        with torch.inference_mode():
            ctx = torch.tensor([context], dtype=torch.long, device=self.device)
            first = self.model(input_ids=ctx, use_cache=True)
            base_cache = _cache_of(first)
            ctx_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
            groups: dict[int, list[int]] = {}
            for i, stem in enumerate(stems):
                groups.setdefault(len(stem), []).append(i)
            for length, members in sorted(groups.items()):
                if length == 0:
                    for i in members:
                        leaves = ctx_logp[torch.tensor(list(branches[i]), device=self.device)]
                        out[i] = (_readonly(np.zeros(0)), _readonly(leaves.cpu()))
                    continue
                for lo in range(0, len(members), self.batch_size):
                    batch = members[lo : lo + self.batch_size]
                    ids = torch.tensor(
                        [list(stems[i]) for i in batch], dtype=torch.long, device=self.device
                    )
                    cache = copy.deepcopy(base_cache)
                    cache.batch_repeat_interleave(len(batch))
                    mask = torch.ones(
                        (len(batch), len(context) + length), dtype=torch.long, device=self.device
                    )
                    logp = torch.log_softmax(
                        self.model(
                            input_ids=ids,
                            attention_mask=mask,
                            use_cache=True,
                            **cache_kwargs(self.model, cache),
                        ).logits.float(),
                        dim=-1,
                    )
                    for row, i in enumerate(batch):
                        stem_ids = ids[row]
                        path = torch.cat(
                            [
                                ctx_logp[stem_ids[:1]],
                                logp[row, :-1].gather(-1, stem_ids[1:, None]).squeeze(-1),
                            ]
                        )
                        leaves = logp[row, -1][torch.tensor(list(branches[i]), device=self.device)]
                        out[i] = (_readonly(path.cpu()), _readonly(leaves.cpu()))
        return out  # type: ignore[return-value]

    def token_stats(self, texts: Sequence[str]) -> list[TokenStats]:
        """Cached :meth:`score_batch`: each distinct text is run through the model once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for text, stats in zip(missing, self.score_batch(missing), strict=True):
            self._cache[text] = stats
        return [self._cache[t] for t in texts]

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text, ``log p(x_t | x_<t)`` for t = 1..T−1 (cached, see :meth:`token_stats`)."""
        return [s.logprobs for s in self.token_stats(texts)]

    def clear_cache(self) -> None:
        """Forget cached :class:`TokenStats` (e.g. after the weights changed)."""
        self._cache.clear()

    # -- classification -------------------------------------------------------------

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        """Logits of a sequence classifier, shape ``(len(texts), num_labels)``, float64.

        Decoder classifiers (GPT-2) pool the last token that is not the
        configured pad token; without a configured pad token, texts go one at a
        time.
        """
        import torch

        texts = list(texts)
        config = getattr(self.model, "config", None)
        model_pad = getattr(config, "pad_token_id", None)
        if not texts:
            return np.zeros((0, int(getattr(config, "num_labels", 0) or 0)))
        encoded = self._encode(texts)
        if any(not e for e in encoded):
            raise PreconditionError("cannot classify an empty text (it has no tokens)")
        size = self.batch_size if model_pad is not None else 1
        pad_id = model_pad if model_pad is not None else self._pad_id
        rows: list[np.ndarray | None] = [None] * len(texts)
        with torch.inference_mode():
            for batch in self._bar(_length_batches([len(e) for e in encoded], size), "classifying"):
                ids, mask = self._pad([encoded[i] for i in batch], pad_id=pad_id)
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
                for i, row in zip(batch, logits, strict=True):
                    rows[i] = row
        return np.stack(rows).astype(np.float64)  # type: ignore[arg-type]

    # -- generation -------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 32,
        strategy: str = "greedy",
        num_beams: int = 4,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        num_return_sequences: int = 1,
        seed: int = 0,
    ) -> list[str]:
        """Decode continuations of ``prompts`` (the prompt itself is not returned).

        Prompts are left-padded and keep their last ``max_length`` tokens.
        ``greedy`` and ``beam`` are deterministic; ``sample`` draws from the
        temperature-scaled distribution, restricted by ``top_k`` / ``top_p``
        when given, under ``torch`` RNG seeded with ``seed`` (the global RNG is
        left untouched): the same prompts, seed, batch size and device give the
        same texts.

        Returns:
            ``len(prompts) * num_return_sequences`` strings, prompt-major (the
            continuations of prompt 0 first). Special tokens are skipped.
        """
        import torch

        if strategy not in GENERATION_STRATEGIES:
            raise unknown_name("generation strategy", strategy, GENERATION_STRATEGIES)
        if max_new_tokens < 1 or num_return_sequences < 1:
            raise DpauditError("max_new_tokens and num_return_sequences must be at least 1")
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "num_return_sequences": num_return_sequences,
        }
        if strategy == "greedy":
            if num_return_sequences != 1:
                raise DpauditError(
                    "greedy decoding returns one sequence; use beam or sample for more"
                )
            kwargs.update(do_sample=False, num_beams=1)
        elif strategy == "beam":
            if num_return_sequences > num_beams:
                raise DpauditError(
                    f"num_return_sequences ({num_return_sequences}) exceeds num_beams ({num_beams})"
                )
            kwargs.update(do_sample=False, num_beams=num_beams, early_stopping=True)
        else:
            if temperature <= 0:
                raise DpauditError(f"temperature must be positive, got {temperature}")
            kwargs.update(
                do_sample=True,
                num_beams=1,
                temperature=temperature,
                top_k=top_k if top_k is not None else 0,
                top_p=top_p if top_p is not None else 1.0,
            )
        eos = self.tokenizer.eos_token_id
        kwargs.update(pad_token_id=self._pad_id, eos_token_id=eos)

        prompts = list(prompts)
        encoded = self._encode(prompts, keep="end")
        if any(not e for e in encoded):
            bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else eos
            if bos is None:
                raise PreconditionError("an empty prompt needs a tokenizer with a bos or eos token")
            encoded = [e or [bos] for e in encoded]
        results: list[list[str] | None] = [None] * len(prompts)
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            for batch in self._bar(
                _length_batches([len(e) for e in encoded], self.batch_size), "generating"
            ):
                ids, mask = self._pad([encoded[i] for i in batch], pad_id=self._pad_id, left=True)
                with _quiet_generation():
                    out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
                texts = self.tokenizer.batch_decode(
                    out[:, ids.shape[1] :], skip_special_tokens=True
                )
                for j, i in enumerate(batch):
                    results[i] = texts[j * num_return_sequences : (j + 1) * num_return_sequences]
        return [text for group in results for text in group]  # type: ignore[union-attr]


@contextlib.contextmanager
def _quiet_generation() -> Iterator[None]:
    """Silence transformers' advisory generation warnings (we pass every setting explicitly)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


# -- tiny random models for tests ----------------------------------------------------


def _tiny_gpt2_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import GPT2Config

    eos = tokenizer.eos_token_id
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        eos_token_id=eos,
        **extra,
    )


def tiny_causal_lm(tokenizer: Any, seed: int = 0) -> Any:
    """A tiny random ``GPT2LMHeadModel`` (64-dim, 2 layers, untied head) for tests.

    Deterministic for a seed; the global torch RNG is left untouched.
    """
    import torch
    from transformers import GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(_tiny_gpt2_config(tokenizer)).eval()


def tiny_classifier(tokenizer: Any, num_labels: int = 2, seed: int = 0) -> Any:
    """A tiny random ``GPT2ForSequenceClassification`` for tests (pad token configured)."""
    import torch
    from transformers import GPT2ForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2ForSequenceClassification(
            _tiny_gpt2_config(tokenizer, num_labels=num_labels)
        ).eval()
