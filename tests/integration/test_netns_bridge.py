"""netns on the real kernel: namespaces on a bridge reach each other, published
ports answer on 127.0.0.1 through the proxy, IPAM holds under 30 processes,
and teardown (or crash cleanup) leaves nothing: links, netns files, mounts,
proxies, nft rules, allocations.

Traffic goes only to addresses inside namespaces these tests make and to
127.0.0.1.  Every bridge, veth, nft table and subnet is unique to the test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from pyctr.netns import link, nft, nsfile, proxy
from pyctr.netns.ports import parse_publish
from pyctr.netns.store import NetworkStore

pytestmark = pytest.mark.root(reason="bridges, veths and network namespaces")
BUSYBOX = shutil.which("busybox")
# subnets for tests: away from the defaults (10.88+) a real pyctr may be using
CANDIDATES = [IPv4Network(f"10.{a}.{b}.0/24") for a in range(200, 204) for b in range(256)]


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


@pytest.fixture
def env():
    """A store with a bridge of its own; everything made is removed, checked by conftest."""
    root = Path(tempfile.mkdtemp(prefix="pyctr-nettest-", dir="/var/tmp"))
    tag = secrets.token_hex(3)
    store = NetworkStore(root, default_bridge=f"pyctrt{tag}", candidates=CANDIDATES)
    made: dict = {"netns": [], "procs": [], "proxies": [], "cids": []}
    env = type("Env", (), {})()
    env.root, env.store, env.tag, env.made = root, store, tag, made

    def container(net):
        cid = secrets.token_hex(32)
        path = root / "netns" / cid
        nsfile.create_netns(path)
        made["netns"].append(path)
        made["cids"].append(cid)
        ip = store.allocate(net.name, cid, names=[f"c{len(made['cids'])}"])
        return link.attach(net, cid, path, ip)

    env.container = container
    yield env
    for pid in made["proxies"]:
        proxy.stop_proxy(pid)
    for p in made["procs"]:
        p.kill()
        p.wait()
    for cid in made["cids"]:
        link.cleanup(cid)
    for path in made["netns"]:
        nsfile.remove_netns(path)
    for net in store.list():
        link.delete_bridge(net)
    shutil.rmtree(root)


def _in_ns(ns: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={ns}", *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _httpd(env, ns: str, ip: str, port: int, body: str) -> None:
    www = env.root / f"www-{port}-{ip}"
    www.mkdir()
    (www / "index.html").write_text(body)
    env.made["procs"].append(subprocess.Popen(
        ["nsenter", f"--net={ns}", BUSYBOX, "httpd", "-f", "-p", f"{ip}:{port}", "-h", str(www)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while True:  # the host reaches the namespace over the bridge
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"httpd on {ip}:{port} never listened"
            time.sleep(0.02)


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (scripts/setup.sh)")
def test_two_namespaces_on_a_bridge_reach_each_other_and_teardown_leaves_nothing(env):
    net = env.store.get("bridge")
    link.ensure_bridge(net)
    link.ensure_bridge(net)  # idempotent
    a, b = env.container(net), env.container(net)
    assert a.ip != b.ip and a.mac == f"02:42:{':'.join(f'{int(x):02x}' for x in a.ip.split('.'))}"

    shown = _in_ns(a.netns_path, "ip", "-j", "addr", "show", "dev", "eth0")
    info = json.loads(shown.stdout)[0]
    assert info["address"] == a.mac and "UP" in info["flags"]
    assert [(x["local"], x["prefixlen"]) for x in info["addr_info"] if x["family"] == "inet"] \
        == [(a.ip, a.prefixlen)]
    route = _in_ns(a.netns_path, "ip", "route", "show", "default").stdout
    assert f"default via {net.gateway} dev eth0" in route
    assert "UP" in _in_ns(a.netns_path, "ip", "link", "show", "lo").stdout.split(">")[0]
    with open(f"/sys/class/net/{a.host_ifname}/master/uevent") as f:
        assert f"INTERFACE={net.bridge}" in f.read()

    assert _in_ns(a.netns_path, BUSYBOX, "ping", "-c", "1", "-W", "2", b.ip).returncode == 0
    _httpd(env, b.netns_path, b.ip, 8080, "from b")
    got = _in_ns(a.netns_path, BUSYBOX, "wget", "-q", "-O", "-", f"http://{b.ip}:8080/")
    assert got.stdout == "from b"
    # the host reaches the namespace through the bridge's gateway address
    assert _fetch(f"http://{b.ip}:8080/") == "from b"

    for p in env.made["procs"]:
        p.kill()
        p.wait()
    env.made["procs"].clear()
    for ep in (a, b):
        link.detach(ep)
        link.detach(ep)  # idempotent
        nsfile.remove_netns(ep.netns_path)
        env.store.release(net.name, ep.container_id)
        assert not os.path.exists(f"/sys/class/net/{ep.host_ifname}")
        assert not os.path.exists(ep.netns_path) and not _mounted(Path(ep.netns_path))
    assert env.store.allocations(net.name) == []
    link.delete_bridge(net)
    assert not os.path.exists(f"/sys/class/net/{net.bridge}")


def test_cleanup_after_a_crash_removes_the_veth_by_name(env):
    net = env.store.create(f"n{env.tag}")
    link.ensure_bridge(net)
    ep = env.container(net)
    assert os.path.exists(f"/sys/class/net/{ep.host_ifname}")
    assert link.cleanup(ep.container_id) == [ep.host_ifname]  # no Endpoint record needed
    assert link.cleanup(ep.container_id) == []
    assert env.store.release_all(ep.container_id) == {net.name: [ep.ip]}
    link.delete_bridge(net)
    env.store.remove(net.name)
    assert [n.name for n in env.store.list()] == ["bridge", "host", "none"]


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static (scripts/setup.sh)")
def test_published_port_answers_on_127_0_0_1_through_the_proxy(env):
    net = env.store.get("bridge")
    link.ensure_bridge(net)
    ep = env.container(net)
    _httpd(env, ep.netns_path, ep.ip, 80, "published")

    running = proxy.start_proxy(parse_publish("80"), ep.ip)  # -p CTRPORT: a free port
    env.made["proxies"].append(running.pid)
    port = running.mapping.host_port
    assert port > 0 and str(running.mapping) == f"80/tcp -> 0.0.0.0:{port}"
    assert _fetch(f"http://127.0.0.1:{port}/") == "published"

    with socket.socket() as s:  # a fixed host port, bound on 127.0.0.1 only
        s.bind(("127.0.0.1", 0))
        fixed = s.getsockname()[1]
    local = proxy.start_proxy(parse_publish(f"127.0.0.1:{fixed}:80"), ep.ip)
    env.made["proxies"].append(local.pid)
    assert local.mapping.host_port == fixed
    assert _fetch(f"http://127.0.0.1:{fixed}/") == "published"
    with pytest.raises(Exception, match=f"bind for 127.0.0.1:{fixed} failed: port is already "
                                        "allocated"):
        proxy.start_proxy(parse_publish(f"127.0.0.1:{fixed}:80"), ep.ip)

    for pid in (running.pid, local.pid):
        proxy.stop_proxy(pid)
        proxy.stop_proxy(pid)  # idempotent
        assert not proxy.is_proxy(pid) and not os.path.exists(f"/proc/{pid}")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_udp_published_port_round_trips(env):
    net = env.store.get("bridge")
    link.ensure_bridge(net)
    ep = env.container(net)
    echo = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(('{ep.ip}', 5353)); print('ready', flush=True)\n"
            "while True:\n d, a = s.recvfrom(2048); s.sendto(d.upper(), a)")
    p = subprocess.Popen(["nsenter", f"--net={ep.netns_path}", sys.executable, "-c", echo],
                         stdout=subprocess.PIPE, text=True)
    env.made["procs"].append(p)
    assert p.stdout.readline().strip() == "ready"
    running = proxy.start_proxy(parse_publish("127.0.0.1::5353/udp"), ep.ip)
    env.made["proxies"].append(running.pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"ping", ("127.0.0.1", running.mapping.host_port))
        assert s.recvfrom(2048)[0] == b"PING"


def test_30_concurrent_allocations_get_30_distinct_addresses(env):
    net = env.store.create(f"n{env.tag}")
    code = ("import sys; from pyctr.netns.store import NetworkStore; "
            "print(NetworkStore(sys.argv[1]).allocate(sys.argv[2], sys.argv[3]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(env.root), net.name, f"c{i:02d}"],
                              stdout=subprocess.PIPE, text=True) for i in range(30)]
    ips = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(ips)) == 30 and all(ip.startswith(net.subnet.rsplit(".", 1)[0]) for ip in ips)
    held = {a.container_id: a.ip for a in env.store.allocations(net.name)}
    assert held == {f"c{i:02d}": ip for i, ip in enumerate(ips)}
    for i in range(30):
        env.store.release(net.name, f"c{i:02d}")
    env.store.remove(net.name)


def _nft_out(*args: str) -> str:
    return subprocess.run(["nft", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (scripts/setup.sh)")
def test_masquerade_rule_lives_in_our_table_only_and_goes_with_the_network(env):
    net = env.store.create(f"n{env.tag}")
    table = f"pyctr_t{env.tag}"
    before = _nft_out("list", "tables")
    try:
        if not nft.host_forwards():  # here ip_forward=0: nothing is added
            assert nft.ensure_masquerade(net, table=table) is False
            assert nft.masquerade_rules(table) == []
        assert nft.ensure_masquerade(net, table=table, require_forwarding=False) is True
        assert nft.ensure_masquerade(net, table=table, require_forwarding=False) is True
        rules = nft.masquerade_rules(table)
        assert [c for _, c in rules] == [f"pyctr-net:{net.bridge}"]
        shown = _nft_out("list", "table", "ip", table)
        assert f'ip saddr {net.subnet} oifname != "{net.bridge}" masquerade' in shown
    finally:
        nft.remove_masquerade(net, table=table)
    assert nft.masquerade_rules(table) == []
    after = _nft_out("list", "tables")
    assert after == before
    env.store.remove(net.name)
