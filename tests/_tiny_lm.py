"""Tiny causal-LM helpers shared by the attack tests: distinct template texts and a plain overfit loop."""

from __future__ import annotations

import numpy as np
import torch

FIRST = ("Alice", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas")
LAST = ("Smith", "Okafor", "Novak", "Garcia", "Tanaka", "Muller", "Rossi", "Silva")
CITY = ("Paris", "Lagos", "Osaka", "Berlin", "Lima", "Oslo", "Cairo", "Quebec")
DAY = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def make_texts(n: int, seed: int) -> list[str]:
    """Distinct short texts of one template (names, cities, random amounts)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        text = (
            f"{rng.choice(FIRST)} {rng.choice(LAST)} from {rng.choice(CITY)} paid "
            f"{rng.integers(100, 9999)} EUR on {rng.choice(DAY)}, ref {rng.integers(1000, 99999)}."
        )
        if text not in out:
            out.append(text)
    return out


def overfit(model, tok, texts: list[str], *, steps: int, lr: float = 3e-3, seed: int = 0):
    """Plain full-batch AdamW on the causal-LM loss (padding ignored), seeded."""
    torch.manual_seed(seed)
    enc = tok(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()
