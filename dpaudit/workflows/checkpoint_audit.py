"""Audit a checkpoint trained elsewhere, before its release: ``dpaudit audit-checkpoint``.

The auditor has a model (a directory or hub id, maybe a PEFT adapter on top),
the records it was trained on (members) and records it was not
(non-members); perhaps canaries planted before training with their coin flips,
and the publisher's privacy claim (ε, δ). This is the full run's pipeline with
a different *model source*: the data stage reads the given files, the target
stage records the model's provenance (and the claim as a ledger) instead of
training, and then the *same* attack stage
(:func:`dpaudit.attacks.stage.run_attack_stage`), audit stage and report run
on the loaded model. The run directory has the pipeline's layout
(docs/run-directory.md):

* ``data/``: ``splits.json`` (ids of the member, non-member and population
  files), ``canaries.jsonl``, ``inclusion.json``;
* ``target/``: no weights, but ``source.json`` (the model and adapter as given
  and resolved, the SHA-256 of every weight file) and, when a claim is given,
  ``privacy.json`` stating the *claim* as a ledger (mechanism ``claimed``,
  accountant ``claimed``);
* ``references/`` when trained here; ``attacks/`` and ``audit/bounds.json``
  exactly as the attack and audit stages write them; ``report/``.

Options (:class:`~dpaudit.workflows.options.CheckpointAuditOptions`), input
files and the model itself are checked before the run directory is created,
so a refused invocation leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpaudit.datasets.records import ONE_RUN, SECRET_SHARER
from dpaudit.errors import DpauditError
from dpaudit.rundir import recorded_path
from dpaudit.workflows.options import CheckpointAuditOptions
from dpaudit.workflows.result import RunResult

CLAIM_MECHANISM = "claimed"
CLAIM_ACCOUNTANT = "claimed"
_AUTO_ID = re.compile(r"(row|line)-\d{7}")


# ----------------------------------------------------------------------------- inputs


@dataclass
class _Inputs:
    """Everything read and checked before the run directory exists."""

    members: list
    nonmembers: list
    population: list
    canaries: list
    has_inclusion: bool
    files: dict[str, Path]


def _load_part(path: str | Path, part: str) -> list:
    """Records of one input file; positional ids (``row-0000001``) get the part as prefix."""
    from dpaudit.datasets.loaders import load_records

    records = load_records(path)
    empty = [r.id for r in records if not r.text.strip()]
    if empty:
        from dpaudit.errors import InputError

        raise InputError(
            path,
            f"{len(empty)} record(s) with an empty text (e.g. {empty[0]}); every audited "
            "record needs text to be scored",
        )
    if all(_AUTO_ID.fullmatch(r.id) for r in records):
        records = [dataclasses.replace(r, id=f"{part}-{r.id}") for r in records]
    return records


def _check_disjoint(members: list, nonmembers: list, population: list) -> None:
    member_ids = {r.id for r in members}
    clash = sorted(member_ids & {r.id for r in nonmembers})
    if clash:
        raise DpauditError(
            f"{len(clash)} ids are both members and non-members (e.g. {', '.join(clash[:3])})"
        )
    by_text = {r.text: r.id for r in members}
    same = [(by_text[r.text], r.id) for r in nonmembers if r.text in by_text]
    if same:
        pairs = ", ".join(f"{m} = {n}" for m, n in same[:3])
        raise DpauditError(
            f"{len(same)} non-members have the text of a member (member = non-member: {pairs})"
        )
    overlap = sorted((member_ids | {r.id for r in nonmembers}) & {r.id for r in population})
    if overlap:
        raise DpauditError(
            f"{len(overlap)} population ids are also members or non-members (e.g. {overlap[0]})"
        )


def _read_inputs(
    members: str | Path,
    nonmembers: str | Path,
    population: str | Path | None,
    canaries: str | Path | None,
    inclusion: str | Path | None,
) -> _Inputs:
    from dpaudit.datasets.canaries import read_canaries

    mem, non = _load_part(members, "members"), _load_part(nonmembers, "nonmembers")
    pop = _load_part(population, "population") if population is not None else []
    _check_disjoint(mem, non, pop)
    files = {"members": Path(members), "nonmembers": Path(nonmembers)}
    if population is not None:
        files["population"] = Path(population)
    found = read_canaries(canaries, inclusion) if canaries is not None else []
    if canaries is not None:
        files["canaries"] = Path(canaries)
        if not found:
            raise DpauditError(f"{canaries}: no canaries in the file")
    if inclusion is not None:
        files["canary_inclusion"] = Path(inclusion)
    return _Inputs(mem, non, pop, found, inclusion is not None, files)


def _attack_names(attacks: Sequence[str] | None, task: str) -> list[str] | None:
    """The attacks asked for (unknown names fail with a suggestion); ``None`` = the config's default.

    For a classifier the default is every registered classifier attack but those
    that only re-rank another (``clf_confidence``: ``default_attacks``).
    """
    from dpaudit.attacks.registry import ATTACKS, default_attacks

    if attacks is None:
        if task == "classification":
            return default_attacks(task)
        return None
    for name in attacks:
        ATTACKS.get(name)  # unknown names fail here, with a suggestion
    return list(attacks)


def _is_dpaudit_root(path: Path) -> bool:
    from dpaudit.trainers.references import MEMBERSHIP_FILE, POPULATION_FILE

    return (path / MEMBERSHIP_FILE).is_file() and (path / POPULATION_FILE).is_file()


def _as_given(resolved: str, *given: str | Path | None) -> str:
    """``resolved`` (a directory the loader resolved) as the user gave it, when it is one of ``given``."""
    for path in given:
        if path is not None and Path(path).expanduser().exists():
            if Path(path).expanduser().resolve() == Path(resolved).resolve():
                return str(path)
    return resolved


def _recorded_inputs(hashes: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """``{label: {"path", "sha256"}}`` with each path as :func:`~dpaudit.rundir.recorded_path` records it."""
    return {
        label: {**entry, "path": recorded_path(entry["path"])} for label, entry in hashes.items()
    }


def _reference_dirs(paths: Sequence[str | Path]) -> tuple[list[Path], Any, list[str] | None, str]:
    """Expand ``--references``: (model directories, membership columns or None, pool ids, why plain).

    A dpaudit references directory (``membership.npy`` + ``population_ids.json``
    beside ``ref-<k>/``) stands for all its models; ``ref-<k>`` directories of
    one such parent keep their columns. Anything else is a plain reference.
    """
    from dpaudit.trainers.references import load_membership

    dirs: list[Path] = []
    roots: set[Path] = set()
    columns: list[int] = []
    plain = 0
    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise DpauditError(f"{path}: reference model directory not found")
        if _is_dpaudit_root(path):
            k = load_membership(path)[0].shape[1]
            dirs += [path / f"ref-{j}" for j in range(k)]
            columns += list(range(k))
            roots.add(path.resolve())
        elif re.fullmatch(r"ref-\d+", path.name) and _is_dpaudit_root(path.parent):
            dirs.append(path)
            columns.append(int(path.name.split("-")[1]))
            roots.add(path.parent.resolve())
        else:
            dirs.append(path)
            plain += 1
    if plain or len(roots) != 1:
        why = (
            "the reference models carry no membership.npy (not dpaudit references)"
            if plain
            else "the reference models come from several dpaudit reference sets"
        )
        return dirs, None, None, why
    membership, ids = load_membership(roots.pop())
    return dirs, membership[:, columns], ids, ""


# ----------------------------------------------------------------------------- config and claim


def build_config(
    out: Path,
    *,
    model: str,
    adapter: str | None,
    tokenizer: str,
    task: str,
    members: Path,
    canaries: list,
    attacks: list[str] | None,
    train_references: int,
    seed: int | None,
    num_labels: int | None,
    reveal: bool = False,
    sets: Sequence[str] = (),
) -> Any:
    """The :class:`~dpaudit.config.RunConfig` recorded for a checkpoint audit.

    Derived defaults < ``--set`` < explicit options. ``train`` describes how
    references are trained here: the base model with LoRA when an adapter is
    audited, else ``train.model`` (the fine-tuned checkpoint itself never is:
    it has seen the members).
    """
    from dpaudit.config import config_from_dict, merge, parse_set

    runs_dir = str(out.parent)
    if out.name in ("", ".", ".."):  # `--out .`: the run name is the directory's own name
        # the directory above, as given (`..`), not resolved: see dpaudit.rundir.recorded_path
        runs_dir = str(out.resolve().parent) if out.is_absolute() else os.path.normpath(out / "..")
        out = out.resolve()
    audit_canaries = [c for c in canaries if c.role != SECRET_SHARER]
    spaces = {c.secret_space for c in canaries}
    derived: dict[str, Any] = {
        "name": out.name,
        "runs_dir": runs_dir,
        "data": {
            "path": str(members),
            "tokenizer": tokenizer,
            "canaries_per_repetition": 0,
            "canary_repetitions": [],
            "one_run_canaries": len(audit_canaries),
        },
        "train": {"task": task, "baseline": False},
    }
    if len(spaces) == 1:
        derived["data"]["secret_space"] = spaces.pop()
    if adapter is not None:
        derived["train"].update(model=str(model), mode="lora")
    if num_labels is not None and num_labels >= 2:
        derived["train"]["num_labels"] = num_labels
    explicit: dict[str, Any] = {
        "name": out.name,
        "runs_dir": runs_dir,
        "train": {"num_references": train_references},
    }
    if seed is not None:
        explicit["seed"] = seed
    if attacks is not None:
        explicit["attack"] = {"attacks": attacks}
    if reveal:
        explicit["report"] = {"reveal": True}
    try:
        return config_from_dict(merge(merge(derived, parse_set(sets)), explicit))
    except DpauditError as exc:
        raise DpauditError(f"--set: {exc}") from None


def claim_payload(epsilon: float, delta: float) -> dict[str, Any]:
    """``privacy.json`` for a claimed (ε, δ): readable by ``read_privacy``, no training facts invented."""
    return {
        "mechanism": CLAIM_MECHANISM,
        "sample_rate": 0.0,
        "noise_multiplier": 0.0,
        "max_grad_norm": None,
        "steps": 0,
        "delta": float(delta),
        "epsilons": {CLAIM_ACCOUNTANT: float(epsilon)},
        "unit": "example",
        "adjacency": "add/remove",
        "errors": {},
        "epsilon": float(epsilon),
        "primary_accountant": CLAIM_ACCOUNTANT,
        "epochs": None,
        "planned_epochs": None,
        "planned_steps": None,
        "complete": None,
        "delta_source": "claim",
        "noise_source": "unknown",
        "target_epsilon": None,
        "batch_size": None,
        "n_examples": None,
        "poisson_sampling": None,
        "note": "the (ε, δ) claimed by the model's publisher; dpaudit did not train or account this model",
    }


# ----------------------------------------------------------------------------- the audit


def _prepared(inputs: _Inputs, data_dir: Path, seed: int) -> Any:
    """The data the attack and audit stages expect, from the input files."""
    from dpaudit.datasets.canaries import insert_canaries
    from dpaudit.datasets.prepare import PreparedData
    from dpaudit.datasets.splits import Split

    class CheckpointData(PreparedData):
        # Canaries named by the pipeline keep their role; any other canary is both exposure-scored and audited.
        @property
        def secret_sharer(self) -> list:
            return [c for c in self.canaries if c.role != ONE_RUN]

        @property
        def one_run(self) -> list:
            return [c for c in self.canaries if c.role != SECRET_SHARER]

    split = Split(
        tuple(r.id for r in inputs.members),
        tuple(r.id for r in inputs.nonmembers),
        tuple(r.id for r in inputs.population),
        seed,
    )
    # What the model is assumed to have trained on: the members and the copies of included canaries
    # (without an inclusion file every canary is taken as planted).
    train = insert_canaries(inputs.members, inputs.canaries, seed=seed + 303)
    return CheckpointData(
        records=inputs.members + inputs.nonmembers + inputs.population,
        split=split,
        canaries=list(inputs.canaries),
        train=train,
        data_dir=data_dir,
    )


def _load_references(
    paths: Sequence[str | Path], loaded: Any, task: str, allow_pickle: bool
) -> tuple[Any, list[dict[str, Any]]]:
    """``--references`` loaded as a :class:`~dpaudit.attacks.stage.ReferenceSet`, and their sources."""
    from dpaudit.attacks.stage import ReferenceSet
    from dpaudit.trainers.safe_load import TOKENIZER_FILES, load_model

    if not paths:
        return ReferenceSet(
            why_plain="no reference models (--references or --train-references)"
        ), []
    dirs, membership, ids, why = _reference_dirs(paths)
    refs = ReferenceSet(membership=membership, ids=ids, why_plain=why or ReferenceSet.why_plain)
    sources = []
    for directory in dirs:
        if re.fullmatch(r"ref-\d+", directory.name) and _is_dpaudit_root(directory.parent):
            from dpaudit.attacks.stage import untrained_reference

            untrained = untrained_reference(directory, str(directory))
            if untrained:  # left by an interrupted train-references: say so, not "no config.json"
                raise DpauditError(f"--references: {untrained}")
        own = any((directory / f).is_file() for f in TOKENIZER_FILES)
        ref = load_model(
            directory,
            task=task,
            allow_pickle=allow_pickle,
            tokenizer_dir=None if own else loaded.source["tokenizer_path"],
        )
        refs.models.append(ref)
        sources.append(
            {
                "path": recorded_path(directory),
                "format": ref.source["format"],
                "weights": ref.source["weights"],
            }
        )
    return refs, sources


def _train_references(
    run: Any, config: Any, prepared: Any, tokenizer: Any, *, seed: int, progress: bool
) -> tuple[Any, list[str]]:
    """Reference models trained here on random halves of the members and non-members (as the pipeline does)."""
    from dpaudit.attacks.stage import ReferenceSet
    from dpaudit.rundir import sha256_text
    from dpaudit.workflows.run import train_reference_stage

    pool = prepared.part("members") + prepared.part("nonmembers")
    k = config.train.num_references
    inputs = {
        "pool": sha256_text("\n".join(r.id for r in pool)),
        "train_config": sha256_text(repr(config.train)),
    }
    train_reference_stage(
        run,
        "references",
        inputs,
        pool,
        k=k,
        recipe=config.train,
        tokenizer=tokenizer,
        seed=seed,
        max_length=config.data.max_length,
        progress=progress,
    )
    return ReferenceSet.from_run(run), [
        f"references: {k} models trained on halves of {len(pool)} examples ({config.train.model})"
    ]


@dataclass(frozen=True)
class _Checked:
    """What is read and checked before the run directory exists."""

    inputs: _Inputs
    loaded: Any
    refs: Any
    ref_sources: list[dict[str, Any]]
    config: Any
    notes: tuple[str, ...] = ()


def _check_everything(options: CheckpointAuditOptions) -> _Checked:
    """Validate the options, read the inputs, load the model and references, build the config.

    What the options rule out (:meth:`CheckpointAuditOptions.notes`) is logged as
    a warning at once, before any input is read, and kept for the summary lines.
    """
    options.check()
    notes = options.notes()
    for note in notes:
        logging.getLogger(__name__).warning("note: %s", note)
    names = _attack_names(options.attacks, options.task)
    inputs = _read_inputs(
        options.members,
        options.nonmembers,
        options.population,
        options.canaries,
        options.canary_inclusion,
    )
    # Audit canaries may each have their own prefix: each is scored after its own.
    from dpaudit.trainers.safe_load import load_model

    loaded = load_model(
        options.model, adapter=options.adapter, task=options.task, allow_pickle=options.allow_pickle
    )
    refs, ref_sources = _load_references(
        options.references, loaded, options.task, options.allow_pickle
    )
    config = build_config(
        options.out_path,
        model=options.model,
        adapter=options.adapter,
        tokenizer=_as_given(loaded.source["tokenizer_path"], options.adapter, options.model),
        task=options.task,
        members=Path(options.members),  # as given: the manifest records it relative
        canaries=inputs.canaries,
        attacks=names,
        train_references=options.train_references,
        seed=options.seed,
        reveal=options.reveal,
        sets=options.sets,
        num_labels=getattr(loaded.model.config, "num_labels", None)
        if options.task == "classification"
        else None,
    )
    from dpaudit.workflows.validate import check_config

    try:
        check_config(config, data=False)  # the member/non-member files are checked above
    except DpauditError as exc:
        raise DpauditError(f"--set: {exc}") from None
    claim = options.claim
    if claim and config.audit.delta is not None and config.audit.delta != claim[1]:
        raise DpauditError(
            f"audit.delta = {config.audit.delta:g} differs from the claim's --delta {claim[1]:g}"
        )
    half = (len(inputs.members) + len(inputs.nonmembers)) // 2
    if options.train_references and config.train.batch_size > half:
        raise DpauditError(
            f"train.batch_size = {config.train.batch_size} exceeds the ~{half} examples each "
            "reference model trains on; lower it with --set train.batch_size=N"
        )
    unmet = _unmet_preconditions(options, inputs, loaded, refs, config)
    for note in unmet:  # before any reference is trained or the run directory exists
        logging.getLogger(__name__).warning("note: %s", note)
    return _Checked(inputs, loaded, refs, ref_sources, config, (*notes, *unmet))


def _unmet_preconditions(
    options: CheckpointAuditOptions, inputs: _Inputs, loaded: Any, refs: Any, config: Any
) -> tuple[str, ...]:
    """What the attack stage will skip, known before the run exists and before any training.

    The stage's own planning (:func:`~dpaudit.attacks.stage.plan_stage`) on the
    inputs, with the references ``--train-references`` will train stood in by
    their membership matrix (the same seed, so the same matrix). Returns one
    note per reason; refuses when nothing asked for can run (docs/decisions.md,
    "Unmet preconditions").
    """
    from dpaudit.attacks.stage import ReferenceSet, plan_stage, skip_notes
    from dpaudit.trainers.references import assign_membership
    from dpaudit.workflows.run import stage_seeds

    seeds = stage_seeds(config)
    prepared = _prepared(inputs, options.out_path / "data", config.seed)  # nothing written
    if options.train_references:
        pool = prepared.part("members") + prepared.part("nonmembers")
        k = config.train.num_references
        refs = ReferenceSet(
            models=[None] * k,
            membership=assign_membership(len(pool), k, seeds["references"]),
            ids=[r.id for r in pool],
        )
    asked, skipped = plan_stage(
        config,
        prepared,
        parts=options.chosen_parts(),
        seed=seeds["attacks"],
        references=refs,
        tokenizer=loaded.tokenizer,
    )
    if asked and all(name in skipped for name in asked):
        why = "; ".join(skip_notes(skipped))
        raise DpauditError(
            f"nothing asked for can run: {why} (see --attacks, --parts, --set and the inputs)"
        )
    return tuple(skip_notes(skipped))


def run_checkpoint_audit(
    options: CheckpointAuditOptions, *, argv: list[str] | None = None
) -> RunResult:
    """The checkpoint audit: check everything, then data → target → (references) → attacks → audit → report.

    Raises:
        DpauditError: one line, for any bad input (nothing is written then).
    """
    from dpaudit.atomic import write_json
    from dpaudit.attacks.stage import run_attack_stage
    from dpaudit.audit.stage import assess_run, run_audit_stage, verdict_line
    from dpaudit.rundir import RunDir, sha256_file
    from dpaudit.runfiles.io import write_run_file
    from dpaudit.runfiles.privacy import PrivacyFile
    from dpaudit.trainers.models import resolve_device
    from dpaudit.workflows.run import run_report, stage_seeds

    checked = _check_everything(options)
    inputs, loaded, config, claim = checked.inputs, checked.loaded, checked.config, options.claim
    refs = checked.refs
    seeds = stage_seeds(config)
    # Paths as given, relative to the working directory when under it (recorded_path);
    # the hashes keep them verifiable.
    manifest_inputs = {
        label: {"path": recorded_path(p), "sha256": sha256_file(p)}
        for label, p in inputs.files.items()
    }
    manifest_inputs.update(_recorded_inputs(loaded.input_hashes()))
    for i, ref in enumerate(refs.models):
        manifest_inputs.update(
            {
                f"reference-{i}/{k.split('/', 1)[1]}": v
                for k, v in _recorded_inputs(ref.input_hashes()).items()
            }
        )
    device = str(resolve_device(config.train.device))  # a bad device is refused before --out exists
    run = RunDir.create(config, argv=argv, path=options.out_path)
    run.update(seeds=seeds, inputs=manifest_inputs, device=device)
    lines = [
        f"run directory: {run.path}",
        f"target: {loaded.source['model']}"
        + (f" + adapter {options.adapter}" if options.adapter else "")
        + f" ({loaded.source['format']}, {loaded.source['parameters']:,} parameters)",
    ]
    lines += [f"note: {note}" for note in checked.notes]

    data_dir = run.subdir("data")
    with run.stage(
        "data",
        {k: v["sha256"] for k, v in manifest_inputs.items() if "/" not in k},
        seed=config.seed,
    ) as record:
        from dpaudit.datasets.canaries import write_canaries, write_inclusion

        prepared = _prepared(inputs, data_dir, config.seed)
        prepared.split.save(data_dir / "splits.json")
        if inputs.canaries:
            write_canaries(data_dir / "canaries.jsonl", inputs.canaries)
        if inputs.has_inclusion:
            write_inclusion(data_dir / "inclusion.json", inputs.canaries)
        record.outputs.update({p.name: sha256_file(p) for p in sorted(data_dir.glob("*.json*"))})
    lines.append(
        f"data: {len(inputs.members)} members, {len(inputs.nonmembers)} non-members, "
        f"{len(inputs.population)} population, {len(inputs.canaries)} canaries"
    )

    target_dir = run.subdir("target")
    with run.stage("target", {k: v["sha256"] for k, v in loaded.input_hashes().items()}) as record:
        write_json(target_dir / "source.json", {**loaded.source, "references": checked.ref_sources})
        if claim:
            write_run_file(
                target_dir / "privacy.json", PrivacyFile.from_dict(claim_payload(*claim))
            )
        record.outputs.update({k: v["sha256"] for k, v in loaded.input_hashes().items()})
        record.outputs.update({p.name: sha256_file(p) for p in sorted(target_dir.glob("*.json"))})

    if options.train_references:
        refs, more = _train_references(
            run,
            config,
            prepared,
            loaded.tokenizer,
            seed=seeds["references"],
            progress=options.progress,
        )
        lines += more
    lines += run_attack_stage(
        run,
        config,
        prepared,
        "target",
        seed=seeds["attacks"],
        progress=options.progress,
        parts=options.chosen_parts(),
        model=loaded,
        references=refs,
    )

    if claim and prepared.one_run and inputs.has_inclusion:
        run_audit_stage(
            run,
            config,
            prepared,
            "target",
            seed=seeds["audit"],
            progress=options.progress,
            model=loaded,
        )
        assessed = assess_run(run, config, ["target"])  # no control here: see the reasons
        lines += [verdict_line(name, v) for name, v in assessed.items()]
    elif claim:
        lines.append(
            "audit: skipped (no audit canaries with inclusion bits: --canaries and --canary-inclusion)"
        )
    else:
        lines.append("audit: skipped (no claim: pass --claimed-epsilon and --delta)")

    if options.report:
        lines += run_report(
            run.path, reveal=config.report.reveal, formats=tuple(config.report.formats)
        )
    return RunResult.from_run_dir(run.path, lines)


def audit_checkpoint(model: str | Path, **options: Any) -> RunResult:
    """Audit a fine-tuned checkpoint before release; the Python form of ``dpaudit audit-checkpoint``.

    Runs every membership-inference attack that needs no training (plus the
    reference-based ones with ``references`` or ``train_references``), the
    blind baseline, canary exposure and extraction, memorization and PII
    leakage on the members, the one-run audit of the canaries against the
    claimed (ε, δ), and the report, into the run directory ``out``.

    Args:
        model: model directory or hub id (safetensors; see ``allow_pickle``).
        **options: the fields of
            :class:`~dpaudit.workflows.options.CheckpointAuditOptions` (required:
            ``members``, ``nonmembers``, ``out``), e.g. ``canaries``,
            ``canary_inclusion``, ``claimed_epsilon``, ``delta``, ``references``,
            ``train_references``, ``attacks``, ``parts``, ``reveal``, ``report``,
            ``seed``, ``sets``, ``progress``.

    Returns:
        :class:`~dpaudit.workflows.result.RunResult`: the run directory, the
        report (``result.report``, as ``report.json``), the audit verdict
        (``result.audit_verdicts["target"]``) and the policy verdict.

    Raises:
        DpauditError: one line, for any bad input or unknown option (nothing is
            written then).
    """
    opts = CheckpointAuditOptions.from_kwargs(model, **options)
    return run_checkpoint_audit(opts, argv=["dpaudit.audit_checkpoint", str(model)])


def export_audit_inputs(run_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write the input files of a checkpoint audit of a run's own models.

    The members and non-members are the balanced examples that the run's
    attack stage scores (same seed), so a checkpoint audit of ``<run>/target``
    with these files reproduces the run's per-example scores.

    Returns:
        ``{"members", "nonmembers", "population", "canaries", "canary_inclusion"}``
        → paths (the last two are the run's own ``data/`` files, when present).
    """
    from dpaudit.attacks.stage import balanced_examples
    from dpaudit.datasets.loaders import write_records
    from dpaudit.datasets.prepare import load_prepared
    from dpaudit.workflows.run import config_of_run, stage_seeds

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    prepared = load_prepared(run_dir)
    config = config_of_run(run_dir)
    examples, is_member = balanced_examples(
        prepared,
        stage_seeds(config)["attacks"],
        by_label=config.train.task == "classification",
    )
    n = int(is_member.sum())
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {name: out_dir / f"{name}.jsonl" for name in ("members", "nonmembers", "population")}
    write_records(files["members"], examples[:n])
    write_records(files["nonmembers"], examples[n:])
    write_records(files["population"], prepared.part("population"))
    for key, name in (("canaries", "canaries.jsonl"), ("canary_inclusion", "inclusion.json")):
        if (run_dir / "data" / name).is_file():
            files[key] = run_dir / "data" / name
    return files
