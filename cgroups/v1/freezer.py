"""v1 freezer: freezer.state THAWED / FREEZING / FROZEN.  Writing FROZEN starts freezing;
the state reads FROZEN once every task is stopped, so freeze() waits for it."""

from __future__ import annotations

import time
from pathlib import Path

from pyctr.errors import PyctrError

from .. import fs

TIMEOUT = 5.0


def state(d: Path) -> str:
    return fs.read(d / "freezer.state")


def set_state(d: Path, want: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    fs.write(d / "freezer.state", want)
    while state(d) != want:
        if time.monotonic() > deadline:
            raise PyctrError(f"{d}/freezer.state did not become {want}", step="cgroup",
                             path=str(d / "freezer.state"),
                             hint="a task in uninterruptible sleep can delay freezing")
        time.sleep(0.005)
        # the kernel retries freezing stragglers on each write of FROZEN
        if want == "FROZEN":
            fs.write(d / "freezer.state", want)
