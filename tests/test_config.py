"""Configuration: ranges, unknown keys, precedence, round trip."""

from __future__ import annotations

import math

import pytest

from dpaudit.config import (
    RunConfig,
    config_from_dict,
    describe_fields,
    load_config,
    parse_set,
    to_toml,
    tomllib,
)
from dpaudit.errors import ConfigError, InputError

BAD_VALUES = [
    ("train", "delta", 0.0),
    ("train", "delta", 1.0),
    ("train", "target_epsilon", 0.0),
    ("train", "target_epsilon", -1.0),
    ("train", "batch_size", 0),
    ("train", "physical_batch_size", 0),
    ("train", "max_grad_norm", 0.0),
    ("train", "noise_multiplier", -0.1),
    ("train", "epochs", 0.0),
    ("train", "learning_rate", 0.0),
    ("train", "mode", "everything"),
    ("data", "member_fraction", 0.0),
    ("data", "member_fraction", 1.0),
    ("data", "nonmember_fraction", 1.5),
    ("data", "synth_n", 1),
    ("data", "canary_repetitions", [1, 0]),
    ("attack", "mink_k", 0.0),
    ("attack", "mink_k", 1.5),
    ("attack", "fprs", [0.01, 1.0]),
    ("audit", "confidence", 1.0),
    ("audit", "confidence", 0.0),
    ("audit", "delta", 1.0),
    ("report", "max_auc", 1.2),
]


@pytest.mark.parametrize(("section", "key", "value"), BAD_VALUES)
def test_out_of_range_values_are_rejected_with_their_name(section, key, value):
    with pytest.raises(ConfigError) as err:
        config_from_dict({section: {key: value}})
    assert f"{section}.{key}" in str(err.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train", "delta", 1e-5),
        ("train", "target_epsilon", math.inf),
        ("data", "member_fraction", 0.5),
        ("attack", "mink_k", 1.0),
        ("audit", "confidence", 0.99),
        ("train", "noise_multiplier", 0.0),
    ],
)
def test_in_range_values_are_accepted(section, key, value):
    cfg = config_from_dict({section: {key: value}})
    assert getattr(getattr(cfg, section), key) == value


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="physical_batch_size"):
        config_from_dict({"train": {"batch_size": 8, "physical_batch_size": 16}})
    with pytest.raises(ConfigError, match="population"):
        config_from_dict({"data": {"member_fraction": 0.6, "nonmember_fraction": 0.4}})


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key train.epoch .*did you mean 'epochs'"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        config_from_dict({"trian": {}})


def test_types_are_checked():
    with pytest.raises(ConfigError, match="train.dp must be true or false"):
        config_from_dict({"train": {"dp": "maybe"}})
    with pytest.raises(ConfigError, match="train.batch_size must be an integer"):
        config_from_dict({"train": {"batch_size": 3.5}})
    with pytest.raises(ConfigError, match="train.batch_size must be an integer"):
        config_from_dict({"train": {"batch_size": True}})


def test_precedence_cli_over_set_over_file_over_default(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 3\n[train]\nepochs = 2.0\nlearning_rate = 0.1\ndp = true\n")
    # file beats default
    assert load_config(path).train.epochs == 2.0
    assert load_config(path).train.batch_size == RunConfig().train.batch_size
    # --set beats file
    cfg = load_config(path, sets=["train.epochs=5", "seed=4"])
    assert cfg.train.epochs == 5.0 and cfg.seed == 4 and cfg.train.learning_rate == 0.1
    # explicit option beats --set; an explicit False overrides a True, None does not override
    cfg = load_config(
        path,
        sets=["train.epochs=5"],
        overrides={"train": {"epochs": 7.0, "dp": False}, "seed": None},
    )
    assert cfg.train.epochs == 7.0 and cfg.train.dp is False and cfg.seed == 3


def test_set_parsing_and_errors():
    assert parse_set(["train.epochs=3", "data.canary_repetitions=1,2"]) == {
        "train": {"epochs": "3"},
        "data": {"canary_repetitions": "1,2"},
    }
    cfg = load_config(sets=["data.canary_repetitions=1,2", "train.delta=none", "train.dp=off"])
    assert (
        cfg.data.canary_repetitions == [1, 2] and cfg.train.delta is None and cfg.train.dp is False
    )
    # a list setting takes TOML array syntax as well as commas
    for text, want in (("[1, 4]", [1, 4]), ("[4]", [4]), ("4", [4]), ("[]", [])):
        got = load_config(sets=[f"data.canary_repetitions={text}"]).data.canary_repetitions
        assert got == want, text
    targets = load_config(sets=['train.lora_targets=["q_proj", "v_proj"]']).train.lora_targets
    assert targets == ["q_proj", "v_proj"]
    assert parse_set(["attack.params.lira.online=false", "attacks.params.rmia.offline_a=0.5"]) == {
        "attack": {"params": {"lira": {"online": False}, "rmia": {"offline_a": 0.5}}}
    }
    for bad in [
        "train.epochs",
        "a.b.c=1",
        ".x=1",
        "train.params.lira.online=1",
        "attack.params.x=1",
    ]:
        with pytest.raises(ConfigError):
            parse_set([bad])
    with pytest.raises(ConfigError, match=r"^--set: unknown key train.dpx"):
        load_config(sets=["train.dpx=1"])


def test_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n\n[train]\nepochs = 2\nbatch_size = -4\n')
    with pytest.raises(ConfigError, match=r"bad.toml:5: train.batch_size = -4 must be >= 1"):
        load_config(path)
    path.write_text("[train\n")
    with pytest.raises(InputError, match=r"bad.toml:1: invalid TOML"):
        load_config(path)
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_toml_round_trip_and_quickstart():
    cfg = load_config(sets=["train.target_epsilon=inf", "report.max_auc=0.6"])
    assert "target_epsilon = inf" in to_toml(cfg)
    assert config_from_dict(tomllib.loads(to_toml(cfg))) == cfg
    cfg = load_config(
        sets=[
            "train.delta=none",
            "data.canary_repetitions=1,2",
            "attack.params.lira.online=false",
            "attack.params.mink.k=none",
        ]
    )
    text = to_toml(cfg)
    assert "delta" not in text  # unset: left out, read back as the default (None)
    parsed = tomllib.loads(text)
    assert parsed["data"]["canary_repetitions"] == [1, 2]
    assert parsed["attack"]["params"] == {"lira": {"online": False}, "mink": {"k": "none"}}
    assert config_from_dict(parsed) == cfg
    quick = load_config("configs/quickstart.toml")
    assert quick.name == "demo" and quick.train.model == "embedded:gpt2-tiny"


def test_every_field_has_help():
    rows = describe_fields()
    assert len(rows) > 40
    assert all(help_text for _, help_text, _ in rows)


def test_section_alias_and_infinite_epsilon_mean_non_private():
    cfg = load_config("configs/quickstart.toml", sets=["trainer.target_epsilon=inf"])
    assert cfg.train.target_epsilon == math.inf and not cfg.train.private
    assert (
        cfg.train.epochs
        == load_config("configs/quickstart.toml").train.epochs
        != RunConfig().train.epochs
    )
    # (the file's [train] section is kept, not replaced by the alias)
    assert load_config(sets=["train.target_epsilon=3"]).train.private
    assert load_config(
        sets=["train.target_epsilon=inf", "train.noise_multiplier=1.0"]
    ).train.private
    with pytest.raises(ConfigError, match="same section"):
        config_from_dict({"train": {}, "trainer": {}})


# -- names that live in registries: checked by dpaudit.workflows.validate -----------------------

REGISTRY_NAMES = [
    ("train.accountant=moments", "train.accountant: unknown accountant 'moments'"),
    ("train.accountant=rdpp", "(did you mean 'rdp'?)"),
    ("report.formats=html,pdf", "report.formats: unknown report format 'pdf'"),
    (
        "audit.method=one_run",
        "audit.method: unknown audit method 'one_run' (did you mean 'one-run'?)",
    ),
    ("attack.attacks=loss,lirra", "attack.attacks: unknown attack 'lirra' (did you mean 'lira'?)"),
    ("attack.params.lirra.online=true", "attack.params.lirra: unknown attack 'lirra'"),
    ("attack.params.lira.onlin=true", "unknown parameter attack.params.lira.onlin (did you mean"),
    ("attack.params.lira.online=maybe", "attack.params.lira.online must be true or false"),
    (
        "attack.params.rmia.offline_a=2",
        "attack.params.rmia.offline_a: RMIA offline_a must lie in [0, 1]",
    ),
    ("attack.params.mink.k=0", "attack.params.mink.k: attack 'mink': k must lie in (0, 1]"),
    ("train.accountant=gdp", "approximation that can understate epsilon"),
]


@pytest.mark.parametrize(("assignment", "message"), REGISTRY_NAMES)
def test_registry_names_and_attack_params_are_checked_at_load(assignment, message):
    from dpaudit.workflows.validate import check_config
    from dpaudit.workflows.validate import load_config as load_checked

    cfg = load_config(sets=[assignment])  # the plumbing layer alone does not know these names
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value)
    with pytest.raises(ConfigError, match=r"^--set: ") as err:
        load_checked(sets=[assignment])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_registry_errors_in_a_file_name_the_line(tmp_path):
    from dpaudit.workflows.validate import check_config
    from dpaudit.workflows.validate import load_config as load_checked

    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[attack]\nattacks = ["loss", "lirra"]\n')
    with pytest.raises(
        ConfigError,
        match=r"c.toml:3: attack.attacks: unknown attack 'lirra' \(did you mean 'lira'\?\)",
    ):
        load_checked(path)
    path.write_text(
        '[attack]\nattacks = ["rmia"]\n\n[attack.params.rmia]\ngamma = 1.0\noffline_a = 3.0\n'
    )
    with pytest.raises(
        ConfigError, match=r"c.toml:6: attack.params.rmia.offline_a: RMIA offline_a"
    ):
        load_checked(path)
    with pytest.raises(ConfigError, match=r"c.toml:6: "):
        check_config(load_config(path), source=path)
    path.write_text("[attack.params.lirra]\nonline = true\n")
    with pytest.raises(ConfigError, match=r"c.toml:1: attack.params.lirra: unknown attack"):
        load_checked(path)
    # an explicit option is named as such
    with pytest.raises(ConfigError, match=r"^option: train.accountant"):
        load_checked(overrides={"train": {"accountant": "nope"}})


def test_attack_params_from_toml_and_set_reach_the_attack_objects(tmp_path):
    from dpaudit.attacks.lira import LiraAttack
    from dpaudit.attacks.mia import MinKAttack
    from dpaudit.attacks.registry import attack_params, get_attack
    from dpaudit.attacks.rmia import RmiaAttack
    from dpaudit.workflows.validate import load_config as load_checked

    path = tmp_path / "c.toml"
    path.write_text(
        "[attack]\nmink_k = 0.5\nrmia_gamma = 1.5\n\n"
        "[attack.params.lira]\nonline = false\nfixed_variance = true\n\n"
        "[attack.params.minkpp]\nk = 0.1\n"
    )
    cfg = load_checked(path, sets=["attack.params.rmia.offline_a=0.5"])

    def build(name):
        return get_attack(name, **attack_params(cfg.attack, name))

    lira, rmia, mink, minkpp = build("lira"), build("rmia"), build("mink"), build("minkpp")
    assert isinstance(lira, LiraAttack) and lira.online is False and lira.fixed_variance is True
    assert isinstance(rmia, RmiaAttack) and rmia.offline_a == 0.5 and rmia.gamma == 1.5
    assert isinstance(mink, MinKAttack) and mink.k == 0.5  # the legacy [attack] scalar
    assert minkpp.k == 0.1  # the params table wins over mink_k
    assert attack_params(cfg.attack, "loss") == {}
    # --set strings are coerced to the parameter's type; "none" unsets an optional one
    cfg = load_checked(
        path, sets=["attack.params.lira.fixed_variance=none", "attack.params.rmia.gamma=2"]
    )
    assert build("lira").fixed_variance is None and build("lira").online is False
    assert build("rmia").gamma == 2.0 and isinstance(build("rmia").gamma, float)
    # the resolved config shows and reloads the tables
    again = config_from_dict(tomllib.loads(to_toml(cfg)))
    assert again == cfg and "[attack.params.lira]" in to_toml(cfg)
