"""Federated client partitions: by user, IID and Dirichlet label skew (Hsu et al. 2019)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from dpaudit.datasets.federated import (
    CLIENTS_SCHEMA,
    ClientPartition,
    PartitionResult,
    client_id,
    client_sizes,
    partition_by_user,
    partition_dirichlet,
    partition_iid,
    read_clients,
    write_clients,
)
from dpaudit.datasets.records import Record
from dpaudit.datasets.synth import synthesize
from dpaudit.errors import DpauditError


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return synthesize("support", 600, 0, num_labels=5)


def _all_ids(result: PartitionResult) -> list[str]:
    return [rid for c in result.clients for rid in c.record_ids]


def _mean_tv(result: PartitionResult, records: list[Record]) -> float:
    """Mean over clients of the total-variation distance to the global class mix."""
    label = {r.id: r.label for r in records}
    classes = sorted({r.label for r in records})
    overall = np.array([sum(r.label == c for r in records) for c in classes]) / len(records)
    distances = []
    for client in result.clients:
        counts = Counter(label[rid] for rid in client.record_ids)
        mix = np.array([counts[c] for c in classes]) / client.size
        distances.append(0.5 * np.abs(mix - overall).sum())
    return float(np.mean(distances))


# ----------------------------------------------------------------------------- by user


def test_by_user_groups_each_users_records(records):
    result = partition_by_user(records)
    assert result.scheme == "user"
    assert result.dropped_records == result.dropped_clients == 0
    expected: dict[str, list[str]] = {}
    for r in records:
        expected.setdefault(r.meta["user"], []).append(r.id)
    assert [c.key for c in result.clients] == sorted(expected)
    for client in result.clients:
        assert list(client.record_ids) == expected[client.key]  # input order kept
    ids = _all_ids(result)
    assert sorted(ids) == sorted(r.id for r in records) and len(ids) == len(set(ids))
    assert [c.client_id for c in result.clients] == [
        client_id(i, len(expected)) for i in range(len(expected))
    ]
    assert result.clients[0].client_id == "client-0000"


def test_by_user_is_deterministic_under_reordering(records):
    forward = partition_by_user(records)
    backward = partition_by_user(records[::-1])
    assert [c.key for c in forward.clients] == [c.key for c in backward.clients]
    assert [set(c.record_ids) for c in forward.clients] == [
        set(c.record_ids) for c in backward.clients
    ]


def test_by_user_missing_field_names_record_and_field():
    recs = [Record("a", "x", meta={"user": "u1"}), Record("b", "y", meta={})]
    with pytest.raises(DpauditError, match=r"record b .*'user'.*data\.user_field"):
        partition_by_user(recs)
    with pytest.raises(DpauditError, match="'owner'"):
        partition_by_user([Record("a", "x", meta={"user": "u1"})], field="owner")


def test_by_user_min_records_drops_are_counted(records):
    per_user = Counter(r.meta["user"] for r in records)
    result = partition_by_user(records, min_records=4)
    small = [u for u, k in per_user.items() if k < 4]
    assert small and len(small) < len(per_user)
    assert result.dropped_clients == len(small)
    assert result.dropped_records == sum(per_user[u] for u in small)
    assert {c.key for c in result.clients} == {u for u, k in per_user.items() if k >= 4}
    assert all(c.size >= 4 for c in result.clients)
    assert result.n_records + result.dropped_records == len(records)
    with pytest.raises(DpauditError, match="min_records"):
        partition_by_user(records, min_records=10_000)


def test_by_user_hand_built_edge_cases():
    recs = [
        Record("r1", "a", meta={"user": "bob"}),
        Record("r2", "b", meta={"user": "alice"}),
        Record("r3", "c", meta={"user": "bob"}),
    ]
    result = partition_by_user(recs)
    assert [(c.client_id, c.key, c.record_ids) for c in result.clients] == [
        ("client-0000", "alice", ("r2",)),
        ("client-0001", "bob", ("r1", "r3")),
    ]
    with pytest.raises(DpauditError, match="twice"):
        partition_by_user(recs + [Record("r1", "d", meta={"user": "carol"})])
    with pytest.raises(DpauditError, match="empty"):
        partition_by_user([])


def test_client_id_widens_when_needed():
    assert client_id(7, 10) == "client-0007"
    assert client_id(9999, 10_000) == "client-9999"
    assert client_id(3, 10_001) == "client-00003"


# ----------------------------------------------------------------------------- iid


def test_iid_sizes_balanced_and_every_record_once(records):
    result = partition_iid(records, 7, seed=3)
    sizes = [c.size for c in result.clients]
    assert len(sizes) == 7 and max(sizes) - min(sizes) <= 1 and sum(sizes) == len(records)
    ids = _all_ids(result)
    assert sorted(ids) == sorted(r.id for r in records)
    assert all(c.key is None for c in result.clients)
    position = {r.id: i for i, r in enumerate(records)}
    for client in result.clients:  # input order kept inside a client
        assert [position[i] for i in client.record_ids] == sorted(
            position[i] for i in client.record_ids
        )
    assert result.params == {"n_clients": 7, "seed": 3}


def test_iid_deterministic_per_seed(records):
    assert partition_iid(records, 5, seed=1) == partition_iid(records, 5, seed=1)
    assert partition_iid(records, 5, seed=1).clients != partition_iid(records, 5, seed=2).clients


@pytest.mark.parametrize("n_clients", [0, -1, 601])
def test_iid_bad_n_clients(records, n_clients):
    with pytest.raises(DpauditError, match="n_clients"):
        partition_iid(records, n_clients, seed=0)


def test_iid_one_client_per_record():
    recs = [Record(f"r{i}", "t") for i in range(3)]
    result = partition_iid(recs, 3, seed=0)
    assert sorted(c.size for c in result.clients) == [1, 1, 1]


# ----------------------------------------------------------------------------- dirichlet


def test_dirichlet_every_record_once_and_deterministic(records):
    result = partition_dirichlet(records, 6, alpha=0.5, seed=4)
    assert result.scheme == "dirichlet" and result.n_clients == 6
    assert sum(c.size for c in result.clients) == len(records)
    ids = _all_ids(result)
    assert sorted(ids) == sorted(r.id for r in records) and len(ids) == len(set(ids))
    assert all(c.size >= 1 for c in result.clients)
    assert result.params["alpha"] == 0.5 and result.params["classes"] == "label"
    assert result == partition_dirichlet(records, 6, alpha=0.5, seed=4)
    assert result.clients != partition_dirichlet(records, 6, alpha=0.5, seed=5).clients


def test_dirichlet_alpha_controls_label_skew(records):
    iid_like = [
        _mean_tv(partition_dirichlet(records, 5, alpha=1000, seed=s), records) for s in range(3)
    ]
    skewed = [
        _mean_tv(partition_dirichlet(records, 5, alpha=0.05, seed=s), records) for s in range(3)
    ]
    # Observed: alpha=1000 gives mean TV ~0.01-0.02, alpha=0.05 gives ~0.5-0.8.
    assert max(iid_like) < 0.08
    assert min(skewed) > 0.3
    assert min(skewed) > 5 * max(iid_like)


def test_dirichlet_min_records_respected(records):
    result = partition_dirichlet(records, 5, alpha=0.3, seed=0, min_records=40)
    assert min(c.size for c in result.clients) >= 40
    assert result.params["tries"] >= 1


def test_dirichlet_impossible_min_records_explains(records):
    with pytest.raises(DpauditError, match="lower n_clients"):
        partition_dirichlet(records, 10, alpha=0.5, seed=0, min_records=100)
    # feasible in count, but a tiny alpha never spreads 5 classes over 40 clients
    with pytest.raises(DpauditError, match="raise alpha"):
        partition_dirichlet(records, 40, alpha=0.01, seed=0, min_records=10)


@pytest.mark.parametrize("alpha", [0, -0.5, float("nan"), float("inf")])
def test_dirichlet_bad_alpha(records, alpha):
    with pytest.raises(DpauditError, match="alpha"):
        partition_dirichlet(records, 4, alpha=alpha, seed=0)


def test_dirichlet_groups_unlabelled_records_by_meta():
    recs = [
        Record(f"r{i}", "t", meta={"domain": "support" if i % 3 else "clinical"}) for i in range(60)
    ]
    result = partition_dirichlet(recs, 3, alpha=1.0, seed=0)
    assert result.params["classes"] == "meta.domain" and result.params["n_classes"] == 2
    assert sorted(_all_ids(result)) == sorted(r.id for r in recs)
    topic = [Record(f"r{i}", "t", meta={"topic": i % 2}) for i in range(20)]
    assert partition_dirichlet(topic, 2, alpha=1.0, seed=0, group_field="topic").n_records == 20


def test_dirichlet_without_class_names_field():
    recs = [Record("a", "t", label=1), Record("b", "t", meta={})]
    with pytest.raises(
        DpauditError, match=r"record a has no meta field 'domain'.*record b has no label"
    ):
        partition_dirichlet(recs, 1, alpha=1.0, seed=0)


# ----------------------------------------------------------------------------- summary, I/O


def test_client_sizes_summary(records):
    result = partition_iid(records, 4, seed=0)
    summary = client_sizes(result)
    assert summary["n_clients"] == 4 and summary["n_records"] == 600
    assert summary["min"] == summary["max"] == 150 and summary["median"] == 150.0
    dropped = client_sizes(partition_by_user(records, min_records=2))
    assert dropped["dropped_records"] > 0


def test_write_read_round_trip(tmp_path, records):
    for result in (
        partition_by_user(records, min_records=2),
        partition_iid(records, 3, seed=1),
        partition_dirichlet(records, 4, alpha=0.5, seed=2),
    ):
        path = write_clients(tmp_path / "run" / "clients.json", result)
        data = json.loads(path.read_text())
        assert data["schema"] == CLIENTS_SCHEMA and data["scheme"] == result.scheme
        assert read_clients(path) == result
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["clients.json"]  # no temp left
    client = result.clients[0]
    assert ClientPartition.from_dict(client.to_dict()) == client


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        json.dumps({"schema": "other/1", "scheme": "iid", "clients": []}),
        json.dumps({"schema": CLIENTS_SCHEMA, "scheme": "iid", "clients": [{"client_id": 3}]}),
        json.dumps(
            {
                "schema": CLIENTS_SCHEMA,
                "scheme": "iid",
                "clients": [
                    {"client_id": "client-0000", "record_ids": ["a"]},
                    {"client_id": "client-0001", "record_ids": ["a"]},
                ],
            }
        ),
    ],
)
def test_read_corrupt_file_names_path(tmp_path, text):
    path = tmp_path / "clients.json"
    path.write_text(text)
    with pytest.raises(DpauditError, match="clients.json"):
        read_clients(path)


def test_read_missing_file(tmp_path):
    with pytest.raises(DpauditError, match="not found"):
        read_clients(tmp_path / "clients.json")


def test_dirichlet_unlabelled_without_field_names_it():
    recs = [Record("a", "t", meta={"domain": "x"}), Record("b", "t", meta={})]
    with pytest.raises(DpauditError, match=r"record b has no meta field 'topic'"):
        partition_dirichlet(recs[1:], 1, alpha=1.0, seed=0, group_field="topic")
    with pytest.raises(DpauditError, match=r"record b has no meta field 'domain'"):
        partition_dirichlet(recs, 1, alpha=1.0, seed=0)
