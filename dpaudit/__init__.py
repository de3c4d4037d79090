"""dpaudit: privacy auditing and attack evaluation for fine-tuned language models.

The Python API returns results; the CLI formats them (docs/api.md)::

    import dpaudit

    config = dpaudit.load_config("configs/quickstart.toml", sets=["train.epochs=1"])
    result = dpaudit.run(config)                # a RunResult
    result.audit_verdicts, result.policy_verdict, result.report["models"]["target"]["summary"]

Every name is imported lazily, so ``import dpaudit`` stays light (no torch,
no transformers until a name that needs them is used).
"""

from __future__ import annotations

from typing import Any

from dpaudit._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # workflows: what a user runs
    "load_config": "workflows.validate",
    "check_config": "workflows.validate",
    "run": "workflows.run",
    "audit_checkpoint": "workflows.checkpoint_audit",
    "export_audit_inputs": "workflows.checkpoint_audit",
    "RunResult": "workflows.result",
    "CheckpointAuditOptions": "workflows.options",
    "build_report": "reports",
    "write_report": "reports",
    # registries: look up and extend
    "get_accountant": "accounting",
    "register_accountant": "accounting",
    "get_attack": "attacks.registry",
    "register_attack": "attacks.registry",
    "Registry": "registry",
    # value types
    "RunConfig": "config",
    "PrivacyLedger": "accounting",
    "AttackScores": "attacks.scores",
    "AttackMetrics": "attacks.scores",
    "EpsilonLowerBound": "audit.lower_bound",
    "AuditVerdict": "audit.verdict",
    "Record": "datasets.records",
    "DpauditError": "errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

_getattr, _dir = lazy_exports("dpaudit", _EXPORTS)


def __getattr__(name: str) -> Any:
    return _getattr(name)


def __dir__() -> list[str]:
    return sorted({*_dir(), "__version__"})
