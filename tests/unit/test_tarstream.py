"""TarReader reads what tarfile reads: the same entries, fields and data, in every format."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from pyctr.errors import ImageError
from pyctr.images.tarstream import TarReader

FIELDS = ("name", "type", "size", "mode", "uid", "gid", "uname", "gname", "mtime",
          "linkname", "devmajor", "devminor")


def build(fmt: int, extra_pax: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=extra_pax or {}) as tf:
        def add(name, kind=tarfile.REGTYPE, data=b"", **kw):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            info.mtime = kw.pop("mtime", 1_700_000_000)
            for k, v in kw.items():
                setattr(info, k, v)
            tf.addfile(info, io.BytesIO(data) if data else None)
        add("dir", tarfile.DIRTYPE, mode=0o755)
        add("dir/small", data=b"hello", mode=0o644, uid=1000, gid=1000, uname="u", gname="g")
        add("dir/block", data=b"x" * 512)  # exactly a block: no padding
        add("dir/big", data=os.urandom(700_000))  # crosses the reader's chunks
        add("dir/empty")
        add("d/" + "long" * 40 + "/name", data=b"long path")
        add("d/" + "dir" * 40, tarfile.DIRTYPE, mode=0o750)  # a long name ending in "/"
        add("link", tarfile.SYMTYPE, linkname="dir/" + "target" * 30)
        add("hard", tarfile.LNKTYPE, linkname="dir/small")
        add("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("fifo", tarfile.FIFOTYPE)
        add("big-id", data=b"ids", uid=3_000_000, gid=3_000_001)
        add("ünï", data=b"utf-8 name")
    return buf.getvalue()


def read_tarfile(data: bytes) -> list[tuple]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isreg() else None
            out.append((tuple(getattr(m, k) for k in FIELDS), dict(m.pax_headers),
                        f.read() if f else None))
    return out


def read_ours(data: bytes, chunk: int | None = None) -> list[tuple]:
    stream = io.BytesIO(data)
    if chunk:  # a stream that returns at most ``chunk`` bytes a read, like a socket
        raw = stream.read
        stream.read = lambda n=-1: raw(min(n, chunk) if n >= 0 else chunk)  # type: ignore[method-assign]
    tar = TarReader(stream)
    return [(tuple(getattr(m, k) for k in FIELDS), dict(m.pax_headers),
             b"".join(bytes(c) for c in tar.data()) if m.isreg() else None) for m in tar]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("chunk", [None, 1, 511, 4096])
def test_same_entries_as_tarfile(fmt, chunk):
    if fmt == tarfile.USTAR_FORMAT:  # no long names, big ids or utf-8 there: a plain subset
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            for name in ("a", "b/c"):
                info = tarfile.TarInfo(name)
                info.size = 3
                tf.addfile(info, io.BytesIO(b"abc"))
        data = buf.getvalue()
    else:
        data = build(fmt)
    want = read_tarfile(data)
    assert len(want) >= 2
    assert read_ours(data, chunk) == want


def test_pax_xattrs_and_mtime_fractions_are_kept():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        info.size = 1
        info.mtime = 1_700_000_000.25
        info.pax_headers = {"SCHILY.xattr.user.k": "v=1\nline", "mtime": "1700000000.25"}
        tf.addfile(info, io.BytesIO(b"1"))
    (fields, pax, body), = read_ours(buf.getvalue())
    assert pax["SCHILY.xattr.user.k"] == "v=1\nline"
    assert fields[FIELDS.index("mtime")] == 1_700_000_000.25 and body == b"1"


def test_a_global_header_is_skipped():
    data = build(tarfile.PAX_FORMAT, extra_pax={"comment": "made by a test"})
    entries = read_ours(data)
    assert [e[0][0] for e in entries][:2] == ["dir", "dir/small"]
    assert all("comment" not in e[1] for e in entries)


def test_data_left_unread_is_skipped():
    data = build(tarfile.GNU_FORMAT)
    names = [m.name for m in TarReader(io.BytesIO(data))]
    assert names == [e[0][0] for e in read_tarfile(data)]


def test_an_archive_without_its_end_blocks_ends_at_the_last_entry():
    data = build(tarfile.GNU_FORMAT).rstrip(b"\0")
    data += bytes(-len(data) % 512)  # the last entry's padding, no end-of-archive blocks
    assert len(read_ours(data)) == len(read_tarfile(build(tarfile.GNU_FORMAT)))


# dir/big: its header, 700,000 bytes of data, 352 of padding, then the next header
@pytest.mark.parametrize("cut, what", [(512 + 1000, "truncated file data"),
                                       (512 + 700_352 + 100, "truncated header")])
def test_a_truncated_stream_says_where(cut, what):
    data = build(tarfile.GNU_FORMAT)
    big = data.index(b"dir/big")
    tar = TarReader(io.BytesIO(data[:big + cut]), "L")
    with pytest.raises(ImageError, match=f"invalid layer tar: {what} at byte \\d+ \\(layer L\\)"):
        for _ in tar:
            for _ in tar.data():
                pass


def test_a_bad_checksum_is_named_with_its_offset():
    data = bytearray(build(tarfile.GNU_FORMAT))
    at = data.index(b"dir/block")  # its header
    data[at + 100] ^= 0xFF  # in its mode field
    with pytest.raises(ImageError, match=f"invalid layer tar: .*checksum.* at byte {at}"):
        list(TarReader(io.BytesIO(bytes(data))))


def test_a_sparse_entry_is_refused():
    info = tarfile.TarInfo("holes")
    info.type = tarfile.GNUTYPE_SPARSE
    block = info.tobuf(tarfile.GNU_FORMAT)
    with pytest.raises(ImageError, match='unsupported sparse tar entry "holes"'):
        list(TarReader(io.BytesIO(block + bytes(1024))))


def test_a_bad_pax_record_is_refused():
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    body = b"99 path=x\n"
    info.size = len(body)
    data = info.tobuf(tarfile.USTAR_FORMAT) + body + bytes(-len(body) % 512)
    data += tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    with pytest.raises(ImageError, match="invalid layer tar: bad pax record at byte 0"):
        list(TarReader(io.BytesIO(data)))


def _pax_block(records: bytes) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(records)
    return info.tobuf(tarfile.USTAR_FORMAT) + records + bytes(-len(records) % 512)


def _record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + len(str(len(body)))
    n = len(body) + len(str(n))
    return str(n).encode() + body


def test_a_pax_path_ending_in_a_slash_does_not_make_a_file_a_directory():
    """The type is the header block's: a regular file whose pax path ends in "/" keeps
    its data, which is not read as more entries (as tarfile reads it)."""
    inner = tarfile.TarInfo("smuggled")
    inner.size = 0
    hidden = inner.tobuf(tarfile.USTAR_FORMAT) + bytes(512)
    info = tarfile.TarInfo("x")
    info.type = tarfile.AREGTYPE
    info.size = len(hidden)
    data = _pax_block(_record("path", "evil/")) + info.tobuf(tarfile.USTAR_FORMAT) + hidden \
        + bytes(1024)
    want = read_tarfile(data)
    assert [(e[0][0], e[0][1]) for e in want] == [("evil", tarfile.AREGTYPE)]
    assert read_ours(data) == want


def test_two_pax_headers_or_a_pax_and_a_gnu_name_for_one_entry_are_refused():
    f = tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    twice = _pax_block(_record("path", "a")) + _pax_block(_record("path", "b")) + f
    with pytest.raises(ImageError, match="two pax headers for one entry at byte 1024"):
        list(TarReader(io.BytesIO(twice)))
    long = tarfile.TarInfo("././@LongLink")
    long.type = tarfile.GNUTYPE_LONGNAME
    long.size = 2
    both = long.tobuf(tarfile.GNU_FORMAT) + b"g\0" + bytes(510) + \
        _pax_block(_record("path", "p")) + f
    with pytest.raises(ImageError, match='both a pax and a GNU long name for "f"'):
        list(TarReader(io.BytesIO(both)))


@pytest.mark.parametrize("record", [b"+12 path=x\n", b"1_1 path=x\n", b"11 path=x\n\0"])
def test_pax_lengths_are_plain_decimal_and_exact(record):
    data = _pax_block(record) + tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    with pytest.raises(ImageError, match="invalid layer tar: bad pax record at byte 0"):
        list(TarReader(io.BytesIO(data)))


def test_a_negative_size_is_refused():
    block = bytearray(tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = b"\xff" * 12  # base-256 -1 in the size field
    block[148:156] = b" " * 8  # the checksum counts its own field as spaces
    block[148:155] = b"%06o\0" % sum(block)
    with pytest.raises(ImageError, match='negative number in the header of "f" at byte 0'):
        list(TarReader(io.BytesIO(bytes(block) + bytes(1024))))


def test_an_empty_stream_is_not_a_layer():
    with pytest.raises(ImageError, match="invalid layer tar: empty stream at byte 0"):
        list(TarReader(io.BytesIO(b"")))


def test_a_huge_extended_header_is_refused_before_it_is_read():
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 10 << 30  # 10 GiB of "pax records", which would be read into memory
    stream = io.BytesIO(info.tobuf(tarfile.GNU_FORMAT))
    with pytest.raises(ImageError, match=r"an extended header of 10737418240 bytes "
                                         r"\(at most 1048576"):
        list(TarReader(stream))
