"""Read and write run files through their definitions.

:func:`write_run_file` writes ``model.to_dict()`` atomically as sorted,
indented JSON (the bytes :func:`dpaudit.atomic.write_json` would write), so
every file is exactly its definition. :func:`read_run_file` checks the
``schema_version`` first (a version this dpaudit does not read is refused with
one line naming it), migrates an older supported version, then validates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from dpaudit.atomic import atomic_write_text, dumps, read_json
from dpaudit.errors import InputError
from dpaudit.runfiles.base import RunFile, summary

__all__ = ["parse_run_file", "read_run_file", "write_run_file"]

_F = TypeVar("_F", bound=RunFile)


def write_run_file(path: str | Path, model: RunFile, *, private: bool | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (sorted keys, 2-space indent); return ``path``.

    ``private``: owner-only (0600); ``None`` = by file name
    (:func:`dpaudit.atomic.is_private`).

    Raises:
        TypeError: ``model`` is not a :class:`~dpaudit.runfiles.base.RunFile`.
    """
    if not isinstance(model, RunFile):
        raise TypeError(f"write_run_file needs a RunFile model, got {type(model).__name__}")
    return atomic_write_text(path, dumps(model.to_dict()), private=private)


def parse_run_file(data: Any, model: type[_F], *, source: str | Path) -> _F:
    """Validate the JSON value ``data`` of the file ``source`` as ``model``.

    Raises:
        InputError: naming ``source``: not an object, a ``schema_version`` this
            dpaudit does not read, or the first problems found.
    """
    if not isinstance(data, dict):
        raise InputError(source, "expected a JSON object")
    version = data.get("schema_version")
    if version not in model.READS:
        raise InputError(source, model.unsupported(version))
    if version != model.SCHEMA_VERSION:
        data = model.migrate(dict(data), str(version))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(source, f"not a valid {model.KIND}: {summary(exc)}") from None


def read_run_file(path: str | Path, model: type[_F]) -> _F:
    """Read ``path`` as ``model``.

    Raises:
        InputError: missing, malformed JSON, unsupported ``schema_version`` or
            invalid contents; the message names ``path``.
    """
    return parse_run_file(read_json(path), model, source=path)
