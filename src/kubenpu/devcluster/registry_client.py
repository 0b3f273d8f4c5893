"""Pushing an OCI image-layout archive to a registry over the OCI distribution API.

HTTPS with ``http.client`` and ``ssl`` only; Basic auth or the Bearer token flow the
registry's challenge asks for. Registry addresses are ``IP:PORT``: names are never looked
up, and a token realm or upload location naming another host is not followed there.
"""

from __future__ import annotations

import base64
import functools
import http.client
import ipaddress
import json
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kubenpu.devcluster.oci import CHUNK, MEDIA_TYPE_MANIFEST, ImageError, OciArchive


class PushError(ImageError):
    """A registry refused a push, or answered something the distribution API does not."""


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_address(address: str) -> tuple[str, int]:
    """``10.0.0.5:5000`` or ``[fd00::1]:5000`` -> (ip, port). Names are refused: nothing
    here ever resolves one, so no lookup can send traffic anywhere unexpected."""
    host, sep, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ip = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        ip, port = None, 0
    if not sep or ip is None or not 0 < port < 65536:
        raise PushError(f"registry address {address!r} is not IP:PORT (names are never resolved)")
    return str(ip), port


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://...",service="x"`` -> (``bearer``, {realm, service}).

    Only the first challenge is read: registries send one.
    """
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


# A body for a request: bytes, or something that opens a fresh stream (so a request can be
# sent again after an authentication challenge) together with its length.
_Body = bytes | tuple[Callable[[], IO[bytes]], int] | None


@dataclass
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class _Connection(http.client.HTTPSConnection):
    """HTTPS to an IP address, verifying the certificate against ``server_name`` (the
    IP itself, or the name the certificate was issued for)."""

    def __init__(
        self, host: str, port: int, *, tls: ssl.SSLContext, server_name: str, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=tls)
        self._tls = tls
        self._server_name = server_name
        self.blocksize = CHUNK

    def connect(self) -> None:
        # socket.create_connection with an IP literal does no name lookup.
        self.sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class _RegistryClient:
    """One repository on one registry: requests with authentication handled."""

    def __init__(
        self,
        address: str,
        repository: str,
        *,
        username: str | None,
        password: str | None,
        cafile: str | None,
        server_name: str | None,
        timeout: float,
    ) -> None:
        self.host, self.port = parse_address(address)
        self.repository = repository
        self.username = username
        self.password = password
        self.server_name = server_name or self.host
        self.timeout = timeout
        self.tls = ssl.create_default_context(cafile=cafile)
        self._authorization: str | None = None
        self._host_header = (
            f"{server_name}:{self.port}"
            if server_name
            else (f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}")
        )

    def _send(
        self,
        host: str,
        port: int,
        server_name: str,
        method: str,
        target: str,
        body: _Body,
        headers: Mapping[str, str],
    ) -> _Response:
        conn = _Connection(host, port, tls=self.tls, server_name=server_name, timeout=self.timeout)
        try:
            send_headers = dict(headers)
            stream: IO[bytes] | None = None
            payload: bytes | IO[bytes] | None
            if isinstance(body, tuple):
                opener, length = body
                stream = payload = opener()
                send_headers["Content-Length"] = str(length)
            else:
                payload = body
                if body is not None or method in ("POST", "PUT"):
                    send_headers["Content-Length"] = str(len(body or b""))
            try:
                conn.request(method, target, body=payload, headers=send_headers)
                response = conn.getresponse()
                data = response.read()
            finally:
                if stream is not None:
                    stream.close()
            return _Response(response.status, response.headers, data)
        except (OSError, http.client.HTTPException) as exc:
            raise PushError(f"{method} https://{host}:{port}{target}: {exc}") from exc
        finally:
            conn.close()

    def request(
        self,
        method: str,
        target: str,
        *,
        body: _Body = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Response:
        """Send one request to the registry; on a 401, answer the challenge once and
        send it again."""
        for attempt in range(2):
            send = {"Host": self._host_header, "User-Agent": "kubenpu-images/1"}
            send.update(headers or {})
            if self._authorization:
                send["Authorization"] = self._authorization
            response = self._send(
                self.host, self.port, self.server_name, method, target, body, send
            )
            if response.status != 401:
                return response
            if attempt == 0:
                self._authenticate(response.headers.get("WWW-Authenticate", ""), method, target)
        scheme = (self._authorization or "none").split(" ", 1)[0]
        if scheme == "Basic":
            raise PushError(
                f"registry {self.host}:{self.port} refused the credentials of user "
                f"{self.username!r} ({method} {target}: 401)"
            )
        raise PushError(
            f"registry {self.host}:{self.port} refused the token it issued ({method} {target}: "
            f"401; may user {self.username!r} push to {self.repository}?)"
        )

    def _basic(self) -> str:
        if self.username is None or self.password is None:
            raise PushError(
                f"registry {self.host}:{self.port} asks for credentials and none were given "
                "(--username and a password)"
            )
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def _authenticate(self, challenge: str, method: str, target: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self._authorization and self._authorization.startswith("Basic "):
                raise PushError(
                    f"registry {self.host}:{self.port} refused the credentials of user "
                    f"{self.username!r} ({method} {target}: 401)"
                )
            self._authorization = self._basic()
        elif scheme == "bearer":
            self._authorization = f"Bearer {self._token(params)}"
        else:
            raise PushError(
                f"{method} {target}: 401 without a Basic or Bearer challenge "
                f"(WWW-Authenticate: {challenge!r})"
            )

    def _token(self, params: Mapping[str, str]) -> str:
        """Fetch a token from the challenge's realm (the Docker token flow)."""
        realm = params.get("realm", "")
        url = urllib.parse.urlsplit(realm)
        if url.scheme != "https" or not url.hostname:
            raise PushError(f"token realm {realm!r} is not an https:// URL")
        host = url.hostname
        port = url.port or 443
        try:
            host = str(ipaddress.ip_address(host))
            # The registry's own address: verify as the registry is verified.
            server_name = self.server_name if host == self.host else host
        except ValueError:
            # A name: it can only be the registry's own certificate name, which we were
            # told how to reach; any other would need a lookup, which is never done.
            if host != self.server_name:
                raise PushError(
                    f"token realm {realm!r} names host {host!r}, which is neither an IP "
                    f"address nor the registry's server name ({self.server_name}); names "
                    "are never resolved"
                ) from None
            server_name, host = host, self.host
        scopes = [f"repository:{self.repository}:pull,push"]
        if params.get("scope") and params["scope"] not in scopes:
            scopes.append(params["scope"])
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        target = (url.path or "/") + "?" + urllib.parse.urlencode(query)
        if url.query:
            target += "&" + url.query
        headers = {"Host": url.netloc, "User-Agent": "kubenpu-images/1"}
        if self.username is not None and self.password is not None:
            headers["Authorization"] = self._basic()
        response = self._send(host, port, server_name, "GET", target, None, headers)
        if response.status != 200:
            raise PushError(
                f"token server {realm} answered {response.status}: {_error_text(response)}"
            )
        try:
            doc = json.loads(response.body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PushError(f"token server {realm} sent no token")
        return token


def _error_text(response: _Response) -> str:
    """The registry's error message(s), from the distribution API's error body."""
    try:
        errors = json.loads(response.body).get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return text or response.body[:200].decode("utf-8", "replace") or "(no body)"


def _expect(response: _Response, what: str, *statuses: int) -> _Response:
    if response.status not in statuses:
        raise PushError(f"{what}: registry answered {response.status}: {_error_text(response)}")
    return response


def _upload_target(location: str, digest: str) -> str:
    """The PUT target that completes an upload: Location's path and query plus the digest.

    Only the path is taken from an absolute Location: the request still goes to the
    registry's address, since following a host name would mean resolving it.
    """
    url = urllib.parse.urlsplit(location)
    query = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    query.append(("digest", digest))
    return (url.path or "/") + "?" + urllib.parse.urlencode(query)


def push(
    archive: Path,
    registry: str,
    repository: str,
    tag: str,
    *,
    username: str | None = None,
    password: str | None = None,
    cafile: Path | str | None = None,
    server_name: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Push the image in ``archive`` to ``https://<registry>/<repository>:<tag>``.

    ``registry`` is ``IP:PORT``: names are never resolved. Blobs the registry already has
    (HEAD answers 200) are skipped; the others go up as monolithic uploads (POST, then
    PUT with the digest); the manifest goes last, as ``application/vnd.oci.image.manifest
    .v1+json``. Authentication follows the registry's challenge: Basic with the given
    credentials, or Bearer with a token fetched from the challenge's realm (using the
    credentials, if any). ``cafile`` is the CA bundle to trust (default: the system's);
    ``server_name`` is the name the registry's certificate was issued for when it holds
    no IP address entry. Returns the manifest digest.
    """
    if not _REPOSITORY.match(repository):
        raise PushError(f"repository {repository!r} is not a valid repository name")
    if not _TAG.match(tag):
        raise PushError(f"tag {tag!r} is not a valid tag")
    client = _RegistryClient(
        registry,
        repository,
        username=username,
        password=password,
        cafile=str(cafile) if cafile is not None else None,
        server_name=server_name,
        timeout=timeout,
    )
    with OciArchive(archive) as image:
        manifest_desc, manifest = image.manifest()
        doc = json.loads(manifest)
        blobs = [doc["config"], *doc.get("layers", [])]
        # The version check: a 200 or a 401 (answered once here, before any large body).
        _expect(client.request("GET", "/v2/"), f"GET {registry}/v2/", 200)
        base = f"/v2/{repository}"
        for blob in blobs:
            digest = blob["digest"]
            head = client.request("HEAD", f"{base}/blobs/{digest}")
            if head.status == 200:
                continue
            _expect(head, f"HEAD {base}/blobs/{digest}", 404)
            started = _expect(
                client.request("POST", f"{base}/blobs/uploads/", body=b""),
                f"POST {base}/blobs/uploads/",
                202,
            )
            location = started.headers.get("Location")
            if not location:
                raise PushError(f"POST {base}/blobs/uploads/: 202 without a Location")
            size = image.blob_size(digest)
            name = image.blob_name(digest)
            _expect(
                client.request(
                    "PUT",
                    _upload_target(location, digest),
                    body=(functools.partial(image.open, name), size),
                    headers={"Content-Type": "application/octet-stream"},
                ),
                f"PUT blob {digest}",
                201,
            )
        put = _expect(
            client.request(
                "PUT",
                f"{base}/manifests/{tag}",
                body=manifest,
                headers={"Content-Type": MEDIA_TYPE_MANIFEST},
            ),
            f"PUT {base}/manifests/{tag}",
            201,
        )
    stored = put.headers.get("Docker-Content-Digest")
    if stored and stored != manifest_desc.digest:
        raise PushError(
            f"registry stored the manifest as {stored}, not {manifest_desc.digest} (it "
            "rewrote the manifest)"
        )
    return manifest_desc.digest
