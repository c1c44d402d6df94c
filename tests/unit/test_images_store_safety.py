"""The store against lying images, odd compressions and concurrent loads and removes."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pyctr.errors import ImageError, NotFound
from pyctr.images import layers
from pyctr.images.store import ImageStore
from tests.unit.test_images_store import (
    LAYER_TYPES,
    docker_save,
    image_config,
    layer_tar,
    oci_layout,
    sha,
    tar_dir,
    write_blob,
)

BASE = {"etc/hostname": b"base\n"}


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root")


def raw_layout(layout: Path, blobs: list[bytes], diff_ids: list[str], ref: str = "latest",
               media: str = LAYER_TYPES["gzip"]) -> Path:
    """An OCI layout whose layer blobs and diff_ids are given as they are (they may lie)."""
    config = image_config(diff_ids)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": write_blob(layout, config), "size": len(config)},
        "layers": [{"mediaType": media, "digest": write_blob(layout, b), "size": len(b)}
                   for b in blobs]}).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": write_blob(layout, manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref}}]}))
    return layout


def dangling_links(store: ImageStore) -> list[str]:
    ldir = store.root / "images/layers/l"
    return [n for n in os.listdir(ldir) if not (ldir / n).exists()]


# ---- a layer is only shared when its blob was verified to be it ------------------

def test_blob_that_is_not_the_claimed_layer_is_refused_even_if_the_layer_is_stored(
        store, tmp_path):
    (base,) = store.load(raw_layout(tmp_path / "base", [gzip.compress(layer_tar(BASE))],
                                    [sha(layer_tar(BASE))]))
    evil = layer_tar({"etc/shadow": b"evil\n"})
    other = gzip.compress(evil)
    liar = raw_layout(tmp_path / "liar", [other], base.diff_ids)
    with pytest.raises(ImageError) as err:
        store.load(liar)
    assert err.value.message == (f"diff_id mismatch for layer {sha(other)}: expected "
                                 f"{base.diff_ids[0]}, got {sha(evil)}")
    assert sha(other)[7:] not in os.listdir(store.root / "images/blobs/sha256")
    with pytest.raises(NotFound):
        store.resolve("liar")


def test_stored_blob_claimed_for_another_stored_layer_is_refused(store, tmp_path):
    blob_a = gzip.compress(layer_tar(BASE))
    store.load(raw_layout(tmp_path / "a", [blob_a], [sha(layer_tar(BASE))]))
    (b,) = store.load(raw_layout(tmp_path / "b", [gzip.compress(layer_tar({"m": b"m"}))],
                                 [sha(layer_tar({"m": b"m"}))]))
    # blob_a is in the store, layer m too: only their pairing is a lie
    liar = raw_layout(tmp_path / "liar", [blob_a], b.diff_ids)
    with pytest.raises(ImageError, match=f"diff_id mismatch for layer {sha(blob_a)}: expected "
                                         f"{b.diff_ids[0]}"):
        store.load(liar)


def test_verified_pairing_lets_a_second_image_share_the_layer(store, tmp_path):
    blob = gzip.compress(layer_tar(BASE))
    (a,) = store.load(raw_layout(tmp_path / "a", [blob], [sha(layer_tar(BASE))]))
    layout_b = raw_layout(tmp_path / "b", [blob], a.diff_ids)
    (layout_b / "blobs/sha256" / sha(blob)[7:]).unlink()  # not even needed: the store has it
    (b,) = store.load(layout_b)
    assert store.layer_paths(b) == store.layer_paths(a)
    manifest = json.loads((store.root / "images/blobs/sha256" / b.manifest_digest[7:]).read_text())
    assert manifest["layers"][0]["mediaType"] == LAYER_TYPES["gzip"]


def test_docker_save_legacy_layer_is_checked_against_its_diff_id_when_shared(store, tmp_path):
    (a,) = store.load(docker_save(tmp_path / "a.tar", [BASE], ["plain"], ["a:1"]))
    src = tmp_path / "s"
    src.mkdir()
    evil = layer_tar({"etc/shadow": b"evil\n"})
    config = image_config(a.diff_ids)
    (src / "c.json").write_bytes(config)
    (src / "l0").mkdir()
    (src / "l0/layer.tar").write_bytes(evil)
    (src / "manifest.json").write_text(json.dumps(
        [{"Config": "c.json", "RepoTags": ["liar:1"], "Layers": ["l0/layer.tar"]}]))
    with pytest.raises(ImageError, match=f"diff_id mismatch for layer l0/layer.tar: expected "
                                         f"{a.diff_ids[0]}, got {sha(evil)}"):
        store.load(tar_dir(src, tmp_path / "liar.tar"))
    assert sha(evil)[7:] not in os.listdir(store.root / "images/blobs/sha256")


# ---- compression: detected once, only what OCI knows ----------------------------

def test_plain_layer_whose_first_entry_looks_like_bzip2_loads(store, tmp_path):
    plain = layer_tar({"BZh-notes.txt": b"notes\n", "bin/sh": b"sh"})
    (img,) = store.load(raw_layout(tmp_path / "bzh", [plain], [sha(plain)],
                                   media=LAYER_TYPES["plain"]))
    assert (store.layer_paths(img)[0] / "BZh-notes.txt").read_bytes() == b"notes\n"


def test_doubly_gzipped_layer_is_refused(store, tmp_path):
    once = gzip.compress(layer_tar(BASE))
    twice = gzip.compress(once)
    with pytest.raises(ImageError, match=f"invalid layer tar: .*\\(layer {sha(twice)}\\)"):
        store.load(raw_layout(tmp_path / "gg", [twice], [sha(once)]))
    assert os.listdir(store.root / "images/layers") == ["l"]


@pytest.mark.parametrize("kind,packer", [("xz", lzma.compress), ("bzip2", bz2.compress)])
def test_xz_and_bzip2_layers_are_refused(store, tmp_path, kind, packer):
    plain = layer_tar(BASE)
    blob = packer(plain)
    with pytest.raises(ImageError) as err:
        store.load(raw_layout(tmp_path / kind, [blob], [sha(plain)]))
    assert err.value.message == f"unsupported layer compression {kind} (layer {sha(blob)})"
    assert "gzip or zstd" in err.value.hint
    assert os.listdir(store.root / "images/layers") == ["l"]


@pytest.mark.parametrize("packer", [lzma.compress, bz2.compress])
def test_import_of_an_xz_or_bzip2_rootfs_stores_the_plain_tar(store, tmp_path, packer):
    plain = layer_tar({"bin/sh": b"sh"})
    (tmp_path / "rootfs.tar.x").write_bytes(packer(plain))
    img = store.import_rootfs(tmp_path / "rootfs.tar.x", "legacy:1")
    manifest = json.loads((store.root / "images/blobs/sha256" / img.manifest_digest[7:]).read_text())
    assert manifest["layers"] == [{"mediaType": LAYER_TYPES["plain"], "digest": sha(plain),
                                   "size": len(plain)}]
    assert img.diff_ids == [sha(plain)]
    assert (store.layer_paths(img)[0] / "bin/sh").read_bytes() == b"sh"


def test_corrupt_zstd_layer_is_an_image_error(store, tmp_path):
    blob = b"\x28\xb5\x2f\xfd" + b"\x00garbage" * 20
    with pytest.raises(ImageError, match=f"corrupt zstd stream: .*\\(layer {sha(blob)}\\)"):
        store.load(raw_layout(tmp_path / "z", [blob], [sha(layer_tar(BASE))]))


def test_xz_compressed_archive_still_loads(store, tmp_path):
    oci_layout(tmp_path / "lay", [BASE], ["gzip"], ref="docker.io/library/x:xz")
    archive = tar_dir(tmp_path / "lay", tmp_path / "x.tar")
    (tmp_path / "x.tar.xz").write_bytes(lzma.compress(archive.read_bytes()))
    (img,) = store.load(tmp_path / "x.tar.xz")
    assert img.names == ["x:xz"]


def test_corrupt_xz_archive_is_an_image_error(store, tmp_path):
    (tmp_path / "x.tar.xz").write_bytes(lzma.compress(b"x" * 5000)[:40])
    with pytest.raises(ImageError, match="corrupt xz stream"):
        store.load(tmp_path / "x.tar.xz")
    assert os.listdir(store.root / "images/tmp") == []


# ---- concurrency ----------------------------------------------------------------

def _blocked_on_flock() -> bool:
    me = str(os.getpid())
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 5 and parts[1] == "->" and parts[5] == me:
                return True
    return False


def test_load_racing_remove_keeps_the_layers_it_shares(store, tmp_path, monkeypatch):
    shared = {"etc/hostname": b"shared\n"}
    oci_layout(tmp_path / "a", [shared, {"a": b"a"}], ["gzip", "gzip"])
    oci_layout(tmp_path / "b", [shared, {"b": b"b"}], ["gzip", "gzip"])
    store.load(tmp_path / "a")
    original = layers.ingest_layer
    remover: list[threading.Thread] = []

    def ingest_then_remove(dirs, src, diff_id, label):
        info = original(dirs, src, diff_id, label)
        if diff_id == sha(layer_tar(shared)) and not remover:
            # the shared layer took the fast path: now `rmi a` runs before b is indexed
            t = threading.Thread(target=store.remove, args=("a",))
            remover.append(t)
            t.start()
            deadline = time.monotonic() + 10
            while t.is_alive() and not _blocked_on_flock() and time.monotonic() < deadline:
                time.sleep(0.005)
        return info

    monkeypatch.setattr(layers, "ingest_layer", ingest_then_remove)
    (b,) = store.load(tmp_path / "b", processes=False)  # the hook runs in this process
    remover[0].join(10)
    assert not remover[0].is_alive()
    assert [i.names for i in store.list()] == [["b:latest"]]
    base, _ = store.layer_paths(b)
    assert (base / "etc/hostname").read_bytes() == b"shared\n"
    assert len(store.short_links(b)) == 2 and dangling_links(store) == []


def test_two_loads_unpacking_the_same_layer_at_once_share_one_layer_dir(
        store, tmp_path, monkeypatch):
    oci_layout(tmp_path / "one", [BASE], ["gzip"])
    oci_layout(tmp_path / "two", [BASE], ["zstd"])
    both_unpacking = threading.Barrier(2, timeout=10)
    original = layers.unpack_layer

    def unpack_together(*args, **kw):
        both_unpacking.wait()  # neither saw the other's layer: both unpack it
        return original(*args, **kw)

    monkeypatch.setattr(layers, "unpack_layer", unpack_together)
    results: dict[str, object] = {}

    def load(name: str) -> None:
        try:
            results[name] = store.load(tmp_path / name)[0]
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            results[name] = exc

    threads = [threading.Thread(target=load, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    one, two = results["one"], results["two"]
    assert not isinstance(one, BaseException), one
    assert not isinstance(two, BaseException), two
    assert one.diff_ids == two.diff_ids
    assert sorted(os.listdir(store.root / "images/layers")) == sorted(["l", one.diff_ids[0][7:]])
    assert len(os.listdir(store.root / "images/layers/l")) == 1 and dangling_links(store) == []
    assert os.listdir(store.root / "images/tmp") == []
    assert (store.layer_paths(two)[0] / "etc/hostname").read_bytes() == b"base\n"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_load_sweeps_temp_files_of_dead_loads_only(store, tmp_path):
    store.load(raw_layout(tmp_path / "first", [gzip.compress(layer_tar(BASE))],
                          [sha(layer_tar(BASE))]))
    tmp = store.root / "images/tmp"
    dead = _dead_pid()
    (tmp / f"layer-{dead}-abc").mkdir()
    (tmp / f"layer-{dead}-abc/diff").mkdir()
    (tmp / f"layer-{dead}-abc/diff/f").write_text("half")
    (tmp / f"blob-{dead}-def").write_bytes(b"half a blob")
    (tmp / f"gone-{dead}-ghi").mkdir()
    mine = tmp / f"blob-{os.getpid()}-live"  # another thread of a live process may own it
    mine.write_bytes(b"in use")
    store.load(raw_layout(tmp_path / "second", [gzip.compress(layer_tar({"x": b"x"}))],
                          [sha(layer_tar({"x": b"x"}))]))
    assert os.listdir(tmp) == [mine.name]


def test_the_temp_files_of_a_zombie_are_swept(store, tmp_path):
    """A pull's layer process killed -9 and never reaped (a reaper that never comes: a
    PID 1 that does not wait) keeps its pid: its files must go all the same."""
    zombie = subprocess.Popen(["true"])
    stat_file = Path(f"/proc/{zombie.pid}/stat")
    until_zombie = time.monotonic() + 10
    while stat_file.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < until_zombie, "the child never exited"
        time.sleep(0.01)
    try:
        store.load(raw_layout(tmp_path / "first", [gzip.compress(layer_tar(BASE))],
                              [sha(layer_tar(BASE))]))
        tmp = store.root / "images/tmp"
        (tmp / f"blob-{zombie.pid}-z").write_bytes(b"half a blob")
        store.load(raw_layout(tmp_path / "second", [gzip.compress(layer_tar({"y": b"y"}))],
                              [sha(layer_tar({"y": b"y"}))]))
        assert os.listdir(tmp) == []
    finally:
        zombie.wait()


# ---- docker save variants and platforms -------------------------------------------

def test_docker_save_with_null_repo_tags_loads_nameless(store, tmp_path):
    plain = layer_tar(BASE)
    src = tmp_path / "s"
    src.mkdir()
    config = image_config([sha(plain)])
    (src / "c.json").write_bytes(config)
    (src / "layer.tar").write_bytes(plain)
    (src / "manifest.json").write_text(json.dumps(
        [{"Config": "c.json", "RepoTags": None, "Layers": ["layer.tar"]}]))
    (img,) = store.load(tar_dir(src, tmp_path / "untagged.tar"))
    assert img.names == [] and img.id == sha(config)
    assert [i.id for i in store.list()] == [img.id]


def test_docker_25_save_with_blob_paths_is_checked_by_digest(store, tmp_path):
    plain = layer_tar(BASE)
    packed = gzip.compress(plain)
    src = tmp_path / "s"
    config = image_config([sha(plain)])
    write_blob(src, config)
    write_blob(src, packed)
    (src / "manifest.json").write_text(json.dumps(
        [{"Config": f"blobs/sha256/{sha(config)[7:]}", "RepoTags": ["d25:1"],
          "Layers": [f"blobs/sha256/{sha(packed)[7:]}"]}]))
    (img,) = store.load(tar_dir(src, tmp_path / "d25.tar"))
    assert img.names == ["d25:1"]
    manifest = json.loads((store.root / "images/blobs/sha256" / img.manifest_digest[7:]).read_text())
    assert manifest["layers"] == [{"mediaType": LAYER_TYPES["gzip"], "digest": sha(packed),
                                   "size": len(packed)}]
    store.remove("d25:1")
    (src / "blobs/sha256" / sha(packed)[7:]).write_bytes(gzip.compress(plain, mtime=1))
    with pytest.raises(ImageError, match=f"digest mismatch for layer {sha(packed)}: expected "
                                         f"{sha(packed)}, got sha256:"):
        store.load(tar_dir(src, tmp_path / "d25-bad.tar"))


def _other_arch() -> str:
    from pyctr.images.layout import host_arch

    return "arm64" if host_arch() == "amd64" else "amd64"


def test_index_without_the_host_platform_names_what_it_has(store, tmp_path):
    from pyctr.images.layout import host_arch

    lay = tmp_path / "foreign"
    oci_layout(lay, [BASE], ["gzip"])
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": "sha256:" + "2" * 64, "size": 1,
                            "platform": {"os": "linux", "architecture": _other_arch()}}]}
    nested = json.dumps(index).encode()
    digest = write_blob(lay, nested)
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
        "size": len(nested)}]}))
    with pytest.raises(ImageError) as err:
        store.load(lay)
    assert err.value.message == (f"no image for linux/{host_arch()} in index {digest} "
                                 f"(it has: linux/{_other_arch()})")
    assert err.value.hint == "save or pull the image for this machine's platform"


# ---- references ---------------------------------------------------------------------

def test_name_at_digest_needs_the_same_repository(store, tmp_path):
    oci_layout(tmp_path / "busybox", [BASE], ["gzip"])
    (img,) = store.load(tmp_path / "busybox")
    assert store.resolve(f"busybox@{img.manifest_digest}").id == img.id
    assert store.resolve(f"docker.io/library/busybox@{img.manifest_digest}").id == img.id
    with pytest.raises(NotFound) as err:
        store.resolve(f"evil/other@{img.manifest_digest}")
    assert err.value.message == f"no such image: evil/other@{img.manifest_digest}"


def test_failed_unpack_leaves_no_link_even_when_another_load_placed_the_layer(
        store, tmp_path, monkeypatch):
    plain = layer_tar(BASE)
    final = store.root / "images/layers" / sha(plain)[7:]

    def winner_then_disk_error(path: Path) -> None:
        final.mkdir()  # another load's layer lands first; then this load's sync fails
        raise ImageError(f"syncfs {path}: Input/output error")

    monkeypatch.setattr(layers, "_syncfs", winner_then_disk_error)
    with pytest.raises(ImageError, match="syncfs .*: Input/output error"):
        store.load(raw_layout(tmp_path / "a", [gzip.compress(plain)], [sha(plain)]))
    assert os.listdir(store.root / "images/layers/l") == []
    assert os.listdir(store.root / "images/tmp") == []
