"""Validate a whole config against the registries, before any work is done.

:mod:`dpaudit.config` checks types, ranges and keys, but cannot see the names
registered by higher layers. :func:`check_config` checks them all, in well
under a second (plus the time to load a local ``data.path``) and without
writing anything:

- ``attack.attacks``: every name is a registered attack;
- ``attack.params``: every table names a registered attack, every key is one
  of its parameters, every value has the parameter's type, and the attack
  accepts the resolved parameters (each attack is built once);
- ``train.accountant``: a registered accountant, and a rigorous one when it
  calibrates the noise unless ``train.allow_approximate_accountant``;
- ``data.canary_design``: a registered audit canary design;
- ``audit.method``, ``report.formats``: registered audit methods and report formats;
- ``audit.estimator``, ``audit.estimators``: registered one-run estimators;
- the ``[report]`` policy settings: registered policy thresholds;
- ``data.secret_space`` parses, an ``embedded:`` ``train.model`` exists,
  ``train.device`` is ``auto``/``cpu``/``cuda``/``cuda:N``;
- a local ``data.path`` exists and loads, has enough records to split and at
  least ``train.batch_size`` of them, and labels for classification (skipped
  with ``check_config(..., data=False)``: checkpoint audits, ``--run`` commands).

Errors are :class:`~dpaudit.errors.ConfigError` with a did-you-mean, on one
line; :func:`load_config` (which every CLI command that reads a config uses)
adds where the value came from: ``file:line``, ``--set`` or ``option``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dpaudit import config as _config
from dpaudit.config import RunConfig
from dpaudit.errors import ConfigError, DpauditError, unknown_name

__all__ = [
    "check_config",
    "check_run_config",
    "check_sweep",
    "describe_fields",
    "field_choices",
    "load_config",
]


def field_choices() -> dict[str, tuple[str, ...]]:
    """Allowed values of the settings whose values are registry names, by dotted setting."""
    from dpaudit.accounting import ACCOUNTANTS
    from dpaudit.attacks.registry import ATTACKS
    from dpaudit.audit.estimators import ESTIMATORS
    from dpaudit.audit.methods import AUDIT_METHODS
    from dpaudit.datasets.canary_designs import CANARY_DESIGNS
    from dpaudit.reports import REPORT_FORMATS

    return {
        "data.canary_design": CANARY_DESIGNS.names(),
        "train.accountant": ACCOUNTANTS.names(),
        "attack.attacks": ATTACKS.names(),
        "attack.params": ATTACKS.names(),
        "audit.method": AUDIT_METHODS.names(),
        "audit.estimator": ESTIMATORS.names(),
        "audit.estimators": ESTIMATORS.names(),
        "report.formats": REPORT_FORMATS.names(),
    }


def describe_fields() -> list[tuple[str, str, Any]]:
    """:func:`dpaudit.config.describe_fields` with the registries' allowed values and attack parameters.

    Returns:
        (dotted name, help, default) rows: every setting (the help of a
        registry-backed one ends with its allowed values), then one
        ``attack.params.<attack>.<param>`` row per parameter of every
        registered attack.
    """
    from dpaudit.attacks.registry import ATTACKS, param_fields

    choices = field_choices()
    rows = []
    for name, help_text, default in _config.describe_fields():
        if name in choices:
            help_text = f"{help_text}; one of: {', '.join(choices[name])}"
        rows.append((name, help_text, default))
    for attack in ATTACKS.names():
        for param, _, default, help_text in param_fields(attack):
            rows.append((f"attack.params.{attack}.{param}", help_text, default))
    return rows


def check_config(config: RunConfig, *, source: str | Path | None = None, data: bool = True) -> None:
    """Check every registry name and attack parameter of ``config``.

    Args:
        config: a resolved config.
        source: the TOML file the config came from; the message then starts
            with ``<file>:<line>:`` (the line of the offending key when found).
        data: also load a local ``data.path`` and check it fits the run (enough
            records to split and to fill a batch, labels for classification).

    Raises:
        ConfigError: the first problem, one line with a did-you-mean;
            ``key`` is the dotted setting at fault.
    """
    try:
        _check(config, data=data)
    except ConfigError as exc:
        if source is None:
            raise
        raise ConfigError(f"{_in_file(Path(source), exc.key)}: {exc}", key=exc.key) from None


def load_config(
    path: str | Path | None = None,
    *,
    sets: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """:func:`dpaudit.config.load_config`, then :func:`check_config` on the result.

    A registry error names where the value came from: ``--set: ...`` when a
    ``--set`` gave it, ``option: ...`` for an explicit option, else
    ``<file>:<line>: ...``.

    Raises:
        ConfigError: a bad value, key or name (nothing has been written).
        InputError: the file is missing or is not valid TOML.
    """
    config = _config.load_config(path, sets=sets, overrides=overrides)
    try:
        _check(config)
    except ConfigError as exc:
        key = exc.key
        if _given(key, _config.parse_set(sets)):
            where = "--set"
        elif overrides and _given(key, _config._drop_none(overrides)):
            where = "option"
        elif path is not None:
            where = _in_file(_config.resolve_config_path(path), key)
        else:
            raise
        raise ConfigError(f"{where}: {exc}", key=key) from None
    return config


def check_run_config(run_dir: str | Path, sets: Sequence[str] = ()) -> RunConfig:
    """The config recorded in a run's manifest with ``sets`` applied, checked
    (what ``dpaudit attack``/``audit --run DIR --set ...`` use).

    Raises:
        ConfigError: a bad ``--set`` (``--set: ...``) or recorded value.
        DpauditError: not a run directory.
    """
    from dpaudit.workflows.run import config_of_run

    try:
        config = config_of_run(run_dir, tuple(sets))
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}", key=exc.key) from None
    try:
        _check(config, data=False)
    except ConfigError as exc:
        where = "--set" if _given(exc.key, _config.parse_set(sets)) else f"{run_dir}"
        raise ConfigError(f"{where}: {exc}", key=exc.key) from None
    return config


def check_sweep(
    config_path: str | Path,
    *,
    sets: Sequence[str],
    name: str | None = None,
    runs_dir: str | None = None,
) -> int:
    """Check every grid point of a sweep (see :func:`dpaudit.workflows.run.sweep_axes`).

    Returns:
        the number of grid points.

    Raises:
        ConfigError: a point's config is invalid (the first one found).
    """
    import itertools

    from dpaudit.workflows.run import sweep_axes

    fixed, axes = sweep_axes(tuple(sets))
    overrides = {"name": name, "runs_dir": runs_dir}
    points = list(itertools.product(*axes)) or [()]
    for combo in points:
        load_config(config_path, sets=[*fixed, *combo], overrides=overrides)
    return len(points)


# --------------------------------------------------------------------------- the checks


def _check(config: RunConfig, *, data: bool = True) -> None:
    _check_attacks(config)
    _check_accountant(config)
    _check_train(config)
    _check_data(config, load=data)
    _check_federated(config)
    from dpaudit.audit.estimators import ESTIMATORS, primary_problem
    from dpaudit.audit.methods import AUDIT_METHODS
    from dpaudit.datasets.canary_designs import CANARY_DESIGNS
    from dpaudit.reports import REPORT_FORMATS
    from dpaudit.reports.policy import POLICY_THRESHOLDS

    _known(CANARY_DESIGNS, config.data.canary_design, "data.canary_design")
    _check_design_trains(config, CANARY_DESIGNS.get(config.data.canary_design))
    _known(AUDIT_METHODS, config.audit.method, "audit.method")
    _known(ESTIMATORS, config.audit.estimator, "audit.estimator")
    why = primary_problem(config.audit.estimator)
    if why is not None:
        raise ConfigError(
            f"audit.estimator = {why}; list it in audit.estimators to report it side by side",
            key="audit.estimator",
        )
    for name in config.audit.estimators:
        _known(ESTIMATORS, name, "audit.estimators")
    for fmt in config.report.formats:
        _known(REPORT_FORMATS, fmt, "report.formats")
    for f in dataclasses.fields(config.report):
        if f.name.startswith("max_"):
            _known(POLICY_THRESHOLDS, f.name, f"report.{f.name}")


def _check_design_trains(config: RunConfig, design: Any) -> None:
    """Refuse audit canaries the trained parameters cannot learn.

    A design that reserves new tokens (``new-token``) gives them zero embedding and
    output rows (:func:`~dpaudit.trainers.models.fit_vocabulary`); under
    ``train.mode = lora`` those rows stay frozen, so a new token's logit is 0 in every
    context and training cannot raise its probability: measured on SmolLM2 with
    DP-LoRA, even the non-private baseline's audit reached ε_lb = 0 (ceiling 3.81).
    """
    if (
        getattr(design, "reserves_tokens", False)
        and config.train.mode == "lora"
        and config.train.task == "causal_lm"
        and config.data.one_run_canaries > 0
    ):
        raise ConfigError(
            f"data.canary_design = {config.data.canary_design!r} reserves new tokens whose "
            "embedding and output rows stay frozen at zero under train.mode = lora, so no "
            "model can learn the canaries; use data.canary_design = 'unigram' or "
            "'random-secret', or train.mode = full or head",
            key="data.canary_design",
        )


def _known(registry: Any, name: str, key: str) -> None:
    try:
        registry.get(name)
    except DpauditError as exc:
        raise ConfigError(f"{key}: {exc}", key=key) from None


def _check_attacks(config: RunConfig) -> None:
    from dpaudit.attacks.registry import ATTACKS, attack_params, get_attack

    a = config.attack
    for name in a.attacks:
        _known(ATTACKS, name, "attack.attacks")
    for name in a.params:
        _known(ATTACKS, name, f"attack.params.{name}")
    for name in dict.fromkeys([*a.attacks, *a.params]):
        params = attack_params(a, name)
        try:
            get_attack(name, **params)
        except ConfigError:
            raise
        except DpauditError as exc:
            key = _culprit(name, params, a) or f"attack.params.{name}"
            raise ConfigError(f"{key}: {exc}", key=key) from None


def _culprit(name: str, params: Mapping[str, Any], attack_config: Any) -> str | None:
    """The dotted setting of the one parameter that the attack refuses on its own."""
    from dpaudit.attacks.registry import ATTACKS, get_attack

    legacy = dict(getattr(ATTACKS.get(name), "legacy_fields", {}) or {})
    given = attack_config.params.get(name) or {}
    for param, value in params.items():
        try:
            get_attack(name, **{param: value})
        except DpauditError:
            if param not in given and param in legacy:
                return f"attack.{legacy[param]}"
            return f"attack.params.{name}.{param}"
    return None


def _check_accountant(config: RunConfig) -> None:
    from dpaudit.accounting import ACCOUNTANTS, accountant_names

    t = config.train
    _known(ACCOUNTANTS, t.accountant, "train.accountant")
    calibrates = t.private and t.noise_multiplier is None
    if (
        calibrates
        and not ACCOUNTANTS.get(t.accountant).rigorous
        and not t.allow_approximate_accountant
    ):
        raise ConfigError(
            f"train.accountant: {t.accountant!r} is an approximation that can understate epsilon, "
            f"so it cannot calibrate the noise (use one of {', '.join(accountant_names(rigorous=True))}, "
            "or set train.allow_approximate_accountant = true)",
            key="train.accountant",
        )


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _check_train(config: RunConfig) -> None:
    """``train.model`` (an ``embedded:`` name must exist) and ``train.device`` (its syntax,
    and for ``cuda``/``cuda:N`` that such a device is visible: before any stage starts, not
    inside one)."""
    from dpaudit.trainers.models import EMBEDDED

    t = config.train
    if t.model.startswith("embedded:") and t.model not in EMBEDDED:
        raise ConfigError(
            f"train.model: {unknown_name('embedded model', t.model, EMBEDDED)}",
            key="train.model",
        )
    if not _DEVICE.fullmatch(t.device):
        raise ConfigError(
            f"train.device = {t.device!r} is not a device (use auto, cpu, cuda or cuda:N)",
            key="train.device",
        )
    if t.device.startswith("cuda"):
        from dpaudit.errors import DpauditError
        from dpaudit.trainers.models import resolve_device

        try:
            resolve_device(t.device)
        except DpauditError as exc:
            raise ConfigError(f"{exc}; use auto or cpu", key="train.device") from None


def _check_federated(config: RunConfig) -> None:
    """A federated (or user-level) run: Flower installed, settings the federation can run."""
    fed = config.federated
    if (fed.enabled or config.train.unit == "user") and config.train.references_backend == "ray":
        raise ConfigError(
            "train.references_backend = ray trains central reference models; the references of "
            "a federated or user-level run are federations, run in process (one after another)",
            key="train.references_backend",
        )
    if config.train.unit == "user":
        if fed.enabled:
            raise ConfigError(
                "train.unit = user is user-level DP of central training; a federated run is "
                "client-level already (drop one of them)",
                key="train.unit",
            )
        if config.data.path and not config.data.user_field:
            raise ConfigError(
                "train.unit = user needs data.user_field (the column naming each record's user)",
                key="data.user_field",
            )
        if sys.version_info < (3, 11):
            raise ConfigError(
                "train.unit = user needs Python >= 3.11 (it runs on Flower)", key="train.unit"
            )
        from dpaudit.trainers.federated.run import check_flower

        try:
            check_flower()
        except DpauditError as exc:
            raise ConfigError(f"train.unit = user: {exc}", key="train.unit") from None
        return
    if not fed.enabled:
        return
    if sys.version_info < (3, 11):
        raise ConfigError(
            "federated.enabled needs Python >= 3.11 (Flower 1.42)", key="federated.enabled"
        )
    from dpaudit.trainers.federated.run import check_flower

    try:
        check_flower()
    except DpauditError as exc:
        raise ConfigError(f"federated.enabled: {exc}", key="federated.enabled") from None
    if fed.local_dp and fed.strategy == "fedprox":
        raise ConfigError(
            "federated.strategy = fedprox cannot be combined with local_dp (the proximal term "
            "is not part of the clipped per-example loss)",
            key="federated.strategy",
        )
    if config.train.mode == "head":
        raise ConfigError(
            "train.mode = head is not supported in a federated run; use full or lora",
            key="train.mode",
        )
    if config.train.task != "causal_lm":
        raise ConfigError(
            "federated runs fine-tune causal language models (train.task = causal_lm)",
            key="train.task",
        )
    if fed.partition == "user" and config.data.path and not config.data.user_field:
        raise ConfigError(
            "federated.partition = user needs data.user_field (the column naming each record's user)",
            key="data.user_field",
        )
    if fed.partition != "user" and fed.clients_per_round > fed.clients:
        raise ConfigError(
            f"federated.clients_per_round = {fed.clients_per_round} exceeds federated.clients = "
            f"{fed.clients}",
            key="federated.clients_per_round",
        )
    if fed.clipping == "adaptive" and config.train.private:
        from dpaudit.trainers.federated.server import update_noise_multiplier

        sigma_b = fed.clipped_count_stddev or fed.clients_per_round / 20.0
        z = config.train.noise_multiplier
        if z is not None:
            try:
                update_noise_multiplier(z, sigma_b)
            except DpauditError as exc:
                raise ConfigError(str(exc), key="federated.clipped_count_stddev") from None


def _check_data(config: RunConfig, *, load: bool = True) -> None:
    """``data.secret_space`` parses; a local ``data.path`` exists and loads, has enough
    records to split and to fill one batch, and is labeled for classification."""
    from dpaudit.datasets.canaries import parse_space

    d, t = config.data, config.train
    try:
        parse_space(d.secret_space)
    except ConfigError:
        raise
    except DpauditError as exc:
        raise ConfigError(f"data.secret_space: {exc}", key="data.secret_space") from None
    if not d.path or not load:
        return
    if d.path.startswith("package:") or (d.format == "hf" and not Path(d.path).exists()):
        return  # a packaged or hub dataset: checked when it is loaded
    from dpaudit.datasets.loaders import Fields, load_records

    try:
        records = load_records(d.path, format=d.format, fields=Fields.of(d))
    except DpauditError as exc:
        raise ConfigError(f"data.path: {exc}", key="data.path") from None
    n = len(records)
    if round(d.member_fraction * n) < 1 or round(d.nonmember_fraction * n) < 1:
        raise ConfigError(
            f"data.path: {d.path}: {n} record(s) are too few to split into members and non-members",
            key="data.path",
        )
    if t.batch_size > n:
        raise ConfigError(
            f"train.batch_size = {t.batch_size} is larger than the data ({n} records in {d.path})",
            key="train.batch_size",
        )
    if t.task == "classification":
        unlabeled = next((r for r in records if r.label is None), None)
        if unlabeled is not None:
            raise ConfigError(
                f"data.path: {d.path}: record {unlabeled.id!r} has no label; train.task = "
                f"classification needs labels (set data.label_field)",
                key="data.path",
            )


# --------------------------------------------------------------------------- where a value came from


def _leaves(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{dotted}.")
        else:
            yield dotted


def _given(key: str | None, nested: Mapping[str, Any]) -> bool:
    """Whether the dotted ``key`` (or a setting inside or above it) is set in ``nested``."""
    if not key:
        return False
    return any(
        leaf == key or leaf.startswith(f"{key}.") or key.startswith(f"{leaf}.")
        for leaf in _leaves(nested)
    )


def _in_file(path: Path, key: str | None) -> str:
    line = _config.key_line(path, key)
    return f"{path}:{line}" if line else str(path)
