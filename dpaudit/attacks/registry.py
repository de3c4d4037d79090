"""The registry of membership inference attacks, and what each one needs.

:data:`ATTACKS` (a :class:`~dpaudit.registry.Registry`) maps a name, as written
in configs and on the command line, to an attack class. Each class declares
what it attacks and needs as class variables (``task``, ``needs_references``,
``needs_ref_membership``, ``needs_population``; see
:class:`~dpaudit.attacks.mia.Attack`) and its parameters as typed dataclass
fields with a help string. From these:

- :func:`get_attack` builds an attack, refusing unknown names and parameters
  with a did-you-mean;
- :func:`attack_params` resolves one attack's parameters from the
  ``[attack]`` config (``[attack.params.<name>]`` tables, then the legacy
  scalar settings such as ``mink_k``), coerced to the field types;
- :func:`plan_attacks` splits a list of names into those that can run on a
  model with the given inputs and those skipped, with the reason (an attack
  declaring ``ranks_like`` another that runs too is skipped: same ROC);
- :func:`default_attacks` lists the attacks of a task used when none are named
  (the classifier default of the checkpoint audit), without ``ranks_like`` ones.

A new attack is one call, :func:`register_attack`, after which it is accepted
by ``attack.attacks``, runs in ``dpaudit run`` and reaches the report.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from typing import Any

from dpaudit.attacks.lira import ClassifierLiraAttack, LiraAttack
from dpaudit.attacks.mia import (
    Attack,
    ClassifierConfidenceAttack,
    ClassifierLossAttack,
    LossAttack,
    LowercaseAttack,
    MinKAttack,
    MinKPlusPlusAttack,
    ReferenceAttack,
    ZlibAttack,
)
from dpaudit.attacks.rmia import ClassifierRmiaAttack, RmiaAttack
from dpaudit.config import AttackConfig, coerce_value
from dpaudit.errors import ConfigError, DpauditError, did_you_mean
from dpaudit.registry import Registry

__all__ = [
    "ATTACKS",
    "TASKS",
    "attack_params",
    "default_attacks",
    "get_attack",
    "param_fields",
    "plan_attacks",
    "register_attack",
]

TASKS = ("causal_lm", "classification")
"""The values of an attack's ``task`` declaration (those of ``train.task``)."""

ATTACKS: Registry[type[Any]] = Registry("attack")
"""Attack name → class. Every class is a frozen dataclass whose fields are its parameters."""

_NEEDS = ("needs_references", "needs_ref_membership", "needs_population")


def _attack_settings() -> set[str]:
    return {f.name for f in dataclasses.fields(AttackConfig)}


def register_attack(cls: type, *, replace: bool = False) -> type:
    """Register the attack class ``cls`` under ``cls.name``: the one call a plug-in makes.

    ``cls`` is a dataclass (its fields are its parameters, given
    ``metadata={"help": ...}``) with a ``score`` method and the class
    variables ``name``, ``task`` (``"causal_lm"`` or ``"classification"``)
    and the booleans ``needs_references``, ``needs_ref_membership`` and
    ``needs_population`` (inherited values count). Usable as a decorator.

    Returns:
        ``cls``.

    Raises:
        DpauditError: a declaration is missing or malformed, or the name is taken.
    """
    name = getattr(cls, "name", None)
    where = f"attack class {getattr(cls, '__name__', cls)!r}"
    if not isinstance(name, str) or not name:
        raise DpauditError(f"{where} must declare name = '<attack name>'")
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise DpauditError(f"{where} must be a dataclass (its fields are its parameters)")
    if not callable(getattr(cls, "score", None)):
        raise DpauditError(f"{where} must define score(model, examples, *, is_member, ...)")
    task = getattr(cls, "task", None)
    if task not in TASKS:
        raise DpauditError(f"{where} must declare task as one of {', '.join(TASKS)}, got {task!r}")
    for need in _NEEDS:
        if not isinstance(getattr(cls, need, None), bool):
            raise DpauditError(f"{where} must declare {need} = True/False")
    fields = {f.name for f in dataclasses.fields(cls)}
    for param, setting in dict(getattr(cls, "legacy_fields", {}) or {}).items():
        if param not in fields or setting not in _attack_settings():
            raise DpauditError(f"{where}: legacy_fields maps {param!r} to {setting!r}")
    return ATTACKS.register(name, cls, replace=replace)


for _cls in (
    LossAttack,
    ZlibAttack,
    LowercaseAttack,
    MinKAttack,
    MinKPlusPlusAttack,
    ReferenceAttack,
    ClassifierLossAttack,
    ClassifierConfidenceAttack,
    LiraAttack,
    ClassifierLiraAttack,
    RmiaAttack,
    ClassifierRmiaAttack,
):
    register_attack(_cls)
del _cls


def param_fields(name: str) -> list[tuple[str, Any, Any, str]]:
    """(parameter, type, default, help) of every parameter of attack ``name``.

    Raises:
        DpauditError: unknown attack (with a did-you-mean).
    """
    cls = ATTACKS.get(name)
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # annotations naming types local to a function
        hints = {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append((f.name, hints.get(f.name, Any), default, str(f.metadata.get("help", ""))))
    return out


def attack_params(attack_config: AttackConfig, name: str) -> dict[str, Any]:
    """The resolved parameters of attack ``name`` under ``attack_config``.

    ``attack_config.params[name]`` (an ``[attack.params.<name>]`` table or
    ``--set attack.params.<name>.<param>=value``) first; a parameter it does
    not set and that the class maps in ``legacy_fields`` (``k`` ← ``mink_k``
    for mink/minkpp, ``gamma`` ← ``rmia_gamma`` for rmia/clf_rmia) takes the
    ``[attack]`` scalar setting. Values are coerced to the field types
    (``"true"`` → ``True``, ``"0.5"`` → ``0.5``, ``"none"`` → ``None``).

    Returns:
        ``{parameter: value}`` to pass to :func:`get_attack`; parameters set
        nowhere are left out (the class default applies).

    Raises:
        ConfigError: unknown attack or parameter (did-you-mean), or a value of
            the wrong type; ``key`` is the dotted setting at fault.
    """
    try:
        cls = ATTACKS.get(name)
    except DpauditError as exc:
        raise ConfigError(str(exc), key="attack.attacks") from None
    types_ = {p: tp for p, tp, _, _ in param_fields(name)}
    given = dict(attack_config.params.get(name) or {})
    out: dict[str, Any] = {}
    for key, value in given.items():
        where = f"attack.params.{name}.{key}"
        if key not in types_:
            takes = f"it takes: {', '.join(types_)}" if types_ else "it takes no parameters"
            raise ConfigError(
                f"unknown parameter {where}{did_you_mean(key, types_)}; {takes}", key=where
            )
        out[key] = coerce_value(where, value, types_[key])
    for param, setting in dict(getattr(cls, "legacy_fields", {}) or {}).items():
        if param not in out:
            out[param] = getattr(attack_config, setting)
    return out


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered under ``name`` with ``params``.

    Raises:
        DpauditError: for an unknown attack or parameter (with a suggestion),
            or an out-of-range parameter value.
    """
    cls = ATTACKS.get(name)
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in allowed:
            takes = f"it takes: {', '.join(allowed)}" if allowed else "it takes no parameters"
            raise DpauditError(
                f"unknown parameter {key!r} for attack {name!r}{did_you_mean(key, allowed)}; {takes}"
            )
    return typing.cast(Attack, cls(**params))


def plan_attacks(
    names: Iterable[str],
    *,
    task: str,
    has_references: bool,
    has_ref_membership: bool,
    has_population: bool,
) -> tuple[list[str], dict[str, str]]:
    """Which of ``names`` can run on a ``task`` model with these inputs, from the declarations.

    Args:
        names: attack names, in order.
        task: the model's task, ``"causal_lm"`` or ``"classification"``.
        has_references: reference models are available.
        has_ref_membership: their (examples × references) membership is known.
        has_population: population records no reference trained on are available.

    Returns:
        (runnable names in order, ``{skipped name: "skipped: <reason>"}``).

    Raises:
        DpauditError: an unknown attack name (with a did-you-mean).
    """
    runnable: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        cls = ATTACKS.get(name)
        if cls.task != task:
            kind = "classifier" if cls.task == "classification" else "language model"
            skipped[name] = f"skipped: an attack on a {kind}, not on this {task} model"
        elif cls.needs_references and not has_references:
            skipped[name] = "skipped: no reference models (dpaudit train-references)"
        elif cls.needs_ref_membership and not has_ref_membership:
            skipped[name] = "skipped: which reference model trained on which example is unknown"
        elif cls.needs_population and not has_population:
            skipped[name] = "skipped: no population records that no reference model trained on"
        else:
            runnable.append(name)
    for name in list(runnable):  # an attack that only re-ranks another one adds nothing
        same = getattr(ATTACKS.get(name), "ranks_like", None)
        if same and same != name and same in runnable:
            runnable.remove(name)
            skipped[name] = (
                f"skipped: ranks examples as {same} does (a strictly increasing transform of "
                f"its score), so its ROC, AUC and TPRs are {same}'s"
            )
    return runnable, skipped


def default_attacks(task: str) -> list[str]:
    """The registered attacks on a ``task`` model that a run uses when none are named.

    Every attack of the task (registration order) except those declaring
    ``ranks_like`` another attack: ``clf_confidence`` is ``exp`` of
    ``clf_loss``'s score for any number of classes, so only ``clf_loss`` is listed.
    """
    return [
        name
        for name, cls in ATTACKS.items()
        if cls.task == task and not getattr(cls, "ranks_like", None)
    ]


def _names_where(predicate: Any) -> frozenset[str]:
    return frozenset(n for n, cls in ATTACKS.items() if predicate(cls))


def __getattr__(name: str) -> Any:
    """Computed aliases of the declarations (always current, plug-ins included)."""
    if name == "NEEDS_REFERENCES":
        return _names_where(lambda c: c.needs_references)
    if name == "NEEDS_REF_MEMBERSHIP":
        return _names_where(lambda c: c.needs_ref_membership)
    if name == "NEEDS_POPULATION":
        return _names_where(lambda c: c.needs_population)
    if name == "CLASSIFIER_ATTACKS":
        return _names_where(lambda c: c.task == "classification")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(
        [
            *globals(),
            "CLASSIFIER_ATTACKS",
            "NEEDS_POPULATION",
            "NEEDS_REFERENCES",
            "NEEDS_REF_MEMBERSHIP",
        ]
    )
