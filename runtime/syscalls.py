"""The one cffi module: the Linux syscalls Python 3.11 lacks, and the ``Syscalls`` seam.

cffi in ABI mode (``ffi.dlopen(None)`` opens the libc already in the
process) needs no compiler at install time.  The library is loaded on first
use, not at import, because start-up time is a feature: ``import
pyctr.runtime`` must stay cheap.

Every wrapper raises ``OSError(errno, strerror, path)`` with a ``.syscall``
attribute naming the call, so an init step can report
``mount /proc: EPERM`` and not a bare exit status.

The ``Syscalls`` seam the init pipeline calls through lives in seam.py.
"""

from __future__ import annotations

import os
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

PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# openat2(2) and mount_setattr(2) (linux/openat2.h, linux/mount.h)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

_PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 41, "arm64": 41}
# syscalls added after 5.0 share one number on every architecture
_OPENAT2_NR = 437
_MOUNT_SETATTR_NR = 442

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


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2): openat with ``resolve`` rules the kernel enforces during the lookup.

    RESOLVE_IN_ROOT resolves ``path`` as if ``dirfd`` were the root: "..",
    absolute paths and absolute symlinks all stay below it, with no window
    for a concurrent rename to escape.  EAGAIN if a rename raced the
    lookup (retry); Linux 5.6+.
    """
    ffi, lib = _load()
    how = ffi.new("uint64_t[3]", [flags, 0, resolve])
    ret = lib.syscall(ffi.cast("long", _OPENAT2_NR), ffi.cast("int", dirfd), _cstr(path), how,
                      ffi.cast("size_t", 24))
    return _check(ret, "openat2", path)


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
    """mount_setattr(2): change mount attributes; with AT_RECURSIVE, of a whole subtree.

    The one way to make every submount of an rbind read-only: a
    MS_REMOUNT|MS_BIND remount only changes the top mount.  Linux 5.12+.
    """
    ffi, lib = _load()
    attr = ffi.new("uint64_t[4]", [attr_set, attr_clr, 0, 0])
    ret = lib.syscall(ffi.cast("long", _MOUNT_SETATTR_NR), ffi.cast("int", dirfd), _cstr(path),
                      ffi.cast("unsigned int", flags), attr, ffi.cast("size_t", 32))
    _check(ret, "mount_setattr", path)


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


def seccomp_filter(program: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): load a BPF program (8-byte instructions).

    The filter applies to this thread and everything it execs, and cannot
    be removed.  Needs no_new_privs or CAP_SYS_ADMIN (EACCES otherwise);
    EINVAL for a malformed program.
    """
    ffi, _lib = _load()
    insns = ffi.from_buffer(program)
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}, little-endian
    fprog = ffi.new("uint64_t[2]", [len(program) // 8, int(ffi.cast("uintptr_t", insns))])
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, int(ffi.cast("uintptr_t", fprog)))


def set_not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: /proc/PID/exe, mem and environ refuse everyone without CAP_SYS_PTRACE.

    Until execve the container's init IS the host's python binary; a process
    in the container that could open /proc/PID/exe could overwrite it
    (CVE-2019-5736).  execve resets the flag for the container's command.
    """
    prctl(PR_SET_DUMPABLE, 0)
