"""Gradient inversion on text: what one client's update reveals about its records.

Threat model. An honest-but-curious server, or anyone who reads the channel, sees
one client's update and knows the global model θ it was computed from (the server
sent it). The update is a FedSGD gradient g = ∇_θ (1/B) Σ_b ℓ_b(θ) of the mean
per-example loss over the client's batch of B texts (``ℓ_b`` the mean token loss
of text b), or a FedAvg update θ_k − θ, which after one local step is −η·g. The span
test and the token-set leak do not depend on scale or sign, and the last-token
step fits a scale (with its sign) per text, so either serves.

1. **Token-set leak** (:func:`token_set_leak`). An input embedding row is read only
   by the tokens that occur in the batch, so its gradient is non-zero exactly for
   those tokens (Melis, Song, De Cristofaro, Shmatikov 2019, "Exploiting Unintended
   Feature Leakage in Collaborative Learning", IEEE S&P, §5.1, "the non-zero
   gradients of the embedding layer reveal which words appear in the batch").
   Exact for an untied input embedding; with tied input/output embeddings
   (``tie_word_embeddings = True``, e.g. SmolLM2) the output layer writes to every row and the leak does not apply. The
   last token of a text feeds no counted prediction (causal LM: its logits predict
   nothing), so its row is read but receives no gradient unless the token also
   occurs earlier. Under DP noise N(0, s²) per coordinate, a row of pure noise has
   norm about s·√d; rows above s·(√d + 4) are kept (a one-sided χ tail bound an
   attacker who knows s — it is in the ledger — would use).

2. **Span test** (:func:`invert_update`; Petrov, Dimitrov, Baader, Müller, Vechev
   2024, "DAGER: Exact Gradient Inversion for Large Language Models", NeurIPS,
   §3 Lemma 3.1 and §4 Algorithm 1). A linear layer y_t = W x_t applied to every
   token position t has ∂L/∂W = Σ_t δ_t x_tᵀ: its rows (``nn.Linear``; columns for
   GPT-2's ``Conv1D``) lie in span{x_t}, a proper subspace when the batch holds
   fewer than d token positions (d the layer's input width). A candidate input x
   was in the batch iff it lies in that span (residual ‖x − Pₛx‖/‖x‖ ≈ 0, Pₛ the
   projection). Layer 0 (the first block's query/QKV projection) receives
   LN(e_v + p_i) for token v at position i: testing every (v, i) recovers the
   tokens at each position (for rotary models, without positions: the token set).
   Layer 1 receives a function of the whole prefix, so sequences are grown one
   token at a time and an extension is kept iff its layer-1 input lies in the
   layer-1 span (DAGER §4.2, decoder search). The last token of each text, again,
   enters no counted prediction; with an untied output layer whose gradient is in
   the update it is read off the output layer (:func:`_complete_last_tokens`): the
   gradient of ``lm_head`` minus what the recovered prefixes explain is
   −Σ_b w_b e_{y_b} h_bᵀ, so y_b = argmax_v ⟨−R_v, h_b⟩ (h_b the final hidden state
   of b's recovered prefix; the same bookkeeping as iDLG's label recovery, Zhao,
   Mopuri, Bilen 2020, §3). Under DP noise the span is estimated from the
   singular directions above the noise edge s·(√m + √k) (the largest singular
   value of an m × k Gaussian matrix, Marchenko–Pastur / Gordon's inequality);
   as s grows true inputs leave the estimated span and recall falls.

LoRA. With LoRA only the adapters travel: no embedding rows (no token-set leak)
and, for the span, ∂L/∂A = s·Bᵀ Σ_t δ_t x_tᵀ, whose r rows span at most r
directions of span{x_t}: when B·n > r the test loses tokens, and with the
adapter's B still zero (its initialisation) the gradient of A is zero.

Metrics (:func:`inversion_metrics`): token precision and recall of the recovered
token set against the batch's tokens; ROUGE-L F1 (Lin 2004, "ROUGE: A Package for
Automatic Evaluation of Summaries", §3: F from the longest common subsequence, here
over token ids, β = 1) of each true text against its best recovered sequence,
averaged over texts; exact recovery rate (texts recovered token for token).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpaudit.errors import DpauditError, PreconditionError

__all__ = [
    "Reconstruction",
    "SpanProbe",
    "TokenSetLeak",
    "find_probes",
    "invert_update",
    "inversion_metrics",
    "rouge_l",
    "set_metrics",
    "span_basis",
    "token_set_leak",
]

_PROBE = re.compile(
    r"^(?P<module>(?:.*\.)?(?:h|layers)\.(?P<layer>\d+)\."
    r"(?:attn\.c_attn|self_attn\.[qkv]_proj))"
    r"(?:\.base_layer)?\.(?P<kind>weight|lora_A\.[\w-]+\.weight)$"
)
_EMBEDDING = re.compile(r"(?:^|\.)(?:wte|embed_tokens)\.weight$")
_LM_HEAD = re.compile(r"(?:^|\.)lm_head\.weight$")
_COMPLETION_LIMIT = 50_000_000  # output-layer entries × texts the last-token fit may hold
_TAIL = 4.0  # noise rows: ‖noise row‖ ≤ s(√d + 4) but for a χ tail of about e^{-8}


class _Captured(Exception):
    """Stops a forward pass once the probed input has been captured."""


@dataclass(frozen=True)
class SpanProbe:
    """Where a layer's span comes from.

    Attributes:
        layer: transformer block index.
        params: ``(update key, rows)`` of each projection that reads the block's
            attention input: GPT-2's fused ``c_attn``, or Llama's ``q_proj``, ``k_proj``
            and ``v_proj`` (or their LoRA ``A``). ``rows``: the gradient's rows lie in
            span{x_t} (``nn.Linear`` weight ``(out, in)``, LoRA ``A`` ``(r, in)``);
            ``False``: its columns (GPT-2 ``Conv1D`` ``(in, out)``). All of them are
            used: a query alone misses the first position (its attention weight is
            the constant 1, so its query gets no gradient).
        module: a module whose input is x_t (its forward pre-hook sees x_t).
    """

    layer: int
    params: tuple[tuple[str, bool], ...]
    module: str


@dataclass(frozen=True)
class TokenSetLeak:
    """Outcome of :func:`token_set_leak`.

    Attributes:
        tokens: token ids whose embedding row the update changed.
        threshold: the row-norm threshold used (0 = any non-zero row).
        applicable: ``False`` when the update carries no untied input embedding.
        reason: why it does not apply, else ``None``.
    """

    tokens: frozenset[int]
    threshold: float
    applicable: bool
    reason: str | None = None


@dataclass(frozen=True)
class Reconstruction:
    """Outcome of :func:`invert_update`.

    Attributes:
        sequences: recovered token sequences (each a tuple of ids), in search order.
        token_set: every token the layer-0 span test accepted at some position.
        ranks: estimated span dimension per probed layer (d = ``width`` means no power).
        width: the probed layers' input width d.
        last_token: how final tokens were found: ``output-layer`` or ``not recovered``.
        status: ``ok``, or why the search stopped early (then ``sequences`` is partial).
        residuals: the largest accepted and the smallest rejected layer-0 residual
            (the gap an attacker tunes ``tau`` by); diagnostic only.
    """

    sequences: tuple[tuple[int, ...], ...]
    token_set: frozenset[int]
    ranks: tuple[int, ...]
    width: int
    last_token: str
    status: str
    residuals: tuple[float, float] = field(default=(math.nan, math.nan), compare=False)


# ----------------------------------------------------------------------------- spans


def find_probes(model: Any, keys: Sequence[str]) -> list[SpanProbe]:
    """The span probes an update with ``keys`` offers, by layer (first QKV/query projection).

    Keys are the model's parameter names (``named_parameters``), as a Flower
    ``ArrayRecord`` of trainable arrays carries them. A LoRA ``A`` is preferred to
    a frozen base weight (only one of them is in a LoRA update anyway).
    """
    modules = dict(model.named_modules())
    found: dict[int, dict[str, tuple[str, bool]]] = {}
    lora_layers: set[int] = set()
    module_of: dict[int, str] = {}
    for key in keys:
        m = _PROBE.match(key)
        if not m or m.group("module") not in modules:
            continue
        layer = int(m.group("layer"))
        module = modules[m.group("module")]
        lora = m.group("kind").startswith("lora_A")
        conv1d = type(getattr(module, "base_layer", module)).__name__ == "Conv1D"
        if lora and layer not in lora_layers:  # a LoRA update: its A matrices only
            found[layer] = {}
            lora_layers.add(layer)
        elif not lora and layer in lora_layers:
            continue
        found.setdefault(layer, {})[key] = (key, lora or not conv1d)
        module_of.setdefault(layer, m.group("module"))
    return [
        SpanProbe(k, tuple(found[k][key] for key in sorted(found[k])), module_of[k])
        for k in sorted(found)
    ]


def _layer_basis(
    update: Mapping[str, np.ndarray], probe: SpanProbe, noise_std: float
) -> np.ndarray:
    """:func:`span_basis` of every projection of ``probe`` together (columns side by side)."""
    cols = []
    for key, rows in probe.params:
        g = np.asarray(update[key], dtype=np.float64)
        cols.append(g.T if rows else g)
    return span_basis(np.concatenate(cols, axis=1), rows=False, noise_std=noise_std)


def span_basis(
    gradient: np.ndarray, *, rows: bool, noise_std: float = 0.0, rtol: float = 1e-4
) -> np.ndarray:
    """Orthonormal basis ``(d, r)`` of the input span a weight gradient reveals (DAGER Lemma 3.1).

    Args:
        gradient: the weight's gradient (or update), 2-D.
        rows: the span lies in its rows (else its columns).
        noise_std: per-coordinate std of Gaussian noise added to ``gradient`` (0 = none):
            directions whose singular value is below the noise edge s(√m + √k) are dropped.
        rtol: without noise, singular values below ``rtol`` × the largest are numerical zero.
    """
    m = np.asarray(gradient, dtype=np.float64)
    if m.ndim != 2:
        raise DpauditError(f"span_basis needs a 2-D gradient, got shape {m.shape}")
    m = m.T if rows else m  # (d, k): columns in span{x_t}
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return np.zeros((m.shape[0], 0))
    if noise_std > 0:
        cut = 1.05 * noise_std * (math.sqrt(m.shape[0]) + math.sqrt(m.shape[1]))
    else:
        cut = rtol * s[0]
    return np.asarray(u[:, s > cut])


def _residuals(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """‖x − QQᵀx‖ / ‖x‖ per row of ``x`` ``(n, d)``."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1)
    if basis.shape[1] == 0:
        return np.ones(len(x))
    rest = np.linalg.norm(x - (x @ basis) @ basis.T, axis=1) / np.maximum(norm, 1e-30)
    # an input of (almost) zero norm, e.g. a padding_idx embedding, lies in every span: reject
    return np.where(norm > 1e-6 * max(float(norm.max()), 1e-30), rest, 1.0)


def _probe_inputs(model: Any, module_name: str, input_ids: Any, at: Any = None) -> Any:
    """The input of ``module_name`` for ``input_ids`` ``(n, L)``, stopping the forward there.

    Returns ``(n, L, d)``, or ``(n, d)`` at position ``at`` when given.
    """
    import torch

    module = dict(model.named_modules())[module_name]
    captured: list[Any] = []

    def hook(_mod: Any, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach())
        raise _Captured

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    except _Captured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise DpauditError(f"{module_name} was not reached by the forward pass")
    x = captured[0].float()
    return x if at is None else x[:, at]


# ----------------------------------------------------------------------------- attacks


def token_set_leak(
    update: Mapping[str, np.ndarray], *, model: Any = None, noise_std: float = 0.0
) -> TokenSetLeak:
    """Token ids whose input-embedding row the update changed (module docstring, item 1).

    Args:
        update: the client's update or gradient, by parameter name.
        model: the global model, to tell whether input and output embeddings are tied
            (``None``: assumed untied).
        noise_std: per-coordinate std of DP noise in ``update`` (0 = none).
    """
    key = next((k for k in update if _EMBEDDING.search(k)), None)
    if key is None:
        return TokenSetLeak(frozenset(), 0.0, False, "the update carries no input embedding")
    if model is not None and _tied(model):
        return TokenSetLeak(
            frozenset(),
            0.0,
            False,
            "input and output embeddings are tied: the output layer's gradient changes every row",
        )
    rows = np.linalg.norm(np.asarray(update[key], dtype=np.float64), axis=1)
    d = int(np.asarray(update[key]).shape[1])
    threshold = noise_std * (math.sqrt(d) + _TAIL) if noise_std > 0 else 0.0
    return TokenSetLeak(
        frozenset(int(v) for v in np.flatnonzero(rows > threshold)), threshold, True
    )


def _tied(model: Any) -> bool:
    get_in, get_out = (
        getattr(model, "get_input_embeddings", None),
        getattr(model, "get_output_embeddings", None),
    )
    if get_in is None or get_out is None or get_out() is None:
        return False
    return bool(get_in().weight is get_out().weight)


def invert_update(
    model: Any,
    update: Mapping[str, np.ndarray],
    *,
    max_length: int,
    noise_std: float = 0.0,
    tau: float = 1e-2,
    noise_ratio: float = 0.35,
    max_pairs: int = 50_000,
    vocab_chunk: int = 1024,
    batch_size: int | None = None,
) -> Reconstruction:
    """Recover the batch's texts from one update by the span test (module docstring, item 2).

    Args:
        model: the global model the update was computed from (eval mode; CPU or GPU).
        update: gradient or update arrays by parameter name (must hold the first two
            blocks' query/QKV projection or their LoRA ``A``).
        max_length: longest text to search for (the training ``max_length``).
        noise_std: per-coordinate std of DP noise in the update (0 = none).
        tau: residual below which a candidate is in the span.
        noise_ratio: with noise, a candidate is also kept when its residual is below this
            fraction of the median residual of the null (every vocabulary token at the
            position; at layer 1, the prefix extended by 64 random tokens): noise tilts the
            estimated span, so true inputs keep a residual well above ``tau`` but still far
            below a random input's (an attacker's heuristic, tuned on the quickstart model).
        max_pairs: stop the search (status says so) rather than test more
            (prefix, token) extensions than this at one position.
        vocab_chunk: candidate tokens per layer-0 forward.
        batch_size: B when known (the last-token completion weights each text 1/(B·n_b));
            ``None`` = the number of recovered sequences.

    Returns:
        The recovered sequences and token set, the span ranks, and a status.

    Raises:
        PreconditionError: the update holds no probe for layers 0 and 1.
    """
    import torch

    probes = find_probes(model, list(update))
    if len(probes) < 2 or probes[0].layer != 0 or probes[1].layer != 1:
        raise PreconditionError(
            "gradient inversion needs the first two blocks' query/QKV projection (or their "
            "LoRA A) in the update"
        )
    bases = [_layer_basis(update, p, noise_std) for p in probes[:2]]
    width = bases[0].shape[0]
    ranks = tuple(b.shape[1] for b in bases)
    device = next(model.parameters()).device
    vocab = int(model.get_input_embeddings().weight.shape[0])
    if ranks[0] == 0:
        return Reconstruction((), frozenset(), ranks, width, "not recovered", "empty span")
    # Layer 0: every (token, position) input, from constant sequences.
    accepted: list[set[int]] = [set() for _ in range(max_length)]
    positional = True
    res0 = np.ones((max_length, vocab))
    for start in range(0, vocab, vocab_chunk):
        ids = torch.arange(start, min(vocab, start + vocab_chunk), device=device)
        seq = ids[:, None].expand(-1, max_length)
        x = _probe_inputs(model, probes[0].module, seq).cpu().numpy()  # (n, L, d)
        if start == 0:
            if max_length > 1 and np.allclose(x[:, 0], x[:, 1], atol=1e-6):
                positional = False  # rotary: position-free inputs at layer 0
            # The inputs themselves may span fewer than d directions (a fresh LayerNorm's
            # outputs have zero mean: d − 1); a span of that rank contains every input.
            sv = np.linalg.svd(x[:, 0].astype(np.float64), compute_uv=False)
            reachable = int(np.sum(sv > 1e-4 * sv[0]))
            if ranks[0] >= reachable:
                return Reconstruction(
                    (),
                    frozenset(),
                    ranks,
                    width,
                    "not recovered",
                    f"the layer-0 span's rank {ranks[0]} reaches the inputs' {reachable} "
                    "dimensions (too many tokens in the batch, or noise): the test has no power",
                )
        for i in range(max_length if positional else 1):
            res0[i, start : start + len(ids)] = _residuals(x[:, i], bases[0])
    worst_in, best_out = 0.0, math.inf
    for i in range(max_length if positional else 1):
        cut = _threshold(tau, noise_std, noise_ratio, res0[i])
        keep = res0[i] < cut
        if keep.any():
            worst_in = max(worst_in, float(res0[i][keep].max()))
        if (~keep).any():
            best_out = min(best_out, float(res0[i][~keep].min()))
        accepted[i] = {int(v) for v in np.flatnonzero(keep)}
    if not positional:
        accepted = [set(accepted[0]) for _ in range(max_length)]
    token_set = frozenset().union(*accepted)
    gap = (worst_in, best_out)
    if not accepted[0]:
        return Reconstruction(
            (), token_set, ranks, width, "not recovered", "no token at position 0", gap
        )
    # Layer 1: grow prefixes one token at a time.
    alive: list[tuple[int, ...]] = [(v,) for v in sorted(accepted[0])]
    done: list[tuple[int, ...]] = []
    status = "ok"
    for i in range(1, max_length):
        if not alive:
            break
        cands = sorted(accepted[i])
        pairs = [p + (v,) for p in alive for v in cands]
        if not cands:
            done += alive
            alive = []
            break
        if len(pairs) > max_pairs:
            status = f"search stopped at position {i}: {len(pairs)} candidate extensions"
            done += alive
            alive = []
            break
        cut = tau
        if noise_std > 0:  # the null: the first prefix extended by random tokens
            rng = np.random.default_rng([i, len(alive)])
            null = [alive[0] + (int(v),) for v in rng.integers(0, vocab, size=64)]
            x = _probe_inputs(model, probes[1].module, torch.tensor(null, device=device), at=i)
            cut = _threshold(tau, noise_std, noise_ratio, _residuals(x.cpu().numpy(), bases[1]))
        keep_pairs: list[tuple[int, ...]] = []
        for chunk in range(0, len(pairs), 512):
            part = pairs[chunk : chunk + 512]
            seq = torch.tensor(part, device=device)
            x = _probe_inputs(model, probes[1].module, seq, at=i).cpu().numpy()
            res = _residuals(x, bases[1])
            keep_pairs += [p for p, r in zip(part, res, strict=True) if r < cut]
        extended = {p[:-1] for p in keep_pairs}
        done += [p for p in alive if p not in extended]
        alive = keep_pairs
    done += alive
    sequences = tuple(done)
    how = "not recovered"
    head = next((k for k in update if _LM_HEAD.search(k)), None)
    if head is not None and sequences and not _tied(model) and noise_std == 0:
        if np.asarray(update[head]).size * len(sequences) > _COMPLETION_LIMIT:
            how = "not recovered (the output-layer fit would hold too many copies of it)"
        else:
            sequences = _complete_last_tokens(
                model, np.asarray(update[head]), sequences, batch_size or len(sequences)
            )
            how = "output-layer"
    return Reconstruction(sequences, token_set, ranks, width, how, status, gap)


def _threshold(tau: float, noise_std: float, ratio: float, null: np.ndarray) -> float:
    """``tau``, or under noise ``ratio`` × the null's median residual when that is larger."""
    if noise_std <= 0 or null.size == 0:
        return tau
    return max(tau, ratio * float(np.median(null)))


def _complete_last_tokens(
    model: Any, head_grad: np.ndarray, prefixes: tuple[tuple[int, ...], ...], batch_size: int
) -> tuple[tuple[int, ...], ...]:
    """Append each prefix's final token, read off the output layer's gradient (module docstring).

    dpaudit's loss is the mean over texts of each text's mean token loss, so text b
    (n_b tokens, n_b − 1 predictions) enters ∂L/∂W_out with weight w_b = 1/(B (n_b − 1)).
    """
    import torch

    device = next(model.parameters()).device
    g = np.asarray(head_grad, dtype=np.float64)
    known, finals = [], []
    for prefix in prefixes:
        n = len(prefix) + 1
        w = 1.0 / (batch_size * (n - 1))
        with torch.no_grad():
            out = model(input_ids=torch.tensor([prefix], device=device), output_hidden_states=True)
        h = out.hidden_states[-1][0].double().cpu().numpy()  # (n − 1, d): inputs to lm_head
        p = torch.softmax(out.logits[0].double(), dim=-1).cpu().numpy()  # (n − 1, V)
        labels = np.zeros_like(p)
        labels[np.arange(n - 2), np.asarray(prefix[1:], dtype=int)] = 1.0  # known targets
        known.append(w * (p - labels).T @ h)  # what the prefix explains of G = Σ w (p − e_y) hᵀ
        finals.append(h[-1])
    # Each text's gradient may have been scaled (per-example clipping): fit G ≈ Σ_b c_b K_b by
    # least squares (only B rows of G carry the unknown final labels), then
    # R = Σ_b c_b K_b − G = Σ_b c_b w_b e_{y_b} h_bᵀ over the unknown final targets y_b.
    design = np.stack([k.ravel() for k in known], axis=1)
    scale, *_ = np.linalg.lstsq(design, g.ravel(), rcond=None)
    residual = (design @ scale).reshape(g.shape) - g
    # A FedAvg-style update θ_k − θ = −ηg fits with c_b < 0: the sign of c_b orients the rows.
    return tuple(
        (*prefix, int(np.argmax(np.sign(c) * (residual @ h_last))))
        for prefix, h_last, c in zip(prefixes, finals, scale, strict=True)
    )


# ----------------------------------------------------------------------------- metrics


def rouge_l(reference: Sequence[int], candidate: Sequence[int]) -> float:
    """ROUGE-L F1 (β = 1) of two token sequences (Lin 2004, §3, Eqs. 2–4)."""
    a, b = list(reference), list(candidate)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    recall, precision = lcs / len(a), lcs / len(b)
    return 2 * recall * precision / (recall + precision)


def set_metrics(
    truth: Sequence[Sequence[int]], tokens: frozenset[int] | set[int]
) -> dict[str, float]:
    """Precision and recall of a recovered token set against every token of ``truth``.

    Precision is NaN (undefined) when nothing was recovered; recall then shows the loss.
    """
    true_tokens = {t for seq in truth for t in seq}
    hits = len(true_tokens & set(tokens))
    return {
        "precision": hits / len(tokens) if tokens else math.nan,
        "recall": hits / len(true_tokens) if true_tokens else 1.0,
    }


def inversion_metrics(
    truth: Sequence[Sequence[int]], recovered: Sequence[Sequence[int]]
) -> dict[str, float]:
    """Token precision/recall of the recovered sequences' tokens, mean best ROUGE-L F1 of
    each true text, and the exact recovery rate (texts recovered token for token)."""
    tokens = {t for seq in recovered for t in seq}
    sets = set_metrics(truth, tokens)
    best = [max((rouge_l(t, r) for r in recovered), default=0.0) for t in truth]
    recovered_set = {tuple(r) for r in recovered}
    exact = [tuple(t) in recovered_set for t in truth]
    return {
        "token_precision": float(sets["precision"]),
        "token_recall": float(sets["recall"]),
        "rouge_l": float(np.mean(best)) if best else 0.0,
        "exact_rate": float(np.mean(exact)) if exact else 0.0,
    }
