"""A pull's layers in processes: one child per layer, a few at once.

Why processes and not threads: a layer is download → gunzip → sha256 →
tar → files.  The C parts release the GIL, but the tar headers and the
bookkeeping of every file do not, and three layers' worth of them in one
interpreter keep waiting on each other: one core often idles.  A child per
layer has its own interpreter and GIL (and inside it, ingest_layer's
read-ahead thread keeps the download and the unpack apart).  Measured on
2 cores: a 3-layer pull 13% faster than with threads.

How it goes:

* the parent forks a child per layer, the biggest first, at most
  ``workers`` alive; nothing is handed over: the child has the parent's
  memory, the layer source and the registry client included (it opens
  connections of its own: a blob download never reuses a connection);
* the child runs ``layers.ingest_layer`` and reports on a pipe, a JSON
  line per event: ``state`` and ``advance`` for the progress display
  (the parent shows them), then ``done`` with the layer, or its error (a
  PyctrError as a dict, any other pickled, so it keeps its type);
* on an error, or Ctrl-C, the parent sends SIGTERM to every child, and
  SIGKILL to any still there after GRACE seconds.  In a child the first
  SIGTERM or SIGINT stops its downloads' retries and raises
  KeyboardInterrupt, so ingest_layer removes its temp files (later ones are
  ignored: they would cut that short).  A child dies with its parent
  (PR_SET_PDEATHSIG): a ``kill -9`` of the pull leaves no child running,
  only temp files that the next pull sweeps (sweep_tmp: they carry the
  dead child's pid).

The fork is from the pull's main thread, with SIGINT and SIGTERM blocked
until the child is on record.  Another thread (rich's refresh) is not in
the child, and the child touches nothing it could be holding: it writes
to its pipe and to a fresh stderr only, and ends with ``os._exit``.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import selectors
import signal
import sys
import time
from dataclasses import asdict, dataclass

from pyctr.errors import ImageError, PyctrError

from . import layers
from .sources import LayerSource


@dataclass
class _Child:
    pid: int
    fd: int
    key: str
    buf: bytes = b""
    result: layers.LayerInfo | None = None
    error: BaseException | None = None


def _send(fd: int, event: dict) -> None:
    data = (json.dumps(event) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


_STOP = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum, frame) -> None:
    """The first SIGINT or SIGTERM: stop the downloads' retries (registry.py, when a
    pull is what runs) and unwind, cleaning up; further ones would cut the clean-up
    short (Ctrl-C on a terminal sends SIGINT here, then the parent SIGTERM)."""
    for sig in _STOP:
        signal.signal(sig, signal.SIG_IGN)
    registry = sys.modules.get(__package__ + ".registry")
    if registry is not None:
        for reg in list(registry._LIVE):
            reg.cancel.set()
    raise KeyboardInterrupt


def _child(fd: int, store_dirs, src: LayerSource, diff_id: str | None, key: str,
           progress, parent: int) -> None:
    """The child's whole life: ingest one layer, report, ``os._exit``."""
    code = 1
    try:
        import prctl  # python-prctl

        prctl.set_pdeathsig(signal.SIGTERM)
        for sig in _STOP:
            signal.signal(sig, _interrupt)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)  # blocked by the parent to fork
        if os.getppid() != parent:
            raise KeyboardInterrupt  # the parent died before PDEATHSIG was set
        # SIGPIPE stays ignored: a parent gone makes the next report an EPIPE, an error
        # like any other, so ingest_layer removes its temp files (SIG_DFL would not)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # rich's refresh thread may have held a lock of these at the fork: fresh ones
        sys.stdout = sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        if progress is not None:  # the display's calls become lines on the pipe
            progress.state = lambda k, s: _send(fd, {"state": [k, s]})
            progress.advance = lambda k, n: _send(fd, {"advance": [k, n]})
        info = layers.ingest_layer(store_dirs, src, diff_id, key)
        _send(fd, {"done": asdict(info)})
        code = 0
    except KeyboardInterrupt:
        pass  # stopped by the parent: it knows why
    except PyctrError as exc:
        _send(fd, {"error": exc.to_dict()})
    except BaseException as exc:  # noqa: BLE001 - reported as it is, then the child ends
        try:  # OSError and its kin (timeouts, TLS) keep their type, errno and paths
            _send(fd, {"pickled": base64.b64encode(pickle.dumps(exc)).decode()})
        except Exception:  # noqa: BLE001 - not picklable: its type and text
            _send(fd, {"error": {"type": "PyctrError",
                                 "message": f"layer {key}: {type(exc).__name__}: {exc}"}})
    finally:
        os._exit(code)


def _start(store_dirs, src: LayerSource, diff_id: str | None, progress,
           siblings: list[int]) -> _Child:
    """Fork the child of one layer.  SIGINT and SIGTERM wait (blocked) until the parent
    has it on record, and until the child has its own handlers."""
    parent = os.getpid()
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # pragma: no cover - the child: measured through the pull tests
        for fd in (r, *siblings):  # the read ends are the parent's alone
            os.close(fd)
        _child(w, store_dirs, src, diff_id, src.key, progress, parent)
    os.close(w)
    return _Child(pid, r, src.key)


def _handle(child: _Child, line: bytes, progress) -> None:
    event = json.loads(line)
    if "state" in event and progress is not None:
        progress.state(*event["state"])
    elif "advance" in event and progress is not None:
        progress.advance(*event["advance"])
    elif "done" in event:
        child.result = layers.LayerInfo(**event["done"])
    elif "error" in event:
        child.error = PyctrError.from_dict(event["error"])
    elif "pickled" in event:  # from our own child, over our own pipe
        child.error = pickle.loads(base64.b64decode(event["pickled"]))


def _reap(child: _Child) -> None:
    _, status = os.waitpid(child.pid, 0)
    os.close(child.fd)
    if child.result is None and child.error is None:
        how = (f"signal {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
               else f"status {os.WEXITSTATUS(status)}")
        child.error = ImageError(f"the process unpacking layer {child.key} ended ({how}) "
                                 "without a result", hint="try the pull again")


GRACE = 10.0  # seconds a child has to end on SIGTERM before SIGKILL


def _stop(children: dict[int, _Child], grace: float | None = None) -> None:
    """SIGTERM every child, and SIGKILL what still runs after ``grace`` seconds (one
    blocked on a stalled connection; its temp files are swept by the next pull)."""
    for child in children.values():
        _kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + (GRACE if grace is None else grace)
    left = {child.pid for child in children.values()}
    while left:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left and time.monotonic() > deadline:
            for pid in left:
                _kill(pid, signal.SIGKILL)
            deadline = float("inf")
        elif left:
            time.sleep(0.01)
    for child in children.values():
        os.close(child.fd)
    children.clear()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def ingest(store_dirs, items: list[tuple[LayerSource, str | None]], workers: int,
           progress=None) -> dict[str, layers.LayerInfo]:
    """Ingest ``items`` (source, diff_id), each in a child; {key: LayerInfo}.

    Raises the first child's error, after every child has ended.
    """
    pending = list(items)
    running: dict[int, _Child] = {}  # by pipe fd
    results: dict[str, layers.LayerInfo] = {}
    error: BaseException | None = None
    sel = selectors.DefaultSelector()
    try:
        while pending or running:
            while pending and len(running) < workers and error is None:
                src, diff_id = pending.pop(0)
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
                try:
                    child = _start(store_dirs, src, diff_id, progress, list(running))
                    running[child.fd] = child
                    sel.register(child.fd, selectors.EVENT_READ, child)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            for key, _ in sel.select():
                child = key.data
                data = os.read(child.fd, 1 << 16)
                if data:
                    child.buf += data
                    *lines, child.buf = child.buf.split(b"\n")
                    for line in lines:
                        _handle(child, line, progress)
                    continue
                sel.unregister(child.fd)
                del running[child.fd]
                _reap(child)
                if child.result is not None:
                    results[child.key] = child.result
                elif error is None:
                    error = child.error
                    pending.clear()
                    for fd in running:  # no use going on: stop the others now
                        sel.unregister(fd)
                    _stop(running)
                    break  # the rest of this select's events were theirs
    except BaseException:
        for fd in running:
            sel.unregister(fd)
        _stop(running)  # SIGINT and SIGTERM are not blocked here: a second Ctrl-C
        raise  # cuts the wait short, and the children die with us (PDEATHSIG)
    finally:
        sel.close()
    if error is not None:
        raise error
    return results
