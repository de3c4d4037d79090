"""Run integrity: a command never changes what a run's finished stages were built from.

Every run-level command (``prepare``, ``train``, ``train-references``, ``run``,
``demo``, ``sweep``) opens its run directory through :func:`open_run`, which
checks, before anything is written:

- the location (:meth:`~dpaudit.rundir.RunDir.check_location`; the run name
  itself is checked when the config is built,
  :func:`~dpaudit.config.check_run_name`);
- an existing run: refused without ``--resume`` (or, for a command that adds
  to a run, ``reopen``); with ``--force`` it is discarded and started over;
- the settings of the run's *started build stages* (:data:`BUILD_STAGES`: done,
  or a training stage with files on disk to continue from) against the
  config of this command (:func:`settings_conflicts`): a difference is refused
  with one line naming each setting, e.g.
  ``data.synth_n: 500 in the run, 2000 now``. So ``train-references`` cannot
  silently rebuild ``data/`` under a trained target, and a refused ``--resume``
  leaves the run as it was.

Attack, audit and report settings are free: their stages are recomputed from
the models (and rerun on ``--resume`` when their inputs change). See
docs/decisions.md#run-integrity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dpaudit.config import RunConfig
from dpaudit.errors import DpauditError
from dpaudit.rundir import MANIFEST, RunDir

__all__ = ["BUILD_STAGES", "open_run", "settings_conflicts", "stage_settings", "started_stages"]

TRAINED_STAGES = ("target", "baseline", "references", "references-baseline")
BUILD_STAGES = ("data", *TRAINED_STAGES)
"""The stages that build a run's data and models; their settings are fixed once they start."""

_DATA_TRAIN_KEYS = ("train.task", "train.num_labels")  # the data stage reads these


def _data_setting(key: str) -> bool:
    return key == "seed" or key.startswith("data.") or key in _DATA_TRAIN_KEYS


def _recipe_setting(key: str) -> bool:
    from dpaudit.trainers.dp_sgd import NON_RECIPE_FIELDS

    if _data_setting(key):
        return True
    section, _, field = key.partition(".")
    return section == "train" and field not in (*NON_RECIPE_FIELDS, "baseline_references")


def _references_setting(key: str) -> bool:
    return _recipe_setting(key) or key == "train.num_references"


def stage_settings(stage: str) -> Callable[[str], bool]:
    """Which dotted settings (``data.synth_n``, ``seed``) the build ``stage`` depends on.

    ``data``: the seed, ``data.*``, ``train.task`` and ``train.num_labels``;
    ``target``/``baseline``: those and the training recipe (``train.*`` but
    ``baseline``, ``baseline_references``, ``num_references``,
    ``checkpoint_every``, ``device``); the reference sets: those and
    ``train.num_references``.
    """
    if stage == "data":
        return _data_setting
    if stage in ("target", "baseline"):
        return _recipe_setting
    if stage in ("references", "references-baseline"):
        return _references_setting
    raise DpauditError(f"not a build stage: {stage!r} (one of {', '.join(BUILD_STAGES)})")


def started_stages(run: RunDir, manifest: Mapping[str, Any]) -> list[str]:
    """The build stages of ``run`` that fix their settings: done, or a training stage
    with files on disk (a checkpoint, finished reference models) to continue from."""
    stages = manifest.get("stages") or {}
    out = []
    for name in BUILD_STAGES:
        record = stages.get(name)
        if record is None:
            continue
        directory = run.path / name
        begun = (
            name in TRAINED_STAGES and directory.is_dir() and any(True for _ in directory.iterdir())
        )
        if record.get("status") == "done" or begun:
            out.append(name)
    return out


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{dotted}.")
        else:
            yield dotted, value


def _show(value: Any) -> str:
    """A setting's value as in JSON: ``500``, ``"clinical"``, ``[1, 8]``, ``null``."""
    import json

    return json.dumps(value, ensure_ascii=False)


def settings_conflicts(run: RunDir, manifest: Mapping[str, Any], config: RunConfig) -> list[str]:
    """What ``config`` would change in the run's started build stages, one item per setting.

    Compares every setting a started stage depends on (:func:`stage_settings`)
    with the run's recorded config (settings the run does not record, from an
    older dpaudit, are not compared), and the dataset file's SHA-256 with the
    one the data stage read. Items read ``data.synth_n: 500 in the run, 2000 now``.
    """
    from dpaudit.atomic import to_jsonable
    from dpaudit.rundir import same_setting

    started = started_stages(run, manifest)
    if not started:
        return []
    recorded = dict(_flat(to_jsonable(manifest.get("config") or {})))
    current = dict(_flat(to_jsonable(config.to_dict())))
    relevant = [stage_settings(s) for s in started]
    out = []
    for key in sorted(recorded.keys() & current.keys()):
        # a path is recorded relative to the working directory (dpaudit.rundir.recorded_path)
        changed = not same_setting(key, recorded[key], current[key])
        if changed and any(test(key) for test in relevant):
            out.append(f"{key}: {_show(recorded[key])} in the run, {_show(current[key])} now")
    out += _dataset_changed(manifest, config) if "data" in started else []
    return out


def _dataset_changed(manifest: Mapping[str, Any], config: RunConfig) -> list[str]:
    from dpaudit.rundir import sha256_file

    read = ((manifest.get("stages") or {}).get("data") or {}).get("inputs", {}).get("dataset")
    path = config.data.path
    if not read or not path or not Path(path).is_file():
        return []
    now = sha256_file(path)
    if now == read:
        return []
    return [
        f"data.path: {path} changed since the data stage "
        f"(sha256 {read[:12]}… then, {now[:12]}… now)"
    ]


def open_run(
    config: RunConfig,
    *,
    argv: list[str] | None = None,
    resume: bool = False,
    force: bool = False,
    reopen: bool = False,
) -> RunDir:
    """Create, reopen or start over the run directory of ``config``; the one way in for run commands.

    Args:
        config: the command's resolved config (its name is already checked).
        argv: the command line, recorded with each stage it runs.
        resume: continue an existing run (``--resume``).
        force: discard an existing run and start over (``--force``).
        reopen: continue an existing run without ``--resume`` (commands that add
            stages to a run, e.g. ``train-references``).

    Raises:
        DpauditError: ``--force`` with ``--resume``; a location that cannot hold
            the run; an existing run without ``--resume``; or settings that differ
            from the run's started build stages. Nothing is written then.
    """
    if force and resume:
        raise DpauditError(
            "--force and --resume cannot be combined: --resume continues the run, "
            "--force starts it over"
        )
    path = config.run_dir
    RunDir.check_location(path)
    if (path / MANIFEST).exists() and not force and (resume or reopen):
        run = RunDir(path)
        conflicts = settings_conflicts(run, run.manifest(), config)
        if conflicts:
            stages = ", ".join(started_stages(run, run.manifest()))
            raise DpauditError(
                f"{path}: the run's stages ({stages}) were built with other settings: "
                + "; ".join(conflicts)
                + " (pass the run's settings, or --force to start the run over)"
            )
    return RunDir.create(config, argv=argv, resume=resume or reopen, force=force)
