"""A tiny user-labelled corpus and tokenizer for the federated tests (10 users, 100 records)."""

from __future__ import annotations

import random

NAMES = "ana bo cy di ed fay gus hal".split()
DAYS = "monday tuesday wednesday thursday friday".split()


def fl_corpus():
    """(80 training records, 20 held-out records, a 300-token BPE tokenizer); user = i mod 10."""
    from dpaudit.datasets.records import Record
    from dpaudit.datasets.tokenizer import train_bpe_tokenizer

    rng = random.Random(0)
    recs = [
        Record(
            f"r{i:03d}",
            f"patient {rng.randint(10, 99)} {'visited' if i % 2 else 'called'} dr "
            f"{rng.choice(NAMES)} on {rng.choice(DAYS)}",
            meta={"user": f"u{i % 10:02d}"},
        )
        for i in range(100)
    ]
    return recs[:80], recs[80:], train_bpe_tokenizer([r.text for r in recs], vocab_size=300)
