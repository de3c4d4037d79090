"""Federated DP-FedAvg on Flower (dpaudit.trainers.federated) and its client-level audit.

Fast tests drive the real Flower strategy, ClientApp and LocalGrid with a cheap
numpy client (local gradient steps towards a client's own optimum); the tiny
language model is used where the model matters (LoRA-only traffic, the CLI run).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

pytest.importorskip("flwr")

from dpaudit.accounting import PrivacyLedger  # noqa: E402
from dpaudit.audit.gradient_canaries import gradient_canary_audit  # noqa: E402
from dpaudit.audit.variants import NoNoise  # noqa: E402
from dpaudit.audit.verdict import CONSISTENT, INCONCLUSIVE, VIOLATION, judge  # noqa: E402
from dpaudit.config import FederatedConfig, TrainConfig  # noqa: E402
from dpaudit.errors import DpauditError  # noqa: E402
from dpaudit.trainers.federated.canaries import (  # noqa: E402
    UpdateCanaries,
    canary_direction,
    canary_scores,
)
from dpaudit.trainers.federated.client import make_client_app  # noqa: E402
from dpaudit.trainers.federated.grid import LocalGrid  # noqa: E402
from dpaudit.trainers.federated.privacy import plan_client_privacy  # noqa: E402
from dpaudit.trainers.federated.server import (  # noqa: E402
    AdaptiveClipping,
    DpFedAvg,
    ServerMechanism,
    update_noise_multiplier,
)
from dpaudit.trainers.privacy import make_ledger  # noqa: E402

D = 4000  # trainable dimension of the numpy model


class QuadraticClients:
    """Client k takes `steps` gradient steps on ||w - t_k||^2 / 2 from the global w."""

    def __init__(self, n: int, *, seed: int = 0, lr: float = 0.3, steps: int = 2, scale=0.05):
        rng = np.random.default_rng(seed)
        self.targets = [rng.normal(0.0, scale, D).astype(np.float32) for _ in range(n)]
        self.lr, self.steps, self.calls = lr, steps, []

    def train(self, client, server_round, arrays, config):
        self.calls.append((server_round, client))
        w = np.array(arrays["w"], dtype=np.float32)
        for _ in range(self.steps):
            w = w - self.lr * (w - self.targets[client])
        return {"w": w}, {"train-loss": float(np.sum((w - self.targets[client]) ** 2))}


def simulate(
    *,
    adam=None,
    server_lr: float = 1.0,
    n: int = 20,
    m: int = 5,
    rounds: int = 12,
    sigma: float = 0.0,
    clip: float | None = 1.0,
    canaries: UpdateCanaries | None = None,
    seed: int = 0,
    hooks=None,
    adaptive: AdaptiveClipping | None = None,
    clients=None,
):
    """Run DpFedAvg on a LocalGrid; return (final w, round records, grid, clients)."""
    from flwr.app import Array, ArrayRecord

    clients = clients or QuadraticClients(n, seed=seed)
    records = []
    q = m / n
    strategy = DpFedAvg(
        mechanism=ServerMechanism(q, sigma, clip, q * n, adaptive),
        seed=seed,
        hooks=hooks,
        on_round=records.append,
        adam=adam,
        server_learning_rate=server_lr,
    )
    n_canary = sum(canaries.included) if canaries else 0
    grid = LocalGrid(make_client_app(clients, n_real=n, canaries=canaries), n + n_canary)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({"w": Array(np.zeros(D, np.float32))}),
        num_rounds=rounds,
    )
    return np.asarray(result.arrays["w"].numpy()), records, grid, clients


# ----------------------------------------------------------------------------- ledger
def test_client_ledger_equals_dpaudit_accountant(invoke):
    """The ledger's client-level ε is `dpaudit accountant` at q = m/N, σ, T = rounds."""
    train = TrainConfig(noise_multiplier=1.1, delta=1e-5)
    fed = FederatedConfig(enabled=True, clients_per_round=5, rounds=12)
    plan = plan_client_privacy(train, fed, 20, dp=True)
    ledger = make_ledger(plan, plan.steps)
    assert (plan.sample_rate, plan.steps, ledger.unit) == (0.25, 12, "client")
    assert ledger.adjacency == "add/remove"
    out = invoke("accountant", "-q", "0.25", "-s", "1.1", "-t", "12", "-d", "1e-5", "--json")
    cli = json.loads(out.output)
    assert set(cli["epsilon"]) == set(ledger.epsilons)
    for name, eps in cli["epsilon"].items():
        assert ledger.epsilons[name] == eps, name
    assert PrivacyLedger.from_dict(ledger.to_dict()) == ledger


def test_client_noise_calibrated_to_target_epsilon():
    train = TrainConfig(target_epsilon=2.0, delta=1e-5)
    fed = FederatedConfig(enabled=True, clients_per_round=10, rounds=30)
    plan = plan_client_privacy(train, fed, 100, dp=True)
    eps = make_ledger(plan, plan.steps).epsilons["pld"]
    assert plan.noise_source == "calibrated"
    assert 1.9 < eps <= 2.0 + 1e-6
    with pytest.raises(DpauditError, match="exceeds the 4 clients"):
        plan_client_privacy(train, fed, 4, dp=True)


# ---------------------------------------------------------------------------- server
def test_poisson_sampling_rate_and_reproducibility():
    strategy = DpFedAvg(mechanism=ServerMechanism(0.3, 0.0, None, 30.0), seed=3)
    nodes = list(range(1, 101))
    counts = [len(strategy.sample_nodes(r, nodes)) for r in range(1, 201)]
    # Binomial(100, 0.3) per round: mean 30, sd 4.58; the mean of 200 rounds has sd 0.32
    assert abs(np.mean(counts) - 30.0) < 1.5
    assert np.std(counts) == pytest.approx(math.sqrt(100 * 0.3 * 0.7), rel=0.2)
    again = DpFedAvg(mechanism=ServerMechanism(0.3, 0.0, None, 30.0), seed=3)
    assert again.sample_nodes(7, nodes) == strategy.sample_nodes(7, nodes)
    assert strategy.sample_nodes(7, nodes) != strategy.sample_nodes(8, nodes)


def test_fixed_denominator_clipping_and_noise_on_empty_rounds():
    # no noise: the step is the sum of clipped updates over qN, whoever joined
    w, records, _, clients = simulate(n=10, m=5, rounds=1, clip=0.01, seed=1)
    joined = [c for r, c in clients.calls if r == 1]
    assert len(joined) == records[0]["replies"] > 0
    expected = np.zeros(D)
    for c in joined:
        delta = clients.targets[c] * (1 - (1 - clients.lr) ** clients.steps)
        expected += delta * min(1.0, 0.01 / np.linalg.norm(delta))
    np.testing.assert_allclose(w, expected / 5.0, rtol=1e-4, atol=1e-7)

    # q so small that nobody joins: the round still releases N(0, (zC)^2) / qN
    def empty_round(seed):
        from flwr.app import Array, ArrayRecord

        records, spy = [], QuadraticClients(10)
        strategy = DpFedAvg(
            mechanism=ServerMechanism(1e-9, 2.0, 0.5, 1.0), seed=seed, on_round=records.append
        )
        grid = LocalGrid(make_client_app(spy, n_real=10), 10)
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord({"w": Array(np.zeros(D, np.float32))}),
            num_rounds=1,
        )
        assert records[0]["replies"] == 0 and not spy.calls
        return np.asarray(result.arrays["w"].numpy())

    w = empty_round(0)
    assert np.std(w) == pytest.approx(2.0 * 0.5 / 1.0, rel=0.05)
    np.testing.assert_array_equal(w, empty_round(0))  # same seed, same noise
    assert not np.array_equal(w, empty_round(1))


def test_fedadam_applies_adam_to_the_released_mean():
    """Reddi et al. 2021, Alg. 2 (no bias correction), on the mean update of two rounds."""
    from dpaudit.trainers.federated.server import ServerAdam

    adam = ServerAdam(0.9, 0.99, 1e-3)
    w, records, _, clients = simulate(n=10, m=10, rounds=2, clip=None, adam=adam, server_lr=0.01)
    theta, m, v = np.zeros(D), np.zeros(D), np.zeros(D)
    for r in (1, 2):
        joined = [c for rr, c in clients.calls if rr == r]
        delta = np.zeros(D)
        for c in joined:  # each client's update from theta, as QuadraticClients computes it
            w_c = theta.astype(np.float32)
            for _ in range(clients.steps):
                w_c = w_c - clients.lr * (w_c - clients.targets[c])
            delta += w_c.astype(np.float64) - theta.astype(np.float32).astype(np.float64)
        mean = delta / 10.0
        m = 0.9 * m + 0.1 * mean
        v = 0.99 * v + 0.01 * mean**2
        theta = (theta + 0.01 * m / (np.sqrt(v) + 1e-3)).astype(np.float32)
    np.testing.assert_allclose(w, theta, rtol=1e-4, atol=1e-6)
    assert all(r["replies"] == 10 for r in records)


def test_adaptive_clipping_tracks_the_quantile():
    """Andrew et al. 2021: C grows while every update is clipped, shrinks while none is."""
    adaptive = AdaptiveClipping(0.5, 0.2, 0.5)
    _, big, *_ = simulate(n=10, m=5, rounds=12, clip=1e-4, adaptive=adaptive)
    norms = [r["next_clip_norm"] for r in big]
    assert all(b > a for a, b in zip([1e-4, *norms], norms, strict=False))
    assert norms[-1] > 1e-4 * math.exp(0.2 * 0.5 * 11)
    _, small, *_ = simulate(n=10, m=5, rounds=12, clip=1e3, adaptive=adaptive)
    norms = [r["next_clip_norm"] for r in small]
    assert all(b < a for a, b in zip([1e3, *norms], norms, strict=False))


def test_adaptive_noise_split():
    # z_update^-2 + (2 sigma_b)^-2 = z^-2 (Andrew et al. 2021, Theorem 1)
    z, sb = 1.0, 2.0
    zd = update_noise_multiplier(z, sb)
    assert zd**-2 + (2 * sb) ** -2 == pytest.approx(z**-2)
    assert zd > z
    with pytest.raises(DpauditError, match="2·σ_b"):
        update_noise_multiplier(3.0, 1.0)


def test_fedprox_mu_reaches_clients():
    strategy = DpFedAvg(mechanism=ServerMechanism(1.0, 0.0, None, 4.0), seed=0, proximal_mu=0.1)

    class Spy(QuadraticClients):
        def train(self, client, server_round, arrays, config):
            self.mus = getattr(self, "mus", []) + [config["proximal-mu"]]
            return super().train(client, server_round, arrays, config)

    from flwr.app import Array, ArrayRecord

    spy = Spy(4)
    grid = LocalGrid(make_client_app(spy, n_real=4), 4)
    strategy.start(
        grid=grid, initial_arrays=ArrayRecord({"w": Array(np.zeros(D, np.float32))}), num_rounds=1
    )
    assert spy.mus == [0.1] * 4


# ----------------------------------------------------------------------------- audit
def audit(w, canaries, *, sigma, m, n, rounds, delta=1e-6):
    scores = canary_scores(canaries, {"w": np.zeros(D, np.float32)}, {"w": w})
    lower = gradient_canary_audit(scores, np.array(canaries.included), delta=delta, confidence=0.95)
    from dpaudit.trainers.privacy import PrivacyPlan

    plan = PrivacyPlan(
        sigma > 0,
        n,
        m,
        m / n,
        rounds,
        m / n * rounds,
        sigma,
        1.0,
        delta,
        "config",
        "pld",
        "config",
        None,
        True,
        "client",
    )
    return judge(lower, make_ledger(plan, rounds).epsilons, "pld")


def test_canary_directions_are_unit_and_seeded():
    shapes = {"a": (30, 20), "b": (400,)}
    u = canary_direction(3, shapes, seed=1)
    assert {k: v.shape for k, v in u.items()} == shapes
    assert math.sqrt(sum(float(np.sum(v * v)) for v in u.values())) == pytest.approx(1.0)
    np.testing.assert_array_equal(u["a"], canary_direction(3, shapes, seed=1)["a"])
    assert abs(float(np.sum(u["b"] * canary_direction(4, shapes, seed=1)["b"]))) < 0.2


N_REAL, M_ROUND, ROUNDS, N_CANARY = 20, 10, 20, 200


def _sigma_for_epsilon_one() -> float:
    from dpaudit.accounting import calibrate_noise

    return float(
        calibrate_noise(
            target_epsilon=1.0,
            delta=1e-6,
            sampling_rate=M_ROUND / N_REAL,
            steps=ROUNDS,
            accountant="pld",
        )
    )


SIGMA_EPS1 = _sigma_for_epsilon_one()


def test_non_private_federation_is_detected():
    canaries = UpdateCanaries.draw(N_CANARY, seed=5, norm=1.0)
    w, *_ = simulate(n=N_REAL, m=M_ROUND, rounds=ROUNDS, clip=None, canaries=canaries, seed=5)
    verdict = audit(w, canaries, sigma=0.0, m=M_ROUND, n=N_REAL, rounds=ROUNDS)
    assert verdict.verdict == "not-private"
    assert verdict.lower.epsilon > 1.5, verdict.lower


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_fedavg_at_small_epsilon_is_not_a_violation(seed):
    sigma = SIGMA_EPS1
    canaries = UpdateCanaries.draw(N_CANARY, seed=seed, norm=1.0)
    w, *_ = simulate(
        n=N_REAL, m=M_ROUND, rounds=ROUNDS, sigma=sigma, clip=1.0, canaries=canaries, seed=seed
    )
    verdict = audit(w, canaries, sigma=sigma, m=M_ROUND, n=N_REAL, rounds=ROUNDS)
    assert verdict.claimed_epsilon == pytest.approx(1.0, abs=0.05)
    assert verdict.verdict in (CONSISTENT, INCONCLUSIVE) and verdict.verdict != VIOLATION


def test_noise_silently_removed_is_a_violation():
    sigma = SIGMA_EPS1
    canaries = UpdateCanaries.draw(N_CANARY, seed=0, norm=1.0)
    w, records, *_ = simulate(
        n=N_REAL,
        m=M_ROUND,
        rounds=ROUNDS,
        sigma=sigma,
        clip=1.0,
        canaries=canaries,
        hooks=NoNoise(),
    )
    assert all(r["noise_std"] == 0.0 for r in records)
    verdict = audit(w, canaries, sigma=sigma, m=M_ROUND, n=N_REAL, rounds=ROUNDS)
    assert verdict.verdict == VIOLATION, (verdict.lower.epsilon, verdict.claimed_epsilon)


# ------------------------------------------------------------------- the language model
@pytest.fixture(scope="module")
def corpus():
    from _fl_corpus import fl_corpus

    return fl_corpus()


def test_lora_federation_sends_only_adapter_bytes(corpus, tmp_path):
    from dpaudit.datasets.federated import partition_by_user
    from dpaudit.trainers.federated.run import train_federated
    from dpaudit.trainers.models import build_model

    train, held, tok = corpus
    partition = partition_by_user(train)
    assert partition.n_clients == 10
    config = TrainConfig(mode="lora", lora_rank=2, device="cpu", noise_multiplier=1.0)
    fed = FederatedConfig(
        enabled=True, clients_per_round=3, rounds=2, canary_clients=20, clip_norm=0.5
    )

    def federate(fed: FederatedConfig, **kwargs):
        return train_federated(
            train, partition=partition, train=config, federated=fed, tokenizer=tok,
            out_dir=tmp_path / "fl", eval_records=held, seed=0, max_length=24, dp=True,
            progress=False, **kwargs,
        )  # fmt: skip

    result = federate(fed)
    built = build_model(config, tok, seed=0, max_length=24)
    adapter = {n: p for n, p in built.model.named_parameters() if p.requires_grad}
    assert adapter and all("lora_" in n for n in adapter)
    payload = sum(p.numel() * 4 for p in adapter.values())
    rounds = [
        json.loads(line) for line in (tmp_path / "fl" / "rounds.jsonl").read_text().splitlines()
    ]
    assert len(rounds) == 2 and result.ledger.unit == "client" and result.steps == 2
    for r in rounds:
        assert r["sampled"] >= 0 and r["seconds"] > 0  # each round's wall time
        if r["sampled"]:
            per_message = r["bytes_down"] / r["sampled"]
            assert payload <= per_message < payload * 1.02 + 2048, (per_message, payload)
            assert r["bytes_up"] / r["sampled"] < payload * 1.02 + 2048
    full = sum(p.numel() * 4 for p in built.model.parameters())
    assert payload * 20 < full  # only the adapter travelled
    privacy = json.loads((tmp_path / "fl" / "privacy.json").read_text())
    assert privacy["unit"] == "client" and privacy["n_examples"] == 10
    metrics = json.loads((tmp_path / "fl" / "metrics.json").read_text())
    assert metrics["seconds_per_step"] == pytest.approx(sum(r["seconds"] for r in rounds) / 2)
    assert privacy["sample_rate"] == pytest.approx(0.3) and privacy["steps"] == 2
    canary = json.loads((tmp_path / "fl" / "canary_clients.json").read_text())
    assert canary["dimension"] == payload // 4 and len(canary["scores"]) == 20
    # resume returns the finished federation; a different recipe is refused
    again = federate(fed, resume=True)
    assert again.ledger == result.ledger
    with pytest.raises(DpauditError):
        federate(dataclasses.replace(fed, rounds=3), resume=True)


# ------------------------------------------------------------------------ local DP-SGD
def test_local_dp_ledger_is_the_most_exposed_client(invoke):
    from dpaudit.accounting import compute_epsilons
    from dpaudit.trainers.federated.privacy import plan_local_privacy

    train = TrainConfig(delta=1e-5)
    fed = FederatedConfig(local_dp=True, rounds=10, local_batch_size=8, local_target_epsilon=3.0)
    sizes = [2, 5, 8, 16, 16, 40]
    local = plan_local_privacy(train, fed, sizes, n_records=sum(sizes))
    every = []
    for n in sorted(set(sizes)):
        p = local.client_plan(n)
        assert p.sample_rate == min(1.0, 8 / n) and p.noise_multiplier == local.noise_multiplier
        eps, _ = compute_epsilons(
            sampling_rate=p.sample_rate,
            noise_multiplier=local.noise_multiplier,
            steps=10 * p.steps,
            delta=1e-5,
            accountants=("pld",),
        )
        every.append(eps["pld"])
    worst = make_ledger(local.worst, local.worst.steps)
    assert worst.unit == "example"
    assert worst.epsilons["pld"] == pytest.approx(max(every), rel=1e-9)
    assert 2.9 < max(every) <= 3.0 + 1e-6  # calibrated: the worst client is at the target
    out = invoke(
        "accountant", "-q", repr(local.worst.sample_rate), "-s", repr(local.noise_multiplier),
        "-t", str(local.worst.steps), "-d", "1e-5", "--json",
    )  # fmt: skip
    assert json.loads(out.output)["epsilon"]["pld"] == worst.epsilons["pld"]


def test_local_dp_federation_writes_both_ledgers_and_is_reproducible(corpus, tmp_path):
    from dpaudit.datasets.federated import partition_by_user
    from dpaudit.trainers.federated.run import train_federated

    train, held, tok = corpus
    partition = partition_by_user(train)
    config = TrainConfig(mode="lora", lora_rank=2, device="cpu", noise_multiplier=1.0)
    fed = FederatedConfig(
        enabled=True, clients_per_round=3, rounds=2, canary_clients=10, clip_norm=0.5,
        local_dp=True, local_noise_multiplier=1.5, local_batch_size=4,
    )  # fmt: skip
    outs = []
    for k in range(2):
        train_federated(
            train, partition=partition, train=config, federated=fed, tokenizer=tok,
            out_dir=tmp_path / f"fl{k}", eval_records=held, seed=0, max_length=24, dp=True,
            progress=False,
        )  # fmt: skip
        outs.append(tmp_path / f"fl{k}")
    client = json.loads((outs[0] / "privacy.json").read_text())
    example = json.loads((outs[0] / "example_privacy.json").read_text())
    assert client["unit"] == "client" and example["unit"] == "example"
    assert example["noise_multiplier"] == 1.5 and example["max_grad_norm"] == config.max_grad_norm
    # 8 records per client, batches of 4: q = 0.5, 2 steps per round, 2 rounds
    assert example["sample_rate"] == 0.5 and example["steps"] == 4
    a, b = (json.loads((o / "canary_clients.json").read_text())["scores"] for o in outs)
    assert a == b  # seeded lots and noise: the same run twice
    # local DP only: the example-level ledger is the model's privacy.json
    only = train_federated(
        train, partition=partition, train=dataclasses.replace(config, dp=False),
        federated=dataclasses.replace(fed, canary_clients=0), tokenizer=tok,
        out_dir=tmp_path / "local", eval_records=held, seed=0, max_length=24, dp=True,
        progress=False,
    )  # fmt: skip
    assert (
        only.ledger.unit == "example" and not (tmp_path / "local" / "example_privacy.json").exists()
    )
    assert "local DP-SGD, example-level" in only.summary()


def test_local_dp_config_checks(tmp_path):
    from dpaudit.workflows.validate import load_config

    base = ["runs_dir=" + str(tmp_path), "federated.local_dp=true"]
    with pytest.raises(Exception, match="fedprox cannot be combined"):
        load_config("configs/fl-quickstart.toml", sets=[*base, "federated.strategy=fedprox"])
    cfg = load_config(
        "configs/fl-quickstart.toml",
        sets=[
            *base,
            "train.dp=false",
            "federated.canary_clients=0",
            "data.one_run_canaries=50",
            "data.canary_design=unigram",
        ],
    )
    assert cfg.data.one_run_canaries == 50


def test_client_membership_aggregates_record_scores():
    from dpaudit.attacks.client_mia import client_membership
    from dpaudit.attacks.scores import AttackScores

    rng = np.random.default_rng(0)
    joined = {f"c{i}": [f"c{i}-{j}" for j in range(4)] for i in range(30)}
    never = {"c99": ["c99-0", "c99-1"]}
    held = {f"h{i}": [f"h{i}-{j}" for j in range(4)] for i in range(30)}
    ids, scores, member = [], [], []
    for group, shift, is_m in ((joined, 0.5, True), (never, 0.0, True), (held, 0.0, False)):
        for rids in group.values():
            for rid in rids:  # record-level: a weak signal per record
                ids.append(rid)
                scores.append(rng.normal(shift, 1.0))
                member.append(is_m)
    record = AttackScores("loss", {}, tuple(ids), np.array(scores), np.array(member))
    res = client_membership(
        record, joined=joined, never_sampled=never, held_out=held, fprs=(0.1, 0.01), bootstrap=50,
        seed=0,
    )  # fmt: skip
    assert (res.n_member, res.n_nonmember, res.never_sampled) == (30, 31, 1)
    assert res.clients_unscored == 0
    unscored = client_membership(
        record, joined={**joined, "c-x": ["no-such-record"]}, never_sampled=never,
        held_out=held, fprs=(0.1,), bootstrap=0, seed=0,
    )  # fmt: skip
    assert unscored.clients_unscored == 1 and unscored.n_member == 30
    assert res.records_scored == len(ids)
    # averaging 4 records doubles the separation: client AUC above the record AUC
    from dpaudit.attacks.metrics import auc

    assert res.metrics.auc > auc(np.array(scores), np.array(member)) + 0.05
    d = res.to_dict()
    assert d["attack"] == "loss" and d["auc_ci"][0] <= d["auc"] <= d["auc_ci"][1]
    # 31 non-member clients resolve an FPR of 0.1 (3.1 false positives) but not 0.01
    assert d["tpr_at_fpr"]["0.1"]["resolvable"] and d["tpr_at_fpr"]["0.1"]["ci"] is not None
    assert d["tpr_at_fpr"]["0.01"] == {**d["tpr_at_fpr"]["0.01"], "ci": None, "resolvable": False}
    with pytest.raises(DpauditError, match="both are needed"):
        client_membership(
            record, joined={}, never_sampled=never, held_out=held, fprs=(0.1,), bootstrap=0, seed=0
        )


# -------------------------------------------------------------------- user-level DP-SGD
def test_user_level_federation_is_poisson_users_with_one_gradient_each():
    from dpaudit.trainers.federated.privacy import user_level_federation

    train = TrainConfig(batch_size=16, physical_batch_size=8, epochs=3.0, learning_rate=2e-3)
    fed = user_level_federation(train, 80)
    assert fed.clients_per_round == 16 and fed.rounds == 15  # q = 0.2, T = round(3 / 0.2)
    assert fed.local_update == "gradient" and fed.local_batch_size == 8
    assert fed.strategy == "fedadam" and fed.fedadam_bias_correction
    assert fed.server_learning_rate == 2e-3 and fed.clip_norm == train.max_grad_norm
    plan = plan_client_privacy(train, fed, 80, dp=True, unit="user")
    assert (plan.sample_rate, plan.steps, plan.unit) == (0.2, 15, "user")
    with pytest.raises(DpauditError, match="at least 2 users"):
        user_level_federation(train, 1)


def test_fedsgd_client_returns_minus_the_mean_gradient(corpus):
    import torch

    from dpaudit.trainers.data import collate, encode_records
    from dpaudit.trainers.federated.client import TorchClientTrainer
    from dpaudit.trainers.loop import example_losses
    from dpaudit.trainers.models import build_model

    train, _, tok = corpus
    config = TrainConfig(mode="lora", lora_rank=2, device="cpu")
    built = build_model(config, tok, seed=0, max_length=24)
    examples = encode_records(train, tok, max_length=24, task="causal_lm")
    trainer = TorchClientTrainer(
        model=built.model, task="causal_lm", input_names=built.input_names, examples=examples,
        client_indices=[[0, 1, 2], list(range(3, 20))], config=config, local_epochs=1.0,
        local_batch_size=4, device=torch.device("cpu"), seed=0, pad_id=tok.pad_token_id,
        gradient=True, built=built,
    )  # fmt: skip
    start = trainer.arrays()
    new, metrics = trainer.train(0, 1, start, {})
    trainer.load(start)
    inputs, targets = collate(
        examples, [0, 1, 2], pad_id=tok.pad_token_id, task="causal_lm",
        input_names=built.input_names,
    )  # fmt: skip
    built.model.train()
    loss = example_losses(built.model(**inputs).logits, targets, "causal_lm").mean()
    grads = torch.autograd.grad(loss, list(trainer.params.values()))
    for (name, _), g in zip(trainer.params.items(), grads, strict=True):
        np.testing.assert_allclose(new[name], start[name] - g.numpy(), rtol=1e-5, atol=1e-7)
    assert metrics["train-loss"] == pytest.approx(float(loss), rel=1e-6)
    # a user with more records than the batch contributes a seeded subset of local_batch_size
    a, _ = trainer.train(1, 1, start, {})
    b, _ = trainer.train(1, 1, start, {})
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_audit_canaries_become_clients_of_their_own():
    from dpaudit.datasets.federated import partition_training_set
    from dpaudit.datasets.records import Record

    recs = [Record(f"r{i}", f"t {i}", meta={"user": f"u{i % 5}"}) for i in range(20)]
    recs += [Record("canary-or-007#0", "c", meta={"canary_id": "canary-or-007"})]
    recs += [
        Record(f"canary-ss-001#{k}", "s", meta={"canary_id": "canary-ss-001"}) for k in range(3)
    ]
    part = partition_training_set(
        recs, scheme="user", n_clients=0, alpha=1.0, seed=0, audit_canaries_alone=True
    )
    ids = [c.client_id for c in part.clients]
    assert "client-or-canary-or-007" in ids and len(ids) == 6
    lone = part.clients[ids.index("client-or-canary-or-007")]
    assert lone.record_ids == ("canary-or-007#0",)
    holders = [c for c in part.clients if any(r.startswith("canary-ss") for r in c.record_ids)]
    assert len(holders) == 1 and holders[0].key is not None  # Secret-Sharer copies: one real user


def test_interrupted_federation_resumes_to_the_same_result(corpus, tmp_path, monkeypatch):
    import dpaudit.trainers.federated.run as fl_run
    from dpaudit.datasets.federated import partition_by_user

    train, held, tok = corpus
    partition = partition_by_user(train)
    config = TrainConfig(mode="lora", lora_rank=2, device="cpu", noise_multiplier=1.0)
    fed = FederatedConfig(
        enabled=True, clients_per_round=4, rounds=3, canary_clients=10, clip_norm=0.5,
        clipping="adaptive", clipped_count_stddev=1.0, strategy="fedadam",
        server_learning_rate=0.01,
    )  # fmt: skip
    kwargs = dict(
        partition=partition, train=config, federated=fed, tokenizer=tok, eval_records=held,
        seed=0, max_length=24, dp=True, progress=False,
    )  # fmt: skip
    fl_run.train_federated(train, out_dir=tmp_path / "straight", **kwargs)

    save = fl_run._save_checkpoint

    def crash_after_round_2(ckpt_dir, recipe, done, *args):
        save(ckpt_dir, recipe, done, *args)
        if done == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(fl_run, "_save_checkpoint", crash_after_round_2)
    with pytest.raises(KeyboardInterrupt):
        fl_run.train_federated(train, out_dir=tmp_path / "resumed", **kwargs)
    assert (
        json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["round"] == 2
    )
    with pytest.raises(DpauditError, match="unfinished federation"):
        fl_run.train_federated(train, out_dir=tmp_path / "resumed", **kwargs)
    monkeypatch.setattr(fl_run, "_save_checkpoint", save)
    fl_run.train_federated(train, out_dir=tmp_path / "resumed", resume=True, **kwargs)
    assert not (tmp_path / "resumed" / "checkpoint").exists()
    for name in ("canary_clients.json", "privacy.json"):
        assert (tmp_path / "resumed" / name).read_text() == (
            tmp_path / "straight" / name
        ).read_text()

    def rounds(run: str) -> list[dict]:  # every field but the round's wall time
        lines = (tmp_path / run / "rounds.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]

    assert rounds("resumed") == rounds("straight") and len(rounds("straight")) == 3
    a = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == a
