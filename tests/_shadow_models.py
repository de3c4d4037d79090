"""Shared test fixtures for the reference-model attacks (LiRA, RMIA).

:func:`shadow_setup` trains, once per test session, a tiny GPT-2 target on a
random half of 60 short texts and K = 4 tiny GPT-2 reference models, each on
a random half too (every text is IN for exactly 2 references, as in LiRA's
``keep`` construction); 30 more texts from the same generator form the RMIA
population, which no model trains on. :class:`StubModel` is a
:class:`~dpaudit.attacks.scoring.ScoringModel` with fixed outputs, for
testing the attacks' plumbing without training anything.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dpaudit.attacks.scoring import HFScoringModel, tiny_causal_lm, tiny_classifier
from dpaudit.datasets.records import Record
from dpaudit.datasets.tokenizer import train_bpe_tokenizer

N_EXAMPLES = 60
N_POPULATION = 30
K_REFERENCES = 4
STEPS = 20

_NAMES = ("Ada", "Bela", "Chen", "Dara", "Emil", "Fatou", "Goran", "Hana", "Ivo", "Juno", "Kemal")
_ITEMS = ("lamp", "bicycle", "kettle", "violin", "tent", "camera", "sofa", "printer", "drill")
_TOWNS = ("Turin", "Accra", "Hanoi", "Bergen", "Quito", "Perth", "Riga", "Dakar")
_MONTHS = ("March", "April", "June", "July", "October", "December")


def make_texts(n: int, seed: int) -> list[str]:
    """``n`` distinct short texts from a fixed template with random slots."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        text = (
            f"{rng.choice(_NAMES)} sold a {rng.choice(_ITEMS)} in {rng.choice(_TOWNS)} "
            f"for {rng.integers(10, 999)} dollars in {rng.choice(_MONTHS)}, "
            f"order {rng.integers(1000, 99999)}."
        )
        if text not in out:
            out.append(text)
    return out


def train_lm(
    model,
    tok,
    texts: Sequence[str],
    *,
    labels: Sequence[int] | None = None,
    steps: int = STEPS,
    lr: float = 3e-3,
    seed: int = 0,
):
    """Full-batch AdamW on one thread (faster than several on a busy small machine).

    A causal LM when ``labels`` is None, else a sequence classifier.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        enc = tok(list(texts), padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        target = ids.masked_fill(mask == 0, -100) if labels is None else torch.tensor(list(labels))
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def half_membership(n: int, k: int, seed: int) -> np.ndarray:
    """``(n, k)`` bool: each row IN for exactly ``k // 2`` models chosen at random."""
    rng = np.random.default_rng(seed)
    ranks = rng.random((n, k)).argsort(axis=1).argsort(axis=1)
    return ranks < k // 2


def adapter(model, tok) -> HFScoringModel:
    return HFScoringModel(model, tok, device="cpu", batch_size=64, progress=False)


@dataclass(frozen=True)
class ShadowSetup:
    """A target, K references and their ground truth (see the module docstring)."""

    tok: object
    examples: tuple[Record, ...]
    is_member: np.ndarray
    population: tuple[Record, ...]
    target_model: object
    reference_models: tuple[object, ...]
    ref_membership: np.ndarray

    def target(self) -> HFScoringModel:
        """A fresh adapter over the target (its own cache)."""
        return adapter(self.target_model, self.tok)

    def references(self) -> list[HFScoringModel]:
        """Fresh adapters over the references."""
        return [adapter(m, self.tok) for m in self.reference_models]


@functools.lru_cache(maxsize=2)
def shadow_setup(steps: int = STEPS, classifier: bool = False) -> ShadowSetup:
    """Train the target and references once per session.

    About 10 s on 2 CPU cores for the causal LMs (20 steps each). With
    ``classifier``, 4-label GPT-2 classifiers learn random labels instead
    (every record carries its label); they need more steps to memorise.
    """
    texts = make_texts(N_EXAMPLES + N_POPULATION, seed=11)
    labels = np.random.default_rng(14).integers(0, 4, size=len(texts)) if classifier else None
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    example_texts, population_texts = texts[:N_EXAMPLES], texts[N_EXAMPLES:]
    rng = np.random.default_rng(12)
    is_member = np.zeros(N_EXAMPLES, dtype=bool)
    is_member[rng.permutation(N_EXAMPLES)[: N_EXAMPLES // 2]] = True
    membership = half_membership(N_EXAMPLES, K_REFERENCES, seed=13)

    def fit(train: np.ndarray, seed: int):
        chosen = np.flatnonzero(train)
        texts_ = [example_texts[i] for i in chosen]
        if labels is None:
            return train_lm(tiny_causal_lm(tok, seed=seed), tok, texts_, steps=steps, seed=seed)
        model = tiny_classifier(tok, num_labels=4, seed=seed)
        return train_lm(model, tok, texts_, labels=labels[chosen].tolist(), steps=steps, seed=seed)

    def record(prefix: str, i: int, text: str, offset: int) -> Record:
        label = None if labels is None else int(labels[offset + i])
        return Record(f"{prefix}-{i:03d}", text, label=label)

    target = fit(is_member, seed=100)
    references = tuple(fit(membership[:, k], seed=200 + k) for k in range(K_REFERENCES))
    return ShadowSetup(
        tok=tok,
        examples=tuple(record("x", i, t, 0) for i, t in enumerate(example_texts)),
        is_member=is_member,
        population=tuple(record("z", i, t, N_EXAMPLES) for i, t in enumerate(population_texts)),
        target_model=target,
        reference_models=references,
        ref_membership=membership,
    )


class StubModel:
    """A :class:`~dpaudit.attacks.scoring.ScoringModel` with fixed outputs per text.

    Args:
        logprobs: text → token log-probabilities.
        logits: text → classifier logits.
    """

    def __init__(
        self,
        logprobs: Mapping[str, Sequence[float]] | None = None,
        logits: Mapping[str, Sequence[float]] | None = None,
    ):
        self._logprobs = {t: np.asarray(v, dtype=np.float64) for t, v in (logprobs or {}).items()}
        self._logits = {t: np.asarray(v, dtype=np.float64) for t, v in (logits or {}).items()}

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self._logprobs[t] for t in texts]

    def token_stats(self, texts):  # pragma: no cover - not used by LiRA / RMIA
        raise NotImplementedError

    def generate(self, prompts, **decoding):  # pragma: no cover - not used by LiRA / RMIA
        raise NotImplementedError

    def classify(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._logits[t] for t in texts])
