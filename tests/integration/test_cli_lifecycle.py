"""Detached containers through the CLI as a user types it: run -d, create/start, logs,
stop, kill, wait, restart, and a shim that dies — checked against what the kernel shows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import alive, until

pytestmark = pytest.mark.root

TICKER = "echo start; echo to-err >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("PPid:")).split()[1])


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


@pytest.fixture
def detached(pyctr):
    """Remove what a test started with run -d, and check its shims are gone."""
    shims = []
    yield shims
    for cid in pyctr.ok("ps", "-aq", "--no-trunc").split():
        pyctr("rm", "-f", cid)
    for pid in shims:
        assert _gone(pid), f"shim {pid} outlived its container"


def _state(pyctr, ref):
    return pyctr.container(ref)["State"]


def test_run_d_prints_the_id_and_the_shim_is_pid_1s_parent(pyctr, name, detached):
    r = pyctr("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    state = _state(pyctr, cid[:8])  # any unique prefix works
    detached.append(state["MonitorPid"])
    assert state["Status"] == "running" and state["Running"] is True
    assert _ppid(state["Pid"]) == state["MonitorPid"]  # the shim reaps PID 1 …
    assert alive(state["MonitorPid"])
    assert os.getsid(state["MonitorPid"]) != os.getsid(0)  # … in a session of its own
    with open(f"/proc/{state['MonitorPid']}/stat") as f:  # … with no controlling terminal
        assert f.read().rsplit(")", 1)[1].split()[4] == "0"
    line = next(ln for ln in pyctr.ok("ps").splitlines() if name in ln)
    assert "Up " in line and "sleep 60" in line


SHIM_OUTPUT = ("printf 'one\\n\"two\"\\tthree\\n\\377bad\\n'; printf 'oops\\n' >&2; "
               "printf 'no newline'; sleep 1.5; exit 7")


def _pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(next(ln for ln in f if ln.startswith("Pss:")).split()[1])


@pytest.mark.parametrize("monitor", ["c", "python"])
def test_the_shim_is_small_and_both_monitors_log_and_record_alike(pyctr, name, detached,
                                                                   monitor):
    """pyctr-shim (pyctr/shim.c, built by setup.sh) watches a detached container; with
    PYCTR_SHIM=python the same loop runs in Python.  Both write the same json-file log
    and record the real exit code; the C one costs a fraction of the memory."""
    import sys

    exe = str(Path(sys.executable).parent / "pyctr-shim")
    if monitor == "c" and not os.access(exe, os.X_OK):
        pytest.fail(f"{exe} is missing: scripts/setup.sh builds it")
    # without a daemon the CLI forks the shim itself, so the environment reaches it
    env = {**os.environ, "PYCTR_NO_DAEMON": "1",
           **({"PYCTR_SHIM": "python"} if monitor == "python" else {})}
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
             SHIM_OUTPUT, env=env)
    state = _state(pyctr, name)
    shim = state["MonitorPid"]
    detached.append(shim)
    assert state["Running"], state
    until(lambda: "bad" in pyctr.ok("logs", name))  # the loop runs by now
    seen = os.readlink(f"/proc/{shim}/exe")
    if monitor == "c":
        assert seen == exe
        assert _pss_kb(shim) < 1024  # a Python shim is ~3 MB
    else:
        assert Path(seen).name.startswith("python")
    until(lambda: not _state(pyctr, name)["Running"] and not alive(shim))
    after = _state(pyctr, name)
    assert (after["Status"], after["ExitCode"]) == ("exited", 7)
    with open(pyctr.container(name)["LogPath"]) as f:
        recs = [json.loads(line) for line in f]
    assert sorted((r["stream"], r["log"]) for r in recs) == sorted([
        ("stdout", "one\n"), ("stdout", '"two"\tthree\n'), ("stdout", "\ufffdbad\n"),
        ("stderr", "oops\n"), ("stdout", "no newline")])
    assert not (pyctr.root / "containers" / pyctr.container(name)["Id"] / "stdin.fifo").exists()


def test_logs_keep_stdout_and_stderr_apart_with_times_and_tail(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c", TICKER)
    detached.append(_state(pyctr, name)["MonitorPid"])
    until(lambda: "tick 3" in pyctr.ok("logs", name))
    r = pyctr("logs", name)
    assert r.stdout.startswith("start\ntick 1\ntick 2\ntick 3\n")
    assert r.stderr == "to-err\n"
    last = pyctr.ok("logs", "--tail", "2", name).splitlines()
    assert len(last) == 2 and all(ln.startswith("tick ") for ln in last)
    stamped = pyctr.ok("logs", "-t", "--tail", "1", name)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z tick \d+\n$", stamped)
    assert pyctr.ok("logs", "--since", "1h", name).startswith("start\n")
    assert pyctr.ok("logs", "--since", str(time.time() + 60), name) == ""
    with open(pyctr.container(name)["LogPath"]) as f:  # docker's json-file format
        first = json.loads(f.readline())
    assert first["log"] == "start\n" and first["stream"] in ("stdout", "stderr")
    bad = pyctr("logs", "--tail", "many", name)
    assert bad.returncode == 125 and 'invalid value for --tail: "many"' in bad.stderr


def test_logs_f_follows_new_lines_until_the_container_stops(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
             "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.3; done")
    detached.append(_state(pyctr, name)["MonitorPid"])
    t0 = time.monotonic()
    r = pyctr("logs", "-f", name, timeout=30)
    assert r.returncode == 0
    assert r.stdout == "".join(f"line {i}\n" for i in range(1, 7))
    assert time.monotonic() - t0 > 1.0  # it waited for lines written after it began


def test_stop_honours_the_timeout_then_kills(pyctr, name, detached):
    # sh as PID 1 ignores SIGTERM (no handler in a pid namespace's init)
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    state = _state(pyctr, name)
    detached.append(state["MonitorPid"])
    t0 = time.monotonic()
    pyctr.ok("stop", "-t", "1", name)
    took = time.monotonic() - t0
    assert 1.0 <= took < 6, took
    after = _state(pyctr, name)
    assert (after["Status"], after["ExitCode"], after["Running"]) == ("exited", 137, False)
    assert not alive(state["Pid"])
    assert _gone(state["MonitorPid"])
    assert not os.path.ismount(pyctr.container(name)["GraphDriver"]["Data"]["MergedDir"])


def test_stop_signal_handled_by_the_container_is_quick(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
             "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done")
    detached.append(_state(pyctr, name)["MonitorPid"])
    t0 = time.monotonic()
    pyctr.ok("stop", name)
    assert time.monotonic() - t0 < 5
    assert _state(pyctr, name)["ExitCode"] == 3
    assert "got-term" in pyctr.ok("logs", name)


def test_kill_sends_the_signal_asked_for(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
             "trap 'echo usr1; exit 5' USR1; while true; do sleep 0.1; done")
    detached.append(_state(pyctr, name)["MonitorPid"])
    pyctr.ok("kill", "-s", "USR1", name)
    assert pyctr.ok("wait", name) == "5\n"
    assert pyctr.ok("logs", name) == "usr1\n"
    again = pyctr("kill", name)
    assert again.returncode == 1
    assert f"cannot kill container {name}: container is not running" in again.stderr
    bad = pyctr("kill", "-s", "NOPE", name)
    assert bad.returncode == 125 and 'invalid signal: "NOPE"' in bad.stderr


def test_create_then_start_then_wait(pyctr, name, detached):
    cid = pyctr.ok("create", "--name", name, "--network", "none", "busybox", "sh", "-c",
                   "echo ran; exit 7").strip()
    state = _state(pyctr, name)
    assert (state["Status"], state["Pid"]) == ("created", 0)
    assert "Created" in next(ln for ln in pyctr.ok("ps", "-a").splitlines() if name in ln)
    pyctr.ok("ps")  # a created container is no abandoned one: reconcile leaves it alone
    assert _state(pyctr, name)["Status"] == "created"
    assert not os.path.ismount(f"{pyctr.root}/containers/{cid}/rootfs")
    r = pyctr("start", "-a", name)
    assert (r.returncode, r.stdout) == (7, "ran\n")
    assert pyctr.ok("wait", cid) == "7\n"


def test_restart_makes_a_new_process_and_keeps_the_logs(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
             "echo hello; trap 'exit 0' TERM; while true; do sleep 0.1; done")
    first = _state(pyctr, name)
    detached.append(first["MonitorPid"])
    until(lambda: "hello" in pyctr.ok("logs", name))
    pyctr.ok("restart", "-t", "2", name)
    second = _state(pyctr, name)
    detached.append(second["MonitorPid"])
    assert second["Status"] == "running" and second["Pid"] != first["Pid"]
    assert second["StartedAt"] > first["StartedAt"]
    assert not alive(first["Pid"]) and _gone(first["MonitorPid"])
    until(lambda: pyctr.ok("logs", name).count("hello") == 2)


def test_run_d_rm_removes_itself_and_wait_still_gets_the_code(pyctr, name, detached):
    cid = pyctr.ok("run", "-d", "--rm", "--name", name, "--network", "none", "busybox",
                   "sh", "-c", "sleep 0.5; exit 4").strip()
    assert pyctr.ok("wait", cid) == "4\n"
    until(lambda: name not in pyctr.ok("ps", "-a"))
    assert not os.path.exists(f"{pyctr.root}/containers/{cid}")


def test_a_killed_shim_never_leaves_a_container_running_forever(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    state = _state(pyctr, name)
    os.kill(state["MonitorPid"], signal.SIGKILL)
    assert _gone(state["MonitorPid"])
    line = next(ln for ln in pyctr.ok("ps", "-a").splitlines() if name in ln)
    assert "Exited (137)" in line
    after = _state(pyctr, name)
    assert "monitor" in after["Error"] and after["Running"] is False
    assert _gone(state["Pid"])


def test_a_bad_command_fails_run_d_with_docker_status(pyctr, name, detached):
    r = pyctr("run", "-d", "--name", name, "--network", "none", "busybox", "no-such-cmd")
    assert r.returncode == 127
    assert 'exec: "no-such-cmd": executable file not found in $PATH' in r.stderr
    state = _state(pyctr, name)
    assert (state["Status"], state["ExitCode"]) == ("exited", 127)


def test_one_name_two_runs_exactly_one_wins(pyctr, name, detached):
    def run(_):
        return pyctr("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "30")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(2)))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 125], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode)
    assert f'the container name "/{name}" is already in use' in loser.stderr
    detached.append(_state(pyctr, name)["MonitorPid"])


def test_twenty_parallel_runs_lose_nothing(pyctr, detached):
    def run(i):
        return pyctr("run", "-d", "--name", f"par-{os.getpid()}-{i}", "--network", "none",
                     "busybox", "sleep", "30")
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(run, range(20)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    ids = {r.stdout.strip() for r in results}
    assert len(ids) == 20
    running = set(pyctr.ok("ps", "-q", "--no-trunc").split())
    assert ids <= running
    for cid in ids:
        state = _state(pyctr, cid)
        detached.append(state["MonitorPid"])
        assert alive(state["Pid"]) and _ppid(state["Pid"]) == state["MonitorPid"]
    subprocess.run(pyctr.argv("rm", "-f", *ids), check=True, capture_output=True)


def test_exec_joins_every_namespace_and_the_cgroup_of_pid_1(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "--hostname", "boxy",
             "busybox", "sleep", "60")
    state = _state(pyctr, name)
    detached.append(state["MonitorPid"])
    pid1 = state["Pid"]
    pyctr.ok("exec", "-d", name, "sleep", "30")
    cgroup = pyctr.container(name)["HostConfig"]["CgroupPath"]
    procs_file = next(p for p in (f"/sys/fs/cgroup/pids{cgroup}/cgroup.procs",
                                  f"/sys/fs/cgroup{cgroup}/cgroup.procs") if os.path.exists(p))
    pids = until(lambda: [int(p) for p in Path(procs_file).read_text().split()
                           if int(p) != pid1] or None)
    (other,) = pids  # the exec'd process, in the container's cgroup …
    for kind in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):  # … and all its namespaces
        assert os.readlink(f"/proc/{other}/ns/{kind}") == os.readlink(f"/proc/{pid1}/ns/{kind}")
    with open(f"/proc/{other}/status") as f:
        status = dict(ln.split(":\t", 1) for ln in f.read().splitlines() if ":\t" in ln)
    assert status["CapEff"].strip() == "00000000a80425fb"
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    out = pyctr.ok("exec", name, "sh", "-c", "hostname; echo $$; ps -o pid,args; cat /etc/hostname")
    lines = out.splitlines()
    assert lines[0] == "boxy"
    assert any(ln.split()[:3] == ["1", "sleep", "60"] for ln in lines)  # PID 1 is the container's
    assert lines[-1] == "boxy"


def test_exec_flags_exit_codes_and_errors(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    detached.append(_state(pyctr, name)["MonitorPid"])
    assert pyctr("exec", name, "sh", "-c", "exit 42").returncode == 42
    r = pyctr("exec", "-u", "nobody", "-w", "/tmp", "-e", "FOO=bar", name,
              "sh", "-c", "id -u; pwd; echo $FOO")
    assert r.stdout.split() == ["65534", "/tmp", "bar"]
    assert pyctr("exec", "-i", name, "cat", input="piped in\n").stdout == "piped in\n"
    r = pyctr("exec", name, "no-such-cmd")
    assert r.returncode == 127
    assert 'exec: "no-such-cmd": executable file not found in $PATH' in r.stderr
    pyctr.ok("pause", name)
    r = pyctr("exec", name, "true")
    assert r.returncode == 125 and "is paused, unpause the container before exec" in r.stderr
    pyctr.ok("unpause", name)
    pyctr.ok("stop", "-t", "0", name)
    r = pyctr("exec", name, "true")
    assert r.returncode == 125 and f"container {name} is not running" in r.stderr


def _zombie_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                out.append(int(entry))
    return out


@pytest.mark.parametrize("init", [True, False])
def test_init_reaps_the_orphans_pid_1_inherits(pyctr, name, detached, init):
    """Orphans of an exec'd shell are reparented to the container's PID 1: tini
    (--init) reaps them; `sleep` as PID 1 never does, and zombies pile up."""
    flags = ["--init"] if init else []
    pyctr.ok("run", "-d", *flags, "--name", name, "--network", "none", "busybox", "sleep", "60")
    state = _state(pyctr, name)
    detached.append(state["MonitorPid"])
    with open(f"/proc/{state['Pid']}/cmdline") as f:
        argv = f.read().split("\0")
    assert argv[:3] == (["/sbin/docker-init", "--", "sleep"] if init else ["sleep", "60", ""])
    for _ in range(3):  # three orphans, each exiting after its parent
        pyctr.ok("exec", name, "sh", "-c", "(sleep 0.2 &)")
    time.sleep(1.0)
    zombies = _zombie_children(state["Pid"])
    assert zombies == [] if init else len(zombies) == 3
    assert pyctr.container(name)["HostConfig"]["Init"] is init


def test_init_forwards_the_stop_signal(pyctr, name, detached):
    pyctr.ok("run", "-d", "--init", "--name", name, "--network", "none", "busybox",
             "sleep", "60")
    detached.append(_state(pyctr, name)["MonitorPid"])
    t0 = time.monotonic()
    pyctr.ok("stop", name)  # sleep is no PID 1 here: SIGTERM kills it at once
    assert time.monotonic() - t0 < 5
    assert _state(pyctr, name)["ExitCode"] == 143


def test_rename_top_and_filters(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    state = _state(pyctr, name)
    detached.append(state["MonitorPid"])
    pyctr.ok("rename", name, name + "-b")
    assert pyctr.container(name + "-b")["State"]["Pid"] == state["Pid"]
    r = pyctr("rename", name + "-b", "bad name!")
    assert r.returncode == 125 and 'invalid container name "bad name!"' in r.stderr
    top = pyctr.ok("top", name + "-b", "-o", "pid,args").splitlines()
    assert top[0].split() == ["PID", "COMMAND"]
    assert [ln.split() for ln in top[1:]] == [[str(state["Pid"]), "sleep", "60"]]
    assert pyctr("run", "--name", name + "-x", "--network", "none", "busybox",
                 "sh", "-c", "exit 3").returncode == 3
    shown = pyctr.ok("ps", "-a", "--filter", "exited=3", "--format", "json").splitlines()
    assert [json.loads(ln)["Names"] for ln in shown] == [name + "-x"]
    running = pyctr.ok("ps", "--filter", "status=running", "--filter", f"name={name}", "-q")
    assert running.split() == [pyctr.container(name + "-b")["Id"][:12]]
    bad = pyctr("ps", "--filter", "colour=red")
    assert bad.returncode == 125 and 'invalid filter "colour=red"' in bad.stderr
    # the shim records the exit under the new name (it re-reads the record)
    pyctr.ok("stop", "-t", "0", name + "-b")
    assert _state(pyctr, name + "-b")["ExitCode"] == 137
    pruned = pyctr.ok("container", "prune", "-f")
    assert "Deleted Containers:" in pruned
    assert name not in pyctr.ok("ps", "-a")


def test_rm_v_removes_anonymous_volumes_only(pyctr, name, detached):
    pyctr.ok("run", "--name", name, "--network", "none", "-v", "/anon", "-v", f"{name}-vol:/named",
             "busybox", "sh", "-c", "echo a > /anon/f; echo n > /named/f")
    rec = pyctr.container(name)
    (anon,) = rec["HostConfig"]["AnonymousVolumes"]
    assert (pyctr.root / "volumes" / anon / "_data" / "f").read_text() == "a\n"
    pyctr.ok("rm", "-v", name)
    assert not (pyctr.root / "volumes" / anon).exists()
    assert (pyctr.root / "volumes" / f"{name}-vol" / "_data" / "f").read_text() == "n\n"


def test_events_stream_the_lifecycle(pyctr, name, detached):
    since = time.time() - 0.001
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    pyctr.ok("stop", "-t", "0", name)
    pyctr.ok("rm", name)
    r = pyctr("events", "--since", f"{since:.6f}", "--until", "0s", "--filter",
              f"container={name}", "--format", "json")
    actions = [json.loads(ln)["Action"] for ln in r.stdout.splitlines()]
    assert actions == ["create", "start", "kill", "die", "stop", "destroy"]
    first = json.loads(r.stdout.splitlines()[0])
    assert first["Actor"]["Attributes"] == {"image": "busybox", "name": name}
    text = pyctr.ok("events", "--since", f"{since:.6f}", "--until", "0s",
                    "--filter", "event=die", "--filter", f"container={name}")
    assert re.fullmatch(r"\S+Z container die [0-9a-f]{64} \(exitCode=137, image=busybox, "
                        rf"name={name}\)\n", text)
    # without --until it follows: a new event arrives while it runs
    proc = subprocess.Popen(pyctr.argv("events", "--filter", "event=create", "--format",
                                       "json"), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        pyctr.ok("create", "--name", name + "-2", "--network", "none", "busybox", "true")
        line = proc.stdout.readline()
        assert json.loads(line)["Actor"]["Attributes"]["name"] == name + "-2"
    finally:
        proc.kill()
        proc.wait()
        pyctr("rm", name + "-2")


def test_attach_relays_stdin_output_and_the_exit_code(pyctr, name, detached):
    pyctr.ok("run", "-d", "-i", "--name", name, "--network", "none", "busybox", "sh", "-c",
             'echo before; while read l; do echo "got $l"; [ "$l" = quit ] && exit 9; done')
    detached.append(_state(pyctr, name)["MonitorPid"])
    until(lambda: pyctr.ok("logs", name) == "before\n")
    r = pyctr("attach", name, input="hello\nquit\n")
    assert (r.returncode, r.stdout) == (9, "got hello\ngot quit\n")  # from now on, not before
    assert pyctr.ok("logs", name) == "before\ngot hello\ngot quit\n"
    r = pyctr("attach", name)
    assert r.returncode == 125 and "cannot attach to a stopped container" in r.stderr


def test_attach_forwards_ctrl_c_to_the_container(pyctr, name, detached):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c",
             "trap 'echo got-int; exit 4' INT; echo ready; while true; do sleep 0.1; done")
    detached.append(_state(pyctr, name)["MonitorPid"])
    until(lambda: "ready" in pyctr.ok("logs", name))
    proc = subprocess.Popen(pyctr.argv("attach", name), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.8)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (4, "got-int\n")


def test_an_unknown_name_lists_close_matches(pyctr, name, detached):
    pyctr.ok("create", "--name", name + "-webserver", "--network", "none", "busybox", "true")
    r = pyctr("logs", name + "-websrver")
    assert r.returncode == 125
    assert f"no such container: {name}-websrver (hint: did you mean {name}-webserver?)" \
        in r.stderr
    r = pyctr("stop", "zzzzzzzz-nothing-like-it")
    assert r.returncode == 1 and "hint: pyctr ps -a lists the containers" in r.stderr


def test_inspect_has_dockers_shape_before_the_first_start(pyctr, name, detached):
    pyctr.ok("create", "--name", name, "--network", "none", "busybox", "true")
    rec = pyctr.container(name)
    assert {"Id", "Name", "Created", "Path", "Args", "State", "Config", "HostConfig",
            "NetworkSettings", "Mounts", "RestartCount"} <= set(rec)
    assert {"Status", "Running", "Paused", "OOMKilled", "ExitCode", "StartedAt",
            "FinishedAt", "Pid"} <= set(rec["State"])
    assert (rec["State"]["Status"], rec["Mounts"], rec["NetworkSettings"]) == ("created", [], {})


def test_start_i_attaches_stdin_from_the_start(pyctr, name, detached):
    pyctr.ok("create", "-i", "--name", name, "--network", "none", "busybox", "sh", "-c",
             'echo hi; read l; echo "got $l"; exit 6')
    r = pyctr("start", "-i", name, input="typed\n")
    assert (r.returncode, r.stdout) == (6, "hi\ngot typed\n")
