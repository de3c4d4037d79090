"""Parts that could not be measured are said, never dropped (docs/decisions.md, "Parts that
could not be measured").

- User records without ``pii`` spans: PII is detected (regex and validators; Presidio when
  importable) and the detector recorded; records without PII say "not measured", not "ok".
- ``--canaries`` without ``--canary-inclusion``: a note before any work, and in the report.
- A missing ``memorization.json`` or ``pii.json``: a report warning naming the part and why.
- A classifier that learned nothing (accuracy = majority-class share) gets no plain PASS.

A tiny untrained GPT-2 saved to disk is audited as a checkpoint: what is checked here is
what is measured and said, not how much leaks.
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
from _run_fixture import write_run
from _tiny_lm import FIRST, LAST, make_texts

torch = pytest.importorskip("torch")

import dpaudit  # noqa: E402
from dpaudit.atomic import write_json  # noqa: E402
from dpaudit.attacks import pii_detect  # noqa: E402
from dpaudit.attacks.pii_detect import detect_record_pii  # noqa: E402
from dpaudit.datasets.canaries import NO_INCLUSION_NOTE, make_canaries, write_canaries  # noqa: E402
from dpaudit.datasets.loaders import write_records  # noqa: E402
from dpaudit.datasets.records import PiiSpan, Record  # noqa: E402
from dpaudit.errors import DpauditError  # noqa: E402
from dpaudit.reports import build_report, collect_report  # noqa: E402
from dpaudit.reports.gate import gate  # noqa: E402
from dpaudit.workflows.options import CheckpointAuditOptions  # noqa: E402

N = 40
SETS = ("data.max_length=48", "attack.bootstrap=0")


def pii_texts(n: int, seed: int) -> list[str]:
    """Distinct texts, each with one NANP phone number and one email address (no spans)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST) + seed) % len(LAST)]
        phone = f"{rng.integers(200, 990)}-{rng.integers(200, 990)}-{rng.integers(1000, 9999)}"
        email = f"{first.lower()}.{last.lower()}{seed}{i}@mail.test"
        out.append(f"Please call {first} {last} at {phone} or write to {email} before Friday.")
    return out


@pytest.fixture(autouse=True)
def regex_only(monkeypatch):
    """Presidio is optional: pin the detector to the regex one wherever it is installed."""
    monkeypatch.setattr(pii_detect, "presidio_available", lambda: False)


@pytest.fixture(scope="module")
def tok():
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(make_texts(100, 7) + pii_texts(60, 9), vocab_size=400)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    """A tiny random GPT-2 and its tokenizer, saved as a checkpoint to audit."""
    from dpaudit.attacks.scoring import tiny_causal_lm

    path = tmp_path_factory.mktemp("ckpt") / "model"
    tiny_causal_lm(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _files(root, members: list[str], nonmembers: list[str]) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    files = {"members": root / "members.jsonl", "nonmembers": root / "nonmembers.jsonl"}
    write_records(files["members"], [Record(f"m{i}", t) for i, t in enumerate(members)])
    write_records(files["nonmembers"], [Record(f"n{i}", t) for i, t in enumerate(nonmembers)])
    for line in files["members"].read_text().splitlines():
        assert "pii" not in json.loads(line)  # a user's file: no annotated spans
    return files


def _audit(model_dir, files, out, **options):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return dpaudit.audit_checkpoint(
            model_dir, **files, out=out, progress=False, sets=SETS, **options
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def with_pii(tmp_path_factory, model_dir):
    """Audit of members holding phone numbers and emails, none annotated."""
    root = tmp_path_factory.mktemp("with-pii")
    files = _files(root, pii_texts(N, 0), pii_texts(N, 1))
    pii_detect_available = pii_detect.presidio_available
    pii_detect.presidio_available = lambda: False  # module scope: no monkeypatch fixture
    try:
        return _audit(model_dir, files, root / "run", parts="pii")
    finally:
        pii_detect.presidio_available = pii_detect_available


@pytest.fixture(scope="module")
def without_pii(tmp_path_factory, model_dir):
    """Audit of PII-free members, with canaries but no inclusion file."""
    root = tmp_path_factory.mktemp("without-pii")
    texts = make_texts(2 * N, 3)
    files = _files(root, texts[:N], texts[N:])
    canaries = make_canaries(
        prefix="my code is ", secret_space="digits:2", repetitions=(1,), per_repetition=2, seed=0
    )
    write_canaries(root / "canaries.jsonl", canaries)
    files["canaries"] = root / "canaries.jsonl"
    pii_detect_available = pii_detect.presidio_available
    pii_detect.presidio_available = lambda: False
    try:
        with warnings.catch_warnings():  # 2-digit secrets on a tiny BPE: alignment notices
            warnings.simplefilter("ignore", UserWarning)
            return _audit(model_dir, files, root / "run", parts="canary,pii")
    finally:
        pii_detect.presidio_available = pii_detect_available


# -- 1. PII in user records without spans ------------------------------------------------------


def test_detector_finds_phones_and_emails_in_unannotated_records():
    texts = pii_texts(5, 0)
    tagged, detector = detect_record_pii([Record(f"r{i}", t) for i, t in enumerate(texts)])
    assert detector == "regex"
    for record in tagged:
        kinds = sorted(s.kind for s in record.pii)
        assert kinds == ["EMAIL", "PHONE"], record.pii
        for span in record.pii:
            assert record.text[span.start : span.end] == span.value
    assert tagged[0].pii[1].value.endswith("@mail.test")
    # Annotated records are the truth: nothing is detected in them.
    annotated = [Record("a", "call 415-555-0199", pii=(PiiSpan(5, 17, "PHONE", "415-555-0199"),))]
    same, detector = detect_record_pii(annotated + [Record("b", "mail x.y@mail.test")])
    assert detector == "annotated" and same[1].pii == ()


def test_pii_attack_runs_on_detected_pii(with_pii):
    line = next(li for li in with_pii.lines if li.startswith("attacks/target/pii:"))
    assert f"pii ok (PII found by the regex detector in {N} of {N} members)" in line, line
    saved = json.loads((with_pii.run_dir / "attacks" / "target" / "pii.json").read_text())
    assert saved["detector"] == "regex"
    assert saved["n_members"] == N and saved["members_with_pii"] == N
    assert saved["unmeasured"] is None
    per_kind = saved["extraction"]["per_kind"]
    assert per_kind["EMAIL"]["truth"] == N and per_kind["PHONE"]["truth"] == N
    assert saved["inference"]["kind"] == "EMAIL" and saved["inference"]["n_records"] == N
    assert saved["inference_heldout"]["n_records"] == N  # the control is tagged too
    pii = with_pii.report["models"]["target"]["pii"]
    assert pii["detector"] == "regex" and pii["unmeasured"] is None
    assert pii["extraction_rate"] is not None and set(pii["by_kind"]) == {"EMAIL", "PHONE"}
    assert not any("PII leakage not measured" in w for w in with_pii.report["warnings"])
    md = (with_pii.run_dir / "report" / "report.md").read_text()
    assert "PII found by the regex detector" in md


def test_no_pii_found_is_said_not_ok(without_pii):
    line = next(li for li in without_pii.lines if li.startswith("attacks/target/canary+pii:"))
    assert "pii NOT MEASURED" in line and "pii ok" not in line, line
    assert (
        "attacks/target/canary+pii: warning: PII: no PII found in the 40 members by the regex "
        "detector; PII leakage not measured"
    ) in without_pii.lines
    pii = without_pii.report["models"]["target"]["pii"]
    assert pii["detector"] == "regex" and pii["members_with_pii"] == 0
    assert pii["unmeasured"] == "no PII found in the 40 members by the regex detector"
    assert pii["extraction"] is None and pii["extraction_rate"] is None
    warning = (
        "target: PII leakage not measured: no PII found in the 40 members by the regex detector"
    )
    assert warning in without_pii.report["warnings"]
    md = (without_pii.run_dir / "report" / "report.md").read_text()
    assert warning in md
    assert "not measured: no PII found in the 40 members by the regex detector" in md


# -- 2. canaries without inclusion bits --------------------------------------------------------


def test_canaries_without_inclusion_note_comes_first(without_pii):
    lines = list(without_pii.lines)
    note = f"note: {NO_INCLUSION_NOTE}"
    assert note in lines
    assert lines.index(note) < next(i for i, li in enumerate(lines) if li.startswith("data:"))
    assert "no one-run audit is possible" in note and "still scored for exposure" in note
    assert NO_INCLUSION_NOTE in without_pii.report["warnings"]
    assert without_pii.report["models"]["target"]["canaries"]["n_canaries"] == 2  # still scored
    assert without_pii.report["models"]["target"]["audit"] is None
    md = (without_pii.run_dir / "report" / "report.md").read_text()
    assert "no one-run audit is possible" in md


def test_canaries_without_inclusion_note_at_option_check(tmp_path, caplog):
    (tmp_path / "c.jsonl").write_text("")
    opts = dict(members=tmp_path / "missing.jsonl", nonmembers=tmp_path / "n.jsonl")
    assert CheckpointAuditOptions(
        model="m", out=str(tmp_path / "o"), canaries=str(tmp_path / "c.jsonl"), **opts
    ).notes() == (NO_INCLUSION_NOTE,)
    with_bits = CheckpointAuditOptions(
        model="m",
        out=str(tmp_path / "o"),
        canaries="c.jsonl",
        canary_inclusion="i.json",
        **opts,
    )
    assert with_bits.notes() == ()
    # Said before any input is read: the members file does not even exist.
    with caplog.at_level(logging.WARNING, logger="dpaudit"), pytest.raises(DpauditError):
        dpaudit.audit_checkpoint(
            "m", out=tmp_path / "o", canaries=tmp_path / "c.jsonl", progress=False, **opts
        )
    assert [r.getMessage() for r in caplog.records] == [f"note: {NO_INCLUSION_NOTE}"]
    assert not (tmp_path / "o").exists()


# -- 3. missing memorization.json / pii.json ---------------------------------------------------


def test_missing_files_are_warned_with_the_reason(tmp_path):
    run = write_run(tmp_path, "gone", seed=5)
    (run / "attacks" / "target" / "memorization.json").unlink()
    (run / "attacks" / "target" / "pii.json").unlink()
    report = build_report(run, formats=("json", "md"))
    target = report["models"]["target"]
    assert target["memorization"] is None and target["pii"] is None
    expected = [
        "target: no verbatim memorization results (attacks/target/memorization.json): its file "
        "is missing although the attack stage ran",
        "target: no PII leakage results (attacks/target/pii.json): its file is missing although "
        "the attack stage ran",
    ]
    for warning in expected:
        assert warning in report["warnings"]
        assert warning in (run / "report" / "report.md").read_text()
    assert not any(w.startswith("baseline: no verbatim") for w in report["warnings"])


def test_parts_not_run_are_warned_with_the_reason(without_pii):
    warnings = without_pii.report["warnings"]
    assert (
        "target: no verbatim memorization results (attacks/target/memorization.json): not run: "
        "not among the attack parts run (attacks/target/canary+pii)"
    ) in warnings
    assert any(
        w.startswith("target: no membership-inference results")
        and "not among the attack parts" in w
        for w in warnings
    )


# -- 4. a model that learned nothing -----------------------------------------------------------


def test_evaluate_records_majority_share_of_a_one_class_classifier(tok):
    from dpaudit.attacks.scoring import tiny_classifier
    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.evaluate import evaluate

    model = tiny_classifier(tok, num_labels=2, seed=0)
    with torch.no_grad():
        model.score.weight.zero_()  # equal logits: argmax says class 0 for every input
    texts = make_texts(20, 11)
    records = [Record(f"r{i}", t, label=int(i % 10 >= 7)) for i, t in enumerate(texts)]
    examples = encode_records(records, tok, max_length=32, task="classification", num_labels=2)
    metrics = evaluate(
        model,
        examples,
        task="classification",
        pad_id=tok.pad_token_id,
        input_names=("position_ids",),
        device=torch.device("cpu"),
    )
    assert metrics["predicted_classes"] == 1
    assert metrics["majority_share"] == pytest.approx(0.7)
    assert metrics["accuracy"] == pytest.approx(0.7)


def _classifier_utility(run, *, accuracy: float, classes: int) -> None:
    write_json(
        run / "target" / "metrics.json",
        {
            "task": "classification",
            "mode": "full",
            "eval_accuracy": accuracy,
            "eval_f1": 0.41,
            "eval_loss": 0.61,
            "eval_majority_share": 0.7,
            "eval_predicted_classes": classes,
            "train_accuracy": accuracy,
            "train_majority_share": 0.7,
            "train_predicted_classes": classes,
            "n_train": 800,
            "n_eval": 400,
        },
    )


def test_one_class_classifier_gets_no_plain_pass(tmp_path):
    run = write_run(tmp_path, "flat", seed=6, report={"max_auc": 0.9})
    _classifier_utility(run, accuracy=0.7, classes=1)
    report = build_report(run, formats=("json", "md"))
    target = report["models"]["target"]
    assert target["utility"]["learned"] is False
    assert target["utility"]["eval_majority_share"] == 0.7
    reason = target["summary"]["did_not_learn"]
    assert reason == (
        "it predicts one class for every held-out example (accuracy 0.700, majority-class "
        "share 0.700)"
    )
    pol = report["policy"]
    assert pol["items"]["max_auc"]["verdict"] == "pass"  # the low leakage itself
    item = pol["items"]["utility_learned"]
    assert item["verdict"] == "inconclusive" and pol["verdict"] == "inconclusive"
    assert (
        item["detail"]
        == f"target did not learn: {reason}; its low leakage is no evidence of privacy"
    )
    assert any(
        w.startswith("target: utility shows the model did not learn") for w in report["warnings"]
    )
    md = (run / "report" / "report.md").read_text()
    assert "INCONCLUSIVE" in md and "did not learn" in md
    result = gate(run)
    assert not result.passed and any("did not learn" in r for r in result.reasons)
    assert gate(run, allow_inconclusive=True).passed


def test_no_better_than_majority_and_a_learned_classifier(tmp_path):
    run = write_run(tmp_path, "majority", seed=7, report={"max_auc": 0.9})
    _classifier_utility(run, accuracy=0.69, classes=2)
    report = collect_report(run)
    assert report["models"]["target"]["summary"]["did_not_learn"] == (
        "held-out accuracy 0.690 is no better than always predicting the majority class (0.700)"
    )
    assert report["policy"]["verdict"] == "inconclusive"
    _classifier_utility(run, accuracy=0.9, classes=2)
    learned = collect_report(run)
    assert learned["models"]["target"]["utility"]["learned"] is True
    assert learned["models"]["target"]["summary"]["did_not_learn"] is None
    assert "utility_learned" not in learned["policy"]["items"]
    assert learned["policy"]["verdict"] == "pass"
    assert not any("did not learn" in w for w in learned["warnings"])
