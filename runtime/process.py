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
import socket
import threading
from dataclasses import dataclass

from pyctr.errors import ContainerInitError, PyctrError, UserError

from . import syscalls as sc
from .init import InitContext, as_error, child_main, report
from .syscalls import Syscalls

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
            sys.setns(ns["path"], NAMESPACE_FLAGS[ns["type"]])
        else:
            flags |= NAMESPACE_FLAGS[ns["type"]]
    if flags:
        sys.unshare(flags)


def _intermediate(ctx: InitContext, child: socket.socket, stdio: tuple[int, int, int]) -> None:
    """The first child: join/unshare namespaces, fork PID 1, report its pid, exit."""
    step = "namespaces"
    try:
        _set_stdio(*stdio)
        join_namespaces(ctx.sys, ctx.spec.get("linux", {}).get("namespaces", []))
        step = "fork init"
        pid = os.fork()
        if pid == 0:
            child_main(ctx)
        child.send(json.dumps({"type": "pid", "pid": pid}).encode())
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the caller
        report(ctx, as_error(step, exc, ctx))
        os._exit(1)


def _recv(sync: socket.socket) -> tuple[dict | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sync, 65536, 4)
    if not data:
        return None, fds
    return json.loads(data), fds


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def spawn(spec: dict, rootfs: str, bundle: str, fifo: str, *, stdin: int = 0, stdout: int = 1,
          stderr: int = 2) -> Spawned:
    """Start PID 1 and run its init pipeline up to "wait for start"; raise what it reports."""
    check_single_threaded()
    Syscalls.preload()
    # orphans (our PID 1 once the intermediate child exits) become our children
    sc.set_child_subreaper()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
    ctx = InitContext(spec=spec, rootfs=rootfs, bundle=bundle, sys=Syscalls(), sync=child,
                      fifo_fd=fifo_fd)
    try:
        first = os.fork()
        if first == 0:  # pragma: no cover - runs in the child
            parent.close()
            _intermediate(ctx, child, (stdin, stdout, stderr))
    finally:
        os.close(fifo_fd)
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
            if kind == "pid":
                init_pid = msg["pid"]
                os.waitpid(first, 0)
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
        if init_pid:
            _kill_and_reap(init_pid)
        else:
            _kill_and_reap(first)
        raise
