"""Benchmark: reference models on Ray, 2 workers against 1 (not a test).

Trains the same K DP reference models (embedded-size GPT-2, synthetic records) with
``train.references_backend = "ray"`` on a local Ray instance limited first to one CPU
(one task at a time) and then to two (two tasks at once), each reference task
reserving one CPU and one torch thread. The speed-up is wall(1 worker) ÷ wall(2
workers), measured in one run; the models are identical (same seeds), which the
script checks.

Run from the repository root::

    .venv/bin/python benchmarks/references_ray.py            # appends to benchmarks/RESULTS.md
    .venv/bin/python benchmarks/references_ray.py --k 2 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dp_overhead import _load, record  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import ray
    from safetensors.torch import load_file

    from dpaudit.config import TrainConfig
    from dpaudit.datasets.synth import synthesize
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer
    from dpaudit.trainers import train_references

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4, help="reference models")
    ap.add_argument("--n", type=int, default=400, help="pool records")
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    records = synthesize("clinical", args.n, 0)
    tokenizer = train_bpe_tokenizer([r.text for r in records], vocab_size=1000)
    config = TrainConfig(
        dp=True, noise_multiplier=1.0, batch_size=32, physical_batch_size=32, epochs=1.0,
        references_backend="ray", reference_cpus=1.0,
    )  # fmt: skip
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            t = time.perf_counter()
            train_references(
                records, k=args.k, config=config, tokenizer=tokenizer,
                out_dir=Path(tmp) / f"w{workers}", seed=3, max_length=48, progress=False,
            )  # fmt: skip
            walls[workers] = time.perf_counter() - t
            ray.shutdown()
            print(f"{workers} worker(s): {walls[workers]:.1f} s", flush=True)
        a = load_file(str(Path(tmp) / "w1" / "ref-0" / "model.safetensors"))
        b = load_file(str(Path(tmp) / "w2" / "ref-0" / "model.safetensors"))
        same = all((a[key] == b[key]).all() for key in a)
    speedup = walls[1] / walls[2]
    section = (
        f"\n## {date.today().isoformat()} — reference models on Ray, 2 workers vs 1\n\n"
        f"{args.k} DP references (σ = 1, embedded GPT-2 shape, {args.n} synthetic records, 1 epoch), "
        f"`train.references_backend = ray`, one CPU per task, local Ray with 1 then 2 CPUs; load "
        f"average {_load()} when done; identical models: {'yes' if same else 'NO'}.\n\n"
        "| workers | wall s | speed-up |\n|---|---|---|\n"
        f"| 1 | {walls[1]:.1f} | 1.00 |\n| 2 | {walls[2]:.1f} | {speedup:.2f} |\n"
    )
    record(section, write=not args.no_write)


if __name__ == "__main__":
    main()
