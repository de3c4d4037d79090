"""The auditor's self-test: does the white-box audit flag DP-SGD known to be broken?

Following Nasr et al. 2023 ("Tight Auditing of Differentially Private Machine
Learning", USENIX Security) and Steinke, Nasr, Jagielski 2023 ("Privacy
Auditing with One (1) Training Run", NeurIPS), each variant of
:mod:`dpaudit.audit.variants` trains the embedded tiny GPT-2 with DP-SGD
calibrated (PLD) to the claimed ε, with ``m`` Dirac gradient canaries
(:mod:`dpaudit.audit.gradient_canaries`) planted by fair coins. The one-run
audit of the canaries' noisy-update statistics gives ε_lb at 95 %
confidence under every registered estimator
(:mod:`dpaudit.audit.estimators`), side by side with each one's ceiling (its
ε_lb had every guess been right); the primary estimator (default
``steinke``, a lower bound for every (ε, δ)-DP mechanism) is judged against the
ledger's PLD ε. The self-test passes when every broken variant is a
``violation`` and the correct one ``consistent``.

Default parameters (:class:`SelftestSettings`), and why. What one canary
reveals is the trade-off curve of the Poisson-subsampled Gaussian at the
claimed (q, σ, T), and for a fixed (ε, δ) that curve is most informative with
full-batch steps, q = 1: the canary is then in every step and the mechanism is
exactly μ-GDP with μ = √T/σ (μ ≈ 0.93 at ε = 4, δ = 1e-5), whatever T. With
q < 1 the accountant's amplification by subsampling buys ε with lots that miss
the canary, which no single-run statistic recovers (simulated, m = 1000,
ε = 4, steinke, 20-30 runs: mean ε_lb 1.44 at q = 1; 0.86 at q = 0.08 and
T = 40 with the likelihood ratio, 0.58 there with the plain sum). Hence q = 1.

At q = 1 the per-step likelihood ratio under the claim is an affine map of the
sum, so the two statistics audit a correct run identically; the self-test
audits the sum because it assumes nothing about q. The misreported-rate
variant claims q/10 = 0.1 (σ calibrated for that) and applies q = 1; the
likelihood ratio under the claimed q = 0.1 then over-weights single large
steps (an excluded canary with one 4σ noise step outranks included ones): in
a measured run at ε = 4 it got 399 of 400 guesses right, ε_lb 3.95 < 4, where
the sum of the same run got 400 of 400 at (200, 200), 4.27. T = 10 gives that
variant's canaries μ = √10/σ(q = 0.1, T = 10) ≈ 1.8, 2.7 and 3.7 at ε = 1, 2
and 4: with the sum it was caught in each of 30 simulated runs at each claim
(smallest ε_lb 2.39, 3.31 and 4.27). The no-noise variant reads the exact
canary counts and the no-clipping one sees 50·C per step (canary scale 50).
The guess grid
(:func:`~dpaudit.audit.gradient_canaries.gradient_canary_grid`, 8 points up to
r = m) caps the steinke bound at 5.19 for m = 1000 (95 %, δ = 1e-5), so the
self-test can flag a claim up to about ε = 5 (above the ceiling a variant is
``inconclusive``); the default claim is ε = 2. Real data: 200 synthetic
records, 16 tokens each; with the ≈ 500 included canaries n ≈ 700, processed
in physical batches of 128.

Outputs under ``out_dir``: ``<variant>/`` (the training run without its
weights, plus ``gradient_canaries.json``: ids, coins, both statistics,
appearances, bounds and verdict) and ``selftest.json`` (the rows).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpaudit.atomic import write_json
from dpaudit.audit.estimators import (
    DEFAULT_ESTIMATOR,
    estimator_names,
    get_estimator,
    primary_problem,
)
from dpaudit.audit.gradient_canaries import (
    STATISTIC_LIKELIHOOD_RATIO,
    STATISTIC_SUM,
    GradientCanaryHooks,
    check_statistic,
    gradient_canary_audits,
    gradient_canary_ceiling,
    plant_gradient_canaries,
    position_canary_slots,
)
from dpaudit.audit.variants import (
    CombinedHooks,
    MisreportedSamplingRate,
    NoClipping,
    Variant,
    make_variant,
)
from dpaudit.audit.verdict import VIOLATION, assess_power, judge
from dpaudit.errors import DpauditError

__all__ = [
    "DEFAULT_VARIANTS",
    "SELFTEST_FILE",
    "EstimatorRow",
    "SelftestResult",
    "SelftestRow",
    "SelftestSettings",
    "run_selftest",
]

SELFTEST_FILE = "selftest.json"
CANARY_FILE = "gradient_canaries.json"
MARKER_FILE = ".dpaudit-selftest"
"""Written into each variant directory before training: marks it as the self-test's to replace."""
DEFAULT_VARIANTS = ("correct", "no-noise", "no-clipping", "misreported-rate")
_WEIGHTS = ("model.safetensors", "adapter")
LOWER_BOUND = "lower-bound"


@dataclass(frozen=True)
class SelftestSettings:
    """The embedded set-up of the self-test (see the module docstring for the choices).

    Attributes:
        domain: synthetic corpus of the real records.
        n_records: real training records.
        max_length: tokens per example.
        vocab_size: size of the BPE tokenizer trained on the records.
        sample_rate: claimed Poisson rate q (batch size = round(q·n)); the
            misreported-rate variant claims ``sample_rate / rate_factor`` and
            applies ``rate_factor`` times that.
        steps: logical steps T.
        physical_batch_size: examples per forward/backward pass (memory bound).
        delta: δ of the claim and of the audit.
        confidence: 1 − β of the lower bound.
        max_grad_norm: claimed clipping norm C.
        learning_rate: AdamW learning rate.
        canary_scale: crafted canary gradient = scale·C on its coordinate.
        clip_factor: how much the no-clipping variant inflates C.
        rate_factor: applied/claimed q of the misreported-rate variant.
        statistic: the canary score audited, ``"sum"`` (default; see the module
            docstring) or ``"likelihood-ratio"``
            (:data:`~dpaudit.audit.gradient_canaries.STATISTICS`).
    """

    domain: str = "clinical"
    n_records: int = 200
    max_length: int = 16
    vocab_size: int = 500
    sample_rate: float = 1.0
    steps: int = 10
    physical_batch_size: int = 128
    delta: float = 1e-5
    confidence: float = 0.95
    max_grad_norm: float = 1.0
    learning_rate: float = 5e-3
    canary_scale: float = 50.0
    clip_factor: float = 1e6
    rate_factor: float = 10.0
    statistic: str = STATISTIC_SUM

    def __post_init__(self) -> None:
        check_statistic(self.statistic)
        if not 0.0 < self.sample_rate <= 1.0:
            raise DpauditError(f"self-test sample_rate must lie in (0, 1], got {self.sample_rate}")
        if self.steps < 1 or self.physical_batch_size < 1:
            raise DpauditError("self-test steps and physical_batch_size must be at least 1")

    def variant(self, name: str) -> Variant:
        """The variant ``name`` with these settings' parameters."""
        if name == NoClipping.name:
            return NoClipping(clip_factor=self.clip_factor)
        if name == MisreportedSamplingRate.name:
            return MisreportedSamplingRate(factor=self.rate_factor)
        return make_variant(name)

    def batch_size(self, variant: str, n: int) -> int:
        """The claimed expected batch size of ``variant`` on ``n`` examples.

        ``round(q·n)``, except for the misreported-rate variant:
        ``floor(q·n / rate_factor)``, so that the applied rate
        ``rate_factor · batch / n`` stays at most q (≤ 1).
        """
        if variant == MisreportedSamplingRate.name:
            return max(1, math.floor(self.sample_rate * n / self.rate_factor))
        return max(1, round(self.sample_rate * n))


@dataclass(frozen=True)
class EstimatorRow:
    """One estimator's bound on one variant's audit (the same guesses for every estimator).

    Attributes:
        estimator: registry name; guarantee: what its ε_lb promises
            (:data:`~dpaudit.audit.estimators.GUARANTEES`).
        epsilon_lb: its bound (best grid point, union-bounded).
        ceiling: its ε_lb had every guess been right (same grid and confidence).
        n_guesses, n_correct: of its best grid point.
        verdict: its ε_lb against the claimed ε, ``consistent`` or
            ``violation`` (informative: only the primary estimator's decides the
            row); ``None`` for an estimator that is not a lower bound for every
            (ε, δ)-DP mechanism, which cannot decide a violation.
        error: why a non-primary estimator gave no bound on these scores (then
            ``epsilon_lb`` is ``None``), e.g. ``gauss`` on noise-free scores
            with no spread; ``None`` otherwise.
    """

    estimator: str
    guarantee: str
    epsilon_lb: float | None
    ceiling: float | None
    n_guesses: int
    n_correct: int
    verdict: str | None
    error: str | None = None


@dataclass(frozen=True)
class SelftestRow:
    """One variant's audit.

    Attributes:
        variant: registry name; description: what it applies.
        claimed_epsilon: the ledger's ε (primary accountant) — the claim, ε_ub.
        epsilon_lb: the white-box one-run lower bound of the primary estimator.
        verdict: ``violation`` (primary estimator's ε_lb above the claim),
            ``consistent``, or ``inconclusive`` when its ceiling is below the
            claim (no violation could have been shown;
            :func:`~dpaudit.audit.verdict.assess_power`);
            expected: what a working auditor says.
        ok: verdict == expected.
        n_guesses, n_correct: of the primary estimator's best grid point.
        applied: the mechanism actually applied (q, σ, C).
        seconds: wall time of training and auditing.
        estimator: the primary estimator; ceiling: its ε_lb with every guess right.
        statistic: the canary score audited.
        claimed: the mechanism the ledger states (q, σ, C) and its steps T.
        bounds: every estimator's bound, by name, the primary first.
    """

    variant: str
    description: str
    claimed_epsilon: float
    epsilon_lb: float
    verdict: str
    expected: str
    ok: bool
    n_guesses: int
    n_correct: int
    applied: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    estimator: str = DEFAULT_ESTIMATOR
    ceiling: float | None = None
    statistic: str = STATISTIC_SUM
    claimed: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, EstimatorRow] = field(default_factory=dict)


@dataclass(frozen=True)
class SelftestResult:
    """All rows, with the set-up that produced them.

    Attributes:
        rows: one per variant, in the order asked.
        out_dir: where the outputs are.
        settings: the set-up; seed, target_epsilon, n_canaries: the arguments.
        seconds: wall time of the whole self-test.
        estimator: the primary estimator; estimators: all reported, primary first.
    """

    rows: tuple[SelftestRow, ...]
    out_dir: Path
    settings: SelftestSettings
    seed: int
    target_epsilon: float
    n_canaries: int
    seconds: float
    estimator: str = DEFAULT_ESTIMATOR
    estimators: tuple[str, ...] = (DEFAULT_ESTIMATOR,)

    @property
    def passed(self) -> bool:
        """Every broken variant flagged ``violation`` and the correct one ``consistent``."""
        return bool(self.rows) and all(r.ok for r in self.rows)

    def table(self) -> str:
        """A fixed-width text table of the rows: ε_lb and ceiling per estimator, primary first."""
        cols = "".join(f" {_short(name):>13}" for name in self.estimators)
        head = (
            f"{'variant':<18} {'claimed ε':>9}{cols} {'guesses':>9}  "
            f"{'verdict':<11} {'expected':<11} ok"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            cells = ""
            for name in self.estimators:
                b = r.bounds.get(name)
                if b is None:
                    cell = "-"
                elif b.epsilon_lb is None:
                    cell = "n/a"
                else:
                    cell = _pair(b.epsilon_lb, b.ceiling)
                cells += f" {cell:>13}"
            lines.append(
                f"{r.variant:<18} {r.claimed_epsilon:>9.3f}{cells} "
                f"{f'{r.n_correct}/{r.n_guesses}':>9}  {r.verdict:<11} {r.expected:<11} "
                f"{'yes' if r.ok else 'NO'}"
            )
        kinds = ", ".join(
            f"{name} ({get_estimator(name).guarantee}"
            f"{', primary' if name == self.estimator else ''})"
            for name in self.estimators
        )
        lines.append(f"cells: ε_lb/ceiling (every guess right); estimators: {kinds}")
        note = (
            "gdp-lower-bound estimators are valid only for Gaussian-shaped mechanisms and never "
            "decide a verdict"
        )
        if any(get_estimator(n).inputs == "scores" for n in self.estimators):
            note = "gauss reads every canary's score (no guesses, so no ceiling: '/-'); " + note
        lines.append(note)
        for r in self.rows:
            for name, b in r.bounds.items():
                if b.error:
                    lines.append(f"n/a: {name} on {r.variant}: {b.error}")
        for r in self.rows:
            if not r.ok:
                lines.append(f"not as expected: {r.variant}: {self.why(r)}")
        lines.append(f"{'PASSED' if self.passed else 'FAILED'} in {self.seconds:.0f} s")
        return "\n".join(lines)

    @staticmethod
    def why(row: SelftestRow) -> str:
        """Why a row's verdict is not the expected one, in one line."""
        ceiling = "?" if row.ceiling is None else f"{row.ceiling:.2f}"
        text = (
            f"expected {row.expected}, got {row.verdict}: ε_lb {row.epsilon_lb:.2f} "
            f"({row.n_correct}/{row.n_guesses} right) vs claimed ε {row.claimed_epsilon:.2f}, ceiling {ceiling}"
        )
        if row.expected == "violation" and row.verdict != "violation":
            text += (
                "; the audit could not certify the broken variant's leakage above the claim: more "
                "canaries (--canaries) raise the ceiling, a smaller --epsilon lowers the claim"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "seed": self.seed,
            "target_epsilon": self.target_epsilon,
            "n_canaries": self.n_canaries,
            "seconds": self.seconds,
            "estimator": self.estimator,
            "estimators": list(self.estimators),
            "settings": dataclasses.asdict(self.settings),
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "failures": {r.variant: self.why(r) for r in self.rows if not r.ok},
        }


def _short(name: str) -> str:
    return name if len(name) <= 13 else name[:12] + "…"


def _pair(lb: float, ceiling: float | None) -> str:
    return f"{lb:.2f}/{ceiling:.2f}" if ceiling is not None else f"{lb:.2f}/-"


def _estimator_names(estimator: str, estimators: Sequence[str]) -> tuple[str, ...]:
    """The primary first, then the others asked (all registered ones when none), each once."""
    why = primary_problem(estimator)
    if why is not None:
        raise DpauditError(
            f"estimator {why}: it cannot be the primary one; it is reported beside it anyway"
        )
    rest = tuple(estimators) or estimator_names(scores=True)
    for name in rest:
        get_estimator(name)
    return tuple(dict.fromkeys((estimator, *rest)))


def run_selftest(
    *,
    out_dir: str | Path,
    seed: int = 0,
    target_epsilon: float = 2.0,
    n_canaries: int = 1000,
    progress: bool = True,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    settings: SelftestSettings | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
    estimators: Sequence[str] = (),
) -> SelftestResult:
    """Train each variant with gradient canaries, audit it, and judge it against its ledger.

    Args:
        out_dir: output directory (per-variant runs and ``selftest.json``);
            a variant directory left by an earlier self-test is replaced.
        seed: seeds the corpus, the coins, initialisation, lots and noise.
        target_epsilon: the claimed ε (noise calibrated with PLD).
        n_canaries: gradient canaries m.
        progress: progress bars while training.
        variants: names from :data:`~dpaudit.audit.variants.VARIANTS`.
        settings: the set-up (default :class:`SelftestSettings`).
        estimator: the primary estimator, whose bound decides each verdict; it
            must be a ``lower-bound`` (valid for every (ε, δ)-DP mechanism).
        estimators: further estimators reported side by side (empty = every
            registered one).

    Raises:
        DpauditError: unknown variant or estimator, a primary estimator that is
            not a ``lower-bound``, or a variant directory holding something else.
    """
    from dpaudit.config import TrainConfig
    from dpaudit.datasets.synth import synthesize
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer
    from dpaudit.trainers.dp_sgd import train_model
    from dpaudit.trainers.models import build_model

    started = time.perf_counter()
    settings = settings or SelftestSettings()
    variants = tuple(variants)
    names = _estimator_names(estimator, estimators)
    # Unknown names fail here, before any work.
    hooks_of = {name: settings.variant(name) for name in variants}
    if len(set(variants)) != len(variants):
        raise DpauditError("variants must be distinct")
    if any(h.expected_verdict == VIOLATION for h in hooks_of.values()):
        _check_power(n_canaries, target_epsilon, settings, estimator)
    out_dir = Path(out_dir)
    for name in variants:
        _clear(out_dir / name)
    if not out_dir.exists():  # it will hold the canaries' coins: owner-only, as run directories
        out_dir.mkdir(parents=True)
        out_dir.chmod(0o700)

    records = synthesize(settings.domain, settings.n_records, seed)
    tokenizer = train_bpe_tokenizer([r.text for r in records], vocab_size=settings.vocab_size)
    canaries = plant_gradient_canaries(n_canaries, seed=seed)
    train = records + canaries.records()
    n = len(train)

    def config_of(variant: str) -> TrainConfig:
        batch = settings.batch_size(variant, n)
        return TrainConfig(
            target_epsilon=target_epsilon,
            delta=settings.delta,
            accountant="pld",
            batch_size=batch,
            physical_batch_size=min(batch, settings.physical_batch_size),
            epochs=settings.steps * batch / n,
            max_grad_norm=settings.max_grad_norm,
            learning_rate=settings.learning_rate,
            baseline=False,
            num_references=0,
            checkpoint_every=settings.steps + 1,
        )

    model = build_model(
        config_of("correct"), tokenizer, seed=seed, max_length=settings.max_length
    ).model
    slots = position_canary_slots(model, max_length=settings.max_length, m=n_canaries)
    del model

    rows = []
    for name in variants:
        t = time.perf_counter()
        variant = hooks_of[name]
        canary_hooks = GradientCanaryHooks(canaries.ids, slots, scale=settings.canary_scale)
        run_dir = out_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MARKER_FILE).write_text(f"{name}\n", encoding="utf-8")
        result = train_model(
            train,
            config=config_of(name),
            tokenizer=tokenizer,
            out_dir=run_dir,
            seed=seed,
            max_length=settings.max_length,
            progress=progress,
            hooks=CombinedHooks(canary_hooks, variant),
        )
        ledger = result.ledger
        scores = canary_hooks.scores(settings.statistic)
        bounds, errors = _audits(
            scores, canaries.included, names, delta=ledger.delta, confidence=settings.confidence
        )
        verdicts = {
            k: judge(b, ledger.epsilons, result.primary_accountant).verdict
            for k, b in bounds.items()
            if b.guarantee == LOWER_BOUND
        }
        primary = bounds[estimator]
        verdict = assess_power(
            judge(primary, ledger.epsilons, result.primary_accountant),
            control=None,
            require_control=False,
        )
        claimed = _claimed(ledger)
        applied = variant.mechanism(claimed)
        row = SelftestRow(
            variant=name,
            description=variant.describe(),
            claimed_epsilon=result.epsilon,
            epsilon_lb=primary.epsilon,
            verdict=verdict.verdict,
            expected=variant.expected_verdict,
            ok=verdict.verdict == variant.expected_verdict,
            n_guesses=primary.n_guesses,
            n_correct=primary.n_correct,
            applied=_mechanism_dict(applied),
            seconds=time.perf_counter() - t,
            estimator=estimator,
            ceiling=primary.ceiling,
            statistic=settings.statistic,
            claimed={**_mechanism_dict(claimed), "steps": float(result.steps)},
            bounds={
                k: EstimatorRow(
                    estimator=k,
                    guarantee=bounds[k].guarantee,
                    epsilon_lb=bounds[k].epsilon,
                    ceiling=bounds[k].ceiling,
                    n_guesses=bounds[k].n_guesses,
                    n_correct=bounds[k].n_correct,
                    verdict=verdicts.get(k),
                )
                if k in bounds
                else EstimatorRow(k, get_estimator(k).guarantee, None, None, 0, 0, None, errors[k])
                for k in names
            },
        )
        write_json(
            run_dir / CANARY_FILE,
            {
                "variant": name,
                "canary_ids": list(canaries.ids),
                "included": list(canaries.included),
                "statistic": settings.statistic,
                "scores": scores.tolist(),
                STATISTIC_SUM: canary_hooks.scores(STATISTIC_SUM).tolist(),
                STATISTIC_LIKELIHOOD_RATIO: canary_hooks.scores(
                    STATISTIC_LIKELIHOOD_RATIO
                ).tolist(),
                "appearances": canary_hooks.appearances.tolist(),
                "steps": canary_hooks.steps_seen,
                "slots": {
                    "param_name": slots.param_name,
                    "param_shape": list(slots.param_shape),
                    "first_coordinate": slots.coordinates[0] if slots.coordinates else None,
                },
                "canary_scale": settings.canary_scale,
                "bounds": {k: b.to_dict() for k, b in bounds.items()},
                "bound_errors": errors,
                "verdict": verdict.to_dict(),
                "row": dataclasses.asdict(row),
            },
        )
        for item in _WEIGHTS:
            path = run_dir / item
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        rows.append(row)

    res = SelftestResult(
        tuple(rows),
        out_dir,
        settings,
        int(seed),
        float(target_epsilon),
        int(n_canaries),
        time.perf_counter() - started,
        estimator,
        names,
    )
    write_json(out_dir / SELFTEST_FILE, res.to_dict())
    return res


POWER_MARGIN = 1.0
"""Room a ceiling needs above the claim: a broken variant that misses a few guesses loses about
0.8 of ε_lb at m = 500–1,000 (e.g. 996 of 1,000 right: 4.36 where the ceiling is 5.19)."""


def _check_power(m: int, epsilon: float, settings: SelftestSettings, estimator: str) -> None:
    """Refuse, before training, a self-test whose audit could not call any variant a violation.

    A ceiling above the claim by less than :data:`POWER_MARGIN` is allowed with a
    warning: a broken variant that misses a few guesses may then stay below the claim.

    Raises:
        DpauditError: the primary estimator's ceiling at ``m`` canaries is not above
            ``epsilon``; names the smallest m that leaves the margin (or a smaller ε).
    """
    import logging

    def ceiling_at(k: int) -> float:
        return gradient_canary_ceiling(
            k, delta=settings.delta, confidence=settings.confidence, estimator=estimator
        )

    ceiling = ceiling_at(m)
    if ceiling >= epsilon + POWER_MARGIN:
        return
    counts = (500, 1000, 2000, 5000)
    roomy = next((k for k in counts if k > m and ceiling_at(k) >= epsilon + POWER_MARGIN), None)
    enough = roomy or next((k for k in counts if k > m and ceiling_at(k) > epsilon), None)
    fix = (
        f"--canaries {enough} (ceiling {ceiling_at(enough):.2f}) or a smaller --epsilon"
        if enough
        else f"a smaller --epsilon (no canary count reaches it at δ = {settings.delta:g})"
    )
    what = (
        f"with {m} canaries the audit can show at most ε = {ceiling:.2f} ({estimator}'s ceiling at "
        f"δ = {settings.delta:g}, {settings.confidence:.0%})"
    )
    if ceiling > epsilon:
        logging.getLogger(__name__).warning(
            "%s, only %.2f above the claimed ε = %g: a broken variant that misses a few guesses "
            "will not be flagged; use %s",
            what,
            ceiling - epsilon,
            epsilon,
            fix,
        )
        return
    raise DpauditError(
        f"{what}, not above the claimed ε = {epsilon:g}: no broken variant could be called a "
        f"violation; use {fix}"
    )


def _audits(
    scores: Any, included: Any, names: Sequence[str], *, delta: float, confidence: float
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every estimator's bound on the same scores; a score-based one that cannot fit them gives a reason.

    Counts estimators always give a bound (the primary among them); ``gauss``
    needs scores with some spread, which a noise-free variant does not have.
    """
    counts = [n for n in names if get_estimator(n).inputs == "counts"]
    bounds = dict(
        gradient_canary_audits(
            scores, included, delta=delta, confidence=confidence, estimators=counts
        )
    )
    errors: dict[str, str] = {}
    for name in names:
        if name in bounds:
            continue
        try:
            bounds.update(
                gradient_canary_audits(
                    scores, included, delta=delta, confidence=confidence, estimators=[name]
                )
            )
        except DpauditError as exc:
            errors[name] = str(exc)
    return bounds, errors


def _claimed(ledger: Any) -> Any:
    from dpaudit.trainers.hooks import Mechanism

    clip = ledger.max_grad_norm if ledger.max_grad_norm is not None else math.inf
    return Mechanism(ledger.sample_rate, ledger.noise_multiplier, clip)


def _mechanism_dict(mech: Any) -> dict[str, float]:
    return {
        "sample_rate": mech.sample_rate,
        "noise_multiplier": mech.noise_multiplier,
        "max_grad_norm": mech.max_grad_norm,
    }


def _clear(run_dir: Path) -> None:
    """Remove a variant directory left by an earlier self-test; refuse to touch anything else."""
    if not run_dir.exists():
        return
    if (run_dir / MARKER_FILE).is_file() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        shutil.rmtree(run_dir)
        return
    raise DpauditError(f"{run_dir}: exists and is not a self-test output; choose another out_dir")
