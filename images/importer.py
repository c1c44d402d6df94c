"""Writing images into the store: read an archive, ingest its layers, commit blobs and names.

Kept out of store.py so that resolving an image (`pyctr run`) never
imports hashlib, tarfile, tempfile, shutil or the unpacker: the store
imports this module only inside ``load`` and ``import_rootfs``.

A load first sweeps the temp files dead loads left, then holds the
store's layer lock shared from its first layer until its image is in
index.json (see index.py): a concurrent ``remove`` waits, and cannot
delete a stored layer this load has decided to share.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pyctr.errors import ImageError, UserError

from . import layers
from .changes import apply_changes
from .compress import decompress, detect, read_head, undo_legacy
from .index import MANIFEST_TYPE, set_names
from .layout import host_arch
from .reference import parse_reference
from .sources import ImageSource, LayerSource, open_stdin, read_images, repo_hint
from .store import DEFAULT_PATH

if TYPE_CHECKING:
    from .store import Image, ImageStore

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def load(store: ImageStore, path: Path, repo: str | None,
         processes: bool | None = None) -> list[Image]:
    """Every image of an OCI layout dir, OCI archive or docker save tar (maybe compressed);
    its layers each in a process of its own (``processes``: see _ingest)."""
    path = Path(path)
    store._ensure()
    layers.sweep_tmp(store.dirs)
    plain = None
    try:
        if path.is_file():
            with open(path, "rb") as f:
                kind = detect(read_head(f))
            if kind != "plain":  # a compressed archive: random access needs it plain
                plain = _decompressed_copy(store, path)
        sources = read_images(plain or path, repo or repo_hint(path))
        with store.index.layers_locked(exclusive=False):
            return [_commit(store, src, procs=processes) for src in sources]
    finally:
        if plain is not None:
            plain.unlink(missing_ok=True)


def _decompressed_copy(store: ImageStore, path: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=store.dirs.tmp, prefix=layers.tmp_prefix("archive"))
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(decompress(src), dst, 1 << 20)  # type: ignore[misc]
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def import_rootfs(store: ImageStore, tar_path: Path | str, ref: str,
                  changes: list[str] | None) -> Image:
    """One layer from a (compressed) tar or '-' for stdin; the config checked before any write."""
    names = [str(parse_reference(ref))] if ref else []
    image_config = apply_changes({"Env": [DEFAULT_PATH]}, changes or [])
    store._ensure()
    layers.sweep_tmp(store.dirs)
    if str(tar_path) == "-":
        def opener() -> BinaryIO:
            return _RootfsTar(open_stdin())  # type: ignore[return-value]
    else:
        path = Path(tar_path)
        if not path.is_file():
            raise UserError(f"no such file: {path}", hint="pass a tar of a root filesystem")

        def opener() -> BinaryIO:
            return _RootfsTar(open(path, "rb"))  # type: ignore[return-value]
    from datetime import UTC, datetime  # lazy: datetime is only needed here

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with store.index.layers_locked(exclusive=False):
        layer = _ingest(store, [LayerSource(key=str(tar_path), open=opener)], [None])[0]
        config = {"architecture": host_arch(), "os": "linux", "created": now,
                  "config": image_config,
                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                  "history": [{"created": now, "created_by": "pyctr import"}]}
        src = ImageSource(names=names, config=json.dumps(config).encode(), layers=[])
        return _commit(store, src, [layer])


class _RootfsTar:
    """A rootfs tarball to import: plain, gzip or zstd as it is; xz or bzip2 made plain."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.reader = undo_legacy(raw)

    def read(self, n: int = -1) -> bytes:
        return self.reader.read(n)

    def __enter__(self) -> _RootfsTar:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def _ingest(store: ImageStore, layer_srcs: list[LayerSource], diff_ids: list[str | None],
            workers: int | None = None, cancel: threading.Event | None = None,
            procs: bool | None = False, progress=None) -> list[layers.LayerInfo]:
    """Ingest layers in threads (joined before returning: the caller may fork), or with
    ``procs`` each in a child process (layerprocs.py; ``progress`` shows what the
    children report).  ``procs=None``: processes if this process runs no other thread
    (a fork copies only the thread that forks: a library caller's threads could hold
    a lock the child needs), else threads.

    ``cancel`` (pull) is set when a layer fails or the caller is interrupted
    (Ctrl-C): the other downloads stop at their next read instead of
    finishing for nothing; each cleans up its temp files.
    """
    unique: dict[str, tuple[LayerSource, str | None]] = {}
    for src, diff_id in zip(layer_srcs, diff_ids):
        unique.setdefault(src.key, (src, diff_id))
    results: dict[str, layers.LayerInfo] = {}
    errors: list[BaseException] = []
    workers = max(1, min(len(unique), workers or min(os.cpu_count() or 1, 8)))
    # the biggest first: the last layer to finish ends the pull, and that is the biggest
    # one unless it started late
    order = sorted(unique.items(), key=lambda kv: -(kv[1][0].size or 0))
    if procs is None:
        procs = threading.active_count() == 1
    if procs:
        from . import layerprocs

        results = layerprocs.ingest(store.dirs, [v for _, v in order], workers, progress)
        return [results[src.key] for src in layer_srcs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unpack") as pool:
        futures = {key: pool.submit(layers.ingest_layer, store.dirs, src, diff_id, key)
                   for key, (src, diff_id) in order}
        try:
            for key, fut in futures.items():
                try:
                    results[key] = fut.result()
                except Exception as exc:  # noqa: BLE001 - wait for all, then report the first
                    errors.append(exc)
                    if cancel is not None:
                        cancel.set()
        except BaseException:  # Ctrl-C: stop the others before the pool waits for them
            if cancel is not None:
                cancel.set()
            for fut in futures.values():
                fut.cancel()
            raise
    if errors:
        # the first real failure, not a worker that stopped because of it
        errors.sort(key=lambda e: type(e).__name__ == "Cancelled")
        raise errors[0]
    return [results[src.key] for src in layer_srcs]


def _commit(store: ImageStore, src: ImageSource,
            done: list[layers.LayerInfo] | None = None, *, workers: int | None = None,
            cancel: threading.Event | None = None, procs: bool | None = False,
            progress=None) -> Image:
    """Layers, config and manifest blobs, then the names (called under the layer lock)."""
    cfg = json.loads(src.config)
    diff_ids = list((cfg.get("rootfs") or {}).get("diff_ids") or [])
    if done is None:
        if len(diff_ids) != len(src.layers):
            raise ImageError(f"image config lists {len(diff_ids)} diff_ids for "
                             f"{len(src.layers)} layers", hint="the image is malformed")
        done = _ingest(store, src.layers, diff_ids, workers, cancel, procs, progress)
    config_digest = layers.write_blob(store.dirs, src.config, src.config_digest or None, "config")
    manifest = src.manifest
    if manifest is None:
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest,
                       "size": len(src.config)},
            "layers": [{"mediaType": x.media_type, "digest": x.digest, "size": x.size}
                       for x in done]}).encode()
    digest = layers.write_blob(store.dirs, manifest, None, "manifest")
    with store.index.locked():
        store.index.write(set_names(store.index.entries(), digest, len(manifest), src.names))
        names = store.index.by_manifest()[digest]
    return store._image(digest, names)
