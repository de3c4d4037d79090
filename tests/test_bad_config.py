"""Config values that were accepted, then harmful (issue 12).

``inf`` passed every range check (``max_grad_norm = inf`` trained without
clipping under a ledger that claimed DP; ``noise_multiplier = inf`` hung;
``learning_rate = inf`` trained on NaN). A float setting must now be finite
unless it declares ``allow_inf`` (only ``train.target_epsilon``: inf means
non-private); NaN never passes. ``train.dp = false`` beside a target epsilon
or a noise multiplier given at the same or a higher level is refused.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpaudit.cli import cli
from dpaudit.config import SECTIONS, TrainConfig, _field_types, packaged_configs
from dpaudit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.toml"


def _float_settings() -> list[tuple[str, str, bool]]:
    """(section, key, is_list) of every float setting in the schema."""
    out = []
    for section, cls in SECTIONS.items():
        for key, tp in _field_types(cls).items():
            text = str(tp)
            if "float" in text:
                out.append((section, key, text.startswith("list")))
    return out


FLOATS = _float_settings()
ALLOWS_INF = {("train", "target_epsilon")}
CASES = [
    pytest.param(section, key, is_list, value, id=f"{section}.{key}={value}")
    for section, key, is_list in FLOATS
    for value in ("inf", "nan", "-inf")
    if not (value == "inf" and (section, key) in ALLOWS_INF)
]


def check(*args: str):
    return CliRunner().invoke(cli, ["config", "check", *args])


def assert_refused(result, *names: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for name in names:
        assert name in lines[0]


def test_the_schema_has_the_settings_of_the_issue():
    names = {f"{s}.{k}" for s, k, _ in FLOATS}
    for key in (
        "epochs",
        "learning_rate",
        "max_grad_norm",
        "noise_multiplier",
        "lora_alpha",
        "weight_decay",
        "target_epsilon",
    ):
        assert f"train.{key}" in names
    assert len(CASES) == 3 * len(FLOATS) - 1


@pytest.mark.parametrize("section,key,is_list,value", CASES)
def test_non_finite_float_in_a_file_exits_2_naming_the_setting(
    tmp_path, section, key, is_list, value
):
    path = tmp_path / "bad.toml"
    path.write_text(f"[{section}]\n{key} = {f'[{value}]' if is_list else value}\n")
    assert_refused(check(str(path)), f"{section}.{key}", f"{path}:2")


@pytest.mark.parametrize(
    "key", ["epochs", "learning_rate", "max_grad_norm", "noise_multiplier", "lora_alpha"]
)
@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_non_finite_float_from_set_exits_2_naming_the_setting(key, value):
    assert_refused(check(str(QUICKSTART), "--set", f"train.{key}={value}"), f"train.{key}", "--set")


def test_the_python_api_refuses_them_too():
    with pytest.raises(ConfigError, match="train.max_grad_norm must be a finite number, got inf"):
        TrainConfig(max_grad_norm=math.inf)
    with pytest.raises(ConfigError, match="train.noise_multiplier must be a number, got nan"):
        TrainConfig(noise_multiplier=math.nan)
    assert not TrainConfig(target_epsilon=math.inf).private  # the one declared meaning of inf
    assert dataclasses.replace(TrainConfig(noise_multiplier=1.0), dp=False).dp is False


# ----------------------------------------------------------------------------- dp = false
CONTRADICTIONS = {
    "target in the same file": "[train]\ndp = false\ntarget_epsilon = 3.0\n",
    "noise in the same file": "[train]\ndp = false\nnoise_multiplier = 1.0\n",
}


@pytest.mark.parametrize("text", CONTRADICTIONS.values(), ids=CONTRADICTIONS)
def test_dp_false_with_a_target_or_noise_in_the_file_exits_2(tmp_path, text):
    path = tmp_path / "contradiction.toml"
    path.write_text(text)
    key = "train.target_epsilon" if "target" in text else "train.noise_multiplier"
    assert_refused(check(str(path)), "train.dp = false contradicts", key, f"{path}:3")


def test_dp_false_with_noise_from_set_exits_2():
    result = check(str(QUICKSTART), "--set", "train.dp=false", "--set", "train.noise_multiplier=1")
    assert_refused(result, "--set: train.dp = false contradicts train.noise_multiplier = 1")


def test_no_dp_with_target_epsilon_on_the_command_line_exits_2_and_writes_nothing(tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli,
        ["train", str(QUICKSTART), "--runs-dir", str(runs), "--no-dp", "--target-epsilon", "3"],
    )
    assert_refused(result, "option: train.dp = false contradicts train.target_epsilon = 3")
    assert not runs.exists()


def test_consistent_or_overriding_settings_pass(tmp_path):
    from dpaudit.workflows.validate import check_sweep, load_config

    # --no-dp overrides the file's target_epsilon = 8: an override, not a contradiction.
    assert load_config(QUICKSTART, overrides={"train": {"dp": False}}).train.dp is False
    assert check(str(QUICKSTART), "--set", "train.dp=false").exit_code == 0
    # inf = non-private agrees with dp = false.
    path = tmp_path / "nodp.toml"
    path.write_text("[train]\ndp = false\ntarget_epsilon = inf\n")
    assert check(str(path)).exit_code == 0
    # The sweep of the README, inf included.
    assert check_sweep(QUICKSTART, sets=["train.target_epsilon=1,3,8,inf"]) == 4


@pytest.mark.parametrize("name", sorted(packaged_configs()))
def test_shipped_configs_still_pass(name):
    result = check(str(packaged_configs()[name]))
    assert result.exit_code == 0, result.output
    assert check(str(QUICKSTART), "--set", "train.target_epsilon=inf").exit_code == 0
