"""Reading a layer tar as a stream: headers by tarfile's parser, file data where it lies.

A tar is a run of 512-byte blocks: a header block, then the entry's data
padded to a whole block, then the next header, and two zero blocks at the
end.  ``tarfile``'s stream mode reads it correctly but slowly: it copies
the rest of its buffer at every read, so a layer of small files is copied
many times over.  Here the header block goes to ``TarInfo.frombuf`` (the
documented parser: checksum, ustar prefix, octal and base-256 numbers)
and a regular file's data is handed out as views of the chunks the stream
returned, which ``os.write`` takes without a copy.

The extended headers are read here, as tarfile does:

* pax ``x`` records (``LEN KEY=VALUE\\n``) set the next entry's path,
  linkpath, size, uid, gid, uname, gname and mtime; all of them are kept
  in ``pax_headers`` (the unpacker reads ``SCHILY.xattr.*`` there);
* a pax global header ``g`` is skipped, as containerd does;
* GNU ``L`` and ``K`` hold a long name and a long link target.

An entry's type is its header block's, whatever name an extended header
gives it, and one extended header of a kind per entry: readers disagree on
which of two wins, and an archive read two ways by two tools is how
entries get smuggled past one of them, so a second one is refused.

Sparse entries (GNU ``S``, pax ``GNU.sparse.*``) are refused: image tools
do not write them.  A truncated stream or a bad header is an ImageError
that says where it is.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from pyctr.errors import ImageError

from .compress import CHUNK

BLOCK = tarfile.BLOCKSIZE
_ZERO = bytes(BLOCK)
MAX_EXTENDED = 1 << 20  # bytes of a pax or GNU long-name header
_DATA_TYPES = tarfile.REGULAR_TYPES  # entries whose data follows the header
_PAX_INT = ("size", "uid", "gid")
_PAX_STR = {"path": "name", "linkpath": "linkname", "uname": "uname", "gname": "gname"}


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class TarReader:
    """The entries of a tar stream; ``data()`` yields the data of the entry last returned."""

    def __init__(self, stream: BinaryIO, layer: str | None = None) -> None:
        self.stream = stream
        self.where = f" (layer {layer})" if layer else ""
        self.layer = layer
        self.buf = memoryview(b"")
        self.offset = 0  # of the next byte in the stream
        self.left = 0  # data of the last entry not yet read
        self.pad = 0  # and its padding

    # -- bytes ------------------------------------------------------------------
    def _more(self, want: int) -> bool:
        data = self.stream.read(max(want, CHUNK))
        if not data:
            return False
        self.buf = memoryview(data)
        return True

    def _take(self, n: int) -> memoryview:
        """Up to ``n`` bytes from the current chunk (reading one if it is used up)."""
        if not self.buf and not self._more(n):
            return self.buf
        out = self.buf[:n]
        self.buf = self.buf[len(out):]
        self.offset += len(out)
        return out

    def _exact(self, n: int, what: str) -> bytes:
        parts = []
        need = n
        while need:
            got = self._take(need)
            if not got:
                if need == n and what == "header":
                    return b""
                self._truncated(what)
            parts.append(got)
            need -= len(got)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n:
            got = self._take(n)
            if not got:
                self._truncated("data")
            n -= len(got)

    def _truncated(self, what: str) -> None:
        raise ImageError(f"invalid layer tar: truncated {what} at byte {self.offset}{self.where}",
                         path=self.layer, hint="the layer is incomplete; fetch or build it again")

    def _invalid(self, why: str, at: int) -> ImageError:
        return ImageError(f"invalid layer tar: {why} at byte {at}{self.where}", path=self.layer,
                          hint="the layer is not a tar archive, or it is damaged")

    # -- entries ----------------------------------------------------------------
    def data(self) -> Iterator[memoryview]:
        """The data of the entry last returned, as views of the stream's chunks."""
        while self.left:
            got = self._take(self.left)
            if not got:
                self._truncated("file data")
            self.left -= len(got)
            yield got

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            info = self._next()
            if info is None:
                return
            yield info

    def _next(self) -> tarfile.TarInfo | None:
        self._skip(self.left + self.pad)
        self.left = self.pad = 0
        pax: dict[str, str] | None = None
        long_name = long_link = None
        while True:
            at = self.offset
            block = self._exact(BLOCK, "header")
            if not block:
                if at == 0:
                    raise self._invalid("empty stream", at)
                if pax is not None or long_name is not None or long_link is not None:
                    self._truncated("header")  # an extended header with no entry after it
                return None  # no end-of-archive blocks: tolerated, as tarfile does
            if block == _ZERO:
                if pax is not None or long_name is not None or long_link is not None:
                    raise self._invalid("an extended header with no entry after it", at)
                return None  # the end: the rest (the second zero block) is not read
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise self._invalid(str(exc), at) from None
            if info.size < 0 or info.uid < 0 or info.gid < 0:
                raise self._invalid(f'negative number in the header of "{info.name}"', at)
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                             tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                if info.size > MAX_EXTENDED:  # it is read into memory whole
                    raise self._invalid(f"an extended header of {info.size} bytes (at most "
                                        f"{MAX_EXTENDED}, as Go's archive/tar)", at)
                body = self._exact(info.size + (-info.size % BLOCK), "extended header")
                body = body[:info.size]
                # one of each kind for an entry: a second one is ambiguous (tarfile, Go
                # and GNU tar disagree on which wins), so it is refused
                if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                    if pax is not None:
                        raise self._invalid("two pax headers for one entry", at)
                    pax = self._pax(body, at)
                elif info.type == tarfile.GNUTYPE_LONGNAME:
                    if long_name is not None:
                        raise self._invalid("two GNU long names for one entry", at)
                    long_name = _decode(body.split(b"\0", 1)[0])
                elif info.type == tarfile.GNUTYPE_LONGLINK:
                    if long_link is not None:
                        raise self._invalid("two GNU long links for one entry", at)
                    long_link = _decode(body.split(b"\0", 1)[0])
                continue  # a global header (g) is skipped
            break
        pax = pax or {}
        if info.type == tarfile.GNUTYPE_SPARSE or any(k.startswith("GNU.sparse") for k in pax):
            raise ImageError(f'unsupported sparse tar entry "{info.name}"{self.where}',
                             path=self.layer, hint="rebuild the layer without sparse files")
        if ("path" in pax and long_name is not None) or \
                ("linkpath" in pax and long_link is not None):
            raise self._invalid(f'both a pax and a GNU long name for "{info.name}"', at)
        # the type is the header block's (frombuf made a "name/" of type 0 a directory):
        # a longer name from an extended header does not change it, as in tarfile, so
        # that what follows the header is read as the same thing by every reader
        if long_name is not None:
            info.name = long_name
        if long_link is not None:
            info.linkname = long_link
        if pax:
            self._apply_pax(info, pax, at)
        if info.type == tarfile.DIRTYPE:  # "dir/" from a long name, as tarfile reads it
            info.name = info.name.rstrip("/") or info.name
        info.offset = at
        info.offset_data = self.offset
        if info.type in _DATA_TYPES or info.type not in tarfile.SUPPORTED_TYPES:
            self.left, self.pad = info.size, -info.size % BLOCK
        return info

    def _pax(self, body: bytes, at: int) -> dict[str, str]:
        """``LEN KEY=VALUE\\n`` records; LEN counts the whole record."""
        out = {}
        pos = 0
        while pos < len(body) and body[pos] != 0:
            space = body.find(b" ", pos)
            digits = body[pos:space] if space > pos else b""
            length = int(digits) if digits.isdigit() else 0  # ASCII digits only
            record = body[space + 1:pos + length]
            if length <= 0 or pos + length > len(body) or not record.endswith(b"\n") \
                    or b"=" not in record:
                raise self._invalid("bad pax record", at)
            key, _, value = record[:-1].partition(b"=")
            out[_decode(key)] = _decode(value)
            pos += length
        return out

    def _apply_pax(self, info: tarfile.TarInfo, pax: dict[str, str], at: int) -> None:
        for key, attr in _PAX_STR.items():
            if key in pax:
                setattr(info, attr, pax[key].rstrip("/") if key == "path" else pax[key])
        try:
            for key in _PAX_INT:
                if key in pax:
                    setattr(info, key, int(pax[key]))
            if "mtime" in pax:
                info.mtime = float(pax["mtime"])
        except ValueError:
            raise self._invalid(f'bad number in the pax header of "{info.name}"', at) from None
        if info.size < 0 or info.uid < 0 or info.gid < 0:
            raise self._invalid(f'negative number in the pax header of "{info.name}"', at)
        info.pax_headers = pax
