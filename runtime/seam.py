"""``Syscalls``: the seam the init pipeline calls through.

The real kernel here (cffi wrappers from syscalls.py, os.* for the rest),
and ``pyctr.runtime.fake.RecordingSyscalls`` which records the calls so
unit tests assert the exact order of steps without root.  Every OSError
raised through it names its syscall, so an error reads ``mknod /dev/x: …``.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from .syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_NO_NEW_PRIVS,
    _load,
    mount,
    pivot_root,
    prctl,
    seccomp_filter,
    set_not_dumpable,
    sethostname,
    setns,
    umount2,
    unshare,
)


def _named(syscall: str, fn: Any, *args: Any) -> Any:
    """Call an os.* function; an OSError it raises names ``syscall`` like ours do."""
    try:
        return fn(*args)
    except OSError as exc:
        if not getattr(exc, "syscall", None):
            exc.syscall = syscall  # type: ignore[attr-defined]
        raise


class Syscalls:
    """The real kernel, as the init pipeline sees it.

    Mutations go through methods so RecordingSyscalls can record them;
    ``exists_in``/``is_dir_in``/``stat``/``access`` are queries, not recorded.
    """

    @staticmethod
    def preload() -> None:
        """Import everything the init needs now: after pivot_root the host's Python is gone."""
        _load()
        import _prctl  # noqa: F401  (python-prctl's C part; its prctl.py wrapper is not needed)

        from . import inroot, seccomp, terminal  # noqa: F401

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        mount(source, target, fstype, flags, data)

    def umount(self, target: str, flags: int = 0) -> None:
        umount2(target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        pivot_root(new_root, put_old)

    def unshare(self, flags: int) -> None:
        unshare(flags)

    def setns(self, path: str, nstype: int) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, nstype, path)
        finally:
            os.close(fd)

    def sethostname(self, name: str) -> None:
        sethostname(name)

    def chdir(self, path: str) -> None:
        _named("chdir", os.chdir, path)

    # inside the rootfs: resolved there, never through the host (see inroot.py)
    def mkdir_in(self, root: str, path: str) -> None:
        from . import inroot

        inroot.mkdir(root, path)

    def touch_in(self, root: str, path: str) -> None:
        from . import inroot

        inroot.touch(root, path)

    def mknod_in(self, root: str, path: str, mode: int, device: int, uid: int, gid: int) -> None:
        from . import inroot

        inroot.mknod(root, path, mode, device, uid, gid)

    def symlink_in(self, root: str, target: str, path: str, replace: bool = False) -> None:
        from . import inroot

        inroot.symlink(root, target, path, replace=replace)

    def mount_in(self, root: str, source: str | None, dest: str, fstype: str | None,
                 flags: int = 0, data: str | None = None, source_in_root: bool = False) -> None:
        from . import inroot

        inroot.mount(root, source, dest, fstype, flags, data, source_in_root=source_in_root)

    def readonly_recursive_in(self, root: str, dest: str, attr_set: int) -> None:
        from . import inroot

        inroot.make_readonly_recursive(root, dest, attr_set)

    def setrlimit(self, resource_id: int, soft: int, hard: int) -> None:
        resource.setrlimit(resource_id, (soft, hard))

    def setgroups(self, gids: list[int]) -> None:
        _named("setgroups", os.setgroups, gids)

    def setgid(self, gid: int) -> None:
        _named("setresgid", os.setresgid, gid, gid, gid)

    def setuid(self, uid: int) -> None:
        _named("setresuid", os.setresuid, uid, uid, uid)

    def set_keepcaps(self, on: bool) -> None:
        import _prctl

        # what python-prctl's set_keepcaps calls, without importing its wrapper (~1.7 ms)
        _prctl.prctl(_prctl.PR_SET_KEEPCAPS, on)

    def capbset_drop(self, cap: int) -> None:
        prctl(PR_CAPBSET_DROP, cap)

    def capset(self, effective: list[int], permitted: list[int], inheritable: list[int]) -> None:
        """capset(2) through python-prctl: exactly these sets, every other cap cleared."""
        import _prctl

        every = range(_prctl.CAP_LAST_CAP + 1)
        effective, permitted, inheritable = (
            [c for c in caps if c in every] for caps in (effective, permitted, inheritable))
        _prctl.set_caps(effective, permitted, inheritable,
                        [c for c in every if c not in effective],
                        [c for c in every if c not in permitted],
                        [c for c in every if c not in inheritable])

    def raise_effective(self) -> None:
        """Effective := permitted (always allowed), read from /proc/self/status CapPrm."""
        with open("/proc/self/status") as f:
            prm = next(int(line.split()[1], 16) for line in f if line.startswith("CapPrm:"))
        bits = [c for c in range(64) if prm >> c & 1]
        self.capset(bits, bits, [])

    def ambient_raise(self, cap: int) -> None:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)

    def clear_ambient(self) -> None:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)

    def set_no_new_privs(self) -> None:
        prctl(PR_SET_NO_NEW_PRIVS, 1)

    def open_pty(self) -> tuple[int, int]:
        from .terminal import open_pty

        return open_pty()

    def set_console_size(self, fd: int, height: int, width: int) -> None:
        from .terminal import set_size

        set_size(fd, height, width)

    def make_controlling_tty(self, slave: int) -> None:
        from .terminal import make_controlling_tty

        make_controlling_tty(slave)

    def set_link_up(self, name: str) -> None:
        """SIOCSIFFLAGS |= IFF_UP on an interface of our network namespace (lo)."""
        import fcntl
        import socket
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            req = struct.pack("16sH14x", name.encode(), 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, 0x8913, req))[1]  # SIOCGIFFLAGS
            fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", name.encode(), flags | 1))

    def close(self, fd: int) -> None:
        os.close(fd)

    def set_not_dumpable(self) -> None:
        set_not_dumpable()

    def close_fds_except(self, keep: set[int]) -> None:
        """Close every fd not in ``keep``: nothing of the runtime may leak into the container."""
        from . import inroot

        inroot.forget()
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listdir fd itself, already gone

    def wait_for_start(self, fifo_fd: int) -> None:
        """Open the exec fifo for writing through its O_PATH fd: blocks until start() reads it."""
        fd = _named("open", os.open, f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        os.close(fifo_fd)

    def reset_signals(self) -> None:
        """Every disposition back to default, nothing blocked: an ignored signal survives
        execve, and the caller's (python ignores SIGPIPE and SIGXFSZ; a shim, SIGINT and
        SIGHUP) must not become the container's."""
        import signal

        for sig in signal.valid_signals():
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # signals the kernel reserves (the real-time ones libc uses)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def execve(self, path: str, args: list[str], env: dict[str, str]) -> None:
        _named("execve", os.execve, path, args, env)

    def seccomp_program(self, profile: dict, cache_dir: str | None) -> bytes:
        from . import seccomp

        return seccomp.program(profile, cache_dir)

    def seccomp(self, program: bytes) -> None:
        seccomp_filter(program)

    # queries (not recorded by the fake)
    def exists_in(self, root: str, path: str, follow: bool = True) -> bool:
        from . import inroot

        return inroot.exists(root, path, follow=follow)

    def is_dir_in(self, root: str, path: str) -> bool:
        from . import inroot

        return inroot.is_dir(root, path)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def access(self, path: str, mode: int) -> bool:
        return os.access(path, mode)
