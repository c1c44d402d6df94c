"""The Vagrantfile: what it says (static checks, always) and `vagrant validate`
(where vagrant is installed; scripts/setup.sh installs Debian's).

No VM boots here: validate loads the Vagrantfile and checks each setting.
Nothing is written into the repository: Vagrant's state dir (.vagrant) and
its home (~/.vagrant.d) go to tmp_path.  No root and no network needed
(the version check is off), about half a second a run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"
SOURCE = VAGRANTFILE.read_text()

VAGRANT = shutil.which("vagrant")
needs_vagrant = pytest.mark.skipif(
    VAGRANT is None, reason="needs vagrant on PATH (Debian's package; scripts/setup.sh installs it)")


# ---- static checks: what the Vagrantfile says ------------------------------

def code_lines() -> list[str]:
    """The Vagrantfile's lines without comments (a `#` inside a string is kept)."""
    out = []
    for line in SOURCE.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append(re.sub(r"\s+#[^\"']*$", "", line))
    return out


def comment_text() -> str:
    return "\n".join(line for line in SOURCE.splitlines() if line.strip().startswith("#"))


def test_box_is_ubuntu_lts_with_a_debian_alternative():
    code = "\n".join(code_lines())
    assert 'box = "bento/ubuntu-24.04"' in code
    assert "config.vm.box = box" in code
    # one alternative, in a comment, cgroup v2 as well
    assert re.search(r'^#\s+box = "debian/bookworm64"', SOURCE, re.MULTILINE)
    assert "cgroup v2" in comment_text()


def test_header_documents_up_and_the_first_run():
    head = SOURCE.split("Vagrant.configure", 1)[0]
    assert "vagrant up" in head
    assert "vagrant ssh -c 'sudo pyctr run --rm alpine echo hi'" in head
    assert "vagrant validate" in head


def test_memory_and_cpus_for_virtualbox_and_libvirt():
    code = "\n".join(code_lines())
    assert re.search(r"^memory_mb = 4096$", code, re.MULTILINE)
    assert re.search(r"^cpus = 2$", code, re.MULTILINE)
    for provider, var in (("virtualbox", "vb"), ("libvirt", "lv")):
        block = re.search(rf'config\.vm\.provider "{provider}" do \|{var}\|\n(.*?)\n\s*end', code, re.DOTALL)
        assert block, provider
        assert f"{var}.memory = memory_mb" in block.group(1)
        assert f"{var}.cpus = cpus" in block.group(1)


def test_project_folder_synced_at_vagrant_keeping_symlinks():
    code = "\n".join(code_lines())
    assert 'config.vm.synced_folder ".", "/vagrant"' in code
    assert 'type: "rsync"' in code
    args = re.search(r"rsync__args: \[(.*?)\]", code, re.DOTALL)
    assert args and "--archive" in args.group(1)
    # rsync's default args in vagrant carry --copy-links, which would turn the
    # pyctr/runtime -> ../runtime links into copies
    assert "--copy-links" not in args.group(1) and "-L" not in args.group(1)
    assert (REPO / "pyctr" / "runtime").is_symlink()


def test_provisioned_by_setup_sh_in_place_then_pyctrd_enabled():
    code = "\n".join(code_lines())
    # setup.sh runs from the synced repository (it finds the repo as its parent
    # folder), as root: not `path:`, which would upload the script alone
    assert 'inline: "bash /vagrant/scripts/setup.sh"' in code
    assert "path:" not in code
    assert (REPO / "scripts" / "setup.sh").is_file()
    setup_at = code.index("/vagrant/scripts/setup.sh")
    enable_at = code.index("systemctl enable pyctrd")
    assert setup_at < enable_at  # the unit exists only once setup.sh installed it
    assert "systemctl restart pyctrd" in code
    assert code.count("privileged: true") == 2
    # setup.sh installs the unit where systemd runs: the provisioner relies on it
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "/etc/systemd/system/pyctrd.service" in setup
    unit = (REPO / "scripts" / "pyctrd.service").read_text()
    assert "WantedBy=multi-user.target" in unit  # so `systemctl enable` has a target


# ---- vagrant validate --------------------------------------------------------

def vagrant_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VAGRANT_VAGRANTFILE", None)
    env.update(VAGRANT_HOME=str(tmp_path / "vagrant.d"),        # not ~/.vagrant.d
               VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),      # not ./.vagrant in the repo
               VAGRANT_CHECKPOINT_DISABLE="1",                  # no version check over the network
               VAGRANT_BOX_UPDATE_CHECK_DISABLE="1",
               VAGRANT_NO_COLOR="1")
    env.update(extra)
    return env


def validate(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VAGRANT, "validate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)


def fake_vboxmanage(tmp_path: Path) -> str:
    """A stand-in VBoxManage that answers --version alone: enough for vagrant to
    take VirtualBox as usable and check the virtualbox block (no VM is made)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    tool = bindir / "VBoxManage"
    tool.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo 7.0.14r161095; exit 0; }\n'
                    'echo "stand-in VBoxManage: $*" >&2; exit 1\n')
    tool.chmod(0o755)
    return f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"


def has_libvirt_plugin(env: dict[str, str]) -> bool:
    r = subprocess.run([VAGRANT, "plugin", "list"], env=env, capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL, check=False)
    return "vagrant-libvirt" in r.stdout


@needs_vagrant
def test_vagrant_validate_without_a_provider(tmp_path):
    """What anyone can run: the provider blocks aside, the rest is checked."""
    before = sorted(p.name for p in REPO.iterdir())
    r = validate(REPO, vagrant_env(tmp_path), "--ignore-provider")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Vagrantfile validated successfully." in r.stdout
    assert sorted(p.name for p in REPO.iterdir()) == before  # no .vagrant left in the repo
    assert (tmp_path / "dot").is_dir()


@needs_vagrant
@pytest.mark.parametrize("provider, label, good, bad", [
    ("virtualbox", "VirtualBox Provider:", "vb.cpus = cpus", "vb.cpuz = cpus"),
    ("libvirt", "Libvirt Provider:", "lv.memory = memory_mb", "lv.memroy = memory_mb"),
])
def test_vagrant_validate_provider_block(tmp_path, provider, label, good, bad):
    extra = {"PATH": fake_vboxmanage(tmp_path)} if provider == "virtualbox" else {}
    env = vagrant_env(tmp_path, VAGRANT_DEFAULT_PROVIDER=provider, **extra)
    if provider == "libvirt" and not has_libvirt_plugin(env):
        pytest.skip("needs the vagrant-libvirt plugin (Debian's vagrant-libvirt; scripts/setup.sh "
                    "installs it) to check the libvirt block")
    r = validate(REPO, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Vagrantfile validated successfully." in r.stdout
    # and the check is real: a misspelt setting fails it
    assert good in SOURCE
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Vagrantfile").write_text(SOURCE.replace(good, bad))
    r = validate(broken, env)
    assert r.returncode == 1
    assert label in r.stdout + r.stderr
    wrong = bad.split(" = ")[0].split(".")[1]
    assert f"The following settings shouldn't exist: {wrong}" in r.stdout + r.stderr
