"""The image store: loading hand-made archives in every format, names, removal, failures."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from pyctr.errors import Conflict, ImageError, NotFound, UserError
from pyctr.images.sources import host_arch
from pyctr.images.store import DEFAULT_PATH, ImageStore


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1_600_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_config(diff_ids: list[str], **cfg) -> bytes:
    return json.dumps({"architecture": host_arch(), "os": "linux", "created": "2024-01-01T00:00:00Z",
                       "config": {"Cmd": ["/bin/sh"], "Env": [DEFAULT_PATH], **cfg},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def write_blob(layout: Path, data: bytes) -> str:
    d = sha(data)
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / d[7:]).write_bytes(data)
    return d


LAYER_TYPES = {"plain": "application/vnd.oci.image.layer.v1.tar",
               "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def oci_layout(layout: Path, layers: list[dict[str, bytes]], kinds: list[str],
               ref: str | None = "latest", **cfg) -> tuple[str, list[bytes]]:
    """An OCI image layout dir; returns (manifest digest, the blobs of its layers)."""
    plains = [layer_tar(files) for files in layers]
    blobs = [compress(p, k) for p, k in zip(plains, kinds)]
    config = image_config([sha(p) for p in plains], **cfg)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": write_blob(layout, config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPES[k], "digest": write_blob(layout, b), "size": len(b)}
                   for b, k in zip(blobs, kinds)]}).encode()
    mdigest = write_blob(layout, manifest)
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
            "size": len(manifest)}
    if ref:
        desc["annotations"] = {"org.opencontainers.image.ref.name": ref}
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return mdigest, blobs


def tar_dir(src: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return out


def docker_save(out: Path, layers: list[dict[str, bytes]], kinds: list[str],
                tags: list[str]) -> Path:
    plains = [layer_tar(files) for files in layers]
    config = image_config([sha(p) for p in plains])
    src = out.parent / "save-src"
    src.mkdir()
    (src / f"{sha(config)[7:]}.json").write_bytes(config)
    names = []
    for i, (p, k) in enumerate(zip(plains, kinds)):
        (src / f"l{i}").mkdir()
        (src / f"l{i}" / "layer.tar").write_bytes(compress(p, k))
        names.append(f"l{i}/layer.tar")
    (src / "manifest.json").write_text(json.dumps(
        [{"Config": f"{sha(config)[7:]}.json", "RepoTags": tags, "Layers": names}]))
    return tar_dir(src, out)


def store_files(store: ImageStore) -> list[str]:
    top = store.root / "images"
    return sorted(str(p.relative_to(top)) for p in top.rglob("*")
                  if not p.is_dir() and p.name not in ("oci-layout", "lock", "layers.lock"))


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root")


TWO_LAYERS = [{"etc/hostname": b"one\n", "bin/tool": b"#!/bin/sh\n"}, {"etc/hostname": b"two\n"}]


@pytest.mark.parametrize("kinds", [["plain", "plain"], ["gzip", "gzip"], ["zstd", "gzip"],
                                   ["zstd", "zstd"]])
def test_oci_layout_loads_with_every_compression(store, tmp_path, kinds):
    mdigest, _ = oci_layout(tmp_path / "busybox", TWO_LAYERS, kinds, Entrypoint=["/bin/tool"])
    before = threading.active_count()
    (img,) = store.load(tmp_path / "busybox")
    assert threading.active_count() == before  # unpack threads joined: safe to fork
    assert img.names == ["busybox:latest"]  # ref.name is a tag: the repo comes from the dir
    assert img.manifest_digest == mdigest
    assert img.config["Entrypoint"] == ["/bin/tool"]
    assert img.architecture == host_arch() and img.os == "linux"
    base, top = store.layer_paths(img)
    assert (base / "etc/hostname").read_bytes() == b"one\n"
    assert (top / "etc/hostname").read_bytes() == b"two\n"
    assert img.size == 4 + 10 + 4
    assert [os.readlink(store.root / "images/layers" / s) for s in store.short_links(img)] == \
        [f"../{d[7:]}/diff" for d in img.diff_ids]
    assert store.resolve("busybox").id == img.id
    assert oct(os.stat(store.root / "images").st_mode & 0o777) == "0o700"


def test_oci_archive_loads_and_full_ref_names_kept(store, tmp_path):
    oci_layout(tmp_path / "lay", TWO_LAYERS, ["gzip", "plain"], ref="localhost:5000/app:1.0")
    archive = tar_dir(tmp_path / "lay", tmp_path / "app.tar")
    (img,) = store.load(archive)
    assert img.names == ["localhost:5000/app:1.0"]
    assert store.resolve("localhost:5000/app:1.0").id == img.id


def test_compressed_oci_archive_loads(store, tmp_path):
    oci_layout(tmp_path / "lay", TWO_LAYERS, ["gzip", "gzip"], ref="docker.io/library/x:2")
    archive = tar_dir(tmp_path / "lay", tmp_path / "x.tar")
    (tmp_path / "x.tar.gz").write_bytes(gzip.compress(archive.read_bytes()))
    (img,) = store.load(tmp_path / "x.tar.gz")
    assert img.names == ["x:2"]
    assert list((store.root / "images/tmp").iterdir()) == []


@pytest.mark.parametrize("kinds", [["plain", "plain"], ["gzip", "zstd"]])
def test_docker_save_tar_loads(store, tmp_path, kinds):
    archive = docker_save(tmp_path / "save.tar", TWO_LAYERS, kinds,
                          ["busybox:latest", "me/bb:1"])
    (img,) = store.load(archive)
    assert img.names == ["busybox:latest", "me/bb:1"]
    manifest = json.loads((store.root / "images/blobs/sha256" /
                           img.manifest_digest[7:]).read_bytes())
    assert [ld["mediaType"] for ld in manifest["layers"]] == [
        f"application/vnd.oci.image.layer.v1.tar{'' if k == 'plain' else '+' + k}"
        for k in kinds]
    assert (store.layer_paths(img)[1] / "etc/hostname").read_bytes() == b"two\n"
    # the store is itself an OCI layout naming the image in full
    index = json.loads((store.root / "images/index.json").read_text())
    assert {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]} \
        == {"docker.io/library/busybox:latest", "docker.io/me/bb:1"}


def test_digest_mismatch_leaves_nothing_in_the_store(store, tmp_path):
    _, blobs = oci_layout(tmp_path / "bad", TWO_LAYERS, ["gzip", "gzip"])
    path = tmp_path / "bad/blobs/sha256" / sha(blobs[1])[7:]
    path.write_bytes(gzip.compress(layer_tar({"etc/hostname": b"evil\n"})))
    with pytest.raises(ImageError) as err:
        store.load(tmp_path / "bad")
    assert f"digest mismatch for layer {sha(blobs[1])}: expected {sha(blobs[1])}, got sha256:" \
        in err.value.message
    leftovers = [f for f in store_files(store) if not f.startswith("blobs/sha256/")
                 and not f.startswith("layers/")]
    assert leftovers == []  # no index entry, no temp file
    assert sha(blobs[1])[7:] not in os.listdir(store.root / "images/blobs/sha256")
    assert list((store.root / "images/tmp").iterdir()) == []
    claimed = sha(layer_tar(TWO_LAYERS[1]))  # the diff_id the config names for the bad blob
    served = sha(layer_tar({"etc/hostname": b"evil\n"}))  # what the bad blob unpacks to
    layer_dirs = os.listdir(store.root / "images/layers")
    assert claimed[7:] not in layer_dirs and served[7:] not in layer_dirs
    links = store.root / "images/layers/l"
    assert [n for n in os.listdir(links) if not (links / n).exists()] == []  # none dangling
    with pytest.raises(NotFound):
        store.resolve("bad")


def test_diff_id_mismatch_is_refused(store, tmp_path):
    # a docker save whose config names another diff_id than its layer has
    plain = layer_tar(TWO_LAYERS[0])
    src = tmp_path / "s"
    src.mkdir()
    config = image_config(["sha256:" + "0" * 64])
    (src / "c.json").write_bytes(config)
    (src / "l.tar").write_bytes(plain)
    (src / "manifest.json").write_text(json.dumps(
        [{"Config": "c.json", "RepoTags": ["liar:1"], "Layers": ["l.tar"]}]))
    with pytest.raises(ImageError, match=f"diff_id mismatch for layer l.tar: expected "
                                         f"sha256:{'0' * 64}, got {sha(plain)}"):
        store.load(tar_dir(src, tmp_path / "liar.tar"))
    assert not (store.root / "images/layers" / sha(plain)[7:]).exists()
    assert os.listdir(store.root / "images/layers/l") == []


def test_nested_index_picks_host_platform(store, tmp_path):
    lay = tmp_path / "multi"
    mdigest, _ = oci_layout(lay, TWO_LAYERS, ["gzip", "gzip"])
    manifest = (lay / "blobs/sha256" / mdigest[7:]).read_bytes()
    decoy_arch = "arm64" if host_arch() == "amd64" else "amd64"  # a real platform, not ours
    other = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": "sha256:" + "1" * 64, "size": 1,
             "platform": {"os": "linux", "architecture": decoy_arch}}
    mine = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
            "size": len(manifest), "platform": {"os": "linux", "architecture": host_arch()}}
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [other, mine]}).encode()
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": write_blob(lay, nested),
        "size": len(nested), "annotations": {"org.opencontainers.image.ref.name": "multi:3"}}]}))
    (img,) = store.load(lay)
    assert img.manifest_digest == mdigest and img.names == ["multi:3"]


def test_not_found_hints_list_images_or_say_how_to_add_one(store, tmp_path):
    with pytest.raises(NotFound) as err:
        store.resolve("foo")
    assert err.value.message == "no such image: foo:latest"
    assert "pyctr load -i" in err.value.hint and "pyctr import" in err.value.hint
    oci_layout(tmp_path / "busybox", TWO_LAYERS, ["gzip", "gzip"])
    store.load(tmp_path / "busybox")
    with pytest.raises(NotFound) as err:
        store.resolve("foo:1")
    assert err.value.message == "no such image: foo:1"
    assert err.value.hint == "images here: busybox:latest"


def test_resolve_by_id_prefix_tag_and_remove(store, tmp_path):
    oci_layout(tmp_path / "busybox", TWO_LAYERS, ["gzip", "gzip"])
    (img,) = store.load(tmp_path / "busybox")
    assert store.resolve(img.id).id == img.id
    assert store.resolve(img.id[7:14]).id == img.id
    with pytest.raises(NotFound, match="no such image: sha256:ab"):
        store.resolve("sha256:ab")  # too short to be an id prefix, and not a name
    store.tag("busybox", "mine:v1")
    assert sorted(store.resolve("mine:v1").names) == ["busybox:latest", "mine:v1"]
    with pytest.raises(Conflict, match="image is referenced in multiple repositories"):
        store.remove(img.id[7:19])
    assert store.remove("busybox") == ["Untagged: busybox:latest"]
    assert store.resolve("mine:v1").id == img.id
    out = store.remove("mine:v1")
    assert out[:2] == ["Untagged: mine:v1", f"Deleted: {img.id}"]
    assert sorted(out[2:]) == sorted(f"Deleted: {d}" for d in img.diff_ids)
    assert store.list() == []
    assert store_files(store) == ["index.json"]
    assert os.listdir(store.root / "images/layers") == ["l"]


def test_remove_keeps_layers_another_image_shares(store, tmp_path):
    oci_layout(tmp_path / "a", TWO_LAYERS, ["gzip", "gzip"])
    oci_layout(tmp_path / "b", [TWO_LAYERS[0], {"other": b"o"}], ["gzip", "gzip"])
    (a,) = store.load(tmp_path / "a")
    (b,) = store.load(tmp_path / "b")
    assert a.diff_ids[0] == b.diff_ids[0]
    assert store.layer_paths(a)[0] == store.layer_paths(b)[0]
    out = store.remove("a")
    assert f"Deleted: {a.diff_ids[1]}" in out and f"Deleted: {a.diff_ids[0]}" not in out
    assert (store.layer_paths(b)[0] / "etc/hostname").exists()
    assert [i.names for i in store.list()] == [["b:latest"]]


def test_retag_leaves_old_image_nameless_but_listed(store, tmp_path):
    oci_layout(tmp_path / "a", TWO_LAYERS, ["gzip", "gzip"])
    oci_layout(tmp_path / "a2", [{"new": b"n"}], ["gzip"])
    (old,) = store.load(tmp_path / "a")
    (new,) = store.load(tmp_path / "a2", repo="a")
    assert store.resolve("a").id == new.id
    listed = {i.id: i.names for i in store.list()}
    assert listed == {old.id: [], new.id: ["a:latest"]}
    assert store.remove(old.id[7:]) == [f"Deleted: {old.id}"] + \
        [f"Deleted: {d}" for d in old.diff_ids]


@pytest.mark.parametrize("kind", ["plain", "gzip", "zstd"])
def test_import_rootfs_makes_one_layer_image(store, tmp_path, kind):
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(compress(layer_tar({"bin/sh": b"sh", "etc/os-release": b"ID=x\n"}), kind))
    img = store.import_rootfs(tar, "imported:1")
    assert img.names == ["imported:1"]
    assert img.config == {"Env": [DEFAULT_PATH]}
    assert len(img.diff_ids) == 1
    assert (store.layer_paths(img)[0] / "etc/os-release").read_bytes() == b"ID=x\n"


def test_import_rejects_bad_name_before_reading(store, tmp_path):
    with pytest.raises(UserError, match="repository name must be lowercase"):
        store.import_rootfs(tmp_path / "missing.tar", "Bad")
    with pytest.raises(UserError, match="no such file: .*missing.tar"):
        store.import_rootfs(tmp_path / "missing.tar", "ok")


def test_load_rejects_what_is_not_an_image(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is not an image archive: no manifest.json and no oci"):
        store.load(tmp_path / "empty")
    with pytest.raises(UserError, match="no such file or directory: .*nope"):
        store.load(tmp_path / "nope")


def test_docker_save_with_path_outside_archive_is_refused(store, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps(
        [{"Config": "../../etc/passwd", "RepoTags": ["x:1"], "Layers": []}]))
    with pytest.raises(ImageError, match='invalid path "../../etc/passwd" in .*: it leaves'):
        store.load(src)
