"""The container's init pipeline: a fixed list of named steps, run by PID 1 before execve.

The order is the lesson (and ``--explain`` prints these names):
mounts are made while the host is still visible, pivot_root cuts it off,
then privilege is taken away piece by piece, and the executable is looked
up before waiting so ``create`` already reports "executable file not found".
Each step that fails is reported to the caller as a structured
ContainerInitError naming the step (see ``run_pipeline``).
"""

from __future__ import annotations

import errno as _errno
import json
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyctr import explain
from pyctr.errors import (
    EXIT_CANNOT_INVOKE,
    EXIT_NOT_FOUND,
    ContainerInitError,
    ExecError,
    PyctrError,
    from_oserror,
)

from . import rootfs, security, terminal
from .describe import describe
from .seam import Syscalls


@dataclass
class InitContext:
    """What the steps share: the spec, host paths, the syscall seam and the channels out."""

    spec: dict
    rootfs: str
    bundle: str
    sys: Syscalls
    sync: socket.socket | None = None
    fifo_fd: int | None = None
    mount: str | None = None  # the spec entry being worked on, for error messages
    unprivileged: bool = False  # capabilities are dropped: EPERM no longer means "not root"
    seccomp_cache: str | None = None  # where compiled filters are kept (seccomp.program)
    seccomp_program: bytes | None = None
    executable: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    steps: list | None = None  # the pipeline to run: STEPS (create) or EXEC_STEPS (exec)

    def send(self, message: dict, fds: list[int] | None = None) -> None:
        if self.sync is not None:
            data = json.dumps(message).encode()
            if fds:
                socket.send_fds(self.sync, [data], fds)
            else:
                self.sync.send(data)

    def send_console(self, master: int) -> None:
        self.send({"type": "console"}, [master])


def set_hostname(ctx: InitContext) -> None:
    """sethostname in the container's own UTS namespace (load_spec insists on one)."""
    if ctx.spec.get("hostname"):
        ctx.sys.sethostname(ctx.spec["hostname"])


def loopback_up(ctx: InitContext) -> None:
    """A new network namespace has only lo, and it is down: bring it up (as docker does)."""
    for ns in ctx.spec.get("linux", {}).get("namespaces", []):
        if ns["type"] == "network" and not ns.get("path"):
            ctx.sys.set_link_up("lo")


def change_dir(ctx: InitContext) -> None:
    """chdir(process.cwd) as the container's user, inside the new root."""
    cwd = ctx.spec["process"].get("cwd", "/")
    try:
        ctx.sys.chdir(cwd)
    except OSError as exc:
        raise ContainerInitError(
            f'chdir to cwd ({json.dumps(cwd)}) set in config.json failed: '
            f'{(exc.strerror or "").lower()}', path=cwd, errno=exc.errno,
            hint="create the directory in the image or pick another working dir") from None


def environment(spec: dict) -> dict[str, str]:
    env = {}
    for item in spec["process"].get("env", []):
        key, _, value = item.partition("=")
        env[key] = value
    return env


def find_executable(sys: Syscalls, name: str, env: dict[str, str]) -> str:
    """Like Go's exec.LookPath (what runc does) in the container's $PATH; raises ExecError."""
    def check(path: str) -> str | None:
        try:
            st = sys.stat(path)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) or not sys.access(path, os.X_OK):
            return "denied"
        return "ok"

    if "/" in name:
        found = check(name)
        if found == "ok":
            return name
        if found == "denied":
            raise ExecError(f'exec: "{name}": permission denied', syscall="execve", path=name,
                            errno=_errno.EACCES, exit_code=EXIT_CANNOT_INVOKE,
                            hint="the file is not executable (chmod +x) or is a directory")
        raise ExecError(f'exec: "{name}": stat {name}: no such file or directory',
                        syscall="execve", path=name, exit_code=EXIT_NOT_FOUND,
                        hint="check the command's path inside the image")
    denied = None
    for d in env.get("PATH", "").split(":"):
        candidate = os.path.join(d or ".", name)
        found = check(candidate)
        if found == "ok":
            return candidate
        if found == "denied" and denied is None:
            denied = candidate
    if denied is not None:
        raise ExecError(f'exec: "{name}": permission denied', syscall="execve", path=denied,
                        errno=_errno.EACCES, exit_code=EXIT_CANNOT_INVOKE,
                        hint=f"{denied} is not executable (chmod +x) or is a directory")
    raise ExecError(f'exec: "{name}": executable file not found in $PATH', syscall="execve",
                    exit_code=EXIT_NOT_FOUND,
                    hint="check the command's name and the PATH in process.env")


def lookup_executable(ctx: InitContext) -> None:
    """Find process.args[0] now, so a missing command fails at create, not at start."""
    ctx.env = environment(ctx.spec)
    ctx.executable = find_executable(ctx.sys, ctx.spec["process"]["args"][0], ctx.env)


def close_fds(ctx: InitContext) -> None:
    """Close every fd but stdio, the sync socket and the exec fifo (both close-on-exec)."""
    keep = {0, 1, 2}
    if ctx.sync is not None:
        keep.add(ctx.sync.fileno())
    if ctx.fifo_fd is not None:
        keep.add(ctx.fifo_fd)
    ctx.sys.close_fds_except(keep)


def reset_signals(ctx: InitContext) -> None:
    """No disposition or mask of ours is inherited by the command (see Syscalls)."""
    ctx.sys.reset_signals()


def wait_for_start(ctx: InitContext) -> None:
    """Tell the caller we are ready, then block on the exec fifo until start() opens it."""
    ctx.send({"type": "ready"})
    if ctx.fifo_fd is not None:
        ctx.sys.wait_for_start(ctx.fifo_fd)


def execve(ctx: InitContext) -> None:
    """Become the container's command; the sync socket closes on exec (EOF = success)."""
    assert ctx.executable is not None
    try:
        ctx.sys.execve(ctx.executable, ctx.spec["process"]["args"], ctx.env)
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == _errno.ENOENT else EXIT_CANNOT_INVOKE
        raise ExecError(f'exec: "{ctx.executable}": {(exc.strerror or "").lower()}',
                        syscall="execve", path=ctx.executable, errno=exc.errno,
                        exit_code=code, hint="the file may not be a valid executable "
                        "for this machine") from None


Step = Callable[[InitContext], None]

STEPS: list[tuple[str, Step]] = [
    ("mount propagation", rootfs.set_propagation),
    ("rootfs bind", rootfs.bind_rootfs),
    ("mounts", rootfs.mount_spec_mounts),
    ("devices", rootfs.create_devices),
    ("dev symlinks", rootfs.dev_symlinks),
    ("masked paths", rootfs.masked_paths),
    ("readonly paths", rootfs.readonly_paths),
    ("seccomp compile", security.compile_seccomp),
    ("pivot_root", rootfs.pivot_root),
    ("root readonly", rootfs.readonly_root),
    ("console", terminal.setup_console),
    ("hostname", set_hostname),
    ("loopback", loopback_up),
    ("rlimits", security.set_rlimits),
    ("seccomp without no_new_privs", security.set_seccomp_privileged),
    ("user", security.set_user),
    ("capabilities", security.set_capabilities),
    ("no_new_privs", security.set_no_new_privs),
    ("seccomp", security.set_seccomp),
    ("chdir", change_dir),
    ("lookup executable", lookup_executable),
    ("close fds", close_fds),
    ("signals", reset_signals),
    ("wait for start", wait_for_start),
    ("execve", execve),
]

STEP_NAMES = [name for name, _ in STEPS]

# runc exec: a process joining a running container.  Its namespaces, cgroup and
# rootfs exist already (joined by process.spawn_exec before this runs, the
# seccomp filter compiled by the caller on the host): only the privilege
# steps remain, in the same order as PID 1's.
_EXEC_FROM_PID1 = ("rlimits", "seccomp without no_new_privs", "user", "capabilities",
                   "no_new_privs", "seccomp", "chdir", "lookup executable", "close fds",
                   "signals")
EXEC_STEPS: list[tuple[str, Step]] = [
    ("console", terminal.setup_exec_console),
    *((name, fn) for name, fn in STEPS if name in _EXEC_FROM_PID1),
    ("ready", wait_for_start),
    ("execve", execve),
]

_UNPRIVILEGED_EPERM = ("the init has dropped its capabilities and may run under seccomp: "
                       "the spec's process.capabilities or linux.seccomp forbid this")
_HINTS = {
    _errno.EPERM: "the runtime needs root (CAP_SYS_ADMIN) for this step",
    _errno.ENODEV: "the kernel does not know this filesystem type",
    _errno.ENOENT: "a path in config.json does not exist",
    _errno.EINVAL: "an option or flag is not valid here",
    _errno.EACCES: "permission denied by the file's mode",
}


def as_error(name: str, exc: BaseException, ctx: InitContext) -> PyctrError:
    """Any failure of step ``name`` as a PyctrError carrying the step (and mount) name."""
    step = f"{name} {ctx.mount}" if ctx.mount else name
    if isinstance(exc, PyctrError):
        if exc.step is None:
            exc.step = step
        return exc
    if isinstance(exc, OSError):
        hint = _HINTS.get(exc.errno or 0)
        if exc.errno == _errno.EPERM and ctx.unprivileged:
            hint = _UNPRIVILEGED_EPERM
        return from_oserror(exc, step=step, kind=ContainerInitError, hint=hint)
    return ContainerInitError(f"{type(exc).__name__}: {exc}", step=step,
                              hint="this is a bug in pyctr's runtime")


def run_pipeline(ctx: InitContext, steps: list[tuple[str, Step]] | None = None) -> None:
    """Run the steps in order; the first failure is raised as a PyctrError naming its step."""
    if steps is None:
        steps = ctx.steps if ctx.steps is not None else STEPS
    for name, fn in steps:
        if explain.enabled():  # --explain: what this step is about to do (describe.py)
            for what in describe(name, ctx):
                explain.note(name, what)
        try:
            fn(ctx)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, never lost
            raise as_error(name, exc, ctx) from None


def report(ctx: InitContext, err: PyctrError) -> None:
    """Send ``err`` to the caller; best effort (the caller may be gone)."""
    try:
        ctx.send({"type": "error", "error": err.to_dict()})
    except OSError:
        pass


def child_main(ctx: InitContext, go: int | None = None) -> Any:
    """PID 1's whole life until execve; never returns (os._exit on failure).

    Not dumpable from its first instruction: it is the host's python until
    execve (CVE-2019-5736).  With ``go`` (a pipe), it waits for the byte
    that says its parent has reported its pid, so no error can get there
    first and leave the caller unable to reap it.
    """
    try:
        ctx.sys.set_not_dumpable()
        if go is not None:
            if os.read(go, 1) != b"1":
                os._exit(1)  # the intermediate died without reporting us: nobody to report to
            os.close(go)
        run_pipeline(ctx)
    except PyctrError as err:
        report(ctx, err)
        os._exit(err.exit_code if isinstance(err, ExecError) else 1)
    os._exit(1)  # only a fake execve returns
