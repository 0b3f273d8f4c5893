"""HTTP(S) front of the extender: JSON in, :class:`core.Extender` call, JSON out.

Routes (``prefix`` + verb, POST): ``/filter``, ``/prioritize``, ``/bind``; GET
``/healthz`` (the process answers), ``/readyz`` (synced with the API server) and
``/metrics``. A body that is not what kube-scheduler sends gets 400 with a clear message
(nesting too deep for the JSON decoder too). Connections: see :mod:`kubenpu.httpserving`
(read timeout, one write per response, quiet disconnects).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from kubenpu.extender.core import Extender
from kubenpu.extender.wire import (
    ExtenderArgs,
    NameCache,
    WireError,
    encode_filter_result,
    encode_priorities,
    escape,
    parse_binding_args,
    parse_extender_args,
    printf_safe,
    printf_safe_reasons,
    priority_head,
    split_node_names,
)
from kubenpu.httpserving import (
    CLIENT_GONE,
    IDLE_TIMEOUT,
    READ_TIMEOUT,
    BodyError,
    Handler,
    HTTPServer,
)

log = logging.getLogger(__name__)

#: Largest request body accepted (a NodeList of thousands of full Nodes fits).
MAX_BODY = 64 * 1024 * 1024
#: NodeNames arrays remembered (as received or as answered) with their decoded lists.
RECENT_NAME_LISTS = 8


#: Says whether the extender is ready, and why not.
Readiness = Callable[[], tuple[bool, str]]


class ExtenderHTTPServer(HTTPServer):
    """One thread per connection; kube-scheduler keeps its connections alive.

    ``tls``: (certificate, key) files to serve HTTPS with; ``read_timeout``,
    ``idle_timeout``: see :mod:`kubenpu.httpserving`.
    """

    def __init__(
        self,
        address: tuple[str, int],
        extender: Extender,
        *,
        ready: Readiness = lambda: (True, ""),
        prefix: str = "",
        tls: tuple[str, str] | None = None,
        read_timeout: float = READ_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        context = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(*tls)
        super().__init__(
            address,
            ExtenderHandler,
            tls=context,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        )
        self.extender = extender
        self.ready = ready
        self.prefix = prefix.rstrip("/")
        #: JSON literal, and prioritize head, of each node name.
        self.escaped = NameCache(escape)
        self.heads = NameCache(priority_head)
        self._recent_lists: list[tuple[bytes, list[str]]] = []
        self._recent_lock = threading.Lock()

    def known_names(self, array: bytes) -> list[str] | None:
        """The node name list a NodeNames array encodes, if it is a recent one:
        kube-scheduler sends prioritize the names filter answered, and often the same
        names call after call. The same list object comes back, which lets the
        extender's own per-list memo match by identity."""
        with self._recent_lock:
            for known, names in self._recent_lists:
                if known == array:
                    return names
        return None

    def remember_names(self, array: bytes, names: list[str]) -> None:
        """Note that ``array`` encodes ``names`` (a valid list, never to be modified)."""
        with self._recent_lock:
            others = [entry for entry in self._recent_lists if entry[0] != array]
            self._recent_lists = [(array, names), *others[: RECENT_NAME_LISTS - 1]]

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        return int(self.server_address[1])

    def start(self) -> threading.Thread:
        """Serve in a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


class ExtenderHandler(Handler):
    """Translates one HTTP request."""

    server: ExtenderHTTPServer
    server_version = "kubenpu-scheduler"

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.respond(status, content_type, body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, separators=(",", ":")).encode())

    def _verb(self) -> str | None:
        prefix = self.server.prefix
        path = self.path.split("?", 1)[0]
        if prefix and not path.startswith(prefix + "/"):
            return None
        return path[len(prefix) :]

    def do_GET(self) -> None:
        """Health, readiness and metrics."""
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            ok, why = self.server.ready()
            status = 200 if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, (("ok" if ok else why) + "\n").encode(), "text/plain")
        elif path == "/metrics":
            body = self.server.extender.metrics.render()
            self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        """filter, prioritize, bind."""
        verb = self._verb()
        if verb not in ("/filter", "/prioritize", "/bind"):
            self.close_connection = True  # the body is not read: the stream cannot go on
            self._json(404, {"Error": f"unknown path {self.path[:100]!r}"})
            return
        try:
            extender = self.server.extender
            if verb == "/bind":
                bound = extender.bind(parse_binding_args(_decode(self._raw())))
                self._json(200, {"Error": printf_safe(bound["Error"])})
                return
            args, names = self._extender_args()
            if verb == "/filter":
                result = extender.filter(args, names)
                if args.get("NodeNames") is None:  # called with full Nodes: answer with Nodes
                    keep = set(result["NodeNames"] or [])
                    items = (args.get("Nodes") or {}).get("items") or []
                    result["Nodes"] = {"items": [n for n in items if n["metadata"]["name"] in keep]}
                    result["NodeNames"] = None
                    never = result["FailedAndUnresolvableNodes"]
                    result["FailedNodes"] = printf_safe_reasons(result["FailedNodes"])
                    result["FailedAndUnresolvableNodes"] = printf_safe_reasons(never)
                    result["Error"] = printf_safe(result["Error"])
                    self._json(200, result)
                else:
                    passed = result["NodeNames"] or []
                    body, array = encode_filter_result(
                        passed,
                        result["FailedNodes"],
                        result["FailedAndUnresolvableNodes"],
                        result["Error"],
                        self.server.escaped,
                    )
                    self.server.remember_names(array.encode(), passed)
                    self._send(200, body)
            else:
                scores = extender.scores(args, names)
                self._send(200, encode_priorities(self.server.heads.many(names), scores))
        except (WireError, BodyError) as err:
            extender_verb = verb.lstrip("/")
            self.server.extender.metrics.decisions.labels(extender_verb, "bad_request").inc()
            self._json(400, {"Error": f"bad {extender_verb} request: {err}"})
        except CLIENT_GONE:
            raise  # not the extender's failure: the server logs one line
        except Exception:
            log.exception("%s failed", verb)
            self._json(
                500, {"Error": f"internal error in {verb.lstrip('/')}; see the extender log"}
            )

    def _extender_args(self) -> tuple[ExtenderArgs, list[str]]:
        """The filter/prioritize body, its NodeNames decoded only when not a recent list."""
        raw = self._raw()
        split = split_node_names(raw)
        data = None
        if split is not None:
            head, array = split
            try:
                data = json.loads(head)
            except (ValueError, UnicodeDecodeError, RecursionError):
                data = None  # not the body's whole head after all: decode it all below
        if not isinstance(data, dict):
            return parse_extender_args(_decode(raw))
        known = self.server.known_names(array)
        data["NodeNames"] = _decode(array) if known is None else known
        args, names = parse_extender_args(data, names_checked=known is not None)
        if known is None and args.get("NodeNames") is not None:
            self.server.remember_names(array, names)
        return args, names

    def _raw(self) -> bytes:
        return self.read_body(MAX_BODY)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise WireError(f"body is not JSON: {err}") from None
    except RecursionError:  # e.g. 100,000 nested arrays: no Kubernetes object is that deep
        raise WireError("body is not JSON kube-scheduler sends: nested too deeply") from None
