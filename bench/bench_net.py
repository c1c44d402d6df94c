#!/usr/bin/env python3
"""What networking costs: endpoint set-up + tear-down, and TCP throughput.

    sudo /opt/pyctr/venv/bin/python bench/bench_net.py [-n 20] [--mb 256] [--json]

  setup  none:   create_netns + remove_netns (what --network none pays)
         bridge: create_netns, allocate, ensure_bridge (present), attach,
                 then detach, remove_netns, release (what --network bridge adds)
  tcp    ns→ns:  a sender in one namespace to a receiver in another, over the bridge
         host→published port: a sender on the host to 127.0.0.1:PORT, through
                 the user-space proxy, to the receiver in a namespace
  run    `pyctr run --rm busybox true` with --network none and with the default
         bridge network, interleaved; beside it podman (with runc) the same two
         ways when podman can run here, else the reason it cannot
Medians are printed; the receiver counts the bytes, the sender times them.
The bench makes its own bridge, subnet, namespaces, pyctr root and podman
storage, and removes them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

# this benchmark measures pyctr in the CLI's own process (bench_run.py and
# bench_daemon.py measure the path through pyctrd): no daemon is started
os.environ["PYCTR_NO_DAEMON"] = "1"

from pyctr.netns import link, nsfile, proxy
from pyctr.netns.ports import parse_publish
from pyctr.netns.store import NetworkStore

CANDIDATES = [IPv4Network(f"10.{a}.{b}.0/24") for a in range(204, 208) for b in range(256)]
RECEIVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8); print("ready", flush=True)
while True:
    c, _ = s.accept(); n = 0; buf = bytearray(1 << 20)
    while (k := c.recv_into(buf)): n += k
    c.sendall(str(n).encode()); c.close()
"""
SENDER = """
import socket, sys, time
mb = int(sys.argv[3]); chunk = b"x" * (1 << 20)
t = time.perf_counter(); c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
for _ in range(mb): c.sendall(chunk)
c.shutdown(socket.SHUT_WR); got = int(c.recv(64)); dt = time.perf_counter() - t
assert got == mb << 20, got
print(mb * 8 / dt)
"""


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pyctr-benchnet-", dir="/var/tmp"))
    store = NetworkStore(root, default_bridge=f"pyctrb{secrets.token_hex(3)}",
                         candidates=CANDIDATES)
    net = store.get("bridge")
    results: dict = {}
    cleanup: list = []
    try:
        link.ensure_bridge(net)
        path = root / "ns"

        def none():
            nsfile.create_netns(path)
            nsfile.remove_netns(path)

        def bridge():
            cid = secrets.token_hex(32)
            nsfile.create_netns(path)
            ip = store.allocate(net.name, cid)
            link.ensure_bridge(net)
            ep = link.attach(net, cid, path, ip)
            link.detach(ep)
            nsfile.remove_netns(path)
            store.release(net.name, cid)

        bridge()  # warm: pyroute2 imported once, as in a real run
        results["setup_none_ms"] = _median_ms(none, a.n)
        results["setup_bridge_ms"] = _median_ms(bridge, a.n)

        eps = []
        for i in range(2):
            cid = f"{secrets.token_hex(31)}b{i}"
            p = root / f"ns{i}"
            nsfile.create_netns(p)
            cleanup.append(("ns", p, cid))
            eps.append(link.attach(net, cid, p, store.allocate(net.name, cid)))
        rx = subprocess.Popen(["nsenter", f"--net={eps[1].netns_path}", sys.executable, "-c",
                               RECEIVER, eps[1].ip, "5001"], stdout=subprocess.PIPE, text=True)
        cleanup.append(("proc", rx, None))
        assert rx.stdout.readline().strip() == "ready"

        def send(ns: str | None, host: str, port: int) -> float:
            pre = ["nsenter", f"--net={ns}"] if ns else []
            out = subprocess.run([*pre, sys.executable, "-c", SENDER, host, str(port),
                                  str(a.mb)], capture_output=True, text=True, check=True)
            return float(out.stdout)

        results["tcp_ns_to_ns_mbit"] = statistics.median(
            send(eps[0].netns_path, eps[1].ip, 5001) for _ in range(a.runs))
        running = proxy.start_proxy(parse_publish("127.0.0.1::5001"), eps[1].ip)
        cleanup.append(("proxy", running.pid, None))
        results["tcp_host_to_published_mbit"] = statistics.median(
            send(None, "127.0.0.1", running.mapping.host_port) for _ in range(a.runs))
    finally:
        for kind, obj, cid in reversed(cleanup):
            if kind == "proxy":
                proxy.stop_proxy(obj)
            elif kind == "proc":
                obj.kill()
                obj.wait()
            else:
                link.cleanup(cid)
                nsfile.remove_netns(obj)
        link.delete_bridge(net)
        shutil.rmtree(root)
    results.update(run_figures(a.n))
    if a.json:
        print(json.dumps(results, indent=1))
    else:
        for k, v in results.items():
            print(f"{k:30s} {v:10.1f}" if isinstance(v, float) else f"{k:30s} {v}")
    return 0


def run_figures(n: int) -> dict:
    """Whole `run`s: pyctr none vs bridge, and podman the same two ways if it can run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from bench_run import pyctr_parents, remove_new_pyctr_parents
    from make_busybox_rootfs import make_rootfs

    base = Path(tempfile.mkdtemp(prefix="pyctr-benchrun-", dir="/var/tmp"))
    parents_before = pyctr_parents()
    pyctr = [str(Path(sys.executable).parent / "pyctr"), "--root", str(base / "root"),
             "--run-dir", str(base / "run")]
    podman = ["podman", "--root", str(base / "pm-root"), "--runroot", str(base / "pm-run"),
              "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none",
              "--storage-driver", "overlay"]
    out: dict = {}
    try:
        tar = base / "busybox.tar"
        make_rootfs(base / "rootfs")
        subprocess.run(["tar", "-C", str(base / "rootfs"), "-cf", str(tar), "."], check=True)
        subprocess.run(pyctr + ["import", str(tar), "busybox"], check=True,
                       capture_output=True)
        cases = {"run_pyctr_none_ms": pyctr + ["run", "--rm", "--network", "none", "busybox",
                                               "true"],
                 "run_pyctr_bridge_ms": pyctr + ["run", "--rm", "busybox", "true"]}
        if shutil.which("podman"):
            subprocess.run(podman + ["import", str(tar), "localhost/busybox:latest"],
                           capture_output=True, check=False)
            cases["run_podman_none_ms"] = podman + ["run", "--rm", "--network", "none",
                                                    "localhost/busybox", "true"]
            cases["run_podman_bridge_ms"] = podman + ["run", "--rm", "localhost/busybox", "true"]
        else:
            out["podman"] = "not installed"
        times: dict = {k: [] for k in cases}
        for i in range(n + 1):
            for key, argv in cases.items():
                if key in out:
                    continue
                t0 = time.perf_counter()
                r = subprocess.run(argv, capture_output=True, text=True, check=False)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                    out[key] = f"not runnable here: {why[:120]}"
                elif i:
                    times[key].append(dt * 1e3)
        for key, ts in times.items():
            if key not in out:
                out[key] = statistics.median(ts)
    finally:
        from pyctr.netns import Network, nft

        for c in json.loads(subprocess.run(pyctr + ["network", "ls", "--format", "json"],
                                           capture_output=True, text=True,
                                           check=False).stdout or "[]"):
            if c.get("bridge"):
                net = Network.from_dict(c)
                nft.remove_masquerade(net)
                link.delete_bridge(net)
        if shutil.which("podman"):
            subprocess.run(podman + ["system", "reset", "-f"], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
        remove_new_pyctr_parents(parents_before)
    return out


if __name__ == "__main__":
    sys.exit(main())
