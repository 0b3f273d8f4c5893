"""The official Kubernetes client, set up the same way for every long-running component.

Imported lazily by its callers, so commands that never reach the API (``--help``, the
simulator) do not pay for loading the client.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api
    from urllib3 import BaseHTTPResponse


def core_api(kubeconfig: str = "") -> CoreV1Api:
    """A ``CoreV1Api`` with its own ``ApiClient``: in-cluster credentials when
    ``kubeconfig`` is empty, else that file.

    An own client on purpose: loading into the library's global default configuration
    would leak one component's credentials into another in the same process.
    """
    from kubernetes import client, config

    if kubeconfig:
        api_client = config.new_client_from_config(config_file=kubeconfig)
    else:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        api_client = client.ApiClient(configuration)
    return client.CoreV1Api(api_client)


def raw(response: object) -> BaseHTTPResponse:
    """What an API method called with ``_preload_content=False`` returns: the HTTP response,
    unread (the method is annotated with the model it would otherwise decode)."""
    return cast("BaseHTTPResponse", response)


def watch_chunks(response: BaseHTTPResponse) -> Generator[list[dict[str, Any]], None, None]:
    """The events of a watch response read without preloading (``_preload_content=False``),
    as one list per chunk the server sent (possibly empty): callers can look up between
    chunks, e.g. to stop. A line split across chunks is joined first. The connection goes
    back to the pool when the stream ends or the iteration is closed."""
    try:
        buffer = b""
        for chunk in response.stream(amt=None):
            buffer += chunk
            events = []
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    events.append(json.loads(line))
            yield events
    finally:
        response.release_conn()
