"""A TCP relay: makes a loopback-only server reachable from the dev cluster's namespaces.

The API server and the registry listen on 127.0.0.1, which a node's network namespace has
no way to reach; the relay listens on the node network's gateway address and copies bytes
both ways (TLS passes through untouched, so clients still verify the server itself).

Run as ``python -m kubenpu.devcluster.relay LISTEN_HOST:PORT=TARGET_HOST:PORT ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

_CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _handler(
    target: tuple[str, int],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    return handle


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(routes: Sequence[tuple[tuple[str, int], tuple[str, int]]]) -> None:
    """Relay every (listen, target) pair until SIGTERM or SIGINT."""
    servers = [
        await asyncio.start_server(_handler(target), *listen, reuse_address=True)
        for listen, target in routes
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("relaying " + ", ".join(f"{a[0]}:{a[1]} -> {b[0]}:{b[1]}" for a, b in routes), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: Sequence[str]) -> int:
    """Parse ``LISTEN=TARGET`` pairs and relay them."""
    try:
        routes = [(_address(a), _address(b)) for a, _, b in (r.partition("=") for r in argv)]
    except ValueError:
        print("usage: relay LISTEN_HOST:PORT=TARGET_HOST:PORT ...", file=sys.stderr)
        return 2
    if not routes:
        print("usage: relay LISTEN_HOST:PORT=TARGET_HOST:PORT ...", file=sys.stderr)
        return 2
    asyncio.run(serve(routes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
