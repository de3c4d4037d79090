"""``dpaudit federated invert | poison | secagg`` end to end on a small federated quickstart.

The three attacks run from the CLI on the run a federated ``dpaudit run`` made; the
report then shows each before and after its defence (issue 15's "done when", at test
size: 300 records, 3 rounds of 10 clients).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow


def _sets(runs_dir):
    return [
        "--set", f"runs_dir={runs_dir}",
        "--set", "data.synth_n=300",
        "--set", "federated.rounds=3",
        "--set", "federated.clients_per_round=10",
        "--set", "federated.canary_clients=60",
        "--set", "train.num_references=2",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fl_run(tmp_path_factory):
    from click.testing import CliRunner

    from dpaudit.cli import cli

    root = tmp_path_factory.mktemp("flattacks")
    sets = _sets(root)

    def invoke(*args):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    res = invoke("run", "configs/fl-quickstart.toml", *sets)
    assert res.exit_code == 0, res.output
    outputs = {"run": res}
    outputs["invert"] = invoke(
        "federated", "invert", "configs/fl-quickstart.toml", *sets,
        "--batch-sizes", "1,8", "--lengths", "12", "--sigmas", "0,0.1", "--trials", "2",
    )  # fmt: skip
    outputs["poison"] = invoke(
        "federated", "poison", "configs/fl-quickstart.toml", *sets,
        "--aggregators", "mean,median", "--rounds", "3",
    )  # fmt: skip
    outputs["secagg"] = invoke(
        "federated", "secagg", "configs/fl-quickstart.toml", *sets,
        "--cohorts", "2,3", "--trials", "1", "--length", "10",
    )  # fmt: skip
    for name, out in outputs.items():
        assert out.exit_code == 0, f"{name}: {out.output}"
    res = invoke("report", str(root / "fl-quickstart"))
    assert res.exit_code == 0, res.output
    return root / "fl-quickstart", outputs


def _cells(run, attack):
    return json.loads((run / "federated_attacks" / f"{attack}.json").read_text())["cells"]


def test_inversion_recovers_one_undefended_example_and_fails_under_noise(fl_run):
    run, out = fl_run
    cells = {(c["defence"], c["sigma"], c["batch_size"]): c for c in _cells(run, "inversion")}
    plain = cells[("none", None, 1)]
    assert plain["exact_rate"] == 1.0 and plain["token_recall"] == 1.0
    assert plain["leak_precision"] == 1.0 and plain["leak_recall"] > 0.85  # all but last tokens
    assert cells[("dp", 0.0, 1)]["rouge_l"] > 0.9  # clipping alone does not defend
    noisy = cells[("dp", 0.1, 1)]
    assert noisy["rouge_l"] == 0.0 and noisy["leak_recall"] < plain["leak_recall"]
    assert cells[("lora", None, 1)]["leak_precision"] is None  # no embedding rows travel
    assert "no defence" in out["invert"].output


def test_backdoor_succeeds_against_fedavg_and_the_median_stops_it(fl_run):
    run, out = fl_run
    cells = {(c["aggregator"], c["dp"], c["attacker"]): c for c in _cells(run, "poisoning")}
    control = cells[("mean", False, False)]
    fedavg = cells[("mean", False, True)]
    assert control["asr"] < 0.05 and fedavg["attacker_rounds"] == 3
    assert fedavg["asr"] > 0.8
    assert cells[("median", False, True)]["asr"] < fedavg["asr"] - 0.5
    assert cells[("mean", True, True)]["asr"] < fedavg["asr"] - 0.5  # DP-FedAvg clips it
    assert "Against plain FedAvg the backdoor succeeded" in out["poison"].output
    for c in cells.values():  # Clopper-Pearson over the trigger prompts
        lo, hi = c["asr_interval"]
        assert 0.0 <= lo <= c["asr"] <= hi <= 1.0 and hi - lo < 0.3


def test_secagg_hides_each_client_but_not_the_sum(fl_run):
    run, _ = fl_run
    cells = {(c["cohort"], c["view"]): c for c in _cells(run, "secagg")}
    for m in (2, 3):
        assert cells[(m, "plain")]["exact_rate"] == 1.0 and cells[(m, "plain")]["attributable"]
        assert (
            cells[(m, "masked")]["exact_rate"] == 0.0 and cells[(m, "masked")]["token_recall"] == 0
        )
        assert cells[(m, "masked")]["uniform_ks_p"] > 1e-3
        assert cells[(m, "sum")]["exact_rate"] == 1.0 and not cells[(m, "sum")]["attributable"]
        assert cells[(m, "masked")]["round_seconds"] > cells[(m, "plain")]["round_seconds"]


def test_report_shows_each_attack_before_and_after_its_defence(fl_run):
    run, _ = fl_run
    report = json.loads((run / "report" / "report.json").read_text())
    sections = report["run"]["federated_attacks"]
    assert set(sections) == {"inversion", "poisoning", "secagg"}
    for sec in sections.values():
        assert sec["rows"] and len(sec["rows"][0]) == len(sec["columns"])
    md = (run / "report" / "report.md").read_text()
    assert "## Attacks on federated updates" in md and "Threat model:" in md
    html = (run / "report" / "report.html").read_text()
    for name in ("inversion", "poisoning", "secagg"):
        assert f'id="federated-attack-{name}"' in html
    assert '<a href="#federated-attacks">' in html  # in the navigation
    assert 'alt="Gradient inversion' in html
    # the verdict does not weigh these experiments, but the notes say what they showed
    notes = " ".join(report["warnings"]) if "warnings" in report else md
    assert "undefended update gave back 100% of its texts" in notes
    assert "attack success rate" in notes


def test_reference_federations_calibrate_lira_and_rmia_per_client(fl_run):
    # references of a federated target are federations of the same recipe over halves of
    # the users: a user's records are in or out of a reference together
    import numpy as np

    run, out = fl_run
    refs = run / "references"
    membership = np.load(refs / "membership.npy")
    ids = json.loads((refs / "population_ids.json").read_text())["ids"]
    corpus = [json.loads(x) for x in (run / "data" / "corpus.jsonl").read_text().splitlines()]
    user = {r["id"]: r["meta"]["user"] for r in corpus}
    by_user: dict[str, set] = {}
    for i, rid in enumerate(ids):
        by_user.setdefault(user[rid], set()).add(tuple(membership[i]))
    assert all(len(v) == 1 for v in by_user.values())  # whole users in or out
    for j in range(2):
        privacy = json.loads((refs / f"ref-{j}" / "privacy.json").read_text())
        assert privacy["unit"] == "client" and (refs / f"ref-{j}" / "rounds.jsonl").is_file()
        trained = json.loads((refs / f"ref-{j}" / "train_ids.json").read_text())["ids"]
        assert trained == [ids[i] for i in np.flatnonzero(membership[:, j])]
    mia = json.loads((run / "attacks" / "target" / "client_mia.json").read_text())
    assert {"reference", "lira", "rmia"} <= set(mia["attacks"]), mia["skipped"]
    assert "references: 2 DP federations" in out["run"].output


def test_federated_attack_commands_refuse_bad_input_before_work(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli

    res = CliRunner().invoke(
        cli, ["federated", "invert", "configs/quickstart.toml", "--runs-dir", str(tmp_path)]
    )
    assert res.exit_code == 2 and "federated.enabled" in res.output
    res = CliRunner().invoke(
        cli,
        ["federated", "invert", "configs/fl-quickstart.toml", "--runs-dir", str(tmp_path),
         "--lengths", "0"],
    )  # fmt: skip
    assert res.exit_code == 2 and "--lengths" in res.output
    res = CliRunner().invoke(
        cli,
        ["federated", "poison", "configs/fl-quickstart.toml", "--runs-dir", str(tmp_path),
         "--aggregators", "mean,krumm"],
    )  # fmt: skip
    assert res.exit_code == 2 and "unknown 'krumm' (did you mean 'krum'?)" in res.output
    assert not any(tmp_path.iterdir())
