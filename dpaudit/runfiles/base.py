"""The building blocks of every run-file definition.

- :data:`JsonFloat`: a float that JSON carries as a number, or as the strings
  ``"inf"``, ``"-inf"``, ``"nan"`` when it is not finite (docs/decisions.md,
  "Non-finite floats in JSON"); ``model_dump()`` gives floats,
  ``model_dump(mode="json")`` the strings.
- :class:`RunModel`: a frozen pydantic model that refuses unknown keys, with
  :meth:`~RunModel.to_dict` (the JSON-ready mapping) and
  :meth:`~RunModel.from_dict`.
- :class:`RunFile`: a :class:`RunModel` that is a whole file, with its
  ``schema_version`` and the versions this dpaudit reads.
- :func:`problems`: a pydantic ``ValidationError`` as short lines such as
  ``models.target.audit: missing key 'verdict'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    ValidationError,
)
from pydantic.config import JsonDict

from dpaudit.atomic import to_jsonable
from dpaudit.errors import DpauditError

__all__ = [
    "JsonFloat",
    "RunFile",
    "RunModel",
    "describe",
    "problems",
    "to_plain",
]

_M = TypeVar("_M", bound="RunModel")
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _parse_float(value: Any) -> Any:
    """``"inf"``, ``"-inf"``, ``"nan"`` -> float; anything else is left to the float check."""
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


def _emit_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


JsonFloat = Annotated[
    float,
    Strict(),
    BeforeValidator(_parse_float),
    PlainSerializer(_emit_float, return_type=Any, when_used="json"),
]
"""A float; in JSON a number or ``"inf"``, ``"-inf"``, ``"nan"`` (booleans and other strings refused)."""


def describe(text: str, *, keys: str | None = None, default: Any = ..., **kwargs: Any) -> Any:
    """``pydantic.Field`` with a description (required: every field documents itself).

    Args:
        text: what the field means, for docs/run-directory.md and docs/report-schema.md.
        keys: for a mapping field, the name of its keys in the docs (``<keys>``).
        default: the default value (none: the key is required).
        kwargs: passed to ``Field`` (e.g. ``default_factory``).
    """
    extra: JsonDict | None = {"keys": keys} if keys else None
    if default is ...:
        return Field(description=text, json_schema_extra=extra, **kwargs)
    return Field(default, description=text, json_schema_extra=extra, **kwargs)


def to_plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (models via :meth:`RunModel.to_dict`, the rest via ``to_jsonable``)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {
            (str(k) if isinstance(k, (int, float)) and not isinstance(k, bool) else k): to_plain(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return to_jsonable(obj)


class RunModel(BaseModel):
    """A frozen record of a run file (or part of one); unknown keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping (non-finite floats as ``"inf"``, ``"-inf"``, ``"nan"``)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls: type[_M], data: Any) -> _M:
        """Validate a mapping (plain JSON, or what ``to_dict`` methods and ``to_jsonable`` accept).

        Raises:
            DpauditError: one line naming the first problems.
        """
        try:
            return cls.model_validate(to_plain(data))
        except ValidationError as exc:
            raise DpauditError(f"not a valid {describe_kind(cls)}: {summary(exc)}") from None


class RunFile(RunModel):
    """A whole JSON file of the run directory.

    Class attributes:
        KIND: the file, as messages name it (``"privacy.json"``).
        PATH: where it lives in the run directory (docs).
        SCHEMA_VERSION: the version this dpaudit writes.
        READS: every version this dpaudit reads (older ones are migrated by
            :meth:`migrate`).
    """

    KIND: ClassVar[str] = "run file"
    PATH: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[str] = "1.0"
    READS: ClassVar[tuple[str, ...]] = ("1.0",)

    schema_version: str = describe(
        "Layout version of this file; a reader refuses a version it does not know.", default="1.0"
    )

    @classmethod
    def unsupported(cls, version: Any) -> str:
        """The one-line reason a file of ``version`` is refused."""
        reads = ", ".join(repr(v) for v in cls.READS)
        return f"schema_version {version!r} of {cls.KIND} is not supported (this dpaudit reads {reads})"

    @classmethod
    def migrate(cls, data: dict[str, Any], version: str) -> dict[str, Any]:
        """``data`` of an older ``version`` (one of :attr:`READS`) in the current layout.

        The default knows only the current version; a model that bumps its
        version overrides this to rewrite what changed.
        """
        return {**data, "schema_version": cls.SCHEMA_VERSION}


def describe_kind(cls: type[BaseModel]) -> str:
    kind = getattr(cls, "KIND", None)
    return str(kind) if kind and kind != "run file" else cls.__name__


# -- validation messages -----------------------------------------------------------------------

_TAG = re.compile(r"[\[\]()]|^(str|int|float|bool|none|dict|list|tuple|is-instance)$")
_EXPECTED = {
    "a valid number": "a number",
    "a valid integer": "an integer",
    "a valid string": "a string",
    "a valid boolean": "true/false",
    "a valid dictionary": "an object",
    "a valid dictionary or instance of": "an object",
    "a valid list": "a list",
    "a valid tuple": "a list",
}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _model_names() -> set[str]:
    names: set[str] = set()
    stack: list[type] = [RunModel]
    while stack:
        cls = stack.pop()
        names.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    return names


def problems(exc: ValidationError, root: str = "") -> list[str]:
    """Every error of ``exc`` as ``"<dotted.key>: <what is wrong>"``, under ``root``."""
    models = _model_names()
    out: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [
            str(p)
            for p in err["loc"]
            if not (isinstance(p, str) and (_TAG.search(p) or p in models))
        ]
        kind, message = err["type"], err["msg"]
        if kind == "missing" and loc:
            loc, message = loc[:-1], f"missing key {loc[-1]!r}"
        elif kind == "extra_forbidden" and loc:
            loc, message = loc[:-1], f"unknown key {loc[-1]!r}"
        elif message.startswith("Input should be "):
            wanted = message[len("Input should be ") :]
            for long, short in _EXPECTED.items():
                if wanted.startswith(long):
                    wanted = short
                    break
            message = f"expected {wanted}, got {_type_name(err.get('input'))}"
        elif message.startswith(("Value error, ", "Assertion failed, ")):
            message = message.split(", ", 1)[1]
        where = ".".join([root, *loc] if root else loc)
        line = f"{where}: {message}" if where else message
        if line not in out:
            out.append(line)
    return out


def summary(exc: ValidationError, root: str = "", *, limit: int = 5) -> str:
    """The first ``limit`` :func:`problems` on one line."""
    found = problems(exc, root)
    more = f" (and {len(found) - limit} more)" if len(found) > limit else ""
    return "; ".join(found[:limit]) + more
