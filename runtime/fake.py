"""RecordingSyscalls: the ``Syscalls`` seam that records instead of acting.

Unit tests run the real init pipeline against it without root and assert
the exact sequence of mounts and privilege changes.  Queries (exists,
is_dir, stat, access) answer from a real directory tree (a test rootfs);
after pivot_root, container paths are mapped back into it.  Files that only
a kernel filesystem would provide (/proc/kcore, /sys/firmware) are declared
with ``present`` (container path -> is a directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .seam import Syscalls
from .securejoin import secure_join


class RecordingSyscalls(Syscalls):
    """Every mutating call appends ``(name, *args)`` to ``calls``; nothing touches the kernel."""

    def __init__(self, rootfs: str, present: dict[str, bool] | None = None) -> None:
        self.rootfs = rootfs
        self.present = {os.path.join(rootfs, p.lstrip("/")): d
                        for p, d in (present or {}).items()}
        self.calls: list[tuple[Any, ...]] = []
        self.pivoted = False
        self.created: set[str] = set()

    def _rec(self, *call: Any) -> None:
        self.calls.append(call)

    def _real(self, path: str) -> str:
        if self.pivoted and path.startswith("/"):
            return os.path.join(self.rootfs, path.lstrip("/"))
        return path

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    # recorded
    def mount(self, source, target, fstype, flags=0, data=None):  # type: ignore[override]
        self._rec("mount", source, target, fstype, flags, data)

    def umount(self, target, flags=0):  # type: ignore[override]
        self._rec("umount", target, flags)

    def pivot_root(self, new_root, put_old):  # type: ignore[override]
        self._rec("pivot_root", new_root, put_old)
        self.pivoted = True

    def unshare(self, flags):  # type: ignore[override]
        self._rec("unshare", flags)

    def setns(self, path, nstype):  # type: ignore[override]
        self._rec("setns", path, nstype)

    def sethostname(self, name):  # type: ignore[override]
        self._rec("sethostname", name)

    def chdir(self, path):  # type: ignore[override]
        self._rec("chdir", path)
        if self.pivoted and not os.path.isdir(self._real(path)):
            raise FileNotFoundError(2, "No such file or directory", path)

    def _in(self, root, path):
        return str(secure_join(Path(root), path))

    def mkdir_in(self, root, path):  # type: ignore[override]
        self._rec("mkdir", self._in(root, path))
        self.created.add(self._in(root, path))

    def touch_in(self, root, path):  # type: ignore[override]
        self._rec("touch", self._in(root, path))
        self.created.add(self._in(root, path))

    def mknod_in(self, root, path, mode, device, uid, gid):  # type: ignore[override]
        target = self._in(root, path)
        self._rec("mknod", target, mode, device)
        self._rec("chown", target, uid, gid)
        self._rec("chmod", target, mode & 0o7777)
        self.created.add(target)

    def symlink_in(self, root, target, path, replace=False):  # type: ignore[override]
        if replace and self.exists_in(root, path):
            self._rec("unlink", self._in(root, path))
        self._rec("symlink", target, self._in(root, path))

    def mount_in(self, root, source, dest, fstype, flags=0, data=None,  # type: ignore[override]
                 source_in_root=False):
        if source_in_root and source is not None:
            source = self._in(root, source)
        self._rec("mount", source, self._in(root, dest), fstype, flags, data)

    def readonly_recursive_in(self, root, dest, attr_set):  # type: ignore[override]
        self._rec("mount_setattr", self._in(root, dest), attr_set)

    def seccomp_program(self, profile, cache_dir):  # type: ignore[override]
        self._rec("seccomp_program", profile.get("defaultAction"), cache_dir)
        return b"bpf"

    def seccomp(self, program):  # type: ignore[override]
        self._rec("seccomp", program)

    def set_not_dumpable(self):  # type: ignore[override]
        self._rec("set_not_dumpable")

    def setrlimit(self, resource_id, soft, hard):  # type: ignore[override]
        self._rec("setrlimit", resource_id, soft, hard)

    def setgroups(self, gids):  # type: ignore[override]
        self._rec("setgroups", gids)

    def setgid(self, gid):  # type: ignore[override]
        self._rec("setgid", gid)

    def setuid(self, uid):  # type: ignore[override]
        self._rec("setuid", uid)

    def set_keepcaps(self, on):  # type: ignore[override]
        self._rec("set_keepcaps", on)

    def raise_effective(self):  # type: ignore[override]
        self._rec("raise_effective")

    def capbset_drop(self, cap):  # type: ignore[override]
        self._rec("capbset_drop", cap)

    def capset(self, effective, permitted, inheritable):  # type: ignore[override]
        self._rec("capset", effective, permitted, inheritable)

    def clear_ambient(self):  # type: ignore[override]
        self._rec("clear_ambient")

    def ambient_raise(self, cap):  # type: ignore[override]
        self._rec("ambient_raise", cap)

    def set_no_new_privs(self):  # type: ignore[override]
        self._rec("set_no_new_privs")

    def open_pty(self):  # type: ignore[override]
        self._rec("open_pty")
        return (100, 101)

    def set_console_size(self, fd, height, width):  # type: ignore[override]
        self._rec("set_console_size", fd, height, width)

    def make_controlling_tty(self, slave):  # type: ignore[override]
        self._rec("make_controlling_tty", slave)

    def set_link_up(self, name):  # type: ignore[override]
        self._rec("set_link_up", name)

    def close(self, fd):  # type: ignore[override]
        self._rec("close", fd)

    def close_fds_except(self, keep):  # type: ignore[override]
        self._rec("close_fds_except", sorted(keep))

    def reset_signals(self):  # type: ignore[override]
        self._rec("reset_signals")

    def wait_for_start(self, fifo_fd):  # type: ignore[override]
        self._rec("wait_for_start", fifo_fd)

    def execve(self, path, args, env):  # type: ignore[override]
        self._rec("execve", path, list(args))

    # queries, answered from the real tree
    def exists_in(self, root, path, follow=True):  # type: ignore[override]
        real = self._real(self._in(root, path)) if root == "/" else self._in(root, path)
        return real in self.created or real in self.present or os.path.lexists(real)

    def is_dir_in(self, root, path):  # type: ignore[override]
        real = self._in(root, path)
        return self.present[real] if real in self.present else os.path.isdir(real)

    def stat(self, path):  # type: ignore[override]
        return os.stat(self._real(path))

    def access(self, path, mode):  # type: ignore[override]
        return os.access(self._real(path), mode)
