"""Extension points of the DP-SGD step, for deliberately altered training runs.

The training loop (:mod:`dpaudit.trainers.loop`) implements DP-SGD (Abadi et
al. 2016, "Deep Learning with Differential Privacy", Algorithm 1) through
Opacus (Yousefpour et al. 2021): Poisson-sampled lots, per-example gradients
clipped to norm C, Gaussian noise of standard deviation σ·C added to their
sum. An auditor's self-test needs variants of exactly this step — noise never
added, clipping skipped, a sampling rate misreported to the accountant,
crafted gradient canaries injected into the per-example gradients before
clipping — without a second copy of the loop. :class:`TrainHooks` is that
seam: the loop asks it which mechanism to *apply* (the ledger always states
the *claimed* one), calls it once the per-example gradients of a physical
batch exist and before Opacus clips them, once the privatized (clipped,
summed, noised) gradient of a logical step exists and before the optimizer
uses it, and once after every logical step.

The default :class:`TrainHooks` changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mechanism:
    """DP-SGD parameters of one run.

    Attributes:
        sample_rate: Poisson sampling rate q of each lot.
        noise_multiplier: σ; the noise on the summed clipped gradients has
            standard deviation σ·C.
        max_grad_norm: clipping norm C of each per-example gradient.
    """

    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float


class StopTraining(Exception):
    """Raised from :meth:`TrainHooks.on_step_end` to stop training gracefully.

    The loop saves a checkpoint at the step just finished, writes the ledger
    of the steps taken so far and returns a result with ``completed=False``;
    ``train_model(..., resume=True)`` later continues from there.
    """


class TrainHooks:
    """No-op hooks; subclass and override to alter or observe the DP-SGD step.

    Attributes:
        recipe_key: a name recorded in the training recipe when the hooks change
            what training computes (a deliberately broken variant, injected
            canaries), so that such a run is never resumed or reused as a
            normal one. Hooks that only observe leave it ``None``.
    """

    recipe_key: str | None = None

    def mechanism(self, claimed: Mechanism) -> Mechanism:
        """Return the mechanism the step actually applies (default: the claimed one).

        The privacy ledger always reports ``claimed``. A variant that, e.g.,
        never adds noise returns ``Mechanism(q, 0.0, C)``; one that skips
        clipping returns a huge C with σ rescaled so that σ·C is unchanged.
        """
        return claimed

    def on_per_sample_grads(
        self, *, step: int, params: Sequence[Any], example_ids: Sequence[str]
    ) -> None:
        """Called after the backward pass of a physical batch, before clipping.

        Each ``p`` in ``params`` carries ``p.grad_sample`` of shape
        ``(len(example_ids), *p.shape)``, which may be modified in place (e.g.
        to inject a white-box gradient canary). Only called in the private
        ``hooks``/``functorch`` modes: ghost clipping never materialises
        per-example gradients, so a hook that overrides this method is refused
        with ``grad_sample_mode = ghost``.

        Args:
            step: index of the logical step being computed (0-based).
            params: the trainable parameters, in optimizer order.
            example_ids: record ids of the rows of ``grad_sample``.
        """

    def on_noisy_grads(
        self, *, step: int, params: Sequence[Any], expected_batch_size: float
    ) -> None:
        """Called once per logical step after Opacus adds the noise, before the optimizer update.

        Each ``p`` in ``params`` carries in ``p.grad`` the privatized gradient
        DP-SGD releases, (Σ_i clip_C(g_i) + N(0, σ²C²·I)) / B, with
        ``B = expected_batch_size`` (the applied q times n). It must not be
        modified. Only called in DP-SGD runs.

        Args:
            step: index of the logical step (0-based).
            params: the trainable parameters, in optimizer order.
            expected_batch_size: the divisor B of the summed noisy gradient.
        """

    def on_step_end(self, *, step: int, loss: float | None, model: Any) -> None:
        """Called after the optimizer step; ``step`` counts the steps done (1-based).

        May raise :class:`StopTraining` to stop after this step.
        """

    @property
    def wants_per_sample_grads(self) -> bool:
        """True when a subclass overrides :meth:`on_per_sample_grads`."""
        return type(self).on_per_sample_grads is not TrainHooks.on_per_sample_grads

    @property
    def wants_noisy_grads(self) -> bool:
        """True when a subclass overrides :meth:`on_noisy_grads`."""
        return type(self).on_noisy_grads is not TrainHooks.on_noisy_grads
