"""Update-canary clients: the client-level one-run audit's canaries (Andrew et al. 2024).

Canary client k never trains: in every round it joins, it returns θ_t + c·u_k,
where u_k is a fixed random unit direction of the flattened trainable parameters
(seeded by ``(seed, k)``) and c its norm (the clipping norm C: the largest
contribution DP-FedAvg lets one client make). Each canary joins the population
by a fair coin (``included``), drawn before training; an excluded canary does
not exist for the federation. After training, canary k's score is
⟨θ_T − θ_0, u_k⟩: a client that took part pushed the model along its direction in
every round it was sampled. High-dimensional random directions are nearly
orthogonal to each other and to real updates, so a non-private federation
separates included from excluded canaries almost perfectly, while the noise of
DP-FedAvg hides them to the extent the client-level ε says. The scores and coins
feed the same one-run estimators as the central audit
(:mod:`dpaudit.audit.client_level`).

Source: Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar 2024, *One-shot Empirical
Privacy Estimation for Federated Learning* (ICLR), §3 (random canary updates,
scored against the final model delta).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["UpdateCanaries", "canary_direction", "canary_scores", "flat_size"]

_STREAM_DIRECTION = 7


@dataclass(frozen=True)
class UpdateCanaries:
    """m canary clients, their inclusion coins and the norm of their updates.

    Attributes:
        included: one coin per canary (``True`` = it joins the population).
        seed: seeds the directions.
        norm: ‖c·u_k‖ (the clipping norm C of the federation).
    """

    included: tuple[bool, ...]
    seed: int
    norm: float

    @property
    def m(self) -> int:
        return len(self.included)

    @property
    def ids(self) -> tuple[str, ...]:
        width = max(4, len(str(max(self.m - 1, 0))))
        return tuple(f"client-cn-{k:0{width}d}" for k in range(self.m))

    @classmethod
    def draw(cls, m: int, *, seed: int, norm: float) -> UpdateCanaries:
        """m canaries with fair coins from ``default_rng((seed, 1))``."""
        coins = np.random.default_rng([seed, 1]).random(m) < 0.5
        return cls(tuple(bool(c) for c in coins), int(seed), float(norm))


def flat_size(shapes: Mapping[str, Sequence[int]]) -> int:
    """Number of trainable parameters (the dimension of the directions)."""
    return int(sum(int(np.prod(s)) for s in shapes.values()))


def canary_direction(
    k: int, shapes: Mapping[str, Sequence[int]], *, seed: int
) -> dict[str, np.ndarray]:
    """u_k as arrays shaped like the trainable parameters (keys in the given order), ‖u_k‖₂ = 1."""
    d = flat_size(shapes)
    v = np.random.default_rng([seed, _STREAM_DIRECTION, k]).standard_normal(d)
    v /= np.linalg.norm(v)
    out, start = {}, 0
    for key, shape in shapes.items():
        size = int(np.prod(shape))
        out[key] = v[start : start + size].reshape(shape)
        start += size
    return out


def canary_scores(
    canaries: UpdateCanaries,
    initial: Mapping[str, np.ndarray],
    final: Mapping[str, np.ndarray],
) -> np.ndarray:
    """⟨θ_T − θ_0, u_k⟩ for every canary k (shape ``(m,)``; higher = more likely included)."""
    keys = list(initial)
    delta = np.concatenate(
        [
            (np.asarray(final[k], np.float64) - np.asarray(initial[k], np.float64)).ravel()
            for k in keys
        ]
    )
    shapes = {k: np.asarray(initial[k]).shape for k in keys}
    scores = np.empty(canaries.m)
    for k in range(canaries.m):
        u = canary_direction(k, shapes, seed=canaries.seed)
        scores[k] = float(np.dot(delta, np.concatenate([u[key].ravel() for key in keys])))
    return scores
