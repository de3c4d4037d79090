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
them. The test statistic of canary j is

    s_j = Σ_t B·⟨g_t, e_j⟩ = C·N_j + N(0, σ²C²·T),

``N_j`` the number of lots that contained canary j (0 for an excluded one),
``T`` the number of steps. Higher = more likely included. The scores feed the
one-run audit (:func:`gradient_canary_audit`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpaudit.audit.lower_bound import EpsilonLowerBound, audit_one_run
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import Mechanism, TrainHooks

__all__ = [
    "CANARY_ID_PREFIX",
    "CanarySlots",
    "GradientCanaries",
    "GradientCanaryHooks",
    "gradient_canary_audit",
    "gradient_canary_grid",
    "gradient_canary_ids",
    "plant_gradient_canaries",
    "position_canary_slots",
]

CANARY_ID_PREFIX = "gcanary-"
CANARY_TEXT = "canary"
"""Text of every canary record: its real gradient is replaced, so the text only fills the lot."""


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
        statistic: per canary, Σ_t B·⟨g_t, e_j⟩ (float64), in audit order.
        appearances: per canary, the physical batches that contained it
            (= the lots, as a lot is split into disjoint chunks).
        steps_seen: noisy updates observed (T).

    The statistic lives in memory only: a run with these hooks cannot be
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
        self.appearances = np.zeros(len(self.canary_ids), dtype=np.int64)
        self.steps_seen = 0
        self.clip_norm: float | None = None
        self._coords: Any = None

    def mechanism(self, claimed: Mechanism) -> Mechanism:
        """Record the claimed clipping norm C; apply the claimed mechanism unchanged."""
        self.clip_norm = float(claimed.max_grad_norm)
        return claimed

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
        """Add B·g_t along each canary's coordinate to its statistic."""
        import torch

        grad = self._param(params).grad.detach()
        if self._coords is None:
            self._coords = torch.tensor(
                self.slots.coordinates, dtype=torch.long, device=grad.device
            )
        values = grad.reshape(-1)[self._coords].double().cpu().numpy()
        self.statistic += values * float(expected_batch_size)
        self.steps_seen += 1

    def scores(self) -> np.ndarray:
        """The test statistic per canary (a copy; higher = more likely included)."""
        return self.statistic.copy()


def gradient_canary_grid(m: int) -> tuple[tuple[int, int], ...]:
    """The ``(k+, k-)`` guess grid for gradient canaries: (m/10, m/10), (m/5, m/5), (2m/5, 0).

    An included canary that Poisson sampling never drew is indistinguishable
    from an excluded one (both score pure noise), so "out" guesses carry a
    floor of errors that "in" guesses do not; the one-sided point lets a
    strong signal reach the one-run ceiling at r = 2m/5. Fixed in advance (it
    depends on ``m`` only), hence valid under the union bound.
    """
    if m < 2:
        raise DpauditError(f"the one-run audit needs at least 2 canaries, got {m}")
    points = [(max(1, m // 10),) * 2, (max(1, m // 5),) * 2, (max(1, 2 * m // 5), 0)]
    return tuple(dict.fromkeys(points))


def gradient_canary_audit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float,
    grid: Sequence[tuple[int, int] | int] | None = None,
) -> EpsilonLowerBound:
    """White-box one-run audit of gradient-canary statistics (Steinke, Nasr, Jagielski 2023).

    :func:`~dpaudit.audit.lower_bound.audit_one_run` over ``grid`` (default
    :func:`gradient_canary_grid`), union-bounded; ``confidence`` is the
    overall level of the reported bound.
    """
    s = np.asarray(scores, dtype=float)
    points = gradient_canary_grid(s.size) if grid is None else grid
    return audit_one_run(s, included, delta=delta, confidence=confidence, grid=points)
