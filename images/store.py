"""The image store: blobs by digest, names in index.json, layers unpacked once and shared.

Everything lives under ``<root>/images`` (root-only, 0700), laid out so it
is itself an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256``) plus ``layers/<diff_id hex>/diff`` and the short links
``layers/l/<id>`` that overlay lowerdir lists use.  This module is the
façade and what reads: names and index.json are index.py, writing images
is importer.py (imported only by load and import), blobs and layers are
layers.py; removal and its garbage collection stay here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pyctr.errors import Conflict, ImageError, NotFound, UserError

from .index import Index, set_names, without_names
from .layout import StoreDirs, layer_size
from .reference import parse_reference

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


def _repository(name: str) -> str:
    """``docker.io/library/busybox`` of ``docker.io/library/busybox:latest``."""
    return parse_reference(name, default_tag=False).name


def _is_hex_digest(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _human_size(n: float) -> str:
    """docker's decimal units, as `pyctr images` prints them: 4.26MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n:.3g}TB"


class ImageStore:
    """Images under ``root/images``; safe for several processes (flock) and threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dirs = StoreDirs(self.root / "images")
        self.top = self.dirs.top
        self.index = Index(self.top)

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

    # -- queries ----------------------------------------------------------
    def list(self) -> list[Image]:
        return [self._image(d, n) for d, n in self.index.by_manifest().items()]

    def _find(self, ref: str) -> tuple[str, list[str], str | None]:
        """(manifest digest, its names, the full name matched or None when matched by id)."""
        table = self.index.by_manifest()
        if not ref.startswith("sha256:"):
            try:
                parsed = parse_reference(ref)
            except UserError:
                parsed = None
            if parsed is not None:
                full = str(parsed)
                for digest, names in table.items():
                    if full in names:
                        return digest, names, full
                    if parsed.digest == digest and parsed.name in map(_repository, names):
                        return digest, names, None  # name@digest: the name must be the image's
        prefix = ref.removeprefix("sha256:")
        if len(prefix) >= 3 and all(c in "0123456789abcdef" for c in prefix):
            ids = {d: json.loads(self._blob(d))["config"]["digest"][7:] for d in table}
            hits = [(d, n) for d, n in table.items() if ids[d].startswith(prefix)]
            # manifests of one config (say, a docker-archive and an OCI archive of one
            # image) are one image: same id, same diff_ids, same rootfs
            if len({ids[d] for d, _ in hits}) > 1:
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
    def tag(self, src: str, dst: str) -> None:
        """Give the image ``src`` the name ``dst`` (moved from any image that had it)."""
        target = parse_reference(dst)
        if target.digest:
            raise UserError(f"invalid tag {dst!r}: a tag cannot name a digest",
                            hint="use name[:tag]")
        self._ensure()
        with self.index.locked():
            digest, _, _ = self._find(src)
            size = (self.dirs.blobs / digest[7:]).stat().st_size
            self.index.write(set_names(self.index.entries(), digest, size, [str(target)]))

    def remove(self, ref: str, *, force: bool = False) -> list[str]:
        """Untag; an image left without names is deleted with the layers no one else uses.

        Waits for running loads (the layer lock, exclusive): one may be about
        to name an image that shares a layer this would delete.
        """
        out: list[str] = []
        self._ensure()
        with self.index.layers_locked(exclusive=True), self.index.locked():
            digest, names, matched = self._find(ref)
            entries = self.index.entries()
            if matched is None and len(names) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {ref} (must be forced) - image is "
                               f"referenced in multiple repositories",
                               hint=f"remove it by name: {', '.join(map(_familiar, names))}")
            drop = [matched] if matched is not None else names
            keep = without_names(entries, digest, drop)
            out += [f"Untagged: {_familiar(n)}" for n in drop]
            if any(e["digest"] == digest for e in keep):
                self.index.write(keep)
                return out
            image = self._image(digest, [])
            self.index.write(keep)
            out += self._collect(digest, image)
        return out

    def _reachable(self) -> tuple[set[str], set[str]]:
        """(blob digests, layer diff_ids) that the images in index.json use."""
        used_blobs: set[str] = set()
        used_layers: set[str] = set()
        for d in self.index.by_manifest():
            try:
                m = json.loads(self._blob(d))
                used_blobs |= {d, m["config"]["digest"]} | {ld["digest"] for ld in m["layers"]}
                used_layers |= set(self._image(d, []).diff_ids)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ImageError(f"image {d} in index.json cannot be read: {exc}",
                                 hint="load the image again (gc deletes nothing until then)") from None
        return used_blobs, used_layers

    def _collect(self, digest: str, image: Image) -> list[str]:
        """Delete what only this image used (called under both locks)."""
        from . import layers as _layers

        used_blobs, used_layers = self._reachable()
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

    def gc(self) -> list[str]:
        """Delete what no image in index.json reaches; the last line is the space freed.

        An interrupted load or import (Ctrl-C, kill) can leave blobs, layer
        dirs and their ``layers/l`` links that no image names, and temp
        files in ``tmp/``; nothing else would ever remove them.  Reachable
        is: each manifest in index.json, its config and layer blobs, and the
        layer dirs of the config's diff_ids.  Holds the layer lock exclusive,
        as ``remove`` does: a running load holds it shared until its image
        is named, so gc waits for it and never takes a layer it shares.
        Returns ``Deleted: sha256:…`` per blob or layer, then
        ``Total reclaimed space: 1.2MB``.
        """
        from . import layers as _layers

        self._ensure()
        out: list[str] = []
        freed = 0
        with self.index.layers_locked(exclusive=True), self.index.locked():
            used_blobs, used_layers = self._reachable()  # first: a damaged index deletes nothing
            freed += _layers.sweep_tmp(self.dirs)
            freed += self._sweep_index_tmp()
            for name in sorted(os.listdir(self.dirs.blobs)):
                if not _is_hex_digest(name) or f"sha256:{name}" in used_blobs:
                    continue
                path = self.dirs.blobs / name
                try:
                    size = path.lstat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                freed += size
                out.append(f"Deleted: sha256:{name}")
            kept_links = set()
            for name in sorted(os.listdir(self.dirs.layers)):
                if not _is_hex_digest(name):
                    continue  # l/ and anything pyctr did not make
                diff_id = f"sha256:{name}"
                if diff_id in used_layers:
                    try:
                        kept_links.add((self.dirs.layer_dir(diff_id) / "link").read_text().strip())
                    except OSError:
                        pass
                    continue
                freed += layer_size(self.dirs, diff_id)
                _layers.remove_layer(self.dirs, diff_id)
                out.append(f"Deleted: {diff_id}")
            links = self.dirs.layers / "l"
            for name in os.listdir(links):
                if name not in kept_links:  # dangling, or a loser's link a kill left behind
                    (links / name).unlink(missing_ok=True)
        return [*dict.fromkeys(out), f"Total reclaimed space: {_human_size(freed)}"]

    def _sweep_index_tmp(self) -> int:
        """index.json temp files of killed writers (called holding the index lock: none is live)."""
        freed = 0
        for name in os.listdir(self.top):
            if name.startswith(".index-"):
                path = self.top / name
                try:
                    freed += path.lstat().st_size
                    path.unlink()
                except FileNotFoundError:
                    pass
        return freed

    # -- importers (importer.py, imported only here: `pyctr run` never needs it) --
    def load(self, path: Path, *, repo: str | None = None,
             processes: bool | None = None) -> list[Image]:
        """Load every image of an OCI layout dir, OCI archive or docker save tar.

        ``repo`` names images whose OCI ref.name is only a tag (default: from the file name).
        ``processes``: a process per layer (None: when this process runs no other thread).
        """
        from . import importer

        return importer.load(self, Path(path), repo, processes)

    def import_rootfs(self, tar_path: Path | str, ref: str,
                      changes: list[str] | None = None) -> Image:
        """Like ``docker import``: one layer from a (compressed) tar or '-' for stdin.

        ``changes`` are Dockerfile instructions for the config (``CMD ["sh"]``),
        checked before anything is written.
        """
        from . import importer

        return importer.import_rootfs(self, tar_path, ref, changes)
