"""The run directory: the audit trail of one run.

Layout (see docs/run-directory.md)::

    runs/<name>/
      manifest.json   provenance, input/output hashes, stage status and timings
      config.toml     resolved config, written before any work starts
      data/ target/ baseline/ references/ attacks/ audit/ report/

:class:`RunDir` creates the directory, keeps ``manifest.json`` up to date
(atomically, after every change) and records stages. A stage is skipped on
``--resume`` only when it completed before with exactly the same input hashes
(:meth:`RunDir.can_skip`). One manifest accumulates every stage of the run,
whichever command ran it: each stage records its inputs, outputs, timings, seed
and command line. Which settings a finished stage fixes is the workflows'
business (:mod:`dpaudit.workflows.integrity` checks them before this module
writes anything).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpaudit import __version__
from dpaudit.atomic import atomic_write_text, to_jsonable
from dpaudit.config import RunConfig, to_toml
from dpaudit.errors import DpauditError
from dpaudit.runfiles.io import read_run_file, write_run_file
from dpaudit.runfiles.manifest import ManifestFile

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "opacus",
    "dp-accounting",
    "numpy",
    "scikit-learn",
)


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: str | Path) -> dict[str, str]:
    """SHA-256 of every file under a directory (relative path -> hash), or of one file."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)}
    return {
        str(p.relative_to(path)): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def sha256_text(text: str) -> str:
    """SHA-256 of a UTF-8 string (for hashing configs and id lists)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (imports nothing heavy)."""
    out: dict[str, str | None] = {"dpaudit": __version__, "python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (or of this source tree), if any."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _discard(path: Path) -> None:
    """Remove the run directory ``path`` (``--force``): renamed aside first, then deleted."""
    import os
    import shutil

    aside = path.with_name(f".{path.name}.discarded-{os.getpid()}")
    path.rename(aside)
    shutil.rmtree(aside)


@dataclass
class StageRecord:
    """Status of one stage in the manifest."""

    status: str = "pending"  # pending | running | done | failed
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    error: str | None = None
    argv: list[str] = field(default_factory=list)
    seed: int | None = None


class RunDir:
    """A run directory and its manifest.

    Args:
        path: the run directory.
        argv: the command line recorded with every stage this object runs
            (default ``sys.argv``).
    """

    def __init__(self, path: str | Path, *, argv: list[str] | None = None):
        self.path = Path(path)
        self.argv = list(argv if argv is not None else sys.argv)

    @staticmethod
    def check_location(path: str | Path) -> None:
        """Refuse a run directory path that cannot hold a run, before anything is written.

        Raises:
            DpauditError: ``path`` (or a directory above it) exists and is not a
                directory, or ``path`` is a non-empty directory without a
                ``manifest.json`` (not a dpaudit run).
        """
        path = Path(path)
        for above in reversed(path.parents):
            if above.exists() and not above.is_dir():
                raise DpauditError(f"{above}: exists and is not a directory; cannot hold {path}")
        if path.exists() and not path.is_dir():
            raise DpauditError(
                f"{path}: exists and is not a directory; choose another --name or --runs-dir"
            )
        if path.is_dir() and not (path / MANIFEST).exists() and any(path.iterdir()):
            raise DpauditError(
                f"{path}: exists and is not a dpaudit run (no {MANIFEST}); choose another "
                "--name or --runs-dir"
            )
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise DpauditError(f"{existing}: not writable; cannot hold {path}")

    # -------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        config: RunConfig,
        *,
        argv: list[str] | None = None,
        path: str | Path | None = None,
        resume: bool = False,
        force: bool = False,
    ) -> RunDir:
        """Create (or, with ``resume``, reopen) a run directory for ``config``.

        Writes ``config.toml`` and ``manifest.json`` before any work. Refuses to
        overwrite a run that has a manifest unless ``resume`` (reopen it: its
        stages, seeds, inputs and creating command line are kept) or ``force``
        (discard it and start over). Checks the location first
        (:meth:`check_location`), so a refusal writes nothing.
        """
        run = cls(path if path is not None else config.run_dir, argv=argv)
        manifest_path = run.path / MANIFEST
        cls.check_location(run.path)
        if manifest_path.exists() and force:
            _discard(run.path)
        elif manifest_path.exists() and not resume:
            raise DpauditError(
                f"{run.path}: run directory already exists; pass --resume to continue it, "
                "--force to start it over, or choose another --name"
            )
        previous = run.manifest() if manifest_path.exists() else {}
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only file system, /proc, a full disk
            raise DpauditError(
                f"{run.path}: cannot create the run directory ({exc.strerror or exc})"
            ) from None
        atomic_write_text(run.path / "config.toml", to_toml(config))
        manifest = {
            "dpaudit_version": __version__,
            "created": previous.get("created", _now()),
            "updated": _now(),
            "argv": previous.get("argv", run.argv),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "platform": platform.platform(),
            "config": config.to_dict(),
            "seeds": {**previous.get("seeds", {}), "master": config.seed},
            "device": previous.get("device"),
            "inputs": previous.get("inputs", {}),
            "stages": previous.get("stages", {}),
        }
        if previous and to_jsonable(previous.get("config")) != to_jsonable(manifest["config"]):
            manifest["config_changed_on_resume"] = True
        run._write(manifest)
        return run

    # -------------------------------------------------------------- manifest
    def manifest_file(self) -> ManifestFile:
        """The manifest as its definition.

        Raises:
            DpauditError: the directory is not a run (no ``manifest.json``).
            InputError: the manifest is malformed, invalid or of a
                ``schema_version`` this dpaudit does not read.
        """
        path = self.path / MANIFEST
        if not path.exists():
            raise DpauditError(f"{self.path}: not a dpaudit run directory (no {MANIFEST})")
        return read_run_file(path, ManifestFile)

    def manifest(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (see :meth:`manifest_file`)."""
        return self.manifest_file().to_dict()

    def _write(self, manifest: Mapping[str, Any]) -> None:
        data = {k: v for k, v in manifest.items() if k != "schema_version"}
        data["updated"] = _now()
        try:
            model = ManifestFile.from_dict(data)
        except DpauditError as exc:
            raise DpauditError(f"{self.path / MANIFEST}: {exc}") from None
        write_run_file(self.path / MANIFEST, model)

    def update(self, **fields: Any) -> None:
        """Set top-level manifest fields (e.g. ``device``, ``seeds``).

        Raises:
            DpauditError: a field :class:`~dpaudit.runfiles.manifest.ManifestFile`
                does not define, or a value of the wrong type.
        """
        manifest = self.manifest()
        manifest.update(fields)
        self._write(manifest)

    def record_inputs(self, files: Mapping[str, str | Path]) -> dict[str, str]:
        """Hash input files (label -> path) into ``manifest["inputs"]``; return label -> hash."""
        hashes = {label: sha256_file(p) for label, p in files.items()}
        manifest = self.manifest()
        manifest.setdefault("inputs", {}).update(
            {label: {"path": str(files[label]), "sha256": h} for label, h in hashes.items()}
        )
        self._write(manifest)
        return hashes

    # -------------------------------------------------------------- stages
    def stage_record(self, name: str) -> StageRecord | None:
        data = self.manifest().get("stages", {}).get(name)
        return StageRecord(**data) if data else None

    def output_hashes(self, *stages: str) -> dict[str, str]:
        """``{"<stage>/<file>": sha256}`` of the recorded outputs of ``stages`` (absent stages add nothing).

        A later stage uses these as its input hashes, so it reruns on ``--resume``
        exactly when something upstream changed.
        """
        hashes: dict[str, str] = {}
        for stage in stages:
            record = self.stage_record(stage)
            if record is not None:
                hashes.update({f"{stage}/{k}": v for k, v in record.outputs.items()})
        return hashes

    def can_skip(self, name: str, inputs: Mapping[str, str]) -> bool:
        """True when ``name`` completed before with exactly these input hashes."""
        record = self.stage_record(name)
        return record is not None and record.status == "done" and record.inputs == dict(inputs)

    def _set_stage(self, name: str, record: StageRecord) -> None:
        manifest = self.manifest()
        manifest.setdefault("stages", {})[name] = dict(record.__dict__)
        self._write(manifest)

    @contextlib.contextmanager
    def stage(
        self, name: str, inputs: Mapping[str, str] | None = None, *, seed: int | None = None
    ) -> Iterator[StageRecord]:
        """Record a stage: ``running`` on entry, ``done`` with timings on exit.

        The record keeps the stage's ``seed`` and the command line that ran it
        (``self.argv``). The caller may add output hashes to ``record.outputs``
        inside the block. On an exception the stage is marked ``failed`` with a
        one-line error.
        """
        record = StageRecord(
            status="running",
            inputs=dict(inputs or {}),
            started=_now(),
            argv=list(self.argv),
            seed=seed,
        )
        self._set_stage(name, record)
        start = time.perf_counter()
        try:
            yield record
        except BaseException as exc:
            record.status = "failed"
            record.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            record.seconds = round(time.perf_counter() - start, 3)
            record.finished = _now()
            self._set_stage(name, record)
            raise
        record.status = "done"
        record.seconds = round(time.perf_counter() - start, 3)
        record.finished = _now()
        self._set_stage(name, record)

    def subdir(self, *parts: str) -> Path:
        """A directory inside the run, created if needed."""
        path = self.path.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
