"""The layer unpack policy against hand-made hostile and tricky tars.

Policy functions are pure and run without root; the unpack itself makes
device nodes, chowns and sets trusted.* xattrs, so those tests need root.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from pyctr.errors import ImageError
from pyctr.images.unpack import entry_components, hardlink_components, unpack_layer, whiteout_target


def make_tar(*entries: tuple) -> bytes:
    """entries: (name, kind, extra) with kind in file/dir/sym/link/chr/blk/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, *rest in entries:
            extra = rest[0] if rest else {}
            ti = tarfile.TarInfo(name)
            ti.mtime = extra.get("mtime", 1_600_000_000)
            ti.mode = extra.get("mode", 0o755 if kind == "dir" else 0o644)
            ti.uid = extra.get("uid", 0)
            ti.gid = extra.get("gid", 0)
            ti.pax_headers = extra.get("pax", {})
            data = None
            if kind == "file":
                data = extra.get("data", b"x")
                ti.size = len(data)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, extra["to"]
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, extra["to"]
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "blk":
                ti.type, ti.devmajor, ti.devminor = tarfile.BLKTYPE, 7, 42
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def unpack(tmp_path: Path, data: bytes, sub: str = "layer") -> Path:
    dest = tmp_path / sub
    unpack_layer(io.BytesIO(data), dest, layer="sha256:test")
    return dest


# ---- pure policy (no root) -------------------------------------------------

@pytest.mark.parametrize("name,parts", [
    ("a/b/c", ("a", "b", "c")), ("./a//b/", ("a", "b")), (".", ()), ("./", ()),
    ("a/./b", ("a", "b")), ("..foo/bar..", ("..foo", "bar..")),
])
def test_entry_components_accepts_names_inside_the_layer(name, parts):
    assert entry_components(name) == parts


@pytest.mark.parametrize("name,message", [
    ("../etc/passwd", 'layer breakout: entry "../etc/passwd" escapes the layer directory'),
    ("a/../../x", 'layer breakout: entry "a/../../x" escapes the layer directory'),
    ("a/..", 'layer breakout: entry "a/.." escapes the layer directory'),
    ("/etc/passwd", 'layer breakout: entry "/etc/passwd" is an absolute path'),
])
def test_entry_components_rejects_breakouts_naming_entry_and_layer(name, message):
    with pytest.raises(ImageError) as err:
        entry_components(name, "sha256:abc")
    assert message in err.value.message
    assert "(layer sha256:abc)" in err.value.message
    assert err.value.hint


def test_whiteout_target_classifies_names():
    assert whiteout_target(("a", ".wh.b"), "a/.wh.b") == "b"
    assert whiteout_target(("a", ".wh..wh..opq"), "a/.wh..wh..opq") == ""
    assert whiteout_target(("a", "b.wh.c"), "a/b.wh.c") is None
    assert whiteout_target((), ".") is None


@pytest.mark.parametrize("name,message", [
    ("a/.wh.", 'invalid whiteout: entry "a/.wh." names no file'),
    (".wh...", 'layer breakout: whiteout ".wh..." escapes the layer directory'),
])
def test_whiteout_target_rejects_bare_and_dotdot(name, message):
    with pytest.raises(ImageError, match=message):
        whiteout_target(entry_components(name), name)


@pytest.mark.parametrize("link", ["/etc/shadow", "../outside", "a/../../x"])
def test_hardlink_targets_outside_the_layer_are_rejected(link):
    with pytest.raises(ImageError, match=f'hardlink "x" points outside the layer to "{link}"'):
        hardlink_components("x", link)


def test_hardlink_inside_layer_ok():
    assert hardlink_components("x", "./bin/busybox") == ("bin", "busybox")


# ---- the unpack itself (root: chown, mknod, trusted xattrs) ----------------

@pytest.mark.root
def test_dotdot_entry_is_rejected_and_nothing_outside_written(tmp_path):
    data = make_tar(("ok", "file"), ("../escaped", "file"))
    with pytest.raises(ImageError, match='entry "../escaped" escapes the layer directory'):
        unpack(tmp_path, data)
    assert not (tmp_path / "escaped").exists()


@pytest.mark.root
def test_absolute_entry_is_rejected(tmp_path):
    with pytest.raises(ImageError, match='entry "/abs" is an absolute path'):
        unpack(tmp_path, make_tar(("/abs", "file")))


@pytest.mark.root
def test_write_through_planted_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = make_tar(("evil", "sym", {"to": str(outside)}), ("evil/pwned", "file"))
    with pytest.raises(ImageError, match='entry "evil/pwned" goes through symlink "evil"'):
        unpack(tmp_path, data)
    assert list(outside.iterdir()) == []


@pytest.mark.root
def test_relative_symlink_escape_is_refused_too(tmp_path):
    data = make_tar(("up", "sym", {"to": "../.."}), ("up/tmp/x", "file"))
    with pytest.raises(ImageError, match='goes through symlink "up"'):
        unpack(tmp_path, data)


@pytest.mark.root
def test_file_over_planted_symlink_replaces_the_link_not_its_target(tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep")
    data = make_tar(("f", "sym", {"to": str(target)}), ("f", "file", {"data": b"new"}))
    dest = unpack(tmp_path, data)
    assert target.read_text() == "keep"
    assert (dest / "f").read_bytes() == b"new" and not (dest / "f").is_symlink()


@pytest.mark.root
def test_hardlink_to_outside_is_rejected(tmp_path):
    with pytest.raises(ImageError, match='hardlink "h" points outside the layer to "/etc/passwd"'):
        unpack(tmp_path, make_tar(("h", "link", {"to": "/etc/passwd"})))


@pytest.mark.root
def test_hardlink_through_symlink_is_rejected(tmp_path):
    (tmp_path / "secret").write_text("s")
    data = make_tar(("d", "sym", {"to": str(tmp_path)}), ("h", "link", {"to": "d/secret"}))
    with pytest.raises(ImageError, match='entry "h" goes through symlink "d"'):
        unpack(tmp_path, data)


@pytest.mark.root
def test_hardlink_to_missing_file_is_rejected(tmp_path):
    with pytest.raises(ImageError, match='links to "nope" which is not in the layer'):
        unpack(tmp_path, make_tar(("h", "link", {"to": "nope"})))


@pytest.mark.root
def test_bare_whiteout_is_an_error(tmp_path):
    with pytest.raises(ImageError, match='invalid whiteout: entry "d/.wh." names no file'):
        unpack(tmp_path, make_tar(("d", "dir"), ("d/.wh.", "file")))


@pytest.mark.root
def test_whiteouts_become_overlay_whiteouts(tmp_path):
    data = make_tar(("d", "dir"), ("d/.wh..wh..opq", "file"), ("d/kept", "file"),
                    (".wh.gone", "file"), ("e", "dir"), ("e/x", "file"), (".wh.e", "file"))
    dest = unpack(tmp_path, data)
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"
    assert (dest / "d" / "kept").is_file()
    assert not (dest / "d" / ".wh..wh..opq").exists()
    for name in ("gone", "e"):  # a missing file, and one this layer made: both whited out
        st = os.lstat(dest / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (dest / ".wh.gone").exists()


@pytest.mark.root
def test_metadata_is_preserved(tmp_path):
    data = make_tar(
        ("bin", "dir", {"mtime": 1_500_000_000}),
        ("bin/su", "file", {"mode": 0o4755, "uid": 0, "gid": 0, "data": b"su"}),
        ("bin/owned", "file", {"uid": 1234, "gid": 4321, "mode": 0o2750}),
        ("tmp", "dir", {"mode": 0o1777}),
        ("bin/cap", "file", {"pax": {"SCHILY.xattr.user.note": "hello"}}),
        ("bin/link", "link", {"to": "bin/su"}),
        ("abs", "sym", {"to": "/usr/bin/env", "uid": 7, "mtime": 1_400_000_000}),
        ("dev/null", "chr", {"mode": 0o666}),
        ("run/fifo", "fifo", {"mode": 0o600}),
    )
    dest = unpack(tmp_path, data)
    su = os.lstat(dest / "bin/su")
    assert stat.S_IMODE(su.st_mode) == 0o4755
    owned = os.lstat(dest / "bin/owned")
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1234, 4321, 0o2750)
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    assert os.getxattr(dest / "bin/cap", "user.note") == b"hello"
    assert os.lstat(dest / "bin/link").st_ino == su.st_ino
    assert os.readlink(dest / "abs") == "/usr/bin/env"  # absolute symlinks kept as they are
    ab = os.lstat(dest / "abs")
    assert (ab.st_uid, int(ab.st_mtime)) == (7, 1_400_000_000)
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert int(os.lstat(dest / "bin").st_mtime) == 1_500_000_000  # set after its contents


@pytest.mark.root
def test_modes_and_owners_of_new_files_whatever_the_umask_and_setgid_dirs(tmp_path):
    """A new file is made with its mode and chowned only when it must be: these are the
    cases where skipping would be wrong (a umask taking bits, a setgid dir's group)."""
    data = make_tar(
        ("shared", "dir", {"mode": 0o2775, "gid": 50}),
        ("shared/root-file", "file", {"mode": 0o664}),  # would take the dir's group 50
        ("shared/sub/implied", "file", {"mode": 0o644}),  # sub/ inherits setgid
        ("plain", "dir"),
        ("plain/open", "file", {"mode": 0o666}),  # the umask below would take 0o022
        ("plain/exec", "file", {"mode": 0o755}),
        ("plain/sticky", "file", {"mode": 0o1644}),
    )
    old = os.umask(0o077)
    try:
        dest = unpack(tmp_path, data)
    finally:
        os.umask(old)

    def owner_mode(rel: str) -> tuple[int, int, int]:
        st = os.lstat(dest / rel)
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
    assert owner_mode("shared") == (0, 50, 0o2775)
    assert owner_mode("shared/root-file") == (0, 0, 0o664)
    assert os.lstat(dest / "shared/sub").st_mode & stat.S_ISGID  # the kernel's doing
    assert owner_mode("shared/sub/implied") == (0, 0, 0o644)
    assert owner_mode("plain/open") == (0, 0, 0o666)
    assert owner_mode("plain/exec") == (0, 0, 0o755)
    assert owner_mode("plain/sticky") == (0, 0, 0o1644)


@pytest.mark.root
def test_a_setgid_layer_root_and_a_default_acl_do_not_change_a_files_group_or_mode(tmp_path):
    """The kernel gives a new file the dir's group (setgid "./") or masks its mode with
    a default ACL (set by the layer itself) instead of the umask: pyctr sets both."""
    acl = struct.pack("<I", 2) + b"".join(  # u::rwx g::r-x o::--- (posix_acl_xattr)
        struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((1, 7), (4, 5), (0x20, 0)))
    data = make_tar(
        (".", "dir", {"mode": 0o2755, "gid": 50}),
        ("top", "file", {"mode": 0o644}),
        ("d", "dir", {"pax": {"SCHILY.xattr.system.posix_acl_default":
                              acl.decode("utf-8", "surrogateescape")}}),
        ("d/f", "file", {"mode": 0o644}),
    )
    dest = unpack(tmp_path, data)
    assert os.getxattr(dest / "d", "system.posix_acl_default") == acl
    root = os.lstat(dest)
    assert (root.st_gid, stat.S_IMODE(root.st_mode)) == (50, 0o2755)
    top = os.lstat(dest / "top")
    assert (top.st_uid, top.st_gid, stat.S_IMODE(top.st_mode)) == (0, 0, 0o644)
    f = os.lstat(dest / "d/f")
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (0, 0, 0o644)


@pytest.mark.root
def test_a_hardlink_replaces_what_is_there_unless_it_is_the_same_file(tmp_path):
    data = make_tar(("a", "file", {"data": b"target"}), ("b", "file", {"data": b"old"}),
                    ("b", "link", {"to": "a"}), ("c", "link", {"to": "a"}),
                    ("c", "link", {"to": "a"}))
    dest = unpack(tmp_path, data)
    ino = os.lstat(dest / "a").st_ino
    assert os.lstat(dest / "b").st_ino == ino and (dest / "b").read_bytes() == b"target"
    assert os.lstat(dest / "c").st_ino == ino and os.lstat(dest / "a").st_nlink == 3


@pytest.mark.root
def test_later_entries_replace_earlier_ones(tmp_path):
    data = make_tar(("a", "dir"), ("a/inner", "file"), ("a", "file", {"data": b"now a file"}),
                    ("b", "file"), ("b", "dir"), ("c", "file"), ("c", "sym", {"to": "b"}))
    dest = unpack(tmp_path, data)
    assert (dest / "a").read_bytes() == b"now a file"
    assert (dest / "b").is_dir() and not (dest / "b").is_symlink()
    assert os.readlink(dest / "c") == "b"


@pytest.mark.root
def test_returns_bytes_of_regular_files(tmp_path):
    data = make_tar(("a", "file", {"data": b"12345"}), ("b", "file", {"data": b"678"}))
    assert unpack_layer(io.BytesIO(data), tmp_path / "l") == 8


@pytest.mark.root
def test_garbage_is_an_invalid_layer(tmp_path):
    with pytest.raises(ImageError, match="invalid layer tar"):
        unpack_layer(io.BytesIO(b"\x01" * 1000), tmp_path / "l")
