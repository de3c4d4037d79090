"""Benchmark: every black-box MIA score from one forward pass, ÷ a bare forward pass (not a test).

The attacks LOSS, zlib, min-k% and min-k%++ (and the reference attack's target half)
read one :class:`~dpaudit.attacks.scoring.TokenStats` per text: the token
log-probabilities and, for min-k%++ (Zhang et al. 2025), the mean and spread of
log p under p at every position. This times, on the same texts, batches and
process:

* **bare** — the model's forward pass alone (logits, no statistics), batched as
  the scorer batches;
* **scored** — :meth:`HFScoringModel.token_stats` (the same forward plus the
  per-token statistics) and then the four scores computed from the cached stats.

The ratio scored ÷ bare is the overhead of scoring (issue 16 target: ≤ 1.2×).
The lowercase attack needs its own forward pass over the lowercased texts and the
reference attack one per reference model: each costs one more bare pass by
definition and is not part of the ratio. Configurations run round-robin; the median
of the rounds is reported.

Run from the repository root::

    .venv/bin/python benchmarks/scoring_overhead.py            # appends to benchmarks/RESULTS.md
    .venv/bin/python benchmarks/scoring_overhead.py --no-small --rounds 3 --no-write
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

from dp_overhead import _load, device_name, record  # noqa: E402


def _texts(n: int, words: int, seed: int) -> list[str]:
    from dpaudit.datasets.synth import synthesize

    records = synthesize("clinical", n, seed)
    return [" ".join((r.text + " " + r.text).split()[:words]) for r in records]


def _model(shape: str, tokenizer, device):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    extra = {"n_embd": 128, "n_layer": 2, "n_head": 4} if shape == "gpt2-tiny" else {}
    cfg = GPT2Config(vocab_size=len(tokenizer), tie_word_embeddings=False, **extra)
    return GPT2LMHeadModel(cfg).to(device).eval()


def _bare(scorer, texts) -> None:
    import torch

    from dpaudit.attacks.scoring import TOKENS_PER_TEXT, _length_batches

    encoded = scorer._encode(texts)
    with torch.inference_mode():
        for batch in _length_batches(
            [len(e) for e in encoded], scorer.batch_size, scorer.batch_size * TOKENS_PER_TEXT
        ):
            ids, mask = scorer._pad([encoded[i] for i in batch], pad_id=scorer._pad_id)
            scorer.model(input_ids=ids, attention_mask=mask).logits.sum().item()


def _scored(scorer, texts) -> None:
    import numpy as np

    from dpaudit.attacks.mia import lowest_k_mean, mean_logprob, minkpp_z, zlib_bytes

    scorer.clear_cache()
    stats = scorer.token_stats(texts)
    for text, s in zip(texts, stats, strict=True):
        loss = mean_logprob(s.logprobs)
        _ = loss / zlib_bytes(text)  # zlib
        _ = lowest_k_mean(s.logprobs, 0.2)  # min-k%
        _ = lowest_k_mean(minkpp_z(s), 0.2)  # min-k%++
    np.asarray(0)


def measure(shape: str, texts, tokenizer, device, *, rounds: int, batch: int) -> dict:
    from dpaudit.attacks.scoring import HFScoringModel

    scorer = HFScoringModel(
        _model(shape, tokenizer, device), tokenizer, device=str(device), batch_size=batch,
        max_length=128, progress=False,
    )  # fmt: skip
    _bare(scorer, texts[:batch])  # warm-up
    _scored(scorer, texts[:batch])
    bare, scored = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        _bare(scorer, texts)
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        _scored(scorer, texts)
        scored.append(time.perf_counter() - t)
    b, s = statistics.median(bare), statistics.median(scored)
    tokens = sum(len(e) for e in scorer._encode(texts))
    return {"shape": shape, "texts": len(texts), "tokens": tokens, "bare": b, "scored": s}


def main(argv: list[str] | None = None) -> None:
    import torch

    from dpaudit.datasets.tokenizer import train_bpe_tokenizer
    from dpaudit.trainers.models import resolve_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--rounds", type=int, default=5, help="timed rounds per model (after a warm-up)"
    )
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--words", type=int, default=48, help="words per text (about 64 tokens)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-small", action="store_true", help="skip the GPT-2-small-shaped model")
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    texts = _texts(args.texts, args.words, seed=0)
    started = time.perf_counter()
    rows = []
    for shape, vocab in [("gpt2-tiny", 2000)] + ([] if args.no_small else [("gpt2-small", 50257)]):
        tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab if vocab < 50257 else 8000)
        if vocab == 50257:  # the real vocabulary width (embedding and softmax cost)
            tokenizer.add_tokens([f"<extra_{i}>" for i in range(50257 - len(tokenizer))])
        row = measure(shape, texts, tokenizer, device, rounds=args.rounds, batch=args.batch)
        row["vocab"] = len(tokenizer)
        rows.append(row)
        print(
            f"{shape:10s} bare {row['bare']:.3f} s  scored {row['scored']:.3f} s  "
            f"ratio {row['scored'] / row['bare']:.2f}",
            flush=True,
        )
    head = "| model | vocabulary | texts (tokens) | bare forward s | scored s | scored ÷ bare | target ≤ 1.2× |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        ratio = r["scored"] / r["bare"]
        lines.append(
            f"| {r['shape']} | {r['vocab']:,} | {r['texts']} ({r['tokens']:,}) | {r['bare']:.3f} "
            f"| {r['scored']:.3f} | {ratio:.2f} | {'met' if ratio <= 1.2 else 'missed'} |"
        )
    section = (
        f"\n## {date.today().isoformat()} — scoring overhead, {device_name(device)}\n\n"
        f"torch {torch.__version__}, fp32, batch {args.batch}, median of {args.rounds} rounds after a "
        f"warm-up, bare and scored interleaved; {time.perf_counter() - started:.0f} s in all; load "
        f"average {_load()} when done. Scored = `HFScoringModel.token_stats` (forward + log p, μ, σ "
        "per token) + LOSS, zlib, min-k%, min-k%++ from the stats; bare = the same batches' forward "
        "alone. Lowercase and reference need their own forward passes (one bare pass each).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    record(section, write=not args.no_write)


if __name__ == "__main__":
    main()
