"""pyctrd: restart policies, recovery after kill -9 of the daemon, autostart, and the
Python API with its pytest fixture — against the kernel's view of the containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Pyctr, alive, start_daemon, until

pytestmark = pytest.mark.root


def _state(pyctr, ref):
    return pyctr.container(ref)["State"]


def test_on_failure_restarts_up_to_its_limit(pyctr, name):
    pyctr.ok("run", "-d", "--name", name, "--restart", "on-failure:2", "--network", "none",
             "busybox", "sh", "-c", "echo run; exit 3")
    try:
        until(lambda: pyctr.container(name).get("RestartCount") == 2
               and _state(pyctr, name)["Status"] == "exited"
               and pyctr.ok("logs", name).count("run") == 3)
        time.sleep(1.0)  # and no third restart comes
        rec = pyctr.container(name)
        assert rec["RestartCount"] == 2 and rec["State"]["ExitCode"] == 3
        assert rec["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                      "MaximumRetryCount": 2}
    finally:
        pyctr("rm", "-f", name)


def test_always_restarts_until_stopped_by_hand(pyctr, name):
    pyctr.ok("run", "-d", "--name", name, "--restart", "always", "--network", "none",
             "busybox", "sh", "-c", "sleep 0.3; exit 0")
    try:
        until(lambda: pyctr.container(name).get("RestartCount", 0) >= 2)
        until(lambda: _state(pyctr, name)["Status"] == "running")
        pyctr.ok("stop", "-t", "0", name)
        count = pyctr.container(name)["RestartCount"]
        time.sleep(1.0)
        assert _state(pyctr, name)["Status"] == "exited"
        assert pyctr.container(name)["RestartCount"] == count
    finally:
        pyctr("rm", "-f", name)


def test_bad_restart_policies_are_clear_errors(pyctr, name):
    r = pyctr("run", "-d", "--restart", "sometimes", "busybox", "true")
    assert r.returncode == 125 and 'invalid restart policy "sometimes"' in r.stderr
    r = pyctr("run", "--rm", "--restart", "always", "busybox", "true")
    assert r.returncode == 125 and "conflicting options: --restart and --rm" in r.stderr


def test_kill_9_of_the_daemon_loses_nothing(pyctr_session):
    """Ten containers run on under their shims while the daemon is dead; one exits
    meanwhile (real code recorded by its shim); a restart policy is honoured by the
    next daemon; logs continue throughout."""
    p = pyctr_session
    names = [f"d9-{os.getpid()}-{i}" for i in range(10)]
    for n in names:
        p.ok("run", "-d", "--name", n, "--network", "none", "busybox", "sh", "-c",
             "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done")
    p.ok("run", "-d", "--name", names[0] + "-quits", "--network", "none", "busybox", "sh", "-c",
         "sleep 1; exit 42")
    p.ok("run", "-d", "--name", names[0] + "-always", "--restart", "always", "--network",
         "none", "busybox", "sh", "-c", "sleep 0.8; exit 1")
    before = {n: _state(p, n) for n in names}
    daemon_pid = int((p.run_dir / "pyctrd.pid").read_text())
    try:
        os.kill(daemon_pid, signal.SIGKILL)
        until(lambda: not alive(daemon_pid))
        time.sleep(1.5)  # -quits exits, -always exits with nobody to restart it
        assert all(alive(s["Pid"]) and alive(s["MonitorPid"]) for s in before.values())
        local = Pyctr(p.root, p.run_dir)
        quits = json.loads(local.ok("--no-daemon", "inspect", names[0] + "-quits"))[0]["State"]
        assert (quits["Status"], quits["ExitCode"]) == ("exited", 42)
        always = json.loads(local.ok("--no-daemon", "inspect", names[0] + "-always"))[0]
        assert always["State"]["Status"] == "exited" and always["RestartCount"] == 0
    finally:
        daemon = start_daemon(p)
        p.daemons.append(daemon)
    for n in names:  # the same processes, still running, logs still growing
        s = _state(p, n)
        assert s["Status"] == "running" and s["Pid"] == before[n]["Pid"]
        n1 = len(p.ok("logs", n).splitlines())
        until(lambda n=n, n1=n1: len(p.ok("logs", n).splitlines()) > n1)
    # the new daemon honours the restart policy of what exited while it was down
    until(lambda: p.container(names[0] + "-always").get("RestartCount", 0) >= 1)
    subprocess.run(p.argv("rm", "-f", *names, names[0] + "-quits", names[0] + "-always"),
                   check=True, capture_output=True)
    for s in before.values():
        assert not alive(s["Pid"]) and until(lambda s=s: not alive(s["MonitorPid"]))


def test_the_cli_starts_the_daemon_once_and_says_so(tmp_path, busybox_tar):
    p = Pyctr(tmp_path / "root", tmp_path / "run")
    env = dict(os.environ)
    env.pop("PYCTR_NO_AUTOSTART", None)
    first = subprocess.run(p.argv("ps"), env=env, capture_output=True, text=True, check=False)
    try:
        assert first.returncode == 0, first.stderr
        assert "pyctr: started the daemon pyctrd (pid" in first.stderr
        second = subprocess.run(p.argv("ps"), env=env, capture_output=True, text=True,
                                check=False)
        assert second.returncode == 0 and second.stderr == ""
        pid = int((p.run_dir / "pyctrd.pid").read_text())
        assert alive(pid)
        with open(f"/proc/{pid}/cmdline") as f:
            assert "pyctrd" in f.read()
    finally:
        r = subprocess.run(p.argv("system", "stop-daemon"), env=env, capture_output=True,
                           text=True, check=False)
        assert r.returncode == 0, r.stderr
    assert not (p.run_dir / "pyctrd.sock").exists()
    assert until(lambda: not alive(pid))
    again = subprocess.run(p.argv("system", "stop-daemon"), env=env, capture_output=True,
                           text=True, check=False)  # none runs: it says so, and starts none
    assert again.returncode == 0 and "started the daemon" not in again.stderr
    assert f"pyctrd is not running for {p.run_dir}" in again.stderr
    assert not (p.run_dir / "pyctrd.sock").exists()


def test_a_second_daemon_for_one_run_dir_is_refused(pyctr_session):
    p = pyctr_session
    r = subprocess.run([str(Path(sys.executable).parent / "pyctrd"), "--root", str(p.root),
                        "--run-dir", str(p.run_dir)], capture_output=True, text=True,
                       timeout=30, check=False)
    assert r.returncode == 1
    assert "pyctrd is already running for" in r.stderr


def test_info_and_version_show_the_daemon_the_shim_and_the_host(pyctr_session):
    p = pyctr_session
    pid = int((p.run_dir / "pyctrd.pid").read_text())
    facts = json.loads(p.ok("info", "--format", "json"))
    assert facts["Daemon"] == f"pyctrd running, pid {pid}"
    assert facts["DaemonSocket"] == str(p.run_dir / "pyctrd.sock")
    assert facts["KernelVersion"] == os.uname().release
    assert facts["NCPU"] == os.cpu_count() and facts["PyctrRootDir"] == str(p.root)
    assert facts["Shim"] == f"{Path(sys.executable).parent / 'pyctr-shim'} (pyctr/shim.c)"
    forced = p.ok("--no-daemon", "info", env={**os.environ, "PYCTR_SHIM": "python"})
    assert "Shim: python (PYCTR_SHIM=python)" in forced.splitlines()
    version = p.ok("version").splitlines()
    assert version[0].startswith("Client: pyctr ")
    assert version[1].startswith("Server: pyctrd ") and str(p.run_dir) in version[1]


def test_the_python_api(pyctr_client):
    box = pyctr_client.run("busybox", ["sleep", "60"], detach=True, network="none",
                           hostname="api-box")
    try:
        assert box.status == "running"
        res = box.exec(["sh", "-c", "hostname; echo err >&2; exit 3"])
        assert res.exit_code == 3 and res.output == "api-box\nerr\n"
        state = box.inspect()["State"]
        assert alive(state["Pid"])
        assert box.id in {c["Id"] for c in pyctr_client.ps()}
        box.stop(timeout=0)
        assert box.status == "exited" and box.inspect()["State"]["ExitCode"] == 137
    finally:
        box.remove(force=True)
    out = pyctr_client.run("busybox", ["sh", "-c", "echo hi; exit 4"], remove=True,
                           network="none")
    assert (out.exit_code, out.output) == (4, "hi\n")
    with pytest.raises(Exception, match="no such container"):
        pyctr_client.inspect(out.id)


def test_the_python_api_without_the_daemon(pyctr_session):
    from pyctr.client import Client

    client = Client(pyctr_session.root, pyctr_session.run_dir, daemon=False)
    out = client.run("busybox", ["echo", "local"], remove=True, network="none")
    assert (out.exit_code, out.output) == (0, "local\n")


@pytest.mark.pyctr_container(command=["sh", "-c", "echo ready; sleep 60"], hostname="fixt")
def test_the_pytest_fixture_yields_a_running_container(pyctr_container, pyctr_session):
    assert pyctr_container.status == "running"
    assert pyctr_container.exec(["hostname"]).output == "fixt\n"
    until(lambda: pyctr_container.logs() == "ready\n")
    assert pyctr_container.name in pyctr_session.ok("ps")


def test_a_foreground_run_through_the_daemon_is_restarted_too(pyctr, name):
    """As docker: the policy applies to a container run in the foreground as well
    (the daemon's worker was its monitor); the next runs are under a shim."""
    r = pyctr("run", "--name", name, "--restart", "on-failure:1", "--network", "none",
              "busybox", "sh", "-c", "echo once; exit 2")
    try:
        assert (r.returncode, r.stdout) == (2, "once\n")
        until(lambda: pyctr.container(name).get("RestartCount") == 1
               and _state(pyctr, name)["Status"] == "exited")
        assert pyctr.ok("logs", name) == "once\n"  # the shim's run logged; the first was ours
    finally:
        pyctr("rm", "-f", name)


def test_a_killed_container_is_not_restarted(pyctr, name):
    pyctr.ok("run", "-d", "--name", name, "--restart", "on-failure", "--network", "none",
             "busybox", "sleep", "60")
    try:
        pyctr.ok("kill", name)
        until(lambda: _state(pyctr, name)["Status"] == "exited")
        time.sleep(1.0)
        rec = pyctr.container(name)
        assert (rec["State"]["Status"], rec["State"]["ExitCode"], rec["RestartCount"]) == \
            ("exited", 137, 0)
    finally:
        pyctr("rm", "-f", name)
