"""The registry of audit methods: canary scores and inclusion bits → an ε lower bound.

:data:`AUDIT_METHODS` maps the ``audit.method`` setting to an
:class:`AuditMethod`, which the audit stage calls with the canaries' scores,
their inclusion bits and the ``[audit]`` section. Built in:

- ``one-run``: the one-run game of Steinke, Nasr, Jagielski (2023), union-bounded
  over the ``audit.guesses`` grid, counts turned into epsilon by the
  ``audit.estimator`` (:data:`~dpaudit.audit.estimators.ESTIMATORS`; the record
  carries its ``guarantee`` and ``ceiling``;
  :func:`~dpaudit.audit.lower_bound.audit_one_run`);
- ``threshold``: Clopper-Pearson counts at a threshold chosen on a held-out
  ``audit.heldout_fraction`` of the canaries (Jagielski et al. 2020; Nasr et
  al. 2021; :func:`~dpaudit.audit.lower_bound.audit_threshold`).

A new method is one call, :func:`register_audit_method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dpaudit.audit.lower_bound import (
    METHOD_ONE_RUN,
    METHOD_THRESHOLD,
    EpsilonLowerBound,
    audit_one_run,
    audit_threshold,
)
from dpaudit.config import AuditConfig
from dpaudit.registry import Registry

__all__ = ["AUDIT_METHODS", "AuditMethod", "register_audit_method"]

AuditFunction = Callable[..., EpsilonLowerBound]
"""``fn(scores, included, audit_config, *, delta, seed) -> EpsilonLowerBound``."""


@dataclass(frozen=True)
class AuditMethod:
    """One audit method.

    Attributes:
        description: one line for help texts.
        run: ``run(scores, included, audit_config, *, delta, seed)``: ``scores``
            (m,) float, higher = more likely included; ``included`` (m,) bool,
            the canaries' coin flips; ``audit_config`` the ``[audit]`` section;
            ``delta`` the δ of the bound; ``seed`` for any random split.
    """

    description: str
    run: AuditFunction


AUDIT_METHODS: Registry[AuditMethod] = Registry("audit method")
"""``audit.method`` name → :class:`AuditMethod`."""


def register_audit_method(
    name: str, run: AuditFunction, description: str, *, replace: bool = False
) -> AuditMethod:
    """Register ``run`` as the audit method ``name`` (see :class:`AuditMethod`).

    Raises:
        DpauditError: ``name`` is taken (unless ``replace``) or malformed.
    """
    return AUDIT_METHODS.register(name, AuditMethod(description, run), replace=replace)


def _one_run(
    scores: np.ndarray, included: np.ndarray, config: AuditConfig, *, delta: float, seed: int
) -> EpsilonLowerBound:
    return audit_one_run(
        scores,
        included,
        delta=delta,
        confidence=config.confidence,
        grid=list(config.guesses) or None,
        estimator=config.estimator,
    )


def _threshold(
    scores: np.ndarray, included: np.ndarray, config: AuditConfig, *, delta: float, seed: int
) -> EpsilonLowerBound:
    return audit_threshold(
        scores,
        included,
        delta=delta,
        confidence=config.confidence,
        heldout_fraction=config.heldout_fraction,
        seed=seed,
    )


register_audit_method(
    METHOD_ONE_RUN,
    _one_run,
    "One-run audit (Steinke, Nasr, Jagielski 2023), union bound over the guess grid, "
    "epsilon from audit.estimator",
)
register_audit_method(
    METHOD_THRESHOLD,
    _threshold,
    "Clopper-Pearson threshold audit, threshold chosen on held-out canaries",
)
