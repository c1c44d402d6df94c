"""Integration fixtures: a pyctr root with the busybox image, and the CLI as users type it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import make_busybox_rootfs
from tests.integration.runtime_bundle import bundle, state_root  # noqa: F401 - fixtures

PYCTR = str(Path(sys.executable).parent / "pyctr")
# pyctr roots live here: not on an overlay (an upperdir cannot), so in the
# cgroup v2 guest of scripts/vm-test a tmpfs it names, else /var/tmp
ROOT_BASE = os.environ.get("PYCTR_TEST_ROOT_BASE", "/var/tmp")
# a root without a daemon of its own (the image tests' roots, say) is worked on
# in the CLI's process: the tests never start a daemon they do not stop
os.environ["PYCTR_NO_AUTOSTART"] = "1"


@dataclass
class Pyctr:
    root: Path
    run_dir: Path
    daemons: list = field(default_factory=list)  # pyctrd processes to stop at the end

    def argv(self, *args: str) -> list[str]:
        return [PYCTR, "--root", str(self.root), "--run-dir", str(self.run_dir), *args]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60,
                 **kw) -> subprocess.CompletedProcess:
        kw.setdefault("stdin", subprocess.DEVNULL if input is None else None)
        return subprocess.run(self.argv(*args), check=False, input=input, capture_output=True, text=True,
                              timeout=timeout, **kw)

    def ok(self, *args: str, **kw) -> str:
        r = self(*args, **kw)
        assert r.returncode == 0, f"pyctr {' '.join(args)} -> {r.returncode}\n{r.stderr}"
        return r.stdout

    def start(self, name: str, *args: str, local: bool = False) -> subprocess.Popen:
        """`pyctr run --name NAME ARGS…` in the background; returns once it runs.
        ``local``: in the CLI's own process (--no-daemon), which is then the monitor."""
        flags = ["--no-daemon"] if local else []
        proc = subprocess.Popen(self.argv(*flags, "run", "--name", name, *args),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.container(name)["State"]["Status"] == "running":
                    return proc
            except KeyError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited early: {proc.stderr.read()}")
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise AssertionError(f"{name} never ran")

    def stop(self, name: str, proc: subprocess.Popen) -> None:
        """rm -f the container, then make sure its `pyctr run` is gone too."""
        self("rm", "-f", name)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        """Remove what this root made: containers, then its networks' bridges."""
        for cid in self.ok("ps", "-aq", "--no-trunc").split():
            self("rm", "-f", cid)
        from pyctr.netns import Network, delete_bridge, remove_masquerade

        for data in json.loads(self.ok("network", "ls", "--format", "json")):
            if data.get("bridge"):  # the default network stays with its root: undo it here
                net = Network.from_dict(data)
                remove_masquerade(net)
                delete_bridge(net)

    def container(self, name: str) -> dict:
        """`pyctr inspect NAME` (KeyError when there is no such container)."""
        r = self("inspect", name)
        if r.returncode != 0:
            raise KeyError(name)
        return json.loads(r.stdout)[0]

    def image_names(self) -> set[str]:
        return {f"{i['Repository']}:{i['Tag']}"
                for i in map(json.loads, self.ok("images", "--format", "json").splitlines())}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def until(predicate, timeout: float = 15):
    """Poll ``predicate`` until it returns something true (which is returned)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def imported_modules(argv: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run a pyctr command with python's import trace on: its result and what it imported."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return r, {line.split("|")[-1].strip() for line in r.stderr.splitlines()
               if line.startswith("import time:")}


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bbtar")
    root = make_busybox_rootfs(d / "rootfs")
    tar = d / "busybox.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    return tar


@pytest.fixture(scope="session")
def pyctr_session(busybox_tar) -> Pyctr:
    """One root for the session with busybox:latest imported through `pyctr import`."""
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, mounts and overlayfs")
    base = Path(tempfile.mkdtemp(prefix="pyctr-it-", dir=ROOT_BASE))
    p = Pyctr(base / "root", base / "run")
    p.daemons.append(start_daemon(p))  # the session's commands go through pyctrd
    try:
        p.ok("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        yield p
        p.cleanup()
    finally:
        for daemon in p.daemons:
            stop_daemon(daemon)
    shutil.rmtree(base, ignore_errors=True)


def start_daemon(p: Pyctr) -> subprocess.Popen:
    """pyctrd for the root of ``p``; returns once its socket answers."""
    from pyctr.daemon import spawn

    return spawn(p.root, p.run_dir)


def stop_daemon(proc: subprocess.Popen) -> None:
    from pyctr.daemon import end

    end(proc)


@pytest.fixture
def pyctr(pyctr_session) -> Pyctr:
    return pyctr_session


@pytest.fixture(scope="session")
def pyctr_client(pyctr_session):
    """pyctr.Client of the session's root (the plugin's pyctr_container uses it)."""
    from pyctr.client import Client

    return Client(pyctr_session.root, pyctr_session.run_dir)


@pytest.fixture
def name() -> str:
    """A unique container name for this test."""
    return f"t-{uuid.uuid4().hex[:10]}"
