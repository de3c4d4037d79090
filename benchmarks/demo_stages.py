"""Benchmark: where `make demo`'s time goes, stage by stage (not a test).

Runs the demo's job (`dpaudit run configs/quickstart.toml`, what `dpaudit demo`
runs) from a fresh run directory in a subprocess, times it end to end, and reads
each stage's seconds from the run's ``manifest.json`` (recorded by every stage).
The rest of the wall time is start-up, imports and the console summary.

Run from the repository root::

    .venv/bin/python benchmarks/demo_stages.py            # appends to benchmarks/RESULTS.md
    .venv/bin/python benchmarks/demo_stages.py --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dp_overhead import RESULTS, _load, record  # noqa: E402


def stage_table(stages: dict[str, dict], wall: float) -> str:
    """Markdown rows: stage, seconds, share of the wall time, in the order the stages ran."""
    ordered = sorted(stages.items(), key=lambda kv: kv[1].get("started") or "")
    lines = ["| stage | seconds | share of wall time |", "|---|---|---|"]
    for name, rec in ordered:
        seconds = float(rec.get("seconds") or 0.0)
        lines.append(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.0f} % |")
    rest = wall - sum(float(r.get("seconds") or 0.0) for r in stages.values())
    lines.append(f"| start-up, imports, summary | {rest:.1f} | {100 * rest / wall:.0f} % |")
    lines.append(f"| **total (wall)** | **{wall:.1f}** | 100 % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.toml"))
    ap.add_argument(
        "--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}"
    )
    args = ap.parse_args(argv)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="dpaudit-demo-bench-") as tmp:
        cmd = [sys.executable, "-m", "dpaudit", "run", args.config, "--name", "demo"]
        cmd += ["--runs-dir", tmp]
        started = time.perf_counter()
        cpu_before = os.times()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        cpu_after = os.times()
        if done.returncode != 0:
            sys.exit(f"the demo job failed ({done.returncode}):\n{done.stderr[-2000:]}")
        manifest = json.loads((Path(tmp) / "demo" / "manifest.json").read_text())
    user = cpu_after.children_user - cpu_before.children_user
    section = (
        f"\n## {date.today().isoformat()} — `make demo` stage times (`benchmarks/demo_stages.py`)\n\n"
        f"`dpaudit run {Path(args.config).relative_to(ROOT) if Path(args.config).is_relative_to(ROOT) else args.config}` "
        f"from a fresh run directory: {wall:.0f} s wall ({wall / 60:.1f} min), {user / 60:.1f} min user "
        f"CPU; load average {load_before} before, {_load()} after; device "
        f"{manifest.get('device')}. Seconds per stage from the run's manifest.\n\n"
        + stage_table(manifest["stages"], wall)
        + "\n"
    )
    record(section, write=not args.no_write)


if __name__ == "__main__":
    main()
