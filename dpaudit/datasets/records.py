"""Core data values: training records, their PII ground truth, and canaries.

These are frozen dataclasses so that a record can never change meaning after
it was split, hashed or inserted into a training set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

PII_KINDS = (
    "PERSON",
    "EMAIL",
    "PHONE",
    "ADDRESS",
    "SSN",
    "CREDIT_CARD",
    "DATE_OF_BIRTH",
    "IBAN",
    "MRN",
)
"""PII kinds the synthetic corpus plants and the PII attacks look for."""


@dataclass(frozen=True)
class PiiSpan:
    """One PII value inside a record's text: ``text[start:end] == value``."""

    start: int
    end: int
    kind: str
    value: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class Record:
    """One training example.

    Attributes:
        id: unique string id within a dataset.
        text: the text the model trains on.
        label: class label for classifiers, ``None`` for language modelling.
        pii: ground-truth PII spans inside ``text`` (used by the PII attacks).
        meta: free-form extra fields (user id, domain, duplication counts...).
    """

    id: str
    text: str
    label: int | None = None
    pii: tuple[PiiSpan, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.label is not None:
            out["label"] = self.label
        if self.pii:
            out["pii"] = [span.to_dict() for span in self.pii]
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        spans = tuple(
            PiiSpan(int(s["start"]), int(s["end"]), str(s["kind"]), str(s["value"]))
            for s in data.get("pii") or ()
        )
        label = data.get("label")
        return cls(
            id=str(data["id"]),
            text=str(data["text"]),
            label=None if label is None else int(label),
            pii=spans,
            meta=dict(data.get("meta") or {}),
        )


CanaryRole = Literal["secret-sharer", "one-run"]
SECRET_SHARER: Final = "secret-sharer"
"""Role of a Secret-Sharer canary: always inserted, scored by exposure."""
ONE_RUN: Final = "one-run"
"""Role of a one-run audit canary: inserted by a fair coin, scored for the audit."""
CANARY_ROLES: tuple[str, ...] = (SECRET_SHARER, ONE_RUN)


@dataclass(frozen=True)
class Canary:
    """A planted secret (Carlini et al. 2019, "The Secret Sharer").

    Attributes:
        id: unique id, prefixed ``canary-`` so it never collides with record ids.
        prefix: the context the secret follows, e.g. ``"my account number is "``.
        secret: the secret, drawn uniformly from ``secret_space``.
        secret_space: a spec such as ``"digits:9"`` (see :mod:`dpaudit.datasets.canaries`).
        repetitions: how many copies are inserted into training when included.
        included: whether it was inserted; for one-run audits this is the fair
            coin flip, kept only in the run directory (``data/inclusion.json``).
        role: :data:`SECRET_SHARER` (exposure) or :data:`ONE_RUN` (one-run
            audit); ``None`` when unassigned (a hand-written canary file, whose
            canaries a checkpoint audit both scores for exposure and audits).
    """

    id: str
    prefix: str
    secret: str
    secret_space: str
    repetitions: int
    included: bool
    role: CanaryRole | None = None

    @property
    def text(self) -> str:
        """The full training text: prefix followed by the secret."""
        return self.prefix + self.secret

    def to_dict(self, *, with_inclusion: bool = True) -> dict[str, Any]:
        out = {
            "id": self.id,
            "prefix": self.prefix,
            "secret": self.secret,
            "secret_space": self.secret_space,
            "repetitions": self.repetitions,
            "role": self.role,
        }
        if with_inclusion:
            out["included"] = self.included
        return out
