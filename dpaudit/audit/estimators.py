"""One-run estimators: counts of a one-run audit → an epsilon, and what that epsilon guarantees.

A one-run audit (:mod:`dpaudit.audit.one_run`) ends with three counts: ``m``
canaries, ``r`` guesses, ``v`` correct. An :class:`Estimator` turns them into
an epsilon at ``delta`` and ``confidence``; :data:`ESTIMATORS` holds them by
name (docs/formulas.md#one-run-estimators). Built in:

- ``steinke``: Steinke, Nasr, Jagielski 2023
  (:func:`~dpaudit.audit.one_run.one_run_epsilon_lower_bound`), a lower bound for
  every (eps, delta)-DP mechanism;
- ``fdp-epsdelta``: Mahloujifar, Melis, Chaudhuri 2025, the f-DP audit with the
  (eps, delta) curve (:func:`~dpaudit.audit.fdp.fdp_epsilon_lower_bound`), a lower
  bound for every (eps, delta)-DP mechanism as well;
- ``fdp-gdp``: the same audit against the mu-GDP curves, mu converted to
  epsilon at delta (:func:`~dpaudit.audit.fdp.gdp_epsilon_lower_bound`); a lower
  bound only if the mechanism's trade-off curve is Gaussian;
- ``gauss``: works on the canaries' *scores*, not on counts (``inputs =
  "scores"``): the included and excluded scores as a pair of Gaussians with one
  variance (Agrawal et al. 2026, "Let's Ask Gauss"), mu bounded by a noncentral-t
  inversion (:func:`~dpaudit.audit.gaussian_pair.gaussian_pair_epsilon_lower_bound`);
  a lower bound only if the scores are Gaussian — white-box canary statistics,
  never black-box losses, so only the white-box audits report it.

The ``guarantee`` says which (:data:`GUARANTEES`): a verdict may call only a
``lower-bound`` a violation of an (eps, delta) claim.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dpaudit.audit.bounds import check_confidence, check_count, check_delta
from dpaudit.audit.fdp import fdp_epsilon_lower_bound, gdp_epsilon_lower_bound
from dpaudit.audit.gaussian_pair import gaussian_pair_epsilon_lower_bound
from dpaudit.audit.one_run import one_run_epsilon_lower_bound
from dpaudit.errors import DpauditError
from dpaudit.registry import NAME_PATTERN, Registry

__all__ = [
    "DEFAULT_ESTIMATOR",
    "ESTIMATORS",
    "GUARANTEES",
    "Estimator",
    "estimator_names",
    "get_estimator",
    "primary_problem",
    "register_estimator",
]

DEFAULT_ESTIMATOR = "steinke"

GUARANTEES: dict[str, str] = {
    "lower-bound": "exceeds the true epsilon with probability at most beta for every "
    "(epsilon, delta)-DP mechanism",
    "gdp-lower-bound": "exceeds the true epsilon with probability at most beta if the "
    "mechanism's trade-off curve is Gaussian (mu-GDP); not for every (epsilon, delta)-DP mechanism",
    "estimate": "a point estimate without a finite-sample guarantee",
}
"""Guarantee name → what it promises (at confidence ``1 - beta``)."""

EstimatorBound = Callable[..., float]
"""``bound(*, m, r, v, delta, confidence) -> float`` (counts) or
``bound(*, scores, included, delta, confidence) -> float`` (scores)."""

INPUTS = ("counts", "scores")
"""What an estimator reads: one-run counts (m, r, v) or the canaries' scores and coins."""


@dataclass(frozen=True)
class Estimator:
    """One way to turn one-run counts into an epsilon.

    Attributes:
        name: registry name (letters, digits, ``_ . + -``).
        guarantee: a key of :data:`GUARANTEES`: ``"lower-bound"`` (valid for
            every (eps, delta)-DP mechanism at ``1 - beta``), ``"gdp-lower-bound"``
            (valid when the trade-off curve is Gaussian) or ``"estimate"``.
        description: one line, with the paper.
        bound: ``bound(*, m, r, v, delta, confidence) -> float``, called by
            :meth:`epsilon` with validated arguments; for ``inputs = "scores"``,
            ``bound(*, scores, included, delta, confidence) -> float``, called by
            :meth:`epsilon_from_scores`.
        inputs: ``"counts"`` (the default) or ``"scores"`` (:data:`INPUTS`).
    """

    name: str
    guarantee: str
    description: str
    bound: EstimatorBound = field(repr=False, compare=False)
    inputs: str = "counts"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise DpauditError(f"estimator name must be a plain name, got {self.name!r}")
        if self.guarantee not in GUARANTEES:
            raise DpauditError(
                f"estimator {self.name!r}: guarantee must be one of {', '.join(GUARANTEES)}, "
                f"got {self.guarantee!r}"
            )
        if not isinstance(self.description, str) or not self.description:
            raise DpauditError(f"estimator {self.name!r}: description must be a non-empty string")
        if not callable(self.bound):
            raise DpauditError(f"estimator {self.name!r}: bound must be callable")
        if self.inputs not in INPUTS:
            raise DpauditError(
                f"estimator {self.name!r}: inputs must be one of {', '.join(INPUTS)}, got {self.inputs!r}"
            )

    def _needs(self, inputs: str) -> None:
        if self.inputs != inputs:
            what = "canary scores and coins" if self.inputs == "scores" else "one-run counts"
            raise DpauditError(
                f"estimator {self.name!r} works on {what}, not on "
                f"{inputs}" + (" (white-box audits report it)" if self.inputs == "scores" else "")
            )

    def epsilon(self, *, m: int, r: int, v: int, delta: float, confidence: float) -> float:
        """The epsilon of ``v`` correct out of ``r`` guesses on ``m`` canaries.

        Args:
            m: canaries (each included by a fair coin); r: guesses, abstentions
                excluded; v: correct guesses; ``v <= r <= m``.
            delta: delta of the DP claim, in ``[0, 1)``.
            confidence: ``1 - beta``, in ``(0, 1)``.

        Returns:
            a finite epsilon ``>= 0``.

        Raises:
            DpauditError: an argument out of range, the estimator is not
                defined there (``fdp-gdp`` at delta = 0), or it reads scores.
        """
        self._needs("counts")
        m, r, v = check_count("m", m), check_count("r", r), check_count("v", v)
        if r > m:
            raise DpauditError(f"r (guesses) must be at most m (canaries), got r={r}, m={m}")
        if v > r:
            raise DpauditError(f"v (correct guesses) must be at most r (guesses), got v={v}, r={r}")
        delta, confidence = check_delta(delta), check_confidence(confidence)
        value = float(self.bound(m=m, r=r, v=v, delta=delta, confidence=confidence))
        return self._checked(value)

    def _checked(self, value: float) -> float:
        if not 0.0 <= value < math.inf:
            raise DpauditError(
                f"estimator {self.name!r} returned {value!r}, not a finite epsilon >= 0"
            )
        return value

    def epsilon_from_scores(
        self, scores: Any, included: Any, *, delta: float, confidence: float
    ) -> float:
        """The epsilon of a score-based estimator (``inputs = "scores"``).

        Args:
            scores: one statistic per canary, shape (m,), larger = more likely included.
            included: the canaries' coins, shape (m,).
            delta: in ``[0, 1)``; confidence: ``1 - beta``, in ``(0, 1)``.

        Raises:
            DpauditError: a counts estimator, bad scores or coins, or an argument
                out of range.
        """
        self._needs("scores")
        delta, confidence = check_delta(delta), check_confidence(confidence)
        value = float(
            self.bound(scores=scores, included=included, delta=delta, confidence=confidence)
        )
        return self._checked(value)

    def ceiling(self, *, m: int, r: int, delta: float, confidence: float) -> float:
        """The largest epsilon this estimator can give with ``r`` guesses: :meth:`epsilon` at ``v = r``."""
        self._needs("counts")
        return self.epsilon(m=m, r=r, v=r, delta=delta, confidence=confidence)


ESTIMATORS: Registry[Estimator] = Registry("one-run estimator")
"""``audit.estimator`` name → :class:`Estimator`."""


def register_estimator(est: Estimator, *, replace: bool = False) -> Estimator:
    """Register ``est`` under ``est.name``.

    Raises:
        DpauditError: the name is taken by another estimator (unless ``replace``).
    """
    if not isinstance(est, Estimator):
        raise DpauditError(f"register_estimator needs an Estimator, got {type(est).__name__}")
    return ESTIMATORS.register(est.name, est, replace=replace)


def estimator_names(*, scores: bool) -> tuple[str, ...]:
    """Registered names, in order: the counts estimators, and the score-based ones if ``scores``.

    Black-box audits (guesses from model losses) default to ``scores=False``;
    white-box gradient-canary audits, whose statistics are Gaussian sums, to ``True``.
    """
    return tuple(n for n, e in ESTIMATORS.items() if scores or e.inputs == "counts")


def primary_problem(name: str) -> str | None:
    """Why the estimator ``name`` cannot be the primary one (the one that decides a verdict), or None.

    The primary estimator must read counts (it has a ceiling) and be a ``lower-bound``
    for every (eps, delta)-DP mechanism.

    Raises:
        DpauditError: unknown name.
    """
    est = get_estimator(name)
    if est.inputs != "counts":
        return f"{name!r} reads canary scores (white-box audits only) and has no ceiling"
    if est.guarantee != "lower-bound":
        return (
            f"{name!r} is not a lower bound for every DP mechanism ({est.guarantee}), so it "
            "cannot decide a violation"
        )
    return None


def get_estimator(name: str) -> Estimator:
    """The estimator registered as ``name``.

    Raises:
        DpauditError: unknown name (with a did-you-mean).
    """
    return ESTIMATORS.get(name)


@functools.lru_cache(maxsize=1 << 16)
def _steinke(*, m: int, r: int, v: int, delta: float, confidence: float) -> float:
    return one_run_epsilon_lower_bound(m=m, r=r, v=v, delta=delta, confidence=confidence)


register_estimator(
    Estimator(
        name="steinke",
        guarantee="lower-bound",
        description="Steinke, Nasr, Jagielski 2023 (NeurIPS): binomial tail plus 2*m*delta term",
        bound=_steinke,
    )
)
register_estimator(
    Estimator(
        name="fdp-epsdelta",
        guarantee="lower-bound",
        description=(
            "Mahloujifar, Melis, Chaudhuri 2025 (ICML): one-run f-DP audit with the "
            "(epsilon, delta) trade-off curve"
        ),
        bound=fdp_epsilon_lower_bound,
    )
)
register_estimator(
    Estimator(
        name="fdp-gdp",
        guarantee="gdp-lower-bound",
        description=(
            "Mahloujifar, Melis, Chaudhuri 2025 (ICML): one-run f-DP audit against mu-GDP, "
            "mu converted to epsilon at delta"
        ),
        bound=gdp_epsilon_lower_bound,
    )
)
register_estimator(
    Estimator(
        name="gauss",
        guarantee="gdp-lower-bound",
        description=(
            "Agrawal et al. 2026 (Let's Ask Gauss): white-box canary scores as an equal-variance "
            "Gaussian pair, mu by noncentral-t inversion, converted to epsilon at delta"
        ),
        bound=gaussian_pair_epsilon_lower_bound,
        inputs="scores",
    )
)
