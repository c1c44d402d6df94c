"""Overlay snapshots: the mount data that stacks an image's layers under a writable upper.

Mount data is limited to one page (4096 bytes).  Like containers/storage,
lowerdir names the layers by short links (``l/XXXXXXXXXX``) relative to
the layers directory, and the caller mounts with that directory as its cwd:
that keeps ~300 layers under the limit where absolute paths would allow a
few dozen.  The engine does the mount (the syscall wrapper is in runtime/).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyctr.errors import ImageError

from .store import Image, ImageStore

PAGE_SIZE = 4096
OVERLAYFS_MAGIC = 0x794C7630


def _on_overlay(path: Path) -> bool:
    """overlayfs refuses an upperdir/workdir that is itself on an overlay (f_type check)."""
    try:
        with open("/proc/self/mountinfo") as f:
            best, fstype = "", ""
            real = os.path.realpath(path)
            for line in f:
                left, _, right = line.partition(" - ")
                mnt = left.split()[4].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fstype = mnt, right.split()[0]
        return fstype == "overlay"
    except OSError:
        return False


def overlay_options(store: ImageStore, image: Image, upper: Path,
                    work: Path) -> tuple[Path, str]:
    """(dir to chdir to before mounting, overlay mount data with lowerdir topmost first)."""
    if not image.diff_ids:
        raise ImageError(f"image {image.id} has no layers: nothing to mount",
                         hint="an overlay needs at least one lower layer")
    for what, p in (("upperdir", upper), ("workdir", work)):
        if "," in str(p) or ":" in str(p):
            raise ImageError(f"{what} {p} contains ',' or ':' which overlay mount data cannot hold",
                             hint="choose a pyctr root without those characters")
        if _on_overlay(p):
            raise ImageError(f"{what} {p} is on an overlay filesystem",
                             hint="overlayfs cannot use an overlay as upper; put --root on "
                                  "ext4, xfs or tmpfs")
    lower = ":".join(reversed(store.short_links(image)))
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(data) >= PAGE_SIZE:
        raise ImageError(f"image {image.id} has too many layers ({len(image.diff_ids)}) for one "
                         f"overlay mount ({len(data)} bytes of mount data)",
                         hint="flatten the image (export and import it)")
    return store.dirs.layers, data
