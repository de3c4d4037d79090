"""The files of ``attacks/``: membership-inference metrics, the blind baseline, canaries,
memorization, PII leakage and the recovered secrets.

Public files (``canary.json``, ``pii.json``, ...) never hold a secret or a PII
value: :class:`CanaryFile` and :class:`PiiFile` refuse one. The same results
with the secrets go to ``recovered.json`` (:class:`RecoveredFile`), read only by
the auditor and by reports built with reveal.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import SerializerFunctionWrapHandler, model_serializer, model_validator

from dpaudit.runfiles.base import JsonFloat, RunFile, RunModel, describe

__all__ = [
    "AttackMetricsFile",
    "BlindFile",
    "CanaryEntry",
    "CanaryFile",
    "CanaryResults",
    "ExposureStats",
    "ExtractionStats",
    "LabelOnly",
    "MemorizationFile",
    "PiiExtractionEntry",
    "PiiFile",
    "PiiRankingEntry",
    "PiiResults",
    "RecoveredFile",
    "ScoringScope",
    "StatusFile",
]

Interval = tuple[JsonFloat, JsonFloat]


# -- membership inference ----------------------------------------------------------------------


class TprAtFpr(RunModel):
    """The largest TPR whose FPR is at most one budget."""

    tpr: JsonFloat = describe("True-positive rate.")
    ci: Interval = describe('Stratified-bootstrap interval (`"nan"` without bootstrap).')


class AttackMetricsFile(RunFile):
    """ROC statistics of one membership-inference attack (`AttackMetrics.to_dict()`).

    Recomputed from `scores.parquet` beside it (columns `id`, `is_member`,
    `score`; no text), which is the attack's source of truth.
    """

    KIND: ClassVar[str] = "attack metrics.json"
    PATH: ClassVar[str] = "attacks/<model>/<attack>/metrics.json"

    auc: JsonFloat = describe("Area under the ROC curve (0.5 = chance).")
    auc_ci: Interval = describe("Stratified-bootstrap interval of the AUC.")
    tpr_at_fpr: dict[str, TprAtFpr] = describe(
        'FPR budget as `repr(float)` (`"0.001"`) → TPR at that budget.', keys="fpr"
    )
    balanced_accuracy: JsonFloat = describe(
        "Best-threshold balanced accuracy (in-sample, optimistic)."
    )
    balanced_accuracy_ci: Interval = describe("Its bootstrap interval.")
    n_member: int = describe("Members scored.")
    n_nonmember: int = describe("Non-members scored.")
    roc: dict[str, list[JsonFloat]] = describe(
        "`fpr` and `tpr`: every point of the ROC curve.", keys="axis", default_factory=dict
    )
    ci_level: JsonFloat = describe("Coverage of the intervals.", default=0.95)
    n_bootstrap: int = describe("Bootstrap resamples (0: none).", default=0)
    seed: int = describe("Seed of the bootstrap.", default=0)


class LabelOnly(RunModel):
    """The label-only check of a classifier's evaluated sample (`LabelBaselineResult.to_dict()`).

    Each example is scored by the share of members among the examples with its
    label; the AUC of that score is the most any function of the label alone
    reaches on the sample. Above `warn_above` the attack AUCs are confounded by
    labels.
    """

    auc: JsonFloat = describe(
        "AUC of the label member rate (0.5: members and non-members carry the same label mix)."
    )
    member_labels: dict[str, int] = describe("Label → members with it.", keys="label")
    nonmember_labels: dict[str, int] = describe("Label → non-members with it.", keys="label")
    warn_above: JsonFloat = describe("The threshold of `warning`.")
    warning: str | None = describe(
        "Why attack AUCs are confounded by labels (the AUC exceeds `warn_above`), or `null`."
    )
    method: str = describe("What was computed, in one line.")


class BlindFile(RunFile):
    """The model-free split check (`BlindBaselineResult.to_dict()`).

    A text classifier told members from non-members without the model: an AUC
    well above 0.5 means the split itself is distinguishable and attack numbers
    on it are inflated.
    """

    KIND: ClassVar[str] = "blind.json"
    PATH: ClassVar[str] = "attacks/blind.json"

    auc: JsonFloat = describe(
        "AUC of members vs non-members from the texts alone (0.5: the split is fair)."
    )
    auc_ci: Interval = describe("Bootstrap interval, widened for cross-validation.")
    n_member: int = describe("Member texts.")
    n_nonmember: int = describe("Non-member texts.")
    folds: int = describe("Cross-validation folds used.")
    confidence: JsonFloat = describe("Level of `auc_ci`.")
    warning: str | None = describe(
        "Why the split is suspect (attack numbers are then inflated), or `null`."
    )
    method: str = describe("What was computed, in one line.")
    label_only: LabelOnly | None = describe(
        "The label-only check of a classifier's evaluated sample (`null`: a language model).",
        default=None,
    )


ScopeBasis = Literal["attack.max_length", "fine-tuning", "context"]

_BASIS_TEXT: dict[str, str] = {
    "attack.max_length": "attack.max_length; membership past it is not measured",
    "fine-tuning": "the length the model was fine-tuned at: it never saw the rest; raise "
    "data.max_length to train and audit whole texts",
    "context": "the model's context; membership past it is not measured",
}


class ScoringScope(RunModel):
    """How much of each audited text the membership-inference attacks scored.

    Each text is scored on its first `max_length` tokens; the counts say how
    many of the members and non-members the attacks scored lost tokens to that
    truncation (all zero: every text was scored whole).
    """

    max_length: int = describe("Tokens of each text scored (longer texts keep their first ones).")
    basis: ScopeBasis = describe(
        "Where `max_length` comes from: `attack.max_length` (set), `fine-tuning` (the length "
        "dpaudit trained the model at, from its `complete.json`) or `context` (the model's "
        "positions, at most 2048)."
    )
    n_member: int = describe("Members scored.")
    n_nonmember: int = describe("Non-members scored.")
    members_truncated: int = describe("Members that lost tokens to truncation.")
    nonmembers_truncated: int = describe("Non-members that lost tokens to truncation.")
    member_tokens_cut: int = describe("Tokens truncation dropped from the members, in all.")
    nonmember_tokens_cut: int = describe("Tokens truncation dropped from the non-members, in all.")

    def warning(self) -> str | None:
        """One line for the console and the report when truncation dropped tokens, else ``None``."""
        if not (self.members_truncated or self.nonmembers_truncated):
            return None
        return (
            f"truncation removed tokens from {self.members_truncated} of {self.n_member} members "
            f"and {self.nonmembers_truncated} of {self.n_nonmember} non-members (scored up to "
            f"{self.max_length} tokens, {_BASIS_TEXT[self.basis]})"
        )


class StatusFile(RunFile):
    """What became of each configured membership-inference attack and of the stage's other parts."""

    KIND: ClassVar[str] = "status.json"
    PATH: ClassVar[str] = "attacks/<model>/status.json"

    attacks: dict[str, str] = describe(
        "Attack → `done`, or `skipped: <reason>` (what it needs is missing: docs/decisions.md, "
        '"Unmet preconditions").',
        keys="attack",
        default_factory=dict,
    )
    parts: dict[str, str] = describe(
        "Other part of the stage that ran (`blind`, `canary`, `memorization`, `pii`) → `done`, "
        "`skipped: <reason>`, or what became of it (`{}`: not recorded).",
        keys="part",
        default_factory=dict,
    )
    scope: ScoringScope | None = describe(
        "How much of each text the attacks scored, and how many texts truncation cut "
        "(`null`: not recorded).",
        default=None,
    )


# -- canaries ----------------------------------------------------------------------------------


class CanaryEntry(RunModel):
    """Exposure and extraction of one Secret-Sharer canary (`CanaryResult.to_dict()`)."""

    canary_id: str = describe("The canary.")
    repetitions: int = describe("Copies it would have in training.")
    included: bool = describe("Whether it was inserted.")
    insertions: int = describe("Copies actually in training: `repetitions` if included, else 0.")
    exposure: JsonFloat = describe("Exposure in bits: log2|R| − log2 rank (or its extrapolation).")
    method: str = describe("`exact` (enumerated) or `extrapolated` (skew-normal fit).")
    rank: int | None = describe("1-based rank of the secret among all of R (exact only).")
    space_size: int = describe("|R|, the size of the secret space.")
    extracted: bool | None = describe(
        "Greedy decoding from the prefix reproduced the secret (`null`: not tried).", default=None
    )
    secret_space: str = describe("The secret space spec (`digits:6`).", default="")
    logppl: JsonFloat = describe(
        "Log-perplexity of the canary in nats, over `scope`.", default=float("nan")
    )
    scope: str = describe(
        "Tokens `logppl` counts: `secret`, `separator+secret` or `text`.", default="text"
    )
    n_candidates: int = describe("Candidates scored (|R| or the sample size).", default=0)
    enumeration: str | None = describe(
        "How an exact exposure scored R: `prefix-tree` (one cached forward per shared token "
        "prefix) or `per-candidate`; `null` when extrapolated or not recorded.",
        default=None,
    )
    secret: str = describe(
        'The secret in `recovered.json`; `"<N> symbols, masked"` in public files.', default=""
    )


class ExposureStats(RunModel):
    """Exposure (bits) of the canaries with one number of insertions."""

    mean: JsonFloat = describe("Mean exposure.")
    median: JsonFloat = describe("Median exposure.")
    min: JsonFloat = describe("Lowest exposure.")
    max: JsonFloat = describe("Highest exposure.")
    n: int = describe("Canaries.")


class ExtractionStats(RunModel):
    """Extraction success of one decoding strategy."""

    rate: JsonFloat = describe("Share of canaries extracted.")
    extracted: int = describe("Canaries extracted.")
    n: int = describe("Canaries tried.")


class CanaryResults(RunModel):
    """Secret-Sharer canaries: per-canary results and summaries (empty without canaries)."""

    results: list[CanaryEntry] = describe("One entry per canary.", default_factory=list)
    exposure_by_repetition: dict[str, ExposureStats] = describe(
        'Insertions (`"0"`: never inserted, the chance level) → exposure statistics.',
        keys="insertions",
        default_factory=dict,
    )
    extraction: dict[str, dict[str, ExtractionStats]] = describe(
        "Insertions → decoding strategy (`greedy`, `beam`, `sample`) → extraction success.",
        keys="insertions,strategy",
        default_factory=dict,
    )


_MASKED = re.compile(r"^\S+ symbols, masked$")


class CanaryFile(CanaryResults, RunFile):
    """Secret-Sharer canary exposure and extraction, without the secrets."""

    KIND: ClassVar[str] = "canary.json"
    PATH: ClassVar[str] = "attacks/<model>/canary.json"

    @model_validator(mode="after")
    def _masked(self) -> CanaryFile:
        for r in self.results:
            if not _MASKED.match(r.secret):
                raise ValueError(
                    f"canary {r.canary_id!r}: a public canary.json holds masked secrets only"
                )
        return self


# -- memorization ------------------------------------------------------------------------------


class DuplicationRate(RunModel):
    """Memorization of the records with one number of copies in training."""

    rate: JsonFloat = describe("Share memorized.")
    n: int = describe("Records evaluated.")


class MemorizationFile(RunFile):
    """Verbatim memorization of the training records (`MemorizationResult.to_dict()`): ids, no text."""

    KIND: ClassVar[str] = "memorization.json"
    PATH: ClassVar[str] = "attacks/<model>/memorization.json"

    rate: JsonFloat = describe(
        "Share of records whose greedy continuation reproduces their next `suffix_tokens` tokens."
    )
    n_evaluated: int = describe("Records long enough to test.")
    n_skipped_too_short: int = describe("Records too short to test.")
    memorized_ids: list[str] = describe("Ids of the memorized records, in input order.")
    by_duplication: dict[str, DuplicationRate] = describe(
        "Copies in training → memorization.", keys="copies"
    )
    prefix_tokens: int = describe("Prompt length k.")
    suffix_tokens: int = describe("Tokens that must match, n.")


# -- PII ---------------------------------------------------------------------------------------


class KindCounts(RunModel):
    """Distinct PII values of one kind."""

    detected: int = describe("Distinct values tagged in the generations.")
    truth: int = describe("Distinct values in the training records.")
    matched: int = describe("Distinct training values tagged.")
    precision: JsonFloat = describe("matched / detected.")
    recall: JsonFloat = describe("matched / truth.")


class BucketCounts(RunModel):
    """Distinct training PII values of one duplication bucket."""

    truth: int = describe("Distinct values.")
    matched: int = describe("Values that leaked.")
    recall: JsonFloat = describe("matched / truth.")


class LeakedEntry(RunModel):
    """One training PII value found in sampled text (`recovered.json` only)."""

    kind: str = describe("PII kind.")
    value: str = describe("The value (sensitive).")
    duplicates: int = describe("Training records that contain it.")
    times_generated: int = describe("Generations in which it was tagged.")


class PiiExtractionEntry(RunModel):
    """The PII extraction game (`PiiExtractionResult.to_dict()`; Lukas et al. 2023)."""

    attack: str = describe("`pii_extraction`.", default="pii_extraction")
    params: dict[str, Any] = describe("Sampling and tagging settings (no prompt text, no PII).")
    n_generations: int = describe("Generations sampled.")
    n_mentions: int = describe("PII spans tagged in them, repeats included.")
    precision: JsonFloat = describe(
        "Distinct tagged values that are training PII / distinct tagged values."
    )
    recall: JsonFloat = describe("Distinct training values tagged / distinct training values.")
    n_leaked: int = describe("Training values tagged.")
    per_kind: dict[str, KindCounts] = describe("PII kind → counts.", keys="kind")
    by_duplicates: dict[str, BucketCounts] = describe(
        "Duplication bucket (`1`, `2-3`, `4-7`, ...) → recall.", keys="bucket"
    )
    revealed: bool = describe("`leaked` is listed (only in `recovered.json`).", default=False)
    leaked: list[LeakedEntry] | None = describe(
        "The leaked values (`recovered.json` only; absent from `pii.json`).", default=None
    )

    @model_serializer(mode="wrap")
    def _no_leaked(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("leaked") is None:
            data.pop("leaked", None)
        return dict(data)


class RankedEntry(RunModel):
    """How one record's masked PII value ranked among its candidates."""

    record_id: str = describe("The record.")
    n_candidates: int = describe("Distinct candidates ranked.")
    rank: int | None = describe("1-based rank of the true value (`null`: not a candidate).")
    credit: JsonFloat = describe("Top-1 credit.")
    duplicates: int | None = describe("Training records containing the true value.")
    truth: str | None = describe(
        "The true value (`recovered.json` only; absent from `pii.json`).", default=None
    )
    guess: str | None = describe(
        "The top-ranked value, `null` when none (`recovered.json` only; absent from `pii.json`).",
        default=None,
    )

    @model_serializer(mode="wrap")
    def _public(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("truth") is None:
            data.pop("truth", None)
            data.pop("guess", None)
        return dict(data)


class PiiBucketAccuracy(RunModel):
    """Ranking accuracy over the records of one duplication bucket."""

    n: int = describe("Records.")
    accuracy: JsonFloat = describe("Mean top-1 credit.")
    chance: JsonFloat = describe("Mean credit of a random pick.")


class PiiRankingEntry(RunModel):
    """A PII reconstruction or inference game (`PiiRankingResult.to_dict()`)."""

    attack: str = describe("`pii_reconstruction` or `pii_inference`.")
    kind: str = describe("PII kind masked.")
    params: dict[str, Any] = describe("The attack's settings.")
    n_records: int = describe("Records ranked.")
    n_skipped: int = describe("Records without a value of `kind`.")
    accuracy: JsonFloat = describe("Mean top-1 credit.")
    chance: JsonFloat = describe("Mean credit of a random pick (1/|candidates|).")
    true_in_candidates: JsonFloat = describe(
        "Share of records whose candidates contain the true value (accuracy's ceiling)."
    )
    mean_candidates: JsonFloat = describe("Mean number of candidates.")
    by_duplicates: dict[str, PiiBucketAccuracy] = describe(
        "Duplication bucket of the true value → accuracy.", keys="bucket"
    )
    records: list[RankedEntry] = describe("One entry per record ranked.")
    revealed: bool = describe(
        "Records list `truth` and `guess` (only in `recovered.json`).", default=False
    )


class PiiResults(RunModel):
    """PII leakage games of one model (each `null` when not played)."""

    detector: str | None = describe(
        "Where the members' PII came from: `annotated` (the records' `pii` spans), `regex` "
        "(dpaudit's regex and checksum recognizers, run because no member was annotated), "
        "`presidio` (those plus Presidio's name tagger, when importable); `null`: not recorded.",
        default=None,
    )
    n_members: int | None = describe("Members examined for PII.", default=None)
    members_with_pii: int | None = describe(
        "Members holding at least one PII value (annotated or detected).", default=None
    )
    unmeasured: str | None = describe(
        "Why PII leakage was not measured, e.g. no PII found in the members (`null`: measured).",
        default=None,
    )
    skipped: dict[str, str] = describe(
        "Game → why it was not played (e.g. too few distinct values for distractors).",
        keys="game",
        default_factory=dict,
    )
    extraction: PiiExtractionEntry | None = describe(
        "Training PII values found in sampled text.", default=None
    )
    inference: PiiRankingEntry | None = describe(
        "Masked PII of training records, ranked among candidates.", default=None
    )
    inference_heldout: PiiRankingEntry | None = describe(
        "The same game on held-out records (the control).", default=None
    )
    reconstruction: PiiRankingEntry | None = describe(
        "Masked PII reconstructed from the model's own candidates.", default=None
    )

    def rankings(self) -> dict[str, PiiRankingEntry]:
        """Every ranking game played, by key."""
        return {
            name: game
            for name in ("inference", "inference_heldout", "reconstruction")
            if (game := getattr(self, name)) is not None
        }


class PiiFile(PiiResults, RunFile):
    """PII leakage: counts and rates only, never a PII value."""

    KIND: ClassVar[str] = "pii.json"
    PATH: ClassVar[str] = "attacks/<model>/pii.json"

    @model_validator(mode="after")
    def _public(self) -> PiiFile:
        ex = self.extraction
        if ex is not None and (ex.revealed or ex.leaked is not None):
            raise ValueError("extraction: a public pii.json lists no leaked values")
        for name, game in self.rankings().items():
            if game.revealed or any(
                r.truth is not None or r.guess is not None for r in game.records
            ):
                raise ValueError(f"{name}: a public pii.json lists no true or guessed values")
        return self


class RecoveredFile(RunFile):
    """The canary and PII results with the recovered secrets and PII values (sensitive).

    Read only by the auditor and by reports built with reveal.
    """

    KIND: ClassVar[str] = "recovered.json"
    PATH: ClassVar[str] = "attacks/<model>/recovered.json"

    canary: CanaryResults | None = describe(
        "`canary.json` with the secrets (`null`: canaries not run).", default=None
    )
    pii: PiiResults | None = describe(
        "`pii.json` with the leaked and inferred values (`null`: PII attacks not run).",
        default=None,
    )
