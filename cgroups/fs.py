"""Reading and writing cgroupfs files, with errors that name the file.

cgroupfs files are not regular files: the kernel parses every write(2) on
its own, refuses bad values with an errno (EINVAL, EBUSY, EOPNOTSUPP …) and
cannot create new files.  So a write opens an existing file without
O_CREAT and turns any OSError into a PyctrError(step="cgroup") that names
the file, the value and a hint.  ``_write_raw`` is the one seam unit tests
monkeypatch to play the kernel's part (an EBUSY, say).
"""

from __future__ import annotations

import errno as E
import os
from pathlib import Path

from pyctr import explain
from pyctr.errors import PyctrError

# what a human needs to know when the kernel says no, by errno
_HINTS = {
    E.EBUSY: "the cgroup is busy: it has processes, children or usage above the new value",
    E.EOPNOTSUPP: "the kernel does not support this here (a threaded cgroup, or a controller"
                  " that is not enabled for this cgroup)",
    E.EINVAL: "the kernel refused the value (out of range, or not allowed by the parent cgroup)",
    E.ENOENT: "the file does not exist: the controller is not enabled or not supported here",
    E.EACCES: "permission denied: cgroups need root (or a delegated subtree)",
    E.EPERM: "permission denied: cgroups need root (or a delegated subtree)",
    E.ENOSPC: "no room: cpuset.cpus or cpuset.mems of the cgroup is empty",
}


def _write_raw(path: str, data: bytes, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def error(exc: OSError, path: Path | str, what: str, hint: str | None = None) -> PyctrError:
    """A PyctrError for a failed cgroupfs operation on ``path``."""
    code = exc.errno
    return PyctrError(
        f"{what} {path}: {exc.strerror or exc}" if what else str(exc),
        step="cgroup", path=str(path), errno=code,
        hint=hint or _HINTS.get(code or 0),
    )


def write(path: Path | str, value: str | int, *, append: bool = False,
          hint: str | None = None, hints: dict[int, str] | None = None) -> None:
    """Write ``value`` to an existing cgroupfs file in one write(2).

    ``append`` is for files that take one rule per write (io.max,
    devices.allow, cgroup.subtree_control): the kernel ignores the offset,
    and a fake file in a test keeps every line.
    """
    text = str(value)
    explain.note("cgroup", f"echo {text} > {path}" + (
        " (0: the writing process itself)" if text == "0" and str(path).endswith(
            ("/tasks", "/cgroup.procs")) else ""))
    data = (text + "\n").encode() if append else text.encode()
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        _write_raw(str(path), data, flags)
    except OSError as exc:
        h = (hints or {}).get(exc.errno or 0, hint)
        raise PyctrError(
            f"write {text!r} to {path}: {exc.strerror or exc}",
            step="cgroup", path=str(path), errno=exc.errno,
            hint=h or _HINTS.get(exc.errno or 0),
        ) from exc


def read(path: Path | str) -> str:
    """The stripped text of a cgroupfs file; PyctrError when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise PyctrError(
            f"read {path}: {exc.strerror or exc}", step="cgroup",
            path=str(path), errno=exc.errno, hint=_HINTS.get(exc.errno or 0),
        ) from exc


def read_int(path: Path | str, *, unlimited: str = "max") -> int | None:
    """An integer file; None for ``max`` (v2's spelling of unlimited)."""
    text = read(path)
    if text == unlimited:
        return None
    return int(text)


def read_keyed(path: Path | str) -> dict[str, int]:
    """A flat keyed file (``key value`` per line: cpu.stat, memory.events, memory.oom_control)."""
    out = {}
    for line in read(path).splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def read_pids(path: Path | str) -> list[int]:
    """The pids in a cgroup.procs file; [] when the cgroup is gone."""
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise error(exc, path, "read") from exc


def mkdir(path: Path) -> bool:
    """mkdir a cgroup; True if this call created it."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise error(exc, path, "mkdir") from exc


def rmdir(path: Path) -> None:
    """rmdir a cgroup (its files go with it); a missing one is fine."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise error(exc, path, "rmdir", hint="the cgroup still has processes or child cgroups"
                    if exc.errno == E.EBUSY else None) from exc


def parse_list(text: str) -> set[int]:
    """A kernel cpu/node list ("0-3,5") as a set; ValueError when malformed."""
    out: set[int] = set()
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        a = int(lo)
        b = int(hi) if sep else a
        if a < 0 or b < a:
            raise ValueError(part)
        out.update(range(a, b + 1))
    return out
