"""Config generation: image config + run flags -> OCI process, env, mounts (no root)."""

from pathlib import Path

import pytest

from pyctr import bundle as B
from pyctr.errors import UserError

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["--serve"], "Env": ["PATH=/opt/bin:/bin", "A=1"],
         "WorkingDir": "/srv", "User": "www"}


def opts(**kw):
    return B.RunOptions(image="img", **kw)


@pytest.mark.parametrize("kw,expected", [
    ({}, ["/entry", "--serve"]),
    ({"command": ["--debug"]}, ["/entry", "--debug"]),
    ({"entrypoint": "/bin/sh"}, ["/bin/sh"]),  # --entrypoint drops the image's Cmd
    ({"entrypoint": "/bin/sh", "command": ["-c", "x"]}, ["/bin/sh", "-c", "x"]),
    ({"entrypoint": "", "command": ["ls"]}, ["ls"]),
])
def test_process_args_follow_docker_rules(kw, expected):
    assert B.process_args(IMAGE, opts(**kw)) == expected


def test_no_command_is_a_clear_error():
    with pytest.raises(UserError, match="no command specified for image img"):
        B.process_args({}, opts())


def test_env_merges_image_then_files_then_flags(tmp_path, monkeypatch):
    f = tmp_path / "env"
    f.write_text("# comment\nA=from-file\n\nB=2\n")
    monkeypatch.setenv("FROM_HOST", "h")
    env = B.container_env(IMAGE, opts(env=["A=flag", "FROM_HOST", "UNSET_VAR_X"],
                                      env_files=[str(f)], tty=True),
                          hostname="abc", home="/root")
    d = dict(e.split("=", 1) for e in env)
    assert d["PATH"] == "/opt/bin:/bin"  # the image's PATH wins over the default
    assert d["A"] == "flag" and d["B"] == "2" and d["FROM_HOST"] == "h"
    assert "UNSET_VAR_X" not in d
    assert d["HOSTNAME"] == "abc" and d["TERM"] == "xterm" and d["HOME"] == "/root"


def test_default_path_when_image_has_none():
    env = B.container_env({}, opts(), hostname="h", home="/")
    assert f"PATH={B.DEFAULT_PATH}" in env and not any(e.startswith("TERM=") for e in env)


@pytest.mark.parametrize("bad", ["=x", "A B=1"])
def test_bad_env_names_the_entry(bad):
    with pytest.raises(UserError, match="invalid environment variable"):
        B.parse_env([bad])


def test_env_file_missing_names_the_path():
    with pytest.raises(UserError, match="cannot read env file /nonexistent/env"):
        B.read_env_file("/nonexistent/env")


def test_volume_forms(tmp_path):
    m = B.parse_volume("/data/:/mnt/data:ro", volumes_dir=tmp_path)
    assert (m.source, m.destination, m.readonly) == ("/data", "/mnt/data", True)
    named = B.parse_volume("cache:/cache", volumes_dir=tmp_path)
    assert named.source == str(tmp_path / "cache" / "_data") and not named.readonly


@pytest.mark.parametrize("spec,msg", [
    ("/a", "invalid volume specification"),
    ("/a:rel", 'container path "rel" is not absolute'),
    ("/a:/b:rx", 'invalid mode "rx"'),
    ("./a:/b", 'host path "./a" is not absolute'),
    ("/a:/", "cannot mount over /"),
])
def test_bad_volumes_say_why(spec, msg, tmp_path):
    with pytest.raises(UserError, match=msg):
        B.parse_volume(spec, volumes_dir=tmp_path)


def test_tmpfs_defaults_and_options():
    m = B.parse_tmpfs("/run:size=1m,exec")
    assert m.destination == "/run" and "noexec" not in m.options
    assert "size=1m" in m.options and "nosuid" in m.options
    with pytest.raises(UserError, match='path "run" is not absolute'):
        B.parse_tmpfs("run")


def test_workdir_must_be_absolute():
    assert B.effective_workdir(IMAGE, opts()) == "/srv"
    with pytest.raises(UserError, match='"rel" is invalid'):
        B.effective_workdir({}, opts(workdir="rel"))


@pytest.mark.parametrize("name,ok", [("web-1", True), ("a.b_c", True), ("-x", False),
                                     ("a b", False), ("", False)])
def test_container_names(name, ok):
    if ok:
        assert B.validate_name(name) == name
    else:
        with pytest.raises(UserError, match="invalid container name"):
            B.validate_name(name)


def test_hostname_validation():
    assert B.validate_hostname("web.local") == "web.local"
    with pytest.raises(UserError, match='invalid hostname "bad_host"'):
        B.validate_hostname("bad_host")


def test_resolv_conf_drops_loopback_nameservers():
    out = B.resolv_conf("nameserver 127.0.0.53\nsearch lan\nnameserver 10.0.0.1\n")
    assert "127.0.0.53" not in out and "nameserver 10.0.0.1" in out and "search lan" in out
    fallback = B.resolv_conf("nameserver 127.0.0.53\n")
    assert "nameserver 8.8.8.8" in fallback


def test_oci_mounts_and_apply(tmp_path):
    mounts = B.oci_mounts([B.Mount("/data", "bind", "/srv/data", readonly=True),
                           B.parse_tmpfs("/scratch")],
                          {"/etc/hosts": tmp_path / "hosts"})
    assert mounts[0] == {"destination": "/etc/hosts", "type": "bind",
                         "source": str(tmp_path / "hosts"), "options": ["rbind", "rprivate"]}
    assert "ro" in mounts[1]["options"] and mounts[2]["type"] == "tmpfs"
    spec = {"process": {}, "root": {"path": "rootfs"}, "mounts": [{"destination": "/proc"}]}
    B.apply_run_options(spec, args=["sh"], env=["A=1"], cwd="/", uid=1000, gid=1000,
                        additional_gids=[50], hostname="h", terminal=True, read_only=True,
                        mounts=mounts, console_size=(24, 80))
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [50]}
    assert spec["process"]["consoleSize"] == {"height": 24, "width": 80}
    assert spec["root"]["readonly"] is True and spec["hostname"] == "h"
    assert [m["destination"] for m in spec["mounts"]] == ["/proc", "/etc/hosts", "/data",
                                                           "/scratch"]
    assert Path(spec["mounts"][1]["source"]).name == "hosts"
