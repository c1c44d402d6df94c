"""Layer streams: detect compression by magic bytes, decompress, hash while reading.

Media types lie (a ``tar+gzip`` layer that is plain tar is common in the
wild), so the first bytes decide, once, where a layer is ingested: a tar
header is recognized first, so a plain layer whose first entry is named
``BZh…`` stays plain.  Layers may be plain, gzip or zstd (all that OCI
knows); xz and bzip2 are refused for layers, but read for whole archives
(``docker save | xz``) and for ``import``, which stores the plain tar.  Every decompressor's error becomes an ImageError.
zlib, zstd and hashlib release the GIL on large buffers, which is what
lets several layers unpack at once in threads.  zstandard is imported only
when a zstd stream is met.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from typing import BinaryIO

from pyctr.errors import ImageError

CHUNK = 1 << 18
HEAD = 512  # one tar header: enough to tell a tar from every magic below
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"
_BZIP2_BLOCKS = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")  # block, end
LAYER_KINDS = ("plain", "gzip", "zstd")


def _is_tar_header(head: bytes) -> bool:
    """A ustar/GNU magic, or (v7 tars have none) a header checksum that adds up."""
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    try:
        stored = int(head[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 8 * 32 + sum(head[156:512])


def detect(head: bytes) -> str:
    """'plain', 'gzip', 'zstd', 'xz' or 'bzip2' from the first bytes (up to HEAD) of a stream."""
    if _is_tar_header(head):
        return "plain"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC) and head[3:4] in b"123456789" and len(head) >= 10 \
            and head[4:10] in _BZIP2_BLOCKS:
        return "bzip2"
    return "plain"


def read_head(stream: BinaryIO, n: int = HEAD) -> bytes:
    """Up to ``n`` bytes: pipes may return less per read."""
    head = b""
    while len(head) < n:
        data = stream.read(n - len(head))
        if not data:
            break
        head += data
    return head


class _Prefixed:
    """A stream with bytes already peeked from it put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head = head
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                out, self.head = self.head + self.raw.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.raw.read(n)


def _inflater():
    """A gzip decompressor and the errors it raises: ISA-L's (python-isal) when installed,
    about twice as fast as zlib's here (it is where a pull spends its user time), else
    zlib's.  Both take the same calls."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.decompressobj(31), (zlib.error,)
    return isal_zlib.decompressobj(31), (isal_zlib.error, zlib.error)


class _GzipReader:
    """gzip with several members and trailing padding, as layer tools produce it.

    What is decompressed is handed out from ``buf`` at offset ``pos``: a read
    copies only what it returns, never the rest of the buffer.
    """

    def __init__(self, raw: BinaryIO, label: str | None = None) -> None:
        self.raw = raw
        self.where = f" (layer {label})" if label else ""
        self.d, self.errors = _inflater()
        self.started = False
        self.pending = b""
        self.buf = b""
        self.pos = 0
        self.eof = False

    def _input(self) -> bytes:
        if self.d.unconsumed_tail:
            return self.d.unconsumed_tail
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        return self.raw.read(CHUNK)

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n < 0 or len(self.buf) - self.pos < n):
            data = self._input()
            if not data:
                if self.started:
                    raise ImageError(f"truncated gzip stream: compressed data ends early{self.where}",
                                     hint="the layer file is incomplete; fetch it again")
                self.eof = True
                break
            self.started = True
            want = max(n - (len(self.buf) - self.pos), CHUNK) if n >= 0 else 0
            try:
                more = self.d.decompress(data, want)
            except self.errors as exc:
                raise ImageError(f"corrupt gzip stream: {exc}{self.where}",
                                 hint="the layer file is damaged; fetch it again") from None
            self.buf = self.buf[self.pos:] + more if self.pos < len(self.buf) else more
            self.pos = 0
            if self.d.eof:
                rest = self.d.unused_data
                self.d, self.errors = _inflater()
                self.started = False
                if rest.startswith(GZIP_MAGIC):
                    self.pending = rest
                elif rest.strip(b"\0"):
                    raise ImageError(f"corrupt gzip stream: {len(rest)} bytes of trailing garbage"
                                     f"{self.where}",
                                     hint="the layer file is damaged; fetch it again")
        if n < 0 or n >= len(self.buf) - self.pos:
            out = self.buf[self.pos:] if self.pos else self.buf
            self.buf, self.pos = b"", 0
        else:
            out = self.buf[self.pos:self.pos + n]
            self.pos += n
        return out


class _Checked:
    """A decompressor whose library errors become ImageErrors naming the layer."""

    def __init__(self, kind: str, reader: BinaryIO, errors: tuple, label: str | None) -> None:
        self.kind = kind
        self.reader = reader
        self.errors = errors
        self.label = label

    def read(self, n: int = -1) -> bytes:
        try:
            return self.reader.read(n)
        except self.errors as exc:
            where = f" (layer {self.label})" if self.label else ""
            raise ImageError(f"corrupt {self.kind} stream: {exc}{where}",
                             hint="the file is damaged or truncated; fetch it again") from None


def decompress(stream: BinaryIO) -> BinaryIO:
    """A reader of the uncompressed bytes of a whole archive, whatever its compression."""
    head = read_head(stream)
    return _decompressor(detect(head), _Prefixed(head, stream), None)  # type: ignore[arg-type]


def open_layer(stream: BinaryIO, label: str) -> tuple[str, BinaryIO]:
    """The compression of a layer blob (plain, gzip or zstd) and a reader of its tar.

    The one place a layer's compression is detected: what this returns is
    the tar itself, unpacked as it is (gzip(gzip(tar)) is not a layer).
    """
    head = read_head(stream)
    kind = detect(head)
    if kind not in LAYER_KINDS:
        raise ImageError(f"unsupported layer compression {kind} (layer {label})",
                         hint="OCI layers are plain tar, gzip or zstd: recompress the layer "
                              "with gzip or zstd")
    return kind, _decompressor(kind, _Prefixed(head, stream), label)  # type: ignore[arg-type]


def undo_legacy(stream: BinaryIO) -> BinaryIO:
    """``stream`` as it is, or decompressed if xz or bzip2: for ``import``, which takes them
    (as docker import does) and stores the plain tar, since a layer cannot be either."""
    head = read_head(stream)
    kind = detect(head)
    prefixed = _Prefixed(head, stream)
    if kind in LAYER_KINDS:
        return prefixed  # type: ignore[return-value]
    return _decompressor(kind, prefixed, None)  # type: ignore[arg-type]


def _decompressor(kind: str, raw: BinaryIO, label: str | None) -> BinaryIO:
    if kind == "plain":
        return raw  # type: ignore[return-value]
    if kind == "gzip":
        return _GzipReader(raw, label)  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard  # lazy: only images with zstd layers pay for it

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK,
                                                            read_across_frames=True)
        return _Checked(kind, reader, (zstandard.ZstdError,), label)  # type: ignore[return-value]
    if kind == "xz":
        import lzma

        return _Checked(kind, lzma.LZMAFile(raw), (lzma.LZMAError, EOFError),  # type: ignore[arg-type,return-value]
                        label)
    import bz2

    return _Checked(kind, bz2.BZ2File(raw), (OSError, EOFError), label)  # type: ignore[arg-type,return-value]


class HashingReader:
    """Hash (and optionally copy to ``tee``) every byte read, so one pass verifies a digest."""

    def __init__(self, raw: BinaryIO, tee: BinaryIO | None = None) -> None:
        self.raw = raw
        self.tee = tee
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.hash.update(data)
            self.size += len(data)
            if self.tee is not None:
                self.tee.write(data)
        return data

    def drain(self) -> None:
        """Read to the end: a tar reader stops at the end-of-archive blocks, the digest does not."""
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class ReadAhead:
    """Read ``stream`` in a thread of its own, a few chunks ahead of the reader.

    A layer is two jobs: download, hash, decompress and hash again (all of
    it in C, without the GIL), then parse the tar and write the files (much
    of it Python).  With the first in this thread and the second in the
    caller's, one layer keeps two cores busy.  ``read`` hands out each chunk
    as it came (it may return less than asked, like a raw read); an
    exception in the thread is raised by the ``read`` that reaches it.
    Closing stops the thread (it ends at its next chunk) and waits for it.
    """

    def __init__(self, stream: BinaryIO, depth: int = 8) -> None:
        self.stream = stream
        self.chunks: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.buf = memoryview(b"")
        self.eof = False
        self.thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.stream.read(CHUNK)
                self.chunks.put(data)
                if not data:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            self.chunks.put(exc)

    def read(self, n: int = -1) -> bytes | memoryview:
        if not self.buf and not self.eof:
            item = self.chunks.get()
            if isinstance(item, BaseException):
                self.eof = True
                raise item
            self.eof = not item
            self.buf = memoryview(item)
        if n < 0 or n >= len(self.buf):
            out, self.buf = self.buf, memoryview(b"")
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def drain(self) -> None:
        """Read to the end: the thread's hashes then cover the whole stream."""
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:  # make room: a thread blocked on a full queue sees the stop
                self.chunks.get(timeout=0.05)
            except queue.Empty:
                pass
        self.thread.join()

    def __enter__(self) -> ReadAhead:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
