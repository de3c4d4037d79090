"""The ``dpaudit`` command line.

Thin by design: each command parses options, builds a config and calls one
library function. Heavy imports (torch, transformers) happen inside commands
so that ``dpaudit --help`` returns at once. Bad input is reported on one line
with exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from dpaudit import __version__
from dpaudit.cli_common import CONTEXT
from dpaudit.cli_common import DpauditGroup as _Group
from dpaudit.cli_common import load_run_config as _load_run_config
from dpaudit.cli_common import run_options as _run_options
from dpaudit.cli_common import set_option as _set_option
from dpaudit.cli_federated import federated
from dpaudit.cli_options import dataclass_options
from dpaudit.config import MAX_SEED
from dpaudit.errors import DpauditError
from dpaudit.workflows.options import CheckpointAuditOptions


def _echo_json(obj: Any) -> None:
    from dpaudit.atomic import dumps

    click.echo(dumps(obj), nl=False)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="dpaudit")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output: -v dpaudit's progress log and library warnings, -vv debug.",
)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """dpaudit: privacy auditing and attack evaluation for fine-tuned language models.

    \b
    The main job, data to verdict:   dpaudit run configs/quickstart.toml
    Stage by stage:                  dpaudit train | train-references | attack all | audit | report
    A released checkpoint:           dpaudit audit-checkpoint --model DIR --members F --nonmembers F --out RUN
    Is the auditor trustworthy?      dpaudit selftest
    In CI:                           dpaudit gate runs/NAME/report/report.json --max-auc 0.6
    Attacks on federated updates:    dpaudit federated invert configs/fl-quickstart.toml
    """
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, debug=debug)
    _configure_logging(verbose)
    if ctx.invoked_subcommand not in (None, "train"):
        from dpaudit.trainers.distributed import ranks_from_env

        ranks = ranks_from_env()
        if ranks.active and not ranks.is_main:
            ctx.exit(2)  # rank 0 says why, once
        if ranks.active:
            raise DpauditError(
                f"`dpaudit {ctx.invoked_subcommand}` runs in one process; under torchrun only "
                "`dpaudit train` runs (then e.g. `dpaudit run CONFIG --resume` without torchrun)"
            )


def _configure_logging(verbose: int) -> None:
    """``-v``: dpaudit's INFO log and the libraries' warnings; ``-vv``: DEBUG and their INFO.

    Without ``-v`` only dpaudit's warnings reach stderr, and transformers is told
    (through its environment variables, before it is imported) to print errors
    only and no weight-loading bars, so its load reports and advisory notices do
    not bury dpaudit's own lines. A variable the user set is left alone.
    """
    import logging
    import os

    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("dpaudit").setLevel(level)
    for noisy in ("urllib3", "filelock", "matplotlib", "PIL", "fsspec"):
        logging.getLogger(noisy).setLevel(
            max(level, logging.INFO if verbose >= 3 else logging.WARNING)
        )
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", {0: "error", 1: "warning"}.get(verbose, "info"))
    if verbose == 0:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


# ----------------------------------------------------------------------------- config
@cli.group(cls=_Group, context_settings=CONTEXT)
def config() -> None:
    """Inspect and validate run configurations (TOML)."""


@config.command("show", context_settings=CONTEXT)
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@_set_option
def config_show(file: str | None, sets: tuple[str, ...]) -> None:
    """Print the resolved configuration of FILE (defaults when FILE is omitted)."""
    from dpaudit.config import to_toml
    from dpaudit.workflows.validate import load_config

    click.echo(to_toml(load_config(file, sets=sets)), nl=False)


@config.command("check", context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False))
@_set_option
def config_check(file: str, sets: tuple[str, ...]) -> None:
    """Validate FILE; exit 2 with the offending key on error."""
    from dpaudit.workflows.validate import load_config

    load_config(file, sets=sets)
    click.echo(f"{file}: ok")


@config.command("fields", context_settings=CONTEXT)
def config_fields() -> None:
    """List every setting with its default and help text."""
    from dpaudit.workflows.validate import describe_fields

    for name, help_text, default in describe_fields():
        click.echo(f"{name:34s} {default!r:>22}  {help_text}")


# ----------------------------------------------------------------------------- datasets
@cli.group(cls=_Group, context_settings=CONTEXT)
def datasets() -> None:
    """Create and check datasets."""


@datasets.command("synth", context_settings=CONTEXT)
@click.option(
    "--domain",
    type=click.Choice(["clinical", "support", "banking"]),
    default="clinical",
    show_default=True,
    help="Kind of sensitive text to generate.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Number of records.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=MAX_SEED),
    default=0,
    show_default=True,
    help="Random seed.",
)
@click.option(
    "--num-labels",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Classes for the label field.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Output JSONL file (written atomically).",
)
def datasets_synth(domain: str, n: int, seed: int, num_labels: int, out: str) -> None:
    """Generate a synthetic corpus with typed PII and ground-truth spans.

    Each record carries PII (PERSON, EMAIL, PHONE, ADDRESS, SSN, CREDIT_CARD,
    DATE_OF_BIRTH, ...) with character spans, some values repeated across
    records at controlled frequencies, so that PII leakage can be measured
    against duplication.
    """
    from dpaudit.datasets.synth import synthesize, write_jsonl

    records = synthesize(domain, n, seed, num_labels=num_labels)
    write_jsonl(records, out)
    click.echo(f"wrote {len(records)} {domain} records to {out}")


@datasets.command("check", context_settings=CONTEXT)
@click.argument("file", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv", "tsv", "parquet", "text", "hf"]),
    default="auto",
    show_default=True,
    help="File format ('auto': from the extension; .tsv/.tab = tsv).",
)
@click.option(
    "--delimiter", default=None, help="CSV/TSV field delimiter (default ',' for csv, tab for tsv)."
)
@click.option(
    "--label-map",
    "label_map",
    default=None,
    metavar="NAME=INDEX,...",
    help="Map string labels to class indices, e.g. positive=1,negative=0.",
)
@click.option("--text-field", default="text", show_default=True, help="Column holding the text.")
@click.option("--label-field", default=None, help="Column holding the label.")
@click.option("--id-field", default=None, help="Column holding a unique id.")
@click.option("--user-field", default=None, help="Column holding the user id.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def datasets_check(
    file: str,
    fmt: str,
    delimiter: str | None,
    label_map: str | None,
    text_field: str,
    label_field: str | None,
    id_field: str | None,
    user_field: str | None,
    as_json: bool,
) -> None:
    """Summarise FILE (records, fields, lengths, labels, PII by kind); exit 2 on bad input."""
    from dpaudit.datasets.loaders import Fields, load_records
    from dpaudit.datasets.summary import summarize

    pairs: list[tuple[str, int]] = []
    for item in filter(None, (label_map or "").split(",")):
        name, _, index = item.partition("=")
        if not name.strip() or not index.strip().lstrip("-").isdigit():
            raise DpauditError(f"--label-map: expected NAME=INDEX, got {item!r}")
        pairs.append((name.strip(), int(index)))
    fields = Fields(text_field, label_field, id_field, user_field, tuple(pairs), delimiter or None)
    from dpaudit.datasets.packaged import data_source

    records = load_records(file, format=fmt, fields=fields)
    summary = summarize(records, data_source(file))
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"{file}: ok")
        for line in summary.lines():
            click.echo("  " + line)


# ----------------------------------------------------------------------------- runs
@cli.command("prepare", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
def prepare(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
) -> None:
    """Run the data stage of CONFIG: load or synthesize data, split it, plant canaries."""
    from dpaudit.workflows.run import run_prepare

    cfg = _load_run_config(config_file, sets, name, runs_dir, seed)
    summary = run_prepare(cfg, resume=resume, argv=sys.argv, force=force)
    click.echo("\n".join(summary))


@cli.command("demo", context_settings=CONTEXT)
@_run_options
def demo(
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
) -> None:
    """The main job on the embedded default: `dpaudit run configs/quickstart.toml`."""
    from dpaudit.workflows.run import demo_config_path, run_all

    cfg = _load_run_config(str(demo_config_path()), sets, name, runs_dir, seed)
    result = run_all(cfg, resume=resume, argv=sys.argv, force=force)
    click.echo("\n".join([*result.lines, *result.headline()]))


# ----------------------------------------------------------------------------- accounting
def _accountants_help() -> str:
    """The registered accountants, rigorous ones first (``rdp, prv, pld (rigorous); ...``)."""
    from dpaudit.accounting import accountant_names

    rigorous, approximate = accountant_names(rigorous=True), accountant_names(rigorous=False)
    return f"{', '.join(rigorous)} (rigorous); {', '.join(approximate)} (approximate)"


def _default_time_limit() -> float:
    from dpaudit.accounting import DEFAULT_TIME_LIMIT

    return DEFAULT_TIME_LIMIT


_DEFAULT_TIME_LIMIT = _default_time_limit()


@cli.command("accountant", context_settings=CONTEXT)
@click.option(
    "--sampling-rate",
    "-q",
    type=click.FloatRange(0, 1, min_open=True),
    required=True,
    help="Poisson sampling rate q = expected batch size / dataset size.",
)
@click.option(
    "--noise-multiplier",
    "-s",
    type=click.FloatRange(min=0),
    default=None,
    help="Noise multiplier sigma (noise std / clipping norm).",
)
@click.option(
    "--epsilon",
    "-e",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Target epsilon: print the noise multiplier each accountant needs instead.",
)
@click.option(
    "--steps", "-t", type=click.IntRange(min=1), required=True, help="Number of DP-SGD steps."
)
@click.option(
    "--delta",
    "-d",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    required=True,
    help="Target delta.",
)
@click.option(
    "--accountant",
    "accountants",
    multiple=True,
    metavar="NAME",
    help=f"Accountant to use (repeatable): {_accountants_help()}. Default: all.",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULT_TIME_LIMIT,
    show_default=True,
    help="Seconds each accountant may take; a slower one is reported as failed, not waited on.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def accountant(
    sampling_rate: float,
    noise_multiplier: float | None,
    epsilon: float | None,
    steps: int,
    delta: float,
    accountants: tuple[str, ...],
    time_limit: float,
    as_json: bool,
) -> None:
    """Epsilon of Poisson-subsampled Gaussian DP-SGD under every accountant (add/remove adjacency).

    \b
    Forward:  dpaudit accountant -q 0.01 -s 1.0 -t 1000 -d 1e-5
    Inverse:  dpaudit accountant -q 0.01 -e 3 -t 1000 -d 1e-5   (noise multiplier needed)

    Rigorous accountants give proven upper bounds on epsilon; approximate ones
    are estimates that can fall below the true epsilon. Each line says which.
    An accountant that fails (or runs past --time-limit) is reported as failed
    with the reason (JSON: "status": "failed" and "errors") while the others
    answer; the exit code is 1 when none of them answered.
    """
    from dpaudit.accounting import ACCOUNTANTS, accountant_report

    if (noise_multiplier is None) == (epsilon is None):
        raise DpauditError("give exactly one of --noise-multiplier and --epsilon")
    if not math.isfinite(time_limit):
        raise DpauditError(f"--time-limit must be a finite number of seconds, got {time_limit}")
    names = accountants or tuple(ACCOUNTANTS)
    head = [f"q = {sampling_rate:g}, steps = {steps}, delta = {delta:g}, add/remove adjacency"]
    if epsilon is None:
        head.append(f"noise multiplier = {noise_multiplier:g}")
        label = "epsilon"
    else:
        head.append(f"target epsilon = {epsilon:g}")
        label = "noise multiplier"

    def show(name: str, value: float | None, error: str | None) -> None:
        """Print each accountant's line as it finishes (after the header, once inputs are valid)."""
        while head:
            click.echo(head.pop(0))
        kind = "rigorous" if ACCOUNTANTS[name].rigorous else "approximate"
        if value is not None:
            click.echo(f"  {name:10s} {label} = {value:.4f}   ({kind})")
        else:
            click.echo(f"  {name:10s} failed: {error or 'unknown error'}")

    report = accountant_report(
        sampling_rate=sampling_rate,
        steps=steps,
        delta=delta,
        noise_multiplier=noise_multiplier,
        epsilon=epsilon,
        accountants=names,
        time_limit=time_limit,
        on_result=None if as_json else show,
    )
    if as_json:
        _echo_json(report)
    if all(entry["status"] == "failed" for entry in report["accountants"].values()):
        click.echo("error: no accountant answered", err=True)
        sys.exit(1)


# ----------------------------------------------------------------------------- training
@cli.command("train", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
@click.option(
    "--dp/--no-dp",
    "dp",
    default=None,
    help="Train the target with / without DP (train.dp; default: the config's).",
)
@click.option(
    "--target-epsilon", type=float, default=None, help="Target epsilon for noise calibration."
)
@click.option("--epochs", type=float, default=None, help="Training epochs.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
def train(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
    dp: bool | None,
    target_epsilon: float | None,
    epochs: float | None,
    device: str | None,
) -> None:
    """Fine-tune the target model of CONFIG with DP-SGD (and the non-private baseline).

    Writes target/ and baseline/ in the run directory: safetensors weights,
    tokenizer, privacy.json (the ledger), train_log.jsonl and metrics.json.
    With --resume an interrupted run continues from its last checkpoint and
    the ledger keeps counting every step ever taken; settings that differ from
    those the run's finished stages were built with are refused (--force
    starts the run over).

    On several processes or GPUs (same lots and ledger as one process; rank 0
    writes the run; then the other stages without torchrun, with --resume):

    \b
      torchrun --standalone --nproc-per-node 2 -m dpaudit train CONFIG
    """
    from dpaudit.workflows.run import run_train
    from dpaudit.workflows.validate import load_config

    train_over = {
        "dp": dp,
        "target_epsilon": target_epsilon,
        "epochs": epochs,
        "device": device,
    }
    cfg = load_config(
        config_file,
        sets=sets,
        overrides={"name": name, "runs_dir": runs_dir, "seed": seed, "train": train_over},
    )
    lines = run_train(cfg, resume=resume, argv=sys.argv, force=force)
    if lines:  # under torchrun, rank 0 alone prints
        click.echo("\n".join(lines))


@cli.command("train-references", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
@click.option(
    "--num", type=click.IntRange(min=1), default=None, help="Number of reference models K."
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where the references train (train.references_backend): local, one after another, "
    "or ray, one Ray task each.",
)
@click.option(
    "--ray-address",
    default=None,
    help="An existing Ray cluster (train.references_ray_address, e.g. auto or "
    "ray://head:10001); implies --backend ray. Without it Ray starts locally.",
)
def train_references(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
    num: int | None,
    backend: str | None,
    ray_address: str | None,
) -> None:
    """Train K reference (shadow) models on random halves of the data pool.

    Each example lands in about half the models; the membership matrix
    (examples x models) goes to references/membership.npy so that online and
    offline LiRA and RMIA can use it. Finished models are kept on a rerun.
    With --backend ray (or --ray-address) each model is one Ray task reserving
    train.reference_cpus / train.reference_gpus, retried on failure. A federated
    run's references are federations of its recipe over halves of its users.
    Adds to the run of CONFIG: settings that differ from those its finished data
    and training stages were built with are refused (--force starts the run
    over, discarding its trained models).
    """
    from dpaudit.workflows.run import run_train_references

    if ray_address is not None:
        sets = (
            *sets,
            "train.references_backend=ray",
            f"train.references_ray_address={ray_address}",
        )
    elif backend is not None:
        sets = (*sets, f"train.references_backend={backend}")
    cfg = _load_run_config(config_file, sets, name, runs_dir, seed)
    click.echo(
        "\n".join(run_train_references(cfg, num=num, resume=resume, argv=sys.argv, force=force))
    )


# ----------------------------------------------------------------------------- bound calculators
@cli.group(cls=_Group, context_settings=CONTEXT)
def bound() -> None:
    """Empirical epsilon lower bounds from attack counts (calculators)."""


_confidence_option = click.option(
    "--confidence",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Confidence 1 - beta of the bound.",
)
_delta_option = click.option(
    "--delta",
    type=click.FloatRange(0, 1, max_open=True),
    required=True,
    help="Delta of the DP claim being tested.",
)


def _print_bound(result: Any, as_json: bool) -> None:
    payload = {"epsilon_lower_bound": result.epsilon, **result.to_dict()}
    if as_json:
        _echo_json(payload)
        return
    click.echo(
        f"epsilon lower bound = {result.epsilon:.4f}  ({result.method}, delta = {result.delta:g}, "
        f"confidence = {result.confidence:g}; {result.n_correct}/{result.n_guesses} correct guesses)"
    )


@bound.command(
    "threshold",
    context_settings=CONTEXT,
    short_help="Clopper-Pearson audit from TP/FP/TN/FN counts at a fixed threshold.",
)
@click.option("--tp", type=click.IntRange(min=0), required=True, help="Members guessed 'in'.")
@click.option("--fp", type=click.IntRange(min=0), required=True, help="Non-members guessed 'in'.")
@click.option("--tn", type=click.IntRange(min=0), required=True, help="Non-members guessed 'out'.")
@click.option("--fn", type=click.IntRange(min=0), required=True, help="Members guessed 'out'.")
@_delta_option
@_confidence_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def bound_threshold_cmd(
    tp: int, fp: int, tn: int, fn: int, delta: float, confidence: float, as_json: bool
) -> None:
    """Clopper-Pearson counts audit (Jagielski et al. 2020; Nasr et al. 2021).

    The counts must come from a threshold fixed before seeing these scores.
    Each of FPR and FNR gets a one-sided Clopper-Pearson upper bound at
    beta/2, and eps_lb = max(log((1-delta-FNR)/FPR), log((1-delta-FPR)/FNR)),
    floored at 0.
    """
    from dpaudit.audit.lower_bound import bound_threshold

    _print_bound(bound_threshold(tp, fp, tn, fn, delta=delta, confidence=confidence), as_json)


@bound.command(
    "one-run",
    context_settings=CONTEXT,
    short_help="One-run audit bound from canary guesses (Steinke, Nasr, Jagielski 2023).",
)
@click.option(
    "--canaries",
    "m",
    type=click.IntRange(min=1),
    required=True,
    help="Canaries m (each included by a coin flip).",
)
@click.option(
    "--guesses",
    "r",
    type=click.IntRange(min=0),
    required=True,
    help="Guesses made r (abstentions excluded).",
)
@click.option(
    "--correct", "v", type=click.IntRange(min=0), required=True, help="Correct guesses v."
)
@_delta_option
@_confidence_option
@click.option(
    "--estimator",
    default="steinke",
    show_default=True,
    metavar="NAME",
    help="Estimator of the reported bound: steinke, fdp-epsdelta, fdp-gdp or a registered one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def bound_one_run_cmd(
    m: int, r: int, v: int, delta: float, confidence: float, estimator: str, as_json: bool
) -> None:
    """One-run audit (Steinke, Nasr, Jagielski 2023), every estimator side by side.

    steinke: the largest epsilon whose p-value P[Binomial(r, e^eps/(1+e^eps)) >= v]
    (plus the 2·m·delta term for delta > 0) is still below beta. fdp-epsdelta,
    fdp-gdp: the one-run f-DP audit (Mahloujifar, Melis, Chaudhuri 2025) with the
    (epsilon, delta) curve, or with mu-GDP curves (valid only if the mechanism's
    trade-off curve is Gaussian). The ceiling is the bound with every guess right.
    """
    from dpaudit.audit.estimators import ESTIMATORS
    from dpaudit.audit.lower_bound import bound_one_run

    primary = bound_one_run(
        canaries=m, guesses=r, correct=v, delta=delta, confidence=confidence, estimator=estimator
    )
    table: dict[str, dict[str, Any]] = {}
    for name, est in ESTIMATORS.items():
        if est.inputs != "counts":  # e.g. gauss reads canary scores (white-box audits)
            continue
        row: dict[str, Any] = {"guarantee": est.guarantee, "description": est.description}
        try:
            row["epsilon"] = est.epsilon(m=m, r=r, v=v, delta=delta, confidence=confidence)
            row["ceiling"] = est.ceiling(m=m, r=r, delta=delta, confidence=confidence)
        except DpauditError as exc:
            row["error"] = str(exc)
        table[name] = row
    if as_json:
        _echo_json(
            {"epsilon_lower_bound": primary.epsilon, **primary.to_dict(), "estimators": table}
        )
        return
    click.echo(
        f"epsilon lower bound = {primary.epsilon:.4f}  ({primary.estimator}, {primary.guarantee}, "
        f"delta = {primary.delta:g}, confidence = {primary.confidence:g}; "
        f"{primary.n_correct}/{primary.n_guesses} correct guesses)"
    )
    for name, row in table.items():
        if "error" in row:
            click.echo(f"  {name:<14} n/a      {row['error']}")
        else:
            click.echo(
                f"  {name:<14} {row['epsilon']:<8.4f} ceiling {row['ceiling']:.4f}  "
                f"({row['guarantee']})"
            )


# ----------------------------------------------------------------------------- attacks and audit
_run_dir_option = click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run directory (runs/<name>) with trained models.",
)
_model_option = click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Choice(["target", "baseline"]),
    help="Model(s) to attack (repeatable). Default: every trained one.",
)


@cli.group(cls=_Group, context_settings=CONTEXT)
def attack() -> None:
    """Run attacks against the trained models of a run (results in <run>/attacks/)."""


def _attack(
    run_dir: str,
    parts: tuple[str, ...],
    models: tuple[str, ...],
    sets: tuple[str, ...],
    resume: bool,
) -> None:
    from dpaudit.workflows.run import run_attacks
    from dpaudit.workflows.validate import check_run_config

    check_run_config(run_dir, sets)
    click.echo(
        "\n".join(
            run_attacks(run_dir, parts=parts, models=models or None, sets=sets, resume=resume)
        )
    )


@attack.command("mia", context_settings=CONTEXT)
@_run_dir_option
@_model_option
@click.option(
    "--attacks",
    default=None,
    metavar="A,B,...",
    help="Attacks to run, e.g. loss,zlib,mink,minkpp,reference,lira,rmia (default: the config's).",
)
@_set_option
@click.option("--resume", is_flag=True, help="Skip when the model and settings are unchanged.")
def attack_mia(
    run_dir: str, models: tuple[str, ...], attacks: str | None, sets: tuple[str, ...], resume: bool
) -> None:
    """Membership inference: per-example scores, ROC AUC and TPR at low FPR with CIs.

    Members and non-members are balanced; the blind (text-only) baseline is
    computed once per run and warns when the split itself is separable.
    Reference-based attacks (reference, lira, rmia) need `dpaudit train-references`.
    """
    sets = sets + ((f"attack.attacks={attacks}",) if attacks else ())
    _attack(run_dir, ("mia",), models, sets, resume)


@attack.command("canary", context_settings=CONTEXT)
@_run_dir_option
@_model_option
@_set_option
@click.option("--resume", is_flag=True, help="Skip when the model and settings are unchanged.")
def attack_canary(
    run_dir: str, models: tuple[str, ...], sets: tuple[str, ...], resume: bool
) -> None:
    """Canary exposure (exact or extrapolated) and extraction success by repetition count."""
    _attack(run_dir, ("canary",), models, sets, resume)


@attack.command("memorization", context_settings=CONTEXT)
@_run_dir_option
@_model_option
@_set_option
@click.option("--resume", is_flag=True, help="Skip when the model and settings are unchanged.")
def attack_memorization(
    run_dir: str, models: tuple[str, ...], sets: tuple[str, ...], resume: bool
) -> None:
    """Verbatim memorization: greedy continuation of k-token prompts, by duplication count."""
    _attack(run_dir, ("memorization",), models, sets, resume)


@attack.command("pii", context_settings=CONTEXT)
@_run_dir_option
@_model_option
@_set_option
@click.option("--resume", is_flag=True, help="Skip when the model and settings are unchanged.")
def attack_pii(run_dir: str, models: tuple[str, ...], sets: tuple[str, ...], resume: bool) -> None:
    """PII extraction (precision/recall by kind and duplication) and inference vs chance."""
    _attack(run_dir, ("pii",), models, sets, resume)


@attack.command("all", context_settings=CONTEXT)
@_run_dir_option
@_model_option
@_set_option
@click.option("--resume", is_flag=True, help="Skip when the model and settings are unchanged.")
def attack_all(run_dir: str, models: tuple[str, ...], sets: tuple[str, ...], resume: bool) -> None:
    """Every attack: membership inference, canaries, memorization and PII."""
    from dpaudit.attacks.stage import PARTS

    _attack(run_dir, PARTS, models, sets, resume)


@cli.command("audit", context_settings=CONTEXT)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@_model_option
@_set_option
@click.option("--resume", is_flag=True, help="Skip when the model and settings are unchanged.")
def audit(run_dir: str, models: tuple[str, ...], sets: tuple[str, ...], resume: bool) -> None:
    """Empirical epsilon lower bound on the audit canaries vs the accountants' upper bounds.

    Each audit canary was included in training by a fair coin; the one-run
    audit (Steinke, Nasr, Jagielski 2023) or a held-out threshold audit turns
    their scores into eps_lb at the configured confidence. Verdict:
    'violation' when eps_lb exceeds the claimed epsilon (DP or its accounting
    is broken), else 'consistent'. Written to <run>/audit/bounds.json.
    """
    from dpaudit.workflows.run import run_audit
    from dpaudit.workflows.validate import check_run_config

    check_run_config(run_dir, sets)
    click.echo("\n".join(run_audit(run_dir, models=models or None, sets=sets, resume=resume)))


@cli.command("audit-checkpoint", context_settings=CONTEXT)
@dataclass_options(CheckpointAuditOptions)
def audit_checkpoint_command(**options: Any) -> None:
    """Audit a fine-tuned checkpoint before release (no training needed).

    \b
    dpaudit audit-checkpoint --model ./my-model --members train.jsonl --nonmembers heldout.jsonl \\
        --canaries canaries.jsonl --canary-inclusion inclusion.json \\
        --claimed-epsilon 8 --delta 1e-5 --out runs/release-audit

    The full run's attack stage, audit and report on a model trained
    elsewhere: membership inference (loss, zlib, min-k%, min-k%++; reference,
    LiRA and RMIA with reference models), the blind baseline, canary exposure
    and extraction, memorization and PII leakage, and the one-run audit of the
    canaries against the claimed epsilon. Weights are read from safetensors
    only, with no remote code; the run directory records their SHA-256.
    Everything is checked before the run directory is created.
    """
    from dpaudit.workflows.checkpoint_audit import run_checkpoint_audit

    result = run_checkpoint_audit(CheckpointAuditOptions(**options), argv=list(sys.argv))
    click.echo("\n".join(result.lines))


@cli.command("selftest", context_settings=CONTEXT)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="runs/selftest",
    show_default=True,
    help="Where the per-variant runs and selftest.json go.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=MAX_SEED),
    default=0,
    show_default=True,
    help="Random seed.",
)
@click.option(
    "--epsilon",
    "target_epsilon",
    type=click.FloatRange(0, min_open=True),
    default=2.0,
    show_default=True,
    help="Claimed epsilon of every variant.",
)
@click.option(
    "--canaries",
    "n_canaries",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    help="White-box gradient canaries (each included by a coin flip).",
)
@click.option(
    "--estimator",
    default="steinke",
    show_default=True,
    metavar="NAME",
    help="Estimator whose bound decides the verdicts (all registered ones are reported).",
)
@click.option(
    "--statistic",
    type=click.Choice(["sum", "likelihood-ratio"]),
    default="sum",
    show_default=True,
    help="Canary test statistic: the summed noisy-update coordinate (assumes nothing about q) "
    "or the per-step likelihood ratio under the claimed q and sigma.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def selftest(
    out_dir: str,
    seed: int,
    target_epsilon: float,
    n_canaries: int,
    estimator: str,
    statistic: str,
    as_json: bool,
) -> None:
    """Prove the auditor works: audit correct and deliberately broken DP-SGD.

    Trains the embedded default with correct DP-SGD and with three broken
    variants (noise never added; clipping skipped; sampling rate misreported to
    the accountant), each claiming the same epsilon, with full-batch steps,
    audits each with white-box gradient canaries and the one-run bound of every
    registered estimator, and prints per variant epsilon_lb and ceiling per
    estimator, the claimed epsilon and the verdict (of --estimator; 'inconclusive'
    when the ceiling is below the claim).
    Exit 0 when every broken variant is flagged 'violation' and the correct one
    is 'consistent', 1 otherwise.
    """
    import dataclasses

    from dpaudit.audit.selftest import SelftestSettings, run_selftest

    result = run_selftest(
        out_dir=out_dir,
        seed=seed,
        target_epsilon=target_epsilon,
        n_canaries=n_canaries,
        estimator=estimator,
        settings=dataclasses.replace(SelftestSettings(), statistic=statistic),
    )
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(result.table())
    sys.exit(0 if result.passed else 1)


# ----------------------------------------------------------------------------- the main job and reports
@cli.command("run", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
def run(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
) -> None:
    """The main job: data -> DP target + baseline -> references -> attacks -> audit -> report.

    Every stage is recorded in <run>/manifest.json; with --resume, stages whose
    inputs are unchanged are skipped and an interrupted training continues from
    its last checkpoint. Settings that differ from those the run's finished data
    and training stages were built with are refused; --force starts the run over.
    """
    from dpaudit.workflows.run import run_all

    cfg = _load_run_config(config_file, sets, name, runs_dir, seed)
    result = run_all(cfg, resume=resume, argv=sys.argv, force=force)
    click.echo("\n".join([*result.lines, *result.headline()]))


@cli.command("report", context_settings=CONTEXT)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.option(
    "--reveal/--no-reveal",
    default=None,
    help="Include recovered secrets and PII, or mask them (default: the run's report.reveal, "
    "itself off unless set).",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="FORMAT",
    help="Format to write (repeatable): a registered report format, e.g. html, md, json. "
    "Default: the run's config.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Output directory. Default: <run>/report.",
)
def report(
    run_dir: str, reveal: bool | None, formats: tuple[str, ...], out_dir: str | None
) -> None:
    """Re-render report.html, report.md and report.json from the run directory alone."""
    from dpaudit.workflows.run import run_report

    click.echo(
        "\n".join(run_report(run_dir, reveal=reveal, formats=formats or None, out_dir=out_dir))
    )


@cli.command("compare", context_settings=CONTEXT)
@click.argument(
    "run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(file_okay=False)
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="comparison",
    show_default=True,
    help="Where comparison.csv and comparison.html go.",
)
def compare(run_dirs: tuple[str, ...], out_dir: str) -> None:
    """Defense benchmark table over runs: epsilon claimed and measured, MIA, exposure, PII, utility."""
    from dpaudit.reports.compare import compare_runs, console_table

    table = compare_runs(list(run_dirs), out_dir)
    click.echo(console_table(table))
    click.echo(f"wrote {Path(out_dir) / 'comparison.csv'} and {Path(out_dir) / 'comparison.html'}")


@cli.command("sweep", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
def sweep(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
) -> None:
    """Run the main job over a grid of defenses and compare them.

    \b
    A --set whose value lists several values is a grid axis:
      dpaudit sweep configs/quickstart.toml --set train.target_epsilon=1,3,8,inf
    (inf = non-private). Runs are named <name>-<key><value>; the comparison goes
    to <runs_dir>/<name>-sweep/.
    """
    from dpaudit.workflows.run import run_sweep
    from dpaudit.workflows.validate import check_sweep

    if seed is not None:
        sets = (*sets, f"seed={seed}")
    check_sweep(config_file, sets=sets, name=name, runs_dir=runs_dir)  # every point, up front
    click.echo(
        "\n".join(
            run_sweep(
                config_file,
                sets=sets,
                name=name,
                runs_dir=runs_dir,
                resume=resume,
                argv=sys.argv,
                force=force,
            )
        )
    )


def _threshold_options(fn: Any) -> Any:
    """One ``--<name>`` option per threshold registered in ``dpaudit.reports.policy``."""
    from dpaudit.reports.policy import POLICY_THRESHOLDS

    for name, spec in reversed(POLICY_THRESHOLDS.items()):
        fn = click.option(
            "--" + name.replace("_", "-"),
            name,
            type=float,
            default=None,
            help=f"Fail when the {spec.label} exceeds this.",
        )(fn)
    return fn


@cli.command("gate", context_settings=CONTEXT)
@click.argument("report_json", metavar="REPORT_JSON", type=click.Path())
@_threshold_options
@click.option(
    "--threshold",
    "extra",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any registered threshold by name (repeatable), e.g. max_auc=0.6.",
)
@click.option(
    "--model",
    type=click.Choice(["target", "baseline"]),
    default="target",
    show_default=True,
    help="Which model of the report to judge.",
)
@click.option(
    "--allow-inconclusive/--no-allow-inconclusive",
    default=False,
    show_default=True,
    help="Pass despite inconclusive checks (an audit without power, a TPR the sample cannot "
    "resolve); they are still named in the output.",
)
def gate(
    report_json: str,
    extra: tuple[str, ...],
    model: str,
    allow_inconclusive: bool,
    **thresholds: float | None,
) -> None:
    """Fail a CI job (exit 1, one-line reason) when a report exceeds a threshold.

    REPORT_JSON is a report.json or a run directory. Without threshold
    options the run's own [report] policy applies. The audit check is always
    made: a violation fails, and an inconclusive audit (its ceiling below the
    claim, or the non-private control not detected) fails too unless
    --allow-inconclusive. A run that did not finish (a stage started and never
    finished, or failed; a partial privacy ledger) always fails, naming the
    stage. Exit codes: 0 pass, 1 threshold exceeded, inconclusive or run
    incomplete, 2 bad input.
    """
    from dpaudit.reports.gate import format_reason, gate_exit_code
    from dpaudit.reports.gate import gate as run_gate

    for item in extra:
        key, _, value = item.partition("=")
        try:
            thresholds[key.strip()] = float(value)
        except ValueError:
            raise DpauditError(f"--threshold {item!r}: expected NAME=NUMBER") from None
    result = run_gate(report_json, model=model, allow_inconclusive=allow_inconclusive, **thresholds)
    click.echo(format_reason(result), err=not result.passed)
    sys.exit(gate_exit_code(result))


cli.add_command(federated)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dpaudit")


if __name__ == "__main__":  # pragma: no cover
    main()
