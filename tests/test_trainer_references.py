"""Trainers: reference models and their membership matrix."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil

import numpy as np
import pytest

from dpaudit.config import TrainConfig
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError

WORDS = "alpha beta gamma delta patient doctor visit code number account".split()


@pytest.fixture(scope="module")
def population() -> list[Record]:
    rng = random.Random(1)
    return [Record(f"p{i:02d}", " ".join(rng.choice(WORDS) for _ in range(6))) for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer(population):
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer([r.text for r in population], vocab_size=300)


CFG = TrainConfig(dp=False, batch_size=10, physical_batch_size=10, epochs=1.0, learning_rate=1e-2)


def _refs(population, tokenizer, out, config=CFG, k=4, **kw):
    from dpaudit.trainers import train_references

    return train_references(
        population,
        k=k,
        config=config,
        tokenizer=tokenizer,
        out_dir=out,
        seed=3,
        max_length=32,
        progress=False,
        **kw,
    )


def _check_layout(out, population, membership, k):
    from dpaudit.trainers import load_membership

    assert membership.shape == (len(population), k) and membership.dtype == bool
    assert (membership.sum(axis=1) == k // 2).all()
    saved, ids = load_membership(out)
    assert (saved == membership).all() and ids == [r.id for r in population]
    for j in range(k):
        trained = json.loads((out / f"ref-{j}" / "train_ids.json").read_text())["ids"]
        assert trained == [population[i].id for i in np.flatnonzero(membership[:, j])]
        assert (out / f"ref-{j}" / "model.safetensors").is_file()


def test_references_membership_and_resume(population, tokenizer, tmp_path, capsys):
    out = tmp_path / "refs"
    membership = _refs(population, tokenizer, out)
    _check_layout(out, population, membership, 4)
    # Each model trained on its own half: different weights.
    from safetensors.torch import load_file

    w0, w1 = (load_file(str(out / f"ref-{j}" / "model.safetensors")) for j in (0, 1))
    assert any(not (w0[k] == w1[k]).all() for k in w0)

    # Rerun: complete models are skipped; a removed one is retrained identically.
    stamps = {j: (out / f"ref-{j}" / "complete.json").stat().st_mtime_ns for j in range(4)}
    before = load_file(str(out / "ref-2" / "model.safetensors"))
    shutil.rmtree(out / "ref-2")
    again = _refs(population, tokenizer, out)
    assert (again == membership).all()
    assert all(
        (out / f"ref-{j}" / "complete.json").stat().st_mtime_ns == stamps[j] for j in (0, 1, 3)
    )
    after = load_file(str(out / "ref-2" / "model.safetensors"))
    assert all((before[k] == after[k]).all() for k in before)
    with pytest.raises(DpauditError, match="different recipe"):
        _refs(population, tokenizer, out, config=dataclasses.replace(CFG, learning_rate=0.1))


def test_reference_input_errors(population, tokenizer, tmp_path):
    with pytest.raises(DpauditError, match="duplicate"):
        _refs(population + population[:1], tokenizer, tmp_path / "dup")
    with pytest.raises(DpauditError, match="at least one"):
        _refs(population, tokenizer, tmp_path / "zero", k=0)


@pytest.mark.slow
def test_dp_references_train_as_ray_tasks_on_two_local_workers(population, tokenizer, tmp_path):
    """train.references_backend = ray: one Ray task per reference (here 2 on 2 local CPU
    workers); the files come back to the driver and equal the in-process models'."""
    pytest.importorskip("ray")
    cfg = dataclasses.replace(
        CFG, dp=True, noise_multiplier=1.0, references_backend="ray", reference_cpus=1.0
    )
    out = tmp_path / "ray"
    membership = _refs(population, tokenizer, out, config=cfg, k=2)
    _check_layout(out, population, membership, 2)
    privacy = json.loads((out / "ref-0" / "privacy.json").read_text())
    assert (
        privacy["mechanism"] == "poisson-subsampled-gaussian"
        and privacy["sample_rate"] == 10 / membership[:, 0].sum()
    )
    # Same seeds in process give the same models; a finished set is skipped on a rerun.
    seq = tmp_path / "seq"
    _refs(
        population, tokenizer, seq, config=dataclasses.replace(cfg, references_backend="local"), k=2
    )
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "ref-1" / "model.safetensors")) for d in (out, seq))
    assert all((a[k] == b[k]).all() for k in a)
    stamp = (out / "ref-0" / "complete.json").stat().st_mtime_ns
    _refs(population, tokenizer, out, config=cfg, k=2)
    assert (out / "ref-0" / "complete.json").stat().st_mtime_ns == stamp


TINY_RUN = """
name = "refs"
seed = 0
[data]
synth_n = 120
one_run_canaries = 0
canary_repetitions = [1]
canaries_per_repetition = 1
secret_space = "digits:2"
vocab_size = 400
max_length = 32
[train]
epochs = 1.0
batch_size = 16
physical_batch_size = 16
target_epsilon = 8.0
num_references = 2
baseline_references = {flag}
[attack]
attacks = ["loss", "lira"]
bootstrap = 10
extraction_samples = 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["true", "false"])
def test_baseline_references_use_the_baseline_recipe(tmp_path, flag):
    """LiRA assumes references trained like the attacked model: DP for the target, none for the baseline."""
    from click.testing import CliRunner

    from dpaudit.cli import cli

    (tmp_path / "run.toml").write_text(TINY_RUN.format(flag=flag))
    runner = CliRunner()
    for args in (
        ["train", str(tmp_path / "run.toml"), "--runs-dir", str(tmp_path)],
        ["train-references", str(tmp_path / "run.toml"), "--runs-dir", str(tmp_path)],
        ["attack", "mia", "--run", str(tmp_path / "refs")],
    ):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    run = tmp_path / "refs"
    mechanism = json.loads((run / "references" / "ref-0" / "privacy.json").read_text())["mechanism"]
    assert mechanism != "none"  # the target's DP recipe
    status = json.loads((run / "attacks" / "baseline" / "status.json").read_text())["attacks"]
    if flag == "true":
        ref = json.loads((run / "references-baseline" / "ref-0" / "privacy.json").read_text())
        assert ref["mechanism"] == "none"
        same = np.load(run / "references" / "membership.npy")
        assert (np.load(run / "references-baseline" / "membership.npy") == same).all()
        assert status["lira"] == "done"
    else:
        assert not (run / "references-baseline").exists()
        assert status["lira"].startswith("skipped: no references trained with the baseline")
    assert json.loads((run / "attacks" / "target" / "status.json").read_text())["attacks"] == {
        "loss": "done",
        "lira": "done",
    }
