"""The string-keyed registry of membership inference attacks.

``ATTACKS`` maps a name (as written in configs and on the command line) to
an :class:`~dpaudit.attacks.mia.Attack` class; :func:`get_attack` builds one
with its parameters, refusing unknown names and parameters with a
did-you-mean. A new attack module adds its classes to ``_BUILTIN`` below.
"""

from __future__ import annotations

import dataclasses
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
from dpaudit.errors import DpauditError, did_you_mean, unknown_name

_BUILTIN: tuple[type, ...] = (
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
)

ATTACKS: dict[str, type] = {cls.name: cls for cls in _BUILTIN}
"""Attack name → class. Every class is a frozen dataclass whose fields are its parameters."""

NEEDS_REFERENCES: frozenset[str] = frozenset(
    {
        ReferenceAttack.name,
        LiraAttack.name,
        ClassifierLiraAttack.name,
        RmiaAttack.name,
        ClassifierRmiaAttack.name,
    }
)
"""Attacks that require reference models."""

NEEDS_REF_MEMBERSHIP: frozenset[str] = frozenset({LiraAttack.name, ClassifierLiraAttack.name})
"""Attacks whose ``score`` requires ``ref_membership`` (examples × references, bool)."""

NEEDS_POPULATION: frozenset[str] = frozenset({RmiaAttack.name, ClassifierRmiaAttack.name})
"""Attacks whose ``score`` requires ``population`` (records no reference trained on)."""

CLASSIFIER_ATTACKS: frozenset[str] = frozenset(
    {
        ClassifierLossAttack.name,
        ClassifierConfidenceAttack.name,
        ClassifierLiraAttack.name,
        ClassifierRmiaAttack.name,
    }
)
"""Attacks on sequence classifiers (they use ``ScoringModel.classify``); the others need a causal LM."""


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered under ``name`` with ``params``.

    Raises:
        DpauditError: for an unknown attack or parameter (with a suggestion),
            or an out-of-range parameter value.
    """
    if name not in ATTACKS:
        raise unknown_name("attack", name, ATTACKS)
    cls = ATTACKS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in params:
        if key not in allowed:
            takes = f"it takes: {', '.join(allowed)}" if allowed else "it takes no parameters"
            raise DpauditError(
                f"unknown parameter {key!r} for attack {name!r}{did_you_mean(key, allowed)}; {takes}"
            )
    return cls(**params)
