"""What ``load`` reads: OCI image layouts (a directory or a tar) and ``docker save`` tars.

Each format is turned into the same ImageSource (names, config bytes,
layer openers), so the store has one ingest path.  Tars are read by
offset: every layer gets its own file handle, so layers can be read by
several threads at once.  Paths named inside an archive are untrusted
and checked like layer entries.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pyctr.errors import ImageError, UserError

from .layout import REF_NAME, host_arch
from .reference import parse_reference

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
CONTAINERD_NAME = "io.containerd.image.name"
_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass
class LayerSource:
    """One layer blob in an archive: how to open it and, if known, its digest."""

    key: str
    open: Callable[[], BinaryIO]
    digest: str | None = None
    media_type: str | None = None
    size: int | None = None  # of the blob, when a manifest says it


@dataclass
class ImageSource:
    """One image found in an archive, before it enters the store."""

    names: list[str]
    config: bytes
    layers: list[LayerSource]
    manifest: bytes | None = None  # None: the store writes an OCI manifest (docker save)
    config_digest: str = field(default="")


def _clean(rel: str, where: str) -> str:
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ImageError(f'invalid path "{rel}" in {where}: it leaves the archive',
                         hint="the archive is malformed or hostile")
    return norm


class _Slice:
    """A member of an uncompressed tar, read through its own file handle."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self.f.seek(offset)
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> _Slice:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Archive:
    """Files of a directory or of an uncompressed tar, by relative path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, tuple[int, int]] | None = None
        self.links: dict[str, str] = {}
        if not path.is_dir():
            self._index_tar()

    def _index_tar(self) -> None:
        self.members = {}
        try:
            with tarfile.open(self.path, "r:") as tf:
                for m in tf:
                    name = _clean(m.name, str(self.path))
                    if m.isreg():
                        self.members[name] = (m.offset_data, m.size)
                    elif m.issym():
                        self.links[name] = posixpath.join(posixpath.dirname(name), m.linkname)
                    elif m.islnk():
                        self.links[name] = m.linkname
        except tarfile.TarError as exc:
            raise UserError(f"cannot read {self.path}: {exc}",
                            hint="pass an OCI layout directory, an OCI archive or a docker save tar"
                            ) from None

    def _resolve(self, rel: str) -> str:
        name = _clean(rel, str(self.path))
        for _ in range(16):
            if name not in self.links:
                return name
            name = _clean(self.links[name], str(self.path))
        raise ImageError(f'too many links for "{rel}" in {self.path}', hint="the archive is malformed")

    def exists(self, rel: str) -> bool:
        if self.members is None:
            return (self.path / _clean(rel, str(self.path))).is_file()
        return self._resolve(rel) in self.members

    def open(self, rel: str) -> BinaryIO:
        if self.members is None:
            return open(self.path / _clean(rel, str(self.path)), "rb")
        name = self._resolve(rel)
        if name not in self.members:
            raise ImageError(f'"{rel}" is missing from {self.path}',
                             hint="the archive is incomplete")
        return _Slice(self.path, *self.members[name])  # type: ignore[return-value]

    def read(self, rel: str) -> bytes:
        try:
            with self.open(rel) as f:
                return f.read()
        except FileNotFoundError:
            raise ImageError(f'"{rel}" is missing from {self.path}',
                             hint="the archive is incomplete") from None

    def opener(self, rel: str) -> Callable[[], BinaryIO]:
        return lambda: self.open(rel)


def _json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"invalid json in {what}: {exc}", hint="the image is malformed") from None
    if not isinstance(doc, (dict, list)):
        raise ImageError(f"invalid {what}: not a json object", hint="the image is malformed")
    return doc  # type: ignore[return-value]


def _verified(data: bytes, digest: str, what: str) -> bytes:
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise ImageError(f"digest mismatch for {what}: expected {digest}, got {got}",
                         hint="the image is corrupt; fetch or save it again")
    return data


def _blob_path(digest: str) -> str:
    m = _SHA256.fullmatch(digest or "")
    if not m:
        raise ImageError(f"unsupported digest {digest!r}", hint="only sha256 digests are supported")
    return f"blobs/sha256/{m.group(1)}"


def repo_hint(path: Path) -> str:
    """A repository name from a file name, for OCI layouts whose ref.name is only a tag."""
    base = path.name.split(".")[0].lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-")
    return base or "image"


def _names(annotations: dict, repo: str) -> list[str]:
    full = annotations.get(CONTAINERD_NAME)
    if full:
        return [str(parse_reference(full))]
    ref = annotations.get(REF_NAME)
    if not ref:
        return []
    if "/" in ref or ":" in ref or "@" in ref:
        return [str(parse_reference(ref))]
    return [str(parse_reference(f"{repo}:{ref}"))]  # the OCI spec's usual form: only a tag


def _choose_platform(index: dict, where: str) -> dict:
    """The manifest for linux/<host arch> out of an image index."""
    arch = host_arch()
    found = []
    for desc in index.get("manifests") or []:
        plat = desc.get("platform")
        if plat is None:
            found.append("?")
            if len(index["manifests"]) == 1:
                return desc
            continue
        found.append(f"{plat.get('os')}/{plat.get('architecture')}")
        if plat.get("os") == "linux" and plat.get("architecture") == arch:
            return desc
    raise ImageError(f"no image for linux/{arch} in {where} (it has: {', '.join(found) or 'none'})",
                     hint="save or pull the image for this machine's platform")


def _oci_images(arc: Archive, repo: str) -> list[ImageSource]:
    layout = _json(arc.read("oci-layout"), "oci-layout")
    if layout.get("imageLayoutVersion") != "1.0.0":
        raise ImageError(f"unsupported oci-layout version {layout.get('imageLayoutVersion')!r}",
                         hint="pyctr reads image layout 1.0.0")
    index = _json(arc.read("index.json"), "index.json")
    by_digest: dict[str, ImageSource] = {}
    for top in index.get("manifests") or []:
        names = _names(top.get("annotations") or {}, repo)
        desc = top
        for _ in range(8):  # nested indexes
            data = _verified(arc.read(_blob_path(desc["digest"])), desc["digest"],
                             f"manifest {desc['digest']}")
            doc = _json(data, f"manifest {desc['digest']}")
            mtype = desc.get("mediaType") or doc.get("mediaType")
            if mtype in INDEX_TYPES or (mtype is None and "manifests" in doc):
                desc = _choose_platform(doc, f"index {desc['digest']}")
                continue
            break
        if mtype not in MANIFEST_TYPES and mtype is not None:
            raise ImageError(f"unsupported manifest media type {mtype!r}",
                             hint="pyctr reads OCI and docker v2 image manifests")
        if desc["digest"] in by_digest:
            by_digest[desc["digest"]].names.extend(n for n in names
                                                   if n not in by_digest[desc["digest"]].names)
            continue
        cdesc = doc["config"]
        config = _verified(arc.read(_blob_path(cdesc["digest"])), cdesc["digest"],
                           f"config {cdesc['digest']}")
        layers = [LayerSource(key=ld["digest"], open=arc.opener(_blob_path(ld["digest"])),
                              digest=ld["digest"], media_type=ld.get("mediaType"),
                              size=ld.get("size") if isinstance(ld.get("size"), int) else None)
                  for ld in doc.get("layers") or []]
        by_digest[desc["digest"]] = ImageSource(names=names, config=config, layers=layers,
                                                manifest=data, config_digest=cdesc["digest"])
    return list(by_digest.values())


def _docker_images(arc: Archive) -> list[ImageSource]:
    entries = _json(arc.read("manifest.json"), "manifest.json")
    if not isinstance(entries, list):
        raise ImageError("invalid manifest.json: not a list", hint="is this a docker save tar?")
    out = []
    for entry in entries:
        config = arc.read(entry["Config"])
        m = re.search(r"([0-9a-f]{64})(?:\.json)?$", entry["Config"])
        if m:
            _verified(config, f"sha256:{m.group(1)}", f"config {entry['Config']}")
        layers = []
        for rel in entry.get("Layers") or []:
            lm = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", _clean(rel, "manifest.json"))
            layers.append(LayerSource(key=rel, open=arc.opener(rel),
                                      digest=f"sha256:{lm.group(1)}" if lm else None))
        names = [str(parse_reference(t)) for t in entry.get("RepoTags") or []]
        out.append(ImageSource(names=names, config=config, layers=layers,
                               config_digest="sha256:" + hashlib.sha256(config).hexdigest()))
    return out


def open_stdin() -> BinaryIO:
    """A layer read from stdin (``pyctr import -``), in a handle of its own to close."""
    import os
    import sys

    return os.fdopen(os.dup(sys.stdin.fileno()), "rb")


def read_images(path: Path, repo: str | None = None) -> list[ImageSource]:
    """Every image in an OCI layout dir, OCI archive or docker save tar (uncompressed)."""
    if not path.exists():
        raise UserError(f"no such file or directory: {path}",
                        hint="pass an OCI layout directory, an OCI archive or a docker save tar")
    arc = Archive(path)
    if arc.exists("manifest.json"):  # docker save (docker 25+ also writes an OCI index)
        return _docker_images(arc)
    if arc.exists("oci-layout") and arc.exists("index.json"):
        return _oci_images(arc, repo or repo_hint(path))
    raise UserError(f"{path} is not an image archive: no manifest.json and no oci-layout",
                    hint="pass an OCI layout directory, an OCI archive or a docker save tar")
