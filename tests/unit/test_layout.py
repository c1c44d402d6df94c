"""The repo's layout: runtime/, images/, netns/ and cgroups/ are pyctr.* (through links)."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP = ("runtime", "images", "netns", "cgroups")


def test_the_top_level_folders_are_linked_into_the_package():
    for name in TOP:
        link = REPO / "pyctr" / name
        assert link.is_symlink() and os.readlink(link) == f"../{name}"
    import pyctr.runtime.container
    assert Path(pyctr.runtime.container.__file__).parent.name == "runtime"


def test_no_bare_import_of_a_top_level_folder():
    """A checkout has the repo root on sys.path, where `import runtime` would work
    and then break once installed: everything goes through pyctr.*."""
    bare = re.compile(rf"^\s*(from|import)\s+({'|'.join(TOP)})(\s|\.|$)", re.MULTILINE)
    offenders = []
    for path in REPO.rglob("*.py"):
        if any(part in (".git", "build") for part in path.parts) or path.is_symlink():
            continue
        if "pyctr" in path.relative_to(REPO).parts[:1] and path.parent.is_symlink():
            continue
        for m in bare.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(REPO)}: {m.group(0).strip()}")
    assert offenders == []
