"""A small string-keyed registry, one per kind of pluggable thing.

Attacks, accountants, audit methods, report formats and policy thresholds each
live in one :class:`Registry`. Config validation, CLI help, the privacy ledger
and the report all read the registry, so a name registered at run time (from a
user's own module) is accepted everywhere the built-in names are::

    from dpaudit.accounting import ACCOUNTANTS

    @ACCOUNTANTS.register("rdp_fine")
    class FineRdp(RdpAccountant): ...

Names are kept in registration order. Looking up an unknown name raises a
:class:`~dpaudit.errors.DpauditError` with a did-you-mean suggestion (exit 2
in the CLI); registering a name twice is an error unless ``replace=True``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from dpaudit.errors import DpauditError, unknown_name

__all__ = ["NAME_PATTERN", "Registry"]

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
"""Allowed names: they appear in configs, on the command line and as file names."""


class Registry(Generic[T]):
    """Name → object, in registration order.

    Args:
        kind: what the objects are, in words ("attack", "accountant", ...);
            used in every error message.

    Example:
        >>> r: Registry[int] = Registry("number")
        >>> r.register("one", 1)
        1
        >>> r.get("one"), r.names()
        (1, ('one',))
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(
        self, name: str, obj: None = None, *, replace: bool = False
    ) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does.

        Registering the very same object again under its name is a no-op (a
        module imported twice).

        Returns:
            ``obj`` (so that the decorator form leaves the decorated object unchanged).

        Raises:
            DpauditError: ``name`` is not a plain name (letters, digits,
                ``_ . + -``), or is taken by another object and ``replace`` is false.
        """
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise DpauditError(
                f"cannot register {self.kind} {name!r}: a name is letters, digits and _ . + - "
                "and starts with a letter or digit"
            )
        if obj is None:

            def decorator(target: T) -> T:
                return self.register(name, target, replace=replace)

            return decorator
        current = self._items.get(name)
        if current is not None and current is not obj and not replace:
            raise DpauditError(
                f"{self.kind} {name!r} is already registered ({_describe(current)}); "
                "pass replace=True to override it"
            )
        self._items[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its object (for tests and plug-in reloads).

        Raises:
            DpauditError: ``name`` is not registered (with a did-you-mean).
        """
        obj = self.get(name)
        del self._items[name]
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            DpauditError: unknown ``name``: ``unknown <kind> 'x' (did you mean 'y'?);
                choose from: ...``.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise unknown_name(self.kind, str(name), self._items) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._items)

    def items(self) -> tuple[tuple[str, T], ...]:
        """(name, object) pairs, in registration order."""
        return tuple(self._items.items())

    def values(self) -> tuple[T, ...]:
        """Every registered object, in registration order."""
        return tuple(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module and qualname:
        return f"{module}.{qualname}"
    return type(obj).__name__
