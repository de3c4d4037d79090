"""The privacy plan of a training run and the ledger it writes.

DP-SGD (Abadi et al. 2016) with Poisson sampling rate q = batch_size / n,
T = round(epochs / q) steps (half up), clipping norm C and noise multiplier σ. σ is
calibrated with :func:`dpaudit.accounting.calibrate_noise` and
``train.accountant`` (never an approximate accountant unless allowed) unless
``train.noise_multiplier`` is set. δ defaults to min(1e-5, 1/n^1.1 rounded down
to one significant digit) (:func:`default_delta`). The ledger (``privacy.json``) reports ε under every
accountant (:func:`dpaudit.accounting.compute_epsilons`) for the steps
actually taken, which a resume never resets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpaudit.config import TrainConfig
from dpaudit.errors import DpauditError, InputError
from dpaudit.runfiles.io import read_run_file, write_run_file
from dpaudit.runfiles.privacy import PrivacyFile

PRIVACY_FILE = "privacy.json"
MECHANISM_POISSON = "poisson-subsampled-gaussian"
MECHANISM_SHUFFLE = "shuffled-gaussian"
MECHANISM_NONE = "none"


DEFAULT_DELTA_CAP = 1e-5
"""The largest default δ: what a privacy officer signs should not hinge on the data size."""
DEFAULT_DELTA_RULE = "default min(1e-5, 1/n^1.1)"


def default_delta(n: int) -> float:
    """min(1e-5, 1/n^1.1 rounded *down* to one significant digit) (n = 800 → 1e-5; n = 10⁶ → 2e-7).

    A mechanism that leaks one random record outright is (0, 1/n)-DP, so δ must
    be well below 1/n to mean anything; 1/n^1.1 rounded down keeps it there for
    large n, and the 1e-5 cap keeps it at the usual level for small data sets
    (1/n^1.1 alone gave 5e-3 for n = 118, where 2·m·δ also swamped the one-run
    audit). See docs/formulas.md#default-delta.
    """
    if n < 2:
        raise DpauditError(f"need at least 2 training examples to set a default delta, got {n}")
    x = float(n) ** -1.1
    exponent = math.floor(math.log10(x))
    digit = math.floor(x / 10.0**exponent + 1e-9)
    return min(DEFAULT_DELTA_CAP, float(f"{digit}e{exponent}"))


@dataclass(frozen=True)
class PrivacyPlan:
    """Everything the ledger states about a run, fixed before training starts.

    Attributes:
        dp: whether DP-SGD is used.
        n: training examples (the dataset size of the sampling rate).
        batch_size: expected logical batch size.
        sample_rate: q = batch_size / n.
        steps: T = round(epochs / q) logical steps.
        epochs: requested epochs.
        noise_multiplier: σ (0 when not private).
        max_grad_norm: C (``None`` when not private: nothing is clipped).
        delta: δ of the reported ε.
        delta_source: ``"config"`` or ``"default 1/n^1.1"``.
        accountant: the primary accountant (calibration, headline ε).
        noise_source: ``"config"`` or ``"calibrated"``.
        target_epsilon: the ε the noise was calibrated to (``None`` otherwise).
        poisson: Poisson sampling (else shuffled fixed-size lots).
        unit: the privacy unit — ``"example"`` (DP-SGD), ``"client"`` (DP-FedAvg:
            ``n`` clients, ``batch_size`` the expected clients per round).
    """

    dp: bool
    n: int
    batch_size: int
    sample_rate: float
    steps: int
    epochs: float
    noise_multiplier: float
    max_grad_norm: float | None
    delta: float
    delta_source: str
    accountant: str
    noise_source: str
    target_epsilon: float | None
    poisson: bool
    unit: str = "example"

    @property
    def mechanism(self) -> str:
        if not self.dp:
            return MECHANISM_NONE
        return MECHANISM_POISSON if self.poisson else MECHANISM_SHUFFLE


def calibrated_noise(
    config: TrainConfig,
    target_epsilon: float,
    *,
    delta: float,
    sample_rate: float,
    steps: int,
    what: str = "",
) -> float:
    """σ for ``target_epsilon`` at (q, T, δ) by ``config.accountant`` (:func:`~dpaudit.accounting.calibrate_noise`).

    ``what`` names the ε in the error (``"client-level "``, ``"example-level "``).

    Raises:
        DpauditError: the accountant cannot reach the target (one line, with its reason).
    """
    from dpaudit.accounting import calibrate_noise

    try:
        return float(
            calibrate_noise(
                target_epsilon=target_epsilon,
                delta=delta,
                sampling_rate=sample_rate,
                steps=steps,
                accountant=config.accountant,
                allow_approximate=config.allow_approximate_accountant,
            )
        )
    except DpauditError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise DpauditError(
            f"cannot calibrate noise for {what}ε = {target_epsilon}: {exc}"
        ) from None


def plan_privacy(config: TrainConfig, n: int, *, dp: bool) -> PrivacyPlan:
    """Fix q, T, δ and σ for ``n`` training examples.

    Raises:
        DpauditError: when the batch is larger than the dataset or calibration fails.
    """
    if n < 1:
        raise DpauditError("no training examples")
    if config.batch_size > n:
        raise DpauditError(
            f"train.batch_size = {config.batch_size} exceeds the {n} training examples"
        )
    q = config.batch_size / n
    steps = max(
        1, math.floor(config.epochs * n / config.batch_size + 0.5)
    )  # epochs / q, rounded half up
    if config.delta is not None:
        delta, delta_source = float(config.delta), "config"
    else:
        delta, delta_source = default_delta(n), DEFAULT_DELTA_RULE
    if not dp:
        return PrivacyPlan(
            False,
            n,
            config.batch_size,
            q,
            steps,
            config.epochs,
            0.0,
            None,
            delta,
            delta_source,
            config.accountant,
            "none",
            None,
            config.poisson_sampling,
        )
    if config.noise_multiplier is not None:
        sigma, source, target = float(config.noise_multiplier), "config", None
    else:
        sigma = calibrated_noise(
            config, config.target_epsilon, delta=delta, sample_rate=q, steps=steps
        )
        source, target = "calibrated", float(config.target_epsilon)
    return PrivacyPlan(
        True,
        n,
        config.batch_size,
        q,
        steps,
        config.epochs,
        sigma,
        float(config.max_grad_norm),
        delta,
        delta_source,
        config.accountant,
        source,
        target,
        config.poisson_sampling,
    )


def make_ledger(
    plan: PrivacyPlan, steps_done: int, *, accountants: tuple[str, ...] | None = None
) -> Any:
    """The :class:`~dpaudit.accounting.PrivacyLedger` of ``steps_done`` steps of ``plan``.

    ε comes from :func:`~dpaudit.accounting.compute_epsilons` for exactly
    (q, σ, steps_done, δ), with every accountant registered in
    :data:`~dpaudit.accounting.ACCOUNTANTS` at the time of writing by default
    (the partial ledgers written at checkpoints use the primary one only, for
    speed); a non-private run spends ε = ∞.
    """
    from dpaudit.accounting import ACCOUNTANTS, PrivacyLedger, compute_epsilons

    if accountants is None:
        accountants = ACCOUNTANTS.names()
    if not plan.dp:
        eps = {name: math.inf for name in accountants}
        errors: dict[str, str] = {}
    elif steps_done == 0:
        eps, errors = {name: 0.0 for name in accountants}, {}
    else:
        eps, errors = compute_epsilons(
            sampling_rate=plan.sample_rate,
            noise_multiplier=plan.noise_multiplier,
            steps=steps_done,
            delta=plan.delta,
            accountants=accountants,
        )
    return PrivacyLedger(
        mechanism=plan.mechanism,
        sample_rate=plan.sample_rate,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        steps=steps_done,
        delta=plan.delta,
        epsilons=dict(eps),
        unit=plan.unit,
        errors=dict(errors),
    )


def write_privacy(path: str | Path, plan: PrivacyPlan, ledger: Any, *, complete: bool) -> Path:
    """Write ``privacy.json`` (:class:`~dpaudit.runfiles.privacy.PrivacyFile`): the ledger's
    fields plus how the plan was made.

    The :class:`PrivacyLedger` fields, then ``epsilon`` (the primary
    accountant's), ``primary_accountant``, ``epochs`` (taken: steps × q),
    ``planned_epochs``, ``planned_steps``, ``complete``, ``delta_source``,
    ``noise_source``, ``target_epsilon``, ``batch_size``, ``n_examples`` and
    ``poisson_sampling``. :func:`read_privacy` recovers the ledger.
    """
    payload = {k: v for k, v in ledger.to_dict().items() if k != "schema_version"}
    payload.update(
        epsilon=ledger.epsilons.get(plan.accountant, math.inf),
        primary_accountant=plan.accountant,
        epochs=ledger.steps * plan.sample_rate,
        planned_epochs=plan.epochs,
        planned_steps=plan.steps,
        complete=complete,
        delta_source=plan.delta_source,
        noise_source=plan.noise_source,
        target_epsilon=plan.target_epsilon,
        batch_size=plan.batch_size,
        n_examples=plan.n,
        poisson_sampling=plan.poisson,
    )
    return write_run_file(path, PrivacyFile.from_dict(payload))


def read_privacy_file(path: str | Path) -> PrivacyFile:
    """Read ``privacy.json`` as its definition.

    Raises:
        InputError: missing, malformed, an unsupported ``schema_version`` or
            invalid contents (the message names ``path``).
    """
    return read_run_file(path, PrivacyFile)


def read_privacy(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read ``privacy.json``; return (PrivacyLedger, the whole file as a JSON-ready mapping).

    Raises:
        InputError: as :func:`read_privacy_file`.
    """
    from dpaudit.accounting import PrivacyLedger

    file = read_privacy_file(path)
    try:
        ledger = PrivacyLedger.from_dict(file.ledger_fields())
    except DpauditError as exc:
        raise InputError(path, str(exc)) from None
    return ledger, file.to_dict()
