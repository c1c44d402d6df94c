"""Container state on disk, and its status derived from the kernel.

state.json records what cannot be asked of the kernel (bundle, the init's
pid and its start time); the status is recomputed every time: the pid must
be alive, not a zombie, and have the same start time (field 22 of
/proc/PID/stat) — otherwise the pid was reused and the container is stopped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pyctr.errors import NotFound, UserError

from .spec import OCI_VERSION

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
STATE_FILE = "state.json"
FIFO = "exec.fifo"


def check_id(container_id: str) -> None:
    if not _ID.match(container_id):
        raise UserError(f"invalid container id {container_id!r}",
                        hint="use letters, digits, '_', '.', '+' and '-' (at most 128)")


def container_dir(state_root: Path, container_id: str) -> Path:
    check_id(container_id)
    return Path(state_root) / container_id


def start_time(pid: int, *, zombies: bool = False) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if the pid is gone.

    The runtime's one reader of it.  A zombie (Z) or a dead task (X) has
    exited: None as well, unless ``zombies`` — a zombie still holds its pid
    until its parent reaps it, so it is still the process we recorded (what
    kill-and-reap needs).  The comm field may hold ")" and spaces: split
    after the last ")".
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X") and not zombies:
        return None
    return int(fields[19])


def write_state(directory: Path, data: dict, *, sync: bool = True) -> None:
    """Atomically: write a temp file, fsync it, rename over state.json, fsync the dir.

    ``sync=False`` keeps the rename (readers see the old file or the new one)
    but skips both fsyncs (~1 ms on disk) for a state dir its creator
    deletes when the container exits (``create(durable=False)``).
    """
    tmp = directory / f".{STATE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1).encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, directory / STATE_FILE)
    if not sync:
        return
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_state(state_root: Path, container_id: str) -> dict:
    path = container_dir(state_root, container_id) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"container {container_id} does not exist", path=str(path),
                       hint="list containers to see their ids") from None
    except ValueError:
        raise NotFound(f"container {container_id}: state.json is corrupt", path=str(path),
                       hint="delete the container's state dir") from None


def status_of(data: dict, directory: Path) -> str:
    """created (init waits on the exec fifo), running, paused or stopped — from the kernel.

    paused: the cgroup's freezer holds it (read only for a container with a
    cgroupsPath, so pyctr.cgroups is imported only then).
    """
    pid = data.get("pid") or 0
    if pid <= 0 or start_time(pid) != data.get("pidStartTime"):
        return "stopped"
    if data.get("cgroupsPath"):
        from .cgroup import frozen

        if frozen(data["cgroupsPath"]):
            return "paused"
    return "created" if (directory / FIFO).exists() else "running"


def state(container_id: str, state_root: Path) -> dict:
    """The OCI state of a container: ociVersion, id, status, pid, bundle (+ cgroupsPath)."""
    data = read_state(state_root, container_id)
    status = status_of(data, container_dir(state_root, container_id))
    return {
        "ociVersion": OCI_VERSION,
        "id": container_id,
        "status": status,
        "pid": data["pid"] if status != "stopped" else 0,
        "bundle": data["bundle"],
    }
