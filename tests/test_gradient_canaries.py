"""White-box gradient canaries: injection, the noisy-update statistic, and the audit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dpaudit.audit.gradient_canaries import (
    CanarySlots,
    GradientCanaries,
    GradientCanaryHooks,
    gradient_canary_audit,
    gradient_canary_grid,
    gradient_canary_ids,
    plant_gradient_canaries,
    position_canary_slots,
)
from dpaudit.audit.lower_bound import audit_one_run
from dpaudit.audit.variants import CombinedHooks, Correct, MisreportedSamplingRate, NoClipping
from dpaudit.config import TrainConfig
from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import Mechanism, TrainHooks

MAX_LENGTH = 16


# ----------------------------------------------------------------------------- pure parts
def test_ids_and_coins():
    assert gradient_canary_ids(3) == ("gcanary-0000", "gcanary-0001", "gcanary-0002")
    assert gradient_canary_ids(12000)[-1] == "gcanary-11999"
    a, b = plant_gradient_canaries(2000, seed=1), plant_gradient_canaries(2000, seed=1)
    assert a == b and a != plant_gradient_canaries(2000, seed=2)
    assert 900 < sum(a.included) < 1100
    recs = a.records()
    assert [r.id for r in recs] == [c for c, inc in zip(a.ids, a.included, strict=True) if inc]
    with pytest.raises(DpauditError):
        GradientCanaries(("a", "a"), (True, False))


def test_slots_validation_and_grid():
    with pytest.raises(DpauditError, match="distinct"):
        CanarySlots("w", 0, (4, 4), (1, 1))
    with pytest.raises(DpauditError, match="lie in"):
        CanarySlots("w", 0, (4, 4), (16,))
    assert gradient_canary_grid(1000) == ((100, 100), (200, 200), (400, 0))
    assert gradient_canary_grid(4) == ((1, 1), (1, 0))
    with pytest.raises(DpauditError):
        gradient_canary_grid(1)


def test_audit_is_the_one_run_audit_on_the_grid():
    rng = np.random.default_rng(0)
    inc = rng.random(500) < 0.5
    scores = 2.0 * inc + rng.normal(size=500)
    got = gradient_canary_audit(scores, inc, delta=1e-5, confidence=0.95)
    want = audit_one_run(scores, inc, delta=1e-5, confidence=0.95, grid=gradient_canary_grid(500))
    assert got == want and got.method == "one-run" and got.epsilon > 0


class _P:
    """A stand-in parameter with Opacus' per-sample and summed gradients."""

    def __init__(self, shape, batch, rng):
        import torch

        self.shape = shape
        self.grad_sample = torch.as_tensor(rng.normal(size=(batch, *shape)), dtype=torch.float32)
        self.grad = None


def test_injection_replaces_canary_rows_only():
    import torch

    rng = np.random.default_rng(0)
    params = [_P((3, 2), 4, rng), _P((6, 5), 4, rng), _P((7,), 4, rng)]
    before = [p.grad_sample.clone() for p in params]
    slots = CanarySlots("w", 1, (6, 5), (10, 11, 29))
    hooks = GradientCanaryHooks(("c0", "c1", "c2"), slots, scale=2.0)
    hooks.mechanism(Mechanism(0.1, 1.0, 0.5))
    hooks.on_per_sample_grads(step=0, params=params, example_ids=["r0", "c2", "r1", "c0"])
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.grad_sample[[0, 2]], b[[0, 2]])  # real rows untouched
    want = torch.zeros(2, 30)
    want[0, 29] = want[1, 10] = 1.0  # scale·C
    assert torch.equal(params[1].grad_sample[[1, 3]].reshape(2, -1), want)
    assert not params[0].grad_sample[[1, 3]].any() and not params[2].grad_sample[[1, 3]].any()
    assert hooks.appearances.tolist() == [1, 0, 1]
    # the noisy update: B·g along each coordinate accumulates
    params[1].grad = torch.arange(30, dtype=torch.float32).reshape(6, 5) / 4
    hooks.on_noisy_grads(step=0, params=params, expected_batch_size=4.0)
    hooks.on_noisy_grads(step=1, params=params, expected_batch_size=4.0)
    assert hooks.scores().tolist() == [20.0, 22.0, 58.0] and hooks.steps_seen == 2


def test_hook_refuses_wrong_parameter_and_bad_scale():
    rng = np.random.default_rng(0)
    hooks = GradientCanaryHooks(("c0",), CanarySlots("w", 0, (6, 5), (1,)))
    hooks.mechanism(Mechanism(0.1, 1.0, 1.0))
    with pytest.raises(DpauditError, match="should be w"):
        hooks.on_per_sample_grads(step=0, params=[_P((5, 6), 1, rng)], example_ids=["c0"])
    with pytest.raises(DpauditError, match="scale"):
        GradientCanaryHooks(("c0",), CanarySlots("w", 0, (6, 5), (1,)), scale=0.5)
    with pytest.raises(DpauditError, match="reserved"):
        GradientCanaryHooks(("c0", "c1"), CanarySlots("w", 0, (6, 5), (1,)))


def test_default_hooks_observe_nothing():
    assert not TrainHooks().wants_noisy_grads
    slots = CanarySlots("w", 0, (2,), (0,))
    assert GradientCanaryHooks(("c",), slots).wants_noisy_grads
    assert CombinedHooks(Correct(), GradientCanaryHooks(("c",), slots)).wants_noisy_grads
    assert not CombinedHooks(Correct()).wants_noisy_grads


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def setup():
    from dpaudit.datasets.synth import synthesize
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    records = synthesize("clinical", 40, 0)
    tok = train_bpe_tokenizer([r.text for r in records], vocab_size=300)
    return records, tok


def _config(**kw):
    kw.setdefault("delta", 1e-5)
    return TrainConfig(physical_batch_size=min(8, kw["batch_size"]), checkpoint_every=10_000, **kw)


def _slots(config, tok, m):
    from dpaudit.trainers import build_model

    model = build_model(config, tok, seed=0, max_length=MAX_LENGTH).model
    return position_canary_slots(model, max_length=MAX_LENGTH, m=m)


def test_position_slots_are_spare_position_rows(setup):
    from dpaudit.trainers import build_model

    _, tok = setup
    model = build_model(_config(batch_size=8), tok, seed=0, max_length=MAX_LENGTH).model
    slots = position_canary_slots(model, max_length=MAX_LENGTH, m=300)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert slots.param_name == "transformer.wpe.weight" == names[slots.param_index]
    width = slots.param_shape[1]
    assert slots.coordinates[0] == MAX_LENGTH * width and len(set(slots.coordinates)) == 300
    with pytest.raises(DpauditError, match="spare position rows"):
        position_canary_slots(model, max_length=MAX_LENGTH, m=10**6)
    head = build_model(_config(batch_size=8, mode="head"), tok, seed=0, max_length=MAX_LENGTH).model
    with pytest.raises(DpauditError, match="position embedding"):
        position_canary_slots(head, max_length=MAX_LENGTH, m=10)


def _run(setup, tmp_path, *, m, seed=0, variant=None, scale=3.0, **cfg):
    from dpaudit.trainers import train_model

    records, tok = setup
    canaries = plant_gradient_canaries(m, seed=seed)
    train = records + canaries.records()
    config = _config(**cfg)
    hooks = GradientCanaryHooks(canaries.ids, _slots(config, tok, m), scale=scale)
    result = train_model(
        train,
        config=config,
        tokenizer=tok,
        out_dir=tmp_path / f"run{seed}",
        seed=seed,
        max_length=MAX_LENGTH,
        progress=False,
        hooks=CombinedHooks(hooks, variant or Correct()),
    )
    return train, canaries, hooks, result


def _lot_counts(train, canaries, *, rate, steps, seed):
    """Times each canary was in a lot, from the sampler alone (independent of the hooks)."""
    from dpaudit.trainers.data import PoissonSampler

    where = {cid: j for j, cid in enumerate(canaries.ids)}
    counts = np.zeros(len(canaries))
    sampler = PoissonSampler(len(train), rate, seed)
    for t in range(steps):
        for i in sampler.lot(t):
            if train[i].id in where:
                counts[where[train[i].id]] += 1
    return counts


def test_statistic_is_exact_without_noise(setup, tmp_path):
    c = 0.5
    train, canaries, hooks, res = _run(
        setup, tmp_path, m=120, batch_size=12, epochs=1.5, noise_multiplier=0.0, max_grad_norm=c
    )
    assert hooks.steps_seen == res.steps > 0
    counts = _lot_counts(train, canaries, rate=res.ledger.sample_rate, steps=res.steps, seed=0)
    inc = np.asarray(canaries.included)
    assert counts[inc].sum() > 10 and np.array_equal(counts, hooks.appearances)
    np.testing.assert_allclose(hooks.scores(), c * counts, rtol=1e-5, atol=1e-6)
    assert np.all(hooks.scores()[~inc] == 0.0)


def test_noise_on_canary_coordinates_has_the_dp_sgd_scale(setup, tmp_path):
    sigma, c = 1.3, 0.7
    _, canaries, hooks, res = _run(
        setup, tmp_path, m=400, batch_size=20, epochs=1.0, noise_multiplier=sigma, max_grad_norm=c
    )
    t = res.steps
    expected = sigma * c * math.sqrt(t)
    residual = hooks.scores() - c * hooks.appearances  # clipped canary = C exactly (to 1e-6)
    assert abs(residual.mean()) < 4 * expected / math.sqrt(residual.size)
    assert residual.std() == pytest.approx(expected, rel=0.15)
    out = hooks.scores()[~np.asarray(canaries.included)]
    assert out.std() == pytest.approx(expected, rel=0.25)


def test_misreported_rate_samples_faster_than_the_ledger_says(setup, tmp_path):
    train, canaries, hooks, res = _run(
        setup,
        tmp_path,
        m=80,
        batch_size=4,
        epochs=0.5,
        noise_multiplier=0.0,
        variant=MisreportedSamplingRate(5.0),
    )
    q = res.ledger.sample_rate
    assert q == pytest.approx(4 / len(train))
    counts = _lot_counts(train, canaries, rate=5 * q, steps=res.steps, seed=0)
    np.testing.assert_allclose(hooks.scores(), counts, rtol=1e-5, atol=1e-6)


def test_no_clipping_lets_the_crafted_norm_through(setup, tmp_path):
    _, canaries, hooks, res = _run(
        setup,
        tmp_path,
        m=80,
        batch_size=12,
        epochs=1.0,
        scale=50.0,
        noise_multiplier=0.0,
        max_grad_norm=0.5,
        variant=NoClipping(),
    )
    assert res.ledger.max_grad_norm == 0.5  # the ledger states the claim
    np.testing.assert_allclose(hooks.scores(), 25.0 * hooks.appearances, rtol=1e-5)


# One seed in the fast tests; the other two (a DP-SGD run each) with the slow ones.
@pytest.mark.parametrize(
    "seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_bound_never_exceeds_the_ledger_on_correct_dp_sgd(setup, tmp_path, seed):
    from dpaudit.audit.verdict import judge

    _, canaries, hooks, res = _run(
        setup, tmp_path, m=300, seed=seed, batch_size=24, epochs=2.0, target_epsilon=1.0, scale=50.0
    )
    lower = gradient_canary_audit(
        hooks.scores(), canaries.included, delta=res.ledger.delta, confidence=0.95
    )
    eps_ub = res.ledger.epsilons["pld"]
    assert eps_ub == pytest.approx(1.0, abs=0.01)
    assert lower.epsilon <= eps_ub
    assert judge(lower, res.ledger.epsilons, "pld").verdict == "consistent"
