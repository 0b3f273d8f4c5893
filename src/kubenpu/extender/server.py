"""HTTP(S) front of the extender: JSON in, :class:`core.Extender` call, JSON out.

Routes (``prefix`` + verb, POST): ``/filter``, ``/prioritize``, ``/bind``, ``/preempt``
(when the server has a :class:`preempt.Preempter`); GET
``/healthz`` (the process answers), ``/readyz`` (synced with the API server) and
``/metrics``. Errors become answers in one place (:func:`error_answer`): a refused bind
is kube-scheduler's ``Error`` (200), a body that is not what kube-scheduler sends 400
with a clear message, anything else 500. Connections: see :mod:`kubenpu.httpserving`
(read timeout, one write per response, quiet disconnects).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus

from kubenpu.errors import WireError
from kubenpu.extender.binder import BindError
from kubenpu.extender.core import Extender
from kubenpu.extender.preempt import Preempter
from kubenpu.extender.wire import (
    NameLists,
    decode,
    encode,
    encode_filter_result,
    encode_preemption_result,
    encode_priorities,
    parse_binding_args,
    parse_extender_args,
    parse_preemption_args,
    printf_safe,
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
#: NodeNames lists remembered (as received or as answered by filter).
RECENT_NAME_LISTS = 8


#: Says whether the extender is ready, and why not.
Readiness = Callable[[], tuple[bool, str]]


class ExtenderHTTPServer(HTTPServer):
    """One thread per connection; kube-scheduler keeps its connections alive.

    ``tls``: (certificate, key) files to serve HTTPS with; ``read_timeout``,
    ``idle_timeout``: see :mod:`kubenpu.httpserving`; ``preempter``: answers ``/preempt``
    (without one that path is unknown).
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
        preempter: Preempter | None = None,
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
        self.preempter = preempter
        self.ready = ready
        self.prefix = prefix.rstrip("/")
        #: NodeNames lists recently received or answered, with their prioritize heads.
        self.names = NameLists(RECENT_NAME_LISTS)

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
        """filter, prioritize, bind, preempt."""
        verb = self._verb()
        verbs = ("/filter", "/prioritize", "/bind")
        if verb not in verbs and not (verb == "/preempt" and self.server.preempter):
            self.close_connection = True  # the body is not read: the stream cannot go on
            self._send(404, encode({"Error": f"unknown path {self.path[:100]!r}"}))
            return
        try:
            body = self._answer(verb)
        except CLIENT_GONE:
            raise  # not the extender's failure: the server logs one line
        except Exception as err:
            status, body = error_answer(verb.lstrip("/"), err, self.server.extender)
            self._send(status, body)
            return
        self._send(200, body)

    def _answer(self, verb: str) -> bytes:
        extender = self.server.extender
        data = decode(self.read_body(MAX_BODY))
        if verb == "/bind":
            extender.bind(parse_binding_args(data))
            return b'{"Error":""}'
        if verb == "/preempt" and self.server.preempter is not None:
            pod, offered = parse_preemption_args(data)
            return encode_preemption_result(self.server.preempter.preempt(pod, offered))
        args, names = parse_extender_args(data, self.server.names)
        if verb == "/prioritize":
            scores = extender.scores(args, names)
            return encode_priorities(self.server.names.heads(names), scores)
        result = extender.filter(args, names)
        if args.get("NodeNames") is None:  # called with full Nodes: answer with Nodes
            keep = set(result["NodeNames"] or [])
            items = (args.get("Nodes") or {}).get("items") or []
            result["Nodes"] = {"items": [n for n in items if n["metadata"]["name"] in keep]}
            result["NodeNames"] = None
        elif result["NodeNames"]:
            self.server.names.add(result["NodeNames"])  # prioritize gets these next
        return encode_filter_result(result)


def error_answer(verb: str, err: Exception, extender: Extender) -> tuple[int, bytes]:
    """The HTTP status and body that answer ``err`` from ``verb``."""
    if isinstance(err, BindError):  # counted and logged by the binder
        return 200, encode({"Error": printf_safe(str(err))})
    if isinstance(err, WireError | BodyError):
        extender.metrics.decisions.labels(verb, "bad_request").inc()
        return 400, encode({"Error": printf_safe(f"bad {verb} request: {err}")})
    log.error("%s failed", verb, exc_info=err)
    return 500, encode({"Error": f"internal error in {verb}; see the extender log"})
