"""Launched by tests/test_distributed.py under torchrun: ``train_model`` on every rank.

Usage: ``torchrun --standalone --nproc-per-node W tests/_torchrun_train.py OUT_DIR [--stop-at K] [--resume]``.
With ``--stop-at K`` every rank raises StopTraining after step K (rank 0 writes a checkpoint).
"""

from __future__ import annotations

import argparse
import random
import sys

from dpaudit.config import TrainConfig
from dpaudit.datasets.records import Record

CONFIG = TrainConfig(
    batch_size=16,
    physical_batch_size=4,
    epochs=1.0,
    learning_rate=1e-2,
    noise_multiplier=1.0,
    max_grad_norm=1.0,
    checkpoint_every=2,
)
NAMES = "smith jones brown lee garcia miller davis wilson".split()


def records(n: int = 64) -> list[Record]:
    """Deterministic short texts (the same in every process)."""
    rng = random.Random(7)
    return [
        Record(
            f"r{i:03d}", f"patient {rng.randint(10, 99)} saw dr {rng.choice(NAMES)} on day {i % 7}"
        )
        for i in range(n)
    ]


def tokenizer():
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer([r.text for r in records()], vocab_size=200)


def train(out_dir: str, *, ranks=None, stop_at: int = 0, resume: bool = False):
    from dpaudit.trainers import StopTraining, TrainHooks, train_model
    from dpaudit.trainers.distributed import SINGLE

    class Stop(TrainHooks):
        def on_step_end(self, *, step, loss, model):
            if step == stop_at:
                raise StopTraining

    return train_model(
        records(),
        config=CONFIG,
        tokenizer=tokenizer(),
        out_dir=out_dir,
        seed=5,
        max_length=24,
        progress=False,
        resume=resume,
        hooks=Stop() if stop_at else None,
        ranks=ranks or SINGLE,
    )


def main(argv: list[str]) -> None:
    from dpaudit.trainers.distributed import process_group

    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--stop-at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    with process_group("cpu") as ranks:
        result = train(args.out_dir, ranks=ranks, stop_at=args.stop_at, resume=args.resume)
        print(
            f"rank {ranks.rank}/{ranks.world_size}: steps {result.steps} completed {result.completed}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
