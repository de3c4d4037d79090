"""Classifier membership inference confounded by labels (issue 12, case 2).

A DP classifier at chance accuracy gives every text nearly the same logits, so
its attack scores are a function of the label; when members and non-members
carry different label mixes, that function "separates" them. The splits and the
evaluated sample are stratified by label for classifiers, the label-only
baseline measures what the labels alone give (and warns), and ``clf_confidence``
(``exp`` of ``clf_loss``) is not reported beside ``clf_loss``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dpaudit.attacks.blind import LABEL_WARN_ABOVE, label_baseline, label_rate_scores
from dpaudit.attacks.metrics import mann_whitney_auc
from dpaudit.attacks.registry import ATTACKS, default_attacks, get_attack, plan_attacks
from dpaudit.attacks.stage import balanced_examples
from dpaudit.datasets.prepare import PreparedData
from dpaudit.datasets.records import Record
from dpaudit.datasets.splits import Split, split_records
from dpaudit.errors import DpauditError

# 30 % label 1, 70 % label 0, ids not in label order.
RECORDS = [Record(f"r{i:04d}", f"text {i}", label=int((i * 7) % 10 < 3)) for i in range(500)]


def _ones(ids, records=RECORDS) -> int:
    label = {r.id: r.label for r in records}
    return sum(label[i] for i in ids)


# -- 1. stratified splits --------------------------------------------------------------------


def test_stratified_split_gives_every_part_the_same_label_mix():
    s = split_records(RECORDS, member_fraction=0.4, nonmember_fraction=0.2, seed=1, stratify=True)
    assert (len(s.members), len(s.nonmembers), len(s.population)) == (200, 100, 200)
    assert set(s.members) | set(s.nonmembers) | set(s.population) == {r.id for r in RECORDS}
    assert len(set(s.members) | set(s.nonmembers) | set(s.population)) == len(RECORDS)
    # 30 % of each part is label 1, within one record.
    for ids in (s.members, s.nonmembers, s.population):
        assert abs(_ones(ids) - 0.3 * len(ids)) <= 1
    # A function of (ids, labels, seed): input order does not matter, the seed does.
    shuffled = RECORDS[:]
    random.Random(0).shuffle(shuffled)
    again = split_records(
        shuffled, member_fraction=0.4, nonmember_fraction=0.2, seed=1, stratify=True
    )
    assert again == s
    other = split_records(
        RECORDS, member_fraction=0.4, nonmember_fraction=0.2, seed=2, stratify=True
    )
    assert other.members != s.members


def test_stratified_split_without_population_and_errors():
    s = split_records(RECORDS, member_fraction=0.6, nonmember_fraction=0.4, seed=0, stratify=True)
    assert s.population == () and (len(s.members), len(s.nonmembers)) == (300, 200)
    assert (_ones(s.members), _ones(s.nonmembers)) == (90, 60)
    unlabelled = [*RECORDS[:50], Record("x", "no label")]
    with pytest.raises(DpauditError, match="needs a label on every record"):
        split_records(
            unlabelled, member_fraction=0.4, nonmember_fraction=0.2, seed=0, stratify=True
        )
    rare = [*RECORDS[:50], Record("x", "lonely", label=2)]
    with pytest.raises(DpauditError, match="same label mix.*label 2: 1"):
        split_records(rare, member_fraction=0.4, nonmember_fraction=0.2, seed=0, stratify=True)


def test_unstratified_split_is_the_unchanged_permutation():
    """Language-model splits stay what they were: the seeded permutation of the sorted ids."""
    s = split_records(RECORDS, member_fraction=0.4, nonmember_fraction=0.2, seed=5)
    ids = sorted(r.id for r in RECORDS)
    shuffled = [ids[i] for i in np.random.default_rng(5).permutation(len(ids))]
    assert s == Split(tuple(shuffled[:200]), tuple(shuffled[200:300]), tuple(shuffled[300:]), 5)


def _prepare(tmp_path: Path, task: str) -> PreparedData:
    from dpaudit.config import load_config
    from dpaudit.datasets.prepare import prepare_data
    from dpaudit.rundir import RunDir

    cfg = load_config(
        overrides={
            "runs_dir": str(tmp_path),
            "name": task,
            "data": {
                "synth_domain": "support",
                "synth_n": 300,
                "canaries_per_repetition": 0,
                "one_run_canaries": 0,
            },
            "train": {"task": task, "model": "embedded:gpt2-tiny"},
        }
    )
    return prepare_data(cfg, RunDir.create(cfg, argv=["test"]))


def test_data_stage_stratifies_classifiers_only(tmp_path):
    clf = _prepare(tmp_path, "classification")
    members, nonmembers = clf.part("members"), clf.part("nonmembers")
    share = sum(r.label for r in clf.records) / len(clf.records)
    for part in (members, nonmembers, clf.part("population")):
        assert abs(sum(r.label for r in part) - share * len(part)) <= 1
    # The language model's split ignores the labels its synthetic records also carry.
    lm = _prepare(tmp_path, "causal_lm")
    assert lm.split == split_records(
        lm.records, member_fraction=0.4, nonmember_fraction=0.2, seed=0
    )


# -- 1b. the evaluated (balanced) sample ------------------------------------------------------


def _skewed(n_member: int = 100, n_nonmember: int = 100) -> PreparedData:
    """The issue's split: members 36 % label 1, non-members 50 %."""
    members = [Record(f"m{i:03d}", f"member {i}", label=int(i % 25 < 9)) for i in range(n_member)]
    nonmembers = [Record(f"n{i:03d}", f"held {i}", label=i % 2) for i in range(n_nonmember)]
    split = Split(tuple(r.id for r in members), tuple(r.id for r in nonmembers), (), 0)
    return PreparedData(
        records=members + nonmembers, split=split, canaries=[], train=members, data_dir=Path(".")
    )


def test_balanced_sample_of_a_classifier_matches_labels():
    prepared = _skewed()
    examples, is_member = balanced_examples(prepared, 3, by_label=True)
    members = [r for r, m in zip(examples, is_member, strict=True) if m]
    nonmembers = [r for r, m in zip(examples, is_member, strict=True) if not m]
    assert Counter(r.label for r in members) == Counter(r.label for r in nonmembers)
    # label 0: 64 members, 50 non-members; label 1: 36 and 50 -> 50 and 36 per side.
    assert Counter(r.label for r in members) == {0: 50, 1: 36}
    assert [r.id for r in members] == sorted(r.id for r in members)  # split order kept
    assert label_baseline([r.label for r in examples], is_member).auc == 0.5


def test_balanced_sample_without_labels_is_unchanged():
    """``by_label=False`` (language models) draws exactly what it always drew."""
    prepared = _skewed(150, 100)
    examples, is_member = balanced_examples(prepared, 3)
    rng = np.random.default_rng(3)
    mem, non = prepared.part("members"), prepared.part("nonmembers")
    want = [mem[i] for i in sorted(rng.choice(150, 100, replace=False))]
    want += [non[i] for i in sorted(rng.choice(100, 100, replace=False))]
    assert examples == want and is_member.tolist() == [True] * 100 + [False] * 100


# -- 2. the label-only baseline --------------------------------------------------------------


class ChanceClassifier:
    """A classifier at chance accuracy: the same logits for every text."""

    max_length = 64

    def classify(self, texts):
        return np.tile([0.3, -0.2], (len(texts), 1))


def test_label_only_score_on_an_imbalanced_sample_is_flagged():
    prepared = _skewed()
    examples, is_member = balanced_examples(prepared, 3)  # not by label: the sample
    labels = [r.label for r in examples]
    result = label_baseline(labels, is_member)
    share_m = sum(lab for lab, m in zip(labels, is_member, strict=True) if m) / is_member.sum()
    share_n = (
        sum(lab for lab, m in zip(labels, is_member, strict=True) if not m) / (~is_member).sum()
    )
    # Two labels: AUC = 0.5 + |p_member - p_nonmember| / 2 (module docstring).
    assert result.auc == pytest.approx(0.5 + abs(share_m - share_n) / 2)
    assert result.auc > 0.55 > LABEL_WARN_ABOVE
    assert result.flagged and "confounded by labels" in result.warning
    assert result.member_labels == {"0": 64, "1": 36} and result.nonmember_labels == {
        "0": 50,
        "1": 50,
    }
    # The chance classifier's clf_loss is a function of the label alone: on this sample
    # it "separates" members exactly as well as the label-only score, with no membership
    # signal at all; on the label-matched sample it is at 0.5.
    attack = get_attack("clf_loss")
    scores = attack.score(ChanceClassifier(), examples, is_member=is_member)
    attack_auc = float(mann_whitney_auc(scores.scores, is_member))
    assert max(attack_auc, 1 - attack_auc) == pytest.approx(result.auc)
    fair, fair_member = balanced_examples(prepared, 3, by_label=True)
    fair_scores = attack.score(ChanceClassifier(), fair, is_member=fair_member)
    assert float(mann_whitney_auc(fair_scores.scores, fair_member)) == 0.5


def test_label_only_score_on_a_stratified_sample_is_not_flagged():
    s = split_records(RECORDS, member_fraction=0.4, nonmember_fraction=0.4, seed=2, stratify=True)
    label = {r.id: r.label for r in RECORDS}
    labels = [label[i] for i in s.members + s.nonmembers]
    is_member = np.array([True] * len(s.members) + [False] * len(s.nonmembers))
    result = label_baseline(labels, is_member)
    assert result.auc == pytest.approx(0.5, abs=0.005) and result.warning is None
    assert np.allclose(label_rate_scores(labels, is_member), 0.5)
    assert label_baseline(labels, is_member, warn_above=0.4).flagged  # the threshold is a parameter


def test_any_label_only_score_is_bounded_by_the_label_baseline():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    is_member = rng.random(400) < 0.3 + 0.2 * (labels == 2)
    bound = label_baseline(labels.tolist(), is_member).auc
    for _ in range(20):
        g = rng.normal(size=3)  # an arbitrary function of the label
        auc = float(mann_whitney_auc(g[labels], is_member))
        assert max(auc, 1 - auc) <= bound + 1e-12


# -- console line and report warning, through the real attack stage ---------------------------


def _stage(tmp_path: Path, monkeypatch, *, stratified: bool) -> tuple[list[str], dict]:
    """The attack stage of a classifier run on the issue's skewed split, with a chance model."""
    import dpaudit.attacks.stage as stage
    from dpaudit.attacks.stage import ReferenceSet, run_attack_stage
    from dpaudit.config import load_config
    from dpaudit.reports.collect import collect_model
    from dpaudit.rundir import RunDir

    cfg = load_config(
        overrides={
            "runs_dir": str(tmp_path),
            "name": "clf",
            "train": {"task": "classification", "model": "embedded:bert-tiny"},
            "attack": {"attacks": ["clf_loss", "clf_confidence"], "bootstrap": 0},
        }
    )
    run = RunDir.create(cfg, argv=["test"])
    monkeypatch.setattr(stage, "load_scoring_model", lambda *a, **k: ChanceClassifier())
    if not stratified:  # the sample before this fix: members and non-members not label-matched
        original = stage.balanced_examples
        monkeypatch.setattr(
            stage, "balanced_examples", lambda p, seed, by_label=False: original(p, seed)
        )
    lines = run_attack_stage(
        run,
        cfg,
        _skewed(),
        "target",
        seed=4,
        parts=("mia",),
        model=object(),
        references=ReferenceSet(),
        progress=False,
    )
    status = json.loads((run.path / "attacks" / "target" / "status.json").read_text())
    report, _, _ = collect_model(run.path)
    return lines, {"status": status, "report": report}


def test_stage_warns_on_console_and_in_the_report(tmp_path, monkeypatch):
    lines, out = _stage(tmp_path, monkeypatch, stratified=False)
    assert "label-only AUC 0.570" in lines[0]
    warned = [line for line in lines if "confounded by labels" in line]
    assert len(warned) == 1 and warned[0].startswith("attacks/target/mia: warning:")
    report = out["report"]
    assert any("confounded by labels" in w for w in report.warnings)
    assert report.blind_baseline.label_only.auc == pytest.approx(0.57)
    assert report.models["target"].attacks["clf_loss"].auc == pytest.approx(0.57)


def test_stage_on_a_label_matched_sample_is_clean(tmp_path, monkeypatch):
    lines, out = _stage(tmp_path, monkeypatch, stratified=True)
    assert "label-only AUC 0.500" in lines[0]
    assert not any("confounded" in line for line in lines)
    report = out["report"]
    assert not any("confounded" in w for w in report.warnings)
    assert report.models["target"].attacks["clf_loss"].auc == 0.5
    # clf_confidence is exp(clf_loss): one of the two is shown.
    assert set(report.models["target"].attacks) == {"clf_loss"}
    assert out["status"]["attacks"]["clf_confidence"].startswith("skipped: ranks examples as")


# -- 3. clf_loss and clf_confidence -----------------------------------------------------------


def test_classifier_default_attacks_show_one_of_loss_and_confidence():
    defaults = default_attacks("classification")
    assert len({"clf_loss", "clf_confidence"} & set(defaults)) == 1
    assert defaults == ["clf_loss", "clf_lira", "clf_rmia"]
    assert "clf_confidence" in ATTACKS  # still registered: configs naming it stay valid
    assert default_attacks("causal_lm") == [n for n in ATTACKS if ATTACKS[n].task == "causal_lm"]
    runnable, skipped = plan_attacks(
        ["clf_loss", "clf_confidence"],
        task="classification",
        has_references=False,
        has_ref_membership=False,
        has_population=False,
    )
    assert runnable == ["clf_loss"] and "clf_loss" in skipped["clf_confidence"]
    alone, _ = plan_attacks(
        ["clf_confidence"],
        task="classification",
        has_references=False,
        has_ref_membership=False,
        has_population=False,
    )
    assert alone == ["clf_confidence"]  # asked for alone, it runs


@pytest.mark.parametrize("num_labels", [2, 3])
def test_confidence_ranks_like_loss_for_any_number_of_classes(num_labels):
    fixed = np.random.default_rng(num_labels).normal(size=(60, num_labels)) * 3
    examples = [Record(f"e{i}", f"t {i}", label=i % num_labels) for i in range(60)]
    is_member = np.arange(60) % 2 == 0

    class Fixed:
        def classify(self, texts):
            return fixed

    loss = get_attack("clf_loss").score(Fixed(), examples, is_member=is_member).scores
    conf = get_attack("clf_confidence").score(Fixed(), examples, is_member=is_member).scores
    assert np.array_equal(np.argsort(loss, kind="stable"), np.argsort(conf, kind="stable"))
    assert float(mann_whitney_auc(loss, is_member)) == float(mann_whitney_auc(conf, is_member))


def test_packaged_classifier_config_lists_one_and_is_valid():
    from dpaudit.config import load_config
    from dpaudit.workflows.validate import check_config

    path = Path(__file__).resolve().parent.parent / "dpaudit" / "configs" / "minilm-classifier.toml"
    cfg = load_config(path)
    check_config(cfg)
    assert cfg.attack.attacks == ["clf_loss"]
