"""Unmet preconditions (issue 12, cases 5 and 6): an attack or part that cannot run on these
inputs is skipped with the reason (console, ``status.json``, the report) and the rest runs.

Known before training where it can be: LiRA with one reference model is announced before the
reference trains, and an audit asking only for what cannot run is refused before the run
directory exists. ``attack mia --attacks loss`` loads no reference model, so an interrupted
``train-references`` is no obstacle to it, and a missing local model directory is named as
such, never sent to the hub as a repo id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from _tiny_lm import make_texts, overfit  # noqa: E402

from dpaudit.errors import DpauditError, PreconditionError  # noqa: E402

N = 24  # members and non-members each
LIRA_ONE = "LiRA needs at least 2 reference models (IN and OUT for each example); there is 1"
TRAIN_FAST = (
    "train.dp=false",
    "train.epochs=1",
    "train.batch_size=8",
    "train.physical_batch_size=8",
    "attack.bootstrap=0",
    "attack.extraction_samples=1",
)


def _write(path: Path, texts: list[str], prefix: str) -> Path:
    lines = [json.dumps({"id": f"{prefix}{i}", "text": t}) for i, t in enumerate(texts)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny GPT-2 overfit on its members, saved as a foreign checkpoint, and the input files."""
    from dpaudit.attacks.scoring import tiny_causal_lm
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("preconditions")
    texts = make_texts(2 * N + 4, seed=5)
    members, nonmembers, population = texts[:N], texts[N : 2 * N], texts[2 * N :]
    tok = train_bpe_tokenizer(texts, vocab_size=300)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = overfit(tiny_causal_lm(tok), tok, members, steps=5)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return {
        "root": root,
        "tok": tok,
        "members": _write(root / "members.jsonl", members, "m"),
        "nonmembers": _write(root / "nonmembers.jsonl", nonmembers, "n"),
        "population-1": _write(root / "population-1.jsonl", population[:1], "p"),
        "member_texts": members,
        "nonmember_texts": nonmembers,
    }


def _audit(ckpt, out: str, **options):
    from dpaudit.workflows.checkpoint_audit import audit_checkpoint

    options.setdefault("members", ckpt["members"])
    options.setdefault("nonmembers", ckpt["nonmembers"])
    sets = (*TRAIN_FAST, *options.pop("sets", ()))
    return audit_checkpoint(
        ckpt["root"] / "model", out=ckpt["root"] / out, sets=sets, progress=False, **options
    )


def _status(run: Path) -> dict:
    return json.loads((run / "attacks" / "target" / "status.json").read_text())


# -- case 5: LiRA with one reference ----------------------------------------------------------


@pytest.mark.slow  # trains one tiny reference model: a few seconds
def test_lira_with_one_reference_is_announced_skipped_and_the_rest_runs(ckpt):
    result = _audit(
        ckpt,
        "one-ref",
        attacks=("loss", "reference", "lira", "rmia"),
        train_references=1,
        population=ckpt["population-1"],  # one population record: RMIA's only z
        parts=("mia",),
    )
    run = result.run_dir
    # Said before the reference trained (the notes precede the references line) ...
    note = f"note: lira will be skipped: {LIRA_ONE}"
    assert note in result.lines
    trained = next(i for i, line in enumerate(result.lines) if line.startswith("references:"))
    assert result.lines.index(note) < trained
    # ... skipped with the reason in the console line and status.json, the rest scored.
    status = _status(run)["attacks"]
    assert status == {
        "loss": "done",
        "reference": "done",
        "lira": f"skipped: {LIRA_ONE}",
        "rmia": "done",
    }
    stage_line = next(line for line in result.lines if line.startswith("attacks/target/mia:"))
    assert f"lira skipped: {LIRA_ONE}" in stage_line
    for attack in ("loss", "reference", "rmia"):
        metrics = json.loads((run / "attacks" / "target" / attack / "metrics.json").read_text())
        assert 0.0 <= metrics["auc"] <= 1.0, attack
    assert not (run / "attacks" / "target" / "lira").exists()
    # RMIA against a single z: every score is 0 or 1, and it still has metrics.
    from dpaudit.attacks.scores import AttackScores

    rmia = AttackScores.load(run / "attacks" / "target" / "rmia")
    assert set(np.unique(rmia.scores)) <= {0.0, 1.0}
    # ... and the report says it.
    report = json.loads((run / "report" / "report.json").read_text())
    assert f"target: lira skipped: {LIRA_ONE}" in report["warnings"]
    assert set(report["models"]["target"]["attacks"]) == {"loss", "reference", "rmia"}


def test_asking_only_for_what_cannot_run_is_refused_before_anything(ckpt):
    out = ckpt["root"] / "refused"
    with pytest.raises(DpauditError, match="nothing asked for can run: lira will be skipped: "):
        _audit(ckpt, "refused", attacks=("lira",), train_references=1, parts=("mia",))
    assert not out.exists()  # no run directory, no reference trained
    with pytest.raises(DpauditError, match=r"memorization will be skipped: no record has the 4000"):
        _audit(
            ckpt,
            "refused",
            parts=("memorization",),
            sets=(
                "attack.memorization_prefix_tokens=2000",
                "attack.memorization_suffix_tokens=2000",
            ),
        )
    assert not out.exists()


# -- the rule on every part: short texts, 1-token texts, no canaries ---------------------------


def test_short_texts_and_no_canaries_skip_their_parts_and_the_rest_runs(ckpt):
    result = _audit(
        ckpt,
        "short",
        attacks=("loss", "zlib"),
        parts=("mia", "canary", "memorization"),
        # every member is shorter than 2000 + 2000 tokens; no canary file is given
        sets=("attack.memorization_prefix_tokens=2000", "attack.memorization_suffix_tokens=2000"),
    )
    run = result.run_dir
    memorization = (
        "no record has the 4000 tokens verbatim memorization needs (2000 prompt + 2000 "
        "continuation;"
    )
    assert any(
        line.startswith(f"note: memorization will be skipped: {memorization}")
        for line in result.lines
    )
    assert "note: canary will be skipped: no Secret-Sharer canaries in this run" in result.lines
    status = _status(run)
    assert status["attacks"] == {"loss": "done", "zlib": "done"}
    assert status["parts"]["canary"] == "skipped: no Secret-Sharer canaries in this run"
    assert status["parts"]["memorization"].startswith(f"skipped: {memorization}")
    for attack in ("loss", "zlib"):
        assert (run / "attacks" / "target" / attack / "metrics.json").is_file()
    assert not (run / "attacks" / "target" / "memorization.json").exists()
    assert not (run / "attacks" / "target" / "canary.json").exists()
    stage_line = next(line for line in result.lines if line.startswith("attacks/target/"))
    assert "memorization skipped: no record has the 4000 tokens" in stage_line
    warnings = json.loads((run / "report" / "report.json").read_text())["warnings"]
    assert any(
        w.startswith("target: no verbatim memorization results (attacks/target/memorization.json)")
        and memorization in w
        for w in warnings
    )
    assert any(
        "canary.json): skipped: no Secret-Sharer canaries in this run" in w for w in warnings
    )


def test_one_token_texts_skip_the_token_attacks_and_the_rest_runs(ckpt):
    tok = ckpt["tok"]
    assert len(tok("Q")["input_ids"]) == 1  # one byte, one token
    members = _write(ckpt["root"] / "members-1tok.jsonl", [*ckpt["member_texts"][:-1], "Q"], "m")
    result = _audit(
        ckpt,
        "one-token",
        members=members,
        attacks=("loss", "zlib"),
        parts=("mia", "memorization"),
        sets=("attack.memorization_prefix_tokens=4", "attack.memorization_suffix_tokens=4"),
    )
    run = result.run_dir
    status = _status(run)
    reason = "1 example(s) have fewer than 2 tokens, so no token can be scored: m23"
    assert status["attacks"] == {
        "loss": f"skipped: attack 'loss': {reason}",
        "zlib": f"skipped: attack 'zlib': {reason}",
    }
    assert status["parts"]["memorization"] == "done"  # the member too short to test is counted
    memo = json.loads((run / "attacks" / "target" / "memorization.json").read_text())
    assert memo["n_skipped_too_short"] == 1 and memo["n_evaluated"] == N - 1
    warnings = json.loads((run / "report" / "report.json").read_text())["warnings"]
    assert any(w.startswith("target: loss skipped: attack 'loss'") for w in warnings)


# -- the mechanism, unit by unit ------------------------------------------------------------


def _refs(k: int, n: int, seed: int = 0):
    from dpaudit.attacks.stage import ReferenceSet
    from dpaudit.trainers.references import assign_membership

    return ReferenceSet(
        models=[None] * k, membership=assign_membership(n, k, seed), ids=[f"r{i}" for i in range(n)]
    )


def test_plan_skips_lira_and_offline_rmia_with_one_reference_only():
    from dpaudit.attacks.registry import get_attack
    from dpaudit.attacks.stage import plan_mia
    from dpaudit.datasets.records import Record

    examples = [Record(id=f"r{i}", text="x") for i in range(20)]
    population = [Record(id="z0", text="z")]
    names = ["loss", "reference", "lira", "rmia", "offline_rmia"]
    attacks = {n: get_attack(n) for n in names[:4]}
    attacks["offline_rmia"] = get_attack("rmia", offline_a=0.5)

    def plan(k: int):
        return plan_mia(
            names[:4],
            task="causal_lm",
            references=_refs(k, 20),
            examples=examples,
            population=population,
            attacks=attacks,
        )[:2], attacks["offline_rmia"].unmet(ref_membership=_refs(k, 20).membership, n_population=1)

    (runnable, skipped), offline = plan(1)
    assert runnable == ["loss", "reference", "rmia"]  # online RMIA: one reference, one z
    assert skipped == {"lira": f"skipped: {LIRA_ONE}"}
    assert offline is not None and offline.startswith("offline RMIA needs an OUT reference")
    (runnable, skipped), offline = plan(2)
    assert runnable == ["loss", "reference", "lira", "rmia"] and not skipped and offline is None
    # offline LiRA, one reference: only when every example has an OUT model
    offline_lira = get_attack("lira", online=False)
    assert offline_lira.unmet(ref_membership=np.zeros((5, 1), bool)) is None
    assert offline_lira.unmet(ref_membership=np.ones((5, 1), bool)) == LIRA_ONE


def test_lira_score_raises_the_precondition_before_scoring():
    from dpaudit.attacks.registry import get_attack
    from dpaudit.datasets.records import Record

    class NoScoring:
        def token_logprobs(self, texts):
            raise AssertionError("scored although LiRA cannot run")

    examples = [Record(id=f"r{i}", text="x y") for i in range(4)]
    with pytest.raises(PreconditionError, match="at least 2 reference models"):
        get_attack("lira").score(
            NoScoring(),
            examples,
            is_member=[True, True, False, False],
            references=[NoScoring()],
            ref_membership=np.array([[True], [False], [True], [False]]),
        )


def test_skip_unmet_records_the_reason_and_lets_other_errors_through():
    from dpaudit.attacks.stage import skip_unmet

    status: dict[str, str] = {}

    def unmet():
        raise PreconditionError("no population records")

    def broken():
        raise DpauditError("scores and is_member must be 1-D arrays")

    assert skip_unmet(status, "ok", lambda: 3) == 3
    assert skip_unmet(status, "rmia", unmet) is None
    assert status == {"ok": "done", "rmia": "skipped: no population records"}
    with pytest.raises(DpauditError, match="1-D"):
        skip_unmet(status, "bug", broken)  # a real error still stops the stage
    assert "bug" not in status


def test_empty_canary_set_and_too_few_pii_values_are_preconditions(tmp_path):
    from dpaudit.attacks.pii_reconstruction import pii_inference
    from dpaudit.attacks.stage import run_canaries
    from dpaudit.config import load_config
    from dpaudit.datasets.prepare import PreparedData
    from dpaudit.datasets.records import PiiSpan, Record
    from dpaudit.datasets.splits import Split

    prepared = PreparedData(
        records=[], split=Split((), (), (), 0), canaries=[], train=[], data_dir=tmp_path
    )
    with pytest.raises(PreconditionError, match="no Secret-Sharer canaries in this run"):
        run_canaries(object(), prepared, load_config(None), 0, False)
    text = "Call Ada Lovelace today"
    record = Record(id="a", text=text, pii=(PiiSpan(5, 17, "PERSON", "Ada Lovelace"),))
    with pytest.raises(PreconditionError, match="fewer than n_distractors"):
        pii_inference(object(), [record], n_distractors=4)
    with pytest.raises(PreconditionError, match="no record has a PERSON span"):
        pii_inference(object(), [Record(id="b", text="nothing here")])


def test_report_lists_skipped_attacks_and_uses_part_reasons(tmp_path):
    from _run_fixture import write_run

    from dpaudit.reports import build_report
    from dpaudit.runfiles.attacks import StatusFile
    from dpaudit.runfiles.io import write_run_file

    run = write_run(tmp_path, "skips", seed=3)
    (run / "attacks" / "target" / "canary.json").unlink()
    status = StatusFile(
        attacks={"loss": "done", "lira": f"skipped: {LIRA_ONE}", "rmia": f"skipped: {LIRA_ONE}"},
        parts={"canary": "skipped: no Secret-Sharer canaries in this run", "memorization": "done"},
    )
    write_run_file(run / "attacks" / "target" / "status.json", status)
    warnings = build_report(run, formats=["json"])["warnings"]
    assert f"target: lira, rmia skipped: {LIRA_ONE}" in warnings
    assert (
        "target: no canary exposure results (attacks/target/canary.json): skipped: no "
        "Secret-Sharer canaries in this run"
    ) in warnings
    again = StatusFile.from_dict(
        json.loads((run / "attacks" / "target" / "status.json").read_text())
    )
    assert again == status


# -- case 6: references that an interrupted train-references left behind ----------------------


def test_a_missing_local_directory_is_never_a_hub_id(tmp_path, monkeypatch):
    from dpaudit.trainers import safe_load
    from dpaudit.trainers.models import load_pretrained

    def no_hub(*args, **kwargs):
        raise AssertionError("sent to the hub")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_hub)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_hub)
    refs = tmp_path / "run" / "references"
    refs.mkdir(parents=True)
    np.save(refs / "membership.npy", np.ones((4, 2), bool))
    expected = (
        "references/ref-0: not trained (an interrupted train-references?); rerun "
        "`dpaudit train-references --resume`"
    )
    with pytest.raises(DpauditError, match=re.escape(expected)):
        load_pretrained(refs / "ref-0", task="causal_lm")
    with pytest.raises(DpauditError, match="ref-0: not trained"):
        safe_load.load_model(str(refs / "ref-0"))
    # audit-checkpoint --references with such a set: refused with the same words
    from dpaudit.workflows.checkpoint_audit import _load_references

    (refs / "population_ids.json").write_text(json.dumps({"ids": list("abcd")}))
    (refs / "ref-0" / "checkpoint").mkdir(parents=True)
    with pytest.raises(DpauditError, match=r"^--references: .*ref-0: not trained \(an interr"):
        _load_references([refs], None, "causal_lm", False)
    monkeypatch.chdir(tmp_path)
    for local in ("run/nope", "./nope", "a/b/c", "/abs/nope", "~/nope", "dir\\nope"):
        assert safe_load.looks_local(local), local
        with pytest.raises(DpauditError, match="model directory not found"):
            load_pretrained(local, task="causal_lm")
    for hub_id in ("gpt2", "openai-community/gpt2"):
        assert not safe_load.looks_local(hub_id), hub_id


TINY_RUN = """
name = "pre"
seed = 0
[data]
synth_n = 80
one_run_canaries = 0
canary_repetitions = []
canaries_per_repetition = 0
vocab_size = 300
max_length = 32
[train]
epochs = 1.0
batch_size = 16
physical_batch_size = 16
dp = false
baseline = false
num_references = 0
[attack]
bootstrap = 0
attacks = ["loss"]
"""


@pytest.mark.slow  # trains the tiny target: a few seconds
def test_attack_mia_loss_needs_no_reference_of_an_interrupted_train_references(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli
    from dpaudit.datasets.prepare import load_prepared
    from dpaudit.trainers.references import assign_membership

    (tmp_path / "run.toml").write_text(TINY_RUN)
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", str(tmp_path / "run.toml"), "--runs-dir", str(tmp_path)])
    assert trained.exit_code == 0, trained.output
    run = tmp_path / "pre"
    # What train-references leaves when interrupted while training ref-0 of 2.
    prepared = load_prepared(run)
    pool = [r.id for r in prepared.part("members") + prepared.part("nonmembers")]
    refs = run / "references"
    (refs / "ref-0" / "checkpoint").mkdir(parents=True)
    np.save(refs / "membership.npy", assign_membership(len(pool), 2, 3))
    (refs / "population_ids.json").write_text(json.dumps({"ids": pool, "k": 2, "seed": 3}))

    loss = runner.invoke(cli, ["attack", "mia", "--run", str(run), "--attacks", "loss"])
    assert loss.exit_code == 0, loss.output
    assert _status(run)["attacks"] == {"loss": "done"}

    both = runner.invoke(cli, ["attack", "mia", "--run", str(run), "--attacks", "loss,lira"])
    assert both.exit_code == 0, both.output
    why = (
        "skipped: references/ref-0: not trained (an interrupted train-references?); rerun "
        "`dpaudit train-references --resume`"
    )
    assert _status(run)["attacks"] == {"loss": "done", "lira": why}
    assert f"lira {why}" in both.output
