"""The store's layout on disk, and nothing heavy: what every command reads.

Kept apart from layers.py (hashlib, tarfile, the unpacker) so that
resolving an image for `pyctr run` imports only this: start-up time is a
feature.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REF_NAME = "org.opencontainers.image.ref.name"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
         "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


def host_arch() -> str:
    """The host architecture in OCI words (amd64, arm64, …)."""
    machine = os.uname().machine
    return _ARCH.get(machine, machine)


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


@dataclass
class StoreDirs:
    """The store's directories (all under ``<root>/images``, one filesystem)."""

    top: Path

    @property
    def blobs(self) -> Path:
        return self.top / "blobs" / "sha256"

    @property
    def layers(self) -> Path:
        return self.top / "layers"

    @property
    def tmp(self) -> Path:
        return self.top / "tmp"

    def layer_dir(self, diff_id: str) -> Path:
        return self.layers / hex_of(diff_id)


def layer_size(dirs: StoreDirs, diff_id: str) -> int:
    try:
        return int((dirs.layer_dir(diff_id) / "size").read_text())
    except (OSError, ValueError):
        return 0
