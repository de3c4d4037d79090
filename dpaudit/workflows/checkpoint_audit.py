"""Audit a checkpoint trained elsewhere, before its release: ``dpaudit audit-checkpoint``.

The auditor has a model (a directory or hub id, maybe a PEFT adapter on top),
the records it was trained on (members) and records it was not
(non-members); perhaps canaries planted before training with their coin flips,
and the publisher's privacy claim (ε, δ). :func:`audit_checkpoint` turns these
into a run directory with the pipeline's layout (docs/run-directory.md), so
that reports read it like any other run:

* ``data/``: ``splits.json`` (ids of the member, non-member and population
  files), ``canaries.jsonl``, ``inclusion.json``;
* ``target/``: no weights, but ``source.json`` (the model and adapter as given
  and resolved, the SHA-256 of every weight file) and, when a claim is given,
  ``privacy.json`` stating the *claim* as a ledger (mechanism ``claimed``,
  accountant ``claimed``);
* ``references/`` when trained here; ``attacks/`` and ``audit/bounds.json``
  exactly as the attack and audit stages write them; ``report/``.

Options, input files and the model itself are checked before the run
directory is created, so a refused invocation leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from dpaudit.errors import DpauditError

CLAIM_MECHANISM = "claimed"
CLAIM_ACCOUNTANT = "claimed"
_AUTO_ID = re.compile(r"(row|line)-\d{7}")
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


@dataclass
class _References:
    """Reference scoring models and, for dpaudit references, which pool records each trained on."""

    models: list = field(default_factory=list)
    membership: Any = None  # (pool records × models) bool, or None for plain references
    ids: list[str] | None = None  # row order of ``membership``
    sources: list[dict] = field(default_factory=list)
    why_plain: str = ""


def _load_part(path: str | Path, part: str) -> list:
    """Records of one input file; positional ids (``row-0000001``) get the part as prefix."""
    from dpaudit.datasets.loaders import load_records

    records = load_records(path)
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


def _attack_names(attacks: str | Sequence[str] | None, task: str) -> list[str] | None:
    """The attacks asked for (unknown names fail with a suggestion); ``None`` = the task's default."""
    from dpaudit.attacks.registry import ATTACKS, CLASSIFIER_ATTACKS
    from dpaudit.errors import unknown_name

    if attacks is None:
        return sorted(CLASSIFIER_ATTACKS) if task == "classification" else None
    names = [
        a.strip()
        for a in (attacks.split(",") if isinstance(attacks, str) else attacks)
        if a.strip()
    ]
    if not names:
        raise DpauditError("--attacks: no attack named")
    for name in names:
        if name not in ATTACKS:
            raise unknown_name("attack", name, ATTACKS)
    return list(dict.fromkeys(names))


def _parts(parts: str | Sequence[str] | None) -> tuple[str, ...]:
    """The attack-stage parts asked for, in the pipeline's order (default: all)."""
    from dpaudit.attacks.stage import PARTS
    from dpaudit.errors import unknown_name

    if parts is None:
        return PARTS
    names = [
        p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()
    ]
    for name in names:
        if name not in PARTS:
            raise unknown_name("attack part", name, PARTS)
    if not names:
        raise DpauditError(f"--parts: nothing named (choose from {', '.join(PARTS)})")
    return tuple(p for p in PARTS if p in names)


def _is_dpaudit_root(path: Path) -> bool:
    from dpaudit.trainers.references import MEMBERSHIP_FILE, POPULATION_FILE

    return (path / MEMBERSHIP_FILE).is_file() and (path / POPULATION_FILE).is_file()


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

    audit_canaries = [c for c in canaries if not c.id.startswith("canary-ss-")]
    spaces = {c.secret_space for c in canaries}
    derived: dict[str, Any] = {
        "name": out.name,
        "runs_dir": str(out.parent),
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
        "runs_dir": str(out.parent),
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


def _check_options(
    *,
    claimed_epsilon: float | None,
    delta: float | None,
    canaries: Any,
    inclusion: Any,
    references: Sequence,
    train_references: int,
    task: str,
    out: Path,
) -> None:
    if (claimed_epsilon is None) != (delta is None):
        raise DpauditError("--claimed-epsilon and --delta go together: a claimed ε holds at one δ")
    if claimed_epsilon is not None and not claimed_epsilon >= 0:
        raise DpauditError(f"--claimed-epsilon = {claimed_epsilon} must be >= 0")
    if delta is not None and not 0 <= delta < 1:
        raise DpauditError(f"--delta = {delta} must be in [0, 1)")
    if inclusion is not None and canaries is None:
        raise DpauditError("--canary-inclusion needs --canaries")
    if canaries is not None and claimed_epsilon is not None and inclusion is None:
        raise DpauditError(
            "--canaries with a claim needs --canary-inclusion (the coin flips) to audit the claim"
        )
    if canaries is not None and task != "causal_lm":
        raise DpauditError(
            "--canaries needs --task causal_lm (canaries are scored by their log-perplexity)"
        )
    if references and train_references:
        raise DpauditError("give --references or --train-references, not both")
    if train_references < 0:
        raise DpauditError(f"--train-references = {train_references} must be >= 0")
    if (out / "manifest.json").exists():
        raise DpauditError(f"{out}: already holds a dpaudit run; choose another --out or remove it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DpauditError(f"{out}: exists and is not an empty directory; choose another --out")


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
            return [c for c in self.canaries if not c.id.startswith("canary-or-")]

        @property
        def one_run(self) -> list:
            return [c for c in self.canaries if not c.id.startswith("canary-ss-")]

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
) -> _References:
    from dpaudit.trainers.safe_load import TOKENIZER_FILES, load_checkpoint

    if not paths:
        return _References()
    dirs, membership, ids, why = _reference_dirs(paths)
    refs = _References(membership=membership, ids=ids, why_plain=why)
    for directory in dirs:
        own = any((directory / f).is_file() for f in TOKENIZER_FILES)
        ref = load_checkpoint(
            directory,
            task=task,
            allow_pickle=allow_pickle,
            tokenizer_dir=None if own else loaded.source["tokenizer_path"],
        )
        refs.models.append(ref)
        refs.sources.append(
            {
                "path": str(directory.resolve()),
                "format": ref.source["format"],
                "weights": ref.source["weights"],
            }
        )
    return refs


def _plan_mia(
    config: Any, refs: _References, examples: list, population: list
) -> tuple[list, dict, Any, list]:
    """Which attacks can run with these references: (runnable, {skipped: reason}, membership rows, z samples)."""
    from dpaudit.attacks.registry import (
        CLASSIFIER_ATTACKS,
        NEEDS_POPULATION,
        NEEDS_REF_MEMBERSHIP,
        NEEDS_REFERENCES,
    )

    rows, lira_reason, z = None, "", []
    if refs.membership is not None:
        row = {i: k for k, i in enumerate(refs.ids)}
        missing = [r.id for r in examples if r.id not in row]
        if missing:
            lira_reason = f"the reference models never saw {len(missing)} audited examples (e.g. {missing[0]})"
        else:
            rows = refs.membership[[row[r.id] for r in examples]]
        trained = {i for i, k in row.items() if refs.membership[k].any()}
        z = [r for r in population if r.id not in trained]
    runnable, skipped = [], {}
    classifier = config.train.task == "classification"
    for name in config.attack.attacks:
        if (name in CLASSIFIER_ATTACKS) != classifier:
            runnable.append(name)  # run_mia reports the task mismatch
        elif name in NEEDS_REFERENCES and not refs.models:
            skipped[name] = "skipped: no reference models (--references or --train-references)"
        elif name in (NEEDS_REF_MEMBERSHIP | NEEDS_POPULATION) and refs.membership is None:
            skipped[name] = f"skipped: {refs.why_plain}"
        elif name in NEEDS_REF_MEMBERSHIP and rows is None:
            skipped[name] = f"skipped: {lira_reason}"
        elif name in NEEDS_POPULATION and not z:
            skipped[name] = "skipped: needs --population records that no reference model trained on"
        else:
            runnable.append(name)
    return runnable, skipped, rows, z


def _attack_stage(
    run: Any,
    config: Any,
    prepared: Any,
    loaded: Any,
    refs: _References,
    *,
    parts: tuple[str, ...],
    seed: int,
    progress: bool,
) -> tuple[dict[str, str], list[str]]:
    """``run_attack_stage`` of the pipeline, on a loaded model and the given references."""
    from dpaudit.atomic import write_json
    from dpaudit.attacks.blind import blind_baseline
    from dpaudit.attacks.stage import (
        PARTS,
        _memorization,
        attack_inputs,
        balanced_examples,
        load_scoring_model,
        run_canaries,
        run_mia,
        run_pii,
    )

    out_dir = run.subdir("attacks", "target")
    stage = "attacks/target" + ("" if tuple(parts) == PARTS else "/" + "+".join(parts))
    status: dict[str, str] = {}
    with run.stage(stage, attack_inputs(run, config, "target")):
        examples, is_member = balanced_examples(prepared, seed)
        n = int(is_member.sum())
        members, nonmembers = [r.text for r in examples[:n]], [r.text for r in examples[n:]]
        blind = blind_baseline(members, nonmembers, seed=seed)
        write_json(run.path / "attacks" / "blind.json", blind.to_dict())
        model = load_scoring_model(loaded, config, progress=progress)
        if "mia" in parts:
            references = [load_scoring_model(r, config, progress=progress) for r in refs.models]
            population = prepared.part("population")
            runnable, skipped, rows, z = _plan_mia(config, refs, examples, population)
            attack = dataclasses.replace(config.attack, attacks=runnable)
            done = run_mia(
                model,
                examples,
                is_member,
                dataclasses.replace(config, attack=attack),
                out_dir,
                references=references,
                ref_membership=rows,
                population=z,
                seed=seed,
            )
            status = {name: done.get(name) or skipped[name] for name in config.attack.attacks}
            write_json(out_dir / "status.json", {"attacks": status})
        if config.train.task == "causal_lm":
            revealed: dict[str, Any] = {}
            if "canary" in parts and prepared.canaries:
                public, revealed["canary"] = run_canaries(model, prepared, config, seed, progress)
                write_json(out_dir / "canary.json", public)
                status["canary"] = "done"
            if "memorization" in parts:
                result = _memorization(model, prepared, config)
                write_json(out_dir / "memorization.json", result.to_dict())
                status["memorization"] = "done"
            if "pii" in parts:
                public, revealed["pii"] = run_pii(
                    model, prepared.part("members"), prepared.part("nonmembers"), config, seed
                )
                write_json(out_dir / "pii.json", public)
                status["pii"] = "done"
            write_json(out_dir / "recovered.json", revealed)
    line = f"{stage}: " + ", ".join(f"{k} {'ok' if v == 'done' else v}" for k, v in status.items())
    warning = f" ({blind.warning})" if blind.warning else ""
    return status, [line + f"; blind baseline AUC {blind.auc:.3f}{warning}"]


def _train_references(
    run: Any, config: Any, prepared: Any, tokenizer: Any, *, seed: int, progress: bool
) -> tuple[_References, list[str]]:
    """Reference models trained here on random halves of the members and non-members (as the pipeline does)."""
    from dpaudit.rundir import sha256_file
    from dpaudit.trainers import train_references

    pool = prepared.part("members") + prepared.part("nonmembers")
    k = config.train.num_references
    root = run.path / "references"
    with run.stage(
        "references", {"pool": _sha_ids(pool), "train_config": _sha_ids(repr(config.train))}
    ) as record:
        membership = train_references(
            pool,
            k=k,
            config=config.train,
            tokenizer=tokenizer,
            out_dir=root,
            seed=seed,
            max_length=config.data.max_length,
            progress=progress,
        )
        record.outputs.update({"membership.npy": sha256_file(root / "membership.npy")})
    paths = [root / f"ref-{j}" for j in range(k)]
    from dpaudit.trainers.safe_load import load_checkpoint

    refs = _References(
        models=[load_checkpoint(p, task=config.train.task) for p in paths],
        membership=membership,
        ids=[r.id for r in pool],
    )
    return refs, [
        f"references: {k} models trained on halves of {len(pool)} examples ({config.train.model})"
    ]


def _sha_ids(value: Any) -> str:
    from dpaudit.rundir import sha256_text

    return sha256_text(value if isinstance(value, str) else "\n".join(r.id for r in value))


def _summary(
    run: Any, status: dict, verdict: Any, claim: tuple | None, source: dict, lines: list[str]
) -> dict[str, Any]:
    """What :func:`audit_checkpoint` returns without a report: the report's key numbers and the paths."""
    from dpaudit.atomic import read_json, to_jsonable
    from dpaudit.attacks.scores import AttackMetrics

    attacks = {}
    for name, state in status.items():
        directory = run.path / "attacks" / "target" / name
        if state == "done" and (directory / "metrics.json").is_file():
            data = AttackMetrics.load(directory).to_dict()
            attacks[name] = {k: v for k, v in data.items() if k not in ("roc", "seed")}
    best = max(sorted(attacks.items()), key=lambda kv: kv[1]["auc"], default=None)
    audit = verdict.to_dict() if verdict is not None else None
    blind = read_json(run.path / "attacks" / "blind.json")
    blind.pop("schema_version", None)
    return to_jsonable(
        {
            "run_dir": str(run.path),
            "report": None,
            "models": {
                "target": {
                    "source": source,
                    "attacks": attacks,
                    "status": status,
                    "audit": audit,
                    "summary": {
                        "epsilon": claim[0] if claim else None,
                        "delta": claim[1] if claim else None,
                        "primary_accountant": CLAIM_ACCOUNTANT if claim else None,
                        "epsilon_lower": audit["lower"]["epsilon"] if audit else None,
                        "audit_verdict": audit["verdict"] if audit else None,
                        "max_auc": {"value": best[1]["auc"], "attack": best[0]} if best else None,
                    },
                }
            },
            "blind_baseline": blind,
            "lines": lines,
        }
    )


def run_checkpoint_audit(
    model: str | Path,
    *,
    members: str | Path,
    nonmembers: str | Path,
    out: str | Path,
    adapter: str | Path | None = None,
    canaries: str | Path | None = None,
    canary_inclusion: str | Path | None = None,
    claimed_epsilon: float | None = None,
    delta: float | None = None,
    references: Sequence[str | Path] = (),
    population: str | Path | None = None,
    train_references: int = 0,
    allow_pickle: bool = False,
    attacks: str | Sequence[str] | None = None,
    parts: str | Sequence[str] | None = None,
    reveal: bool = False,
    task: str = "causal_lm",
    progress: bool = True,
    report: bool = True,
    seed: int | None = None,
    sets: Sequence[str] = (),
    argv: list[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """:func:`audit_checkpoint`, also returning the lines the CLI prints."""
    from dpaudit.atomic import read_json, write_json
    from dpaudit.workflows.run import stage_seeds
    from dpaudit.rundir import RunDir, sha256_file
    from dpaudit.trainers.safe_load import load_checkpoint

    out = Path(out).expanduser()
    if task not in ("causal_lm", "classification"):
        raise DpauditError(f"task {task!r} is not one of: causal_lm, classification")
    _check_options(
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        canaries=canaries,
        inclusion=canary_inclusion,
        references=references,
        train_references=train_references,
        task=task,
        out=out,
    )
    names = _attack_names(attacks, task)
    chosen = _parts(parts)
    inputs = _read_inputs(members, nonmembers, population, canaries, canary_inclusion)
    claim = (
        (float(claimed_epsilon), float(delta))
        if claimed_epsilon is not None and delta is not None
        else None
    )
    audited = [c for c in inputs.canaries if not c.id.startswith("canary-ss-")]
    if claim and audited and len({c.prefix for c in audited}) != 1:
        raise DpauditError(
            f"{canaries}: audit canaries must share one prefix (the one-run audit ranks secrets)"
        )
    loaded = load_checkpoint(model, adapter=adapter, task=task, allow_pickle=allow_pickle)
    refs = _load_references(references, loaded, task, allow_pickle)
    config = build_config(
        out,
        model=str(model),
        adapter=None if adapter is None else str(adapter),
        tokenizer=loaded.source["tokenizer_path"],
        task=task,
        members=Path(members).resolve(),
        canaries=inputs.canaries,
        attacks=names,
        train_references=train_references,
        seed=seed,
        reveal=reveal,
        sets=sets,
        num_labels=getattr(loaded.model.config, "num_labels", None)
        if task == "classification"
        else None,
    )
    if claim and config.audit.delta is not None and config.audit.delta != claim[1]:
        raise DpauditError(
            f"audit.delta = {config.audit.delta:g} differs from the claim's --delta {claim[1]:g}"
        )

    half = (len(inputs.members) + len(inputs.nonmembers)) // 2
    if train_references and config.train.batch_size > half:
        raise DpauditError(
            f"train.batch_size = {config.train.batch_size} exceeds the ~{half} examples each reference model "
            "trains on; lower it with --set train.batch_size=N"
        )
    run = RunDir.create(config, argv=argv, path=out)
    seeds = stage_seeds(config)
    manifest_inputs = {
        label: {"path": str(p.resolve()), "sha256": sha256_file(p)}
        for label, p in inputs.files.items()
    }
    manifest_inputs.update(loaded.input_hashes())
    for i, ref in enumerate(refs.models):
        manifest_inputs.update(
            {f"reference-{i}/{k.split('/', 1)[1]}": v for k, v in ref.input_hashes().items()}
        )
    from dpaudit.attacks.scoring import resolve_device

    run.update(seeds=seeds, inputs=manifest_inputs, device=str(resolve_device(config.train.device)))
    lines = [
        f"run directory: {run.path}",
        f"target: {loaded.source['model']}"
        + (f" + adapter {adapter}" if adapter else "")
        + f" ({loaded.source['format']}, {loaded.source['parameters']:,} parameters)",
    ]

    data_dir = run.subdir("data")
    with run.stage(
        "data", {k: v["sha256"] for k, v in manifest_inputs.items() if "/" not in k}
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
        write_json(target_dir / "source.json", {**loaded.source, "references": refs.sources})
        if claim:
            write_json(target_dir / "privacy.json", claim_payload(*claim))
        record.outputs.update({k: v["sha256"] for k, v in loaded.input_hashes().items()})
        record.outputs.update({p.name: sha256_file(p) for p in sorted(target_dir.glob("*.json"))})

    if train_references:
        refs, more = _train_references(
            run, config, prepared, loaded.tokenizer, seed=seeds["references"], progress=progress
        )
        lines += more
    status, more = _attack_stage(
        run, config, prepared, loaded, refs, parts=chosen, seed=seeds["attacks"], progress=progress
    )
    lines += more

    verdict = None
    if claim and audited and inputs.has_inclusion:
        from dpaudit.attacks.stage import load_scoring_model
        from dpaudit.audit.stage import BOUNDS_FILE, audit_model, verdict_line

        with run.stage(
            "audit/target",
            {
                "target": _sha_ids(repr(sorted(loaded.input_hashes().items()))),
                "audit_config": _sha_ids(repr(dataclasses.asdict(config.audit))),
            },
        ):
            scorer = load_scoring_model(loaded, config, progress=progress)
            verdict = audit_model(
                scorer, prepared, config, target_dir / "privacy.json", seed=seeds["audit"]
            )
            write_json(run.subdir("audit") / BOUNDS_FILE, {"models": {"target": verdict.to_dict()}})
        lines.append(verdict_line("target", verdict))
    elif claim:
        lines.append(
            "audit: skipped (no audit canaries with inclusion bits: --canaries and --canary-inclusion)"
        )
    else:
        lines.append("audit: skipped (no claim: pass --claimed-epsilon and --delta)")

    report_json = run.path / "report" / "report.json"
    if report:
        from dpaudit.workflows.run import run_report

        lines += run_report(
            run.path, reveal=config.report.reveal, formats=tuple(config.report.formats)
        )
    if report and report_json.is_file():
        result = read_json(report_json)
    else:
        result = _summary(run, status, verdict, claim, loaded.source, lines)
    return result, lines


def audit_checkpoint(
    model: str | Path,
    *,
    members: str | Path,
    nonmembers: str | Path,
    out: str | Path,
    adapter: str | Path | None = None,
    canaries: str | Path | None = None,
    canary_inclusion: str | Path | None = None,
    claimed_epsilon: float | None = None,
    delta: float | None = None,
    references: Sequence[str | Path] = (),
    population: str | Path | None = None,
    train_references: int = 0,
    allow_pickle: bool = False,
    attacks: str | Sequence[str] | None = None,
    parts: str | Sequence[str] | None = None,
    reveal: bool = False,
    task: str = "causal_lm",
    progress: bool = True,
    report: bool = True,
    seed: int | None = None,
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """Audit a fine-tuned checkpoint before release; the Python form of ``dpaudit audit-checkpoint``.

    Runs every membership-inference attack that needs no training (plus the
    reference-based ones with ``references`` or ``train_references``), the
    blind baseline, canary exposure and extraction, memorization and PII
    leakage on the members, the one-run audit of the canaries against the
    claimed (ε, δ), and the report, into the run directory ``out``.

    Args:
        model: model directory or hub id (safetensors; see ``allow_pickle``).
        members: records the model was trained on (JSONL, CSV, Parquet, text).
        nonmembers: records it was not trained on, from the same distribution.
        out: the run directory to create (refused when it holds anything).
        adapter: PEFT adapter directory applied on ``model``.
        canaries: ``canaries.jsonl`` of canaries planted before training.
        canary_inclusion: ``inclusion.json``, the coin flip of each canary
            (needed with a claim).
        claimed_epsilon, delta: the claim to audit (both or neither).
        references: reference model directories; dpaudit reference sets
            (``membership.npy`` + ``population_ids.json``) enable LiRA and RMIA,
            other models only the ``reference`` attack.
        population: same-distribution records no reference trained on (RMIA).
        train_references: train this many reference models here (dpaudit trainer).
        allow_pickle: load pickle-only weights with ``torch.load(weights_only=True)``.
        attacks: attack names (list or ``"a,b"``); default: all for the task.
        parts: what to run among ``mia``, ``canary``, ``memorization``, ``pii``
            (list or ``"a,b"``); default: all.
        reveal: show recovered secrets and PII in the report.
        task: ``"causal_lm"`` or ``"classification"``.
        progress: progress bars on stderr.
        report: render ``report/`` at the end.
        seed: master seed (default 0).
        sets: ``section.key=value`` overrides (e.g. ``data.max_length=128``).

    Returns:
        ``report.json`` as a dict when the report was written; otherwise a
        summary with the same path to the verdict:
        ``result["models"]["target"]["summary"]["audit_verdict"]``.

    Raises:
        DpauditError: one line, for any bad input (nothing is written then).
    """
    result, _ = run_checkpoint_audit(
        model,
        members=members,
        nonmembers=nonmembers,
        out=out,
        adapter=adapter,
        canaries=canaries,
        canary_inclusion=canary_inclusion,
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        references=references,
        population=population,
        train_references=train_references,
        allow_pickle=allow_pickle,
        attacks=attacks,
        parts=parts,
        reveal=reveal,
        task=task,
        progress=progress,
        report=report,
        seed=seed,
        sets=sets,
        argv=["dpaudit.audit_checkpoint", str(model)],
    )
    return result


# ----------------------------------------------------------------------------- command line


@click.command("audit-checkpoint", context_settings=_CONTEXT)
@click.option(
    "--model",
    required=True,
    metavar="PATH_OR_HUB_ID",
    help="Model directory or hub id (safetensors).",
)
@click.option(
    "--adapter", default=None, metavar="DIR", help="PEFT adapter directory applied on --model."
)
@click.option(
    "--task",
    type=click.Choice(["causal_lm", "classification"]),
    default="causal_lm",
    show_default=True,
    help="What the model does.",
)
@click.option("--members", required=True, metavar="FILE", help="Records the model was trained on.")
@click.option(
    "--nonmembers",
    required=True,
    metavar="FILE",
    help="Records it was not trained on (same distribution).",
)
@click.option(
    "--canaries", default=None, metavar="FILE", help="canaries.jsonl planted before training."
)
@click.option(
    "--canary-inclusion",
    default=None,
    metavar="FILE",
    help="inclusion.json: each canary's coin flip.",
)
@click.option("--claimed-epsilon", type=float, default=None, help="The ε claimed for the model.")
@click.option("--delta", type=float, default=None, help="The δ of the claim.")
@click.option(
    "--references",
    multiple=True,
    metavar="DIR",
    help="Reference model directory, or a dpaudit references directory (repeatable).",
)
@click.option(
    "--population", default=None, metavar="FILE", help="Records no reference trained on (RMIA)."
)
@click.option(
    "--train-references",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Train K reference models here on halves of the members and non-members.",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Load pickle-only weights, with torch.load(weights_only=True).",
)
@click.option(
    "--attacks", default=None, metavar="A,B,...", help="Attacks to run (default: all for the task)."
)
@click.option(
    "--parts",
    default=None,
    metavar="A,B,...",
    help="What to run among mia, canary, memorization, pii (default: all).",
)
@click.option("--reveal", is_flag=True, help="Show recovered secrets and PII in the report.")
@click.option(
    "--no-report", is_flag=True, help="Do not render report/ (rebuild it later from the run)."
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Master seed.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one setting (repeatable), e.g. data.max_length=128.",
)
@click.option("--out", required=True, metavar="RUN_DIR", help="The run directory to create.")
def audit_checkpoint_command(
    model: str,
    adapter: str | None,
    task: str,
    members: str,
    nonmembers: str,
    canaries: str | None,
    canary_inclusion: str | None,
    claimed_epsilon: float | None,
    delta: float | None,
    references: tuple[str, ...],
    population: str | None,
    train_references: int,
    allow_pickle: bool,
    attacks: str | None,
    parts: str | None,
    reveal: bool,
    no_report: bool,
    seed: int | None,
    sets: tuple[str, ...],
    out: str,
) -> None:
    """Audit a fine-tuned checkpoint before release (no training needed).

    \b
    dpaudit audit-checkpoint --model ./my-model --members train.jsonl --nonmembers heldout.jsonl \\
        --canaries canaries.jsonl --canary-inclusion inclusion.json \\
        --claimed-epsilon 8 --delta 1e-5 --out runs/release-audit

    Membership inference (loss, zlib, min-k%, min-k%++; reference, LiRA and
    RMIA with reference models), the blind baseline, canary exposure and
    extraction, memorization and PII leakage, and the one-run audit of the
    canaries against the claimed epsilon. Weights are read from safetensors
    only, with no remote code; the run directory records their SHA-256.
    """
    _, lines = run_checkpoint_audit(
        model,
        members=members,
        nonmembers=nonmembers,
        out=out,
        adapter=adapter,
        canaries=canaries,
        canary_inclusion=canary_inclusion,
        claimed_epsilon=claimed_epsilon,
        delta=delta,
        references=references,
        population=population,
        train_references=train_references,
        allow_pickle=allow_pickle,
        attacks=attacks,
        parts=parts,
        reveal=reveal,
        task=task,
        report=not no_report,
        seed=seed,
        sets=sets,
        argv=list(sys.argv),
    )
    click.echo("\n".join(lines))
