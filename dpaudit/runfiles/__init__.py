"""Typed definitions of the run directory's JSON files (docs/run-directory.md).

Every file has one definition here: a frozen pydantic model whose fields carry
their description and whose ``schema_version`` says which layout a file has.
Writers build the model and call :func:`write_run_file`; readers call
:func:`read_run_file`, which refuses a version this dpaudit does not read with
one line naming it. docs/run-directory.md and docs/report-schema.md are
generated from the definitions (``python -m dpaudit.runfiles.docs``).

Plumbing: every layer may import it; it imports only ``dpaudit.atomic`` and
``dpaudit.errors``.

- :mod:`~dpaudit.runfiles.base`: ``JsonFloat``, ``RunModel``, ``RunFile``.
- :mod:`~dpaudit.runfiles.io`: ``read_run_file``, ``write_run_file``.
- :mod:`~dpaudit.runfiles.privacy`: ``privacy.json``, utility ``metrics.json``.
- :mod:`~dpaudit.runfiles.attacks`: attack ``metrics.json``, ``blind.json``,
  ``status.json``, ``canary.json``, ``memorization.json``, ``pii.json``,
  ``recovered.json``.
- :mod:`~dpaudit.runfiles.audit`: ``bounds.json``.
- :mod:`~dpaudit.runfiles.manifest`: ``manifest.json``.
- :mod:`~dpaudit.runfiles.report`: ``report.json``.
"""

from dpaudit._lazy import lazy_exports

_EXPORTS = {
    "JsonFloat": "base",
    "RunFile": "base",
    "RunModel": "base",
    "read_run_file": "io",
    "write_run_file": "io",
    "parse_run_file": "io",
    "PrivacyFile": "privacy",
    "UtilityFile": "privacy",
    "AttackMetricsFile": "attacks",
    "BlindFile": "attacks",
    "StatusFile": "attacks",
    "CanaryFile": "attacks",
    "CanaryResults": "attacks",
    "MemorizationFile": "attacks",
    "PiiFile": "attacks",
    "PiiResults": "attacks",
    "RecoveredFile": "attacks",
    "AuditEntry": "audit",
    "BoundsFile": "audit",
    "ManifestFile": "manifest",
    "StageEntry": "manifest",
    "Report": "report",
    "RUN_FILES": "docs",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
