"""Reference (shadow) models for calibrated membership attacks.

Following LiRA's reference code (Carlini et al. 2022, "Membership Inference
Attacks From First Principles"), every population example is placed in
exactly half of the k reference models: for each example an independent
random permutation of the models picks the ⌊k/2⌋ that train on it (for odd k
a fair coin adds one more), so each example has IN and OUT models in equal
numbers and each model trains on about half of the population. Model j trains
with the same recipe as the target (DP-SGD per Abadi et al. 2016 through
Opacus, Yousefpour et al. 2021, when ``train.dp``) into ``out_dir/ref-<j>/``.

Outputs: ``membership.npy`` (examples × models, bool; ``np.save`` without
pickle), ``population_ids.json`` (row order), and one training directory per
model with its ``train_ids.json``. A model whose directory is complete with
the same recipe is skipped, an interrupted one resumes from its checkpoint.
With ``train.references_backend = "ray"`` each model is one Ray task with the
declared CPUs/GPUs (``train.reference_cpus``, ``train.reference_gpus``) on a local
Ray instance or the cluster at ``train.references_ray_address``, retried by Ray on
failure; its files come back to this process, so no shared filesystem is needed.
A federated target's references are federations (:func:`train_references`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import atomic_path, read_json, write_json
from dpaudit.config import TrainConfig
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError
from dpaudit.trainers.hooks import TrainHooks

MEMBERSHIP_FILE = "membership.npy"
POPULATION_FILE = "population_ids.json"
REFERENCE_DIRS = {"target": "references", "baseline": "references-baseline"}
"""Run subdirectory of each model's reference set; each set is trained with that model's recipe."""


def assign_membership(n: int, k: int, seed: int) -> np.ndarray:
    """An (n × k) bool matrix: example i trains model j.

    Each row has exactly ⌊k/2⌋ True entries at positions given by a random
    permutation of the models (plus one more with probability 1/2 when k is
    odd), as in LiRA's ``keep = order < k/2`` construction.
    """
    if k < 1:
        raise DpauditError(f"need at least one reference model, got k = {k}")
    rng = np.random.default_rng(seed)
    ranks = rng.random((n, k)).argsort(axis=1).argsort(axis=1)
    count = np.full(n, k // 2)
    if k % 2:
        count = count + rng.integers(0, 2, size=n)
    return ranks < count[:, None]


def reference_seed(seed: int, j: int) -> int:
    """Seed of reference model j."""
    return int(np.random.SeedSequence([int(seed), 7919, int(j)]).generate_state(1, np.uint32)[0])


def train_references(
    population: Sequence[Record],
    *,
    k: int,
    config: TrainConfig,
    tokenizer: Any,
    out_dir: str | Path,
    seed: int,
    max_length: int,
    progress: bool = True,
    federated: Any = None,
    groups: Sequence[str] | None = None,
    unit: str = "client",
    dp: bool | None = None,
) -> np.ndarray:
    """Train k reference models on random halves of ``population``; return the membership matrix.

    Args:
        population: candidate examples (unique ids); row i of the matrix is ``population[i]``.
        k: number of reference models.
        config: the training recipe (the target's).
        tokenizer: the tokenizer shared with the target.
        out_dir: directory receiving ``ref-<j>/``, ``membership.npy``, ``population_ids.json``.
        seed: seeds the membership assignment and each model.
        max_length: tokens per example.
        progress: progress bars and the cost estimate on stderr.
        federated: the target's :class:`~dpaudit.config.FederatedConfig` when the target
            was trained by federation (or user-level DP-SGD): each reference is then the
            same federation over its half (client partition by ``federated.partition``,
            by user when ``groups`` are given; ``clients_per_round`` capped at its clients;
            no update-canary clients), trained in process. LiRA and RMIA assume references
            trained like the attacked model (Carlini et al. 2022, §4).
        groups: one group per population record (its user): halves are drawn over
            groups, so a user's records are in or out of a reference together, as
            client-level membership inference needs.
        unit: the federation's ledger unit (``client`` or ``user``).
        dp: whether the federated references are the private recipe (the target's DP-FedAvg
            and/or local DP-SGD); default ``config.private``.

    Raises:
        DpauditError: on duplicate ids, or a reference directory trained with
            a different recipe (remove it to retrain).
    """
    from dpaudit.trainers.dp_sgd import COMPLETE_FILE, training_recipe
    from dpaudit.trainers.models import resolve_device

    population = list(population)
    ids = [r.id for r in population]
    if len(set(ids)) != len(ids):
        raise DpauditError("reference population has duplicate record ids")
    if len(population) < 2:
        raise DpauditError("reference population needs at least 2 examples")
    out_dir = Path(out_dir)
    if groups is not None:
        if len(groups) != len(population):
            raise DpauditError(f"{len(groups)} groups for {len(population)} reference records")
        keys = sorted(set(groups))
        if len(keys) < 2:
            raise DpauditError("references drawn by group need at least 2 groups (users)")
        index = {g: i for i, g in enumerate(keys)}
        membership = assign_membership(len(keys), k, seed)[[index[g] for g in groups]]
    else:
        membership = assign_membership(len(population), k, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MEMBERSHIP_FILE) as tmp:
        np.save(tmp, membership, allow_pickle=False)
    write_json(out_dir / POPULATION_FILE, {"ids": ids, "k": k, "seed": seed})

    device_type = resolve_device(config.device).type
    jobs = []
    for j in range(k):
        members = [population[i] for i in np.flatnonzero(membership[:, j])]
        ref_dir, ref_seed = out_dir / f"ref-{j}", reference_seed(seed, j)
        if federated is None and (ref_dir / COMPLETE_FILE).is_file():  # a federation checks itself
            saved = read_json(ref_dir / COMPLETE_FILE).get("recipe")
            recipe = training_recipe(
                members,
                config=config,
                tokenizer=tokenizer,
                seed=ref_seed,
                max_length=max_length,
                device_type=saved.get("device_type", device_type)
                if isinstance(saved, dict)
                else device_type,
            )
            if saved != recipe:
                raise DpauditError(
                    f"{ref_dir}: trained with a different recipe; remove it to retrain"
                )
            continue
        jobs.append((j, members, ref_dir, ref_seed))

    steps = [max(1, int(config.epochs * len(m) / config.batch_size + 0.5)) for _, m, _, _ in jobs]
    if progress and federated is not None:
        done = sum(1 for _, _, d, _ in jobs if (d / COMPLETE_FILE).is_file())
        print(
            f"references: {k} federations, {done} already trained, {k - done} to train "
            f"({federated.rounds} rounds each as configured)",
            file=sys.stderr,
        )
    elif progress:
        print(
            f"references: {k} models, {k - len(jobs)} already trained, {len(jobs)} to train "
            f"({sum(steps)} steps in all)",
            file=sys.stderr,
        )
    if federated is not None:
        for _j, members, ref_dir, ref_seed in jobs:
            _train_federated_reference(
                members,
                config=config,
                federated=federated,
                by_user=groups is not None,
                unit=unit,
                dp=config.private if dp is None else dp,
                tokenizer=tokenizer,
                out_dir=ref_dir,
                seed=ref_seed,
                max_length=max_length,
                progress=progress,
            )
    elif config.references_backend == "ray" and jobs:
        _ray_fan_out(jobs, config, tokenizer, max_length, progress=progress)
    else:
        from dpaudit.trainers.dp_sgd import train_model

        for n, (_j, members, ref_dir, ref_seed) in enumerate(jobs):
            probe = _CostProbe(sum(steps)) if progress and n == 0 else None
            t = time.perf_counter()
            train_model(
                members,
                config=config,
                tokenizer=tokenizer,
                out_dir=ref_dir,
                seed=ref_seed,
                max_length=max_length,
                resume=True,
                progress=progress,
                hooks=probe,
            )
            if progress and n == 0 and len(jobs) > 1:
                rest = (time.perf_counter() - t) * sum(steps[1:]) / steps[0]
                print(
                    f"references: first model took {time.perf_counter() - t:.0f} s; "
                    f"~{rest / 60:.1f} min for the other {len(jobs) - 1}",
                    file=sys.stderr,
                )
    _check_members(out_dir, population, membership)
    return membership


def _train_federated_reference(
    members: list[Record],
    *,
    config: TrainConfig,
    federated: Any,
    by_user: bool,
    unit: str,
    dp: bool,
    tokenizer: Any,
    out_dir: Path,
    seed: int,
    max_length: int,
    progress: bool,
) -> None:
    """One reference federation over ``members`` (see :func:`train_references`)."""
    import dataclasses

    from dpaudit.datasets.federated import partition_training_set
    from dpaudit.trainers.federated.privacy import user_level_federation
    from dpaudit.trainers.federated.run import train_federated

    partition = partition_training_set(
        members,
        scheme="user" if by_user or unit == "user" else federated.partition,
        n_clients=federated.clients,
        alpha=federated.dirichlet_alpha,
        seed=seed,
        min_records=1,
        group_field=federated.group_field,
    )
    if unit == "user":
        fed = user_level_federation(config, partition.n_clients)
    else:
        fed = dataclasses.replace(
            federated,
            clients_per_round=min(federated.clients_per_round, partition.n_clients),
            canary_clients=0,
        )
    train_federated(
        members,
        partition=partition,
        train=config,
        federated=fed,
        tokenizer=tokenizer,
        out_dir=out_dir,
        seed=seed,
        max_length=max_length,
        dp=dp,
        resume=True,
        progress=progress,
        canary_seed=seed,
        unit=unit,
    )


def _ray_fan_out(
    jobs: list,
    config: TrainConfig,
    tokenizer: Any,
    max_length: int,
    *,
    progress: bool,
) -> None:
    """One Ray task per reference model (``train.references_backend = "ray"``).

    Each task trains into a temporary directory on whatever node Ray places it and
    returns the directory's files; the driver writes them under ``ref-<j>/`` (so a
    cluster needs no shared filesystem). A task that fails (a lost worker, an
    out-of-memory kill, an exception) is retried twice by Ray; one that still fails stops
    the stage with its error, and the references already written stay for a rerun. A task
    reserving no GPU trains on CPU (Ray hides the GPUs from it).

    Raises:
        DpauditError: Ray is not installed, cannot start or reach the cluster, or a
            task failed three times.
    """
    import dataclasses

    try:
        import ray
    except ImportError:
        raise DpauditError(
            "train.references_backend = ray needs Ray: pip install 'dpaudit[federated-ray]' "
            "(or ray>=2.55)"
        ) from None
    import os

    from tqdm.auto import tqdm

    address = config.references_ray_address
    started_here = not ray.is_initialized()
    environ = dict(os.environ)  # ray.init sets PYTHONBREAKPOINT etc. in this process: undone below
    if started_here:
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except Exception as exc:  # ConnectionError, RuntimeError, ... from Ray
            where = address or "a local Ray instance"
            raise DpauditError(f"cannot start Ray ({where}): {str(exc).splitlines()[0]}") from None
    # Ray hides every GPU from a task that reserves none (CUDA_VISIBLE_DEVICES="").
    device = "cuda" if config.reference_gpus > 0 else "cpu"
    task_config = dataclasses.replace(config, device=device)
    remote = ray.remote(
        num_cpus=config.reference_cpus,
        num_gpus=config.reference_gpus,
        max_retries=2,
        retry_exceptions=True,
    )(_train_reference_files)
    tok_ref = ray.put(tokenizer)
    pending = {
        remote.remote(members, task_config, tok_ref, max_length, ref_seed): (j, ref_dir)
        for j, members, ref_dir, ref_seed in jobs
    }
    bar = tqdm(
        total=len(jobs),
        desc=f"references on Ray ({address or 'local'})",
        unit="model",
        disable=not progress,
    )
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            j, ref_dir = pending.pop(done[0])
            try:
                files = ray.get(done[0])
            except Exception as exc:  # RayTaskError wraps the worker's exception
                cause = getattr(exc, "cause", None) or exc
                first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
                raise DpauditError(
                    f"reference ref-{j} failed on Ray after 2 retries: "
                    f"{type(cause).__name__}: {first}"
                ) from None
            _write_files(ref_dir, files)
            bar.update()
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref)
        if started_here:
            ray.shutdown()
            os.environ.clear()
            os.environ.update(environ)


def _train_reference_files(
    members: list[Record], config: TrainConfig, tokenizer: Any, max_length: int, seed: int
) -> dict[str, bytes]:
    """Ray task body: train one reference into a temporary directory; return its files."""
    import tempfile

    from dpaudit.trainers.dp_sgd import train_model

    with tempfile.TemporaryDirectory(prefix="dpaudit-ref-") as tmp:
        out = Path(tmp) / "ref"
        train_model(
            members,
            config=config,
            tokenizer=tokenizer,
            out_dir=out,
            seed=seed,
            max_length=max_length,
            progress=False,
        )
        return {
            str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
        }


def _write_files(ref_dir: Path, files: dict[str, bytes]) -> None:
    """Write a reference's files, ``complete.json`` last (it marks the model finished)."""
    from dpaudit.atomic import atomic_path
    from dpaudit.trainers.dp_sgd import COMPLETE_FILE

    ref_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == COMPLETE_FILE):
        target = ref_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(files[name])


def _check_members(out_dir: Path, population: list[Record], membership: np.ndarray) -> None:
    """Each model's recorded training ids must be exactly its column of the matrix."""
    for j in range(membership.shape[1]):
        trained = read_json(out_dir / f"ref-{j}" / "train_ids.json")["ids"]
        expected = [population[i].id for i in np.flatnonzero(membership[:, j])]
        if trained != expected:
            raise DpauditError(
                f"{out_dir / f'ref-{j}'}: trained ids do not match column {j} of membership.npy"
            )


class _CostProbe(TrainHooks):
    """Prints an estimate of the total reference-training time after a few steps."""

    def __init__(self, total_steps: int, after: int = 3):
        self.total_steps, self.after = total_steps, after
        self.t0: float | None = None

    def on_step_end(self, *, step: int, loss: float | None, model: Any) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()
            self.first = step
        elif step - self.first == self.after:
            per = (time.perf_counter() - self.t0) / self.after
            print(
                f"\nreferences: ~{per:.2f} s/step measured, ~{per * self.total_steps / 60:.1f} min in all",
                file=sys.stderr,
            )


def check_reference_pool(out_dir: str | Path, ids: Sequence[str], *, split: str) -> None:
    """Refuse reference models whose pool (``population_ids.json``) is not the records ``ids``.

    The pipeline trains references on the members and non-members of the
    run's split; a reference set without ``population_ids.json`` is not checked.

    Raises:
        DpauditError: the pool differs (the data changed after the references were trained).
    """
    path = Path(out_dir) / POPULATION_FILE
    if not path.is_file():
        return
    pool = set(read_json(path)["ids"])
    if pool == set(ids):
        return
    missing = sorted(set(ids) - pool)
    example = f"e.g. {missing[0]!r} is in none" if missing else "they hold records outside it"
    raise DpauditError(
        f"{path}: the reference models were not trained on halves of {split} ({example}); the "
        "data changed after they were trained: retrain them (--force starts the run over)"
    )


def load_membership(out_dir: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read ``membership.npy`` and the population ids (row order)."""
    out_dir = Path(out_dir)
    return np.load(out_dir / MEMBERSHIP_FILE, allow_pickle=False), read_json(
        out_dir / POPULATION_FILE
    )["ids"]
