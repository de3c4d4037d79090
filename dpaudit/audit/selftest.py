"""The auditor's self-test: does the white-box audit flag DP-SGD known to be broken?

Following Nasr et al. 2023 ("Tight Auditing of Differentially Private Machine
Learning", USENIX Security) and Steinke, Nasr, Jagielski 2023 ("Privacy
Auditing with One (1) Training Run", NeurIPS), each variant of
:mod:`dpaudit.audit.variants` trains the embedded tiny GPT-2 with DP-SGD
calibrated (PLD) to the claimed ε, with ``m`` Dirac gradient canaries
(:mod:`dpaudit.audit.gradient_canaries`) planted by fair coins. The one-run
audit of the canaries' noisy-update statistics gives ε_lb at 95 % confidence,
judged against the ledger's PLD ε. The self-test passes when every broken
variant is a ``violation`` and the correct one ``consistent``.

Default parameters (:class:`SelftestSettings`), and why. The one-run audit
with r guesses, all correct, cannot exceed log(x/(1−x)), x = β^{1/r}; with
m = 1000 canaries and the guess grid (100, 100), (200, 200), (400, 0) at
β = 0.05/3, a broken run reaches ≈ 4.5, so the claim must sit well below it:
ε = 2 (δ = 1e-5). With q = 0.08 and T = 40 steps (σ ≈ 1.4 by PLD) an
included canary is drawn at least once with probability 1 − 0.92⁴⁰ ≈ 96.5 %;
that fixes the separation of the broken runs: exact counts (no noise), 50·C
per draw (no clipping, canary scale 50) and ten times the draws
(misreported q: 0.8·T·C against noise σC√T, ≈ 3.8 standard deviations).
The correct run's bound stays ≈ 0.5. Real data: 200 synthetic records,
16 tokens each; with the ≈ 500 included canaries n ≈ 700.

Outputs under ``out_dir``: ``<variant>/`` (the training run without its
weights, plus ``gradient_canaries.json``: ids, coins, statistics,
appearances, bound and verdict) and ``selftest.json`` (the rows).
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
from dpaudit.audit.gradient_canaries import (
    GradientCanaryHooks,
    gradient_canary_audit,
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
from dpaudit.audit.verdict import judge
from dpaudit.errors import DpauditError

__all__ = [
    "DEFAULT_VARIANTS",
    "SELFTEST_FILE",
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


@dataclass(frozen=True)
class SelftestSettings:
    """The embedded set-up of the self-test (see the module docstring for the choices).

    Attributes:
        domain: synthetic corpus of the real records.
        n_records: real training records.
        max_length: tokens per example.
        vocab_size: size of the BPE tokenizer trained on the records.
        sample_rate: claimed Poisson rate q (batch size = round(q·n)).
        steps: logical steps T.
        delta: δ of the claim and of the audit.
        confidence: 1 − β of the lower bound.
        max_grad_norm: claimed clipping norm C.
        learning_rate: AdamW learning rate.
        canary_scale: crafted canary gradient = scale·C on its coordinate.
        clip_factor: how much the no-clipping variant inflates C.
        rate_factor: applied/claimed q of the misreported-rate variant.
    """

    domain: str = "clinical"
    n_records: int = 200
    max_length: int = 16
    vocab_size: int = 500
    sample_rate: float = 0.08
    steps: int = 40
    delta: float = 1e-5
    confidence: float = 0.95
    max_grad_norm: float = 1.0
    learning_rate: float = 5e-3
    canary_scale: float = 50.0
    clip_factor: float = 1e6
    rate_factor: float = 10.0

    def variant(self, name: str) -> Variant:
        """The variant ``name`` with these settings' parameters."""
        if name == NoClipping.name:
            return NoClipping(clip_factor=self.clip_factor)
        if name == MisreportedSamplingRate.name:
            return MisreportedSamplingRate(factor=self.rate_factor)
        return make_variant(name)


@dataclass(frozen=True)
class SelftestRow:
    """One variant's audit.

    Attributes:
        variant: registry name; description: what it applies.
        claimed_epsilon: the ledger's ε (primary accountant) — the claim.
        epsilon_lb: the white-box one-run lower bound.
        verdict: ``consistent`` / ``violation``; expected: what a working auditor says.
        ok: verdict == expected.
        n_guesses, n_correct: of the best grid point.
        applied: the mechanism actually applied (q, σ, C).
        seconds: wall time of training and auditing.
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


@dataclass(frozen=True)
class SelftestResult:
    """All rows, with the set-up that produced them.

    Attributes:
        rows: one per variant, in the order asked.
        out_dir: where the outputs are.
        settings: the set-up; seed, target_epsilon, n_canaries: the arguments.
        seconds: wall time of the whole self-test.
    """

    rows: tuple[SelftestRow, ...]
    out_dir: Path
    settings: SelftestSettings
    seed: int
    target_epsilon: float
    n_canaries: int
    seconds: float

    @property
    def passed(self) -> bool:
        """Every broken variant flagged ``violation`` and the correct one ``consistent``."""
        return bool(self.rows) and all(r.ok for r in self.rows)

    def table(self) -> str:
        """A fixed-width text table of the rows."""
        head = f"{'variant':<18} {'claimed ε':>9} {'ε_lb':>6} {'guesses':>9}  {'verdict':<11} {'expected':<11} ok"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.variant:<18} {r.claimed_epsilon:>9.3f} {r.epsilon_lb:>6.3f} "
                f"{f'{r.n_correct}/{r.n_guesses}':>9}  {r.verdict:<11} {r.expected:<11} {'yes' if r.ok else 'NO'}"
            )
        lines.append(f"{'PASSED' if self.passed else 'FAILED'} in {self.seconds:.0f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "seed": self.seed,
            "target_epsilon": self.target_epsilon,
            "n_canaries": self.n_canaries,
            "seconds": self.seconds,
            "settings": dataclasses.asdict(self.settings),
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }


def run_selftest(
    *,
    out_dir: str | Path,
    seed: int = 0,
    target_epsilon: float = 2.0,
    n_canaries: int = 1000,
    progress: bool = True,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    settings: SelftestSettings | None = None,
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

    Raises:
        DpauditError: unknown variant, or a variant directory holding something else.
    """
    from dpaudit.config import TrainConfig
    from dpaudit.datasets.synth import synthesize
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer
    from dpaudit.trainers.dp_sgd import train_model
    from dpaudit.trainers.models import build_model

    started = time.perf_counter()
    settings = settings or SelftestSettings()
    variants = tuple(variants)
    # Unknown names fail here, before any work.
    hooks_of = {name: settings.variant(name) for name in variants}
    if len(set(variants)) != len(variants):
        raise DpauditError("variants must be distinct")
    out_dir = Path(out_dir)
    for name in variants:
        _clear(out_dir / name)

    records = synthesize(settings.domain, settings.n_records, seed)
    tokenizer = train_bpe_tokenizer([r.text for r in records], vocab_size=settings.vocab_size)
    canaries = plant_gradient_canaries(n_canaries, seed=seed)
    train = records + canaries.records()
    n = len(train)
    batch = max(1, round(settings.sample_rate * n))
    config = TrainConfig(
        target_epsilon=target_epsilon,
        delta=settings.delta,
        accountant="pld",
        batch_size=batch,
        physical_batch_size=batch,
        epochs=settings.steps * batch / n,
        max_grad_norm=settings.max_grad_norm,
        learning_rate=settings.learning_rate,
        baseline=False,
        num_references=0,
        checkpoint_every=settings.steps + 1,
    )
    model = build_model(config, tokenizer, seed=seed, max_length=settings.max_length).model
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
            config=config,
            tokenizer=tokenizer,
            out_dir=run_dir,
            seed=seed,
            max_length=settings.max_length,
            progress=progress,
            hooks=CombinedHooks(canary_hooks, variant),
        )
        ledger = result.ledger
        lower = gradient_canary_audit(
            canary_hooks.scores(),
            canaries.included,
            delta=ledger.delta,
            confidence=settings.confidence,
        )
        verdict = judge(lower, ledger.epsilons, result.primary_accountant)
        applied = variant.mechanism(_claimed(ledger))
        row = SelftestRow(
            variant=name,
            description=variant.describe(),
            claimed_epsilon=result.epsilon,
            epsilon_lb=lower.epsilon,
            verdict=verdict.verdict,
            expected=variant.expected_verdict,
            ok=verdict.verdict == variant.expected_verdict,
            n_guesses=lower.n_guesses,
            n_correct=lower.n_correct,
            applied={
                "sample_rate": applied.sample_rate,
                "noise_multiplier": applied.noise_multiplier,
                "max_grad_norm": applied.max_grad_norm,
            },
            seconds=time.perf_counter() - t,
        )
        write_json(
            run_dir / CANARY_FILE,
            {
                "variant": name,
                "canary_ids": list(canaries.ids),
                "included": list(canaries.included),
                "statistic": canary_hooks.scores().tolist(),
                "appearances": canary_hooks.appearances.tolist(),
                "steps": canary_hooks.steps_seen,
                "slots": {
                    "param_name": slots.param_name,
                    "param_shape": list(slots.param_shape),
                    "first_coordinate": slots.coordinates[0] if slots.coordinates else None,
                },
                "canary_scale": settings.canary_scale,
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
    )
    write_json(out_dir / SELFTEST_FILE, res.to_dict())
    return res


def _claimed(ledger: Any) -> Any:
    from dpaudit.trainers.hooks import Mechanism

    clip = ledger.max_grad_norm if ledger.max_grad_norm is not None else math.inf
    return Mechanism(ledger.sample_rate, ledger.noise_multiplier, clip)


def _clear(run_dir: Path) -> None:
    """Remove a variant directory left by an earlier self-test; refuse to touch anything else."""
    if not run_dir.exists():
        return
    if (run_dir / MARKER_FILE).is_file() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        shutil.rmtree(run_dir)
        return
    raise DpauditError(f"{run_dir}: exists and is not a self-test output; choose another out_dir")
