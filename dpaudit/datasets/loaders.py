"""Load records from JSONL, CSV, Parquet, plain text or a Hugging Face dataset.

Every loader returns a list of :class:`~dpaudit.datasets.records.Record` and
fails on bad input with an :class:`~dpaudit.errors.InputError` naming the file
and, where it applies, the line: malformed JSON, a missing text field, bytes
that are not UTF-8, an empty file, duplicate ids.

Large inputs (at least :data:`BAR_FROM_RECORDS` rows) are read under a progress
bar. A file is parsed once per process: the records of an unchanged file (same
path, size, modification time and inode, same format and fields) are reused, so
``config check`` and the data stage of one command do not read it twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpaudit.datasets.records import PiiSpan, Record
from dpaudit.errors import InputError
from dpaudit.inputs import check_input_file, json_loads, read_text

BAR_FROM_RECORDS = 10_000
"""Inputs with at least this many rows are read under a progress bar."""

_CACHE_SIZE = 4
_cache: OrderedDict[tuple[Any, ...], list[Record]] = OrderedDict()

FORMATS = ("jsonl", "csv", "tsv", "parquet", "text", "hf")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}


@dataclass(frozen=True)
class Fields:
    """Which columns hold the text, label, id and user, and how to read them.

    Attributes:
        label_map: ``((name, class index), ...)``: string labels (``positive``,
            ``negative``) mapped to class indices; empty = labels must be integers.
        delimiter: the CSV/TSV field delimiter; ``None`` = ``,`` for csv, tab for tsv.
    """

    text: str = "text"
    label: str | None = None
    id: str | None = None
    user: str | None = None
    label_map: tuple[tuple[str, int], ...] = ()
    delimiter: str | None = None

    @classmethod
    def of(cls, data: Any) -> Fields:
        """The fields a ``[data]`` section names (a :class:`~dpaudit.config.DataConfig`)."""
        return cls(
            text=data.text_field,
            label=data.label_field,
            id=data.id_field,
            user=data.user_field,
            label_map=tuple(sorted(data.label_map.items())),
            delimiter=data.delimiter,
        )

    def __post_init__(self) -> None:
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise InputError("data.delimiter", f"must be one character, got {self.delimiter!r}")


def infer_format(path: str | Path) -> str:
    """Guess the format from the extension (a directory is a HF dataset)."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            path,
            f"cannot infer the format from {path.suffix!r}; pass --format ({', '.join(FORMATS)})",
        )
    return fmt


def load_records(
    path: str | Path,
    *,
    format: str = "auto",
    fields: Fields | None = None,
    progress: bool | None = None,
) -> list[Record]:
    """Load ``path`` as records.

    Args:
        path: a file, or a directory saved with ``datasets.Dataset.save_to_disk``;
            for ``format="hf"`` also a hub dataset name (needs network); or a
            ``package:`` dataset (:mod:`dpaudit.datasets.packaged`, whose own
            columns are read: ``format`` and ``fields`` do not apply).
        format: one of ``auto``, ``jsonl``, ``csv``, ``tsv``, ``parquet``, ``text``, ``hf``.
        fields: column names; the default reads ``text`` (and a dpaudit JSONL's
            ``id``, ``label``, ``pii`` and ``meta`` when present).
        progress: show a bar while reading an input of :data:`BAR_FROM_RECORDS`
            rows or more; ``None`` = only when standard error is a terminal.

    Returns:
        A new list, equal for every call on an unchanged file (records are frozen and each
        call gets its own ``meta`` dicts, so no caller can change another's records).

    Raises:
        InputError: the file cannot be read as records (naming the file and line).
    """
    if str(path).startswith("package:"):  # a corpus inside an installed package
        from dpaudit.datasets.packaged import load_packaged_records

        records = load_packaged_records(path)
        _check_unique_ids(path, records)
        return records
    fields = fields or Fields()
    fmt = infer_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise InputError(path, f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt != "hf" or Path(path).exists():
        _check_file(path, allow_dir=fmt == "hf")
    key = _cache_key(path, fmt, fields)
    if key is not None and key in _cache:
        _cache.move_to_end(key)
        return _copies(_cache[key])
    loader = {
        "jsonl": _load_jsonl,
        "csv": _load_csv,
        "tsv": _load_tsv,
        "parquet": _load_parquet,
        "text": _load_text,
        "hf": _load_hf,
    }[fmt]
    records = loader(Path(path), fields, progress)
    if not records:
        raise InputError(path, "no records found (empty file)")
    _check_unique_ids(path, records)
    if key is not None:
        _cache[key] = records
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return _copies(records)
    return records


def _copies(records: list[Record]) -> list[Record]:
    """The cached records with their own ``meta`` (the one mutable part of a frozen record)."""
    import copy
    import dataclasses

    return [dataclasses.replace(r, meta=copy.deepcopy(r.meta)) if r.meta else r for r in records]


def _cache_key(path: str | Path, fmt: str, fields: Fields) -> tuple[Any, ...] | None:
    """What identifies one parse of a regular file, or ``None`` (not cached)."""
    try:
        real = os.path.realpath(path)
        stat = os.stat(real)
    except OSError:
        return None
    if not os.path.isfile(real):
        return None
    return (real, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev, fmt, fields)


def _reading(path: Path, rows: Iterable[Any], total: int, progress: bool | None) -> Iterator[Any]:
    """``rows``, under a bar naming ``path`` when there are many (:data:`BAR_FROM_RECORDS`)."""
    show = total >= BAR_FROM_RECORDS and (progress if progress is not None else sys.stderr.isatty())
    if not show:
        return iter(rows)
    from tqdm.auto import tqdm

    return iter(tqdm(rows, total=total, desc=f"reading {path.name}", unit="row", leave=False))


_check_file = check_input_file
_read_text = read_text


def _label(
    path: Path, value: Any, line: int | None, label_map: tuple[tuple[str, int], ...] = ()
) -> int | None:
    """The class index of ``value``: a name in ``label_map``, or an integer (as a number or text)."""
    if value is None or value == "":
        return None
    mapping = dict(label_map)
    if isinstance(value, str) and value in mapping:
        return mapping[value]
    if mapping:
        hint = f" and not in data.label_map ({', '.join(mapping)})"
    else:
        hint = " (map string labels with data.label_map, e.g. {positive = 1, negative = 0})"
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"label {value!r} is not an integer{hint}", line=line) from None
    if not as_float.is_integer():
        raise InputError(path, f"label {value!r} is not an integer{hint}", line=line)
    return int(as_float)


def _make_record(
    path: Path, row: dict[str, Any], index: int, line: int | None, fields: Fields
) -> Record:
    if fields.text not in row:
        raise InputError(path, f"missing text field {fields.text!r}", line=line)
    text = row[fields.text]
    if not isinstance(text, str):
        raise InputError(path, f"text field {fields.text!r} is not a string", line=line)
    id_key = fields.id or "id"
    raw_id = row.get(id_key)
    if fields.id is not None and raw_id in (None, ""):
        raise InputError(path, f"missing id field {fields.id!r}", line=line)
    rec_id = str(raw_id) if raw_id not in (None, "") else f"row-{index:07d}"
    label = _label(path, row.get(fields.label or "label"), line, fields.label_map)
    meta = dict(row.get("meta") or {}) if isinstance(row.get("meta"), dict) else {}
    if fields.user is not None:
        if row.get(fields.user) in (None, ""):
            raise InputError(path, f"missing user field {fields.user!r}", line=line)
        meta["user"] = str(row[fields.user])
    spans: tuple[PiiSpan, ...] = ()
    if row.get("pii"):
        try:
            spans = tuple(
                PiiSpan(int(s["start"]), int(s["end"]), str(s["kind"]), str(s["value"]))
                for s in row["pii"]
            )
        except (KeyError, TypeError, ValueError):
            raise InputError(
                path, "malformed 'pii' spans (need start, end, kind, value)", line=line
            ) from None
        for span in spans:
            if text[span.start : span.end] != span.value:
                raise InputError(
                    path, f"PII span {span.start}:{span.end} does not match its value", line=line
                )
    return Record(id=rec_id, text=text, label=label, pii=spans, meta=meta)


def _load_jsonl(path: Path, fields: Fields, progress: bool | None) -> list[Record]:
    text = _read_text(path)
    if text.lstrip().startswith("[") and path.suffix.lower() == ".json":
        rows = json_loads(path, text, None)
        return [
            _make_record(path, _as_row(path, r, i + 1), i, None, fields) for i, r in enumerate(rows)
        ]
    records: list[Record] = []
    lines = text.splitlines()
    for lineno, line in _reading(path, enumerate(lines, start=1), len(lines), progress):
        if not line.strip():
            continue
        row = json_loads(path, line, lineno)
        records.append(_make_record(path, _as_row(path, row, lineno), len(records), lineno, fields))
    return records


def _as_row(path: Path, row: Any, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise InputError(path, f"expected a JSON object, got {type(row).__name__}", line=line)
    return row


def _load_tsv(path: Path, fields: Fields, progress: bool | None) -> list[Record]:
    return _load_csv(path, fields, progress, default_delimiter="\t")


def _load_csv(
    path: Path, fields: Fields, progress: bool | None, *, default_delimiter: str = ","
) -> list[Record]:
    # strict: an unterminated quote is an error, not a field that swallows the rest of the file.
    text = _read_text(path)
    reader = csv.DictReader(
        io.StringIO(text, newline=""),
        delimiter=fields.delimiter or default_delimiter,
        strict=True,
    )
    if reader.fieldnames is None:
        raise InputError(path, "empty file")
    if fields.text not in reader.fieldnames:
        raise InputError(
            path,
            f"missing text column {fields.text!r} (columns: {', '.join(reader.fieldnames)})",
            line=1,
        )
    records: list[Record] = []
    try:  # the bar's total counts physical lines: quoted newlines make it an upper bound
        for row in _reading(path, reader, text.count("\n"), progress):
            if None in row:
                raise InputError(path, "row has more fields than the header", line=reader.line_num)
            records.append(_make_record(path, row, len(records), reader.line_num, fields))
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV: {exc}", line=reader.line_num) from None
    return records


def _load_parquet(path: Path, fields: Fields, progress: bool | None) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(path, f"cannot read Parquet: {str(exc).splitlines()[0]}") from None
    return _from_rows(path, table.to_pylist(), fields, progress)


def _from_rows(
    path: Path, rows: Iterable[dict[str, Any]], fields: Fields, progress: bool | None = None
) -> list[Record]:
    # Row numbers are 1-based data rows, reported as "line" for consistency.
    total = len(rows) if isinstance(rows, Sized) else 0
    return [
        _make_record(path, row, i, i + 1, fields)
        for i, row in _reading(path, enumerate(rows), total, progress)
    ]


def _load_text(path: Path, fields: Fields, progress: bool | None) -> list[Record]:
    records = []
    lines = _read_text(path).splitlines()
    for lineno, line in _reading(path, enumerate(lines, start=1), len(lines), progress):
        if line.strip():
            records.append(Record(id=f"line-{lineno:07d}", text=line))
    return records


def _load_hf(path: Path, fields: Fields, progress: bool | None) -> list[Record]:
    try:
        import datasets as hf_datasets
    except ImportError:
        raise InputError(
            path, "Hugging Face datasets is not installed (pip install 'dpaudit[hf]')"
        ) from None
    try:
        if path.exists():
            data = hf_datasets.load_from_disk(str(path))
        else:
            data = hf_datasets.load_dataset(str(path), split="train")
    except Exception as exc:
        raise InputError(
            path, f"cannot load Hugging Face dataset: {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(data, hf_datasets.DatasetDict):
        if "train" not in data:
            raise InputError(path, f"dataset has no 'train' split (splits: {', '.join(data)})")
        data = data["train"]
    return _from_rows(path, data, fields, progress)


def _check_unique_ids(path: str | Path, records: list[Record]) -> None:
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        if rec.id in seen:
            raise InputError(
                path, f"duplicate id {rec.id!r} (records {seen[rec.id] + 1} and {i + 1})"
            )
        if rec.id.startswith("canary-"):
            raise InputError(path, f"record id {rec.id!r} uses the reserved 'canary-' prefix")
        seen[rec.id] = i


def write_records(path: str | Path, records: Iterable[Record]) -> Path:
    """Write records as dpaudit JSONL (atomically)."""
    from dpaudit.atomic import atomic_open

    with atomic_open(path, "w") as handle:
        for rec in records:
            handle.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")
    return Path(path)
