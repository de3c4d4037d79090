"""Privacy accountants for Poisson-subsampled Gaussian DP-SGD (add/remove adjacency).

Every accountant answers one question: after ``steps`` steps of DP-SGD with
sampling rate q and noise multiplier σ, what is ε at a given δ? They live in
the registry :data:`ACCOUNTANTS` (a :class:`~dpaudit.registry.Registry`); the
built-in ones are:

========== ========== ==================================================
name       rigorous   method
========== ========== ==================================================
rdp        yes        Rényi DP (Mironov et al. 2019), Opacus
prv        yes        privacy random variables (Gopi et al. 2021), Opacus
pld        yes        privacy loss distributions (dp_accounting); the reference
gdp        no         Gaussian DP central limit theorem (Dong, Roth, Su)
edgeworth  no         Edgeworth expansion (Wang et al. 2022; EW-Tune)
========== ========== ==================================================

Approximate accountants can state an ε *below* the true one, so
:func:`calibrate_noise` refuses them unless ``allow_approximate=True``.
Heavy libraries (Opacus imports torch) are imported inside the functions.

Failures and time limits: one accountant query (ε at one σ, or the σ search
of :meth:`Accountant.noise_for`) either answers or fails with an
:class:`AccountantError` naming the accountant and the reason; any exception
inside it counts, and inside the σ search it fails the search (it is never
read as "ε above the target"). :func:`compute_epsilons`,
:func:`calibrate_noise` and :func:`accountant_report` run each query in a
worker thread and wait at most ``time_limit`` seconds
(:data:`DEFAULT_TIME_LIMIT`); a slower query is reported as an
:class:`AccountantTimeout` and abandoned (its σ search stops before its next
ε evaluation), and the other accountants still answer.

A new accountant is one call, :func:`register_accountant`; it is then accepted
by ``train.accountant``, listed in every privacy ledger written afterwards,
labelled rigorous or approximate in the report (from its ``rigorous``
declaration) and read by the gate.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
import numbers
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dpaudit.errors import DpauditError
from dpaudit.registry import Registry

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "AccountantError",
    "AccountantTimeout",
    "DEFAULT_TIME_LIMIT",
    "EdgeworthAccountant",
    "GdpAccountant",
    "PldAccountant",
    "PrivacyLedger",
    "PrvAccountant",
    "RDP_ORDERS",
    "RdpAccountant",
    "accountant_names",
    "accountant_report",
    "calibrate_noise",
    "compute_epsilons",
    "get_accountant",
    "is_rigorous",
    "register_accountant",
]

#: RDP orders: Opacus' default grid plus orders close to 1 (for large ε) and
#: large orders up to 1024 (for small ε, where the optimum moves to high α).
RDP_ORDERS: tuple[float, ...] = tuple(
    sorted(
        {1 + x / 100 for x in range(1, 10)}
        | {1 + x / 10 for x in range(1, 100)}
        | set(range(11, 64))
        | {64, 72, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 512, 768, 1024}
    )
)


class AccountantError(DpauditError):
    """An accountant could not compute ε for these parameters (e.g. PRV at large ε)."""


class AccountantTimeout(AccountantError):
    """An accountant query ran past its time limit and was abandoned."""


DEFAULT_TIME_LIMIT: float = 60.0
"""Seconds one accountant query may take in :func:`compute_epsilons`,
:func:`calibrate_noise` and :func:`accountant_report` (``dpaudit accountant
--time-limit``). The slowest built-in queries that answer take about 15 s
(the PLD σ search for ε = 1000 at q = 0.01, T = 1000); ``None`` disables the
limit."""


# ----------------------------------------------------------------------------- time limits
class _Deadline:
    """When a query's waiter gives up; read by the query's own thread between ε evaluations."""

    def __init__(self, seconds: float, message: str) -> None:
        self.end = time.monotonic() + seconds
        self.message = message
        self.abandoned = threading.Event()

    def passed(self) -> bool:
        return self.abandoned.is_set() or time.monotonic() >= self.end


_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "dpaudit_accountant_deadline", default=None
)


def _check_deadline() -> None:
    """Raise :class:`AccountantTimeout` when the query running in this thread is past its limit."""
    deadline = _DEADLINE.get()
    if deadline is not None and deadline.passed():
        raise AccountantTimeout(deadline.message)


def _reason(exc: BaseException) -> str:
    """One line saying why ``exc`` was raised."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DpauditError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_failure(name: str, compute: Callable[[], float]) -> float:
    """``compute()``; any exception but an :class:`AccountantError` becomes one naming ``name``."""
    try:
        return compute()
    except AccountantError:
        raise
    except Exception as exc:  # a plug-in's or a library's error: this accountant failed
        raise AccountantError(f"{name} failed: {_reason(exc)}") from exc


def _bounded(name: str, what: str, compute: Callable[[], float], time_limit: float | None) -> float:
    """One accountant query, ``compute()``, waited on for at most ``time_limit`` seconds.

    ``None``: run it here, without a limit. Otherwise it runs in a daemon
    thread; past the limit the caller gets an :class:`AccountantTimeout` at
    once and the thread is abandoned (a σ search stops before its next ε
    evaluation; one evaluation under way runs to its end).

    Raises:
        AccountantError: the query failed (any exception) or timed out.
    """
    if time_limit is None:
        return _as_failure(name, compute)
    deadline = _Deadline(
        time_limit,
        f"{name}: no answer within {time_limit:g} s for {what}; abandoned "
        "(allow more time with time_limit / --time-limit)",
    )
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        _DEADLINE.set(deadline)
        try:
            box["value"] = _as_failure(name, compute)
        except BaseException as exc:  # handed to the waiting caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=f"dpaudit-accountant-{name}", daemon=True).start()
    if not done.wait(time_limit):
        deadline.abandoned.set()
        raise AccountantTimeout(deadline.message)
    if "error" in box:
        raise box["error"]
    return float(box["value"])


# ----------------------------------------------------------------------------- validation
def _number(name: str, value: Any, ok: Callable[[float], bool], what: str) -> float:
    """``float(value)``; a :class:`DpauditError` naming ``name`` unless it is a number ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(float(value)):
        raise DpauditError(f"{name} must be {what}, got {value!r}")
    return float(value)


def _check_rate(q: Any) -> float:
    return _number("sampling_rate", q, lambda x: 0 < x <= 1, "in (0, 1]")


def _check_sigma(sigma: Any) -> float:
    return _number("noise_multiplier", sigma, lambda x: 0 <= x < math.inf, "finite and >= 0")


def _check_delta(delta: Any) -> float:
    return _number("delta", delta, lambda x: 0 < x < 1, "in (0, 1)")


def _check_epsilon(eps: Any) -> float:
    return _number("epsilon", eps, lambda x: 0 < x < math.inf, "finite and > 0")


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise DpauditError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def _check_time_limit(seconds: Any) -> float | None:
    if seconds is None:
        return None
    return _number("time_limit", seconds, lambda x: 0 < x < math.inf, "None or seconds > 0")


# ----------------------------------------------------------------------------- interface
class Accountant(ABC):
    """ε of ``steps`` Poisson-subsampled Gaussian steps (add/remove adjacency).

    Subclasses set ``name``, ``rigorous`` and ``description`` and implement
    :meth:`_epsilon` for σ > 0; σ = 0 (no noise) always gives ε = ∞.

    Args:
        sampling_rate: Poisson sampling rate q, 0 < q ≤ 1.
        noise_multiplier: σ = noise std / clipping norm, σ ≥ 0.
        steps: number of steps T ≥ 1.
    """

    name: ClassVar[str]
    rigorous: ClassVar[bool]
    description: ClassVar[str]

    def __init__(self, *, sampling_rate: float, noise_multiplier: float, steps: int) -> None:
        self.sampling_rate = _check_rate(sampling_rate)
        self.noise_multiplier = _check_sigma(noise_multiplier)
        self.steps = _check_steps(steps)

    def epsilon(self, delta: float) -> float:
        """ε at ``delta`` (``math.inf`` without noise).

        Raises:
            AccountantError: the accountant cannot compute it, or gave NaN or a
                negative ε; :class:`AccountantTimeout` when called inside a
                query whose time limit has passed.
        """
        delta = _check_delta(delta)
        _check_deadline()
        if self.noise_multiplier == 0:
            return math.inf
        eps = float(self._epsilon(delta))
        if math.isnan(eps) or eps < 0:
            raise AccountantError(
                f"{self.name} gave epsilon = {eps!r} for q={self.sampling_rate:g}, "
                f"sigma={self.noise_multiplier:g}, steps={self.steps}, delta={delta:g}"
            )
        return eps

    @abstractmethod
    def _epsilon(self, delta: float) -> float:
        """ε at a validated ``delta`` for σ > 0."""

    @classmethod
    def noise_for(
        cls,
        epsilon: float,
        delta: float,
        *,
        sampling_rate: float,
        steps: int,
        rtol: float = 1e-4,
        time_limit: float | None = None,
        **options: Any,
    ) -> float:
        """Smallest σ (to relative tolerance ``rtol``) whose ε(δ) ≤ ``epsilon``.

        ε decreases with σ. The search starts at the GDP estimate of σ (closed
        form, usually within tens of percent), widens a bracket by factors of
        1.5, then runs Brent's method on log ε(σ) − log ``epsilon`` in log σ and
        returns σ at most ``rtol``/2 above the root, checked to meet the target.

        A failure to compute ε at a σ the search needs (any exception, e.g.
        PRV's refusal of a grid too large) fails the search with that reason:
        it says nothing about which side of the target ε lies. (Read as
        "above", it sent the search to the edge of PRV's domain: σ = 0.172 for
        ε = 1000 at q = 0.01, T = 1000, where PRV's ε is 339 and PLD's σ is
        0.1085, after 7 minutes.)

        Args:
            epsilon: target ε > 0.
            delta: δ in (0, 1).
            sampling_rate: q.
            steps: T.
            rtol: relative accuracy of σ.
            time_limit: seconds to wait for the search (``None``: no limit).
            **options: passed to the constructor (e.g. ``eps_error`` for prv).

        Raises:
            AccountantError: no σ ≤ 1e4 meets the target, or ε could not be
                computed at a σ the search needed;
                :class:`AccountantTimeout` past ``time_limit``.
        """
        epsilon, delta = _check_epsilon(epsilon), _check_delta(delta)
        q, steps = _check_rate(sampling_rate), _check_steps(steps)
        limit = _check_time_limit(time_limit)
        what = f"the noise multiplier for epsilon = {epsilon:g} (q={q:g}, steps={steps}, delta={delta:g})"
        search = functools.partial(cls._search_noise, epsilon, delta, q, steps, rtol, options)
        return _bounded(cls.name, what, search, limit)

    @classmethod
    def _search_noise(
        cls, epsilon: float, delta: float, q: float, steps: int, rtol: float, options: Any
    ) -> float:
        """The search of :meth:`noise_for` on validated arguments."""
        from scipy import optimize

        from dpaudit.edgeworth import gdp_noise

        cache: dict[float, float] = {}

        def excess(t: float) -> float:
            """log ε(e^t) − log ε_target: > 0 above the target (capped at ±50; 50 when ε is ∞)."""
            if t not in cache:
                sigma = math.exp(t)
                try:
                    acc = cls(sampling_rate=q, noise_multiplier=sigma, steps=steps, **options)
                    eps = acc.epsilon(delta)
                except AccountantTimeout:
                    raise
                except Exception as exc:  # unknown side of the target: the search fails
                    raise AccountantError(
                        f"{cls.name}: cannot find the noise multiplier for epsilon = {epsilon:g}: "
                        f"epsilon at sigma = {sigma:.6g} failed ({_reason(exc)})"
                    ) from exc
                cache[t] = min(50.0, math.log(eps / epsilon)) if eps > 0 else -50.0
            return cache[t]

        step, hi = math.log(1.5), math.log(gdp_noise(epsilon, delta, q, steps))
        lo = hi - step
        while excess(hi) > 0:
            lo, hi = hi, hi + step
            if hi > math.log(1e4):
                raise AccountantError(
                    f"{cls.name}: no noise multiplier up to 1e4 reaches epsilon = {epsilon:g}"
                )
        while excess(lo) <= 0:
            lo, hi = lo - step, lo
            if lo < math.log(1e-6):
                return math.exp(hi)
        if excess(hi) < 0:
            xtol = rtol / 4
            root = optimize.brentq(excess, lo, hi, xtol=xtol)
            t = min(hi, root + 1.01 * xtol)  # Brent's last bracket is within xtol of root
            while excess(t) > 0 and t < hi:  # only if ε(σ) is not monotone at this scale
                t = min(hi, t + xtol)
            hi = t
        return math.exp(hi)


# ----------------------------------------------------------------------------- rdp
class RdpAccountant(Accountant):
    """Rényi-DP accountant (Opacus ``accountants.analysis.rdp``).

    RDP of the sampled Gaussian mechanism at order α from Mironov, Talwar,
    Zhang (2019), "Rényi Differential Privacy of the Sampled Gaussian
    Mechanism", Sec. 3 (A_α for integer and fractional α); T steps compose
    additively (Mironov 2017, Prop. 1); ε(δ) = min_α RDP_α·T − (log δ + log α)/(α−1)
    + log((α−1)/α) (Balle et al. 2020, Thm. 21). Rigorous but loose.
    """

    name = "rdp"
    rigorous = True
    description = "Renyi DP of the sampled Gaussian (Mironov et al. 2019); rigorous, loose"

    def __init__(self, *, orders: Iterable[float] = RDP_ORDERS, **kw: Any) -> None:
        super().__init__(**kw)
        self.orders = tuple(float(a) for a in orders)

    def epsilon_and_order(self, delta: float) -> tuple[float, float]:
        """(ε, the order α that attains it) at ``delta``."""
        delta = _check_delta(delta)
        if self.noise_multiplier == 0:
            return math.inf, math.nan
        from opacus.accountants.analysis import rdp

        rdps = rdp.compute_rdp(
            q=self.sampling_rate,
            noise_multiplier=self.noise_multiplier,
            steps=self.steps,
            orders=list(self.orders),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal order is extreme": see the order
            eps, order = rdp.get_privacy_spent(orders=list(self.orders), rdp=rdps, delta=delta)
        return max(0.0, float(eps)), float(order)

    def _epsilon(self, delta: float) -> float:
        return self.epsilon_and_order(delta)[0]


# ----------------------------------------------------------------------------- prv
class PrvAccountant(Accountant):
    """PRV accountant (Opacus ``accountants.analysis.prv``; Gopi, Lee, Wutschitz 2021).

    Gopi, Lee, Wutschitz (2021), "Numerical Composition of Differential
    Privacy": the privacy random variable of one step (their Prop. B.1/B.4 for
    the subsampled Gaussian) is truncated to a domain chosen by Remark 5.6,
    discretised with mesh ε_err/√(T·log(12/δ_err)/2) (Thm. 5.5) and
    self-composed by FFT. ε lies in [lower, upper] with an absolute error
    ``eps_error``; :meth:`epsilon` reports the *upper* end, a rigorous bound.

    Args:
        eps_error: absolute error in ε (default 0.01).
        delta_error: error in δ (default δ/1000, as Opacus).
        max_domain_size: refuse grids larger than this (memory and time guard).
    """

    name = "prv"
    rigorous = True
    description = "privacy random variables by FFT (Gopi et al. 2021); rigorous, +eps_error"

    def __init__(
        self,
        *,
        eps_error: float = 0.01,
        delta_error: float | None = None,
        max_domain_size: int = 10_000_000,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if not 0 < eps_error < math.inf:
            raise DpauditError(f"eps_error must be > 0, got {eps_error!r}")
        self.eps_error = float(eps_error)
        self.delta_error = delta_error
        self.max_domain_size = int(max_domain_size)

    def epsilon_interval(self, delta: float) -> tuple[float, float, float]:
        """(lower, estimate, upper) ε at ``delta``; ``upper`` is the bound.

        Raises:
            AccountantError: the PRV computation failed (typical at large ε).
        """
        delta = _check_delta(delta)
        if self.noise_multiplier == 0:
            return (math.inf,) * 3
        import numpy as np
        from opacus.accountants.analysis import prv

        q, sigma, steps = self.sampling_rate, self.noise_multiplier, self.steps
        delta_error = delta / 1000 if self.delta_error is None else float(self.delta_error)
        where = f"prv failed for q={q:g}, sigma={sigma:g}, steps={steps}, delta={delta:g}"
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                one = prv.PoissonSubsampledGaussianPRV(q, sigma)
                size = prv.compute_safe_domain_size(
                    [one], [steps], eps_error=self.eps_error, delta_error=delta_error
                )
                mesh = self.eps_error / math.sqrt(steps * math.log(12 / delta_error) / 2)
                if not math.isfinite(size) or 2 * size / mesh > self.max_domain_size:
                    raise AccountantError(
                        f"{where}: epsilon is too large for its grid ({2 * size / mesh:.3g} points > "
                        f"{self.max_domain_size}); use pld or a larger eps_error"
                    )
                domain = prv.Domain.create_aligned(-size, size, mesh)
                tprv = prv.TruncatedPrivacyRandomVariable(one, domain.t_min, domain.t_max)
                composed = prv.compose_heterogeneous([prv.discretize(tprv, domain)], [steps])
                lower, estimate, upper = composed.compute_epsilon(
                    delta, delta_error, self.eps_error
                )
        except AccountantError:
            raise
        except (RuntimeError, ValueError, OverflowError, FloatingPointError, MemoryError) as exc:
            raise AccountantError(f"{where} ({str(exc) or type(exc).__name__}); use pld") from None
        values = (float(lower), float(estimate), float(upper))
        if not all(math.isfinite(v) for v in values):
            raise AccountantError(f"{where}: non-finite epsilon {values}; use pld")
        return max(0.0, values[0]), max(0.0, values[1]), max(0.0, values[2])

    def _epsilon(self, delta: float) -> float:
        return self.epsilon_interval(delta)[2]


# ----------------------------------------------------------------------------- pld
class PldAccountant(Accountant):
    """PLD accountant (``dp_accounting``); the reference for the others.

    ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` self-composed T times
    under ``ADD_OR_REMOVE_ONE`` (the PLDAccountant default; ε is the max over
    the add and remove directions), with pessimistic rounding and the
    connect-the-dots discretisation of Doroshenko, Ghazi, Kamath, Kumar,
    Manurangsi (2022), "Connect the Dots: Tighter Discrete Approximations of
    Privacy Loss Distributions", composed by FFT (Koskela et al. 2020).

    Args:
        value_discretization_interval: grid step of the privacy loss. ``None``
            picks q·√(e^{1/σ²}−1)/20 clipped to [1e-6, 1e-3]: a twentieth of one
            step's privacy-loss spread, which keeps ε within ~3e-4 relative of
            a 10× finer grid and T = 10000 under ~0.5 s (measured on the grid
            q ∈ {0.001, 0.01, 0.1}, σ ∈ {0.5, 1, 4}).
        max_points: refuse compositions whose grid (dp_accounting's own
            truncation bounds) is larger than this: memory and time guard (ε of
            10⁹ steps at q = 0.01, σ = 1 needs 4.7e7 points and 40 s; at σ = 190,
            1e9 points).

    The composition is dp_accounting's ``PrivacyLossDistribution`` (what its
    ``PLDAccountant`` runs) self-composed T times, in blocks of 64 steps when
    T > 10⁴: its sparse self-composition first computes size**T as an exact
    integer (1 s at 10⁶ steps, 49 s at 10⁷, hours at 10⁹, without releasing
    the GIL, so no time limit could interrupt it).
    """

    name = "pld"
    rigorous = True
    description = "privacy loss distributions, connect-the-dots (dp_accounting); rigorous, tight"

    def __init__(
        self,
        *,
        value_discretization_interval: float | None = None,
        max_points: int = 20_000_000,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.value_discretization_interval = value_discretization_interval
        self.max_points = int(max_points)

    def discretization(self) -> float:
        """The value discretisation interval used."""
        if self.value_discretization_interval is not None:
            return float(self.value_discretization_interval)
        spread = self.sampling_rate * math.sqrt(
            math.expm1(min(1.0 / self.noise_multiplier**2, 700.0))
        )
        return min(1e-3, max(1e-6, spread / 20.0))

    def _epsilon(self, delta: float) -> float:
        import dp_accounting
        from dp_accounting.pld import privacy_loss_distribution

        q, sigma, steps = self.sampling_rate, self.noise_multiplier, self.steps
        where = f"pld failed for q={q:g}, sigma={sigma:g}, steps={steps}"
        try:
            one = privacy_loss_distribution.from_gaussian_mechanism(
                standard_deviation=sigma,
                value_discretization_interval=self.discretization(),
                sampling_prob=q,
                neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
            )
            points = _pld_points(one, steps)
            if points is not None and points > self.max_points:
                raise AccountantError(
                    f"{where}: its composition needs {points:.3g} grid points (> "
                    f"{self.max_points}); use rdp or a larger value_discretization_interval"
                )
            eps = float(_pld_self_compose(one, steps).get_epsilon_for_delta(delta))
        except AccountantError:
            raise
        except (ValueError, OverflowError, MemoryError) as exc:
            raise AccountantError(f"{where}: {str(exc) or type(exc).__name__}") from None
        return max(0.0, eps)


_PLD_BLOCK = 64


def _pld_self_compose(pld: Any, steps: int) -> Any:
    """``pld`` composed ``steps`` times; above 10⁴ steps in blocks of 64 (see :class:`PldAccountant`).

    A block of 64 steps has a dense PMF (unless one step is a point mass), and
    dp_accounting self-composes a dense PMF by an FFT power. Each composition
    truncates at most 1e-15 of mass, pessimistically (it counts as ε = ∞).
    """
    if steps <= 10_000:
        return pld.self_compose(steps)
    composed = pld.self_compose(_PLD_BLOCK).self_compose(steps // _PLD_BLOCK)
    rest = steps % _PLD_BLOCK
    return composed if rest == 0 else composed.compose(pld.self_compose(rest))


def _pld_points(pld: Any, steps: int) -> int | None:
    """Grid points dp_accounting allocates to compose ``pld`` ``steps`` times.

    Its own Chernoff truncation bounds (``common.compute_self_convolve_bounds``
    at tail mass 1e-15) on one step's PMFs; ``None`` when dp_accounting's
    internals are not as expected (then nothing is refused).
    """
    from dp_accounting.pld import common

    sizes = []
    try:
        for name in ("_pmf_remove", "_pmf_add"):
            pmf = getattr(pld, name, None)
            if pmf is not None:
                probs = pmf.to_dense_pmf()._probs
                lower, upper = common.compute_self_convolve_bounds(probs, steps, 1e-15)
                sizes.append(int(upper) - int(lower) + 1)
    except (AttributeError, TypeError, ValueError):
        return None
    return max(sizes, default=None)


# ----------------------------------------------------------------------------- gdp
class GdpAccountant(Accountant):
    """Gaussian-DP CLT accountant (Dong, Roth, Su 2022: CLT for NoisySGD; Cor. 2.13).

    μ = q·√(T(e^{1/σ²} − 1)) (exactly √T/σ when q = 1), ε from the μ-GDP δ(ε)
    curve by root finding (:func:`dpaudit.edgeworth.gdp_epsilon`). A central-limit
    approximation: it can under- or over-state ε; exact only for q = 1. Not for
    calibration.
    """

    name = "gdp"
    rigorous = False
    description = "Gaussian DP central limit theorem (Dong, Roth, Su); approximate"

    def mu(self) -> float:
        """The μ of the μ-GDP approximation."""
        from dpaudit.edgeworth import gdp_mu

        return gdp_mu(self.sampling_rate, self.noise_multiplier, self.steps)

    def _epsilon(self, delta: float) -> float:
        from dpaudit.edgeworth import gdp_epsilon

        return gdp_epsilon(delta, self.mu())


# ----------------------------------------------------------------------------- edgeworth
class EdgeworthAccountant(Accountant):
    """Edgeworth accountant (Wang et al. 2022, arXiv:2206.04236; used by EW-Tune, Behnia et al. 2022).

    Second-order Edgeworth expansion of the sum of privacy-loss log-likelihood
    ratios under P and Q, δ(ε) = Q(ΣL > ε) − e^ε·P(ΣL > ε), max over both
    directions, inverted by root finding (see :mod:`dpaudit.edgeworth`).
    An *approximation*, not a certified bound: it can fall below the true ε,
    especially at few steps. Not for calibration.
    """

    name = "edgeworth"
    rigorous = False
    description = "Edgeworth expansion of the privacy loss (Wang et al. 2022); approximate"

    def _epsilon(self, delta: float) -> float:
        from dpaudit.edgeworth import edgeworth_epsilon

        return max(
            0.0, edgeworth_epsilon(delta, self.sampling_rate, self.noise_multiplier, self.steps)
        )


# ----------------------------------------------------------------------------- registry
ACCOUNTANTS: Registry[type[Accountant]] = Registry("accountant")
"""Accountant name → class, in registration order (the order of every ledger)."""


def register_accountant(
    name: str, cls: type[Accountant], *, replace: bool = False
) -> type[Accountant]:
    """Register ``cls`` as the accountant ``name``: the one call a plug-in makes.

    ``cls`` subclasses :class:`Accountant` and declares ``rigorous`` (``True``
    only for a proven upper bound on ε) and a one-line ``description``, its
    own or inherited. When ``cls`` does not set ``name`` itself it is given
    ``name``. Afterwards ``name`` is accepted by ``train.accountant``,
    appears in every ledger written, and is labelled in reports.

    Returns:
        ``cls``.

    Raises:
        DpauditError: ``cls`` is not an :class:`Accountant` subclass, lacks a
            declaration, names itself differently, or ``name`` is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, Accountant)):
        raise DpauditError(f"accountant {name!r}: {cls!r} is not an Accountant subclass")
    if not isinstance(getattr(cls, "rigorous", None), bool):
        raise DpauditError(
            f"accountant {name!r}: {cls.__name__} must declare rigorous = True/False"
        )
    if not isinstance(getattr(cls, "description", None), str):
        raise DpauditError(f"accountant {name!r}: {cls.__name__} must declare a description")
    own = cls.__dict__.get("name")
    if own is None:
        cls.name = name
    elif own != name:
        raise DpauditError(f"accountant {name!r}: {cls.__name__}.name is {own!r}")
    return ACCOUNTANTS.register(name, cls, replace=replace)


for _cls in (RdpAccountant, PrvAccountant, GdpAccountant, PldAccountant, EdgeworthAccountant):
    register_accountant(_cls.name, _cls)
del _cls


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_ACCOUNTANTS":  # every accountant registered now
        return ACCOUNTANTS.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "DEFAULT_ACCOUNTANTS"])


def is_rigorous(name: str) -> bool:
    """Whether accountant ``name`` gives a proven upper bound on ε (not an approximation).

    Raises:
        DpauditError: unknown accountant (with a did-you-mean).
    """
    return bool(ACCOUNTANTS.get(name).rigorous)


def accountant_names(*, rigorous: bool) -> tuple[str, ...]:
    """The registered accountants that are (``rigorous=True``) or are not rigorous, in order."""
    return tuple(n for n, cls in ACCOUNTANTS.items() if bool(cls.rigorous) == rigorous)


def get_accountant(name: str, **kw: Any) -> Accountant:
    """Build the accountant registered as ``name`` (keyword arguments to its constructor)."""
    return ACCOUNTANTS.get(name)(**kw)


def _check_names(accountants: Iterable[str] | None) -> tuple[str, ...]:
    """The names asked for (``None``: every registered accountant), each checked."""
    names = ACCOUNTANTS.names() if accountants is None else tuple(accountants)
    for name in names:
        ACCOUNTANTS.get(name)
    return names


OnResult = Callable[[str, float | None, str | None], None]
"""Called as each accountant finishes: (name, value or ``None``, error or ``None``)."""


def _query_each(
    names: tuple[str, ...],
    query: Callable[[type[Accountant]], float],
    what: str,
    time_limit: float | None,
    on_result: OnResult | None,
) -> tuple[dict[str, float], dict[str, str]]:
    """``query(cls)`` for each accountant in turn, bounded; (values, errors) by name."""
    values: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            compute = functools.partial(query, ACCOUNTANTS.get(name))
            values[name] = _bounded(name, what, compute, time_limit)
        except AccountantError as exc:
            errors[name] = str(exc)
        if on_result is not None:
            on_result(name, values.get(name), errors.get(name))
    return values, errors


def compute_epsilons(
    *,
    sampling_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    accountants: Iterable[str] | None = None,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    on_result: OnResult | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """ε under each accountant (``None``: every registered one); a failing one is recorded, not raised.

    Inputs are validated first (a bad input raises :class:`DpauditError`);
    then any error of one accountant, or its running past ``time_limit``
    seconds (``None``: no limit), lands in the errors dict under its name and
    the others still run.

    Returns:
        (epsilons by name, error messages by name).
    """
    names = _check_names(accountants)
    kw: dict[str, Any] = dict(
        sampling_rate=_check_rate(sampling_rate),
        noise_multiplier=_check_sigma(noise_multiplier),
        steps=_check_steps(steps),
    )
    delta = _check_delta(delta)
    limit = _check_time_limit(time_limit)
    what = (
        f"epsilon at q={kw['sampling_rate']:g}, sigma={kw['noise_multiplier']:g}, "
        f"steps={kw['steps']}, delta={delta:g}"
    )

    def query(cls: type[Accountant]) -> float:
        return cls(**kw).epsilon(delta)

    return _query_each(names, query, what, limit, on_result)


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: str = "pld",
    allow_approximate: bool = False,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
) -> float:
    """Smallest σ whose ε(δ) under ``accountant`` is at most ``target_epsilon``.

    Raises:
        DpauditError: ``accountant`` is unknown, or approximate (``rigorous = False``) and
            ``allow_approximate`` is false: it can understate ε, so noise
            calibrated with it may not deliver the promised guarantee.
        AccountantError: no σ meets the target, the accountant failed during
            the search, or (:class:`AccountantTimeout`) it took longer than
            ``time_limit`` seconds (``None``: no limit).
    """
    cls = ACCOUNTANTS.get(accountant)
    if not cls.rigorous and not allow_approximate:
        rigorous = ", ".join(accountant_names(rigorous=True))
        raise DpauditError(
            f"accountant {accountant!r} is an approximation that can understate epsilon; refusing to calibrate "
            f"noise with it (use one of {rigorous}, or allow approximate accountants explicitly)"
        )
    return cls.noise_for(
        target_epsilon, delta, sampling_rate=sampling_rate, steps=steps, time_limit=time_limit
    )


def _report(
    head: dict[str, Any], names: Sequence[str], errors: Mapping[str, str], **values: Any
) -> dict[str, Any]:
    """``head`` with each accountant's status, ``values`` and the tightest rigorous answer.

    Exactly one of ``values`` is per accountant (a mapping: ε forward, σ inverse); the
    smallest rigorous entry of it is ``tightest_rigorous``.
    """
    for name in names:
        head["accountants"][name]["status"] = "failed" if name in errors else "ok"
    key, answers = next((k, v) for k, v in values.items() if isinstance(v, Mapping))
    rigorous = {k: v for k, v in answers.items() if is_rigorous(k)}
    best = min(rigorous.items(), key=lambda kv: kv[1], default=None)
    return {
        **head,
        **values,
        "tightest_rigorous": None if best is None else {"accountant": best[0], key: best[1]},
        "errors": errors,
    }


def accountant_report(
    *,
    sampling_rate: float,
    steps: int,
    delta: float,
    noise_multiplier: float | None = None,
    epsilon: float | None = None,
    accountants: Iterable[str] | None = None,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    on_result: OnResult | None = None,
) -> dict[str, Any]:
    """The ``dpaudit accountant --json`` payload.

    Every input is checked before any accountant runs. Each accountant's
    query is bounded by ``time_limit`` seconds; one that fails or times out is
    marked ``"status": "failed"`` in ``"accountants"``, its reason is in
    ``"errors"``, and the others still answer. ``on_result`` is called as each
    one finishes (the CLI prints its line then).

    Forward (``noise_multiplier`` given): ``{"delta", "sampling_rate",
    "steps", "adjacency", "unit", "accountants", "noise_multiplier": σ,
    "epsilon": {name: ε}, "tightest_rigorous": {"accountant", "epsilon"},
    "errors"}``. Inverse (``epsilon`` given): the same with ``"epsilon": ε``,
    ``"noise_multiplier": {name: σ}`` and ``"tightest_rigorous":
    {"accountant", "noise_multiplier"}`` (the least noise a rigorous accountant
    certifies). ``"accountants"`` maps each name to ``{"kind": "rigorous" |
    "approximate", "rigorous", "description", "status": "ok" | "failed"}``:
    GDP and Edgeworth are approximations that can fall below the true ε, so a
    script must not take the minimum over every accountant. The inverse mode lists every requested
    accountant, approximate ones included: it is a comparison, not a calibration.
    """
    if (noise_multiplier is None) == (epsilon is None):
        raise DpauditError("give exactly one of noise_multiplier and epsilon")
    names = _check_names(accountants)
    q, steps, delta = _check_rate(sampling_rate), _check_steps(steps), _check_delta(delta)
    sigma = None if noise_multiplier is None else _check_sigma(noise_multiplier)
    target = None if epsilon is None else _check_epsilon(epsilon)
    limit = _check_time_limit(time_limit)
    head: dict[str, Any] = {"delta": delta, "sampling_rate": q, "steps": steps}
    head["adjacency"] = "add/remove"
    head["unit"] = "example"
    head["accountants"] = {
        name: {
            "kind": "rigorous" if is_rigorous(name) else "approximate",
            "rigorous": is_rigorous(name),
            "description": ACCOUNTANTS.get(name).description,
        }
        for name in names
    }
    if sigma is not None:
        eps, errors = compute_epsilons(
            sampling_rate=q,
            steps=steps,
            delta=delta,
            noise_multiplier=sigma,
            accountants=names,
            time_limit=limit,
            on_result=on_result,
        )
        return _report(head, names, errors, noise_multiplier=sigma, epsilon=eps)
    assert target is not None

    def search(cls: type[Accountant]) -> float:
        return cls.noise_for(target, delta, sampling_rate=q, steps=steps, time_limit=None)

    what = (
        f"the noise multiplier for epsilon = {target:g} (q={q:g}, steps={steps}, delta={delta:g})"
    )
    sigmas, errors = _query_each(names, search, what, limit, on_result)
    return _report(head, names, errors, epsilon=target, noise_multiplier=sigmas)


# ----------------------------------------------------------------------------- ledger
@dataclass(frozen=True)
class PrivacyLedger:
    """The privacy spent by a training run: an immutable value.

    Attributes:
        mechanism: e.g. ``"poisson-subsampled-gaussian"``.
        sample_rate: Poisson sampling rate q.
        noise_multiplier: σ.
        max_grad_norm: clipping norm C (``None`` when not applicable).
        steps: steps taken.
        delta: δ of every ε below.
        epsilons: ε by accountant name.
        unit: the privacy unit ("example").
        adjacency: "add/remove".
        errors: error message by the name of each accountant that failed.
    """

    mechanism: str
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float | None
    steps: int
    delta: float
    epsilons: dict[str, float]
    unit: str = "example"
    adjacency: str = "add/remove"
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping of the fields (ε may be ``inf``; the JSON writer encodes it)."""
        out = dataclasses.asdict(self)
        out["epsilons"] = dict(self.epsilons)
        out["errors"] = dict(self.errors)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyLedger:
        """Inverse of :meth:`to_dict`; accepts ε written as ``"inf"``.

        Raises:
            DpauditError: a required key is missing or an unknown key is present.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise DpauditError(f"privacy ledger: missing keys {missing}, unknown keys {unknown}")
        try:
            grad_norm = data["max_grad_norm"]
            return cls(
                mechanism=str(data["mechanism"]),
                sample_rate=float(data["sample_rate"]),
                noise_multiplier=float(data["noise_multiplier"]),
                max_grad_norm=None if grad_norm is None else float(grad_norm),
                steps=int(data["steps"]),
                delta=float(data["delta"]),
                epsilons={str(k): float(v) for k, v in dict(data["epsilons"]).items()},
                unit=str(data.get("unit", "example")),
                adjacency=str(data.get("adjacency", "add/remove")),
                errors={str(k): str(v) for k, v in dict(data.get("errors", {})).items()},
            )
        except (TypeError, ValueError) as exc:
            raise DpauditError(f"privacy ledger: malformed value ({exc})") from None
