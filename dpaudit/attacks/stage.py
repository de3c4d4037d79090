"""The attack stage of a run: every attack against one trained model, saved to disk.

Reads the model from ``<run>/<model>/`` and writes ``<run>/attacks/<model>/``
as documented in docs/run-directory.md: per-attack scores and metrics, canary
exposure and extraction, verbatim memorization and PII leakage. What is masked
(``to_dict(reveal=False)``) goes to the public files; the same results with the
recovered secrets and PII go to ``recovered.json`` for the auditor alone.

Members and non-members are balanced (the larger side is subsampled by seed)
so that AUC and TPR at low FPR are read on equal footing; a classifier's are
balanced label by label, and ``blind.json`` records how well the labels alone
tell them apart (:func:`~dpaudit.attacks.blind.label_baseline`). Each text is scored
on its first :func:`scoring_length` tokens; how many members and non-members
that truncation cut is recorded in ``status.json`` (``scope``) and returned as
a warning line (docs/decisions.md, "Scoring scope").
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dpaudit.attacks.scores import score_hashes
from dpaudit.config import RunConfig
from dpaudit.datasets.prepare import PreparedData
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError, PreconditionError
from dpaudit.rundir import RunDir, sha256_text
from dpaudit.runfiles.attacks import (
    BlindFile,
    CanaryFile,
    MemorizationFile,
    PiiFile,
    RecoveredFile,
    ScopeBasis,
    ScoringScope,
    StatusFile,
)
from dpaudit.runfiles.io import read_run_file, write_run_file


def _trained_length(model: str | Path | Any, adapter: str | Path | None = None) -> int | None:
    """The ``max_length`` dpaudit fine-tuned ``model`` at (its ``complete.json``), or ``None``."""
    from dpaudit.atomic import read_json
    from dpaudit.trainers.dp_sgd import COMPLETE_FILE

    if isinstance(model, (str, Path)):
        dirs = [adapter, model]
    else:
        source = getattr(model, "source", None)
        source = source if isinstance(source, dict) else {}
        dirs = [source.get("adapter_path"), source.get("model_path")]
    for directory in dirs:
        path = Path(directory) / COMPLETE_FILE if directory else None
        if path is None or not path.is_file():
            continue
        try:
            value = (read_json(path).get("recipe") or {}).get("max_length")
        except (OSError, ValueError, AttributeError):
            return None
        return int(value) if isinstance(value, int) and value >= 2 else None
    return None


def scoring_length(
    model: str | Path | Any, config: RunConfig, *, adapter: str | Path | None = None
) -> tuple[int | None, ScopeBasis]:
    """How many tokens of each text the attacks score, and where that comes from.

    ``attack.max_length`` when set; else the length dpaudit fine-tuned the model
    at (``complete.json``: the rest of a text was never trained on, and a model
    built for the run has no trained positions past it); else ``None``, the
    model's context (:class:`~dpaudit.attacks.scoring.HFScoringModel` caps it).
    """
    if config.attack.max_length:
        return config.attack.max_length, "attack.max_length"
    trained = _trained_length(model, adapter)
    if trained is not None:
        return trained, "fine-tuning"
    return None, "context"


def scoring_scope(
    scorer: Any, examples: Sequence[Record], is_member: np.ndarray, basis: ScopeBasis
) -> ScoringScope | None:
    """What truncation cut from the members and non-members ``scorer`` scores (``None``:
    a scorer that cannot say, one without ``tokens_cut``)."""
    cut_fn = getattr(scorer, "tokens_cut", None)
    length = getattr(scorer, "max_length", None)
    if not callable(cut_fn) or not isinstance(length, int):
        return None
    cut = np.asarray(cut_fn([r.text for r in examples]), dtype=np.int64)
    member = np.asarray(is_member, dtype=bool)
    return ScoringScope(
        max_length=length,
        basis=basis,
        n_member=int(member.sum()),
        n_nonmember=int((~member).sum()),
        members_truncated=int(np.count_nonzero(cut[member])),
        nonmembers_truncated=int(np.count_nonzero(cut[~member])),
        member_tokens_cut=int(cut[member].sum()),
        nonmember_tokens_cut=int(cut[~member].sum()),
    )


def load_scoring_model(
    model_dir: str | Path | Any,
    config: RunConfig,
    *,
    progress: bool = True,
    adapter: str | Path | None = None,
    allow_pickle: bool = False,
    max_length: int | None = None,
    label: str = "",
) -> Any:
    """A :class:`~dpaudit.attacks.scoring.HFScoringModel` over a saved or already loaded model.

    Args:
        model_dir: a saved model directory (as the trainer writes it: safetensors
            and tokenizer); or, with ``adapter`` or ``allow_pickle``, any model
            directory or hub id, read by :func:`dpaudit.trainers.safe_load.load_model`;
            or an already loaded model: a ``(model, tokenizer)`` pair or an object
            with ``model`` and ``tokenizer`` attributes (a ``LoadedModel``).
        config: the run's config (task, device, batch size, ``attack.max_length``).
        progress: show progress bars.
        adapter: a PEFT adapter directory applied on ``model_dir``.
        allow_pickle: accept pickle-only weights (read with ``weights_only=True``).
        max_length: tokens of each text to score; default :func:`scoring_length`
            (reference models are given the target's, so that every model
            scores the same tokens).
        label: the model's name on progress bars (``scoring target``).
    """
    from dpaudit.attacks.scoring import HFScoringModel

    if max_length is None:
        max_length, _ = scoring_length(model_dir, config, adapter=adapter)

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
        max_length=max_length,
        progress=progress,
        label=label,
    )


def balanced_examples(
    prepared: PreparedData, seed: int, *, by_label: bool = False
) -> tuple[list[Record], np.ndarray]:
    """Members and non-members in equal numbers, members first; and their membership bits.

    With ``by_label`` (a classifier) the two sides also carry the same label
    mix: for each label, as many members as non-members (the smaller of its two
    counts, the larger side subsampled by seed), so that no score that is a
    function of the label alone separates them (docs/decisions.md, "Classifier
    audits and labels"). Each side keeps its split order.
    """
    members, nonmembers = prepared.part("members"), prepared.part("nonmembers")
    rng = np.random.default_rng(seed)
    if by_label:
        keep_m: list[int] = []
        keep_n: list[int] = []
        labels = sorted({r.label for r in members + nonmembers}, key=lambda v: (v is None, v))
        for label in labels:
            idx_m = [i for i, r in enumerate(members) if r.label == label]
            idx_n = [i for i, r in enumerate(nonmembers) if r.label == label]
            k = min(len(idx_m), len(idx_n))
            keep_m += [idx_m[i] for i in rng.choice(len(idx_m), k, replace=False)]
            keep_n += [idx_n[i] for i in rng.choice(len(idx_n), k, replace=False)]
        members = [members[i] for i in sorted(keep_m)]
        nonmembers = [nonmembers[i] for i in sorted(keep_n)]
        n = len(members)
        return members + nonmembers, np.array([True] * n + [False] * n)
    n = min(len(members), len(nonmembers))
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
        untrained = untrained_references(root)
        if untrained:  # an interrupted train-references: nothing to load, the attacks say why
            return cls(why_plain=untrained)
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


def untrained_references(root: Path, where: str | None = None) -> str | None:
    """Why the reference set in ``root`` cannot be used (a model not trained yet), or ``None``.

    ``train-references`` writes ``membership.npy`` and ``population_ids.json``
    first, then each ``ref-<j>/``; a model directory is trained once it holds
    ``config.json`` and safetensors weights. ``where`` names ``root`` in the
    message (default: its name, ``references``).
    """
    from dpaudit.trainers.references import MEMBERSHIP_FILE, POPULATION_FILE

    rerun = "(an interrupted train-references?); rerun `dpaudit train-references --resume`"
    where = root.name if where is None else where
    if not (root / POPULATION_FILE).is_file():
        return f"{where}/{POPULATION_FILE}: missing {rerun}"
    try:
        k = int(np.load(root / MEMBERSHIP_FILE, allow_pickle=False).shape[1])
    except (OSError, ValueError, IndexError) as exc:
        return f"{where}/{MEMBERSHIP_FILE}: unreadable ({exc}) {rerun}"
    for j in range(k):
        untrained = untrained_reference(root / f"ref-{j}", f"{where}/ref-{j}")
        if untrained:
            return untrained
    return None


def untrained_reference(ref_dir: Path, where: str) -> str | None:
    """Why the reference model ``ref_dir`` (named ``where``) cannot be loaded: not trained yet."""
    if (ref_dir / "config.json").is_file() and any(ref_dir.glob("*.safetensors")):
        return None
    return (
        f"{where}: not trained (an interrupted train-references?); "
        "rerun `dpaudit train-references --resume`"
    )


def plan_mia(
    names: Sequence[str],
    *,
    task: str,
    references: ReferenceSet,
    examples: Sequence[Record],
    population: Sequence[Record],
    attacks: dict[str, Any] | None = None,
) -> tuple[list[str], dict[str, str], np.ndarray | None, list[Record]]:
    """Which attacks can run here: (runnable, {skipped: reason}, membership rows, z samples).

    Each attack class declares what it needs (``task``, ``needs_references``,
    ``needs_ref_membership``, ``needs_population``), and each attack of
    ``attacks`` (name → instance) may say what else it lacks on these inputs
    (``unmet``: LiRA without IN and OUT references for every example, offline
    RMIA without OUT ones); an attack whose needs are not met is skipped with
    the reason, and the others run. Nothing is loaded or scored here, so the
    checkpoint audit plans with it before it trains any reference.
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
    for name in list(runnable):
        unmet = getattr((attacks or {}).get(name), "unmet", None)
        why = unmet(ref_membership=rows, n_population=len(z)) if callable(unmet) else None
        if why:
            runnable.remove(name)
            skipped[name] = f"skipped: {why}"
    return runnable, skipped, rows, z


T = TypeVar("T")

NO_CANARIES = "no Secret-Sharer canaries in this run"


def skip_unmet(status: dict[str, str], name: str, work: Callable[[], T]) -> T | None:
    """Run one attack or part of the stage; an unmet precondition skips it, not the stage.

    The one place the attack stage turns a
    :class:`~dpaudit.errors.PreconditionError` (what ``name`` needs is missing
    from these inputs) into ``status[name] = "skipped: <reason>"`` (returning
    ``None``); on success ``status[name] = "done"``. Any other error stops the
    stage as before.
    """
    try:
        result = work()
    except PreconditionError as exc:
        status[name] = f"skipped: {exc}"
        return None
    status[name] = "done"
    return result


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

    Reference models are loaded only when a runnable attack needs them, and
    score the same number of tokens as ``model``.
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
        attacks=attacks,
    )
    member = np.asarray(is_member, dtype=bool)
    if not (member.any() and (~member).any()):  # AUC and TPR need both sides
        why = (
            f"no member and non-member to compare ({int(member.sum())} members, "
            f"{int((~member).sum())} non-members scored)"
        )
        status.update({name: f"skipped: {why}" for name in runnable})
        runnable = []
    loaded: list[Any] = []
    if any(ATTACKS.get(name).needs_references for name in runnable):
        length = getattr(model, "max_length", None)
        loaded = [
            load_scoring_model(
                m,
                config,
                progress=progress,
                max_length=length if isinstance(length, int) else None,
                label=f"reference {i}",
            )
            for i, m in enumerate(references.models)
        ]
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

        def attack(name: str = name, kwargs: dict[str, Any] = kwargs) -> None:
            scores = attacks[name].score(model, examples, **kwargs)
            scores.save(out_dir / name)
            metrics = compute_metrics(
                scores, fprs=config.attack.fprs, bootstrap=config.attack.bootstrap, seed=seed
            )
            metrics.save(out_dir / name)

        skip_unmet(status, name, attack)
    for name in names:  # no stale scores from an earlier stage beside "skipped"
        if status[name] != "done" and (out_dir / name).is_dir():
            import shutil

            shutil.rmtree(out_dir / name)
    return {name: status[name] for name in names}


def run_canaries(
    model: Any, prepared: PreparedData, config: RunConfig, seed: int, progress: bool
) -> tuple[dict, dict]:
    """Exposure and extraction of the Secret-Sharer canaries: (public payload, revealed payload).

    Raises:
        PreconditionError: no Secret-Sharer canary in the run, or one the model
            cannot score (the stage skips the part with the reason).
    """
    from dpaudit.attacks.canary import (
        attach_extraction,
        canary_exposure,
        canary_extraction,
        exposure_summary,
        extraction_summary,
    )

    canaries = prepared.secret_sharer
    if not canaries:
        raise PreconditionError(NO_CANARIES)
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
    """PII extraction and inference (training records vs held-out control): (public, revealed).

    The records' ``pii`` spans are the truth; when no member is annotated, PII is
    detected in the members and non-members
    (:func:`~dpaudit.attacks.pii_detect.detect_record_pii`) and ``detector`` says
    how. When no member holds PII nothing is measured, and ``unmeasured`` says
    why (docs/decisions.md, "Parts that could not be measured"). The inference
    game masks ``PERSON`` when members hold names, else the kind most members hold;
    a game that cannot be played is listed in ``skipped`` with the reason.
    """
    from dpaudit.attacks.pii_detect import detect_record_pii
    from dpaudit.attacks.pii_extraction import pii_extraction, prefix_prompts
    from dpaudit.attacks.pii_reconstruction import pii_inference

    train, detector = detect_record_pii(train)
    if detector != "annotated":  # the control is tagged by the same detector
        heldout, _ = detect_record_pii([dataclasses.replace(r, pii=()) for r in heldout])
    date_policy = "any" if detector == "annotated" else "context"
    with_pii = [r for r in train if r.pii]
    info: dict[str, Any] = {
        "detector": detector,
        "n_members": len(train),
        "members_with_pii": len(with_pii),
    }
    if not with_pii:
        info["unmeasured"] = f"no PII found in the {len(train)} members by the {detector} detector"
        return info, dict(info)
    n_samples = max(8, config.attack.extraction_samples * 4)
    extraction = pii_extraction(
        model,
        with_pii,
        n_samples=n_samples,
        prompts=prefix_prompts(with_pii) or None,  # every record opens on PII: the empty prompt
        seed=seed,
        date_policy=date_policy,
    )
    public: dict[str, Any] = {**info, "extraction": extraction.to_dict(reveal=False)}
    revealed: dict[str, Any] = {**info, "extraction": extraction.to_dict(reveal=True)}
    sample = with_pii[: min(len(with_pii), 200)]
    kind = _inference_kind(sample)
    control = [r for r in heldout if r.pii][: len(sample)]
    population = list(sample) + list(control)
    skipped: dict[str, str] = {}
    for name, records in (("inference", sample), ("inference_heldout", control)):
        if not records:
            continue
        try:
            game = pii_inference(
                model, records, kind=kind, population=population, seed=seed, train_records=train
            )
        except PreconditionError as exc:  # e.g. too few distinct values to draw distractors from
            skipped[name] = f"{kind}: {exc}"
            continue
        public[name] = game.to_dict(reveal=False)
        revealed[name] = game.to_dict(reveal=True)
    if skipped:
        public["skipped"] = revealed["skipped"] = skipped
    return public, revealed


def _inference_kind(records: Sequence[Record]) -> str:
    """The PII kind the inference game masks: ``PERSON`` when any record has one, else the
    kind the most records hold (ties: alphabetical)."""
    from collections import Counter

    counts = Counter(kind for r in records for kind in {s.kind for s in r.pii})
    if "PERSON" in counts or not counts:
        return "PERSON"
    return max(sorted(counts), key=lambda k: counts[k])


def pii_status(payload: dict[str, Any]) -> tuple[str, str | None]:
    """The console status of the PII part and, when nothing was measured, a warning."""
    detector = payload.get("detector")
    if payload.get("unmeasured"):
        return "NOT MEASURED", f"PII: {payload['unmeasured']}; PII leakage not measured"
    if not payload.get("extraction"):
        return "NOT MEASURED", "PII: no member record carries PII; PII leakage not measured"
    if detector == "annotated":
        return "ok (annotated PII spans)", None
    found = f"{payload.get('members_with_pii')} of {payload.get('n_members')} members"
    return f"ok (PII found by the {detector} detector in {found})", None


def _memorization(model: Any, prepared: PreparedData, config: RunConfig) -> Any:
    """Verbatim memorization of the members and the Secret-Sharer canary copies, by duplication count."""
    from dpaudit.attacks.memorization import verbatim_memorization

    unique, copies = _memorization_records(prepared)
    return verbatim_memorization(
        model,
        unique,
        duplicates=copies,
        prefix_tokens=config.attack.memorization_prefix_tokens,
        suffix_tokens=config.attack.memorization_suffix_tokens,
    )


def _memorization_records(prepared: PreparedData) -> tuple[list[Record], dict[str, int]]:
    """The distinct trained texts memorization tests (audit canaries left out), and their copies."""
    from dpaudit.attacks.memorization import dedupe_records

    one_run = {c.id for c in prepared.one_run}
    return dedupe_records([r for r in prepared.train if r.meta.get("canary_id") not in one_run])


def plan_stage(
    config: RunConfig,
    prepared: PreparedData,
    *,
    parts: Sequence[str],
    seed: int,
    references: ReferenceSet,
    tokenizer: Any,
) -> tuple[list[str], dict[str, str]]:
    """What the attack stage will run and skip on these inputs, before any model is trained or scored.

    The stage's own checks, made early: :func:`plan_mia` (declared needs and each
    attack's ``unmet``), no Secret-Sharer canary, no record long enough for
    verbatim memorization. ``references`` may hold placeholders for models not
    trained yet: only their number and membership count. What depends on the
    model's outputs (a text too short to score, PII found by a detector) is
    only known when the stage runs, and skipped there the same way.

    Returns:
        (what was asked for: attack names when ``"mia"`` is a part, then the
        other parts; ``{attack or part: "skipped: <reason>"}``).
    """
    from dpaudit.attacks.memorization import too_short
    from dpaudit.attacks.registry import attack_params, get_attack

    asked: list[str] = []
    skipped: dict[str, str] = {}
    if "mia" in parts:
        names = list(config.attack.attacks)
        examples, _ = balanced_examples(
            prepared, seed, by_label=config.train.task == "classification"
        )
        _, planned, _, _ = plan_mia(
            names,
            task=config.train.task,
            references=references,
            examples=examples,
            population=prepared.part("population"),
            attacks={n: get_attack(n, **attack_params(config.attack, n)) for n in names},
        )
        asked += names
        skipped.update(planned)
    if config.train.task != "causal_lm":
        return asked, skipped
    asked += [p for p in parts if p != "mia"]
    if "canary" in parts and not prepared.secret_sharer:
        skipped["canary"] = f"skipped: {NO_CANARIES}"
    if "memorization" in parts:
        unique, _ = _memorization_records(prepared)
        ids = tokenizer([r.text for r in unique])["input_ids"] if unique else []
        a = config.attack
        why = too_short(
            [len(x) for x in ids], a.memorization_prefix_tokens, a.memorization_suffix_tokens
        )
        if why:
            skipped["memorization"] = f"skipped: {why}"
    return asked, skipped


def skip_notes(skipped: dict[str, str]) -> list[str]:
    """One line per reason: ``"lira, rmia will be skipped: <reason>"``."""
    by_reason: dict[str, list[str]] = {}
    for name, status in skipped.items():
        by_reason.setdefault(status.removeprefix("skipped: "), []).append(name)
    return [f"{', '.join(names)} will be skipped: {why}" for why, names in by_reason.items()]


def attack_inputs(run: RunDir, config: RunConfig, model_name: str) -> dict[str, str]:
    """Input hashes of the attack stage of ``model_name``: its weights, the references, the attack config."""
    from dpaudit.trainers.references import REFERENCE_DIRS

    inputs = run.output_hashes(model_name, REFERENCE_DIRS.get(model_name, "references"), "data")
    inputs["attack_config"] = sha256_text(repr(dataclasses.asdict(config.attack)))
    return inputs


PARTS = ("mia", "canary", "memorization", "pii")


def _write_status(
    path: Path, status: dict[str, str], mia: dict[str, str] | None, scope: ScoringScope | None
) -> None:
    """``status.json``: the attacks and scope when ``mia`` ran (else those recorded before),
    and what became of every other part that ran (merged into those recorded before)."""
    old = read_run_file(path, StatusFile) if path.is_file() else StatusFile()
    parts = {**old.parts, **{k: v for k, v in status.items() if mia is None or k not in mia}}
    if mia is None:
        write_run_file(path, StatusFile(attacks=old.attacks, scope=old.scope, parts=parts))
    else:
        write_run_file(path, StatusFile(attacks=mia, scope=scope, parts=parts))


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
        DpauditError: no such model in the run, or a model (or reference set) of the
            run trained on other records than the run's data (the split scored).
    """
    from dpaudit.trainers.dp_sgd import check_trained_on
    from dpaudit.trainers.references import REFERENCE_DIRS, check_reference_pool

    model_dir = run.path / model_name
    if model is None and not model_dir.is_dir():
        raise DpauditError(f"{model_dir}: no trained model; run `dpaudit train` first")
    if model is None:
        ids = [r.id for r in prepared.train]
        check_trained_on(model_dir, ids, split=str(run.path / "data" / "train_ids.json"))
    if references is None:
        pool = [r.id for r in prepared.part("members") + prepared.part("nonmembers")]
        where = run.path / REFERENCE_DIRS.get(model_name, "references")
        check_reference_pool(where, pool, split=str(run.path / "data" / "splits.json"))
    stage = f"attacks/{model_name}" + ("" if tuple(parts) == PARTS else "/" + "+".join(parts))
    inputs = attack_inputs(run, config, model_name)
    if resume and run.can_skip(stage, inputs):
        return [f"{stage}: unchanged, skipped (--resume)"]
    out_dir = run.subdir("attacks", model_name)
    blind_path = run.path / "attacks" / "blind.json"
    classifier = config.train.task == "classification"
    with run.stage(stage, inputs, seed=seed) as record:
        examples, is_member = balanced_examples(prepared, seed, by_label=classifier)
        status: dict[str, str] = {}
        if not blind_path.is_file():

            def blind_file() -> None:
                from dpaudit.attacks.blind import blind_baseline, label_baseline

                n = int(is_member.sum())
                by_user = config.split_by_user  # members and non-members are whole users
                blind = blind_baseline(
                    [r.text for r in examples[:n]],
                    [r.text for r in examples[n:]],
                    seed=seed,
                    groups=[str(r.meta.get("user")) for r in examples] if by_user else None,
                    progress=progress,
                )
                labels = (
                    label_baseline([r.label for r in examples], is_member) if classifier else None
                )
                write_run_file(
                    blind_path,
                    BlindFile.from_dict(
                        {**blind.to_dict(), "label_only": labels.to_dict() if labels else None}
                    ),
                )

            skip_unmet(status, "blind", blind_file)
            if status["blind"] == "done":
                del status["blind"]  # reported by its AUC below
        source = model_dir if model is None else model
        scorer = load_scoring_model(source, config, progress=progress, label=model_name)
        scope = None
        notes: list[str] = []
        mia_status: dict[str, str] | None = None
        if "mia" in parts:
            scope = scoring_scope(scorer, examples, is_member, scoring_length(source, config)[1])
            status |= run_mia(
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
            mia_status = {name: status[name] for name in config.attack.attacks}
        if config.train.task == "causal_lm":
            recovered = out_dir / "recovered.json"
            revealed = (
                read_run_file(recovered, RecoveredFile).to_dict() if recovered.is_file() else {}
            )
            revealed.pop("schema_version", None)
            if "canary" in parts:
                revealed.pop("canary", None)
                (out_dir / "canary.json").unlink(missing_ok=True)  # no stale result when skipped
                canary = skip_unmet(
                    status, "canary", lambda: run_canaries(scorer, prepared, config, seed, progress)
                )
                if canary is not None:
                    public, revealed["canary"] = canary
                    write_run_file(out_dir / "canary.json", CanaryFile.from_dict(public))
            if "memorization" in parts:
                (out_dir / "memorization.json").unlink(missing_ok=True)
                result = skip_unmet(
                    status, "memorization", lambda: _memorization(scorer, prepared, config)
                )
                if result is not None:
                    write_run_file(
                        out_dir / "memorization.json", MemorizationFile.from_dict(result.to_dict())
                    )
            if "pii" in parts:
                revealed.pop("pii", None)
                (out_dir / "pii.json").unlink(missing_ok=True)
                pii = skip_unmet(
                    status,
                    "pii",
                    lambda: run_pii(
                        scorer, prepared.part("members"), prepared.part("nonmembers"), config, seed
                    ),
                )
                if pii is not None:
                    public, revealed["pii"] = pii
                    write_run_file(out_dir / "pii.json", PiiFile.from_dict(public))
                    status["pii"], pii_warning = pii_status(public)
                    notes += [pii_warning] if pii_warning else []
            write_run_file(recovered, RecoveredFile.from_dict(revealed))
        else:  # say so rather than drop them silently
            for part in ("canary", "memorization", "pii"):
                if part in parts:
                    status[part] = "not run (needs a language model; this is a classifier)"
        _write_status(out_dir / "status.json", status, mia_status, scope)
        if "mia" in parts:  # the scores are the source of truth: `dpaudit report` checks them
            record.outputs.update(score_hashes(out_dir))
    line = f"{stage}: " + ", ".join(f"{k} {'ok' if v == 'done' else v}" for k, v in status.items())
    saved = read_run_file(blind_path, BlindFile) if blind_path.is_file() else None  # skipped
    if saved is not None and saved.auc is not None:
        line += f"; blind baseline AUC {float(saved.auc):.3f}"
        line += f" ({saved.warning})" if saved.warning else ""
    if saved is not None and saved.label_only is not None:  # a classifier's labels alone
        line += f"; label-only AUC {float(saved.label_only.auc):.3f}"
        notes += [saved.label_only.warning] if saved.label_only.warning else []
    warning = scope.warning() if scope is not None else None
    notes = ([warning] if warning else []) + notes
    return [line] + [f"{stage}: warning: {note}" for note in notes]
