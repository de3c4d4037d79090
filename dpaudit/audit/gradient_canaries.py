"""White-box gradient canaries: crafted per-example gradients, observed in the noisy update.

Nasr, Hayes, Steinke, Balle, Tramèr, Jagielski, Carlini, Terzis 2023, "Tight
Auditing of Differentially Private Machine Learning" (USENIX Security 2023):
when the auditor controls training, a canary need not be an input at all — it
can be a *gradient*. The strongest one ("Dirac canary") is zero everywhere
except one coordinate; Steinke, Nasr, Jagielski 2023, "Privacy Auditing with
One (1) Training Run" (NeurIPS 2023), use such canaries for their white-box
one-run audit.

Set-up. ``m`` canary records (ids ``gcanary-0000`` ...) are each included in
the training list by a fair coin; Poisson sampling then puts an included
canary in each lot with probability q. Canary j owns one coordinate ``e_j`` of
a trainable parameter that real data never touches (by default rows of the
position-embedding matrix beyond ``max_length``: no example ever has such a
position, so their gradient is exactly zero, see :func:`position_canary_slots`).
Whenever canary j is in a physical batch, its per-example gradient is
*replaced*, before clipping, by ``scale·C·e_j`` (``scale >= 1``: after
clipping it is exactly ``C·e_j``, up to Opacus' 1e-6 in the clip factor).

Threat model: DP-SGD's guarantee covers the whole sequence of released noisy
gradients ``g_t = (Σ_{i∈L_t} clip_C(∇ℓ_i) + N(0, σ²C²·I)) / B`` (gradient
access, Nasr et al. 2021 "Adversary instantiation"), so an auditor may look at
every one of them. Per step t the auditor reads, in units of the claimed C,

    x_{j,t} = B·⟨g_t, e_j⟩ / C  ~  N(0, σ²)                        canary j out,
                                 ~  (1−q)·N(0, σ²) + q·N(1, σ²)     canary j in,

independently over t (fresh noise and a fresh Poisson draw per step; real data
never touches e_j). This is the dominating pair of the Poisson-subsampled
Gaussian that the PLD accountant composes (Koskela, Jälkö, Honkela 2020; Zhu,
Dong, Wang 2022, "Optimal accounting of differential privacy via
characteristic function"), so the canary sees exactly the mechanism's
worst case. Two test statistics (higher = more likely included):

* ``"likelihood-ratio"`` (default): Σ_t log[(1−q) + q·exp((x_{j,t} − ½)/σ²)],
  the log of the product of per-step likelihood ratios, which by
  Neyman–Pearson is the most powerful test of "in" against "out" for each
  canary (:func:`step_log_likelihood_ratio`). With q = 1 it is an affine map of
  the sum; with small q it discounts the steps that did not draw the canary,
  whose pure noise swamps the sum.
* ``"sum"``: s_j = Σ_t B·⟨g_t, e_j⟩ = C·N_j + N(0, σ²C²·T) (Steinke, Nasr,
  Jagielski 2023, white-box audit with Dirac canaries), ``N_j`` the lots that
  drew canary j and ``T`` the steps.

Both use only the released updates and the *claimed* (q, σ, C), never the
coins, so the one-run audit (:func:`gradient_canary_audit`) is valid for either;
a statistic built on a wrong model of the mechanism loses power, not validity.
The likelihood ratio is the most powerful when the claimed mechanism is the one
applied; when a bug changes it (a sampling rate 10 times the claimed one), one
excluded canary with a single large noise step can outrank the included ones
under the claimed small q, and the sum, which assumes nothing about q, is the
stronger test (see :mod:`dpaudit.audit.selftest`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpaudit.audit.estimators import estimator_names, get_estimator
from dpaudit.audit.lower_bound import EpsilonLowerBound, audit_one_run, audit_one_run_estimators
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import Mechanism, TrainHooks

__all__ = [
    "CANARY_ID_PREFIX",
    "DEFAULT_STATISTIC",
    "STATISTICS",
    "STATISTIC_LIKELIHOOD_RATIO",
    "STATISTIC_SUM",
    "CanarySlots",
    "GradientCanaries",
    "GradientCanaryHooks",
    "check_statistic",
    "gradient_canary_audit",
    "gradient_canary_audits",
    "gradient_canary_ceiling",
    "gradient_canary_grid",
    "gradient_canary_ids",
    "plant_gradient_canaries",
    "position_canary_slots",
    "step_log_likelihood_ratio",
]

CANARY_ID_PREFIX = "gcanary-"
CANARY_TEXT = "canary"
"""Text of every canary record: its real gradient is replaced, so the text only fills the lot."""
STATISTIC_LIKELIHOOD_RATIO = "likelihood-ratio"
STATISTIC_SUM = "sum"
STATISTICS = (STATISTIC_LIKELIHOOD_RATIO, STATISTIC_SUM)
"""The test statistics a :class:`GradientCanaryHooks` accumulates (see the module docstring)."""
DEFAULT_STATISTIC = STATISTIC_LIKELIHOOD_RATIO


def check_statistic(name: str) -> str:
    """``name`` if it is one of :data:`STATISTICS`; else :class:`DpauditError`."""
    if name not in STATISTICS:
        raise DpauditError(
            f"unknown gradient-canary statistic {name!r}; choose one of: {', '.join(STATISTICS)}"
        )
    return name


def step_log_likelihood_ratio(
    x: float | np.ndarray, *, sample_rate: float, noise_multiplier: float
) -> np.ndarray:
    """Per-step log-likelihood ratio of "canary in" against "canary out".

    ``log[(1−q)·φ_σ(x) + q·φ_σ(x−1)] − log φ_σ(x) = log[(1−q) + q·exp((x − ½)/σ²)]``
    for an observation ``x`` of the canary's coordinate of the summed noisy
    update in units of the clipping norm C (``φ_σ`` the N(0, σ²) density),
    computed as ``logaddexp(log(1−q), log q + (x − ½)/σ²)`` so that it neither
    overflows for a large ``x`` (a canary that escaped clipping) nor loses
    precision for a small ``q``. Summed over independent steps it is the log of
    the Neyman–Pearson statistic of the Poisson-subsampled Gaussian's
    dominating pair (see the module docstring).

    Args:
        x: observations, any shape, in units of C.
        sample_rate: claimed Poisson rate q, in (0, 1].
        noise_multiplier: claimed σ, > 0.

    Returns:
        float64 array of ``x``'s shape (natural log).

    Raises:
        DpauditError: q outside (0, 1] or σ not positive and finite.
    """
    q, sigma = float(sample_rate), float(noise_multiplier)
    if not 0.0 < q <= 1.0:
        raise DpauditError(f"sample rate must lie in (0, 1], got {sample_rate}")
    if not (math.isfinite(sigma) and sigma > 0.0):
        raise DpauditError(f"noise multiplier must be positive and finite, got {noise_multiplier}")
    a = (np.asarray(x, dtype=np.float64) - 0.5) / (sigma * sigma)
    if q == 1.0:
        return a
    return np.logaddexp(math.log1p(-q), math.log(q) + a)


def gradient_canary_ids(m: int) -> tuple[str, ...]:
    """Record ids ``gcanary-0000``, ``gcanary-0001``, ... (at least four digits)."""
    if m < 0:
        raise DpauditError(f"number of gradient canaries must be >= 0, got {m}")
    width = max(4, len(str(max(m - 1, 0))))
    return tuple(f"{CANARY_ID_PREFIX}{i:0{width}d}" for i in range(m))


@dataclass(frozen=True)
class GradientCanaries:
    """The canaries of one audit and their inclusion coins (secret from the model).

    Attributes:
        ids: canary record ids, one per canary.
        included: the fair coin of each canary (True = in the training list).
    """

    ids: tuple[str, ...]
    included: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.included):
            raise DpauditError("one inclusion coin per gradient canary is needed")
        if len(set(self.ids)) != len(self.ids):
            raise DpauditError("gradient canary ids must be distinct")

    def __len__(self) -> int:
        return len(self.ids)

    def records(self, text: str = CANARY_TEXT) -> list[Record]:
        """Training records of the included canaries (append them to the training list)."""
        return [Record(cid, text) for cid, inc in zip(self.ids, self.included, strict=True) if inc]


def plant_gradient_canaries(m: int, *, seed: int) -> GradientCanaries:
    """``m`` canaries, each included by an independent fair coin drawn from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6763]))
    coins = rng.random(m) < 0.5
    return GradientCanaries(gradient_canary_ids(m), tuple(bool(c) for c in coins))


@dataclass(frozen=True)
class CanarySlots:
    """Where the canaries' coordinates live.

    Attributes:
        param_name: name of the parameter (for messages and provenance).
        param_index: its index among the trainable parameters, in optimizer
            order (``[p for p in model.parameters() if p.requires_grad]``).
        param_shape: its shape, checked against the parameter at training time.
        coordinates: one flat index into the parameter per canary, distinct.
    """

    param_name: str
    param_index: int
    param_shape: tuple[int, ...]
    coordinates: tuple[int, ...]

    def __post_init__(self) -> None:
        size = math.prod(self.param_shape)
        if len(set(self.coordinates)) != len(self.coordinates):
            raise DpauditError("canary coordinates must be distinct")
        if any(not 0 <= c < size for c in self.coordinates):
            raise DpauditError(f"canary coordinates must lie in 0..{size - 1} ({self.param_name})")


def position_canary_slots(model: Any, *, max_length: int, m: int) -> CanarySlots:
    """Reserve ``m`` coordinates in the rows of the position embedding that no example reaches.

    Examples are at most ``max_length`` tokens long and the loop passes
    ``position_ids = 0..width-1``, so rows ``max_length, max_length + 1, ...``
    of the position-embedding matrix get an exactly zero gradient from real
    data: a canary there is read back without interference. Coordinates are
    taken in row-major order starting at row ``max_length``.

    Args:
        model: the model as built for training (same trainable parameters).
        max_length: the tokens-per-example limit of the run.
        m: canaries to place.

    Raises:
        DpauditError: no trainable position embedding, or too few spare rows.
    """
    import torch.nn as nn

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_positions = None
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(getattr(model, "config", None), key, None)
        if isinstance(value, int):
            n_positions = value
            break
    candidates = [
        f"{name}.weight" if name else "weight"
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Embedding)
        and mod.num_embeddings == n_positions
        and mod.weight.requires_grad
    ]
    index = {n: i for i, (n, _) in enumerate(trainable)}
    names = [c for c in candidates if c in index]
    if n_positions is None or not names:
        raise DpauditError(
            "gradient canaries need a trainable position embedding (use train.mode = full)"
        )
    name = names[0]
    param = trainable[index[name]][1]
    rows, width = int(param.shape[0]), int(math.prod(param.shape[1:]))
    free = (rows - max_length) * width
    if m > free:
        raise DpauditError(
            f"{name}: {rows - max_length} spare position rows hold {max(free, 0)} canaries, {m} asked "
            "(lower data.max_length or the number of canaries)"
        )
    start = max_length * width
    return CanarySlots(
        name, index[name], tuple(int(s) for s in param.shape), tuple(range(start, start + m))
    )


class GradientCanaryHooks(TrainHooks):
    """Inject Dirac gradient canaries before clipping; read them back from the noisy update.

    Args:
        canary_ids: the ids of *all* canaries (included or not), in audit order.
        slots: the coordinate of each canary (:func:`position_canary_slots`).
        scale: the crafted gradient is ``scale·C·e_j`` with C the *claimed*
            clipping norm; ``scale >= 1`` so that a correctly clipped canary
            has norm C, while a run that skips clipping lets it through whole.

    Attributes:
        statistic: per canary, Σ_t B·⟨g_t, e_j⟩ (float64), in audit order:
            the ``"sum"`` statistic, in units of the gradient.
        log_likelihood_ratio: per canary, Σ_t of
            :func:`step_log_likelihood_ratio` at x = B·⟨g_t, e_j⟩/C under the
            claimed q and σ: the ``"likelihood-ratio"`` statistic (all zero
            when the claimed σ is 0, where :meth:`scores` falls back to the sum).
        appearances: per canary, the physical batches that contained it
            (= the lots, as a lot is split into disjoint chunks). Derived from
            the example ids, i.e. from the coins: provenance only, never a score.
        steps_seen: noisy updates observed (T).
        claimed: the claimed mechanism (q, σ, C), known once training starts.

    The statistics live in memory only: a run with these hooks cannot be
    resumed from a checkpoint (its ``recipe_key`` keeps it apart anyway).
    """

    recipe_key = "gradient-canaries"

    def __init__(self, canary_ids: Sequence[str], slots: CanarySlots, *, scale: float = 1.0):
        if len(canary_ids) != len(slots.coordinates):
            raise DpauditError(
                f"{len(canary_ids)} canaries but {len(slots.coordinates)} reserved coordinates"
            )
        if not scale >= 1.0 or not math.isfinite(scale):
            raise DpauditError(f"canary scale must be finite and >= 1, got {scale}")
        self.canary_ids = tuple(canary_ids)
        self.slots = slots
        self.scale = float(scale)
        self.position = {cid: j for j, cid in enumerate(self.canary_ids)}
        if len(self.position) != len(self.canary_ids):
            raise DpauditError("gradient canary ids must be distinct")
        self.statistic = np.zeros(len(self.canary_ids), dtype=np.float64)
        self.log_likelihood_ratio = np.zeros(len(self.canary_ids), dtype=np.float64)
        self.appearances = np.zeros(len(self.canary_ids), dtype=np.int64)
        self.steps_seen = 0
        self.clip_norm: float | None = None
        self.claimed: Mechanism | None = None
        self._coords: Any = None

    def mechanism(self, claimed: Mechanism) -> Mechanism:
        """Record the claimed mechanism (C; q and σ for the likelihood ratio); apply it as is."""
        self.clip_norm = float(claimed.max_grad_norm)
        self.claimed = claimed
        return claimed

    @property
    def _has_likelihood_ratio(self) -> bool:
        c = self.claimed
        return c is not None and c.noise_multiplier > 0 and math.isfinite(c.max_grad_norm)

    def _param(self, params: Sequence[Any]) -> Any:
        s = self.slots
        if s.param_index >= len(params) or tuple(params[s.param_index].shape) != s.param_shape:
            got = tuple(params[s.param_index].shape) if s.param_index < len(params) else None
            raise DpauditError(
                f"gradient canaries: trainable parameter #{s.param_index} should be {s.param_name} "
                f"of shape {s.param_shape}, got {got}"
            )
        return params[s.param_index]

    def on_per_sample_grads(
        self, *, step: int, params: Sequence[Any], example_ids: Sequence[str]
    ) -> None:
        """Replace each canary row of every ``grad_sample`` by ``scale·C·e_j``."""
        import torch

        rows = [(i, self.position[e]) for i, e in enumerate(example_ids) if e in self.position]
        if not rows:
            return
        if self.clip_norm is None or not math.isfinite(self.clip_norm):
            raise DpauditError("gradient canaries need a finite claimed clipping norm")
        target = self._param(params)
        device = target.grad_sample.device
        idx = torch.tensor([i for i, _ in rows], dtype=torch.long, device=device)
        for p in params:
            p.grad_sample[idx.to(p.grad_sample.device)] = 0
        where = np.unravel_index(
            [self.slots.coordinates[j] for _, j in rows], self.slots.param_shape
        )
        index = (idx, *(torch.as_tensor(w, dtype=torch.long, device=device) for w in where))
        target.grad_sample[index] = self.scale * self.clip_norm
        for _, j in rows:
            self.appearances[j] += 1

    def on_noisy_grads(
        self, *, step: int, params: Sequence[Any], expected_batch_size: float
    ) -> None:
        """Add x = B·g_t along each canary's coordinate to the sum, and its log-LR to the other."""
        import torch

        grad = self._param(params).grad.detach()
        if self._coords is None:
            self._coords = torch.tensor(
                self.slots.coordinates, dtype=torch.long, device=grad.device
            )
        values = grad.reshape(-1)[self._coords].double().cpu().numpy() * float(expected_batch_size)
        self.statistic += values
        c = self.claimed
        if c is not None and self._has_likelihood_ratio:
            self.log_likelihood_ratio += step_log_likelihood_ratio(
                values / c.max_grad_norm,
                sample_rate=c.sample_rate,
                noise_multiplier=c.noise_multiplier,
            )
        self.steps_seen += 1

    def scores(self, statistic: str = DEFAULT_STATISTIC) -> np.ndarray:
        """The test statistic per canary, in audit order (a copy; higher = more likely included).

        Args:
            statistic: ``"likelihood-ratio"`` (default) or ``"sum"``. With a
                claimed σ of 0 the likelihood ratio is degenerate and the sum is
                returned for both.

        Raises:
            DpauditError: unknown statistic.
        """
        if check_statistic(statistic) == STATISTIC_SUM or not self._has_likelihood_ratio:
            return self.statistic.copy()
        return self.log_likelihood_ratio.copy()


def gradient_canary_grid(m: int) -> tuple[tuple[int, int], ...]:
    """The ``(k+, k-)`` guess grid for gradient canaries, fixed by ``m`` alone.

    Two-sided points (k+ = ⌈r/2⌉ "in" guesses for the highest scores, k- = ⌊r/2⌋
    "out" for the lowest) with r = m/20, m/10, m/5, 2m/5 and m, and one-sided
    points (r, 0) with r = m/10, m/5, 2m/5 (r rounded down, at least 1;
    duplicates dropped): 8 points for m >= 20. With full-batch steps
    the in and out scores are mirror images and the two-sided points are the
    stronger; with q < 1 an included canary that no lot drew scores like an
    excluded one, so "out" guesses carry a floor of errors and the one-sided
    points win. r = m lets a leaking run reach the one-run ceiling at r = m
    (:func:`gradient_canary_ceiling`). The union bound over the grid costs
    log(8) in β: each point is audited at β/8.
    """
    if m < 2:
        raise DpauditError(f"the one-run audit needs at least 2 canaries, got {m}")
    two_sided = [max(1, m // 20), max(1, m // 10), max(1, m // 5), max(1, 2 * m // 5), m]
    one_sided = [max(1, m // 10), max(1, m // 5), max(1, 2 * m // 5)]
    points = [(r - r // 2, r // 2) for r in two_sided] + [(r, 0) for r in one_sided]
    return tuple(dict.fromkeys(points))


def _grid(m: int, grid: Sequence[tuple[int, int] | int] | None) -> tuple[tuple[int, int], ...]:
    if grid is None:
        return gradient_canary_grid(m)
    return tuple((g, g) if isinstance(g, int) else (int(g[0]), int(g[1])) for g in grid)


def gradient_canary_ceiling(
    m: int,
    *,
    delta: float,
    confidence: float,
    estimator: str = "steinke",
    grid: Sequence[tuple[int, int] | int] | None = None,
) -> float:
    """The largest ε_lb the gradient-canary audit can report: every guess right.

    ``max`` over the grid points of ``estimator.ceiling(m, r, delta, 1 − β/|grid|)``
    (the union bound's per-point confidence), ``r = k+ + k-``. With m = 1000,
    δ = 1e-5, 95 % and the default grid (8 points) this is 5.19 for
    ``"steinke"``, against 5.78 for a single pre-registered r = m.

    Raises:
        DpauditError: unknown estimator, or ``m`` too small for a grid.
    """
    points = _grid(m, grid)
    if not points:
        raise DpauditError("grid must contain at least one (k_plus, k_minus) pair")
    est = get_estimator(estimator)
    per = 1.0 - (1.0 - confidence) / len(points)
    return max(
        est.ceiling(m=m, r=kp + km, delta=delta, confidence=per) for kp, km in points if kp + km
    )


def gradient_canary_audit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float,
    grid: Sequence[tuple[int, int] | int] | None = None,
    estimator: str = "steinke",
) -> EpsilonLowerBound:
    """White-box one-run audit of gradient-canary statistics (Steinke, Nasr, Jagielski 2023).

    :func:`~dpaudit.audit.lower_bound.audit_one_run` over ``grid`` (default
    :func:`gradient_canary_grid`), union-bounded, with the registered
    ``estimator`` (:mod:`dpaudit.audit.estimators`); ``confidence`` is the
    overall level of the reported bound, whose ``ceiling`` is
    :func:`gradient_canary_ceiling`.
    """
    s = np.asarray(scores, dtype=float)
    points = _grid(s.size, grid)
    return audit_one_run(
        s, included, delta=delta, confidence=confidence, grid=points, estimator=estimator
    )


def gradient_canary_audits(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float,
    grid: Sequence[tuple[int, int] | int] | None = None,
    estimators: Sequence[str] = (),
) -> dict[str, EpsilonLowerBound]:
    """The same guesses as :func:`gradient_canary_audit`, bounded by several estimators.

    Args:
        estimators: registered estimator names; empty = every registered one,
            the score-based ``gauss`` included (these statistics are Gaussian sums).

    Returns:
        ``{estimator name: EpsilonLowerBound}``, in the order asked (registry
        order when empty); each bound carries its ``guarantee`` and ``ceiling``.
    """
    s = np.asarray(scores, dtype=float)
    names = tuple(estimators) or estimator_names(scores=True)
    return audit_one_run_estimators(
        s,
        included,
        delta=delta,
        confidence=confidence,
        grid=_grid(s.size, grid),
        estimators=names,
    )
