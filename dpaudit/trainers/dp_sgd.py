"""Fine-tune a model with DP-SGD (or without privacy) and write its audit trail.

:func:`train_model` is the one entry point: DP-SGD (Abadi et al. 2016) through
Opacus (Yousefpour et al. 2021) with Poisson-sampled lots, per-example
clipping and Gaussian noise, σ calibrated to ``train.target_epsilon`` by the
configured accountant, or the same recipe without clipping and noise for a
non-private baseline. Outputs in ``out_dir``:

* ``config.json`` + ``model.safetensors`` — ``save_pretrained`` of the trained
  model; in LoRA mode this is the adapter *merged* into the base, so every
  consumer loads it like a full model, and ``adapter/`` holds the PEFT adapter
  alone (its base is ``train.model``, rebuilt from the same seed when embedded);
* tokenizer files (``save_pretrained``);
* ``privacy.json`` — the ledger (see :mod:`dpaudit.trainers.privacy`);
* ``train_log.jsonl`` — one JSON object per logical step: ``step``, ``loss``,
  ``lot_size``, ``epsilon_rdp`` (live RDP ε), ``lr``, ``seconds``;
* ``metrics.json`` — train and held-out loss/perplexity or accuracy/F1;
* ``train_ids.json`` — the record ids trained on, in order (repeats kept);
* ``complete.json`` — written last: the training recipe, the step count and
  ``initial_sha256``, the hash of the weights training started from (the base
  model a loss-drop audit rebuilds from the recipe's seed, see
  :func:`dpaudit.trainers.models.initial_model`), and ``processes``, the number
  of torchrun processes that trained it (1 without torchrun; see
  :mod:`dpaudit.trainers.distributed`).

Every ``train.checkpoint_every`` steps a checkpoint goes to ``checkpoint/``
with the partial ledger; ``resume=True`` continues from it and the ledger
counts every step ever taken. The checkpoint directory is removed once the
run is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dpaudit.atomic import atomic_write_text, dumps, read_json, write_json
from dpaudit.config import TrainConfig
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError
from dpaudit.runfiles.io import write_run_file
from dpaudit.runfiles.privacy import UtilityFile
from dpaudit.trainers.distributed import SINGLE, Ranks, rank_device
from dpaudit.trainers.hooks import StopTraining, TrainHooks
from dpaudit.trainers.privacy import (
    PRIVACY_FILE,
    PrivacyPlan,
    make_ledger,
    plan_privacy,
    read_privacy,
    write_privacy,
)
from dpaudit.trainers.resume import (
    latest_training_state,
    load_training_state,
    read_state,
    recipe_differences,
    remove_training_states,
    save_training_state,
)

COMPLETE_FILE = "complete.json"
LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"
IDS_FILE = "train_ids.json"
ADAPTER_DIR = "adapter"
NON_RECIPE_FIELDS = (
    "baseline",
    "num_references",
    "checkpoint_every",
    "device",
    "references_backend",
    "references_ray_address",
    "reference_cpus",
    "reference_gpus",
)
"""TrainConfig fields that do not change what a run computes (the resolved device type does)."""


@dataclass
class TrainResult:
    """What :func:`train_model` produced.

    Attributes:
        out_dir: the output directory.
        ledger: the :class:`~dpaudit.accounting.PrivacyLedger` of the steps taken.
        metrics: contents of ``metrics.json`` (empty when stopped early).
        steps: logical steps taken, over all resumes.
        planned_steps: steps of the full recipe.
        completed: False when stopped by :class:`StopTraining`.
        seconds: wall time of this call.
        device: the device trained on.
        primary_accountant: the accountant of the headline ε.
        train_ids: ids of the training records, in order.
    """

    out_dir: Path
    ledger: Any
    metrics: dict[str, Any]
    steps: int
    planned_steps: int
    completed: bool
    seconds: float
    device: str
    primary_accountant: str
    train_ids: tuple[str, ...] = ()

    @property
    def epsilon(self) -> float:
        """ε of the primary accountant (∞ when not private)."""
        return float(self.ledger.epsilons.get(self.primary_accountant, math.inf))

    def summary(self) -> str:
        """One line for the CLI."""
        led = self.ledger
        if led.unit == "user":  # user-level DP-SGD on the federated engine
            what = "user-level DP-SGD" if led.mechanism != "none" else "non-private"
            eps = (
                ""
                if led.mechanism == "none"
                else f" ε = {self.epsilon:.3g} ({self.primary_accountant}, δ = {led.delta:g}), σ = {led.noise_multiplier:.3g}, C = {led.max_grad_norm},"
            )
            head = f"{what}{eps} users sampled at q = {led.sample_rate:.3g}, {self.steps} steps"
        elif led.unit == "client":  # DP-FedAvg (dpaudit.trainers.federated)
            if led.mechanism == "none":
                head = f"non-private FedAvg, {self.steps} rounds (q = {led.sample_rate:.3g})"
            else:
                head = (
                    f"DP-FedAvg client-level ε = {self.epsilon:.3g} ({self.primary_accountant}, "
                    f"δ = {led.delta:g}), z = {led.noise_multiplier:.3g}, C = {led.max_grad_norm}, "
                    f"q = {led.sample_rate:.3g}, {self.steps} rounds"
                )
        elif (self.out_dir / "rounds.jsonl").is_file() and led.mechanism != "none":
            head = (  # federated, local DP-SGD only: the most exposed client's ledger
                f"FedAvg + local DP-SGD, example-level ε = {self.epsilon:.3g} "
                f"({self.primary_accountant}, δ = {led.delta:g}), σ = {led.noise_multiplier:.3g}, "
                f"C = {led.max_grad_norm}, most exposed client q = {led.sample_rate:.3g} over "
                f"{led.steps} steps, {self.steps} rounds"
            )
        elif led.mechanism == "none":
            head = f"non-private, {self.steps} steps (q = {led.sample_rate:.3g})"
        else:
            head = (
                f"DP-SGD ε = {self.epsilon:.3g} ({self.primary_accountant}, δ = {led.delta:g}), "
                f"σ = {led.noise_multiplier:.3g}, C = {led.max_grad_norm}, q = {led.sample_rate:.3g}, "
                f"{self.steps} steps"
            )
        m = self.metrics
        if "eval_perplexity" in m:
            head += f"; held-out perplexity {m['eval_perplexity']:.4g}"
        elif "eval_accuracy" in m:
            head += f"; held-out accuracy {m['eval_accuracy']:.3f}"
        return head if self.completed else head + f" (stopped at {self.steps}/{self.planned_steps})"


def training_recipe(
    records: Sequence[Record],
    *,
    config: TrainConfig,
    tokenizer: Any,
    seed: int,
    max_length: int,
    device_type: str,
    hooks_key: str | None = None,
) -> dict[str, Any]:
    """A flat JSON mapping of everything that determines a run's result.

    A checkpoint or completed run is only continued or reused when its recipe
    equals the current one.
    """
    cfg = {
        f"train.{k}": v for k, v in dataclasses.asdict(config).items() if k not in NON_RECIPE_FIELDS
    }
    data = json.dumps(
        [[r.id, r.text, r.label, *_loss_mask(r)] for r in records], ensure_ascii=False
    )
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    recipe = {
        **cfg,
        "seed": int(seed),
        "max_length": int(max_length),
        "n_examples": len(records),
        "data_sha256": hashlib.sha256(data.encode("utf-8")).hexdigest(),
        "tokenizer_sha256": hashlib.sha256(vocab.encode("utf-8")).hexdigest(),
        "device_type": device_type,
        "hooks": hooks_key,
    }
    return json.loads(dumps(recipe))


def _loss_mask(record: Record) -> list[int]:
    """A canary copy's loss mask (``[]`` when every token counts, so old recipes hash the same)."""
    from dpaudit.datasets.canaries import LOSS_FROM_CHAR

    return [int(record.meta[LOSS_FROM_CHAR])] if LOSS_FROM_CHAR in record.meta else []


def train_model(
    records: Sequence[Record],
    *,
    config: TrainConfig,
    tokenizer: Any,
    out_dir: str | Path,
    eval_records: Sequence[Record] = (),
    seed: int,
    max_length: int,
    dp: bool | None = None,
    resume: bool = False,
    progress: bool = True,
    hooks: TrainHooks | None = None,
    ranks: Ranks = SINGLE,
) -> TrainResult:
    """Fine-tune on ``records`` with DP-SGD (or without privacy) and write ``out_dir``.

    Args:
        records: training examples (repeats allowed, e.g. canary copies).
        config: the recipe; ``dataclasses.replace`` it for variants.
        tokenizer: a Hugging Face tokenizer with a pad token.
        out_dir: output directory (see the module docstring).
        eval_records: held-out examples for ``metrics.json``.
        seed: seeds initialisation, lots and noise.
        max_length: tokens per example (longer texts are truncated).
        dp: overrides ``config.dp`` when given.
        resume: continue from the last checkpoint in ``out_dir`` (or return the
            finished run when ``out_dir`` is complete with the same recipe).
        progress: show a progress bar with loss and ε spent.
        hooks: extension points of the DP step (:class:`TrainHooks`); under
            torchrun ``on_step_end`` runs on every rank and must decide alike.
        ranks: this process's place under torchrun (:mod:`dpaudit.trainers.distributed`):
            every rank trains its share of each lot; rank 0 alone writes ``out_dir``
            and evaluates; the other ranks return a result without metrics.

    Raises:
        DpauditError: for bad inputs, an ``out_dir`` already holding a run
            when ``resume`` is False, or a checkpoint from a different recipe.
    """
    import torch
    from tqdm.auto import tqdm

    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.loop import LiveEpsilon, StepRunner
    from dpaudit.trainers.models import (
        build_model,
        check_precision,
        resolve_device,
        weights_sha256,
    )

    started = time.perf_counter()
    dp = config.dp if dp is None else bool(dp)
    config = dataclasses.replace(config, dp=dp)
    hooks = hooks or TrainHooks()
    out_dir = Path(out_dir)
    records = list(records)
    if tokenizer.pad_token_id is None:
        raise DpauditError("the tokenizer has no pad token")
    device = rank_device(resolve_device(config.device), ranks)
    precision = check_precision(device, config.precision)
    recipe = training_recipe(
        records,
        config=config,
        tokenizer=tokenizer,
        seed=seed,
        max_length=max_length,
        device_type=device.type,
        hooks_key=hooks.recipe_key,
    )
    ckpt = latest_training_state(out_dir)
    if (out_dir / COMPLETE_FILE).is_file():
        if not resume:
            raise DpauditError(
                f"{out_dir}: already holds a finished training run; resume or choose another directory"
            )
        _check_recipe(
            read_json(out_dir / COMPLETE_FILE).get("recipe", {}), recipe, out_dir / COMPLETE_FILE
        )
        return load_result(out_dir)
    if ckpt is not None and not resume:
        raise DpauditError(
            f"{out_dir}: holds an unfinished training run; resume it or choose another directory"
        )

    examples = encode_records(
        records, tokenizer, max_length=max_length, task=config.task, num_labels=config.num_labels
    )
    plan = plan_privacy(config, len(examples), dp=dp)
    built = build_model(config, tokenizer, seed=seed, max_length=max_length)
    initial_sha256 = weights_sha256(built.model)  # the base of black-box loss-drop audits
    runner = StepRunner(
        built=built,
        examples=examples,
        plan=plan,
        config=config,
        device=device,
        seed=seed,
        pad_id=tokenizer.pad_token_id,
        hooks=hooks,
        ranks=ranks,
    )
    start, log = 0, []
    if ckpt is not None:
        _check_recipe(read_state(ckpt).get("recipe", {}), recipe, ckpt)
        state = load_training_state(
            ckpt, model=runner.model, optimizer=runner.optimizer, device=device
        )
        start, log = int(state["step"]), list(state.get("log", []))
    else:
        torch.manual_seed(
            seed
        )  # the global stream (dropout of hub models) starts from the seed too

    live = LiveEpsilon(plan)
    label = f"{'DP-SGD' if dp else 'non-private'} {out_dir.name}"
    if dp and plan.target_epsilon is not None:
        # The live value is Opacus' RDP bound, looser than the primary accountant: say so, and
        # show the ε the run is accounted at, so a live value above the target does not alarm.
        label += f" (ε={plan.target_epsilon:g} by {plan.accountant} at the end)"
    bar = tqdm(
        total=plan.steps,
        initial=start,
        disable=not progress or not ranks.is_main,
        desc=label,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
    )
    stopped = False
    done = start
    try:
        for step in range(start, plan.steps):
            t = time.perf_counter()
            loss, size = runner.run_step(step)
            done = step + 1
            eps = live(done)
            log.append(
                {
                    "step": done,
                    "loss": loss,
                    "lot_size": size,
                    "epsilon_rdp": eps,
                    "lr": runner.lr,
                    "seconds": time.perf_counter() - t,
                }
            )
            bar.update(1)
            bar.set_postfix(loss="-" if loss is None else f"{loss:.3f}", eps_rdp_loose=f"{eps:.2f}")
            try:
                hooks.on_step_end(step=done, loss=loss, model=runner.model)
            except StopTraining:
                stopped = True
            due = stopped or (done % config.checkpoint_every == 0 and done < plan.steps)
            if due and ranks.is_main:
                _checkpoint(out_dir, runner, plan, recipe, log, done)
            if stopped:
                break
    finally:
        bar.close()
    if stopped or not ranks.is_main:  # a rank other than 0: rank 0 evaluates and writes
        partial = make_ledger(plan, done, accountants=(plan.accountant,))
        return TrainResult(
            out_dir,
            partial,
            {},
            done,
            plan.steps,
            not stopped,
            time.perf_counter() - started,
            str(device),
            plan.accountant,
            examples.ids,
        )

    model = runner.unwrap()
    metrics = _metrics(
        model, built, examples, eval_records, tokenizer, config, max_length, device, precision, log
    )
    _save_model(model, built, tokenizer, out_dir)
    write_json(out_dir / IDS_FILE, {"ids": list(examples.ids)})
    _write_log(out_dir, log)
    write_run_file(out_dir / METRICS_FILE, UtilityFile.from_dict(metrics))
    ledger = make_ledger(plan, done)
    write_privacy(out_dir / PRIVACY_FILE, plan, ledger, complete=True)
    seconds = time.perf_counter() - started
    write_json(
        out_dir / COMPLETE_FILE,
        {
            "recipe": recipe,
            "steps": done,
            "device": str(device),
            "seconds": seconds,
            "finished": _now(),
            "initial_sha256": initial_sha256,
            "processes": ranks.world_size,
        },
    )
    remove_training_states(out_dir)
    return TrainResult(
        out_dir,
        ledger,
        metrics,
        done,
        plan.steps,
        True,
        seconds,
        str(device),
        plan.accountant,
        examples.ids,
    )


def load_result(out_dir: str | Path) -> TrainResult:
    """Rebuild the :class:`TrainResult` of a finished run from its files."""
    out_dir = Path(out_dir)
    done = read_json(out_dir / COMPLETE_FILE)
    ledger, privacy = read_privacy(out_dir / PRIVACY_FILE)
    ids = read_json(out_dir / IDS_FILE)["ids"]
    return TrainResult(
        out_dir,
        ledger,
        read_json(out_dir / METRICS_FILE),
        int(done["steps"]),
        int(privacy.get("planned_steps", done["steps"])),
        True,
        0.0,
        str(done.get("device")),
        str(privacy.get("primary_accountant", "pld")),
        tuple(ids),
    )


def check_trained_on(out_dir: str | Path, ids: Sequence[str], *, split: str) -> None:
    """Refuse to score a model that was not trained on the training list ``ids``.

    ``ids`` is what the run's data says the model trained on (members and
    canary copies, in order, as ``data/train_ids.json``); the model's own
    ``train_ids.json`` says what it did train on. A model without that file
    (one dpaudit did not train) is not checked.

    Args:
        out_dir: the model's directory.
        ids: the training list of the split about to be scored.
        split: where ``ids`` come from, for the message.

    Raises:
        DpauditError: the lists differ (the data was rebuilt after training).
    """
    path = Path(out_dir) / IDS_FILE
    if not path.is_file():
        return
    trained = list(read_json(path).get("ids", []))
    if trained == list(ids):
        return
    unknown = sorted(set(trained) - set(ids))
    untrained = sorted(set(ids) - set(trained))
    example = (
        f"e.g. {unknown[0]!r} trained on but not in the split"
        if unknown
        else f"e.g. {untrained[0]!r} in the split but never trained on"
        if untrained
        else "same ids, another order or count"
    )
    raise DpauditError(
        f"{path}: the model's training list ({len(trained)} records) is not that of {split} "
        f"({len(ids)} records), the split it would be scored on ({example}); the data changed "
        "after training: retrain the model (--force starts the run over)"
    )


def _check_recipe(saved: dict[str, Any], recipe: dict[str, Any], where: Path) -> None:
    diffs = recipe_differences(saved, recipe)
    if diffs:
        more = f" (+{len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise DpauditError(f"{where}: saved run has a different recipe: {diffs[0]}{more}")


def _checkpoint(
    out_dir: Path, runner: Any, plan: PrivacyPlan, recipe: dict, log: list, done: int
) -> None:
    save_training_state(
        out_dir,
        step=done,
        model=runner.model,
        optimizer=runner.optimizer,
        state={"recipe": recipe, "log": log},
    )
    _write_log(out_dir, log)
    partial = make_ledger(plan, done, accountants=(plan.accountant,))
    write_privacy(out_dir / PRIVACY_FILE, plan, partial, complete=False)


def _write_log(out_dir: Path, log: list[dict[str, Any]]) -> None:
    atomic_write_text(out_dir / LOG_FILE, "".join(dumps(entry, indent=None) for entry in log))


def _metrics(
    model: Any,
    built: Any,
    examples: Any,
    eval_records: Sequence[Record],
    tokenizer: Any,
    config: TrainConfig,
    max_length: int,
    device: Any,
    precision: str,
    log: list,
) -> dict[str, Any]:
    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.evaluate import evaluate
    from dpaudit.trainers.models import count_parameters

    kwargs = dict(
        task=built.task,
        pad_id=tokenizer.pad_token_id,
        input_names=built.input_names,
        device=device,
        precision=precision,
        batch_size=config.physical_batch_size,
    )
    metrics: dict[str, Any] = {
        f"train_{k}": v for k, v in evaluate(model, examples, **kwargs).items()
    }
    eval_records = list(eval_records)
    if eval_records:
        held_out = encode_records(
            eval_records,
            tokenizer,
            max_length=max_length,
            task=config.task,
            num_labels=config.num_labels,
        )
        metrics.update({f"eval_{k}": v for k, v in evaluate(model, held_out, **kwargs).items()})
    losses = [e["loss"] for e in log if e["loss"] is not None]
    trainable, total = count_parameters(model)
    step_seconds = [e["seconds"] for e in log if e.get("seconds") is not None]
    metrics.update(
        task=built.task,
        mode=built.mode,
        n_train=len(examples),
        n_eval=len(eval_records),
        first_step_loss=losses[0] if losses else None,
        last_step_loss=losses[-1] if losses else None,
        steps=len(log),
        seconds_per_step=sum(step_seconds) / len(step_seconds) if step_seconds else None,
        trainable_parameters=trainable,
        total_parameters=total,
        device=str(device),
        precision=precision,
        lora_targets=list(built.lora_targets),
    )
    return metrics


def _save_model(model: Any, built: Any, tokenizer: Any, out_dir: Path) -> None:
    """save_pretrained (safetensors) into a temporary directory, then move the files into place."""
    import copy

    from transformers.utils import logging as hf_logging

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=out_dir))
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        if built.is_peft:
            model.save_pretrained(str(tmp / ADAPTER_DIR))
            merged = copy.deepcopy(model).merge_and_unload()
            merged.save_pretrained(str(tmp))
        else:
            model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        for item in tmp.iterdir():
            target = out_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        shutil.rmtree(tmp, ignore_errors=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
