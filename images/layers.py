"""Content-addressed blobs and unpacked layers: each written once, verified, renamed into place.

A blob is hashed while it is written to a temp file in the store, fsynced,
and renamed to ``blobs/sha256/<hex>`` only if its digest is right.  A layer
is unpacked into a temp dir while its compressed bytes are teed into the
blob and both digests are computed in the same pass; the dir is renamed to
``layers/<diff_id hex>`` when the diff_id matches.  A failure removes the
temp files: nothing half-written is ever visible under its final name.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pyctr.errors import ImageError

from .compress import HashingReader, open_compressed
from .layout import StoreDirs
from .layout import hex_of as _hex
from .sources import LayerSource
from .unpack import unpack_layer

MEDIA_TYPES = {"plain": "application/vnd.oci.image.layer.v1.tar",
               "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def short_id() -> str:
    """A short random name for ``layers/l/``: keeps lowerdir lists under a page."""
    return base64.b32encode(os.urandom(8)).decode()[:10]


@dataclass
class LayerInfo:
    """What the manifest needs of an ingested layer."""

    digest: str
    size: int
    media_type: str
    diff_id: str


class BlobWriter:
    """A temp file in the store that becomes a blob only once its digest is verified."""

    def __init__(self, tmp: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp, prefix="blob-")
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def commit(self, blobs: Path, got: str, expected: str | None, what: str) -> str:
        """Rename into ``blobs`` if ``got`` is ``expected``; otherwise delete and raise."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if expected is not None and got != expected:
            self.discard()
            raise ImageError(f"digest mismatch for {what}: expected {expected}, got {got}",
                             hint="the image is corrupt; fetch or save it again")
        os.replace(self.path, blobs / _hex(got))
        return got

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)


def write_blob(dirs: StoreDirs, data: bytes, expected: str | None = None,
               what: str = "blob") -> str:
    """Store ``data`` verified against ``expected`` (when given); return its digest."""
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if (dirs.blobs / _hex(got)).exists() and (expected is None or got == expected):
        return got
    w = BlobWriter(dirs.tmp)
    try:
        w.write(data)
    except BaseException:
        w.discard()
        raise
    return w.commit(dirs.blobs, got, expected, what)




def _copy_blob(dirs: StoreDirs, src: LayerSource, label: str) -> tuple[str, int, str]:
    """Only the blob (its layer is unpacked already): copy and verify."""
    w = BlobWriter(dirs.tmp)
    try:
        with src.open() as raw:
            reader = HashingReader(raw, w)  # type: ignore[arg-type]
            kind, _ = open_compressed(reader)  # type: ignore[arg-type]
            reader.drain()
        digest = w.commit(dirs.blobs, reader.digest, src.digest, f"layer {label}")
    except BaseException:
        w.discard()
        raise
    return digest, reader.size, MEDIA_TYPES.get(kind, src.media_type or MEDIA_TYPES["plain"])


def ingest_layer(dirs: StoreDirs, src: LayerSource, diff_id: str | None,
                 label: str) -> LayerInfo:
    """Store a layer's blob and unpack it once by diff_id; verify both digests in one pass."""
    if diff_id and dirs.layer_dir(diff_id).is_dir():
        if src.digest and (dirs.blobs / _hex(src.digest)).is_file():
            size = (dirs.blobs / _hex(src.digest)).stat().st_size
            return LayerInfo(src.digest, size, src.media_type or MEDIA_TYPES["plain"], diff_id)
        digest, size, mtype = _copy_blob(dirs, src, label)
        return LayerInfo(digest, size, mtype, diff_id)
    tmpdir = Path(tempfile.mkdtemp(dir=dirs.tmp, prefix="layer-"))
    w = BlobWriter(dirs.tmp)
    link = None
    try:
        with src.open() as raw:
            packed = HashingReader(raw, w)  # type: ignore[arg-type]
            kind, plain_stream = open_compressed(packed)  # type: ignore[arg-type]
            plain = HashingReader(plain_stream)
            unpacked = unpack_layer(plain, tmpdir / "diff", layer=src.digest or label)  # type: ignore[arg-type]
            plain.drain()
            packed.drain()
        what = f"layer {src.digest or label}"
        if src.digest is not None and packed.digest != src.digest:  # the blob first
            w.commit(dirs.blobs, packed.digest, src.digest, what)
        if diff_id is not None and plain.digest != diff_id:
            raise ImageError(f"diff_id mismatch for {what}: expected {diff_id}, got {plain.digest}",
                             hint="the uncompressed layer is not the one the image config names")
        digest = w.commit(dirs.blobs, packed.digest, src.digest, what)
        diff_id = plain.digest
        (tmpdir / "size").write_text(str(unpacked))
        link = short_id()
        (tmpdir / "link").write_text(link)
        (dirs.layers / "l" / link).symlink_to(f"../{_hex(diff_id)}/diff")
        try:
            os.rename(tmpdir, dirs.layer_dir(diff_id))
        except OSError:
            if not dirs.layer_dir(diff_id).is_dir():
                raise
            (dirs.layers / "l" / link).unlink()  # another load won the race: share its layer
            shutil.rmtree(tmpdir)
        return LayerInfo(digest, packed.size, MEDIA_TYPES.get(kind, MEDIA_TYPES["plain"]), diff_id)
    except BaseException:
        w.discard()
        if link is not None and not dirs.layer_dir(diff_id or "x:x").is_dir():
            (dirs.layers / "l" / link).unlink(missing_ok=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise


def remove_layer(dirs: StoreDirs, diff_id: str) -> None:
    """Rename away first, so a half-deleted layer is never seen under its name."""
    layer = dirs.layer_dir(diff_id)
    try:
        link = (layer / "link").read_text().strip()
    except OSError:
        link = ""
    gone = Path(tempfile.mkdtemp(dir=dirs.tmp, prefix="gone-"))
    try:
        os.rename(layer, gone / "layer")
    except FileNotFoundError:
        pass
    if link:
        (dirs.layers / "l" / link).unlink(missing_ok=True)
    shutil.rmtree(gone, ignore_errors=True)


def open_stdin() -> BinaryIO:
    import sys

    return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
