"""Load a released model someone else trained, without running its code.

(Resuming an interrupted training run is :mod:`dpaudit.trainers.resume`.)

What an auditor is handed is a model directory (or hub id), maybe with a PEFT
adapter directory on top. Loading it must not execute anything it contains:

* ``trust_remote_code=False`` always, so no Python file of the checkpoint runs;
* weights come from ``*.safetensors`` (plain tensors, no code). A checkpoint
  holding only pickle files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``)
  is refused, because unpickling can run arbitrary code, unless
  ``allow_pickle=True``; even then each file is read with
  ``torch.load(weights_only=True)`` (tensors and plain containers only) and the
  state dict is loaded into a model built from ``config.json`` — never through
  ``from_pretrained`` on the pickle;
* a PEFT adapter is read the same way (``adapter_model.safetensors``, or its
  pickle only with ``allow_pickle``), applied to the base with PEFT and merged;
* the tokenizer must exist and fit the model: a tokenizer with more tokens than
  the model has embedding rows would index past the table (a wrong tokenizer).

Every refusal is a one-line :class:`~dpaudit.errors.DpauditError`.
:func:`load_model` also returns the SHA-256 of every file it read, for
``target/source.json`` and the manifest.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpaudit.errors import DpauditError
from dpaudit.trainers.models import PICKLE_SUFFIXES

SAFETENSORS_SUFFIX = ".safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)
# Pickles a Trainer writes beside the weights; they are not weights and are never loaded.
_TRAINER_STATE = ("training_args", "optimizer", "scheduler", "rng_state", "scaler", "trainer_state")
_HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken")
_PICKLE_HINT = (
    "pass --allow-pickle (allow_pickle=True) to read them with torch.load(weights_only=True)"
)


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and where both came from.

    Attributes:
        model: the ``torch.nn.Module`` in eval mode (an adapter already merged).
        tokenizer: its tokenizer (pad token set to eos when it had none).
        source: what ``target/source.json`` records: the model and adapter as
            given and as resolved, the format read, the SHA-256 of every
            weight file and of the other files, tokenizer and embedding sizes.
        files: label (``model/<name>``, ``adapter/<name>``) -> path of every
            weight file, for the manifest's input hashes.
    """

    model: Any
    tokenizer: Any
    source: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def input_hashes(self) -> dict[str, dict[str, str]]:
        """``{label: {"path", "sha256"}}`` of the weight files, as the manifest records inputs."""
        hashes = {f"model/{k}": v for k, v in self.source["weights"].items()}
        hashes.update(
            {f"adapter/{k}": v for k, v in (self.source.get("adapter_weights") or {}).items()}
        )
        return {
            label: {"path": str(self.files[label]), "sha256": hashes[label]} for label in self.files
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_safetensors(paths: list[Path]) -> None:
    """Refuse a truncated, empty, garbage or lying safetensors file (a header
    length past the end, tensor offsets outside the file) before transformers reads it.

    Raises:
        DpauditError: one line naming the file.
    """
    from safetensors import safe_open

    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise DpauditError(
                f"{path}: not a valid safetensors file ({_first_line(exc)})"
            ) from None


def _is_weight(path: Path) -> bool:
    return path.suffix == SAFETENSORS_SUFFIX or path.suffix in PICKLE_SUFFIXES


def hash_files(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """SHA-256 of the top-level files of a model directory: (weight files, other files)."""
    from dpaudit.rundir import sha256_file

    weights: dict[str, str] = {}
    others: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            (weights if _is_weight(path) else others)[path.name] = sha256_file(path)
    return weights, others


def looks_local(name_or_path: str | Path) -> bool:
    """Whether a model name that does not exist here is a local path, never a hub id.

    Local: empty; starts with ``/``, ``.`` or ``~``; holds a backslash (or the
    platform's separator) or more than one ``/``; or its parent directory
    exists here (``runs/x/ref-0``, ``references/ref-0`` inside a run). A hub
    id is ``name`` or ``org/name`` with no local ``org/`` directory.
    """
    text = str(name_or_path)
    if not text or text.startswith(("/", ".", "~")) or text.count("/") > 1:
        return True
    if "\\" in text or (os.sep != "/" and os.sep in text):
        return True
    parent = Path(text).parent
    return parent != Path(".") and parent.is_dir()


def missing_directory(name_or_path: str | Path) -> str:
    """The one-line error for a local model directory that does not exist.

    A ``ref-<j>`` directory of a reference set (``membership.npy`` beside it)
    is a reference model not trained yet.
    """
    path = Path(str(name_or_path)).expanduser()
    if path.name.startswith("ref-") and (path.parent / "membership.npy").is_file():
        where = f"{path.parent.name}/{path.name}"
        return (
            f"{where}: not trained (an interrupted train-references?); "
            f"rerun `dpaudit train-references --resume` ({path})"
        )
    return f"{name_or_path}: model directory not found"


def resolve_model_path(
    name_or_path: str | Path, *, allow_pickle: bool = False, local_files_only: bool | None = None
) -> tuple[Path, str | None]:
    """A local directory for ``name_or_path``: the directory itself, or a hub snapshot.

    A string that does not exist locally and does not look like a path
    (:func:`looks_local`: those are refused as missing, never sent to the hub)
    is taken as a hub id (``name`` or ``org/name``) and fetched with
    ``huggingface_hub.snapshot_download``: configs, tokenizer files and
    safetensors only (pickles too only with ``allow_pickle``).

    Returns:
        (directory, revision): the revision is the hub commit, ``None`` locally.
    """
    from dpaudit.locate import resolve_spec

    text = resolve_spec(str(name_or_path))  # package:... -> a directory inside a package
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DpauditError(f"{path}: not a directory (give a model directory or a hub id)")
        return path, None
    if looks_local(text):
        raise DpauditError(missing_directory(text))
    from huggingface_hub import snapshot_download

    patterns = list(_HUB_PATTERNS) + ([f"*{s}" for s in PICKLE_SUFFIXES] if allow_pickle else [])
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").lower() in (
            "1",
            "true",
            "yes",
            "on",
        )
    try:
        local = Path(
            snapshot_download(text, allow_patterns=patterns, local_files_only=local_files_only)
        )
    except (
        Exception
    ) as exc:  # huggingface_hub raises many types (network, auth, not found, offline)
        raise DpauditError(
            f"{text}: no such local directory, and cannot fetch it from the hub: {_first_line(exc)}"
        ) from None
    return local, local.name if local.parent.name == "snapshots" else None


# ----------------------------------------------------------------------------- pickles


def _pickle_weight_files(directory: Path, prefix: str = "pytorch_model") -> list[Path]:
    """The pickle files holding the weights (shards named by an index when there is one)."""
    index = directory / f"{prefix}.bin.index.json"
    if index.is_file():
        try:
            names = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DpauditError(f"{index}: malformed shard index (needs a weight_map)") from None
        missing = [n for n in names if not (directory / n).is_file()]
        if missing:
            raise DpauditError(f"{index}: shard {missing[0]} not found")
        return [directory / n for n in names]
    candidates = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.suffix in PICKLE_SUFFIXES and not p.name.startswith(_TRAINER_STATE)
    )
    preferred = [p for p in candidates if p.name.startswith(prefix)]
    return preferred or candidates


def read_pickle_state(paths: list[Path]) -> dict[str, Any]:
    """Merge the state dicts of ``paths``, each read with ``torch.load(weights_only=True)``.

    A ``{"state_dict": {...}}`` wrapper (Lightning and friends) is unwrapped.

    Raises:
        DpauditError: a file refused by the restricted unpickler, one that is not
            a mapping of tensors, or two files holding the same key.
    """
    import torch

    state: dict[str, Any] = {}
    for path in paths:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (
            Exception
        ) as exc:  # UnpicklingError, RuntimeError, EOFError, ...: all mean "not safe weights"
            # Not torch's message: it suggests re-running with weights_only=False, which would
            # execute whatever the file holds.
            raise DpauditError(
                f"{path}: refused: not a plain tensor checkpoint (torch.load(weights_only=True) "
                f"raised {type(exc).__name__}); dpaudit never unpickles arbitrary objects: "
                "convert the weights to safetensors where the file is trusted"
            ) from None
        if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
            raise DpauditError(
                f"{path}: not a state dict (a mapping of parameter names to tensors)"
            )
        clash = next((k for k in loaded if k in state), None)
        if clash is not None:
            raise DpauditError(f"{path}: parameter {clash!r} also appears in another weight file")
        state.update(loaded)
    if not state:
        raise DpauditError(f"{paths[0].parent if paths else '?'}: the weight files hold no tensors")
    return state


def _auto_class(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task not in ("causal_lm", "classification"):
        raise DpauditError(f"task {task!r} is not one of: causal_lm, classification")
    return AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification


def _model_from_pickles(directory: Path, task: str) -> tuple[Any, list[Path], int]:
    """Build the model from ``config.json`` and load the pickled state dict into it."""
    from transformers import AutoConfig

    paths = _pickle_weight_files(directory)
    state = read_pickle_state(paths)
    try:
        config = AutoConfig.from_pretrained(
            str(directory), trust_remote_code=False, local_files_only=True
        )
        model = _auto_class(task).from_config(config, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DpauditError(
            f"{directory}: cannot build the model from config.json: {_first_line(exc)}"
        ) from None
    expected = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "")
    if (
        prefix
        and not any(k in expected for k in state)
        and any(f"{prefix}.{k}" in expected for k in state)
    ):
        state = {f"{prefix}.{k}": v for k, v in state.items()}  # saved from the bare trunk
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise DpauditError(
            f"{directory}: weights do not fit config.json: {_first_line(exc)}"
        ) from None
    model.tie_weights()
    loaded_ptrs = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    absent = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded_ptrs]
    if absent:
        raise DpauditError(
            f"{directory}: the pickled state dict lacks {len(absent)} parameters of the model "
            f"(e.g. {', '.join(absent[:3])})"
        )
    if unexpected:
        warnings.warn(
            f"{directory}: ignored {len(unexpected)} unexpected keys (e.g. {unexpected[0]})",
            stacklevel=2,
        )
    return model, paths, len(unexpected)


# ----------------------------------------------------------------------------- base, adapter, tokenizer


def _load_base(directory: Path, task: str, allow_pickle: bool) -> tuple[Any, str, list[Path], int]:
    """(model, format, weight files read, unexpected keys ignored) of a model directory."""
    if not (directory / "config.json").is_file():
        if (directory / ADAPTER_CONFIG).is_file():
            raise DpauditError(
                f"{directory}: a PEFT adapter directory; pass it as --adapter and its base as --model"
            )
        ggufs = sorted(directory.glob("*.gguf"))
        if ggufs:
            raise DpauditError(
                f"{directory}: a GGUF model ({ggufs[0].name}), not a Hugging Face directory: "
                "convert it once with transformers (AutoModelForCausalLM.from_pretrained(dir, "
                "gguf_file=...), then save_pretrained to a safetensors directory) and pass that"
            )
        raise DpauditError(f"{directory}: no config.json; not a Hugging Face model directory")
    safetensors = sorted(directory.glob(f"*{SAFETENSORS_SUFFIX}"))
    if safetensors:
        from dpaudit.trainers.models import load_pretrained

        _auto_class(task)
        check_safetensors(safetensors)
        return load_pretrained(directory, task=task), "safetensors", safetensors, 0
    pickles = _pickle_weight_files(directory)
    if not pickles:
        raise DpauditError(f"{directory}: no weights found (*.safetensors)")
    if not allow_pickle:
        raise DpauditError(
            f"{directory}: only pickle weights ({', '.join(p.name for p in pickles)}), which can run code when "
            f"loaded; convert them to safetensors, or {_PICKLE_HINT}"
        )
    model, paths, unexpected = _model_from_pickles(directory, task)
    return model, "pickle (torch.load weights_only=True)", paths, unexpected


def _apply_adapter(
    model: Any, adapter_dir: Path, allow_pickle: bool
) -> tuple[Any, str, list[Path]]:
    """Apply the PEFT adapter in ``adapter_dir`` to ``model`` and merge it into the weights."""
    from peft import (
        PEFT_TYPE_TO_CONFIG_MAPPING,
        PeftModel,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )

    if not adapter_dir.is_dir():
        raise DpauditError(f"{adapter_dir}: adapter directory not found")
    config_path = adapter_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        raise DpauditError(f"{adapter_dir}: no {ADAPTER_CONFIG}; not a PEFT adapter directory")
    if (adapter_dir / ADAPTER_SAFETENSORS).is_file():
        from safetensors.torch import load_file

        paths = [adapter_dir / ADAPTER_SAFETENSORS]
        try:
            state, fmt = load_file(str(paths[0])), "safetensors"
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise DpauditError(f"{paths[0]}: cannot read: {_first_line(exc)}") from None
    else:
        paths = _pickle_weight_files(adapter_dir, prefix="adapter_model")
        if not paths:
            raise DpauditError(f"{adapter_dir}: no adapter weights ({ADAPTER_SAFETENSORS})")
        if not allow_pickle:
            raise DpauditError(
                f"{adapter_dir}: only pickle adapter weights ({', '.join(p.name for p in paths)}), which can run "
                f"code when loaded; convert them to safetensors, or {_PICKLE_HINT}"
            )
        state, fmt = read_pickle_state(paths), "pickle (torch.load weights_only=True)"
    try:
        peft_type = json.loads(config_path.read_text(encoding="utf-8"))["peft_type"]
        peft_config = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type].from_pretrained(str(adapter_dir))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise DpauditError(
            f"{config_path}: not a PEFT adapter config: {_first_line(exc)}"
        ) from None
    peft_config.inference_mode = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel(model, peft_config)
            expected = set(get_peft_model_state_dict(peft_model))
            result = set_peft_model_state_dict(peft_model, state)
    except (ValueError, RuntimeError, KeyError, AttributeError) as exc:
        raise DpauditError(
            f"{adapter_dir}: adapter does not fit the base model: {_first_line(exc)}"
        ) from None
    absent = sorted(expected - set(state))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if absent or unexpected:
        bad = absent or unexpected
        raise DpauditError(
            f"{adapter_dir}: adapter weights do not match its config and base model "
            f"({len(absent)} missing, {len(unexpected)} unexpected; e.g. {bad[0]})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # transformers deprecations raised inside PEFT
        merged = peft_model.merge_and_unload()
    return merged, fmt, paths


def _has_tokenizer(directory: Path | None) -> bool:
    return directory is not None and any((directory / name).is_file() for name in TOKENIZER_FILES)


def load_checked_tokenizer(directory: Path, model: Any) -> Any:
    """The tokenizer in ``directory``, refused when it has more tokens than ``model`` has embedding rows."""
    from dpaudit.datasets.tokenizer import load_tokenizer

    if not _has_tokenizer(directory):
        raise DpauditError(
            f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}); save the tokenizer "
            "with the model (tokenizer.save_pretrained)"
        )
    try:
        tokenizer = load_tokenizer(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DpauditError(f"{directory}: cannot load the tokenizer: {_first_line(exc)}") from None
    embeddings = model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise DpauditError(
            f"{directory}: the tokenizer has {len(tokenizer)} tokens but the model has only {rows} embedding rows; "
            "wrong tokenizer for this checkpoint?"
        )
    return tokenizer


def load_model(
    model: str | Path,
    *,
    adapter: str | Path | None = None,
    task: str = "causal_lm",
    allow_pickle: bool = False,
    tokenizer_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> LoadedModel:
    """Load a base model (local directory or hub id), an optional PEFT adapter, and the tokenizer.

    Args:
        model: model directory or hub id.
        adapter: PEFT adapter directory to apply (and merge) on ``model``.
        task: ``"causal_lm"`` or ``"classification"``.
        allow_pickle: read pickle-only weights with ``torch.load(weights_only=True)``.
        tokenizer_dir: where the tokenizer is; default: the adapter directory
            when it has tokenizer files, else the model directory.
        local_files_only: for hub ids; default: ``HF_HUB_OFFLINE``.

    Raises:
        DpauditError: one line, for a missing path, pickle-only weights without
            ``allow_pickle``, weights refused by the restricted unpickler,
            an adapter that does not fit, or a missing or mismatched tokenizer.
    """
    model_dir, revision = resolve_model_path(
        model, allow_pickle=allow_pickle, local_files_only=local_files_only
    )
    adapter_dir = Path(adapter).expanduser() if adapter is not None else None
    if adapter_dir is not None and not adapter_dir.is_dir():
        raise DpauditError(f"{adapter_dir}: adapter directory not found")
    net, fmt, paths, unexpected = _load_base(model_dir, task, allow_pickle)
    files = {f"model/{p.name}": p for p in paths}
    adapter_fmt = None
    if adapter_dir is not None:
        net, adapter_fmt, adapter_paths = _apply_adapter(net, adapter_dir, allow_pickle)
        files.update({f"adapter/{p.name}": p for p in adapter_paths})
    net.eval()
    if tokenizer_dir is not None:
        tok_dir = Path(tokenizer_dir)
    else:
        tok_dir = (
            adapter_dir if adapter_dir is not None and _has_tokenizer(adapter_dir) else model_dir
        )
    tokenizer = load_checked_tokenizer(tok_dir, net)
    weights, others = hash_files(model_dir)
    source: dict[str, Any] = {
        "model": str(model),
        "model_path": str(model_dir.resolve()),
        "revision": revision,
        "format": fmt,
        "weights": weights,
        "weights_loaded": sorted(p.name for p in paths),
        "other_files": others,
        "unexpected_keys_ignored": unexpected,
        "adapter": None if adapter is None else str(adapter),
        "adapter_path": None if adapter_dir is None else str(adapter_dir.resolve()),
        "adapter_format": adapter_fmt,
        "adapter_weights": None,
        "adapter_other_files": None,
        "tokenizer_path": str(tok_dir.resolve()),
        "tokenizer_size": len(tokenizer),
        "embedding_rows": getattr(net.get_input_embeddings(), "num_embeddings", None),
        "task": task,
        "model_type": getattr(net.config, "model_type", None),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "trust_remote_code": False,
        "allow_pickle": bool(allow_pickle),
    }
    if adapter_dir is not None:
        source["adapter_weights"], source["adapter_other_files"] = hash_files(adapter_dir)
    from dpaudit.packaged_models import read_provenance

    provenance = read_provenance(model_dir)
    if provenance is not None:  # converted from a GGUF in a package: package, SHA-256s
        source["package_provenance"] = provenance
    return LoadedModel(model=net, tokenizer=tokenizer, source=source, files=files)
