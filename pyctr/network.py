"""The engine's side of networking: what `pyctr run --network …` sets up and tears down.

The OCI way: on a bridge network the engine makes a persistent network
namespace (a bind-mounted nsfs file) and its veth through pyctr.netns;
config.json names that namespace by path and the runtime only joins it.
``--network none`` asks the runtime for a fresh namespace (only lo), as a
bare runc bundle does: no file, no pyctr.netns at all.

Everything a container holds is recorded in its NetworkSettings (the
namespace path, the endpoint, the proxies' PIDs, the address) so that exit,
`rm`, and crash recovery can release exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyctr.errors import UserError


@dataclass
class NetOptions:
    """The networking flags of `pyctr run`, as docker spells them."""

    network: str = "bridge"
    aliases: list[str] = field(default_factory=list)
    ip: str | None = None
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False

    @property
    def mode(self) -> str:
        """none | host | container | bridge (a bridge network, default or user-defined)."""
        if self.network in ("none", "host"):
            return self.network
        if self.network.startswith("container:"):
            return "container"
        return "bridge"


def check(opts: NetOptions, engine, image_config: dict) -> list:
    """Validate before anything exists; returns the port mappings to publish."""
    if opts.mode == "container":
        other = engine.containers.get(opts.network.split(":", 1)[1])
        if engine.status(other) not in ("running", "paused"):
            raise UserError(f"cannot join the network of container {other.name}: "
                            "it is not running")
    if opts.mode != "bridge" and not (opts.publish or opts.publish_all):
        if opts.ip or opts.aliases:
            raise UserError(f"--ip and --network-alias need a bridge network, "
                            f"not --network {opts.network}")
        return []  # nothing to check: spare the import of pyctr.netns
    from pyctr import netns

    maps = [netns.parse_publish(p) for p in opts.publish]
    if opts.publish_all:
        maps += netns.expand_publish_all(image_config.get("ExposedPorts"), maps)
    if maps and opts.mode != "bridge":
        raise UserError(f"published ports need a bridge network, not --network {opts.network}",
                        hint="drop -p/-P, or use --network bridge or a network you created")
    if (opts.ip or opts.aliases) and opts.mode != "bridge":
        raise UserError(f"--ip and --network-alias need a bridge network, "
                        f"not --network {opts.network}")
    if opts.ip and opts.network == "bridge":
        raise UserError("user specified IP address is supported on user defined networks only",
                        hint="pyctr network create --subnet CIDR NAME, then --network NAME")
    netns.check_conflicts(maps)
    if opts.mode == "bridge":
        engine.networks.get(opts.network)  # NotFound names the network
    return maps


def setup(engine, c, opts: NetOptions, maps: list, hostname: str) -> dict:
    """Make the container's network; returns its NetworkSettings (kept in its record)."""
    from pyctr import netns

    settings: dict = {"Mode": opts.mode, "Networks": {}, "Ports": {}, "SandboxKey": "",
                      "Proxies": [], "Endpoint": None, "IPAddress": "", "Gateway": "",
                      "MacAddress": ""}
    if opts.mode in ("host", "none"):
        # none: no file of ours at all; the runtime unshares a network namespace
        # for the container as runc does (only lo, brought up by its init)
        return settings
    if opts.mode == "container":
        other = engine.containers.get(opts.network.split(":", 1)[1])
        # the other's namespace file, or (a --network none container has none)
        # its PID 1's own namespace
        settings["SandboxKey"] = (other.record["NetworkSettings"].get("SandboxKey")
                                  or f"/proc/{other.record['State']['Pid']}/ns/net")
        settings["JoinedContainer"] = other.id
        return settings
    # each thing is recorded as soon as it exists: a `pyctr run` killed half-way
    # leaves a record from which rm, the next command or prune undo exactly that
    c.record["NetworkSettings"] = settings
    path = engine.run_dir / "netns" / c.id
    settings["SandboxKey"] = str(path)
    c.save()
    netns.create_netns(path)
    store = engine.networks
    net = store.get(opts.network)
    settings["NetworkName"] = net.name
    c.save()
    ip = store.allocate(net.name, c.id, ip=opts.ip,
                        names=[c.name, hostname, *opts.aliases])
    netns.ensure_bridge(net)
    netns.ensure_masquerade(net)
    ep = netns.attach(net, c.id, path, ip, opts.aliases)
    settings["Endpoint"] = ep.to_dict()
    settings.update(IPAddress=ip, Gateway=net.gateway, MacAddress=netns.mac_for_ip(ip),
                    IPPrefixLen=net.prefixlen)
    settings["Networks"][net.name] = {"NetworkID": net.id, "IPAddress": ip,
                                      "Gateway": net.gateway, "IPPrefixLen": net.prefixlen,
                                      "MacAddress": netns.mac_for_ip(ip),
                                      "Aliases": list(opts.aliases)}
    c.save()
    for m in maps:
        proxy = netns.start_proxy(m, ip)
        settings["Proxies"].append({"Pid": proxy.pid, "Mapping": proxy.mapping.to_dict()})
        key = f"{m.container_port}/{m.protocol}"
        settings["Ports"].setdefault(key, []).append(
            {"HostIp": proxy.mapping.bind_ip, "HostPort": str(proxy.mapping.host_port)})
        c.save()
    return settings


def hosts_text(engine, c, hostname: str) -> str | None:
    """The container's /etc/hosts on a bridge network (None: the engine's plain one)."""
    settings = c.record.get("NetworkSettings") or {}
    if not settings.get("NetworkName"):
        return None
    from pyctr import netns

    store = engine.networks
    peers = [(ip, names) for ip, names in store.hosts_entries(settings["NetworkName"])
             if ip != settings["IPAddress"]]
    return netns.render_hosts(hostname, settings["IPAddress"], peers)


def refresh_peers(engine, network: str, *, skip: str = "") -> None:
    """Rewrite the /etc/hosts of every running container on the network, in place."""
    from pyctr import netns

    for other in engine.containers.list():
        s = other.record.get("NetworkSettings") or {}
        if other.id == skip or s.get("NetworkName") != network:
            continue
        if engine.status(other) not in ("running", "paused"):
            continue
        text = hosts_text(engine, other, other.record["Config"].get("Hostname", ""))
        hosts = other.dir / "hosts"
        if text is not None and hosts.exists():
            netns.write_in_place(hosts, text)


def teardown(engine, c) -> None:
    """Undo setup; idempotent, and whole even when the record is not (a crash half-way).

    What is found by the container's id is removed whatever the record
    says: its veth (by name), its namespace file, its addresses.
    """
    settings = c.record.get("NetworkSettings") or {}
    if settings.get("Mode") in ("host", "container", "none"):
        return  # nothing of ours: the host's, another's, or the runtime's own namespace
    from pyctr import netns

    path = engine.run_dir / "netns" / c.id
    for proxy in settings.get("Proxies") or []:
        netns.stop_proxy(proxy["Pid"])
    if settings.get("Endpoint"):
        netns.detach(netns.Endpoint.from_dict(settings["Endpoint"]))
    netns.cleanup(c.id)  # sysfs first: pyroute2 only if a veth is still there
    if path.exists():
        netns.remove_netns(path)
    freed = engine.networks.release_all(c.id)
    for network in freed:
        refresh_peers(engine, network, skip=c.id)
    if settings:
        settings.update(Proxies=[], Endpoint=None)


def network_in_use(engine, name: str) -> list:
    return [c for c in engine.containers.list()
            if (c.record.get("NetworkSettings") or {}).get("NetworkName") == name]


def _mappings(c) -> list:
    from pyctr.netns import PortMapping

    settings = c.record.get("NetworkSettings") or {}
    return [PortMapping.from_dict(p["Mapping"]) for p in settings.get("Proxies") or []]


def ports_of(c) -> list[str]:
    """`pyctr port` lines: ``80/tcp -> 0.0.0.0:32768``."""
    return [str(m) for m in _mappings(c)]


def ps_ports(c) -> str:
    """The PORTS column of `pyctr ps`: ``0.0.0.0:32768->80/tcp``."""
    return ", ".join(f"{m.bind_ip}:{m.host_port}->{m.container_port}/{m.protocol}"
                     for m in _mappings(c))


__all__ = ["NetOptions", "check", "hosts_text", "ports_of", "ps_ports", "setup", "teardown"]
