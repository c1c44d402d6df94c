"""/etc/hosts for containers: docker's header, the container itself, its peers.

The engine bind-mounts a per-container hosts file; when peers come and go
it rewrites the file *in place* (``write_in_place``): a rename would put a
new inode beside the one the bind mount holds, and the container would never
see it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

HEADER = (
    ("127.0.0.1", ("localhost",)),
    ("::1", ("localhost", "ip6-localhost", "ip6-loopback")),
    ("fe00::0", ("ip6-localnet",)),
    ("ff00::0", ("ip6-mcastprefix",)),
    ("ff02::1", ("ip6-allnodes",)),
    ("ff02::2", ("ip6-allrouters",)),
)


def render_hosts(own_hostname: str, own_ip: str | None,
                 peers: Iterable[tuple[str, Sequence[str]]] = ()) -> str:
    """The file's text; ``own_ip`` None (``--network none``) maps the hostname to nothing.

    ``peers`` are ``NetworkStore.hosts_entries(net)`` of each network the
    container is on; its own address among them is skipped, and a name
    only appears once (the first network wins, as with docker's resolver).
    """
    lines = [f"{ip}\t{' '.join(names)}" for ip, names in HEADER]
    seen = {"localhost"}
    if own_ip:
        lines.append(f"{own_ip}\t{own_hostname}")
        seen.add(own_hostname)
    for ip, names in peers:
        if ip == own_ip:
            continue
        fresh = [n for n in dict.fromkeys(names) if n and n not in seen]
        seen.update(fresh)
        if fresh:
            lines.append(f"{ip}\t{' '.join(fresh)}")
    return "\n".join(lines) + "\n"


def write_in_place(path: Path | str, text: str) -> None:
    """Overwrite the file's contents keeping its inode (see the module docstring)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
