"""scripts/vm-test: argument parsing (no root, no qemu)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

VMTEST_PY = Path(__file__).resolve().parents[2] / "scripts" / "vm" / "vmtest.py"


def load_vmtest():
    if "vmtest" not in sys.modules:
        spec = importlib.util.spec_from_file_location("vmtest", VMTEST_PY)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["vmtest"] = mod  # dataclasses look the module up
        spec.loader.exec_module(mod)
    return sys.modules["vmtest"]


vt = load_vmtest()


def test_options_then_command_verbatim():
    ns = vt.parse_args(["--timeout", "5", "--mem", "2G", "--cpus", "1", "--",
                        "ls", "-l", "--timeout", "--", "x"])
    assert ns.timeout == 5.0
    assert ns.mem == 2048
    assert ns.cpus == 1
    assert ns.command == ["ls", "-l", "--timeout", "--", "x"]


def test_defaults():
    ns = vt.parse_args(["--", "true"])
    assert (ns.timeout, ns.mem, ns.cpus, ns.kernel) == (900.0, 1024, 2, None)
    assert not ns.verbose and not ns.keep and not ns.check and ns.env == []


@pytest.mark.parametrize("text,mib", [("512", 512), ("512M", 512), ("1g", 1024),
                                      ("2GiB", 2048), ("256MB", 256)])
def test_memory_sizes(text, mib):
    assert vt.parse_args(["--mem", text, "--", "true"]).mem == mib


def test_command_without_double_dash():
    assert vt.parse_args(["true"]).command == ["true"]
    ns = vt.parse_args(["--mem", "512", "/bin/sh", "-c", "exit 7"])
    assert ns.mem == 512
    assert ns.command == ["/bin/sh", "-c", "exit 7"]


def test_env_pairs():
    ns = vt.parse_args(["-e", "A=1", "--env", "B=x=y", "--", "env"])
    assert ns.env == ["A=1", "B=x=y"]


def test_check_needs_no_command():
    assert vt.parse_args(["--check"]).check


@pytest.mark.parametrize("argv,message", [
    ([], "no command given"),
    (["--"], "no command given"),
    (["--timeout", "0", "--", "true"], "must be > 0"),
    (["--timeout", "-3", "--", "true"], "must be > 0"),
    (["--mem", "lots", "--", "true"], "bad memory size 'lots'"),
    (["--mem", "0", "--", "true"], "bad memory size"),
    (["--env", "NOEQUALS", "--", "true"], "expected NAME=VALUE"),
    (["--bogus", "--", "true"], "unrecognized arguments: --bogus"),
    (["--bogus", "true"], "unrecognized arguments: --bogus"),
])
def test_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        vt.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_main_reports_missing_kernel_with_the_package(monkeypatch, capsys):
    def no_kernel(version=None):
        raise vt.VmTestError("no kernel for the guest: ... (install it: " + vt.INSTALL_HINT + ")")
    monkeypatch.setattr(vt, "find_kernel", no_kernel)
    assert vt.main(["--", "true"]) == vt.EXIT_VM_ERROR
    err = capsys.readouterr().err
    assert err.startswith("vm-test: no kernel for the guest")
    assert "apt-get install linux-image-amd64 qemu-system-x86" in err
