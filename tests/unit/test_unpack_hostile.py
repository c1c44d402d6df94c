"""Layer unpack against hostile xattrs, whiteout tricks and entries that reuse earlier ones.

All of these unpack for real (device nodes, trusted.* and security.*
xattrs, chown), so they need root.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from pyctr.errors import ImageError
from pyctr.images.unpack import entry_components, is_aufs_metadata, unpack_layer, whiteout_target
from tests.unit.test_unpack import make_tar, unpack

X = "SCHILY.xattr."
# vfs_cap_data revision 2, effective, permitted = CAP_NET_BIND_SERVICE (10)
CAP = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)


def pax_bytes(value: bytes) -> str:
    """A binary xattr value as tarfile's PAX writer takes it."""
    return value.decode("utf-8", "surrogateescape")


def xattrs(path: Path) -> set[str]:
    return set(os.listxattr(path, follow_symlinks=False))


# ---- pure policy ---------------------------------------------------------

@pytest.mark.parametrize("name", ["d/.wh..wh..opq/x", "a/.wh.b/c", ".wh.x/y"])
def test_whiteout_prefix_in_a_directory_name_is_refused(name):
    with pytest.raises(ImageError) as err:
        whiteout_target(entry_components(name), name, "sha256:l")
    assert err.value.message == (f'invalid whiteout: entry "{name}" has a whiteout in a '
                                 f'directory name (layer sha256:l)')
    assert err.value.hint


@pytest.mark.parametrize("name", [".wh..wh.plnk/123.456", ".wh..wh.aufs", ".wh..wh.orph/x",
                                  "d/.wh..wh.plnk"])
def test_aufs_metadata_entries_are_recognized(name):
    assert is_aufs_metadata(entry_components(name))


@pytest.mark.parametrize("name", ["d/.wh..wh..opq", ".wh.x", "a.wh..wh.b/c", "x"])
def test_whiteouts_and_plain_names_are_not_aufs_metadata(name):
    assert not is_aufs_metadata(entry_components(name))


# ---- xattrs ----------------------------------------------------------------

@pytest.mark.root
def test_only_allowlisted_xattrs_are_applied(tmp_path):
    data = make_tar(
        (".", "dir", {"pax": {X + "trusted.overlay.opaque": "y"}}),
        ("d", "dir", {"pax": {X + "trusted.overlay.redirect": "/etc",
                              X + "trusted.overlay.opaque": "y", X + "user.kept": "d"}}),
        ("f", "file", {"pax": {X + "security.selinux": "system_u:object_r:shadow_t:s0",
                               X + "trusted.overlay.whiteout": "", X + "trusted.x": "1",
                               X + "user.note": "hi", X + "security.capability": pax_bytes(CAP)}}),
    )
    dest = unpack(tmp_path, data)
    assert xattrs(dest) == set()  # the layer root: no fake opaque marker via "./"
    assert xattrs(dest / "d") == {"user.kept"}
    assert xattrs(dest / "f") == {"user.note", "security.capability"}
    assert os.getxattr(dest / "f", "security.capability") == CAP
    assert os.getxattr(dest / "f", "user.note") == b"hi"


@pytest.mark.root
def test_user_xattrs_on_symlinks_and_fifos_are_skipped_as_tar_does(tmp_path):
    data = make_tar(("target", "file"),
                    ("link", "sym", {"to": "target", "pax": {X + "user.x": "1"}}),
                    ("fifo", "fifo", {"pax": {X + "user.y": "2"}}))
    dest = unpack(tmp_path, data)
    assert os.readlink(dest / "link") == "target"
    assert xattrs(dest / "link") == set() and xattrs(dest / "target") == set()
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode) and xattrs(dest / "fifo") == set()


@pytest.mark.root
def test_an_allowed_xattr_the_kernel_refuses_is_an_image_error(tmp_path):
    data = make_tar(("bin/ping", "file", {"pax": {X + "security.capability": "bad"}}))
    with pytest.raises(ImageError) as err:
        unpack(tmp_path, data)
    assert err.value.message.startswith(
        'cannot set xattr security.capability on "bin/ping": ')
    assert "(layer sha256:test)" in err.value.message
    assert err.value.errno == errno.EINVAL and err.value.hint


# ---- whiteouts ---------------------------------------------------------------

@pytest.mark.root
def test_whiteout_prefixed_directory_is_refused_not_created(tmp_path):
    data = make_tar(("d", "dir"), ("d/.wh..wh..opq/x", "file"))
    with pytest.raises(ImageError, match='entry "d/.wh..wh..opq/x" has a whiteout in a dir'):
        unpack(tmp_path, data)
    assert not (tmp_path / "layer/d/.wh..wh..opq").exists()


@pytest.mark.root
def test_aufs_metadata_is_skipped_in_a_real_unpack(tmp_path):
    data = make_tar((".wh..wh.plnk", "dir"), (".wh..wh.plnk/1.2", "file"),
                    (".wh..wh.aufs", "file"), ("kept", "file"))
    dest = unpack(tmp_path, data)
    assert sorted(os.listdir(dest)) == ["kept"]


@pytest.mark.root
def test_whiteout_under_a_symlinked_parent_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    data = make_tar(("d", "sym", {"to": str(outside)}), ("d/.wh.victim", "file"))
    with pytest.raises(ImageError, match='entry "d/.wh.victim" goes through symlink "d"'):
        unpack(tmp_path, data)
    assert (outside / "victim").read_text() == "keep"


# ---- entries that reuse what earlier entries made ------------------------------

@pytest.mark.root
def test_hardlink_to_a_symlink_links_the_symlink_itself(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    data = make_tar(("s", "sym", {"to": str(outside)}), ("h", "link", {"to": "s"}))
    dest = unpack(tmp_path, data)
    assert os.readlink(dest / "h") == str(outside)
    assert os.lstat(dest / "h").st_ino == os.lstat(dest / "s").st_ino
    assert os.lstat(outside).st_nlink == 1


@pytest.mark.root
def test_dir_replaced_by_a_symlink_cannot_be_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    data = make_tar(("d", "dir"), ("d/x", "file"), ("d", "sym", {"to": str(outside)}),
                    ("d/y", "file"))
    with pytest.raises(ImageError, match='entry "d/y" goes through symlink "d"'):
        unpack(tmp_path, data)
    assert list(outside.iterdir()) == []


@pytest.mark.root
def test_pax_path_with_dotdot_is_refused(tmp_path):
    data = make_tar(("innocent", "file", {"pax": {"path": "../escaped"}}))
    with pytest.raises(ImageError, match='entry "../escaped" escapes the layer directory'):
        unpack(tmp_path, data)
    assert not (tmp_path / "escaped").exists()


@pytest.mark.root
def test_block_device_is_kept(tmp_path):
    dest = unpack(tmp_path, make_tar(("dev/loop42", "blk", {"mode": 0o660, "gid": 6})))
    st = os.lstat(dest / "dev/loop42")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 42)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, 6)


# ---- one decompression, done by the caller -----------------------------------

@pytest.mark.root
def test_unpack_takes_a_plain_tar_only(tmp_path):
    packed = gzip.compress(make_tar(("f", "file")))
    with pytest.raises(ImageError, match="invalid layer tar"):
        unpack_layer(io.BytesIO(packed), tmp_path / "l", layer="sha256:test")


@pytest.mark.root
def test_plain_tar_whose_first_name_looks_like_bzip2_unpacks(tmp_path):
    dest = unpack(tmp_path, make_tar(("BZh-notes.txt", "file", {"data": b"n"})))
    assert (dest / "BZh-notes.txt").read_bytes() == b"n"


@pytest.mark.root
@pytest.mark.tools("tar")
def test_gnu_tar_xattrs_and_acls_round_trip(tmp_path):
    """A layer made by GNU tar --xattrs --acls: what real builders write."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    os.setxattr(src / "f", "user.origin", b"gnu")
    os.setxattr(src / "f", "trusted.overlay.opaque", b"y")
    out = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-C", str(src), "-cf", "-",
                          "f"], check=True, capture_output=True).stdout
    assert b"trusted.overlay.opaque" in out  # the hostile xattr is really in the tar
    dest = unpack(tmp_path, out)
    assert xattrs(dest / "f") == {"user.origin"}
