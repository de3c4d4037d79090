"""The client-level privacy plan of a federation: q = m / N, T = rounds, σ calibrated like DP-SGD's.

DP-FedAvg with Poisson client sampling at rate q, flat clipping C and Gaussian
noise zC on the sum of the clipped updates (:mod:`.server`) is the
Poisson-subsampled Gaussian mechanism with *one client* as the unit (add/remove
adjacency), released T times (every round, empty ones too): the same
mechanism dpaudit's accountants bound for DP-SGD with one example as the unit
(McMahan et al. 2018, §2–3). So the ledger is
:func:`~dpaudit.trainers.privacy.make_ledger` of a :class:`PrivacyPlan` with
``n`` = N clients, ``batch_size`` = m, ``steps`` = T and ``unit = "client"``, and
``dpaudit accountant --sampling-rate q --noise-multiplier z --steps T`` gives
the same ε.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpaudit.config import FederatedConfig, TrainConfig
from dpaudit.errors import DpauditError
from dpaudit.trainers.privacy import (
    DEFAULT_DELTA_RULE,
    PrivacyPlan,
    calibrated_noise,
    default_delta,
)

__all__ = [
    "LocalPrivacy",
    "plan_client_privacy",
    "plan_local_privacy",
    "user_level_federation",
]


def plan_client_privacy(
    train: TrainConfig,
    federated: FederatedConfig,
    n_clients: int,
    *,
    dp: bool,
    unit: str = "client",
) -> PrivacyPlan:
    """Fix q, T, δ and z for a federation of ``n_clients`` real clients.

    δ: ``train.delta``, else :func:`~dpaudit.trainers.privacy.default_delta` of N.
    z: ``train.noise_multiplier``, else calibrated to ``train.target_epsilon`` by
    ``train.accountant``.

    Raises:
        DpauditError: more clients per round than clients, or calibration fails.
    """
    m = federated.clients_per_round
    if n_clients < 2:
        raise DpauditError(f"a federation needs at least 2 clients, got {n_clients}")
    if m > n_clients:
        raise DpauditError(
            f"federated.clients_per_round = {m} exceeds the {n_clients} clients of the partition"
        )
    q = m / n_clients
    steps = federated.rounds
    if train.delta is not None:
        delta, delta_source = float(train.delta), "config"
    else:
        delta, delta_source = default_delta(n_clients), DEFAULT_DELTA_RULE
    sigma, source, target = 0.0, "none", None
    if dp:
        if train.noise_multiplier is not None:
            sigma, source = float(train.noise_multiplier), "config"
        else:
            sigma = calibrated_noise(
                train,
                train.target_epsilon,
                delta=delta,
                sample_rate=q,
                steps=steps,
                what=f"{unit}-level ",
            )
            source, target = "calibrated", float(train.target_epsilon)
    return PrivacyPlan(
        dp=dp,
        n=n_clients,
        batch_size=m,
        sample_rate=q,
        steps=steps,
        epochs=q * steps,
        noise_multiplier=sigma,
        max_grad_norm=float(federated.clip_norm) if dp else None,
        delta=delta,
        delta_source=delta_source,
        accountant=train.accountant,
        noise_source=source,
        target_epsilon=target,
        poisson=True,
        unit=unit,
    )


@dataclass(frozen=True)
class LocalPrivacy:
    """Example-level DP of local DP-SGD inside every client (Opacus), and its ledger.

    Client k with n_k records runs, in each round it joins, s_k = round(local_epochs /
    q_k) DP-SGD steps with Poisson rate q_k = min(1, B / n_k), clipping C (per example)
    and noise σ (:func:`~dpaudit.trainers.privacy.plan_privacy` of its records). A
    record of client k is therefore in at most T · s_k subsampled Gaussian steps at
    rate q_k — at most, because rounds the client sits out do not touch it (the
    amplification of client sampling is not counted: a conservative bound). The run's
    example-level ε is that of its most exposed client; ``worst`` is that client's
    plan (``n`` its records, ``steps`` = T · s_k), so ``dpaudit accountant`` at its
    (q, σ, steps) gives the ledger's ε. σ is ``federated.local_noise_multiplier``, or the
    smallest σ that keeps every client at or below ``federated.local_target_epsilon``
    (calibrated on the Pareto front of the clients' (q_k, T·s_k), where ε is largest).

    Attributes:
        noise_multiplier: σ of every client's DP-SGD.
        worst: the ledger plan (unit ``example``) of the most exposed client.
        per_round: client size n_k → its per-round :class:`PrivacyPlan` (q_k, s_k).
    """

    noise_multiplier: float
    worst: PrivacyPlan
    per_round: dict[int, PrivacyPlan]

    def client_plan(self, n: int) -> PrivacyPlan:
        return self.per_round[n]


def _local_round_plan(
    train: TrainConfig, federated: FederatedConfig, n: int, sigma: float
) -> PrivacyPlan:
    import dataclasses

    from dpaudit.trainers.privacy import plan_privacy

    b = min(federated.local_batch_size, n)
    config = dataclasses.replace(
        train,
        batch_size=b,
        physical_batch_size=min(train.physical_batch_size, b),
        epochs=federated.local_epochs,
        noise_multiplier=sigma,
        poisson_sampling=True,
        delta=train.delta if train.delta is not None else 1e-5,  # unused: the ledger sets δ
    )
    return plan_privacy(config, n, dp=True)


def plan_local_privacy(
    train: TrainConfig, federated: FederatedConfig, client_sizes: list[int], *, n_records: int
) -> LocalPrivacy:
    """Fix σ and the example-level ledger of local DP-SGD (:class:`LocalPrivacy`).

    δ: ``train.delta``, else :func:`~dpaudit.trainers.privacy.default_delta` of all records.

    Raises:
        DpauditError: calibration fails, or a client has no records.
    """
    import dataclasses
    import math

    from dpaudit.accounting import compute_epsilons

    if not client_sizes or min(client_sizes) < 1:
        raise DpauditError("local DP needs every client to hold at least one record")
    delta = float(train.delta) if train.delta is not None else default_delta(max(2, n_records))
    rounds = federated.rounds
    sizes = sorted(set(client_sizes))
    shape = {n: _local_round_plan(train, federated, n, 1.0) for n in sizes}
    pairs = {(p.sample_rate, rounds * p.steps) for p in shape.values()}
    front = [a for a in pairs if not any(b != a and b[0] >= a[0] and b[1] >= a[1] for b in pairs)]
    if federated.local_noise_multiplier is not None:
        sigma, source, target = float(federated.local_noise_multiplier), "config", None
    else:
        target = float(federated.local_target_epsilon)
        sigma = max(
            calibrated_noise(
                train, target, delta=delta, sample_rate=q, steps=t, what="example-level "
            )
            for q, t in front
        )
        source = "calibrated"
    per_round = {n: _local_round_plan(train, federated, n, sigma) for n in sizes}
    worst_eps, worst_n = -math.inf, sizes[0]
    for n in sizes:
        p = per_round[n]
        if (p.sample_rate, rounds * p.steps) not in front:
            continue
        eps, _ = compute_epsilons(
            sampling_rate=p.sample_rate,
            noise_multiplier=sigma,
            steps=rounds * p.steps,
            delta=delta,
            accountants=(train.accountant,),
        )
        value = eps.get(train.accountant, math.inf)
        if value > worst_eps:
            worst_eps, worst_n = value, n
    w = per_round[worst_n]
    worst = dataclasses.replace(
        w,
        steps=rounds * w.steps,
        epochs=rounds * w.steps * w.sample_rate,
        delta=delta,
        delta_source="config" if train.delta is not None else DEFAULT_DELTA_RULE,
        noise_source=source,
        target_epsilon=target,
        unit="example",
    )
    return LocalPrivacy(sigma, worst, per_round)


def user_level_federation(train: TrainConfig, n_users: int) -> FederatedConfig:
    """The federation that is user-level DP-SGD of central training (``train.unit = "user"``).

    Users are Poisson-sampled at q = batch_size / users for T = round(epochs / q) steps;
    each sampled user contributes −∇ of its mean loss over up to
    ``train.physical_batch_size`` of its records (FedSGD), clipped to
    ``train.max_grad_norm``; the server adds N(0, (σC)²), divides by the fixed qN and takes a
    bias-corrected Adam step with ``train.learning_rate`` (McMahan et al. 2018, §2,
    DP-FedSGD; author-level DP as in Microsoft's dp-transformers). The ledger's unit is
    ``user``.

    Raises:
        DpauditError: fewer than 2 users.
    """
    import math

    if n_users < 2:
        raise DpauditError(f"user-level DP needs at least 2 users, got {n_users}")
    m = min(train.batch_size, n_users)
    q = m / n_users
    rounds = max(1, math.floor(train.epochs / q + 0.5))
    return FederatedConfig(
        enabled=True,
        partition="user",
        rounds=rounds,
        clients_per_round=m,
        local_update="gradient",
        local_batch_size=train.physical_batch_size,
        strategy="fedadam",
        server_learning_rate=train.learning_rate,
        fedadam_beta1=0.9,
        fedadam_beta2=0.999,
        fedadam_tau=1e-8,
        fedadam_bias_correction=True,
        clip_norm=train.max_grad_norm,
        canary_clients=0,
        max_eval_records=0,
    )
