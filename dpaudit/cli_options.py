"""Click options built from an options dataclass, so each option is declared once.

A field declared with :func:`dpaudit.workflows.options.opt` becomes one click
option: its help, metavar, choices and repeatability come from the field's
metadata, its type from the annotation, and a boolean gets both forms
(``--reveal/--no-reveal``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

import click


def _base_type(tp: Any) -> Any:
    """``int | None`` → ``int``; ``tuple[str, ...]`` → ``str``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return _base_type(args[0])
    if typing.get_origin(tp) is tuple:
        return _base_type(args[0]) if args else str
    return tp


def dataclass_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding one click option per CLI field of the dataclass ``cls``.

    The command receives the fields as keyword arguments (``cls(**kwargs)``
    rebuilds the options).
    """
    hints = typing.get_type_hints(cls)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(dataclasses.fields(cls)):
            meta = f.metadata
            if not meta.get("cli", True):
                continue
            flag = meta.get("flag") or "--" + f.name.replace("_", "-")
            required = f.default is dataclasses.MISSING
            default = None if required else f.default
            tp = _base_type(hints[f.name])
            kwargs: dict[str, Any] = {"help": meta.get("help", ""), "required": required}
            if tp is bool:
                flags = f"{flag}/--no-{flag[2:]}"
                fn = click.option(flags, f.name, default=default, show_default=True, **kwargs)(fn)
                continue
            if meta.get("choices"):
                kwargs["type"] = click.Choice(list(meta["choices"]))
                kwargs["show_default"] = True
            elif tp in (int, float):
                kwargs["type"] = tp
            if meta.get("metavar") and not meta.get("choices"):
                kwargs["metavar"] = meta["metavar"]
            if meta.get("multiple"):
                kwargs["multiple"] = True
            else:
                kwargs["default"] = default
            fn = click.option(flag, f.name, **kwargs)(fn)
        return fn

    return decorate
