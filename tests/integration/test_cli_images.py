"""Images made by real tools, loaded and run through the CLI; hostile and corrupt images refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT_BASE, Pyctr
from tests.integration.test_images_tools import umoci_layout  # noqa: F401 - a fixture

pytestmark = [pytest.mark.root, pytest.mark.tools("umoci", "skopeo")]


@pytest.fixture(scope="module")
def own() -> Pyctr:
    """A root of this module's own: loading here must not rename the session's busybox."""
    base = Path(tempfile.mkdtemp(prefix="pyctr-img-", dir=ROOT_BASE))
    p = Pyctr(base / "root", base / "run")
    yield p
    p.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def layers_on_disk(p: Pyctr) -> set[str]:
    d = p.root / "images" / "layers"
    return {e for e in os.listdir(d) if e != "l"} if d.is_dir() else set()


def test_umoci_image_with_whiteout_and_opaque_dir_runs(own, umoci_layout):  # noqa: F811
    out = own.ok("load", "-i", str(umoci_layout))
    assert out == "Loaded image: busybox:latest\n"
    script = "test -e /etc/motd && echo motd-visible; ls /data; ls /bin/sh"
    assert own.ok("run", "--rm", "busybox", "sh", "-c", script) == "new\n/bin/sh\n"
    # three layers, each unpacked once, shared by the containers
    assert len(layers_on_disk(own)) == 3


def test_skopeo_docker_archive_and_oci_archive_run(own, umoci_layout, tmp_path):  # noqa: F811
    docker_tar = tmp_path / "demo.tar"
    subprocess.run(["skopeo", "copy", f"oci:{umoci_layout}:latest",
                    f"docker-archive:{docker_tar}:demo:v1"], check=True, capture_output=True)
    assert own.ok("load", "-i", str(docker_tar)) == "Loaded image: demo:v1\n"
    assert own.ok("run", "--rm", "demo:v1", "cat", "/data/new") == "fresh\n"
    oci_tar = tmp_path / "demo-oci.tar"
    subprocess.run(["skopeo", "copy", f"oci:{umoci_layout}:latest",
                    f"oci-archive:{oci_tar}:v2"], check=True, capture_output=True)
    own.ok("load", "-i", str(oci_tar))
    names = own.image_names()
    assert {"demo:v1", "busybox:latest"} <= names
    # skopeo recompresses nothing here: the same diff_ids, so no new layer dirs
    assert len(layers_on_disk(own)) == 3


def _docker_save_tar(path: Path, layer: bytes, *, tag: str, corrupt: bool = False) -> Path:
    """A minimal `docker save` archive with one layer (optionally a lying diff_id)."""
    diff_id = "sha256:" + hashlib.sha256(b"not the layer" if corrupt else layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag],
                            "Layers": ["layer/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in (("config.json", config), ("layer/layer.tar", layer),
                           ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def _layer(entries: list[tarfile.TarInfo]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for ti in entries:
            tf.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.isfile() else None)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = 1
    return ti


def _link(name: str, target: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.SYMTYPE
    ti.linkname = target
    return ti


@pytest.mark.parametrize("entries,what", [
    ([_file("../escaped")], "../escaped"),
    ([_link("etc", "/tmp"), _file("etc/planted")], "etc/planted"),
])
def test_a_layer_breakout_is_refused_and_nothing_is_left(own, tmp_path, entries, what):
    before = (layers_on_disk(own), own.image_names(), own.ok("images", "-q", "--no-trunc"))
    tar = _docker_save_tar(tmp_path / "evil.tar", _layer(entries), tag="evil:1")
    r = own("load", "-i", str(tar))
    assert r.returncode == 125
    assert "breakout" in r.stderr or "escape" in r.stderr
    assert what in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path.parent / "escaped").exists() and not Path("/tmp/planted").exists()
    assert (layers_on_disk(own), own.image_names(),
            own.ok("images", "-q", "--no-trunc")) == before
    tmp = own.root / "images" / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == []


def test_a_diff_id_mismatch_names_both_digests(own, tmp_path):
    layer = _layer([_file("hello")])
    tar = _docker_save_tar(tmp_path / "bad.tar", layer, tag="bad:1", corrupt=True)
    r = own("load", "-i", str(tar))
    assert r.returncode == 125
    assert hashlib.sha256(layer).hexdigest() in r.stderr
    assert hashlib.sha256(b"not the layer").hexdigest() in r.stderr
    assert "bad:1" not in own.ok("images")


def test_import_from_stdin_tag_and_rmi_frees_layers(own, busybox_tar):
    with open(busybox_tar, "rb") as f:
        r = subprocess.run(own.argv("import", "-", "fromstdin:1"), stdin=f,
                           capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.startswith("sha256:")
    own.ok("tag", "fromstdin:1", "fromstdin:2")
    assert own.ok("run", "--rm", "fromstdin:2", "echo", "ok") == "ok\n"
    layers = layers_on_disk(own)
    assert own.ok("rmi", "fromstdin:1") == "Untagged: fromstdin:1\n"
    out = own.ok("rmi", "fromstdin:2")
    assert "Untagged: fromstdin:2" in out and "Deleted: sha256:" in out
    assert len(layers_on_disk(own)) == len(layers) - 1  # its one layer, used by no other
    r = own("rmi", "fromstdin:2")
    assert r.returncode == 1 and "no such image" in r.stderr


def test_load_of_a_missing_path_is_a_clear_error(own):
    r = own("load", "-i", "/nonexistent/image.tar")
    assert r.returncode == 125
    assert "/nonexistent/image.tar" in r.stderr and "hint" in r.stderr


def test_system_prune_removes_what_an_interrupted_import_left(own, busybox_tar):
    own.ok("import", str(busybox_tar), "keep:1")
    blobs = own.root / "images" / "blobs" / "sha256"
    data = b"half of an import"
    orphan = blobs / hashlib.sha256(data).hexdigest()
    orphan.write_bytes(data)  # a blob no manifest names, as a killed import leaves it
    out = own.ok("system", "prune", "-f")
    assert f"Deleted: sha256:{orphan.name}" in out and "Total reclaimed space" in out
    assert not orphan.exists()
    assert own.ok("run", "--rm", "--network", "none", "keep:1", "echo", "ok") == "ok\n"
