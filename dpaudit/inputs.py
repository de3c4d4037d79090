"""Reading input files safely: the one check of every file dpaudit reads whole.

Plumbing shared by the data loaders (:mod:`dpaudit.datasets.loaders`) and the
run-file readers (:func:`dpaudit.atomic.read_json`): a FIFO, a device, a
socket, a symlink loop or a file over :data:`MAX_READ_BYTES` is refused by
``stat`` before it is opened, and JSON that is malformed, nested too deeply or
holds a lone UTF-16 surrogate fails with one line naming the file and line.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from dpaudit.errors import InputError

__all__ = ["MAX_READ_BYTES", "check_input_file", "json_loads", "read_text"]


MAX_READ_BYTES = 2 * 1024**3
"""The most bytes read from one input file (2 GiB); a larger file, or one that
never ends (``/dev/zero``), is refused instead of exhausting memory."""


def check_input_file(
    path: str | Path, *, allow_dir: bool = False, allow_empty: bool = False
) -> None:
    """Refuse a missing file, a directory, a FIFO/device/socket, a symlink loop,
    an empty file or one over :data:`MAX_READ_BYTES`, by ``stat`` before opening.

    The one check of every input file dpaudit reads whole (records, canaries,
    JSON run files), so none of them can block or exhaust memory.

    Raises:
        InputError: one line naming the file.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as exc:  # ELOOP (symlink loop), EACCES, ENAMETOOLONG ...
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        if not allow_dir:
            raise InputError(path, "is a directory, expected a file")
        return
    if not stat.S_ISREG(st.st_mode):
        raise InputError(path, f"is not a regular file ({_file_kind(st.st_mode)})")
    if st.st_size == 0 and not allow_empty:
        raise InputError(path, "empty file")
    if st.st_size > MAX_READ_BYTES:
        raise InputError(
            path, f"file is {st.st_size} bytes, over the {MAX_READ_BYTES}-byte input limit"
        )


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def read_text(path: Path) -> str:
    """The whole of ``path`` as UTF-8 text (BOM dropped), checked by :func:`check_input_file`."""
    check_input_file(path)
    with path.open("rb") as handle:
        data = handle.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise InputError(path, f"file is over the {MAX_READ_BYTES}-byte input limit")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(path, f"not valid UTF-8 (byte {exc.start})", line=line) from None


def json_loads(path: Path, text: str, line: int | None) -> Any:
    """``json.loads`` with every failure as one line naming ``path`` and the line,
    refusing a lone surrogate (see :func:`_check_unicode`)."""
    try:
        value = json.loads(text)
        if "\\u" in text:  # a surrogate can only come from an escape (the bytes were UTF-8)
            _check_unicode(path, value, line)
        return value
    except json.JSONDecodeError as exc:
        where = line if line is not None else exc.lineno
        raise InputError(path, f"malformed JSON: {exc.msg}", line=where) from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply", line=line) from None
    except ValueError as exc:  # e.g. an integer over Python's digit limit
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(path, f"malformed JSON: {first}", line=line) from None


def _check_unicode(path: Path, value: Any, line: int | None) -> None:
    """Refuse a lone UTF-16 surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot hold it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                path,
                f"text holds a lone UTF-16 surrogate {value[exc.start]!r} (not valid Unicode)",
                line=line,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(path, key, line)
            _check_unicode(path, item, line)
    elif isinstance(value, list):
        for item in value:
            _check_unicode(path, item, line)
