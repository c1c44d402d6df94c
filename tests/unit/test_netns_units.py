"""netns pure parts: -p/-P parsing, subnet choice, IPAM rules, MACs, /etc/hosts, import cost."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Network

import pytest

from pyctr.errors import Conflict, NotFound, UserError
from pyctr.netns import addr, hosts, ports
from pyctr.netns.ports import PortMapping, parse_publish
from pyctr.netns.store import NetworkStore

# ---- -p / -P -----------------------------------------------------------------

@pytest.mark.parametrize("spec, want", [
    ("80", PortMapping(80, "tcp", 0, "")),
    ("8080:80", PortMapping(80, "tcp", 8080, "")),
    ("8080:80/udp", PortMapping(80, "udp", 8080, "")),
    ("127.0.0.1:8080:80", PortMapping(80, "tcp", 8080, "127.0.0.1")),
    ("127.0.0.1::80", PortMapping(80, "tcp", 0, "127.0.0.1")),
    ("53/UDP", PortMapping(53, "udp", 0, "")),
])
def test_parse_publish_docker_forms(spec, want):
    assert parse_publish(spec) == want


@pytest.mark.parametrize("spec, message", [
    ("abc", "invalid containerPort: abc"),
    ("80:abc", "invalid containerPort: abc"),
    ("x:80", "invalid hostPort: x"),
    ("70000:80", "invalid hostPort: 70000"),
    ("0", "invalid containerPort: 0"),
    ("80/sctpx", "invalid proto: sctpx"),
    ("1.2.3:80:80", "invalid ip address: 1.2.3"),
    ("127.0.0.1:80:", "no port specified: 127.0.0.1:80:<empty>"),
    ("a:b:c:d", "invalid port format: a:b:c:d"),
    ("8000-8010:80-90", "port ranges are not supported: 80-90"),
    ("[::1]:80:80", "invalid ip address: [::1]"),
])
def test_parse_publish_errors_name_the_value(spec, message):
    with pytest.raises(UserError) as e:
        parse_publish(spec)
    assert e.value.message == message


def test_publish_all_expands_exposed_ports_not_already_published():
    published = [parse_publish("8080:80")]
    got = ports.expand_publish_all({"443/tcp": {}, "80/tcp": {}, "53/udp": {}}, published)
    assert got == [PortMapping(53, "udp"), PortMapping(443, "tcp")]
    assert ports.expand_publish_all(None) == []


def test_two_fixed_mappings_on_one_host_port_conflict():
    ports.check_conflicts([parse_publish("8080:80"), parse_publish("8080:80/udp"),
                           parse_publish("80"), parse_publish("81")])
    with pytest.raises(UserError, match="bind for 127.0.0.1:8080 failed: port is already"):
        ports.check_conflicts([parse_publish("8080:80"), parse_publish("127.0.0.1:8080:81")])


def test_mapping_renders_like_docker_port():
    assert str(PortMapping(80, "tcp", 32768)) == "80/tcp -> 0.0.0.0:32768"
    m = PortMapping(80, "udp", 1, "127.0.0.1")
    assert PortMapping.from_dict(m.to_dict()) == m

# ---- subnets, names, MACs ------------------------------------------------------

def test_subnet_choice_skips_host_routes_and_taken_networks():
    taken = [IPv4Network("10.88.5.0/24"), IPv4Network("10.89.0.0/16"), IPv4Network("10.0.0.0/15")]
    assert addr.choose_subnet(taken) == IPv4Network("10.90.0.0/16")
    with pytest.raises(UserError, match="non-overlapping"):
        addr.choose_subnet([IPv4Network("10.0.0.0/8")])


def test_host_routes_parses_proc_net_route_and_drops_default(tmp_path):
    f = tmp_path / "route"
    f.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
    assert addr.host_routes(str(f)) == [(IPv4Network("192.0.2.0/24"), "eth0")]


def test_mac_is_02_42_and_the_address_bytes():
    assert addr.mac_for_ip("10.88.0.2") == "02:42:0a:58:00:02"
    assert addr.mac_for_ip("172.17.255.254") == "02:42:ac:11:ff:fe"


def test_link_names_fit_ifnamsiz_and_share_the_cleanup_prefix():
    cid = "0123456789abcdef" * 4
    name = addr.veth_name(cid, "web")
    assert len(name) <= 15 and name.startswith(addr.veth_prefix(cid)) and name.startswith("vpy")
    assert addr.veth_name(cid, "web") != addr.veth_name(cid, "db")
    assert len(addr.bridge_name("a" * 64)) <= 15 and addr.bridge_name("x").startswith("pyctr-")

# ---- store + IPAM ----------------------------------------------------------------

def _store(tmp_path, routes=()):
    return NetworkStore(tmp_path, routes=lambda: list(routes))


def test_default_network_avoids_host_routes(tmp_path):
    s = _store(tmp_path, [(IPv4Network("10.88.0.0/16"), "eth1")])
    net = s.get("bridge")
    assert (net.subnet, net.gateway) == ("10.89.0.0/16", "10.89.0.1")
    # a root other than /var/lib/pyctr gets a bridge of its own; the standard one pyctr0
    assert net.bridge.startswith("pyctr0-") and len(net.bridge) <= 15
    assert NetworkStore("/var/lib/pyctr").default_bridge == "pyctr0"
    assert [n.name for n in s.list()] == ["bridge", "host", "none"]


def test_network_create_validates_like_docker(tmp_path):
    s = _store(tmp_path, [(IPv4Network("192.168.1.0/24"), "wlan0")])
    web = s.create("web", "10.100.0.0/24", "10.100.0.254")
    assert (web.gateway, s.get("web"), s.get(web.id[:10])) == ("10.100.0.254", web, web)
    cases = [
        (("web",), Conflict, "network with name web already exists"),
        (("bridge",), Conflict, "network with name bridge already exists"),
        (("x", "10.100.0.0/33"), UserError, "invalid subnet 10.100.0.0/33: invalid CIDR address"),
        (("x", "10.101.0.0/24", "10.102.0.1"), UserError,
         "no matching subnet for gateway 10.102.0.1"),
        (("x", "10.100.0.128/25"), Conflict, "pool 10.100.0.128/25 overlaps with other one"),
        (("x", "192.168.0.0/16"), Conflict, "overlaps with a host route to 192.168.1.0/24"),
        (("x", None, "10.1.1.1"), UserError, "cannot specify a gateway without a subnet"),
        (("-x",), UserError, "invalid network name '-x'"),
    ]
    for args, kind, text in cases:
        with pytest.raises(kind) as e:
            s.create(*args)
        assert text in e.value.message, args
    with pytest.raises(NotFound, match="network nope not found"):
        s.get("nope")


def test_ipam_allocates_round_robin_and_honours_requested_ip(tmp_path):
    s = _store(tmp_path)
    s.create("web", "10.100.0.0/29")  # hosts .1 (gateway) to .6
    a = s.allocate("web", "c1", names=["one", "alias"])
    b = s.allocate("web", "c2")
    assert (a, b) == ("10.100.0.2", "10.100.0.3")
    assert s.allocate("web", "c1") == a  # idempotent per container
    s.release("web", "c1")
    assert s.allocate("web", "c3") == "10.100.0.4"  # a freed address is not reused at once
    assert s.allocate("web", "c4", ip="10.100.0.2") == "10.100.0.2"
    with pytest.raises(Conflict) as e:
        s.allocate("web", "c5", ip="10.100.0.3")
    assert e.value.message == "address 10.100.0.3 is already in use on network web by container c2"
    with pytest.raises(UserError, match="invalid address 10.101.0.3: it does not belong to the "
                                        "subnet 10.100.0.0/29 of network web"):
        s.allocate("web", "c5", ip="10.101.0.3")
    with pytest.raises(Conflict, match="10.100.0.1 is the gateway address"):
        s.allocate("web", "c5", ip="10.100.0.1")
    s.allocate("web", "c5")
    s.allocate("web", "c6")
    with pytest.raises(Conflict, match="no available IPv4 addresses"):
        s.allocate("web", "c7")
    assert [a.container_id for a in s.allocations("web")] == ["c4", "c2", "c3", "c5", "c6"]


def test_network_rm_refused_while_allocated_and_for_predefined(tmp_path):
    s = _store(tmp_path)
    s.create("web", "10.100.0.0/24")
    s.allocate("web", "c1" * 10)
    with pytest.raises(Conflict, match="has active endpoints"):
        s.remove("web")
    assert s.release_all("c1" * 10) == {"web": ["10.100.0.2"]}
    s.remove("web")
    assert not (tmp_path / "networks" / "web").exists()
    with pytest.raises(Conflict, match="bridge is a pre-defined network and cannot be removed"):
        s.remove("bridge")
    with pytest.raises(UserError, match="network none has no addresses"):
        s.allocate("none", "c1")

# ---- /etc/hosts ---------------------------------------------------------------

def test_render_hosts_own_name_then_peers_once(tmp_path):
    s = _store(tmp_path)
    s.create("web", "10.100.0.0/24")
    s.allocate("web", "c1", names=["app", "api"])
    s.allocate("web", "c2", names=["db"])
    s.allocate("web", "c3")
    text = hosts.render_hosts("app", "10.100.0.2",
                              s.hosts_entries("web") + [("10.100.0.9", ["db", "cache"])])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[6:] == ["10.100.0.2\tapp", "10.100.0.3\tdb", "10.100.0.9\tcache"]
    none = hosts.render_hosts("box", None)
    assert "box" not in none and none.endswith("ff02::2\tip6-allrouters\n")


def test_write_in_place_keeps_the_inode(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("a much longer first version\n")
    ino = f.stat().st_ino
    hosts.write_in_place(f, "short\n")
    assert (f.read_text(), f.stat().st_ino) == ("short\n", ino)

# ---- import cost -----------------------------------------------------------------

def test_import_and_none_network_paths_do_not_import_pyroute2():
    code = ("import sys, pyctr.netns as n; n.NetworkStore; n.parse_publish('80'); "
            "n.render_hosts('h', None); n.create_netns; n.cleanup('f' * 64); "
            "print(sorted(m for m in sys.modules if m.startswith('pyroute2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
