"""Networks and their address allocations, persisted under ``<root>/networks``.

Layout (every file written atomically: tmp + fsync + rename, under flock)::

    networks/.lock                 serialises create/remove and the default network
    networks/<name>/network.json   one Network
    networks/<name>/ipam/.lock     serialises allocations of that network
    networks/<name>/ipam/<ip>      {"container_id": …, "names": […]}: one file per
                                   address, the way CNI's host-local plugin keeps them
    networks/<name>/ipam/last      the last address handed out (allocation goes round)

Only data lives here: the bridge, veths and rules are made by ``link`` and
``nft``.  ``host`` and ``none`` are predefined like docker's and never stored.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyctr.errors import Conflict, NotFound, UserError
from pyctr.netns import addr

DEFAULT_NETWORK = "bridge"
PREDEFINED = ("bridge", "host", "none")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass(frozen=True)
class Network:
    name: str
    id: str
    driver: str = "bridge"  # bridge | host | null
    bridge: str = ""
    subnet: str = ""
    gateway: str = ""
    created: float = 0.0
    labels: dict = field(default_factory=dict)

    @property
    def prefixlen(self) -> int:
        return IPv4Network(self.subnet).prefixlen

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Network:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Allocation:
    ip: str
    container_id: str
    names: tuple[str, ...] = ()


def _atomic_write(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class NetworkStore:
    """The networks of one pyctr root.

    ``default_bridge`` and ``candidates`` exist for tests (unique bridge
    names, subnets of their own); ``routes`` returns the host's routes
    (default: read /proc/net/route).
    """

    def __init__(self, root: Path | str, *, default_bridge: str | None = None,
                 candidates: Sequence[IPv4Network] = addr.DEFAULT_CANDIDATES,
                 routes: Callable[[], list[tuple[IPv4Network, str]]] = addr.host_routes):
        self.dir = Path(root) / "networks"
        # pyctr0 for the standard root; another root (a test's, a second
        # installation) gets bridges of its own so the two never share one
        standard = Path(root) == Path("/var/lib/pyctr")
        self.default_bridge = default_bridge or (
            "pyctr0" if standard else f"pyctr0-{addr.short_hash(str(Path(root)), 6)}")
        self._bridge_salt = "" if standard else f"{Path(root)}:"
        self.candidates = tuple(candidates)
        self._routes = routes

    # ---- networks ---------------------------------------------------------

    def _lock(self):
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _flock(self.dir / ".lock")

    def _read(self, name: str) -> Network | None:
        try:
            return Network.from_dict(json.loads((self.dir / name / "network.json").read_text()))
        except FileNotFoundError:
            return None

    def _stored(self) -> list[Network]:
        if not self.dir.is_dir():
            return []
        nets = (self._read(p.name) for p in sorted(self.dir.iterdir()) if p.is_dir())
        return [n for n in nets if n is not None]

    def _write(self, net: Network) -> None:
        d = self.dir / net.name
        (d / "ipam").mkdir(parents=True, exist_ok=True, mode=0o700)
        _atomic_write(d / "network.json", json.dumps(net.to_dict(), indent=1))

    def _taken_subnets(self, exclude_bridges: Iterable[str] = ()) -> list[IPv4Network]:
        """Subnets a new network may not overlap: this root's networks and the host's routes."""
        stored = self._stored()
        ours = {n.bridge for n in stored} | set(exclude_bridges)
        taken = [IPv4Network(n.subnet) for n in stored if n.subnet]
        taken += [net for net, dev in self._routes() if dev not in ours]
        return taken

    def _ensure_default(self) -> Network:
        net = self._read(DEFAULT_NETWORK)
        if net is not None:
            return net
        with self._lock():
            net = self._read(DEFAULT_NETWORK)
            if net is None:
                subnet = addr.choose_subnet(self._taken_subnets([self.default_bridge]),
                                            self.candidates)
                net = Network(DEFAULT_NETWORK, secrets.token_hex(32), "bridge",
                              self.default_bridge, str(subnet), str(subnet.network_address + 1),
                              time.time())
                self._write(net)
            return net

    def create(self, name: str, subnet: str | None = None, gateway: str | None = None,
               labels: dict | None = None) -> Network:
        """``pyctr network create``: validate, choose a subnet if none is given, persist."""
        if not _NAME_RE.match(name) or len(name) > 64:
            raise UserError(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                            "are allowed")
        if name in PREDEFINED:
            raise Conflict(f"network with name {name} already exists",
                           hint=f"{name} is a pre-defined network")
        if gateway and not subnet:
            raise UserError("cannot specify a gateway without a subnet",
                            hint="add --subnet CIDR")
        want = addr.parse_subnet(subnet) if subnet else None
        self._ensure_default()
        with self._lock():
            if self._read(name) is not None:
                raise Conflict(f"network with name {name} already exists")
            for other in self._stored():
                if want and other.subnet and want.overlaps(IPv4Network(other.subnet)):
                    raise Conflict(f"invalid pool request: pool {want} overlaps with other one "
                                   "on this address space",
                                   hint=f"network {other.name} has {other.subnet}")
            taken = self._taken_subnets()
            if want is None:
                want = addr.choose_subnet(taken, self.candidates)
            else:
                clash = addr.overlapping(want, taken)  # this root's networks passed above
                if clash is not None:
                    raise Conflict(f"invalid pool request: pool {want} overlaps with a host "
                                   f"route to {clash}",
                                   hint="choose a --subnet the host does not route elsewhere")
            gw = addr.parse_gateway(gateway, want) if gateway else want.network_address + 1
            net = Network(name, secrets.token_hex(32), "bridge",
                          addr.bridge_name(self._bridge_salt + name),
                          str(want), str(gw), time.time(), dict(labels or {}))
            self._write(net)
            return net

    def list(self) -> list[Network]:
        """Every network, the predefined three first (as ``docker network ls`` shows them)."""
        default = self._ensure_default()
        rest = [n for n in self._stored() if n.name != DEFAULT_NETWORK]
        return [default, self._pseudo("host"), self._pseudo("none"), *rest]

    def _pseudo(self, name: str) -> Network:
        return Network(name, addr.short_hash(f"pyctr-{name}", 64),
                       "host" if name == "host" else "null")

    def get(self, name: str) -> Network:
        """By name, or by a unique prefix of the id (docker accepts both)."""
        if name == DEFAULT_NETWORK:
            return self._ensure_default()
        if name in ("host", "none"):
            return self._pseudo(name)
        net = self._read(name) if _NAME_RE.match(name) else None
        if net is not None:
            return net
        hits = [n for n in self.list() if name and n.id.startswith(name)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise Conflict(f"network {name} is ambiguous ({len(hits)} matches found based on ID "
                           "prefix)")
        raise NotFound(f"network {name} not found",
                       hint="pyctr network ls lists them; pyctr network create NAME makes one")

    def remove(self, name: str) -> Network:
        """Forget a network; refused for predefined ones and while addresses are allocated.

        The caller deletes the bridge and the masquerade rule (``link.delete_bridge``,
        ``nft.remove_masquerade``) first.
        """
        net = self.get(name)
        if net.predefined:
            raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
        with self._lock():
            held = self.allocations(net.name)
            if held:
                raise Conflict(f"error while removing network: network {net.name} id "
                               f"{net.id[:12]} has active endpoints",
                               hint="containers: " + ", ".join(a.container_id[:12]
                                                               for a in held))
            d = self.dir / net.name
            for p in sorted(d.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            d.rmdir()
        return net

    # ---- IPAM -------------------------------------------------------------

    def _ipam(self, network: str) -> Path:
        net = self.get(network)
        if net.driver != "bridge":
            raise UserError(f"network {net.name} has no addresses to allocate",
                            hint=f"the {net.name} network uses the {net.driver} driver")
        d = self.dir / net.name / "ipam"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def _read_alloc(self, path: Path) -> Allocation | None:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return Allocation(path.name, data["container_id"], tuple(data.get("names", ())))

    def allocations(self, network: str) -> list[Allocation]:
        d = self._ipam(network)
        out = [self._read_alloc(p) for p in d.iterdir() if p.name[0].isdigit()]
        return sorted((a for a in out if a), key=lambda a: IPv4Address(a.ip))

    def allocate(self, network: str, container_id: str, ip: str | None = None,
                 names: Sequence[str] = ()) -> str:
        """An address of ``network`` for the container (its own again if it has one).

        ``ip`` asks for a given address (``--ip``); ``names`` (the container's
        name, hostname and ``--network-alias``es) feed ``hosts_entries``.
        """
        net = self.get(network)
        d = self._ipam(network)
        subnet = IPv4Network(net.subnet)
        reserved = {subnet.network_address, subnet.broadcast_address, IPv4Address(net.gateway)}
        with _flock(d / ".lock"):
            held = {p.name: p for p in d.iterdir() if p.name[0].isdigit()}
            for p in held.values():
                a = self._read_alloc(p)
                if a and a.container_id == container_id and (ip is None or ip == a.ip):
                    return a.ip
            if ip is not None:
                want = self._check_requested(net, ip, reserved)
                if str(want) in held:
                    a = self._read_alloc(held[str(want)])
                    holder = a.container_id[:12] if a else "another container"
                    raise Conflict(f"address {want} is already in use on network {net.name} "
                                   f"by container {holder}")
            else:
                want = self._next_free(subnet, reserved, held, d)
            record = {"container_id": container_id, "names": list(dict.fromkeys(names))}
            _atomic_write(d / str(want), json.dumps(record))
            _atomic_write(d / "last", str(want))
            return str(want)

    @staticmethod
    def _check_requested(net: Network, ip: str, reserved: set) -> IPv4Address:
        try:
            want = IPv4Address(ip)
        except ValueError:
            raise UserError(f"invalid IPv4 address: {ip}") from None
        if want not in IPv4Network(net.subnet):
            raise UserError(f"invalid address {want}: it does not belong to the subnet "
                            f"{net.subnet} of network {net.name}")
        if want in reserved:
            what = "gateway" if str(want) == net.gateway else "network or broadcast"
            raise Conflict(f"address {want} is the {what} address of network {net.name}")
        return want

    @staticmethod
    def _next_free(subnet: IPv4Network, reserved: set, held: dict, d: Path) -> IPv4Address:
        """Round-robin from the last address given out, like host-local: a released
        address is not handed to the next container at once."""
        first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
        try:
            start = int(IPv4Address((d / "last").read_text().strip())) + 1
        except (FileNotFoundError, ValueError):
            start = first
        if not first <= start <= last:
            start = first
        size = last - first + 1
        for i in range(size):
            cand = IPv4Address(first + (start - first + i) % size)
            if cand not in reserved and str(cand) not in held:
                return cand
        raise Conflict(f"no available IPv4 addresses on network {subnet}",
                       hint="remove containers or create a network with a larger --subnet")

    def release(self, network: str, container_id: str) -> list[str]:
        """Free the container's addresses on ``network``; idempotent. Returns them."""
        try:
            d = self._ipam(network)
        except NotFound:
            return []
        freed = []
        with _flock(d / ".lock"):
            for p in d.iterdir():
                if p.name[0].isdigit():
                    a = self._read_alloc(p)
                    if a and a.container_id == container_id:
                        p.unlink()
                        freed.append(a.ip)
        return freed

    def release_all(self, container_id: str) -> dict[str, list[str]]:
        """Crash recovery: free the container's addresses on every network."""
        out = {}
        for net in self._stored():
            freed = self.release(net.name, container_id)
            if freed:
                out[net.name] = freed
        return out

    def hosts_entries(self, network: str) -> list[tuple[str, list[str]]]:
        """(ip, names) of every container on the network that has names, for /etc/hosts."""
        return [(a.ip, list(a.names)) for a in self.allocations(network) if a.names]
