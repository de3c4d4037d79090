"""Attack outputs as values: per-example scores and the metrics derived from them.

:class:`AttackScores` is the source of truth of every attack
(docs/design.md#attack-scores-and-metrics): one
score per example, *higher = more likely a member*, with the ground-truth
membership bit. Every metric is recomputed from it, so it is what goes to disk
(``attacks/<attack>/scores.parquet``: ids, membership and scores, never raw
text). :class:`AttackMetrics` holds the ROC statistics computed by
:func:`dpaudit.attacks.metrics.compute_metrics`.

NaN policy: scores must be finite. A NaN or infinite score is a bug upstream
(e.g. an example with no scored tokens); dropping it silently would change the
member / non-member counts the metrics report, so construction refuses it and
names the examples at fault.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpaudit.atomic import SCHEMA_VERSION, atomic_path, dumps, to_jsonable
from dpaudit.errors import DpauditError, InputError
from dpaudit.runfiles.attacks import AttackMetricsFile
from dpaudit.runfiles.io import read_run_file, write_run_file

__all__ = [
    "AttackMetrics",
    "AttackScores",
    "METRICS_FILE",
    "SCORES_FILE",
]

SCORES_FILE = "scores.parquet"
METRICS_FILE = "metrics.json"
_META_KEY = b"dpaudit"


def _readonly(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


def _as_membership(values: Any, attack: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == bool:
        return array
    if array.size and (array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all()):
        raise DpauditError(f"attack {attack!r}: is_member must be booleans (or 0/1)")
    return array.astype(bool)


@dataclass(frozen=True, eq=False)
class AttackScores:
    """Per-example scores of one attack; higher score = more likely a member.

    Arrays are copied and made read-only on construction.

    Attributes:
        attack: registry name of the attack (``"loss"``, ``"lira"``, ...).
        params: the attack's settings; must be JSON-serialisable.
        example_ids: one unique id per scored example.
        scores: float64 array, one finite score per example.
        is_member: bool array, ground-truth membership of each example.

    Raises:
        DpauditError: lengths differ, ids repeat, scores are not finite, the
            arrays are not one-dimensional, or ``params`` is not serialisable.
    """

    attack: str
    params: dict[str, Any]
    example_ids: tuple[str, ...]
    scores: np.ndarray
    is_member: np.ndarray

    def __post_init__(self) -> None:
        ids = tuple(str(i) for i in self.example_ids)
        scores = np.asarray(self.scores, dtype=np.float64)
        member = _as_membership(self.is_member, self.attack)
        if scores.ndim != 1 or member.ndim != 1:
            raise DpauditError(f"attack {self.attack!r}: scores and is_member must be 1-D arrays")
        if not len(ids) == len(scores) == len(member):
            raise DpauditError(
                f"attack {self.attack!r}: {len(ids)} ids, {len(scores)} scores and "
                f"{len(member)} membership labels; they must have equal lengths"
            )
        if len(set(ids)) != len(ids):
            dupes = sorted(i for i, c in Counter(ids).items() if c > 1)
            raise DpauditError(f"attack {self.attack!r}: repeated example ids {dupes[:5]}")
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            shown = ", ".join(ids[i] for i in bad[:5])
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            raise DpauditError(
                f"attack {self.attack!r}: non-finite scores for {shown}{more} "
                "(NaN/inf scores are refused rather than dropped)"
            )
        params = dict(self.params)
        try:
            to_jsonable(params)
        except TypeError as exc:
            raise DpauditError(
                f"attack {self.attack!r}: params are not serialisable: {exc}"
            ) from None
        object.__setattr__(self, "example_ids", ids)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "scores", _readonly(scores))
        object.__setattr__(self, "is_member", _readonly(member))

    def __len__(self) -> int:
        return len(self.example_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttackScores):
            return NotImplemented
        return (
            self.attack == other.attack
            and to_jsonable(self.params) == to_jsonable(other.params)
            and self.example_ids == other.example_ids
            and np.array_equal(self.scores, other.scores)
            and np.array_equal(self.is_member, other.is_member)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_member(self) -> int:
        """Number of members."""
        return int(self.is_member.sum())

    @property
    def n_nonmember(self) -> int:
        """Number of non-members."""
        return len(self) - self.n_member

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/scores.parquet`` atomically and return its path.

        Columns ``id`` (string), ``is_member`` (bool), ``score`` (float64); the
        attack name, params and ``schema_version`` go in the parquet key-value
        metadata under ``dpaudit`` (JSON), so one file carries everything.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "id": pa.array(self.example_ids, type=pa.string()),
                "is_member": pa.array(self.is_member, type=pa.bool_()),
                "score": pa.array(self.scores, type=pa.float64()),
            }
        )
        meta = {"schema_version": SCHEMA_VERSION, "attack": self.attack, "params": self.params}
        table = table.replace_schema_metadata({_META_KEY: dumps(meta, indent=None).encode()})
        path = Path(directory) / SCORES_FILE
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> AttackScores:
        """Read what :meth:`save` wrote in ``directory``.

        Raises:
            InputError: the file is missing, unreadable, lacks a column or the
                metadata, or has an unknown major schema version.
        """
        import pyarrow.parquet as pq

        path = Path(directory) / SCORES_FILE
        if not path.exists():
            raise InputError(path, "file not found")
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise InputError(path, f"not a readable parquet file: {exc}") from None
        missing = {"id", "is_member", "score"} - set(table.column_names)
        if missing:
            raise InputError(path, f"missing columns {sorted(missing)}")
        raw = (table.schema.metadata or {}).get(_META_KEY)
        if raw is None:
            raise InputError(path, "no dpaudit metadata (attack name and params)")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError:
            raise InputError(path, "malformed dpaudit metadata") from None
        _check_schema(path, meta)
        try:
            return cls(
                attack=meta["attack"],
                params=meta.get("params", {}),
                example_ids=tuple(table.column("id").to_pylist()),
                scores=table.column("score").to_numpy(),
                is_member=table.column("is_member").to_numpy(),
            )
        except (DpauditError, KeyError) as exc:
            raise InputError(path, f"invalid scores: {exc}") from None


def _check_schema(path: Path, meta: Mapping[str, Any]) -> None:
    version = str(meta.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            path, f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})"
        )


def _pair(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = values
    return (float(lo), float(hi))


@dataclass(frozen=True, eq=False)
class AttackMetrics:
    """ROC statistics of one attack, with stratified-bootstrap intervals.

    Built by :func:`dpaudit.attacks.metrics.compute_metrics`; see that module
    for the definitions. Intervals are ``(nan, nan)`` when no bootstrap was run.

    Attributes:
        auc: area under the ROC curve.
        auc_ci: percentile bootstrap interval of the AUC.
        tpr_at_fpr: ``{fpr target: (tpr, (lo, hi))}``, the largest TPR whose
            FPR is at most the target.
        balanced_accuracy: best-threshold balanced accuracy (in-sample,
            optimistic; see :func:`~dpaudit.attacks.metrics.balanced_accuracy`).
        balanced_accuracy_ci: its bootstrap interval.
        n_member: number of members scored.
        n_nonmember: number of non-members scored.
        roc: ``{"fpr": array, "tpr": array}``, every ROC point.
        ci_level: coverage of the intervals.
        n_bootstrap: bootstrap resamples behind the intervals (0: none).
        seed: seed of the bootstrap.
    """

    auc: float
    auc_ci: tuple[float, float]
    tpr_at_fpr: dict[float, tuple[float, tuple[float, float]]]
    balanced_accuracy: float
    balanced_accuracy_ci: tuple[float, float]
    n_member: int
    n_nonmember: int
    roc: dict[str, np.ndarray] = field(default_factory=dict)
    ci_level: float = 0.95
    n_bootstrap: int = 0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping; ``tpr_at_fpr`` keys become ``repr(fpr)`` strings."""
        return {
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "tpr_at_fpr": {
                repr(float(f)): {"tpr": tpr, "ci": list(ci)}
                for f, (tpr, ci) in sorted(self.tpr_at_fpr.items())
            },
            "balanced_accuracy": self.balanced_accuracy,
            "balanced_accuracy_ci": list(self.balanced_accuracy_ci),
            "n_member": self.n_member,
            "n_nonmember": self.n_nonmember,
            "roc": {k: np.asarray(v, dtype=float).tolist() for k, v in self.roc.items()},
            "ci_level": self.ci_level,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackMetrics:
        """Inverse of :meth:`to_dict` (accepts the ``"nan"`` strings JSON holds)."""
        return cls(
            auc=float(data["auc"]),
            auc_ci=_pair([float(v) for v in data["auc_ci"]]),
            tpr_at_fpr={
                float(k): (float(v["tpr"]), _pair([float(c) for c in v["ci"]]))
                for k, v in data["tpr_at_fpr"].items()
            },
            balanced_accuracy=float(data["balanced_accuracy"]),
            balanced_accuracy_ci=_pair([float(v) for v in data["balanced_accuracy_ci"]]),
            n_member=int(data["n_member"]),
            n_nonmember=int(data["n_nonmember"]),
            roc={k: np.asarray(v, dtype=float) for k, v in data.get("roc", {}).items()},
            ci_level=float(data.get("ci_level", math.nan)),
            n_bootstrap=int(data.get("n_bootstrap", 0)),
            seed=int(data.get("seed", 0)),
        )

    def to_file(self) -> AttackMetricsFile:
        """The ``metrics.json`` definition of these metrics."""
        return AttackMetricsFile.from_dict(self.to_dict())

    @classmethod
    def from_file(cls, file: AttackMetricsFile) -> AttackMetrics:
        """Inverse of :meth:`to_file`."""
        return cls.from_dict(file.model_dump())

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/metrics.json`` atomically (:class:`AttackMetricsFile`)."""
        return write_run_file(Path(directory) / METRICS_FILE, self.to_file())

    @classmethod
    def load(cls, directory: str | Path) -> AttackMetrics:
        """Read what :meth:`save` wrote.

        Raises:
            InputError: missing or malformed file, an unsupported
                ``schema_version`` or invalid contents (the message names the file).
        """
        return cls.from_file(read_run_file(Path(directory) / METRICS_FILE, AttackMetricsFile))


def score_hashes(attacks_dir: str | Path) -> dict[str, str]:
    """``{"<attack>/scores.parquet": sha256}`` of the score files under ``attacks/<model>/``.

    The attack stage records them as its outputs in the manifest; :func:`check_score_hashes`
    compares them with the files before a report is built from them.
    """
    from dpaudit.rundir import sha256_file

    root = Path(attacks_dir)
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.glob(f"*/{SCORES_FILE}"))
    }


def check_score_hashes(run_path: str | Path, stages: Mapping[str, Any]) -> None:
    """Refuse a ``scores.parquet`` whose bytes are none of those its attack stage recorded.

    Args:
        run_path: the run directory.
        stages: the manifest's stage records (``name -> record`` with ``outputs``);
            an attack stage ``attacks/<model>[/<parts>]`` records
            ``<attack>/scores.parquet`` relative to ``attacks/<model>/``.

    Raises:
        InputError: one line naming the file (corrupt or changed since the attack stage).
    """
    from dpaudit.rundir import sha256_file

    recorded: dict[Path, set[str]] = {}
    for name, record in stages.items():
        parts = name.split("/")
        if parts[0] != "attacks" or len(parts) < 2:
            continue
        outputs = record.get("outputs") if isinstance(record, Mapping) else record.outputs
        for key, digest in (outputs or {}).items():
            if key.endswith(f"/{SCORES_FILE}"):
                path = Path(run_path, "attacks", parts[1], key)
                recorded.setdefault(path, set()).add(digest)
    for path, digests in sorted(recorded.items()):
        if not path.is_file():
            raise InputError(
                path, "missing, but the attack stage recorded it (rerun `dpaudit attack mia`)"
            )
        if sha256_file(path) not in digests:
            raise InputError(
                path,
                "does not match the hash the attack stage recorded (corrupt or changed "
                "since; rerun `dpaudit attack mia`)",
            )
