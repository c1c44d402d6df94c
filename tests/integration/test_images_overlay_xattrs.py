"""A layer cannot forge overlayfs metadata: its trusted.overlay.* xattrs never reach the mount.

Proved on a real overlay mount: the top layer claims, through PAX xattrs,
that /data is opaque and that /etc is a redirect; the lower layer's files
must still show through.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from pyctr.images.snapshot import overlay_options
from pyctr.images.store import ImageStore
from tests.unit.test_images_store import sha
from tests.unit.test_images_store_safety import raw_layout

pytestmark = [pytest.mark.root]


def tar_of(entries: list[tuple[str, bytes | None, dict[str, str]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, pax in entries:
            ti = tarfile.TarInfo(name)
            ti.pax_headers = pax
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            else:
                ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_forged_opaque_and_redirect_xattrs_do_not_hide_lower_files(tmp_path: Path):
    lower = tar_of([("data", None, {}), ("data/a", b"lower a\n", {}),
                    ("etc", None, {}), ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", {})])
    forged = tar_of([
        ("./", None, {"SCHILY.xattr.trusted.overlay.opaque": "y"}),
        ("data", None, {"SCHILY.xattr.trusted.overlay.opaque": "y"}),
        ("etc", None, {"SCHILY.xattr.trusted.overlay.redirect": "/data"}),
        ("data/b", b"top b\n", {}),
    ])
    layout = raw_layout(tmp_path / "forged", [gzip.compress(lower), gzip.compress(forged)],
                        [sha(lower), sha(forged)])
    store = ImageStore(tmp_path / "root")
    (image,) = store.load(layout)
    upper, work, merged = (tmp_path / d for d in ("upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    cwd, data = overlay_options(store, image, upper, work)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", data, str(merged)], cwd=cwd,
                   check=True, capture_output=True)
    try:
        assert sorted(os.listdir(merged / "data")) == ["a", "b"]  # not opaque
        assert (merged / "etc/passwd").read_text().startswith("root:")  # not redirected
        assert sorted(os.listdir(merged)) == ["data", "etc"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)
