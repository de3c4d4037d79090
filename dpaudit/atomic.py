"""Atomic file writes and a strict JSON serialiser.

Results are written to a temporary file in the destination directory and
renamed into place, so a crash or a bad input never leaves a half-written
file behind. The JSON encoder refuses types it does not know instead of
stringifying them (docs/design.md#strict-json-and-atomic-writes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

SCHEMA_VERSION = "1.0"


PRIVATE_FILE_NAMES = frozenset(
    {
        "recovered.json",  # recovered secrets and PII in clear text
        "inclusion.json",  # the audit's coin flips: who can read them can fake an audit
        "splits.json",  # membership ground truth
        "train_ids.json",
        "membership.npy",  # the references' membership coins
        "clients.json",  # federated partition: which records each client holds
        "canary_clients.json",  # the client-level audit's coin flips
    }
)
"""Files created owner-only (0600) whatever the umask; so is every ``*.jsonl`` (records: texts
with PII, canaries with their secrets). A revealed report is written with ``private=True``."""


def is_private(path: str | Path) -> bool:
    """Whether ``path`` holds secrets, PII or coin flips (:data:`PRIVATE_FILE_NAMES`, ``*.jsonl``)."""
    path = Path(path)
    return path.name in PRIVATE_FILE_NAMES or path.suffix.lower() == ".jsonl"


def _file_mode(path: str | Path | None = None, private: bool | None = None) -> int:
    """The mode of a new file: 0600 for private ones, else what a plain ``open()`` gives.

    (mkstemp's 0600 ignores the umask, so it is set explicitly either way.)
    """
    if private or (private is None and path is not None and is_private(path)):
        return 0o600
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(
    path: str | Path,
    mode: str = "w",
    encoding: str | None = "utf-8",
    *,
    private: bool | None = None,
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    ``private``: create it owner-only (0600); ``None`` = by name (:func:`is_private`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _file_mode(path, private))
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str, *, private: bool | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (``private``: see :func:`atomic_open`)."""
    with atomic_open(path, "w", private=private) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, *, private: bool | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (``private``: see :func:`atomic_open`)."""
    with atomic_open(path, "wb", encoding=None, private=private) as handle:
        handle.write(data)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for writers that take a filename.

    The caller writes to the yielded path (e.g. ``df.to_parquet(tmp)``); it is
    renamed onto ``path`` on success and removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    os.chmod(tmp, _file_mode(path))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` into plain JSON types, refusing anything unknown.

    Handles dataclasses, mappings, sequences, paths, enums and numpy scalars
    and arrays. Non-finite floats become the strings ``"inf"``, ``"-inf"`` and
    ``"nan"`` so that the output stays valid JSON (and is read back by
    :func:`from_json_float`).

    Raises:
        TypeError: for any other type.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                raise TypeError(f"JSON keys must be str/int/float, got {type(key).__name__}")
            out[str(key)] = to_jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    module = type(obj).__module__
    if module == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            return [to_jsonable(v) for v in obj.tolist()]
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return to_jsonable(float(obj))
    raise TypeError(
        f"refusing to serialise object of type {type(obj).__module__}.{type(obj).__name__}"
    )


def from_json_float(value: Any) -> float:
    """Read back a float written by :func:`to_jsonable` (accepts 'inf', 'nan')."""
    return float(value)


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """Serialise ``obj`` strictly (see :func:`to_jsonable`) with sorted keys."""
    return json.dumps(to_jsonable(obj), indent=indent, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any, *, schema_version: str | None = SCHEMA_VERSION) -> Path:
    """Write ``obj`` as JSON atomically, adding ``schema_version`` to a top-level mapping."""
    payload = to_jsonable(obj)
    if schema_version is not None:
        if not isinstance(payload, dict):
            raise TypeError("write_json with a schema_version needs a mapping at top level")
        payload = {"schema_version": schema_version, **payload}
    return atomic_write_text(path, dumps(payload))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising :class:`~dpaudit.errors.InputError` when malformed."""
    from dpaudit.errors import InputError
    from dpaudit.inputs import check_input_file, json_loads

    path = Path(path)
    check_input_file(path, allow_empty=True)  # not a FIFO, device or loop; not over the cap
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not valid UTF-8") from None
    return json_loads(path, text, None)  # malformed, nested too deeply, a lone surrogate
