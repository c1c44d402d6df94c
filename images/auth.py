"""Registry credentials and settings: the auth file `pyctr login` writes, insecure registries.

The auth file has docker's shape, so either tool reads the other's::

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"}}}

It is ``--authfile``, else ``$REGISTRY_AUTH_FILE`` (podman's variable),
else ``~/.config/pyctr/auth.json``; it is written mode 0600, atomically.
When it has nothing for a registry, docker's own ``~/.docker/config.json``
is read too (its ``auths`` only: credential helpers are not run).  Docker
Hub is keyed ``https://index.docker.io/v1/``, as docker keys it.

A registry without TLS must be marked insecure: ``--insecure-registry
HOST`` on the command line, ``$PYCTR_INSECURE_REGISTRIES`` (comma separated)
or, as in podman's registries.conf, in ``/etc/pyctr/registries.conf``
(``$PYCTR_REGISTRIES_CONF``)::

    [[registry]]
    location = "myregistry:5000"
    insecure = true

localhost and 127.0.0.0/8 always are, as in docker.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from pyctr.errors import UserError

from .reference import DEFAULT_DOMAIN

HUB_KEY = "https://index.docker.io/v1/"
REGISTRIES_CONF = "/etc/pyctr/registries.conf"
_HUB_NAMES = {DEFAULT_DOMAIN, "index.docker.io", "registry-1.docker.io", HUB_KEY}


def auth_file(path: str | Path | None = None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return Path(env)
    return Path(os.path.expanduser("~")) / ".config" / "pyctr" / "auth.json"


def _key(server: str) -> str:
    """The key of a registry in the file: docker's for the Hub, else host[:port]."""
    s = server.strip()
    for prefix in ("https://", "http://"):
        s = s.removeprefix(prefix)
    s = s.split("/", 1)[0]
    return HUB_KEY if s in _HUB_NAMES or server.strip() == HUB_KEY else s


def check_server(server: str) -> str:
    """``pyctr login SERVER``: a registry's host[:port] (a URL is accepted and trimmed)."""
    key = _key(server)
    host = key if key != HUB_KEY else DEFAULT_DOMAIN
    if not host or any(c.isspace() for c in host) or "@" in host:
        raise UserError(f"invalid registry address {server!r}",
                        hint="give the registry's host[:port], e.g. localhost:5000")
    return host


def _read(path: Path) -> dict:
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the auth file {path}: {exc}",
                        hint="fix or remove it (pyctr login writes a new one)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("auths", {}), dict):
        raise UserError(f"the auth file {path} is not a docker-style auth file",
                        hint='it should be {"auths": {"host": {"auth": "…"}}}')
    return doc


def _decode(entry: dict, where: Path) -> tuple[str, str] | None:
    raw = entry.get("auth") if isinstance(entry, dict) else None
    if not raw:
        if isinstance(entry, dict) and entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
        return None
    try:
        user, _, password = base64.b64decode(raw).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"the auth file {where} has an unreadable entry",
                        hint="log in again: pyctr login") from None
    return (user, password) if user else None


def lookup(domain: str, path: str | Path | None = None) -> tuple[str, str] | None:
    """(user, password) for a registry, or None: log in anonymously."""
    key = _key(domain)
    files = [auth_file(path)]
    if path is None:
        files.append(Path(os.path.expanduser("~")) / ".docker" / "config.json")
    for f in files:
        auths = _read(f).get("auths", {})
        for k, entry in auths.items():
            if _key(k) == key:
                found = _decode(entry, f)
                if found is not None:
                    return found
    return None


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def store(domain: str, user: str, password: str, path: str | Path | None = None) -> Path:
    """Keep the credentials (after they were checked against the registry)."""
    f = auth_file(path)
    doc = _read(f)
    auths = doc.setdefault("auths", {})
    for k in [k for k in auths if _key(k) == _key(domain)]:
        del auths[k]
    auths[_key(domain)] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    _write(f, doc)
    return f


def remove(domain: str, path: str | Path | None = None) -> bool:
    """Forget a registry's credentials; False when there were none."""
    f = auth_file(path)
    doc = _read(f)
    auths = doc.get("auths", {})
    keys = [k for k in auths if _key(k) == _key(domain)]
    for k in keys:
        del auths[k]
    if keys:
        _write(f, doc)
    return bool(keys)


def insecure_registries(extra: tuple[str, ...] | list[str] = ()) -> set[str]:
    """Registries that may be reached over plain HTTP or unverified TLS."""
    out = {h.strip() for h in extra if h.strip()}
    out |= {h.strip() for h in os.environ.get("PYCTR_INSECURE_REGISTRIES", "").split(",")
            if h.strip()}
    conf = Path(os.environ.get("PYCTR_REGISTRIES_CONF") or REGISTRIES_CONF)
    try:
        data = conf.read_bytes()
    except OSError:
        return out
    import tomllib

    try:
        doc = tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {conf}: {exc}",
                        hint='it is TOML: [[registry]] location = "host:5000" insecure = true')
    for reg in doc.get("registry") or []:
        if isinstance(reg, dict) and reg.get("insecure") and reg.get("location"):
            out.add(str(reg["location"]))
    return out
