"""Registries: the generic Registry, and plug-ins registered from a user's module.

A plug-in accountant and a plug-in attack defined here are registered with one
call each and then work end to end: accepted by the config, listed in the
ledger of a real (tiny) training run, run by ``dpaudit run``, labelled in
``report.json`` and read by ``dpaudit gate``. Bad names and parameters are
refused when the config loads, before anything is written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from dpaudit.accounting import (
    ACCOUNTANTS,
    RdpAccountant,
    compute_epsilons,
    is_rigorous,
    register_accountant,
)
from dpaudit.attacks.mia import LossAttack, mean_logprob
from dpaudit.attacks.registry import ATTACKS, plan_attacks, register_attack
from dpaudit.errors import DpauditError
from dpaudit.registry import Registry

# -- the generic registry ------------------------------------------------------------------------


def test_register_get_names_and_iteration_keep_registration_order():
    r: Registry[int] = Registry("colour")
    assert r.register("red", 1) == 1

    @r.register("green")
    def green() -> int:
        return 2

    assert r.get("red") == 1 and r["green"] is green and r.get("green")() == 2
    assert r.names() == ("red", "green") and list(r) == ["red", "green"] and len(r) == 2
    assert r.items() == (("red", 1), ("green", green))
    assert "red" in r and "blue" not in r and 3 not in r
    assert r.register("red", 1) == 1  # the same object again: a no-op
    assert r.unregister("red") == 1 and r.names() == ("green",)


def test_unknown_names_suggest_the_closest_and_list_the_choices():
    r: Registry[int] = Registry("colour")
    r.register("red", 1)
    r.register("green", 2)
    with pytest.raises(DpauditError) as err:
        r.get("gren")
    assert (
        str(err.value) == "unknown colour 'gren' (did you mean 'green'?); choose from: green, red"
    )
    with pytest.raises(DpauditError, match="unknown colour 'zzz'; choose from"):
        r["zzz"]
    with pytest.raises(DpauditError, match="unknown colour"):
        r.unregister("blue")


def test_duplicate_and_malformed_names_are_refused():
    r: Registry[int] = Registry("colour")
    r.register("red", 1)
    with pytest.raises(DpauditError, match="colour 'red' is already registered.*replace=True"):
        r.register("red", 2)
    assert r.get("red") == 1
    assert r.register("red", 2, replace=True) == 2 and r.get("red") == 2
    for bad in ("", "a b", "../x", "-x", "x/y"):
        with pytest.raises(DpauditError, match="cannot register colour"):
            r.register(bad, 3)


def test_builtin_declarations():
    assert ACCOUNTANTS.names() == ("rdp", "prv", "gdp", "pld", "edgeworth")
    assert [n for n in ACCOUNTANTS if is_rigorous(n)] == ["rdp", "prv", "pld"]
    assert all(ACCOUNTANTS[n].description for n in ACCOUNTANTS)
    lm = [n for n in ATTACKS if ATTACKS[n].task == "causal_lm"]
    assert lm == ["loss", "zlib", "lowercase", "mink", "minkpp", "reference", "lira", "rmia"]
    assert {n for n in ATTACKS if ATTACKS[n].needs_references} == {
        "reference",
        "lira",
        "clf_lira",
        "rmia",
        "clf_rmia",
    }
    assert {n for n in ATTACKS if ATTACKS[n].needs_ref_membership} == {"lira", "clf_lira"}
    assert {n for n in ATTACKS if ATTACKS[n].needs_population} == {"rmia", "clf_rmia"}


def test_plan_attacks_skips_what_cannot_run_with_the_reason():
    names = ["loss", "clf_loss", "reference", "lira", "rmia"]
    runnable, skipped = plan_attacks(
        names, task="causal_lm", has_references=False, has_ref_membership=False, has_population=True
    )
    assert runnable == ["loss"]
    assert skipped["clf_loss"].startswith("skipped: an attack on a classifier")
    assert all(skipped[n].startswith("skipped: no reference models") for n in ("reference", "lira"))
    runnable, skipped = plan_attacks(
        names, task="causal_lm", has_references=True, has_ref_membership=False, has_population=False
    )
    assert runnable == ["loss", "reference"]
    assert "trained on which example" in skipped["lira"] and "population" in skipped["rmia"]
    runnable, _ = plan_attacks(
        names, task="causal_lm", has_references=True, has_ref_membership=True, has_population=True
    )
    assert runnable == ["loss", "reference", "lira", "rmia"]
    with pytest.raises(DpauditError, match="did you mean 'lira'"):
        plan_attacks(
            ["lirra"],
            task="causal_lm",
            has_references=True,
            has_ref_membership=True,
            has_population=True,
        )


def test_register_attack_checks_the_declarations():
    @dataclass(frozen=True)
    class NoTask(LossAttack):
        name: ClassVar[str] = "no_task"
        task: ClassVar[str] = "vision"

    class NotADataclass:
        name = "plain"
        task = "causal_lm"

        def score(self) -> None: ...

    with pytest.raises(DpauditError, match="task as one of causal_lm, classification"):
        register_attack(NoTask)
    with pytest.raises(DpauditError, match="must be a dataclass"):
        register_attack(NotADataclass)
    with pytest.raises(DpauditError, match="attack 'loss' is already registered"):
        register_attack(_renamed_loss())
    assert "no_task" not in ATTACKS and "plain" not in ATTACKS


def _renamed_loss() -> type:
    @dataclass(frozen=True)
    class OtherLoss(LossAttack):
        name: ClassVar[str] = "loss"

    return OtherLoss


# -- plug-ins: one call each, then they work everywhere -----------------------------------------


class FineRdp(RdpAccountant):
    """A user's accountant: RDP on a coarser grid of orders (so ε ≥ rdp's)."""

    description = "RDP on integer orders 2..64 only (a test plug-in)"

    def __init__(self, **kw: object) -> None:
        super().__init__(orders=range(2, 65), **kw)


@dataclass(frozen=True)
class ScaledLoss(LossAttack):
    """A user's attack: LOSS times a positive factor (same ranking, scaled scores)."""

    name: ClassVar[str] = "negloss2"
    task: ClassVar[str] = "causal_lm"
    scale: float = field(default=1.0, metadata={"help": "Factor applied to the LOSS score, > 0"})

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not self.scale > 0:
            raise DpauditError(f"attack 'negloss2': scale must be > 0, got {self.scale!r}")

    def _statistic(self, logprobs: np.ndarray, text: str) -> float:
        return self.scale * mean_logprob(logprobs)


@pytest.fixture
def plugins():
    register_accountant("rdp_fine", FineRdp)
    register_attack(ScaledLoss)
    yield
    ACCOUNTANTS.unregister("rdp_fine")
    ATTACKS.unregister("negloss2")


def test_a_registered_accountant_is_computed_and_refuses_a_second_registration(plugins):
    assert FineRdp.name == "rdp_fine" and is_rigorous("rdp_fine")
    eps, errors = compute_epsilons(sampling_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5)
    assert not errors and list(eps)[-1] == "rdp_fine"
    assert eps["rdp"] <= eps["rdp_fine"] < eps["rdp"] * 1.2  # a coarser grid can only be looser

    class Other(RdpAccountant):
        description = "x"

    with pytest.raises(DpauditError, match="accountant 'rdp_fine' is already registered"):
        register_accountant("rdp_fine", Other)


TINY = """
name = "plug"
seed = 0
[data]
path = "data.jsonl"
one_run_canaries = 20
canaries_per_repetition = 0
vocab_size = 300
max_length = 32
[train]
epochs = 1.0
batch_size = 16
physical_batch_size = 16
target_epsilon = 8.0
accountant = "rdp_fine"
baseline = false
num_references = 0
checkpoint_every = 1000
[attack]
bootstrap = 0
attacks = ["negloss2"]
extraction_samples = 1
memorization_prefix_tokens = 4
memorization_suffix_tokens = 4
[attack.params.negloss2]
scale = 2.0
[report]
max_epsilon = 100.0
"""


def _tiny_data(directory: Path) -> None:
    """120 short texts without PII (no canary or PII attack work: the run stays seconds long)."""
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta river stone cloud paper green quiet rapid silver".split()
    lines = [
        json.dumps({"text": f"entry {i}: " + " ".join(rng.choice(words, size=8))})
        for i in range(120)
    ]
    (directory / "data.jsonl").write_text("\n".join(lines) + "\n")


def test_plugins_run_end_to_end_into_ledger_report_and_gate(plugins, tmp_path, invoke, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tiny_data(tmp_path)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    assert invoke("config", "check", str(config)).exit_code == 0

    result = invoke("run", str(config), "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    run = tmp_path / "plug"

    # the ledger lists every accountant registered when it was written, the plug-in included
    ledger = json.loads((run / "target" / "privacy.json").read_text())
    assert set(ledger["epsilons"]) == set(ACCOUNTANTS.names())
    assert ledger["primary_accountant"] == "rdp_fine"
    assert ledger["epsilon"] == ledger["epsilons"]["rdp_fine"] <= 8.0 + 1e-9
    assert ledger["epsilons"]["rdp"] <= ledger["epsilons"]["rdp_fine"]

    # the plug-in attack ran with the parameter from its [attack.params.negloss2] table
    from dpaudit.attacks.scores import AttackScores
    from dpaudit.attacks.stage import load_scoring_model
    from dpaudit.config import load_config
    from dpaudit.datasets.prepare import load_prepared

    scores = AttackScores.load(run / "attacks" / "target" / "negloss2")
    assert scores.attack == "negloss2" and scores.params == {"scale": 2.0}
    prepared = load_prepared(run)
    by_id = {r.id: r for r in prepared.records}
    examples = [by_id[i] for i in scores.example_ids]
    model = load_scoring_model(run / "target", load_config(config), progress=False)
    loss = LossAttack().score(model, examples, is_member=scores.is_member)
    np.testing.assert_allclose(scores.scores, 2.0 * loss.scores, rtol=1e-6)

    # the report labels the plug-in accountant from its declaration and carries the attack
    report = json.loads((run / "report" / "report.json").read_text())
    target = report["models"]["target"]
    assert target["privacy"]["accountant_kind"]["rdp_fine"] == "rigorous"
    assert target["privacy"]["primary_accountant"] == "rdp_fine"
    assert list(target["attacks"]) == ["negloss2"]
    auc = target["attacks"]["negloss2"]["auc"]
    assert 0.0 <= auc <= 1.0 and math.isclose(auc, target["summary"]["max_auc"]["value"])
    assert target["summary"]["max_auc"]["attack"] == "negloss2"
    md = (run / "report" / "report.md").read_text()
    assert "rigorous: rdp, prv, pld, rdp_fine are proven upper bounds" in md

    # the gate reads both
    # (this tiny run's audit has no power — ceiling below the claim, no control — so the gate
    # must be told to accept an inconclusive audit)
    unsure = invoke("gate", str(run), "--max-auc", "1.0", "--max-epsilon", "100")
    assert unsure.exit_code == 1 and "inconclusive" in unsure.output
    passed = invoke(
        "gate", str(run), "--max-auc", "1.0", "--max-epsilon", "100", "--allow-inconclusive"
    )
    assert passed.exit_code == 0, passed.output
    assert f"target MIA AUC {auc:.3f} (negloss2) ≤ 1" in passed.output
    assert "(rdp_fine) ≤ 100" in passed.output
    failed = invoke("gate", str(run), "--max-epsilon", "0.01")
    assert failed.exit_code == 1 and "(rdp_fine) > 0.01" in failed.output


def test_unknown_plugin_parameter_and_bad_value_are_refused_before_any_work(
    plugins, tmp_path, invoke
):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace("scale = 2.0", "scael = 2.0"))
    line = TINY.splitlines().index("scale = 2.0") + 1
    result = invoke("run", str(config), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {config}:{line}: unknown parameter attack.params.negloss2.scael (did you mean 'scale'?); "
        "it takes: scale"
    ]
    config.write_text(TINY)
    result = invoke(
        "run",
        str(config),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        "attack.params.negloss2.scale=-1",
    )
    assert (
        result.exit_code == 2
        and "--set: attack.params.negloss2.scale: attack 'negloss2': scale" in result.output
    )
    assert not (tmp_path / "runs").exists()


# -- validation before any work -------------------------------------------------------------------


def test_config_check_refuses_a_misspelt_attack_fast_and_writes_nothing(
    tmp_path, invoke, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('runs_dir = "runs"\n[attack]\nattacks = ["loss", "lirra"]\n')
    start = time.perf_counter()
    result = invoke("config", "check", str(config))
    assert time.perf_counter() - start < 5.0
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {config}:3: attack.attacks: unknown attack"
    )
    assert "(did you mean 'lira'?)" in lines[0]
    result = invoke("run", str(config))
    assert result.exit_code == 2 and "did you mean 'lira'" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_run_with_a_bad_attack_parameter_creates_no_run_directory(tmp_path, invoke):
    config = tmp_path / "c.toml"
    config.write_text("[attack.params.rmia]\noffline_a = 1.5\n")
    for command in ("run", "train", "train-references", "prepare"):
        result = invoke(command, str(config), "--runs-dir", str(tmp_path / "runs"))
        assert result.exit_code == 2, (command, result.output)
        assert (
            f"{config}:2: attack.params.rmia.offline_a: RMIA offline_a must lie in [0, 1]"
            in result.output
        )
    result = invoke(
        "sweep", str(config), "--runs-dir", str(tmp_path / "runs"), "--set", "train.epochs=1,2"
    )
    assert result.exit_code == 2 and "offline_a" in result.output
    result = invoke("config", "show", str(config))
    assert result.exit_code == 2
    assert not (tmp_path / "runs").exists()


def test_config_fields_lists_registry_values_and_attack_parameters(invoke):
    result = invoke("config", "fields")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "one of: rdp, prv, gdp, pld, edgeworth" in lines["train.accountant"]
    assert "one of: one-run, threshold" in lines["audit.method"]
    assert "one of: html, md, json" in lines["report.formats"]
    for name in (
        "attack.params.lira.online",
        "attack.params.lira.fixed_variance",
        "attack.params.rmia.offline_a",
    ):
        assert name in lines
    assert "Offline RMIA" in lines["attack.params.rmia.offline_a"]
