"""Membership inference attacks: contract (types, determinism, orientation) and hand computations.

Orientation is checked on a tiny GPT-2 (and a tiny GPT-2 classifier) overfitted
on 30 member texts; 30 non-members come from the same generator. Each model is
trained once per module.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.metrics import roc_auc_score  # noqa: E402

from dpaudit.attacks.mia import Attack, lowest_k_mean, minkpp_z, zlib_bytes  # noqa: E402
from dpaudit.attacks.registry import ATTACKS, CLASSIFIER_ATTACKS, NEEDS_REFERENCES, get_attack  # noqa: E402
from dpaudit.attacks.scores import AttackScores  # noqa: E402
from dpaudit.attacks.scoring import HFScoringModel, TokenStats, tiny_causal_lm, tiny_classifier  # noqa: E402
from dpaudit.datasets.records import Record  # noqa: E402
from dpaudit.datasets.tokenizer import train_bpe_tokenizer  # noqa: E402
from dpaudit.errors import DpauditError  # noqa: E402

FIRST = (
    "Alice",
    "Bruno",
    "Clara",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kiran",
    "Lena",
)
LAST = (
    "Smith",
    "Okafor",
    "Novak",
    "Garcia",
    "Tanaka",
    "Muller",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Silva",
)
CITY = ("Paris", "Lagos", "Osaka", "Berlin", "Lima", "Oslo", "Cairo", "Quebec")
DAY = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def make_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        text = (
            f"{rng.choice(FIRST)} {rng.choice(LAST)} from {rng.choice(CITY)} paid "
            f"{rng.integers(100, 9999)} EUR on {rng.choice(DAY)}, ref {rng.integers(1000, 99999)}."
        )
        if text not in out:
            out.append(text)
    return out


N = 30
_ALL = make_texts(3 * N, seed=0)
MEMBERS, NONMEMBERS, POPULATION = _ALL[:N], _ALL[N : 2 * N], _ALL[2 * N :]
_LABELS = np.random.default_rng(1).integers(0, 4, size=2 * N)
EXAMPLES = [
    Record(f"ex-{i:03d}", t, label=int(y))
    for i, (t, y) in enumerate(zip(MEMBERS + NONMEMBERS, _LABELS, strict=True))
]
IS_MEMBER = [True] * N + [False] * N


def overfit(
    model, tok, texts: list[str], labels=None, *, steps: int = 60, lr: float = 3e-3, seed: int = 0
):
    """Plain full-batch AdamW; a causal LM when ``labels`` is None, else a classifier.

    Runs on one thread: a model this small gains nothing from intra-op
    parallelism, and on a busy 2-core machine extra threads make it several
    times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        enc = tok(texts, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        target = ids.masked_fill(mask == 0, -100) if labels is None else torch.tensor(labels)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(_ALL, vocab_size=400)


def adapter(model, tok) -> HFScoringModel:
    return HFScoringModel(model, tok, device="cpu", batch_size=16, progress=False)


@pytest.fixture(scope="module")
def target_lm(tok):
    return overfit(tiny_causal_lm(tok, seed=0), tok, MEMBERS)


@pytest.fixture(scope="module")
def reference_lm(tok):
    return overfit(tiny_causal_lm(tok, seed=1), tok, POPULATION)


@pytest.fixture(scope="module")
def target_clf(tok):
    return overfit(
        tiny_classifier(tok, num_labels=4, seed=0), tok, MEMBERS, labels=_LABELS[:N].tolist()
    )


@pytest.fixture(scope="module")
def lm(target_lm, tok):
    """A shared adapter: its cache lets every attack reuse one forward pass."""
    return adapter(target_lm, tok)


@pytest.fixture(scope="module")
def references(reference_lm, tok):
    return [adapter(reference_lm, tok)]


# -- contract: every registered attack ---------------------------------------------------


class AttackContract:
    """Every attack implementation passes these; subclasses set ``name`` and ``params``."""

    name: str
    params: dict = {}

    @pytest.fixture
    def run(self, request, tok):
        """Score EXAMPLES with a fresh adapter (``fresh=True``) or the shared one."""

        def _run(fresh: bool = False) -> AttackScores:
            attack = get_attack(self.name, **self.params)
            if self.name in CLASSIFIER_ATTACKS:
                model = adapter(request.getfixturevalue("target_clf"), tok)
            else:
                model = (
                    adapter(request.getfixturevalue("target_lm"), tok)
                    if fresh
                    else request.getfixturevalue("lm")
                )
            refs = request.getfixturevalue("references") if self.name in NEEDS_REFERENCES else None
            return attack.score(model, EXAMPLES, is_member=IS_MEMBER, references=refs)

        return _run

    def test_is_an_attack(self):
        attack = get_attack(self.name, **self.params)
        assert isinstance(attack, Attack)
        assert attack.name == self.name
        assert {**get_attack(self.name).params, **self.params} == attack.params

    def test_returns_attack_scores(self, run):
        result = run()
        assert isinstance(result, AttackScores)
        assert result.attack == self.name
        assert result.example_ids == tuple(r.id for r in EXAMPLES)
        assert np.array_equal(result.is_member, np.array(IS_MEMBER))
        assert result.scores.shape == (len(EXAMPLES),)
        assert np.all(np.isfinite(result.scores))

    def test_deterministic(self, run):
        np.testing.assert_array_equal(run().scores, run(fresh=True).scores)

    def test_higher_is_member(self, run):
        scores = run().scores
        member, nonmember = scores[:N], scores[N:]
        assert member.mean() > nonmember.mean()
        assert roc_auc_score(IS_MEMBER, scores) > 0.8

    def test_rejects_mismatched_membership(self, lm):
        with pytest.raises(DpauditError, match="membership labels"):
            get_attack(self.name, **self.params).score(lm, EXAMPLES, is_member=IS_MEMBER[:-1])


class TestLoss(AttackContract):
    name = "loss"


class TestZlib(AttackContract):
    name = "zlib"


class TestLowercase(AttackContract):
    name = "lowercase"


class TestMinK(AttackContract):
    name = "mink"
    params = {"k": 0.2}


class TestMinKPlusPlus(AttackContract):
    name = "minkpp"
    params = {"k": 0.3}


class TestReference(AttackContract):
    name = "reference"


class TestClassifierLoss(AttackContract):
    name = "clf_loss"


class TestClassifierConfidence(AttackContract):
    name = "clf_confidence"


# Attacks that need reference membership or a population sample have their contract
# tests (types, ids, orientation, determinism, input errors) in test_lira.py / test_rmia.py.
CONTRACT_ELSEWHERE = {
    "lira": "test_lira.py",
    "clf_lira": "test_lira.py",
    "rmia": "test_rmia.py",
    "clf_rmia": "test_rmia.py",
}


def test_every_registered_attack_has_a_contract_test():
    tested = {cls.name for cls in AttackContract.__subclasses__()}
    assert tested | set(CONTRACT_ELSEWHERE) == set(ATTACKS)
    assert not tested & set(CONTRACT_ELSEWHERE)


# -- against independent computations ----------------------------------------------------


def _scores(name: str, model, **params) -> np.ndarray:
    return get_attack(name, **params).score(model, EXAMPLES, is_member=IS_MEMBER).scores


def test_loss_is_mean_token_logprob(lm):
    want = [np.mean(lp) for lp in lm.token_logprobs([r.text for r in EXAMPLES])]
    np.testing.assert_allclose(_scores("loss", lm), want, rtol=1e-12)


def test_mink_with_k_one_equals_loss(lm):
    np.testing.assert_allclose(_scores("mink", lm, k=1.0), _scores("loss", lm), rtol=1e-12)


def test_zlib_by_hand(lm):
    want = []
    for r in EXAMPLES:
        lp = lm.token_logprobs([r.text])[0]
        want.append(sum(lp) / len(lp) / len(zlib.compress(r.text.encode("utf-8"))))
    np.testing.assert_allclose(_scores("zlib", lm), want, rtol=1e-9)


def test_zlib_ranks_like_carlini_metric(lm):
    """Carlini et al. rank by zlib_bytes / log-perplexity (high = member); same order."""
    loss = _scores("loss", lm)
    paper = np.array([zlib_bytes(r.text) for r in EXAMPLES]) / -loss
    np.testing.assert_array_equal(np.argsort(_scores("zlib", lm)), np.argsort(paper))


def test_lowercase_by_hand(lm):
    got = _scores("lowercase", lm)
    for r, score in zip(EXAMPLES[:5], got[:5], strict=True):
        orig = -np.mean(lm.token_logprobs([r.text])[0])
        low = -np.mean(lm.token_logprobs([r.text.lower()])[0])
        assert score == pytest.approx(low / orig, rel=1e-9)


def test_minkpp_by_hand(target_lm, tok):
    """Min-k%++ from raw logits of one text, independent of the adapter."""
    r = EXAMPLES[0]
    ids = tok(r.text)["input_ids"]
    with torch.no_grad():
        logits = target_lm(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp**2).sum(-1) - mu**2).sqrt()
    z = ((logp[torch.arange(len(ids) - 1), ids[1:]] - mu) / sigma).numpy()
    k = 0.3
    want = np.sort(z)[: max(1, int(k * len(z)))].mean()
    got = get_attack("minkpp", k=k).score(adapter(target_lm, tok), [r], is_member=[True]).scores[0]
    assert got == pytest.approx(want, abs=1e-4)


def test_reference_by_hand(lm, references):
    got = (
        get_attack("reference")
        .score(lm, EXAMPLES, is_member=IS_MEMBER, references=references)
        .scores
    )
    np.testing.assert_allclose(
        got, _scores("loss", lm) - _scores("loss", references[0]), rtol=1e-12
    )
    two = (
        get_attack("reference")
        .score(lm, EXAMPLES, is_member=IS_MEMBER, references=[references[0], lm])
        .scores
    )
    np.testing.assert_allclose(
        two, (_scores("loss", lm) - _scores("loss", references[0])) / 2, atol=1e-12
    )


def test_reference_needs_references(lm):
    with pytest.raises(DpauditError, match="reference model"):
        get_attack("reference").score(lm, EXAMPLES, is_member=IS_MEMBER)


def test_classifier_attacks_by_hand(target_clf, tok):
    model = adapter(target_clf, tok)
    logits = model.classify([r.text for r in EXAMPLES])
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    true = probs[np.arange(len(EXAMPLES)), _LABELS]
    np.testing.assert_allclose(_scores("clf_confidence", model), true, rtol=1e-9)
    np.testing.assert_allclose(_scores("clf_loss", model), np.log(true), rtol=1e-9)


def test_classifier_attacks_need_labels(target_clf, tok):
    unlabelled = [Record("u-1", "no label here")]
    with pytest.raises(DpauditError, match="labelled"):
        get_attack("clf_loss").score(adapter(target_clf, tok), unlabelled, is_member=[False])


def test_too_short_example_is_named(lm):
    short = [Record("tiny-1", "a"), Record("ok-1", EXAMPLES[0].text)]
    with pytest.raises(DpauditError, match="tiny-1"):
        get_attack("loss").score(lm, short, is_member=[True, False])


# -- pure functions and registry ------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "k", "want"),
    [
        ([3.0, 1.0, 2.0, 4.0], 0.5, 1.5),
        ([3.0, 1.0, 2.0], 0.2, 1.0),
        ([5.0], 0.01, 5.0),
        ([1.0, 2.0], 1.0, 1.5),
    ],
)
def test_lowest_k_mean(values, k, want):
    assert lowest_k_mean(np.array(values), k) == pytest.approx(want)


def test_minkpp_z_point_mass_is_finite():
    stats = TokenStats(np.array([0.0, -1.0]), np.array([0.0, -1.0]), np.array([0.0, 0.5]))
    np.testing.assert_allclose(minkpp_z(stats), [0.0, 0.0])


def test_unknown_attack_suggests():
    with pytest.raises(DpauditError, match="did you mean 'mink'"):
        get_attack("minkk")


def test_unknown_parameter_suggests():
    with pytest.raises(DpauditError, match="did you mean 'k'"):
        get_attack("mink", kk=0.1)
    with pytest.raises(DpauditError, match="no parameters"):
        get_attack("loss", k=0.1)


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5, "0.2", True])
def test_k_out_of_range(k):
    with pytest.raises(DpauditError, match="k must lie"):
        get_attack("minkpp", k=k)


def test_integer_k_is_stored_as_float():
    assert get_attack("mink", k=1).params == {"k": 1.0}
