"""Content-addressed blobs and unpacked layers: each written once, verified, renamed into place.

A blob is hashed while it is written to a temp file in the store, fsynced,
and renamed to ``blobs/sha256/<hex>`` only if its digest is right.  A layer
is unpacked into a temp dir while its compressed bytes are teed into the
blob and both digests are computed in the same pass; the dir is synced
(one syncfs) and renamed to ``layers/<diff_id hex>`` when the diff_id
matches.  A failure removes the temp files: nothing half-written is ever
visible under its final name.

A stored layer is shared only with a blob verified to be it: each layer
dir keeps ``blobs/<blob hex>`` (holding the media type) for every blob
whose uncompressed stream hashed to its diff_id.  Any other blob that
claims the layer is read and hashed again (nothing is unpacked).

Temp names carry the writer's pid (``layer-<pid>-…``) so that a load can
sweep what dead loads left (``sweep_tmp``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pyctr.errors import ImageError

from .compress import HashingReader, ReadAhead, open_layer
from .direct import DirectWriter
from .layout import StoreDirs
from .layout import hex_of as _hex
from .sources import LayerSource
from .unpack import unpack_layer

MEDIA_TYPES = {"plain": "application/vnd.oci.image.layer.v1.tar",
               "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
VERIFIED = "blobs"  # in a layer dir: the blobs verified to unpack to it
_TMP_KINDS = ("layer", "blob", "gone", "archive")


def short_id() -> str:
    """A short random name for ``layers/l/``: keeps lowerdir lists under a page."""
    return base64.b32encode(os.urandom(8)).decode()[:10]


def tmp_prefix(kind: str) -> str:
    """``kind-<pid>-``: whose temp file it is, for sweep_tmp."""
    return f"{kind}-{os.getpid()}-"


@dataclass
class LayerInfo:
    """What the manifest needs of an ingested layer."""

    digest: str
    size: int
    media_type: str
    diff_id: str


class BlobWriter:
    """A temp file in the store that becomes a blob only once its digest is verified.

    A blob is written once and read back rarely (push, save): it is written
    around the page cache where the filesystem allows it (direct.py).
    """

    def __init__(self, tmp: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp, prefix=tmp_prefix("blob"))
        self.path = Path(name)
        self.fd = fd
        self.out = DirectWriter(fd)

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def flush(self) -> None:
        self.out.finish()

    def commit(self, blobs: Path, got: str, expected: str | None, what: str,
               synced: bool = False) -> str:
        """Rename into ``blobs`` if ``got`` is ``expected``; otherwise delete and raise.

        ``synced``: the caller has synced the whole filesystem since the last
        write (a layer's syncfs), so no fsync of its own is needed.
        """
        self.flush()
        if not synced:
            os.fsync(self.fd)
        self._close()
        if expected is not None and got != expected:
            self.discard()
            raise ImageError(f"digest mismatch for {what}: expected {expected}, got {got}",
                             hint="the image is corrupt; fetch or save it again")
        os.replace(self.path, blobs / _hex(got))
        return got

    def _close(self) -> None:
        self.out.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self._close()
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


# -- the blob ↔ diff_id pairing ------------------------------------------------
def _record_verified(layer: Path, digest: str, media_type: str) -> None:
    (layer / VERIFIED).mkdir(exist_ok=True)
    (layer / VERIFIED / _hex(digest)).write_text(media_type)


def _verified_media_type(dirs: StoreDirs, digest: str | None, diff_id: str) -> str | None:
    """The media type of ``digest`` if it is stored and was verified to unpack to ``diff_id``."""
    if digest is None or not (dirs.blobs / _hex(digest)).is_file():
        return None
    try:
        return (dirs.layer_dir(diff_id) / VERIFIED / _hex(digest)).read_text() or None
    except OSError:  # never verified (or written by another load this instant)
        return None


def _verify(w: BlobWriter, dirs: StoreDirs, src: LayerSource, packed: HashingReader,
            plain: HashingReader, diff_id: str | None, what: str) -> None:
    """Both digests right, or raise: the blob's first, then the diff_id."""
    if src.digest is not None and packed.digest != src.digest:
        w.commit(dirs.blobs, packed.digest, src.digest, what)  # raises
    if diff_id is not None and plain.digest != diff_id:
        raise ImageError(f"diff_id mismatch for {what}: expected {diff_id}, got {plain.digest}",
                         hint="the uncompressed layer is not the one the image config names")


def _check(w: BlobWriter, dirs: StoreDirs, src: LayerSource, packed: HashingReader,
           plain: HashingReader, diff_id: str | None, what: str) -> str:
    """Commit the blob once both digests are right."""
    _verify(w, dirs, src, packed, plain, diff_id, what)
    return w.commit(dirs.blobs, packed.digest, src.digest, what)


def _copy_blob(dirs: StoreDirs, src: LayerSource, diff_id: str, label: str) -> LayerInfo:
    """The layer is stored already: copy the blob, verifying that it unpacks to ``diff_id``."""
    what = f"layer {src.digest or label}"
    w = BlobWriter(dirs.tmp)
    try:
        with src.open() as raw:
            packed = HashingReader(raw, w)  # type: ignore[arg-type]
            kind, plain_stream = open_layer(packed, src.digest or label)  # type: ignore[arg-type]
            plain = HashingReader(plain_stream)
            plain.drain()
            packed.drain()
        digest = _check(w, dirs, src, packed, plain, diff_id, what)
    except BaseException:
        w.discard()
        raise
    _record_verified(dirs.layer_dir(diff_id), digest, MEDIA_TYPES[kind])
    return LayerInfo(digest, packed.size, MEDIA_TYPES[kind], diff_id)


def _blame_the_digest(packed: HashingReader, digest: str | None, label: str) -> None:
    """A layer that does not decompress or unpack: if its bytes are not the ones the
    manifest names either, say that (the cause) rather than the decoder's complaint."""
    if digest is None:
        return
    try:
        packed.drain()
    except Exception:  # noqa: BLE001 - the stream itself failed: the first error stands
        return
    if packed.digest != digest:
        raise ImageError(f"digest mismatch for layer {digest}: expected {digest}, "
                         f"got {packed.digest}",
                         hint="the blob is not what the manifest names; fetch it again")


def _syncfs(path: Path) -> None:
    """One syncfs for a whole unpacked layer: an fsync per file costs more than the unpack."""
    import ctypes  # lazy: only layer writes need it

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise ImageError(f"syncfs {path}: {os.strerror(err)}", errno=err,
                             hint="the store's filesystem failed to write the layer")
    finally:
        os.close(fd)


def ingest_layer(dirs: StoreDirs, src: LayerSource, diff_id: str | None,
                 label: str) -> LayerInfo:
    """Store a layer's blob and unpack it once by diff_id; verify both digests in one pass.

    The caller holds the store's layer lock (shared): a stored layer seen
    here is not removed before the image that uses it is indexed.
    """
    if diff_id and dirs.layer_dir(diff_id).is_dir():
        media_type = _verified_media_type(dirs, src.digest, diff_id)
        if media_type is not None and src.digest is not None:
            size = (dirs.blobs / _hex(src.digest)).stat().st_size
            return LayerInfo(src.digest, size, media_type, diff_id)
        return _copy_blob(dirs, src, diff_id, label)
    tmpdir = Path(tempfile.mkdtemp(dir=dirs.tmp, prefix=tmp_prefix("layer")))
    w = BlobWriter(dirs.tmp)
    link = None  # ours in layers/l until the layer dir it points at is in place
    try:
        with src.open() as raw:
            packed = HashingReader(raw, w)  # type: ignore[arg-type]
            try:
                kind, plain_stream = open_layer(packed, src.digest or label)  # type: ignore[arg-type]
                plain = HashingReader(plain_stream)
                with ReadAhead(plain) as ahead:  # type: ignore[arg-type]
                    unpacked = unpack_layer(ahead, tmpdir / "diff", layer=src.digest or label)  # type: ignore[arg-type]
                    ahead.drain()
            except ImageError:
                _blame_the_digest(packed, src.digest, label)
                raise
            packed.drain()
        what = f"layer {src.digest or label}"
        _verify(w, dirs, src, packed, plain, diff_id, what)
        digest, diff_id = packed.digest, plain.digest
        final = dirs.layer_dir(diff_id)
        (tmpdir / "size").write_text(str(unpacked))
        _record_verified(tmpdir, digest, MEDIA_TYPES[kind])
        link = short_id()
        (tmpdir / "link").write_text(link)
        (dirs.layers / "l" / link).symlink_to(f"../{_hex(diff_id)}/diff")
        w.flush()
        _syncfs(tmpdir)  # one sync for the layer's files and its blob, before either is named
        w.commit(dirs.blobs, digest, src.digest, what, synced=True)
        try:
            os.rename(tmpdir, final)
            link = None
        except OSError:
            if not final.is_dir():
                raise
            (dirs.layers / "l" / link).unlink()  # another load won the race: share its layer
            link = None
            shutil.rmtree(tmpdir)
            _record_verified(final, digest, MEDIA_TYPES[kind])
        return LayerInfo(digest, packed.size, MEDIA_TYPES[kind], diff_id)
    except BaseException:
        w.discard()
        if link is not None:
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
    gone = Path(tempfile.mkdtemp(dir=dirs.tmp, prefix=tmp_prefix("gone")))
    try:
        os.rename(layer, gone / "layer")
    except FileNotFoundError:
        pass
    if link:
        (dirs.layers / "l" / link).unlink(missing_ok=True)
    shutil.rmtree(gone, ignore_errors=True)


# -- what dead loads left behind --------------------------------------------------
def _started(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), None if it is gone (a zombie is:
    it writes nothing more, and a reaper that never comes would keep its files forever)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # field 3: state
            return None
        ticks = int(fields[19])  # field 22: starttime
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _stale(name: str, mtime: float, me_started: float) -> bool:
    """Its writer is dead, or its pid now names a process started after the file was last written."""
    kind, _, rest = name.partition("-")
    pid = rest.partition("-")[0]
    if kind not in _TMP_KINDS or not pid.isdigit():
        return mtime < me_started  # an older pyctr's name: stale if older than this process
    started = _started(int(pid))
    return started is None or started > mtime + 2  # btime is whole seconds: some slack


def _tree_bytes(path: Path) -> int:
    """The bytes of the files under ``path`` (the space a removal frees, near enough)."""
    total = 0
    for top, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(top, f)).st_size
            except OSError:
                pass
    return total


def sweep_tmp(dirs: StoreDirs) -> int:
    """Remove temp files and dirs whose writer died (a crash or kill -9 mid-load); bytes freed."""
    me_started = _started(os.getpid()) or 0.0
    try:
        names = os.listdir(dirs.tmp)
    except FileNotFoundError:
        return 0
    freed = 0
    for name in names:
        path = dirs.tmp / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not _stale(name, st.st_mtime, me_started):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            freed += _tree_bytes(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            freed += st.st_size
            path.unlink(missing_ok=True)
    return freed
