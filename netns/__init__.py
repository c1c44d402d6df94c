"""pyctr.netns: bridge networks for containers, the way docker and CNI do it.

Importing this package is free: every name below loads its module on first
use, and only the functions that set up or tear down a link import pyroute2
(``import pyroute2`` costs 110-160 ms; a ``--network none`` container
never pays it).  Layering: imports nothing of pyctr but ``pyctr.errors``.

The pieces
    NetworkStore(root)        networks + IPAM under <root>/networks (JSON, flock)
    create_netns/remove_netns a persistent netns file (bind-mounted nsfs)
    ensure_bridge/delete_bridge, attach/detach/cleanup   links (pyroute2)
    parse_publish, expand_publish_all, start_proxy/stop_proxy   published ports
    ensure_masquerade/remove_masquerade   outbound NAT in ``table ip pyctr``
    render_hosts, write_in_place          /etc/hosts

How the engine calls it (``pyctr run --network NET [--ip IP] [-p …] [-P]``)

  before create (bridge network NET):
    store = NetworkStore(root); net = store.get(NET)           # NotFound
    maps = [parse_publish(s) for s in p_flags]                 # UserError
    maps += expand_publish_all(image_config.get("ExposedPorts"), maps) if -P
    check_conflicts(maps)
    ip = store.allocate(net.name, cid, ip=IP, names=[name, hostname, *aliases])
    ensure_bridge(net); ensure_masquerade(net)   # both idempotent; the latter
                                                 # only if the host forwards
    create_netns(run_dir/"netns"/cid)   # config.json: {"type": "network", "path": …}
    ep = attach(net, cid, netns_path, ip, aliases)   # persist ep.to_dict()
    procs = [start_proxy(m, ip) for m in maps]       # persist (pid, mapping)
    hosts = render_hosts(hostname, ip, store.hosts_entries(net.name))
    → write the container's hosts file, then rewrite every peer's with
      write_in_place (a bind-mounted file must keep its inode)
  --network none: create_netns only (lo alone); no pyroute2 is imported.
  --network host: no netns in config.json; container:NAME: the other's path.

  after exit / on stop:  stop_proxy(pid) for each; detach(ep); remove_netns(path)
  on rm:                 store.release(net.name, cid); peers' hosts rewritten
  network rm:            refuse while in use; delete_bridge(net);
                         remove_masquerade(net); store.remove(name)
  crash recovery (next command / system prune), for a container that is gone:
                         stop_proxy(pid) (checks /proc/PID/cmdline first),
                         cleanup(cid) (veths by name), remove_netns(path),
                         store.release_all(cid)
  ``pyctr port NAME``:   print(str(mapping)) of the recorded mappings
"""

from __future__ import annotations

import importlib

_API = {
    "NetworkStore": "store", "Network": "store", "Allocation": "store",
    "DEFAULT_NETWORK": "store", "PREDEFINED": "store",
    "create_netns": "nsfile", "remove_netns": "nsfile", "is_netns": "nsfile",
    "Endpoint": "link", "ensure_bridge": "link", "delete_bridge": "link",
    "attach": "link", "detach": "link", "cleanup": "link",
    "PortMapping": "ports", "parse_publish": "ports", "expand_publish_all": "ports",
    "check_conflicts": "ports",
    "RunningProxy": "proxy", "start_proxy": "proxy", "stop_proxy": "proxy",
    "is_proxy": "proxy",
    "ensure_masquerade": "nft", "remove_masquerade": "nft", "host_forwards": "nft",
    "render_hosts": "hosts", "write_in_place": "hosts",
    "mac_for_ip": "addr", "choose_subnet": "addr", "host_routes": "addr",
    "veth_name": "addr", "bridge_name": "addr",
}

__all__ = list(_API)


def __getattr__(name: str):
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'pyctr.netns' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pyctr.netns.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
