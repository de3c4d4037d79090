"""Score-based membership inference attacks on token log-probabilities and classifier outputs.

Each attack turns a model's view of an example into one number per example,
oriented so that a higher score means "more likely a member"
(docs/formulas.md#membership-scores). The maths lives in small pure functions over
log-probability arrays; the :class:`Attack` classes only fetch what the model
computes (one cached forward pass shared by every log-probability attack, see
:class:`~dpaudit.attacks.scoring.HFScoringModel`) and package the result as
:class:`~dpaudit.attacks.scores.AttackScores`.

Orientation, per attack (n scored tokens, ``lp_t = log p(x_t | x_<t)``):

- ``loss``: ``(1/n) Σ lp_t`` — the negated cross-entropy; members are fitted better.
- ``zlib``: ``loss / zlib_bytes``. Carlini et al. rank by ``zlib_bytes / log-perplexity``
  (high = memorised); since ``log-perplexity = −loss > 0``, our score equals
  ``−1 / (their metric)``, a strictly increasing function of it, so the
  ranking is identical.
- ``lowercase``: ``log-ppl(lower(x)) / log-ppl(x)``, Carlini et al.'s metric
  unchanged: a memorised text is much easier in its original casing.
- ``mink`` / ``minkpp``: mean of the lowest ``max(1, ⌊k·n⌋)`` values; higher
  (fewer surprising tokens) = member.
- ``reference``: ``loss_target − mean_r loss_ref_r``; high = the target fits the
  example better than models that never saw it.
- ``clf_loss``: ``log softmax(logits)[y]`` (the negated cross-entropy);
  ``clf_confidence``: ``softmax(logits)[y]`` = ``exp`` of it, the same ranking for
  any number of classes (``ranks_like = "clf_loss"``: not a default attack).

Every attack class declares, as class variables, the model it attacks
(``task``: ``"causal_lm"`` or ``"classification"``) and what its ``score``
needs besides the target (``needs_references``, ``needs_ref_membership``,
``needs_population``); its parameters are dataclass fields with a
``metadata={"help": ...}`` (configurable as ``[attack.params.<name>]``).
:mod:`dpaudit.attacks.registry` reads these declarations.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from dpaudit.attacks.scores import AttackScores
from dpaudit.attacks.scoring import ScoringModel, TokenStats
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, PreconditionError

# -- pure statistics -----------------------------------------------------------------


def mean_logprob(logprobs: np.ndarray) -> float:
    """LOSS statistic (Yeom et al. 2018): mean token log-probability."""
    return float(np.mean(logprobs))


def zlib_bytes(text: str) -> int:
    """Length in bytes of ``zlib.compress(text.encode("utf-8"))`` at the default level."""
    return len(zlib.compress(text.encode("utf-8")))


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the lowest ``max(1, ⌊k·n⌋)`` of ``n`` values (Shi et al. 2024)."""
    count = max(1, int(np.floor(k * len(values))))
    return float(np.mean(np.sort(values)[:count]))


def minkpp_z(stats: TokenStats) -> np.ndarray:
    """Per-token min-k%++ statistic ``(log p(x_t) − μ_t) / σ_t`` (Zhang et al. 2025).

    ``μ_t``, ``σ_t`` are the mean and standard deviation of ``log p`` over the
    vocabulary under ``p`` itself. Where ``σ_t = 0`` (a point-mass
    distribution) the token scores 0 when it is the certain token and a very
    large negative number otherwise (the divisor is floored at 1e-12).
    """
    return (stats.logprobs - stats.mu) / np.maximum(stats.sigma, 1e-12)


# -- the attack interface --------------------------------------------------------------


@runtime_checkable
class Attack(Protocol):
    """A membership inference attack: one score per example, higher = more likely member.

    Class variables:
        name: the registry name (configs, CLI, output directories).
        task: the model attacked, ``"causal_lm"`` or ``"classification"``.
        needs_references: ``score`` takes ``references`` (reference models).
        needs_ref_membership: ``score`` takes ``ref_membership``
            ((examples × references) bool: which reference trained on which example).
        needs_population: ``score`` takes ``population`` (records no reference trained on).
        legacy_fields: parameter → the ``[attack]`` scalar setting that feeds it
            when ``[attack.params.<name>]`` does not set it (``{"k": "mink_k"}``).
        ranks_like: optional; the name of an attack whose scores this one
            transforms by a strictly increasing function (same ranking, so the
            same ROC, AUC and TPRs): it is left out of the default attack lists
            and skipped, with that reason, when both are asked for.

    An attack may also define ``unmet(*, ref_membership, n_population) -> str | None``
    (what else it lacks on these inputs; see ``_Base.unmet``), and raises
    :class:`~dpaudit.errors.PreconditionError` from ``score`` for an input it
    cannot work with: the attack stage then skips it with the reason.
    """

    name: ClassVar[str]
    task: ClassVar[str]
    needs_references: ClassVar[bool]
    needs_ref_membership: ClassVar[bool]
    needs_population: ClassVar[bool]

    @property
    def params(self) -> dict[str, Any]:
        """The attack's settings (what :func:`~dpaudit.attacks.registry.get_attack` takes)."""
        ...

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
    ) -> AttackScores:
        """Score ``examples`` against ``model``; ``is_member`` is carried through to the result."""
        ...


class _Base:
    """Shared plumbing: declarations, parameters, input checks and packaging of the scores."""

    name: ClassVar[str] = ""
    task: ClassVar[str] = "causal_lm"
    needs_references: ClassVar[bool] = False
    needs_ref_membership: ClassVar[bool] = False
    needs_population: ClassVar[bool] = False
    legacy_fields: ClassVar[Mapping[str, str]] = {}
    ranks_like: ClassVar[str | None] = None

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def unmet(
        self, *, ref_membership: np.ndarray | None = None, n_population: int = 0
    ) -> str | None:
        """Why this attack cannot run on these inputs beyond its declared needs, or ``None``.

        The attack stage plans with it before any model is loaded, and the
        checkpoint audit before references are trained (LiRA: IN and OUT
        references per example). Optional for plug-ins; ``score`` raises
        :class:`~dpaudit.errors.PreconditionError` with the same reason.
        """
        return None

    def _package(
        self,
        examples: Sequence[Record],
        scores: Sequence[float] | np.ndarray,
        is_member: Sequence[bool],
    ) -> AttackScores:
        return AttackScores(
            attack=self.name,
            params=self.params,
            example_ids=tuple(r.id for r in examples),
            scores=np.asarray(scores, dtype=np.float64),
            is_member=np.asarray(is_member, dtype=bool),
        )

    def _check(self, examples: Sequence[Record], is_member: Sequence[bool]) -> None:
        if len(examples) != len(is_member):
            raise DpauditError(
                f"attack {self.name!r}: {len(examples)} examples but {len(is_member)} membership labels"
            )


def _require_tokens(
    attack: str, examples: Sequence[Record], arrays: Sequence[np.ndarray], what: str = ""
) -> None:
    empty = [r.id for r, a in zip(examples, arrays, strict=True) if len(a) == 0]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise PreconditionError(
            f"attack {attack!r}: {len(empty)} example(s) have fewer than 2 tokens{what}, "
            f"so no token can be scored: {shown}"
        )


class _LogprobAttack(_Base):
    """An attack that maps each example's token log-probabilities to one number."""

    def _statistic(self, logprobs: np.ndarray, text: str) -> float:
        raise NotImplementedError

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
    ) -> AttackScores:
        self._check(examples, is_member)
        logprobs = model.token_logprobs([r.text for r in examples])
        _require_tokens(self.name, examples, logprobs)
        scores = [self._statistic(lp, r.text) for lp, r in zip(logprobs, examples, strict=True)]
        return self._package(examples, scores, is_member)


def _check_k(attack: Any) -> None:
    """Validate ``attack.k`` and store it as a float (a TOML ``1`` becomes ``1.0``)."""
    k = attack.k
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
        raise DpauditError(f"attack {attack.name!r}: k must lie in (0, 1], got {k!r}")
    object.__setattr__(attack, "k", float(k))


# -- log-probability attacks ------------------------------------------------------------


@dataclass(frozen=True)
class LossAttack(_LogprobAttack):
    """LOSS attack (Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing
    the Connection to Overfitting"): score = ``(1/n) Σ_t log p(x_t | x_<t)``."""

    name: ClassVar[str] = "loss"
    task: ClassVar[str] = "causal_lm"

    def _statistic(self, logprobs: np.ndarray, text: str) -> float:
        return mean_logprob(logprobs)


@dataclass(frozen=True)
class ZlibAttack(_LogprobAttack):
    """zlib-entropy calibration (Carlini et al. 2021, "Extracting Training Data from
    Large Language Models", §5): score = ``LOSS / len(zlib.compress(text))``.

    The paper ranks by ``zlib_bytes / log-perplexity``; with ``log-perplexity =
    −LOSS > 0`` our score is ``−1/metric``, which orders examples identically
    while keeping LOSS's sign convention (higher = member).
    """

    name: ClassVar[str] = "zlib"
    task: ClassVar[str] = "causal_lm"

    def _statistic(self, logprobs: np.ndarray, text: str) -> float:
        return mean_logprob(logprobs) / zlib_bytes(text)


@dataclass(frozen=True)
class MinKAttack(_LogprobAttack):
    """Min-k% Prob (Shi et al. 2024, "Detecting Pretraining Data from Large Language
    Models"): mean of the lowest ``max(1, ⌊k·n⌋)`` token log-probabilities.

    With ``k = 1`` it equals LOSS.
    """

    name: ClassVar[str] = "mink"
    task: ClassVar[str] = "causal_lm"
    legacy_fields: ClassVar[Mapping[str, str]] = {"k": "mink_k"}
    k: float = field(
        default=0.2,
        metadata={"help": "Fraction k of lowest-scoring tokens averaged, in (0, 1]"},
    )

    def __post_init__(self) -> None:
        _check_k(self)

    def _statistic(self, logprobs: np.ndarray, text: str) -> float:
        return lowest_k_mean(logprobs, self.k)


@dataclass(frozen=True)
class MinKPlusPlusAttack(_Base):
    """Min-k%++ (Zhang et al. 2025, "Min-K%++: Improved Baseline for Detecting
    Pre-Training Data from Large Language Models"): per token
    ``z_t = (log p(x_t) − μ_t) / σ_t`` with ``μ_t = E_{v∼p}[log p(v)]`` and
    ``σ_t² = Var_{v∼p}[log p(v)]`` for the next-token distribution ``p``; the
    score is the mean of the lowest ``max(1, ⌊k·n⌋)`` values of ``z``.
    """

    name: ClassVar[str] = "minkpp"
    task: ClassVar[str] = "causal_lm"
    legacy_fields: ClassVar[Mapping[str, str]] = {"k": "mink_k"}
    k: float = field(
        default=0.2,
        metadata={"help": "Fraction k of lowest-scoring tokens averaged, in (0, 1]"},
    )

    def __post_init__(self) -> None:
        _check_k(self)

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
    ) -> AttackScores:
        self._check(examples, is_member)
        stats = model.token_stats([r.text for r in examples])
        _require_tokens(self.name, examples, [s.logprobs for s in stats])
        return self._package(
            examples, [lowest_k_mean(minkpp_z(s), self.k) for s in stats], is_member
        )


@dataclass(frozen=True)
class LowercaseAttack(_Base):
    """Lowercase calibration (Carlini et al. 2021, "Extracting Training Data from
    Large Language Models", §5): score = ``log-ppl(lower(x)) / log-ppl(x)`` with
    ``log-ppl = −LOSS``.

    This is the paper's metric as is: a memorised text is much more likely in
    its original casing than lowercased, so higher = member. The denominator is
    floored at 1e-12 so that a perfectly predicted text gives a large finite score.
    """

    name: ClassVar[str] = "lowercase"
    task: ClassVar[str] = "causal_lm"

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
    ) -> AttackScores:
        self._check(examples, is_member)
        original = model.token_logprobs([r.text for r in examples])
        lowered = model.token_logprobs([r.text.lower() for r in examples])
        _require_tokens(self.name, examples, original)
        _require_tokens(self.name, examples, lowered, " once lowercased")
        scores = [
            -mean_logprob(low) / max(-mean_logprob(orig), 1e-12)
            for orig, low in zip(original, lowered, strict=True)
        ]
        return self._package(examples, scores, is_member)


@dataclass(frozen=True)
class ReferenceAttack(_Base):
    """Reference-model calibration (Carlini et al. 2021, "Extracting Training Data
    from Large Language Models"; Watson et al. 2022, "On the Importance of
    Difficulty Calibration in Membership Inference Attacks"):
    score = ``LOSS_target(x) − (1/R) Σ_r LOSS_ref_r(x)``.

    With several reference models their LOSS values are averaged (Watson et
    al.'s calibration by the mean reference loss).
    """

    name: ClassVar[str] = "reference"
    task: ClassVar[str] = "causal_lm"
    needs_references: ClassVar[bool] = True

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
    ) -> AttackScores:
        self._check(examples, is_member)
        if not references:
            raise PreconditionError("attack 'reference' needs at least one reference model")
        texts = [r.text for r in examples]
        target = model.token_logprobs(texts)
        _require_tokens(self.name, examples, target)
        ref_loss = np.mean(
            [[mean_logprob(lp) for lp in ref.token_logprobs(texts)] for ref in references], axis=0
        )
        scores = [mean_logprob(lp) - ref for lp, ref in zip(target, ref_loss, strict=True)]
        return self._package(examples, scores, is_member)


# -- classifier attacks -------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _ClassifierAttack(_Base):
    """An attack on a sequence classifier's log-probability of each example's true label."""

    task: ClassVar[str] = "classification"

    def _transform(self, true_logprob: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def score(
        self,
        model: ScoringModel,
        examples: Sequence[Record],
        *,
        is_member: Sequence[bool],
        references: Sequence[ScoringModel] | None = None,
    ) -> AttackScores:
        self._check(examples, is_member)
        unlabelled = [r.id for r in examples if r.label is None]
        if unlabelled:
            raise PreconditionError(
                f"attack {self.name!r} needs labelled examples; {len(unlabelled)} have none, e.g. {unlabelled[0]}"
            )
        labels = np.array([r.label for r in examples], dtype=np.int64)
        logits = np.asarray(model.classify([r.text for r in examples]), dtype=np.float64)
        if len(examples) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            raise DpauditError(f"attack {self.name!r}: labels must lie in 0..{logits.shape[1] - 1}")
        true_logp = _log_softmax(logits)[np.arange(len(labels)), labels]
        return self._package(examples, self._transform(true_logp), is_member)


@dataclass(frozen=True)
class ClassifierLossAttack(_ClassifierAttack):
    """LOSS attack on a classifier (Yeom et al. 2018): ``log softmax(logits)[y]``,
    the negated cross-entropy of the true label."""

    name: ClassVar[str] = "clf_loss"
    task: ClassVar[str] = "classification"

    def _transform(self, true_logprob: np.ndarray) -> np.ndarray:
        return true_logprob


@dataclass(frozen=True)
class ClassifierConfidenceAttack(_ClassifierAttack):
    """Confidence attack (Salem et al. 2019, "ML-Leaks"; Yeom et al. 2018):
    ``softmax(logits)[y]``, the probability of the true label.

    It is ``exp`` of ``clf_loss``'s score, for any number of classes: the same
    ranking, so the same ROC, AUC and TPRs. Kept registered for the name, but
    left out of the default classifier attacks and skipped beside ``clf_loss``
    (``ranks_like``).
    """

    name: ClassVar[str] = "clf_confidence"
    task: ClassVar[str] = "classification"
    ranks_like: ClassVar[str | None] = "clf_loss"

    def _transform(self, true_logprob: np.ndarray) -> np.ndarray:
        return np.exp(true_logprob)
