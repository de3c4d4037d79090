"""Data in: records, loaders, splits, synthetic PII corpora, canaries, tokenizers."""

from dpaudit._lazy import lazy_exports

_EXPORTS = {
    "Record": "records",
    "PiiSpan": "records",
    "Canary": "records",
    "PII_KINDS": "records",
    "Fields": "loaders",
    "load_records": "loaders",
    "write_records": "loaders",
    "Split": "splits",
    "split_records": "splits",
    "synthesize": "synth",
    "write_jsonl": "synth",
    "make_canaries": "canaries",
    "make_one_run_canaries": "canaries",
    "insert_canaries": "canaries",
    "read_canaries": "canaries",
    "write_canaries": "canaries",
    "write_inclusion": "canaries",
    "space_size": "canaries",
    "enumerate_secrets": "canaries",
    "summarize": "summary",
    "DatasetSummary": "summary",
    "train_bpe_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "prepare_data": "prepare",
    "load_prepared": "prepare",
    "PreparedData": "prepare",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
