"""Scoring scope (issue 12, case 1): texts are scored up to the model's context, and any
truncation is counted and warned about in the console, ``status.json`` and the report.

The failure this guards against: members that share a long header and differ only
after it read as non-members (AUC 0.5) when only the first 64 tokens are scored.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dpaudit.attacks.metrics import auc  # noqa: E402
from dpaudit.attacks.registry import get_attack  # noqa: E402
from dpaudit.attacks.scoring import HFScoringModel, _length_batches  # noqa: E402
from dpaudit.attacks.stage import (  # noqa: E402
    load_scoring_model,
    scoring_length,
    scoring_scope,
)
from dpaudit.config import load_config  # noqa: E402
from dpaudit.datasets.records import Record  # noqa: E402
from dpaudit.datasets.tokenizer import train_bpe_tokenizer  # noqa: E402
from dpaudit.errors import ConfigError  # noqa: E402
from dpaudit.runfiles.attacks import ScoringScope, StatusFile  # noqa: E402

HEADER_TOKENS = (
    64  # the shared header fills the first 64 tokens: a 64-token window sees no difference
)
TAIL_WORDS = 28
N = 40
STEPS = 15  # full-batch AdamW steps on the members (the loss AUC is ~1 from 10 on)


WORDS = [
    a + b
    for a in ("ka", "lo", "mi", "ne", "pu", "ro", "sa", "ti", "vo", "ze")
    for b in ("bar", "dek", "fin", "gol", "hum", "jat", "kip", "lun", "mos", "nor", "pex", "rul")
]  # 120 letter-only words: each one token of the trained BPE


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [WORDS[int(i)] for i in rng.integers(0, len(WORDS), n)]


def _texts() -> tuple[str, list[str], list[str]]:
    rng = np.random.default_rng(12)
    header = " ".join(["note"] + _words(rng, HEADER_TOKENS - 1))
    tails = {" ".join(_words(rng, TAIL_WORDS)) for _ in range(4 * N)}
    tails_sorted = sorted(tails)[: 2 * N]
    texts = [f"{header} {tail}" for tail in tails_sorted]
    return header, texts[:N], texts[N:]


HEADER, MEMBERS, NONMEMBERS = _texts()


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(MEMBERS + NONMEMBERS, vocab_size=1000)


@pytest.fixture(scope="module")
def overfit_lm(tok):
    """A 2-layer GPT-2 with 256 positions, overfit on the members (full batch, seeded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=256,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = GPT2LMHeadModel(config)
            enc = tok(MEMBERS, padding=True, return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
            labels = ids.masked_fill(mask == 0, -100)
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            model.train()
            for _ in range(STEPS):
                model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
                opt.step()
                opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _examples() -> tuple[list[Record], np.ndarray]:
    records = [Record(id=f"m{i}", text=t) for i, t in enumerate(MEMBERS)]
    records += [Record(id=f"n{i}", text=t) for i, t in enumerate(NONMEMBERS)]
    return records, np.array([True] * N + [False] * N)


def _loss_auc(scorer) -> float:
    examples, is_member = _examples()
    scores = get_attack("loss").score(scorer, examples, is_member=is_member)
    return auc(scores.scores, is_member)


def test_texts_are_long_with_a_shared_header(tok):
    lengths = [len(ids) for ids in tok(MEMBERS + NONMEMBERS)["input_ids"]]
    header = tok(HEADER)["input_ids"]
    assert len(header) == HEADER_TOKENS
    assert all(80 <= n <= 256 for n in lengths), (min(lengths), max(lengths))
    assert all(ids[:HEADER_TOKENS] == header for ids in tok(MEMBERS + NONMEMBERS)["input_ids"])
    assert len(set(MEMBERS + NONMEMBERS)) == 2 * N


@pytest.mark.slow  # trains: about 15 s of CPU with the checkpoint test
def test_default_scores_the_whole_context_and_finds_the_members(tok, overfit_lm):
    config = load_config(None)
    length, basis = scoring_length((overfit_lm, tok), config)
    assert (length, basis) == (None, "context")
    scorer = load_scoring_model((overfit_lm, tok), config, progress=False)
    assert scorer.max_length == 256
    examples, is_member = _examples()
    scope = scoring_scope(scorer, examples, is_member, basis)
    assert scope is not None and scope.warning() is None
    assert (scope.members_truncated, scope.nonmembers_truncated) == (0, 0)
    assert (scope.member_tokens_cut, scope.nonmember_tokens_cut) == (0, 0)
    assert _loss_auc(scorer) >= 0.9


@pytest.mark.slow
def test_scoring_64_tokens_is_blind_and_says_so(tok, overfit_lm):
    config = load_config(None, sets=["attack.max_length=64"])
    scorer = load_scoring_model((overfit_lm, tok), config, progress=False)
    assert scorer.max_length == 64
    assert _loss_auc(scorer) == pytest.approx(0.5, abs=0.05)

    examples, is_member = _examples()
    scope = scoring_scope(scorer, examples, is_member, scoring_length(None, config)[1])
    lengths = [len(ids) for ids in tok([r.text for r in examples])["input_ids"]]
    cut = [n - 64 for n in lengths]
    assert scope == ScoringScope(
        max_length=64,
        basis="attack.max_length",
        n_member=N,
        n_nonmember=N,
        members_truncated=N,
        nonmembers_truncated=N,
        member_tokens_cut=sum(cut[:N]),
        nonmember_tokens_cut=sum(cut[N:]),
    )
    warning = scope.warning()
    assert warning is not None
    assert warning.startswith(
        f"truncation removed tokens from {N} of {N} members and {N} of {N} non-members "
        "(scored up to 64 tokens, attack.max_length"
    )
    # status.json carries it, and reads back.
    again = StatusFile.from_dict(json.loads(json.dumps(StatusFile(scope=scope).to_dict())))
    assert again.scope == scope


def test_tokens_cut_counts_exactly(tok):
    from dpaudit.attacks.scoring import tiny_causal_lm

    scorer = HFScoringModel(tiny_causal_lm(tok), tok, device="cpu", max_length=70, progress=False)
    texts = [MEMBERS[0], "note w1 w2", ""]
    full = [len(ids) for ids in tok(texts)["input_ids"]]
    assert scorer.tokens_cut(texts) == [max(0, n - 70) for n in full]
    assert scorer.tokens_cut(texts)[0] > 0
    lp = scorer.token_logprobs(texts)
    assert len(lp[0]) + 1 + scorer.tokens_cut(texts)[0] == full[0]
    assert scorer.tokens_cut([]) == []


def test_scope_counts_members_and_nonmembers_apart():
    class Fake:
        max_length = 10

        def tokens_cut(self, texts):
            return [int(t) for t in texts]

    examples = [Record(id=str(i), text=t) for i, t in enumerate(["0", "3", "0", "0", "5", "2"])]
    is_member = np.array([True, True, True, False, False, False])
    scope = scoring_scope(Fake(), examples, is_member, "fine-tuning")
    assert scope is not None
    assert (scope.members_truncated, scope.member_tokens_cut) == (1, 3)
    assert (scope.nonmembers_truncated, scope.nonmember_tokens_cut) == (2, 7)
    assert "1 of 3 members and 2 of 3 non-members" in (scope.warning() or "")
    assert "raise data.max_length" in (scope.warning() or "")
    assert scoring_scope(object(), examples, is_member, "context") is None
    nothing = ScoringScope(
        **{**scope.model_dump(), "members_truncated": 0, "nonmembers_truncated": 0}
    )
    assert nothing.warning() is None


def test_trained_length_is_the_default_for_a_dpaudit_model(tmp_path):
    (tmp_path / "complete.json").write_text(json.dumps({"recipe": {"max_length": 40}}))
    config = load_config(None)
    assert scoring_length(tmp_path, config) == (40, "fine-tuning")
    assert scoring_length(tmp_path / "elsewhere", config) == (None, "context")
    forced = load_config(None, sets=["attack.max_length=100"])
    assert scoring_length(tmp_path, forced) == (100, "attack.max_length")
    with pytest.raises(ConfigError, match="attack.max_length"):
        load_config(None, sets=["attack.max_length=1"])


def test_long_batches_hold_a_bounded_number_of_tokens():
    lengths = [300, 20, 290, 10, 40, 35]
    batches = _length_batches(lengths, 4, max_tokens=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * lengths[b[0]] <= 600 or len(b) == 1 for b in batches)
    assert batches[0] == [0, 2]
    assert _length_batches(lengths, 4) == [[0, 2, 4, 5], [1, 3]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok, overfit_lm):
    """The overfit model saved as a foreign checkpoint, and the members/non-members files."""
    root = tmp_path_factory.mktemp("truncation")
    overfit_lm.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    for name, texts in (("members", MEMBERS), ("nonmembers", NONMEMBERS)):
        lines = [json.dumps({"id": f"{name[0]}{i}", "text": t}) for i, t in enumerate(texts)]
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _audit(root, out: str, *sets: str):
    from dpaudit.workflows.checkpoint_audit import audit_checkpoint

    return audit_checkpoint(
        root / "model",
        members=str(root / "members.jsonl"),
        nonmembers=str(root / "nonmembers.jsonl"),
        out=str(root / out),
        attacks=("loss",),
        parts=("mia",),
        sets=("attack.bootstrap=0", *sets),
        progress=False,
    )


@pytest.mark.slow
def test_audit_checkpoint_scores_the_context_and_warns_everywhere_when_cut(checkpoint):
    whole = _audit(checkpoint, "whole")
    report = json.loads((checkpoint / "whole" / "report" / "report.json").read_text())
    target = report["models"]["target"]
    assert target["attacks"]["loss"]["auc"] >= 0.9
    assert target["scoring_scope"]["max_length"] == 256
    assert target["scoring_scope"]["basis"] == "context"
    assert target["scoring_scope"]["members_truncated"] == 0
    assert target["scoring_scope"]["nonmembers_truncated"] == 0
    assert not [w for w in report["warnings"] if "truncation removed" in w]
    assert not [line for line in whole.lines if "truncation removed" in line]

    cut = _audit(checkpoint, "cut", "attack.max_length=64")
    expected = (
        f"truncation removed tokens from {N} of {N} members and {N} of {N} non-members "
        "(scored up to 64 tokens, attack.max_length"
    )
    console = [line for line in cut.lines if "truncation removed" in line]
    assert len(console) == 1 and console[0].startswith(f"attacks/target/mia: warning: {expected}")
    status = StatusFile.from_dict(
        json.loads((checkpoint / "cut" / "attacks" / "target" / "status.json").read_text())
    )
    assert status.scope is not None and status.scope.members_truncated == N
    cut_tokens = sum(len(ids) - 64 for ids in checkpoint_tokens(checkpoint, MEMBERS))
    assert status.scope.member_tokens_cut == cut_tokens
    report = json.loads((checkpoint / "cut" / "report" / "report.json").read_text())
    assert report["models"]["target"]["attacks"]["loss"]["auc"] == pytest.approx(0.5, abs=0.05)
    assert report["models"]["target"]["scoring_scope"] == status.scope.to_dict()
    flagged = [w for w in report["warnings"] if "truncation removed" in w]
    assert flagged == [f"target: {status.scope.warning()}"]
    for page in ("report.md", "report.html"):
        assert expected in (checkpoint / "cut" / "report" / page).read_text(encoding="utf-8")


def checkpoint_tokens(root, texts: list[str]) -> list[list[int]]:
    from dpaudit.datasets.tokenizer import load_tokenizer

    return list(load_tokenizer(root / "model")(texts)["input_ids"])


def test_report_lists_the_cut_and_no_cut_reads_silent(tmp_path):
    from _run_fixture import write_run

    from dpaudit.reports import build_report
    from dpaudit.runfiles.io import write_run_file

    run = write_run(tmp_path, "scope", seed=2)
    cut = ScoringScope(
        max_length=64,
        basis="fine-tuning",
        n_member=10,
        n_nonmember=10,
        members_truncated=3,
        nonmembers_truncated=0,
        member_tokens_cut=41,
        nonmember_tokens_cut=0,
    )
    whole = cut.model_copy(update={"members_truncated": 0, "member_tokens_cut": 0})
    write_run_file(run / "attacks" / "target" / "status.json", StatusFile(scope=cut))
    write_run_file(run / "attacks" / "baseline" / "status.json", StatusFile(scope=whole))
    report = build_report(run, formats=["json", "md"])
    assert report["models"]["target"]["scoring_scope"] == cut.to_dict()
    assert report["models"]["baseline"]["scoring_scope"] == whole.to_dict()
    flagged = [w for w in report["warnings"] if "truncation removed" in w]
    assert flagged == [f"target: {cut.warning()}"]
    assert "3 of 10 members and 0 of 10 non-members" in flagged[0]
    assert flagged[0] in (run / "report" / "report.md").read_text(encoding="utf-8")
    saved = json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))
    assert saved["warnings"] == report["warnings"]
