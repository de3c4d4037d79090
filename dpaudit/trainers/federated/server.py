"""DP-FedAvg as a Flower strategy: Poisson client sampling, flat clipping, fixed denominator, Gaussian noise.

Round t with global trainable parameters θ_t (McMahan et al. 2018, §2 and
Algorithm 1; Andrew et al. 2021, Algorithm 1):

1. every client joins with probability q, independently (Poisson sampling, seeded
   by ``(seed, t)``); an empty round still releases noise;
2. each joining client k returns θ_k; the server clips its update
   Δ_k = θ_k − θ_t over all arrays together: Δ̄_k = Δ_k · min(1, C / ‖Δ_k‖₂);
3. θ_{t+1} = θ_t + η_s · (Σ_k Δ̄_k + N(0, (z_Δ C)² I)) / (qN), with the *fixed*
   denominator qN (McMahan's f̃_f): it does not depend on who joined, so adding or
   removing one client changes the noised sum by at most C (sensitivity C).

Fixed clipping: z_Δ = z, the accounted noise multiplier. Adaptive clipping (Andrew
et al. 2021, Algorithm 1): each client also reports b_k = 1[‖Δ_k‖ ≤ C]; the server
releases b̃ = (Σ_k b_k + N(0, σ_b²)) / (qN) and sets C ← C · exp(−η_C (b̃ − γ)) (γ
the target unclipped quantile). The two releases together are one Gaussian
mechanism with multiplier z when z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) (their Theorem 1;
it needs z < 2σ_b). So the ledger is (q, z, T) for every accountant.

Flower's own ``DifferentialPrivacyServerSide*`` wrappers sample a fixed number of
clients without replacement with the unseeded global ``random`` and add noise
σC/m to the weighted average; that is not the Poisson, add/remove mechanism
dpaudit's accountants bound (docs/federated.md), so sampling and noise are owned
here, seeded per (seed, round, purpose).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import Mechanism, TrainHooks

__all__ = [
    "AdaptiveClipping",
    "DpFedAvg",
    "ServerAdam",
    "ServerMechanism",
    "update_noise_multiplier",
]

_STREAM_SAMPLE, _STREAM_NOISE, _STREAM_COUNT = 0, 1, 2


@dataclass(frozen=True)
class AdaptiveClipping:
    """Andrew et al. 2021 quantile tracking: target unclipped fraction γ, step η_C, count noise σ_b."""

    target_unclipped_quantile: float
    learning_rate: float
    count_stddev: float


@dataclass(frozen=True)
class ServerAdam:
    """FedAdam's server optimizer (Reddi et al. 2021, *Adaptive Federated Optimization*, ICLR,
    Algorithm 2): m ← β₁m + (1−β₁)Δ̄, v ← β₂v + (1−β₂)Δ̄², θ ← θ + η_s m / (√v + τ), with Δ̄ the
    noised mean update. It only transforms what DP-FedAvg released, so it costs no privacy.
    """

    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    bias_correction: bool = False
    """Divide m and v by 1 − β^t (Kingma & Ba 2015, Algorithm 1), as ``torch.optim.Adam``
    does: user-level DP-SGD uses it so its steps match central DP-SGD's Adam."""


@dataclass(frozen=True)
class ServerMechanism:
    """The claimed client-level mechanism of a federation.

    Attributes:
        sample_rate: q, each client's probability of joining a round.
        noise_multiplier: z, the accounted noise multiplier (0 = no noise).
        clip_norm: C (initial C when adaptive); ``None`` = no clipping (non-private).
        denominator: the fixed denominator qN of the mean update.
        adaptive: adaptive clipping parameters, or ``None`` for fixed clipping.
    """

    sample_rate: float
    noise_multiplier: float
    clip_norm: float | None
    denominator: float
    adaptive: AdaptiveClipping | None = None


def update_noise_multiplier(z: float, count_stddev: float) -> float:
    """z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2): the update's share of z (Andrew et al. 2021, Theorem 1).

    Raises:
        DpauditError: z ≥ 2σ_b (the count release alone would exceed the budget).
    """
    if z <= 0:
        return 0.0
    if z >= 2.0 * count_stddev:
        raise DpauditError(
            f"adaptive clipping needs noise multiplier z = {z:.4g} < 2·σ_b = {2 * count_stddev:.4g}; "
            "raise federated.clipped_count_stddev or use clipping = fixed"
        )
    return float((z**-2 - (2.0 * count_stddev) ** -2) ** -0.5)


class DpFedAvg(FedAvg):
    """Flower ``FedAvg`` with dpaudit's DP-FedAvg aggregation (module docstring).

    Args:
        mechanism: the claimed mechanism (what the ledger states).
        seed: seeds client sampling and noise, per round.
        server_learning_rate: η_s.
        proximal_mu: FedProx μ sent to clients (``config["proximal-mu"]``; 0 = FedAvg).
        hooks: :class:`~dpaudit.trainers.hooks.TrainHooks` whose ``mechanism`` may
            change what is actually run (audit variants: noise silently removed, …);
            the ledger keeps the claim.
        on_round: called after each aggregation with the round's record.
        aggregator: ``mean`` (DP-FedAvg's fixed-denominator average) or a robust rule of
            :mod:`.robust` applied to the clipped updates, the noise DP-FedAvg would add to
            its mean added to the result (attack experiments only: no ledger covers it).
        byzantine, trim_fraction: Krum's f and the trimmed mean's β.
    """

    def __init__(
        self,
        *,
        mechanism: ServerMechanism,
        seed: int,
        server_learning_rate: float = 1.0,
        proximal_mu: float = 0.0,
        hooks: TrainHooks | None = None,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        adam: ServerAdam | None = None,
        aggregator: str = "mean",
        byzantine: int = 1,
        trim_fraction: float = 0.2,
    ) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=1)
        from dpaudit.trainers.federated.robust import AGGREGATORS

        if aggregator not in AGGREGATORS:
            raise DpauditError(f"unknown aggregator {aggregator!r} ({', '.join(AGGREGATORS)})")
        self.aggregator, self.byzantine, self.trim_fraction = aggregator, byzantine, trim_fraction
        self.claimed = mechanism
        clip = mechanism.clip_norm if mechanism.clip_norm is not None else math.inf
        claimed = Mechanism(mechanism.sample_rate, mechanism.noise_multiplier, clip)
        actual = (
            (hooks or TrainHooks()).mechanism(claimed) if mechanism.noise_multiplier else claimed
        )
        self.actual = actual
        self.seed = int(seed)
        self.server_learning_rate = float(server_learning_rate)
        self.proximal_mu = float(proximal_mu)
        self.on_round = on_round
        self.clip_norm = actual.max_grad_norm  # changes each round when adaptive
        self.adaptive = mechanism.adaptive
        count_std = self.adaptive.count_stddev if self.adaptive else math.inf
        self.update_z = update_noise_multiplier(actual.noise_multiplier, count_std)
        self._global: dict[str, np.ndarray] = {}
        self._sampled: dict[int, list[int]] = {}
        self.adam = adam
        self._m: dict[str, np.ndarray] = {}
        self._v: dict[str, np.ndarray] = {}
        self._t = 0
        self.round_offset = 0  # rounds already run before a resumed start()

    def summary(self) -> None:  # Flower logs a summary; dpaudit reports its own
        return None

    # ------------------------------------------------------------- resumption
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What a resumed run needs: (JSON state, arrays of FedAdam's moments ``m::``/``v::``)."""
        arrays = {f"m::{k}": np.asarray(v) for k, v in self._m.items()}
        arrays.update({f"v::{k}": np.asarray(v) for k, v in self._v.items()})
        clip = self.clip_norm if math.isfinite(self.clip_norm) else None
        return {"clip_norm": clip, "adam_steps": self._t}, arrays

    def load_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`state`."""
        if state.get("clip_norm") is not None:
            self.clip_norm = float(state["clip_norm"])
        self._t = int(state.get("adam_steps", 0))
        self._m = {k[3:]: v for k, v in arrays.items() if k.startswith("m::")}
        self._v = {k[3:]: v for k, v in arrays.items() if k.startswith("v::")}

    # ---------------------------------------------------------------- sampling
    def sample_nodes(self, server_round: int, node_ids: Iterable[int]) -> list[int]:
        """Poisson sampling: each node joins with probability q, seeded by (seed, round)."""
        nodes = sorted(int(n) for n in node_ids)
        rng = np.random.default_rng([self.seed, server_round, _STREAM_SAMPLE])
        draws = rng.random(len(nodes))
        return [n for n, u in zip(nodes, draws, strict=True) if u < self.actual.sample_rate]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset  # Flower counts from 1 on every start()
        chosen = self.sample_nodes(server_round, grid.get_node_ids())
        self._sampled[server_round] = chosen
        self._global = {k: np.asarray(v.numpy()) for k, v in arrays.items()}
        config["server-round"] = server_round
        config["proximal-mu"] = self.proximal_mu
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [
            Message(
                content=record,
                message_type=MessageType.TRAIN,
                dst_node_id=node,
                group_id=str(server_round),
            )
            for node in chosen
        ]

    # ------------------------------------------------------------- aggregation
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        replies = list(replies)
        valid = [r for r in replies if not r.has_error()]
        failures = len(replies) - len(valid)
        keys = list(self._global)
        total = {k: np.zeros(v.shape, dtype=np.float64) for k, v in self._global.items()}
        clip = self.clip_norm
        unclipped, norms, losses, partitions = 0, [], [], []
        clipped: list[dict[str, np.ndarray]] = []  # for a robust aggregator
        for reply in valid:
            arrays = reply.content.array_records[self.arrayrecord_key]
            if sorted(arrays.keys()) != sorted(keys):
                raise DpauditError(
                    f"round {server_round}: a client returned arrays {sorted(arrays.keys())[:3]}…, "
                    f"not the {len(keys)} trainable arrays sent"
                )
            delta = {
                k: np.asarray(arrays[k].numpy(), dtype=np.float64) - self._global[k] for k in keys
            }
            norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
            norms.append(norm)
            factor = 1.0 if not math.isfinite(clip) or norm <= clip else clip / norm
            unclipped += int(norm <= clip)
            for k in keys:
                total[k] += delta[k] * factor
            if self.aggregator != "mean":
                clipped.append({k: delta[k] * factor for k in keys})
            for metrics in reply.content.metric_records.values():
                if "partition-id" in metrics:
                    partitions.append(int(metrics["partition-id"]))  # type: ignore[arg-type]
                if "train-loss" in metrics:
                    losses.append(float(metrics["train-loss"]))  # type: ignore[arg-type]
        noise_rng = np.random.default_rng([self.seed, server_round, _STREAM_NOISE])
        noise_std = self.update_z * clip if math.isfinite(clip) else 0.0
        noise = {k: np.zeros_like(total[k]) for k in keys}
        if noise_std > 0:
            for k in keys:
                noise[k] = noise_rng.normal(0.0, noise_std, size=total[k].shape)
                total[k] += noise[k]
        denominator = self.claimed.denominator
        mean = {k: total[k] / denominator for k in keys}
        if self.aggregator != "mean":
            from dpaudit.trainers.federated.robust import robust_aggregate

            robust = (
                robust_aggregate(
                    clipped,
                    keys,
                    self.aggregator,
                    byzantine=self.byzantine,
                    trim_fraction=self.trim_fraction,
                )
                if clipped
                else {k: np.zeros_like(total[k]) for k in keys}
            )
            mean = {k: robust[k] + noise[k] / denominator for k in keys}
        if self.adam is not None:  # FedAdam on the released mean (post-processing)
            a = self.adam
            self._t += 1
            c1 = 1 - a.beta1**self._t if a.bias_correction else 1.0
            c2 = 1 - a.beta2**self._t if a.bias_correction else 1.0
            for k in keys:
                self._m[k] = a.beta1 * self._m.get(k, 0.0) + (1 - a.beta1) * mean[k]
                self._v[k] = a.beta2 * self._v.get(k, 0.0) + (1 - a.beta2) * mean[k] ** 2
                mean[k] = (self._m[k] / c1) / (np.sqrt(self._v[k] / c2) + a.tau)
        new = {
            k: (self._global[k] + self.server_learning_rate * mean[k]).astype(self._global[k].dtype)
            for k in keys
        }
        record: dict[str, Any] = {
            "round": server_round,
            "sampled": len(self._sampled.get(server_round, [])),
            "partitions": sorted(partitions),
            "replies": len(valid),
            "failures": failures,
            "clip_norm": clip if math.isfinite(clip) else None,
            "unclipped_fraction": (unclipped / len(valid))
            if valid and math.isfinite(clip)
            else None,
            "median_update_norm": float(np.median(norms)) if norms else None,
            "noise_std": noise_std,
            "train_loss": float(np.mean(losses)) if losses else None,
        }
        if self.aggregator != "mean":
            record["aggregator"] = self.aggregator
        if self.adaptive is not None and math.isfinite(clip):
            count_rng = np.random.default_rng([self.seed, server_round, _STREAM_COUNT])
            noisy = float(unclipped)
            if self.actual.noise_multiplier > 0:
                noisy = unclipped + count_rng.normal(0.0, self.adaptive.count_stddev)
            b = noisy / denominator
            self.clip_norm = clip * math.exp(
                -self.adaptive.learning_rate * (b - self.adaptive.target_unclipped_quantile)
            )
            record["next_clip_norm"] = self.clip_norm
        if self.on_round is not None:
            self.on_round(record)
        out = ArrayRecord({k: Array(v) for k, v in new.items()})
        return out, MetricRecord({"replies": len(valid)})
