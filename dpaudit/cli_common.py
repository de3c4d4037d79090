"""What every dpaudit command group shares: the click context, the error-handling group,
the run options and the config loader (used by :mod:`dpaudit.cli` and
:mod:`dpaudit.cli_federated`)."""

from __future__ import annotations

import traceback
from typing import Any

import click

from dpaudit.config import MAX_SEED
from dpaudit.errors import DpauditError

__all__ = ["CONTEXT", "DpauditGroup", "load_run_config", "run_options", "set_option"]

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class DpauditGroup(click.Group):
    """A click group that turns :class:`DpauditError` into one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DpauditError as exc:
            if debug_enabled(ctx):
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug, not bad input: say so, keep it to one line
            if debug_enabled(ctx):
                traceback.print_exc()
            else:
                first = str(exc).splitlines()[0] if str(exc) else ""
                click.echo(
                    f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
                    err=True,
                )
            ctx.exit(1)


def debug_enabled(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("debug"))


set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one setting (repeatable); beats the file, loses to explicit options.",
)


def run_options(fn: Any) -> Any:
    fn = set_option(fn)
    fn = click.option("--name", default=None, help="Run name (directory under runs_dir).")(fn)
    fn = click.option(
        "--runs-dir",
        default=None,
        type=click.Path(file_okay=False),
        help="Where run directories go.",
    )(fn)
    fn = click.option("--seed", type=int, default=None, help=f"Master seed (0 to {MAX_SEED}).")(fn)
    fn = click.option(
        "--resume",
        is_flag=True,
        help="Continue a run; stages with unchanged inputs are skipped. Settings that differ "
        "from those of its finished data and training stages are refused.",
    )(fn)
    fn = click.option(
        "--force",
        is_flag=True,
        help="Start the run over: discard the existing run directory of this name first.",
    )(fn)
    return fn


def load_run_config(
    file: str | None,
    sets: tuple[str, ...],
    name: str | None,
    runs_dir: str | None,
    seed: int | None,
) -> Any:
    from dpaudit.workflows.validate import load_config

    return load_config(
        file, sets=sets, overrides={"name": name, "runs_dir": runs_dir, "seed": seed}
    )
