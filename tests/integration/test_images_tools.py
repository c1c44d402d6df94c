"""Images made by real tools (umoci, skopeo) load, and their layers stack in a real overlay.

The image has three layers: a busybox rootfs (umoci repack), a second
repack that deletes /etc/motd (umoci writes the whiteout), and a layer
added with ``umoci raw add-layer`` that makes /data opaque.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pyctr.images.snapshot import overlay_options
from pyctr.images.store import ImageStore
from tests.conftest import make_busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.tools("umoci", "skopeo")]


def run(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, cwd=cwd)


def opaque_layer(path: Path) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in (("data/.wh..wh..opq", b""), ("data/new", b"fresh\n")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def umoci_layout(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("umoci")
    rootfs = make_busybox_rootfs(tmp / "rootfs")
    (rootfs / "etc/motd").write_text("hello\n")
    (rootfs / "data").mkdir()
    (rootfs / "data/a").write_text("old a\n")
    layout = tmp / "busybox"
    image = f"{layout}:latest"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", image)
    run("umoci", "unpack", "--image", image, str(tmp / "bundle"))
    run("cp", "-a", f"{rootfs}/.", str(tmp / "bundle/rootfs/"))
    run("umoci", "repack", "--image", image, str(tmp / "bundle"))
    run("umoci", "unpack", "--image", image, str(tmp / "bundle2"))
    (tmp / "bundle2/rootfs/etc/motd").unlink()
    run("umoci", "repack", "--image", image, str(tmp / "bundle2"))
    run("umoci", "raw", "add-layer", "--image", image, str(opaque_layer(tmp / "opq.tar")))
    run("umoci", "config", "--image", image, "--config.cmd", "/bin/sh")
    return layout


def check_layers(store: ImageStore, image) -> None:
    assert len(image.diff_ids) == 3
    base, deleted, opaque = store.layer_paths(image)
    assert (base / "bin/busybox").stat().st_mode & 0o111
    assert os.readlink(base / "bin/sh") == "busybox"
    assert (base / "etc/motd").read_text() == "hello\n"
    st = os.lstat(deleted / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(opaque / "data", "trusted.overlay.opaque") == b"y"
    assert (opaque / "data/new").read_text() == "fresh\n"
    assert image.config["Cmd"] == ["/bin/sh"]


def test_umoci_layout_loads(umoci_layout, tmp_path):
    store = ImageStore(tmp_path / "root")
    (image,) = store.load(umoci_layout)
    assert image.names == ["busybox:latest"]
    check_layers(store, image)


def test_skopeo_oci_copy_and_docker_archive_load(umoci_layout, tmp_path):
    policy = ("--insecure-policy",)  # local transports only: no signatures to check
    run("skopeo", *policy, "copy", f"oci:{umoci_layout}:latest", f"oci:{tmp_path}/copy:1.0")
    run("skopeo", *policy, "copy", f"oci:{umoci_layout}:latest",
        f"docker-archive:{tmp_path}/save.tar:example.com/bb:2")
    store = ImageStore(tmp_path / "root")
    (copied,) = store.load(tmp_path / "copy")
    (saved,) = store.load(tmp_path / "save.tar")
    assert copied.names == ["copy:1.0"]
    assert saved.names == ["example.com/bb:2"]
    assert saved.diff_ids == copied.diff_ids  # the layers are unpacked once and shared
    check_layers(store, copied)
    check_layers(store, saved)


def test_overlay_merges_layers_with_whiteouts(umoci_layout, tmp_path):
    store = ImageStore(tmp_path / "root")
    (image,) = store.load(umoci_layout)
    upper, work, merged = (tmp_path / d for d in ("upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    cwd, data = overlay_options(store, image, upper, work)
    links = store.short_links(image)
    assert data.startswith(f"lowerdir={links[2]}:{links[1]}:{links[0]},")  # topmost first
    run("mount", "-t", "overlay", "overlay", "-o", data, str(merged), cwd=cwd)
    try:
        assert (merged / "bin/busybox").is_file()
        assert not (merged / "etc/motd").exists()  # whited out in layer 2
        assert sorted(os.listdir(merged / "data")) == ["new"]  # opaque: lower data/a hidden
        (merged / "etc/hostname").write_text("c1\n")
        assert (upper / "etc/hostname").read_text() == "c1\n"
        assert not (store.layer_paths(image)[0] / "etc/hostname").exists()
        out = subprocess.run(["chroot", str(merged), "/bin/sh", "-c", "cat /data/new"],
                             capture_output=True, text=True, check=True).stdout
        assert out == "fresh\n"
    finally:
        run("umount", str(merged))
