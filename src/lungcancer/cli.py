"""The `lungcancer` command: parse flags, call the API, print. No logic lives here."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from lungcancer.errors import LungCancerError

app = typer.Typer(
    name="lungcancer",
    help="Lung cancer classification and progression simulation on CT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, split and audit datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


def main() -> None:
    """Entry point: run the app; a `LungCancerError` becomes a readable message and exit 2."""
    try:
        app(standalone_mode=False)
    except LungCancerError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
