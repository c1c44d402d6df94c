"""Writing a file around the page cache (O_DIRECT), for data written once and synced at once.

A write() normally copies into the page cache and the kernel writes the
pages back later.  A pull syncs every layer before it names it, so its
data goes to the disk during the pull either way; O_DIRECT sends it there
from our buffer and skips the copy into the cache (and, on a VM, the cost
of each new page the cache takes from the hypervisor: more than the disk
write itself here).  What is not cached is read from the disk the first
time it is used: that is why only the blob and big files are written so.

O_DIRECT wants the memory, the length and the file offset aligned to the
device's block: data is gathered in an mmap'd buffer (page-aligned), the
buffer is written whole, and the tail that is not a whole block goes
through the cache with O_DIRECT turned off (fcntl may change it on an
open file).  A filesystem that refuses O_DIRECT (ramfs, some FUSE) gets
every write through the cache.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

CHUNK = 1 << 20  # bytes per O_DIRECT write: whole aligned MiBs
ALIGN = 4096  # a multiple of every logical block size


def write_all(fd: int, data) -> None:
    with memoryview(data) as view:
        while view:
            view = view[os.write(fd, view):]


def _set_direct(fd: int, on: bool) -> bool:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False  # this filesystem takes no O_DIRECT
    return True


def _is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)


class DirectWriter:
    """Write ``fd`` with O_DIRECT where its filesystem takes it; ``finish`` writes the tail.

    ``buf`` (an mmap of CHUNK bytes) may be shared by writers used one
    after the other; without one, the writer maps its own.
    """

    def __init__(self, fd: int, buf: mmap.mmap | None = None) -> None:
        self.fd = fd
        self.fill = 0
        self.own = buf is None
        self.buf: mmap.mmap | None = None
        if _set_direct(fd, True):
            self.buf = buf if buf is not None else mmap.mmap(-1, CHUNK)

    @property
    def direct(self) -> bool:
        return self.buf is not None

    def write(self, data) -> None:
        view = memoryview(data)
        while view and self.buf is not None:
            n = min(len(view), CHUNK - self.fill)
            self.buf[self.fill:self.fill + n] = view[:n]
            self.fill += n
            view = view[n:]
            if self.fill == CHUNK:
                self._write(CHUNK)
        if view:
            write_all(self.fd, view)

    def _write(self, n: int) -> None:
        assert self.buf is not None
        done = 0
        with memoryview(self.buf) as view:
            while done < n:
                try:
                    done += os.write(self.fd, view[done:n])
                except OSError as exc:
                    # the device wants a larger alignment, or a short write left the
                    # offset unaligned: the rest goes through the cache
                    if exc.errno != errno.EINVAL or not _is_direct(self.fd):
                        raise
                    _set_direct(self.fd, False)
        self.fill -= n
        if self.fill:
            self.buf.move(0, n, self.fill)

    def finish(self) -> None:
        """Write what is left: its whole blocks directly, the last part block through the cache."""
        if self.buf is None:
            return
        whole = self.fill - self.fill % ALIGN
        if whole:
            self._write(whole)
        _set_direct(self.fd, False)
        if self.fill:
            with memoryview(self.buf) as view:
                write_all(self.fd, view[:self.fill])
            self.fill = 0
        self.close()

    def close(self) -> None:
        if self.buf is not None and self.own:
            self.buf.close()
        self.buf = None
