"""Gradient inversion measured: batches of real client texts × defences.

One *trial* takes B records of one client, truncated to L tokens, computes the
update the client would send for one step (FedSGD: the gradient of the mean
per-example loss, :func:`client_update`), and runs both attacks of
:mod:`dpaudit.attacks.gradient_inversion` on it with the global model. A *cell*
averages the trials of one (defence, B, L). Defences:

* ``none``: the plain gradient of every trainable parameter (full fine-tuning);
* ``dp``: each example's gradient clipped to L2 norm C over all arrays, summed,
  plus N(0, (σC)²) per coordinate, divided by B — what a client running local
  DP-SGD (or any client-side Gaussian mechanism) sends; the attacker knows σC/B
  (it is in the ledger). Central DP-FedAvg is *not* this: its server adds noise
  after seeing each clean update, so against the server it defends nothing;
* ``lora``: only LoRA adapters travel; the adapters are those of a federation
  mid-training (``B`` drawn N(0, 0.02²), seeded: at PEFT's initialisation B = 0
  and the gradient of A is exactly zero, which would flatter the defence).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dpaudit.attacks.gradient_inversion import (
    inversion_metrics,
    invert_update,
    set_metrics,
    token_set_leak,
)
from dpaudit.errors import DpauditError, PreconditionError

__all__ = ["Defence", "InversionCell", "client_update", "run_inversion_trials"]


@dataclass(frozen=True)
class Defence:
    """One defence setting: ``none``, ``dp`` (noise multiplier σ, clip C) or ``lora``."""

    name: str
    sigma: float = 0.0
    clip: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in ("none", "dp", "lora"):
            raise DpauditError(f"unknown defence {self.name!r} (none, dp, lora)")
        if self.name == "dp" and not (self.sigma >= 0 and self.clip > 0):
            raise DpauditError(f"dp defence needs σ ≥ 0 and C > 0, got {self.sigma}, {self.clip}")

    @property
    def label(self) -> str:
        if self.name == "dp":  # one step's noise: no ε is claimed for it
            return f"clip {self.clip:g} + client noise σ = {self.sigma:g}"
        return {"none": "no defence", "lora": "LoRA adapters only"}[self.name]


@dataclass(frozen=True)
class InversionCell:
    """Mean outcome of the trials of one (defence, batch size B, length L).

    Attributes:
        leak_precision, leak_recall: the token-set leak (embedding rows) against every
            token of the batch; ``None`` when the leak does not apply (``leak_note``);
            precision is averaged over the trials that recovered a token (``None``: none).
        token_precision, token_recall, rouge_l, exact_rate: the span-test
            reconstruction (:func:`~dpaudit.attacks.gradient_inversion.inversion_metrics`;
            precision as for the leak).
        no_power: trials whose layer-0 span reached the inputs' dimension (or was empty).
        stopped: trials whose search was cut by its size limit.
        mean_rank: mean layer-0 span rank; ``width``: the layer's input width d.
        tokens: mean tokens per batch.
    """

    defence: str
    label: str
    sigma: float | None
    batch_size: int
    length: int
    trials: int
    tokens: float
    leak_precision: float | None
    leak_recall: float | None
    leak_note: str | None
    token_precision: float | None
    token_recall: float
    rouge_l: float
    exact_rate: float
    no_power: int
    stopped: int
    mean_rank: float
    width: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def client_update(
    model: Any,
    batch: Sequence[Sequence[int]],
    *,
    pad_id: int,
    defence: Defence = Defence("none"),
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], float]:
    """The one-step update (gradient) a client sends for ``batch``, and its noise std.

    Returns:
        ``({parameter name: gradient array}, per-coordinate noise std)`` over the
        model's trainable parameters; the std is σC/B for ``dp``, else 0.
    """
    import torch

    from dpaudit.trainers.loop import example_losses

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise DpauditError("the model has no trainable parameters")
    model.eval()
    device = next(model.parameters()).device

    def grads(rows: Sequence[Sequence[int]]) -> dict[str, Any]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for j, row in enumerate(rows):
            ids[j, : len(row)] = torch.tensor(list(row), dtype=torch.long, device=device)
            mask[j, : len(row)] = 1
        positions = torch.arange(width, device=device).repeat(len(rows), 1)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        loss = example_losses(logits, ids.masked_fill(mask == 0, -100), "causal_lm").mean()
        return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))

    if defence.name != "dp":
        g = grads(batch)
        return {n: v.detach().double().cpu().numpy() for n, v in g.items()}, 0.0
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for row in batch:  # per-example clipping (Abadi et al. 2016, Algorithm 1)
        g = grads([row])
        norm = torch.sqrt(torch.stack([torch.sum(v.double() ** 2) for v in g.values()]).sum())
        factor = min(1.0, defence.clip / max(float(norm), 1e-12))
        for n in total:
            total[n] += g[n].double() * factor
    rng = np.random.default_rng([seed, 7])
    b = len(batch)
    update = {
        n: (t.cpu().numpy() + rng.normal(0.0, defence.sigma * defence.clip, size=tuple(t.shape)))
        / b
        for n, t in total.items()
    }
    return update, defence.sigma * defence.clip / b


def _batches(
    clients: Sequence[Sequence[Sequence[int]]], batch_size: int, length: int, trials: int, seed: int
) -> list[list[tuple[int, ...]]]:
    """``trials`` batches: B records (≥ 2 tokens, cut to ``length``) of distinct clients."""
    eligible = [
        k for k, recs in enumerate(clients) if sum(1 for r in recs if len(r) >= 2) >= batch_size
    ]
    if not eligible:
        return []
    rng = np.random.default_rng([seed, batch_size, length])
    chosen = rng.permutation(eligible)[:trials]
    out = []
    for k in chosen:
        rows = [tuple(r[:length]) for r in clients[int(k)] if len(r) >= 2]
        out.append(rows[:batch_size])
    return out


def run_inversion_trials(
    models: Mapping[str, Any],
    clients: Sequence[Sequence[Sequence[int]]],
    *,
    pad_id: int,
    defences: Sequence[Defence],
    batch_sizes: Sequence[int],
    lengths: Sequence[int],
    trials: int,
    seed: int,
    progress: bool = False,
) -> tuple[list[InversionCell], list[str]]:
    """Every (defence, B, L) cell (module docstring), and the cells that could not run.

    Args:
        models: ``{"full": model}`` and, for the ``lora`` defence, ``{"lora": peft model}``;
            both in eval mode, the global model the updates are computed from.
        clients: each client's records as token-id sequences.
        pad_id: padding token id.
        defences, batch_sizes, lengths: the grid.
        trials: batches per cell (fewer when fewer clients hold B records).
        seed: seeds the choice of clients and the DP noise.

    Returns:
        The measured cells, and one line per cell left out (no client holds B records).

    Raises:
        PreconditionError: no client holds enough records for any batch size, or the
            ``lora`` defence without a LoRA model.
    """
    from tqdm.auto import tqdm

    if any(d.name == "lora" for d in defences) and "lora" not in models:
        raise PreconditionError("the lora defence needs a LoRA model")
    grid = [(d, b, n) for d in defences for b in batch_sizes for n in lengths]
    cells: list[InversionCell] = []
    skipped: list[str] = []
    bar = tqdm(total=len(grid), desc="gradient inversion", unit="cell", disable=not progress)
    for defence, b, length in grid:
        model = models["lora" if defence.name == "lora" else "full"]
        batches = _batches(clients, b, length, trials, seed)
        rows: list[dict[str, float]] = []
        leaks: list[dict[str, float]] = []
        note = None
        no_power = stopped = 0
        ranks, tokens = [], []
        width = 0
        for t, batch in enumerate(batches):
            update, noise = client_update(
                model, batch, pad_id=pad_id, defence=defence, seed=seed * 1000 + t
            )
            leak = token_set_leak(update, model=model, noise_std=noise)
            if leak.applicable:
                leaks.append(set_metrics(batch, leak.tokens))
            else:
                note = leak.reason
            rec = invert_update(
                model, update, max_length=length, noise_std=noise, batch_size=len(batch)
            )
            rows.append(inversion_metrics(batch, rec.sequences))
            no_power += int(not rec.sequences and rec.status != "ok")
            stopped += int(rec.status.startswith("search stopped"))
            ranks.append(rec.ranks[0])
            width = rec.width
            tokens.append(sum(len(r) for r in batch))
        bar.update()
        if not rows:
            skipped.append(
                f"{defence.label}, B = {b}, L = {length}: no client holds {b} records of at "
                "least 2 tokens"
            )
            continue

        def mean(key: str, src: list[dict[str, float]] = rows) -> float:
            return float(np.mean([r[key] for r in src]))

        def precision(key: str, src: list[dict[str, float]] = rows) -> float | None:
            """Mean over the trials that recovered something (``None``: none did)."""
            values = [r[key] for r in src if not np.isnan(r[key])]
            return float(np.mean(values)) if values else None

        cells.append(
            InversionCell(
                defence=defence.name,
                label=defence.label,
                sigma=defence.sigma if defence.name == "dp" else None,
                batch_size=b,
                length=length,
                trials=len(rows),
                tokens=float(np.mean(tokens)),
                leak_precision=precision("precision", leaks) if leaks else None,
                leak_recall=mean("recall", leaks) if leaks else None,
                leak_note=note if not leaks else None,
                token_precision=precision("token_precision"),
                token_recall=mean("token_recall"),
                rouge_l=mean("rouge_l"),
                exact_rate=mean("exact_rate"),
                no_power=no_power,
                stopped=stopped,
                mean_rank=float(np.mean(ranks)),
                width=width,
            )
        )
    bar.close()
    if not cells:
        raise PreconditionError(
            f"no client holds {min(batch_sizes)} records of at least 2 tokens: no batch to invert"
        )
    return cells, skipped
