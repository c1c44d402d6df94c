"""Containers on disk: one directory per container under ``ROOT/containers``.

Each holds the OCI bundle (config.json, rootfs/ — the overlay mount point),
the overlay's upper/ and work/ dirs, the generated /etc files and
``container.json``, the engine's record shaped like ``docker inspect``.
Status is derived from the kernel (the PID alive with the recorded start
time), never trusted from the file alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pyctr.errors import Conflict, NotFound
from pyctr.fsutil import atomic_write_json, locked, pid_start_time, remove_tree

WAIT_LOCK = "wait.lock"  # held (shared) by `pyctr wait` until it has read the exit

_ADJECTIVES = ("brave", "calm", "eager", "fond", "jolly", "keen", "lucid", "merry",
               "nifty", "quirky", "sharp", "sleepy", "tender", "vivid", "witty", "zen")
_NOUNS = ("babbage", "curie", "dijkstra", "euler", "gauss", "hopper", "knuth", "lamport",
          "lovelace", "noether", "pike", "ritchie", "shannon", "thompson", "turing", "wirth")


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


@dataclass
class Container:
    dir: Path
    record: dict

    @property
    def id(self) -> str:
        return self.record["Id"]

    @property
    def name(self) -> str:
        return self.record["Name"]

    @property
    def bundle(self) -> Path:
        return self.dir

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def monitor_alive(self) -> bool:
        """Whether the process that watches the container (pyctr run, or its shim) lives."""
        state = self.record["State"]
        pid = state.get("MonitorPid") or 0
        return bool(pid) and pid_start_time(pid) == state.get("MonitorStartTime")

    @property
    def monitored(self) -> bool:
        """A monitor was recorded (a created container waiting for start has none)."""
        return bool(self.record["State"].get("MonitorPid"))

    @property
    def status(self) -> str:
        """created | running | exited, the running claim checked against the kernel."""
        state = self.record["State"]
        if state["Status"] == "running":
            pid = state.get("Pid") or 0
            if not pid or pid_start_time(pid) != state.get("PidStartTime"):
                # PID 1 is gone; its monitor, alive, is recording the exit code: until it
                # has, the container is not "exited" (with an exit code not yet known)
                if not state.get("FinishedAt") and state.get("MonitorPid") != os.getpid() \
                        and self.monitor_alive:
                    return "running"
                return "exited"
        return state["Status"]

    @property
    def durable(self) -> bool:
        """A --rm container's files are gone at its exit: no need to fsync them."""
        return not self.record.get("HostConfig", {}).get("AutoRemove", False)

    def save(self) -> None:
        """Write the record; a container removed meanwhile (rm -f) stays removed."""
        try:
            atomic_write_json(self.dir / "container.json", self.record, sync=self.durable)
        except FileNotFoundError:
            if self.dir.exists():
                raise


class ContainerStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "containers"

    def _lock(self):
        return locked(self.dir / ".lock")

    def create(self, *, name: str | None, image: str, image_id: str, record: dict,
               monitor: bool = True, complete=None) -> Container:
        """Reserve a unique name and id and write the first record, under the store lock.

        ``monitor``: the calling process watches the container from now on
        (pyctr run); without, the record waits for a start (pyctr create).
        ``complete(record, id)`` adds what depends on the id before the first write.
        """
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock():
            taken = {c.name: c for c in self.list()}
            if name is None:
                name = self._free_name(set(taken))
            elif name in taken:
                other = taken[name]
                raise Conflict(f'the container name "/{name}" is already in use by container '
                               f'"{other.id}"',
                               hint=f"remove it (pyctr rm {name}) or choose another --name")
            cid = os.urandom(32).hex()
            cdir = self.dir / cid
            cdir.mkdir(mode=0o700)
            me = os.getpid() if monitor else 0
            full = {"Id": cid, "Name": name, "Created": now_iso(), "Image": image,
                    "ImageID": image_id,
                    "State": {"Status": "created", "Running": False, "Paused": False,
                              "OOMKilled": False, "Pid": 0,
                              "ExitCode": 0, "Error": "", "StartedAt": "",
                              "FinishedAt": "",
                              # the process that set the container up and watches it
                              # (pyctr run): if it dies mid-way, the next command
                              # cleans up what it held
                              "MonitorPid": me,
                              "MonitorStartTime": pid_start_time(me) if me else None}}
            full.update(record)
            if complete is not None:
                complete(full, cid)
            c = Container(cdir, full)
            c.save()
            return c

    @staticmethod
    def _free_name(taken: set[str]) -> str:
        """docker-style adjective_scientist, from os.urandom (secrets costs 3 ms to import)."""
        while True:
            a, n = os.urandom(2)
            name = f"{_ADJECTIVES[a % len(_ADJECTIVES)]}_{_NOUNS[n % len(_NOUNS)]}"
            if name not in taken:
                return name

    def list(self) -> list[Container]:
        out = []
        if not self.dir.is_dir():
            return out
        for entry in os.scandir(self.dir):
            if not entry.is_dir() or len(entry.name) != 64:
                continue
            try:
                with open(os.path.join(entry.path, "container.json")) as f:
                    out.append(Container(Path(entry.path), json.load(f)))
            except (OSError, ValueError):
                continue  # half-created: no record yet
        out.sort(key=lambda c: c.record.get("Created", ""), reverse=True)
        return out

    def by_id(self, cid: str) -> Container:
        """By full id, reading that record alone (a shim's way: it knows its id)."""
        try:
            return self.reload(Container(self.dir / cid, {}))
        except (OSError, ValueError):
            return self.get(cid)

    def get(self, ref: str) -> Container:
        """By name, full id or unique id prefix, as docker finds containers."""
        everything = self.list()
        for c in everything:
            if c.name == ref.lstrip("/") or c.id == ref:
                return c
        matches = [c for c in everything if len(ref) >= 1 and c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Conflict(f'multiple containers match "{ref}"',
                           hint="give more characters of the id, or the name")
        import difflib

        close = difflib.get_close_matches(ref.lstrip("/"), [c.name for c in everything], n=3)
        hint = ("did you mean " + ", ".join(close) + "?") if close \
            else "pyctr ps -a lists the containers"
        raise NotFound(f"no such container: {ref}", hint=hint)

    def remove_dir(self, c: Container) -> None:
        """Rename, then delete: a `pyctr run` still saving the record cannot bring it back.

        `pyctr wait` holds a shared lock on WAIT_LOCK until it has read the
        exit code: the removal of a --rm container waits for it (docker's
        wait reports the exit code of a container that removes itself).
        """
        try:
            fd = os.open(c.dir / WAIT_LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = None  # nobody waits
        gone = self.dir / f".removed-{c.id}-{os.getpid()}"
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(c.dir, gone)
        except FileNotFoundError:
            return
        finally:
            if fd is not None:
                os.close(fd)
        remove_tree(gone)

    def rename(self, c: Container, new_name: str) -> Container:
        """Under the store lock, as create: two renames to one name cannot both win."""
        with self._lock():
            for other in self.list():
                if other.name == new_name:
                    raise Conflict(f'the container name "/{new_name}" is already in use by '
                                   f'container "{other.id}"',
                                   hint="remove it or choose another name")
            c = self.reload(c)
            c.record["Name"] = new_name
            c.save()
        return c

    def reload(self, c: Container) -> Container:
        """The record as it is on disk now (another process, the shim, writes it)."""
        with open(c.dir / "container.json") as f:
            return Container(c.dir, json.load(f))

    def using_image(self, image_id: str) -> list[Container]:
        return [c for c in self.list() if c.record.get("ImageID") == image_id]
