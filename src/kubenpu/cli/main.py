"""The ``kubenpu`` command: one sub-command per component."""

import typer

from kubenpu import __version__
from kubenpu.cli import dev_cluster, device_plugin, simulate

app = typer.Typer(
    name="kubenpu",
    help="NPU scheduling for Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulate")(simulate.simulate)
app.command("device-plugin")(device_plugin.device_plugin)
app.add_typer(dev_cluster.app, name="dev-cluster")


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(f"kubenpu {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app()
