"""The console's web application: server-rendered pages (Jinja2), live updates (SSE).

Routes: ``/`` (cluster grid), ``/nodes/<node>``, ``/pending``, ``/simulator``, each also
as its bare content with ``?fragment=1`` (what the page's script swaps in when ``/events``
says something changed), ``/events`` (server-sent events), ``/healthz``, ``/readyz``,
``/metrics`` and ``/static/``. Read-only: only GET (and HEAD) are routed.

Pages are rendered from the store under its lock and kept per store version, so a burst of
viewers costs one rendering per change.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kubenpu.console import metrics
from kubenpu.console.simreport import HEIGHT, LEFT, WIDTH, SimulatorFeed
from kubenpu.console.store import ConsoleStore
from kubenpu.console.views import DeviceCell, cluster_view, node_view, pending_view

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
#: Every response says: nothing from elsewhere, no framing, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
#: Host names a console bound to loopback answers to (DNS rebinding cannot reach it).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: SSE: how often the version is looked at, the least time between two "change" events,
#: and how often a comment keeps the connection open.
_POLL_S, _MIN_INTERVAL_S, _KEEPALIVE_S = 0.1, 0.5, 15.0


@functools.lru_cache(maxsize=8192)
def device_cells(devices: tuple[DeviceCell, ...]) -> Markup:
    """The grid's cells of one node, built here rather than in the template (at 1,000
    nodes x 8 NPUs a template loop costs ten times more), and kept for the nodes that did
    not change since (the cells are their own key)."""
    out = []
    for d in devices:
        pods = " ".join(s.pod for s in d.holders)
        segments = (
            "" if d.whole else "".join(f'<i style="width:{s.percent:.1f}%"></i>' for s in d.holders)
        )
        out.append(
            f'<span class="d {d.kind}" data-device="{escape(d.id)}" data-kind="{d.kind}" '
            f'data-pods="{escape(pods)}" title="{escape(d.title)}">{segments}</span>'
        )
    return Markup("".join(out))


@functools.lru_cache(maxsize=16384)
def _path_segment(value: str) -> str:
    """``value`` quoted as one path segment (node names: kept, as the cells are)."""
    return quote(value, safe="")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
        autoescape=jinja2.select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v, digits=1: "n/a" if v is None else f"{v:.{digits}f}%"
    env.filters["path"] = lambda v: _path_segment(str(v))
    env.filters["cells"] = device_cells
    env.globals.update(PLOT_WIDTH=WIDTH, PLOT_HEIGHT=HEIGHT, PLOT_LEFT=LEFT)
    return env


class Console:
    """The application's state: the store, the simulator's report, rendered pages."""

    def __init__(
        self,
        store: ConsoleStore,
        simulator: SimulatorFeed,
        *,
        ready: Callable[[], tuple[bool, str]] = lambda: (True, ""),
        loopback_only: bool = False,
    ) -> None:
        self.store = store
        self.simulator = simulator
        self.ready = ready
        self.env = _environment()
        self.collector = metrics.ConsoleCollector(store)
        self.registry = metrics.registry_of(self.collector)
        self._pages: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._pages_lock = threading.Lock()
        routes = [
            Route("/", self.cluster_page, methods=["GET"]),
            Route("/nodes/{name:str}", self.node_page, methods=["GET"]),
            Route("/pending", self.pending_page, methods=["GET"]),
            Route("/simulator", self.simulator_page, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
        ]
        middleware = (
            [Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS))]
            if loopback_only
            else []
        )
        self.app = Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers={404: self._not_found, 405: self._not_allowed},
        )

    # -- rendering -------------------------------------------------------------------

    def version(self) -> str:
        """What the live pages follow: the store's and the simulator's versions."""
        return f"{self.store.version}.{self.simulator.version}"

    def _html(self, text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)

    def _render(self, template: str, fragment: bool, **context: Any) -> str:
        if fragment:
            return self.env.get_template(f"_{template}.html").render(**context)
        return self.env.get_template("page.html").render(
            fragment=f"_{template}.html", live=True, version=self.version(), **context
        )

    def _cached(self, page: str, arg: str, fragment: bool, build: Callable[[], str]) -> str:
        key = (page, arg, f"{self.version()}{'f' if fragment else ''}")
        with self._pages_lock:
            text = self._pages.get(key)
            if text is not None:
                self._pages.move_to_end(key)
                return text
        text = build()
        with self._pages_lock:
            self._pages[key] = text
            while len(self._pages) > 64:
                self._pages.popitem(last=False)
        return text

    @staticmethod
    def _fragment(request: Request) -> bool:
        return request.query_params.get("fragment") == "1"

    # -- pages -----------------------------------------------------------------------

    def cluster_page(self, request: Request) -> Response:
        """``/``: nodes x devices."""
        fragment = self._fragment(request)

        def build() -> str:
            with self.store.lock:
                view = cluster_view(self.store.inputs())
            return self._render(
                "cluster", fragment, page="cluster", title="Cluster", view=view, url="/"
            )

        return self._html(self._cached("cluster", "", fragment, build))

    def node_page(self, request: Request) -> Response:
        """``/nodes/<node>``: one node's devices, pods and events; 404 if unknown."""
        name = request.path_params["name"]
        fragment = self._fragment(request)
        with self.store.lock:
            known = name in self.store.nodes or name in self.store.cache.state().node_index
            count = len(self.store.nodes)
        if not known:
            return self._unknown_node(name, count)

        def build() -> str:
            with self.store.lock:
                view = node_view(self.store.inputs(), name)
            if view is None:  # deleted in between
                return ""
            return self._render(
                "node",
                fragment,
                page="node",
                title=f"Node {name}",
                node=view,
                url=f"/nodes/{quote(name, safe='')}",
            )

        text = self._cached("node", name, fragment, build)
        return self._html(text) if text else self._unknown_node(name, count)

    def _unknown_node(self, name: str, count: int) -> Response:
        text = self.env.get_template("page.html").render(
            fragment="_not_found.html",
            live=False,
            version="",
            page="error",
            title="No such node",
            message=f"There is no node named “{name}” in the cluster.",
            detail=f"The console knows {count} node(s); the cluster page lists them.",
            url="",
        )
        return self._html(text, 404)

    def pending_page(self, request: Request) -> Response:
        """``/pending``: every waiting NPU pod and why."""
        fragment = self._fragment(request)

        def build() -> str:
            with self.store.lock:
                inputs = self.store.inputs()
                pods = pending_view(inputs)
                synced = inputs.synced
            return self._render(
                "pending",
                fragment,
                page="pending",
                title="Pending NPU pods",
                pods=pods,
                synced=synced,
                url="/pending",
            )

        # Not cached: the ages move on.
        return self._html(build())

    def simulator_page(self, request: Request) -> Response:
        """``/simulator``: the report and curves (computing the default on first view)."""
        fragment = self._fragment(request)
        report, status = self.simulator.get()

        def build() -> str:
            return self._render(
                "simulator",
                fragment,
                page="simulator",
                title="Simulator",
                report=report,
                status=status,
                url="/simulator",
            )

        return self._html(self._cached("simulator", status, fragment, build))

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        text = self.env.get_template("page.html").render(
            fragment="_not_found.html",
            live=False,
            version="",
            page="error",
            title="Not found",
            message=f"Nothing at {request.url.path}.",
            detail="The console's pages: the cluster, a node, pending pods, the simulator.",
            url="",
        )
        return self._html(text, 404)

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return PlainTextResponse(
            "read-only: GET only\n", status_code=405, headers={**SECURITY_HEADERS, "Allow": "GET"}
        )

    # -- live updates ----------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """``/events``: ``hello`` with the version at once, then ``change`` whenever the
        cluster (or the simulator's report) changes, at most every 0.5 s."""

        async def stream() -> AsyncIterator[str]:
            last = self.version()
            yield f"retry: 2000\nevent: hello\ndata: {last}\n\n"
            quiet = 0.0
            while not await request.is_disconnected():
                await asyncio.sleep(_POLL_S)
                current = self.version()
                if current != last:
                    last = current
                    quiet = 0.0
                    yield f"event: change\ndata: {current}\n\n"
                    await asyncio.sleep(_MIN_INTERVAL_S)
                    continue
                quiet += _POLL_S
                if quiet >= _KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    # -- health and metrics ----------------------------------------------------------

    def healthz(self, request: Request) -> Response:
        """200 while the process serves."""
        return PlainTextResponse("ok\n", headers=SECURITY_HEADERS)

    def readyz(self, request: Request) -> Response:
        """200 once the informers are synced."""
        ok, why = self.ready()
        return PlainTextResponse(
            "ok\n" if ok else f"{why}\n", status_code=200 if ok else 503, headers=SECURITY_HEADERS
        )

    def metrics(self, request: Request) -> Response:
        """Prometheus text format."""
        return Response(
            self.collector.exposition(),  # == metrics.render(self.registry), faster
            media_type="text/plain; version=0.0.4; charset=utf-8",
            headers=SECURITY_HEADERS,
        )
