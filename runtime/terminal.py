"""process.terminal: a pty from the container's own devpts, its master sent to the caller.

The pty is opened after pivot_root so it belongs to the container's
``newinstance`` devpts: ``tty`` inside prints /dev/pts/0, and the host's
/dev/pts is never touched.  The master travels to the caller over the sync
socket with SCM_RIGHTS; the slave becomes the init's controlling terminal
and its stdio.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from typing import TYPE_CHECKING

from .syscalls import MS_BIND

if TYPE_CHECKING:
    from .init import InitContext

TIOCGPTN = 0x80045430  # get the pty number (same encoding on x86_64 and aarch64)
TIOCSPTLCK = 0x40045431  # lock/unlock the slave


def open_pty() -> tuple[int, int]:
    """(master, slave) from /dev/ptmx, which pivot_root made the container's pts/ptmx."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    (num,) = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))
    slave = os.open(f"/dev/pts/{num}", os.O_RDWR | os.O_NOCTTY)
    return master, slave


def set_size(fd: int, height: int, width: int) -> None:
    """TIOCSWINSZ: rows and columns, as ``stty size`` reports them."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def setup_console(ctx: InitContext) -> None:
    """Open the pty, bind it over /dev/console, make it our controlling tty and stdio, send the master.

    /dev/console is the slave itself (as runc does): programs that write to
    the console reach the user's terminal.  Without a terminal there is no
    /dev/console at all, rather than one leading nowhere.
    """
    _console(ctx, bind_dev_console=True)


def setup_exec_console(ctx: InitContext) -> None:
    """`exec -t`: a pty from the container's own devpts as controlling tty and stdio;
    /dev/console stays PID 1's."""
    _console(ctx, bind_dev_console=False)


def _console(ctx: InitContext, *, bind_dev_console: bool) -> None:
    proc = ctx.spec["process"]
    if not proc.get("terminal"):
        return
    master, slave = ctx.sys.open_pty()
    size = proc.get("consoleSize")
    if size:
        ctx.sys.set_console_size(slave, size["height"], size["width"])
    if bind_dev_console:
        ctx.sys.touch_in("/", "/dev/console")
        ctx.sys.mount_in("/", f"/proc/self/fd/{slave}", "/dev/console", None, MS_BIND)
    ctx.sys.make_controlling_tty(slave)
    ctx.send_console(master)
    ctx.sys.close(master)
    ctx.sys.close(slave)


def make_controlling_tty(slave: int) -> None:
    """setsid + TIOCSCTTY, then the slave on 0, 1 and 2."""
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
