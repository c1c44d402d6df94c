"""`--explain`: every kernel-level step of making a container, as it happens, with its object.

    $ sudo pyctr run --rm --explain --memory 64m busybox true
    pyctr explain: image          busybox:latest = sha256:7954f84ed748, 1 layer
                   … the image's layers become the overlay's read-only lowerdirs
    pyctr explain: overlay        mount overlay on /var/lib/pyctr/containers/…/rootfs …
    …

Each event is (step, what, why): ``step`` is the init pipeline's own name
for it (runtime/init.py's STEPS) or the engine's (image, overlay, network,
cgroup, namespaces, config.json), ``what`` the object made or changed,
``why`` one sentence for a learner (from WHY, printed the first time a step
shows up).  ``--explain=json`` prints one JSON object per event instead.
Events go to stderr: stdout stays the container's.

This module imports nothing of pyctr (errors.py's rule): the engine, the
runtime, cgroups/ and netns/ all call ``note``, which costs one global
lookup when nobody asked for an explanation.  A container's init runs in
another process: it sends its events to the runtime over the sync socket
(init.py), and the runtime hands them to ``emit``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TextIO

WHY = {
    "image": "the image's layers become the overlay's read-only lower layers",
    "overlay": "overlayfs stacks the layers; the container writes only to its own upperdir",
    "config.json": "the OCI runtime spec: everything the runtime needs, in one file",
    "network": "a network namespace file, a veth pair and an address make the container "
               "reachable",
    "cgroup": "the kernel enforces limits through files in the container's cgroup",
    "namespaces": "new namespaces give the container its own view of pids, mounts, "
                  "hostname, IPC, network and cgroups",
    "mount propagation": "make every mount private, so nothing made here leaks to the host",
    "rootfs bind": "bind the rootfs onto itself: pivot_root needs a mount point",
    "mounts": "mount /proc, /dev, /sys … inside the new root, as the spec lists them",
    "devices": "create only the device nodes a container may use",
    "dev symlinks": "the /dev/fd, stdin, stdout, stderr links programs expect",
    "masked paths": "hide host information under /proc and /sys",
    "readonly paths": "make the kernel's tunables under /proc read-only",
    "seccomp compile": "compile the seccomp profile to a BPF program while files are in view",
    "pivot_root": "the rootfs becomes / and the host's root is detached: it is out of reach",
    "root readonly": "--read-only: the root filesystem is remounted read-only",
    "console": "-t: a new pty becomes the container's controlling terminal",
    "hostname": "the UTS namespace has its own hostname",
    "loopback": "bring up lo inside the new network namespace",
    "rlimits": "resource limits per process (setrlimit)",
    "seccomp without no_new_privs": "without no_new_privs the filter must be loaded while "
                                    "still privileged",
    "user": "switch to the image's or -u user (setgroups, setgid, setuid)",
    "capabilities": "keep only docker's default capabilities; root is no longer all-powerful",
    "no_new_privs": "no setuid binary or file capability can give more privilege from now on",
    "seccomp": "a BPF filter the kernel runs on every syscall: dangerous ones fail with EPERM",
    "chdir": "the working directory inside the container",
    "lookup executable": "find the command in the container's PATH before waiting",
    "close fds": "no file descriptor of pyctr leaks into the container",
    "signals": "reset signal dispositions and the mask Python left behind",
    "wait for start": "created: the init waits until start is asked for",
    "execve": "the init replaces itself with the command: it is PID 1 now",
    "cgroup join": "the process moves into the container's cgroup before it forks PID 1",
    "setns": "exec joins the running container's namespaces by their /proc files",
}

_sink: Callable[[dict], None] | None = None
_t0 = 0.0


def enabled() -> bool:
    return _sink is not None


def note(step: str, what: str, **obj) -> None:
    """One event; nothing at all unless an explanation was asked for."""
    if _sink is not None:
        emit({"step": step, "what": what, **obj})


def emit(event: dict) -> None:
    """An event (from here, or relayed from a container's init or a shim's creator).

    ``t`` is CLOCK_MONOTONIC, one clock for every process of the machine:
    an event relayed from another process keeps the time it happened.
    """
    if _sink is not None:
        event.setdefault("t", time.monotonic())
        _sink(event)


def _ms(ev: dict) -> float:
    return round((ev.get("t", _t0) - _t0) * 1000, 1)


class _Text:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seen: set[str] = set()

    def __call__(self, ev: dict) -> None:
        step = ev["step"]
        line = f"pyctr explain {_ms(ev):>7.1f} ms  {step:<17}  {ev['what']}"
        if step not in self.seen and step in WHY:
            self.seen.add(step)
            line += f"\n{'':>45}↳ {WHY[step]}"
        try:
            print(line, file=self.out, flush=True)
        except (OSError, ValueError):
            pass  # the terminal went away: the container goes on


class _Json:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, ev: dict) -> None:
        try:
            out = {k: v for k, v in ev.items() if k != "t"}
            print(json.dumps({**out, "ms": _ms(ev), "why": WHY.get(ev["step"], "")}),
                  file=self.out, flush=True)
        except (OSError, ValueError):
            pass


def start(mode: str | None, out: TextIO) -> None:
    """``mode``: "text", "json" or None (off)."""
    global _sink, _t0
    if not mode:
        _sink = None
        return
    _t0 = time.monotonic()
    _sink = _Json(out) if mode == "json" else _Text(out)


def relay(send: Callable[[dict], None]) -> None:
    """In a container's init: events go to ``send`` (the sync socket), not to a terminal."""
    global _sink
    _sink = send


def stop() -> None:
    global _sink
    _sink = None
