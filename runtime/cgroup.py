"""The container's cgroup, from the runtime's side (runc's job): create, join, freeze, remove.

``create`` (process.spawn) makes the cgroup named by linux.cgroupsPath and
writes linux.resources into it *before* forking; the intermediate child
moves itself into it before it unshares, so its CLONE_NEWCGROUP roots the cgroup
namespace at the container's own cgroup and PID 1 is born inside it (its
memory is charged from its first page).  On v1 every hierarchy is joined;
linux.resources.devices goes to the devices controller (deny all, then the
allow list), so on v1 the device cgroup is in force beside the seccomp
mknod rule.  cgroup v2 has no device controller — only an eBPF program
attached to the cgroup would do, which pyctr does not load — so on v2 the
seccomp rule and the /dev tmpfs are the device controls.

pyctr.cgroups is imported only here, and only for a spec that has a
cgroupsPath (``import pyctr.runtime`` stays light).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pyctr.errors import PyctrError, UserError

if TYPE_CHECKING:
    from pyctr.cgroups import Layout, Manager

_layout: Layout | None = None  # the host's layout, read once per process


def cgroups_path(spec: dict) -> str | None:
    """linux.cgroupsPath, which must be absolute (None when the spec has none)."""
    path = spec.get("linux", {}).get("cgroupsPath")
    if not path:
        return None
    if not isinstance(path, str) or not path.startswith("/"):
        raise UserError(f"config.json: linux.cgroupsPath must be an absolute path (got {path!r})",
                        path=str(path),
                        hint="runc nests a relative path under the caller's own cgroup, which "
                             "belongs to the machine here: name it from the hierarchy root, "
                             "e.g. /pyctr/<id>")
    return path


def open_path(path: str) -> Manager:
    """The Manager of ``path``; pyctr's parent is its first component."""
    global _layout
    from pyctr.cgroups import detect, open_manager

    if _layout is None:
        _layout = detect()
    return open_manager(path, _layout, owned_parents=(path.strip("/").split("/")[0],))


def _as_error(exc: BaseException, path: str) -> PyctrError:
    if isinstance(exc, PyctrError):
        if exc.step is None:
            exc.step = "cgroup"
        return exc
    if isinstance(exc, OSError):
        return PyctrError(f"cgroup {path}: {exc.strerror or exc}", step="cgroup", path=path,
                          errno=exc.errno, hint="cgroups need root and a mounted hierarchy")
    return PyctrError(f"cgroup {path}: {type(exc).__name__}: {exc}", step="cgroup", path=path,
                      hint="this is a bug in pyctr's runtime")


def setup(spec: dict) -> Manager | None:
    """Create the spec's cgroup and write its limits; on failure nothing is left behind.

    An existing cgroup is reused only when empty (runc's rule): one with
    processes belongs to another container, and delete would take it away.
    """
    path = cgroups_path(spec)
    if path is None:
        return None
    from pyctr.cgroups import Resources

    mgr: Manager | None = None
    try:
        mgr = open_path(path)
        if mgr.exists and mgr.pids():
            busy, mgr = mgr, None
            raise PyctrError(f"cgroup {path} is not empty: it holds pids {busy.pids()[:5]}",
                             step="cgroup", path=path, errno=errno.EBUSY,
                             hint="another container uses this linux.cgroupsPath: "
                                  "pick another path")
        res = Resources.from_oci(spec["linux"].get("resources"))
        mgr.create(res)
        mgr.apply(res)
        return mgr
    except BaseException as exc:  # cleaned up, then raised
        if mgr is not None:
            try:
                destroy(mgr)
            except PyctrError:
                pass  # the first error is the one to see
        if not isinstance(exc, Exception):
            raise
        raise _as_error(exc, path) from None


def join_self(mgr: Manager) -> None:
    """Move the calling process (the intermediate child, before it unshares) into the cgroup."""
    try:
        mgr.add_self()
    except (PyctrError, OSError) as exc:
        raise _as_error(exc, mgr.path) from None


def destroy(mgr: Manager) -> None:
    """Kill what is left (bounded wait, in the driver) and remove the cgroup; errors say why."""
    try:
        mgr.destroy()
    except (PyctrError, OSError) as exc:
        raise _as_error(exc, mgr.path) from None


def frozen(path: str) -> bool:
    """Whether the cgroup's freezer holds it (False when the cgroup is gone)."""
    try:
        mgr = open_path(path)
        return mgr.exists and mgr.frozen
    except (PyctrError, OSError):
        return False
