"""Train one model by federated averaging on Flower and write the same files as central training.

:func:`train_federated` builds the model, a :class:`~.client.TorchClientTrainer`
over the clients' records, a Flower ``ClientApp`` (:func:`~.client.make_client_app`)
and the :class:`~.server.DpFedAvg` strategy, runs ``strategy.start`` for T rounds
on a :class:`~.grid.LocalGrid`, and writes ``out_dir`` like
:func:`~dpaudit.trainers.dp_sgd.train_model` (model, adapter, tokenizer,
``metrics.json``, ``train_ids.json``, ``complete.json``) with a client-level
``privacy.json`` (``unit = "client"``), plus:

* ``rounds.jsonl`` — per round: clients sampled, replies, clipping norm, unclipped
  fraction, median update norm, noise std, bytes down and up, train and held-out loss;
* ``clients.json`` — the partition (:mod:`dpaudit.datasets.federated`);
* ``canary_clients.json`` — the update canaries' ids, coins, norm and scores
  ⟨θ_T − θ_0, u_k⟩ (:mod:`.canaries`), when there are any.

A finished ``out_dir`` with the same recipe is returned as it is on ``resume``; after
every round the global arrays, the strategy's state (adaptive C, FedAdam's moments) and
the round log go to ``checkpoint/`` (safetensors + JSON), and ``resume`` continues an
interrupted federation from its last finished round with the same seeds, so the result
equals an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import atomic_write_text, dumps, read_json, write_json
from dpaudit.config import FederatedConfig, TrainConfig
from dpaudit.datasets.federated import PartitionResult, write_clients
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import TrainHooks

__all__ = ["CANARY_FILE", "ROUNDS_FILE", "check_flower", "train_federated"]

ROUNDS_FILE = "rounds.jsonl"
CANARY_FILE = "canary_clients.json"
PARTITION_FILE = "clients.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = "state.json"
CHECKPOINT_ARRAYS = "arrays.safetensors"
EXAMPLE_PRIVACY_FILE = "example_privacy.json"
"""With DP-FedAvg *and* local DP-SGD: the example-level ledger beside the client-level ``privacy.json``."""


def check_flower() -> str:
    """The installed flwr version.

    Raises:
        DpauditError: flwr is missing or outside the supported range (1.42.x).
    """
    try:
        import flwr
    except ImportError:
        raise DpauditError(
            "federated runs need Flower: pip install 'dpaudit[federated]' (flwr 1.42, Python >= 3.11)"
        ) from None
    version = str(getattr(flwr, "__version__", "0"))
    if not version.startswith("1.42."):
        raise DpauditError(f"federated runs need flwr 1.42.x, found {version}")
    return version


def quiet_flower() -> None:
    """Flower logs every round at INFO on its own logger; dpaudit shows a progress bar instead."""
    logging.getLogger("flwr").setLevel(logging.ERROR)


def train_federated(
    records: Sequence[Record],
    *,
    partition: PartitionResult,
    train: TrainConfig,
    federated: FederatedConfig,
    tokenizer: Any,
    out_dir: str | Path,
    eval_records: Sequence[Record] = (),
    seed: int,
    max_length: int,
    dp: bool,
    resume: bool = False,
    progress: bool = True,
    hooks: TrainHooks | None = None,
    canary_seed: int | None = None,
    unit: str = "client",
) -> Any:
    """Federated fine-tuning of ``train.model`` on ``records``, split as ``partition``.

    Args:
        records: the training list (members and canary copies; repeats allowed).
        partition: which record ids each real client holds.
        train: model, mode, learning rate and the client-level privacy target
            (``dp``, ``target_epsilon`` / ``noise_multiplier``, ``delta``, ``accountant``).
        federated: rounds, clients per round, clipping, strategy, canary clients.
        eval_records: held-out records (utility by round and ``metrics.json``).
        seed: seeds the model, client sampling, local batches, noise and canaries.
        dp: whether this model is the private one: DP-FedAvg when ``train`` is private
            (client level), local DP-SGD when ``federated.local_dp`` (example level), or
            both; ``False`` = a non-private federation (the baseline).
        hooks: audit variants acting on the server's mechanism.
        canary_seed: seeds the canary clients' coins and directions (default ``seed``);
            a run's target and baseline share it, so the baseline is the audit's control.
        unit: the ledger's unit, ``client`` or ``user`` (user-level DP-SGD of central
            training runs on this engine). Audit canary clients (``client-or-*``, one
            per included one-run canary) are not counted in N: the sampling rate and the
            fixed denominator stay data-independent.

    Returns:
        :class:`~dpaudit.trainers.dp_sgd.TrainResult`, with ``steps`` = rounds.

    Raises:
        DpauditError: flwr missing, bad partition, calibration failure, or an
            ``out_dir`` holding another run.
    """
    check_flower()
    quiet_flower()
    from flwr.app import Array, ArrayRecord, MetricRecord
    from tqdm.auto import tqdm

    from dpaudit.runfiles.io import write_run_file
    from dpaudit.runfiles.privacy import UtilityFile
    from dpaudit.trainers.data import encode_records
    from dpaudit.trainers.dp_sgd import (
        COMPLETE_FILE,
        IDS_FILE,
        METRICS_FILE,
        _check_recipe,
        _metrics,
        _now,
        _save_model,
        load_result,
        training_recipe,
    )
    from dpaudit.trainers.federated.canaries import UpdateCanaries, canary_scores
    from dpaudit.trainers.federated.client import TorchClientTrainer, make_client_app
    from dpaudit.trainers.federated.privacy import plan_client_privacy, plan_local_privacy
    from dpaudit.trainers.federated.server import (
        AdaptiveClipping,
        DpFedAvg,
        ServerAdam,
        ServerMechanism,
    )
    from dpaudit.trainers.models import build_model, check_precision, resolve_device, weights_sha256
    from dpaudit.trainers.privacy import PRIVACY_FILE, make_ledger, write_privacy

    started = time.perf_counter()
    hooks = hooks or TrainHooks()
    out_dir = Path(out_dir)
    records = list(records)
    config = dataclasses.replace(train, dp=dp)
    device = resolve_device(config.device)
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
    recipe.update(
        {f"federated.{k}": v for k, v in dataclasses.asdict(federated).items()},
        partition=partition.to_dict(),
        canary_seed=canary_seed,
    )
    recipe = read_json_roundtrip(recipe)
    if (out_dir / COMPLETE_FILE).is_file():
        if not resume:
            raise DpauditError(
                f"{out_dir}: already holds a finished training run; resume or choose another directory"
            )
        _check_recipe(
            read_json(out_dir / COMPLETE_FILE).get("recipe", {}), recipe, out_dir / COMPLETE_FILE
        )
        return load_result(out_dir)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    if out_dir.exists() and any(out_dir.iterdir()):
        if not resume:
            raise DpauditError(
                f"{out_dir}: holds an unfinished federation; resume it or choose another directory"
            )
        if not (ckpt_dir / CHECKPOINT_STATE).is_file():
            shutil.rmtree(out_dir)  # nothing to continue from: start the federation again

    examples = encode_records(
        records, tokenizer, max_length=max_length, task=config.task, num_labels=config.num_labels
    )
    by_id: dict[str, list[int]] = {}
    for i, rid in enumerate(examples.ids):
        by_id.setdefault(rid, []).append(i)
    client_indices = [
        [i for rid in c.record_ids for i in by_id.get(rid, [])] for c in partition.clients
    ]
    empty = [c.client_id for c, ix in zip(partition.clients, client_indices, strict=True) if not ix]
    if empty:
        raise DpauditError(f"clients without training records: {', '.join(empty[:5])}")
    n_real = partition.n_clients
    n_public = sum(1 for c in partition.clients if not c.client_id.startswith("client-or-"))
    central = dp and train.private  # DP-FedAvg: client-level clipping and noise on the server
    dp_local = dp and federated.local_dp  # DP-SGD inside every client: example-level
    plan = plan_client_privacy(config, federated, n_public, dp=central, unit=unit)
    built = build_model(config, tokenizer, seed=seed, max_length=max_length)
    initial_sha256 = weights_sha256(built.model)
    local = None
    if federated.local_dp and dp_local:
        local = plan_local_privacy(
            config,
            federated,
            [len(ix) for ix in client_indices],
            n_records=len(examples),
        )
    trainer = TorchClientTrainer(
        model=built.model,
        task=built.task,
        input_names=built.input_names,
        examples=examples,
        client_indices=client_indices,
        config=config,
        local_epochs=federated.local_epochs,
        local_batch_size=federated.local_batch_size,
        device=device,
        seed=seed,
        pad_id=tokenizer.pad_token_id,
        local=local,
        built=built,
        gradient=federated.local_update == "gradient",
    )
    initial = trainer.arrays()
    # Canary clients test a client-level claim: the DP-FedAvg target's, and the non-private
    # control's (same coins). Beside local DP alone there is no client-level claim to test.
    with_canaries = federated.canary_clients > 0 and not (federated.local_dp and not train.private)
    canaries = (
        UpdateCanaries.draw(
            federated.canary_clients,
            seed=seed if canary_seed is None else canary_seed,
            norm=federated.clip_norm,
        )
        if with_canaries
        else None
    )
    n_canary_nodes = sum(canaries.included) if canaries else 0
    adaptive = None
    if central and federated.clipping == "adaptive":
        adaptive = AdaptiveClipping(
            federated.target_unclipped_quantile,
            federated.clip_learning_rate,
            federated.clipped_count_stddev or federated.clients_per_round / 20.0,
        )
    mechanism = ServerMechanism(
        sample_rate=plan.sample_rate,
        noise_multiplier=plan.noise_multiplier,
        clip_norm=plan.max_grad_norm,
        denominator=plan.sample_rate * n_public,
        adaptive=adaptive,
    )
    eval_examples = None
    eval_list = list(eval_records)[: federated.max_eval_records]
    if eval_list:
        eval_examples = encode_records(
            eval_list,
            tokenizer,
            max_length=max_length,
            task=config.task,
            num_labels=config.num_labels,
        )
    rounds: list[dict[str, Any]] = []
    bar = tqdm(
        total=plan.steps,
        disable=not progress,
        desc=f"{_describe(central, dp_local)} {out_dir.name}",
        unit="round",
        dynamic_ncols=True,
        file=sys.stderr,
    )

    def on_round(record: dict[str, Any]) -> None:
        rounds.append(record)
        bar.update(1)
        bar.set_postfix(clients=record["replies"], loss=record["train_loss"] or "-")

    strategy = DpFedAvg(
        mechanism=mechanism,
        seed=seed,
        server_learning_rate=federated.server_learning_rate,
        proximal_mu=federated.proximal_mu if federated.strategy == "fedprox" else 0.0,
        hooks=hooks if central else None,
        on_round=on_round,
        adam=(
            ServerAdam(
                federated.fedadam_beta1,
                federated.fedadam_beta2,
                federated.fedadam_tau,
                federated.fedadam_bias_correction,
            )
            if federated.strategy == "fedadam"
            else None
        ),
    )
    client_app = make_client_app(trainer, n_real=n_real, canaries=canaries)

    holder: dict[str, Any] = {}
    start_arrays, done_before = initial, 0
    if resume and (ckpt_dir / CHECKPOINT_STATE).is_file():
        state = read_json(ckpt_dir / CHECKPOINT_STATE)
        if state.get("recipe") != recipe:
            raise DpauditError(
                f"{ckpt_dir}: a checkpoint of another recipe; remove it or choose another directory"
            )
        from safetensors.numpy import load_file

        saved = load_file(str(ckpt_dir / CHECKPOINT_ARRAYS))
        start_arrays = {k[3:]: v for k, v in saved.items() if k.startswith("g::")}
        strategy.load_state(state["strategy"], saved)
        rounds[:] = list(state["rounds"])
        done_before = int(state["round"])
        bar.update(done_before)
    strategy.round_offset = done_before

    def evaluate_fn(flower_round: int, arrays: Any) -> Any:
        """After each round: finish its record (clients, bytes, held-out loss) and checkpoint."""
        now = time.perf_counter()
        since = holder.get("clock", now)
        if flower_round == 0:  # Flower evaluates the initial arrays first: not a round
            holder["clock"] = time.perf_counter()
            return None
        values = {k: np.asarray(v.numpy()) for k, v in arrays.items()}
        loss = trainer.evaluate(values, eval_examples) if eval_examples is not None else None
        record = rounds[-1]
        joined = record.pop("partitions", [])
        record["clients"] = [partition.clients[p].client_id for p in joined if p < n_real]
        record["canaries_joined"] = sum(1 for p in joined if p >= n_real)
        grid = holder["grid"]
        group = str(record["round"])
        record["bytes_down"] = grid.bytes_down.get(group, 0)
        record["bytes_up"] = grid.bytes_up.get(group, 0)
        record["eval_loss"] = loss
        record["seconds"] = now - since  # the round's wall time: sampling, clients, aggregation
        _save_checkpoint(ckpt_dir, recipe, record["round"], values, strategy, rounds)
        holder["clock"] = time.perf_counter()  # the next round starts after this evaluation
        return None if loss is None else MetricRecord({"eval-loss": loss})

    final = start_arrays
    if done_before < plan.steps:
        holder["clock"] = time.perf_counter()
        try:
            result, _ = run_rounds(
                strategy,
                client_app,
                n_real + n_canary_nodes,
                federated=federated,
                initial_arrays=ArrayRecord({k: Array(v) for k, v in start_arrays.items()}),
                num_rounds=plan.steps - done_before,
                evaluate_fn=evaluate_fn,
                holder=holder,
            )
        finally:
            bar.close()
        final = {k: np.asarray(v.numpy()) for k, v in result.arrays.items()}
    else:
        bar.close()
    trainer.load(final)
    model = trainer.model
    model.eval()
    # seconds per round (rounds recorded before round timing existed: None, not 0)
    log = [
        {"step": r["round"], "loss": r["train_loss"], "seconds": r.get("seconds")} for r in rounds
    ]
    metrics = _metrics(
        model, built, examples, eval_records, tokenizer, config, max_length, device, precision, log
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_model(model, built, tokenizer, out_dir)
    write_json(out_dir / IDS_FILE, {"ids": list(examples.ids)})
    atomic_write_text(out_dir / ROUNDS_FILE, "".join(dumps(r, indent=None) for r in rounds))
    write_clients(out_dir / PARTITION_FILE, partition)
    if canaries is not None:
        scores = canary_scores(canaries, initial, final)
        write_json(
            out_dir / CANARY_FILE,
            {
                "schema": "dpaudit.canary_clients/1",
                "design": "update-direction",
                "ids": list(canaries.ids),
                "included": list(canaries.included),
                "norm": canaries.norm,
                "dimension": int(sum(a.size for a in initial.values())),
                "seed": canaries.seed,
                "scores": [float(s) for s in scores],
            },
        )
    write_run_file(out_dir / METRICS_FILE, UtilityFile.from_dict(metrics))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    if local is not None:
        example = make_ledger(local.worst, local.worst.steps)
        # the example-level ledger is the model's only DP claim without DP-FedAvg
        name = EXAMPLE_PRIVACY_FILE if central else PRIVACY_FILE
        write_privacy(out_dir / name, local.worst, example, complete=True)
    if central or local is None:
        ledger = make_ledger(plan, plan.steps)
        write_privacy(out_dir / PRIVACY_FILE, plan, ledger, complete=True)
    seconds = time.perf_counter() - started
    write_json(
        out_dir / COMPLETE_FILE,
        {
            "recipe": recipe,
            "steps": plan.steps,
            "device": str(device),
            "seconds": seconds,
            "finished": _now(),
            "initial_sha256": initial_sha256,
        },
    )
    return load_result(out_dir)


def _save_checkpoint(
    ckpt_dir: Path,
    recipe: dict[str, Any],
    done: int,
    arrays: dict[str, np.ndarray],
    strategy: Any,
    rounds: list[dict[str, Any]],
) -> None:
    """The global arrays, the strategy's state and the round log after round ``done``.

    Arrays go to safetensors (never pickle); the state is written last, so a checkpoint
    without a state is ignored. It holds only what every round already released.
    """
    from safetensors.numpy import save_file

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state, moments = strategy.state()
    tensors = {f"g::{k}": np.ascontiguousarray(v) for k, v in arrays.items()}
    tensors.update({k: np.ascontiguousarray(v) for k, v in moments.items()})
    tmp = ckpt_dir / (CHECKPOINT_ARRAYS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(ckpt_dir / CHECKPOINT_ARRAYS)
    write_json(
        ckpt_dir / CHECKPOINT_STATE,
        {"round": done, "recipe": recipe, "strategy": state, "rounds": rounds},
    )


def run_rounds(
    strategy: Any,
    client_app: Any,
    num_nodes: int,
    *,
    federated: FederatedConfig,
    initial_arrays: Any,
    num_rounds: int,
    evaluate_fn: Any,
    holder: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """``strategy.start`` on the configured engine; returns (Flower ``Result``, byte-counting grid).

    ``local``: :class:`~.grid.LocalGrid`, in-process and bit-reproducible. ``ray``:
    Flower's simulation engine (``flwr.simulation.run_simulation``, Ray backend) with
    ``federated.ray_client_cpus`` CPUs per client, on the Ray cluster at
    ``federated.ray_address`` when given (Ray's ``init(address=...)``), else a local Ray
    instance; the same ``ServerApp`` logic runs with Flower's grid wrapped in a
    :class:`~.grid.CountingGrid`. Ray's node ids are random, so which clients a seed
    samples differs from the local engine's (the sampling is still Poisson at rate q).

    Raises:
        DpauditError: Ray requested but not installed, or the simulation ended without
            a result.
    """
    from dpaudit.trainers.federated.grid import CountingGrid, LocalGrid

    holder = {} if holder is None else holder
    if federated.backend == "local":
        grid = LocalGrid(client_app, num_nodes)
        holder["grid"] = grid
        result = strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds,
            evaluate_fn=evaluate_fn,
        )
        return result, grid
    try:
        import ray  # noqa: F401
        from flwr.serverapp import ServerApp
        from flwr.simulation import run_simulation
    except ImportError:
        raise DpauditError(
            "federated.backend = ray needs Flower's simulation extra: pip install 'flwr[simulation]'"
        ) from None
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Any, context: Any) -> None:
        counting = CountingGrid(grid)
        holder["grid"] = counting
        holder["result"] = strategy.start(
            grid=counting,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds,
            evaluate_fn=evaluate_fn,
        )

    init_args: dict[str, Any] = (
        {"address": federated.ray_address}
        if federated.ray_address
        else {"include_dashboard": False}
    )
    import os

    environ = dict(os.environ)  # Ray's init sets PYTHONPATH, PYTHONBREAKPOINT, ... here
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_nodes,
            backend_config={
                "client_resources": {"num_cpus": federated.ray_client_cpus, "num_gpus": 0.0},
                "init_args": init_args,
            },
        )
    finally:
        os.environ.clear()
        os.environ.update(environ)
    if "result" not in holder:
        raise DpauditError(
            "the Ray simulation ended without a result (Flower's log above says why)"
        )
    return holder["result"], holder["grid"]


def _describe(central: bool, local: bool) -> str:
    if central and local:
        return "DP-FedAvg + local DP-SGD"
    if central:
        return "DP-FedAvg"
    return "FedAvg + local DP-SGD" if local else "non-private FedAvg"


def read_json_roundtrip(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from JSON (tuples become lists), so recipes compare equal."""
    import json

    return dict(json.loads(dumps(value)))


def round_summary(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals over ``rounds.jsonl`` for reports: bytes, clients, final clipping norm."""
    if not rounds:
        return {"rounds": 0}
    return {
        "rounds": len(rounds),
        "mean_clients": float(np.mean([r["replies"] for r in rounds])),
        "bytes_total": int(sum(r.get("bytes_down", 0) + r.get("bytes_up", 0) for r in rounds)),
        "final_clip_norm": rounds[-1].get("next_clip_norm", rounds[-1].get("clip_norm")),
        "final_eval_loss": rounds[-1].get("eval_loss"),
        "empty_rounds": sum(1 for r in rounds if r["replies"] == 0),
        "max_noise_std": max((r.get("noise_std") or 0.0) for r in rounds),
    }
