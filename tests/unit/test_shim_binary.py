"""pyctr-shim (pyctr/shim.c), compiled here and run without root or a container.

A harness process forks a writer child, then execs the shim as the child's
parent, as pyctr/shim.py does with PID 1.  The log the shim writes must be
what pyctr.shim.LogWriter writes for the same bytes, record for record
(except the time), and the finisher must get docker's exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyctr.shim import LOG_LINE_MAX, LogWriter

SOURCE = Path(__file__).resolve().parents[2] / "pyctr" / "shim.c"

# what a container may write: quotes, escapes, control bytes, every kind of bad
# UTF-8 (overlong, surrogate, truncated, out of range, lone continuation), good
# multi-byte characters, a line longer than docker's 16 KiB record, no final newline
STDOUT = (b'plain\n"quoted" back\\slash\ttab\r\n\x00\x01\x1b[0m\x7f\n'
          b"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac\n"
          b"\xe0\x80\xaf \xed\xa0\x80 \xf0\x9f\x98 \xf5\x80 \x80 \xc0\xaf \xff\xfe\n"
          + b"y" * (LOG_LINE_MAX - 1) + b"\xc3\xa9" + b"z" * 20000 + b"\n"
          + b"the end without a newline")
STDERR = b"err 1\n" + b"e" * (2 * LOG_LINE_MAX) + b"\nerr \xe2\x82\n"

HARNESS = r"""
import os, sys, time
shim, log, done, code, sig = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
out_r, out_w = os.pipe()
err_r, err_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(out_r); os.close(err_r)
    data_out = open(sys.argv[6], "rb").read()
    data_err = open(sys.argv[7], "rb").read()
    for i in range(0, max(len(data_out), len(data_err)), 7001):  # odd chunks, interleaved
        os.write(out_w, data_out[i:i + 7001]); os.write(err_w, data_err[i:i + 7001])
        time.sleep(0.001)
    if sig != "-":
        os.kill(os.getpid(), int(sig))
    os._exit(code)
os.close(out_w); os.close(err_w)
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
for f in (fd, out_r, err_r):
    os.set_inheritable(f, True)
os.execv(shim, [shim, "--id", "test", "--pid", str(pid), "--log-fd", str(fd),
                "--stdout", str(out_r), "--stderr", str(err_r), "--",
                sys.executable, "-c",
                "import sys; open(sys.argv[1], 'w').write(' '.join(sys.argv[2:]))", done, "finished"])
"""


@pytest.fixture(scope="module")
def shim_exe(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (scripts/setup.sh installs gcc): pyctr-shim cannot be built")
    exe = tmp_path_factory.mktemp("shim") / "pyctr-shim"
    done = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(SOURCE)],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # warnings are errors here
    return exe


def _run(shim_exe, tmp_path, code=0, sig="-"):
    (tmp_path / "out").write_bytes(STDOUT)
    (tmp_path / "err").write_bytes(STDERR)
    log, done = tmp_path / "c-json.log", tmp_path / "done"
    proc = subprocess.run([sys.executable, "-c", HARNESS, str(shim_exe), str(log), str(done),
                           str(code), sig, str(tmp_path / "out"), str(tmp_path / "err")],
                          check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return log, done.read_text()


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_stream(recs: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in recs:
        out.setdefault(r["stream"], []).append(r["log"])
    return out


def test_the_shim_writes_the_records_python_writes(shim_exe, tmp_path):
    log, finished = _run(shim_exe, tmp_path, code=3)
    assert finished == "finished 3"  # docker's exit code, as the finisher's last argument
    ours = LogWriter(tmp_path / "py-json.log")
    ours.write("stdout", STDOUT)
    ours.write("stderr", STDERR)
    ours.close()
    want, got = _records(tmp_path / "py-json.log"), _records(log)
    assert _by_stream(got) == _by_stream(want)
    assert [list(r) for r in got] == [["log", "stream", "time"]] * len(got)
    # byte for byte, but for the time: the same escapes, the same U+FFFD
    strip = [line.rsplit(', "time"', 1)[0]
             for line in sorted(log.read_text().splitlines())]
    assert strip == [line.rsplit(', "time"', 1)[0]
                     for line in sorted((tmp_path / "py-json.log").read_text().splitlines())]
    assert all(len(r["time"]) == len("2026-11-25T22:16:22.482814243Z") for r in got)


def test_a_signal_is_128_plus_its_number(shim_exe, tmp_path):
    _, finished = _run(shim_exe, tmp_path, sig="9")
    assert finished == "finished 137"


@pytest.mark.parametrize("args, message", [
    ([], "usage: pyctr-shim"),
    (["--pid", "x", "--log-fd", "1", "--", "true"], "--pid needs a number, not x"),
    (["--bogus"], "unknown option --bogus"),
    (["--pid", "1", "--log-fd", "97", "--", "true"], "--log-fd 97: not an open fd"),
    (["--pid", str(os.getpid() + 10**6), "--log-fd", "1", "--", "true"], "pidfd_open"),
])
def test_bad_arguments_are_refused_with_a_reason(shim_exe, args, message):
    proc = subprocess.run([str(shim_exe), *args], check=False, capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 125
    assert message in proc.stderr
