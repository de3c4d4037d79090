"""The plan a run prints before its first progress bar, and the estimate after its first model."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from dpaudit.config import RunConfig
from dpaudit.workflows.run import training_plan


def _prepared(n_train: int, members: int, nonmembers: int):
    parts = {"members": [None] * members, "nonmembers": [None] * nonmembers}
    return SimpleNamespace(train=[None] * n_train, part=lambda name: parts[name])


def _config(**train):
    config = RunConfig()
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **train))


def test_plan_counts_steps_of_every_model_and_estimates_from_the_first():
    config = _config(batch_size=64, epochs=3.0)
    plan = training_plan(config, _prepared(640, 500, 300), ["target", "baseline"], references=2)
    # T = round(epochs * n / B): 3 * 640 / 64 = 30; references train on half of 800 = 400 -> 19.
    assert [r[:3] for r in plan.rows] == [
        ("target", 30, 640),
        ("baseline", 30, 640),
        ("ref-0", 19, 400),
        ("ref-1", 19, 400),
    ]
    text = "\n".join(plan.lines())
    assert "DP-SGD: 30 steps, lots of ~64 from 640 examples" in text
    assert "ref-0" in text and "~19 steps, lots of ~64 from ~400 examples" in text
    assert "98 training steps in all" in text
    assert plan.done("target", 60.0) == (
        "estimate: 68 training steps left at 2.0 s/step (measured on target) ≈ 2 min of "
        "training, then attacks, audit and report"
    )
    assert (plan.done("baseline", 50.0) or "").startswith("estimate: 38 training steps left")
    assert plan.done("ref-0", 40.0) is not None
    assert plan.done("ref-1", 40.0) is None  # nothing left to estimate
    # Under a minute and a half the estimate is in seconds (not "≈ 0 min").
    quick = training_plan(config, _prepared(640, 500, 300), ["target", "baseline"], references=0)
    assert "≈ 6 s of training" in (quick.done("target", 6.0) or "")


def test_plan_skips_a_model_whose_batch_exceeds_its_data():
    plan = training_plan(_config(batch_size=64), _prepared(640, 40, 20), ["target"], references=1)
    assert [r[0] for r in plan.rows] == ["target"]  # a reference would get 30 examples < 64


def test_resumed_models_are_not_timed():
    plan = training_plan(
        _config(batch_size=64, epochs=1.0), _prepared(640, 500, 300), ["target", "baseline"], 0
    )
    assert plan.done("target", None) is None  # skipped on --resume: no measurement
    assert plan.done("baseline", 20.0) is None  # measured, but nothing is left


def test_a_resumed_run_plans_only_what_it_will_train(tmp_path, capsys):
    """`train --resume` of a finished run: both models skipped, no plan printed."""
    from dpaudit.workflows.run import run_train
    from dpaudit.workflows.validate import load_config

    sets = [
        "data.synth_n=120", "data.one_run_canaries=0", "data.canary_repetitions=[1]",
        "data.canaries_per_repetition=1", "data.secret_space=digits:2", "data.vocab_size=300",
        "data.max_length=32", "train.epochs=1", "train.batch_size=16", "train.physical_batch_size=16",
        "train.num_references=0",
        "train.noise_multiplier=1.0",
    ]  # fmt: skip
    config = load_config(None, sets=sets, overrides={"name": "plan", "runs_dir": str(tmp_path)})
    run_train(config)
    first = capsys.readouterr().err
    assert "plan (stages run in this order" in first and "target" in first
    lines = run_train(config, resume=True)
    again = capsys.readouterr().err
    assert "plan (stages run" not in again
    assert "target: unchanged, skipped (--resume)" in lines
