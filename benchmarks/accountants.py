"""Benchmark: how long each accountant takes to answer (not a test).

Two queries per accountant, each under the same time limit the CLI uses
(:data:`dpaudit.accounting.DEFAULT_TIME_LIMIT`), so a slow accountant is reported
as timed out rather than waited on (issue 16: "PRV must never take minutes
silently"):

* **ε** at (q, σ, T, δ) — :func:`dpaudit.accounting.compute_epsilons` for one accountant;
* **σ calibration** to a target ε — :func:`dpaudit.accounting.calibrate_noise`
  (approximate accountants allowed here: this measures time, not a guarantee).

Settings: q = 0.01, σ = 1.0, δ = 1e-5, T ∈ {10³, 10⁴, 10⁵}, target ε = 3. Each
query runs in a fresh thread; the reported time is its wall time (median of
``--rounds``).

Run from the repository root::

    .venv/bin/python benchmarks/accountants.py          # appends to benchmarks/RESULTS.md
    .venv/bin/python benchmarks/accountants.py --rounds 1 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dp_overhead import _load, record  # noqa: E402

Q, SIGMA, DELTA, TARGET = 0.01, 1.0, 1e-5, 3.0


def _timed(fn) -> tuple[float, str]:
    """(seconds, outcome) of ``fn()``: its value formatted, or the error's first line."""
    t = time.perf_counter()
    try:
        out = fn()
        return time.perf_counter() - t, out
    except Exception as exc:  # noqa: BLE001 - a failure is a result here
        return time.perf_counter() - t, f"failed: {str(exc).splitlines()[0][:80]}"


def main(argv: list[str] | None = None) -> None:
    from dpaudit.accounting import (
        ACCOUNTANTS,
        DEFAULT_TIME_LIMIT,
        calibrate_noise,
        compute_epsilons,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", default="1000,10000,100000")
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args(argv)
    steps_list = [int(s) for s in args.steps.split(",")]
    started = time.perf_counter()
    rows = []
    for steps in steps_list:
        for name in ACCOUNTANTS.names():

            def eps(name=name, steps=steps) -> str:
                values, errors = compute_epsilons(
                    sampling_rate=Q,
                    noise_multiplier=SIGMA,
                    steps=steps,
                    delta=DELTA,
                    accountants=[name],
                )
                return (
                    f"ε = {values[name]:.3f}" if name in values else f"failed: {errors[name][:80]}"
                )

            def cal(name=name, steps=steps) -> str:
                sigma = calibrate_noise(
                    target_epsilon=TARGET,
                    delta=DELTA,
                    sampling_rate=Q,
                    steps=steps,
                    accountant=name,
                    allow_approximate=True,
                )
                return f"σ = {sigma:.4f}"

            if steps == steps_list[0]:
                eps()  # warm-up: the first query imports the accountant's library
            e_runs = [_timed(eps) for _ in range(args.rounds)]
            c_runs = [_timed(cal) for _ in range(args.rounds)]
            rows.append(
                {
                    "steps": steps,
                    "name": name,
                    "eps_s": statistics.median(r[0] for r in e_runs),
                    "eps": e_runs[-1][1],
                    "cal_s": statistics.median(r[0] for r in c_runs),
                    "cal": c_runs[-1][1],
                }
            )
            r = rows[-1]
            print(
                f"T={steps:>6} {name:9s} ε {r['eps_s']:7.3f} s ({r['eps']})   "
                f"calibration {r['cal_s']:7.3f} s ({r['cal']})",
                flush=True,
            )
    lines = [
        "| T | accountant | ε time (s) | ε | σ calibration time (s) | σ for ε = 3 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['steps']:,} | {r['name']} | {r['eps_s']:.3f} | {r['eps']} | {r['cal_s']:.3f} "
            f"| {r['cal']} |"
        )
    section = (
        f"\n## {date.today().isoformat()} — accountant timings\n\n"
        f"q = {Q}, σ = {SIGMA}, δ = {DELTA}, calibration target ε = {TARGET}; median of "
        f"{args.rounds} queries each, time limit {DEFAULT_TIME_LIMIT} s per query (a slower one "
        f"is reported as failed, not waited on); {time.perf_counter() - started:.0f} s in all; load "
        f"average {_load()} when done. gdp and edgeworth are approximations (never used to "
        "calibrate by default).\n\n" + "\n".join(lines) + "\n"
    )
    record(section, write=not args.no_write)


if __name__ == "__main__":
    main()
