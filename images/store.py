"""The image store: blobs by digest, names in index.json, layers unpacked once and shared.

Everything lives under ``<root>/images`` (root-only, 0700), laid out so it
is itself an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256``) plus ``layers/<diff_id hex>/diff`` and the short links
``layers/l/<id>`` that overlay lowerdir lists use.  index.json is rewritten
atomically under an flock; blobs and layers are content-addressed and
appear only once verified (see layers.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pyctr.errors import Conflict, ImageError, NotFound, UserError

from .layout import REF_NAME, StoreDirs, host_arch, layer_size
from .reference import parse_reference

# layers, sources and compress (hashlib, tarfile, the unpacker) are imported
# where an image is written: `pyctr run` only reads the store.
if TYPE_CHECKING:
    from .layers import LayerInfo
    from .sources import ImageSource, LayerSource

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NO_IMAGES_HINT = "there are no images yet: add one with `pyctr load -i FILE` or `pyctr import FILE`"


@dataclass
class Image:
    """An image as the engine sees it: its config and where its layers are."""

    id: str
    names: list[str]
    manifest_digest: str
    config: dict
    created: str = ""
    size: int = 0
    diff_ids: list[str] = field(default_factory=list)
    os: str = "linux"
    architecture: str = ""


def _familiar(name: str) -> str:
    return parse_reference(name).familiar()


class ImageStore:
    """Images under ``root/images``; safe for several processes (flock) and threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dirs = StoreDirs(self.root / "images")
        self.top = self.dirs.top

    # -- plumbing ---------------------------------------------------------
    def _ensure(self) -> None:
        if (self.dirs.layers / "l").is_dir() and self.dirs.tmp.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.top.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.top, 0o700)  # blobs hold setuid files and devices: root only
        for d in (self.dirs.blobs, self.dirs.layers / "l", self.dirs.tmp):
            d.mkdir(parents=True, exist_ok=True)
        layout = self.top / "oci-layout"
        if not layout.exists():
            layout.write_text('{"imageLayoutVersion": "1.0.0"}')

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure()
        with open(self.top / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _entries(self) -> list[dict]:
        try:
            return json.loads((self.top / "index.json").read_text()).get("manifests", [])
        except FileNotFoundError:
            return []

    def _write_entries(self, entries: list[dict]) -> None:
        doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
               "manifests": entries}
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=self.top, prefix=".index-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.top / "index.json")
        dfd = os.open(self.top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _blob(self, digest: str) -> bytes:
        return (self.dirs.blobs / digest.split(":", 1)[1]).read_bytes()

    def _image(self, manifest_digest: str, names: list[str]) -> Image:
        manifest = json.loads(self._blob(manifest_digest))
        cdigest = manifest["config"]["digest"]
        cfg = json.loads(self._blob(cdigest))
        diff_ids = list((cfg.get("rootfs") or {}).get("diff_ids") or [])
        return Image(id=cdigest, names=[_familiar(n) for n in names],
                     manifest_digest=manifest_digest, config=cfg.get("config") or {},
                     created=cfg.get("created", ""),
                     size=sum(layer_size(self.dirs, d) for d in diff_ids),
                     diff_ids=diff_ids, os=cfg.get("os", "linux"),
                     architecture=cfg.get("architecture", ""))

    def _by_manifest(self) -> dict[str, list[str]]:
        """manifest digest → full names, in index order."""
        out: dict[str, list[str]] = {}
        for e in self._entries():
            names = out.setdefault(e["digest"], [])
            name = (e.get("annotations") or {}).get(REF_NAME)
            if name:
                names.append(name)
        return out

    # -- queries ----------------------------------------------------------
    def list(self) -> list[Image]:
        return [self._image(d, n) for d, n in self._by_manifest().items()]

    def _find(self, ref: str) -> tuple[str, list[str], str | None]:
        """(manifest digest, its names, the full name matched or None when matched by id)."""
        table = self._by_manifest()
        if not ref.startswith("sha256:"):
            try:
                parsed = parse_reference(ref)
            except UserError:
                parsed = None
            if parsed is not None:
                full = str(parsed)
                for digest, names in table.items():
                    if full in names or (parsed.digest == digest and parsed.tag is None):
                        return digest, names, full if full in names else None
        prefix = ref.removeprefix("sha256:")
        if len(prefix) >= 3 and all(c in "0123456789abcdef" for c in prefix):
            hits = [(d, n) for d, n in table.items()
                    if json.loads(self._blob(d))["config"]["digest"][7:].startswith(prefix)]
            if len(hits) > 1:
                raise UserError(f"ambiguous image id prefix {ref!r}: {len(hits)} images match",
                                hint="give more characters of the id")
            if hits:
                return hits[0][0], hits[0][1], None
        present = [_familiar(n) for names in table.values() for n in names]
        try:
            shown = parse_reference(ref).familiar()
        except UserError:
            shown = ref
        hint = (f"images here: {', '.join(present[:8])}" + (" …" if len(present) > 8 else "")
                if present else _NO_IMAGES_HINT)
        raise NotFound(f"no such image: {shown}", hint=hint)

    def resolve(self, ref: str) -> Image:
        """By name (``busybox`` = ``busybox:latest``), full id or an id prefix of ≥ 3 hex."""
        digest, names, _ = self._find(ref)
        return self._image(digest, names)

    def layer_paths(self, image: Image) -> list[Path]:
        """The layers' diff dirs, base layer first."""
        return [self.dirs.layer_dir(d) / "diff" for d in image.diff_ids]

    def short_links(self, image: Image) -> list[str]:
        """'l/XXXX' for each layer, base first; relative to ``self.dirs.layers``."""
        out = []
        for d in image.diff_ids:
            try:
                out.append("l/" + (self.dirs.layer_dir(d) / "link").read_text().strip())
            except FileNotFoundError:
                raise ImageError(f"layer {d} of image {image.id} is missing from the store",
                                 hint="remove the image and load it again") from None
        return out

    # -- names ------------------------------------------------------------
    def _set_names(self, entries: list[dict], digest: str, names: list[str]) -> list[dict]:
        """Point ``names`` at ``digest``; an image left with no name stays, nameless."""
        size = (self.dirs.blobs / digest[7:]).stat().st_size
        kept = []
        for e in entries:
            name = (e.get("annotations") or {}).get(REF_NAME)
            if name in names:
                e = {k: v for k, v in e.items() if k != "annotations"}
            kept.append(e)
        for name in names:
            kept.append({"mediaType": MANIFEST_TYPE, "digest": digest, "size": size,
                         "annotations": {REF_NAME: name}})
        if not names:
            kept.append({"mediaType": MANIFEST_TYPE, "digest": digest, "size": size})
        return self._dedupe(kept)

    @staticmethod
    def _dedupe(entries: list[dict]) -> list[dict]:
        """Drop nameless entries of images that still have a name, and duplicates."""
        named = {e["digest"] for e in entries if (e.get("annotations") or {}).get(REF_NAME)}
        seen, out = set(), []
        for e in entries:
            key = (e["digest"], (e.get("annotations") or {}).get(REF_NAME))
            if key in seen or (key[1] is None and e["digest"] in named):
                continue
            seen.add(key)
            out.append(e)
        return out

    def tag(self, src: str, dst: str) -> None:
        """Give the image ``src`` the name ``dst`` (moved from any image that had it)."""
        target = parse_reference(dst)
        if target.digest:
            raise UserError(f"invalid tag {dst!r}: a tag cannot name a digest",
                            hint="use name[:tag]")
        with self._locked():
            digest, _, _ = self._find(src)
            self._write_entries(self._set_names(self._entries(), digest, [str(target)]))

    def remove(self, ref: str, *, force: bool = False) -> list[str]:
        """Untag; an image left without names is deleted with the layers no one else uses."""
        out: list[str] = []
        with self._locked():
            digest, names, matched = self._find(ref)
            entries = self._entries()
            if matched is None and len(names) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {ref} (must be forced) - image is "
                               f"referenced in multiple repositories",
                               hint=f"remove it by name: {', '.join(map(_familiar, names))}")
            drop = [matched] if matched is not None else names
            keep = [e for e in entries if not (e["digest"] == digest and (
                (e.get("annotations") or {}).get(REF_NAME) in drop
                or not (e.get("annotations") or {}).get(REF_NAME)))]
            out += [f"Untagged: {_familiar(n)}" for n in drop]
            if any(e["digest"] == digest for e in keep):
                self._write_entries(keep)
                return out
            image = self._image(digest, [])
            self._write_entries(keep)
            out += self._collect(digest, image)
        return out

    def _collect(self, digest: str, image: Image) -> list[str]:
        """Delete what only this image used (called under the lock)."""
        from . import layers as _layers
        
        used_blobs: set[str] = set()
        used_layers: set[str] = set()
        for d in self._by_manifest():
            m = json.loads(self._blob(d))
            used_blobs |= {d, m["config"]["digest"]} | {ld["digest"] for ld in m["layers"]}
            used_layers |= set(self._image(d, []).diff_ids)
        manifest = json.loads(self._blob(digest))
        out = [f"Deleted: {image.id}"]
        for blob in [digest, manifest["config"]["digest"]] + [ld["digest"] for ld in
                                                              manifest["layers"]]:
            if blob not in used_blobs:
                (self.dirs.blobs / blob[7:]).unlink(missing_ok=True)
        for diff_id in dict.fromkeys(image.diff_ids):
            if diff_id not in used_layers:
                _layers.remove_layer(self.dirs, diff_id)
                out.append(f"Deleted: {diff_id}")
        return out

    # -- importers --------------------------------------------------------
    def load(self, path: Path, *, repo: str | None = None) -> list[Image]:
        """Load every image of an OCI layout dir, OCI archive or docker save tar.

        ``repo`` names images whose OCI ref.name is only a tag (default: from the file name).
        """
        from .compress import detect
        from .sources import read_images, repo_hint
        
        path = Path(path)
        self._ensure()
        plain = None
        try:
            if path.is_file():
                with open(path, "rb") as f:
                    kind = detect(f.read(8))
                if kind != "plain":  # a compressed archive: random access needs it plain
                    plain = self._decompressed_copy(path)
            sources = read_images(plain or path, repo or repo_hint(path))
            return [self._commit(src) for src in sources]
        finally:
            if plain is not None:
                plain.unlink(missing_ok=True)

    def _decompressed_copy(self, path: Path) -> Path:
        import shutil
        import tempfile

        from .compress import decompress

        fd, name = tempfile.mkstemp(dir=self.dirs.tmp, prefix="archive-")
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(decompress(src), dst, 1 << 20)  # type: ignore[misc]
        except BaseException:
            os.unlink(name)
            raise
        return Path(name)

    def import_rootfs(self, tar_path: Path | str, ref: str,
                      changes: list[str] | None = None) -> Image:
        """Like ``docker import``: one layer from a (compressed) tar or '-' for stdin.

        ``changes`` are Dockerfile instructions for the config (``CMD ["sh"]``),
        checked before anything is written.
        """
        from pyctr.images.changes import apply_changes

        from . import layers as _layers
        from .sources import ImageSource, LayerSource

        names = [str(parse_reference(ref))] if ref else []
        image_config = apply_changes({"Env": [DEFAULT_PATH]}, changes or [])
        self._ensure()
        if str(tar_path) == "-":
            opener = _layers.open_stdin
        else:
            path = Path(tar_path)
            if not path.is_file():
                raise UserError(f"no such file: {path}", hint="pass a tar of a root filesystem")

            def opener() -> BinaryIO:
                return open(path, "rb")
        from datetime import UTC, datetime

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        layer = self._ingest([LayerSource(key=str(tar_path), open=opener)], [None])[0]
        config = {"architecture": host_arch(), "os": "linux", "created": now,
                  "config": image_config,
                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                  "history": [{"created": now, "created_by": "pyctr import"}]}
        src = ImageSource(names=names, config=json.dumps(config).encode(), layers=[])
        return self._commit(src, [layer])

    def _ingest(self, layer_srcs: list[LayerSource],
                diff_ids: list[str | None]) -> list[LayerInfo]:
        """Ingest layers in threads (joined before returning: the caller may fork)."""
        from concurrent.futures import ThreadPoolExecutor  # lazy: it pulls in logging

        from .layers import ingest_layer

        unique: dict[str, tuple[LayerSource, str | None]] = {}
        for src, diff_id in zip(layer_srcs, diff_ids):
            unique.setdefault(src.key, (src, diff_id))
        results: dict[str, LayerInfo] = {}
        errors: list[BaseException] = []
        workers = max(1, min(len(unique), os.cpu_count() or 1, 8))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unpack") as pool:
            futures = {key: pool.submit(ingest_layer, self.dirs, src, diff_id, key)
                       for key, (src, diff_id) in unique.items()}
            for key, fut in futures.items():
                try:
                    results[key] = fut.result()
                except Exception as exc:  # noqa: BLE001 - wait for all, then report the first
                    errors.append(exc)
        if errors:
            raise errors[0]
        return [results[src.key] for src in layer_srcs]

    def _commit(self, src: ImageSource, done: list[LayerInfo] | None = None) -> Image:
        from .layers import write_blob
        
        cfg = json.loads(src.config)
        diff_ids = list((cfg.get("rootfs") or {}).get("diff_ids") or [])
        if done is None:
            if len(diff_ids) != len(src.layers):
                raise ImageError(f"image config lists {len(diff_ids)} diff_ids for "
                                 f"{len(src.layers)} layers", hint="the image is malformed")
            done = self._ingest(src.layers, diff_ids)
        config_digest = write_blob(self.dirs, src.config, src.config_digest or None,
                                   "config")
        manifest = src.manifest
        if manifest is None:
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": config_digest,
                           "size": len(src.config)},
                "layers": [{"mediaType": x.media_type, "digest": x.digest, "size": x.size}
                           for x in done]}).encode()
        digest = write_blob(self.dirs, manifest, None, "manifest")
        with self._locked():
            self._write_entries(self._set_names(self._entries(), digest, src.names))
            names = self._by_manifest()[digest]
        return self._image(digest, names)
