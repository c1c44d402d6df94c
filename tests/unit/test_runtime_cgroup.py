"""The runtime's cgroup policy without root: which paths it takes, which hierarchies it shows."""

from __future__ import annotations

import pytest

from pyctr.errors import UserError
from pyctr.runtime.cgroup import cgroups_path
from pyctr.runtime.rootfs import container_cgroup_mounts


def test_no_cgroups_path_means_no_cgroup():
    assert cgroups_path({"linux": {}}) is None
    assert cgroups_path({}) is None


def test_an_absolute_cgroups_path_is_taken_as_is():
    assert cgroups_path({"linux": {"cgroupsPath": "/pyctr/abc"}}) == "/pyctr/abc"


@pytest.mark.parametrize("path", ["pyctr/abc", "abc", "system.slice:pyctr:abc"])
def test_a_relative_cgroups_path_is_refused_with_the_reason(path):
    with pytest.raises(UserError, match="must be an absolute path") as info:
        cgroups_path({"linux": {"cgroupsPath": path}})
    assert path in info.value.message and "caller's own cgroup" in info.value.hint



HYBRID = [
    ("/sys/fs/cgroup/systemd", "cgroup", "xattr,name=systemd"),
    ("/sys/fs/cgroup/unified", "cgroup2", "nsdelegate"),
    ("/sys/fs/cgroup/memory", "cgroup", "memory"),
    ("/sys/fs/cgroup/cpu", "cgroup", "cpu"),
    ("/sys/fs/cgroup/devices", "cgroup", "devices"),
]


def test_a_v1_container_sees_only_the_controller_hierarchies_it_has_a_cgroup_in():
    shown = [point for point, _, _ in container_cgroup_mounts(HYBRID)]
    assert shown == ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/devices"]
