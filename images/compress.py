"""Layer streams: detect compression by magic bytes, decompress, hash while reading.

Media types lie (a ``tar+gzip`` layer that is plain tar is common in the
wild), so the first bytes decide.  zlib, zstd and hashlib release the GIL
on large buffers, which is what lets several layers unpack at once in
threads.  zstandard is imported only when a zstd layer is met.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import BinaryIO

from pyctr.errors import ImageError

CHUNK = 1 << 18
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"


def detect(head: bytes) -> str:
    """'gzip', 'zstd', 'xz', 'bzip2' or 'plain' from the first bytes of a stream."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return "plain"


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


class _GzipReader:
    """gzip with several members and trailing padding, as layer tools produce it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.d = zlib.decompressobj(31)
        self.started = False
        self.pending = b""
        self.buf = b""
        self.eof = False

    def _input(self) -> bytes:
        if self.d.unconsumed_tail:
            return self.d.unconsumed_tail
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        return self.raw.read(CHUNK)

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n < 0 or len(self.buf) < n):
            data = self._input()
            if not data:
                if self.started:
                    raise ImageError("truncated gzip stream: compressed data ends early",
                                     hint="the layer file is incomplete; fetch it again")
                self.eof = True
                break
            self.started = True
            want = max(n - len(self.buf), CHUNK) if n >= 0 else 0
            try:
                self.buf += self.d.decompress(data, want)
            except zlib.error as exc:
                raise ImageError(f"corrupt gzip stream: {exc}",
                                 hint="the layer file is damaged; fetch it again") from None
            if self.d.eof:
                rest = self.d.unused_data
                self.d = zlib.decompressobj(31)
                self.started = False
                if rest.startswith(GZIP_MAGIC):
                    self.pending = rest
                elif rest.strip(b"\0"):
                    raise ImageError(f"corrupt gzip stream: {len(rest)} bytes of trailing garbage",
                                     hint="the layer file is damaged; fetch it again")
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out


def decompress(stream: BinaryIO) -> BinaryIO:
    """A reader of the uncompressed bytes of ``stream``, whatever its compression."""
    return open_compressed(stream)[1]


def open_compressed(stream: BinaryIO) -> tuple[str, BinaryIO]:
    """The compression of ``stream`` (see detect) and a reader of its uncompressed bytes."""
    head = stream.read(8)
    kind = detect(head)
    return kind, _decompressor(kind, _Prefixed(head, stream))  # type: ignore[arg-type]


def _decompressor(kind: str, raw: BinaryIO) -> BinaryIO:
    if kind == "plain":
        return raw  # type: ignore[return-value]
    if kind == "gzip":
        return _GzipReader(raw)  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard  # lazy: only images with zstd layers pay for it

        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK,
                                                          read_across_frames=True)
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(raw)  # type: ignore[arg-type,return-value]
    import bz2

    return bz2.BZ2File(raw)  # type: ignore[arg-type,return-value]


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
