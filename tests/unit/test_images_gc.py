"""ImageStore.gc: what an interrupted load or import leaves is removed; what images use stays."""

from __future__ import annotations

import gzip
import io
import os
import threading
import time

import pytest

from pyctr.images import layers
from pyctr.images.sources import LayerSource
from pyctr.images.store import ImageStore
from tests.unit.test_images_store import layer_tar, oci_layout, sha, store_files
from tests.unit.test_images_store_safety import _blocked_on_flock, _dead_pid, dangling_links

KEPT = [{"etc/hostname": b"kept\n"}, {"bin/tool": b"#!/bin/sh\n"}]


@pytest.fixture
def store(tmp_path) -> ImageStore:
    return ImageStore(tmp_path / "root")


def interrupted_import(store: ImageStore, files: dict[str, bytes]) -> tuple[str, str]:
    """What `pyctr import` leaves when killed after its layer is in place but before
    index.json names the image: the layer blob, the layer dir and its l/ link."""
    blob = gzip.compress(layer_tar(files))
    src = LayerSource(key="killed", open=lambda: io.BytesIO(blob))
    with store.index.layers_locked(exclusive=False):
        info = layers.ingest_layer(store.dirs, src, None, "killed")
    return info.digest, info.diff_id


def test_gc_removes_what_an_interrupted_import_left_and_keeps_every_image_file(
        store, tmp_path):
    oci_layout(tmp_path / "kept", KEPT, ["gzip", "zstd"])
    (image,) = store.load(tmp_path / "kept")
    before = store_files(store)
    links_before = sorted(os.listdir(store.root / "images/layers/l"))

    digest, diff_id = interrupted_import(store, {"orphan": b"left behind\n"})
    assert (store.dirs.blobs / digest[7:]).is_file()
    assert (store.dirs.layer_dir(diff_id) / "diff/orphan").is_file()
    assert len(os.listdir(store.root / "images/layers/l")) == len(links_before) + 1
    dead = _dead_pid()
    (store.dirs.tmp / f"layer-{dead}-abc/diff").mkdir(parents=True)
    (store.dirs.tmp / f"layer-{dead}-abc/diff/f").write_text("half")
    (store.dirs.tmp / f"blob-{dead}-def").write_bytes(b"half a blob")
    (store.root / "images/layers/l/DANGLING00").symlink_to("../" + "0" * 64 + "/diff")
    live = store.dirs.tmp / f"blob-{os.getpid()}-live"  # a live load's: never touched
    live.write_bytes(b"in use")

    out = store.gc()

    assert out[:-1] == [f"Deleted: {digest}", f"Deleted: {diff_id}"]
    assert out[-1].startswith("Total reclaimed space: ") and out[-1] != "Total reclaimed space: 0B"
    assert store_files(store) == before + [f"tmp/{live.name}"]
    assert sorted(os.listdir(store.root / "images/layers/l")) == links_before
    assert dangling_links(store) == []
    assert os.listdir(store.dirs.tmp) == [live.name]
    again = store.resolve("kept:latest")
    assert again.diff_ids == image.diff_ids
    assert (store.layer_paths(again)[0] / "etc/hostname").read_bytes() == b"kept\n"
    assert len(store.short_links(again)) == 2

    assert store.gc() == ["Total reclaimed space: 0B"]
    assert store_files(store) == before + [f"tmp/{live.name}"]


def test_gc_keeps_a_layer_an_image_shares_with_what_was_interrupted(store, tmp_path):
    oci_layout(tmp_path / "kept", KEPT[:1], ["plain"])
    (image,) = store.load(tmp_path / "kept")
    # the same layer gzipped: a second blob verified to unpack to the stored layer
    digest, diff_id = interrupted_import(store, KEPT[0])
    assert diff_id == image.diff_ids[0] and digest != diff_id

    assert store.gc()[:-1] == [f"Deleted: {digest}"]
    assert (store.layer_paths(image)[0] / "etc/hostname").read_bytes() == b"kept\n"
    assert dangling_links(store) == []


def test_gc_of_an_empty_store_creates_it_and_deletes_nothing(store):
    assert store.gc() == ["Total reclaimed space: 0B"]


def test_gc_waits_for_a_running_load_and_keeps_what_it_wrote(store, tmp_path, monkeypatch):
    oci_layout(tmp_path / "new", [{"etc/hostname": b"new\n"}], ["gzip"])
    original = layers.ingest_layer
    collector: list[threading.Thread] = []
    results: list[list[str]] = []

    def ingest_then_gc(dirs, src, diff_id, label):
        info = original(dirs, src, diff_id, label)
        # the layer is in place but index.json does not name it yet: gc must wait
        t = threading.Thread(target=lambda: results.append(store.gc()))
        collector.append(t)
        t.start()
        deadline = time.monotonic() + 10
        while t.is_alive() and not _blocked_on_flock() and time.monotonic() < deadline:
            time.sleep(0.005)
        return info

    monkeypatch.setattr(layers, "ingest_layer", ingest_then_gc)
    (image,) = store.load(tmp_path / "new", processes=False)  # the hook runs in this process
    collector[0].join(10)
    assert not collector[0].is_alive()
    assert results == [["Total reclaimed space: 0B"]]
    assert image.diff_ids == [sha(layer_tar({"etc/hostname": b"new\n"}))]
    assert (store.layer_paths(store.resolve("new"))[0] / "etc/hostname").read_bytes() == b"new\n"
