"""The client side of the OCI distribution API: what `pyctr pull`, `push` and `login` speak.

A registry is plain HTTP(S) with a few conventions (the distribution spec):

    GET  /v2/                                   is this a registry; how do I log in?
    GET  /v2/<name>/manifests/<tag or digest>   a manifest or an index (Accept: the types)
    GET  /v2/<name>/blobs/<digest>              a config or layer (may redirect to storage)
    HEAD /v2/<name>/blobs/<digest>              is it there already (push)
    POST /v2/<name>/blobs/uploads/              start an upload: Location to PUT it to
    PUT  <location>?digest=<digest>             the whole blob in one request
    PUT  /v2/<name>/manifests/<tag>             the manifest, last (it names the blobs)

Authentication is asked for by a 401 with ``WWW-Authenticate``: ``Basic``
(send the user and password on every request) or ``Bearer realm=…,
service=…, scope=…`` (docker's token spec: ask the realm for a token for
that scope, with the user and password if there are any, and send the token).

This module is only the wire: retries with back-off (429, 5xx, broken
connections), redirects, tokens, resuming a blob download where it broke.
What to fetch and how to verify it is pull.py's, what to send is push.py's.
It uses http.client from the standard library, one connection per thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import ssl
import threading
import urllib.parse
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from pyctr import __version__
from pyctr.errors import NotFound, RegistryError

from .reference import DEFAULT_DOMAIN

DOCKER_HUB = "registry-1.docker.io"  # where docker.io's API is
USER_AGENT = f"pyctr/{__version__}"
MANIFEST_MAX = 4 << 20  # the spec's advice: refuse manifests larger than 4 MiB
CHUNK = 1 << 20
TIMEOUT = 60.0
RETRIES = 5  # attempts after the first, for 429, 5xx and broken connections
BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)  # seconds between attempts (Retry-After wins when given)
RETRY_STATUS = {429, 500, 502, 503, 504}
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError)


def api_host(domain: str) -> str:
    """docker.io's API is served from registry-1.docker.io; other domains are themselves."""
    return DOCKER_HUB if domain in (DEFAULT_DOMAIN, "index.docker.io") else domain


def is_local(domain: str) -> bool:
    """localhost and loopback addresses: plain HTTP allowed, as docker allows it."""
    host = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
    host = host.strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


_LIVE: weakref.WeakSet = weakref.WeakSet()  # every Registry: see _forked


def _forked() -> None:
    """In a forked child (a pull's layer process), forget the parent's kept-alive
    connections: two processes talking on one socket would mix their exchanges.
    Dropping them closes nothing for the parent (no shutdown, only our fd)."""
    for reg in list(_LIVE):
        reg._local = threading.local()


os.register_at_fork(after_in_child=_forked)


class Cancelled(Exception):
    """The pull or push was interrupted (Ctrl-C): every worker stops at its next read."""


@dataclass
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str  # "bearer" or "basic"
    params: dict[str, str]


_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="https://auth",service="reg",scope="repository:x:pull,push"``."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


class Response:
    """A response whose body is read by the caller (``read``) or all at once (``body``)."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                 url: str) -> None:
        self.conn = conn
        self.resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self.url = url

    def read(self, n: int = CHUNK) -> bytes:
        return self.resp.read(n)

    def body(self, limit: int | None = None) -> bytes:
        if limit is not None:
            length = self.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                self.close()
                raise RegistryError(f"{self.url}: the response is {length} bytes, more than "
                                    f"the {limit} allowed", hint="is this a registry?")
            data = self.resp.read(limit + 1)
            if len(data) > limit:
                self.close()
                raise RegistryError(f"{self.url}: the response is larger than {limit} bytes",
                                    hint="is this a registry?")
            return data
        return self.resp.read()

    def close(self) -> None:
        self.conn.close()


def _error_text(data: bytes) -> str:
    """The registry's own words: ``{"errors": [{"code": …, "message": …}]}``."""
    try:
        doc = json.loads(data)
        errs = doc.get("errors") or []
        parts = [f"{e.get('code', '').lower()}: {e.get('message', '')}".strip(": ")
                 for e in errs if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)
        if doc.get("details") or doc.get("error"):
            return str(doc.get("details") or doc.get("error"))
    except (ValueError, AttributeError):
        pass
    text = data.decode("utf-8", "replace").strip()
    return text[:200]


class Registry:
    """One registry (a domain), for one repository's scope at a time.

    ``creds`` is (user, password) or None; ``insecure`` allows plain HTTP
    and unverified TLS (localhost always is).  Safe to use from several
    threads: connections are per thread, tokens are shared.
    """

    def __init__(self, domain: str, *, creds: tuple[str, str] | None = None,
                 insecure: bool = False, cancel: threading.Event | None = None) -> None:
        self.domain = domain
        self.host = api_host(domain)
        self.creds = creds
        self.insecure = insecure or is_local(domain)
        self.cancel = cancel or threading.Event()
        self.scheme: str | None = None  # https, or http once an insecure registry showed it
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # scope → bearer token
        self._challenge: Challenge | None = None
        _LIVE.add(self)

    # -- connections ----------------------------------------------------------
    def _connection(self, scheme: str, host: str, fresh: bool) -> http.client.HTTPConnection:
        pool = self._local.__dict__.setdefault("pool", {})
        key = (scheme, host)
        if not fresh and key in pool:
            return pool[key]
        if scheme == "https":
            if self.insecure and host == self.host:
                # nothing to verify: no CA store to load (it is 20 ms of a pull)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, timeout=TIMEOUT, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
        if not fresh:
            pool[key] = conn
        return conn

    def _drop(self, scheme: str, host: str) -> None:
        pool = self._local.__dict__.get("pool", {})
        conn = pool.pop((scheme, host), None)
        if conn is not None:
            conn.close()

    def _base(self) -> str:
        if self.scheme is None:
            self.ping()
        return f"{self.scheme}://{self.host}"

    # -- one request ----------------------------------------------------------
    def _send(self, method: str, url: str, headers: dict[str, str], body=None,
              stream: bool = False) -> Response:
        """One HTTP exchange (no retry, no auth, no redirect); the body is left unread."""
        if self.cancel.is_set():
            raise Cancelled()
        u = urllib.parse.urlsplit(url)
        path = u.path + (f"?{u.query}" if u.query else "")
        headers = {"User-Agent": USER_AGENT, **headers}
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more, fresh
            conn = self._connection(u.scheme, u.netloc, fresh=stream)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop(u.scheme, u.netloc)
                conn.close()
                if attempt or stream or (body is not None and not isinstance(body, bytes)):
                    raise
                continue
            except BaseException:
                self._drop(u.scheme, u.netloc)
                conn.close()
                raise
            return Response(conn, resp, url)
        raise AssertionError("unreachable")

    def ping(self) -> None:
        """``GET /v2/``: pick the scheme, learn the challenge; raise if it is no registry."""
        schemes = ["https", "http"] if self.insecure else ["https"]
        last: BaseException | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            try:
                resp = self._retrying(lambda url=url: self._send("GET", url, {}))
            except (RegistryError, Cancelled):
                raise
            except _NETWORK_ERRORS as exc:
                last = exc
                continue
            data = resp.body(1 << 16)
            if resp.status == 401:
                self._challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            elif resp.status != 200:
                raise RegistryError(f"{self.domain} does not look like a registry: GET {url} "
                                    f"answered {resp.status} {_error_text(data)}",
                                    hint="check the registry's address")
            self.scheme = scheme
            return
        hint = ("is the registry running, and is the address right?" if self.insecure else
                "is it reachable? a registry without TLS must be marked insecure: "
                "--insecure-registry HOST or /etc/pyctr/registries.conf")
        raise RegistryError(f"cannot reach the registry {self.domain}: {last}", hint=hint)

    def _retrying(self, attempt: Callable[[], Response]) -> Response:
        """Run ``attempt`` again on 429, 5xx and network errors, backing off between tries."""
        for i in range(RETRIES + 1):
            try:
                resp = attempt()
            except (ssl.SSLError, ConnectionRefusedError, socket.gaierror):
                raise  # not HTTPS, nobody listening, no such host: trying again will not help
            except _NETWORK_ERRORS:
                if i == RETRIES or self.cancel.is_set():
                    raise
                self._sleep(BACKOFF[min(i, len(BACKOFF) - 1)])
                continue
            if resp.status not in RETRY_STATUS or i == RETRIES:
                return resp
            wait = BACKOFF[min(i, len(BACKOFF) - 1)]
            after = resp.headers.get("Retry-After", "")
            if after.isdigit():
                wait = min(float(after), 30.0)
            resp.body(1 << 16)  # read it, so the connection can be reused
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _sleep(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise Cancelled()

    # -- authentication -------------------------------------------------------
    def _auth_header(self, scope: str | None) -> dict[str, str]:
        ch = self._challenge
        if ch is None:
            return {}
        if ch.scheme == "basic":
            if self.creds is None:
                return {}
            user, password = self.creds
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        if ch.scheme == "bearer":
            key = scope or ""
            with self._lock:
                token = self._tokens.get(key)
            if token is None:
                token = self._token(ch, scope)
                with self._lock:
                    self._tokens[key] = token
            return {"Authorization": f"Bearer {token}"}
        return {}

    def _token(self, ch: Challenge, scope: str | None) -> str:
        """Ask the realm of a Bearer challenge for a token (docker's token spec)."""
        realm = ch.params.get("realm")
        if not realm:
            raise RegistryError(f"{self.domain} asks for a token but names no realm",
                                hint="the registry's auth configuration is broken")
        query = []
        if ch.params.get("service"):
            query.append(("service", ch.params["service"]))
        for s in (scope or ch.params.get("scope") or "").split(" "):
            if s:
                query.append(("scope", s))
        headers = {}
        if self.creds is not None:
            user, password = self.creds
            query.append(("account", user))
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {raw}"
        sep = "&" if "?" in realm else "?"
        url = realm + (sep + urllib.parse.urlencode(query) if query else "")
        try:
            resp = self._retrying(lambda: self._send("GET", url, headers))
            data = resp.body(1 << 20)
        except _NETWORK_ERRORS as exc:
            raise RegistryError(f"cannot reach the token server {realm}: {exc}",
                                hint="the registry sends clients there to log in") from None
        if resp.status in (401, 403):
            raise self._unauthorized(data)
        if resp.status != 200:
            raise RegistryError(f"the token server {realm} answered {resp.status}: "
                                f"{_error_text(data)}")
        try:
            doc = json.loads(data)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"the token server {realm} sent no token",
                                hint="the registry's auth configuration is broken")
        return token

    def _unauthorized(self, data: bytes) -> RegistryError:
        said = _error_text(data)
        if self.creds is not None:
            return RegistryError(f"login to {self.domain} as {self.creds[0]} failed: "
                                 f"unauthorized: incorrect username or password ({said})",
                                 hint=f"check them: pyctr login {self.domain}", exit_code=1)
        return RegistryError(f"{self.domain}: unauthorized: authentication required ({said})",
                             hint=f"log in first: pyctr login {self.domain}", exit_code=1)

    # -- requests with everything -------------------------------------------
    def request(self, method: str, path_or_url: str, *, scope: str | None = None,
                headers: dict[str, str] | None = None, body=None, stream: bool = False,
                ok: tuple[int, ...] = (200,)) -> Response:
        """A request with auth, redirects and retries; raises unless the status is in ``ok``.

        ``body`` may be bytes or a callable returning a fresh file object (so
        a retry can send it again).  404 raises NotFound.
        """
        url = path_or_url if "://" in path_or_url else self._base() + path_or_url
        for hop in range(6):
            same = urllib.parse.urlsplit(url).netloc == self.host
            for auth_round in (0, 1):
                def attempt(url=url, same=same, method=method, body=body) -> Response:
                    h = dict(headers or {})
                    if same:
                        h.update(self._auth_header(scope))
                    data = body() if callable(body) else body
                    return self._send(method, url, h, data, stream=stream)
                resp = self._retrying(attempt)
                if resp.status == 401 and same and auth_round == 0:
                    data = resp.body(1 << 16)
                    ch = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                    if ch is None:
                        raise self._unauthorized(data)
                    self._challenge = ch
                    with self._lock:
                        self._tokens.pop(scope or "", None)
                    continue
                break
            if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                resp.body(1 << 16)
                url = urllib.parse.urljoin(url, resp.headers["Location"])
                if resp.status == 303:
                    method, body = "GET", None
                continue
            if resp.status in ok:
                return resp
            data = resp.body(1 << 16) if method != "HEAD" else b""
            if resp.status == 401:
                raise self._unauthorized(data)
            if resp.status == 404:
                raise NotFound(f"{method} {urllib.parse.urlsplit(url).path}: not found "
                               f"({_error_text(data) or 'unknown'})", exit_code=1)
            if resp.status == 403:
                raise RegistryError(f"{self.domain}: denied: {_error_text(data)}",
                                    hint="your account may not have access to this repository",
                                    exit_code=1)
            raise RegistryError(f"{method} {url}: the registry answered {resp.status}"
                                f"{': ' + _error_text(data) if data else ''}", exit_code=1)
        raise RegistryError(f"{method} {path_or_url}: too many redirects",
                            hint="the registry's storage redirects in a loop")

    def check_login(self) -> None:
        """Prove the credentials (`pyctr login`): a token, or a 200 on /v2/ with them."""
        self.ping()
        ch = self._challenge
        if ch is None:
            return  # an open registry: nothing to check
        if ch.scheme == "bearer":
            self._tokens.pop("", None)
            self._token(ch, None)
            return
        resp = self._retrying(lambda: self._send("GET", f"{self.scheme}://{self.host}/v2/",
                                                 self._auth_header(None)))
        data = resp.body(1 << 16)
        if resp.status == 401:
            raise self._unauthorized(data)
        if resp.status != 200:
            raise RegistryError(f"login to {self.domain}: GET /v2/ answered {resp.status}: "
                                f"{_error_text(data)}")


class BlobReader:
    """A blob download as a file: ``read(n)``; a connection that breaks is resumed.

    On a broken connection it asks again with ``Range: bytes=<offset>-``
    (a 206 continues where it broke; a 200 is read up to where it broke and
    discarded), up to RETRIES times.  The caller hashes what it reads, so a
    resumed blob is verified like any other.  ``progress(n)`` is called with
    each chunk's size.
    """

    def __init__(self, reg: Registry, path: str, scope: str,
                 progress: Callable[[int], None] | None = None) -> None:
        self.reg = reg
        self.path = path
        self.scope = scope
        self.progress = progress
        self.offset = 0
        self.size: int | None = None
        self.resumes = 0
        self.resp: Response | None = None
        self._open()

    def _open(self) -> None:
        headers = {"Range": f"bytes={self.offset}-"} if self.offset else {}
        resp = self.reg.request("GET", self.path, scope=self.scope, headers=headers,
                                stream=True, ok=(200, 206))
        if self.offset and resp.status == 200:  # no ranges here: skip what we have
            skip = self.offset
            while skip:
                data = resp.read(min(skip, CHUNK))
                if not data:
                    raise http.client.IncompleteRead(b"")
                skip -= len(data)
        elif resp.status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != self.offset:
                resp.close()
                raise RegistryError(f"GET {self.path}: the registry resumed at the wrong offset "
                                    f"({resp.headers.get('Content-Range')!r}, not {self.offset})")
        if self.size is None and resp.status == 200:
            length = resp.headers.get("Content-Length")
            self.size = int(length) if length and length.isdigit() else None
        self.resp = resp

    def read(self, n: int = CHUNK) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        while True:
            if self.reg.cancel.is_set():
                raise Cancelled()
            try:
                data = self.resp.read(n) if self.resp is not None else b""
                if not data and self.size is not None and self.offset < self.size:
                    raise http.client.IncompleteRead(b"", self.size - self.offset)
            except (TimeoutError, *_NETWORK_ERRORS) as exc:
                if self.resumes >= RETRIES:
                    raise RegistryError(f"GET {self.path}: the download broke {self.resumes + 1} "
                                        f"times, last at byte {self.offset}: {exc!r}",
                                        hint="the network or the registry is failing; try "
                                             "again (finished layers are kept)") from None
                self.resumes += 1
                if self.resp is not None:
                    self.resp.close()
                self.reg._sleep(BACKOFF[min(self.resumes - 1, len(BACKOFF) - 1)])
                self._open()
                continue
            self.offset += len(data)
            if data and self.progress is not None:
                self.progress(len(data))
            return data

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()
            self.resp = None

    def __enter__(self) -> BlobReader:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
