"""The host side of `pyctr run -t`: relay between the user's terminal and the pty.

The container's init opened the pty inside its own /dev/pts and sent us the
master.  Here the user's terminal goes raw (so Ctrl-C is a byte the
container's line discipline turns into SIGINT for its foreground job), the
bytes are copied both ways, a window-size change (SIGWINCH) is passed on
with TIOCSWINSZ, and the terminal is restored however we leave.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import tty


def _copy_winsize(src_fd: int, master_fd: int) -> None:
    try:
        size = fcntl.ioctl(src_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def relay(master_fd: int, *, interactive: bool) -> None:
    """Copy until the container side closes (EIO on the master once all slaves are gone).

    The master fd stays open: it belongs to the runtime's Container.
    """
    stdin_is_tty = interactive and os.isatty(0)
    saved = termios.tcgetattr(0) if stdin_is_tty else None
    size_src = 0 if os.isatty(0) else (1 if os.isatty(1) else None)
    old_winch = None
    if size_src is not None:
        _copy_winsize(size_src, master_fd)
        old_winch = signal.signal(signal.SIGWINCH,
                                  lambda *_: _copy_winsize(size_src, master_fd))
    try:
        if saved is not None:
            tty.setraw(0)
        watch = [master_fd] + ([0] if interactive else [])
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if master_fd in ready:
                try:
                    data = os.read(master_fd, 65536)
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        break
                    raise
                if not data:
                    break
                _write_all(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    # stdin closed: send EOF (^D) as a terminal would
                    watch.remove(0)
                    _write_all(master_fd, b"\x04")
                else:
                    _write_all(master_fd, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
