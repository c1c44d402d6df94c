"""Files and mounts inside the rootfs, before pivot_root, that can never land on the host.

The image owns its symlinks, and until pivot_root the init still sees the
host: ``os.path.join(rootfs, "dev/ptmx")`` follows an image's ``/dev ->
/tmp/x`` onto the host, and a path checked with secure_join can be swapped
for a symlink before mount(2) uses it (CVE-2021-30465).  So every lookup
here is openat2(RESOLVE_IN_ROOT) from the rootfs, entries are created with
*at calls relative to a parent directory fd (mknodat, symlinkat, mkdirat and
O_CREAT|O_EXCL never follow the last component), and mounts go onto
``/proc/self/fd/N`` of an O_PATH fd checked to be under the rootfs — what
runc does.  Every OSError names its syscall.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from pyctr.errors import ContainerInitError

from . import syscalls as sc
from .securejoin import secure_join

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def _named(exc: OSError, syscall: str, path: str) -> OSError:
    if not getattr(exc, "syscall", None):
        exc.syscall = syscall  # type: ignore[attr-defined]
    exc.filename = path  # the path as the user wrote it, not a name relative to a dir fd
    exc.filename2 = None
    return exc


def relative(root: str, path: str) -> str:
    """``path`` with the image's symlinks resolved inside ``root``, relative to it ('' = root).

    Missing components are kept (callers create them); the walk through
    openat2 below confines whatever changes meanwhile.
    """
    rel = os.path.relpath(secure_join(Path(root), path), os.path.abspath(root))
    return "" if rel == "." else rel


_roots: dict[str, tuple[int, str]] = {}


def _root(root: str) -> tuple[int, str]:
    """(O_PATH fd, real path) of ``root``, opened once: the init makes dozens of lookups in it.

    The fds are close-on-exec; ``forget`` closes them (the close fds step).
    """
    found = _roots.get(root)
    if found is None:
        fd = os.open(root, _DIR)
        found = _roots[root] = (fd, os.readlink(f"/proc/self/fd/{fd}"))
    return found


def forget() -> None:
    """Close the cached root fds."""
    for fd, _ in _roots.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _roots.clear()


def open_in_root(root: str, path: str, flags: int = os.O_PATH) -> int:
    """An fd for ``path`` resolved as if ``root`` were "/" (no magic links); ENOENT if missing."""
    try:
        rfd = _root(root)[0]
        for _ in range(16):
            try:
                return sc.openat2(rfd, path.lstrip("/") or ".", flags | os.O_CLOEXEC,
                                  sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
            except BlockingIOError:  # EAGAIN: a rename raced the lookup
                continue
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)
    except OSError as exc:
        raise _named(exc, "openat2", os.path.join(root, path.lstrip("/"))) from None


def check_under(root: str, fd: int, path: str) -> str:
    """``/proc/self/fd/N`` for ``fd`` once the kernel says it is ``root`` or below it."""
    real = os.readlink(f"/proc/self/fd/{fd}")
    root = _root(root)[1]
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        raise ContainerInitError(f"{path} resolved to {real}, outside the rootfs {root}",
                                 syscall="openat2", path=path, errno=errno.EXDEV,
                                 hint="a path in the rootfs was swapped while the init ran")
    return f"/proc/self/fd/{fd}"


def exists(root: str, path: str, *, follow: bool = True) -> bool:
    """Whether ``path`` exists inside ``root``; without ``follow`` a dangling symlink counts."""
    parent, name = os.path.split(os.path.normpath("/" + path))
    if follow or name in ("", "..", "."):
        try:
            os.close(open_in_root(root, path))
            return True
        except OSError:
            return False
    try:
        fd = open_in_root(root, parent, _DIR)
    except OSError:
        return False
    try:
        os.lstat(name, dir_fd=fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def is_dir(root: str, path: str) -> bool:
    try:
        fd = open_in_root(root, path)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _parent(root: str, path: str) -> tuple[int, str]:
    """(fd of the parent dir, created if missing, last component) of ``path``."""
    parent, name = os.path.split(os.path.normpath("/" + path))
    try:
        return open_in_root(root, parent, _DIR), name
    except FileNotFoundError:
        mkdir(root, parent)
        return open_in_root(root, parent, _DIR), name


def mkdir(root: str, path: str, mode: int = 0o755) -> None:
    """mkdir -p inside ``root``, one mkdirat per missing component."""
    parent, name = os.path.split(os.path.normpath("/" + path))
    if name not in ("", ".", ".."):  # the usual case: only the last one is missing
        try:
            pfd = open_in_root(root, parent, _DIR)
        except OSError:
            pfd = -1
        if pfd != -1:
            try:
                os.mkdir(name, mode, dir_fd=pfd)
                return
            except FileExistsError:
                pass  # there already, or a dangling symlink to create the target of: walk
            except OSError as exc:
                raise _named(exc, "mkdirat", os.path.join(root, path.lstrip("/"))) from None
            finally:
                os.close(pfd)
    # relative() resolved the image's symlinks; walk it by fds, refusing any link that
    # appears meanwhile (O_NOFOLLOW) instead of following it
    fd = os.dup(_root(root)[0])
    done = root
    try:
        for part in [p for p in relative(root, path).split("/") if p]:
            done = os.path.join(done, part)
            call = "mkdirat"
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                call = "openat"
                nfd = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise _named(exc, call, done) from None
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)


def touch(root: str, path: str) -> None:
    """An empty file (a mount point for a file bind) unless something is there already."""
    fd, name = _parent(root, relative(root, path))  # a dangling link: create its target
    try:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=fd))
    except FileExistsError:
        pass
    except OSError as exc:
        raise _named(exc, "openat", os.path.join(root, path.lstrip("/"))) from None
    finally:
        os.close(fd)


def mknod(root: str, path: str, mode: int, device: int, uid: int, gid: int) -> None:
    """mknodat, then chmod (mknod's mode is filtered by the umask) and chown, never following."""
    host = os.path.join(root, path.lstrip("/"))
    fd, name = _parent(root, path)
    try:
        call = "mknodat"
        os.mknod(name, mode, device, dir_fd=fd)
        call = "fchownat"
        os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
        call = "chmod"
        node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        try:
            os.chmod(f"/proc/self/fd/{node}", mode & 0o7777)
        finally:
            os.close(node)
    except OSError as exc:
        raise _named(exc, call, host) from None
    finally:
        os.close(fd)


def symlink(root: str, target: str, path: str, *, replace: bool = False) -> None:
    """symlinkat in the resolved parent; ``replace`` unlinks what is there first."""
    host = os.path.join(root, path.lstrip("/"))
    fd, name = _parent(root, path)
    try:
        call = "unlinkat"
        if replace:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
        call = "symlinkat"
        os.symlink(target, name, dir_fd=fd)
    except OSError as exc:
        raise _named(exc, call, host) from None
    finally:
        os.close(fd)


def mount(root: str, source: str | None, dest: str, fstype: str | None, flags: int,
          data: str | None, *, source_in_root: bool = False) -> None:
    """mount(2) onto ``dest`` inside ``root`` through /proc/self/fd (and the source too if asked).

    Opened afresh for each mount: an fd opened before a mount still names
    the directory under it, not the new mount on top (a remount needs that).
    """
    fds = [open_in_root(root, dest)]
    try:
        target = check_under(root, fds[0], dest)
        if source_in_root and source is not None:
            fds.append(open_in_root(root, source))
            source = check_under(root, fds[1], source)
        sc.mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise _named(exc, "mount", os.path.join(root, dest.lstrip("/"))) from None
    finally:
        for fd in fds:
            os.close(fd)


def make_readonly_recursive(root: str, dest: str, attr_set: int) -> None:
    """mount_setattr(AT_RECURSIVE): the attributes on ``dest`` and every mount below it."""
    fd = open_in_root(root, dest)  # opened after the bind: the fd is on the new mount
    try:
        check_under(root, fd, dest)
        sc.mount_setattr(fd, "", sc.AT_EMPTY_PATH | sc.AT_RECURSIVE, attr_set)
    except OSError as exc:
        raise _named(exc, "mount_setattr", os.path.join(root, dest.lstrip("/"))) from None
    finally:
        os.close(fd)
