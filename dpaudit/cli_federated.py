"""``dpaudit federated …``: attacks on federated updates and their defences (issue 15).

Registered on the main group by :mod:`dpaudit.cli`; the work is in
:mod:`dpaudit.workflows.fl_attacks`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from dpaudit.cli_common import CONTEXT
from dpaudit.cli_common import DpauditGroup as _Group
from dpaudit.cli_common import load_run_config as _load_run_config
from dpaudit.cli_common import run_options as _run_options


def _numbers(kind: type, low: float) -> Any:
    """A click callback parsing ``1,2,4`` into a tuple of ``kind`` ≥ ``low``."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            out = tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
        if not out or any(v < low for v in out):
            raise click.BadParameter(f"expected numbers ≥ {low:g}, got {value!r}")
        return out

    return parse


@click.group(cls=_Group, context_settings=CONTEXT)
def federated() -> None:
    """Attacks on federated updates, before and after their defences.

    \b
    Gradient inversion of one client's update:  dpaudit federated invert configs/fl-quickstart.toml
    Backdoor vs robust aggregation and DP:     dpaudit federated poison configs/fl-quickstart.toml
    Secure aggregation vs inversion, its cost:  dpaudit federated secagg configs/fl-quickstart.toml
    Each writes RUN/federated_attacks/<attack>.json; `dpaudit report RUN` shows it.
    """


@federated.command("invert", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
@click.option(
    "--batch-sizes",
    default="1,2,4,8",
    show_default=True,
    callback=_numbers(int, 1),
    help="Records per client batch B (comma-separated).",
)
@click.option(
    "--lengths",
    default="16,32",
    show_default=True,
    callback=_numbers(int, 2),
    help="Tokens per record L (texts cut to L; at most data.max_length).",
)
@click.option(
    "--sigmas",
    default="0,0.0001,0.001,0.01",
    show_default=True,
    callback=_numbers(float, 0),
    help="Noise multipliers σ of the client-side DP defence (0 = clipping alone).",
)
@click.option(
    "--clip",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Per-example clipping norm C of the DP defence.",
)
@click.option(
    "--lora/--no-lora", default=True, show_default=True, help="Also attack LoRA-only updates."
)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Client batches per cell.",
)
def invert(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
    batch_sizes: tuple[int, ...],
    lengths: tuple[int, ...],
    sigmas: tuple[float, ...],
    clip: float,
    lora: bool,
    trials: int,
) -> None:
    """Recover client text from one client's update (gradient inversion).

    The server (or an eavesdropper) sees one client's FedSGD update and knows the
    global model. Two attacks run on it: the token-set leak (non-zero rows of the
    input-embedding gradient: which tokens occur) and a DAGER span-test
    reconstruction (whole texts, exact when the batch holds fewer tokens than the
    model's width). Grid: batch size × text length × defence (none; clipping +
    Gaussian noise σ on the client; LoRA-only updates). Reports token
    precision/recall, ROUGE-L and exact recovery; never the recovered text.
    Uses the clients of CONFIG's federated run (created when there is none).
    """
    from dpaudit.workflows.fl_attacks import run_inversion

    cfg = _load_run_config(config_file, sets, name, runs_dir, seed)
    lines, _ = run_inversion(
        cfg,
        batch_sizes=batch_sizes,
        lengths=lengths,
        sigmas=sigmas,
        clip=clip,
        lora=lora,
        trials=trials,
        resume=resume,
        force=force,
        argv=sys.argv,
    )
    click.echo("\n".join(lines))


@federated.command("poison", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
@click.option(
    "--aggregators",
    default="mean,median,trimmed-mean,krum",
    show_default=True,
    help="Server aggregation rules to attack (comma-separated): mean (FedAvg), median, "
    "trimmed-mean, krum, multi-krum.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Rounds of each federation (the run's federation, shortened).",
)
@click.option(
    "--gamma",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Scale γ of the attacker's update (default n/η: the server's fixed denominator qN, "
    "i.e. the expected clients per round, over its learning rate; Bagdasaryan et al. 2020 "
    "Eq. 3).",
)
@click.option(
    "--attacker-records",
    type=click.IntRange(min=1),
    default=24,
    show_default=True,
    help="Poisoned records the attacker trains on (from the population split).",
)
def poison(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
    aggregators: str,
    rounds: int,
    gamma: float | None,
    attacker_records: int,
) -> None:
    """Backdoor a federation from one malicious client; measure robust aggregation and DP.

    One extra client joins every round with records that end in a trigger phrase and
    the attacker's target continuation, and sends its update scaled by γ (model
    replacement). Each aggregation rule runs without and with DP-FedAvg's clipping
    and noise; the control is the same federation without the attacker. Reports the
    attack success rate (greedy continuation of trigger prompts begins with the
    target) and the held-out loss (clean utility).
    """
    from dpaudit.workflows.fl_attacks import run_poisoning

    cfg = _load_run_config(config_file, sets, name, runs_dir, seed)
    names = tuple(a.strip() for a in aggregators.split(",") if a.strip())
    lines, _ = run_poisoning(
        cfg,
        aggregators=names,
        rounds=rounds,
        gamma=gamma,
        attacker_records=attacker_records,
        resume=resume,
        force=force,
        argv=sys.argv,
    )
    click.echo("\n".join(lines))


@federated.command("secagg", context_settings=CONTEXT)
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@_run_options
@click.option(
    "--cohorts",
    default="2,4,8",
    show_default=True,
    callback=_numbers(int, 2),
    help="Clients per secure-aggregation round m (comma-separated).",
)
@click.option(
    "--length",
    type=click.IntRange(min=2),
    default=16,
    show_default=True,
    help="Tokens of each client's record (at most data.max_length).",
)
@click.option(
    "--trials", type=click.IntRange(min=1), default=3, show_default=True, help="Cohorts per size."
)
def secagg(
    config_file: str,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
    resume: bool,
    force: bool,
    cohorts: tuple[int, ...],
    length: int,
    trials: int,
) -> None:
    """Secure aggregation (SecAgg+) against gradient inversion, and what it costs.

    Runs SecAgg+ (Flower's key agreement, Shamir sharing, masking and quantisation,
    in process) over cohorts of clients' one-step updates and attacks what the
    server holds: one client's plain update (no SecAgg), the same client's masked
    input, and the unmasked sum (the cohort's texts, not attributable to a client).
    Reports recovery, whether the masked input looks uniform, round time with and
    without SecAgg and the bytes each client sends.
    """
    from dpaudit.workflows.fl_attacks import run_secagg

    cfg = _load_run_config(config_file, sets, name, runs_dir, seed)
    lines, _ = run_secagg(
        cfg,
        cohorts=cohorts,
        length=length,
        trials=trials,
        resume=resume,
        force=force,
        argv=sys.argv,
    )
    click.echo("\n".join(lines))
