"""The attack stage of a run: every attack against one trained model, saved to disk.

Reads the model from ``<run>/<model>/`` and writes ``<run>/attacks/<model>/``
as documented in docs/run-directory.md: per-attack scores and metrics, canary
exposure and extraction, verbatim memorization and PII leakage. What is masked
(``to_dict(reveal=False)``) goes to the public files; the same results with the
recovered secrets and PII go to ``recovered.json`` for the auditor alone.

Members and non-members are balanced (the larger side is subsampled by seed)
so that AUC and TPR at low FPR are read on equal footing.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.config import RunConfig
from dpaudit.datasets.prepare import PreparedData
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError
from dpaudit.rundir import RunDir, sha256_text
from dpaudit.runfiles.attacks import (
    BlindFile,
    CanaryFile,
    MemorizationFile,
    PiiFile,
    RecoveredFile,
    StatusFile,
)
from dpaudit.runfiles.io import read_run_file, write_run_file


def load_scoring_model(
    model_dir: str | Path | Any,
    config: RunConfig,
    *,
    progress: bool = True,
    adapter: str | Path | None = None,
    allow_pickle: bool = False,
) -> Any:
    """A :class:`~dpaudit.attacks.scoring.HFScoringModel` over a saved or already loaded model.

    Args:
        model_dir: a saved model directory (as the trainer writes it: safetensors
            and tokenizer); or, with ``adapter`` or ``allow_pickle``, any model
            directory or hub id, read by :func:`dpaudit.trainers.safe_load.load_model`;
            or an already loaded model: a ``(model, tokenizer)`` pair or an object
            with ``model`` and ``tokenizer`` attributes (a ``LoadedModel``).
        config: the run's config (task, device, batch size, max length).
        progress: show progress bars.
        adapter: a PEFT adapter directory applied on ``model_dir``.
        allow_pickle: accept pickle-only weights (read with ``weights_only=True``).
    """
    from dpaudit.attacks.scoring import HFScoringModel

    if isinstance(model_dir, (str, Path)) and adapter is None and not allow_pickle:
        from dpaudit.datasets.tokenizer import load_tokenizer
        from dpaudit.trainers.models import load_pretrained

        model = load_pretrained(
            model_dir, task=config.train.task, num_labels=config.train.num_labels
        )
        tokenizer = load_tokenizer(model_dir)
    elif isinstance(model_dir, (str, Path)):
        from dpaudit.trainers.safe_load import load_model

        loaded = load_model(
            model_dir, adapter=adapter, task=config.train.task, allow_pickle=allow_pickle
        )
        model, tokenizer = loaded.model, loaded.tokenizer
    elif isinstance(model_dir, tuple):
        model, tokenizer = model_dir
    else:
        model, tokenizer = model_dir.model, model_dir.tokenizer
    return HFScoringModel(
        model,
        tokenizer,
        device=config.train.device,
        batch_size=config.attack.batch_size,
        max_length=config.data.max_length,
        progress=progress,
    )


def balanced_examples(prepared: PreparedData, seed: int) -> tuple[list[Record], np.ndarray]:
    """Members and non-members in equal numbers, members first; and their labels."""
    members, nonmembers = prepared.part("members"), prepared.part("nonmembers")
    n = min(len(members), len(nonmembers))
    rng = np.random.default_rng(seed)
    members = [members[i] for i in sorted(rng.choice(len(members), n, replace=False))]
    nonmembers = [nonmembers[i] for i in sorted(rng.choice(len(nonmembers), n, replace=False))]
    return members + nonmembers, np.array([True] * n + [False] * n)


@dataclass
class ReferenceSet:
    """Reference models for the calibrated attacks, and what each trained on.

    Attributes:
        models: one entry per reference model, in column order: a model
            directory, or an already loaded model (anything
            :func:`load_scoring_model` accepts).
        membership: (pool records × models) bool, ``True`` where model j trained
            on record i; ``None`` for references of unknown training data (then
            only the ``reference`` attack can use them).
        ids: record ids of the rows of ``membership``.
        why_plain: why ``membership`` is ``None`` (shown when an attack is skipped).
    """

    models: list[Any] = field(default_factory=list)
    membership: np.ndarray | None = None
    ids: list[str] | None = None
    why_plain: str = "the reference models carry no membership.npy (not dpaudit references)"

    @classmethod
    def from_run(cls, run: RunDir, model_name: str = "target") -> ReferenceSet:
        """The references ``dpaudit train-references`` trained for ``model_name``.

        The target's are in ``<run>/references/`` (its recipe), the baseline's in
        ``<run>/references-baseline/`` (non-private; ``train.baseline_references``):
        LiRA and RMIA assume references trained like the attacked model.
        """
        from dpaudit.trainers.references import MEMBERSHIP_FILE, REFERENCE_DIRS, load_membership

        root = run.path / REFERENCE_DIRS.get(model_name, "references")
        if not (root / MEMBERSHIP_FILE).is_file():
            if model_name == "baseline" and (run.path / REFERENCE_DIRS["target"]).is_dir():
                return cls(
                    why_plain="no references trained with the baseline's non-private recipe "
                    "(set train.baseline_references = true)"
                )
            return cls(why_plain="no reference models (dpaudit train-references)")
        membership, ids = load_membership(root)
        return cls(
            models=[root / f"ref-{j}" for j in range(membership.shape[1])],
            membership=membership,
            ids=list(ids),
        )

    def rows(self, examples: Sequence[Record]) -> tuple[np.ndarray | None, str]:
        """The membership rows of ``examples`` (examples × models), or ``(None, why not)``."""
        if self.membership is None or self.ids is None:
            return None, self.why_plain
        row = {i: k for k, i in enumerate(self.ids)}
        missing = [r.id for r in examples if r.id not in row]
        if missing:
            return None, (
                f"the reference models never saw {len(missing)} audited examples "
                f"(e.g. {missing[0]!r})"
            )
        return self.membership[[row[r.id] for r in examples]], ""

    def untrained(self, population: Sequence[Record]) -> list[Record]:
        """The ``population`` records no reference model trained on (RMIA's z samples)."""
        if self.membership is None or self.ids is None:
            return []
        used = np.count_nonzero(self.membership, axis=1) > 0
        trained = {i for k, i in enumerate(self.ids) if used[k]}
        return [r for r in population if r.id not in trained]


def plan_mia(
    names: Sequence[str],
    *,
    task: str,
    references: ReferenceSet,
    examples: Sequence[Record],
    population: Sequence[Record],
) -> tuple[list[str], dict[str, str], np.ndarray | None, list[Record]]:
    """Which attacks can run here: (runnable, {skipped: reason}, membership rows, z samples).

    Each attack class declares what it needs (``task``, ``needs_references``,
    ``needs_ref_membership``, ``needs_population``); an attack whose needs are
    not met is skipped with the reason, and the others run.
    """
    from dpaudit.attacks.registry import ATTACKS, plan_attacks

    rows, why_rows = references.rows(examples)
    z = references.untrained(population)
    runnable, skipped = plan_attacks(
        names,
        task=task,
        has_references=bool(references.models),
        has_ref_membership=rows is not None,
        has_population=bool(z),
    )
    for name in skipped:  # say why, in this run's terms
        cls = ATTACKS.get(name)
        if cls.task != task:
            continue
        if cls.needs_references and not references.models:
            skipped[name] = f"skipped: {references.why_plain}"
        elif cls.needs_ref_membership and rows is None:
            skipped[name] = f"skipped: {why_rows}"
        elif cls.needs_population and references.membership is None:
            skipped[name] = f"skipped: {references.why_plain}"
    return runnable, skipped, rows, z


def run_mia(
    model: Any,
    examples: Sequence[Record],
    is_member: np.ndarray,
    config: RunConfig,
    out_dir: Path,
    *,
    references: ReferenceSet,
    population: Sequence[Record],
    seed: int,
    progress: bool = True,
) -> dict[str, str]:
    """Run the configured membership-inference attacks; return {attack: "done" | reason skipped}.

    Reference models are loaded only when a runnable attack needs them.
    """
    from dpaudit.attacks.metrics import compute_metrics
    from dpaudit.attacks.registry import ATTACKS, attack_params, get_attack

    names = list(config.attack.attacks)
    attacks = {name: get_attack(name, **attack_params(config.attack, name)) for name in names}
    runnable, status, rows, z = plan_mia(
        names,
        task=config.train.task,
        references=references,
        examples=examples,
        population=population,
    )
    loaded: list[Any] = []
    if any(ATTACKS.get(name).needs_references for name in runnable):
        loaded = [load_scoring_model(m, config, progress=progress) for m in references.models]
    for name in runnable:
        cls = ATTACKS.get(name)
        kwargs: dict[str, Any] = {"is_member": is_member}
        if cls.needs_references:
            kwargs["references"] = loaded
        takes_rows = "ref_membership" in inspect.signature(attacks[name].score).parameters
        if cls.needs_ref_membership or (rows is not None and takes_rows):
            kwargs["ref_membership"] = rows  # e.g. offline RMIA: only OUT models per example
        if cls.needs_population:
            kwargs["population"] = z
        try:
            scores = attacks[name].score(model, examples, **kwargs)
        except DpauditError as exc:  # an unmet precondition skips this attack, not the stage
            status[name] = f"skipped: {exc}"
            continue
        scores.save(out_dir / name)
        metrics = compute_metrics(
            scores, fprs=config.attack.fprs, bootstrap=config.attack.bootstrap, seed=seed
        )
        metrics.save(out_dir / name)
        status[name] = "done"
    return {name: status[name] for name in names}


def run_canaries(
    model: Any, prepared: PreparedData, config: RunConfig, seed: int, progress: bool
) -> tuple[dict, dict]:
    """Exposure and extraction of the Secret-Sharer canaries: (public payload, revealed payload)."""
    from dpaudit.attacks.canary import (
        attach_extraction,
        canary_exposure,
        canary_extraction,
        exposure_summary,
        extraction_summary,
    )

    canaries = prepared.secret_sharer
    if not canaries:
        return {}, {}
    results = canary_exposure(
        model,
        canaries,
        enumeration_limit=config.attack.exposure_enumeration_limit,
        seed=seed,
        progress=progress,
    )
    extractions = canary_extraction(
        model, canaries, n_samples=config.attack.extraction_samples, seed=seed
    )
    results = attach_extraction(results, extractions)
    common = {
        "exposure_by_repetition": exposure_summary(results),
        "extraction": extraction_summary(extractions),
    }
    return (
        {"results": [r.to_dict(reveal=False) for r in results], **common},
        {"results": [r.to_dict(reveal=True) for r in results], **common},
    )


def run_pii(
    model: Any, train: Sequence[Record], heldout: Sequence[Record], config: RunConfig, seed: int
) -> tuple[dict, dict]:
    """PII extraction and inference (training records vs held-out control): (public, revealed)."""
    from dpaudit.attacks.pii_extraction import pii_extraction, prefix_prompts
    from dpaudit.attacks.pii_reconstruction import pii_inference

    with_pii = [r for r in train if r.pii]
    if not with_pii:
        return {}, {}
    n_samples = max(8, config.attack.extraction_samples * 4)
    extraction = pii_extraction(
        model, with_pii, n_samples=n_samples, prompts=prefix_prompts(with_pii), seed=seed
    )
    sample = with_pii[: min(len(with_pii), 200)]
    control = [r for r in heldout if r.pii][: len(sample)]
    population = list(sample) + list(control)
    inference = pii_inference(model, sample, population=population, seed=seed, train_records=train)
    control_inf = (
        pii_inference(model, control, population=population, seed=seed, train_records=train)
        if control
        else None
    )
    public = {
        "extraction": extraction.to_dict(reveal=False),
        "inference": inference.to_dict(reveal=False),
    }
    revealed = {
        "extraction": extraction.to_dict(reveal=True),
        "inference": inference.to_dict(reveal=True),
    }
    if control_inf is not None:
        public["inference_heldout"] = control_inf.to_dict(reveal=False)
        revealed["inference_heldout"] = control_inf.to_dict(reveal=True)
    return public, revealed


def _memorization(model: Any, prepared: PreparedData, config: RunConfig) -> Any:
    """Verbatim memorization of the members and the Secret-Sharer canary copies, by duplication count."""
    from dpaudit.attacks.memorization import dedupe_records, verbatim_memorization

    one_run = {c.id for c in prepared.one_run}
    trained = [r for r in prepared.train if r.meta.get("canary_id") not in one_run]
    unique, copies = dedupe_records(trained)
    return verbatim_memorization(
        model,
        unique,
        duplicates=copies,
        prefix_tokens=config.attack.memorization_prefix_tokens,
        suffix_tokens=config.attack.memorization_suffix_tokens,
    )


def attack_inputs(run: RunDir, config: RunConfig, model_name: str) -> dict[str, str]:
    """Input hashes of the attack stage of ``model_name``: its weights, the references, the attack config."""
    from dpaudit.trainers.references import REFERENCE_DIRS

    inputs = run.output_hashes(model_name, REFERENCE_DIRS.get(model_name, "references"), "data")
    inputs["attack_config"] = sha256_text(repr(dataclasses.asdict(config.attack)))
    return inputs


PARTS = ("mia", "canary", "memorization", "pii")


def run_attack_stage(
    run: RunDir,
    config: RunConfig,
    prepared: PreparedData,
    model_name: str,
    *,
    seed: int,
    resume: bool = False,
    progress: bool = True,
    parts: tuple[str, ...] = PARTS,
    model: Any = None,
    references: ReferenceSet | None = None,
) -> list[str]:
    """Attacks (``parts`` of :data:`PARTS`) against one model of a run, written to ``<run>/attacks/<model_name>/``.

    The one attack stage: the full run calls it on the models it trained, the
    checkpoint audit on the model it was given. Skipped on ``resume`` when the
    stage's inputs (weights, references, data, attack config) are unchanged.

    Args:
        model: the model to attack; default ``<run>/<model_name>/`` as the trainer
            saved it. Anything :func:`load_scoring_model` accepts (a loaded model).
        references: the reference models; default those of ``<run>/references/``.

    Raises:
        DpauditError: no such model in the run.
    """
    model_dir = run.path / model_name
    if model is None and not model_dir.is_dir():
        raise DpauditError(f"{model_dir}: no trained model; run `dpaudit train` first")
    stage = f"attacks/{model_name}" + ("" if tuple(parts) == PARTS else "/" + "+".join(parts))
    inputs = attack_inputs(run, config, model_name)
    if resume and run.can_skip(stage, inputs):
        return [f"{stage}: unchanged, skipped (--resume)"]
    out_dir = run.subdir("attacks", model_name)
    blind_path = run.path / "attacks" / "blind.json"
    with run.stage(stage, inputs):
        examples, is_member = balanced_examples(prepared, seed)
        if not blind_path.is_file():
            from dpaudit.attacks.blind import blind_baseline

            n = int(is_member.sum())
            blind = blind_baseline(
                [r.text for r in examples[:n]], [r.text for r in examples[n:]], seed=seed
            )
            write_run_file(blind_path, BlindFile.from_dict(blind.to_dict()))
        scorer = load_scoring_model(
            model_dir if model is None else model, config, progress=progress
        )
        status: dict[str, str] = {}
        if "mia" in parts:
            status = run_mia(
                scorer,
                examples,
                is_member,
                config,
                out_dir,
                references=ReferenceSet.from_run(run, model_name)
                if references is None
                else references,
                population=prepared.part("population"),
                seed=seed,
                progress=progress,
            )
            write_run_file(out_dir / "status.json", StatusFile(attacks=status))
        if config.train.task == "causal_lm":
            recovered = out_dir / "recovered.json"
            revealed = (
                read_run_file(recovered, RecoveredFile).to_dict() if recovered.is_file() else {}
            )
            revealed.pop("schema_version", None)
            if "canary" in parts and not prepared.secret_sharer:
                status["canary"] = "skipped: no Secret-Sharer canaries in this run"
            elif "canary" in parts:
                public, revealed["canary"] = run_canaries(scorer, prepared, config, seed, progress)
                write_run_file(out_dir / "canary.json", CanaryFile.from_dict(public))
                status["canary"] = "done"
            if "memorization" in parts:
                result = _memorization(scorer, prepared, config)
                write_run_file(
                    out_dir / "memorization.json", MemorizationFile.from_dict(result.to_dict())
                )
                status["memorization"] = "done"
            if "pii" in parts:
                public, revealed["pii"] = run_pii(
                    scorer, prepared.part("members"), prepared.part("nonmembers"), config, seed
                )
                write_run_file(out_dir / "pii.json", PiiFile.from_dict(public))
                status["pii"] = "done" if public else "skipped: no member record carries PII spans"
            write_run_file(recovered, RecoveredFile.from_dict(revealed))
    line = f"{stage}: " + ", ".join(f"{k} {'ok' if v == 'done' else v}" for k, v in status.items())
    saved = read_run_file(blind_path, BlindFile)
    if saved.auc is not None:
        line += f"; blind baseline AUC {float(saved.auc):.3f}"
        line += f" ({saved.warning})" if saved.warning else ""
    return [line]
