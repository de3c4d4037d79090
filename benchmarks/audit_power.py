"""Audit power: ε_lb by canary design × estimator × threat model × ε, over seeds.

Writes (appends a dated section to) ``benchmarks/AUDIT_POWER.md``. Every row is
one training run measured here, with its command; nothing is copied from
elsewhere. Black-box: the quickstart config with ``--canaries`` one-run
canaries of each design, trained at each ε (``inf`` = non-private), audited at
``--audit-delta``. White-box: ``dpaudit selftest`` (gradient canaries, the
likelihood-ratio statistic) at each finite ε.

    .venv/bin/python benchmarks/audit_power.py                      # the full grid (hours on 2 CPU cores)
    .venv/bin/python benchmarks/audit_power.py --eps 8,inf --seeds 1 --designs new-token --no-whitebox

Timings under load are noise; the ε_lb values are not (seeds fixed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DPAUDIT = [sys.executable, "-m", "dpaudit.cli"]


def _run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def black_box(design: str, eps: str, seed: int, args: argparse.Namespace) -> dict:
    name = f"bb-{design}-eps{eps}-s{seed}"
    runs = Path(args.workdir)
    sets = [
        f"data.one_run_canaries={args.canaries}",
        f"data.canary_design={design}",
        f"train.target_epsilon={eps}",
        "train.baseline=false",
        "train.num_references=0",
        *args.set,
    ]
    train = [*DPAUDIT, "train", "quickstart", "--runs-dir", str(runs), "--name", name]
    train += ["--seed", str(seed)] + [x for s in sets for x in ("--set", s)]
    audit = [*DPAUDIT, "audit", str(runs / name), "--set", f"audit.delta={args.audit_delta}"]
    bounds = runs / name / "audit" / "bounds.json"
    wall = 0.0
    if not bounds.is_file():  # a finished point is reused (the benchmark can be resumed)
        if (runs / name).exists():
            train.append("--resume")
        wall = _run(train) + _run(audit)
    entry = json.loads(bounds.read_text())["models"]["target"]
    return {
        "threat": "black-box",
        "design": design,
        "eps": eps,
        "seed": seed,
        "lower": entry["lower"],
        "estimates": entry.get("estimates", {}),
        "verdict": entry["verdict"],
        "wall_s": wall,
        "command": " ".join(train[2:]) + " && " + " ".join(audit[2:]),
    }


def white_box(eps: str, seed: int, args: argparse.Namespace, variant: str = "correct") -> dict:
    """One self-test variant (default the correct one), in this process."""
    from dpaudit.audit.selftest import run_selftest

    out = Path(args.workdir) / f"wb-{variant}-eps{eps}-s{seed}"
    start = time.perf_counter()
    result = run_selftest(
        out_dir=out,
        seed=seed,
        target_epsilon=float(eps),
        n_canaries=args.canaries,
        progress=False,
        variants=(variant,),
    )
    row = result.to_dict()["rows"][0]
    return {
        "threat": "white-box",
        "design": f"gradient ({variant})",
        "eps": eps,
        "seed": seed,
        "bounds": row["bounds"],
        "verdict": row["verdict"],
        "wall_s": time.perf_counter() - start,
        "command": f"python benchmarks/audit_power.py --only-whitebox --eps {eps} --seeds {seed}",
    }


def ideal(eps: str, seed: int, args: argparse.Namespace) -> dict:
    """The one-run game on the exact worst case of full-batch DP-SGD, with no training.

    With q = 1 a gradient canary's observation is N(μ·[in], 1) with μ the GDP
    parameter of the claim (Dong, Roth, Su 2022, Cor. 2.13: ε(μ, δ) = ε), so
    this is the most any white-box one-run audit of a correct run at this m can
    expect: what the grid and the estimators allow, not a training artefact.
    """
    from scipy.optimize import brentq

    from dpaudit.audit.gradient_canaries import gradient_canary_audits
    from dpaudit.edgeworth import gdp_epsilon

    delta = float(args.audit_delta)
    mu = brentq(lambda u: gdp_epsilon(delta, u) - float(eps), 1e-3, 20.0)
    rng = np.random.default_rng(seed)
    included = rng.random(args.canaries) < 0.5
    scores = rng.normal(size=args.canaries) + mu * included
    bounds = gradient_canary_audits(scores, included, delta=delta, confidence=0.95)
    return {
        "threat": "ideal (simulated)",
        "design": f"Gaussian μ = {mu:.3f}",
        "eps": eps,
        "seed": seed,
        "bounds": {
            k: {
                "epsilon_lb": b.epsilon,
                "ceiling": b.ceiling,
                "n_correct": b.n_correct,
                "n_guesses": b.n_guesses,
            }
            for k, b in bounds.items()
        },
        "verdict": "—",
        "wall_s": 0.0,
        "command": f"python benchmarks/audit_power.py --ideal-only --eps {eps} --seeds {seed}",
    }


COLUMNS = ("steinke", "fdp-epsdelta", "fdp-gdp", "gauss")


def _fmt(x: object) -> str:
    try:
        return f"{float(x):.2f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"


def to_markdown(rows: list[dict], args: argparse.Namespace) -> str:
    load = os.getloadavg()
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
        "",
        f"m = {args.canaries} canaries, audit δ = {args.audit_delta}, 95 % confidence, "
        "estimators side by side (`steinke`, `fdp-epsdelta`: lower bounds; `fdp-gdp`: valid "
        "for Gaussian-shaped mechanisms only; `gauss`: the canaries' scores as a Gaussian pair, "
        "valid when the scores are Gaussian — white-box only, no ceiling). Ceiling, correct and "
        "verdict are the primary (`steinke`) audit's.",
        "",
        "| threat | design | ε | seed | steinke ε_lb | fdp-epsdelta | fdp-gdp | gauss | ceiling | correct | verdict | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["threat"] == "black-box":
            est = r["estimates"]
            lb = r["lower"]
            vals = [est.get(n, {}).get("epsilon") for n in COLUMNS]
            ceiling, correct = lb.get("ceiling"), f"{lb['n_correct']}/{lb['n_guesses']}"
        else:
            b = r["bounds"]
            vals = [b.get(n, {}).get("epsilon_lb") for n in COLUMNS]
            st = b.get("steinke", {})
            ceiling, correct = st.get("ceiling"), f"{st.get('n_correct')}/{st.get('n_guesses')}"
        lines.append(
            f"| {r['threat']} | {r['design']} | {r['eps']} | {r['seed']} | "
            + " | ".join(_fmt(v) for v in vals)
            + f" | {_fmt(ceiling)} | {correct} | {r['verdict']} | {r['wall_s']:.0f} |"
        )
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", default="1,4,8,inf")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--designs", default="random-secret,new-token")
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--audit-delta", default="1e-5")
    parser.add_argument("--whitebox", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--ideal-only",
        action="store_true",
        help="only the simulated white-box optimum (seconds; no training)",
    )
    parser.add_argument(
        "--only-whitebox", action="store_true", help="skip the black-box (quickstart) runs"
    )
    parser.add_argument("--set", action="append", default=[], help="extra --set for training")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "audit-power"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "AUDIT_POWER.md"))
    args = parser.parse_args()
    rows: list[dict] = []
    log = Path(args.workdir) / "rows.jsonl"  # every finished row, as it finishes
    log.parent.mkdir(parents=True, exist_ok=True)

    def keep(row: dict) -> None:
        rows.append(row)
        with log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(json.dumps(row, default=str)[:300], flush=True)

    for seed in (int(s) for s in args.seeds.split(",")):
        for eps in (e for e in args.eps.split(",") if e != "inf"):
            keep(ideal(eps, seed, args))
        if args.ideal_only:
            continue
        for design in [] if args.only_whitebox else args.designs.split(","):
            for eps in args.eps.split(","):
                keep(black_box(design, eps, seed, args))
        if args.whitebox:
            for eps in (e for e in args.eps.split(",") if e != "inf"):
                keep(white_box(eps, seed, args))
    out = Path(args.out)
    head = (
        ""
        if out.exists()
        else "# Audit power\n\nε_lb of the one-run audit (see README, docs/formulas.md).\n\n"
    )
    with out.open("a", encoding="utf-8") as f:
        f.write(head + to_markdown(rows, args) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
