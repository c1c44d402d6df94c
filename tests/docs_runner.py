"""The lessons' commands, read out of their markdown and run the way a reader types them.

The format (docs/README.md explains it to lesson writers):

* Only fenced blocks marked ``console`` are run.  In one, a line that starts
  with ``$ `` is a command; a trailing `` \\`` continues it on the next line,
  and so do the lines right after it that start with ``> `` (the shell's
  PS2 prompt); a leading ``sudo `` is dropped (the tests run as root).  The
  lines after it, up to the next ``$ `` or the end of the block, are its
  expected output (stdout and stderr together).
* Lines are compared with runs of blanks squeezed to one space and the ends
  stripped.  ``...`` in a line matches any run of characters; a line that
  is only ``...`` matches any number of lines, none included.
* A command must exit 0: to show a failure, write ``CMD; echo $?``.
* The commands of one lesson run in order in one bash, so shell variables,
  the working directory and the containers made carry over.

Pure functions here (parsing, matching, citations); ``Shell`` runs commands.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
RUN_LANG = "console"
WILDCARD = "..."


@dataclass
class Command:
    line: int  # 1-based line of the `$ ` in the lesson
    text: str  # what bash runs (continuations joined with newlines, no `sudo `)
    expected: list[str] = field(default_factory=list)

    @property
    def shown(self) -> str:
        return self.text.replace("\n", "\n  ")


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    lines: list[str]

    def commands(self) -> list[Command]:
        """The block's commands with their expected output (console blocks only)."""
        cmds: list[Command] = []
        pending: Command | None = None  # a command still continued with a trailing backslash
        typing: Command | None = None  # a command whose output has not begun: `> ` goes on
        for i, raw in enumerate(self.lines):
            lineno = self.line + 1 + i
            if pending is not None:
                pending.text += "\n" + raw
                if not raw.endswith("\\"):
                    pending = None
                continue
            if typing is not None and (raw.startswith("> ") or raw == ">"):
                typing.text += "\n" + raw[2:]  # the shell's PS2 prompt: the command goes on
                continue
            typing = None
            if raw.startswith("$ ") or raw == "$":
                text = raw[2:].removeprefix("sudo ")
                cmds.append(Command(lineno, text))
                typing = cmds[-1]
                if raw.endswith("\\"):
                    pending = cmds[-1]
            elif not cmds:
                if raw.strip():
                    raise ValueError(f"line {lineno}: output before the first `$ ` "
                                     f"of a console block: {raw!r}")
            else:
                cmds[-1].expected.append(raw)
        for cmd in cmds:
            while cmd.expected and not cmd.expected[-1].strip():
                cmd.expected.pop()
        return cmds


def _split(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a markdown text (a fence starts its line), and the prose lines."""
    found: list[Block] = []
    prose: list[str] = []
    current: Block | None = None
    fence = ""
    for i, line in enumerate(text.splitlines(), start=1):
        if current is None:
            m = FENCE.match(line)
            if m:
                fence = m.group(1)
                current = Block(m.group(2), i, [])
            else:
                prose.append(line)
        elif line.strip() == fence:
            found.append(current)
            current = None
        else:
            current.lines.append(line)
    if current is not None:
        raise ValueError(f"line {current.line}: a fenced block is never closed")
    return found, prose


def blocks(text: str) -> list[Block]:
    return _split(text)[0]


def commands(text: str) -> list[Command]:
    return [cmd for b in blocks(text) if b.lang == RUN_LANG for cmd in b.commands()]


def _squeeze(line: str) -> str:
    return " ".join(line.split())


def _pattern(line: str) -> re.Pattern:
    parts = [re.escape(p) for p in _squeeze(line).split(WILDCARD)]
    return re.compile(".*".join(parts), re.DOTALL)


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` lines fit ``expected`` (``...`` wildcards, blanks squeezed)."""
    want = [None if _squeeze(e) == WILDCARD else _pattern(e) for e in expected]
    got = [_squeeze(a) for a in actual]
    while got and not got[-1]:
        got.pop()
    memo: dict[tuple[int, int], bool] = {}

    def fit(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[i, j]
        if i == len(want):
            ok = j == len(got)
        elif want[i] is None:  # any number of lines
            ok = fit(i + 1, j) or (j < len(got) and fit(i, j + 1))
        else:
            ok = j < len(got) and want[i].fullmatch(got[j]) is not None and fit(i + 1, j + 1)
        memo[i, j] = ok
        return ok

    return fit(0, 0)


# ---- what a lesson cites -------------------------------------------------

TOP_DIRS = ("pyctr", "runtime", "images", "netns", "cgroups", "scripts", "tests", "docs",
            "bench")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
CITATION = re.compile(r"^((?:" + "|".join(TOP_DIRS) + r")/[\w./-]*)(?::([\w.]+))?$")


def citations(text: str) -> list[tuple[str, str | None]]:
    """(repo path, name or None) of every `path` and `path:NAME` in the prose (not in blocks)."""
    found = []
    for span in CODE_SPAN.findall("\n".join(_split(text)[1])):
        m = CITATION.match(span.strip())
        if m:
            found.append((m.group(1), m.group(2)))
    return found


def defines(source: str, name: str, *, c: bool = False) -> bool:
    """Whether ``source`` defines ``name`` (``Class.method`` too): a def, class or assignment."""
    if c:
        c_def = r"^[\w][\w \t\*]*\b" + re.escape(name) + r"\s*\("
        return re.search(c_def, source, re.MULTILINE) is not None
    *outer, last = name.split(".")
    for cls in outer:
        m = re.search(r"^\s*class " + re.escape(cls) + r"\b", source, re.MULTILINE)
        if m is None:
            return False
        source = source[m.end():]
    n = re.escape(last)
    definition = (r"^\s*(?:async\s+)?(?:def|class)\s+" + n + r"\b"  # def NAME, class NAME
                  r"|^\s*(?:\w+\s*,\s*)*" + n + r"\s*(?:,\s*\w+\s*)*(?::[^=\n]+)?=[^=]")  # NAME =
    return re.search(definition, source, re.MULTILINE) is not None


# ---- running -------------------------------------------------------------

class ShellDied(Exception):
    """The shell ended (an ``exit`` in a lesson): ``output`` is what the command printed."""

    def __init__(self, output: str):
        super().__init__("the shell exited")
        self.output = output


class Shell:
    """One bash that runs commands in turn, each one's output (2>&1) caught in a file."""

    SENTINEL = "__pyctr_docs_status__"

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path):
        self.scratch = scratch
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.count = 0
        self.hung = False  # a command timed out: its processes are still in our session

    def run(self, command: str, timeout: float = 60) -> tuple[int | None, str]:
        """(exit status or None on a timeout, output) of ``command``."""
        self.count += 1
        out = self.scratch / f"out.{self.count}"
        script = (f"{{ {command}\n}} >{out} 2>&1 </dev/null\n"
                  f"echo \"{self.SENTINEL} $?\"\n")
        try:
            self.proc.stdin.write(script.encode())
            self.proc.stdin.flush()
            status, noise = self._wait_status(timeout)
        except (BrokenPipeError, EOFError) as exc:
            raise ShellDied(str(exc) + self._read(out)) from None
        if status is None:
            self.hung = True
        return status, noise + self._read(out)

    @staticmethod
    def _read(out: Path) -> str:
        return out.read_text(errors="replace") if out.exists() else ""

    def _wait_status(self, timeout: float) -> tuple[int | None, str]:
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, buf.decode(errors="replace")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise EOFError(buf.decode(errors="replace"))
            buf += chunk
            m = re.search(rb"(?:^|\n)%s (\d+)\n" % self.SENTINEL.encode(), buf)
            if m:
                return int(m.group(1)), buf[:m.start()].decode(errors="replace")

    def close(self) -> None:
        """End the shell; after a timeout, with what runs in its session (all started by it:
        the session id is the shell's pid, which cannot be reused before it is reaped)."""
        if self.hung:
            os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc.stdout.close()
