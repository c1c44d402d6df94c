"""Image references, read the way docker reads them.

``busybox`` means ``docker.io/library/busybox:latest``: the default domain
and the ``library/`` namespace are implied, as in distribution/reference.
The grammar is kept in small regular expressions so each rule can be read
next to the spec (distribution/reference's grammar, reimplemented).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyctr.errors import UserError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
NAME_MAX = 255

# patterns, compiled (and cached by re) on first use: `pyctr run` needs only a few
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG_RE = r"[\w][\w.-]{0,127}"  # matched with re.ASCII: \w is ASCII word characters only
_DIGEST_RE = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_SHA256_RE = r"sha256:[0-9a-f]{64}"
_ID_RE = r"[0-9a-f]{64}"


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized image reference (``domain/path[:tag][@digest]``)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def familiar_name(self) -> str:
        """The repository as docker prints it: ``busybox``, ``user/x``, ``localhost:5000/x``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        prefix = OFFICIAL_NAMESPACE + "/"
        if self.path.startswith(prefix) and "/" not in self.path[len(prefix):]:
            return self.path[len(prefix):]
        return self.path

    def familiar(self) -> str:
        """docker's short form: ``busybox:latest``, ``localhost:5000/x:1``."""
        return self.familiar_name() + self._suffix()

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag else ""
        return out + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _invalid(s: str, why: str = "") -> UserError:
    msg = "invalid reference format" + (f": {why}" if why else "")
    return UserError(f"{msg}: {s!r}",
                     hint="use [domain[:port]/]name[:tag][@sha256:digest], name in lowercase")


def _split_domain(name: str) -> tuple[str, str]:
    """A first component with '.' or ':' or equal to 'localhost' is a registry domain."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    return domain, path


def parse_reference(s: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize ``s``; a reference without tag or digest gets ``latest``."""
    if not s:
        raise _invalid(s, "empty reference")
    if re.fullmatch(_ID_RE, s):
        raise UserError(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings",
                        hint="to use an image by id, pass it to a command that takes an image")
    rest, _, digest = s.partition("@")
    if "@" in s:
        if not re.fullmatch(_DIGEST_RE, digest):
            raise _invalid(s, "invalid digest")
        if digest.startswith("sha256:") and not re.fullmatch(_SHA256_RE, digest):
            raise _invalid(s, "invalid sha256 digest")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not re.fullmatch(_TAG_RE, tag, re.ASCII):
            raise _invalid(s)
    if not rest:
        raise _invalid(s)
    domain, path = _split_domain(rest)
    if not re.fullmatch(_DOMAIN_RE, domain):
        raise _invalid(s)
    if not re.fullmatch(_PATH_RE, path):
        if re.fullmatch(_PATH_RE, path.lower()):
            raise UserError(f"invalid reference format: repository name must be lowercase: {s!r}",
                            hint=f"try {rest.lower()!r}")
        raise _invalid(s)
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _invalid(s, f"repository name must not be more than {NAME_MAX} characters")
    if tag is None and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest or None)
