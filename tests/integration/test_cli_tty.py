"""`pyctr run -t` under a real pty, as in a terminal."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time

import pytest

pytestmark = pytest.mark.root


def _controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A pty whose slave is the CLI's controlling terminal; we type on the master."""

    def __init__(self, argv: list[str], rows: int = 33, cols: int = 101) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        # a session of its own with the pty as controlling terminal, as in a real
        # terminal: the kernel then sends it SIGWINCH when the window changes
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, start_new_session=True,
                                     preexec_fn=_controlling_tty)  # noqa: PLW1509
        self.out = b""

    def read_until(self, text: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.out and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.out += os.read(self.master, 4096)
                except OSError:
                    break
        assert text in self.out, f"{text!r} not in {self.out!r}"
        return self.out

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        try:
            code = self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.after = termios.tcgetattr(self.slave)
        os.close(self.master)
        os.close(self.slave)
        return code


def test_tty_is_the_containers_own_pty_with_the_window_size(pyctr):
    t = Terminal(pyctr.argv("run", "--rm", "-t", "busybox", "sh", "-c",
                            "tty; stty size; echo done"))
    out = t.read_until(b"done")
    assert t.close() == 0
    assert b"/dev/pts/0" in out
    assert b"33 101" in out
    assert t.after == t.before  # the user's terminal is restored


def test_ctrl_c_reaches_the_container_and_terminal_is_restored(pyctr):
    script = 'trap "echo got-int; exit 7" INT; echo ready; sleep 30 & wait'
    t = Terminal(pyctr.argv("run", "--rm", "-it", "busybox", "sh", "-c", script))
    t.read_until(b"ready")
    # the user's terminal is raw while the container runs: ^C is a byte for the pty
    raw = termios.tcgetattr(t.slave)
    assert not raw[3] & termios.ICANON
    t.type(b"\x03")
    t.read_until(b"got-int")
    assert t.close() == 7
    assert t.after == t.before


def test_interactive_shell_session(pyctr):
    t = Terminal(pyctr.argv("run", "--rm", "-it", "busybox", "sh"))
    t.read_until(b"# ")
    t.type(b"echo $((6*7))\n")
    t.read_until(b"42")
    t.type(b"exit 5\n")
    assert t.close() == 5


def test_window_size_follows_the_users_terminal(pyctr):
    t = Terminal(pyctr.argv("run", "--rm", "-it", "busybox", "sh"))
    t.read_until(b"# ")
    t.type(b"stty size\n")
    t.read_until(b"33 101")
    fcntl.ioctl(t.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    t.type(b"stty size\n")
    t.read_until(b"40 120")
    t.type(b"exit\n")
    assert t.close() == 0


def test_exec_it_is_a_shell_on_a_pty_of_the_containers_devpts(pyctr, name):
    pyctr.ok("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
    try:
        t = Terminal(pyctr.argv("exec", "-it", name, "sh"))
        t.read_until(b"# ")
        t.type(b"tty; stty size; echo $((6*7))\n")
        out = t.read_until(b"42")
        assert b"/dev/pts/" in out and b"33 101" in out
        t.type(b"exit 3\n")
        assert t.close() == 3
        assert t.after == t.before
    finally:
        pyctr("rm", "-f", name)


def test_attach_to_a_detached_tty_container_types_into_its_pty(pyctr, name):
    pyctr.ok("run", "-d", "-it", "--name", name, "--network", "none", "busybox", "sh")
    try:
        t = Terminal(pyctr.argv("attach", name))
        time.sleep(0.5)
        t.type(b"echo $((6*7)); tty\n")
        out = t.read_until(b"/dev/pts/")
        assert b"42" in out
        t.type(b"exit 3\n")
        assert t.close() == 3
    finally:
        pyctr("rm", "-f", name)
