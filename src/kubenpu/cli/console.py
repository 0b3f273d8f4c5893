"""``kubenpu console``: the read-only NPU console, a web page (docs/console.md)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kubenpu.errors import ConfigError, KubeNpuError

if TYPE_CHECKING:
    import uvicorn

    from kubenpu.console.service import ConsoleService


def console(
    kubeconfig: str = typer.Option("", "--kubeconfig", help="Kubeconfig (default: in-cluster)."),
    port: int = typer.Option(8080, "--port", help="Port of the pages, /events, /metrics."),
    address: str = typer.Option(
        "127.0.0.1", "--address", help="Address to listen on (loopback unless told)."
    ),
    policy: str = typer.Option(
        "", "--policy", help="Policy whose fragmentation measure is shown (default: kubenpu)."
    ),
    sim_report: Path | None = typer.Option(
        None,
        "--sim-report",
        help="`kubenpu simulate --explain --format json` output to show at /simulator "
        "(default: the built-in default, computed when the page is first opened).",
    ),
    sim_budget: float = typer.Option(
        30.0, "--sim-budget", help="Seconds the built-in default's replay may take at most."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Serve the NPU console: cluster grid, node details, pending pods, simulator report."""
    level = getattr(logging, log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    log = logging.getLogger("kubenpu.console")
    try:
        service, server = build(
            kubeconfig, address, port, policy, sim_report, sim_budget, log_level
        )
    except KubeNpuError as err:
        log.error("%s", err)
        raise typer.Exit(2) from None

    # uvicorn handles SIGINT and SIGTERM while it runs (stops accepting, closes the
    # streams) and raises the signal again once it returned, to the handler that was
    # there before: these, so that the process then ends normally (exit 0).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: None)
    service.start()
    log.info(
        "kubenpu console on http://%s:%d/ (policy %s)", address, port, service.store.cache.policy
    )
    try:
        server.run()
    finally:
        service.shutdown()
    if not server.started:
        log.error("cannot serve on %s:%d (see above)", address, port)
        raise typer.Exit(1)
    log.info("stopped")


def build(
    kubeconfig: str,
    address: str,
    port: int,
    policy: str = "",
    sim_report: Path | None = None,
    sim_budget: float = 30.0,
    log_level: str = "info",
) -> tuple[ConsoleService, uvicorn.Server]:
    """The console's informers (not started) and its web server (not running), checked
    settings first; ``ConfigError`` names a bad one. ``kubenpu scheduler --console-port``
    serves the same in the extender's process."""
    import uvicorn

    from kubenpu.console.app import LOOPBACK_HOSTS, Console
    from kubenpu.console.kubeapi import ConsoleApi
    from kubenpu.console.service import ConsoleService
    from kubenpu.console.simreport import SimulatorFeed, load_report
    from kubenpu.console.store import ConsoleStore
    from kubenpu.engine import policies

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: 0..65535")
    if sim_budget <= 0:
        raise ConfigError(f"--sim-budget {sim_budget}: must be positive")
    if policy:
        policies.validate(policy)
    report = load_report(sim_report) if sim_report is not None else None
    try:
        api = ConsoleApi(kubeconfig)
    except Exception as err:  # the client's own config errors: no traceback for them
        raise ConfigError(f"--kubeconfig {kubeconfig or '(in-cluster)'}: {err}") from None
    store = ConsoleStore(policy)
    service = ConsoleService(api, store)
    simulator = SimulatorFeed(report, budget_s=sim_budget)
    web = Console(store, simulator, ready=service.ready, loopback_only=address in LOOPBACK_HOSTS)
    config = uvicorn.Config(
        web.app,
        host=address,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        server_header=False,
        log_config=None,
    )
    return service, uvicorn.Server(config)


def main() -> None:
    """``python -m kubenpu.cli.console``."""
    typer.run(console)


if __name__ == "__main__":
    main()
