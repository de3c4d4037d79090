"""One model on several processes: DP-SGD under torchrun (gloo on the CPU).

Every rank draws the run's global Poisson lot and trains its share; the ledger
(q, σ, T, ε) and the lots must be those of one process, and the model the same
up to floating-point summation order (trainers/distributed.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpaudit.errors import DpauditError

TESTS = Path(__file__).parent
TINY = """
name = "{name}"
runs_dir = "{runs}"
seed = 3

[data]
synth_domain = "clinical"
synth_n = 200
member_fraction = 0.4
nonmember_fraction = 0.2
secret_space = "digits:2"
canary_repetitions = [1]
canaries_per_repetition = 1
one_run_canaries = 0
max_length = 32
tokenizer = "train"
vocab_size = 300

[train]
model = "embedded:gpt2-tiny"
dp = true
noise_multiplier = 1.0
max_grad_norm = 1.0
batch_size = 16
physical_batch_size = 4
epochs = 1.0
learning_rate = 5e-3
baseline = true
num_references = 0
"""


def _torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        + list(args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert set(wa) == set(wb)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in (path / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_train_matches_one_process(invoke, tmp_path):
    """`torchrun -m dpaudit train` (2 ranks) = `dpaudit train`: same lots, same ledger, same model."""
    runs = tmp_path / "runs"
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.format(name="single", runs=runs))
    assert invoke("train", str(config)).exit_code == 0
    out = _torchrun("-m", "dpaudit", "train", str(config), "--name", "dist", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("trained on 2 processes (torchrun)") == 1  # rank 0 alone prints
    assert out.stdout.count("run directory:") == 1
    for model, tolerance in (("target", 1e-4), ("baseline", 2e-3)):
        one, two = runs / "single" / model, runs / "dist" / model
        # The ledger is the single-process one: same q, σ, C, T, δ and ε per accountant.
        assert json.loads((two / "privacy.json").read_text()) == json.loads(
            (one / "privacy.json").read_text()
        )
        assert json.loads((two / "complete.json").read_text())["processes"] == 2
        assert json.loads((one / "complete.json").read_text())["processes"] == 1
        # Same Poisson lots (sizes), same losses up to summation order.
        log1, log2 = _log(one), _log(two)
        assert [e["lot_size"] for e in log1] == [e["lot_size"] for e in log2]
        assert [e["loss"] for e in log2] == pytest.approx([e["loss"] for e in log1], rel=1e-4)
        # Same model: Adam makes float-order differences visible, far below one step's change.
        assert _max_diff(one, two) < tolerance
    # LoRA with ghost clipping (Opacus' DistributedDPOptimizerFastGradientClipping): the same.
    lora = ("--set", "train.mode=lora", "--set", "train.grad_sample_mode=ghost")
    lora += ("--set", "train.baseline=false")
    assert invoke("train", str(config), "--name", "lora1", *lora).exit_code == 0
    out = _torchrun("-m", "dpaudit", "train", str(config), "--name", "lora2", *lora, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    sizes = [[e["lot_size"] for e in _log(runs / n / "target")] for n in ("lora1", "lora2")]
    assert sizes[0] == sizes[1]
    assert _max_diff(runs / "lora1" / "target", runs / "lora2" / "target") < 1e-4
    # Noise is added once per lot (rank 0), not once per rank: a second noise draw would move the
    # DP model by ~lr per coordinate, far beyond the tolerance above.
    assert _max_diff(runs / "single" / "target", runs / "single" / "baseline") > 100 * 1e-4


@pytest.mark.slow
def test_torchrun_stop_and_resume_equals_one_process(tmp_path):
    """Rank 0's checkpoint resumes on every rank; the finished run equals one uninterrupted process."""
    sys.path.insert(0, str(TESTS))
    try:
        import _torchrun_train as script
    finally:
        sys.path.remove(str(TESTS))
    from dpaudit.trainers import read_privacy

    full = script.train(str(tmp_path / "one"))
    assert full.completed and full.steps == 4
    out = _torchrun(
        str(TESTS / "_torchrun_train.py"), str(tmp_path / "two"), "--stop-at", "3", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    partial, raw = read_privacy(tmp_path / "two" / "privacy.json")
    assert partial.steps == 3 and raw["complete"] is False
    assert (tmp_path / "two" / "checkpoint").is_dir()
    assert not (tmp_path / "two" / "complete.json").exists()
    out = _torchrun(
        str(TESTS / "_torchrun_train.py"), str(tmp_path / "two"), "--resume", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rank 1/2: steps 4 completed True" in out.stdout
    ledger, _ = read_privacy(tmp_path / "two" / "privacy.json")
    assert ledger == full.ledger
    assert [e["lot_size"] for e in _log(tmp_path / "two")] == [
        e["lot_size"] for e in _log(tmp_path / "one")
    ]
    assert _max_diff(tmp_path / "one", tmp_path / "two") < 1e-4
    assert not (tmp_path / "two" / "checkpoint").exists()


def test_shares_partition_the_lot():
    from dpaudit.trainers.distributed import Ranks

    lot = [3, 8, 9, 14, 20, 21, 40]
    for world in (1, 2, 3, 8):
        shares = [Ranks(rank=r, world_size=world).share(lot) for r in range(world)]
        assert sorted(i for s in shares for i in s) == lot
        assert sum(len(s) for s in shares) == len(lot)


def test_ranks_from_env(monkeypatch):
    from dpaudit.trainers.distributed import SINGLE, Ranks, ranks_from_env

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert ranks_from_env() == SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ranks_from_env() == Ranks(rank=3, world_size=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DpauditError, match="RANK=4 is not below WORLD_SIZE=4"):
        ranks_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DpauditError, match="WORLD_SIZE='two' is not an integer"):
        ranks_from_env()


def test_whitebox_hooks_are_refused_under_torchrun():
    from dpaudit.trainers import TrainHooks
    from dpaudit.trainers.distributed import SINGLE, Ranks, refuse_hooks

    class PerSample(TrainHooks):
        def on_per_sample_grads(self, **kwargs):
            pass

    refuse_hooks(PerSample(), SINGLE)
    refuse_hooks(TrainHooks(), Ranks(rank=0, world_size=2))
    with pytest.raises(DpauditError, match="one process"):
        refuse_hooks(PerSample(), Ranks(rank=0, world_size=2))


def test_other_commands_and_federated_runs_refused_under_torchrun(invoke, monkeypatch, tmp_path):
    """One line, exit 2, before any process group or file: only `train` of a central run."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    config = Path(__file__).parents[1] / "configs"
    res = invoke("run", str(config / "quickstart.toml"), "--runs-dir", str(tmp_path))
    assert res.exit_code == 2 and "under torchrun only `dpaudit train` runs" in res.output
    res = invoke("train", str(config / "fl-quickstart.toml"), "--runs-dir", str(tmp_path))
    assert res.exit_code == 2 and "federated and user-level runs" in res.output
    monkeypatch.setenv("RANK", "1")  # the other ranks exit 2 silently: rank 0 says why, once
    res = invoke("run", str(config / "quickstart.toml"), "--runs-dir", str(tmp_path))
    assert res.exit_code == 2 and res.output == ""
    assert list(tmp_path.iterdir()) == []


def test_each_rank_takes_its_own_gpu():
    import torch

    from dpaudit.trainers.distributed import SINGLE, Ranks, rank_device

    rank1 = Ranks(rank=1, world_size=2, local_rank=1)
    assert rank_device(torch.device("cuda:3"), rank1) == torch.device("cuda", 1)
    assert rank_device(torch.device("cuda"), rank1) == torch.device("cuda", 1)
    assert rank_device(torch.device("cuda:3"), SINGLE) == torch.device("cuda:3")
    assert rank_device(torch.device("cpu"), rank1) == torch.device("cpu")
