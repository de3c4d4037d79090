"""Canary exposure (Carlini, Liu, Erlingsson, Kos, Song 2019, "The Secret Sharer").

Notation of the paper (USENIX Security 2019, Sec. 4, "Measuring unintended
memorization"): a canary is ``prefix + s[r]`` with the secret ``r`` drawn from a
randomness space ``R``; ``Px(x) = -log2 Pr(x | model)`` is its log-perplexity.

- **Rank** (Sec. 4, definition of rank):
  ``rank(s[r]) = |{r' in R : Px(s[r']) <= Px(s[r])}|``, 1-based; the secret
  counts itself and the most likely candidate has rank 1.
- **Exposure** (Sec. 4, definition of exposure):
  ``exposure(s[r]) = log2|R| - log2 rank(s[r])``, in bits; 0 for the least
  likely candidate, ``log2|R|`` when the secret is the most likely one.
- **Extrapolation** (Sec. 4, "Efficiently approximating exposure", approximation
  by distribution modeling): for spaces too large to enumerate, fit a
  skew-normal density ``rho`` to the log-perplexities of candidates sampled
  uniformly from ``R`` and read
  ``exposure ~= -log2 Integral_{-inf}^{Px(s[r])} rho(x) dx = -log2 CDF(Px(s[r]))``
  (as TensorFlow Privacy's ``compute_exposure_extrapolation`` does).
- **Sampling** (same subsection, approximation by sampling): the same CDF estimated
  by the empirical fraction of sampled candidates that are at least as likely.

Tie rule (conservative, never overstates exposure): any other candidate whose
log-perplexity is *equal* to the secret's ranks ahead of it. This is the
paper's ``<=``: a secret tied with ``k`` other candidates gets the rank of the
last of the ``k + 1``.

Log-perplexities may be in any log base (natural or bits): rank and the fitted
CDF are invariant to the scale; exposure itself is always in bits.

Pure functions first; :func:`compute_exposure` is a model-free driver that calls
back into a scorer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from dpaudit.errors import DpauditError, PreconditionError

__all__ = [
    "MIN_FIT_SAMPLES",
    "ExposureEstimate",
    "compute_exposure",
    "exact_exposure",
    "exposure_by_repetition",
    "exposure_from_rank",
    "exposure_rank",
    "extrapolated_exposure",
    "fit_skewnorm",
    "sampled_exposure",
]

MIN_FIT_SAMPLES = 100


def _vector(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise DpauditError(f"{what} must be finite")
    return array


def _scalar_or_array(values: np.ndarray, like: Any) -> float | np.ndarray:
    return float(values[0]) if np.ndim(like) == 0 else values.reshape(np.shape(like))


def exposure_from_rank(rank: Any, space_size: int) -> float | np.ndarray:
    """``log2|R| - log2 rank`` (Carlini et al. 2019, Sec. 4, definition of exposure).

    Raises:
        DpauditError: a rank outside ``[1, space_size]``.
    """
    r = np.asarray(rank, dtype=np.float64).reshape(-1)
    if space_size < 1 or (r < 1).any() or (r > space_size).any():
        raise DpauditError(f"rank must lie in [1, |R|] = [1, {space_size}], got {rank}")
    return _scalar_or_array(math.log2(space_size) - np.log2(r), rank)


def exposure_rank(
    secret_logppl: Any, candidate_logppl: Any, *, includes_secret: bool = True
) -> int | np.ndarray:
    """Rank of each secret among the candidates, by ascending log-perplexity.

    Carlini et al. 2019, Sec. 4 (definition of rank), with the conservative tie
    rule of this module: ``rank = #{candidates with Px <= Px(secret)}``, plus 1
    for the secret itself when it is not among ``candidate_logppl``.
    Vectorised: one sort of the candidates, one binary search per secret.

    Args:
        secret_logppl: log-perplexity of one secret, or an array of them.
        candidate_logppl: log-perplexities of the candidates of ``R``.
        includes_secret: True when ``candidate_logppl`` holds the secret's own
            value (the whole space ``R``); pass the very value from that array
            as ``secret_logppl`` so that the secret finds itself. False when it
            holds the other candidates only (``R`` minus the secret).

    Raises:
        DpauditError: non-finite input, or ``includes_secret`` while a secret
            is below every candidate (it cannot then be in the array).
    """
    secrets = _vector(secret_logppl, "secret log-perplexity")
    candidates = np.sort(_vector(candidate_logppl, "candidate log-perplexities"))
    at_most = np.searchsorted(candidates, secrets, side="right")
    if includes_secret:
        if (at_most == 0).any():
            raise DpauditError(
                "a secret's log-perplexity is below every candidate, so the candidates do not "
                "include it; pass the value from the candidate array or includes_secret=False"
            )
        ranks = at_most
    else:
        ranks = at_most + 1
    return int(ranks[0]) if np.ndim(secret_logppl) == 0 else ranks.reshape(np.shape(secret_logppl))


def exact_exposure(
    secret_logppl: Any,
    candidate_logppl: Any,
    space_size: int,
    *,
    includes_secret: bool = True,
) -> float | np.ndarray:
    """Exposure by exhaustive ranking over the whole space (Carlini et al. 2019, Sec. 4).

    ``log2|R| - log2 rank`` with :func:`exposure_rank`'s conservative tie rule.

    Args:
        secret_logppl: log-perplexity of the secret (or an array of secrets).
        candidate_logppl: log-perplexities of every member of ``R``
            (``includes_secret=True``, length ``|R|``) or of every member but
            the secret (``includes_secret=False``, length ``|R| - 1``).
        space_size: ``|R|``; checked against the number of candidates so that
            a truncated enumeration is refused.
        includes_secret: see :func:`exposure_rank`.

    Raises:
        DpauditError: the candidate count does not match ``space_size``.
    """
    n = np.size(candidate_logppl)
    expected = space_size if includes_secret else space_size - 1
    if n != expected:
        raise DpauditError(
            f"exact exposure needs all of R: |R| = {space_size} needs {expected} candidate "
            f"log-perplexities (includes_secret={includes_secret}), got {n}"
        )
    ranks = exposure_rank(secret_logppl, candidate_logppl, includes_secret=includes_secret)
    return exposure_from_rank(ranks, space_size)


def fit_skewnorm(sampled_logppl: Any) -> tuple[float, float, float]:
    """Maximum-likelihood skew-normal fit ``(shape a, loc, scale)`` (``scipy.stats.skewnorm``).

    The model of Carlini et al. 2019 (Sec. 4, "Efficiently approximating
    exposure", distribution modeling) for the log-perplexities of random
    candidates.

    Raises:
        DpauditError: fewer than :data:`MIN_FIT_SAMPLES` values, or constant values.
    """
    x = _vector(sampled_logppl, "sampled log-perplexities")
    if len(x) < MIN_FIT_SAMPLES:
        raise DpauditError(f"a skew-normal fit needs >= {MIN_FIT_SAMPLES} samples, got {len(x)}")
    if np.ptp(x) == 0:
        raise PreconditionError("sampled log-perplexities are all equal; cannot fit a distribution")
    a, loc, scale = stats.skewnorm.fit(x)
    return float(a), float(loc), float(scale)


def extrapolated_exposure(
    secret_logppl: Any,
    sampled_logppl: Any = None,
    *,
    space_size: int | None = None,
    fit: tuple[float, float, float] | None = None,
) -> float | np.ndarray:
    """Exposure from a skew-normal fit, ``-log2 CDF(Px(secret))``.

    Carlini et al. 2019, Sec. 4, "Efficiently approximating exposure"
    (approximation by distribution modeling).

    ``CDF(x) * |R|`` estimates the number of candidates at least as likely as
    ``x``, so ``-log2 CDF = log2|R| - log2 rank`` in expectation. Computed from
    ``skewnorm.logcdf``, so it stays finite far in the tail.

    Accuracy, measured in ``tests/test_exposure.py`` against exact ranks over
    ~10^6 candidates with the fit on 10^4 uniform samples:

    - candidates truly skew-normal: within 0.7 bits at every planted rank
      from 3 to 10^5 (within ~1.2 bits over other seeds); at rank 1 the exact
      exposure saturates at ``log2|R|`` while ``-log2 CDF(min)`` is an order
      statistic with ~1.9 bits of spread, hence the clip to ``space_size``.
    - a discrete space (6 independent "tokens" of 10 symbols, 10^6 secrets):
      within 0.6 bits while ~100 or more sampled candidates are more likely
      than the secret (here exposure <= 6.6 bits), but the fitted tail puts
      mass below the true minimum, so it **understates** exposure further
      out: by 0.7-1.7 bits at 10 bits of exposure (~10 samples more likely),
      2-3 bits at 13 bits and 5-8 bits at the top rank (20 bits). Bimodal or
      gamma-like candidates do worse (3-10 bits short at the top).

    Understating exposure is not conservative for a privacy gate: enumerate
    exactly whenever ``|R|`` allows and compare with :func:`sampled_exposure`.

    Args:
        secret_logppl: log-perplexity of the secret, or an array of them.
        sampled_logppl: log-perplexities of candidates sampled uniformly from
            ``R`` (not the secret); ignored when ``fit`` is given.
        space_size: ``|R|``, to clip the estimate to its maximum ``log2|R|``.
        fit: a :func:`fit_skewnorm` result to reuse across secrets.
    """
    if fit is None:
        if sampled_logppl is None:
            raise DpauditError("extrapolated exposure needs sampled_logppl or a fit")
        fit = fit_skewnorm(sampled_logppl)
    a, loc, scale = fit
    s = _vector(secret_logppl, "secret log-perplexity")
    bits = -stats.skewnorm.logcdf(s, a, loc=loc, scale=scale) / math.log(2)
    bits = np.maximum(bits, 0.0)
    if space_size is not None:
        bits = np.minimum(bits, math.log2(space_size))
    return _scalar_or_array(bits, secret_logppl)


def sampled_exposure(secret_logppl: Any, sampled_logppl: Any) -> float | np.ndarray:
    """Exposure from the empirical CDF of sampled candidates.

    Carlini et al. 2019, Sec. 4, "Efficiently approximating exposure"
    (approximation by sampling).

    ``-log2((1 + #{samples with Px <= Px(secret)}) / (n + 1))``: the sampling
    approximation, with the secret counted as one more candidate (the same
    conservative tie rule). It cannot exceed ``log2(n + 1)``: use it to check
    :func:`extrapolated_exposure` in the bulk, not in the tail.
    """
    samples = _vector(sampled_logppl, "sampled log-perplexities")
    ranks = np.asarray(exposure_rank(secret_logppl, samples, includes_secret=False))
    bits = np.log2(len(samples) + 1) - np.log2(ranks.astype(np.float64))
    return float(bits) if np.ndim(secret_logppl) == 0 else bits


def exposure_by_repetition(
    exposures: Mapping[str, float], repetitions: Mapping[str, int]
) -> dict[int, dict[str, float]]:
    """Summary of canary exposures per number of insertions.

    The exposure-versus-insertions view of Carlini et al. 2019.

    Args:
        exposures: ``{canary id: exposure in bits}``.
        repetitions: ``{canary id: times inserted}``; must cover every id of
            ``exposures`` (extra ids are ignored).

    Returns:
        ``{repetitions: {"mean", "median", "min", "max", "n"}}`` sorted by repetitions.

    Raises:
        DpauditError: a canary without a repetition count.
    """
    missing = sorted(set(exposures) - set(repetitions))
    if missing:
        raise DpauditError(f"no repetition count for canaries {missing[:5]}")
    groups: dict[int, list[float]] = {}
    for cid, value in exposures.items():
        groups.setdefault(int(repetitions[cid]), []).append(float(value))
    return {
        reps: {
            "mean": float(np.mean(v)),
            "median": float(np.median(v)),
            "min": float(np.min(v)),
            "max": float(np.max(v)),
            "n": len(v),
        }
        for reps, v in sorted(groups.items())
    }


@dataclass(frozen=True)
class ExposureEstimate:
    """Exposure of one secret, with how it was obtained (no secret text).

    Attributes:
        exposure: bits.
        method: ``"exact"`` (enumeration) or ``"extrapolated"`` (skew-normal).
        logppl: the secret's log-perplexity.
        space_size: ``|R|``.
        n_candidates: candidates scored (``|R|`` or the sample size).
        rank: exact rank (``"exact"`` only).
        fit: skew-normal ``(a, loc, scale)`` (``"extrapolated"`` only).
        sampled: the non-parametric :func:`sampled_exposure` from the same
            samples (``"extrapolated"`` only); it should agree with
            ``exposure`` while the secret lies inside the sampled range, and
            a gap there flags a poor fit.
    """

    exposure: float
    method: str
    logppl: float
    space_size: int
    n_candidates: int
    rank: int | None = None
    fit: tuple[float, float, float] | None = None
    sampled: float | None = None


def _batches(items: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def compute_exposure(
    logppl_fn: Callable[[Sequence[str]], Any],
    secrets: Sequence[str],
    *,
    space_size: int,
    enumerate_fn: Callable[[], Iterable[str]],
    sample_fn: Callable[[int, np.random.Generator], Sequence[str]],
    limit: int,
    n_samples: int,
    rng: np.random.Generator,
    batch_size: int = 1024,
) -> list[ExposureEstimate]:
    """Exposure of secrets from one space, exact when ``|R| <= limit``, else extrapolated.

    Model-free: ``logppl_fn`` maps secrets to the log-perplexity of
    ``prefix + secret`` (the caller binds the model and the prefix). Exact
    mode streams the enumeration in batches and never holds it in memory; a
    candidate equal (as a string) to a secret is recognised as that secret
    and not compared with it, so the rank does not depend on scoring the
    secret bit-identically twice. Other candidates use the ``<=`` tie rule.

    Args:
        logppl_fn: ``secrets -> array`` of log-perplexities.
        secrets: the secrets (all from the same space and prefix).
        space_size: ``|R|``.
        enumerate_fn: yields every secret of ``R`` once.
        sample_fn: ``(k, rng) -> k`` secrets drawn uniformly from ``R``.
        limit: largest ``|R|`` enumerated exactly.
        n_samples: candidates sampled for the skew-normal fit.
        rng: randomness for ``sample_fn``.
        batch_size: candidates per ``logppl_fn`` call.

    Returns:
        One :class:`ExposureEstimate` per secret, in order.
    """
    secrets = list(secrets)
    if len(set(secrets)) != len(secrets):
        raise DpauditError("compute_exposure got the same secret twice; score it once")
    if not secrets:
        return []
    if space_size > limit and n_samples < MIN_FIT_SAMPLES:
        raise DpauditError(f"extrapolation needs n_samples >= {MIN_FIT_SAMPLES}, got {n_samples}")
    own = _vector(logppl_fn(secrets), "secret log-perplexity")
    if len(own) != len(secrets):
        raise DpauditError(f"logppl_fn returned {len(own)} values for {len(secrets)} secrets")
    position = {s: i for i, s in enumerate(secrets)}
    if space_size <= limit:
        at_most = np.zeros(len(secrets), dtype=np.int64)
        seen = 0
        for batch in _batches(enumerate_fn(), batch_size):
            raw = _vector(logppl_fn(batch), "candidate log-perplexities")
            if len(raw) != len(batch):
                raise DpauditError(f"logppl_fn returned {len(raw)} values for {len(batch)} secrets")
            at_most += np.searchsorted(np.sort(raw), own, side="right")
            for j, cand in enumerate(batch):
                i = position.get(cand)
                if i is not None and raw[j] <= own[i]:
                    at_most[i] -= 1  # the secret itself: it is the "+ 1" below
            seen += len(batch)
        if seen != space_size:
            raise DpauditError(
                f"enumeration yielded {seen} candidates, expected |R| = {space_size}"
            )
        ranks = at_most + 1
        bits = np.asarray(exposure_from_rank(ranks, space_size))  # an array: ranks is one
        return [
            ExposureEstimate(
                exposure=float(bits[i]),
                method="exact",
                logppl=float(own[i]),
                space_size=space_size,
                n_candidates=seen,
                rank=int(ranks[i]),
            )
            for i in range(len(secrets))
        ]
    sample = [s for s in sample_fn(n_samples, rng) if s not in position]
    values = np.concatenate(
        [_vector(logppl_fn(b), "sampled log-perplexities") for b in _batches(sample, batch_size)]
    )
    fit = fit_skewnorm(values)
    bits = np.atleast_1d(extrapolated_exposure(own, space_size=space_size, fit=fit))
    empirical = np.atleast_1d(sampled_exposure(own, values))
    return [
        ExposureEstimate(
            exposure=float(bits[i]),
            method="extrapolated",
            logppl=float(own[i]),
            space_size=space_size,
            n_candidates=len(values),
            fit=fit,
            sampled=float(empirical[i]),
        )
        for i in range(len(secrets))
    ]
