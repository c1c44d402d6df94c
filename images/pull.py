"""`pyctr pull`: an image from a registry into the store, verified at every step.

    reference ──▶ manifest (or index ──▶ the manifest for this platform)
              ──▶ config ──▶ layers: download ─▶ decompress ─▶ unpack, in one stream

Every document is checked before it is believed:

* a manifest's digest is the one asked for (``name@sha256:…``), or the one
  the registry says (``Docker-Content-Digest``); its media type is one pyctr
  knows and agrees with what the document says it is; a document that could
  be read as both a manifest and an index is refused;
* the config's digest is the manifest's, and its platform the one wanted;
* each layer is hashed as it streams in (its digest, the manifest's) and
  as it unpacks (its diff_id, the config's), in the same pass, by the
  store's ingest (layers.py): nothing is renamed into place before both
  digests are right, so a failed or killed pull leaves no image and no
  half layer (what it left in the store's tmp/ the next load sweeps).

Layers already in the store are not fetched again.  Several layers download
and unpack at once, each in a child process (layerprocs.py); a layer whose
connection breaks resumes where it broke (registry.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyctr.errors import ImageError, NotFound, UserError

from . import auth, registry
from .layout import host_arch
from .progress import Quiet, short
from .reference import Reference, parse_reference
from .sources import ImageSource, LayerSource

if TYPE_CHECKING:
    from .store import Image, ImageStore

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json")
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar",
               "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.oci.image.layer.v1.tar+zstd",
               "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "application/vnd.docker.image.rootfs.diff.tar")
FOREIGN_TYPES = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                 "application/vnd.oci.image.layer.nondistributable.v1.tar",
                 "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                 "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")
CONFIG_MAX = 8 << 20
WORKERS = 4  # layers at once: network-bound as much as CPU-bound

_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def effective(self) -> Platform:
        """With the variant an architecture means when none is given (arm64: v8)."""
        return Platform(self.os, self.architecture,
                        self.variant or _DEFAULT_VARIANT.get(self.architecture))

    def matches(self, plat: dict) -> bool:
        if plat.get("os") != self.os or plat.get("architecture") != self.architecture:
            return False
        want = self.variant or _DEFAULT_VARIANT.get(self.architecture)
        have = plat.get("variant") or _DEFAULT_VARIANT.get(self.architecture)
        return want is None or have is None or want == have


def parse_platform(text: str | None) -> Platform:
    """``linux/arm64/v8``, ``linux/amd64``, ``arm64`` (the os is linux); None: this host."""
    if not text:
        return Platform("linux", host_arch())
    parts = text.strip().lower().split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise UserError(f"invalid platform {text!r}",
                        hint="use os/architecture[/variant], e.g. linux/arm64/v8")
    os_, arch = parts[0], {"x86_64": "amd64", "aarch64": "arm64"}.get(parts[1], parts[1])
    if os_ != "linux":
        raise UserError(f"unsupported platform {text!r}: pyctr runs linux images",
                        hint="use linux/ARCH")
    return Platform(os_, arch, parts[2] if len(parts) == 3 else None)


def select(index: dict, want: Platform, where: str) -> dict:
    """The descriptor for ``want`` in an image index (docker's manifest list)."""
    found = []
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        found.append(str(Platform(plat.get("os", "?"), plat.get("architecture", "?"),
                                  plat.get("variant"))))
        if want.matches(plat):
            return desc
    raise NotFound(f"no image for {want.effective()} in {where} "
                   f"(it has: {', '.join(found) or 'none'})",
                   hint="pick one of those with --platform", exit_code=1)


def check_document(data: bytes, content_type: str | None, where: str,
                   expected: str | None = None, said: str | None = None) -> tuple[dict, str]:
    """Verify a manifest or index: digest, JSON, media type; (document, its media type)."""
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    for want in (expected, said):
        if want and want.startswith("sha256:") and want != got:
            raise ImageError(f"digest mismatch for the manifest of {where}: expected {want}, "
                             f"got {got}", hint="the registry sent something else; try again")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"the manifest of {where} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ImageError(f"the manifest of {where} is not a JSON object")
    declared = doc.get("mediaType")
    ctype = (content_type or "").split(";")[0].strip() or None
    if ctype in SCHEMA1 or declared in SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ImageError(f"{where} is a docker schema 1 image, which pyctr does not read",
                         hint="push it again with a current docker or skopeo (schema 2)")
    if declared and ctype and ctype not in ("application/json", "text/plain") \
            and declared != ctype:
        raise ImageError(f"media type mismatch for the manifest of {where}: the registry "
                         f"says {ctype}, the document says {declared}",
                         hint="the registry or the image is broken")
    mtype = declared or ctype
    has_index = "manifests" in doc
    has_manifest = "layers" in doc or "config" in doc
    if has_index and has_manifest:
        raise ImageError(f"the manifest of {where} is ambiguous: it has both manifests and "
                         "layers/config", hint="refused, as the OCI image spec requires")
    if mtype in INDEX_TYPES or (mtype in (None, "application/json") and has_index):
        if has_manifest or not isinstance(doc.get("manifests"), list):
            raise ImageError(f"the index of {where} is malformed")
        return doc, OCI_INDEX if mtype in (None, "application/json") else mtype
    if mtype in MANIFEST_TYPES or (mtype in (None, "application/json") and has_manifest):
        if has_index or not isinstance(doc.get("config"), dict) \
                or not isinstance(doc.get("layers"), list):
            raise ImageError(f"the manifest of {where} is malformed: no config or layers")
        return doc, OCI_MANIFEST if mtype in (None, "application/json") else mtype
    raise ImageError(f"{where} is not a container image: media type {mtype!r}",
                     hint="pyctr pulls OCI and docker schema 2 images")


def _fetch_manifest(reg: registry.Registry, path: str, ref: str, scope: str,
                    where: str) -> tuple[bytes, dict, str, str]:
    resp = reg.request("GET", f"/v2/{path}/manifests/{ref}", scope=scope,
                       headers={"Accept": ACCEPT})
    data = resp.body(registry.MANIFEST_MAX)
    doc, mtype = check_document(data, resp.headers.get("Content-Type"), where,
                                expected=ref if ref.startswith("sha256:") else None,
                                said=resp.headers.get("Docker-Content-Digest"))
    return data, doc, mtype, "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class PullResult:
    image: Image
    digest: str  # what the reference named: the index's digest for a multi-platform image
    up_to_date: bool  # the name already pointed at this image


def pull(store: ImageStore, text: str, *, platform: str | None = None,
         insecure: tuple[str, ...] = (), authfile: str | None = None,
         progress: Quiet | None = None, cancel: threading.Event | None = None,
         processes: bool | None = None) -> PullResult:
    """Pull ``text`` (docker's reference grammar) for ``platform`` into ``store``.

    ``processes``: a process per layer (layerprocs.py); None: when this process runs
    no other thread (importer._ingest), else threads.
    """
    from . import importer, layers

    ref = parse_reference(text)
    want = parse_platform(platform)
    progress = progress or Quiet(io.StringIO())  # shows nothing: Quiet prints results only
    cancel = cancel or threading.Event()
    reg = registry.Registry(ref.domain, creds=auth.lookup(ref.domain, authfile),
                            insecure=ref.domain in auth.insecure_registries(insecure),
                            cancel=cancel)
    scope = f"repository:{ref.path}:pull"
    where = ref.familiar()
    name_tag = ref.digest or ref.tag or "latest"
    progress.message(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_name()}"
                     if ref.domain != "docker.io" else
                     f"{ref.tag or ref.digest}: Pulling from {ref.path}")
    try:
        data, doc, mtype, top = _fetch_manifest(reg, ref.path, name_tag, scope, where)
    except NotFound:
        raise NotFound(f"manifest for {where} not found: manifest unknown",
                       hint="check the name and tag (pyctr pull NAME:TAG)", exit_code=1) from None
    if mtype in INDEX_TYPES:
        desc = select(doc, want, where)
        data, doc, mtype, _ = _fetch_manifest(reg, ref.path, desc["digest"], scope, where)
        if mtype in INDEX_TYPES:
            raise ImageError(f"{where}: an index inside an index is not supported")
        if desc.get("size") is not None and desc["size"] != len(data):
            raise ImageError(f"size mismatch for the manifest {desc['digest']} of {where}: "
                             f"the index says {desc['size']}, got {len(data)}")
    cdesc = doc["config"]
    if cdesc.get("mediaType") not in CONFIG_TYPES:
        raise ImageError(f"{where} is not a container image: its config is "
                         f"{cdesc.get('mediaType')!r}", hint="pyctr pulls container images")
    config = _config(store, reg, ref, cdesc, scope, where)
    cfg = json.loads(config)
    plat = {"os": cfg.get("os"), "architecture": cfg.get("architecture"),
            "variant": cfg.get("variant")}
    if not want.matches(plat):
        have = Platform(plat["os"] or "?", plat["architecture"] or "?", plat["variant"])
        raise NotFound(f"image with reference {where} was found but does not match the "
                       f"specified platform: wanted {want}, actual: {have}",
                       hint="pick another --platform or image", exit_code=1)
    diff_ids = list((cfg.get("rootfs") or {}).get("diff_ids") or [])
    sources = _layer_sources(reg, ref, doc.get("layers") or [], scope, progress, where)
    if len(diff_ids) != len(sources):
        raise ImageError(f"the config of {where} lists {len(diff_ids)} diff_ids for "
                         f"{len(sources)} layers", hint="the image is malformed")
    names = [str(ref)]
    before = _named(store, names[0])
    reused: set[str] = set()
    for src, diff_id in zip(sources, diff_ids):
        if store.dirs.layer_dir(diff_id).is_dir() and \
                layers._verified_media_type(store.dirs, src.digest, diff_id) is not None:
            progress.add(short(src.digest), None, "Already exists")
            reused.add(src.key)
        else:
            size = next(ld.get("size") for ld in doc["layers"] if ld["digest"] == src.digest)
            progress.add(short(src.digest), size, "Pulling fs layer")
    src = ImageSource(names=names, config=config, layers=sources, manifest=data,
                      config_digest=cdesc["digest"])
    store._ensure()
    layers.sweep_tmp(store.dirs)
    try:
        with store.index.layers_locked(exclusive=False):
            image = importer._commit(store, src, workers=WORKERS, cancel=cancel,
                                     procs=processes,
                                     progress=None if type(progress) is Quiet else progress)
    except registry.Cancelled:
        raise KeyboardInterrupt from None
    for s in sources:
        if s.key not in reused:
            progress.state(short(s.digest), "Pull complete")
    return PullResult(image, top, up_to_date=before == image.manifest_digest)


def _named(store: ImageStore, name: str) -> str | None:
    for digest, names in store.index.by_manifest().items():
        if name in names:
            return digest
    return None


def _config(store: ImageStore, reg: registry.Registry, ref: Reference, cdesc: dict,
            scope: str, where: str) -> bytes:
    """The config blob: from the store when it is there, else from the registry; verified."""
    digest = cdesc.get("digest", "")
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise ImageError(f"the manifest of {where} names an unsupported config digest "
                         f"{digest!r}", hint="only sha256 digests are supported")
    local = store.dirs.blobs / digest[7:]
    if local.is_file():
        return local.read_bytes()
    data = reg.request("GET", f"/v2/{ref.path}/blobs/{digest}", scope=scope).body(CONFIG_MAX)
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise ImageError(f"digest mismatch for the config of {where}: expected {digest}, "
                         f"got {got}", hint="the registry sent something else; try again")
    if cdesc.get("size") is not None and cdesc["size"] != len(data):
        raise ImageError(f"size mismatch for the config {digest}: the manifest says "
                         f"{cdesc['size']}, got {len(data)}")
    return data


class _Sized:
    """A blob download that must end at the manifest's size: a longer one is refused."""

    def __init__(self, reader: registry.BlobReader, size: int | None, digest: str) -> None:
        self.reader = reader
        self.size = size
        self.digest = digest
        self.seen = 0

    def read(self, n: int = -1) -> bytes:
        data = self.reader.read(n)
        self.seen += len(data)
        if self.size is not None and self.seen > self.size:
            raise ImageError(f"size mismatch for layer {self.digest}: the registry sent more "
                             f"than the {self.size} bytes the manifest says")
        if not data and self.size is not None and self.seen != self.size:
            raise ImageError(f"size mismatch for layer {self.digest}: the manifest says "
                             f"{self.size} bytes, got {self.seen}")
        return data

    def __enter__(self) -> _Sized:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()


def _layer_sources(reg: registry.Registry, ref: Reference, descs: list[dict], scope: str,
                   progress: Quiet, where: str) -> list[LayerSource]:
    out = []
    for d in descs:
        mtype, digest = d.get("mediaType"), d.get("digest", "")
        if mtype in FOREIGN_TYPES or d.get("urls"):
            raise ImageError(f"layer {digest} of {where} is a foreign layer ({mtype})",
                             hint="foreign (non-distributable) layers are for Windows images")
        if mtype not in LAYER_TYPES:
            raise ImageError(f"layer {digest} of {where} has an unsupported media type "
                             f"{mtype!r}", hint="pyctr reads tar layers: plain, gzip or zstd")
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise ImageError(f"layer {digest!r} of {where}: unsupported digest",
                             hint="only sha256 digests are supported")

        def opener(digest: str = digest, size: int | None = d.get("size")):
            key = short(digest)
            progress.state(key, "Downloading")
            reader = registry.BlobReader(reg, f"/v2/{ref.path}/blobs/{digest}", scope,
                                         progress=lambda n, key=key: progress.advance(key, n))
            return _Sized(reader, size, digest)
        out.append(LayerSource(key=digest, open=opener, digest=digest, media_type=mtype,
                               size=d.get("size") if isinstance(d.get("size"), int) else None))
    return out


def describe(result: PullResult, ref_text: str) -> list[str]:
    """docker's closing lines."""
    ref = parse_reference(ref_text)
    shown = ref.familiar()
    status = ("Image is up to date for " if result.up_to_date
              else "Downloaded newer image for ") + shown
    return [f"Digest: {result.digest}", f"Status: {status}"]
