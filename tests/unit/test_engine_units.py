"""Engine pieces that need no root: container records, lookups, output formats."""

import os

import pytest

from pyctr.cli import fmt
from pyctr.containers import ContainerStore
from pyctr.engine import require_overlayfs
from pyctr.errors import Conflict, NotFound, PyctrError


def test_overlayfs_missing_is_a_clear_error(tmp_path):
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tsysfs\nnodev\ttmpfs\n\text4\n")
    with pytest.raises(PyctrError) as exc:
        require_overlayfs(str(fs))
    assert exc.value.render() == (f"{fs}: overlayfs is not available on this kernel "
                                  "(hint: try: modprobe overlay)")
    fs.write_text("nodev\tsysfs\nnodev\toverlay\n")
    require_overlayfs(str(fs))


def test_records_names_and_lookup_by_prefix(tmp_path):
    store = ContainerStore(tmp_path)
    a = store.create(name="web", image="busybox", image_id="sha256:1", record={})
    b = store.create(name=None, image="busybox", image_id="sha256:1", record={})
    assert len(a.id) == 64 and all(ch in "0123456789abcdef" for ch in a.id)
    assert "_" in b.name and b.name != "web"
    assert store.get("web").id == a.id
    assert store.get(a.id[:8]).id == a.id
    assert store.get(b.name).id == b.id
    with pytest.raises(Conflict, match='the container name "/web" is already in use'):
        store.create(name="web", image="busybox", image_id="sha256:1", record={})
    with pytest.raises(NotFound, match="no such container: nope"):
        store.get("nope")
    assert {c.id for c in store.using_image("sha256:1")} == {a.id, b.id}
    assert oct(os.stat(tmp_path / "containers").st_mode & 0o777) == "0o700"


def test_a_running_record_whose_pid_is_gone_reads_as_exited(tmp_path):
    store = ContainerStore(tmp_path)
    c = store.create(name="x", image="i", image_id="sha256:1", record={})
    c.record["State"].update(Status="running", Pid=os.getpid(), PidStartTime=1)
    c.save()
    assert store.get("x").status == "exited"  # same pid, other start time: reused pid
    with open(f"/proc/{os.getpid()}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])
    c.record["State"]["PidStartTime"] = start
    c.save()
    assert store.get("x").status == "running"


@pytest.mark.parametrize("n,text", [(0, "0B"), (999, "999B"), (1000, "1kB"),
                                    (4_260_000, "4.26MB"), (1_500_000_000, "1.5GB")])
def test_sizes_in_dockers_units(n, text):
    assert fmt.human_size(n) == text


@pytest.mark.parametrize("s,text", [(0.5, "Less than a second"), (1, "1 second"),
                                    (59, "59 seconds"), (61, "About a minute"),
                                    (600, "10 minutes"), (3600, "About an hour"),
                                    (7200, "2 hours"), (3 * 86400, "3 days")])
def test_durations_in_dockers_words(s, text):
    assert fmt.human_duration(s) == text
