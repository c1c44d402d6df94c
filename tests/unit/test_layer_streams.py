"""The plumbing of a layer ingest: the read-ahead thread and the O_DIRECT blob writer."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import subprocess
import threading
from pathlib import Path

import pytest

from pyctr.errors import ImageError
from pyctr.images.compress import CHUNK, ReadAhead
from pyctr.images.direct import CHUNK as DIRECT_CHUNK
from pyctr.images.layers import BlobWriter


class Slow(io.RawIOBase):
    """A stream of ``n`` chunks that can fail after ``fail_after`` of them."""

    def __init__(self, n: int, fail_after: int | None = None) -> None:
        self.n = n
        self.fail_after = fail_after
        self.served = 0
        self.threads: set[str] = set()

    def read(self, size: int = -1) -> bytes:
        self.threads.add(threading.current_thread().name)
        if self.fail_after is not None and self.served == self.fail_after:
            raise ImageError("corrupt gzip stream: made up by the test")
        if self.served == self.n:
            return b""
        self.served += 1
        return bytes([self.served % 256]) * size


def test_read_ahead_hands_out_the_stream_in_order_from_its_own_thread():
    src = Slow(20)
    got = bytearray()
    with ReadAhead(src) as ahead:  # type: ignore[arg-type]
        while chunk := ahead.read(1000):
            got += chunk
    want = b"".join(bytes([i % 256]) * CHUNK for i in range(1, 21))
    assert bytes(got) == want
    assert src.threads == {"read-ahead"}


def test_read_ahead_raises_the_threads_error_where_the_reader_reaches_it():
    src = Slow(50, fail_after=3)
    with ReadAhead(src) as ahead:  # type: ignore[arg-type]
        for _ in range(3):
            assert len(ahead.read(CHUNK)) == CHUNK
        with pytest.raises(ImageError, match="made up by the test"):
            ahead.read(CHUNK)


def test_closing_stops_a_thread_blocked_on_a_full_queue():
    src = Slow(10_000)
    ahead = ReadAhead(src, depth=2)  # type: ignore[arg-type]
    ahead.read(10)
    ahead.close()
    assert not ahead.thread.is_alive()
    assert src.served < 10  # it stopped, it did not read the stream to its end


@pytest.mark.parametrize("size", [0, 1, 4096, DIRECT_CHUNK - 1, DIRECT_CHUNK,
                                  DIRECT_CHUNK + 1, 3 * DIRECT_CHUNK + 12345])
def test_a_blob_is_written_whole_whatever_its_size(tmp_path, size):
    data = os.urandom(size)
    w = BlobWriter(tmp_path)
    assert w.out.direct, "this filesystem took no O_DIRECT: the test shows nothing"
    for i in range(0, size, 70_001):  # pieces that straddle the aligned buffer
        w.write(data[i:i + 70_001])
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    assert w.commit(blobs, digest, digest, "blob") == digest
    assert (blobs / digest[7:]).read_bytes() == data
    assert list(tmp_path.glob("blob-*")) == []


def test_the_blobs_whole_chunks_bypass_the_page_cache(tmp_path):
    w = BlobWriter(tmp_path)
    flags = fcntl.fcntl(w.fd, fcntl.F_GETFL)
    assert flags & os.O_DIRECT
    w.write(b"x" * (DIRECT_CHUNK + 10))
    w.flush()  # the 10-byte tail went through the cache, with O_DIRECT off
    assert not fcntl.fcntl(w.fd, fcntl.F_GETFL) & os.O_DIRECT
    w.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.root
def test_on_a_filesystem_without_o_direct_every_write_goes_through_the_cache(tmp_path):
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "pyctr-test", str(mnt)], check=True)
    try:
        w = BlobWriter(mnt)
        try:
            assert not w.out.direct  # ramfs refused O_DIRECT
            data = os.urandom(DIRECT_CHUNK + 5)
            w.write(data)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            assert w.commit(mnt, digest, digest, "blob") == digest
        finally:
            w.discard()
        assert Path(mnt / digest[7:]).read_bytes() == data
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_wrong_digest_leaves_no_blob(tmp_path):
    w = BlobWriter(tmp_path)
    w.write(b"x" * (DIRECT_CHUNK * 2))
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    with pytest.raises(ImageError, match="digest mismatch for layer L"):
        w.commit(blobs, "sha256:" + "1" * 64, "sha256:" + "2" * 64, "layer L")
    assert list(blobs.iterdir()) == [] and list(tmp_path.glob("blob-*")) == []
