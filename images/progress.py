"""What a pull or push shows while it works, as docker shows it.

On a terminal: one bar per layer with its size and speed (rich), e.g.

    a3ed95caeb02: Downloading  ━━━━━━━━━━━╸━━━━━━━━━━  12.1/25.3 MB  8.2 MB/s

Not on a terminal (a log, a pipe, CI): one plain line per change of a
layer's state, as ``docker pull`` prints there::

    a3ed95caeb02: Pulling fs layer
    a3ed95caeb02: Pull complete

``-q``: nothing but the final line.  The workers (threads) call ``advance``
and ``state``; every method is thread-safe.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO


def short(digest: str) -> str:
    """docker's layer name in progress output: 12 hex digits."""
    return digest.split(":", 1)[-1][:12]


class Quiet:
    """-q: only ``result`` lines."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def message(self, text: str) -> None:
        pass

    def result(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def add(self, key: str, total: int | None, state: str) -> None:
        pass

    def state(self, key: str, state: str) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Plain(Quiet):
    """A line per state change (no bars): logs and pipes stay readable."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.lock = threading.Lock()
        self.states: dict[str, str] = {}

    def message(self, text: str) -> None:
        with self.lock:
            print(text, file=self.out, flush=True)

    def add(self, key: str, total: int | None, state: str) -> None:
        self.state(key, state)

    def state(self, key: str, state: str) -> None:
        with self.lock:
            if self.states.get(key) == state:
                return
            self.states[key] = state
            print(f"{key}: {state}", file=self.out, flush=True)


class Bars(Plain):
    """rich's progress bars, one per layer (imported only on a terminal)."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.console = Console(file=out)
        self.bars = Progress(TextColumn("{task.fields[key]}: {task.fields[state]:<18}"),
                             BarColumn(bar_width=30), DownloadColumn(binary_units=False),
                             TransferSpeedColumn(), console=self.console, transient=False,
                             auto_refresh=True, refresh_per_second=8)
        self.tasks: dict[str, int] = {}
        self.bars.start()

    def message(self, text: str) -> None:
        self.bars.console.print(text, highlight=False, markup=False)

    def add(self, key: str, total: int | None, state: str) -> None:
        with self.lock:
            self.tasks[key] = self.bars.add_task("", total=total, key=key, state=state)

    def state(self, key: str, state: str) -> None:
        with self.lock:
            task = self.tasks.get(key)
        if task is None:
            self.add(key, None, state)
            return
        done = state in ("Pull complete", "Already exists", "Pushed", "Layer already exists")
        if done:
            total = self.bars.tasks[task].total
            if total:
                self.bars.update(task, completed=total, state=state)
                return
        self.bars.update(task, state=state)

    def advance(self, key: str, n: int) -> None:
        task = self.tasks.get(key)
        if task is not None:
            self.bars.advance(task, n)

    def close(self) -> None:
        self.bars.stop()


def make(quiet: bool = False, out: TextIO | None = None) -> Quiet:
    """Bars on a terminal, plain lines elsewhere, nothing with -q."""
    out = out or sys.stdout
    if quiet:
        return Quiet(out)
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        try:
            return Bars(out)
        except ImportError:
            pass  # rich is missing: plain lines do
    return Plain(out)
