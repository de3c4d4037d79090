"""Audit canary designs (dpaudit.datasets.canary_designs) and their scoring in the audit stage."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from dpaudit.config import RunConfig, TrainConfig, config_from_dict
from dpaudit.datasets.canaries import (
    LOSS_FROM_CHAR,
    insert_canaries,
    make_one_run_canaries,
    read_canaries,
    write_canaries,
    write_inclusion,
)
from dpaudit.datasets.canary_designs import (
    CANARY_DESIGNS,
    add_reserved_tokens,
    canary_token,
    check_corpus_free_of_canary_tokens,
    make_design_canaries,
    rare_word_tokens,
    secret_positions,
)
from dpaudit.datasets.records import ONE_RUN, Record
from dpaudit.errors import ConfigError, DpauditError

DESIGNS = ("random-secret", "new-token", "unigram")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    from dpaudit.datasets.synth import synthesize

    return [r.text for r in synthesize("clinical", 300, 0, num_labels=2)]


@pytest.fixture(scope="module")
def base_tokenizer(corpus):
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(corpus, vocab_size=400)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(corpus, vocab_size=400)
    assert add_reserved_tokens(tok, 50) == 50
    return tok


def _make(design: str, tokenizer, corpus, *, seed: int = 7, m: int = 50, **kw):
    kw.setdefault("prefix_tokens", 8)
    return make_design_canaries(
        design,
        m=m,
        seed=seed,
        tokenizer=tokenizer,
        corpus=corpus,
        prefix="my code (audit) ",
        max_length=48,
        **kw,
    )


# --- the registry and the config ---------------------------------------------------------


def test_registry_holds_the_designs_and_config_validates_the_name():
    from dpaudit.workflows.validate import check_config

    assert set(DESIGNS) <= set(CANARY_DESIGNS.names())
    assert CANARY_DESIGNS.get("new-token").reserves_tokens
    assert not CANARY_DESIGNS.get("unigram").reserves_tokens
    check_config(config_from_dict({"data": {"canary_design": "unigram"}}))
    with pytest.raises(ConfigError, match="did you mean 'new-token'") as info:
        check_config(config_from_dict({"data": {"canary_design": "new-tokn"}}))
    assert info.value.key == "data.canary_design"
    with pytest.raises(ConfigError, match="canary_score"):
        config_from_dict({"audit": {"canary_score": "zlib"}})


# --- new tokens ----------------------------------------------------------------------------


def test_new_tokens_are_never_produced_by_the_corpus(tokenizer, base_tokenizer, corpus):
    reserved = {tokenizer.convert_tokens_to_ids(canary_token(i)) for i in range(50)}
    assert len(reserved) == 50 and min(reserved) >= base_tokenizer.vocab_size
    assert len(tokenizer) == len(base_tokenizer) + 50
    ids = tokenizer(corpus)["input_ids"]
    assert not reserved & {t for row in ids for t in row}
    # the extra tokens change nothing about how real text is cut
    assert ids == base_tokenizer(corpus)["input_ids"]
    # ... and a canary's text ends in exactly its own token
    c = _make("new-token", tokenizer, corpus)[17]
    last = tokenizer(c.text)["input_ids"][-1]
    assert c.secret == canary_token(17) and last == tokenizer.convert_tokens_to_ids("<canary-17>")
    assert "<canary-1>" not in c.text[: len(c.prefix)]


def test_a_corpus_containing_a_reserved_token_is_refused():
    check_corpus_free_of_canary_tokens(["a <canary> b", "x <canary-z> y"])
    with pytest.raises(DpauditError, match="<canary-3>"):
        check_corpus_free_of_canary_tokens(["fine", "leaks <canary-3> here"])


def test_pretrained_model_grows_zero_rows_for_new_tokens(tmp_path, base_tokenizer, tokenizer):
    import torch

    from dpaudit.attacks.scoring import tiny_causal_lm
    from dpaudit.trainers.models import build_model

    tiny_causal_lm(base_tokenizer, seed=1).save_pretrained(str(tmp_path / "m"))
    old = len(base_tokenizer)
    built = build_model(TrainConfig(model=str(tmp_path / "m")), tokenizer, seed=0, max_length=32)
    model = built.model
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert inp.shape[0] == out.shape[0] == len(tokenizer) == old + 50
    assert torch.count_nonzero(inp[old:]) == 0 and torch.count_nonzero(out[old:]) == 0
    assert torch.count_nonzero(inp[:old]) > 0
    reference = tiny_causal_lm(base_tokenizer, seed=1)
    assert torch.equal(inp[:old], reference.get_input_embeddings().weight)


def test_new_token_canaries_under_lora_are_refused_because_their_logit_is_pinned(
    tmp_path, base_tokenizer, tokenizer
):
    """Under LoRA the new rows stay zero: the canary token's logit is 0 after training too."""
    import torch

    from dpaudit.attacks.scoring import tiny_causal_lm
    from dpaudit.trainers.models import build_model
    from dpaudit.workflows.validate import check_config

    tiny_causal_lm(base_tokenizer, seed=1).save_pretrained(str(tmp_path / "m"))
    cfg = TrainConfig(model=str(tmp_path / "m"), mode="lora", lora_rank=4)
    model = build_model(cfg, tokenizer, seed=0, max_length=32).model
    token = tokenizer.convert_tokens_to_ids(canary_token(3))
    ids = torch.tensor([tokenizer("my code (audit) ")["input_ids"] + [token]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(20):  # non-private, straight at the canary
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = model(input_ids=ids[:, :-1]).logits[0, -1]
    assert float(logits[token]) == 0.0

    lora = {"train": {"mode": "lora"}, "data": {"canary_design": "new-token"}}
    with pytest.raises(ConfigError, match="frozen at zero under train.mode = lora") as info:
        check_config(config_from_dict(lora), data=False)
    assert info.value.key == "data.canary_design"
    for fine in (
        {"train": {"mode": "lora"}, "data": {"canary_design": "unigram"}},
        {"train": {"mode": "full"}, "data": {"canary_design": "new-token"}},
        {"train": {"mode": "lora"}, "data": {"canary_design": "new-token", "one_run_canaries": 0}},
    ):
        check_config(config_from_dict(fine), data=False)


# --- determinism and coins -----------------------------------------------------------------


@pytest.mark.parametrize("design", DESIGNS)
def test_each_design_is_a_function_of_the_seed(design, tokenizer, corpus):
    a, b = _make(design, tokenizer, corpus), _make(design, tokenizer, corpus)
    assert a == b
    other = _make(design, tokenizer, corpus, seed=8)
    assert [c.text for c in other] != [c.text for c in a]
    assert all(c.role == ONE_RUN and c.repetitions == 1 for c in a)
    assert len({c.id for c in a}) == len(a) == 50
    assert len({c.prefix for c in a}) == 50  # one random prefix per canary
    for c in a:
        assert 1 <= len(tokenizer(c.text)["input_ids"]) <= 48


def test_coins_are_iid_fair_and_shared_by_every_design(tokenizer, corpus):
    from scipy.stats import binomtest

    coins = {d: np.array([c.included for c in _make(d, tokenizer, corpus, m=50)]) for d in DESIGNS}
    assert all(np.array_equal(coins["new-token"], v) for v in coins.values())
    big = np.array(
        [c.included for c in make_design_canaries("random-secret", m=4000, seed=3, prefix="p ")]
    )
    assert binomtest(int(big.sum()), big.size, 0.5).pvalue > 1e-3
    # independent across canaries: neighbours agree half of the time
    agree = int((big[1:] == big[:-1]).sum())
    assert binomtest(agree, big.size - 1, 0.5).pvalue > 1e-3
    # the original one-run canaries are the random-secret design with a text prefix
    old = make_one_run_canaries(m=300, secret_space="digits:4", prefix="p ", seed=11)
    new = make_design_canaries("random-secret", m=300, seed=11, prefix="p ", prefix_tokens=0)
    assert old == new


def test_unigram_secrets_are_rare_corpus_words_without_reuse(tokenizer, corpus):
    pool = rare_word_tokens(tokenizer, corpus)
    counts = {}
    for row in tokenizer(corpus, add_special_tokens=False)["input_ids"]:
        for t in row:
            counts[t] = counts.get(t, 0) + 1
    assert all(counts.get(t, 0) >= 1 for t in pool)
    assert [counts[t] for t in pool] == sorted(counts[t] for t in pool)
    cans = _make("unigram", tokenizer, corpus)
    ids = [tokenizer(c.secret, add_special_tokens=False)["input_ids"] for c in cans]
    assert all(len(i) == 1 for i in ids)
    assert sorted(i[0] for i in ids) == sorted(pool[:50])  # the 50 rarest, each used once


def test_one_run_canaries_are_inserted_once_with_the_secret_mask(tokenizer, corpus):
    cans = _make("new-token", tokenizer, corpus)
    records = [Record(f"r{i}", t) for i, t in enumerate(corpus[:20])]
    train = insert_canaries(records, cans, seed=0, secret_loss_only=True)
    copies = [r for r in train if "canary_id" in r.meta]
    assert sorted(r.meta["canary_id"] for r in copies) == sorted(c.id for c in cans if c.included)
    by_id = {c.id: c for c in cans}
    assert all(r.meta[LOSS_FROM_CHAR] == len(by_id[r.meta["canary_id"]].prefix) for r in copies)
    plain = insert_canaries(records, cans, seed=0)
    assert not any(LOSS_FROM_CHAR in r.meta for r in plain)


def test_design_canaries_round_trip_through_the_files(tmp_path, tokenizer, corpus):
    cans = _make("new-token", tokenizer, corpus)
    write_canaries(tmp_path / "c.jsonl", cans)
    write_inclusion(tmp_path / "i.json", cans)
    assert read_canaries(tmp_path / "c.jsonl", tmp_path / "i.json") == cans
    assert all(c.secret_space == "design:new-token" for c in cans)


# --- which tokens are the secret's, in training and in scoring ------------------------------


def test_secret_positions_and_training_mask_agree(tokenizer, corpus):
    from dpaudit.trainers.data import IGNORE_INDEX, collate, encode_records

    new = dataclasses.replace(_make("new-token", tokenizer, corpus)[3], included=True)
    digits = make_design_canaries("random-secret", m=1, seed=0, prefix="code is ")[0]
    [p_new, p_digits] = secret_positions(
        tokenizer, [new.text, digits.text], [len(new.prefix), len(digits.prefix)], max_length=48
    )
    ids = tokenizer(new.text)["input_ids"]
    assert p_new.tolist() == [len(ids) - 1]
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(digits.text)["input_ids"])
    assert "".join(pieces[i] for i in p_digits).replace("Ġ", " ") == " " + digits.secret
    records = insert_canaries([Record("r", corpus[0])], [new], seed=0, secret_loss_only=True)
    ex = encode_records(records, tokenizer, max_length=48, task="causal_lm")
    row = next(i for i, r in enumerate(records) if "canary_id" in r.meta)
    _, targets = collate(ex, [row], pad_id=tokenizer.pad_token_id, task="causal_lm")
    counted = (targets[0] != IGNORE_INDEX).nonzero().flatten().tolist()
    assert counted == [len(ids) - 1]
    assert ex.loss_start is not None and ex.loss_start[1 - row] == 0
    with pytest.raises(DpauditError, match="needs a prefix"):
        secret_positions(tokenizer, [canary_token(1)], [0], max_length=8)


# --- scores ----------------------------------------------------------------------------------


def _scorers(tokenizer):
    from dpaudit.attacks.scoring import HFScoringModel, tiny_causal_lm

    def scorer(seed: int) -> HFScoringModel:
        model = tiny_causal_lm(tokenizer, seed=seed)
        return HFScoringModel(model, tokenizer, device="cpu", max_length=48, progress=False)

    return scorer(1), scorer(2)


def _audit_config(score: str) -> RunConfig:
    return config_from_dict({"audit": {"canary_score": score}})


def test_loss_drop_is_base_loss_minus_loss_and_never_reads_the_coins(tokenizer, corpus):
    from dpaudit.attacks.canary import secret_losses
    from dpaudit.audit.stage import canary_scores

    model, base = _scorers(tokenizer)
    cans = _make("unigram", tokenizer, corpus, m=30)
    flipped = [dataclasses.replace(c, included=not c.included) for c in cans]
    drop, used = canary_scores(model, cans, _audit_config("loss-drop"), base=base)
    assert used == "loss-drop"
    again, _ = canary_scores(model, flipped, _audit_config("loss-drop"), base=base)
    assert np.array_equal(drop, again)
    prefixes, secrets = [c.prefix for c in cans], [c.secret for c in cans]
    expected = secret_losses(base, prefixes, secrets) - secret_losses(model, prefixes, secrets)
    np.testing.assert_allclose(drop, expected)
    loss, _ = canary_scores(model, cans, _audit_config("loss"), base=base)
    np.testing.assert_allclose(loss, -secret_losses(model, prefixes, secrets))
    assert not np.allclose(loss, drop)


def test_logppl_sums_and_loss_averages_the_secret_tokens(tokenizer):
    from dpaudit.attacks.canary import canary_logppl, secret_losses
    from dpaudit.audit.stage import canary_scores

    model, _ = _scorers(tokenizer)
    cans = make_design_canaries("random-secret", m=20, seed=2, prefix="my code is ")
    logppl, scope = canary_logppl(model, "my code is ", [c.secret for c in cans])
    assert scope == "separator+secret"
    summed, used = canary_scores(model, cans, _audit_config("logppl"))
    assert used == "logppl"
    np.testing.assert_allclose(summed, -logppl)  # the original statistic, kept
    mean = secret_losses(model, [c.prefix for c in cans], [c.secret for c in cans])
    n_tokens = len(cans[0].secret.split())
    np.testing.assert_allclose(mean * n_tokens, logppl)


def test_loss_drop_without_a_base_model_falls_back_to_loss(tokenizer, corpus):
    from dpaudit.audit.stage import canary_scores

    model, _ = _scorers(tokenizer)
    cans = _make("new-token", tokenizer, corpus, m=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores, used = canary_scores(model, cans, _audit_config("loss-drop"), base=None)
    assert used == "loss" and any("loss-drop" in str(w.message) for w in caught)
    np.testing.assert_allclose(scores, canary_scores(model, cans, _audit_config("loss"))[0])


def test_initial_model_is_rebuilt_from_the_seed_and_checked(tmp_path, tokenizer, corpus):
    import torch
    from safetensors.torch import load_file

    from dpaudit.attacks.scoring import HFScoringModel
    from dpaudit.audit.stage import base_scoring_model
    from dpaudit.trainers import train_model
    from dpaudit.trainers.models import build_model, initial_model, weights_sha256

    config = TrainConfig(dp=False, epochs=1.0, batch_size=16, physical_batch_size=16, device="cpu")
    records = [Record(f"r{i}", t) for i, t in enumerate(corpus[:16])]
    train_model(
        records, config=config, tokenizer=tokenizer, out_dir=tmp_path / "m", seed=5,
        max_length=32, progress=False,
    )  # fmt: skip
    base = initial_model(tmp_path / "m", tokenizer)
    fresh = build_model(config, tokenizer, seed=5, max_length=32).model
    assert base is not None and weights_sha256(base) == weights_sha256(fresh)
    trained = build_model(config, tokenizer, seed=5, max_length=32).model
    trained.load_state_dict(load_file(str(tmp_path / "m" / "model.safetensors")), strict=False)
    assert not torch.equal(
        trained.get_output_embeddings().weight, base.get_output_embeddings().weight
    )
    # a checkpoint audit of that model finds the same base through target/source.json
    scorer = HFScoringModel(trained, tokenizer, device="cpu", progress=False)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "source.json").write_text(
        json.dumps({"model_path": str(tmp_path / "m"), "adapter_path": None})
    )
    found = base_scoring_model(scorer, tmp_path / "ckpt", RunConfig())
    assert found is not None and weights_sha256(found.model) == weights_sha256(fresh)
    assert base_scoring_model(scorer, tmp_path / "nothing", RunConfig()) is None
    # weights that do not hash as recorded are refused, and the audit falls back to loss
    done = json.loads((tmp_path / "m" / "complete.json").read_text())
    done["initial_sha256"] = "0" * 64
    (tmp_path / "m" / "complete.json").write_text(json.dumps(done))
    with pytest.raises(DpauditError, match="differ"):
        initial_model(tmp_path / "m", tokenizer)
    with pytest.warns(UserWarning, match="no base model"):
        assert base_scoring_model(scorer, tmp_path / "m", RunConfig()) is None
    assert initial_model(tmp_path / "nothing", tokenizer) is None


# --- the designs on a trained model ----------------------------------------------------------


def _auc_after_training(tmp_path, design: str, prefix_tokens: int, canary_loss: str) -> float:
    from sklearn.metrics import roc_auc_score

    from dpaudit.attacks.stage import load_scoring_model
    from dpaudit.audit.stage import canary_scores
    from dpaudit.datasets.prepare import prepare_data
    from dpaudit.datasets.tokenizer import load_tokenizer
    from dpaudit.rundir import RunDir
    from dpaudit.trainers import train_model

    config = config_from_dict(
        {
            "name": design,
            "runs_dir": str(tmp_path),
            "seed": 3,
            "data": {
                "synth_n": 300,
                "one_run_canaries": 200,
                "canaries_per_repetition": 0,
                "canary_design": design,
                "canary_prefix_tokens": prefix_tokens,
                "canary_loss": canary_loss,
                "vocab_size": 500,
                "max_length": 48,
            },
            "train": {
                "dp": False,
                "epochs": 6.0,
                "batch_size": 32,
                "physical_batch_size": 32,
                "baseline": False,
                "num_references": 0,
                "device": "cpu",
            },
        }
    )
    run = RunDir.create(config, argv=["test"])
    prepared = prepare_data(config, run)
    tokenizer = load_tokenizer(prepared.data_dir / "tokenizer")
    train_model(
        prepared.train, config=config.train, tokenizer=tokenizer, out_dir=run.path / "target",
        seed=4, max_length=48, dp=False, progress=False,
    )  # fmt: skip
    scorer = load_scoring_model(run.path / "target", config, progress=False)
    scores, _ = canary_scores(scorer, prepared.one_run, config)
    return float(roc_auc_score([c.included for c in prepared.one_run], scores))


@pytest.mark.slow
def test_new_token_canaries_separate_where_random_secrets_do_not(tmp_path):
    """Same corpus, seed, coins and training: only the canary design differs."""
    new_token = _auc_after_training(tmp_path, "new-token", 8, "secret")
    random_secret = _auc_after_training(tmp_path, "random-secret", 0, "text")
    assert new_token > 0.9
    assert random_secret < new_token - 0.15
