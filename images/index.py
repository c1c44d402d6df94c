"""Names → manifests: the store's index.json (an OCI image index), and the store's two locks.

index.json is rewritten atomically (temp + fsync + rename) under ``lock``,
held exclusive only while it is read, changed and written.  ``layers.lock``
orders writers against garbage collection: a load holds it shared from
the first layer it finds or unpacks until its image is in index.json, and
``remove`` holds it exclusive, so a layer a load has just found in the
store is never deleted before the image that uses it is named.  Take
layers.lock first, then lock.  flock locks belong to an open file, so
threads of one process exclude each other like processes do.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from .layout import REF_NAME

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def name_of(entry: dict) -> str | None:
    return (entry.get("annotations") or {}).get(REF_NAME)


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Index:
    """index.json under ``top``: which manifest each full name points at."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.path = top / "index.json"

    def locked(self) -> AbstractContextManager[None]:
        """Exclusive, around a read-modify-write of index.json."""
        return _flock(self.top / "lock", fcntl.LOCK_EX)

    def layers_locked(self, *, exclusive: bool) -> AbstractContextManager[None]:
        """Shared for loads (ingest through index write), exclusive for remove."""
        return _flock(self.top / "layers.lock", fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)

    def entries(self) -> list[dict]:
        try:
            return json.loads(self.path.read_text()).get("manifests", [])
        except FileNotFoundError:
            return []

    def write(self, entries: list[dict]) -> None:
        import tempfile  # lazy: only writers need it

        doc = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries}
        fd, tmp = tempfile.mkstemp(dir=self.top, prefix=".index-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def by_manifest(self) -> dict[str, list[str]]:
        """manifest digest → full names, in index order."""
        out: dict[str, list[str]] = {}
        for e in self.entries():
            names = out.setdefault(e["digest"], [])
            name = name_of(e)
            if name:
                names.append(name)
        return out


def set_names(entries: list[dict], digest: str, size: int, names: list[str]) -> list[dict]:
    """Point ``names`` at ``digest``; an image left with no name stays, nameless."""
    kept = []
    for e in entries:
        if name_of(e) in names:
            e = {k: v for k, v in e.items() if k != "annotations"}
        kept.append(e)
    for name in names:
        kept.append({"mediaType": MANIFEST_TYPE, "digest": digest, "size": size,
                     "annotations": {REF_NAME: name}})
    if not names:
        kept.append({"mediaType": MANIFEST_TYPE, "digest": digest, "size": size})
    return dedupe(kept)


def dedupe(entries: list[dict]) -> list[dict]:
    """Drop nameless entries of images that still have a name, and duplicates."""
    named = {e["digest"] for e in entries if name_of(e)}
    seen, out = set(), []
    for e in entries:
        key = (e["digest"], name_of(e))
        if key in seen or (key[1] is None and e["digest"] in named):
            continue
        seen.add(key)
        out.append(e)
    return out


def without_names(entries: list[dict], digest: str, drop: list[str]) -> list[dict]:
    """The entries minus ``drop``'s names of ``digest`` and its nameless entry."""
    return [e for e in entries
            if not (e["digest"] == digest and (name_of(e) in drop or not name_of(e)))]
