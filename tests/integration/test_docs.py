"""The lessons in docs/ cannot rot: every command they show is run here and its output checked.

Each lesson runs in one bash with a pyctr root of its own (PYCTR_ROOT,
PYCTR_RUN_DIR, PYCTR_NO_DAEMON=1) holding busybox:latest, in a scratch
working directory.  The format is in docs/README.md and tests/docs_runner.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.docs_runner import (
    RUN_LANG,
    Command,
    Shell,
    ShellDied,
    blocks,
    citations,
    commands,
    defines,
    matches,
)
from tests.integration.conftest import ROOT_BASE, Pyctr

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
INDEX = DOCS / "README.md"
LESSONS = sorted(p for p in DOCS.glob("*.md") if p != INDEX)
PREDEFINED_NETWORKS = {"bridge", "host", "none"}
COMMAND_TIMEOUT = 60.0


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _env(root: Path, run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCTR_")}
    env.update(PYCTR_ROOT=str(root), PYCTR_RUN_DIR=str(run_dir), PYCTR_NO_DAEMON="1",
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
               LC_ALL="C.UTF-8", TERM="dumb", COLUMNS="200")
    return env


def _mounts_under(base: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(f"{base}/")), reverse=True)


def _leftovers(p: Pyctr, base: Path) -> list[str]:
    """What the lesson's own commands should have removed: containers, networks, mounts."""
    left = []
    mounts = _mounts_under(base)
    if mounts:
        left.append(f"mounts {mounts}")
    ids = p.ok("ps", "-aq").split()
    if ids:
        left.append(f"containers {ids}")
    nets = {n["name"] for n in json.loads(p.ok("network", "ls", "--format", "json"))}
    if nets - PREDEFINED_NETWORKS:
        left.append(f"networks {sorted(nets - PREDEFINED_NETWORKS)}")
    return left


def _unmount_under(base: Path) -> None:
    """Mounts a failed lesson left in its scratch dir (lesson 2 mounts an overlay there)."""
    from pyctr.runtime import syscalls

    for point in _mounts_under(base):
        syscalls.umount2(point, syscalls.MNT_DETACH)


def _failure(lesson: Path, cmd: Command, status: int | str | None, output: str) -> str:
    got = (f"timed out after {COMMAND_TIMEOUT:.0f} s" if status is None
           else status if isinstance(status, str) else f"exit {status}")
    return (f"{_rel(lesson)}:{cmd.line}: the lesson's command does not do what it shows\n"
            f"$ {cmd.shown}\n"
            f"--- expected (exit 0):\n" + "".join(f"  {e}\n" for e in cmd.expected) +
            f"--- actual ({got}):\n" + "".join(f"  {a}\n" for a in output.splitlines()))


@pytest.mark.parametrize("lesson", [INDEX, *LESSONS], ids=lambda p: p.stem)
def test_every_command_of_the_lesson_prints_what_it_shows(lesson, busybox_tar):
    cmds = commands(lesson.read_text())
    base = Path(tempfile.mkdtemp(prefix="pyctr-docs-", dir=ROOT_BASE))
    p = Pyctr(base / "root", base / "run")
    shell = None
    problem = None
    try:
        (base / "work").mkdir()
        (base / "out").mkdir()
        p.ok("import", "--change", 'CMD ["sh"]', str(busybox_tar), "busybox:latest")
        shell = Shell(base / "work", _env(p.root, p.run_dir), base / "out")
        for cmd in cmds:
            try:
                status, output = shell.run(cmd.text, timeout=COMMAND_TIMEOUT)
            except ShellDied as exc:
                problem = _failure(lesson, cmd, "the shell exited", exc.output)
                break
            if status != 0 or not matches(cmd.expected, output.splitlines()):
                problem = _failure(lesson, cmd, status, output)
                break
        else:
            left = _leftovers(p, base)
            if left:
                problem = (f"{_rel(lesson)}: the lesson's commands leave behind "
                           f"{' and '.join(left)}: remove them in the lesson")
    finally:
        if shell is not None:
            shell.close()
        p.cleanup()
        p("system", "stop-daemon")  # lesson 7 starts one (and stops it, unless it failed)
        for net in json.loads(p.ok("network", "ls", "--format", "json")):
            if net["name"] not in PREDEFINED_NETWORKS:
                p("network", "rm", net["name"])
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_every_lesson_has_commands_an_exercise_and_a_place_in_the_index():
    assert len(LESSONS) >= 8, [p.name for p in LESSONS]
    index = INDEX.read_text()
    for lesson in LESSONS:
        text = lesson.read_text()
        assert commands(text), f"{_rel(lesson)}: no ```{RUN_LANG} block with a `$ ` command"
        assert re.search(r"^#+ .*Exercise", text, re.MULTILINE), f"{_rel(lesson)}: no Exercise section"
        assert f"({lesson.name})" in index, f"docs/README.md does not link {lesson.name}"


def test_shell_blocks_are_either_run_or_plainly_not():
    """A command in a block the test does not run must be in a ```text block, on purpose."""
    for doc in [INDEX, *LESSONS]:
        for b in blocks(doc.read_text()):
            if b.lang in ("", "sh", "bash", "shell", "shell-session"):
                prompts = [ln for ln in b.lines if ln.startswith("$ ")]
                assert not prompts, (f"{_rel(doc)}:{b.line}: a ```{b.lang} block with commands: "
                                     f"mark it ```{RUN_LANG} (run) or ```text (not run)")


def test_the_files_and_names_a_lesson_cites_exist():
    missing = []
    for doc in [INDEX, *LESSONS]:
        for path, name in citations(doc.read_text()):
            target = REPO / path
            if not target.exists():
                missing.append(f"{_rel(doc)}: `{path}` does not exist")
            elif name is not None and not (
                    target.is_file()
                    and defines(target.read_text(), name, c=target.suffix == ".c")):
                missing.append(f"{_rel(doc)}: `{path}:{name}`: {path} defines no {name}")
    assert not missing, "\n".join(missing)


# ---- the format itself (pure: what docs/README.md promises lesson writers) ----

def test_wildcards_match_within_a_line_and_across_lines():
    assert matches(["pid:[...] (new)"], ["pid:[4026532180]   (new)"])  # blanks squeezed
    assert matches(["a", "...", "z"], ["a", "z"])  # `...` alone: any lines, none too
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["x"], ["x", "", ""])  # trailing blank lines do not count
    assert not matches(["a"], ["a", "b"])  # nothing unshown may follow
    assert not matches([], ["output"])  # no output shown: none printed
    assert not matches(["a ... z"], ["a z", "more"])


def test_console_blocks_hold_commands_continuations_and_outputs():
    text = """\
```console
$ sudo echo one \\
    two
one two
$ python3 -c '
> print(1)'
1
```
```text
$ pyctr pull alpine
```
"""
    [first, second] = commands(text)
    assert (first.line, first.text, first.expected) == (2, "echo one \\\n    two", ["one two"])
    assert (second.text, second.expected) == ("python3 -c '\nprint(1)'", ["1"])
    assert [b.lang for b in blocks(text)] == ["console", "text"]


def test_citations_are_paths_of_the_repository_with_optional_names():
    text = "In `runtime/init.py:STEPS` and `pyctr/shim.c`, not `/proc/self/ns` or `unshare()`."
    assert citations(text) == [("runtime/init.py", "STEPS"), ("pyctr/shim.c", None)]
    assert defines("A, B = 1, 2\nclass C:\n    def m(self): ...\n", "B")
    assert defines("class C:\n    def m(self): ...\n", "C.m")
    assert not defines("x = STEPS\n", "STEPS")
    assert defines("int main(int argc, char **argv)\n{", "main", c=True)
