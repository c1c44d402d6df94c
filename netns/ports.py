"""Published ports: parsing docker's ``-p`` forms and expanding ``-P``.

Pure functions, no kernel and no root: the forwarding itself lives in
``pyctr.netns.proxy``.  The error texts follow docker's (go-connections
``nat.ParsePortSpec``) so users recognise them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from pyctr.errors import UserError

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class PortMapping:
    """One published port: host_ip:host_port → container_port/protocol.

    ``host_port`` 0 means "any free port", picked when the proxy binds;
    ``host_ip`` "" means every IPv4 address of the host (0.0.0.0).
    """

    container_port: int
    protocol: str = "tcp"
    host_port: int = 0
    host_ip: str = ""

    @property
    def bind_ip(self) -> str:
        return self.host_ip or "0.0.0.0"

    def with_host_port(self, port: int) -> PortMapping:
        return PortMapping(self.container_port, self.protocol, port, self.host_ip)

    def __str__(self) -> str:
        """docker port's form: ``80/tcp -> 0.0.0.0:32768``."""
        return f"{self.container_port}/{self.protocol} -> {self.bind_ip}:{self.host_port}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> PortMapping:
        return cls(int(data["container_port"]), data.get("protocol", "tcp"),
                   int(data.get("host_port", 0)), data.get("host_ip", ""))


def _port(text: str, what: str) -> int:
    if "-" in text:
        raise UserError(f"port ranges are not supported: {text}",
                        hint="publish each port with its own -p")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UserError(f"invalid {what}: {text}")
    return int(text)


def parse_publish(spec: str) -> PortMapping:
    """Parse ``-p [IP:][HOSTPORT:]CTRPORT[/tcp|/udp]`` (also ``IP::CTRPORT``)."""
    raw = spec.strip()
    body, _, proto = raw.partition("/")
    proto = proto.lower() if proto else "tcp"
    if proto not in PROTOCOLS:
        raise UserError(f"invalid proto: {proto}")
    if body.startswith("["):
        raise UserError(f"invalid ip address: {body.split(']')[0]}]",
                        hint="IPv6 host addresses are not supported yet")
    parts = body.split(":")
    if len(parts) == 1:
        ip, host, ctr = "", "", parts[0]
    elif len(parts) == 2:
        ip, (host, ctr) = "", parts
    elif len(parts) == 3:
        ip, host, ctr = parts
    else:
        raise UserError(f"invalid port format: {raw}",
                        hint="use [IP:][HOSTPORT:]CONTAINERPORT[/PROTOCOL]")
    if ip:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise UserError(f"invalid ip address: {ip}") from None
    if not ctr:
        raise UserError(f"no port specified: {raw}<empty>")
    container_port = _port(ctr, "containerPort")
    host_port = _port(host, "hostPort") if host else 0
    return PortMapping(container_port, proto, host_port, ip)


def parse_exposed(key: str) -> PortMapping:
    """One image ExposedPorts key (``"80/tcp"``, ``"53/udp"``, ``"8080"``)."""
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise UserError(f"invalid proto: {proto}", hint=f"in the image's ExposedPorts {key!r}")
    return PortMapping(_port(port, "containerPort"), proto)


def expand_publish_all(exposed: Mapping | Iterable[str] | None,
                       published: Iterable[PortMapping] = ()) -> list[PortMapping]:
    """``-P``: every exposed port not already published by ``-p``, on a free host port.

    ``exposed`` is the image config's ``ExposedPorts`` (a dict keyed by
    ``"80/tcp"``) or any iterable of such keys.
    """
    taken = {(m.container_port, m.protocol) for m in published}
    out = []
    for key in sorted(exposed or (), key=lambda k: (parse_exposed(k).container_port, k)):
        m = parse_exposed(key)
        if (m.container_port, m.protocol) not in taken:
            taken.add((m.container_port, m.protocol))
            out.append(m)
    return out


def check_conflicts(mappings: Iterable[PortMapping]) -> None:
    """Two mappings may not claim the same fixed host ip:port/proto (docker refuses too)."""
    fixed: list[PortMapping] = []
    for m in mappings:
        if not m.host_port:
            continue
        for prev in fixed:
            same_ip = prev.bind_ip == m.bind_ip or "0.0.0.0" in (prev.bind_ip, m.bind_ip)
            if same_ip and (prev.host_port, prev.protocol) == (m.host_port, m.protocol):
                raise UserError(
                    f"bind for {m.bind_ip}:{m.host_port} failed: port is already allocated",
                    hint=f"published twice: {prev.container_port}/{prev.protocol} "
                         f"and {m.container_port}/{m.protocol}")
        fixed.append(m)
