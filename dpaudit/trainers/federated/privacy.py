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

from dpaudit.config import FederatedConfig, TrainConfig
from dpaudit.errors import DpauditError
from dpaudit.trainers.privacy import DEFAULT_DELTA_RULE, PrivacyPlan, default_delta

__all__ = ["plan_client_privacy"]


def plan_client_privacy(
    train: TrainConfig, federated: FederatedConfig, n_clients: int, *, dp: bool
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
            from dpaudit.accounting import calibrate_noise

            try:
                sigma = float(
                    calibrate_noise(
                        target_epsilon=train.target_epsilon,
                        delta=delta,
                        sampling_rate=q,
                        steps=steps,
                        accountant=train.accountant,
                        allow_approximate=train.allow_approximate_accountant,
                    )
                )
            except DpauditError:
                raise
            except (ValueError, RuntimeError) as exc:
                raise DpauditError(
                    f"cannot calibrate noise for client-level ε = {train.target_epsilon}: {exc}"
                ) from None
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
        unit="client",
    )
