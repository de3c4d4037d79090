"""One DP-SGD step, and the same step without privacy.

DP-SGD (Abadi et al. 2016, Algorithm 1) through Opacus (Yousefpour et al.
2021): for a Poisson lot L of expected size B = q·n,

    g = (Σ_{i∈L} clip_C(∇ℓ_i) + N(0, σ²C²·I)) / B,    clip_C(v) = v · min(1, C/‖v‖),

then an AdamW update with g. The per-example loss ℓ_i is the mean token
cross-entropy of sequence i (shifted causal-LM targets, padding ignored) or
its class cross-entropy, so the privacy unit is one example. Lots larger than
``physical_batch_size`` are split exactly as Opacus' ``BatchMemoryManager``
splits them (``optimizer.signal_skip_step``); clipped gradients accumulate
across the chunks and noise is added once per lot.

The non-private step uses the same lots, the same loss and the same
normalisation (Σ∇ℓ_i / B) without clipping or noise, so a baseline differs
from its private target only in the mechanism.

Noise is drawn from a generator reseeded per step from the run seed, which
makes a resumed run bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dpaudit.config import TrainConfig
from dpaudit.errors import DpauditError
from dpaudit.trainers.data import (
    STREAM_NOISE,
    EncodedExamples,
    PoissonSampler,
    ShuffleSampler,
    collate,
    derive_seed,
    physical_batches,
)
from dpaudit.trainers.distributed import SINGLE, Ranks, refuse_hooks
from dpaudit.trainers.hooks import Mechanism, TrainHooks
from dpaudit.trainers.models import BuiltModel, autocast
from dpaudit.trainers.privacy import PrivacyPlan

if TYPE_CHECKING:
    import torch

SUPPORTED_GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")


def example_losses(logits: Any, targets: Any, task: str) -> Any:
    """Per-example loss: mean shifted-token cross-entropy (pad ignored), or class cross-entropy."""
    import torch.nn.functional as F

    if task != "causal_lm":
        return F.cross_entropy(logits.float(), targets, reduction="none")
    shifted = logits[:, :-1].float()
    tgt = targets[:, 1:]
    tok = F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)), tgt.reshape(-1), reduction="none", ignore_index=-100
    ).view(tgt.shape)
    count = (tgt != -100).sum(dim=1).clamp(min=1)
    return tok.sum(dim=1) / count


def _make_criterion(task: str) -> Any:
    import torch.nn as nn

    class ExampleLoss(nn.Module):
        """Criterion with Opacus' ``reduction`` protocol (``none`` → per-example vector)."""

        def __init__(self) -> None:
            super().__init__()
            self.reduction = "mean"

        def forward(self, logits: Any, targets: Any) -> Any:
            per = example_losses(logits, targets, task)
            if self.reduction == "none":
                return per
            return per.sum() if self.reduction == "sum" else per.mean()

    return ExampleLoss()


class LiveEpsilon:
    """ε after t steps by Opacus' RDP analysis (Mironov et al. 2019), for the progress bar only."""

    def __init__(self, plan: PrivacyPlan):
        self.plan = plan
        self.per_step = None
        if plan.dp and plan.noise_multiplier > 0:
            from opacus.accountants import RDPAccountant
            from opacus.accountants.analysis.rdp import compute_rdp

            self.orders = RDPAccountant.DEFAULT_ALPHAS
            self.per_step = np.asarray(
                compute_rdp(
                    q=plan.sample_rate,
                    noise_multiplier=plan.noise_multiplier,
                    steps=1,
                    orders=self.orders,
                )
            )

    def __call__(self, steps: int) -> float:
        if not self.plan.dp or self.per_step is None:
            return math.inf if steps > 0 or not self.plan.dp else 0.0
        if steps == 0:
            return 0.0
        from opacus.accountants.analysis.rdp import get_privacy_spent

        eps, _ = get_privacy_spent(
            orders=self.orders, rdp=self.per_step * steps, delta=self.plan.delta
        )
        return float(eps)


class _DPOptimizer(Protocol):
    """What this module uses of Opacus' ``DPOptimizer`` (Opacus ships no type information)."""

    step_hook: Callable[[Any], None] | None
    expected_batch_size: float

    @property
    def params(self) -> list[torch.nn.Parameter]: ...

    def signal_skip_step(self, do_skip: bool = True) -> None: ...


class StepRunner:
    """Holds the (possibly Opacus-wrapped) model and optimizer; runs logical steps.

    Args:
        built: the model to train.
        examples: the tokenized training set.
        plan: the claimed privacy plan (what the ledger states).
        config: the training recipe.
        device: where to train.
        seed: run seed (lots and noise are derived from it per step).
        pad_id: padding token id.
        hooks: extension points (:class:`TrainHooks`).
        ranks: this process's place under torchrun (:mod:`dpaudit.trainers.distributed`):
            every rank draws the same global lot and processes its share; the update
            is all-reduced, so each rank holds the single-process model.
    """

    def __init__(
        self,
        *,
        built: BuiltModel,
        examples: EncodedExamples,
        plan: PrivacyPlan,
        config: TrainConfig,
        device: Any,
        seed: int,
        pad_id: int,
        hooks: TrainHooks | None = None,
        ranks: Ranks = SINGLE,
    ):
        import torch

        self.built, self.examples, self.plan, self.config = built, examples, plan, config
        self.device, self.seed, self.pad_id = device, seed, pad_id
        self.hooks = hooks or TrainHooks()
        self.ranks = ranks
        refuse_hooks(self.hooks, ranks)
        clip = plan.max_grad_norm if plan.max_grad_norm is not None else math.inf
        claimed = Mechanism(plan.sample_rate, plan.noise_multiplier, clip)
        self.mechanism = self.hooks.mechanism(claimed) if plan.dp else claimed
        n = len(examples)
        if plan.poisson:
            self.sampler: Any = PoissonSampler(n, self.mechanism.sample_rate, seed)
        else:
            self.sampler = ShuffleSampler(n, max(1, round(self.mechanism.sample_rate * n)), seed)
        self.model = built.model.to(device)
        self.model.train()
        if not plan.dp:  # identical starts (a DP model is broadcast by Opacus' DPDDP)
            ranks.broadcast_parameters(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Replaced by Opacus' DPOptimizer (a torch Optimizer around this AdamW) in _make_private.
        self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self._dp_optimizer: _DPOptimizer | None = None
        self.expected_batch = self.mechanism.sample_rate * n
        self.train_module: Any = self.model
        self.criterion = _make_criterion(built.task)
        self.noise_gen: torch.Generator | None = None
        self.ghost = False
        self._step = 0
        if plan.dp:
            self._make_private()

    # ------------------------------------------------------------------ setup
    def _make_private(self) -> None:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        mode = self.config.grad_sample_mode
        if mode not in SUPPORTED_GRAD_SAMPLE_MODES:
            raise DpauditError(
                f"train.grad_sample_mode = {mode!r} cannot wrap Hugging Face models (they take keyword inputs); "
                f"use one of: {', '.join(SUPPORTED_GRAD_SAMPLE_MODES)}"
            )
        self.ghost = mode == "ghost"
        if self.ghost:
            if self.hooks.wants_per_sample_grads:
                raise DpauditError(
                    "ghost clipping never materialises per-example gradients; use grad_sample_mode = hooks"
                )
            _refuse_tied_trainable_embeddings(self.model)
        self.noise_gen = torch.Generator(device=self.device)
        from opacus import PrivacyEngine

        module: Any = self.model
        if self.ranks.active:
            # Opacus picks its DistributedDPOptimizer for a DPDDP module: rank 0 adds the noise,
            # the clipped sums are all-reduced (module docstring of trainers.distributed).
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

            module = DPDDP(self.model)

        with warnings.catch_warnings():
            # secure_mode=False is deliberate: noise is seeded per step for reproducible audits.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(secure_mode=False)
            # The loader is a placeholder: lots come from our own sampler, whose rate is q exactly.
            # Opacus reads only len(loader) and len(loader.dataset).
            loader = DataLoader(
                TensorDataset(torch.arange(len(self.examples))), batch_size=self.plan.batch_size
            )
            try:
                out = engine.make_private(
                    module=module,
                    optimizer=self.optimizer,
                    criterion=self.criterion,
                    data_loader=loader,
                    noise_multiplier=self.mechanism.noise_multiplier,
                    max_grad_norm=self.mechanism.max_grad_norm,
                    poisson_sampling=False,
                    grad_sample_mode=mode,
                    noise_generator=self.noise_gen,
                    loss_reduction="mean",
                )
            except (NotImplementedError, ValueError) as exc:
                raise DpauditError(
                    f"Opacus cannot make this model private: {str(exc).splitlines()[0]}"
                ) from None
        if self.ghost:
            self.train_module, optimizer, self.criterion, _ = out
        else:
            self.train_module, optimizer, _ = out
            self.train_module.forbid_grad_accumulation()
        self.optimizer = optimizer
        dp_optimizer: _DPOptimizer = optimizer
        # Accounting is ours, with the exact q (see privacy.py). Opacus calls step_hook after adding the
        # noise and dividing by B, before the update: the slot only serves hooks observing that gradient.
        dp_optimizer.step_hook = self._noisy_grads if self.hooks.wants_noisy_grads else None
        # Per rank: the distributed optimizer divides by B/W, then averages the W ranks' sums.
        dp_optimizer.expected_batch_size = self.expected_batch / self.ranks.world_size
        self._dp_optimizer = dp_optimizer

    def _private(self) -> tuple[_DPOptimizer, torch.Generator]:
        """Opacus' optimizer and the noise generator, both set by :meth:`_make_private`."""
        if self._dp_optimizer is None or self.noise_gen is None:
            raise RuntimeError("internal error: a private step before _make_private()")
        return self._dp_optimizer, self.noise_gen

    def _noisy_grads(self, optimizer: Any) -> None:
        self.hooks.on_noisy_grads(
            step=self._step, params=optimizer.params, expected_batch_size=self.expected_batch
        )

    # ------------------------------------------------------------------ steps
    def lot(self, step: int) -> list[int]:
        """Example indices of the lot of ``step``."""
        return self.sampler.lot(step)

    def run_step(self, step: int) -> tuple[float | None, int]:
        """Run logical step ``step`` (0-based); return (mean example loss or None, lot size)."""
        self._step = step
        lot = self.lot(step)
        chunks = physical_batches(self.ranks.share(lot), self.config.physical_batch_size)
        if not chunks:
            self._empty_step(step)
            total = self._global_loss(0.0)  # the other ranks' shares may not be empty
            return (total / len(lot) if lot else None), len(lot)
        loss_sum = 0.0
        for j, chunk in enumerate(chunks):
            last = j == len(chunks) - 1
            inputs, targets = collate(
                self.examples,
                chunk,
                pad_id=self.pad_id,
                task=self.built.task,
                input_names=self.built.input_names,
                device=self.device,
            )
            with autocast(self.device, self.config.precision):
                logits = self.train_module(**inputs).logits
            if self.plan.dp:
                dp_optimizer, noise_gen = self._private()
                loss = self.criterion(logits, targets)
                with warnings.catch_warnings():
                    # Opacus' full backward hooks fire on outputs when no input needs a gradient (expected).
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                loss_sum += float(loss.item()) * len(chunk)
                if self.hooks.wants_per_sample_grads:
                    ids = [self.examples.ids[i] for i in chunk]
                    self.hooks.on_per_sample_grads(
                        step=step, params=dp_optimizer.params, example_ids=ids
                    )
                dp_optimizer.signal_skip_step(do_skip=not last)
                if last:
                    noise_gen.manual_seed(derive_seed(self.seed, STREAM_NOISE, step))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            else:
                per = example_losses(logits, targets, self.built.task)
                (per.sum() / self.expected_batch).backward()
                loss_sum += float(per.detach().sum().item())
                if last:
                    self._all_reduce_grads()
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        return self._global_loss(loss_sum) / len(lot), len(lot)

    def _global_loss(self, loss_sum: float) -> float:
        """The lot's summed example loss over every rank's share."""
        if not self.ranks.active:
            return loss_sum
        import torch

        # on the rank's device: NCCL has no CPU tensors
        total = torch.tensor([loss_sum], dtype=torch.float64, device=self.device)
        return float(self.ranks.all_reduce_sum(total).item())

    def _all_reduce_grads(self) -> None:
        """Non-private step under torchrun: sum each rank's Σ∇ℓ_i/B (Opacus does it for DP)."""
        if not self.ranks.active:
            return
        import torch

        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        # Which parameters got a gradient on some rank: the others keep None (no AdamW update
        # or weight decay), as in one process.
        had = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        had = self.ranks.all_reduce_sum(had.to(self.device))
        for p, count in zip(params, had.tolist(), strict=True):
            if count == 0:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            self.ranks.all_reduce_sum(p.grad)

    def _empty_step(self, step: int) -> None:
        """An empty Poisson lot: the update is noise alone (private) or a zero gradient."""
        import torch

        private = self._private() if self.plan.dp else None
        # Any: Opacus adds a grad_sample attribute to the parameters.
        params: list[Any] = (
            list(private[0].params)
            if private is not None
            else [p for g in self.optimizer.param_groups for p in g["params"]]
        )
        for p in params:
            if private is not None and not self.ghost:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            else:
                p.grad = torch.zeros_like(p)
        if private is not None:
            dp_optimizer, noise_gen = private
            dp_optimizer.signal_skip_step(do_skip=False)
            noise_gen.manual_seed(derive_seed(self.seed, STREAM_NOISE, step))
        else:
            self._all_reduce_grads()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def unwrap(self) -> Any:
        """Remove Opacus hooks and return the plain (possibly PEFT) model, in eval mode."""
        if self.train_module is not self.model and hasattr(self.train_module, "_close"):
            self.train_module._close()
        self.model.eval()
        return self.model


def _refuse_tied_trainable_embeddings(model: Any) -> None:
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return
    emb_in, emb_out = get_in(), get_out()
    if (
        emb_in is not None
        and emb_out is not None
        and emb_in.weight is emb_out.weight
        and emb_in.weight.requires_grad
    ):
        raise DpauditError(
            "Opacus ghost clipping refuses tied input/output embeddings; use grad_sample_mode = hooks"
        )


def timed_steps(runner: StepRunner, steps: Sequence[int]) -> list[float]:
    """Seconds per logical step for ``steps`` (used by benchmarks and cost estimates)."""
    out = []
    for s in steps:
        t = time.perf_counter()
        runner.run_step(s)
        out.append(time.perf_counter() - t)
    return out
