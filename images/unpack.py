"""Safe layer unpack: a per-entry policy, with OCI whiteouts turned into overlayfs ones.

A layer is untrusted input that root unpacks.  tarfile's extraction filters
are not enough (the 'data' filter rejects the absolute symlinks real images
ship, and older Pythons lack filters), so every entry goes through our own
policy: no ``..``, no absolute names, every parent directory opened
component by component with O_NOFOLLOW from the layer root (so a symlink
planted by an earlier entry is never written through), hardlinks only to
files already inside the layer.  Symlink *targets* are kept as they are:
they are resolved later, inside the container's root.

Whiteouts follow the OCI image spec and become what overlayfs reads:
``.wh.NAME`` → a char device 0:0 named NAME, ``.wh..wh..opq`` → the xattr
trusted.overlay.opaque=y on the directory.  Other ``.wh..wh.*`` names are
AUFS bookkeeping (``.wh..wh.plnk/`` hardlink dirs): skipped, as docker
does.  A ``.wh.`` prefix on a directory component is refused: it would
become a real directory named like a whiteout.

Extended attributes from the tar (SCHILY.xattr.*) are applied only from an
allowlist: user.*, security.capability and the POSIX ACLs.  Everything else
is dropped, not refused: trusted.overlay.* would forge whiteouts, opaque
dirs and redirects in the overlay, security.selinux labels would be this
host's policy, yet layers built on SELinux hosts carry them harmlessly.
user.* goes only on files and directories (the kernel's rule, as tar
skips them on symlinks).  An allowed xattr the kernel refuses is an error.

``unpack_layer`` reads a plain tar: the caller detected and undid the
compression once (layers.py), so a tar is never decompressed twice.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from pyctr.errors import ImageError

from .tarstream import TarReader

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
XATTR_PAX_PREFIX = "SCHILY.xattr."
XATTR_ALLOWED = ("security.capability", "system.posix_acl_access", "system.posix_acl_default")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_CACHED_DIRS = 256


def _in_layer(layer: str | None) -> str:
    return f" (layer {layer})" if layer else ""


def entry_components(name: str, layer: str | None = None) -> tuple[str, ...]:
    """The path components of a tar entry; refuse any name that leaves the layer."""
    if name.startswith("/"):
        raise ImageError(f'layer breakout: entry "{name}" is an absolute path{_in_layer(layer)}',
                         path=layer, hint="layer entries must be relative; the image is unsafe")
    parts = tuple(p for p in name.split("/") if p and p != ".")
    if ".." in parts:
        raise ImageError(
            f'layer breakout: entry "{name}" escapes the layer directory{_in_layer(layer)}',
            path=layer, hint="the image is unsafe: do not use it")
    return parts


def is_aufs_metadata(parts: tuple[str, ...]) -> bool:
    """``.wh..wh.*`` names other than the opaque marker: AUFS bookkeeping, not layer content."""
    return any(p.startswith(WHITEOUT_META_PREFIX) and p != OPAQUE_MARKER for p in parts)


def whiteout_target(parts: tuple[str, ...], name: str, layer: str | None = None) -> str | None:
    """For ``.wh.NAME`` the NAME it hides, '' for an opaque marker, None for a normal entry."""
    if any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
        raise ImageError(f'invalid whiteout: entry "{name}" has a whiteout in a directory name'
                         f"{_in_layer(layer)}", path=layer,
                         hint="whiteouts are files; the image is malformed or hostile")
    base = parts[-1] if parts else ""
    if not base.startswith(WHITEOUT_PREFIX):
        return None
    if base == OPAQUE_MARKER:
        return ""
    hidden = base[len(WHITEOUT_PREFIX):]
    if not hidden:
        raise ImageError(f'invalid whiteout: entry "{name}" names no file{_in_layer(layer)}',
                         path=layer, hint='a whiteout is ".wh.<name>" or ".wh..wh..opq"')
    if hidden in (".", ".."):
        raise ImageError(
            f'layer breakout: whiteout "{name}" escapes the layer directory{_in_layer(layer)}',
            path=layer, hint="the image is unsafe: do not use it")
    return hidden


def hardlink_components(member_name: str, linkname: str,
                        layer: str | None = None) -> tuple[str, ...]:
    """A hardlink's target inside the layer; absolute or ``..`` targets point outside it."""
    if linkname.startswith("/") or ".." in linkname.split("/"):
        raise ImageError(f'layer breakout: hardlink "{member_name}" points outside the layer '
                         f'to "{linkname}"{_in_layer(layer)}',
                         path=layer, hint="the image is unsafe: do not use it")
    parts = entry_components(linkname, layer)
    if not parts:
        raise ImageError(f'invalid hardlink: entry "{member_name}" links to the layer root'
                         f'{_in_layer(layer)}', path=layer, hint="the image is malformed")
    return parts


class _Unpacker:
    """The impure shell: applies entries relative to cached directory fds."""

    def __init__(self, dest: Path, layer: str | None) -> None:
        self.layer = layer
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self.dirs: dict[tuple[str, ...], int] = {(): self.root_fd}
        self.dir_times: list[tuple[tuple[str, ...], int]] = []
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.privileged = self.uid == 0
        self.umask = _umask()
        # per dir: do the files made in it come out as open() was told (our uid and
        # gid, mode & ~umask)?  See _plain.
        self.plain: dict[tuple[str, ...], bool] = {}
        self.size = 0

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    # -- directories, opened without ever following a symlink ------------
    def _evict(self) -> None:
        if len(self.dirs) > _MAX_CACHED_DIRS:
            for key, fd in list(self.dirs.items()):
                if key:
                    os.close(fd)
                    del self.dirs[key]

    def _forget(self, parts: tuple[str, ...]) -> None:
        n = len(parts)
        for key in [k for k in self.dirs if k[:n] == parts and k]:
            os.close(self.dirs.pop(key))
        for key in [k for k in self.plain if k[:n] == parts]:
            del self.plain[key]

    def _plain(self, parts: tuple[str, ...], fd: int) -> bool:
        """Whether a file made in this dir gets our uid and gid and ``mode & ~umask``.

        Its group is the dir's when the dir is setgid or the filesystem is mounted
        ``grpid``: both are fine if the dir's group is ours.  A default ACL masks the
        mode instead of the umask: then the mode is set explicitly.  Read once per dir
        (one fstat, one getxattr) and forgotten when an entry changes the dir.
        """
        known = self.plain.get(parts)
        if known is None:
            try:
                os.getxattr(fd, "system.posix_acl_default")
                acl = True
            except OSError as exc:
                acl = exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP)
            known = self.plain[parts] = not acl and os.fstat(fd).st_gid == self.gid
        return known

    def dir_fd(self, parts: tuple[str, ...], entry: str, create: bool = True) -> int | None:
        fd = self.dirs.get(parts)
        if fd is not None:
            return fd
        parent = self.dir_fd(parts[:-1], entry, create)
        if parent is None:
            return None
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(name, 0o755, dir_fd=parent)  # implied parent, as tar does
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            what = "symlink" if stat.S_ISLNK(
                os.lstat(name, dir_fd=parent).st_mode) else "non-directory"
            raise ImageError(
                f'layer breakout: entry "{entry}" goes through {what} "{"/".join(parts)}"'
                f"{_in_layer(self.layer)}",
                path=self.layer, hint="an earlier entry planted it; the image is unsafe") from None
        self.dirs[parts] = fd
        return fd

    def _lstat(self, name: str, pfd: int) -> os.stat_result | None:
        try:
            return os.lstat(name, dir_fd=pfd)
        except FileNotFoundError:
            return None

    def _remove(self, parts: tuple[str, ...], pfd: int, st: os.stat_result | None) -> None:
        """A later entry replaces what is there (OCI: non-dir over dir included)."""
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            self._forget(parts)
            shutil.rmtree(parts[-1], dir_fd=pfd)
        else:
            os.unlink(parts[-1], dir_fd=pfd)

    # -- metadata ---------------------------------------------------------
    def _chown(self, fn, *args, **kw) -> None:
        try:
            fn(*args, **kw)
        except PermissionError:
            if self.privileged:
                raise  # unprivileged unpack keeps the caller's owner, as tar does

    def _xattrs(self, member: tarfile.TarInfo, target: int | str, *, user_ok: bool) -> None:
        """The allowlisted xattrs (see the module docstring); the rest are dropped."""
        for key, value in member.pax_headers.items():
            if not key.startswith(XATTR_PAX_PREFIX):
                continue
            name = key[len(XATTR_PAX_PREFIX):]
            if not (user_ok if name.startswith("user.") else name in XATTR_ALLOWED):
                continue
            try:
                os.setxattr(target, name, value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=isinstance(target, int))
            except OSError as exc:
                raise ImageError(
                    f'cannot set xattr {name} on "{member.name}": {exc.strerror}'
                    f"{_in_layer(self.layer)}", path=self.layer, errno=exc.errno,
                    hint="the layer carries an invalid value, or the store's filesystem "
                         "lacks xattr support") from None

    def _meta_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        # chown first: it clears setuid/setgid bits and file capabilities
        self._chown(os.fchown, fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        self._xattrs(member, fd, user_ok=True)  # only dirs and regular files come here

    def _meta_new_file(self, fd: int, member: tarfile.TarInfo, plain: bool) -> None:
        """_meta_fd for a file just created with ``member.mode & 0o777`` in a dir that is
        ``plain`` (see _plain): most files need neither a chown (our file, as it should
        be) nor a chmod (no special bits, none taken by the umask), and a layer is
        mostly files."""
        mode = member.mode & 0o7777
        if not plain or (member.uid, member.gid) != (self.uid, self.gid):
            self._chown(os.fchown, fd, member.uid, member.gid)
        if not plain or mode & 0o7000 or mode & self.umask:
            os.fchmod(fd, mode)
        if member.pax_headers:
            self._xattrs(member, fd, user_ok=True)

    def _make(self, parts: tuple[str, ...], pfd: int, make, *args, **kw):
        """``make(*args, **kw)`` creates ``parts``; whatever is there already is replaced
        (a later entry wins, a non-dir over a dir included, as OCI says).  Trying first
        costs nothing when the name is free, which it nearly always is."""
        try:
            return make(*args, **kw)
        except FileExistsError:
            self._remove(parts, pfd, self._lstat(parts[-1], pfd))
            return make(*args, **kw)

    # -- entries ----------------------------------------------------------
    def apply(self, tar: TarReader, member: tarfile.TarInfo) -> None:
        self._evict()
        parts = entry_components(member.name, self.layer)
        if not parts:
            if member.isdir():  # "./": the layer root's own metadata
                self._meta_fd(self.root_fd, member)
                self.plain.pop((), None)
                self.dir_times.append(((), int(member.mtime * 1e9)))
            return
        if is_aufs_metadata(parts):
            return
        hidden = whiteout_target(parts, member.name, self.layer)
        pfd = self.dir_fd(parts[:-1], member.name)
        assert pfd is not None
        if hidden is not None:
            self._whiteout(parts, pfd, hidden, member)
            return
        base = parts[-1]
        mtime = int(member.mtime * 1e9)
        if member.isdir():
            try:
                os.mkdir(base, 0o700, dir_fd=pfd)
            except FileExistsError:
                existing = self._lstat(base, pfd)
                if existing is None or not stat.S_ISDIR(existing.st_mode):
                    self._remove(parts, pfd, existing)
                    os.mkdir(base, 0o700, dir_fd=pfd)
            fd = self.dir_fd(parts, member.name)
            assert fd is not None
            self._meta_fd(fd, member)
            self.plain.pop(parts, None)  # its group, mode or ACL may have changed
            self.dir_times.append((parts, mtime))
        elif member.isreg():
            fd = self._make(parts, pfd, os.open, base, _FILE_FLAGS, member.mode & 0o777,
                            dir_fd=pfd)
            try:
                for data in tar.data():  # views of the stream's chunks: no copy
                    while data:
                        data = data[os.write(fd, data):]
                self._meta_new_file(fd, member, self._plain(parts[:-1], pfd))
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
            self.size += member.size
        elif member.issym():
            self._make(parts, pfd, os.symlink, member.linkname, base, dir_fd=pfd)  # target as is
            self._chown(os.chown, base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            # no xattrs: the kernel takes neither user.* nor ACLs on a symlink
            os.utime(base, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)
        elif member.islnk():
            self._hardlink(parts, pfd, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() \
                else stat.S_IFIFO
            self._make(parts, pfd, os.mknod, base, kind | 0o600,
                       os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0,
                       dir_fd=pfd)
            self._chown(os.chown, base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(base, member.mode & 0o7777, dir_fd=pfd)  # we just made it: not a symlink
            self._xattrs(member, f"/proc/self/fd/{pfd}/{base}", user_ok=False)
            os.utime(base, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)
        else:
            raise ImageError(f'unsupported tar entry type {member.type!r} for "{member.name}"'
                             f"{_in_layer(self.layer)}", path=self.layer,
                             hint="layers hold files, dirs, links, devices and fifos only")

    def _hardlink(self, parts: tuple[str, ...], pfd: int, member: tarfile.TarInfo) -> None:
        target = hardlink_components(member.name, member.linkname, self.layer)
        tfd = self.dir_fd(target[:-1], member.name, create=False)
        tst = self._lstat(target[-1], tfd) if tfd is not None else None
        if tst is None:
            raise ImageError(f'invalid hardlink: entry "{member.name}" links to "{member.linkname}"'
                             f" which is not in the layer{_in_layer(self.layer)}",
                             path=self.layer, hint="hardlink targets must come earlier in the layer")
        if stat.S_ISDIR(tst.st_mode):
            raise ImageError(f'invalid hardlink: entry "{member.name}" links to directory '
                             f'"{member.linkname}"{_in_layer(self.layer)}', path=self.layer,
                             hint="the image is malformed")
        try:
            os.link(target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileExistsError:
            existing = self._lstat(parts[-1], pfd)
            if existing is not None and \
                    (existing.st_ino, existing.st_dev) == (tst.st_ino, tst.st_dev):
                return  # already this file
            self._remove(parts, pfd, existing)
            os.link(target[-1], parts[-1], src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _whiteout(self, parts: tuple[str, ...], pfd: int, hidden: str,
                  member: tarfile.TarInfo) -> None:
        try:
            if hidden == "":
                os.setxattr(pfd, OPAQUE_XATTR, b"y")
                return
            self._remove(parts[:-1] + (hidden,), pfd, self._lstat(hidden, pfd))
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
            self._chown(os.chown, hidden, member.uid, member.gid, dir_fd=pfd,
                        follow_symlinks=False)
        except PermissionError as exc:
            raise ImageError(f'cannot make overlay whiteout for "{member.name}": {exc.strerror}'
                             f"{_in_layer(self.layer)}", path=self.layer, errno=exc.errno,
                             hint="whiteouts need root (a 0:0 device, trusted.* xattrs)") from None

    def finish(self) -> None:
        """Directory mtimes last, deepest first: creating their entries changed them."""
        for parts, mtime in reversed(self.dir_times):
            self._evict()
            try:
                fd = self.dir_fd(parts, "/".join(parts), create=False)
            except ImageError:
                continue  # replaced by a later entry of this layer
            if fd is not None:
                os.utime(fd, ns=(mtime, mtime))


def _umask() -> int:
    """This process's umask, read without setting it (os.umask sets it, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: every mode is set explicitly


def unpack_layer(stream: BinaryIO, dest: Path, *, layer: str | None = None) -> int:
    """Unpack one plain layer tar into ``dest``; return the bytes of its files.

    ``layer`` (a digest) only labels error messages.  On error ``dest`` is
    left as it is: the caller unpacks into a temp dir and removes it.
    """
    dest = Path(dest)
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    unpacker = _Unpacker(dest, layer)
    try:
        tar = TarReader(stream, layer)
        for member in tar:
            unpacker.apply(tar, member)
        unpacker.finish()
    finally:
        unpacker.close()
    return unpacker.size
