"""Resolve a path inside a rootfs as the container would see it, never escaping it.

A container image controls its own symlinks: ``/etc/passwd -> /etc/shadow``
or ``/proc -> ../../../host`` must resolve *inside* the rootfs, as they
would after pivot_root.  Plain ``Path.resolve`` would follow them on the
host.  So each component is walked by hand: absolute link targets restart
at the root, ``..`` stops at the root, and a loop stops after 255 links
(the kernel's ELOOP limit is 40 nested; 255 is what filepath-securejoin uses).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pyctr.errors import UserError

MAX_SYMLINKS = 255


def secure_join(root: Path, unsafe: str) -> Path:
    """``root``/``unsafe`` with symlinks resolved as if ``root`` were ``/``.

    Missing components are kept as written (the result may not exist yet:
    callers create mount destinations).  The result is always ``root`` or
    below it, as long as nobody swaps a component for a symlink meanwhile.
    """
    root = Path(os.path.abspath(root))
    done: list[str] = []
    todo = [c for c in unsafe.split("/") if c]
    todo.reverse()
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            done.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise UserError(f"too many levels of symbolic links resolving {unsafe!r}",
                            path=str(root / unsafe.lstrip("/")), errno=errno.ELOOP,
                            hint="the image has a symlink loop")
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        more = [c for c in target.split("/") if c]
        todo.extend(reversed(more))
    return root.joinpath(*done)
