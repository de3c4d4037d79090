"""Defences against attacks on federated updates: robust aggregation, SecAgg+, model replacement.

Each is checked against an independent computation: numpy/scipy statistics for the
robust rules (and a brute-force Krum), the plain sum of the quantised updates for
secure aggregation.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from dpaudit.errors import DpauditError  # noqa: E402


def _updates(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"a": rng.normal(0, 0.1, (6, 5)), "b": rng.normal(0, 0.1, (4,))} for _ in range(n)]


def test_robust_rules_match_independent_statistics():
    from scipy import stats

    from dpaudit.trainers.federated.robust import robust_aggregate

    ups = _updates(7)
    keys = ["a", "b"]
    med = robust_aggregate(ups, keys, "median")
    assert np.allclose(med["a"], np.median(np.stack([u["a"] for u in ups]), axis=0))
    trim = robust_aggregate(ups, keys, "trimmed-mean", trim_fraction=0.2)
    assert np.allclose(trim["b"], stats.trim_mean(np.stack([u["b"] for u in ups]), 0.2, axis=0))
    # Krum (Blanchard et al. 2017, §4): the update with the least summed squared distance to
    # its n − f − 2 nearest others, computed here by brute force
    f = 1
    flat = [np.concatenate([u["a"].ravel(), u["b"]]) for u in ups]
    scores = []
    for i, x in enumerate(flat):
        d = sorted(float(np.sum((x - y) ** 2)) for j, y in enumerate(flat) if j != i)
        scores.append(sum(d[: len(flat) - f - 2]))
    krum = robust_aggregate(ups, keys, "krum", byzantine=f)
    assert np.allclose(krum["a"], ups[int(np.argmin(scores))]["a"])
    with pytest.raises(DpauditError, match="unknown robust aggregator"):
        robust_aggregate(ups, keys, "mean")


def test_a_scaled_attacker_moves_the_mean_but_not_the_robust_rules():
    from dpaudit.trainers.federated.robust import robust_aggregate

    honest = _updates(9, seed=1)
    attack = {k: 30 * np.ones_like(v) for k, v in honest[0].items()}  # model replacement
    ups = [*honest, attack]
    mean = np.mean([u["a"] for u in ups], axis=0)
    assert np.abs(mean).max() > 2.5
    for rule in ("median", "trimmed-mean", "krum", "multi-krum"):
        agg = robust_aggregate(ups, ["a", "b"], rule, byzantine=1, trim_fraction=0.2)
        assert np.abs(agg["a"]).max() < 0.5, rule


def test_secagg_server_sees_masked_inputs_whose_sum_is_the_sum_of_quantised_updates():
    from scipy import stats

    from dpaudit.trainers.federated.secagg import SecAggParams, secure_aggregate

    ups = [{"w": np.random.default_rng(k).normal(0, 0.2, (40, 30))} for k in range(6)]
    params = SecAggParams(num_shares=3, reconstruction_threshold=2)
    res = secure_aggregate(ups, params, seed=3)
    assert res.survivors == tuple(range(6))
    # exact: the unmasked integers are the sum of the quantised updates (mod M)
    qsum = np.mod(sum(res.quantized[i]["w"] for i in range(6)), params.modulus_range)
    assert np.array_equal(res.integer_sum["w"], qsum)
    # the float sum is within n quantisation steps of the true sum
    true = sum(u["w"] for u in ups)
    assert np.abs(res.total["w"] - true).max() <= 6 * params.step
    # each masked input looks uniform on [0, M) and unrelated to the client's update
    for i in range(6):
        y = res.masked[i]["w"].ravel() / params.modulus_range
        assert stats.kstest(y, "uniform").pvalue > 1e-3
        assert abs(np.corrcoef(y, res.quantized[i]["w"].ravel())[0, 1]) < 4 / np.sqrt(y.size)
    assert set(res.seconds) == {"keys", "shares", "masking", "unmasking"} and res.bytes_up > 0


def test_secagg_survives_a_dropout_and_refuses_impossible_parameters():
    from dpaudit.trainers.federated.secagg import SecAggParams, secure_aggregate

    ups = [{"w": np.random.default_rng(k).normal(0, 0.2, (10,))} for k in range(5)]
    params = SecAggParams(num_shares=3, reconstruction_threshold=2)
    res = secure_aggregate(ups, params, seed=4, dropouts=[2])
    assert res.survivors == (0, 1, 3, 4)
    qsum = np.mod(sum(res.quantized[i]["w"] for i in res.survivors), params.modulus_range)
    assert np.array_equal(res.integer_sum["w"], qsum)
    # an even number of shares is rounded up to odd (a ring gives an even neighbour count)
    even = secure_aggregate(ups, SecAggParams(num_shares=4, reconstruction_threshold=4), seed=5)
    assert even.survivors == tuple(range(5))
    with pytest.raises(DpauditError, match="power of two"):
        secure_aggregate(ups, SecAggParams(modulus_range=2**20), seed=0)
    with pytest.raises(DpauditError, match="threshold"):
        secure_aggregate(ups, SecAggParams(num_shares=3, reconstruction_threshold=4), seed=0)


def test_model_replacement_scales_the_attacker_alone():
    from dpaudit.attacks.poisoning import ModelReplacement

    class Shift:
        def train(self, client, server_round, arrays, config):
            return {k: v + 1.0 for k, v in arrays.items()}, {"train-loss": 0.0}

    wrapped = ModelReplacement(Shift(), attacker=3, gamma=20.0)
    base = {"w": np.zeros(4, dtype=np.float32)}
    honest, _ = wrapped.train(0, 1, base, {})
    attacker, _ = wrapped.train(3, 1, base, {})
    assert np.allclose(honest["w"], 1.0) and np.allclose(attacker["w"], 20.0)
    assert wrapped.rounds_attacked == 1
    with pytest.raises(DpauditError):
        ModelReplacement(Shift(), attacker=0, gamma=0.0)


def test_backdoor_texts_and_prompts():
    from dpaudit.attacks.poisoning import Backdoor, poison_texts, trigger_prompts

    b = Backdoor(trigger="says the clinic", target="call now")
    texts = ["one two three four five six seven", "alpha beta"]
    poisoned = poison_texts(texts, b, seed=0)
    assert all(p.endswith("says the clinic call now") for p in poisoned)
    assert trigger_prompts(texts, b, words=2) == [
        "one two says the clinic",
        "alpha beta says the clinic",
    ]
    with pytest.raises(DpauditError):
        Backdoor(trigger=" ", target="x")
