"""The one cffi module: the Linux syscalls Python 3.11 lacks, and the ``Syscalls`` seam.

cffi in ABI mode (``ffi.dlopen(None)`` opens the libc already in the
process) needs no compiler at install time.  The library is loaded on first
use, not at import, because start-up time is a feature: ``import
pyctr.runtime`` must stay cheap.

Every wrapper raises ``OSError(errno, strerror, path)`` with a ``.syscall``
attribute naming the call, so an init step can report
``mount /proc: EPERM`` and not a bare exit status.

``Syscalls`` is the seam the init pipeline calls through: the real one
below, and ``pyctr.runtime.fake.RecordingSyscalls`` which records the calls
so unit tests assert the exact order of steps without root.
"""

from __future__ import annotations

import os
import resource
from typing import Any

# ---- constants (linux/sched.h, linux/mount.h) ------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_FORCE = 1
MNT_DETACH = 2

PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 41, "arm64": 41}

_lib: Any = None
_ffi: Any = None


def _load() -> tuple[Any, Any]:
    """Open libc through cffi once, on first use.

    The declarations live in runtime/_ffi_build.py and were compiled ahead
    of time into _libc_ffi.py (out-of-line ABI mode: no pycparser at start,
    no C compiler at install).  Should that module not load with the cffi
    installed, parse the same declarations in-line, ~30 ms slower.
    """
    global _lib, _ffi
    if _lib is None:
        try:
            from pyctr.runtime._libc_ffi import ffi
        except Exception:  # noqa: BLE001 - a cffi that rejects the module: fall back
            import cffi
            from pyctr.runtime._ffi_build import CDEF

            ffi = cffi.FFI()
            ffi.cdef(CDEF)
        _lib = ffi.dlopen(None)
        _ffi = ffi
    return _ffi, _lib


def _check(ret: int, syscall: str, path: str | None = None) -> int:
    if ret == -1:
        err = _ffi.errno
        exc = OSError(err, os.strerror(err), path) if path is not None else OSError(
            err, os.strerror(err))
        exc.syscall = syscall  # type: ignore[attr-defined]
        raise exc
    return ret


def _cstr(value: str | None) -> Any:
    return _ffi.NULL if value is None else _ffi.new("char[]", os.fsencode(value))


def unshare(flags: int) -> None:
    """unshare(2): move the caller into new namespaces given by CLONE_NEW* ``flags``.

    Needs CAP_SYS_ADMIN (except CLONE_NEWUSER).  CLONE_NEWPID does not move
    the caller: only its next child becomes PID 1 of the new namespace.
    EINVAL if the caller is multithreaded and asks for CLONE_NEWUSER.
    """
    _load()
    _check(_lib.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0, path: str | None = None) -> None:
    """setns(2): join the namespace ``fd`` refers to (an open /proc/PID/ns/* or nsfs bind mount).

    ``nstype`` 0 accepts any kind, else it must match (EINVAL otherwise).
    Needs CAP_SYS_ADMIN in the target's owning user namespace; joining a
    PID namespace only affects children, like unshare.
    """
    _load()
    _check(_lib.setns(fd, nstype), "setns", path)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2): attach ``source`` of ``fstype`` at ``target``; MS_BIND/MS_REMOUNT change the meaning.

    ``target`` must exist.  A bind mount ignores ``fstype`` and ``data``;
    making it read-only needs a second call with MS_REMOUNT|MS_BIND|MS_RDONLY.
    Propagation flags (MS_PRIVATE, MS_SLAVE, MS_SHARED) with MS_REC apply
    to a whole subtree and take no other flags.  Needs CAP_SYS_ADMIN.
    """
    _load()
    data_c = _cstr(data)
    _check(_lib.mount(_cstr(source), _cstr(target), _cstr(fstype), flags, data_c),
           "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2): detach the mount at ``target``; MNT_DETACH makes it lazy.

    EBUSY without MNT_DETACH when the mount is in use; EINVAL when ``target``
    is not a mount point.
    """
    _load()
    _check(_lib.umount2(_cstr(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make ``new_root`` the root of the caller's mount namespace.

    ``new_root`` must be a mount point (hence the rootfs bind onto itself)
    and not on the same mount as the current root; ``put_old`` must be at or
    under ``new_root``; the current root must not be shared (EINVAL).  glibc
    has no wrapper, so this is ``syscall(SYS_pivot_root)``.
    """
    ffi, lib = _load()
    nr = _PIVOT_ROOT_NR.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    ret = lib.syscall(ffi.cast("long", nr), _cstr(new_root), _cstr(put_old))
    _check(ret, "pivot_root", new_root)


def sethostname(name: str) -> None:
    """sethostname(2): set the hostname of the caller's UTS namespace.

    Needs CAP_SYS_ADMIN in the UTS namespace's user namespace; EINVAL if
    longer than 64 bytes.
    """
    _load()
    raw = name.encode()
    _check(_lib.sethostname(raw, len(raw)), "sethostname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2) for the options python-prctl lacks (PR_CAP_AMBIENT, PR_SET_CHILD_SUBREAPER)."""
    ffi, lib = _load()
    args = [ffi.cast("unsigned long", a) for a in (arg2, arg3, arg4, arg5)]
    return _check(lib.prctl(ffi.cast("int", option), *args), "prctl")


def set_child_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to us, not to host PID 1.

    The intermediate child of create() exits right after forking the
    container's init; as a subreaper the caller inherits the init and can
    waitpid() it for its exit status.
    """
    prctl(PR_SET_CHILD_SUBREAPER, 1)


# ---- the seam --------------------------------------------------------------

class Syscalls:
    """The real kernel, as the init pipeline sees it.

    Mutations go through methods so RecordingSyscalls can record them;
    ``exists``/``is_dir``/``stat`` are queries, not recorded by the fake.
    """

    @staticmethod
    def preload() -> None:
        """Import everything the init needs now: after pivot_root the host's Python is gone."""
        _load()
        import _prctl  # noqa: F401
        import prctl  # noqa: F401

        from . import terminal  # noqa: F401

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
        os.chdir(path)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        os.makedirs(path, mode, exist_ok=True)

    def touch(self, path: str) -> None:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))

    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def setrlimit(self, resource_id: int, soft: int, hard: int) -> None:
        resource.setrlimit(resource_id, (soft, hard))

    def setgroups(self, gids: list[int]) -> None:
        os.setgroups(gids)

    def setgid(self, gid: int) -> None:
        os.setresgid(gid, gid, gid)

    def setuid(self, uid: int) -> None:
        os.setresuid(uid, uid, uid)

    def set_keepcaps(self, on: bool) -> None:
        import prctl as _prctl

        _prctl.set_keepcaps(on)

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

    def close_fds_except(self, keep: set[int]) -> None:
        """Close every fd not in ``keep``: nothing of the runtime may leak into the container."""
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listdir fd itself, already gone

    def wait_for_start(self, fifo_fd: int) -> None:
        """Open the exec fifo for writing through its O_PATH fd: blocks until start() reads it."""
        fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        os.close(fifo_fd)

    def execve(self, path: str, args: list[str], env: dict[str, str]) -> None:
        os.execve(path, args, env)

    # queries (not recorded by the fake)
    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def access(self, path: str, mode: int) -> bool:
        return os.access(path, mode)
