"""Real registries for registry tests: a distribution server, a token server, images, faults.

pyctr's registry client is tested against the real thing, not a mock: the
Docker/CNCF ``distribution`` registry (Debian's ``docker-registry``, 2.8),
fed with images that real tools built (``umoci``) and pushed (``skopeo``).
How the pieces fit::

    build_image / build_index / build_bad_gzip_image ──► OCI layout on disk
    push(layout, tag, "127.0.0.1:PORT/name:tag")  (skopeo) ──► RegistryServer
                                                                 │ auth="token"
    client under test ──► FaultProxy ──► RegistryServer ──────► TokenServer
                          (optional)     401 + WWW-Authenticate: Bearer realm=…
    skopeo_pull / skopeo_inspect ◄── the same registry, as a second opinion

``start_registry`` runs ``docker-registry serve`` on a free port of
127.0.0.1 with its storage and log under a directory the test owns, in one
of three auth modes:

* ``auth=None`` — open, as a local mirror usually is;
* ``auth="htpasswd"`` — HTTP Basic with a bcrypt htpasswd file, the mode
  ``docker login`` to a small private registry meets;
* ``auth="token"`` — Docker's token authentication: the registry answers
  ``401`` with ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``; the
  client asks the realm (a ``TokenServer``) for a JWT covering the scope,
  with Basic credentials or none, and retries with ``Authorization: Bearer``.
  This is what Docker Hub, ghcr.io and quay.io do.

The registry logs every request (Apache combined format), so a test can
assert *what the client did* (``RegistryServer.requests()``): that a blob was
not fetched twice, that an upload was resumed rather than restarted.  And
``blob_path()`` says where the registry keeps a blob, so a test can corrupt
it at rest and check the client notices the digest mismatch.

``FaultProxy`` sits between the client and the registry and misbehaves on
purpose, because the network does:

* ``fail(path_regex, status)`` — answer 503, 429 (+ ``Retry-After``), 500 …
  without asking the registry: does the client retry, back off, give up?
* ``cut(path_regex, after_bytes)`` — send the headers and part of the body,
  then close the connection: does the client resume with ``Range`` or
  restart, and never keep a half blob?
* ``corrupt(path_regex)`` — flip a byte in a body: does the client verify
  digests before it trusts content?
* ``throttle(bytes_per_second)`` — slow every body: progress reporting,
  timeouts, cancelling a pull midway.

Everything binds 127.0.0.1 on a port the kernel picked; every process or
thread started here is stopped by the object that started it (``stop()``,
or leave the ``with`` block), by PID, never by name.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
LOCALHOST = "127.0.0.1"
SERVICE = "pyctr-test-registry"      # the token `aud`: which registry a token is for
ISSUER = "pyctr-test-token-server"   # the token `iss`: who signed it
START_TIMEOUT = 10.0
POLL = 0.05  # how often a server thread checks for stop() (http.server's default is 0.5 s)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"  # the tag annotation in an OCI layout's index.json


class FixtureError(RuntimeError):
    """A tool or server of the test infrastructure failed (the message carries its stderr/log)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it (bind to port 0); we close the socket and hand the
    number to a server that binds it itself.  Another process could take it
    in between, so starters retry on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of ``data``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b64url(data: bytes) -> str:
    """base64url without padding, as JOSE (JWS/JWT) writes every part."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _run(argv: list[str], timeout: float = 120, what: str | None = None) -> str:
    """Run a tool; return its stdout, or raise FixtureError with its stderr."""
    try:
        r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise FixtureError(f"{what or argv[0]} timed out after {timeout}s: {argv}") from e
    if r.returncode != 0:
        raise FixtureError(f"{what or argv[0]} failed ({r.returncode}): {' '.join(argv)}\n"
                           f"{r.stderr.strip()}")
    return r.stdout


# ---- the token server -------------------------------------------------------------------


def libtrust_key_id(public_key: Any) -> str:
    """The key id distribution's libtrust gives a public key (a JWT ``kid``).

    SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32, in
    twelve groups of four joined by ':'.  distribution 2.8 prefers the
    ``x5c`` certificate chain when a token has one, so this is belt and braces
    (a registry configured with trusted *keys* instead of a root bundle
    looks tokens up by it).
    """
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:library/busybox:pull,push`` -> ("repository", "library/busybox", ["pull", "push"]).

    The name sits between the first and the last colon (it may hold a port:
    ``repository:host:5000/x:pull``).  Returns None for anything malformed.
    """
    first, _, rest = scope.partition(":")
    name, sep, actions = rest.rpartition(":")
    if not first or not sep or not name:
        return None
    return first, name, [a for a in actions.split(",") if a]


class TokenServer:
    """Docker's token authentication server, small: GET /token -> a signed JWT.

    The spec (distribution's docs/spec/auth/token.md) in four steps:

    1. the client tries the registry and gets ``401`` with
       ``WWW-Authenticate: Bearer realm="<this /token URL>",service="…",scope="…"``;
    2. it calls ``GET realm?service=…&scope=repository:NAME:pull,push``
       (``scope`` repeated per resource, or absent for a bare login;
       ``account`` optional), with HTTP Basic credentials if it has any;
    3. we answer ``{"token": JWT, "access_token": JWT, "expires_in", "issued_at"}``
       where the JWT's ``access`` claim lists what we *granted* (maybe less
       than asked: the registry then answers 401/403 ``insufficient_scope``);
    4. the client retries with ``Authorization: Bearer JWT``.  The registry
       verifies the signature against ``rootcertbundle`` (our certificate),
       and checks ``iss``, ``aud``, ``exp``/``nbf`` and ``access``.

    Policy, fixed and simple: a known user with the right password gets every
    action asked for; anonymous callers get ``pull`` on repositories named
    ``public/…`` and nothing else; wrong credentials get 401 and a JSON error.

    The JWT is RS256-signed with a key made at start; the header carries the
    self-signed certificate as ``x5c`` (distribution 2.8 verifies the chain
    against ``rootcertbundle`` and takes the key from it) and its libtrust
    ``kid``.  ``aud`` is a single string: 2.8 rejects a list as malformed.

    ``requests`` records each token request: ``{"service", "scope": [...],
    "account", "user", "valid": True|False|None (no credentials),
    "granted": [access entries]}``.  ``expires_in`` may be lowered by a test
    to exercise token refresh.
    """

    def __init__(self, base: Path, users: dict[str, str] | None = None,
                 service: str = SERVICE, issuer: str = ISSUER, expires_in: int = 300) -> None:
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = self._self_signed(self._key)
        self.cert_path = self.base / "token-cert.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        self.kid = libtrust_key_id(self._key.public_key())
        self._httpd = ThreadingHTTPServer((LOCALHOST, 0), _TokenHandler)
        self._httpd.daemon_threads = True
        self._httpd.token_server = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self.host = f"{LOCALHOST}:{self.port}"
        self.url = f"http://{self.host}/token"  # the realm
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="token-server",
                                        kwargs={"poll_interval": POLL}, daemon=True)
        self._thread.start()

    @staticmethod
    def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
        """A self-signed CA certificate for ``key``: it is the whole chain, leaf and root."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyctr test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))

    def issue(self, subject: str, access: list[dict[str, Any]], audience: str | None = None,
              expires_in: int | None = None, now: float | None = None) -> str:
        """A signed JWT for ``subject`` with these ``access`` entries.

        Public so a test can also make tokens by hand: an expired one
        (``now`` in the past), one for another audience, one granting less.
        """
        now = time.time() if now is None else now
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.service,
            "exp": int(now) + (self.expires_in if expires_in is None else expires_in),
            "nbf": int(now) - 1,
            "iat": int(now),
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        """The policy: what ``user`` (None: anonymous) gets of the ``scopes`` asked."""
        granted = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            if user is None:
                allowed = ["pull"] if kind == "repository" and name.startswith("public/") else []
                actions = [a for a in actions if a in allowed]
            if actions:
                granted.append({"type": kind, "name": name, "actions": actions})
        return granted

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _TokenHandler(BaseHTTPRequestHandler):
    """GET /token for the TokenServer that owns the http.server (``server.token_server``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the TokenServer's .requests is the log

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        # The OAuth2 form (POST grant_type=password|refresh_token) is optional
        # in the spec; a 404 tells clients to fall back to GET, as they must.
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._json(404, {"errors": [{"code": "UNSUPPORTED", "message": "use GET /token"}]})

    def do_GET(self) -> None:
        ts: TokenServer = self.server.token_server  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self._json(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
            return
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        service = (query.get("service") or [ts.service])[0]
        account = (query.get("account") or [None])[0]
        user, valid = None, None
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", None
            valid = user in ts.users and ts.users[user] == password
        entry = {"service": service, "scope": scopes, "account": account, "user": user,
                 "valid": valid, "granted": []}
        if valid is False:
            ts._record(entry)
            self._json(401, {"errors": [{"code": "UNAUTHORIZED",
                                         "message": "invalid username or password"}]},
                       {"WWW-Authenticate": 'Basic realm="pyctr test token server"'})
            return
        entry["granted"] = ts.grant(user if valid else None, scopes)
        ts._record(entry)
        token = ts.issue(user or "", entry["granted"], audience=service)
        issued = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._json(200, {"token": token, "access_token": token,
                         "expires_in": ts.expires_in, "issued_at": issued})


# ---- the registry -----------------------------------------------------------------------


class AccessLogEntry(NamedTuple):
    """One request from the registry's access log (Apache combined format)."""

    method: str
    path: str       # the request target as sent: path and query
    status: int
    size: int       # response body bytes written
    agent: str


# 127.0.0.1 - - [25/Nov/2026:22:26:29 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" '
    r'(?P<status>\d{3}) (?P<size>\d+|-)(?: "[^"]*" "(?P<agent>[^"]*)")?')
_SYNC = "pyctr-log-sync"  # query parameter of the requests requests() makes to flush the log


@dataclass
class RegistryServer:
    """A running ``docker-registry serve`` (distribution 2.8); see ``start_registry``."""

    base: Path
    port: int
    process: subprocess.Popen
    config: Path
    log: Path
    storage: Path
    auth: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    token_server: TokenServer | None = None
    _syncs: int = field(default=0, repr=False)  # log-sync requests made so far

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of an image reference."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, name: str, tag: str = "latest") -> str:
        """``127.0.0.1:PORT/name:tag``."""
        return f"{self.host}/{name}:{tag}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _sync_log(self, timeout: float = 5.0) -> None:
        """Make sure every request answered so far is in the log.

        The access log line is written just *after* the response went out,
        so a test reading the log right after its client returned could miss
        the last request.  We send a marker request of our own and wait for
        its line: the lines of requests answered before it are there by then.
        """
        self._syncs += 1
        marker = f"/v2/?{_SYNC}={self._syncs}"
        conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=timeout)
        try:
            conn.request("GET", marker)
            conn.getresponse().read()
        finally:
            conn.close()
        deadline = time.monotonic() + timeout
        line = f'"GET {marker} HTTP/'  # the access-log line, not logrus' line before it
        while line not in self.log_text():
            if time.monotonic() > deadline:
                raise FixtureError(f"registry never logged {marker}:\n{self.log_tail()}")
            time.sleep(0.005)

    def access_log(self) -> list[AccessLogEntry]:
        """Every request the registry answered so far, oldest first (ours for syncing left out).

        Parses only the access-log lines (one per request, 401s included),
        skipping the logrus lines between them and a torn last line.
        """
        if self.process.poll() is None:
            self._sync_log()
        entries = []
        for line in self.log_text().splitlines():
            m = _ACCESS_LINE.match(line)
            if m is None or f"{_SYNC}=" in m["path"]:
                continue
            size = 0 if m["size"] == "-" else int(m["size"])
            entries.append(AccessLogEntry(m["method"], m["path"], int(m["status"]), size,
                                          m["agent"] or ""))
        return entries

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of each request the registry logged so far; path includes the query."""
        return [(e.method, e.path) for e in self.access_log()]

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (overwrite it to corrupt at rest)."""
        algo, _, hexpart = digest.partition(":")
        return (self.storage / "docker/registry/v2/blobs" / algo / hexpart[:2] / hexpart / "data")

    def stop(self) -> None:
        """SIGTERM the registry (SIGKILL after 5 s), then its token server (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.token_server is not None:
            self.token_server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _registry_config(port: int, storage: Path, auth_block: str) -> str:
    """distribution's config.yml.  Strings are JSON-quoted: a JSON string is a YAML string."""
    q = json.dumps
    return f"""\
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {q(str(storage))}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {q(f"{LOCALHOST}:{port}")}
  secret: {q(uuid.uuid4().hex)}
{auth_block}"""


def _htpasswd_file(path: Path, users: dict[str, str]) -> None:
    """An htpasswd file made by ``htpasswd -Bbn`` (distribution accepts bcrypt entries only)."""
    lines = [_run(["htpasswd", "-Bbn", user, password], what="htpasswd").strip()
             for user, password in users.items()]
    path.write_text("".join(line + "\n" for line in lines))


def _wait_ready(port: int, process: subprocess.Popen, timeout: float) -> bool:
    """Poll GET /v2/ until it answers 200 (open) or 401 (auth): True, or False if it died/timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=1)
        try:  # marked like a log sync, so that requests() leaves it out
            conn.request("GET", f"/v2/?{_SYNC}=ready")
            if conn.getresponse().status in (200, 401):
                return True
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    return False


def start_registry(base: Path, auth: str | None = None,
                   users: dict[str, str] | None = None) -> RegistryServer:
    """Start a distribution registry on 127.0.0.1:<free port>; return once GET /v2/ answers.

    ``base`` receives config.yml, registry.log, storage/ (and htpasswd, or the
    token server's certificate).  ``auth``: None (open), "htpasswd" (Basic,
    ``users`` = {name: password}) or "token" (Bearer, via a TokenServer that
    knows ``users``; stopped with the registry).  Use as a context manager or
    call ``.stop()``.
    """
    if auth not in (None, "htpasswd", "token"):
        raise ValueError(f"auth must be None, 'htpasswd' or 'token', not {auth!r}")
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    users = dict(users or {})
    storage = base / "storage"
    storage.mkdir(exist_ok=True)
    token_server = None
    auth_block = ""
    if auth == "htpasswd":
        _htpasswd_file(base / "htpasswd", users)
        auth_block = (f"auth:\n  htpasswd:\n    realm: pyctr-test-registry\n"
                      f"    path: {json.dumps(str(base / 'htpasswd'))}\n")
    elif auth == "token":
        token_server = TokenServer(base / "token", users)
        auth_block = (f"auth:\n  token:\n    realm: {json.dumps(token_server.url)}\n"
                      f"    service: {json.dumps(token_server.service)}\n"
                      f"    issuer: {json.dumps(token_server.issuer)}\n"
                      f"    rootcertbundle: {json.dumps(str(token_server.cert_path))}\n")
    # REGISTRY_* variables override config.yml keys (REGISTRY_HTTP_ADDR …): none from the host
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    config, log = base / "config.yml", base / "registry.log"
    try:
        for _attempt in range(3):
            port = free_port()
            config.write_text(_registry_config(port, storage, auth_block))
            with open(log, "ab") as out:
                process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], env=env,
                                           stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            reg = RegistryServer(base=base, port=port, process=process, config=config, log=log,
                                 storage=storage, auth=auth, users=users,
                                 token_server=token_server)
            if _wait_ready(port, process, START_TIMEOUT):
                return reg
            reg.token_server = None  # keep it for the next attempt
            reg.stop()
            if "address already in use" not in reg.log_text():
                break
        code = reg.process.returncode
        raise FixtureError(f"docker-registry did not start on {LOCALHOST}:{port} within "
                           f"{START_TIMEOUT:.0f} s (exit status {code}); {log} ends:\n"
                           f"{reg.log_tail()}")
    except BaseException:
        if token_server is not None:
            token_server.stop()
        raise


# ---- images -----------------------------------------------------------------------------

APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "sleep", "env", "id", "uname",
           "mkdir", "rm", "wc", "head", "test", "sha256sum", "hostname", "ps")


def _tar_bytes(entries: Sequence[tuple[str, bytes | str | None, int]]) -> bytes:
    """A reproducible tar: (name, content, mode) with content bytes = file, str = symlink
    target, None = directory; owned by root, mtime 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime, ti.uid, ti.gid = mode, 0, 0, 0
            if content is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif isinstance(content, str):
                ti.type = tarfile.SYMTYPE
                ti.linkname = content
                tf.addfile(ti)
            else:
                ti.size = len(content)
                tf.addfile(ti, io.BytesIO(content))
    return buf.getvalue()


def busybox_layer_tar(extra: Sequence[tuple[str, bytes | str | None, int]] = ()) -> bytes:
    """The base layer: /bin/busybox (static, the host's) and a few applet links.

    Reproducible, so every image built here shares this layer's digest (handy
    for cross-repository mount and "already exists" tests).
    """
    if not Path(BUSYBOX).exists():
        raise FixtureError("needs busybox-static (scripts/setup.sh installs it)")
    entries: list[tuple[str, bytes | str | None, int]] = [
        ("bin", None, 0o755), ("etc", None, 0o755), ("tmp", None, 0o1777),
        ("proc", None, 0o755), ("sys", None, 0o755), ("dev", None, 0o755),
        ("root", None, 0o700),
        ("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755),
        *((f"bin/{a}", "busybox", 0o777) for a in APPLETS),
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", b"root:x:0:\n", 0o644),
        *extra,
    ]
    return _tar_bytes(entries)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def layout_blob(layout: Path, digest: str) -> Path:
    """The file of a blob in an OCI layout: blobs/<algo>/<hex>."""
    algo, _, hexpart = digest.partition(":")
    return Path(layout) / "blobs" / algo / hexpart


def _write_blob(layout: Path, data: bytes, media_type: str) -> dict[str, Any]:
    """Store ``data`` in the layout; return its descriptor."""
    digest = sha256_digest(data)
    path = layout_blob(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _init_layout(layout: Path) -> None:
    """An empty OCI layout (oci-layout, index.json, blobs/sha256) unless one is there."""
    layout = Path(layout)
    if (layout / "index.json").exists():
        return
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))


def _tag_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    for desc in _read_json(Path(layout) / "index.json").get("manifests", []):
        if desc.get("annotations", {}).get(REF_NAME) == tag:
            return desc
    raise FixtureError(f"no tag {tag!r} in {layout}/index.json")


def _set_tags(layout: Path, tags: dict[str, dict[str, Any] | None]) -> None:
    """Point each tag of ``tags`` at a descriptor (None: remove the tag) in index.json."""
    path = Path(layout) / "index.json"
    index = _read_json(path)
    kept = [d for d in index.get("manifests", [])
            if d.get("annotations", {}).get(REF_NAME) not in tags]
    for tag, desc in tags.items():
        if desc is not None:
            kept.append({**desc, "annotations": {**desc.get("annotations", {}), REF_NAME: tag}})
    index["manifests"] = kept
    path.write_text(json.dumps(index))


def image_facts(layout: Path, tag: str) -> dict[str, Any]:
    """What a test wants to know about a tagged image of a layout (the dict builders return)."""
    desc = _tag_descriptor(layout, tag)
    manifest = _read_json(layout_blob(layout, desc["digest"]))
    config = _read_json(layout_blob(layout, manifest["config"]["digest"]))
    return {
        "layout": Path(layout),
        "tag": tag,
        "media_type": desc["mediaType"],
        "manifest_digest": desc["digest"],
        "manifest_size": desc["size"],
        "config_digest": manifest["config"]["digest"],
        "layer_digests": [layer["digest"] for layer in manifest["layers"]],
        "layer_sizes": [layer["size"] for layer in manifest["layers"]],
        "diff_ids": list(config["rootfs"]["diff_ids"]),
        "platform": {k: config[k] for k in ("os", "architecture", "variant") if k in config},
    }


def _edit_config(layout: Path, tag: str, edit: Any) -> None:
    """Change a tagged image's config JSON in place: new config blob, new manifest, re-tag.

    For what umoci 0.4 has no flag for (the platform ``variant``).  The
    digest chain is the lesson: the config's digest is in the manifest, so
    the manifest changes too, and the tag moves to the new manifest.
    """
    desc = _tag_descriptor(layout, tag)
    manifest = _read_json(layout_blob(layout, desc["digest"]))
    config = _read_json(layout_blob(layout, manifest["config"]["digest"]))
    edit(config)
    manifest["config"] = _write_blob(layout, json.dumps(config).encode(),
                                     manifest["config"]["mediaType"])
    new = _write_blob(layout, json.dumps(manifest).encode(), desc["mediaType"])
    _set_tags(layout, {tag: new})


def build_image(layout: Path, tag: str = "latest", layers: int = 3, layer_mb: float = 0.1,
                arch: str = "amd64", variant: str | None = None, cmd: list[str] | None = None,
                marker: str | None = None) -> dict[str, Any]:
    """Build a runnable image with umoci into the OCI layout ``layout`` (created if need be).

    Layer 1 is busybox (``busybox_layer_tar``); layers 2..``layers`` each hold
    one file of ``layer_mb`` MiB of random bytes (/data/layerN.bin: random,
    so gzip cannot shrink it and sizes are what they say).  ``marker``: a file
    /marker with that text in the last layer.  The config says linux/``arch``
    (/``variant``) and Cmd ``cmd`` (default ["/bin/sh"]); the busybox inside is
    the host's whatever ``arch`` says.  Returns ``image_facts``.
    """
    if layers < 1:
        raise ValueError("an image needs at least the busybox layer")
    layout = Path(layout)
    image = f"{layout}:{tag}"
    if not (layout / "index.json").exists():
        _run(["umoci", "init", "--layout", str(layout)], what="umoci init")
    _run(["umoci", "new", "--image", image], what="umoci new")
    marker_entry: list[tuple[str, bytes | str | None, int]] = (
        [("marker", marker.encode(), 0o644)] if marker is not None else [])
    work = layout.parent / f".{layout.name}-layers-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        for n in range(1, layers + 1):
            last = marker_entry if n == layers else []
            if n == 1:
                data = busybox_layer_tar(last)
            else:
                size = int(layer_mb * 1024 * 1024)
                data = _tar_bytes([("data", None, 0o755),
                                   (f"data/layer{n}.bin", os.urandom(size), 0o644), *last])
            tar = work / f"layer{n}.tar"
            tar.write_bytes(data)
            _run(["umoci", "raw", "add-layer", "--image", image, str(tar)],
                 what="umoci raw add-layer")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    argv = ["umoci", "config", "--image", image, "--os", "linux", "--architecture", arch]
    for arg in cmd if cmd is not None else ["/bin/sh"]:
        argv += ["--config.cmd", arg]
    _run(argv, what="umoci config")
    if variant is not None:
        _edit_config(layout, tag, lambda config: config.__setitem__("variant", variant))
    _run(["umoci", "gc", "--layout", str(layout)], what="umoci gc")
    return image_facts(layout, tag)


def platform_name(os_: str, arch: str, variant: str | None) -> str:
    """``os/arch[/variant]``, the way docker --platform writes it."""
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


def build_index(layout: Path, tag: str,
                platforms: list[tuple[str, str, str | None]]) -> dict[str, Any]:
    """A multi-platform image: ``tag`` points at an OCI image index.

    One image per (os, arch, variant), each with the busybox layer and a
    small second layer holding /marker = "os/arch[/variant]", so a test that
    pulled for a platform can check which image it got.  The index lists
    each manifest with its ``platform``.  Returns ``{"index_digest",
    "index_size", "manifests": {platform: manifest digest}, "images":
    {platform: image_facts}}``; push it with ``push(…, all_=True)``.
    """
    layout = Path(layout)
    entries, manifests, images, scratch = [], {}, {}, {}
    for os_, arch, variant in platforms:
        name = platform_name(os_, arch, variant)
        sub_tag = f"{tag}.{name.replace('/', '-')}"
        facts = build_image(layout, sub_tag, layers=2, layer_mb=0.01, arch=arch,
                            variant=variant, marker=name)
        if os_ != "linux":
            _edit_config(layout, sub_tag, lambda config, os_=os_: config.__setitem__("os", os_))
            facts = image_facts(layout, sub_tag)
        platform = {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}
        entries.append({"mediaType": OCI_MANIFEST, "digest": facts["manifest_digest"],
                        "size": facts["manifest_size"], "platform": platform})
        manifests[name], images[name] = facts["manifest_digest"], facts
        scratch[sub_tag] = None
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    desc = _write_blob(layout, json.dumps(index).encode(), OCI_INDEX)
    _set_tags(layout, {**scratch, tag: desc})  # the per-platform tags go: only the index is named
    return {"layout": layout, "tag": tag, "index_digest": desc["digest"],
            "index_size": desc["size"], "manifests": manifests, "images": images}


def build_bad_gzip_image(layout: Path, tag: str) -> dict[str, Any]:
    """An image whose only layer is a TRUNCATED gzip stream, written by hand.

    The manifest is honest about the bytes it ships (digest and size of the
    truncated blob: the registry accepts the push, and a digest check on pull
    passes); the config's diff_id is that of the whole tar.  Only a client
    that decompresses and checks the stream (unexpected end of gzip data, or
    a diff_id mismatch) notices.  Returns ``image_facts`` plus
    ``full_size``/``truncated_size`` of the gzip stream.
    """
    layout = Path(layout)
    _init_layout(layout)
    tar = _tar_bytes([("data", None, 0o755),
                      ("data/payload.bin", os.urandom(256 * 1024), 0o644),
                      ("data/hello.txt", b"hello\n", 0o644)])
    full = gzip.compress(tar, mtime=0)
    truncated = full[:len(full) // 2]
    layer = _write_blob(layout, truncated, OCI_LAYER_GZIP)
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]}}
    config_desc = _write_blob(layout, json.dumps(config).encode(), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": config_desc, "layers": [layer]}
    _set_tags(layout, {tag: _write_blob(layout, json.dumps(manifest).encode(), OCI_MANIFEST)})
    return {**image_facts(layout, tag), "full_size": len(full), "truncated_size": len(truncated)}


# ---- skopeo -----------------------------------------------------------------------------

_preserve_digests: bool | None = None


def _skopeo_preserves_digests() -> bool:
    """Whether this skopeo has ``copy --preserve-digests`` (1.6+)."""
    global _preserve_digests
    if _preserve_digests is None:
        help_text = _run(["skopeo", "copy", "--help"], what="skopeo copy --help")
        _preserve_digests = "--preserve-digests" in help_text
    return _preserve_digests


def push(layout: Path, tag: str, dest: str, creds: str | None = None, all_: bool = False,
         format_: str | None = None) -> None:
    """``skopeo copy oci:LAYOUT:TAG docker://DEST`` over plain HTTP.

    ``dest`` is ``host:port/name:tag``; ``creds`` ``user:password`` (None:
    anonymous, never a stored login); ``all_`` copies every image of an index;
    ``format_`` "v2s2" converts to Docker schema 2 (new manifest digest,
    same layers) or "oci".  Without a format the digests are preserved.
    Raises FixtureError with skopeo's stderr on failure.
    """
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    argv += ["--dest-creds", creds] if creds else ["--dest-no-creds"]
    if all_:
        argv.append("--all")
    if format_ is not None:
        argv += ["--format", format_]
    elif _skopeo_preserves_digests():
        argv.append("--preserve-digests")
    _run([*argv, f"oci:{layout}:{tag}", f"docker://{dest}"], what="skopeo copy (push)")


def skopeo_pull(ref: str, dest_layout: Path, creds: str | None = None, all_: bool = False) -> None:
    """``skopeo copy docker://REF oci:DEST:latest``: the reference pull to compare bytes with.

    Blobs arrive byte for byte; an OCI manifest too (a schema 2 one is
    converted to OCI, as the oci: transport stores nothing else).
    """
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]
    argv += ["--src-creds", creds] if creds else ["--src-no-creds"]
    if all_:
        argv.append("--all")
    _run([*argv, f"docker://{ref}", f"oci:{dest_layout}:latest"], what="skopeo copy (pull)")


def skopeo_inspect(ref: str, creds: str | None = None, raw: bool = False) -> dict[str, Any]:
    """``skopeo inspect [--raw] docker://REF`` as JSON (raw: the manifest or index itself)."""
    argv = ["skopeo", "--insecure-policy", "inspect", "--tls-verify=false"]
    argv += ["--creds", creds] if creds else ["--no-creds"]
    if raw:
        argv.append("--raw")
    return json.loads(_run([*argv, f"docker://{ref}"], what="skopeo inspect"))


# ---- the fault proxy --------------------------------------------------------------------

CHUNK = 64 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade"}
RECORDED_HEADERS = ("Range", "Content-Range", "Content-Length", "Content-Type",
                    "Transfer-Encoding", "Authorization", "Accept", "If-Range")


class ProxyRequest(NamedTuple):
    """A request the proxy saw: (method, path with query, the RECORDED_HEADERS it carried)."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Rule:
    kind: str                   # fail | cut | corrupt | redirect
    pattern: re.Pattern[str]
    times: int
    method: str | None = None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    after_bytes: int = 0


class _Abort(Exception):
    """Drop the client connection without a word (the client or the registry went away)."""


class FaultProxy:
    """An HTTP/1.1 proxy in front of a registry that can misbehave on cue.

    ``FaultProxy(registry)`` listens on 127.0.0.1:<free port> and forwards
    each request to the registry, streaming bodies both ways (blob uploads
    by PUT/PATCH, chunked or not, and downloads), rewriting only the Host
    header, and the Location headers that point at the registry (upload
    URLs) so that they point back at the proxy.  WWW-Authenticate passes
    through untouched, so token auth goes to the token server directly.

    Fault rules, added while the test runs, match ``re.search(path_regex,
    path_with_query)`` (and ``method`` if given) and are used up after
    ``times`` matching requests.  One fault per request: a ``fail`` rule
    first, else a ``cut``, else a ``corrupt`` (the first added of a kind wins):

    * ``fail`` answers ``status`` with ``headers`` and a registry-style JSON
      error, without asking the registry (the request body is read first).
    * ``cut`` and ``corrupt`` act on *successful responses with a body*
      only (2xx, not HEAD), so a 401 before the token or a HEAD probe does
      not use them up.  ``cut`` forwards the headers and ``after_bytes`` of
      the body, then closes the connection; ``corrupt`` flips one byte (the
      middle one) of the body.
    * ``throttle(bytes_per_second)`` paces every body forwarded, either way
      (``throttle(None)`` lifts it).

    ``requests`` lists every request as a ``ProxyRequest`` (method, path,
    headers), faulted or not, in arrival order.
    """

    def __init__(self, upstream: RegistryServer | str) -> None:
        self.registry = upstream if isinstance(upstream, RegistryServer) else None
        self.upstream = upstream.host if isinstance(upstream, RegistryServer) else upstream
        uhost, _, uport = self.upstream.rpartition(":")
        self._upstream_addr = (uhost, int(uport))
        self.requests: list[ProxyRequest] = []
        self.rules: list[_Rule] = []
        self.bytes_per_second: float | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._httpd = _ProxyHTTPServer((LOCALHOST, 0), _ProxyHandler)
        self._httpd.proxy = self
        self.port = self._httpd.server_address[1]
        self.host = f"{LOCALHOST}:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-proxy",
                                        kwargs={"poll_interval": POLL}, daemon=True)
        self._thread.start()

    def ref(self, name: str, tag: str = "latest") -> str:
        """``127.0.0.1:PROXYPORT/name:tag``: an image reference that goes through the proxy."""
        return f"{self.host}/{name}:{tag}"

    # -- rules --

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self.rules.append(rule)

    def fail(self, path_regex: str, status: int, times: int = 1,
             headers: dict[str, str] | None = None, *, method: str | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` (and ``headers``)."""
        self._add(_Rule("fail", re.compile(path_regex), times, method, status=status,
                        headers=dict(headers or {})))

    def cut(self, path_regex: str, after_bytes: int, times: int = 1, *,
            method: str | None = None) -> None:
        """Close the connection after ``after_bytes`` of the next ``times`` matching bodies."""
        self._add(_Rule("cut", re.compile(path_regex), times, method, after_bytes=after_bytes))

    def corrupt(self, path_regex: str, times: int = 1, *, method: str | None = None) -> None:
        """Flip a byte in the next ``times`` matching response bodies."""
        self._add(_Rule("corrupt", re.compile(path_regex), times, method))

    def redirect(self, path_regex: str, times: int = 1) -> None:
        """Answer the next ``times`` matching blob GETs with ``307`` to a "storage" URL, as
        registries backed by S3 or GCS do: ``http://localhost:PORT/_storage/<digest>?…``.

        The storage is this proxy again, under another host name (``localhost``,
        not ``127.0.0.1``), so a client must treat it as another host: it must
        not send the registry's Authorization there.  It serves the blob from the
        registry's storage directory (needs a RegistryServer upstream).
        """
        self._add(_Rule("redirect", re.compile(path_regex), times, "GET"))

    def throttle(self, bytes_per_second: float | None) -> None:
        """Forward bodies at about this rate (None or 0: full speed)."""
        self.bytes_per_second = bytes_per_second or None

    def clear(self) -> None:
        """Forget all rules, the throttle and the recorded requests."""
        with self._lock:
            self.rules.clear()
            self.requests.clear()
        self.bytes_per_second = None

    def _take(self, kind: str, method: str, path: str,
              fits: Callable[[_Rule], bool] | None = None) -> _Rule | None:
        """The first live rule of ``kind`` matching the request (and ``fits``), one use spent."""
        with self._lock:
            for rule in self.rules:
                if (rule.kind == kind and rule.times > 0
                        and (rule.method is None or rule.method == method)
                        and rule.pattern.search(path) and (fits is None or fits(rule))):
                    rule.times -= 1
                    return rule
        return None

    def _record(self, method: str, path: str, headers: Any) -> None:
        picked = {h: headers[h] for h in RECORDED_HEADERS if headers.get(h) is not None}
        with self._lock:
            self.requests.append(ProxyRequest(method, path, picked))

    # -- pacing --

    def _chunk_size(self) -> int:
        bps = self.bytes_per_second
        return CHUNK if bps is None else max(1, min(CHUNK, int(bps / 20)))

    def _pace(self, nbytes: int) -> None:
        bps = self.bytes_per_second
        if bps:
            time.sleep(nbytes / bps)

    # -- lifetime --

    def stop(self) -> None:
        """Stop accepting, shut the connections still open, join the thread (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ProxyHTTPServer(ThreadingHTTPServer):
    """One thread per client connection; the FaultProxy tracks the sockets to close them."""

    daemon_threads = True
    proxy: FaultProxy

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.proxy._lock:
            self.proxy._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.proxy._lock:
            self.proxy._conns.discard(request)
        super().shutdown_request(request)


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one client connection's requests (keep-alive) to the registry."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive client is dropped after this
    server: _ProxyHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # FaultProxy.requests is the log

    # every method the registry API uses goes the same way
    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # -- reading the client's body --

    def _client_body(self) -> Iterator[bytes]:
        """Yield the request body in chunks, de-chunking a chunked one."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise _Abort("client went away in a chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    data = self.rfile.read1(min(size, self.server.proxy._chunk_size()))
                    if not data:
                        raise _Abort("client went away in a chunk")
                    size -= len(data)
                    yield data
                self.rfile.readline(1024)  # the CRLF after the chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self.rfile.read1(min(remaining, self.server.proxy._chunk_size()))
                if not data:
                    raise _Abort("client went away in the body")
                remaining -= len(data)
                yield data

    def _has_body(self) -> bool:
        return (self.headers.get("Content-Length") not in (None, "0")
                or "chunked" in (self.headers.get("Transfer-Encoding") or "").lower())

    # -- the request --

    def _handle(self) -> None:
        proxy = self.server.proxy
        method, path = self.command, self.path
        proxy._record(method, path, self.headers)
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
        try:
            if path.startswith("/_storage/"):
                self._storage(proxy, path)
                return
            rule = proxy._take("redirect", method, path)
            if rule is not None:
                digest = path.rsplit("/", 1)[-1]
                self.send_response(307)
                self.send_header("Location", f"http://localhost:{proxy.port}/_storage/"
                                             f"{digest}?X-Amz-Signature=pyctr-test")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            rule = proxy._take("fail", method, path)
            if rule is not None:
                for _ in self._client_body():
                    pass
                self._fault_response(rule)
                return
            self._forward(proxy, method, path)
        except (_Abort, OSError):  # cut on purpose, or the client/registry went away
            self.close_connection = True

    def _storage(self, proxy: FaultProxy, path: str) -> None:
        """The blob store a ``redirect`` sent the client to (no auth: the URL is signed)."""
        digest = urllib.parse.urlsplit(path).path.rsplit("/", 1)[-1]
        blob = proxy.registry.blob_path(digest) if proxy.registry is not None else None
        if blob is None or not blob.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = blob.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _fault_response(self, rule: _Rule) -> None:
        codes = {401: "UNAUTHORIZED", 404: "NOT_FOUND", 429: "TOOMANYREQUESTS",
                 503: "UNAVAILABLE"}
        body = json.dumps({"errors": [{"code": codes.get(rule.status, "UNKNOWN"),
                                       "message": f"injected by FaultProxy ({rule.status})"}]})
        data = body.encode() if self.command != "HEAD" else b""
        self.send_response(rule.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in rule.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _forward(self, proxy: FaultProxy, method: str, path: str) -> None:
        upstream = http.client.HTTPConnection(*proxy._upstream_addr, timeout=60)
        try:
            try:
                self._send_upstream(upstream, proxy, method, path)
                resp = upstream.getresponse()
            except (OSError, http.client.HTTPException) as e:
                self._bad_gateway(str(e))
                return
            self._relay_response(proxy, method, path, resp)
        finally:
            upstream.close()

    def _send_upstream(self, upstream: http.client.HTTPConnection, proxy: FaultProxy,
                       method: str, path: str) -> None:
        upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        for name, value in self.headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in ("host", "expect"):
                continue
            if lname == "content-length" and chunked:
                continue
            upstream.putheader(name, value)
        upstream.putheader("Host", proxy.upstream)
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        upstream.endheaders()
        if not self._has_body():
            return
        for data in self._client_body():
            upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            proxy._pace(len(data))
        if chunked:
            upstream.send(b"0\r\n\r\n")

    def _bad_gateway(self, why: str) -> None:
        """502: the registry could not be reached or dropped us (a request body may be unread)."""
        self.close_connection = True
        body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": f"proxy: {why}"}]})
        self.send_response(502)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def _rewrite_location(self, proxy: FaultProxy, value: str) -> str:
        for scheme in ("http://", "https://"):
            prefix = scheme + proxy.upstream
            if value.startswith(prefix):
                return "http://" + proxy.host + value[len(prefix):]
        return value

    # -- the response --

    def _relay_response(self, proxy: FaultProxy, method: str, path: str,
                        resp: http.client.HTTPResponse) -> None:
        no_body = method == "HEAD" or resp.status in (204, 304) or resp.status < 200
        length = resp.getheader("Content-Length")
        length_n = int(length) if length is not None and length.isdigit() else None
        with_body = not no_body and length_n != 0
        cut = corrupt = None
        if with_body and 200 <= resp.status < 300:
            # a body no longer than after_bytes cannot be cut there: the rule waits
            cut = proxy._take("cut", method, path,
                              lambda rule: length_n is None or length_n > rule.after_bytes)
            if cut is None:  # one fault per request
                corrupt = proxy._take("corrupt", method, path)
        self.send_response_only(resp.status, resp.reason)
        for name, value in resp.getheaders():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname == "content-length":
                continue
            if lname == "location":
                value = self._rewrite_location(proxy, value)
            self.send_header(name, value)
        chunked_out = not no_body and length_n is None
        if length is not None:
            self.send_header("Content-Length", length)  # HEAD keeps its Content-Length too
        elif chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        elif not no_body:
            self.send_header("Content-Length", "0")
        self.end_headers()
        if no_body:
            return
        flip_at = (length_n // 2 if length_n else 0) if corrupt is not None else None
        sent = 0
        while True:
            try:
                data = resp.read1(proxy._chunk_size())
            except (OSError, http.client.HTTPException) as e:
                raise _Abort(f"registry went away: {e}") from e
            if not data:
                break
            if flip_at is not None and sent <= flip_at < sent + len(data):
                i = flip_at - sent
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            if cut is not None and sent + len(data) >= cut.after_bytes:
                data = data[:cut.after_bytes - sent]
                self._write(data, chunked_out)
                self._hang_up()
                return
            self._write(data, chunked_out)
            proxy._pace(len(data))
            sent += len(data)
        if cut is not None:  # a chunked body shorter than after_bytes: cut at its end
            self._hang_up()
            return
        if chunked_out:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, data: bytes, chunked: bool) -> None:
        if not data:
            return
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

    def _hang_up(self) -> None:
        """Close the client connection mid-body: FIN after the bytes sent, nothing more."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Abort("cut")


__all__ = [
    "AccessLogEntry", "FaultProxy", "FixtureError", "ProxyRequest", "RegistryServer",
    "TokenServer", "build_bad_gzip_image", "build_image", "build_index", "busybox_layer_tar",
    "free_port", "image_facts", "layout_blob", "libtrust_key_id", "parse_scope",
    "platform_name", "push", "sha256_digest", "skopeo_inspect", "skopeo_pull", "start_registry",
]
