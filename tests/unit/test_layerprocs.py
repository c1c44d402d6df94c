"""A pull's layer processes: results, errors and progress come back over the pipes."""

from __future__ import annotations

import errno
import gzip
import io
import os
import signal

import pytest

from pyctr.errors import ImageError
from pyctr.images import layerprocs
from pyctr.images.sources import LayerSource
from pyctr.images.store import ImageStore
from tests.unit.test_images_store import layer_tar, sha


@pytest.fixture
def store(tmp_path) -> ImageStore:
    s = ImageStore(tmp_path / "root")
    s._ensure()
    return s


class Recorder:
    """The parent's display: what the children reported, in the parent's memory."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def state(self, key: str, state: str) -> None:
        self.events.append(("state", key, state, os.getpid()))

    def advance(self, key: str, n: int) -> None:
        self.events.append(("advance", key, n, os.getpid()))


def source(key: str, blob: bytes, progress: Recorder | None = None, **kw) -> LayerSource:
    def opener():
        if progress is not None:
            progress.state(key, f"Downloading in {os.getpid()}")
            progress.advance(key, len(blob))
        return io.BytesIO(blob)
    return LayerSource(key=key, open=opener, digest=sha(blob), size=len(blob), **kw)


def test_each_layer_is_ingested_by_a_child_and_its_result_comes_back(store):
    plains = [layer_tar({f"f{i}": bytes([i]) * 100}) for i in range(3)]
    blobs = [gzip.compress(p) for p in plains]
    shown = Recorder()
    items = [(source(f"k{i}", b, shown), sha(p)) for i, (b, p) in enumerate(zip(blobs, plains))]
    got = layerprocs.ingest(store.dirs, items, workers=2, progress=shown)
    assert {k: (v.digest, v.diff_id) for k, v in got.items()} == \
        {f"k{i}": (sha(b), sha(p)) for i, (b, p) in enumerate(zip(blobs, plains))}
    for i in range(3):
        assert (store.dirs.layer_dir(sha(plains[i])) / f"diff/f{i}").read_bytes() == \
            bytes([i]) * 100
    # the display's calls were made in the children and shown in the parent
    states = [e for e in shown.events if e[0] == "state"]
    assert sorted(e[1] for e in states) == ["k0", "k1", "k2"]
    assert all(e[3] == os.getpid() for e in shown.events)
    child_pids = {int(e[2].split()[-1]) for e in states}
    assert os.getpid() not in child_pids and len(child_pids) == 3
    assert sorted(e[2] for e in shown.events if e[0] == "advance") == sorted(map(len, blobs))
    assert os.listdir(store.dirs.tmp) == []


def test_an_image_error_in_a_child_is_raised_in_the_parent_as_it_was(store):
    plain = layer_tar({"a": b"a"})
    blob = gzip.compress(plain)
    items = [(source("bad", blob), sha(b"something else"))]
    with pytest.raises(ImageError, match=r"diff_id mismatch for layer sha256:[0-9a-f]{64}") as err:
        layerprocs.ingest(store.dirs, items, workers=1)
    assert err.value.hint and "not the one the image config names" in err.value.hint
    assert os.listdir(store.dirs.tmp) == []


def test_an_os_error_in_a_child_stays_an_os_error(store):
    def opener():
        raise OSError(errno.ENOSPC, "No space left on device", "/made/up")
    items = [(LayerSource(key="k", open=opener, digest=sha(b"x")), None)]
    with pytest.raises(OSError) as err:
        layerprocs.ingest(store.dirs, items, workers=1)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, "/made/up")


def test_a_child_killed_is_an_error_naming_the_layer_and_the_signal(store):
    def opener():
        os.kill(os.getpid(), signal.SIGKILL)
    items = [(LayerSource(key="sha256:dead", open=opener, digest=sha(b"x")), None)]
    with pytest.raises(ImageError, match=r"the process unpacking layer sha256:dead ended "
                                         r"\(signal SIGKILL\) without a result"):
        layerprocs.ingest(store.dirs, items, workers=1)


def test_after_a_failure_no_more_layers_start_and_every_child_is_reaped(store, tmp_path):
    def failing():
        raise OSError(errno.EIO, "Input/output error")

    def marking(name: str):
        plain = layer_tar({name: name.encode()})
        good = gzip.compress(plain)

        def opener():
            (tmp_path / name).touch()  # a file: the child's memory is not ours
            return io.BytesIO(good)
        return LayerSource(key=name, open=opener, digest=sha(good), size=1), sha(plain)
    items = [(LayerSource(key="first", open=failing, digest=sha(b"x"), size=10), None)] + \
        [marking(f"later{i}") for i in range(3)]
    with pytest.raises(OSError, match="Input/output error"):
        layerprocs.ingest(store.dirs, items, workers=1)
    assert sorted(p.name for p in tmp_path.glob("later*")) == []  # none was started
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child of ours is left to reap
    # the control: the same layers with no failure before them are all opened
    layerprocs.ingest(store.dirs, items[1:], workers=1)
    assert sorted(p.name for p in tmp_path.glob("later*")) == ["later0", "later1", "later2"]


def test_load_uses_processes_only_when_no_other_thread_runs(tmp_path, monkeypatch):
    """A fork copies only the forking thread: with a caller's threads about, threads."""
    import threading

    from tests.unit.test_images_store import oci_layout

    calls: list[int] = []
    real = layerprocs.ingest

    def spy(*args, **kw):
        calls.append(threading.active_count())
        return real(*args, **kw)
    monkeypatch.setattr(layerprocs, "ingest", spy)
    oci_layout(tmp_path / "one", [{"a": b"a"}], ["gzip"])
    oci_layout(tmp_path / "two", [{"b": b"b"}], ["gzip"])
    store = ImageStore(tmp_path / "root")
    assert threading.active_count() == 1
    store.load(tmp_path / "one")
    assert calls == [1]
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        (image,) = store.load(tmp_path / "two")
    finally:
        stop.set()
        other.join()
    assert calls == [1] and image.names  # loaded, in threads


def test_stop_kills_a_child_that_does_not_end_on_sigterm():
    import time

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child stuck where SIGTERM cannot reach it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(r, 1)  # it ignores SIGTERM from here on
    os.close(w)
    t0 = time.monotonic()
    layerprocs._stop({r: layerprocs._Child(pid, r, "stuck")}, grace=0.3)
    assert 0.3 <= time.monotonic() - t0 < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and reaped


def test_other_errors_keep_their_type_and_details(store):
    def timing_out():
        raise TimeoutError("timed out")

    def renaming():
        raise OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
    with pytest.raises(TimeoutError, match="timed out"):
        layerprocs.ingest(store.dirs, [(LayerSource(key="t", open=timing_out), None)], 1)
    with pytest.raises(OSError) as err:
        layerprocs.ingest(store.dirs, [(LayerSource(key="r", open=renaming), None)], 1)
    assert (err.value.errno, err.value.filename, err.value.filename2) == \
        (errno.EXDEV, "/a", "/b")


def test_a_failure_stops_a_layer_still_downloading_at_once(store, monkeypatch):
    import time

    monkeypatch.setattr(layerprocs, "GRACE", 0.5)

    def stalled():  # a read-ahead thread stuck on a connection that sends nothing,
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # which SIGTERM cannot cut short
        time.sleep(60)

    def failing():
        time.sleep(0.3)
        raise OSError(errno.EIO, "Input/output error")
    items = [(LayerSource(key="slow", open=stalled, size=2), None),
             (LayerSource(key="bad", open=failing, size=1), None)]
    t0 = time.monotonic()
    with pytest.raises(OSError, match="Input/output error"):
        layerprocs.ingest(store.dirs, items, workers=2)
    assert time.monotonic() - t0 < 5  # SIGKILLed after the grace, not waited for
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
