"""Federated fine-tuning on Flower with client-level DP (DP-FedAvg), audited at the client level.

The only package of dpaudit that imports ``flwr``. Flower's Message API runs the
rounds: a :class:`flwr.serverapp.strategy.Strategy` (:class:`~.server.DpFedAvg`,
a ``FedAvg`` with dpaudit's Poisson client sampling, flat clipping, fixed
denominator and seeded Gaussian noise) talks to a :class:`flwr.clientapp.ClientApp`
(:func:`~.client.make_client_app`) through a ``Grid``: :class:`~.grid.LocalGrid`
in-process by default, or Flower's Ray simulation engine. Public names are
imported lazily so that ``import dpaudit.trainers.federated`` imports neither
torch nor flwr.

Sources: McMahan, Ramage, Talwar, Zhang 2018, *Learning Differentially Private
Recurrent Language Models* (ICLR), §2 and Algorithm 1 (DP-FedAvg, user sampling
with probability q, fixed denominator qN); Andrew, Thakkar, McMahan, Ramaswamy
2021, *Differentially Private Learning with Adaptive Clipping* (NeurIPS),
Algorithm 1 and Theorem 1 (adaptive clipping and its noise split); Andrew et al.
2024, *One-shot Empirical Privacy Estimation for Federated Learning* (ICLR)
(random-direction canary clients). See docs/federated.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LocalGrid": "grid",
    "DpFedAvg": "server",
    "ServerMechanism": "server",
    "UpdateCanaries": "canaries",
    "canary_direction": "canaries",
    "plan_client_privacy": "privacy",
    "train_federated": "run",
    "FederatedResult": "run",
    "check_flower": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
