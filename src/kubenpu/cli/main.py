"""The ``kubenpu`` command: one sub-command per component.

Sub-commands are imported only when asked for, so a node daemon such as
``kubenpu device-plugin`` does not pay (in start-up time and resident memory) for the
simulator's numpy or the dev cluster's code.
"""

import importlib
import sys
from collections.abc import Callable

import typer

from kubenpu import __version__


def _simulate(app: typer.Typer) -> None:
    app.command("simulate")(importlib.import_module("kubenpu.cli.simulate").simulate)


def _device_plugin(app: typer.Typer) -> None:
    module = importlib.import_module("kubenpu.cli.device_plugin")
    app.command("device-plugin")(module.device_plugin)


def _dra_driver(app: typer.Typer) -> None:
    app.command("dra-driver")(importlib.import_module("kubenpu.cli.dra_driver").dra_driver)


def _scheduler(app: typer.Typer) -> None:
    app.command("scheduler")(importlib.import_module("kubenpu.cli.scheduler").scheduler)


def _dev_cluster(app: typer.Typer) -> None:
    app.add_typer(importlib.import_module("kubenpu.cli.dev_cluster").app, name="dev-cluster")


def _console(app: typer.Typer) -> None:
    app.command("console")(importlib.import_module("kubenpu.cli.console").console)


def _webhook(app: typer.Typer) -> None:
    app.command("webhook")(importlib.import_module("kubenpu.cli.webhook").webhook)


#: Sub-command name -> how to register it.
COMMANDS: dict[str, Callable[[typer.Typer], None]] = {
    "simulate": _simulate,
    "device-plugin": _device_plugin,
    "dra-driver": _dra_driver,
    "dev-cluster": _dev_cluster,
    "webhook": _webhook,
    "scheduler": _scheduler,
    "console": _console,
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kubenpu {__version__}")
        raise typer.Exit()


def build_app(only: str | None = None) -> typer.Typer:
    """The CLI with sub-command ``only`` registered, or all of them when it is not one."""
    app = typer.Typer(
        name="kubenpu",
        help="NPU scheduling for Kubernetes.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """NPU scheduling for Kubernetes."""

    for name, register in COMMANDS.items():
        if only is None or only not in COMMANDS or name == only:
            register(app)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app(sys.argv[1] if len(sys.argv) > 1 else None)()
