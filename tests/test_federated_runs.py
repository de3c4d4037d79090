"""Federated runs end to end from the CLI (DP-FedAvg, local DP only, user-level DP) and on Ray.

Split from tests/test_federated.py so that pytest-xdist (--dist loadfile) runs these slow
tests beside the fast ones.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("flwr")

from dpaudit.config import FederatedConfig, TrainConfig  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    from _fl_corpus import fl_corpus

    return fl_corpus()


def _fl_sets(tmp_path):
    return [
        "--set", f"runs_dir={tmp_path}",
        "--set", "data.synth_n=300",
        "--set", "federated.rounds=3",
        "--set", "federated.clients_per_round=10",
        "--set", "federated.canary_clients=60",
    ]  # fmt: skip


def test_federated_config_errors_exit_2_before_work(invoke, tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli

    res = CliRunner().invoke(
        cli,
        [
            "run",
            "configs/fl-quickstart.toml",
            *_fl_sets(tmp_path),
            "--set",
            "train.mode=head",
        ],
    )
    assert res.exit_code == 2
    assert "train.mode = head is not supported in a federated run" in res.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_fl_quickstart_runs_and_reports_client_level_audit(invoke, tmp_path):
    res = invoke("run", "configs/fl-quickstart.toml", *_fl_sets(tmp_path))
    assert res.exit_code == 0, res.output
    run = tmp_path / "fl-quickstart"
    privacy = json.loads((run / "target" / "privacy.json").read_text())
    assert privacy["unit"] == "client" and privacy["steps"] == 3
    clients = json.loads((run / "data" / "clients.json").read_text())
    assert privacy["n_examples"] == len(clients["clients"])
    assert privacy["sample_rate"] == pytest.approx(10 / len(clients["clients"]))
    bounds = json.loads((run / "audit" / "bounds.json").read_text())["models"]
    assert bounds["target"]["canary_design"] == "update-canary-clients"
    assert bounds["baseline"]["verdict"] == "not-private"
    assert bounds["target"]["verdict"] in ("consistent", "inconclusive")
    assert bounds["target"]["lower"]["n_canaries"] == 60
    report = (run / "report" / "report.md").read_text()
    assert "one training client (add/remove adjacency)" in report
    assert "DP-FedAvg client-level" in res.output
    assert "Federated training (target):" in report
    fed = json.loads((run / "report" / "report.json").read_text())["run"]["federation"]
    rounds = [json.loads(x) for x in (run / "target" / "rounds.jsonl").read_text().splitlines()]
    assert fed["target"]["clients"] == len(clients["clients"]) and fed["target"]["rounds"] == 3
    assert fed["target"]["bytes_down"] == sum(r["bytes_down"] for r in rounds) > 0
    assert fed["target"]["canary_clients"] == 60
    html = (run / "report" / "report.html").read_text()
    assert 'id="federation-target"' in html
    assert 'alt="Held-out loss after each federated round' in html
    assert len(fed["target"]["eval_loss_by_round"]) == 3
    assert fed["target"]["eval_loss_by_round"][-1] == rounds[-1]["eval_loss"]
    mia = json.loads((run / "attacks" / "target" / "client_mia.json").read_text())
    assert set(mia["attacks"]) >= {"loss", "zlib"} and not mia["skipped"]
    assert fed["target"]["client_mia_auc"]["loss"] == mia["attacks"]["loss"]["auc"]
    assert "client membership/target: best AUC" in res.output
    assert "without a scored record left out" in res.output
    # members and non-members are whole users: no user on both sides
    splits = json.loads((run / "data" / "splits.json").read_text())
    corpus = [json.loads(x) for x in (run / "data" / "corpus.jsonl").read_text().splitlines()]
    user = {r["id"]: r["meta"]["user"] for r in corpus}
    assert not {user[i] for i in splits["members"]} & {user[i] for i in splits["nonmembers"]}


@pytest.mark.slow
def test_local_dp_only_federation_is_audited_at_the_example_level(invoke, tmp_path):
    res = invoke(
        "run", "configs/fl-quickstart.toml", *_fl_sets(tmp_path),
        "--set", "train.dp=false", "--set", "federated.local_dp=true",
        "--set", "data.one_run_canaries=60",
        "--set", "data.canary_design=unigram",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    run = tmp_path / "fl-quickstart"
    privacy = json.loads((run / "target" / "privacy.json").read_text())
    assert privacy["unit"] == "example" and privacy["mechanism"] == "poisson-subsampled-gaussian"
    assert math.isclose(privacy["epsilon"], 8.0, rel_tol=0.05)
    bounds = json.loads((run / "audit" / "bounds.json").read_text())["models"]
    assert bounds["target"]["canary_design"] == "unigram"
    assert bounds["target"]["lower"]["n_canaries"] == 60
    assert bounds["target"]["verdict"] in ("consistent", "inconclusive")
    assert "FedAvg + local DP-SGD" in res.output
    assert "canary clients not used: local DP-SGD alone makes no client-level claim" in res.output
    assert not (run / "target" / "canary_clients.json").exists()


@pytest.mark.slow
def test_ray_engine_runs_the_same_mechanism(corpus, tmp_path):
    """Flower's Ray simulation engine: same ledger, rounds recorded, bytes counted by the wrapper."""
    pytest.importorskip("ray")
    from dpaudit.datasets.federated import partition_by_user
    from dpaudit.trainers.federated.run import train_federated

    train, held, tok = corpus
    partition = partition_by_user(train)
    config = TrainConfig(mode="lora", lora_rank=2, device="cpu", noise_multiplier=1.0)
    results = {}
    for backend in ("local", "ray"):
        fed = FederatedConfig(
            enabled=True, clients_per_round=5, rounds=2, canary_clients=10, clip_norm=0.5,
            backend=backend,
        )  # fmt: skip
        results[backend] = train_federated(
            train, partition=partition, train=config, federated=fed, tokenizer=tok,
            out_dir=tmp_path / backend, eval_records=held, seed=0, max_length=24, dp=True,
            progress=False,
        )  # fmt: skip
    assert results["ray"].ledger == results["local"].ledger
    rounds = [json.loads(x) for x in (tmp_path / "ray" / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 2
    for r in rounds:
        joined = len(r["clients"]) + r["canaries_joined"]
        assert joined == r["replies"] == r["sampled"]
        assert (r["bytes_down"] > 0) == (r["replies"] > 0) and r["bytes_up"] >= 0
    canary = json.loads((tmp_path / "ray" / "canary_clients.json").read_text())
    assert len(canary["scores"]) == 10


@pytest.mark.slow
def test_user_level_dp_run_end_to_end(invoke, tmp_path):
    res = invoke(
        "run", "configs/quickstart.toml", "--set", f"runs_dir={tmp_path}",
        "--set", "train.unit=user", "--set", "train.num_references=2",
        "--set", "data.synth_n=300", "--set", "train.batch_size=16",
        "--set", "train.physical_batch_size=8", "--set", "train.epochs=1",
        "--set", "data.one_run_canaries=40", "--set", "data.canary_repetitions=[1, 4]",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    run = tmp_path / "demo"
    privacy = json.loads((run / "target" / "privacy.json").read_text())
    clients = json.loads((run / "data" / "clients.json").read_text())["clients"]
    users = [c for c in clients if not c["client_id"].startswith("client-or-")]
    assert privacy["unit"] == "user" and privacy["n_examples"] == len(users)
    assert privacy["sample_rate"] == pytest.approx(16 / len(users))
    assert privacy["steps"] == max(1, math.floor(len(users) / 16 + 0.5))
    bounds = json.loads((run / "audit" / "bounds.json").read_text())["models"]
    assert bounds["target"]["lower"]["n_canaries"] == 40
    assert "user-level DP-SGD ε = 8" in res.output
    report = (run / "report" / "report.md").read_text()
    assert "one training user (add/remove adjacency)" in report
    # its references are user-level DP-SGD runs over halves of the users
    ref = json.loads((run / "references" / "ref-0" / "privacy.json").read_text())
    assert ref["unit"] == "user" and ref["n_examples"] < len(users)
    mia = json.loads((run / "attacks" / "target" / "client_mia.json").read_text())
    assert "lira" in mia["attacks"]
