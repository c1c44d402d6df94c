"""`pyctr save -o FILE NAME...`: images out of the store as an OCI archive.

An OCI archive is an OCI image layout in a tar: ``oci-layout``,
``index.json`` naming each image, and ``blobs/sha256/<hex>`` for every
manifest, config and layer (each once, however many images share it).
Each image's entry in index.json carries two annotations, as docker 25+
and containerd write them: ``io.containerd.image.name`` (the full name,
``docker.io/library/busybox:latest``) and ``org.opencontainers.image.ref.name``
(the tag, what ``skopeo`` and ``umoci`` address as ``oci-archive:FILE:TAG``).
`pyctr load`, skopeo, podman and docker read it.

The blobs are the store's own bytes: a save of a pulled image has the
registry's digests.  The archive is written next to FILE and renamed onto
it at the end: an interrupted save leaves no partial FILE.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pyctr.errors import ImageError, UserError

from .index import MANIFEST_TYPE
from .layout import REF_NAME
from .reference import parse_reference
from .sources import CONTAINERD_NAME

if TYPE_CHECKING:
    from .store import ImageStore


def _entries(store: ImageStore, refs: list[str]) -> list[dict]:
    """index.json's manifests: one per name asked for (an id: the image, nameless)."""
    out: list[dict] = []
    for ref in refs:
        digest, _, matched = store._find(ref)
        size = (store.dirs.blobs / digest[7:]).stat().st_size
        mtype = json.loads(store._blob(digest)).get("mediaType") or MANIFEST_TYPE
        entry = {"mediaType": mtype, "digest": digest, "size": size}
        if matched is not None:
            parsed = parse_reference(matched)
            ann = {CONTAINERD_NAME: matched}
            if parsed.tag:
                ann[REF_NAME] = parsed.tag
            entry["annotations"] = ann
        if entry not in out:
            out.append(entry)
    return out


def _blobs(store: ImageStore, entries: list[dict]) -> list[str]:
    """Every blob the images need, each once, manifests first."""
    seen: dict[str, None] = {}
    for e in entries:
        doc = json.loads(store._blob(e["digest"]))
        for d in (e["digest"], doc["config"]["digest"], *(x["digest"] for x in doc["layers"])):
            seen.setdefault(d, None)
    for d in seen:
        if not (store.dirs.blobs / d[7:]).is_file():
            raise ImageError(f"blob {d} is missing from the store",
                             hint="pull or load the image again, then save it")
    return list(seen)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(store: ImageStore, refs: list[str], out: BinaryIO) -> None:
    """The OCI archive of ``refs`` into the stream ``out``."""
    entries = _entries(store, refs)
    blobs = _blobs(store, entries)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": entries}).encode())
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for d in blobs:
            path = store.dirs.blobs / d[7:]
            info = tarfile.TarInfo(f"blobs/sha256/{d[7:]}")
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as f:
                tar.addfile(info, f)


def save(store: ImageStore, refs: list[str], output: str | None) -> None:
    """``output``: a file (written whole or not at all), or None / '-' for stdout."""
    if not refs:
        raise UserError("save needs at least one image", hint="pyctr save -o FILE IMAGE...")
    if output in (None, "-"):
        import sys

        if sys.stdout.isatty():
            raise UserError("cowardly refusing to save to a terminal",
                            hint="use -o FILE or redirect the output")
        sys.stdout.flush()
        with os.fdopen(os.dup(sys.stdout.fileno()), "wb") as out:
            write_archive(store, refs, out)
        return
    target = Path(output)
    if target.is_dir():
        raise UserError(f"{target} is a directory", hint="-o names the archive file to write")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {target}: no such directory {parent}",
                        hint="make the directory first")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            write_archive(store, refs, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
