"""Orchestrators: the full run and the checkpoint audit.

The one layer that calls every other (datasets → trainers → attacks → audit →
reports); the CLI formats what these return. ``run`` and ``audit_checkpoint``
return a :class:`~dpaudit.workflows.result.RunResult`.
"""

from dpaudit._lazy import lazy_exports

_EXPORTS = {
    "run": "run",
    "run_all": "run",
    "packaged_config": "run",
    "audit_checkpoint": "checkpoint_audit",
    "run_checkpoint_audit": "checkpoint_audit",
    "export_audit_inputs": "checkpoint_audit",
    "CheckpointAuditOptions": "options",
    "RunResult": "result",
    "load_config": "validate",
    "check_config": "validate",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
