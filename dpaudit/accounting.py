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

A new accountant is one call, :func:`register_accountant`; it is then accepted
by ``train.accountant``, listed in every privacy ledger written afterwards,
labelled rigorous or approximate in the report (from its ``rigorous``
declaration) and read by the gate.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dpaudit.errors import DpauditError
from dpaudit.registry import Registry

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "AccountantError",
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
        """ε at ``delta`` (``math.inf`` without noise)."""
        delta = _check_delta(delta)
        if self.noise_multiplier == 0:
            return math.inf
        return float(self._epsilon(delta))

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
        **options: Any,
    ) -> float:
        """Smallest σ (to relative tolerance ``rtol``) whose ε(δ) ≤ ``epsilon``.

        ε decreases with σ. The search starts at the GDP estimate of σ (closed
        form, usually within tens of percent), widens a bracket by factors of
        1.5, then runs Brent's method on log ε(σ) − log ``epsilon`` in log σ and
        returns σ at most ``rtol``/2 above the root, checked to meet the target.
        A failure to compute ε (:class:`AccountantError`) counts as "above".

        Args:
            epsilon: target ε > 0.
            delta: δ in (0, 1).
            sampling_rate: q.
            steps: T.
            rtol: relative accuracy of σ.
            **options: passed to the constructor (e.g. ``eps_error`` for prv).

        Raises:
            AccountantError: no σ ≤ 1e4 meets the target.
        """
        from scipy import optimize

        from dpaudit.edgeworth import gdp_noise

        epsilon, delta = _check_epsilon(epsilon), _check_delta(delta)
        q, steps = _check_rate(sampling_rate), _check_steps(steps)
        cache: dict[float, float] = {}

        def excess(t: float) -> float:
            """log ε(e^t) − log ε_target: > 0 above the target (50 when ε is ∞ or fails)."""
            if t not in cache:
                try:
                    acc = cls(sampling_rate=q, noise_multiplier=math.exp(t), steps=steps, **options)
                    eps = acc.epsilon(delta)
                except AccountantError:
                    eps = math.inf
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
    """

    name = "pld"
    rigorous = True
    description = "privacy loss distributions, connect-the-dots (dp_accounting); rigorous, tight"

    def __init__(self, *, value_discretization_interval: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.value_discretization_interval = value_discretization_interval

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
        from dp_accounting.pld import pld_privacy_accountant

        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(
                self.sampling_rate, dp_accounting.GaussianDpEvent(self.noise_multiplier)
            ),
            self.steps,
        )
        acc = pld_privacy_accountant.PLDAccountant(
            neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
            value_discretization_interval=self.discretization(),
        )
        try:
            acc.compose(event)
            eps = float(acc.get_epsilon(delta))
        except (ValueError, OverflowError, MemoryError) as exc:
            raise AccountantError(
                f"pld failed for q={self.sampling_rate:g}, sigma={self.noise_multiplier:g}: {exc}"
            ) from None
        return max(0.0, eps)


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


def compute_epsilons(
    *,
    sampling_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    accountants: Iterable[str] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """ε under each accountant (``None``: every registered one); a failing one is recorded, not raised.

    Inputs are validated first (a bad input raises :class:`DpauditError`);
    then an :class:`AccountantError` of one accountant lands in the errors
    dict under its name and the others still run.

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
    epsilons: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            epsilons[name] = ACCOUNTANTS.get(name)(**kw).epsilon(delta)
        except AccountantError as exc:
            errors[name] = str(exc)
    return epsilons, errors


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: str = "pld",
    allow_approximate: bool = False,
) -> float:
    """Smallest σ whose ε(δ) under ``accountant`` is at most ``target_epsilon``.

    Raises:
        DpauditError: ``accountant`` is unknown, or approximate (``rigorous = False``) and
            ``allow_approximate`` is false: it can understate ε, so noise
            calibrated with it may not deliver the promised guarantee.
        AccountantError: no σ meets the target.
    """
    cls = ACCOUNTANTS.get(accountant)
    if not cls.rigorous and not allow_approximate:
        rigorous = ", ".join(accountant_names(rigorous=True))
        raise DpauditError(
            f"accountant {accountant!r} is an approximation that can understate epsilon; refusing to calibrate "
            f"noise with it (use one of {rigorous}, or allow approximate accountants explicitly)"
        )
    return cls.noise_for(target_epsilon, delta, sampling_rate=sampling_rate, steps=steps)


def accountant_report(
    *,
    sampling_rate: float,
    steps: int,
    delta: float,
    noise_multiplier: float | None = None,
    epsilon: float | None = None,
    accountants: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The ``dpaudit accountant --json`` payload.

    Forward (``noise_multiplier`` given): ``{"delta", "sampling_rate",
    "steps", "adjacency", "unit", "accountants", "noise_multiplier": σ,
    "epsilon": {name: ε}, "tightest_rigorous": {"accountant", "epsilon"},
    "errors"}``. Inverse (``epsilon`` given): the same with ``"epsilon": ε``,
    ``"noise_multiplier": {name: σ}`` and ``"tightest_rigorous":
    {"accountant", "noise_multiplier"}`` (the least noise a rigorous accountant
    certifies). ``"accountants"`` maps each name to ``{"kind": "rigorous" |
    "approximate", "rigorous", "description"}``: GDP and Edgeworth are
    approximations that can fall below the true ε, so a script must not take the
    minimum over every accountant. The inverse mode lists every requested
    accountant, approximate ones included: it is a comparison, not a calibration.
    """
    if (noise_multiplier is None) == (epsilon is None):
        raise DpauditError("give exactly one of noise_multiplier and epsilon")
    names = _check_names(accountants)
    q, steps, delta = _check_rate(sampling_rate), _check_steps(steps), _check_delta(delta)
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
    if noise_multiplier is not None:
        sigma = _check_sigma(noise_multiplier)
        eps, errors = compute_epsilons(
            sampling_rate=q, steps=steps, delta=delta, noise_multiplier=sigma, accountants=names
        )
        rigorous = {k: v for k, v in eps.items() if is_rigorous(k)}
        best = min(rigorous.items(), key=lambda kv: kv[1], default=None)
        return {
            **head,
            "noise_multiplier": sigma,
            "epsilon": eps,
            "tightest_rigorous": None
            if best is None
            else {"accountant": best[0], "epsilon": best[1]},
            "errors": errors,
        }
    target = _check_epsilon(epsilon)
    sigmas: dict[str, float] = {}
    errors = {}
    for name in names:
        try:
            sigmas[name] = ACCOUNTANTS.get(name).noise_for(
                target, delta, sampling_rate=q, steps=steps
            )
        except AccountantError as exc:
            errors[name] = str(exc)
    rigorous_sigmas = {k: v for k, v in sigmas.items() if is_rigorous(k)}
    best = min(rigorous_sigmas.items(), key=lambda kv: kv[1], default=None)
    return {
        **head,
        "epsilon": target,
        "noise_multiplier": sigmas,
        "tightest_rigorous": None
        if best is None
        else {"accountant": best[0], "noise_multiplier": best[1]},
        "errors": errors,
    }


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
