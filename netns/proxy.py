"""Published ports as a user-space proxy (docker-proxy's job), one process per port.

Why a proxy and not nftables DNAT: a published port must answer on the
host's 127.0.0.1, and DNAT of loopback traffic to a bridge address needs
``net.ipv4.conf.*.route_localnet=1``, a host-wide sysctl that pyctr must
not change; DNAT from other hosts needs ``ip_forward=1`` too.  A proxy
binds an ordinary socket on the host and connects to the container from
the host's namespace: no sysctl, no host firewall change, and it works the
same on 127.0.0.1 and on every other address.  The price is a copy
through user space (bench/bench_net.py measures it) and the client
address the container sees (the bridge's gateway, not the real client).

``start_proxy`` fork+execs ``python -m pyctr.netns.proxy`` (subprocess,
safe from a threaded caller: the child execs at once) in its own session,
so it outlives a ``pyctr run -d``; the proxy reports the port it bound
(``0`` = the kernel picks a free one) over a pipe before the caller goes on.
"""

from __future__ import annotations

import argparse
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from pyctr.errors import PyctrError

BUFSIZE = 256 * 1024
READY_TIMEOUT = 10.0
UDP_IDLE = 120.0
_children: dict[int, subprocess.Popen] = {}


class RunningProxy(NamedTuple):
    pid: int
    mapping: object  # PortMapping, with the host port actually bound


# ---- the caller's side ------------------------------------------------------

def start_proxy(mapping, container_ip: str) -> RunningProxy:
    """Start forwarding ``mapping.bind_ip:mapping.host_port`` → ``container_ip:container_port``.

    Returns the pid (to record, for ``stop_proxy``) and the mapping with
    the host port the proxy bound.  A port already in use is a Conflict
    with docker's text.
    """
    from pyctr.errors import Conflict

    r, w = os.pipe()
    try:
        argv = [sys.executable, "-m", "pyctr.netns.proxy", "--proto", mapping.protocol,
                "--host-ip", mapping.bind_ip, "--host-port", str(mapping.host_port),
                "--container-ip", container_ip, "--container-port",
                str(mapping.container_port), "--ready-fd", str(w)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(w,),
                                start_new_session=True)
    finally:
        os.close(w)
    try:
        msg = _read_all(r, READY_TIMEOUT)
    finally:
        os.close(r)
    if msg.startswith("ok "):
        _children[proc.pid] = proc
        return RunningProxy(proc.pid, mapping.with_host_port(int(msg.split()[1])))
    proc.kill()
    proc.wait()
    where = f"{mapping.bind_ip}:{mapping.host_port}"
    if "EADDRINUSE" in msg:
        raise Conflict(f"bind for {where} failed: port is already allocated",
                       step="publish port")
    raise PyctrError(f"userland proxy for {where} -> {container_ip}:{mapping.container_port}"
                     f"/{mapping.protocol}: {msg.removeprefix('err ') or 'exited before ready'}",
                     step="publish port")


def _read_all(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 512)
        if not chunk:
            break
        data += chunk
        if data.endswith(b"\n"):
            break
    return data.decode(errors="replace").strip()


def is_proxy(pid: int) -> bool:
    """True when ``pid`` is a live pyctr proxy (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"pyctr.netns.proxy" in f.read()
    except OSError:
        return False


def stop_proxy(pid: int, timeout: float = 5.0) -> None:
    """Stop a proxy and, when it is our child, reap it; idempotent."""
    proc = _children.pop(pid, None)
    if not is_proxy(pid):
        if proc is not None:
            proc.poll()
        return
    os.kill(pid, signal.SIGTERM)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    deadline = time.monotonic() + timeout
    while is_proxy(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if is_proxy(pid):
        os.kill(pid, signal.SIGKILL)


# ---- the proxy process --------------------------------------------------------

def _pipe(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(BUFSIZE)
    view = memoryview(buf)
    try:
        while n := src.recv_into(buf):
            dst.sendall(view[:n])
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve_conn(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve_tcp(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_conn, args=(client, target), daemon=True).start()


def serve_udp(sock: socket.socket, target: tuple[str, int]) -> None:
    """One connected upstream socket per client address, dropped after UDP_IDLE seconds."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    flows: dict[tuple, tuple[socket.socket, float]] = {}
    while True:
        for key, _ in sel.select(timeout=UDP_IDLE / 4):
            if key.data is None:
                data, client = sock.recvfrom(65535)
                up = flows.get(client, (None, 0))[0]
                if up is None:
                    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.connect(target)
                    sel.register(up, selectors.EVENT_READ, client)
                flows[client] = (up, time.monotonic())
                try:
                    up.send(data)
                except OSError:
                    pass
            else:
                try:
                    sock.sendto(key.fileobj.recv(65535), key.data)
                    flows[key.data] = (key.fileobj, time.monotonic())
                except OSError:
                    pass
        now = time.monotonic()
        for client, (up, seen) in list(flows.items()):
            if now - seen > UDP_IDLE:
                sel.unregister(up)
                up.close()
                del flows[client]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyctr.netns.proxy")
    ap.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    ap.add_argument("--host-ip", default="0.0.0.0")
    ap.add_argument("--host-port", type=int, default=0)
    ap.add_argument("--container-ip", required=True)
    ap.add_argument("--container-port", type=int, required=True)
    ap.add_argument("--ready-fd", type=int, default=-1)
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    def report(text: str) -> None:
        if a.ready_fd >= 0:
            os.write(a.ready_fd, text.encode() + b"\n")
            os.close(a.ready_fd)

    kind = socket.SOCK_STREAM if a.proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((a.host_ip, a.host_port))
        if a.proto == "tcp":
            sock.listen(128)
    except OSError as e:
        import errno

        report(f"err {errno.errorcode.get(e.errno, e.errno)} {e.strerror}")
        return 1
    report(f"ok {sock.getsockname()[1]}")
    target = (a.container_ip, a.container_port)
    (serve_tcp if a.proto == "tcp" else serve_udp)(sock, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
