"""Kernel side of a bridge network: the bridge, veth endpoints, cleanup.

pyroute2 (IPRoute, never the end-of-life IPDB) is imported inside the
functions: ``import pyroute2`` costs 110-160 ms, and a ``--network none``
container must never pay it.

Work inside a container's namespace runs in a short-lived thread that
setns()es into it and opens its own netlink socket there (a socket belongs
to the namespace of the thread that created it).  pyroute2's own
``IPRoute(netns=…)`` forks without exec through multiprocessing, which the
design forbids in a threaded process and which costs a process per call.
"""

from __future__ import annotations

import errno as _errno
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from pyctr import explain
from pyctr.errors import PyctrError
from pyctr.netns import addr
from pyctr.netns.nsfile import CLONE_NEWNET, _c
from pyctr.netns.nsfile import _errno as _c_errno
from pyctr.netns.store import Network

CONTAINER_IFNAME = "eth0"


@dataclass(frozen=True)
class Endpoint:
    """One container's attachment to one network; the engine persists ``to_dict()``."""

    network: str
    container_id: str
    netns_path: str
    host_ifname: str
    ifname: str
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    bridge: str
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Endpoint:
        data = dict(data)
        data["aliases"] = tuple(data.get("aliases", ()))
        return cls(**data)


def _netlink_error(exc: Exception, step: str, what: str, hint: str | None = None) -> PyctrError:
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    return PyctrError(f"{what}: {getattr(exc, 'args', [exc])[-1]}", step=step, syscall="netlink",
                      errno=code if isinstance(code, int) else None, hint=hint)


def _in_netns(netns_path: str, fn: Callable[[], None]) -> None:
    """Run ``fn`` in a thread that has joined the network namespace at ``netns_path``."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    result: list[BaseException] = []

    def body() -> None:
        try:
            if _c().setns(fd, CLONE_NEWNET) != 0:
                err = _c_errno()
                raise PyctrError(os.strerror(err), step="attach", syscall="setns",
                                 path=netns_path, errno=err)
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result.append(e)

    try:
        t = threading.Thread(target=body, name="pyctr-netns-setns")
        t.start()
        t.join()
    finally:
        os.close(fd)
    if result:
        raise result[0]


def _lookup(ipr, name: str) -> int | None:
    idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None


def link_exists(name: str) -> bool:
    """Cheap check through sysfs, without pyroute2."""
    return os.path.exists(f"/sys/class/net/{name}")


def ensure_bridge(network: Network) -> None:
    """The network's bridge with its gateway address, up; idempotent and race-safe.

    Two ``pyctr run`` at once may both create it: EEXIST is success.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    if network.driver != "bridge":
        return
    prefix = IPv4Network(network.subnet).prefixlen
    with IPRoute() as ipr:
        idx = _lookup(ipr, network.bridge)
        if idx is None:
            try:
                explain.note("network", f"ip link add {network.bridge} type bridge")
                ipr.link("add", ifname=network.bridge, kind="bridge")
            except NetlinkError as e:
                if e.code != _errno.EEXIST:
                    raise _netlink_error(e, "ensure bridge", f"add bridge {network.bridge}") \
                        from None
            idx = _lookup(ipr, network.bridge)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
        if network.gateway not in have:
            try:
                explain.note("network", f"ip addr add {network.gateway}/{prefix} dev "
                                        f"{network.bridge} (the containers' gateway)")
                ipr.addr("add", index=idx, address=network.gateway, prefixlen=prefix)
            except NetlinkError as e:
                if e.code != _errno.EEXIST:
                    raise _netlink_error(e, "ensure bridge",
                                         f"add {network.gateway}/{prefix} to {network.bridge}",
                                         hint="another bridge may hold an overlapping address"
                                         ) from None
        ipr.link("set", index=idx, state="up")


def delete_bridge(network: Network) -> None:
    """Delete the network's bridge (its ports go with it); idempotent."""
    if network.driver != "bridge" or not network.bridge or not link_exists(network.bridge):
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=network.bridge)
        except NetlinkError as e:
            if e.code != _errno.ENODEV:
                raise _netlink_error(e, "delete bridge", f"delete {network.bridge}") from None


def attach(network: Network, container_id: str, netns_path: Path | str, ip: str,
           aliases: Sequence[str] = ()) -> Endpoint:
    """A veth pair: ``vpy…`` on the bridge, up; ``eth0`` in the namespace with the
    address, a MAC derived from it, ``lo`` up and a default route via the gateway.

    Call ``ensure_bridge(network)`` first.  On failure nothing is left behind.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    netns_path = str(netns_path)
    host = addr.veth_name(container_id, network.name)
    ep = Endpoint(network.name, container_id, netns_path, host, CONTAINER_IFNAME, ip,
                  IPv4Network(network.subnet).prefixlen, network.gateway, addr.mac_for_ip(ip),
                  network.bridge, tuple(aliases))
    nsfd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            br = _lookup(ipr, network.bridge)
            if br is None:
                raise PyctrError(f"bridge {network.bridge} of network {network.name} is missing",
                                 step="attach", hint="ensure_bridge(network) makes it")
            try:
                # the peer is born inside the container's namespace as eth0:
                # no temporary name on the host, no rename
                explain.note("network", f"ip link add {host} type veth peer name "
                                        f"{CONTAINER_IFNAME} address {ep.mac} netns "
                                        f"{netns_path}")
                ipr.link("add", ifname=host, kind="veth",
                         peer={"ifname": CONTAINER_IFNAME, "address": ep.mac,
                               "net_ns_fd": nsfd})
            except NetlinkError as e:
                hint = ("a veth of this container is left over: cleanup(container_id)"
                        if e.code == _errno.EEXIST else None)
                raise _netlink_error(e, "attach", f"add veth {host}", hint) from None
            try:
                idx = _lookup(ipr, host)
                explain.note("network", f"ip link set {host} master {network.bridge} up")
                ipr.link("set", index=idx, master=br, state="up")
                _in_netns(netns_path, lambda: _configure_inside(ep))
            except BaseException:
                try:
                    ipr.link("del", ifname=host)
                except NetlinkError:
                    pass
                raise
    finally:
        os.close(nsfd)
    return ep


def _configure_inside(ep: Endpoint) -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            lo = _lookup(ipr, "lo")
            ipr.link("set", index=lo, state="up")
            idx = _lookup(ipr, ep.ifname)
            explain.note("network", f"(in the container) ip addr add {ep.ip}/{ep.prefixlen} "
                                    f"dev {ep.ifname}; ip link set {ep.ifname} up")
            ipr.addr("add", index=idx, address=ep.ip, prefixlen=ep.prefixlen)
            ipr.link("set", index=idx, state="up")
            explain.note("network", f"(in the container) ip route add default via {ep.gateway}")
            ipr.route("add", dst="0.0.0.0/0", gateway=ep.gateway)
    except NetlinkError as e:
        raise _netlink_error(e, "attach", f"configure {ep.ifname} {ep.ip}/{ep.prefixlen} "
                             f"via {ep.gateway} in {ep.netns_path}") from None


def detach(endpoint: Endpoint) -> None:
    """Delete the veth pair (deleting the host end takes eth0 with it); idempotent."""
    _delete_links([endpoint.host_ifname])


def _delete_links(names: list[str]) -> list[str]:
    names = [n for n in names if link_exists(n)]
    if not names:
        return []
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    gone = []
    with IPRoute() as ipr:
        for name in names:
            try:
                ipr.link("del", ifname=name)
                gone.append(name)
            except NetlinkError as e:
                if e.code != _errno.ENODEV:  # its namespace died meanwhile
                    raise _netlink_error(e, "detach", f"delete veth {name}") from None
    return gone


def cleanup(container_id: str) -> list[str]:
    """Crash recovery: delete every host veth of the container, found by name.

    Reads /sys/class/net first, so it imports pyroute2 only when something
    is left.  Returns the links deleted.
    """
    prefix = addr.veth_prefix(container_id)
    try:
        names = sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix))
    except FileNotFoundError:
        return []
    return _delete_links(names)
