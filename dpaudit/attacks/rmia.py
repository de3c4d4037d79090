"""Robust Membership Inference Attack (RMIA): likelihood ratios against population samples.

Zarifzadeh, Liu, Shokri (2024), "Low-Cost High-Power Membership Inference
Attacks", ICML, §3. The pairwise likelihood ratio of an example x against a
population sample z under the target model θ is, by Bayes' rule,

    LR_θ(x, z) = (Pr(x | θ) / Pr(x)) · (Pr(z | θ) / Pr(z))⁻¹,

with ``Pr(x) = Σ_θ' Pr(x | θ') Pr(θ')`` approximated by the mean of
``Pr(x | θ'_k)`` over the K reference models. The score is the fraction of
population samples that x dominates by a factor γ:

    Score_MIA(x; θ) = Pr_{z ∼ π}( LR_θ(x, z) ≥ γ ).

Online (references trained on random halves that include x or not), the
plain mean over all references estimates ``Pr(x)``. Offline (only OUT
references), the paper approximates the missing IN half linearly,
``Pr(x | θ_in) ≈ a · Pr(x)_OUT + (1 − a)``, so that

    Pr(x) = ½ (Pr(x)_OUT + Pr(x)_IN) ≈ ½ ((1 + a) · Pr(x)_OUT + (1 − a)),

and applies the same map to every z (population samples are OUT for every
reference). ``a`` is a per-setting constant the paper tunes on a pair of
reference models; ``a = 1`` means IN ≡ OUT, ``a = 0`` means ``Pr(x | θ_in) = 1``
(the reference code, privacytrustlab/ml_privacy_meter, defaults to 0.3).

``Pr(x | θ)``: for classifiers the probability of the true label (the paper's
signal); for causal LMs the per-token probability ``exp(mean_t log p(x_t | x_<t))``.
A whole-sequence probability would underflow, and the per-token geometric
mean stays in [0, 1] as the offline formula assumes. Everything is computed
in log space — ``log Pr(x)`` by ``logsumexp``, ratios as differences, and
``LR ≥ γ`` as ``log LR ≥ log γ`` — so no probability is ever exponentiated.
We use the paper's ``≥`` (the reference code compares with ``>``); the two
differ only on exact ties. For LMs γ therefore acts on a *per-token* ratio (a
sequence of n tokens has a ratio of roughly γⁿ): keep γ close to 1; with tiny
models, γ = 2 already leaves every score at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy.special import logsumexp

from dpaudit.attacks.lira import (
    as_membership_matrix,
    lm_statistic,
    require_references,
    true_label_logits,
)
from dpaudit.attacks.mia import _Base, _log_softmax
from dpaudit.attacks.scores import AttackScores
from dpaudit.attacks.scoring import ScoringModel
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, PreconditionError

_LOGP_TOLERANCE = 1e-9


def _log_offline(log_mean_out: np.ndarray, a: float) -> np.ndarray:
    """``log(½((1 + a)·e^m + (1 − a)))`` for ``m = log Pr(·)_OUT``."""
    if a == 1.0:
        return log_mean_out
    return np.logaddexp(np.log1p(a) + log_mean_out, np.log1p(-a)) - np.log(2.0)


def _log_mean(logp: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise ``log mean exp`` (over the masked entries)."""
    if mask is None:
        return logsumexp(logp, axis=1) - np.log(logp.shape[1])
    return logsumexp(np.where(mask, logp, -np.inf), axis=1) - np.log(mask.sum(axis=1))


def _as_logp(values: np.ndarray, ndim: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise DpauditError(f"{what} must be {ndim}-D, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DpauditError(f"{what} must be finite log-probabilities")
    if array.size and array.max() > _LOGP_TOLERANCE:
        raise DpauditError(
            f"{what} must be log-probabilities (≤ 0), got a maximum of {array.max():.4g}; "
            "pass log p, not p"
        )
    return array


def rmia_scores(
    logp_x_target: np.ndarray,
    logp_x_refs: np.ndarray,
    logp_z_target: np.ndarray,
    logp_z_refs: np.ndarray,
    *,
    gamma: float = 1.0,
    offline_a: float | None = None,
    ref_in: np.ndarray | None = None,
) -> np.ndarray:
    """RMIA scores of ``n`` examples against ``m`` population samples (higher = member).

    Zarifzadeh et al. 2024, §3: ``Score(x) = Pr_z(LR_θ(x, z) ≥ γ)`` (see the
    module docstring), computed in log space.

    Args:
        logp_x_target: ``(n,)`` ``log Pr(x | θ)`` under the target model.
        logp_x_refs: ``(n, K)`` ``log Pr(x | θ'_k)`` under each reference model.
        logp_z_target: ``(m,)`` ``log Pr(z | θ)`` of the population samples.
        logp_z_refs: ``(m, K)`` ``log Pr(z | θ'_k)``.
        gamma: the factor γ > 0 by which ``LR`` must dominate.
        offline_a: None for online ``Pr(x)`` (mean over all references);
            ``a ∈ [0, 1]`` for the offline approximation from OUT references.
        ref_in: ``(n, K)`` bool, whether reference k trained on x_i; offline
            only (online averages over all references regardless). None
            means no reference trained on any x.

    Returns:
        ``(n,)`` float64 scores in [0, 1]: the fraction of the ``m`` samples z
        with ``LR_θ(x, z) ≥ γ``.

    Raises:
        DpauditError: shapes disagree, inputs are not log-probabilities, γ or
            ``a`` is out of range, no population sample is given, or offline an
            example has no OUT reference.
    """
    lx = _as_logp(logp_x_target, 1, "logp_x_target")
    rx = _as_logp(logp_x_refs, 2, "logp_x_refs")
    lz = _as_logp(logp_z_target, 1, "logp_z_target")
    rz = _as_logp(logp_z_refs, 2, "logp_z_refs")
    n, m = lx.shape[0], lz.shape[0]
    if rx.shape[0] != n or rx.shape[1] < 1:
        raise DpauditError(f"logp_x_refs must have shape ({n}, K ≥ 1), got {rx.shape}")
    if rz.shape != (m, rx.shape[1]):
        raise DpauditError(f"logp_z_refs must have shape ({m}, {rx.shape[1]}), got {rz.shape}")
    if m == 0:
        raise PreconditionError("RMIA needs at least one population sample z")
    check_gamma(gamma)
    if offline_a is not None:
        check_offline_a(offline_a)

    if offline_a is None:
        log_pr_x = _log_mean(rx)
        log_pr_z = _log_mean(rz)
    else:
        outside = (
            np.ones(rx.shape, dtype=bool)
            if ref_in is None
            else ~as_membership_matrix(ref_in, n, rx.shape[1], "ref_in")
        )
        lacking = int((~outside.any(axis=1)).sum())
        if lacking:
            raise PreconditionError(
                f"offline RMIA needs an OUT reference for every example; {lacking} have none"
            )
        log_pr_x = _log_offline(_log_mean(rx, outside), float(offline_a))
        log_pr_z = _log_offline(_log_mean(rz), float(offline_a))

    log_ratio_x = lx - log_pr_x
    log_ratio_z = np.sort(lz - log_pr_z)
    # LR(x, z) ≥ γ  ⟺  log ratio_z ≤ log ratio_x − log γ
    return np.searchsorted(log_ratio_z, log_ratio_x - np.log(gamma), side="right") / m


def check_gamma(gamma: object) -> None:
    """Refuse a γ that is not a positive finite number."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise DpauditError(f"RMIA gamma must be a positive number, got {gamma!r}")
    if not (np.isfinite(gamma) and gamma > 0):
        raise DpauditError(f"RMIA gamma must be a positive number, got {gamma!r}")


def check_offline_a(a: object) -> None:
    """Refuse an offline ``a`` outside [0, 1]."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
        raise DpauditError(f"RMIA offline_a must lie in [0, 1], got {a!r}")


@dataclass(frozen=True)
class RmiaAttack(_Base):
    """RMIA on a causal LM (Zarifzadeh et al. 2024) with
    ``Pr(x | θ) = exp(mean token log-probability)``.

    Attributes:
        gamma: γ, the factor by which x's likelihood ratio must dominate z's.
        offline_a: None for online RMIA; ``a ∈ [0, 1]`` for the offline
            approximation of ``Pr(x)`` from OUT references.
    """

    name: ClassVar[str] = "rmia"
    task: ClassVar[str] = "causal_lm"
    needs_references: ClassVar[bool] = True
    needs_ref_membership: ClassVar[bool] = False
    needs_population: ClassVar[bool] = True
    legacy_fields: ClassVar[Mapping[str, str]] = {"gamma": "rmia_gamma"}
    gamma: float = field(
        default=1.0,
        metadata={"help": "Dominance factor gamma: x's likelihood ratio must beat z's by it, > 0"},
    )
    offline_a: float | None = field(
        default=None,
        metadata={
            "help": "Offline RMIA: a in [0, 1] approximating Pr(x) from OUT references; "
            "unset = online"
        },
    )

    def __post_init__(self) -> None:
        check_gamma(self.gamma)
        object.__setattr__(self, "gamma", float(self.gamma))
        if self.offline_a is not None:
            check_offline_a(self.offline_a)
            object.__setattr__(self, "offline_a", float(self.offline_a))

    def _logp(self, model: ScoringModel, records: Sequence[Record]) -> np.ndarray:
        return lm_statistic(model, records, self.name)

    def unmet(
        self, *, ref_membership: np.ndarray | None = None, n_population: int = 0
    ) -> str | None:
        """Offline: an OUT reference for every example (no membership: none trained on any)."""
        if self.offline_a is None or ref_membership is None:
            return None
        inside = np.asarray(ref_membership, dtype=bool)
        lacking = int(inside.all(axis=1).sum()) if inside.ndim == 2 else 0
        if not lacking:
            return None
        fewer = f" (with {inside.shape[1]} reference model)" if inside.shape[1] < 2 else ""
        return f"offline RMIA needs an OUT reference for every example; {lacking} have none{fewer}"

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
        population: Sequence[Record] | None = None,
        ref_membership: np.ndarray | None = None,
    ) -> AttackScores:
        """Score ``examples`` against ``model``, ``references`` and ``population``.

        Args:
            model: the target model.
            examples: the examples to score.
            is_member: their ground-truth membership in the target's training set.
            references: K reference models.
            population: samples z from the data distribution that no reference
                model (and, ideally, not the target) trained on.
            ref_membership: ``(len(examples), K)`` bool, whether reference k
                trained on example i; used offline only, where None means no
                reference trained on any example.

        Raises:
            DpauditError: missing references or population, or mismatched shapes.
        """
        self._check(examples, is_member)
        refs = require_references(self.name, references)
        if not population:
            raise PreconditionError(
                f"attack {self.name!r} needs population samples z (records no reference trained on)"
            )
        if ref_membership is not None:
            ref_membership = as_membership_matrix(
                ref_membership, len(examples), len(refs), f"attack {self.name!r}: ref_membership"
            )
        unmet = self.unmet(ref_membership=ref_membership, n_population=len(population))
        if unmet:  # before any model scores a text
            raise PreconditionError(unmet)
        scores = rmia_scores(
            self._logp(model, examples),
            np.column_stack([self._logp(r, examples) for r in refs]),
            self._logp(model, population),
            np.column_stack([self._logp(r, population) for r in refs]),
            gamma=self.gamma,
            offline_a=self.offline_a,
            ref_in=ref_membership,
        )
        return self._package(examples, scores, is_member)


@dataclass(frozen=True)
class ClassifierRmiaAttack(RmiaAttack):
    """RMIA on a sequence classifier (Zarifzadeh et al. 2024) with ``Pr(x | θ)``
    the softmax probability of the true label."""

    name: ClassVar[str] = "clf_rmia"
    task: ClassVar[str] = "classification"

    def _logp(self, model: ScoringModel, records: Sequence[Record]) -> np.ndarray:
        logits, labels = true_label_logits(model, records, self.name)
        return _log_softmax(logits)[np.arange(len(labels)), labels]
