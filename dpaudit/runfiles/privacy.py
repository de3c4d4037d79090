"""``<model>/privacy.json`` (the privacy ledger) and ``<model>/metrics.json`` (utility)."""

from __future__ import annotations

from typing import Any, ClassVar

from dpaudit.runfiles.base import JsonFloat, RunFile, describe

__all__ = ["LEDGER_FIELDS", "PrivacyFile", "UtilityFile"]

LEDGER_FIELDS = (
    "mechanism",
    "sample_rate",
    "noise_multiplier",
    "max_grad_norm",
    "steps",
    "delta",
    "epsilons",
    "unit",
    "adjacency",
    "errors",
)
"""The fields of ``dpaudit.accounting.PrivacyLedger``, in the order the ledger declares them."""


class PrivacyFile(RunFile):
    """The privacy ledger of one model: ε under every accountant for the steps taken.

    Written by the trainer (complete, or partial at each checkpoint) and by
    `audit-checkpoint` for a publisher's claimed (ε, δ) (`mechanism` `claimed`,
    training facts `null`). The first ten keys are the `PrivacyLedger` fields.
    """

    KIND: ClassVar[str] = "privacy.json"
    PATH: ClassVar[str] = "<model>/privacy.json"

    mechanism: str = describe(
        "`poisson-subsampled-gaussian`, `shuffled-gaussian`, `none` (no DP) or `claimed`."
    )
    sample_rate: JsonFloat = describe("Sampling rate q = batch_size / n.")
    noise_multiplier: JsonFloat = describe("Noise multiplier σ (0 without DP).")
    max_grad_norm: JsonFloat | None = describe("Clipping norm C (`null` without DP).")
    steps: int = describe("Steps taken.")
    delta: JsonFloat = describe("δ of every ε.")
    epsilons: dict[str, JsonFloat] = describe(
        'ε at `delta` by accountant (`"inf"` without DP).', keys="accountant"
    )
    unit: str = describe(
        "Unit of privacy: `example` (DP-SGD) or `client` (DP-FedAvg, one client added or removed).",
        default="example",
    )
    adjacency: str = describe("Neighbouring relation (`add/remove`).", default="add/remove")
    errors: dict[str, str] = describe(
        "Error message of each accountant that failed.", keys="accountant", default_factory=dict
    )
    epsilon: JsonFloat | None = describe(
        "The claimed ε: `epsilons[primary_accountant]`.", default=None
    )
    primary_accountant: str = describe(
        "The accountant whose ε is the claim (it calibrated the noise).", default="pld"
    )
    epochs: JsonFloat | None = describe("Epochs taken: steps × q.", default=None)
    planned_epochs: JsonFloat | None = describe("Epochs requested.", default=None)
    planned_steps: int | None = describe("Steps planned.", default=None)
    complete: bool | None = describe(
        "Training finished all planned steps (`false` in the ledger of a checkpoint).",
        default=None,
    )
    delta_source: str | None = describe(
        "`config`, `default min(1e-5, 1/n^1.1)` (older: `default 1/n^1.1`) or `claim`.",
        default=None,
    )
    noise_source: str | None = describe(
        "`calibrated` (to `target_epsilon`), `config`, `none` or `unknown`.", default=None
    )
    target_epsilon: JsonFloat | None = describe(
        "The ε the noise was calibrated to (`null` otherwise).", default=None
    )
    batch_size: int | None = describe(
        "Expected logical batch size (expected clients per round when `unit` is `client`).",
        default=None,
    )
    n_examples: int | None = describe(
        "Training examples n (clients when `unit` is `client`).", default=None
    )
    poisson_sampling: bool | None = describe(
        "Poisson sampling of batches (else shuffled fixed-size lots).", default=None
    )
    note: str | None = describe(
        "Why the ledger is not dpaudit's own accounting (claimed ε).", default=None
    )

    def ledger_fields(self) -> dict[str, Any]:
        """The ``PrivacyLedger`` keyword arguments (floats, ∞ as ``inf``)."""
        return {name: getattr(self, name) for name in LEDGER_FIELDS}

    @property
    def claimed_epsilon(self) -> float:
        """``epsilon``, else ``epsilons[primary_accountant]``, else ∞."""
        if self.epsilon is not None:
            return self.epsilon
        return self.epsilons.get(self.primary_accountant, float("inf"))


class UtilityFile(RunFile):
    """Utility of one trained model, on the training examples (`train_*`) and held out (`eval_*`).

    Language models report loss and perplexity, classifiers accuracy, F1 and
    loss; a metric the task does not produce is absent (`null`).
    """

    KIND: ClassVar[str] = "utility metrics.json"
    PATH: ClassVar[str] = "<model>/metrics.json"

    task: str | None = describe("`causal_lm` or `classification`.", default=None)
    mode: str | None = describe("Fine-tuning mode: `full`, `lora` or `head`.", default=None)
    train_loss: JsonFloat | None = describe(
        "Mean cross-entropy on the training examples (per token for language models).",
        default=None,
    )
    train_perplexity: JsonFloat | None = describe(
        "exp(train_loss) (language models).", default=None
    )
    train_example_loss: JsonFloat | None = describe(
        "Mean of per-example mean token losses, the training objective (language models).",
        default=None,
    )
    train_tokens: JsonFloat | None = describe(
        "Tokens scored on the training examples (language models).", default=None
    )
    train_accuracy: JsonFloat | None = describe("Training accuracy (classifiers).", default=None)
    train_f1: JsonFloat | None = describe("Training macro-F1 (classifiers).", default=None)
    eval_loss: JsonFloat | None = describe("Held-out mean cross-entropy.", default=None)
    eval_perplexity: JsonFloat | None = describe("exp(eval_loss) (language models).", default=None)
    eval_example_loss: JsonFloat | None = describe(
        "Held-out mean of per-example mean token losses (language models).", default=None
    )
    eval_tokens: JsonFloat | None = describe(
        "Held-out tokens scored (language models).", default=None
    )
    eval_accuracy: JsonFloat | None = describe("Held-out accuracy (classifiers).", default=None)
    eval_f1: JsonFloat | None = describe("Held-out macro-F1 (classifiers).", default=None)
    train_majority_share: JsonFloat | None = describe(
        "Share of the most common training label: the accuracy of always predicting it "
        "(classifiers).",
        default=None,
    )
    eval_majority_share: JsonFloat | None = describe(
        "Share of the most common held-out label: the accuracy of always predicting it "
        "(classifiers).",
        default=None,
    )
    train_predicted_classes: int | None = describe(
        "Distinct classes predicted on the training examples (classifiers).", default=None
    )
    eval_predicted_classes: int | None = describe(
        "Distinct classes predicted held out (classifiers; 1: predicts one class).", default=None
    )
    n_train: int | None = describe("Training examples.", default=None)
    n_eval: int | None = describe("Held-out examples.", default=None)
    first_step_loss: JsonFloat | None = describe("Loss of the first logical step.", default=None)
    last_step_loss: JsonFloat | None = describe("Loss of the last logical step.", default=None)
    steps: int | None = describe("Logical steps taken.", default=None)
    seconds_per_step: JsonFloat | None = describe(
        "Mean wall-clock seconds per logical step.", default=None
    )
    trainable_parameters: int | None = describe("Parameters trained.", default=None)
    total_parameters: int | None = describe("Parameters of the model.", default=None)
    device: str | None = describe("Training device (`cpu`, `cuda:0`, ...).", default=None)
    precision: str | None = describe("`fp32`, `bf16` or `fp16`.", default=None)
    lora_targets: list[str] = describe(
        "Modules adapted by LoRA (empty otherwise).", default_factory=list
    )
