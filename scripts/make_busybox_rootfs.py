#!/usr/bin/env python3
"""Build a small busybox root filesystem from Debian's busybox-static.

Used by scripts/setup.sh (the local `busybox` image, no network needed) and
by the tests (tests/conftest.py imports make_rootfs).  Usage:
    make_busybox_rootfs.py --tar OUT.tar      # a rootfs tarball for `pyctr import`
    make_busybox_rootfs.py --dir OUT          # a rootfs directory
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "user:x:1000:1000:user:/home/user:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nuser:x:1000:\nstaff:x:50:user\nnogroup:x:65534:\n"


def make_rootfs(root: Path, busybox: str = BUSYBOX) -> Path:
    """busybox with every applet as a symlink, /etc/passwd (root, user, nobody), /etc/group."""
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/user", "var/www"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    os.chown(root / "home" / "user", 1000, 1000) if os.geteuid() == 0 else None
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([str(root / "bin" / "busybox"), "--list"],
                             capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = root / "bin" / a
        if not link.exists() and not link.is_symlink():
            link.symlink_to("busybox")
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--tar", type=Path, help="write a rootfs tarball here")
    group.add_argument("--dir", type=Path, help="build the rootfs in this directory")
    args = ap.parse_args()
    if not Path(BUSYBOX).exists():
        print(f"busybox not found at {BUSYBOX}: apt-get install busybox-static", file=sys.stderr)
        return 1
    if args.dir:
        make_rootfs(args.dir)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = make_rootfs(Path(tmp) / "rootfs")
        with tarfile.open(args.tar, "w") as tar:
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
