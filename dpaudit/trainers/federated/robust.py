"""Byzantine-robust aggregation of client updates, by Flower's own aggregation helpers.

DP-FedAvg averages the clipped updates Δ̄_k with a fixed denominator. A robust rule
replaces that average by a statistic a few malicious clients cannot move far:

* ``median``: coordinate-wise median (Yin, Chen, Ramchandran, Bartlett 2018,
  "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
  ICML, §3 Definition 1; ``flwr.server.strategy.aggregate.aggregate_median``);
* ``trimmed-mean``: coordinate-wise β-trimmed mean, the largest and smallest
  ⌊βm⌋ values of each coordinate dropped (ibid., Definition 2;
  ``aggregate_trimmed_avg``);
* ``krum``: the update whose summed squared distance to its m − f − 2 nearest
  others is smallest (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine
  Learning with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS, §4);
  ``multi-krum`` averages the m − f best-scored (§5) (``aggregate_krum``).

Privacy. The Gaussian mechanism of DP-FedAvg bounds the *sum* of clipped updates;
none of these statistics is a sum, so a ledger computed for DP-FedAvg does not
cover them (the median of clipped updates, for one, can move by up to C when one
client changes). dpaudit runs them only in attack experiments
(``dpaudit federated poison``), never in an accounted training run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dpaudit.errors import DpauditError

__all__ = ["AGGREGATORS", "robust_aggregate"]

AGGREGATORS = ("mean", "median", "trimmed-mean", "krum", "multi-krum")
"""``mean`` is DP-FedAvg's own fixed-denominator average (not handled here)."""


def robust_aggregate(
    deltas: Sequence[Mapping[str, np.ndarray]],
    keys: Sequence[str],
    rule: str,
    *,
    byzantine: int = 1,
    trim_fraction: float = 0.2,
) -> dict[str, np.ndarray]:
    """Combine client updates by ``rule`` (module docstring); every client weighs the same.

    Args:
        deltas: one mapping of arrays per client (the clipped updates).
        keys: the array names, in a fixed order.
        rule: ``median``, ``trimmed-mean``, ``krum`` or ``multi-krum``.
        byzantine: f, the number of malicious clients Krum guards against.
        trim_fraction: β of the trimmed mean, in [0, 0.5).

    Returns:
        The aggregate update, one array per key.

    Raises:
        DpauditError: an unknown rule, bad β or f, or no update.
    """
    from flwr.server.strategy.aggregate import (
        aggregate_krum,
        aggregate_median,
        aggregate_trimmed_avg,
    )

    if rule not in AGGREGATORS or rule == "mean":
        raise DpauditError(f"unknown robust aggregator {rule!r} ({', '.join(AGGREGATORS[1:])})")
    if not deltas:
        raise DpauditError("robust aggregation of no update")
    if not 0 <= trim_fraction < 0.5:
        raise DpauditError(f"trimmed-mean fraction must be in [0, 0.5), got {trim_fraction}")
    if byzantine < 0:
        raise DpauditError(f"byzantine clients f must be ≥ 0, got {byzantine}")
    results = [([np.asarray(d[k], dtype=np.float64) for k in keys], 1) for d in deltas]
    if rule == "median":
        out = aggregate_median(results)
    elif rule == "trimmed-mean":
        out = aggregate_trimmed_avg(results, trim_fraction)
    else:
        keep = 0 if rule == "krum" else max(1, len(results) - byzantine)
        out = aggregate_krum(results, byzantine, keep)
    return {k: np.asarray(a, dtype=np.float64) for k, a in zip(keys, out, strict=True)}
