"""Partition a training set among federated clients.

The federated fine-tuning feature trains one model with many simulated
clients (Flower); each client sees only its own share of the training
records. Three schemes are offered:

* ``"user"`` (:func:`partition_by_user`): one client per user id
  (``record.meta["user"]``), the natural cross-device setting where a client
  holds exactly one person's data.
* ``"iid"`` (:func:`partition_iid`): a seeded uniform random split into
  near-equal shares.
* ``"dirichlet"`` (:func:`partition_dirichlet`): the non-IID label-skew
  partition of Hsu, Qi and Brown 2019, "Measuring the Effects of
  Non-Identical Data Distribution for Federated Visual Classification"
  (arXiv:1909.06335, §3): for every class ``c`` the proportions
  ``p_c ~ Dir(alpha * 1_N)`` split that class's records among the ``N``
  clients. Small ``alpha`` (e.g. 0.05) gives each client few classes; large
  ``alpha`` (e.g. 1000) approaches the IID split.

Every scheme returns a :class:`PartitionResult`; nothing is dropped silently
(its ``dropped_records`` / ``dropped_clients`` count what ``min_records``
removed). :func:`write_clients` / :func:`read_clients` store it as
``clients.json`` (schema ``dpaudit.clients/1``), holding record ids only.

This module depends only on :mod:`dpaudit.errors`, :mod:`dpaudit.datasets.records`
and the atomic writer :mod:`dpaudit.atomic` (data flows one way).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import atomic_write_text
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError

CLIENTS_SCHEMA = "dpaudit.clients/1"
"""Value of the ``schema`` key of ``clients.json``."""

CLIENTS_FILE = "clients.json"
"""Conventional file name for :func:`write_clients`."""

SCHEMES: tuple[str, ...] = ("user", "dirichlet", "iid")
"""Partition schemes, as recorded in :attr:`PartitionResult.scheme`."""

MAX_DIRICHLET_TRIES = 100
"""How many Dirichlet draws :func:`partition_dirichlet` makes before giving up."""


def client_id(index: int, n_clients: int) -> str:
    """The id of client ``index`` (0-based) out of ``n_clients``: ``client-0000`` ...

    Zero-padded to 4 digits, or wider when ``n_clients - 1`` needs more.
    """
    width = max(4, len(str(max(n_clients - 1, 0))))
    return f"client-{index:0{width}d}"


@dataclass(frozen=True)
class ClientPartition:
    """One federated client's share of the training set.

    Attributes:
        client_id: ``client-0000`` ... (see :func:`client_id`).
        record_ids: ids of the client's records, in training-set order.
        key: the user id for a by-user partition, else ``None``.
    """

    client_id: str
    record_ids: tuple[str, ...]
    key: str | None = None

    @property
    def size(self) -> int:
        """Number of records held by the client."""
        return len(self.record_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "key": self.key, "record_ids": list(self.record_ids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClientPartition:
        """Inverse of :meth:`to_dict`.

        Raises:
            DpauditError: a missing or mistyped field.
        """
        if not isinstance(data, dict):
            raise DpauditError(f"client entry must be an object, got {type(data).__name__}")
        cid = data.get("client_id")
        ids = data.get("record_ids")
        key = data.get("key")
        if not isinstance(cid, str) or not cid:
            raise DpauditError(f"client entry needs a string 'client_id', got {cid!r}")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DpauditError(f"client {cid}: 'record_ids' must be a list of strings")
        if key is not None and not isinstance(key, str):
            raise DpauditError(f"client {cid}: 'key' must be a string or null, got {key!r}")
        return cls(client_id=cid, record_ids=tuple(ids), key=key)


@dataclass(frozen=True)
class PartitionResult:
    """The outcome of a partition.

    Attributes:
        clients: the clients, ordered by ``client_id``.
        dropped_records: records left out (their user had fewer than ``min_records``).
        dropped_clients: would-be clients left out for the same reason.
        scheme: ``"user"``, ``"dirichlet"`` or ``"iid"``.
        params: the scheme's parameters (JSON types), e.g. ``{"alpha": 0.5, "seed": 0, ...}``.
    """

    clients: tuple[ClientPartition, ...]
    dropped_records: int
    dropped_clients: int
    scheme: str
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    @property
    def n_clients(self) -> int:
        return len(self.clients)

    @property
    def n_records(self) -> int:
        """Records assigned to some client (dropped ones excluded)."""
        return sum(c.size for c in self.clients)

    def assignment(self) -> dict[str, str]:
        """Map record id -> client id."""
        return {rid: c.client_id for c in self.clients for rid in c.record_ids}

    def to_dict(self) -> dict[str, Any]:
        """The ``clients.json`` payload (schema :data:`CLIENTS_SCHEMA`)."""
        return {
            "schema": CLIENTS_SCHEMA,
            "scheme": self.scheme,
            "params": dict(self.params),
            "dropped_records": self.dropped_records,
            "dropped_clients": self.dropped_clients,
            "clients": [c.to_dict() for c in self.clients],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            DpauditError: wrong schema, unknown scheme, missing or mistyped fields,
                a record id in two clients, or a repeated client id.
        """
        if not isinstance(data, dict):
            raise DpauditError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != CLIENTS_SCHEMA:
            raise DpauditError(f"schema must be {CLIENTS_SCHEMA!r}, got {data.get('schema')!r}")
        scheme = data.get("scheme")
        if scheme not in SCHEMES:
            raise DpauditError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise DpauditError("'params' must be an object")
        counts: dict[str, int] = {}
        for name in ("dropped_records", "dropped_clients"):
            value = data.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DpauditError(f"{name!r} must be a non-negative integer, got {value!r}")
            counts[name] = value
        raw = data.get("clients")
        if not isinstance(raw, list):
            raise DpauditError("'clients' must be a list")
        clients = tuple(ClientPartition.from_dict(c) for c in raw)
        seen_clients: set[str] = set()
        owner: dict[str, str] = {}
        for c in clients:
            if c.client_id in seen_clients:
                raise DpauditError(f"client id {c.client_id} appears twice")
            seen_clients.add(c.client_id)
            for rid in c.record_ids:
                if rid in owner:
                    raise DpauditError(f"record {rid} is in both {owner[rid]} and {c.client_id}")
                owner[rid] = c.client_id
        return cls(
            clients=clients,
            dropped_records=counts["dropped_records"],
            dropped_clients=counts["dropped_clients"],
            scheme=str(scheme),
            params=dict(params),
        )


# --------------------------------------------------------------------------- checks


def _check_records(records: Sequence[Record]) -> None:
    if len(records) == 0:
        raise DpauditError("cannot partition an empty training set")
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise DpauditError(f"record id {r.id} appears twice in the training set")
        seen.add(r.id)


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise DpauditError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _check_n_clients(n_clients: Any, n_records: int) -> int:
    n = _check_int("n_clients", n_clients, 1)
    if n > n_records:
        raise DpauditError(f"n_clients ({n}) exceeds the number of training records ({n_records})")
    return n


def _build(
    groups: Sequence[Sequence[int]], records: Sequence[Record], keys: Sequence[str | None]
) -> tuple[ClientPartition, ...]:
    n = len(groups)
    return tuple(
        ClientPartition(
            client_id=client_id(i, n),
            record_ids=tuple(records[j].id for j in sorted(group)),
            key=key,
        )
        for i, (group, key) in enumerate(zip(groups, keys, strict=True))
    )


# --------------------------------------------------------------------------- schemes


def partition_by_user(
    records: Sequence[Record], *, field: str = "user", min_records: int = 1
) -> PartitionResult:
    """One client per distinct ``record.meta[field]`` (a user id).

    Clients are ordered by the sorted user key (``str`` of the value), so the
    result is deterministic; inside a client the records keep their input order.

    Args:
        records: the training set (unique ids).
        field: the ``meta`` key holding the user id.
        min_records: users with fewer records are dropped and counted in
            ``dropped_clients`` / ``dropped_records``.

    Returns:
        A :class:`PartitionResult` with ``scheme="user"``, ``key`` = user id and
        ``params = {"field": field, "min_records": min_records}``.

    Raises:
        DpauditError: empty training set, duplicate record ids, a record without
            ``meta[field]`` (named, with the hint to set ``data.user_field``),
            ``min_records < 1``, or every user dropped.
    """
    _check_records(records)
    min_records = _check_int("min_records", min_records, 1)
    by_user: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        value = r.meta.get(field)
        if value is None or value == "":
            raise DpauditError(
                f"record {r.id} has no meta field {field!r} to partition by user"
                " (set data.user_field to the column holding the user id)"
            )
        by_user.setdefault(str(value), []).append(i)
    keys = sorted(by_user)
    kept = [k for k in keys if len(by_user[k]) >= min_records]
    dropped = [k for k in keys if len(by_user[k]) < min_records]
    if not kept:
        raise DpauditError(
            f"no user has at least min_records={min_records} records"
            f" ({len(keys)} users, largest has {max(len(v) for v in by_user.values())})"
        )
    return PartitionResult(
        clients=_build([by_user[k] for k in kept], records, kept),
        dropped_records=sum(len(by_user[k]) for k in dropped),
        dropped_clients=len(dropped),
        scheme="user",
        params={"field": field, "min_records": min_records},
    )


def partition_iid(records: Sequence[Record], n_clients: int, *, seed: int) -> PartitionResult:
    """A seeded uniform random split into ``n_clients`` near-equal shares.

    The records are permuted with ``numpy.random.default_rng(seed)`` and cut
    into ``n_clients`` consecutive parts whose sizes differ by at most one
    (``numpy.array_split``); each client keeps its records in input order.

    Returns:
        A :class:`PartitionResult` with ``scheme="iid"``,
        ``params = {"n_clients": ..., "seed": ...}``, nothing dropped.

    Raises:
        DpauditError: empty training set, duplicate ids, ``n_clients`` < 1 or
            larger than the number of records, or a negative ``seed``.
    """
    _check_records(records)
    n = _check_n_clients(n_clients, len(records))
    seed = _check_int("seed", seed, 0)
    perm = np.random.default_rng(seed).permutation(len(records))
    groups = [part.tolist() for part in np.array_split(perm, n)]
    return PartitionResult(
        clients=_build(groups, records, [None] * n),
        dropped_records=0,
        dropped_clients=0,
        scheme="iid",
        params={"n_clients": n, "seed": seed},
    )


def _classes(records: Sequence[Record], group_field: str) -> tuple[str, list[Hashable]]:
    """The class of every record: its label if all have one, else ``meta[group_field]``."""
    unlabelled = next((r for r in records if r.label is None), None)
    if unlabelled is None:
        return "label", [r.label for r in records]
    out: list[Hashable] = []
    for r in records:
        value = r.meta.get(group_field)
        if value is None:
            why = (
                ""
                if r is unlabelled
                else f" (record {unlabelled.id} has no label, so classes come from meta)"
            )
            raise DpauditError(
                f"record {r.id} has no meta field {group_field!r} to use as its"
                f" Dirichlet class{why}; give every record a label or that field"
                " (or pass group_field= the meta key to group by)"
            )
        if not isinstance(value, Hashable):
            raise DpauditError(
                f"record {r.id}: meta field {group_field!r} must be a string or number,"
                f" got {type(value).__name__}"
            )
        out.append(value)
    return f"meta.{group_field}", out


def partition_dirichlet(
    records: Sequence[Record],
    n_clients: int,
    *,
    alpha: float,
    seed: int,
    min_records: int = 1,
    group_field: str = "domain",
) -> PartitionResult:
    """Non-IID label-skew partition (Hsu, Qi, Brown 2019, arXiv:1909.06335, §3).

    For each class ``c`` (in sorted order) draw ``p_c ~ Dir(alpha * 1_N)`` with
    ``N = n_clients`` and split the class's ``n_c`` records, in a seeded random
    order, into ``N`` consecutive parts cut at ``floor(cumsum(p_c) * n_c)``
    (client ``k`` gets about ``p_c[k] * n_c`` of them). If some client ends with fewer than ``min_records`` records,
    everything is redrawn (the same rng continues) up to
    :data:`MAX_DIRICHLET_TRIES` times. Deterministic given ``seed``; every
    record lands in exactly one client, in input order within the client.

    Classes are ``record.label`` when every record has one; otherwise (language
    modelling) ``record.meta[group_field]`` (synthetic records carry ``"domain"``).

    Args:
        records: the training set (unique ids).
        n_clients: number of clients ``N``, 1 <= N <= len(records).
        alpha: Dirichlet concentration, finite and > 0.
        seed: non-negative seed for ``numpy.random.default_rng``.
        min_records: smallest allowed client (>= 1).
        group_field: ``meta`` key used as the class when labels are missing.

    Returns:
        A :class:`PartitionResult` with ``scheme="dirichlet"`` and ``params``
        ``{"n_clients", "alpha", "seed", "min_records", "classes", "n_classes",
        "tries"}`` (``classes`` is ``"label"`` or ``"meta.<group_field>"``,
        ``tries`` the number of draws used); nothing dropped.

    Raises:
        DpauditError: empty training set, duplicate ids, bad ``n_clients``,
            ``alpha`` <= 0 or not finite, negative ``seed``, ``min_records`` < 1
            or larger than ``len(records) / n_clients``, no class available
            (the field is named), or no draw in :data:`MAX_DIRICHLET_TRIES`
            gave every client ``min_records``.
    """
    _check_records(records)
    n = _check_n_clients(n_clients, len(records))
    seed = _check_int("seed", seed, 0)
    min_records = _check_int("min_records", min_records, 1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise DpauditError(f"alpha must be a number > 0, got {alpha!r}")
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise DpauditError(f"alpha must be a finite number > 0, got {alpha!r}")
    if n * min_records > len(records):
        raise DpauditError(
            f"{n} clients of at least {min_records} records need {n * min_records} records,"
            f" the training set has {len(records)}; lower n_clients or min_records"
        )
    source, labels = _classes(records, group_field)
    by_class: dict[Hashable, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    order = sorted(by_class, key=lambda c: (type(c).__name__, str(c)))
    members = [np.asarray(by_class[c], dtype=np.int64) for c in order]

    rng = np.random.default_rng(seed)
    concentration = np.full(n, alpha)
    smallest = 0
    for tries in range(1, MAX_DIRICHLET_TRIES + 1):
        groups: list[list[int]] = [[] for _ in range(n)]
        for idx in members:
            p = rng.dirichlet(concentration)
            shuffled = idx[rng.permutation(len(idx))]
            cuts = np.floor(np.cumsum(p) * len(idx)).astype(np.int64)
            cuts = np.clip(cuts, 0, len(idx))
            cuts[-1] = len(idx)
            for k, part in enumerate(np.split(shuffled, cuts[:-1])):
                groups[k].extend(part.tolist())
        smallest = min(len(g) for g in groups)
        if smallest >= min_records:
            return PartitionResult(
                clients=_build(groups, records, [None] * n),
                dropped_records=0,
                dropped_clients=0,
                scheme="dirichlet",
                params={
                    "n_clients": n,
                    "alpha": alpha,
                    "seed": seed,
                    "min_records": min_records,
                    "classes": source,
                    "n_classes": len(order),
                    "tries": tries,
                },
            )
    raise DpauditError(
        f"no Dirichlet draw (alpha={alpha:g}, {MAX_DIRICHLET_TRIES} tries) gave all {n} clients"
        f" at least {min_records} records (last draw's smallest client: {smallest});"
        " lower n_clients or min_records, or raise alpha"
    )


# --------------------------------------------------------------------------- summary, I/O


def client_sizes(result: PartitionResult) -> dict[str, Any]:
    """Summary of client sizes for the report.

    Returns:
        ``{"scheme": str, "n_clients": int, "n_records": int, "min": int,
        "median": float, "max": int, "dropped_records": int, "dropped_clients": int}``;
        sizes in records. ``min``/``median``/``max`` are 0 with no clients.
    """
    sizes = [c.size for c in result.clients]
    return {
        "scheme": result.scheme,
        "n_clients": len(sizes),
        "n_records": sum(sizes),
        "min": min(sizes) if sizes else 0,
        "median": float(np.median(sizes)) if sizes else 0.0,
        "max": max(sizes) if sizes else 0,
        "dropped_records": result.dropped_records,
        "dropped_clients": result.dropped_clients,
    }


def write_clients(path: str | Path, result: PartitionResult) -> Path:
    """Write ``result`` as JSON (schema :data:`CLIENTS_SCHEMA`) atomically.

    ``path`` is the file to write (conventionally :data:`CLIENTS_FILE`);
    its directory is created. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def read_clients(path: str | Path) -> PartitionResult:
    """Read a file written by :func:`write_clients`.

    Raises:
        DpauditError: the file is missing, unreadable, not JSON or not a valid
            ``dpaudit.clients/1`` document; the message names ``path``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DpauditError(f"{path}: client partition file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DpauditError(f"{path}: cannot read client partition file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DpauditError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    try:
        return PartitionResult.from_dict(data)
    except DpauditError as exc:
        raise DpauditError(f"{path}: {exc}") from None


# ----------------------------------------------------------------- training sets
def partition_training_set(
    records: Sequence[Record],
    *,
    scheme: str,
    n_clients: int,
    alpha: float,
    seed: int,
    min_records: int = 1,
    user_field: str = "user",
    group_field: str = "domain",
    audit_canaries_alone: bool = False,
) -> PartitionResult:
    """Partition a run's training list (members and canary copies) among clients.

    Members (records without ``meta["canary_id"]``; repeated ids counted once)
    are partitioned by ``scheme``. Every copy of a Secret-Sharer canary then goes to
    *one* client, drawn uniformly by ``default_rng((seed, 2))`` per canary (secrets
    planted in one client's data, as in the federated exposure literature), so
    the exposure attack measures what one client's secret costs. The result's
    ``params["canary_records"]`` counts the canary copies placed.

    With ``audit_canaries_alone``, each one-run audit canary (``canary_id`` starting
    ``canary-or``) becomes a client of its own (``client-or-<canary id>``), so including
    or excluding it by its coin adds or removes one whole client (user): the adjacency a
    user- or client-level ledger states, which the one-run audit needs to be judged
    against it.

    Raises:
        DpauditError: as the scheme's function, or an unknown ``scheme``.
    """
    members: dict[str, Record] = {}
    canary_groups: dict[str, list[str]] = {}
    for r in records:
        cid = r.meta.get("canary_id")
        if cid is not None:
            canary_groups.setdefault(str(cid), [])
            if r.id not in canary_groups[str(cid)]:
                canary_groups[str(cid)].append(r.id)
        else:
            members.setdefault(r.id, r)
    pool = list(members.values())
    if scheme == "user":
        base = partition_by_user(pool, field=user_field, min_records=min_records)
    elif scheme == "iid":
        base = partition_iid(pool, n_clients, seed=seed)
    elif scheme == "dirichlet":
        base = partition_dirichlet(
            pool,
            n_clients,
            alpha=alpha,
            seed=seed,
            min_records=min_records,
            group_field=group_field,
        )
    else:
        raise DpauditError(f"unknown partition scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if not canary_groups:
        return base
    alone = {
        cid: ids
        for cid, ids in canary_groups.items()
        if audit_canaries_alone and cid.startswith("canary-or")
    }
    rng = np.random.default_rng([int(seed), 2])
    extra: dict[int, list[str]] = {}
    for cid in sorted(canary_groups):
        if cid not in alone:
            extra.setdefault(int(rng.integers(base.n_clients)), []).extend(canary_groups[cid])
    clients = tuple(
        ClientPartition(c.client_id, c.record_ids + tuple(extra.get(i, ())), c.key)
        for i, c in enumerate(base.clients)
    ) + tuple(
        ClientPartition(f"client-or-{cid}", tuple(ids), cid) for cid, ids in sorted(alone.items())
    )
    params = {**base.params, "canary_records": sum(len(v) for v in canary_groups.values())}
    return PartitionResult(clients, base.dropped_records, base.dropped_clients, base.scheme, params)
