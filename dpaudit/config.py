"""Typed run configuration.

One frozen dataclass per subsystem (:class:`DataConfig`, :class:`TrainConfig`,
:class:`AttackConfig`, :class:`AuditConfig`, :class:`ReportConfig`) inside
:class:`RunConfig`. Every field carries a help string and, where it has one,
a validated range or a fixed set of choices, declared with :func:`option`.

Precedence, highest first: explicit CLI option > ``--set section.key=value``
> TOML file > defaults (:func:`load_config`). Unknown sections or keys are
errors with a did-you-mean suggestion.

Names that live in registries of higher layers (attacks and their
parameters, accountants, audit methods, report formats) are not checked
here: :func:`dpaudit.workflows.validate.check_config` checks them against the
registries, and :func:`dpaudit.workflows.validate.load_config` is this
module's :func:`load_config` followed by that check.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from dpaudit.errors import ConfigError, InputError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    allow_inf: bool = False,
) -> Any:
    """Declare a config field with its help text and validated range.

    A float must be finite (NaN never passes) unless ``allow_inf``: infinity
    then is a meaning the field declares (``train.target_epsilon = inf`` is
    non-private), still subject to the range.
    """
    meta = {
        "help": help,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "choices": choices,
        "allow_inf": allow_inf,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Mixin: validate every field against its declared range after init."""

    def __post_init__(self) -> None:
        section = getattr(self, "SECTION", type(self).__name__)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _check_field(section, f, getattr(self, f.name))
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; overridden by sections that need them."""


def _check_field(section: str, f: dataclasses.Field, value: Any) -> None:
    name = f"{section}.{f.name}"
    meta = f.metadata
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v is None:
            continue
        if meta.get("choices") is not None and v not in meta["choices"]:
            allowed = ", ".join(map(str, meta["choices"]))
            raise ConfigError(
                f"{name} = {v!r} is not one of: {allowed}{did_you_mean(str(v), map(str, meta['choices']))}",
                key=name,
            )
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if isinstance(v, float) and math.isnan(v):
                raise ConfigError(f"{name} must be a number, got nan", key=name)
            if isinstance(v, float) and math.isinf(v) and not meta.get("allow_inf"):
                raise ConfigError(f"{name} must be a finite number, got {v!r}", key=name)
            for key, ok, word in (
                ("ge", lambda a, b: a >= b, ">="),
                ("gt", lambda a, b: a > b, ">"),
                ("le", lambda a, b: a <= b, "<="),
                ("lt", lambda a, b: a < b, "<"),
            ):
                bound = meta.get(key)
                if bound is not None and not ok(v, bound):
                    raise ConfigError(f"{name} = {v!r} must be {word} {bound}", key=name)


@dataclass(frozen=True)
class DataConfig(_Section):
    """Where the training text comes from, how it is split, and what is planted in it."""

    SECTION = "data"
    path: str | None = option(
        None,
        "Dataset file (jsonl, csv, parquet, txt) or HF dataset directory; empty = synthesize one",
    )
    format: str = option(
        "auto",
        "File format; 'auto' infers it from the extension (.tsv/.tab = tsv)",
        choices=("auto", "jsonl", "csv", "tsv", "parquet", "text", "hf"),
    )
    delimiter: str | None = option(
        None, "CSV/TSV field delimiter (one character); empty = ',' for csv, tab for tsv"
    )
    label_map: dict[str, int] = option(
        {},
        "String labels to class indices, e.g. {positive = 1, negative = 0}; "
        "empty = labels must be integers",
    )
    text_field: str = option("text", "Column holding the text")
    label_field: str | None = option(None, "Column holding the class label (classifiers)")
    id_field: str | None = option(None, "Column holding a unique record id; empty = row number")
    user_field: str | None = option(None, "Column holding the user id (for user-level units)")
    synth_domain: str = option(
        "clinical",
        "Synthetic corpus domain when no path is given",
        choices=("clinical", "support", "banking"),
    )
    synth_n: int = option(2000, "Number of synthetic records when no path is given", ge=10)
    member_fraction: float = option(
        0.4, "Fraction of records trained on by the target (members)", gt=0, lt=1
    )
    nonmember_fraction: float = option(
        0.2, "Fraction held out as non-members for attack evaluation", gt=0, lt=1
    )
    canary_prefix: str = option("my secret code is ", "Context that precedes each canary secret")
    secret_space: str = option("digits:4", "Canary secret space: digits:N, alnum:N or words:N")
    canary_repetitions: list[int] = option(
        [1, 2, 4, 8, 16], "Repetition counts of Secret-Sharer canaries", ge=1
    )
    canaries_per_repetition: int = option(2, "Secret-Sharer canaries per repetition count", ge=0)
    one_run_canaries: int = option(
        200, "Canaries for the one-run audit, each included with probability 1/2", ge=0
    )
    canary_design: str = option(
        "new-token", "Design of the one-run audit canaries (a registered canary design)"
    )
    canary_prefix_tokens: int = option(
        32,
        "Random vocabulary tokens before each audit canary's secret; 0 = data.canary_prefix",
        ge=0,
    )
    canary_loss: str = option(
        "secret",
        "Tokens of an audit canary the LM training loss counts: its secret, or all its text",
        choices=("secret", "text"),
    )
    max_length: int = option(64, "Maximum tokens per training example", ge=8)
    tokenizer: str = option(
        "train", "'train' = train a BPE tokenizer on the training text; else a HF tokenizer path/id"
    )
    vocab_size: int = option(2000, "Vocabulary size of a trained tokenizer", ge=100)

    def validate(self) -> None:
        if self.member_fraction + self.nonmember_fraction >= 1:
            raise ConfigError(
                "data.member_fraction + data.nonmember_fraction must be < 1 "
                "(the rest is the population pool for reference models)",
                key="data.nonmember_fraction",
            )


@dataclass(frozen=True)
class TrainConfig(_Section):
    """How the target, baseline and reference models are fine-tuned."""

    SECTION = "train"
    model: str = option(
        "embedded:gpt2-tiny",
        "Hub id, local directory, package:…, or embedded:gpt2-tiny / embedded:bert-tiny / embedded:llama-tiny",
    )
    task: str = option(
        "causal_lm", "What the model learns", choices=("causal_lm", "classification")
    )
    num_labels: int = option(2, "Classes, for classification", ge=2)
    mode: str = option(
        "full",
        "Parameters trained: all, LoRA adapters, or the head/last layers",
        choices=("full", "lora", "head"),
    )
    lora_rank: int = option(8, "LoRA rank", ge=1)
    lora_alpha: float = option(16.0, "LoRA scaling alpha", gt=0)
    lora_targets: list[str] = option(
        [], "Module names to adapt with LoRA; empty = PEFT's default for the architecture"
    )
    dp: bool = option(True, "Train with DP-SGD (False = non-private)")
    unit: str = option(
        "example",
        "Unit of privacy of central DP-SGD: example, or user (records grouped by user, users "
        "Poisson-sampled at q = batch_size / users, one clipped mean gradient per user)",
        choices=("example", "user"),
    )
    target_epsilon: float = option(
        8.0,
        "Target epsilon; the noise multiplier is calibrated to reach it (inf = non-private)",
        gt=0,
        allow_inf=True,
    )
    noise_multiplier: float | None = option(
        None, "Noise multiplier sigma; overrides target_epsilon when set", ge=0
    )
    max_grad_norm: float = option(1.0, "Per-example clipping norm C", gt=0)
    delta: float | None = option(
        None,
        "Target delta; empty = min(1e-5, 1/n^1.1 rounded down to one significant digit); the report flags delta >= 1/n",
        gt=0,
        lt=1,
    )
    accountant: str = option(
        "pld", "Accountant used to calibrate noise and report epsilon (a registered accountant)"
    )
    allow_approximate_accountant: bool = option(
        False, "Allow calibrating noise with an approximate (non-rigorous) accountant"
    )
    poisson_sampling: bool = option(
        True, "Poisson sampling of batches (what the accountants assume)"
    )
    batch_size: int = option(
        64, "Expected logical batch size (sampling rate = batch_size / n)", ge=1
    )
    physical_batch_size: int = option(32, "Examples per forward/backward pass (memory bound)", ge=1)
    epochs: float = option(3.0, "Passes over the training set", gt=0)
    learning_rate: float = option(5e-3, "Learning rate", gt=0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    device: str = option("auto", "Device: auto (CUDA when present), cpu, cuda, cuda:N")
    precision: str = option("fp32", "Autocast precision on GPU", choices=("fp32", "bf16", "fp16"))
    grad_sample_mode: str = option(
        "hooks", "Opacus per-sample gradient mode", choices=("hooks", "ghost", "functorch", "ew")
    )
    baseline: bool = option(True, "Also train a non-private baseline with the same recipe")
    num_references: int = option(4, "Reference (shadow) models for calibrated attacks", ge=0)
    baseline_references: bool = option(
        False,
        "Also train num_references non-private reference models for the baseline's calibrated "
        "attacks (LiRA, RMIA and reference assume references trained like the attacked model); "
        "off: those attacks are skipped on the baseline, with the reason",
    )
    checkpoint_every: int = option(50, "Save a resumable checkpoint every N steps", ge=1)
    references_backend: str = option(
        "local",
        "Where reference models train: local (in this process, one after another) or ray "
        "(one Ray task each: a local Ray instance, or the cluster at references_ray_address)",
        choices=("local", "ray"),
    )
    references_ray_address: str | None = option(
        None,
        "references_backend = ray: address of an existing Ray cluster (ray.init(address=...), "
        "e.g. auto or ray://head:10001); unset = start a local Ray instance",
    )
    reference_cpus: float = option(
        1.0, "references_backend = ray: CPUs each reference task reserves", gt=0
    )
    reference_gpus: float = option(
        0.0,
        "references_backend = ray: GPUs each reference task reserves (1 = one whole GPU; the "
        "task then trains on cuda)",
        ge=0,
    )

    @property
    def private(self) -> bool:
        """Whether the target trains with DP-SGD (``dp`` and a finite target or a given sigma)."""
        return self.dp and (self.noise_multiplier is not None or math.isfinite(self.target_epsilon))

    def validate(self) -> None:
        if self.physical_batch_size > self.batch_size:
            raise ConfigError(
                "train.physical_batch_size must be <= train.batch_size",
                key="train.physical_batch_size",
            )


@dataclass(frozen=True)
class FederatedConfig(_Section):
    """Federated fine-tuning on Flower: clients, rounds and client-level DP (DP-FedAvg).

    With ``enabled``, the target and baseline are trained by federated averaging
    instead of central DP-SGD; ``train.dp``, ``train.target_epsilon``,
    ``train.noise_multiplier``, ``train.delta`` and ``train.accountant`` then
    describe the *client-level* mechanism (one client added or removed), with
    sampling rate q = clients_per_round / clients and T = rounds.
    """

    SECTION = "federated"
    enabled: bool = option(
        False, "Train target and baseline by federated averaging on Flower (client-level DP)"
    )
    partition: str = option(
        "user",
        "How training records become clients: one client per data.user_field value (user), "
        "label/domain-skewed Dirichlet (dirichlet) or random (iid)",
        choices=("user", "dirichlet", "iid"),
    )
    clients: int = option(20, "Number of clients for dirichlet and iid partitions", ge=2)
    dirichlet_alpha: float = option(
        0.5, "Dirichlet concentration alpha (small = more skewed)", gt=0
    )
    group_field: str = option(
        "domain", "Record field whose values are the classes of a Dirichlet partition of texts"
    )
    min_client_records: int = option(
        1, "Clients with fewer records are dropped (counted in the report)", ge=1
    )
    rounds: int = option(10, "Federated rounds T", ge=1)
    clients_per_round: int = option(
        5, "Expected clients per round m (Poisson sampling at q = m / clients)", ge=1
    )
    local_update: str = option(
        "train",
        "What a client returns: train (local AdamW epochs; FedAvg) or gradient (minus the mean "
        "gradient of up to local_batch_size of its records; FedSGD)",
        choices=("train", "gradient"),
    )
    local_epochs: float = option(1.0, "Passes over a client's records per round", gt=0)
    local_batch_size: int = option(8, "Local mini-batch size", ge=1)
    strategy: str = option(
        "fedavg",
        "Server strategy: fedavg; fedprox (clients add (mu/2)||w - w_global||^2); fedadam "
        "(Adam on the server, applied to the noised mean update: post-processing)",
        choices=("fedavg", "fedprox", "fedadam"),
    )
    fedadam_beta1: float = option(0.9, "FedAdam first-moment decay beta_1", ge=0, lt=1)
    fedadam_beta2: float = option(0.99, "FedAdam second-moment decay beta_2", ge=0, lt=1)
    fedadam_tau: float = option(1e-3, "FedAdam adaptivity tau (added to sqrt(v))", gt=0)
    fedadam_bias_correction: bool = option(
        False, "FedAdam: divide the moments by 1 - beta^t, as torch.optim.Adam does"
    )
    proximal_mu: float = option(0.01, "FedProx proximal coefficient mu", ge=0)
    server_learning_rate: float = option(
        1.0, "Server step eta_s on the (noised) mean update (1 = FedAvg; FedAdam: e.g. 0.01)", gt=0
    )
    clipping: str = option(
        "fixed",
        "Client-update clipping: fixed norm, or adaptive (Andrew et al. 2021 quantile tracking)",
        choices=("fixed", "adaptive"),
    )
    clip_norm: float = option(1.0, "Client-update clipping norm C (initial C when adaptive)", gt=0)
    target_unclipped_quantile: float = option(
        0.5, "Adaptive clipping: target fraction of unclipped updates gamma", gt=0, lt=1
    )
    clip_learning_rate: float = option(0.2, "Adaptive clipping: geometric step eta_C", gt=0)
    clipped_count_stddev: float | None = option(
        None, "Adaptive clipping: noise sigma_b on the unclipped count; empty = m / 20", gt=0
    )
    local_dp: bool = option(
        False,
        "DP-SGD (Opacus) inside every client: example-level DP, clipping train.max_grad_norm",
    )
    local_noise_multiplier: float | None = option(
        None, "Local DP-SGD noise multiplier; empty = calibrated to local_target_epsilon", ge=0
    )
    local_target_epsilon: float = option(
        8.0, "Example-level epsilon of the most exposed client (local DP)", gt=0
    )
    canary_clients: int = option(
        100,
        "Update-canary clients for the client-level one-run audit (each joins by a fair coin)",
        ge=0,
    )
    backend: str = option(
        "local",
        "Simulation engine: local (in-process, bit-reproducible) or ray (Flower's Ray engine; "
        "pip install 'flwr[simulation]')",
        choices=("local", "ray"),
    )
    ray_address: str | None = option(
        None,
        "backend = ray: address of an existing Ray cluster (auto, ray://host:10001); "
        "empty = start a local Ray instance",
    )
    ray_client_cpus: float = option(1.0, "backend = ray: CPUs reserved per simulated client", gt=0)
    max_eval_records: int = option(
        256, "Held-out records scored after each round for utility by round", ge=0
    )


@dataclass(frozen=True)
class AttackConfig(_Section):
    """Which attacks run and with what parameters."""

    SECTION = "attack"
    attacks: list[str] = option(
        ["loss", "zlib", "mink", "minkpp", "reference", "lira", "rmia"],
        "Membership inference attacks to run",
    )
    params: dict[str, dict[str, Any]] = option(
        {},
        "Per-attack parameters, one [attack.params.<attack>] table each "
        "(e.g. [attack.params.lira] online = false)",
    )
    mink_k: float = option(
        0.2,
        "Fraction k of lowest-probability tokens for min-k% and min-k%++ "
        "(unless [attack.params.mink] sets k)",
        gt=0,
        le=1,
    )
    fprs: list[float] = option(
        [0.001, 0.01, 0.1], "False-positive rates at which TPR is reported", gt=0, lt=1
    )
    bootstrap: int = option(200, "Bootstrap resamples for confidence intervals", ge=0)
    rmia_gamma: float = option(
        1.0, "RMIA dominance factor gamma (unless [attack.params.rmia] sets gamma)", gt=0
    )
    exposure_enumeration_limit: int = option(
        1_000_000, "Enumerate the secret space exactly up to this size; extrapolate above", ge=1
    )
    extraction_samples: int = option(16, "Samples per canary/PII prompt for extraction", ge=1)
    memorization_prefix_tokens: int = option(16, "Prompt length k for verbatim memorization", ge=1)
    memorization_suffix_tokens: int = option(
        16, "Continuation length n checked for verbatim memorization", ge=1
    )
    batch_size: int = option(
        32,
        "Examples per scoring batch (a batch of long texts holds at most 128 tokens per example)",
        ge=1,
    )
    max_length: int = option(
        0,
        "Tokens of each text the attacks score; 0 = the length the model was fine-tuned at when "
        "dpaudit trained it (data.max_length), else the model's context (at most 2048). Texts "
        "cut short are counted in status.json and warned about in the console and the report",
        ge=0,
    )

    def validate(self) -> None:
        if self.max_length == 1:
            raise ConfigError(
                "attack.max_length must be 0 (automatic) or at least 2 tokens",
                key="attack.max_length",
            )


@dataclass(frozen=True)
class AuditConfig(_Section):
    """How empirical epsilon lower bounds are computed."""

    SECTION = "audit"
    method: str = option("one-run", "Audit method (a registered audit method)")
    confidence: float = option(0.95, "Confidence 1-beta of the lower bound", gt=0, lt=1)
    delta: float | None = option(
        None,
        "Delta of the audit; empty = min(ledger delta, (1-confidence)/(200 m)) for m canaries, so "
        "that the one-run bound's 2·m·delta term stays negligible (epsilon_ub is recomputed at it)",
        gt=0,
        lt=1,
    )
    control_min_epsilon: float = option(
        1.0,
        "The non-private control (baseline) counts as detected when its epsilon_lb exceeds this; "
        "else the target's audit is inconclusive",
        ge=0,
    )
    require_control: bool = option(
        True,
        "Without a non-private control in the run, call a no-violation audit inconclusive",
    )
    guesses: list[int] = option(
        [],
        "Numbers of guesses k+ = k- tried (union bound over the grid); empty = a default grid",
        ge=1,
    )
    heldout_fraction: float = option(
        0.5, "Threshold audit: fraction of canaries used only to choose the threshold", gt=0, lt=1
    )
    canary_score: str = option(
        "loss-drop",
        "Audit canary score: loss on the secret tokens, loss-drop = the loss before training "
        "minus it (falls back to loss when no base is known), or logppl (summed loss)",
        choices=("loss", "loss-drop", "logppl"),
    )
    estimator: str = option(
        "steinke", "One-run audit: the estimator of the verdict's lower bound (a registered one)"
    )
    estimators: list[str] = option(
        [],
        "One-run audit: estimators reported side by side; empty = every registered counts estimator (gauss, which reads scores, is reported by white-box audits)",
    )


@dataclass(frozen=True)
class ReportConfig(_Section):
    """Report formats and the release policy the verdict is judged against."""

    SECTION = "report"
    formats: list[str] = option(["html", "md", "json"], "Report formats (registered formats)")
    reveal: bool = option(False, "Print recovered secrets and PII in reports (off: masked)")
    max_epsilon: float | None = option(None, "Policy: maximum claimed epsilon", gt=0)
    max_auc: float | None = option(None, "Policy: maximum membership-inference AUC", ge=0, le=1)
    max_tpr_at_low_fpr: float | None = option(None, "Policy: maximum TPR at 0.1% FPR", ge=0, le=1)
    max_exposure: float | None = option(None, "Policy: maximum canary exposure in bits", ge=0)
    max_pii_extraction_rate: float | None = option(
        None, "Policy: maximum PII extraction rate", ge=0, le=1
    )


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "attack": AttackConfig,
    "audit": AuditConfig,
    "report": ReportConfig,
    "federated": FederatedConfig,
}


SECTION_ALIASES = {"trainer": "train", "attacks": "attack", "data_config": "data"}
"""Accepted alternative section names (``--set trainer.target_epsilon=3``)."""


MAX_SEED = 2**32 - 1
"""The largest seed (NumPy and torch seeds are 32-bit)."""


@dataclass(frozen=True)
class RunConfig(_Section):
    """The whole configuration of one run."""

    SECTION = "run"
    name: str = option(
        "run", "Run name, one directory name; the run directory is <runs_dir>/<name>"
    )
    runs_dir: str = option("runs", "Directory under which run directories are created")
    seed: int = option(0, "Master seed; every stage derives its seed from it", ge=0, le=MAX_SEED)
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "data section"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "train section"})
    attack: AttackConfig = field(default_factory=AttackConfig, metadata={"help": "attack section"})
    audit: AuditConfig = field(default_factory=AuditConfig, metadata={"help": "audit section"})
    report: ReportConfig = field(default_factory=ReportConfig, metadata={"help": "report section"})
    federated: FederatedConfig = field(
        default_factory=FederatedConfig, metadata={"help": "federated section"}
    )

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def split_by_user(self) -> bool:
        """Members and non-members are whole users: a federation by user, or user-level DP."""
        fed = self.federated
        return (fed.enabled and fed.partition == "user") or self.train.unit == "user"

    @property
    def local_dp_only(self) -> bool:
        """A federation whose only DP is DP-SGD inside the clients (no client-level claim)."""
        fed = self.federated
        return fed.enabled and fed.local_dp and not self.train.private

    def validate(self) -> None:
        check_run_name(self.name)


def check_run_name(name: str) -> None:
    """Refuse a run name that would not be one directory inside ``runs_dir``.

    Raises:
        ConfigError: empty, ``.``, ``..``, or holding a path separator or NUL
            (``../x`` would write outside ``runs_dir``; ``''`` would make
            ``runs_dir`` itself the run directory).
    """
    bad = (
        not name.strip()
        or name in (".", "..")
        or any(sep in name for sep in ("/", "\\", "\0"))
        or Path(name).is_absolute()
    )
    if bad:
        raise ConfigError(
            f"name = {name!r}: a run name must be one directory name inside runs_dir "
            "(not empty, '.' or '..', no '/' or '\\')",
            key="name",
        )


# --------------------------------------------------------------------------- parsing

_TOP_KEYS = ("name", "runs_dir", "seed")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce_value(where: str, value: Any, tp: Any) -> Any:
    """Coerce a TOML or command-line value to the type ``tp`` (``str``, ``int``,
    ``float``, ``bool``, ``X | None``, ``list[X]``, ``dict[str, X]``, ``Any``).

    Strings from ``--set`` are parsed (``"true"``, ``"3"``, ``"0.5"``,
    ``"none"`` for an optional value, ``"a,b"`` for a list).

    Raises:
        ConfigError: the value does not fit; ``key`` is ``where``.
    """
    return _coerce(where, value, tp)


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """Coerce a TOML or command-line value to the declared field type."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("", "none", "null")
        ):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(where, value, inner[0])
    if origin is list:
        (item,) = args
        if isinstance(value, str):
            text = value.strip()
            parsed = _literal(text) if text.startswith("[") and text.endswith("]") else None
            if isinstance(parsed, list):  # TOML array syntax: [1, 4], ["a", "b"]
                value = parsed
            else:  # comma list: 1,4
                value = [v for v in (s.strip() for s in text.strip("[]").split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}", key=where)
        return [_coerce(where, v, item) for v in value]
    if origin is dict:
        _, inner = args
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}", key=where)
        return {str(k): _coerce(f"{where}.{k}", v, inner) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {value!r}", key=where)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}", key=where)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {value!r}", key=where)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}", key=where)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}", key=where) from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}", key=where)
        return str(value)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _build_section(cls: type, name: str, values: Mapping[str, Any]) -> Any:
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in types_:
            raise ConfigError(
                f"unknown key {name}.{key}{did_you_mean(key, types_)}", key=f"{name}.{key}"
            )
        kwargs[key] = _coerce(f"{name}.{key}", value, types_[key])
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from nested mappings."""
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for alias, name in SECTION_ALIASES.items():
        if alias in data and name in data:
            raise ConfigError(
                f"both [{alias}] and [{name}] given; they are the same section", key=alias
            )
    for key, value in data.items():
        key = SECTION_ALIASES.get(key, key)
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{key}] must be a table of settings")
            sections[key] = _build_section(SECTIONS[key], key, value)
        elif key in _TOP_KEYS:
            top[key] = value
        else:
            raise ConfigError(f"unknown key {key!r}{did_you_mean(key, [*SECTIONS, *_TOP_KEYS])}")
    top_types = _field_types(RunConfig)
    top = {k: _coerce(k, v, top_types[k]) for k, v in top.items()}
    return RunConfig(**top, **sections)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; malformed files raise an :class:`InputError` with the line."""
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(sorted(packaged_configs())) or "none"
        raise InputError(path, f"config file not found (packaged configs, by name: {shipped})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(path, "not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        # Python < 3.14 only puts the position into the message text.
        found = re.search(r"\s*\(at line (\d+), column \d+\)", str(exc))
        line = getattr(exc, "lineno", None) or (int(found.group(1)) if found else None)
        msg = getattr(exc, "msg", None) or (str(exc)[: found.start()] if found else str(exc))
        raise InputError(path, f"invalid TOML: {msg}", line=line) from None


def parse_set(assignments: Sequence[str]) -> dict[str, Any]:
    """Parse ``section.key=value`` strings into nested overrides.

    Values stay strings (the field types coerce them), except those of
    ``attack.params.<attack>.<param>=value``, whose field types live with the
    attack: they are read as TOML values where they parse as one (``true``,
    ``0.5``, ``[1, 2]``, ``"text"``) and kept as strings otherwise.
    """
    out: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, value = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) == 1 and parts[0] in _TOP_KEYS:
            out[parts[0]] = value
            continue
        section = SECTION_ALIASES.get(parts[0], parts[0])
        if len(parts) == 4 and section == "attack" and parts[1] == "params" and all(parts):
            table = out.setdefault(section, {}).setdefault("params", {})
            table.setdefault(parts[2], {})[parts[3]] = _literal(value)
            continue
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"--set {item!r}: expected section.key=value "
                "(or attack.params.<attack>.<param>=value)"
            )
        out.setdefault(section, {})[parts[1]] = value
    return out


def _literal(text: str) -> Any:
    """``text`` read as a TOML value, or ``text`` itself when it is not one."""
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` onto ``base`` (override wins)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    *,
    sets: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Resolve a config: defaults < TOML file < ``--set`` < explicit CLI options.

    Args:
        path: TOML file, or ``None`` for defaults only.
        sets: ``section.key=value`` strings from ``--set``.
        overrides: nested mapping of explicit CLI options; ``None`` values are
            "not given" and do not override (so an explicit ``False`` does).

    Raises:
        ConfigError: naming the file and line for a bad file value, or
            ``--set``/the option for a bad override.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        data = read_toml(path)
        try:
            config_from_dict(data)
        except ConfigError as exc:
            line = _key_line(Path(path), getattr(exc, "key", None))
            where = f"{path}:{line}" if line else str(path)
            raise ConfigError(f"{where}: {exc}") from None
    file_data = data
    try:
        set_values = parse_set(sets)
        data = merge(data, set_values)
        if set_values:
            config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from None
    given = _drop_none(overrides) if overrides else {}
    if given:
        try:
            config = config_from_dict(merge(data, given))
        except ConfigError as exc:
            raise ConfigError(f"option: {exc}") from None
    else:
        config = config_from_dict(data)
    _check_dp_off(config, (file_data, set_values, given), None if path is None else Path(path))
    return config


def _check_dp_off(
    config: RunConfig, levels: Sequence[Mapping[str, Any]], path: Path | None
) -> None:
    """Refuse ``train.dp = false`` beside a target ε or σ given at the same or a higher level.

    ``levels`` are the file, ``--set`` and the explicit options, lowest first.
    A value from a lower level than ``dp`` is overridden, not contradicted
    (``--no-dp`` on a file holding ``target_epsilon = 8``); one from the same
    or a higher level (``--no-dp --target-epsilon 3``, both in one file, or a
    file's ``dp = false`` with ``--set train.noise_multiplier=1``) would be
    silently ignored. ``target_epsilon = inf`` agrees with ``dp = false``.

    Raises:
        ConfigError: naming the level (``file:line``, ``--set``, ``option``) and both settings.
    """
    train = config.train
    if train.dp:
        return

    def level(key: str) -> int:
        found = -1
        for i, mapping in enumerate(levels):
            for section, values in mapping.items():
                if SECTION_ALIASES.get(section, section) == "train" and isinstance(values, Mapping):
                    found = i if key in values else found
        return found

    for key in ("target_epsilon", "noise_multiplier"):
        value = getattr(train, key)
        at = level(key)
        if value is None or math.isinf(value) or at < 0 or at < level("dp"):
            continue
        where = ("", "--set", "option")[at]
        if at == 0 and path is not None:
            line = _key_line(path, f"train.{key}")
            where = f"{path}:{line}" if line else str(path)
        raise ConfigError(
            f"{where}: train.dp = false contradicts train.{key} = {value:g} (a non-private run "
            f"has no {'target epsilon' if key == 'target_epsilon' else 'noise'}); drop one of them",
            key=f"train.{key}",
        )


def packaged_configs() -> dict[str, Path]:
    """``{name: path}`` of the configs shipped inside the package (``dpaudit/configs/*.toml``).

    Read through :mod:`importlib.resources`, so they are found in a wheel install
    as in a source checkout (where ``configs/`` links to the same files).
    """
    from importlib import resources

    root = resources.files("dpaudit") / "configs"
    if not root.is_dir():
        return {}
    return {
        p.name.removesuffix(".toml"): Path(str(p))
        for p in root.iterdir()
        if p.name.endswith(".toml")
    }


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it exists; else a packaged config of that name (``quickstart``,
    ``configs/quickstart.toml``); else ``path`` (so the reader names the missing file)."""
    given = Path(path)
    if given.exists():
        return given
    shipped = packaged_configs()
    stem = given.name.removesuffix(".toml")
    if stem in shipped and (given.parent == Path(".") or given.parent.name == "configs"):
        return shipped[stem]
    return given


def key_line(path: Path, dotted: str | None) -> int | None:
    """1-based line of ``section.key`` in a TOML file, for error messages (``None``: not found).

    A nested key (``attack.params.lira.online``) not found as written falls
    back to its table header (``[attack.params.lira]``), then to its parents.
    """
    if not dotted:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    while dotted:
        section, _, key = dotted.rpartition(".")
        current = ""
        for number, line in enumerate(lines, start=1):
            header = re.match(r"^\s*\[([^\]]+)\]", line)
            if header:
                current = header.group(1).strip()
                if current == dotted:
                    return number
            elif current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
                return number
        dotted = section
    return None


_key_line = key_line


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            inner = _drop_none(value)
            if inner:
                out[key] = inner
        elif value is not None:
            out[key] = value
    return out


def to_toml(config: RunConfig) -> str:
    """Render a config as TOML (``tomli_w``), so that :func:`load_config` reads it back equal.

    TOML has no null: an unset (``None``) setting is left out, and reading the
    file back gives its default (``None``) again; inside the per-attack tables
    (``[attack.params.<attack>]``) ``None`` is written as ``"none"``, which the
    attack registry reads back as ``None``. Infinite floats are TOML's
    ``inf``/``-inf``; tuples are arrays.
    """
    data = config.to_dict()
    document: dict[str, Any] = {key: data[key] for key in _TOP_KEYS}
    for section in SECTIONS:
        document[section] = {
            key: _toml_value(value) for key, value in data[section].items() if value is not None
        }
    return tomli_w.dumps(document)


def _toml_value(value: Any) -> Any:
    """``value`` as ``tomli_w`` can write it: ``None`` in a table becomes ``"none"``."""
    if isinstance(value, Mapping):
        return {str(k): "none" if v is None else _toml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toml_value(v) for v in value]
    return value


def describe_fields() -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every setting — used by ``config show --help``."""
    rows: list[tuple[str, str, Any]] = []
    defaults = RunConfig()
    for key in _TOP_KEYS:
        f = next(f for f in dataclasses.fields(RunConfig) if f.name == key)
        rows.append((key, f.metadata["help"], getattr(defaults, key)))
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append(
                (
                    f"{section}.{f.name}",
                    f.metadata["help"] + _allowed(f.metadata),
                    getattr(getattr(defaults, section), f.name),
                )
            )
    return rows


def _allowed(meta: Any) -> str:
    """``"; one of: a, b"`` / ``"; range: > 0, < 1"`` from a field's declared constraints."""
    if meta.get("choices"):
        return "; one of: " + ", ".join(str(c) for c in meta["choices"])
    bounds = [
        f"{op} {meta[key]:g}"
        for key, op in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
        if meta.get(key) is not None
    ]
    if meta.get("allow_inf"):
        bounds.append("inf allowed")
    return "; range: " + ", ".join(bounds) if bounds else ""
