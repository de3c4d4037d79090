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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import read_json, write_json
from dpaudit.config import RunConfig
from dpaudit.datasets.prepare import PreparedData
from dpaudit.datasets.records import Record
from dpaudit.errors import DpauditError
from dpaudit.rundir import RunDir, sha256_text

MIA_PARAMS = {
    "mink": ("k", "mink_k"),
    "minkpp": ("k", "mink_k"),
    "rmia": ("gamma", "rmia_gamma"),
    "clf_rmia": ("gamma", "rmia_gamma"),
}


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
            directory or hub id, read by :func:`dpaudit.trainers.safe_load.load_checkpoint`;
            or an already loaded model: a ``(model, tokenizer)`` pair or an object
            with ``model`` and ``tokenizer`` attributes (a ``LoadedCheckpoint``).
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
        from dpaudit.trainers.safe_load import load_checkpoint

        loaded = load_checkpoint(
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


def _references(
    run: RunDir, config: RunConfig, examples: Sequence[Record], progress: bool
) -> tuple[list, Any]:
    """Reference scoring models and their membership rows for ``examples`` (or ``([], None)``)."""
    ref_root = run.path / "references"
    if not (ref_root / "membership.npy").is_file():
        return [], None
    from dpaudit.trainers.references import load_membership

    membership, ids = load_membership(ref_root)
    row = {i: k for k, i in enumerate(ids)}
    missing = [r.id for r in examples if r.id not in row]
    if missing:
        raise DpauditError(
            f"{ref_root}: reference pool lacks {len(missing)} audited examples (e.g. {missing[0]!r})"
        )
    refs = [
        load_scoring_model(ref_root / f"ref-{j}", config, progress=progress)
        for j in range(membership.shape[1])
    ]
    return refs, membership[[row[r.id] for r in examples]]


def run_mia(
    model: Any,
    examples: Sequence[Record],
    is_member: np.ndarray,
    config: RunConfig,
    out_dir: Path,
    *,
    references: Sequence[Any],
    ref_membership: Any,
    population: Sequence[Record],
    seed: int,
) -> dict[str, str]:
    """Run the configured membership-inference attacks; return {attack: "done" | reason skipped}."""
    from dpaudit.attacks.metrics import compute_metrics
    from dpaudit.attacks.registry import (
        CLASSIFIER_ATTACKS,
        NEEDS_POPULATION,
        NEEDS_REF_MEMBERSHIP,
        NEEDS_REFERENCES,
        get_attack,
    )

    status: dict[str, str] = {}
    classifier = config.train.task == "classification"
    for name in config.attack.attacks:
        params = {}
        if name in MIA_PARAMS:
            key, field = MIA_PARAMS[name]
            params[key] = getattr(config.attack, field)
        attack = get_attack(name, **params)  # unknown names fail here, with a suggestion
        if (name in CLASSIFIER_ATTACKS) != classifier:
            status[name] = (
                f"skipped: not an attack on a {'classifier' if classifier else 'language model'}"
            )
            continue
        if name in NEEDS_REFERENCES and not references:
            status[name] = "skipped: no reference models (dpaudit train-references)"
            continue
        kwargs: dict[str, Any] = {"is_member": is_member}
        if name in NEEDS_REFERENCES:
            kwargs["references"] = references
        if name in NEEDS_REF_MEMBERSHIP:
            kwargs["ref_membership"] = ref_membership
        if name in NEEDS_POPULATION:
            kwargs["population"] = population
        scores = attack.score(model, examples, **kwargs)
        scores.save(out_dir / name)
        compute_metrics(
            scores, fprs=config.attack.fprs, bootstrap=config.attack.bootstrap, seed=seed
        ).save(out_dir / name)
        status[name] = "done"
    return status


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

    trained = [r for r in prepared.train if not r.id.startswith("canary-or-")]
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
    inputs = run.output_hashes(model_name, "references", "data")
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
) -> list[str]:
    """Attacks (``parts`` of :data:`PARTS`) against ``<run>/<model_name>``; skipped on resume when unchanged."""
    model_dir = run.path / model_name
    if not model_dir.is_dir():
        raise DpauditError(f"{model_dir}: no trained model; run `dpaudit train` first")
    stage = f"attacks/{model_name}" + ("" if tuple(parts) == PARTS else "/" + "+".join(parts))
    inputs = attack_inputs(run, config, model_name)
    if resume and run.can_skip(stage, inputs):
        return [f"{stage}: unchanged, skipped (--resume)"]
    out_dir = run.subdir("attacks", model_name)
    with run.stage(stage, inputs):
        examples, is_member = balanced_examples(prepared, seed)
        if not (run.path / "attacks" / "blind.json").is_file():
            from dpaudit.attacks.blind import blind_baseline

            n = int(is_member.sum())
            blind = blind_baseline(
                [r.text for r in examples[:n]], [r.text for r in examples[n:]], seed=seed
            )
            write_json(run.path / "attacks" / "blind.json", blind.to_dict())
        model = load_scoring_model(model_dir, config, progress=progress)
        status: dict[str, str] = {}
        if "mia" in parts:
            references, ref_membership = _references(run, config, examples, progress)
            status = run_mia(
                model,
                examples,
                is_member,
                config,
                out_dir,
                references=references,
                ref_membership=ref_membership,
                population=prepared.part("population"),
                seed=seed,
            )
            write_json(out_dir / "status.json", {"attacks": status})
        if config.train.task == "causal_lm":
            revealed = (
                read_json(out_dir / "recovered.json")
                if (out_dir / "recovered.json").is_file()
                else {}
            )
            revealed.pop("schema_version", None)
            if "canary" in parts:
                public, revealed["canary"] = run_canaries(model, prepared, config, seed, progress)
                write_json(out_dir / "canary.json", public)
                status["canary"] = "done"
            if "memorization" in parts:
                write_json(
                    out_dir / "memorization.json", _memorization(model, prepared, config).to_dict()
                )
                status["memorization"] = "done"
            if "pii" in parts:
                public, revealed["pii"] = run_pii(
                    model, prepared.part("members"), prepared.part("nonmembers"), config, seed
                )
                write_json(out_dir / "pii.json", public)
                status["pii"] = "done"
            write_json(out_dir / "recovered.json", revealed)
    lines = [
        f"{stage}: " + ", ".join(f"{k} {'ok' if v == 'done' else v}" for k, v in status.items())
    ]
    return lines
