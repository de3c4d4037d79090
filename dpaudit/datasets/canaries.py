"""Canaries: planted secrets for exposure (Secret Sharer) and one-run audits.

Two designs:

- **Secret Sharer** (Carlini, Liu, Erlingsson, Kos, Song 2019, "The Secret
  Sharer: Evaluating and Testing Unintended Memorization in Neural Networks"):
  a canary is ``prefix + secret`` with the secret drawn uniformly from a space
  ``R``; it is inserted ``repetitions`` times and its exposure
  ``log2|R| - log2 rank`` is measured afterwards (:func:`make_canaries`).
- **One-run audit** (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One
  (1) Training Run"): ``m`` canaries, each included by an independent fair coin;
  the auditor guesses the coins from scores (:func:`make_one_run_canaries`).
  The coins are the secret of the audit: they are written to ``inclusion.json``
  apart from ``canaries.jsonl`` (:func:`write_inclusion`, :func:`write_canaries`).

Each canary carries its design in its ``role`` field (:data:`SECRET_SHARER` or
:data:`ONE_RUN`), written to ``canaries.jsonl``; code asks the field, never the id.

Secret spaces are specs ``"digits:N"`` (``|R| = 10**N``), ``"alnum:N"``
(lower-case letters and digits, ``|R| = 36**N``) and ``"words:N"`` (``N`` words
from the built-in list :data:`WORDS` of 512 common English words, ``|R| = 512**N``),
with ``1 <= N <= 64``.

Formatting decision: a secret is its ``N`` symbols joined by single spaces
(``"4 8 2 9 1 0"``, ``"k 3 x 9"``, ``"river lamp gold"``), for every kind. With
BPE tokenizers, a contiguous digit string is cut into multi-digit chunks that
vary from candidate to candidate, so candidates would differ in token count and
their log-perplexities would not be comparable; space-separated symbols give
(for GPT-2-style vocabularies) one token per symbol and a fixed length, which is
what the exposure rank over ``R`` assumes. Secrets are enumerated in mixed-radix
order, first symbol most significant (:func:`secret_at`, :func:`secret_index`).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import atomic_open, read_json, write_json
from dpaudit.datasets.records import (
    CANARY_ROLES,
    ONE_RUN,
    SECRET_SHARER,
    Canary,
    CanaryRole,
    Record,
)
from dpaudit.errors import DpauditError, InputError, did_you_mean

CANARY_ID_PREFIX = "canary-"
DESIGN_SPACE_PREFIX = "design:"
"""``secret_space`` of a designed audit canary (``design:new-token``): no space to enumerate."""
LOSS_FROM_CHAR = "loss_from_char"
"""``Record.meta`` key of a canary copy whose training loss counts only its secret:
the number of characters of its prefix (see :mod:`dpaudit.datasets.canary_designs`)."""
DEFAULT_PREFIX = "my secret code is "
NO_INCLUSION_NOTE = (
    "canaries were given without their inclusion coin flips (--canary-inclusion, "
    "data/inclusion.json): no one-run audit is possible; the canaries are still scored "
    "for exposure"
)
"""Said when canaries come without ``inclusion.json`` (console note and report warning)."""
MAX_SECRET_LENGTH = 64
DEFAULT_ENUMERATION_LIMIT = 10**7

WORDS: tuple[str, ...] = tuple(
    """
    about above act add after again age ago air all almost alone along also always am among and
    animal answer any apple area arm army around art ask away baby back bad ball bank base bear
    beat bed before begin behind bell best better big bird black blue boat body bone book box
    boy bread break bring brown build burn busy buy call came camp can car card care carry case
    cat catch cause cell center chair chance change check child city class clean clear close
    cloud coast cold color come common cook cool copy corn cost could count cover cow cross
    crowd cry cup cut dad dance dark day dead deal dear deep desk dinner dog door down draw
    dream dress drink drive drop dry duck during dust each early earth east easy eat edge egg
    end enemy enough even event ever every eye face fact fair fall family farm fast father fear
    feel field fight fill film find fine fire first fish five flat floor flower fly follow food
    foot force forest form four free fresh friend front fruit full game garden gas gate gift
    girl give glass gold good grass great green ground group grow guess gun hair half hall hand
    happy hard hat head hear heart heat heavy help here high hill hold hole home hope horse hot
    hour house huge ice idea inch iron island job join jump just keep key kid kind king knee
    know lady lake land large last late laugh law lead leaf learn leave left leg less letter
    level lie life light line lion list little live long look lost love low lunch main make man
    map mark market may meal meat meet metal middle milk mind minute miss money month moon more
    most mother mouth move music name near neck need never new news next nice night nine noise
    north nose note now number ocean offer office oil old one open orange order other paint
    paper park part party pass past path pay pen people pick piece pig place plan plant play
    point pool poor power press pretty price print pull push queen quick quiet race rain read
    red rest rice rich ride right ring river road rock roof room root rope rose round rule run
    safe salt sand save say school sea seat second see seed sell send seven shape share sheep
    ship shoe shop short show side sign silver simple sing sister sit six size skin sky sleep
    slow small smell smile snow soft soil son song sound soup south space speak spring square
    stand star start stay step stick stone stop store storm story street strong study sugar
    summer sun table tail talk tall tea teach team tell ten test thank thick thin thing think
    three time tiny today tool top touch town toy track train tree trip truck true turn two
    uncle under upon valley very visit voice wait walk wall warm wash watch water wave way week
    west wheel white wide wild win wind window winter wish wood word work world write yard year
    yellow young zoo
    """.split()
)
"""The 512 words of ``words:N`` secret spaces, in enumeration order (sorted)."""

_ALPHABETS: dict[str, tuple[str, ...]] = {
    "digits": tuple(string.digits),
    "alnum": tuple(string.digits + string.ascii_lowercase),
    "words": WORDS,
}
_LOOKUP = {kind: {s: i for i, s in enumerate(a)} for kind, a in _ALPHABETS.items()}
_SPEC = re.compile(r"^([a-z]+):([0-9]+)$")


@dataclass(frozen=True)
class SecretSpace:
    """A parsed secret-space spec: ``length`` symbols drawn from ``alphabet``."""

    spec: str
    kind: str
    length: int
    alphabet: tuple[str, ...]

    @property
    def size(self) -> int:
        """``|R|``, the number of distinct secrets."""
        return len(self.alphabet) ** self.length


@functools.lru_cache(maxsize=128)
def parse_space(spec: str) -> SecretSpace:
    """Parse ``"digits:N"``, ``"alnum:N"`` or ``"words:N"``.

    Raises:
        DpauditError: naming ``spec`` when it is malformed or out of range.
    """
    match = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise DpauditError(
            f"bad secret space {spec!r}: expected 'digits:N', 'alnum:N' or 'words:N'"
        )
    kind, length = match.group(1), int(match.group(2))
    if kind not in _ALPHABETS:
        raise DpauditError(
            f"bad secret space {spec!r}: unknown kind {kind!r}{did_you_mean(kind, _ALPHABETS)}; "
            f"choose from: {', '.join(_ALPHABETS)}"
        )
    if not 1 <= length <= MAX_SECRET_LENGTH:
        raise DpauditError(
            f"bad secret space {spec!r}: length must be in 1..{MAX_SECRET_LENGTH}, got {length}"
        )
    return SecretSpace(f"{kind}:{length}", kind, length, _ALPHABETS[kind])


def space_size(spec: str) -> int:
    """``|R|`` for a secret-space spec (an exact Python int)."""
    return parse_space(spec).size


def format_secret(spec: str, symbols: Sequence[str]) -> str:
    """Join secret symbols the canonical way: single spaces (see the module docstring).

    Raises:
        DpauditError: wrong number of symbols or a symbol outside the alphabet.
    """
    space = parse_space(spec)
    if len(symbols) != space.length or any(s not in space.alphabet for s in symbols):
        raise DpauditError(f"symbols {list(symbols)!r} do not form a secret of {space.spec!r}")
    return " ".join(symbols)


def secret_at(spec: str, index: int) -> str:
    """The ``index``-th secret of the space in enumeration order (mixed radix)."""
    space = parse_space(spec)
    if not 0 <= index < space.size:
        raise DpauditError(f"secret index {index} outside {space.spec!r} (size {space.size})")
    base, symbols = len(space.alphabet), []
    for _ in range(space.length):
        index, digit = divmod(index, base)
        symbols.append(space.alphabet[digit])
    return " ".join(reversed(symbols))


def secret_index(spec: str, secret: str) -> int:
    """Inverse of :func:`secret_at`.

    Raises:
        DpauditError: when ``secret`` is not a canonically formatted member of the space.
    """
    space = parse_space(spec)
    symbols = secret.split(" ")
    lookup = _LOOKUP[space.kind]
    if len(symbols) != space.length or any(s not in lookup for s in symbols):
        raise DpauditError(f"secret {secret!r} is not in the space {space.spec!r}")
    index = 0
    for s in symbols:
        index = index * len(space.alphabet) + lookup[s]
    return index


def in_space(spec: str, secret: str) -> bool:
    """Whether ``secret`` is a canonically formatted member of the space ``spec``."""
    try:
        secret_index(spec, secret)
    except DpauditError:
        return False
    return True


def sample_secret(spec: str, rng: np.random.Generator) -> str:
    """Draw one secret uniformly from the space."""
    space = parse_space(spec)
    picks = rng.integers(0, len(space.alphabet), size=space.length)
    return " ".join(space.alphabet[int(i)] for i in picks)


def enumerate_secrets(spec: str, limit: int | None = DEFAULT_ENUMERATION_LIMIT) -> Iterator[str]:
    """All secrets of the space in enumeration order (for exact exposure ranks).

    Args:
        spec: the secret space.
        limit: refuse (eagerly, before yielding) spaces larger than this; ``None``
            for no limit. Use extrapolated exposure for large spaces.

    Raises:
        DpauditError: bad spec, or ``|R| > limit``.
    """
    space = parse_space(spec)
    if limit is not None and space.size > limit:
        raise DpauditError(
            f"secret space {space.spec!r} has {space.size} secrets, more than the enumeration "
            f"limit {limit}; use extrapolated exposure instead"
        )
    return (" ".join(symbols) for symbols in itertools.product(space.alphabet, repeat=space.length))


def sample_distinct_secrets(spec: str, k: int, rng: np.random.Generator) -> list[str]:
    """Draw ``k`` distinct secrets uniformly without replacement.

    Raises:
        DpauditError: when the space holds fewer than ``k`` secrets.
    """
    space = parse_space(spec)
    if k > space.size:
        raise DpauditError(
            f"cannot draw {k} distinct secrets from {space.spec!r} (size {space.size})"
        )
    if space.size < 2**62:
        return [secret_at(spec, int(i)) for i in rng.choice(space.size, size=k, replace=False)]
    out: dict[str, None] = {}
    while len(out) < k:
        out.setdefault(sample_secret(spec, rng))
    return list(out)


def _canary_id(i: int, total: int) -> str:
    return f"{CANARY_ID_PREFIX}{i:0{max(4, len(str(total - 1)))}d}"


def make_canaries(
    *,
    prefix: str,
    secret_space: str,
    repetitions: Sequence[int] = (1, 2, 4, 8, 16),
    per_repetition: int = 1,
    seed: int,
) -> list[Canary]:
    """Secret-Sharer canaries (Carlini et al. 2019), all included.

    ``per_repetition`` canaries for each count in ``repetitions``, ids
    ``canary-0000``, ``canary-0001``, ... in that order, distinct secrets drawn
    with ``numpy.random.default_rng(seed)``, role :data:`SECRET_SHARER`.
    """
    if per_repetition < 1 or any(int(r) != r or r < 1 for r in repetitions):
        raise DpauditError(
            f"repetitions must be positive integers and per_repetition >= 1, got "
            f"{tuple(repetitions)} and {per_repetition}"
        )
    counts = [int(r) for r in repetitions for _ in range(per_repetition)]
    secrets = sample_distinct_secrets(secret_space, len(counts), np.random.default_rng(seed))
    spec = parse_space(secret_space).spec
    return [
        Canary(_canary_id(i, len(counts)), prefix, secret, spec, reps, True, SECRET_SHARER)
        for i, (secret, reps) in enumerate(zip(secrets, counts, strict=True))
    ]


def make_one_run_canaries(
    *, m: int, secret_space: str, prefix: str, seed: int, repetitions: int = 1
) -> list[Canary]:
    """One-run audit canaries (Steinke, Nasr, Jagielski 2023).

    Each of the ``m`` canaries (role :data:`ONE_RUN`) is included by an
    independent fair coin. The coins and the secrets come from two independent streams spawned from
    ``numpy.random.SeedSequence(seed)``, so the coins do not depend on the space.
    """
    if m < 1 or repetitions < 1:
        raise DpauditError(f"m and repetitions must be >= 1, got m={m}, repetitions={repetitions}")
    secret_seq, coin_seq = np.random.SeedSequence(seed).spawn(2)
    secrets = sample_distinct_secrets(secret_space, m, np.random.default_rng(secret_seq))
    coins = np.random.default_rng(coin_seq).integers(0, 2, size=m).astype(bool)
    spec = parse_space(secret_space).spec
    return [
        Canary(_canary_id(i, m), prefix, secret, spec, int(repetitions), bool(coin), ONE_RUN)
        for i, (secret, coin) in enumerate(zip(secrets, coins, strict=True))
    ]


def insert_canaries(
    records: Sequence[Record],
    canaries: Sequence[Canary],
    *,
    seed: int,
    canary_label: int | None = None,
    secret_loss_only: bool = False,
) -> list[Record]:
    """A new training list: ``records`` plus the included canaries' copies, shuffled.

    Each included canary becomes ``repetitions`` records with ids
    ``canary-0003#r1`` ... ``canary-0003#r<repetitions>``, text ``prefix + secret``,
    label ``canary_label`` and ``meta = {"canary_id", "copy"}``. Excluded
    canaries do not appear. The order is a permutation drawn with
    ``numpy.random.default_rng(seed)``. With ``secret_loss_only``, the copies of
    one-run canaries also carry ``meta["loss_from_char"] = len(prefix)``: the
    trainer's loss then counts only the secret's tokens (Panda et al. 2025).
    One-run canaries are inserted once each (``repetitions = 1``) unless the
    caller accounts for a group.

    Raises:
        DpauditError: a record id starts with ``canary-``, duplicate record or
            canary ids, a canary id without the ``canary-`` prefix, or
            ``repetitions < 1``.
    """
    ids = [r.id for r in records]
    clash = next((i for i in ids if i.startswith(CANARY_ID_PREFIX)), None)
    if clash is not None:
        raise DpauditError(
            f"record id {clash!r} starts with {CANARY_ID_PREFIX!r}, reserved for canaries"
        )
    if len(set(ids)) != len(ids):
        raise DpauditError("record ids are not unique")
    canary_ids = [c.id for c in canaries]
    if len(set(canary_ids)) != len(canary_ids):
        raise DpauditError("canary ids are not unique")
    for c in canaries:
        if not c.id.startswith(CANARY_ID_PREFIX) or c.repetitions < 1:
            raise DpauditError(
                f"canary {c.id!r}: ids must start with {CANARY_ID_PREFIX!r} and repetitions be >= 1"
            )
    copies = [
        Record(f"{c.id}#r{r}", c.text, canary_label, (), _copy_meta(c, r, secret_loss_only))
        for c in canaries
        if c.included
        for r in range(1, c.repetitions + 1)
    ]
    pool = list(records) + copies
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[int(i)] for i in order]


def _copy_meta(canary: Canary, copy: int, secret_loss_only: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"canary_id": canary.id, "copy": copy}
    if secret_loss_only and canary.role == ONE_RUN:
        meta[LOSS_FROM_CHAR] = len(canary.prefix)
    return meta


def write_canaries(path: str | Path, canaries: Sequence[Canary]) -> Path:
    """Write ``canaries.jsonl`` atomically: a canary and its role per line, NO inclusion bits."""
    with atomic_open(path, "w") as handle:
        for c in canaries:
            line = json.dumps(c.to_dict(with_inclusion=False), ensure_ascii=False, sort_keys=True)
            handle.write(line + "\n")
    return Path(path)


def write_inclusion(path: str | Path, canaries: Sequence[Canary]) -> Path:
    """Write ``inclusion.json`` (the audit's secret): ``{canary_id: included}``.

    The mapping also carries ``schema_version`` (never a canary id, which starts
    with ``canary-``).
    """
    return write_json(path, {c.id: bool(c.included) for c in canaries})


def read_inclusion(path: str | Path) -> dict[str, bool]:
    """Read ``inclusion.json`` back as ``{canary_id: included}``.

    Raises:
        InputError: missing file, malformed JSON or a non-boolean entry.
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object {canary_id: true/false}")
    data = {k: v for k, v in data.items() if k != "schema_version"}
    for key, value in data.items():
        if not key.startswith(CANARY_ID_PREFIX) or not isinstance(value, bool):
            raise InputError(path, f"entry {key!r}: expected a canary id mapped to true/false")
    return data


_FIELDS = {"id": str, "prefix": str, "secret": str, "secret_space": str, "repetitions": int}
_ROLE_BY_ID_PREFIX: dict[str, CanaryRole] = {
    f"{CANARY_ID_PREFIX}ss-": SECRET_SHARER,
    f"{CANARY_ID_PREFIX}or-": ONE_RUN,
}


def _legacy_role(canary_id: str) -> CanaryRole | None:
    """The role of a canary from a file written before ``role`` existed: its id's tag."""
    return next((r for p, r in _ROLE_BY_ID_PREFIX.items() if canary_id.startswith(p)), None)


def _parse_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    from dpaudit.inputs import json_loads

    data = json_loads(path, line, lineno)
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object", line=lineno)
    missing = [k for k in _FIELDS if k not in data]
    extra = sorted(set(data) - set(_FIELDS) - {"role"})
    if missing or extra:
        raise InputError(path, f"missing keys {missing}, unexpected keys {extra}", line=lineno)
    for key, kind in _FIELDS.items():
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise InputError(path, f"{key!r} must be of type {kind.__name__}", line=lineno)
    if not data["id"].startswith(CANARY_ID_PREFIX) or data["repetitions"] < 1:
        raise InputError(
            path, f"id must start with {CANARY_ID_PREFIX!r}, repetitions be >= 1", line=lineno
        )
    if "role" not in data:
        data["role"] = _legacy_role(data["id"])
    elif data["role"] is not None and data["role"] not in CANARY_ROLES:
        raise InputError(
            path,
            f"role {data['role']!r} is not one of {', '.join(CANARY_ROLES)} (or null)",
            line=lineno,
        )
    if data["secret_space"].startswith(DESIGN_SPACE_PREFIX):
        return data  # a designed audit canary: its secret is not from an enumerable space
    try:
        secret_index(data["secret_space"], data["secret"])
    except DpauditError as exc:
        raise InputError(path, str(exc), line=lineno) from None
    return data


def read_canaries(path: str | Path, inclusion_path: str | Path | None = None) -> list[Canary]:
    """Read ``canaries.jsonl``, with inclusion bits from ``inclusion_path`` if given.

    Without ``inclusion_path`` every canary gets ``included=True`` as a
    placeholder: attacks read canaries blind and must not rely on it. A line
    without ``role`` (written before the field existed) takes it from its id:
    ``canary-ss-*`` Secret-Sharer, ``canary-or-*`` one-run, otherwise ``None``.

    Raises:
        InputError: missing file, malformed line (with its number), duplicate
            ids, or an inclusion file that does not cover exactly these ids.
    """
    from dpaudit.inputs import check_input_file

    path = Path(path)
    check_input_file(path, allow_empty=True)  # not a FIFO, device or loop; not over the cap
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(path, "not valid UTF-8") from None
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        data = _parse_line(path, lineno, line)
        if data["id"] in seen:
            raise InputError(path, f"duplicate canary id {data['id']!r}", line=lineno)
        seen.add(data["id"])
        rows.append(data)
    inclusion = None
    if inclusion_path is not None:
        inclusion = read_inclusion(inclusion_path)
        if set(inclusion) != seen:
            missing, extra = sorted(seen - set(inclusion)), sorted(set(inclusion) - seen)
            raise InputError(
                inclusion_path,
                f"does not match {path.name}: missing {missing[:5]}, unknown {extra[:5]}",
            )
    return [
        Canary(
            id=d["id"],
            prefix=d["prefix"],
            secret=d["secret"],
            secret_space=d["secret_space"],
            repetitions=d["repetitions"],
            included=True if inclusion is None else inclusion[d["id"]],
            role=d["role"],
        )
        for d in rows
    ]
