"""Networking through the CLI: bridge networks, names, published ports, clean teardown.

Traffic goes only to the containers' own addresses (inside namespaces these
tests made) and to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import imported_modules

pytestmark = pytest.mark.root


@pytest.fixture
def net(pyctr):
    """A user-defined network of this test, removed after it."""
    name = f"tn-{uuid.uuid4().hex[:8]}"
    pyctr.ok("network", "create", name)
    yield name
    for line in pyctr.ok("ps", "-a", "--no-trunc", "--format", "json").splitlines():
        c = json.loads(line)
        if c["Networks"] == name:
            pyctr("rm", "-f", c["ID"])
    pyctr.ok("network", "rm", name)


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie its new parent has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def pyctr_links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith("vpy")}


def test_containers_on_a_user_network_reach_each_other_by_name(pyctr, net, name):
    server = pyctr.start(f"{name}-web", "--network", net, "--network-alias", "web",
                   "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    try:
        ip = pyctr.container(f"{name}-web")["NetworkSettings"]["IPAddress"]
        out = pyctr.ok("run", "--rm", "--network", net, "busybox", "sh", "-c",
                       f"grep -w {name}-web /etc/hosts; ping -c1 -W2 {name}-web >/dev/null "
                       f"&& echo ping-ok; wget -qO- http://web/hostname")
        lines = out.splitlines()
        assert lines[0].split()[0] == ip
        assert "ping-ok" in lines
        web_hostname = pyctr.container(f"{name}-web")["Config"]["Hostname"]
        assert lines[-1] == web_hostname
    finally:
        pyctr.stop(f"{name}-web", server)


def test_published_port_on_127_0_0_1_and_pyctr_port(pyctr, name):
    proc = pyctr.start(name, "-p", "80", "-p", "127.0.0.1::81", "busybox", "sh", "-c",
                 "echo hello-from-httpd > /tmp/index.html; httpd -p 80 -h /tmp; "
                 "httpd -f -p 81 -h /tmp")
    try:
        lines = pyctr.ok("port", name).splitlines()
        assert len(lines) == 2
        port80 = int(next(ln for ln in lines if ln.startswith("80/tcp -> 0.0.0.0:")).rsplit(
            ":", 1)[1])
        assert pyctr.ok("port", name, "81").strip().startswith("127.0.0.1:")
        deadline = time.monotonic() + 10
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port80}/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert body == b"hello-from-httpd\n"
        assert f"0.0.0.0:{port80}->80/tcp" in pyctr.ok("ps")
    finally:
        pyctr.stop(name, proc)
    r = pyctr("port", name)
    assert r.returncode != 0 and "no such container" in r.stderr


def test_fixed_host_port_taken_is_a_clear_error(pyctr, name):
    proc = pyctr.start(name, "-p", "127.0.0.1:18089:80", "busybox", "sleep", "30")
    try:
        r = pyctr("run", "--rm", "-p", "127.0.0.1:18089:80", "busybox", "true")
        assert r.returncode == 125
        assert "18089" in r.stderr and "already allocated" in r.stderr
    finally:
        pyctr.stop(name, proc)


def test_network_none_host_and_container_modes(pyctr, name):
    assert pyctr.ok("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net") \
        == "lo\n"
    host = sorted(os.listdir("/sys/class/net"))
    inside = pyctr.ok("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
    assert sorted(inside.split()) == host
    proc = pyctr.start(name, "busybox", "sleep", "30")
    try:
        pid = pyctr.container(name)["State"]["Pid"]
        theirs = os.readlink(f"/proc/{pid}/ns/net")
        mine = pyctr.ok("run", "--rm", "--network", f"container:{name}", "busybox",
                        "readlink", "/proc/self/ns/net").strip()
        assert mine == theirs
    finally:
        pyctr.stop(name, proc)


def test_thirty_parallel_containers_get_distinct_addresses(pyctr, net):
    names = [f"par-{uuid.uuid4().hex[:6]}-{i}" for i in range(30)]

    def run(n):
        return pyctr("run", "--rm", "--name", n, "--network", net, "busybox", "sh", "-c",
                     "ip -4 -o addr show eth0 | awk '{print $4}'", timeout=180)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, names))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results][:3]
    addrs = [r.stdout.strip() for r in results]
    assert len(set(addrs)) == 30 and all(a for a in addrs)


def test_ip_flag_and_a_taken_ip(pyctr, net, name):
    subnet = json.loads(pyctr.ok("network", "inspect", net))[0]["IPAM"]["Config"][0]["Subnet"]
    assert pyctr.ok("network", "inspect", "-f", "{{json .IPAM.Config}} {{.Driver}}", net) \
        .startswith(f'[{{"Subnet": "{subnet}", ') and \
        pyctr.ok("network", "inspect", "-f", "{{.Driver}}", net) == "bridge\n"
    want = subnet.split("/")[0].rsplit(".", 1)[0] + ".77"
    proc = pyctr.start(name, "--network", net, "--ip", want, "busybox", "sleep", "30")
    try:
        assert pyctr.container(name)["NetworkSettings"]["IPAddress"] == want
        r = pyctr("run", "--rm", "--network", net, "--ip", want, "busybox", "true")
        assert r.returncode == 125 and f"address {want} is already in use" in r.stderr
        r = pyctr("run", "--rm", "--network", net, "--ip", "192.0.2.9", "busybox", "true")
        assert r.returncode == 125 and "192.0.2.9" in r.stderr
        r = pyctr("network", "rm", net)
        assert r.returncode == 1 and "active endpoints" in r.stderr
    finally:
        pyctr.stop(name, proc)


def test_nothing_remains_after_rm_or_a_sigkill(pyctr, net, name):
    before = pyctr_links()
    # in the CLI's own process: it is the monitor that dies (through pyctrd, the
    # daemon's worker would live on and clean up itself)
    proc = pyctr.start(name, "--network", net, "-p", "80", "busybox", "sleep", "60", local=True)
    c = pyctr.container(name)
    sandbox = c["NetworkSettings"]["SandboxKey"]
    proxy_pids = [p["Pid"] for p in c["NetworkSettings"]["Proxies"]]
    assert pyctr_links() - before and Path(sandbox).exists() and proxy_pids
    # the CLI and the container die without cleaning up; the next command does it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(c["State"]["Pid"], signal.SIGKILL)
    pyctr.ok("ps", "-a")
    assert pyctr_links() == before
    assert not Path(sandbox).exists()
    assert all(gone(p) for p in proxy_pids)
    inspect = json.loads(pyctr.ok("network", "inspect", net))[0]
    assert inspect["Containers"] == {}
    pyctr.ok("rm", name)


def test_etc_files_inside_a_bridged_container(pyctr, name):
    out = pyctr.ok("run", "--rm", "--hostname", "box1", "busybox", "sh", "-c",
                   "cat /etc/hostname; echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf; "
                   "echo ---; ip -4 -o addr show eth0; ip route")
    hostname, hosts, resolv, net = out.split("---\n")
    assert hostname == "box1\n"
    ip = net.split()[3].split("/")[0]
    assert any(line.split() == [ip, "box1"] for line in hosts.splitlines())
    assert "nameserver 127." not in resolv and "nameserver" in resolv
    assert "default via" in net


def test_network_none_never_imports_pyroute2(pyctr):
    r, imported = imported_modules(pyctr.argv("--no-daemon", "run", "--rm", "--network",
                                              "none", "busybox", "true"))
    assert r.returncode == 0
    assert "pyctr.runtime.container" in imported  # the import trace is really there …
    assert not any(m.startswith("pyroute2") for m in imported)  # … and pyroute2 is not


def test_the_run_path_imports_no_archive_modules(pyctr):
    """shutil drags in bz2 and lzma (~2 ms): the run path removes trees with fsutil's own."""
    r, imported = imported_modules(pyctr.argv("--no-daemon", "run", "--rm", "--network",
                                              "none", "busybox", "true"))
    assert r.returncode == 0
    assert "pyctr.runtime.container" in imported
    assert not imported & {"shutil", "lzma", "bz2", "tarfile", "hashlib"}


def test_through_the_daemon_the_cli_is_a_thin_client(pyctr):
    """With pyctrd up, `pyctr run` hands its command line to a warm worker: the
    process the user started imports neither click nor the engine."""
    r, imported = imported_modules(pyctr.argv("run", "--rm", "--network", "none", "busybox",
                                              "echo", "hi"))
    assert (r.returncode, r.stdout) == (0, "hi\n")
    assert "pyctr.cli.entry" in imported and "socket" in imported
    assert not imported & {"click", "pyctr.engine", "pyctr.runtime", "pyctr.cli.main"}
