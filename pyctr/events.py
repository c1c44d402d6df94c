"""Container events (docker events): create, start, die, oom, kill, stop, destroy …

Every process that changes a container (the CLI, a shim, the daemon)
appends one JSON line to RUN_DIR/events.jsonl; `pyctr events` reads and
follows that file.  One write(2) per line on an O_APPEND file: lines of
concurrent writers never interleave, and no process needs to be up for an
event to be kept (the run dir is a tmpfs: the history starts at boot, as
dockerd's starts when it does).  The shape is docker's --format json one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

EVENTS_FILE = "events.jsonl"
MAX_BYTES = 8 << 20  # then the oldest half goes (events are a recent history)


def emit(run_dir: Path, action: str, c, **attributes) -> None:
    """Append one container event; never fails the verb that caused it."""
    now = time.time_ns()
    attrs = {"image": c.record.get("Image", ""), "name": c.name}
    attrs.update({k: str(v) for k, v in attributes.items()})
    event = {"status": action, "id": c.id, "from": attrs["image"], "Type": "container",
             "Action": action, "Actor": {"ID": c.id, "Attributes": attrs}, "scope": "local",
             "time": now // 1_000_000_000, "timeNano": now}
    path = Path(run_dir) / EVENTS_FILE
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True, mode=0o711)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(event) + "\n").encode())
            if os.fstat(fd).st_size > MAX_BYTES:
                _trim(path)
        finally:
            os.close(fd)
    except OSError:
        pass


def _trim(path: Path) -> None:
    """Keep the newer half (a rename: readers following the old file see it end)."""
    from pyctr.fsutil import atomic_write

    data = path.read_bytes()
    cut = data.find(b"\n", len(data) // 2) + 1
    atomic_write(path, data[cut:], sync=False)


def read(run_dir: Path, *, since: float | None = None, until: float | None = None,
         follow: bool = False, filters: dict[str, list[str]] | None = None,
         poll: float = 0.1) -> Iterator[dict]:
    """Events from ``since`` (unix time) to ``until``; ``follow``: then wait for new ones
    (until ``until`` if given)."""
    path = Path(run_dir) / EVENTS_FILE
    f = None
    partial = b""
    while True:
        if f is None:
            try:
                f = open(path, "rb")  # noqa: SIM115 - kept open while following
            except FileNotFoundError:
                f = None
        data = f.read() if f is not None else b""
        if data:
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                t = event.get("timeNano", 0) / 1e9
                if until is not None and t > until:
                    return
                if (since is None or t >= since) and _matches(event, filters or {}):
                    yield event
            continue
        if not follow or (until is not None and time.time() > until):
            return
        if f is not None and _replaced(f, path):
            f.close()
            f, partial = None, b""
            continue
        time.sleep(poll)


def _replaced(f, path: Path) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


def _matches(event: dict, filters: dict[str, list[str]]) -> bool:
    actor = event.get("Actor", {})
    attrs = actor.get("Attributes", {})
    tests = {
        "container": lambda v: actor.get("ID", "").startswith(v) or attrs.get("name") == v,
        "event": lambda v: event.get("Action") == v,
        "image": lambda v: attrs.get("image") == v,
        "type": lambda v: event.get("Type") == v,
    }
    return all(any(tests[k](v) for v in values) for k, values in filters.items())


FILTER_KEYS = ("container", "event", "image", "type")


def text(event: dict) -> str:
    """docker's line: 2026-11-25T10:00:00.000000000Z container start ID (image=…, name=…)."""
    ns = event.get("timeNano", 0)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    attrs = event.get("Actor", {}).get("Attributes", {})
    shown = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
    return (f"{stamp}.{ns % 1_000_000_000:09d}Z {event.get('Type')} {event.get('Action')} "
            f"{event.get('Actor', {}).get('ID', '')} ({shown})")
