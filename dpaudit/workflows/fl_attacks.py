"""Attacks on federated updates, as run stages of a federated run (``dpaudit federated …``).

Each attack writes ``<run>/federated_attacks/<attack>.json`` (metrics only: no
recovered text) and the report shows it (docs/federated-attacks.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import write_json
from dpaudit.config import RunConfig
from dpaudit.errors import ConfigError, did_you_mean
from dpaudit.reports.fmt import text_table
from dpaudit.rundir import RunDir, sha256_text

__all__ = ["INVERSION_SCHEMA", "run_inversion"]

INVERSION_SCHEMA = "dpaudit.fl_inversion/1"
ATTACK_DIR = "federated_attacks"


def _check_federated(config: RunConfig) -> None:
    if not config.federated.enabled:
        raise ConfigError(
            "federated attacks need a federated run: set federated.enabled = true "
            "(e.g. configs/fl-quickstart.toml)",
            key="federated.enabled",
        )
    if config.train.task != "causal_lm":
        raise ConfigError(
            "gradient inversion on text needs train.task = causal_lm", key="train.task"
        )


def _open(
    config: RunConfig, argv: list[str] | None, resume: bool, force: bool
) -> tuple[RunDir, Any, int, Any]:
    """The run (created when there is none), its data stage, the attack seed and tokenizer."""
    from dpaudit.datasets.prepare import prepare_data
    from dpaudit.workflows.integrity import open_run
    from dpaudit.workflows.run import _tokenizer, stage_seeds

    run = open_run(config, argv=argv, resume=resume, force=force, reopen=True)
    prepared = prepare_data(config, run, resume=True)
    return run, prepared, stage_seeds(config)["attacks"], _tokenizer(config, prepared.data_dir)


def _result_path(run: RunDir, attack: str) -> tuple[str, Path]:
    """The stage name and the result file of ``attack``."""
    return f"{ATTACK_DIR}/{attack}", run.subdir(ATTACK_DIR) / f"{attack}.json"


def _write_result(record: Any, out: Path, payload: dict[str, Any]) -> None:
    """Write an attack's result file and record its hash as the stage's output."""
    from dpaudit.rundir import sha256_file

    write_json(out, payload)
    record.outputs[out.name] = sha256_file(out)


def _result_lines(run: RunDir, header: str, out: Path, payload: dict[str, Any]) -> list[str]:
    """What a ``dpaudit federated`` command prints: the table, the statement, what was not
    measured and where the file is."""
    lines = [f"run directory: {run.path}", header]
    lines += text_table(payload["columns"], payload["rows"], right_from=1)
    lines += ["", payload["statement"]]
    lines += [f"not measured: {n}" for n in payload.get("not_measured", [])]
    lines.append(f"written: {out}")
    return lines


def _client_tokens(
    config: RunConfig, run: RunDir, prepared: Any, tokenizer: Any
) -> list[list[list[int]]]:
    """Each real client's records as token ids (the federation's own partition)."""
    from dpaudit.trainers.data import encode_records

    by_id = {r.id: r for r in prepared.train}
    clients = _public_clients(config, run, prepared)
    out = []
    for c in clients:
        records = [by_id[i] for i in c.record_ids if i in by_id and not i.startswith("canary-")]
        if not records:
            continue
        enc = encode_records(
            records, tokenizer, max_length=config.data.max_length, task="causal_lm"
        )
        out.append([list(ids) for ids in enc.input_ids])
    return out


def _models(config: RunConfig, tokenizer: Any, *, lora: bool) -> dict[str, Any]:
    """The global model at the federation's first round: full, and with LoRA adapters mid-training."""
    import torch

    from dpaudit.trainers.models import build_model

    full = build_model(
        dataclasses.replace(config.train, mode="full"),
        tokenizer,
        seed=config.seed,
        max_length=config.data.max_length,
    ).model.eval()
    models = {"full": full}
    if lora:
        built = build_model(
            dataclasses.replace(config.train, mode="lora"),
            tokenizer,
            seed=config.seed,
            max_length=config.data.max_length,
        )
        gen = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            for name, p in built.model.named_parameters():
                if ".lora_B." in name:  # an adapter mid-training: B = 0 would zero A's gradient
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        models["lora"] = built.model.eval()
    return models


def run_inversion(
    config: RunConfig,
    *,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    lengths: Sequence[int] = (16, 32),
    sigmas: Sequence[float] = (0.0, 1e-4, 1e-3, 1e-2),
    clip: float = 1.0,
    lora: bool = True,
    trials: int = 5,
    resume: bool = False,
    force: bool = False,
    argv: list[str] | None = None,
    progress: bool = True,
) -> tuple[list[str], Path]:
    """Gradient inversion of one client's update (FedSGD step) on the run's clients.

    Returns:
        The summary lines and the path of ``federated_attacks/inversion.json``.

    Raises:
        ConfigError: not a federated causal-LM config, or a length above ``data.max_length``.
    """
    from dpaudit.attacks.inversion_trials import Defence, run_inversion_trials

    _check_federated(config)
    if max(lengths) > config.data.max_length:
        raise ConfigError(
            f"--lengths {max(lengths)} exceeds data.max_length = {config.data.max_length}",
            key="data.max_length",
        )
    run, prepared, seed, tokenizer = _open(config, argv, resume, force)
    defences = [Defence("none"), *(Defence("dp", s, clip) for s in sigmas)]
    if lora:
        defences.append(Defence("lora"))
    settings = {
        "batch_sizes": list(batch_sizes),
        "lengths": list(lengths),
        "sigmas": list(sigmas),
        "clip": clip,
        "lora": lora,
        "trials": trials,
    }
    inputs = _stage_inputs(run, config, settings)
    stage, out = _result_path(run, "inversion")
    if resume and run.can_skip(stage, inputs) and out.is_file():
        return [f"{stage}: unchanged, skipped (--resume)"], out
    with run.stage(stage, inputs, seed=seed) as record:
        clients = _client_tokens(config, run, prepared, tokenizer)
        models = _models(config, tokenizer, lora=lora)
        notes: list[str] = []
        if lora:
            from dpaudit.attacks.gradient_inversion import find_probes

            trainable = [n for n, p in models["lora"].named_parameters() if p.requires_grad]
            if [p.layer for p in find_probes(models["lora"], trainable)][:2] != [0, 1]:
                notes.append(
                    "LoRA adapters only: not measured: train.lora_targets put no adapter on the "
                    "attention input projections of blocks 0 and 1 (c_attn or q/k/v_proj), which "
                    "the span test reads"
                )
                defences = [d for d in defences if d.name != "lora"]
        cells, skipped = run_inversion_trials(
            models,
            clients,
            pad_id=int(tokenizer.pad_token_id),
            defences=defences,
            batch_sizes=batch_sizes,
            lengths=lengths,
            trials=trials,
            seed=seed,
            progress=progress,
        )
        lora_info = None
        if lora:
            lora_info = {"rank": config.train.lora_rank, "targets": list(config.train.lora_targets)}
        payload = {
            "schema": INVERSION_SCHEMA,
            "title": "Gradient inversion of one client's update",
            "threat_model": "an honest-but-curious server (or an eavesdropper) sees one "
            "client's one-step update (FedSGD gradient) and knows the global model it sent; "
            "central DP-FedAvg adds its noise after this point, so against the server only "
            "client-side noise, LoRA-only updates or secure aggregation can defend",
            "statement": inversion_statement(cells),
            "global_model": f"{config.train.model} at the federation's first round (seed "
            f"{config.seed}); LoRA adapters with B ~ N(0, 0.02²) (mid-training)",
            "attacks": {
                "token_set_leak": "non-zero input-embedding rows (Melis et al. 2019, §5.1)",
                "span_reconstruction": "DAGER span test, layers 0 and 1 (Petrov et al. 2024, "
                "Lemma 3.1, Algorithm 1) + last token from the output layer",
            },
            "settings": {**settings, "seed": seed, "clients": len(clients), "lora": lora_info},
            "not_measured": notes + skipped,
            "columns": INVERSION_COLUMNS,
            "rows": [inversion_row(c.to_dict()) for c in cells],
            "cells": [c.to_dict() for c in cells],
        }
        _write_result(record, out, payload)
    header = f"{stage}: {len(cells)} cells, {len(clients)} clients"
    return _result_lines(run, header, out, payload), out


INVERSION_COLUMNS = [
    "defence",
    "B",
    "L",
    "trials",
    "leak precision",
    "leak recall",
    "token precision",
    "token recall",
    "ROUGE-L",
    "exact",
    "span rank / d",
    "no power",
]


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def inversion_row(c: dict[str, Any]) -> list[str]:
    """One formatted table row of an inversion cell (— : nothing recovered, so no precision;
    n/a: the leak does not apply to this update)."""
    leak = c.get("leak_recall") is not None
    return [
        str(c["label"]),
        str(c["batch_size"]),
        str(c["length"]),
        str(c["trials"]),
        _share(c.get("leak_precision")) if leak else "n/a",
        f"{c['leak_recall']:.2f}" if leak else "n/a",
        _share(c.get("token_precision")),
        f"{c['token_recall']:.2f}",
        f"{c['rouge_l']:.2f}",
        f"{c['exact_rate']:.2f}",
        f"{c['mean_rank']:.0f} / {c['width']}",
        f"{c['no_power']}/{c['trials']}",
    ]


def inversion_statement(cells: Sequence[Any]) -> str:
    """Each defence's mean ROUGE-L, exact rate and leak recall over the grid, against none."""
    by: dict[str, list[Any]] = {}
    for c in cells:
        by.setdefault(c.label, []).append(c)
    parts = []
    for label, group in by.items():
        rouge = sum(c.rouge_l for c in group) / len(group)
        exact = sum(c.exact_rate for c in group) / len(group)
        leaks = [c.leak_recall for c in group if c.leak_recall is not None]
        leak = (
            f", token-set leak recall {sum(leaks) / len(leaks):.2f}"
            if leaks
            else ", no token-set leak"
        )
        parts.append(f"{label}: ROUGE-L {rouge:.2f}, exact texts {exact:.0%}{leak}")
    return (
        "Mean over batch sizes B (records per update) and lengths L (tokens per record) — "
        + "; ".join(parts)
        + ". The span test is exact only while a batch holds fewer tokens than the width d of "
        "the layers it reads (or, for LoRA, than the adapter rank); 'no power' counts the "
        "trials where the span held every input. Client noise σ is one step's Gaussian noise "
        "on clipped per-example gradients, with no ε attached."
    )


# ----------------------------------------------------------------------------- poisoning

POISONING_SCHEMA = "dpaudit.fl_poisoning/1"

POISONING_COLUMNS = [
    "aggregation",
    "DP",
    "attacker",
    "ASR [95% CI]",
    "target-token acc.",
    "held-out loss",
    "attacker rounds",
    "mean clients/round",
]


class _AlwaysJoins:
    """Poisson sampling of the honest clients, plus the attacker's node in every round."""

    @staticmethod
    def make(base: type, attacker_node: int | None) -> Any:
        class Strategy(base):
            def sample_nodes(self, server_round: int, node_ids: Any) -> list[int]:
                honest = [n for n in node_ids if n != attacker_node]
                chosen = super().sample_nodes(server_round, honest)
                return chosen + ([attacker_node] if attacker_node is not None else [])

        return Strategy


def run_poisoning(
    config: RunConfig,
    *,
    aggregators: Sequence[str] = ("mean", "median", "trimmed-mean", "krum"),
    rounds: int = 5,
    gamma: float | None = None,
    attacker_records: int = 24,
    resume: bool = False,
    force: bool = False,
    argv: list[str] | None = None,
    progress: bool = True,
) -> tuple[list[str], Path]:
    """A backdoor by model replacement from one malicious client, against each aggregator,
    without and with DP-FedAvg's clipping and noise (docs/federated-attacks.md).

    The federation is the run's own (clients, model, LoRA or full, learning rates, client
    sampling q), shortened to ``rounds``; the attacker is one extra client that joins every
    round with ``attacker_records`` poisoned population records (held out of training
    and of the ASR prompts) and sends γ = ``gamma`` times its update (default n/η: the
    server's fixed denominator qN over its learning rate, Bagdasaryan et al. Eq. 3). With DP,
    the run's own q, σ and C (its ledger's, calibrated over its own rounds) are used.
    The control is the same federation without the attacker (mean, no DP).

    Returns:
        The summary lines and the path of ``federated_attacks/poisoning.json``.
    """
    import dataclasses as dc

    from dpaudit.attacks.poisoning import (
        Backdoor,
        ModelReplacement,
        attack_success,
        poison_texts,
        trigger_prompts,
    )
    from dpaudit.datasets.records import Record
    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.evaluate import evaluate
    from dpaudit.trainers.federated.client import TorchClientTrainer, make_client_app
    from dpaudit.trainers.federated.privacy import plan_client_privacy
    from dpaudit.trainers.federated.robust import AGGREGATORS
    from dpaudit.trainers.federated.run import check_flower, quiet_flower, run_rounds
    from dpaudit.trainers.federated.server import DpFedAvg, ServerMechanism
    from dpaudit.trainers.models import build_model, resolve_device

    _check_federated(config)
    check_flower()
    quiet_flower()
    bad = [a for a in aggregators if a not in AGGREGATORS]
    if bad:
        raise ConfigError(
            f"--aggregators: unknown {bad[0]!r}{did_you_mean(bad[0], AGGREGATORS)} "
            f"(choose from {', '.join(AGGREGATORS)})"
        )
    if rounds < 1 or attacker_records < 1:
        raise ConfigError("--rounds and --attacker-records must be at least 1")
    run, prepared, seed, tokenizer = _open(config, argv, resume, force)
    # in process: the attacker must be the node we name (Ray's node ids are random)
    fed = dc.replace(
        config.federated, rounds=rounds, canary_clients=0, local_dp=False, backend="local"
    )
    public = _public_clients(config, run, prepared)
    backdoor = Backdoor()
    population = prepared.part("population")
    heldout = prepared.part("nonmembers")
    if len(population) < attacker_records:
        raise ConfigError(
            f"--attacker-records {attacker_records}: the population split holds only "
            f"{len(population)} records",
            key="data.nonmember_fraction",
        )
    poisoned = [
        Record(id=f"attacker-{i:04d}", text=t)
        for i, t in enumerate(
            poison_texts([r.text for r in population[:attacker_records]], backdoor, seed=seed)
        )
    ]
    records = [r for r in prepared.train if not r.id.startswith("canary-")]
    n_real = n_honest = len(public)  # the attacker is node n_honest + 1 (partition n_honest)
    examples = encode_records(
        records + poisoned, tokenizer, max_length=config.data.max_length, task="causal_lm"
    )
    by_id: dict[str, list[int]] = {}
    for i, rid in enumerate(examples.ids):
        by_id.setdefault(rid, []).append(i)
    client_indices = [[i for rid in c.record_ids for i in by_id.get(rid, [])] for c in public]
    empty = sum(1 for ix in client_indices if not ix)
    if empty:
        raise ConfigError(f"{empty} clients of the run's partition hold no training record")
    attacker_ix = [by_id[r.id][0] for r in poisoned]
    eval_examples = encode_records(
        heldout[:200], tokenizer, max_length=config.data.max_length, task="causal_lm"
    )
    prompts = trigger_prompts([r.text for r in heldout[:200]], backdoor)
    # The run's own mechanism: q, σ and C of its DP-FedAvg ledger (over its own rounds),
    # run here for --rounds rounds.
    plan = plan_client_privacy(config.train, config.federated, n_honest, dp=True)
    eta = fed.server_learning_rate
    denominator = plan.sample_rate * n_honest  # DP-FedAvg's fixed denominator qN
    scale = float(gamma) if gamma is not None else denominator / eta
    device = resolve_device(config.train.device)
    conditions = [("mean", False, False)]
    conditions += [(a, dp, True) for dp in (False, True) for a in aggregators]
    settings = {
        "aggregators": list(aggregators),
        "rounds": rounds,
        "gamma": scale,
        "attacker_records": attacker_records,
        "trigger": backdoor.trigger,
        "target": backdoor.target,
        "clients": n_honest,
        "clients_per_round": fed.clients_per_round,
        "clip_norm": fed.clip_norm,
        "noise_multiplier": plan.noise_multiplier,
        "mode": config.train.mode,
        "seed": seed,
    }
    inputs = _stage_inputs(run, config, settings)
    stage, out = _result_path(run, "poisoning")
    if resume and run.can_skip(stage, inputs) and out.is_file():
        return [f"{stage}: unchanged, skipped (--resume)"], out
    cells: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(conditions) * rounds,
        desc="backdoor federations",
        unit="round",
        disable=not progress,
    )
    with run.stage(stage, inputs, seed=seed) as record:
        for aggregator, dp, attacked in conditions:
            bar.set_postfix_str(
                f"{aggregator}{' + DP' if dp else ''}{'' if attacked else ' (control)'}"
            )
            built = build_model(
                config.train, tokenizer, seed=config.seed, max_length=config.data.max_length
            )
            trainer = TorchClientTrainer(
                model=built.model,
                task="causal_lm",
                input_names=built.input_names,
                examples=examples,
                client_indices=[*client_indices, attacker_ix * 4],  # the attacker trains longer
                config=config.train,
                local_epochs=fed.local_epochs,
                local_batch_size=fed.local_batch_size,
                device=device,
                seed=seed,
                pad_id=tokenizer.pad_token_id,
                built=built,
                gradient=fed.local_update == "gradient",
            )
            client: Any = (
                ModelReplacement(trainer, attacker=n_real, gamma=scale) if attacked else trainer
            )
            mechanism = ServerMechanism(
                sample_rate=plan.sample_rate,
                noise_multiplier=plan.noise_multiplier if dp else 0.0,
                clip_norm=fed.clip_norm if dp else None,
                denominator=denominator,
            )
            joined: list[int] = []
            strategy = _AlwaysJoins.make(DpFedAvg, n_real + 1 if attacked else None)(
                mechanism=mechanism,
                seed=seed,
                server_learning_rate=eta,
                aggregator=aggregator,
                byzantine=1,
                on_round=lambda r, joined=joined: (joined.append(int(r["replies"])), bar.update()),
            )
            from flwr.app import Array, ArrayRecord

            initial = ArrayRecord({k: Array(v) for k, v in trainer.arrays().items()})
            result, _ = run_rounds(
                strategy,
                make_client_app(client, n_real=n_real + 1),
                n_real + 1 if attacked else n_real,
                federated=fed,
                initial_arrays=initial,
                num_rounds=rounds,
                evaluate_fn=None,
            )
            final = {k: np.asarray(v.numpy()) for k, v in result.arrays.items()}
            trainer.load(final)
            success = attack_success(trainer.model, tokenizer, prompts, backdoor)
            loss = evaluate(
                trainer.model,
                eval_examples,
                task="causal_lm",
                pad_id=tokenizer.pad_token_id,
                input_names=built.input_names,
                device=device,
            )["example_loss"]
            cells.append(
                {
                    "aggregator": aggregator,
                    "dp": dp,
                    "attacker": attacked,
                    "asr": success["asr"],
                    "asr_interval": asr_interval(int(success["hits"]), int(success["prompts"])),
                    "target_token_accuracy": success["target_token_accuracy"],
                    "prompts": int(success["prompts"]),
                    "heldout_loss": float(loss),
                    "attacker_rounds": client.rounds_attacked if attacked else 0,
                    "mean_clients_per_round": float(np.mean(joined)) if joined else 0.0,
                }
            )
        payload = {
            "schema": POISONING_SCHEMA,
            "title": "Backdoor poisoning against robust aggregation and DP",
            "threat_model": "one malicious client joins every round with poisoned records "
            f"(trigger {backdoor.trigger!r} → target {backdoor.target!r}) and sends γ = "
            f"{scale:.3g} times its update (model replacement, Bagdasaryan et al. 2020, §4)",
            "statement": poisoning_statement(cells),
            "settings": settings,
            "columns": POISONING_COLUMNS,
            "rows": [_poison_row(c) for c in cells],
            "cells": cells,
        }
        bar.close()
        _write_result(record, out, payload)
    header = f"{stage}: {len(cells)} federations of {rounds} rounds"
    return _result_lines(run, header, out, payload), out


def _public_clients(config: RunConfig, run: RunDir, prepared: Any) -> list[Any]:
    """The federation's clients that hold users' records: ``data/clients.json`` as the run's
    training wrote it (computed and written when absent), without the one-run audit
    canaries' own clients (``client-or-*``, whose only records are canaries)."""
    from dpaudit.datasets.federated import read_clients
    from dpaudit.workflows.run import federated_partition

    path = run.path / "data" / "clients.json"
    partition = read_clients(path) if path.is_file() else federated_partition(config, prepared, run)
    return [c for c in partition.clients if not c.client_id.startswith("client-or-")]


def _stage_inputs(run: RunDir, config: RunConfig, settings: dict[str, Any]) -> dict[str, str]:
    """What an attack stage depends on: the data stage's outputs, its settings, the training
    recipe (not where it runs) and the federation."""
    from dpaudit.trainers.dp_sgd import NON_RECIPE_FIELDS

    record = run.stage_record("data")
    inputs = dict(record.outputs) if record is not None else {}
    inputs["settings"] = sha256_text(json.dumps(settings, sort_keys=True, default=str))
    recipe = {
        k: v for k, v in dataclasses.asdict(config.train).items() if k not in NON_RECIPE_FIELDS
    }
    inputs["train_config"] = sha256_text(repr(recipe))
    inputs["federated"] = sha256_text(repr(dataclasses.asdict(config.federated)))
    return inputs


def asr_interval(hits: int, prompts: int, confidence: float = 0.95) -> list[float]:
    """Two-sided Clopper-Pearson interval (Clopper, Pearson 1934) of the ASR ``hits / prompts``.

    It covers the sampling of trigger prompts for this one trained model, not the
    randomness of training (one seed per condition).
    """
    from dpaudit.audit.bounds import clopper_pearson_lower, clopper_pearson_upper

    alpha = (1.0 - confidence) / 2
    return [
        clopper_pearson_lower(hits, prompts, alpha),
        clopper_pearson_upper(hits, prompts, alpha),
    ]


def _poison_row(c: dict[str, Any]) -> list[str]:
    dp = "none"
    if c["dp"]:  # a robust rule is not a sum: DP-FedAvg's noise, but no ledger covers it
        dp = "DP-FedAvg" if c["aggregator"] == "mean" else "clip + DP-FedAvg noise (unaccounted)"
    return [
        str(c["aggregator"]),
        dp,
        "yes" if c["attacker"] else "no (control)",
        f"{c['asr']:.2f} [{c['asr_interval'][0]:.2f}, {c['asr_interval'][1]:.2f}]"
        if c.get("asr_interval")
        else f"{c['asr']:.2f}",
        f"{c['target_token_accuracy']:.2f}",
        f"{c['heldout_loss']:.3f}",
        str(c["attacker_rounds"]),
        f"{c['mean_clients_per_round']:.1f}",
    ]


def poisoning_statement(cells: Sequence[dict[str, Any]]) -> str:
    """The attack against plain FedAvg, then each defence's ASR and utility cost."""
    control = next((c for c in cells if not c["attacker"]), None)
    plain = next(
        (c for c in cells if c["attacker"] and c["aggregator"] == "mean" and not c["dp"]), None
    )
    parts = []
    if plain is not None:
        parts.append(
            f"Against plain FedAvg the backdoor succeeded on {plain['asr']:.0%}"
            + (
                f" [95% CI {plain['asr_interval'][0]:.0%}–{plain['asr_interval'][1]:.0%}]"
                if plain.get("asr_interval")
                else ""
            )
            + f" of {plain['prompts']} trigger prompts"
            + (f" (control without the attacker: {control['asr']:.0%})" if control else "")
        )
    for c in cells:
        if not c["attacker"] or c is plain:
            continue
        cost = (
            f", held-out loss {c['heldout_loss']:.3f} vs {control['heldout_loss']:.3f} without attack"
            if control
            else ""
        )
        parts.append(
            f"{c['aggregator']}{' + DP-FedAvg' if c['dp'] else ''}: ASR {c['asr']:.0%}{cost}"
        )
    return (
        "; ".join(parts)
        + ". One training run per condition: the intervals cover the choice of trigger "
        "prompts, not training randomness."
    )


# ----------------------------------------------------------------------------- secure aggregation

SECAGG_SCHEMA = "dpaudit.fl_secagg/1"

SECAGG_COLUMNS = [
    "cohort m",
    "server's view",
    "trials",
    "texts recovered",
    "ROUGE-L",
    "token recall",
    "attributable",
    "view ~ uniform (KS p)",
    "round seconds",
    "bytes up / client",
]


def run_secagg(
    config: RunConfig,
    *,
    cohorts: Sequence[int] = (2, 4, 8),
    length: int = 16,
    trials: int = 3,
    resume: bool = False,
    force: bool = False,
    argv: list[str] | None = None,
    progress: bool = True,
) -> tuple[list[str], Path]:
    """Secure aggregation (SecAgg+) against the gradient-inversion attack, and its cost.

    Round time = the cohort's update computation (sequential here) + aggregation: a
    plain sum, or the whole SecAgg+ protocol (:mod:`dpaudit.trainers.federated.secagg`).

    Each trial takes a cohort of ``m`` clients, one record each (cut to ``length``
    tokens), and their FedSGD updates. Three server views are attacked with
    :func:`~dpaudit.attacks.gradient_inversion.invert_update`: one client's plain update
    (no SecAgg), the same client's masked input under SecAgg, and the unmasked sum under
    SecAgg (the cohort's texts, no longer attributable to a client). The cost is the
    protocol's wall time per round against a plain sum, and the bytes each client sends.

    Returns:
        The summary lines and the path of ``federated_attacks/secagg.json``.
    """
    import time

    from scipy import stats

    from dpaudit.attacks.gradient_inversion import inversion_metrics, invert_update
    from dpaudit.attacks.inversion_trials import client_update
    from dpaudit.trainers.federated.secagg import SecAggParams, secure_aggregate

    _check_federated(config)
    if length > config.data.max_length:
        raise ConfigError(
            f"--length {length} exceeds data.max_length = {config.data.max_length}",
            key="data.max_length",
        )
    run, prepared, seed, tokenizer = _open(config, argv, resume, force)
    params = SecAggParams()
    settings = {
        "cohorts": list(cohorts),
        "length": length,
        "trials": trials,
        "num_shares": params.num_shares,
        "reconstruction_threshold": params.reconstruction_threshold,
        "clipping_range": params.clipping_range,
        "quantization_range": params.quantization_range,
        "modulus_range": params.modulus_range,
        "seed": seed,
    }
    inputs = _stage_inputs(run, config, settings)
    stage, out = _result_path(run, "secagg")
    if resume and run.can_skip(stage, inputs) and out.is_file():
        return [f"{stage}: unchanged, skipped (--resume)"], out
    from tqdm.auto import tqdm

    with run.stage(stage, inputs, seed=seed) as record:
        clients = [c for c in _client_tokens(config, run, prepared, tokenizer) if c]
        model = _models(config, tokenizer, lora=False)["full"]
        pad = int(tokenizer.pad_token_id)
        rng = np.random.default_rng([seed, 67])
        cells: list[dict[str, Any]] = []
        bar = tqdm(total=len(cohorts) * trials, desc="secure aggregation", disable=not progress)
        skipped_cohorts = []
        for m in cohorts:
            if m > len(clients):
                skipped_cohorts.append(f"cohort of {m}: the run has only {len(clients)} clients")
                continue
            views: dict[str, list[dict[str, float]]] = {"plain": [], "masked": [], "sum": []}
            ks, secs, plain_secs, sent = [], [], [], []
            for t in range(trials):
                chosen = rng.choice(len(clients), size=m, replace=False)
                texts = [tuple(clients[int(k)][0][:length]) for k in chosen]
                start = time.perf_counter()  # a round: the clients' updates, then aggregation
                updates = [client_update(model, [x], pad_id=pad)[0] for x in texts]
                compute = time.perf_counter() - start
                plain_bytes = float(sum(v.size for v in updates[0].values()) * 4)  # float32
                start = time.perf_counter()
                plain = {a: sum(u[a] for u in updates) for a in updates[0]}
                plain_secs.append(compute + time.perf_counter() - start)
                result = secure_aggregate(updates, params, seed=seed * 1000 + t)
                secs.append(compute + sum(result.seconds.values()))
                sent.append(result.bytes_up / m)
                y = np.concatenate([v.ravel() for v in result.masked[0].values()])
                ks.append(float(stats.kstest(y / params.modulus_range, "uniform").pvalue))
                # the masked input, read as an update (what the server could try)
                as_update = {
                    a: v * params.step - params.clipping_range for a, v in result.masked[0].items()
                }
                for view, update, truth in (
                    ("plain", updates[0], [texts[0]]),
                    ("masked", as_update, [texts[0]]),
                    ("sum", result.total, texts),
                ):
                    rec = invert_update(model, update, max_length=length, batch_size=len(truth))
                    views[view].append(inversion_metrics(truth, rec.sequences))
                del plain
                bar.update()
            labels = {
                "plain": "one client's update, no SecAgg",
                "masked": "one client's masked input (SecAgg)",
                "sum": "unmasked cohort sum (SecAgg)",
            }
            for view, rows in views.items():
                cells.append(
                    {
                        "cohort": m,
                        "view": view,
                        "label": labels[view],
                        "trials": len(rows),
                        "exact_rate": float(np.mean([r["exact_rate"] for r in rows])),
                        "rouge_l": float(np.mean([r["rouge_l"] for r in rows])),
                        "token_recall": float(np.mean([r["token_recall"] for r in rows])),
                        "attributable": view == "plain",
                        "uniform_ks_p": float(np.median(ks)) if view == "masked" else None,
                        "round_seconds": float(np.mean(secs if view != "plain" else plain_secs)),
                        "bytes_per_client": float(np.mean(sent))
                        if view != "plain"
                        else plain_bytes,
                    }
                )
        bar.close()
        if not cells:
            raise ConfigError(f"--cohorts: no cohort fits the run's {len(clients)} clients")
        payload = {
            "schema": SECAGG_SCHEMA,
            "title": "Secure aggregation (SecAgg+) against gradient inversion",
            "threat_model": "an honest-but-curious server runs SecAgg+ (Bonawitz et al. 2017; "
            "Bell et al. 2020) with the cohort and attacks whatever it holds: each client's "
            "masked input and the unmasked sum; every client sends a one-step update of the "
            "full model (what the inversion attack reads), one record each, so the bytes are "
            "a full model's; a cohort of m leaves each text hidden among m clients at most",
            "statement": secagg_statement(cells),
            "settings": settings,
            "not_measured": skipped_cohorts,
            "columns": SECAGG_COLUMNS,
            "rows": [_secagg_row(c) for c in cells],
            "cells": cells,
        }
        _write_result(record, out, payload)
    header = f"{stage}: cohorts {', '.join(map(str, cohorts))}"
    return _result_lines(run, header, out, payload), out


def _secagg_row(c: dict[str, Any]) -> list[str]:
    return [
        str(c["cohort"]),
        str(c["label"]),
        str(c["trials"]),
        f"{c['exact_rate']:.2f}",
        f"{c['rouge_l']:.2f}",
        f"{c['token_recall']:.2f}",
        "yes" if c["attributable"] else "no",
        "—" if c["uniform_ks_p"] is None else f"{c['uniform_ks_p']:.2f}",
        f"{c['round_seconds']:.3g}",
        "—" if c["bytes_per_client"] is None else f"{c['bytes_per_client']:,.0f}",
    ]


def secagg_statement(cells: Sequence[dict[str, Any]]) -> str:
    """Plain vs masked vs sum, and the cost ratio, per cohort size."""
    parts = []
    for m in sorted({c["cohort"] for c in cells}):
        by = {c["view"]: c for c in cells if c["cohort"] == m}
        plain, masked, total = by.get("plain"), by.get("masked"), by.get("sum")
        if not (plain and masked and total):
            continue
        ratio = masked["round_seconds"] / max(plain["round_seconds"], 1e-9)
        parts.append(
            f"cohort of {m}: one client's plain update gives {plain['exact_rate']:.0%} of its "
            f"text back; its masked input gives {masked['exact_rate']:.0%}; the unmasked sum "
            f"gives {total['exact_rate']:.0%} of the cohort's texts, none attributable to a "
            f"client; a round took {masked['round_seconds']:.2f} s with SecAgg, {ratio:.2f}× "
            "a plain round"
        )
    return "; ".join(parts) + "."
