"""fork → unshare → fork: how a single-threaded Python process starts a container's PID 1.

A new PID namespace applies to children only, so the first child
unshares (and setns()es into namespaces given by path) and forks again:
the grandchild is PID 1 of the container and runs the init pipeline.  The
intermediate child reports the grandchild's host pid over the sync socket
and exits; the caller, a child subreaper, inherits PID 1 and can waitpid()
it.  Raw clone() is never called from Python, and never fork() from a
threaded process (a lock held by another thread stays held forever in the
child).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyctr import explain
from pyctr.errors import ContainerInitError, PyctrError, UserError

from . import cgroup
from . import syscalls as sc
from .init import InitContext, as_error, child_main, report
from .seam import Syscalls
from .statedir import start_time

if TYPE_CHECKING:
    from pyctr.cgroups import Manager

NAMESPACE_FLAGS = {
    "pid": sc.CLONE_NEWPID, "network": sc.CLONE_NEWNET, "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "cgroup": sc.CLONE_NEWCGROUP,
    "user": sc.CLONE_NEWUSER,
}
SYNC_TIMEOUT = 30.0


@dataclass
class Spawned:
    """What create() gets back: PID 1's host pid, the sync socket and the console master."""

    pid: int
    sync: socket.socket
    console_fd: int | None
    cgroup: Manager | None = None


def check_single_threaded() -> None:
    """Refuse to fork from a threaded process: the child could deadlock on a held lock."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = threading.active_count()
    if threads != 1 or threading.active_count() != 1:
        raise UserError(f"cannot create a container from a process with {threads} threads",
                        hint="fork/unshare needs a single-threaded process; start a shim "
                             "with subprocess and create the container there")


def _set_stdio(stdin: int, stdout: int, stderr: int) -> None:
    dups = [os.dup(fd) for fd in (stdin, stdout, stderr)]
    for target, fd in enumerate(dups):
        os.dup2(fd, target, inheritable=True)
    for fd in dups:
        if fd > 2:
            os.close(fd)


def join_namespaces(sys: Syscalls, namespaces: list[dict]) -> None:
    """setns into namespaces given by path first, then unshare all the new ones at once."""
    flags = 0
    for ns in namespaces:
        if ns.get("path"):
            explain.note("setns", f"setns({ns.get('origin', ns['path'])}) — the "
                                  f"{ns['type']} namespace")
            sys.setns(ns["path"], NAMESPACE_FLAGS[ns["type"]])
        else:
            flags |= NAMESPACE_FLAGS[ns["type"]]
    if flags:
        names = "|".join(f"CLONE_NEW{'NET' if t == 'network' else 'NS' if t == 'mount' else t.upper()}"
                         for t, f in NAMESPACE_FLAGS.items() if flags & f)
        explain.note("namespaces", f"unshare({names})")
        sys.unshare(flags)


def _intermediate(ctx: InitContext, child: socket.socket, stdio: tuple[int, int, int],
                  cgroup_mgr: Manager | None = None) -> None:
    """The first child: join/unshare namespaces, fork PID 1, report its pid, then let it go.

    With a cgroup (made, limits written, by the caller before the fork) the
    child moves itself into it before the cgroup namespace:
    unshare(CLONE_NEWCGROUP) roots the new cgroup namespace at the cgroup
    the process is in at that moment, and PID 1, forked after, is born in
    it (its memory charged from its first page).  Moving itself, a single
    thread, spares the kernel's threadgroup lock and the RCU grace period
    it waits for (~20 ms) when another process writes cgroup.procs.  PID 1
    waits for a byte on a pipe until its pid is reported: an error it sent
    first would leave the caller not knowing which child to reap.
    """
    step = "namespaces"
    try:
        if explain.enabled():  # our events go to the caller, over the sync socket
            explain.relay(lambda ev: ctx.send({"type": "explain", "event": ev}))
        ctx.sys.set_not_dumpable()  # setns into a running container's namespaces comes next
        _set_stdio(*stdio)
        namespaces = ctx.spec.get("linux", {}).get("namespaces", [])
        if cgroup_mgr is not None:
            # first: the host's cgroupfs is still in view (a joined mount namespace
            # would hide it), and a new cgroup namespace is rooted where we are
            step = "cgroup"
            cgroup.join_self(cgroup_mgr)
            step = "namespaces"
        join_namespaces(ctx.sys, namespaces)
        step = "fork init"
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            child_main(ctx, go_r)
        os.close(go_r)
        child.send(json.dumps({"type": "pid", "pid": pid}).encode())
        os.write(go_w, b"1")
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the caller
        report(ctx, as_error(step, exc, ctx))
        os._exit(1)


def _explain_namespaces(pid: int, spec: dict) -> None:
    """--explain: the namespaces PID 1 is in, by inode, beside the host's (ours)."""
    files = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
             "cgroup": "cgroup", "user": "user"}
    for ns in spec.get("linux", {}).get("namespaces", []):
        name = files[ns["type"]]
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/{name}")
            ours = os.readlink(f"/proc/self/ns/{name}")
        except OSError:
            continue
        how = "joined" if ns.get("path") else "new"
        explain.note("namespaces", f"{theirs} ({how}; the host's is {ours})")


def await_exec(sync: socket.socket) -> None:
    """After start: read the init's last words until EOF (the socket is close-on-exec, so
    EOF means execve succeeded); relay --explain events, raise a reported error."""
    try:
        while data := sync.recv(65536):
            msg = json.loads(data)
            if msg.get("type") == "explain":
                explain.emit(msg["event"])
            elif msg.get("type") == "error":
                raise PyctrError.from_dict(msg["error"])
    finally:
        sync.close()


def _recv(sync: socket.socket) -> tuple[dict | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sync, 65536, 4)
    if not data:
        return None, fds
    return json.loads(data), fds


def kill_and_reap(pid: int, started: int | None = None) -> int | None:
    """SIGKILL ``pid`` and wait for it; its wait status if it was our child, else None.

    ``started`` (its recorded start time) guards against pid reuse: the
    process is pinned with a pidfd first, then compared, so the signal can
    only reach the process that was checked.  Our own child needs no check
    (its pid stays ours, even as a zombie, until we reap it).  A process
    that is not our child is waited for by polling its pidfd.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        if started is not None and start_time(pid, zombies=True) != started:
            return None
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already exited, not yet reaped
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            select.select([pidfd], [], [])
            return None
    finally:
        os.close(pidfd)


def spawn(spec: dict, rootfs: str, bundle: str, fifo: str, *, stdin: int = 0, stdout: int = 1,
          stderr: int = 2, seccomp_cache: str | None = None) -> Spawned:
    """Start PID 1 and run its init pipeline up to "wait for start"; raise what it reports.

    With linux.cgroupsPath the cgroup is made (limits written) while the
    intermediate child unshares, and removed again if anything fails.
    """
    check_single_threaded()
    Syscalls.preload()
    made: list[Manager] = []
    try:
        spawned = _spawn(spec, rootfs, bundle, fifo, made, stdin=stdin, stdout=stdout,
                         stderr=stderr, seccomp_cache=seccomp_cache)
    except BaseException:
        for mgr in made:
            try:
                cgroup.destroy(mgr)
            except PyctrError:
                pass  # the first error is the one to see
        raise
    spawned.cgroup = made[0] if made else None
    return spawned


def _spawn(spec: dict, rootfs: str, bundle: str, fifo: str, made: list[Manager], *,
           stdin: int, stdout: int, stderr: int, seccomp_cache: str | None) -> Spawned:
    mgr = cgroup.setup(spec)  # None without linux.cgroupsPath
    if mgr is not None:
        made.append(mgr)
    fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
    try:
        ctx = InitContext(spec=spec, rootfs=rootfs, bundle=bundle, sys=Syscalls(),
                          fifo_fd=fifo_fd, seccomp_cache=seccomp_cache)
        return _fork_init(ctx, (stdin, stdout, stderr), mgr)
    finally:
        os.close(fifo_fd)


def spawn_exec(ctx: InitContext, stdio: tuple[int, int, int],
               cgroup_path: str | None) -> Spawned:
    """runc exec's process: join the container's cgroup and namespaces (ctx.spec's
    namespaces, all by path) and run ctx.steps (init.EXEC_STEPS) up to "ready"."""
    check_single_threaded()
    Syscalls.preload()
    mgr = cgroup.open_path(cgroup_path) if cgroup_path else None
    return _fork_init(ctx, stdio, mgr)


def _fork_init(ctx: InitContext, stdio: tuple[int, int, int], mgr: Manager | None) -> Spawned:
    """Fork the intermediate child, then read its reports until the new process is ready."""
    # orphans (our PID 1 once the intermediate child exits) become our children
    sc.set_child_subreaper()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctx.sync = child
    try:
        first = os.fork()
        if first == 0:  # pragma: no cover - runs in the child
            parent.close()
            _intermediate(ctx, child, stdio, cgroup_mgr=mgr)
    finally:
        child.close()
    parent.settimeout(SYNC_TIMEOUT)
    init_pid = 0
    console = None
    try:
        while True:
            try:
                msg, fds = _recv(parent)
            except (TimeoutError, OSError) as exc:
                raise ContainerInitError(f"no word from the container's init: {exc}",
                                         step="create", hint="the init is stuck") from None
            if msg is None:
                raise ContainerInitError("the container's init exited during create",
                                         step="create", hint="run with --debug to see why")
            kind = msg.get("type")
            if kind == "explain":
                explain.emit(msg["event"])
            elif kind == "pid":
                init_pid = msg["pid"]
                os.waitpid(first, 0)
                first = 0
                if explain.enabled():
                    _explain_namespaces(init_pid, ctx.spec)
            elif kind == "console":
                console = fds[0]
            elif kind == "error":
                raise PyctrError.from_dict(msg["error"])
            elif kind == "ready":
                parent.settimeout(None)
                return Spawned(pid=init_pid, sync=parent, console_fd=console)
    except BaseException:
        parent.close()
        if console is not None:
            os.close(console)
        for pid in (first, init_pid):
            if pid:
                kill_and_reap(pid)
        raise
