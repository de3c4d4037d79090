"""Training state for resuming an interrupted run, written atomically, read without unpickling.

Not to be confused with loading a released model
(:func:`dpaudit.trainers.safe_load.load_model`): this module saves and restores
the *training* state of a run in progress. A saved state (a checkpoint) is a
directory ``<out_dir>/checkpoint/step-<NNNNNNNN>/`` holding

* ``trainable.safetensors`` — the trainable parameters (frozen ones come back
  from the same model source and seed),
* ``optimizer.pt`` — the optimizer's ``state_dict`` (tensors and plain
  containers only; read with ``torch.load(weights_only=True)``),
* ``rng.safetensors`` — the global CPU (and CUDA) RNG states,
* ``state.json`` — the step counter and the training recipe, written last.

The directory is assembled under a temporary name and renamed into place, so
a crash never leaves a half-written checkpoint; older checkpoints are removed
once a newer one is complete. Lot sampling and DP noise are derived per step
from the seed (:func:`dpaudit.trainers.data.derive_seed`), so they need no
saved generator state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dpaudit.atomic import read_json, write_json
from dpaudit.errors import DpauditError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


def checkpoint_root(out_dir: str | Path) -> Path:
    """``<out_dir>/checkpoint``."""
    return Path(out_dir) / CHECKPOINT_DIR


def latest_training_state(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the most steps, or ``None``."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def save_training_state(
    out_dir: str | Path, *, step: int, model: Any, optimizer: Any, state: dict[str, Any]
) -> Path:
    """Save the training state after ``step`` logical steps; return its directory.

    Args:
        out_dir: the run's output directory.
        step: steps done so far.
        model: the (unwrapped) model; its trainable parameters are saved.
        optimizer: the optimizer (a DPOptimizer delegates ``state_dict``).
        state: JSON-able extras (the recipe, the train log); ``step`` is added.
    """
    import torch
    from safetensors.torch import save_file

    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:08d}.", dir=root))
    try:
        params = {
            n: p.detach().to("cpu").contiguous()
            for n, p in model.named_parameters()
            if p.requires_grad
        }
        save_file(params, str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda_{i}"] = s
        save_file(rng, str(tmp / "rng.safetensors"))
        write_json(tmp / STATE_FILE, {**state, "step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in root.glob("step-*"):
        if old != final and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(stale)
    return final


def read_state(path: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint directory."""
    return read_json(Path(path) / STATE_FILE)


def load_training_state(
    path: str | Path, *, model: Any, optimizer: Any, device: Any
) -> dict[str, Any]:
    """Restore trainable parameters, optimizer and RNG states from ``path``; return ``state.json``.

    Raises:
        DpauditError: when the checkpoint does not match the model's trainable parameters.
    """
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    saved = load_file(str(path / "trainable.safetensors"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        missing = sorted(set(params) ^ set(saved))[:3]
        raise DpauditError(
            f"{path}: checkpoint parameters do not match the model (e.g. {', '.join(missing)})"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name].to(p.device, p.dtype))
    opt_state = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(opt_state)
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return read_state(path)


def remove_training_states(out_dir: str | Path) -> None:
    """Delete ``<out_dir>/checkpoint`` (after the final outputs are written)."""
    shutil.rmtree(checkpoint_root(out_dir), ignore_errors=True)


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two training recipes (empty when equal)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            out.append(f"{key}: {saved.get(key)!r} (checkpoint) vs {current.get(key)!r} (now)")
    return out
