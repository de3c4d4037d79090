"""Training: target, baseline and reference models, with DP-SGD and a privacy ledger.

DP-SGD (Abadi et al. 2016) through Opacus (Yousefpour et al. 2021). Public
names are imported lazily so that ``import dpaudit.trainers`` does not import
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train_model": "dp_sgd",
    "TrainResult": "dp_sgd",
    "load_result": "dp_sgd",
    "training_recipe": "dp_sgd",
    "train_references": "references",
    "assign_membership": "references",
    "load_membership": "references",
    "TrainHooks": "hooks",
    "Mechanism": "hooks",
    "StopTraining": "hooks",
    "PrivacyPlan": "privacy",
    "plan_privacy": "privacy",
    "default_delta": "privacy",
    "read_privacy": "privacy",
    "build_model": "models",
    "load_pretrained": "models",
    "resolve_device": "models",
    "evaluate": "evaluate",
    "Ranks": "distributed",
    "ranks_from_env": "distributed",
    "process_group": "distributed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
