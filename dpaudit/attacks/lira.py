"""Likelihood Ratio Attack (LiRA) with per-example Gaussians fitted on reference models.

Carlini, Chien, Nasr, Song, Terzis, Tramèr (2022), "Membership Inference
Attacks From First Principles", IEEE S&P, §IV and its Algorithm 1. For each
example x, reference models that trained on x (IN) and that did not (OUT)
give samples of a statistic s; LiRA fits ``N(μ_in, σ_in²)`` and
``N(μ_out, σ_out²)`` to them and scores the target model's statistic:

- online (Algorithm 1): ``log N(s; μ_in, σ_in²) − log N(s; μ_out, σ_out²)``,
  the log-likelihood ratio of the two hypotheses;
- offline (§IV, Algorithm 1 without the IN lines): the one-sided test
  ``log Φ((s − μ_out) / σ_out) = log Pr[Z < s]``, ``Z ~ N(μ_out, σ_out²)``.
  Our statistics are larger for members, so a larger ``s`` gives a larger
  score (the paper writes it as ``1 − Pr[Z > s]``; we keep its log, which
  orders examples identically and stays finite far in the tail).

Statistics (both oriented so that members tend to be *higher*):

- causal LMs: the mean token log-probability (the LOSS statistic). Per
  example the token count is the same under every model, so the sum would
  give identical per-example Gaussian ratios; the mean keeps examples of
  different lengths on one scale, which matters once variances are pooled.
- classifiers: the logit-scaled confidence of the true label (§IV),
  ``φ(p) = log(p / (1 − p))``, computed from the logits as
  ``z_y − logsumexp_{j≠y} z_j`` so that it stays exact when ``p`` rounds to 1.

Implementation choices, where the paper leaves room:

- Means are arithmetic means (the reference code uses medians).
- Variances: with few reference models the paper estimates one global
  variance instead of one per example ("fixed variance"), for up to about
  64 shadow models, i.e. 32 IN and 32 OUT per example (LeakPro's
  implementation uses the same cut-off). With
  ``fixed_variance=None`` we pool whenever the smallest per-example IN or OUT
  count (OUT only, offline) is below :data:`FIXED_VARIANCE_BELOW` = 32. The
  pooled variance of a group is the within-example estimate
  ``Σ_i Σ_k (s_ik − μ_i)² / Σ_i (n_i − 1)``, each example keeping its own mean
  (the reference code's ``np.std`` over all values also counts the spread of
  the means between examples, which flattens every ratio). Per-example
  variances use ``ddof=1``; an example with fewer than 2 references in a group
  uses that group's pooled variance. When a group has no degree of freedom,
  IN and OUT residuals are pooled together; when neither has, the variance
  of all reference statistics is used. Variances are floored at
  :data:`VARIANCE_FLOOR` so that scores are always finite.
- An example with no IN (or no OUT) reference gets
  ``μ_in = μ_out + Δ`` (or ``μ_out = μ_in − Δ``), with ``Δ`` the mean IN−OUT
  gap over the examples that have both, and the group's pooled variance.
  Offline scoring needs only OUT, so references that never saw any example
  (all OUT) are the natural offline setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from scipy.special import log_ndtr, logsumexp

from dpaudit.attacks.mia import _Base, _require_tokens, mean_logprob
from dpaudit.attacks.scores import AttackScores
from dpaudit.attacks.scoring import ScoringModel
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, PreconditionError

FIXED_VARIANCE_BELOW = 32
"""Pool variances when an example has fewer IN or OUT references than this (Carlini et al.: < 64 models)."""

VARIANCE_FLOOR = 1e-12
"""Smallest variance used, so that identical reference statistics still give finite scores."""


# -- statistics -------------------------------------------------------------------------


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence ``φ(p_y) = log p_y − log(1 − p_y)`` of each true label.

    Carlini et al. 2022, §IV (logit scaling). With ``p = softmax(z)``,
    ``p_y / (1 − p_y) = e^{z_y} / Σ_{j≠y} e^{z_j}``, so
    ``φ = z_y − logsumexp_{j≠y} z_j``: exact even where ``p_y`` rounds to 1.

    Args:
        logits: ``(n, C)`` logits, ``C ≥ 2``.
        labels: ``(n,)`` integer labels in ``0..C−1``.

    Raises:
        DpauditError: fewer than two classes, or a label out of range.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise DpauditError(f"scaled_logit needs (n, C ≥ 2) logits, got shape {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise DpauditError(f"{labels.shape[0]} labels for {logits.shape[0]} rows of logits")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise DpauditError(f"labels must lie in 0..{logits.shape[1] - 1}")
    rows = np.arange(len(labels))
    others = logits.copy()
    others[rows, labels] = -np.inf
    return logits[rows, labels] - logsumexp(others, axis=1)


def lm_statistic(model: ScoringModel, examples: Sequence[Record], attack: str) -> np.ndarray:
    """Per example, the mean token log-probability under ``model``."""
    logprobs = model.token_logprobs([r.text for r in examples])
    _require_tokens(attack, examples, logprobs)
    return np.array([mean_logprob(lp) for lp in logprobs], dtype=np.float64)


def true_label_logits(
    model: ScoringModel, examples: Sequence[Record], attack: str
) -> tuple[np.ndarray, np.ndarray]:
    """Classifier logits ``(n, C)`` and true labels ``(n,)`` of labelled examples.

    Raises:
        DpauditError: an example has no label, or a label is out of range.
    """
    unlabelled = [r.id for r in examples if r.label is None]
    if unlabelled:
        raise PreconditionError(
            f"attack {attack!r} needs labelled examples; {len(unlabelled)} have none, "
            f"e.g. {unlabelled[0]}"
        )
    labels = np.array([r.label for r in examples], dtype=np.int64)
    logits = np.asarray(model.classify([r.text for r in examples]), dtype=np.float64)
    if len(examples) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise DpauditError(f"attack {attack!r}: labels must lie in 0..{logits.shape[1] - 1}")
    return logits, labels


# -- the maths --------------------------------------------------------------------------


def as_membership_matrix(values: object, n: int, k: int, what: str) -> np.ndarray:
    """Validate an ``(n examples × k references)`` membership matrix; return it as bool.

    ``what`` names the argument in error messages.
    """
    array = np.asarray(values)
    if array.shape != (n, k):
        raise DpauditError(f"{what} must have shape ({n}, {k}), got {array.shape}")
    if array.dtype == bool:
        return array
    if array.size and (array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all()):
        raise DpauditError(f"{what} must be booleans (or 0/1)")
    return array.astype(bool)


def _normal_logpdf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def lira_unmet(ref_in: np.ndarray, *, online: bool = True) -> str | None:
    """Why LiRA cannot score examples with this ``(n, K)`` membership, or ``None``.

    Online LiRA needs IN and OUT references for every example, offline LiRA OUT
    ones, unless some examples have both (the IN−OUT gap is then estimated from
    them). One reference model never gives an example both: LiRA needs at least 2.
    """
    inside = np.asarray(ref_in, dtype=bool)
    if inside.ndim != 2 or inside.shape[0] == 0:
        return None
    n_in = inside.sum(axis=1)
    n_out = inside.shape[1] - n_in
    missing = (n_out == 0) | ((n_in == 0) if online else False)
    if not missing.any() or ((n_in > 0) & (n_out > 0)).any():
        return None
    if inside.shape[1] < 2:
        return (
            "LiRA needs at least 2 reference models (IN and OUT for each example); "
            f"there is {inside.shape[1]}"
        )
    hint = " (references that saw no example suit online=False)" if online else ""
    return (
        f"LiRA needs {'IN and OUT' if online else 'OUT'} references for every example, "
        f"or some examples with both to estimate the IN−OUT gap from{hint}"
    )


def _group_fit(stats: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Per-example counts and means of the masked entries, their residual SS and dof."""
    count = mask.sum(axis=1)
    mean = np.where(mask, stats, 0.0).sum(axis=1) / np.maximum(count, 1)
    resid = np.where(mask, stats - mean[:, None], 0.0)
    return count, mean, float((resid**2).sum()), int(np.maximum(count - 1, 0).sum())


def _per_example_var(stats: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> np.ndarray:
    count = mask.sum(axis=1)
    ss = (np.where(mask, stats - mean[:, None], 0.0) ** 2).sum(axis=1)
    return ss / np.maximum(count - 1, 1)


def lira_scores(
    target_stat: np.ndarray,
    ref_stats: np.ndarray,
    ref_in: np.ndarray,
    *,
    online: bool = True,
    fixed_variance: bool | None = None,
) -> np.ndarray:
    """LiRA scores of ``n`` examples from ``K`` reference models (higher = member).

    Carlini et al. 2022, Algorithm 1 (online) and its offline variant (§IV); see the
    module docstring for the variance pooling and missing-group rules.

    Args:
        target_stat: ``(n,)`` statistic of each example under the target model
            (larger for members: mean token log-probability, scaled logit).
        ref_stats: ``(n, K)`` the same statistic under each reference model.
        ref_in: ``(n, K)`` bool, whether reference ``k`` trained on example ``i``.
        online: score ``log N(s; μ_in, σ_in²) − log N(s; μ_out, σ_out²)``;
            otherwise ``log Φ((s − μ_out)/σ_out)``.
        fixed_variance: one pooled variance per group (True), per-example
            variances (False), or pooled when the smallest per-example count
            used is below :data:`FIXED_VARIANCE_BELOW` (None).

    Returns:
        ``(n,)`` float64 finite scores.

    Raises:
        DpauditError: shapes disagree, values are not finite, or a needed
            group (IN online, OUT) is missing for an example while no example
            has both IN and OUT references to estimate the gap from.
    """
    s = np.asarray(target_stat, dtype=np.float64)
    if s.ndim != 1:
        raise DpauditError(f"target_stat must be 1-D, got shape {s.shape}")
    n = s.shape[0]
    ref = np.asarray(ref_stats, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[0] != n or ref.shape[1] < 1:
        raise DpauditError(f"ref_stats must have shape ({n}, K ≥ 1), got {ref.shape}")
    inside = as_membership_matrix(ref_in, n, ref.shape[1], "ref_in")
    if not (np.isfinite(s).all() and np.isfinite(ref).all()):
        raise DpauditError("LiRA statistics must be finite")
    if n == 0:
        return np.zeros(0)
    outside = ~inside
    unmet = lira_unmet(inside, online=online)
    if unmet:
        raise PreconditionError(unmet)

    n_in, mu_in, ss_in, dof_in = _group_fit(ref, inside)
    n_out, mu_out, ss_out, dof_out = _group_fit(ref, outside)
    raw_mu_in, raw_mu_out = mu_in.copy(), mu_out.copy()  # before any imputation

    missing_out = n_out == 0
    missing_in = (n_in == 0) if online else np.zeros(n, dtype=bool)
    if missing_out.any() or missing_in.any():
        both = (n_in > 0) & (n_out > 0)
        gap = float(np.mean(mu_in[both] - mu_out[both]))
        mu_out = np.where(missing_out, mu_in - gap, mu_out)
        mu_in = np.where(n_in == 0, mu_out + gap, mu_in)

    def pooled(ss: float, dof: int) -> float:
        if dof > 0:
            return ss / dof
        if dof_in + dof_out > 0:
            return (ss_in + ss_out) / (dof_in + dof_out)
        return float(np.var(ref))

    if fixed_variance is None:
        counts = np.minimum(n_in, n_out) if online else n_out
        fixed_variance = bool(counts.min() < FIXED_VARIANCE_BELOW)
    var_in = np.full(n, pooled(ss_in, dof_in))
    var_out = np.full(n, pooled(ss_out, dof_out))
    if not fixed_variance:
        var_in = np.where(n_in >= 2, _per_example_var(ref, inside, raw_mu_in), var_in)
        var_out = np.where(n_out >= 2, _per_example_var(ref, outside, raw_mu_out), var_out)
    var_in = np.maximum(var_in, VARIANCE_FLOOR)
    var_out = np.maximum(var_out, VARIANCE_FLOOR)

    if online:
        return _normal_logpdf(s, mu_in, var_in) - _normal_logpdf(s, mu_out, var_out)
    return log_ndtr((s - mu_out) / np.sqrt(var_out))


# -- the attacks ------------------------------------------------------------------------


def require_references(
    attack: str, references: Sequence[ScoringModel] | None
) -> list[ScoringModel]:
    """The reference models as a list, refusing none."""
    if not references:
        raise PreconditionError(f"attack {attack!r} needs at least one reference model")
    return list(references)


@dataclass(frozen=True)
class LiraAttack(_Base):
    """LiRA on a causal LM (Carlini et al. 2022): Gaussians fitted per example to the
    mean token log-probability under IN and OUT reference models.

    Attributes:
        online: online (IN and OUT Gaussians) or offline (OUT only) scoring.
        fixed_variance: pool variances across examples; None decides from the
            reference counts (see :func:`lira_scores`).
    """

    name: ClassVar[str] = "lira"
    task: ClassVar[str] = "causal_lm"
    needs_references: ClassVar[bool] = True
    needs_ref_membership: ClassVar[bool] = True
    needs_population: ClassVar[bool] = False
    online: bool = field(
        default=True,
        metadata={"help": "Online LiRA (IN and OUT Gaussians); false = offline (OUT only)"},
    )
    fixed_variance: bool | None = field(
        default=None,
        metadata={
            "help": "Pool the variance across examples; unset = decide from the reference counts"
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.online, bool):
            raise DpauditError(f"attack {self.name!r}: online must be true or false")
        if self.fixed_variance is not None and not isinstance(self.fixed_variance, bool):
            raise DpauditError(f"attack {self.name!r}: fixed_variance must be true, false or unset")

    def _statistic(self, model: ScoringModel, examples: Sequence[Record]) -> np.ndarray:
        return lm_statistic(model, examples, self.name)

    def unmet(
        self, *, ref_membership: np.ndarray | None = None, n_population: int = 0
    ) -> str | None:
        """IN and OUT references for every example (:func:`lira_unmet`), else why not."""
        if ref_membership is None:
            return None  # the declared need (needs_ref_membership) says so
        return lira_unmet(ref_membership, online=self.online)

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
        ref_membership: np.ndarray | None = None,
    ) -> AttackScores:
        """Score ``examples`` against ``model`` with ``references``.

        Args:
            model: the target model.
            examples: the examples to score.
            is_member: their ground-truth membership in the target's training set.
            references: K reference models.
            ref_membership: ``(len(examples), K)`` bool, whether reference ``k``
                trained on example ``i`` (rows in the order of ``examples``;
                ``membership.npy`` rows follow ``population_ids.json``).

        Raises:
            DpauditError: missing references or ``ref_membership``, or
                mismatched shapes.
        """
        self._check(examples, is_member)
        refs = require_references(self.name, references)
        if ref_membership is None:
            raise PreconditionError(
                f"attack {self.name!r} needs ref_membership: an (examples × reference models) "
                "bool matrix of which reference trained on which example"
            )
        membership = as_membership_matrix(
            ref_membership, len(examples), len(refs), f"attack {self.name!r}: ref_membership"
        )
        unmet = self.unmet(ref_membership=membership)
        if unmet:  # before any model scores a text
            raise PreconditionError(unmet)
        target = self._statistic(model, examples)
        ref_stats = np.column_stack([self._statistic(r, examples) for r in refs])
        scores = lira_scores(
            target, ref_stats, membership, online=self.online, fixed_variance=self.fixed_variance
        )
        return self._package(examples, scores, is_member)


@dataclass(frozen=True)
class ClassifierLiraAttack(LiraAttack):
    """LiRA on a sequence classifier (Carlini et al. 2022): Gaussians fitted per example
    to the logit-scaled confidence of the true label, ``log p_y − log(1 − p_y)``."""

    name: ClassVar[str] = "clf_lira"
    task: ClassVar[str] = "classification"

    def _statistic(self, model: ScoringModel, examples: Sequence[Record]) -> np.ndarray:
        return scaled_logit(*true_label_logits(model, examples, self.name))
