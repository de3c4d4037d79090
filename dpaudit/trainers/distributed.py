"""One model on several processes: DP-SGD under ``torchrun``.

``torchrun --standalone --nproc-per-node W -m dpaudit train CONFIG`` starts W
processes (ranks); each holds a full copy of the model and of the encoded
training set. For logical step t:

* **Poisson sampling across ranks.** Every rank draws the same global lot
  L_t — the run's :class:`~dpaudit.trainers.data.PoissonSampler`, each of the
  n examples included independently with probability q, seeded per step from
  the run seed — and processes its share ``L_t[rank::W]``. The shares
  partition L_t, so the lots, hence q, T and the ledger, are those of one
  process (Opacus' ``DistributedUniformWithReplacementSampler`` samples each
  rank's slice of the data with the same q: the same distribution, but not the
  same lots as a single process).
* **Clipping and noise** by Opacus' ``DistributedDPOptimizer`` (Yousefpour et
  al. 2021): each rank clips its examples' gradients and sums them; rank 0
  alone adds z ~ N(0, σ²C²·I) (drawn from the per-step noise generator, so it
  is the single-process draw); every rank divides by B/W and an all-reduce
  sum divided by W gives every rank

      g = (Σ_{i∈L_t} clip_C(∇ℓ_i) + z) / B,   B = q·n,

  the update of Abadi et al. 2016, Algorithm 1, equal to the single-process
  one up to floating-point summation order (for models without dropout, as the
  embedded ones: with dropout each rank draws its own masks, so the update is
  the same in distribution, not in value).
* **Non-private baseline**: each rank's Σ∇ℓ_i/B over its share, all-reduced
  (sum) before the update; a parameter no rank gave a gradient keeps none, as
  in one process.

Rank 0 alone writes: checkpoints, the ledger (``privacy.json``), the model,
metrics, the run manifest. Every rank reads the same run directory, so it must
be on a filesystem they all see (one node, or a shared mount). Resuming reads
rank 0's checkpoint on every rank, with any number of processes.

Not supported under torchrun (refused with a message): federated and
user-level runs, and the white-box audit's hooks that observe per-example or
noisy gradients (each rank sees only its own share).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dpaudit.errors import DpauditError

T = TypeVar("T")

WAIT_MINUTES = 180
"""How long a rank waits in a collective (rank 0's data stage, evaluation, saving) before failing."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes.

    Attributes:
        rank: 0 … world_size − 1; rank 0 writes the run's files.
        world_size: number of processes W (1 without torchrun).
        local_rank: index on this node (the CUDA device of the rank).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def share(self, lot: Sequence[int]) -> list[int]:
        """This rank's part of a global lot: ``lot[rank::world_size]``."""
        return list(lot[self.rank :: self.world_size])

    # ------------------------------------------------------------ collectives
    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (a picklable object) on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, tensor: Any) -> Any:
        """Sum ``tensor`` over ranks, in place; return it."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_parameters(self, model: Any) -> None:
        """Copy rank 0's parameters to every rank (as Opacus' DPDDP does at wrap time)."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p.data, 0)


SINGLE = Ranks()
"""One process: every collective is a no-op."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DpauditError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise DpauditError(f"environment variable {name}={raw!r} is negative")
    return value


def ranks_from_env() -> Ranks:
    """The :class:`Ranks` torchrun gave this process (``SINGLE`` without torchrun).

    Raises:
        DpauditError: malformed ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``, or a rank
            outside ``[0, WORLD_SIZE)``.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    rank = _env_int("RANK", 0)
    if rank >= world:
        raise DpauditError(f"environment: RANK={rank} is not below WORLD_SIZE={world}")
    return Ranks(rank=rank, world_size=world, local_rank=_env_int("LOCAL_RANK", rank))


def under_torchrun() -> bool:
    """True when this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return ranks_from_env().active


@contextlib.contextmanager
def process_group(device_type: str) -> Iterator[Ranks]:
    """Join the torchrun process group for the duration of the block; yield this process's ranks.

    Backend: NCCL for CUDA, gloo for the CPU. Each CUDA rank uses device
    ``cuda:LOCAL_RANK``. Without torchrun this yields :data:`SINGLE` and does
    nothing. A group the caller already initialised is used and left open.

    Raises:
        DpauditError: bad torchrun variables, or a CUDA rank without its device.
    """
    ranks = ranks_from_env()
    if not ranks.active:
        yield SINGLE
        return
    import torch
    import torch.distributed as dist

    if device_type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise DpauditError(
                f"torchrun: LOCAL_RANK={ranks.local_rank} but {torch.cuda.device_count()} CUDA "
                "device(s) are visible (use --nproc-per-node ≤ the GPU count)"
            )
        torch.cuda.set_device(ranks.local_rank)
    owned = not dist.is_initialized()
    if owned:
        # Ranks 1… wait in a broadcast while rank 0 prepares the data and, after each model,
        # evaluates and saves it: allow more than torch's 30-minute default for that.
        dist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=WAIT_MINUTES),
        )
    try:
        yield ranks
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def rank_device(device: Any, ranks: Ranks) -> Any:
    """The device of this rank: ``cuda:LOCAL_RANK`` for any CUDA device under torchrun, else ``device``.

    ``train.device = "cuda:N"`` names one GPU; W ranks cannot all train there (NCCL
    refuses duplicate GPUs), so under torchrun each rank takes its own.
    """
    if ranks.active and device.type == "cuda":
        import torch

        return torch.device("cuda", ranks.local_rank)
    return device


def refuse_hooks(hooks: Any, ranks: Ranks) -> None:
    """Refuse training hooks that need a whole lot's gradients in one process.

    Raises:
        DpauditError: under torchrun, for hooks observing per-example or noisy gradients.
    """
    if ranks.active and (hooks.wants_per_sample_grads or hooks.wants_noisy_grads):
        raise DpauditError(
            "white-box audit canaries observe a whole lot's gradients: train them in one "
            "process (without torchrun)"
        )
