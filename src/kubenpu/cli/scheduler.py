"""``kubenpu scheduler``: the kube-scheduler extender (filter, prioritize, bind, preempt)."""

from __future__ import annotations

import logging
import signal
import threading

import typer

from kubenpu import names
from kubenpu.errors import ConfigError, KubeNpuError


def scheduler(
    port: int = typer.Option(8888, "--port", help="Port for the extender API, health, metrics."),
    address: str = typer.Option("0.0.0.0", "--address", help="Address to listen on."),
    kubeconfig: str = typer.Option("", "--kubeconfig", help="Kubeconfig (default: in-cluster)."),
    policy: str = typer.Option(
        "", "--policy", help="Placement policy spec, e.g. fgd:2+bestfit (default: kubenpu)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the engine's tie-break order."),
    task_mix: str = typer.Option(
        "",
        "--task-mix",
        help="Pods (openb pod CSV or Pod YAML) whose shapes are the task mix the policy "
        "plans for, instead of the mix estimated from the cluster and recent requests.",
    ),
    tls_cert: str = typer.Option("", "--tls-cert", help="Serve HTTPS with this certificate."),
    tls_key: str = typer.Option("", "--tls-key", help="Private key of --tls-cert."),
    url_prefix: str = typer.Option(
        "", "--url-prefix", help="Path before the verbs, e.g. /scheduler (urlPrefix's path)."
    ),
    console_port: int = typer.Option(
        0,
        "--console-port",
        help="Also serve the NPU console (docs/console.md) on this port, in this process (0: not).",
    ),
    console_address: str = typer.Option(
        "127.0.0.1", "--console-address", help="Address of --console-port (loopback unless told)."
    ),
    dra_driver: str = typer.Option(
        names.DRA_DRIVER,
        "--dra-driver",
        help="DRA driver whose ResourceSlices and claims are kubenpu's NPUs on DRA nodes: "
        "prioritize rates them, bind writes a pod's claimed devices as kubenpu.io/devices "
        "(kubenpu dra-driver's --driver).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error."),
) -> None:
    """Serve kube-scheduler's extender calls from kubenpu's placement engine."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # The client logs each retry of its connection pool at WARNING; ours say enough.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    log = logging.getLogger("kubenpu.scheduler")
    try:
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        from kubenpu.engine import policies
        from kubenpu.extender.kubeapi import KubernetesApi
        from kubenpu.extender.server import ExtenderHTTPServer
        from kubenpu.extender.service import ExtenderService

        if policy:
            policies.validate(policy)
        try:
            api = KubernetesApi(kubeconfig)
        except Exception as err:  # the client's own config errors: no traceback for them
            raise ConfigError(f"--kubeconfig {kubeconfig or '(in-cluster)'}: {err}") from None
        mix = []
        if task_mix:
            from pathlib import Path

            from kubenpu.cli.simulate import read_pods

            mix = read_pods(Path(task_mix))
            log.info("task mix: %d pods from %s", len(mix), task_mix)
        service = ExtenderService(
            api, policy=policy, seed=seed, task_mix=mix, dra_driver=dra_driver
        )
        server = ExtenderHTTPServer(
            (address, port),
            service.extender,
            ready=service.ready,
            prefix=url_prefix,
            tls=(tls_cert, tls_key) if tls_cert else None,
            preempter=service.preempter,
        )
        console = None
        if console_port:
            from kubenpu.cli.console import build

            if console_port == port:
                raise ConfigError(f"--console-port {console_port}: the extender's own --port")
            console = build(kubeconfig, console_address, console_port, policy, log_level=log_level)
    except KubeNpuError as err:
        log.error("%s", err)
        raise typer.Exit(2) from None
    except OSError as err:
        log.error("cannot start: %s", err)
        raise typer.Exit(1) from None

    def stop(signum: int, _frame: object) -> None:
        log.info("got %s; shutting down", signal.Signals(signum).name)
        service.shutdown()
        if console is not None:
            console[1].should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.start()
    server.start()
    if console is not None:
        # Its own informers and cache: the extender's are under the extender's lock and
        # change with every bind; the console only reads.
        feeds, web = console
        feeds.start()
        threading.Thread(target=web.run, name="console", daemon=True).start()
        log.info("kubenpu console on http://%s:%d/", console_address, console_port)
    log.info(
        "kubenpu scheduler on %s://%s:%d%s, policy %s",
        "https" if tls_cert else "http",
        address,
        server.port,
        url_prefix or "",
        service.cache.policy,
    )
    service.stop.wait()
    server.shutdown()
    if console is not None:
        console[0].shutdown()
    log.info("stopped")


def main() -> None:
    """``python -m kubenpu.cli.scheduler``."""
    typer.run(scheduler)


if __name__ == "__main__":
    main()
