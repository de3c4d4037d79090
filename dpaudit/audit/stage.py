"""The audit stage: one-run (or threshold) ε lower bound on the audit canaries, vs the ledger.

The audit canaries (``canary-or-*``) were each included in training by a fair
coin (bits in ``data/inclusion.json``). Each one's membership score is
``audit.canary_score`` of its secret given its prefix under the trained model
(:func:`canary_scores`: the loss, or its drop from the model before training); the
auditor turns scores and bits into an :class:`EpsilonLowerBound` and
:func:`~dpaudit.audit.verdict.judge` compares it with the ledger's ε at the
same δ. Written to ``audit/bounds.json`` under ``models.<model>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.audit.lower_bound import EpsilonLowerBound
from dpaudit.audit.methods import AUDIT_METHODS
from dpaudit.audit.verdict import AuditVerdict, assess_power, judge
from dpaudit.config import RunConfig
from dpaudit.datasets.prepare import PreparedData
from dpaudit.errors import DpauditError
from dpaudit.rundir import RunDir, sha256_text
from dpaudit.runfiles.audit import BoundsFile
from dpaudit.runfiles.io import read_run_file, write_run_file

BOUNDS_FILE = "bounds.json"


def lower_bound_from_scores(
    scores: np.ndarray, included: np.ndarray, config: RunConfig, *, delta: float, seed: int
) -> EpsilonLowerBound:
    """The configured audit method (:data:`~dpaudit.audit.methods.AUDIT_METHODS`) on these canaries."""
    method = AUDIT_METHODS.get(config.audit.method)
    return method.run(scores, included, config.audit, delta=delta, seed=seed)


def audit_delta(config: Any, ledger: Any, m: int) -> float:
    """The δ of the audit: ``audit.delta`` when set; else min(ledger δ, β/(200·m)).

    The one-run bound's δ term is 2·m·δ (Steinke, Nasr, Jagielski 2023,
    Theorem 3.1 as read in docs/formulas.md#one-run-audit): at the ledger's δ
    it can reach β and cap ε_lb. At β/(200·m) it is at most β/100 of the error
    budget. The accountants' ε_ub is recomputed at the same δ, so the comparison
    stays like for like. A *claimed* ledger (a checkpoint audit) cannot be
    recomputed: its δ is used as it is. Rounded down to one significant digit.

    Args:
        config: the ``[audit]`` section.
        ledger: the model's :class:`~dpaudit.accounting.PrivacyLedger`.
        m: the number of audit canaries.
    """
    if config.delta is not None:
        return float(config.delta)
    if ledger.mechanism == "claimed":
        return float(ledger.delta)
    small = (1.0 - float(config.confidence)) / (200.0 * max(1, int(m)))
    exponent = math.floor(math.log10(small))
    small = math.floor(small / 10.0**exponent + 1e-9) * 10.0**exponent
    return float(f"{min(float(ledger.delta), small):.1e}")


def upper_bounds(privacy_path: Path, delta: float) -> tuple[dict[str, float], str]:
    """ε by accountant at ``delta`` from a ledger (recomputed when δ differs), and the primary accountant."""
    from dpaudit.accounting import compute_epsilons
    from dpaudit.trainers.privacy import read_privacy

    ledger, payload = read_privacy(privacy_path)
    primary = str(payload.get("primary_accountant", "pld"))
    if ledger.mechanism == "none":
        return {name: float("inf") for name in ledger.epsilons}, primary
    if delta == ledger.delta:
        return dict(ledger.epsilons), primary
    eps, _ = compute_epsilons(
        sampling_rate=ledger.sample_rate,
        noise_multiplier=ledger.noise_multiplier,
        steps=ledger.steps,
        delta=delta,
        accountants=tuple(ledger.epsilons),
    )
    return eps, primary


def mislabelled_canary_scores(model: Any, canaries: Any, config: RunConfig) -> np.ndarray:
    """Classifier canaries: log-probability of each canary's assigned (mislabelled) label.

    A random text carries no signal for its label, so a high probability of the
    assigned label is evidence that the canary was trained on (Jagielski et al.
    2020; Nasr et al. 2021).
    """
    from scipy.special import log_softmax

    from dpaudit.datasets.prepare import canary_label

    logits = np.asarray(model.classify([c.text for c in canaries]), dtype=float)
    labels = [
        canary_label(c.id, seed=config.seed, num_labels=config.train.num_labels) for c in canaries
    ]
    return log_softmax(logits, axis=1)[np.arange(len(canaries)), labels]


def canary_scores(
    model: Any, canaries: Sequence[Any], config: RunConfig, *, base: Any = None
) -> tuple[np.ndarray, str]:
    """Membership scores of audit canaries, higher = more likely included; and the statistic.

    ``audit.canary_score`` (the canaries' coins are replaced by placeholders
    before scoring, so no statistic can read them):

    - ``loss``: minus the mean cross-entropy of the secret's tokens given the
      canary's prefix (Panda et al. 2025); classifiers: the log-probability of the
      canary's (mislabelled) label (Jagielski et al. 2020; Nasr et al. 2021);
    - ``loss-drop``: the same loss under ``base`` (the model before training)
      minus the loss under ``model``: black-box calibration by the initial model
      (Steinke, Nasr, Jagielski 2023, §6), no shadow models. Without ``base``
      it falls back to ``loss`` (with a warning), and says so in the returned name;
    - ``logppl``: minus the summed cross-entropy of the secret (Carlini et al.
      2019); for classifiers the same as ``loss``.

    Args:
        model, base: scoring models (:class:`~dpaudit.attacks.scoring.ScoringModel`).
        canaries: the audit canaries, each scored after its own prefix.
        config: the run's config (``audit.canary_score``, ``train.task``).

    Returns:
        ``(scores (m,) float64, statistic actually used)``.
    """
    import warnings

    from dpaudit.attacks.canary import secret_losses

    blind = [dataclasses.replace(c, included=True) for c in canaries]
    statistic = config.audit.canary_score
    if statistic == "loss-drop" and base is None:
        warnings.warn(
            "audit.canary_score = loss-drop needs the model before training, which this run "
            "does not record; scoring with loss",
            stacklevel=2,
        )
        statistic = "loss"

    def score(m: Any) -> np.ndarray:
        if config.train.task == "classification":
            return mislabelled_canary_scores(m, blind, config)
        reduce = "sum" if statistic == "logppl" else "mean"
        return -secret_losses(
            m, [c.prefix for c in blind], [c.secret for c in blind], reduce=reduce
        )

    scores = score(model)
    if statistic == "loss-drop":
        scores = scores - score(base)
    return np.asarray(scores, dtype=np.float64), statistic


def base_scoring_model(model: Any, model_dir: Path, config: RunConfig) -> Any | None:
    """The audited model before training, as a scorer like ``model``; ``None`` when unknown.

    - A model trained here: its initial weights, rebuilt from
      ``<model_dir>/complete.json`` (recipe and weight hash checked;
      :func:`~dpaudit.trainers.models.initial_model`).
    - A checkpoint audit (``<model_dir>/source.json``): of an adapter, the model
      it was applied to; of a model dpaudit trained, that model's initial weights.

    A base that cannot be rebuilt faithfully is reported with a warning and
    ``None`` is returned (the audit then scores with ``loss``).
    """
    import warnings

    from dpaudit.atomic import read_json
    from dpaudit.attacks.stage import load_scoring_model
    from dpaudit.trainers.models import fit_vocabulary, initial_model, load_pretrained

    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None
    try:
        base = initial_model(model_dir, tokenizer)
        source = model_dir / "source.json"
        if base is None and source.is_file():
            given = read_json(source)
            path = given.get("model_path")
            if path and given.get("adapter_path"):
                base = load_pretrained(path, task=config.train.task, num_labels=None)
                fit_vocabulary(base, tokenizer)
            elif path:
                base = initial_model(path, tokenizer)
    except DpauditError as exc:
        warnings.warn(f"no base model for loss-drop: {exc}", stacklevel=2)
        return None
    if base is None:
        return None
    length = getattr(model, "max_length", None)  # the same tokens as the trained model
    return load_scoring_model(
        (base, tokenizer),
        config,
        progress=False,
        max_length=length if isinstance(length, int) else None,
    )


def audit_model(
    model: Any,
    prepared: PreparedData,
    config: RunConfig,
    privacy_path: Path,
    *,
    seed: int,
    base: Any = None,
) -> AuditVerdict:
    """Score the audit canaries with ``model`` and judge the bound against the ledger.

    Scores: :func:`canary_scores` with ``audit.canary_score``. ``loss-drop``
    needs the model before training: ``base`` when given, else the one
    :func:`base_scoring_model` finds next to ``privacy_path``.
    """
    from dpaudit.trainers.privacy import read_privacy

    canaries = prepared.one_run
    if not canaries:
        raise DpauditError("no audit canaries in this run (data.one_run_canaries = 0)")
    if base is None and config.audit.canary_score == "loss-drop":
        base = base_scoring_model(model, Path(privacy_path).parent, config)
    scores, statistic = canary_scores(model, canaries, config, base=base)
    included = np.array([c.included for c in canaries], dtype=bool)
    ledger, _ = read_privacy(privacy_path)
    delta = audit_delta(config.audit, ledger, len(canaries))
    lower = lower_bound_from_scores(scores, included, config, delta=delta, seed=seed)
    upper, primary = upper_bounds(privacy_path, delta)
    design = "mislabelled" if config.train.task == "classification" else config.data.canary_design
    return dataclasses.replace(
        judge(lower, upper, primary),
        canary_design=design,
        canary_score=statistic,
        estimates=side_by_side(scores, included, config, delta=delta),
    )


def side_by_side(
    scores: np.ndarray, included: np.ndarray, config: RunConfig, *, delta: float
) -> dict[str, dict[str, Any]]:
    """Every one-run estimator (``audit.estimators``, empty = all) on the same guesses and grid.

    ``{name: {"epsilon", "ceiling", "guarantee"}}``; an estimator not defined
    here (``fdp-gdp`` at δ = 0) gets ``{"error": reason}`` instead. Empty for
    other audit methods (the threshold audit has one estimator, Clopper-Pearson).
    """
    from dpaudit.audit.estimators import estimator_names, get_estimator
    from dpaudit.audit.lower_bound import METHOD_ONE_RUN, audit_one_run_estimators

    if config.audit.method != METHOD_ONE_RUN:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name in tuple(config.audit.estimators) or estimator_names(scores=False):
        if get_estimator(name).inputs == "scores":
            reason = (
                f"{name} models white-box canary statistics as Gaussian sums; black-box loss "
                "scores are not, so it is reported by white-box audits only"
            )
            out[name] = {"epsilon": None, "ceiling": None, "guarantee": None, "error": reason}
            continue
        try:
            bound = audit_one_run_estimators(
                scores,
                included,
                delta=delta,
                confidence=config.audit.confidence,
                grid=list(config.audit.guesses) or None,
                estimators=(name,),
            )[name]
        except DpauditError as exc:
            out[name] = {"epsilon": None, "ceiling": None, "guarantee": None, "error": str(exc)}
            continue
        out[name] = {
            "epsilon": float(bound.epsilon),
            "ceiling": None if bound.ceiling is None else float(bound.ceiling),
            "guarantee": bound.guarantee,
        }
    return out


def run_audit_stage(
    run: RunDir,
    config: RunConfig,
    prepared: PreparedData,
    model_name: str,
    *,
    seed: int,
    resume: bool = False,
    progress: bool = True,
    model: Any = None,
) -> AuditVerdict | None:
    """Audit ``<run>/<model_name>``; merge the result into ``audit/bounds.json``.

    ``model`` is the model to score (anything ``load_scoring_model`` accepts);
    default the weights in ``<run>/<model_name>/``. The claim is read from
    ``<run>/<model_name>/privacy.json`` either way.
    """
    from dpaudit.attacks.stage import load_scoring_model
    from dpaudit.trainers.dp_sgd import check_trained_on

    model_dir = run.path / model_name
    if model is None and not model_dir.is_dir():
        raise DpauditError(f"{model_dir}: no trained model; run `dpaudit train` first")
    if model is None:  # the canaries' inclusion bits must be those the model trained with
        ids = [r.id for r in prepared.train]
        check_trained_on(model_dir, ids, split=str(run.path / "data" / "train_ids.json"))
    stage = f"audit/{model_name}"
    inputs = run.output_hashes(model_name)
    inputs["audit_config"] = sha256_text(repr(dataclasses.asdict(config.audit)))
    path = run.subdir("audit") / BOUNDS_FILE
    if resume and run.can_skip(stage, inputs) and path.is_file():
        return None
    with run.stage(stage, inputs, seed=seed):
        scorer = load_scoring_model(
            model_dir if model is None else model, config, progress=progress
        )
        verdict = audit_model(scorer, prepared, config, model_dir / "privacy.json", seed=seed)
        record_verdict(path, model_name, verdict)
    return verdict


def record_verdict(path: Path, model_name: str, verdict: AuditVerdict) -> Path:
    """Merge ``verdict`` into ``audit/bounds.json`` (:class:`BoundsFile`) as ``models.<model_name>``.

    The other models' entries are kept. Raises ``InputError`` when an existing
    file is not a valid ``bounds.json``.
    """
    bounds = read_run_file(path, BoundsFile) if path.is_file() else BoundsFile()
    return write_run_file(path, bounds.with_model(model_name, verdict.to_entry()))


def assess_run(run: RunDir, config: RunConfig, models: Sequence[str]) -> dict[str, AuditVerdict]:
    """Judge the power of each audited model's verdict; rewrite ``audit/bounds.json``.

    The non-private ``baseline`` of the same run (same canaries and δ) is the
    control of every other model (:func:`~dpaudit.audit.verdict.assess_power`).
    Returns the assessed verdicts of ``models`` found in the file.
    """
    path = run.path / "audit" / BOUNDS_FILE
    if not path.is_file():
        return {}
    bounds = read_run_file(path, BoundsFile)
    verdicts = {name: AuditVerdict.from_entry(entry) for name, entry in bounds.models.items()}
    control = verdicts.get("baseline")
    out: dict[str, AuditVerdict] = {}
    for name, verdict in verdicts.items():
        if name == "baseline":
            continue
        verdicts[name] = assess_power(
            verdict,
            control=control,
            control_model="baseline",
            min_control_epsilon=config.audit.control_min_epsilon,
            require_control=config.audit.require_control,
        )
    for name, verdict in verdicts.items():
        bounds = bounds.with_model(name, verdict.to_entry())
        if name in models:
            out[name] = verdict
    write_run_file(path, bounds)
    return out


def verdict_line(model_name: str, verdict: AuditVerdict) -> str:
    """One line for the CLI: what was tested and how strongly, then the verdict (and why)."""
    lb = verdict.lower
    claim = verdict.upper.get(verdict.primary_accountant, float("inf"))
    ceiling = f", ceiling {verdict.ceiling:.2f}" if verdict.ceiling is not None else ""
    control = ""
    if verdict.control is not None:
        control = (
            f"; control {verdict.control['model']} ε_lb = {verdict.control['epsilon_lower']:.2f}"
        )
    line = (
        f"audit/{model_name}: ε_lb = {lb.epsilon:.3f} ({lb.method}, {lb.confidence:.0%} confidence, "
        f"δ = {lb.delta:.1e}, {lb.n_correct}/{lb.n_guesses} correct{ceiling}) vs ε_ub = "
        f"{claim:.3f} ({verdict.primary_accountant}){control} → {verdict.verdict}"
    )
    if verdict.reasons:
        line += " (" + "; ".join(verdict.reasons) + ")"
    return line
