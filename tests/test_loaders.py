"""Loaders: each format, each malformed case, one-line errors with file and line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dpaudit.datasets.loaders import Fields, load_records, write_records
from dpaudit.datasets.records import PiiSpan, Record
from dpaudit.errors import InputError

ROWS = [
    {"id": "a", "text": "hello there", "label": 1},
    {"id": "b", "text": "second record", "label": 0},
    {"id": "c", "text": "third, with comma", "label": 1},
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_csv_parquet_text_agree(tmp_path):
    jsonl = _write_jsonl(tmp_path / "d.jsonl", ROWS)
    csv = tmp_path / "d.csv"
    pd.DataFrame(ROWS).to_csv(csv, index=False)
    parquet = tmp_path / "d.parquet"
    pd.DataFrame(ROWS).to_parquet(parquet)
    fields = Fields(text="text", label="label", id="id")
    expected = [(r["id"], r["text"], r["label"]) for r in ROWS]
    for path in (jsonl, csv, parquet):
        got = [(r.id, r.text, r.label) for r in load_records(path, fields=fields)]
        assert got == expected, path.suffix
    txt = tmp_path / "d.txt"
    txt.write_text("one\n\ntwo\n", encoding="utf-8")
    assert [r.text for r in load_records(txt)] == ["one", "two"]
    assert [r.id for r in load_records(txt)] == ["line-0000001", "line-0000003"]


def test_hf_dataset_directory(tmp_path):
    hf = pytest.importorskip("datasets")
    hf.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))
    records = load_records(tmp_path / "hf", fields=Fields(id="id", label="label"))
    assert [r.id for r in records] == ["a", "b", "c"]


def test_custom_fields_and_user(tmp_path):
    rows = [{"body": "x y", "uid": "u1", "key": 7}, {"body": "z", "uid": "u2", "key": 8}]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    records = load_records(path, fields=Fields(text="body", id="key", user="uid"))
    assert [(r.id, r.text, r.meta["user"]) for r in records] == [
        ("7", "x y", "u1"),
        ("8", "z", "u2"),
    ]


def test_round_trip_keeps_pii_spans(tmp_path):
    text = "call Ann at 555-1234"
    rec = Record(
        "r1",
        text,
        label=0,
        pii=(PiiSpan(5, 8, "PERSON", "Ann"), PiiSpan(12, 20, "PHONE", "555-1234")),
        meta={"domain": "x"},
    )
    path = write_records(tmp_path / "out.jsonl", [rec])
    (back,) = load_records(path)
    assert back == rec and back.meta == rec.meta


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', r"bad.jsonl:2: malformed JSON"),
        (
            "missing.jsonl",
            '{"text": "ok"}\n{"body": "x"}\n',
            r"missing.jsonl:2: missing text field 'text'",
        ),
        ("notobj.jsonl", '{"text": "ok"}\n[1, 2]\n', r"notobj.jsonl:2: expected a JSON object"),
        ("empty.jsonl", "", r"empty.jsonl: empty file"),
        ("blank.jsonl", "\n\n", r"blank.jsonl: no records found"),
        ("dup.jsonl", '{"id": "1", "text": "a"}\n{"id": "1", "text": "b"}\n', r"duplicate id '1'"),
        ("reserved.jsonl", '{"id": "canary-1", "text": "a"}\n', r"reserved 'canary-' prefix"),
        (
            "badlabel.jsonl",
            '{"text": "a", "label": "cat"}\n',
            r"badlabel.jsonl:1: label 'cat' is not an integer",
        ),
        (
            "badspan.jsonl",
            '{"text": "abc", "pii": [{"start": 0, "end": 2, "kind": "X", "value": "zz"}]}\n',
            r"badspan.jsonl:1: PII span 0:2 does not match",
        ),
        ("nocol.csv", "body,label\nx,1\n", r"nocol.csv:1: missing text column 'text'"),
        ("ragged.csv", "text,label\nx,1\ny,1,extra\n", r"ragged.csv:3: row has more fields"),
        ("data.xyz", "text\n", r"cannot infer the format"),
    ],
)
def test_malformed_files_fail_with_file_and_line(tmp_path, name, content, pattern):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=pattern):
        load_records(path)


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin.jsonl:2: not valid UTF-8"):
        load_records(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_records(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="cannot read Parquet"):
        load_records(bad)
    with pytest.raises(InputError, match="is a directory"):
        load_records(tmp_path, format="jsonl")


# ----------------------------------------------------------------------------- TSV, delimiters, label names


def test_tsv_is_inferred_and_split_on_tabs(tmp_path):
    from dpaudit.datasets.loaders import load_records

    path = tmp_path / "reviews.tsv"
    path.write_text("text\tlabel\ngood, really good\t1\nbad, awful\t0\n", encoding="utf-8")
    records = load_records(path)
    assert [r.text for r in records] == ["good, really good", "bad, awful"]
    assert [r.label for r in records] == [1, 0]


def test_delimiter_option_reads_semicolons(tmp_path):
    from dpaudit.datasets.loaders import Fields, load_records

    path = tmp_path / "data.csv"
    path.write_text("text;label\na, b;1\nc;0\n", encoding="utf-8")
    records = load_records(path, fields=Fields(label="label", delimiter=";"))
    assert [(r.text, r.label) for r in records] == [("a, b", 1), ("c", 0)]


def test_string_labels_need_a_map_and_use_it(tmp_path):
    from dpaudit.datasets.loaders import Fields, load_records
    from dpaudit.errors import InputError

    path = tmp_path / "data.csv"
    path.write_text("text,label\nnice,positive\nmeh,negative\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"data.csv:2: .*label_map"):
        load_records(path, fields=Fields(label="label"))
    mapping = (("negative", 0), ("positive", 1))
    records = load_records(path, fields=Fields(label="label", label_map=mapping))
    assert [r.label for r in records] == [1, 0]
    path.write_text("text,label\nnice,positive\nmeh,neutral\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"'neutral'.*not in data.label_map"):
        load_records(path, fields=Fields(label="label", label_map=mapping))


def test_unterminated_quote_is_an_error_not_a_swallowed_row(tmp_path):
    from dpaudit.datasets.loaders import load_records
    from dpaudit.errors import InputError

    path = tmp_path / "data.csv"
    path.write_text('text\n"first row\nsecond row\n', encoding="utf-8")
    with pytest.raises(InputError, match="malformed CSV"):
        load_records(path)


def test_datasets_check_reads_tsv_with_a_label_map(tmp_path):
    from click.testing import CliRunner

    from dpaudit.cli import cli

    path = tmp_path / "reviews.tsv"
    path.write_text("text\tlabel\ngood\tpositive\nbad\tnegative\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "datasets",
            "check",
            str(path),
            "--label-field",
            "label",
            "--label-map",
            "positive=1,negative=0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(cli, ["datasets", "check", str(path), "--label-map", "positive"])
    assert bad.exit_code == 2 and "--label-map" in bad.output


def test_a_large_input_is_read_under_a_bar(tmp_path, capsys, monkeypatch):
    from dpaudit.datasets import loaders

    monkeypatch.setattr(loaders, "BAR_FROM_RECORDS", 50)
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(60)]
    path = _write_jsonl(tmp_path / "big.jsonl", rows)
    load_records(path, progress=False)
    assert "reading big.jsonl" not in capsys.readouterr().err
    small = _write_jsonl(tmp_path / "small.jsonl", rows[:40])
    load_records(small, progress=True)
    assert "reading" not in capsys.readouterr().err  # under the threshold: no bar
    csv = tmp_path / "big.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    for big in (tmp_path / "other.jsonl", csv):
        if big.suffix == ".jsonl":
            _write_jsonl(big, rows)
        assert len(load_records(big, progress=True)) == 60
        err = capsys.readouterr().err
        total = 61 if big.suffix == ".csv" else 60  # csv counts physical lines, header too
        assert f"reading {big.name}" in err and f"/{total} " in err


def test_an_unchanged_file_is_parsed_once(tmp_path, monkeypatch):
    # config check and the data stage of one command both load data.path: one parse.
    import os

    from dpaudit.datasets import loaders

    path = _write_jsonl(tmp_path / "d.jsonl", ROWS)
    calls = []
    original = loaders._load_jsonl
    monkeypatch.setattr(loaders, "_load_jsonl", lambda *a: calls.append(a[0]) or original(*a))
    monkeypatch.setattr(loaders, "_cache", type(loaders._cache)())
    first = load_records(path)
    second = load_records(path)
    assert first == second and first is not second and len(calls) == 1
    load_records(path, fields=Fields(text="text", id="id"))  # other fields: parsed again
    assert len(calls) == 2
    _write_jsonl(path, ROWS[:2])  # changed file (size): parsed again
    os.utime(path, ns=(1, 1))
    assert [r.id for r in load_records(path)] == ["a", "b"] and len(calls) == 3
