"""Init steps that build the container's filesystem view, before and including pivot_root.

Every step runs in the container's new mount namespace, on paths inside the
rootfs that the kernel resolves there (``ctx.sys.*_in``, see inroot.py: the
image owns its symlinks and the host must stay out of reach), and only
through ``ctx.sys`` so the order is testable without root.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from pyctr.errors import ContainerInitError

from . import syscalls as sc
from .spec import DEFAULT_DEVICES

if TYPE_CHECKING:
    from .init import InitContext

# option -> (set flags, clear flags); everything else is fs-specific data
_FLAGS = {
    "defaults": (0, 0), "ro": (sc.MS_RDONLY, 0), "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0), "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0), "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0), "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0), "async": (0, sc.MS_SYNCHRONOUS),
    "dirsync": (sc.MS_DIRSYNC, 0), "remount": (sc.MS_REMOUNT, 0),
    "mand": (sc.MS_MANDLOCK, 0), "nomand": (0, sc.MS_MANDLOCK),
    "atime": (0, sc.MS_NOATIME), "noatime": (sc.MS_NOATIME, 0),
    "diratime": (0, sc.MS_NODIRATIME), "nodiratime": (sc.MS_NODIRATIME, 0),
    "relatime": (sc.MS_RELATIME, 0), "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0), "nostrictatime": (0, sc.MS_STRICTATIME),
    "bind": (sc.MS_BIND, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# flags a read-only remount of a bind mount must repeat, or the kernel clears them
_LOCKED = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RDONLY


def parse_options(options: list[str]) -> tuple[int, int, str | None]:
    """Mount options -> (flags, propagation flags, data string)."""
    flags = prop = 0
    data = []
    for opt in options:
        if opt in _FLAGS:
            on, off = _FLAGS[opt]
            flags = (flags | on) & ~off
        elif opt in PROPAGATION:
            prop |= PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, prop, ",".join(data) or None


def set_propagation(ctx: InitContext) -> None:
    """Make / private (or slave) so nothing we mount leaks back to the host's namespace."""
    wanted = ctx.spec.get("linux", {}).get("rootfsPropagation", "rprivate")
    flags = PROPAGATION[wanted]
    if flags & sc.MS_SHARED or flags & sc.MS_UNBINDABLE:
        flags = sc.MS_SLAVE | sc.MS_REC  # the requested mode is applied to the rootfs bind
    ctx.sys.mount(None, "/", None, flags)


def bind_rootfs(ctx: InitContext) -> None:
    """Bind the rootfs onto itself: pivot_root needs new_root to be a mount point."""
    ctx.sys.mount(ctx.rootfs, ctx.rootfs, None, sc.MS_BIND | sc.MS_REC)
    wanted = ctx.spec.get("linux", {}).get("rootfsPropagation", "rprivate")
    if PROPAGATION[wanted] & (sc.MS_SHARED | sc.MS_UNBINDABLE):
        ctx.sys.mount(None, ctx.rootfs, None, PROPAGATION[wanted])


def _make_target(ctx: InitContext, dest: str, as_dir: bool) -> None:
    """A mount point inside the rootfs: a directory, or an empty file for a file bind."""
    if ctx.sys.exists_in(ctx.rootfs, dest):
        return
    if as_dir:
        ctx.sys.mkdir_in(ctx.rootfs, dest)
    else:
        ctx.sys.touch_in(ctx.rootfs, dest)


def _host_cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, data) of the host's cgroup hierarchies under /sys/fs/cgroup."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _src, point, fstype, opts = line.split()[:4]
            if fstype in ("cgroup", "cgroup2") and point.startswith("/sys/fs/cgroup"):
                data = [o for o in opts.split(",") if o not in _FLAGS and o != "seclabel"]
                found.append((point, fstype, ",".join(data)))
    return found


def container_cgroup_mounts(host: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The hierarchies a v1/hybrid container sees: those with a controller.

    The runtime joins the container's cgroup in each v1 controller
    hierarchy, so there the cgroup namespace shows it as the root.  A named
    hierarchy (name=systemd) and a hybrid host's controller-less cgroup2
    mount hold no cgroup of the container's: mounted, they would show the
    caller's cgroup and the host's tree below it, so they are left out.
    """
    return [(point, fstype, data) for point, fstype, data in host
            if point != "/sys/fs/cgroup" and fstype == "cgroup"
            and not any(o.startswith("name=") for o in data.split(","))]


def _mount_cgroup(ctx: InitContext, dest: str, flags: int) -> None:
    """cgroup mounts: cgroup2 on a unified host; on v1/hybrid one mount per hierarchy on a tmpfs.

    Inside the new cgroup namespace each mount shows the container's own
    cgroup as the root (on v2 /sys/fs/cgroup/memory.max is the container's
    limit).  The tmpfs is made read-only after its hierarchies.
    """
    host = _host_cgroup_mounts()
    if any(point == "/sys/fs/cgroup" and fs == "cgroup2" for point, fs, _ in host):
        ctx.sys.mount_in(ctx.rootfs, "cgroup2", dest, "cgroup2", flags)
        return
    ctx.sys.mount_in(ctx.rootfs, "tmpfs", dest, "tmpfs", flags & ~sc.MS_RDONLY, "mode=755")
    for point, fstype, data in container_cgroup_mounts(host):
        sub = dest + point[len("/sys/fs/cgroup"):]
        _make_target(ctx, sub, True)
        ctx.sys.mount_in(ctx.rootfs, fstype, sub, fstype, flags, data or None)
    if flags & sc.MS_RDONLY:
        ctx.sys.mount_in(ctx.rootfs, None, dest, None,
                         sc.MS_REMOUNT | sc.MS_RDONLY | (flags & _LOCKED))


def _attrs(flags: int) -> int:
    """MS_* flags as the MOUNT_ATTR_* bits mount_setattr(2) takes."""
    pairs = ((sc.MS_RDONLY, sc.MOUNT_ATTR_RDONLY), (sc.MS_NOSUID, sc.MOUNT_ATTR_NOSUID),
             (sc.MS_NODEV, sc.MOUNT_ATTR_NODEV), (sc.MS_NOEXEC, sc.MOUNT_ATTR_NOEXEC))
    return sum(attr for ms, attr in pairs if flags & ms)


def mount_one(ctx: InitContext, m: dict) -> None:
    """One entry of spec.mounts: bind (with a read-only remount) or a filesystem.

    The destination is resolved inside the rootfs and mounted onto through
    /proc/self/fd (inroot.py): a symlink swapped in meanwhile cannot send
    the mount to the host.  An rbind's flags go to every submount too.
    """
    flags, prop, data = parse_options(m.get("options", []))
    fstype = m.get("type") or None
    dest = m["destination"]
    if fstype == "bind" or flags & sc.MS_BIND:
        source = os.path.join(ctx.bundle, m.get("source", ""))
        if not os.path.exists(source):
            raise ContainerInitError(f"bind source {source} does not exist", syscall="mount",
                                     path=source, errno=2,
                                     hint="bind mount sources are host paths")
        _make_target(ctx, dest, os.path.isdir(source))
        ctx.sys.mount_in(ctx.rootfs, source, dest, None, sc.MS_BIND | (flags & sc.MS_REC))
        extra = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra:
            ctx.sys.mount_in(ctx.rootfs, None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | extra)
            if flags & sc.MS_REC and _attrs(extra):
                ctx.sys.readonly_recursive_in(ctx.rootfs, dest, _attrs(extra))
    elif fstype == "cgroup":
        _make_target(ctx, dest, True)
        _mount_cgroup(ctx, dest, flags)
    else:
        _make_target(ctx, dest, True)
        ctx.sys.mount_in(ctx.rootfs, m.get("source") or fstype, dest, fstype, flags, data)
    if prop:
        ctx.sys.mount_in(ctx.rootfs, None, dest, None, prop)


def mount_spec_mounts(ctx: InitContext) -> None:
    """/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys (+cgroup), binds, tmpfs — spec order."""
    for m in ctx.spec.get("mounts", []):
        ctx.mount = m["destination"]
        mount_one(ctx, m)
    ctx.mount = None


def create_devices(ctx: InitContext) -> None:
    """mknod the default and spec devices in the /dev tmpfs; bind the host's if mknod fails."""
    wanted = {d["path"]: d for d in DEFAULT_DEVICES}
    for dev in ctx.spec.get("linux", {}).get("devices", []):
        wanted[dev["path"]] = dev
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    for path, dev in wanted.items():
        if ctx.sys.exists_in(ctx.rootfs, path):
            continue
        mode = dev.get("fileMode", 0o666) & 0o7777
        try:
            ctx.sys.mknod_in(ctx.rootfs, path, kinds[dev["type"]] | mode,
                             os.makedev(dev.get("major", 0), dev.get("minor", 0)),
                             dev.get("uid", 0), dev.get("gid", 0))
        except PermissionError:
            # no CAP_MKNOD (e.g. a user namespace): bind the host's node instead
            ctx.sys.touch_in(ctx.rootfs, path)
            ctx.sys.mount_in(ctx.rootfs, path, path, None, sc.MS_BIND)


DEV_SYMLINKS = [
    ("pts/ptmx", "/dev/ptmx"),
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
]


def dev_symlinks(ctx: InitContext) -> None:
    """ptmx -> pts/ptmx (the container's own devpts), fd and stdio links, core if kcore exists."""
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    for target, name in links:
        if name != "/dev/ptmx" and ctx.sys.exists_in(ctx.rootfs, name, follow=False):
            continue
        ctx.sys.symlink_in(ctx.rootfs, target, name, replace=name == "/dev/ptmx")


def masked_paths(ctx: InitContext) -> None:
    """Hide kernel files: /dev/null over files, an empty read-only tmpfs over dirs; skip missing."""
    for p in ctx.spec.get("linux", {}).get("maskedPaths", []):
        ctx.mount = p
        if not ctx.sys.exists_in(ctx.rootfs, p):
            continue
        if ctx.sys.is_dir_in(ctx.rootfs, p):
            ctx.sys.mount_in(ctx.rootfs, "tmpfs", p, "tmpfs", sc.MS_RDONLY)
        else:
            ctx.sys.mount_in(ctx.rootfs, "/dev/null", p, None, sc.MS_BIND, source_in_root=True)
    ctx.mount = None


def readonly_paths(ctx: InitContext) -> None:
    """Bind each path onto itself, then remount the bind read-only (a bind ignores MS_RDONLY)."""
    for p in ctx.spec.get("linux", {}).get("readonlyPaths", []):
        ctx.mount = p
        if not ctx.sys.exists_in(ctx.rootfs, p):
            continue
        ctx.sys.mount_in(ctx.rootfs, p, p, None, sc.MS_BIND | sc.MS_REC, source_in_root=True)
        ctx.sys.mount_in(ctx.rootfs, None, p, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
                         | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    ctx.mount = None


def pivot_root(ctx: InitContext) -> None:
    """pivot_root(".", ".") then detach the old root.

    With both arguments ".", the old root is stacked on top of the new one at
    "/"; it needs no put_old directory (a read-only rootfs has none to
    create).  Making it a slave first keeps the lazy unmount from
    propagating to the host; umount2(".", MNT_DETACH) then drops it, and
    the host's filesystem is unreachable.
    """
    ctx.sys.chdir(ctx.rootfs)
    ctx.sys.pivot_root(".", ".")
    ctx.sys.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
    ctx.sys.umount(".", sc.MNT_DETACH)
    ctx.sys.chdir("/")


def readonly_root(ctx: InitContext) -> None:
    """root.readonly: remount the rootfs bind read-only (after everything is mounted on it)."""
    if ctx.spec["root"].get("readonly"):
        ctx.sys.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
