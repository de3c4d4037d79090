"""Orchestration of whole runs: the one place that calls every subpackage in order.

The subpackages form a one-way flow (datasets → trainers → attacks → audit →
reports); this module sits above them and is what the CLI's run-level
commands call.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dpaudit.config import RunConfig
from dpaudit.errors import DpauditError
from dpaudit.rundir import RunDir
from dpaudit.workflows.result import RunResult

DEMO_NAME = "demo"


def packaged_config(name: str) -> Path:
    """The path of a config shipped inside the package (``dpaudit/configs/<name>.toml``).

    Raises:
        DpauditError: no such packaged config (the message lists those shipped).
    """
    from dpaudit.config import packaged_configs
    from dpaudit.errors import DpauditError

    shipped = packaged_configs()
    stem = name.removesuffix(".toml")
    if stem not in shipped:
        raise DpauditError(f"no packaged config {name!r} (shipped: {', '.join(sorted(shipped))})")
    return shipped[stem]


def demo_config_path() -> Path:
    """The demo's config: the packaged ``quickstart.toml``."""
    return packaged_config("quickstart")


def run_prepare(
    config: RunConfig,
    *,
    resume: bool = False,
    argv: list[str] | None = None,
    force: bool = False,
) -> list[str]:
    """Create the run directory and run the data stage; return summary lines.

    ``force`` discards an existing run of this name first (see
    :func:`~dpaudit.workflows.integrity.open_run`).
    """
    from dpaudit.datasets.prepare import prepare_data
    from dpaudit.datasets.summary import summarize
    from dpaudit.workflows.integrity import open_run

    run = open_run(config, argv=argv, resume=resume, force=force)
    prepared = prepare_data(config, run, resume=resume)
    from dpaudit.datasets.packaged import data_source

    summary = summarize(prepared.records, data_source(config.data.path or ""))
    reps = Counter(c.repetitions for c in prepared.secret_sharer)
    included = sum(c.included for c in prepared.one_run)
    lines = [f"run directory: {run.path}", "", "data"]
    lines += ["  " + line for line in summary.lines()]
    lines += [
        "",
        "split",
        f"  members            {len(prepared.split.members)}",
        f"  non-members        {len(prepared.split.nonmembers)}",
        f"  population         {len(prepared.split.population)}",
        f"  training examples  {len(prepared.train)} (members + canary copies)",
        "",
        "canaries",
        f"  secret space       {config.data.secret_space}",
        "  secret-sharer      "
        + (", ".join(f"{n} x {r} reps" for r, n in sorted(reps.items())) or "none"),
        f"  one-run audit      {len(prepared.one_run)} ({included} included; bits in data/inclusion.json)",
    ]
    return lines


# Seeds of each stage, derived from the master seed so one number reproduces a run.
SEED_OFFSETS = {"target": 1, "baseline": 2, "references": 3, "attacks": 4, "audit": 5}


def stage_seeds(config: RunConfig) -> dict[str, int]:
    """The seed of every stage, as recorded in the manifest."""
    return {"master": config.seed, **{k: config.seed + v for k, v in SEED_OFFSETS.items()}}


def _tokenizer(config: RunConfig, data_dir: Path):
    from dpaudit.datasets.tokenizer import load_tokenizer

    if config.data.tokenizer == "train" or (data_dir / "tokenizer").is_dir():
        # trained, or a named tokenizer extended with the audit canaries' reserved tokens
        return load_tokenizer(data_dir / "tokenizer")
    return load_tokenizer(config.data.tokenizer)


def _train_inputs(config: RunConfig, run: RunDir, extra: dict | None = None) -> dict[str, str]:
    """Input hashes of a training stage: the data stage's outputs and the training recipe."""
    from dpaudit.rundir import sha256_text

    data_record = run.stage_record("data")
    inputs = dict(data_record.outputs if data_record else {})
    inputs["train_config"] = sha256_text(
        repr((dataclasses.asdict(config.train), config.data.max_length, config.seed))
    )
    if extra:
        inputs.update(extra)
    return inputs


def run_train(
    config: RunConfig,
    *,
    resume: bool = False,
    argv: list[str] | None = None,
    progress: bool = True,
    force: bool = False,
    references: int = 0,
) -> list[str]:
    """Data stage, then the target model (DP unless disabled) and the non-private baseline.

    ``force`` discards an existing run of this name first (see
    :func:`~dpaudit.workflows.integrity.open_run`). With ``progress``, the plan
    (models, steps, examples) is printed on stderr before the first bar, and an
    estimate of the remaining training time once the first model has trained;
    ``references``: how many reference models the caller trains next (for both).

    Under ``torchrun`` (several processes) each model trains on every rank
    (:mod:`dpaudit.trainers.distributed`): rank 0 opens the run and writes the
    data stage, the manifest and the models; the other ranks read the data
    stage and return no lines.

    Raises:
        DpauditError: bad inputs, or a federated / user-level run under torchrun.
    """
    from dpaudit.trainers.distributed import process_group, under_torchrun
    from dpaudit.trainers.models import resolve_device

    if under_torchrun() and (config.federated.enabled or config.train.unit == "user"):
        raise DpauditError(
            "torchrun trains one model on several processes; federated and user-level runs "
            "(federated.enabled, train.unit = user) train in one process: run without torchrun"
        )
    with process_group(resolve_device(config.train.device).type) as ranks:
        if not ranks.is_main:
            _follow_train(config, ranks, resume=resume)
            return []
        announced: list[str] = []
        try:
            return _run_train(
                config,
                resume=resume,
                argv=argv,
                progress=progress,
                force=force,
                references=references,
                ranks=ranks,
                announced=announced,
            )
        except DpauditError as exc:
            if ranks.active and not announced:  # the other ranks wait for rank 0's first message
                ranks.broadcast(("error", str(exc)))
            raise  # once training started, torchrun stops the other ranks when rank 0 exits


def _follow_train(config: RunConfig, ranks: Any, *, resume: bool) -> None:
    """A rank other than 0: train each model rank 0 trains, on the data stage rank 0 wrote."""
    from dpaudit.datasets.prepare import load_prepared
    from dpaudit.trainers import train_model

    message = ranks.broadcast(None)
    if message[0] == "error":  # rank 0 prints it
        raise SystemExit(2)
    if message[0] != "train":  # nothing to train (every model skipped on --resume)
        return
    prepared = load_prepared(config.run_dir)
    tokenizer = _tokenizer(config, prepared.data_dir)
    while message[0] == "train":
        _, name, dp, seed = message
        try:
            train_model(
                prepared.train,
                config=dataclasses.replace(config.train, dp=dp),
                tokenizer=tokenizer,
                out_dir=config.run_dir / name,
                eval_records=(),
                seed=seed,
                max_length=config.data.max_length,
                dp=dp,
                resume=resume,
                progress=False,
                ranks=ranks,
            )
        except DpauditError:  # rank 0 checks the same files and prints the same error
            raise SystemExit(2) from None
        message = ranks.broadcast(None)


def _run_train(
    config: RunConfig,
    *,
    resume: bool,
    argv: list[str] | None,
    progress: bool,
    force: bool,
    references: int,
    ranks: Any,
    announced: list[str],
) -> list[str]:
    from dpaudit.datasets.prepare import prepare_data
    from dpaudit.trainers import train_model
    from dpaudit.workflows.integrity import open_run

    run = open_run(config, argv=argv, resume=resume, force=force)
    seeds = stage_seeds(config)
    run.update(seeds={**run.manifest()["seeds"], **seeds})
    prepared = prepare_data(config, run, resume=resume)
    tokenizer = _tokenizer(config, prepared.data_dir)
    eval_records = prepared.part("nonmembers")
    lines = [f"run directory: {run.path}"]
    private = config.train.private or (config.federated.enabled and config.federated.local_dp)
    jobs = [("target", private)]
    if config.train.baseline and private:
        jobs.append(("baseline", False))
    user_level = config.train.unit == "user"
    partition = (
        federated_partition(config, prepared, run)
        if config.federated.enabled or user_level
        else None
    )
    federation = config.federated
    if user_level and partition is not None:
        from dpaudit.trainers.federated.privacy import user_level_federation

        users = sum(1 for c in partition.clients if not c.client_id.startswith("client-or-"))
        federation = user_level_federation(config.train, users)
    inputs_of: dict[str, dict[str, str]] = {}
    for name, dp in jobs:
        extra = {"dp": str(dp)}
        if partition is not None:
            from dpaudit.rundir import sha256_text

            extra["federated"] = sha256_text(repr(dataclasses.asdict(federation)))
        inputs_of[name] = _train_inputs(config, run, extra)
    # Decided before the plan, so that the plan lists only what will train.
    skipped = {name for name, _ in jobs if resume and run.can_skip(name, inputs_of[name])}
    plan = training_plan(
        config,
        prepared,
        [name for name, _ in jobs if name not in skipped],
        references,
        clients=None if partition is None else partition.n_clients,
        federation=federation if partition is not None else None,
    )
    if progress and plan.rows:
        _status(plan.lines())
    for name, dp in jobs:
        inputs = inputs_of[name]
        out_dir = run.path / name
        if name in skipped:
            lines.append(f"{name}: unchanged, skipped (--resume)")
            plan.done(name, None)
            continue
        started = time.monotonic()
        with run.stage(name, inputs, seed=seeds[name]) as record:
            if partition is not None:
                from dpaudit.trainers.federated.run import train_federated

                result = train_federated(
                    prepared.train,
                    partition=partition,
                    train=config.train,
                    federated=federation,
                    tokenizer=tokenizer,
                    out_dir=out_dir,
                    eval_records=eval_records,
                    seed=seeds[name],
                    max_length=config.data.max_length,
                    dp=dp,
                    resume=resume,
                    progress=progress,
                    canary_seed=config.seed,
                    unit="user" if user_level else "client",
                )
            else:
                ranks.broadcast(("train", name, dp, seeds[name]))
                announced.append(name)
                result = train_model(
                    prepared.train,
                    config=dataclasses.replace(config.train, dp=dp),
                    tokenizer=tokenizer,
                    out_dir=out_dir,
                    eval_records=eval_records,
                    seed=seeds[name],
                    max_length=config.data.max_length,
                    dp=dp,
                    resume=resume,
                    progress=progress,
                    ranks=ranks,
                )
            from dpaudit.rundir import sha256_tree

            record.outputs.update(
                {k: v for k, v in sha256_tree(out_dir).items() if not k.startswith("checkpoint")}
            )
        run.update(device=str(getattr(result, "device", None)))
        lines.append(f"{name}: {result.summary() if hasattr(result, 'summary') else out_dir}")
        estimate = plan.done(name, time.monotonic() - started)
        if progress and estimate:
            _status([estimate])
    if ranks.active and announced:
        lines.insert(
            1, f"trained on {ranks.world_size} processes (torchrun): {', '.join(announced)}"
        )
    announced.append("done")  # an error from here on: the other ranks have left
    ranks.broadcast(("done",))
    base_model = packaged_base_model(config.train.model)
    if run.manifest().get("base_model") != base_model:
        run.update(base_model=base_model)
    return lines


def federated_partition(config: RunConfig, prepared: Any, run: RunDir) -> Any:
    """The clients of a federated run (``data/clients.json``), from the data stage's training list."""
    from dpaudit.datasets.federated import partition_training_set, write_clients

    fed = config.federated
    partition = partition_training_set(
        prepared.train,
        scheme="user" if config.train.unit == "user" else fed.partition,
        n_clients=fed.clients,
        alpha=fed.dirichlet_alpha,
        seed=config.seed,
        min_records=fed.min_client_records,
        group_field=fed.group_field,
        audit_canaries_alone=True,
    )
    write_clients(run.path / "data" / "clients.json", partition)
    return partition


def _status(lines: list[str]) -> None:
    """Status lines on stderr, between progress bars (the CLI prints results on stdout)."""
    import sys

    for line in lines:
        print(line, file=sys.stderr, flush=True)


@dataclasses.dataclass
class TrainingPlan:
    """What a run will train, in optimizer steps: printed before the first progress bar.

    Attributes:
        rows: ``(model, steps, examples, lot size, what)`` per model to train.
        per_step: seconds per step measured on the first model trained (``None`` before).
    """

    rows: list[tuple[str, int, int, int, str]]
    per_step: float | None = None
    finished: set[str] = dataclasses.field(default_factory=set)
    federated: bool = False

    def lines(self) -> list[str]:
        out = ["plan (stages run in this order; each bar shows its own rate and time left):"]
        for name, steps, n, lot, what in self.rows:
            if self.federated:
                out.append(f"  {name:<12} {what}: {steps} rounds, ~{lot} of {n} clients per round")
            else:
                # a reference trains on a random half: its size, hence its steps, vary a little
                about = "~" if name.startswith("ref-") else ""
                out.append(
                    f"  {name:<12} {what}: {about}{steps} steps, lots of ~{lot} from {about}{n} examples"
                )
        total = sum(r[1] for r in self.rows)
        word = "federated rounds" if self.federated else "training steps"
        out.append(
            f"  then attacks, audit and report; {total} {word} in all (an estimate "
            "follows once the first model has trained)"
        )
        return out

    def done(self, name: str, seconds: float | None) -> str | None:
        """Record a finished model; the estimate of what is left, after the first timed one."""
        self.finished.add(name)
        row = next((r for r in self.rows if r[0] == name), None)
        if seconds is not None and row is not None and row[1] > 0 and self.per_step is None:
            self.per_step = seconds / row[1]
        left = sum(r[1] for r in self.rows if r[0] not in self.finished)
        if self.per_step is None or left == 0:
            return None
        seconds = left * self.per_step
        span = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
        return (
            f"estimate: {left} training steps left at {self.per_step:.1f} s/step (measured on "
            f"{name}) ≈ {span} of training, then attacks, audit and report"
        )


def training_plan(
    config: RunConfig,
    prepared: Any,
    models: list[str],
    references: int,
    *,
    clients: int | None = None,
    federation: Any = None,
) -> TrainingPlan:
    """The models a run trains, with their step counts (q, T of :func:`plan_privacy`)."""
    from dpaudit.errors import DpauditError
    from dpaudit.trainers.privacy import plan_privacy

    n = len(prepared.train)
    rows = []
    if federation is not None:
        fed = federation
        user_level = config.train.unit == "user"
        for name in models:
            central = name == "target" and config.train.private
            local = name == "target" and fed.local_dp
            rows.append(
                (
                    name,
                    fed.rounds,
                    clients if clients is not None else fed.clients,
                    fed.clients_per_round,
                    (
                        ("user-level DP-SGD" if central else "non-private, by user")
                        if user_level
                        else ("DP-FedAvg" if central else "FedAvg")
                        + (" + local DP-SGD" if local else "" if central else " (non-private)")
                    ),
                )
            )
        total = clients if clients is not None else fed.clients
        half = max(2, total // 2)
        for i in range(references):  # reference federations over half of the users
            ref_rounds = max(1, fed.rounds // 2) if user_level else fed.rounds
            what = "DP reference" if config.train.private or fed.local_dp else "reference"
            rows.append((f"ref-{i}", ref_rounds, half, min(fed.clients_per_round, half), what))
        return TrainingPlan(rows, federated=True)
    for name in models:
        dp = name == "target" and config.train.private
        what = "DP-SGD" if dp else "non-private"
        try:
            plan = plan_privacy(config.train, n, dp=False)  # steps only: no calibration here
        except DpauditError:
            continue
        rows.append((name, plan.steps, n, config.train.batch_size, what))
    if references:
        pool = len(prepared.part("members")) + len(prepared.part("nonmembers"))
        half = max(1, pool // 2)
        try:
            ref = plan_privacy(config.train, half, dp=False)
        except DpauditError:
            ref = None
        if ref is not None:
            what = "DP-SGD" if config.train.private else "non-private"
            for i in range(references):
                rows.append((f"ref-{i}", ref.steps, half, config.train.batch_size, what))
    return TrainingPlan(rows)


def packaged_base_model(spec: str) -> dict[str, Any] | None:
    """The manifest's ``base_model``: provenance of a packaged GGUF ``train.model``, else ``None``.

    Read from the ``provenance.json`` of the conversion training used (in
    :func:`~dpaudit.packaged_models.cache_root`): nothing is converted or loaded
    here. Of several conversions of the same package version, the one of the
    installed GGUF file (by SHA-256). When none is cached, only the spec, package
    and version are recorded.
    """
    from dpaudit.errors import DpauditError
    from dpaudit.packaged_models import (
        cache_root,
        is_packaged_model,
        locate_gguf,
        read_provenance,
    )
    from dpaudit.runfiles.manifest import BaseModelEntry

    if not is_packaged_model(spec):
        return None
    try:
        package, version, gguf = locate_gguf(spec)
    except DpauditError:
        return BaseModelEntry(spec=spec).to_dict()
    root = cache_root()
    found = [
        prov
        for directory in (sorted(root.iterdir()) if root.is_dir() else [])
        if not directory.name.startswith(".")
        and (prov := read_provenance(directory)) is not None
        and prov.get("package") == package
        and prov.get("version") == version
        and prov.get("gguf_file") == gguf.name
        and prov.get("cache_key") == directory.name
    ]
    if len(found) > 1:
        from dpaudit.rundir import sha256_file

        digest = sha256_file(gguf)
        found = [prov for prov in found if prov.get("gguf_sha256") == digest]
    known = BaseModelEntry(spec=spec, package=package, version=version, gguf_file=gguf.name)
    if not found:
        return known.to_dict()
    fields = BaseModelEntry.model_fields
    entry = {k: v for k, v in found[0].items() if k in fields and k != "spec"}
    try:
        return BaseModelEntry.from_dict({**entry, "spec": spec}).to_dict()
    except DpauditError:  # a provenance.json of another layout: what is known without it
        return known.to_dict()


def run_train_references(
    config: RunConfig,
    *,
    num: int | None = None,
    resume: bool = False,
    argv: list[str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[str]:
    """Train reference models on random halves of the members and non-members.

    The references of the target use the target's recipe (DP-SGD when the
    target is private); with ``train.baseline_references`` a second set, trained
    without DP on the same halves, calibrates the attacks on the non-private
    baseline (``references-baseline/``). LiRA and RMIA assume references trained
    like the attacked model (Carlini et al. 2022, §4; Zarifzadeh et al. 2024).

    Adds to the run of ``config`` (created when there is none): refused when
    ``config`` differs from the settings of the run's finished data and
    training stages; ``num`` is recorded as ``train.num_references``
    (:func:`~dpaudit.workflows.integrity.open_run`).
    """
    from dpaudit.datasets.prepare import prepare_data
    from dpaudit.errors import DpauditError
    from dpaudit.trainers.references import REFERENCE_DIRS
    from dpaudit.workflows.integrity import open_run

    if num is not None:
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, num_references=num)
        )
    if config.train.num_references < 1:
        raise DpauditError("train.num_references = 0: no reference model to train; pass --num K")
    run = open_run(config, argv=argv, resume=resume, force=force, reopen=True)
    k = config.train.num_references
    run.update(seeds={**run.manifest()["seeds"], **stage_seeds(config)})
    prepared = prepare_data(config, run, resume=True)
    tokenizer = _tokenizer(config, prepared.data_dir)
    # The audited examples: each lands in about half the references, so online LiRA has IN and OUT
    # models for every one; the population part stays out of all of them, for RMIA's z samples.
    pool = prepared.part("members") + prepared.part("nonmembers")
    fed = config.federated
    local_dp = fed.enabled and fed.local_dp
    private = config.train.private or local_dp
    sets = [("target", config.train, private)]
    if config.train.baseline and private and config.train.baseline_references:
        sets.append(("baseline", dataclasses.replace(config.train, dp=False), False))
    federated_kw: dict[str, Any] = {}
    if fed.enabled or config.train.unit == "user":  # references are federations too
        federated_kw = {
            "federated": fed,
            "groups": [str(r.meta.get("user")) for r in pool] if config.split_by_user else None,
            "unit": "user" if config.train.unit == "user" else "client",
        }
    lines = [f"run directory: {run.path}"]
    for note in _reference_notes(config, prepared, pool, k):  # said before any model trains
        import logging

        logging.getLogger(__name__).warning("note: %s", note)
        lines.append(f"note: {note}")
    for model, recipe, dp in sets:
        stage = REFERENCE_DIRS[model]
        inputs = _train_inputs(config, run, {"num": str(k), "dp": str(dp)})
        if model == "target":
            inputs.pop("dp")  # unchanged inputs of existing runs' target references
        if federated_kw:
            from dpaudit.rundir import sha256_text

            inputs["federated"] = sha256_text(repr(dataclasses.asdict(fed)))
        if resume and run.can_skip(stage, inputs):
            lines.append(f"{stage}: unchanged, skipped (--resume)")
            continue
        membership = train_reference_stage(
            run,
            stage,
            inputs,
            pool,
            k=k,
            recipe=recipe,
            tokenizer=tokenizer,
            seed=stage_seeds(config)["references"],
            max_length=config.data.max_length,
            progress=progress,
            **({**federated_kw, "dp": dp} if federated_kw else {}),
        )
        kind = "federations" if federated_kw else "models"
        lines.append(
            f"{stage}: {k} {'DP' if dp else 'non-private'} {kind} over {len(pool)} "
            f"examples; membership matrix {membership.shape} (each example in "
            f"{membership.sum(axis=1).min()}–{membership.sum(axis=1).max()} models)"
        )
    return lines


def _reference_notes(config: RunConfig, prepared: Any, pool: list[Any], k: int) -> list[str]:
    """The configured attacks that ``k`` references will not let run (LiRA with one), and why.

    The attack stage's own planning on the membership matrix these references
    will get (same seed): docs/decisions.md, "Unmet preconditions".
    """
    from dpaudit.attacks.stage import ReferenceSet, plan_stage, skip_notes
    from dpaudit.trainers.references import assign_membership

    seeds = stage_seeds(config)
    membership = assign_membership(len(pool), k, seeds["references"])
    refs = ReferenceSet(models=[None] * k, membership=membership, ids=[r.id for r in pool])
    _, skipped = plan_stage(
        config, prepared, parts=("mia",), seed=seeds["attacks"], references=refs, tokenizer=None
    )
    return skip_notes(skipped)


def train_reference_stage(
    run: RunDir,
    stage: str,
    inputs: dict[str, str],
    pool: list[Any],
    *,
    k: int,
    recipe: Any,
    tokenizer: Any,
    seed: int,
    max_length: int,
    progress: bool,
    **federated: Any,
) -> Any:
    """Train ``k`` references on random halves of ``pool`` into ``<run>/<stage>/``, as a recorded stage.

    The one place the pipeline and the checkpoint audit train references:
    the stage records ``inputs`` and the membership matrix's hash (so
    ``--resume`` can skip it). Returns the membership matrix
    (``len(pool)`` × ``k``, bool). ``federated``: the federated keywords of
    :func:`~dpaudit.trainers.references.train_references` (``federated``, ``groups``,
    ``unit``, ``dp``).
    """
    from dpaudit.rundir import sha256_file
    from dpaudit.trainers import train_references

    with run.stage(stage, inputs, seed=seed) as record:
        membership = train_references(
            pool,
            k=k,
            config=recipe,
            tokenizer=tokenizer,
            out_dir=run.path / stage,
            seed=seed,
            max_length=max_length,
            progress=progress,
            **federated,
        )
        record.outputs.update({"membership.npy": sha256_file(run.path / stage / "membership.npy")})
    return membership


def config_of_run(run_dir: str | Path, sets: tuple[str, ...] = ()) -> RunConfig:
    """The resolved config recorded in a run's manifest (``--set`` may change attack/audit/report settings)."""
    from dpaudit.config import config_from_dict, merge, parse_set

    run = RunDir(run_dir)
    path = run.path if run.path.name not in ("", ".", "..") else run.path.resolve()
    # The run is where it is now (whatever name it was created under).
    data = {**run.manifest()["config"], "name": path.name, "runs_dir": str(path.parent)}
    config = config_from_dict(merge(data, parse_set(sets)) if sets else data)
    return dataclasses.replace(config, runs_dir=str(path.parent), name=path.name)


def trained_models(run: RunDir, models: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The trained model directories of a run (target, baseline), or check the ones asked for."""
    from dpaudit.errors import DpauditError

    found = tuple(m for m in ("target", "baseline") if (run.path / m / "privacy.json").is_file())
    if models:
        missing = [m for m in models if m not in found]
        if missing:
            raise DpauditError(
                f"{run.path}: no trained model {missing[0]!r} (found: {', '.join(found) or 'none'})"
            )
        return tuple(models)
    if not found:
        raise DpauditError(f"{run.path}: no trained model; run `dpaudit train` first")
    return found


def run_attacks(
    run_dir: str | Path,
    *,
    parts: tuple[str, ...],
    models: tuple[str, ...] | None = None,
    sets: tuple[str, ...] = (),
    resume: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
) -> list[str]:
    """Attack the trained models of an existing run (``argv``: recorded with each stage)."""
    from dpaudit.attacks.stage import run_attack_stage
    from dpaudit.datasets.prepare import load_prepared

    config = config_of_run(run_dir, sets)
    run = RunDir(run_dir, argv=argv)
    prepared = load_prepared(run.path)
    seed = stage_seeds(config)["attacks"]
    lines: list[str] = []
    for name in trained_models(run, models):
        lines += run_attack_stage(
            run, config, prepared, name, seed=seed, resume=resume, progress=progress, parts=parts
        )
    return lines


def run_audit(
    run_dir: str | Path,
    *,
    models: tuple[str, ...] | None = None,
    sets: tuple[str, ...] = (),
    resume: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
) -> list[str]:
    """Empirical ε lower bounds against the ledgers of an existing run (``audit/bounds.json``)."""
    from dpaudit.audit.stage import assess_run, run_audit_stage, verdict_line
    from dpaudit.datasets.prepare import load_prepared

    config = config_of_run(run_dir, sets)
    run = RunDir(run_dir, argv=argv)
    prepared = load_prepared(run.path)
    lines = []
    names = trained_models(run, models)
    fed = config.federated
    local_only = config.local_dp_only
    client_level = fed.enabled and fed.canary_clients > 0 and not local_only
    if client_level and config.data.one_run_canaries:
        lines.append(
            "audit: record canaries not judged: the audit uses federated.canary_clients (set it "
            "to 0 to audit with the record canaries, each one a client of its own)"
        )
    if local_only and fed.canary_clients:
        lines.append(
            "audit: canary clients not used: local DP-SGD alone makes no client-level claim; "
            "the audit uses record canaries (data.one_run_canaries)"
        )
    for name in names:
        if client_level:
            from dpaudit.audit.client_level import run_client_audit_stage

            verdict = run_client_audit_stage(
                run, config, name, seed=stage_seeds(config)["audit"], resume=resume
            )
            if verdict is None:
                lines.append(f"audit/{name}: unchanged, skipped (--resume)")
            continue
        if fed.enabled and not config.data.one_run_canaries:
            continue
        verdict = run_audit_stage(
            run,
            config,
            prepared,
            name,
            seed=stage_seeds(config)["audit"],
            resume=resume,
            progress=progress,
        )
        if verdict is None:
            lines.append(f"audit/{name}: unchanged, skipped (--resume)")
    # Power: each model's verdict against its ceiling and the run's non-private control.
    assessed = assess_run(run, config, names)
    lines += [verdict_line(name, assessed[name]) for name in names if name in assessed]
    return lines


def run_all(
    config: RunConfig,
    *,
    resume: bool = False,
    argv: list[str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> RunResult:
    """The main job: data → target and baseline → references → attacks → audit → report.

    Each stage is recorded in the manifest and skipped on ``resume`` when its
    inputs are unchanged; ``force`` discards an existing run of this name first.

    Returns:
        :class:`~dpaudit.workflows.result.RunResult` (run directory, report,
        audit and policy verdicts, and the lines the CLI prints).
    """
    lines = run_train(
        config,
        resume=resume,
        argv=argv,
        progress=progress,
        force=force,
        references=config.train.num_references,
    )
    run = RunDir(config.run_dir)
    if config.train.num_references:
        lines += run_train_references(config, resume=resume, argv=argv, progress=progress)[1:]
    lines += run_attacks(
        run.path,
        parts=("mia", "canary", "memorization", "pii"),
        resume=resume,
        progress=progress,
        argv=argv,
    )
    if config.federated.enabled or config.train.unit == "user":
        lines += run_client_mia(run.path, config)
    fed = config.federated
    local_only = config.local_dp_only
    if config.data.one_run_canaries or (fed.enabled and fed.canary_clients and not local_only):
        lines += run_audit(run.path, resume=resume, progress=progress, argv=argv)
    lines += run_report(run.path)
    return RunResult.from_run_dir(run.path, lines)


def run_client_mia(run_dir: str | Path, config: RunConfig) -> list[str]:
    """Client membership inference of each federated model (``attacks/<model>/client_mia.json``).

    Needs a user partition (members and held-out clients are whole users); otherwise
    a line says why it was skipped.
    """
    from dpaudit.atomic import read_json, write_json
    from dpaudit.attacks.client_mia import client_membership
    from dpaudit.attacks.scores import SCORES_FILE, AttackScores
    from dpaudit.datasets.prepare import load_prepared
    from dpaudit.errors import DpauditError

    run = RunDir(run_dir)
    if not config.split_by_user:
        return [
            "client membership: skipped: needs federated.partition = user (held-out clients "
            "are the held-out users)"
        ]
    prepared = load_prepared(run.path)
    held: dict[str, list[str]] = {}
    for r in prepared.part("nonmembers"):
        held.setdefault(str(r.meta.get("user")), []).append(r.id)
    lines = []
    for name in trained_models(run):
        model_dir = run.path / name
        clients_file, rounds_file = model_dir / "clients.json", model_dir / "rounds.jsonl"
        if not clients_file.is_file() or not rounds_file.is_file():
            continue
        partition = read_json(clients_file)
        members = {
            c["client_id"]: list(c["record_ids"])
            for c in partition["clients"]
            if not c["client_id"].startswith("client-or-")  # audit canaries, not users
        }
        joined_ids = {
            cid
            for line in rounds_file.read_text(encoding="utf-8").splitlines()
            if line
            for cid in json.loads(line).get("clients", [])
        }
        joined = {c: ids for c, ids in members.items() if c in joined_ids}
        never = {c: ids for c, ids in members.items() if c not in joined_ids}
        results: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        attack_dir = run.path / "attacks" / name
        for path in sorted(attack_dir.glob(f"*/{SCORES_FILE}")):
            scores = AttackScores.load(path.parent)
            try:
                res = client_membership(
                    scores,
                    joined=joined,
                    never_sampled=never,
                    held_out=held,
                    fprs=config.attack.fprs,
                    bootstrap=config.attack.bootstrap,
                    seed=stage_seeds(config)["attacks"],
                )
            except DpauditError as exc:
                skipped[scores.attack] = str(exc)
                continue
            results[scores.attack] = res.to_dict()
        write_json(
            attack_dir / "client_mia.json",
            {"schema": "dpaudit.client_mia/1", "attacks": results, "skipped": skipped},
        )
        if results:
            best = max(results.values(), key=lambda r: r["auc"])
            lines.append(
                f"client membership/{name}: best AUC {best['auc']:.3f} ({best['attack']}) over "
                f"{best['n_member']} member and {best['n_nonmember']} non-member clients "
                f"({best['never_sampled']} never sampled; {best['clients_unscored']} clients "
                "without a scored record left out)"
            )
    return lines


def run(
    config: RunConfig | str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    sets: tuple[str, ...] = (),
    force: bool = False,
) -> RunResult:
    """The main job from Python: ``dpaudit.run(config)`` (what ``dpaudit run`` does).

    Args:
        config: a :class:`~dpaudit.config.RunConfig` (e.g. from
            :func:`dpaudit.load_config`) or the path of a TOML config.
        resume: skip stages whose inputs are unchanged; continue interrupted training.
            Settings that differ from those the run's finished data and training
            stages were built with are refused.
        progress: progress bars on stderr.
        sets: ``section.key=value`` overrides, with a path config.
        force: discard an existing run of this name and start over.

    Returns:
        :class:`~dpaudit.workflows.result.RunResult`.

    Raises:
        DpauditError / ConfigError: bad configuration, or a resume that would
            change a finished stage's settings (checked before any work).
    """
    if not isinstance(config, RunConfig):
        from dpaudit.workflows.validate import load_config

        config = load_config(config, sets=sets)
    else:
        from dpaudit.workflows.validate import check_config

        check_config(config)
    return run_all(config, resume=resume, argv=["dpaudit.run"], progress=progress, force=force)


def run_report(
    run_dir: str | Path,
    *,
    reveal: bool | None = None,
    formats: tuple[str, ...] | None = None,
    out_dir: str | Path | None = None,
) -> list[str]:
    """Render the report of a run from its directory alone (defaults: the run's report config)."""
    from dpaudit.reports import write_report

    paths = write_report(run_dir, reveal=reveal, formats=formats, out_dir=out_dir)
    values = paths.values() if isinstance(paths, dict) else paths
    return ["report: " + ", ".join(str(p) for p in values)]


def sweep_axes(sets: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """Split ``--set`` items into fixed ones and grid axes.

    An item whose setting is a scalar and whose value holds commas
    (``train.target_epsilon=1,3,8,inf``) is an axis, one ``--set`` per value;
    list settings (``data.canary_repetitions=1,2,4``) stay single values.
    """
    import typing

    from dpaudit.config import SECTION_ALIASES, SECTIONS, _field_types, parse_set

    fixed: list[str] = []
    axes: list[list[str]] = []
    for item in sets:
        parse_set([item])  # validates the form
        dotted, value = item.split("=", 1)
        section, _, key = dotted.strip().partition(".")
        section = SECTION_ALIASES.get(section, section)
        types_ = _field_types(SECTIONS[section]) if section in SECTIONS else {}
        is_list = typing.get_origin(types_.get(key)) is list
        values = [v.strip() for v in value.split(",")]
        if "," in value and not is_list:
            axes.append([f"{section}.{key}={v}" for v in values])
        else:
            fixed.append(item)
    return fixed, axes


def run_sweep(
    config_path: str | Path,
    *,
    sets: tuple[str, ...],
    name: str | None = None,
    runs_dir: str | None = None,
    resume: bool = False,
    argv: list[str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[str]:
    """Run the main job for every point of a grid of settings, then compare the runs
    (``force``: start each point's run over)."""
    import itertools

    from dpaudit.config import load_config
    from dpaudit.errors import DpauditError
    from dpaudit.reports.compare import compare_runs, console_table

    fixed, axes = sweep_axes(sets)
    if not any(item.split("=", 1)[0].strip().endswith(".baseline") for item in fixed):
        fixed.append(
            "train.baseline=false"
        )  # each point is compared with the others; inf is the baseline
    if not axes:
        raise DpauditError(
            "--set: a sweep needs at least one setting with several comma-separated values"
        )
    base = load_config(config_path, sets=fixed, overrides={"name": name, "runs_dir": runs_dir})
    lines: list[str] = []
    run_dirs: list[Path] = []
    for combo in itertools.product(*axes):
        label = "-".join(item.split(".", 1)[1].replace("=", "") for item in combo)
        cfg = load_config(
            config_path,
            sets=[*fixed, *combo],
            overrides={"name": f"{base.name}-{label}", "runs_dir": base.runs_dir},
        )
        lines.append(f"== {cfg.name}: {', '.join(combo)}")
        lines += run_all(cfg, resume=resume, argv=argv, progress=progress, force=force).lines
        run_dirs.append(cfg.run_dir)
    out_dir = Path(base.runs_dir) / f"{base.name}-sweep"
    lines.append(console_table(compare_runs(run_dirs, out_dir)))
    lines.append(f"comparison: {out_dir / 'comparison.html'}, {out_dir / 'comparison.csv'}")
    return lines
