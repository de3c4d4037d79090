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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
ABSOLUTE_PATHS_ENV = "DPAUDIT_ABSOLUTE_PATHS"
"""Set to ``1`` to record absolute paths (and the full program path) in the manifest and report."""
PATH_SETTINGS = ("runs_dir", "data.path", "data.tokenizer", "train.model")
"""The config settings that may hold a file system path (they may also hold a hub id or ``train``)."""
RUN_DIR_MODE = 0o700
"""The mode a new run directory is created with: it holds secrets, PII and the auditor's coin flips."""
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


def absolute_paths() -> bool:
    """Whether ``$DPAUDIT_ABSOLUTE_PATHS`` asks for absolute paths in the manifest and report."""
    return os.environ.get(ABSOLUTE_PATHS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _relative_to_cwd(path: Path) -> str | None:
    """``path`` relative to the working directory when it lies under it (symlinks tried both ways)."""
    cwd = Path.cwd()
    for base, target in (
        (Path(os.path.abspath(cwd)), Path(os.path.abspath(path))),
        (cwd.resolve(), path.resolve()),
    ):
        try:
            return target.relative_to(base).as_posix() or "."
        except ValueError:
            continue
    return None


def recorded_path(path: str | Path) -> str:
    """How a path given by the user is recorded in the manifest and the report.

    A relative path (or a hub id, ``train``) is kept as given; an absolute one
    becomes relative to the working directory when it lies under it, else is
    kept as given (never resolved). With ``DPAUDIT_ABSOLUTE_PATHS=1`` an
    existing path is recorded absolute and resolved instead.
    """
    text = str(path)
    if not text:
        return text
    if absolute_paths():
        candidate = Path(text).expanduser()
        return str(candidate.resolve()) if candidate.exists() else text
    if not os.path.isabs(text):
        return text
    return _relative_to_cwd(Path(text)) or text


def _program(arg: str) -> str:
    """``argv[0]`` without its directory: ``dpaudit``, ``pytest``; ``python -m <package>`` for ``-m``."""
    path = Path(arg)
    if path.name == "__main__.py" and path.parent.name:
        return f"python -m {path.parent.name}"
    return path.name or arg


def _argument(arg: str) -> str:
    if os.path.isabs(arg):
        return recorded_path(arg)
    key, sep, value = arg.partition("=")  # --out=/x, --set data.path=/x
    if sep and os.path.isabs(value):
        return f"{key}={recorded_path(value)}"
    return arg


def recorded_argv(argv: Sequence[str]) -> list[str]:
    """A command line as the manifest records it: the program by its name, absolute path
    arguments as :func:`recorded_path` records them; as given with ``DPAUDIT_ABSOLUTE_PATHS=1``."""
    argv = [str(a) for a in argv]
    if absolute_paths() or not argv:
        return argv
    return [_program(argv[0]), *(_argument(a) for a in argv[1:])]


def recorded_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping (``RunConfig.to_dict()``) with its :data:`PATH_SETTINGS` as
    :func:`recorded_path` records them."""
    data = to_jsonable(dict(config))
    for dotted in PATH_SETTINGS:
        section, _, key = dotted.rpartition(".")
        holder = data.get(section) if section else data
        if isinstance(holder, dict) and isinstance(holder.get(key), str) and holder[key]:
            holder[key] = recorded_path(holder[key])
    return data


def same_setting(key: str, recorded: Any, current: Any) -> bool:
    """Whether a setting recorded in a manifest equals the current one; a path setting
    (:data:`PATH_SETTINGS`) also when both name the same file from the working directory
    (one relative, one absolute: see :func:`recorded_path`)."""
    if recorded == current:
        return True
    if key not in PATH_SETTINGS or not isinstance(recorded, str) or not isinstance(current, str):
        return False
    if not recorded or not current:
        return False
    return Path(os.path.abspath(Path(recorded).expanduser())) == Path(
        os.path.abspath(Path(current).expanduser())
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _config_changed(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    old, new = dict(_flat(to_jsonable(recorded))), dict(_flat(to_jsonable(current)))
    return old.keys() != new.keys() or any(not same_setting(k, old[k], new[k]) for k in old)


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
            # owner-only: it holds secrets, PII and the auditor's coin flips (an existing
            # directory keeps its mode; the report states it)
            run.path.mkdir(parents=True, exist_ok=True, mode=RUN_DIR_MODE)
        except OSError as exc:  # a read-only file system, /proc, a full disk
            raise DpauditError(
                f"{run.path}: cannot create the run directory ({exc.strerror or exc})"
            ) from None
        atomic_write_text(run.path / "config.toml", to_toml(config))
        manifest = {
            "dpaudit_version": __version__,
            "created": previous.get("created", _now()),
            "updated": _now(),
            "argv": previous.get("argv", recorded_argv(run.argv)),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "platform": platform.platform(),
            "config": recorded_config(config.to_dict()),
            "seeds": {**previous.get("seeds", {}), "master": config.seed},
            "device": previous.get("device"),
            "inputs": previous.get("inputs", {}),
            "stages": previous.get("stages", {}),
            "base_model": previous.get("base_model"),
        }
        if previous and _config_changed(previous.get("config") or {}, manifest["config"]):
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
        """Hash input files (label -> path) into ``manifest["inputs"]``; return label -> hash.

        Paths are recorded as :func:`recorded_path` records them (relative to the
        working directory when under it); the hashes keep them verifiable.
        """
        hashes = {label: sha256_file(p) for label, p in files.items()}
        manifest = self.manifest()
        manifest.setdefault("inputs", {}).update(
            {
                label: {"path": recorded_path(files[label]), "sha256": h}
                for label, h in hashes.items()
            }
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
            argv=recorded_argv(self.argv),
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
