"""--explain without a kernel: every init step is put in words from the spec alone, events
carry their step and time, and the CLI's template and option parsing."""

from __future__ import annotations

import io
import json

import click
import pytest

from pyctr import explain
from pyctr.cli import fmt
from pyctr.errors import UserError
from pyctr.runtime.describe import describe
from pyctr.runtime.init import EXEC_STEPS, STEPS, InitContext
from pyctr.runtime.seam import Syscalls
from pyctr.runtime.spec import default_spec


def _ctx(**process) -> InitContext:
    spec = default_spec(["echo", "hi"])
    spec["process"].update(process)
    spec["hostname"] = "box"
    return InitContext(spec=spec, rootfs="/r", bundle="/b", sys=Syscalls())


@pytest.mark.parametrize("steps", [STEPS, EXEC_STEPS])
def test_every_step_is_described_from_the_spec_alone(steps):
    ctx = _ctx()
    lines = {name: describe(name, ctx) for name, _ in steps}
    assert all(isinstance(v, list) and all(isinstance(x, str) and x for x in v)
               for v in lines.values())
    if steps is STEPS:
        assert any(x.startswith("mount proc proc on /proc") for x in lines["mounts"])
        assert lines["hostname"] == ["sethostname('box')"]
        assert lines["pivot_root"] == [('pivot_root(".", ".") in /r; umount2(old root, '
                                       'MNT_DETACH)')]
    assert lines["execve"] == ["execve(echo, ['echo', 'hi'])"]
    assert lines["capabilities"][0].startswith("capset: 14 of ")
    assert lines["no_new_privs"] == ["prctl(PR_SET_NO_NEW_PRIVS, 1)"]
    assert lines["seccomp"][0].startswith("seccomp(SECCOMP_SET_MODE_FILTER): default ")
    assert lines["seccomp without no_new_privs"] == []  # loaded by "seccomp" instead


def test_without_no_new_privs_the_filter_is_explained_at_the_earlier_step():
    ctx = _ctx(noNewPrivileges=False)
    assert describe("no_new_privs", ctx) == [] and describe("seccomp", ctx) == []
    assert describe("seccomp without no_new_privs", ctx)[0].startswith("seccomp(")


def test_events_go_nowhere_unless_asked_and_carry_step_what_why_and_time():
    explain.stop()
    explain.note("image", "nothing")  # no sink: nothing happens
    out = io.StringIO()
    explain.start("json", out)
    try:
        explain.note("image", "busybox = sha256:1")
        explain.emit({"step": "execve", "what": "execve(/bin/true)", "t": 0.0})  # relayed
    finally:
        explain.stop()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["step"] == "image" and first["why"] == explain.WHY["image"]
    assert first["ms"] >= 0 and "t" not in first
    assert second["what"] == "execve(/bin/true)" and second["ms"] < 0  # it happened before


def test_text_names_the_why_once_per_step():
    out = io.StringIO()
    explain.start("text", out)
    try:
        explain.note("cgroup", "echo 1 > a")
        explain.note("cgroup", "echo 2 > b")
    finally:
        explain.stop()
    text = out.getvalue()
    assert text.count("↳ ") == 1 and "cgroup" in text and "echo 2 > b" in text


def test_explain_takes_a_value_only_after_an_equals_sign():
    @click.command(cls=fmt.ExplainCommand, context_settings={"allow_interspersed_args": False})
    @fmt.explain_option
    @click.argument("image")
    @click.argument("command", nargs=-1)
    def run(explain, image, command):
        click.echo(f"{explain} {image} {' '.join(command)}")

    from click.testing import CliRunner
    r = CliRunner()
    assert r.invoke(run, ["--explain", "busybox", "echo", "--explain"]).output == \
        "text busybox echo --explain\n"
    assert r.invoke(run, ["--explain=json", "busybox"]).output == "json busybox \n"
    assert r.invoke(run, ["busybox"]).output == "None busybox \n"
    assert "'xml' is not one of" in r.invoke(run, ["--explain=xml", "busybox"]).output


def test_templates_as_docker_writes_them():
    data = {"Id": "abc", "State": {"Pid": 42, "Running": True, "Error": None},
            "Config": {"Cmd": ["sh"]}}
    assert fmt.template("{{.Id}} {{ .State.Pid }} {{json .Config.Cmd}}", data) == \
        'abc 42 ["sh"]'
    assert fmt.template("{{.State.Running}} {{.State.Error}} {{.Config}}", data) == \
        'true <no value> {"Cmd": ["sh"]}'
    with pytest.raises(UserError, match="no field 'Nope'"):
        fmt.template("{{.State.Nope}}", data)
