"""dpaudit: privacy auditing and attack evaluation for fine-tuned language models."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "audit_checkpoint"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import dpaudit`` stays light (no torch, no transformers).
    if name == "audit_checkpoint":
        from dpaudit.workflows.checkpoint_audit import audit_checkpoint

        return audit_checkpoint
    raise AttributeError(f"module 'dpaudit' has no attribute {name!r}")
