"""Tokenizers: a small byte-level BPE trained offline, or any Hugging Face tokenizer.

The embedded default model has no pretrained vocabulary, so dpaudit trains a
byte-level BPE tokenizer (``tokenizers``) on the training text and wraps it
as a ``PreTrainedTokenizerFast``. Byte-level BPE can encode any string, so
canary secrets and PII never fall out of the vocabulary. Nothing is
downloaded: a hub id is only used when the user names one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

BOS = "<|bos|>"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"


def train_bpe_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 2000, min_frequency: int = 2
) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and return a fast HF tokenizer.

    Deterministic for the same texts and settings. The tokenizer adds no
    special tokens when encoding (like GPT-2); ``eos_token`` is used as the
    end-of-text marker and ``pad_token`` for padding only.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD, BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(name_or_path: str | Path) -> Any:
    """Load a tokenizer from a local directory or hub id, never running remote code.

    A tokenizer without a pad token gets its eos token as pad token.
    """
    from transformers import AutoTokenizer

    from dpaudit.locate import resolve_spec

    tok = AutoTokenizer.from_pretrained(resolve_spec(str(name_or_path)), trust_remote_code=False)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
