"""Addresses and names: subnet choice, host routes, MACs, link names.

Pure functions (plus one reader of /proc/net/route), testable without root
and without pyroute2.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from pyctr.errors import UserError

# the default network's subnet comes first from these, then user networks'
# (docker takes 172.17-31 and 192.168/20s; pyctr stays out of docker's way)
DEFAULT_CANDIDATES = tuple(IPv4Network(f"10.{n}.0.0/16") for n in range(88, 128))

IFNAMSIZ = 15  # usable characters of a link name (16 with the NUL)
VETH_PREFIX = "vpy"
BRIDGE_PREFIX = "pyctr"


def host_routes(path: str = "/proc/net/route") -> list[tuple[IPv4Network, str]]:
    """The host's IPv4 routes (main table) as (destination, device); default routes left out.

    A default route overlaps everything, so it cannot make a subnet unusable.
    """
    routes = []
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) < 8:
                    continue
                dest = socket.inet_ntoa(struct.pack("<I", int(cols[1], 16)))
                mask = socket.inet_ntoa(struct.pack("<I", int(cols[7], 16)))
                net = IPv4Network(f"{dest}/{mask}", strict=False)
                if net.prefixlen:
                    routes.append((net, cols[0]))
    except FileNotFoundError:
        pass
    return routes


def parse_subnet(text: str) -> IPv4Network:
    """A user's ``--subnet``; host bits set are refused as docker does."""
    try:
        net = IPv4Network(text, strict=False)
    except ValueError:
        raise UserError(f"invalid subnet {text}: invalid CIDR address: {text}") from None
    if str(net) != text and f"{net.network_address}/{net.prefixlen}" != text:
        raise UserError(f"invalid subnet {text}: it should be {net}")
    if net.prefixlen > 30:
        raise UserError(f"invalid subnet {text}: too small for a gateway and a container",
                        hint="use a prefix of /30 or shorter")
    return net


def parse_gateway(text: str, subnet: IPv4Network) -> IPv4Address:
    try:
        gw = IPv4Address(text)
    except ValueError:
        raise UserError(f"invalid gateway {text}: not an IPv4 address") from None
    if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
        raise UserError(f"no matching subnet for gateway {gw}",
                        hint=f"the gateway must be a host address of {subnet}")
    return gw


def overlapping(subnet: IPv4Network, others: Iterable[IPv4Network]) -> IPv4Network | None:
    for other in others:
        if subnet.overlaps(other):
            return other
    return None


def choose_subnet(taken: Iterable[IPv4Network],
                  candidates: Iterable[IPv4Network] = DEFAULT_CANDIDATES) -> IPv4Network:
    """The first candidate that overlaps nothing in ``taken`` (host routes and networks)."""
    taken = list(taken)
    for cand in candidates:
        if overlapping(cand, taken) is None:
            return cand
    raise UserError("could not find an available, non-overlapping IPv4 address pool",
                    hint="give the network a --subnet")


def mac_for_ip(ip: str | IPv4Address) -> str:
    """docker's MAC: 02:42 (locally administered) then the four address bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in IPv4Address(ip).packed)


def short_hash(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def veth_prefix(container_id: str) -> str:
    """Every host veth end of one container starts with this (what cleanup looks for)."""
    return VETH_PREFIX + container_id[:8]


def veth_name(container_id: str, network: str) -> str:
    """``vpy`` + 8 characters of the container id + 4 of the network's: one per pair."""
    name = veth_prefix(container_id) + short_hash(network, 4)
    assert len(name) <= IFNAMSIZ
    return name


def bridge_name(network: str) -> str:
    """A user network's bridge: ``pyctr-`` and 9 hex characters of its name (and root)."""
    return f"{BRIDGE_PREFIX}-{short_hash(network, 9)}"
