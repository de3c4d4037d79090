"""A non-private model leaks canaries and membership; a strongly private one does not (slow)."""

from __future__ import annotations

import json

import pytest

CONFIG = """
name = "order"
seed = 1
[data]
synth_n = 400
one_run_canaries = 0
vocab_size = 400
max_length = 40
canary_repetitions = [1, 16]
canaries_per_repetition = 3
secret_space = "digits:3"
member_fraction = 0.3
nonmember_fraction = 0.3
[train]
epochs = 8.0
batch_size = 16
physical_batch_size = 16
target_epsilon = 0.5
num_references = 0
[attack]
bootstrap = 0
attacks = ["loss", "mink"]
"""


@pytest.mark.slow
def test_exposure_and_auc_order_private_below_non_private(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli

    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    runner = CliRunner()
    for args in (
        ["train", str(config), "--runs-dir", str(tmp_path)],
        ["attack", "mia", "--run", str(tmp_path / "order")],
        ["attack", "canary", "--run", str(tmp_path / "order")],
    ):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    out = tmp_path / "order" / "attacks"
    exposure = {
        m: json.loads((out / m / "canary.json").read_text())["exposure_by_repetition"]
        for m in ("target", "baseline")
    }
    auc = {
        m: json.loads((out / m / "loss" / "metrics.json").read_text())["auc"]
        for m in ("target", "baseline")
    }
    bits = 9.97  # log2(1000)
    # Non-private, 8 epochs: the 16x canaries are (nearly) top-ranked in the whole secret space.
    assert exposure["baseline"]["16"]["mean"] > bits - 2
    # epsilon = 0.5: near chance (mean exposure of a random rank is about 1.44 bits).
    assert exposure["target"]["16"]["mean"] < 4
    assert exposure["baseline"]["16"]["mean"] > exposure["target"]["16"]["mean"] + 4
    assert auc["baseline"] > 0.6 and auc["target"] < 0.58 and auc["baseline"] > auc["target"] + 0.05
