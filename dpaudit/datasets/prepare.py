"""The data stage of a run: load or synthesize records, split, plant canaries.

Writes into ``<run>/data/``:

- ``corpus.jsonl``   the synthesized corpus (only when no input file is given);
- ``splits.json``    member / non-member / population ids (a classifier's three
  parts stratified by label, :func:`~dpaudit.datasets.splits.split_records`);
- ``canaries.jsonl`` every canary (Secret-Sharer and one-run), without inclusion bits;
- ``inclusion.json`` the inclusion bits — the auditor's secret;
- ``train_ids.json`` ids of the exact training list (members + canary copies);
- ``tokenizer/``     the BPE tokenizer trained on the corpus text, when
  ``data.tokenizer = "train"``, or the Hugging Face tokenizer extended with the
  audit design's reserved tokens (``data.canary_design = "new-token"``).

Loading the result back (:func:`load_prepared`) needs only the run directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import read_json, write_json
from dpaudit.config import RunConfig
from dpaudit.datasets.canaries import (
    insert_canaries,
    make_canaries,
    read_canaries,
    write_canaries,
    write_inclusion,
)
from dpaudit.datasets.loaders import Fields, load_records, write_records
from dpaudit.datasets.records import ONE_RUN, SECRET_SHARER, Canary, Record
from dpaudit.datasets.splits import Split, split_records
from dpaudit.datasets.synth import synthesize
from dpaudit.rundir import RunDir, sha256_file, sha256_text

STAGE = "data"
ONE_RUN_PREFIX_SUFFIX = " (audit) "


@dataclass
class PreparedData:
    """Everything later stages need from the data stage."""

    records: list[Record]
    split: Split
    canaries: list[Canary]
    train: list[Record]
    data_dir: Path

    def part(self, name: str) -> list[Record]:
        """Records of one split part: members, nonmembers or population."""
        return self.split.select(self.records, name)

    @property
    def secret_sharer(self) -> list[Canary]:
        return [c for c in self.canaries if c.role == SECRET_SHARER]

    @property
    def one_run(self) -> list[Canary]:
        return [c for c in self.canaries if c.role == ONE_RUN]


def _rename(canaries: list[Canary], tag: str) -> list[Canary]:
    return [
        dataclasses.replace(c, id=c.id.replace("canary-", f"canary-{tag}-", 1)) for c in canaries
    ]


def canary_label(canary_id: str, *, seed: int, num_labels: int) -> int:
    """The label of a canary for a classifier: uniform, a function of (id, seed) only.

    Canary texts are random secrets with no true class, so whatever label they
    carry is a mislabelled example in the sense of the classifier audits of
    Jagielski et al. (2020) and Nasr et al. (2021): it is only learned by
    memorising that example.
    """
    import zlib

    return int(
        np.random.default_rng([seed, zlib.crc32(canary_id.encode("utf-8"))]).integers(num_labels)
    )


def _train_list(records: list[Record], canaries: list[Canary], config: RunConfig) -> list[Record]:
    """Members plus canary copies; a classifier's canary copies get their (mislabelled) labels.

    With ``data.canary_loss = "secret"`` a language model's loss on an audit
    canary counts only its secret's tokens (the copies carry ``loss_from_char``).
    """
    secret_only = config.data.canary_loss == "secret" and config.train.task == "causal_lm"
    train = insert_canaries(records, canaries, seed=config.seed + 303, secret_loss_only=secret_only)
    if config.train.task != "classification":
        return train
    return [
        dataclasses.replace(
            r,
            label=canary_label(
                r.meta["canary_id"], seed=config.seed, num_labels=config.train.num_labels
            ),
        )
        if "canary_id" in r.meta
        else r
        for r in train
    ]


def build_canaries(
    config: RunConfig, *, tokenizer: Any = None, corpus: Sequence[str] = ()
) -> list[Canary]:
    """Secret-Sharer canaries (ids ``canary-ss-*``) and one-run audit canaries (``canary-or-*``).

    The audit canaries follow ``data.canary_design``
    (:data:`~dpaudit.datasets.canary_designs.CANARY_DESIGNS`); ``tokenizer`` (with
    any reserved tokens added) and ``corpus`` (the members' texts) serve the designs
    that need them. The id tags keep the two sets apart in files; code reads
    ``Canary.role``. An audit canary whose secret equals a Secret-Sharer secret is
    dropped (exposure would count it twice); which ones is decided by the secrets,
    never by the coins.
    """
    from dpaudit.datasets.canary_designs import make_design_canaries

    d = config.data
    canaries: list[Canary] = []
    if d.canaries_per_repetition and d.canary_repetitions:
        canaries += _rename(
            make_canaries(
                prefix=d.canary_prefix,
                secret_space=d.secret_space,
                repetitions=d.canary_repetitions,
                per_repetition=d.canaries_per_repetition,
                seed=config.seed + 101,
            ),
            "ss",
        )
    if d.one_run_canaries:
        audit = make_design_canaries(
            d.canary_design,
            m=d.one_run_canaries,
            seed=config.seed + 202,
            tokenizer=tokenizer,
            corpus=corpus,
            prefix=d.canary_prefix.rstrip() + ONE_RUN_PREFIX_SUFFIX,
            prefix_tokens=d.canary_prefix_tokens,
            secret_space=d.secret_space,
            max_length=d.max_length,
        )
        exposed = {c.secret for c in canaries}
        canaries += _rename([c for c in audit if c.secret not in exposed], "or")
    return canaries


def reserves_tokens(config: RunConfig) -> bool:
    """Whether the run's audit canaries add reserved tokens to the tokenizer."""
    from dpaudit.datasets.canary_designs import CANARY_DESIGNS

    d = config.data
    return bool(d.one_run_canaries) and CANARY_DESIGNS.get(d.canary_design).reserves_tokens


def design_tokenizer(config: RunConfig, records: Sequence[Record]) -> Any:
    """The run's tokenizer with the audit design's reserved tokens, or ``None`` when the
    design needs no tokenizer and none is trained.

    ``data.tokenizer = "train"``: a BPE tokenizer trained on every record's text
    (never on canaries), then the reserved tokens. A Hugging Face tokenizer: loaded,
    then the reserved tokens, only when the design needs it.

    Raises:
        DpauditError: the corpus contains a reserved token's string.
    """
    from dpaudit.datasets.canary_designs import (
        CANARY_DESIGNS,
        add_reserved_tokens,
        check_corpus_free_of_canary_tokens,
    )

    d = config.data
    design = CANARY_DESIGNS.get(d.canary_design)
    reserve = reserves_tokens(config)
    needed = bool(d.one_run_canaries) and design.needs_tokenizer(d.canary_prefix_tokens)
    if d.tokenizer == "train":
        from dpaudit.datasets.tokenizer import train_bpe_tokenizer

        tok = train_bpe_tokenizer([r.text for r in records], vocab_size=d.vocab_size)
    elif needed:
        from dpaudit.datasets.tokenizer import load_tokenizer

        tok = load_tokenizer(d.tokenizer)
    else:
        return None
    if reserve:
        check_corpus_free_of_canary_tokens([r.text for r in records])
        add_reserved_tokens(tok, d.one_run_canaries)
    return tok


def prepare_data(config: RunConfig, run: RunDir, *, resume: bool = False) -> PreparedData:
    """Run the data stage (skipped on ``resume`` when its inputs are unchanged)."""
    d = config.data
    data_dir = run.subdir("data")
    inputs: dict[str, Any] = {"config": sha256_text(repr((dataclasses.asdict(d), config.seed)))}
    by_user = config.split_by_user
    if by_user:  # members and non-members are whole users (clients)
        inputs["split_by"] = "user"
    if d.path:
        from dpaudit.datasets.packaged import is_packaged_data, resolve_data_file

        # A packaged dataset is hashed as the file inside the installed package.
        dataset = resolve_data_file(d.path) if is_packaged_data(d.path) else d.path
        inputs["dataset"] = run.record_inputs({"dataset": dataset})["dataset"]
    if resume and run.can_skip(STAGE, inputs):
        return load_prepared(run.path)
    with run.stage(STAGE, inputs, seed=config.seed) as record:
        if d.path:
            records = load_records(d.path, format=d.format, fields=Fields.of(config.data))
        else:
            records = synthesize(
                d.synth_domain, d.synth_n, config.seed, num_labels=config.train.num_labels
            )
            write_records(data_dir / "corpus.jsonl", records)
        split = split_records(
            records,
            member_fraction=d.member_fraction,
            nonmember_fraction=d.nonmember_fraction,
            seed=config.seed,
            stratify=config.train.task == "classification",
            group_field="user" if by_user else None,
        )
        members = split.select(records, "members")
        tok = design_tokenizer(config, records)
        canaries = build_canaries(config, tokenizer=tok, corpus=[r.text for r in members])
        train = _train_list(members, canaries, config)
        split.save(data_dir / "splits.json")
        write_canaries(data_dir / "canaries.jsonl", canaries)
        write_inclusion(data_dir / "inclusion.json", canaries)
        write_json(data_dir / "train_ids.json", {"ids": [r.id for r in train]})
        if tok is not None and (d.tokenizer == "train" or reserves_tokens(config)):
            # A trained tokenizer, or a Hugging Face one extended with reserved canary tokens.
            tok.save_pretrained(str(data_dir / "tokenizer"))
        record.outputs.update({p.name: sha256_file(p) for p in sorted(data_dir.glob("*.json*"))})
    return PreparedData(
        records=records, split=split, canaries=canaries, train=train, data_dir=data_dir
    )


def load_prepared(run_path: str | Path) -> PreparedData:
    """Rebuild :class:`PreparedData` from a run directory alone."""
    run = RunDir(run_path)
    manifest = run.manifest()
    data_dir = run.path / "data"
    from dpaudit.config import config_from_dict

    # The run's location plays no part (and a name recorded by an older dpaudit may not pass
    # today's run-name check).
    settings = {k: v for k, v in manifest["config"].items() if k not in ("name", "runs_dir")}
    config = config_from_dict(settings)
    d = config.data
    if d.path:
        records = load_records(d.path, format=d.format, fields=Fields.of(d))
    else:
        records = load_records(data_dir / "corpus.jsonl", format="jsonl")
    split = Split.load(data_dir / "splits.json")
    canaries = read_canaries(data_dir / "canaries.jsonl", data_dir / "inclusion.json")
    train = _train_list(split.select(records, "members"), canaries, config)
    expected = read_json(data_dir / "train_ids.json")["ids"]
    if [r.id for r in train] != expected:
        from dpaudit.errors import DpauditError

        raise DpauditError(
            f"{data_dir}: training list does not match train_ids.json (data changed since the run)"
        )
    return PreparedData(
        records=records, split=split, canaries=canaries, train=train, data_dir=data_dir
    )
