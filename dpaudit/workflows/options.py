"""The options of a checkpoint audit, declared once.

:class:`CheckpointAuditOptions` is the single declaration of what
``dpaudit audit-checkpoint`` and :func:`dpaudit.audit_checkpoint` accept: each
field carries its help text and command-line form in ``metadata``, and the CLI
builds its options from these fields (as lm-evaluation-harness builds its CLI
from the evaluator's config). :meth:`CheckpointAuditOptions.check` validates
the combination before anything is read or written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpaudit.errors import DpauditError, did_you_mean

TASKS = ("causal_lm", "classification")
PARTS = ("mia", "canary", "memorization", "pii")


def opt(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    metavar: str | None = None,
    flag: str | None = None,
    choices: Sequence[str] | None = None,
    multiple: bool = False,
    cli: bool = True,
) -> Any:
    """A field of an options dataclass with its help text and command-line form.

    Args:
        default: the default (none: the option is required).
        help: one line for ``--help`` and the API docs.
        metavar: the placeholder shown in ``--help``.
        flag: the option's name on the command line (default ``--field-name``).
        choices: allowed values.
        multiple: repeatable on the command line (the field is a tuple).
        cli: ``False`` for API-only fields (e.g. ``progress``).
    """
    meta = {
        "help": help,
        "metavar": metavar,
        "flag": flag,
        "choices": tuple(choices) if choices else None,
        "multiple": multiple,
        "cli": cli,
    }
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a,b"`` or ``["a", "b"]`` → ``("a", "b")``; ``None`` stays ``None``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(str(a).strip() for a in items if str(a).strip()))


@dataclass(frozen=True)
class CheckpointAuditOptions:
    """Everything a checkpoint audit takes. Paths are kept as given; ``check`` validates them."""

    model: str = opt(
        help="Model directory or hub id (safetensors; no remote code).",
        metavar="PATH_OR_HUB_ID",
    )
    members: str = opt(
        help="Records the model was trained on (JSONL, CSV, Parquet, text).", metavar="FILE"
    )
    nonmembers: str = opt(
        help="Records it was not trained on, from the same distribution.", metavar="FILE"
    )
    out: str = opt(
        help="The run directory to create (refused when it holds anything).", metavar="RUN_DIR"
    )
    adapter: str | None = opt(None, "PEFT adapter directory applied on --model.", metavar="DIR")
    task: str = opt("causal_lm", "What the model does.", choices=TASKS)
    canaries: str | None = opt(
        None, "canaries.jsonl of canaries planted before training.", metavar="FILE"
    )
    canary_inclusion: str | None = opt(
        None, "inclusion.json: each canary's coin flip (needed to audit a claim).", metavar="FILE"
    )
    claimed_epsilon: float | None = opt(
        None, "The ε claimed for the model (with --delta).", metavar="EPS"
    )
    delta: float | None = opt(None, "The δ of the claim.", metavar="DELTA")
    references: tuple[str, ...] = opt(
        (),
        "Reference model directory, or a dpaudit references directory (repeatable); "
        "dpaudit reference sets enable LiRA and RMIA, other models only the reference attack.",
        metavar="DIR",
        multiple=True,
    )
    population: str | None = opt(
        None,
        "Same-distribution records no reference trained on (RMIA's z samples).",
        metavar="FILE",
    )
    train_references: int = opt(
        0, "Train K reference models here on halves of the members and non-members.", metavar="K"
    )
    allow_pickle: bool = opt(
        False, "Accept pickle-only weights, read with torch.load(weights_only=True)."
    )
    attacks: tuple[str, ...] | None = opt(
        None, "Attacks to run, comma-separated (default: all for the task).", metavar="A,B,..."
    )
    parts: tuple[str, ...] | None = opt(
        None, "What to run among mia, canary, memorization, pii (default: all).", metavar="A,B,..."
    )
    reveal: bool = opt(False, "Show recovered secrets and PII in the report (default: masked).")
    report: bool = opt(
        True, "Render report/ at the end (else rebuild it later with dpaudit report)."
    )
    seed: int | None = opt(None, "Master seed (default 0).", metavar="N")
    sets: tuple[str, ...] = opt(
        (),
        "Override one setting (repeatable), e.g. data.max_length=128.",
        metavar="SECTION.KEY=VALUE",
        flag="--set",
        multiple=True,
    )
    progress: bool = opt(True, "Progress bars on stderr.", cli=False)

    def __post_init__(self) -> None:
        # Accept "a,b" strings and lists for the name lists, and any sequence for the tuples.
        object.__setattr__(self, "attacks", _names(self.attacks))
        object.__setattr__(self, "parts", _names(self.parts))
        object.__setattr__(self, "references", tuple(str(r) for r in self.references))
        if isinstance(self.sets, str):
            object.__setattr__(self, "sets", (self.sets,))
        object.__setattr__(self, "sets", tuple(self.sets))
        for name in ("model", "members", "nonmembers", "out"):
            object.__setattr__(self, name, str(getattr(self, name)))
        for name in ("adapter", "canaries", "canary_inclusion", "population"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else str(value))

    @classmethod
    def from_kwargs(cls, model: str | Path, **kwargs: Any) -> CheckpointAuditOptions:
        """Build from keyword arguments, refusing unknown names with a did-you-mean.

        Raises:
            DpauditError: an unknown option or a missing required one.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in known:
                raise DpauditError(f"unknown option {key!r}{did_you_mean(key, known)}")
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name != "model" and f.name not in kwargs
        ]
        if missing:
            raise DpauditError(f"missing option: {', '.join(missing)}")
        return cls(model=str(model), **kwargs)

    @property
    def out_path(self) -> Path:
        return Path(self.out).expanduser()

    @property
    def claim(self) -> tuple[float, float] | None:
        """The claimed (ε, δ), or ``None``."""
        if self.claimed_epsilon is None or self.delta is None:
            return None
        return float(self.claimed_epsilon), float(self.delta)

    def chosen_parts(self) -> tuple[str, ...]:
        """The attack-stage parts asked for, in the stage's order (default: all)."""
        from dpaudit.errors import unknown_name

        if self.parts is None:
            return PARTS
        if not self.parts:
            raise DpauditError(f"--parts: nothing named (choose from {', '.join(PARTS)})")
        for name in self.parts:
            if name not in PARTS:
                raise unknown_name("attack part", name, PARTS)
        return tuple(p for p in PARTS if p in self.parts)

    def notes(self) -> tuple[str, ...]:
        """What these options rule out although they are valid, said before any work is done.

        ``--canaries`` without ``--canary-inclusion``: no one-run audit is
        possible (the canaries are still scored for exposure). The report says
        the same in its ``warnings``.
        """
        from dpaudit.datasets.canaries import NO_INCLUSION_NOTE

        notes = []
        if self.canaries is not None and self.canary_inclusion is None:
            notes.append(NO_INCLUSION_NOTE)
        return tuple(notes)

    def check(self) -> None:
        """Validate the options alone (no file is read).

        Raises:
            DpauditError: one line naming the option at fault.
        """
        if self.task not in TASKS:
            raise DpauditError(f"--task {self.task!r} is not one of: {', '.join(TASKS)}")
        if (self.claimed_epsilon is None) != (self.delta is None):
            raise DpauditError(
                "--claimed-epsilon and --delta go together: a claimed ε holds at one δ"
            )
        if self.claimed_epsilon is not None and not self.claimed_epsilon >= 0:
            raise DpauditError(f"--claimed-epsilon = {self.claimed_epsilon} must be >= 0")
        if self.delta is not None and not 0 <= self.delta < 1:
            raise DpauditError(f"--delta = {self.delta} must be in [0, 1)")
        if self.canary_inclusion is not None and self.canaries is None:
            raise DpauditError("--canary-inclusion needs --canaries")
        if self.canaries is not None and self.claim and self.canary_inclusion is None:
            raise DpauditError(
                "--canaries with a claim needs --canary-inclusion (the coin flips) to audit the claim"
            )
        if self.canaries is not None and self.task != "causal_lm":
            raise DpauditError(
                "--canaries needs --task causal_lm (canaries are scored by their log-perplexity)"
            )
        if self.references and self.train_references:
            raise DpauditError("give --references or --train-references, not both")
        if self.train_references < 0:
            raise DpauditError(f"--train-references = {self.train_references} must be >= 0")
        if self.seed is not None and self.seed < 0:
            raise DpauditError(f"--seed = {self.seed} must be >= 0")
        if self.attacks is not None and not self.attacks:
            raise DpauditError("--attacks: no attack named")
        self.chosen_parts()
        out = self.out_path
        if (out / "manifest.json").exists():
            raise DpauditError(
                f"{out}: already holds a dpaudit run; choose another --out or remove it"
            )
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise DpauditError(f"{out}: exists and is not an empty directory; choose another --out")


def option_help() -> Mapping[str, str]:
    """``{field: help}`` of :class:`CheckpointAuditOptions` (for docs and the API docstring)."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(CheckpointAuditOptions)}
