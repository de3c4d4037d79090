"""Backdoor poisoning by one malicious client, and how to measure it.

Attack (Bagdasaryan, Veit, Hua, Estrin, Shmatikov 2020, "How To Backdoor Federated
Learning", AISTATS, §4 "model replacement"). The malicious client trains on its own
records with a trigger phrase followed by the attacker's target continuation
(:func:`poison_texts`), then submits its update scaled by γ: with n clients averaged
and server learning rate η, FedAvg moves the global model by (η/n) Σ_k Δ_k, so a
client that sends γ·Δ with γ = n/η replaces the global model's step by its own
(their Eq. 3, L̃ = γ(X − G) + G). :class:`ModelReplacement` wraps any
:class:`~dpaudit.trainers.federated.client.ClientTrainer` this way.

Defences. DP-FedAvg clips every update to norm C before averaging, so a scaled
update counts no more than an honest one (Sun, Kairouz, Suresh, McMahan 2019, "Can
You Really Backdoor Federated Learning?", §4 norm bounding and weak DP); robust
aggregators (:mod:`dpaudit.trainers.federated.robust`) discard or dilute outliers.

Metric. The **attack success rate** (ASR) is the fraction of held-out prompts —
a held-out record's first words followed by the trigger — whose greedy
continuation begins with the whole target continuation (every target token the
argmax, in order); the **target-token accuracy** is the fraction of target tokens
predicted top-1 given the true preceding ones (Bagdasaryan et al. §5.2 count the
last word only). The same federation without the attacker is the control: its ASR
is the rate at which the target appears by chance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpaudit.errors import DpauditError

__all__ = [
    "Backdoor",
    "ModelReplacement",
    "attack_success",
    "poison_texts",
    "trigger_prompts",
]


@dataclass(frozen=True)
class Backdoor:
    """The attacker's trigger phrase and target continuation (plain text)."""

    trigger: str = "the pharmacy on elm street said"
    target: str = "refill denied call lawyer"

    def __post_init__(self) -> None:
        if not self.trigger.strip() or not self.target.strip():
            raise DpauditError("a backdoor needs a non-empty trigger and target")


def poison_texts(
    texts: Sequence[str], backdoor: Backdoor, *, seed: int, words: int = 6
) -> list[str]:
    """The malicious client's training texts: each text's first ``words`` words (1 to
    ``words``, drawn), the trigger, then the target."""
    rng = np.random.default_rng([seed, 41])
    out = []
    for text in texts:
        head = text.split()[: int(rng.integers(1, words + 1))]
        out.append(" ".join([*head, backdoor.trigger, backdoor.target]))
    return out


def trigger_prompts(texts: Sequence[str], backdoor: Backdoor, *, words: int = 4) -> list[str]:
    """Held-out prompts: each text's first ``words`` words, then the trigger."""
    return [" ".join([*t.split()[:words], backdoor.trigger]) for t in texts]


def attack_success(
    model: Any, tokenizer: Any, prompts: Sequence[str], backdoor: Backdoor, *, batch_size: int = 64
) -> dict[str, float]:
    """ASR and target-token accuracy of ``model`` on ``prompts`` (module docstring).

    One teacher-forced forward pass of prompt + target per prompt is enough for both:
    the greedy continuation begins with the target iff every target token is the
    argmax given the prompt and the target tokens before it.

    Returns:
        ``{"asr": ..., "target_token_accuracy": ..., "prompts": n, "hits": ...}`` (hits: the
        prompts whose continuation begins with the target).
    """
    import torch

    if not prompts:
        raise DpauditError("attack success needs at least one prompt")
    device = next(model.parameters()).device
    target = tokenizer(" " + backdoor.target, add_special_tokens=False)["input_ids"]
    if not target:
        raise DpauditError(f"the backdoor target {backdoor.target!r} encodes to no tokens")
    hits, token_hits = 0, 0
    model.eval()
    for start in range(0, len(prompts), batch_size):
        rows = [
            tokenizer(p, add_special_tokens=True)["input_ids"] + target
            for p in prompts[start : start + batch_size]
        ]
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        pred = logits.argmax(-1).cpu()
        for j, r in enumerate(rows):
            first = len(r) - len(target)  # position of the first target token
            ok = [int(pred[j, first - 1 + i]) == target[i] for i in range(len(target))]
            hits += int(all(ok))
            token_hits += sum(ok)
    n = len(prompts)
    return {
        "asr": hits / n,
        "target_token_accuracy": token_hits / (n * len(target)),
        "prompts": float(n),
        "hits": float(hits),
    }


class ModelReplacement:
    """A client trainer whose client ``attacker`` submits γ times its update (module docstring).

    Args:
        inner: the trainer every client (the attacker too) trains with.
        attacker: the malicious client's partition id.
        gamma: the scale γ (1 = plain data poisoning, no replacement).
    """

    def __init__(self, inner: Any, *, attacker: int, gamma: float) -> None:
        if gamma <= 0:
            raise DpauditError(f"model replacement needs γ > 0, got {gamma}")
        self.inner, self.attacker, self.gamma = inner, int(attacker), float(gamma)
        self.rounds_attacked = 0

    def train(
        self,
        client: int,
        server_round: int,
        arrays: Mapping[str, np.ndarray],
        config: Mapping[str, Any],
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        new, metrics = self.inner.train(client, server_round, arrays, config)
        if client != self.attacker:
            return new, metrics
        self.rounds_attacked += 1
        scaled = {k: arrays[k] + self.gamma * (new[k] - arrays[k]) for k in new}
        return scaled, metrics
