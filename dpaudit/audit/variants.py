"""Deliberately broken DP-SGD, to check that the audit catches what it should.

An auditor is only credible if it flags implementations known to be wrong
(the self-test idea of Nasr et al. 2023, "Tight Auditing of Differentially
Private Machine Learning", and of Steinke, Nasr, Jagielski 2023, who audit
broken DP-SGD in one run). Each variant is a :class:`~dpaudit.trainers.hooks.TrainHooks`
that changes only the mechanism the training loop *applies*; the privacy
ledger keeps stating the *claimed* one, exactly as a buggy implementation
would:

* :class:`NoNoise` — σ = 0 is applied: the update is the exact sum of
  clipped gradients (infinite ε, claimed finite).
* :class:`NoClipping` — the applied C is ``clip_factor`` times the claimed one
  and σ is divided by the same factor, so the noise σ·C is the claimed one
  and only clipping is skipped: a gradient larger than C passes whole.
* :class:`MisreportedSamplingRate` — lots are sampled at ``factor``·q while
  the accountant is told q.

:class:`Correct` changes nothing. :class:`CombinedHooks` runs a variant
together with observing or injecting hooks (e.g. gradient canaries) through
the one seam the loop has; no copy of the loop exists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from dpaudit.audit.verdict import CONSISTENT, VIOLATION
from dpaudit.errors import DpauditError, unknown_name
from dpaudit.trainers.hooks import Mechanism, TrainHooks

__all__ = [
    "VARIANTS",
    "CombinedHooks",
    "Correct",
    "MisreportedSamplingRate",
    "NoClipping",
    "NoNoise",
    "Variant",
    "make_variant",
]


class Variant(TrainHooks):
    """A DP-SGD implementation under test: what it applies, and what an audit should say.

    Attributes:
        name: registry key.
        expected_verdict: ``consistent`` for a correct implementation,
            ``violation`` for a broken one.
    """

    name = "variant"
    expected_verdict = VIOLATION

    def describe(self) -> str:
        """One line for tables and reports."""
        return self.name


class Correct(Variant):
    """DP-SGD as claimed."""

    name = "correct"
    expected_verdict = CONSISTENT

    def describe(self) -> str:
        return "correct DP-SGD"


class NoNoise(Variant):
    """Never adds noise (σ = 0 applied); the ledger claims the calibrated σ."""

    name = "no-noise"
    recipe_key = "variant:no-noise"

    def mechanism(self, claimed: Mechanism) -> Mechanism:
        return dataclasses.replace(claimed, noise_multiplier=0.0)

    def describe(self) -> str:
        return "noise never added (σ = 0 applied)"


class NoClipping(Variant):
    """Skips clipping: C·``clip_factor`` applied with σ/``clip_factor``, so σ·C is unchanged.

    Args:
        clip_factor: how much larger the applied clipping norm is (huge: no
            per-example gradient reaches it).
    """

    name = "no-clipping"
    recipe_key = "variant:no-clipping"

    def __init__(self, clip_factor: float = 1e6):
        if not (math.isfinite(clip_factor) and clip_factor > 1.0):
            raise DpauditError(f"clip_factor must be finite and > 1, got {clip_factor}")
        self.clip_factor = float(clip_factor)

    def mechanism(self, claimed: Mechanism) -> Mechanism:
        if not math.isfinite(claimed.max_grad_norm):
            raise DpauditError("no-clipping variant needs a finite claimed clipping norm")
        return dataclasses.replace(
            claimed,
            max_grad_norm=claimed.max_grad_norm * self.clip_factor,
            noise_multiplier=claimed.noise_multiplier / self.clip_factor,
        )

    def describe(self) -> str:
        return f"clipping skipped (C × {self.clip_factor:g} applied, σ·C unchanged)"


class MisreportedSamplingRate(Variant):
    """Samples lots at ``factor``·q; the ledger (and the accountant) claim q.

    Args:
        factor: applied / claimed sampling rate, > 1; the applied rate must
            stay at most 1.
    """

    name = "misreported-rate"
    recipe_key = "variant:misreported-rate"

    def __init__(self, factor: float = 10.0):
        if not (math.isfinite(factor) and factor > 1.0):
            raise DpauditError(f"sampling-rate factor must be finite and > 1, got {factor}")
        self.factor = float(factor)

    def mechanism(self, claimed: Mechanism) -> Mechanism:
        rate = claimed.sample_rate * self.factor
        if rate > 1.0:
            raise DpauditError(
                f"misreported-rate variant: {self.factor:g} × q = {rate:.3g} exceeds 1; lower the batch size"
            )
        return dataclasses.replace(claimed, sample_rate=rate)

    def describe(self) -> str:
        return f"sampling rate {self.factor:g} × the claimed q"


VARIANTS: dict[str, type[Variant]] = {
    cls.name: cls for cls in (Correct, NoNoise, NoClipping, MisreportedSamplingRate)
}
"""The registered variants by name."""


def make_variant(name: str, **kwargs: Any) -> Variant:
    """Build the variant registered as ``name`` (keyword arguments to its constructor)."""
    if name not in VARIANTS:
        raise unknown_name("DP-SGD variant", name, VARIANTS)
    return VARIANTS[name](**kwargs)


class CombinedHooks(TrainHooks):
    """Several hooks run as one: every call is forwarded to each, in order.

    Each hook's :meth:`mechanism` sees the *claimed* mechanism (an injecting
    hook such as gradient canaries needs the claimed C), and at most one hook
    may alter it. The recipe key joins the hooks' keys.
    """

    def __init__(self, *hooks: TrainHooks):
        self.hooks: tuple[TrainHooks, ...] = tuple(h for h in hooks if h is not None)
        keys = [h.recipe_key for h in self.hooks if h.recipe_key]
        self.recipe_key = "+".join(keys) if keys else None

    def mechanism(self, claimed: Mechanism) -> Mechanism:
        applied = [h.mechanism(claimed) for h in self.hooks]
        changed = [m for m in applied if m != claimed]
        if len(changed) > 1:
            raise DpauditError(
                "combined training hooks: more than one of them alters the mechanism"
            )
        return changed[0] if changed else claimed

    def on_per_sample_grads(
        self, *, step: int, params: Sequence[Any], example_ids: Sequence[str]
    ) -> None:
        for h in self.hooks:
            if h.wants_per_sample_grads:
                h.on_per_sample_grads(step=step, params=params, example_ids=example_ids)

    def on_noisy_grads(
        self, *, step: int, params: Sequence[Any], expected_batch_size: float
    ) -> None:
        for h in self.hooks:
            if h.wants_noisy_grads:
                h.on_noisy_grads(step=step, params=params, expected_batch_size=expected_batch_size)

    def on_step_end(self, *, step: int, loss: float | None, model: Any) -> None:
        for h in self.hooks:
            h.on_step_end(step=step, loss=loss, model=model)

    @property
    def wants_per_sample_grads(self) -> bool:
        return any(h.wants_per_sample_grads for h in self.hooks)

    @property
    def wants_noisy_grads(self) -> bool:
        return any(h.wants_noisy_grads for h in self.hooks)
