"""Client membership inference: was this client's data used to train the federated model?

A client's score is the mean of its records' membership scores under one record-level
attack (LOSS, zlib, min-k%, min-k%++, reference, LiRA, RMIA: whatever the attack stage
computed; higher = member), in the manner of user inference (Kandpal et al. 2024,
*User Inference Attacks on Large Language Models*, §3, which aggregates per-sample
likelihood-ratio statistics over a user's samples; here the mean of whatever record
statistic the attack computed). Members are the clients that
joined at least one round (``rounds.jsonl``: their data shaped the model); non-members
are the held-out users, whose records never trained it (the data stage splits whole
users in a federated run), and the training clients that were never sampled (counted
apart, since they are non-members by fact but drawn from the training partition).
ROC statistics and bootstrap intervals are the record-level ones
(:func:`~dpaudit.attacks.metrics.compute_metrics`), computed over clients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpaudit.attacks.metrics import compute_metrics
from dpaudit.attacks.scores import AttackMetrics, AttackScores
from dpaudit.errors import DpauditError

__all__ = ["ClientMembership", "client_scores", "client_membership"]


@dataclass(frozen=True)
class ClientMembership:
    """Client-level ROC statistics of one attack.

    Attributes:
        attack: the record-level attack aggregated.
        metrics: AUC, TPR at FPR and their intervals over clients.
        n_member: clients that joined at least one round.
        n_nonmember: held-out clients plus never-sampled training clients.
        never_sampled: training clients that never joined (counted among non-members).
        records_scored: records whose scores were aggregated.
        clients_unscored: clients left out because none of their records was scored (the
            attack stage scores a balanced sample of members and non-members).
    """

    attack: str
    metrics: AttackMetrics
    n_member: int
    n_nonmember: int
    never_sampled: int
    records_scored: int
    clients_unscored: int = 0

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "attack": self.attack,
            "auc": m.auc,
            "auc_ci": list(m.auc_ci),
            # Below 1/n_nonmember an FPR is not resolvable (issue 11): the value is the TPR
            # at zero false positives and gets no interval, as for record-level attacks.
            "tpr_at_fpr": {
                str(f): (
                    {"tpr": v[0], "ci": list(v[1]), "resolvable": True}
                    if self.n_nonmember * f >= 1.0 - 1e-9
                    else {"tpr": v[0], "ci": None, "resolvable": False}
                )
                for f, v in m.tpr_at_fpr.items()
            },
            "n_member": self.n_member,
            "n_nonmember": self.n_nonmember,
            "never_sampled": self.never_sampled,
            "records_scored": self.records_scored,
            "clients_unscored": self.clients_unscored,
        }


def client_scores(scores: AttackScores, clients: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Mean record score of each client (clients without a scored record are left out)."""
    by_id = dict(zip(scores.example_ids, scores.scores.tolist(), strict=True))
    out = {}
    for client, ids in clients.items():
        values = [by_id[i] for i in ids if i in by_id]
        if values:
            out[client] = float(np.mean(values))
    return out


def client_membership(
    scores: AttackScores,
    *,
    joined: Mapping[str, Sequence[str]],
    never_sampled: Mapping[str, Sequence[str]],
    held_out: Mapping[str, Sequence[str]],
    fprs: Sequence[float],
    bootstrap: int,
    seed: int,
) -> ClientMembership:
    """Client-level membership inference from one attack's record scores.

    Args:
        scores: the attack's record scores (``attacks/<model>/<attack>/scores.parquet``).
        joined: member clients (joined ≥ 1 round) → their record ids.
        never_sampled: training clients that never joined → record ids (non-members).
        held_out: held-out users → record ids (non-members).

    Raises:
        DpauditError: fewer than one scored client on either side.
    """
    member = client_scores(scores, joined)
    non = {**client_scores(scores, never_sampled), **client_scores(scores, held_out)}
    if not member or not non:
        raise DpauditError(
            f"client membership ({scores.attack}): {len(member)} member and {len(non)} "
            "non-member clients have scored records; both are needed"
        )
    ids = [f"m:{c}" for c in member] + [f"n:{c}" for c in non]
    values = np.array(list(member.values()) + list(non.values()))
    is_member = np.array([True] * len(member) + [False] * len(non))
    aggregated = AttackScores(f"client-{scores.attack}", {}, tuple(ids), values, is_member)
    metrics = compute_metrics(aggregated, fprs=fprs, bootstrap=bootstrap, seed=seed)
    scored = set(scores.example_ids)
    records = sum(
        1
        for group in (joined, never_sampled, held_out)
        for rids in group.values()
        for i in rids
        if i in scored
    )
    return ClientMembership(
        scores.attack,
        metrics,
        len(member),
        len(non),
        sum(1 for c in never_sampled if c in non),
        records,
        len(joined) + len(never_sampled) + len(held_out) - len(member) - len(non),
    )
