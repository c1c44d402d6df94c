"""pull, push, login and save against a real registry (Debian's docker-registry, the CNCF
distribution server) on 127.0.0.1, fed by umoci and skopeo — and a proxy that fails on cue.

What is asserted is what the store, the registry's access log and the tools
show: blobs byte for byte equal to skopeo's, requests the registry saw (or
did not), the auth file's mode, the error text a user reads.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time

import pytest

from tests.integration.conftest import Pyctr, alive, until
from tests.integration.registry import (
    FaultProxy,
    build_bad_gzip_image,
    build_image,
    build_index,
    push,
    skopeo_inspect,
    skopeo_pull,
    start_registry,
)

pytestmark = [pytest.mark.root, pytest.mark.tools]

USERS = {"alice": "wonderland"}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """OCI layouts built once: a 3-layer image, a two-platform index, a bad gzip layer."""
    base = tmp_path_factory.mktemp("layouts")
    return {
        "three": build_image(base / "three", "1", layers=3, layer_mb=0.5, marker="three"),
        "multi": build_index(base / "multi", "1", [("linux", "amd64", None),
                                                   ("linux", "arm64", "v8")]),
        "badgzip": build_bad_gzip_image(base / "badgzip", "1"),
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory, images):
    """An open registry with the images pushed by skopeo."""
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        push(images["three"]["layout"], "1", reg.ref("lib/three", "1"))
        push(images["three"]["layout"], "1", reg.ref("lib/three-v2s2", "1"), format_="v2s2")
        push(images["multi"]["layout"], "1", reg.ref("lib/multi", "1"), all_=True)
        push(images["multi"]["layout"], "1", reg.ref("lib/multi-list", "1"), all_=True,
             format_="v2s2")  # docker's manifest list
        push(images["badgzip"]["layout"], "1", reg.ref("lib/badgzip", "1"))
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def fresh(tmp_path) -> Pyctr:
    """A root of its own (no daemon: the CLI works in its own process)."""
    return Pyctr(tmp_path / "root", tmp_path / "run")


def _blob_gets(reg, since: int = 0) -> list[str]:
    return [p for m, p in reg.requests()[since:] if m == "GET" and "/blobs/" in p]


def _store_blob(p: Pyctr, digest: str) -> bytes:
    return (p.root / "images" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def _images(p: Pyctr) -> list[dict]:
    return [json.loads(line) for line in p.ok("images", "--format", "json").splitlines()]


def _store_tmp(p: Pyctr) -> list[str]:
    tmp = p.root / "images" / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


def test_pull_a_three_layer_image_and_run_it(fresh, registry, images):
    ref = registry.ref("lib/three", "1")
    r = fresh("pull", ref)
    assert r.returncode == 0, r.stderr
    facts = images["three"]
    lines = r.stdout.splitlines()
    # not a terminal: plain lines, as docker prints them there
    assert lines[0] == f"1: Pulling from {registry.host}/lib/three"
    for d in facts["layer_digests"]:
        assert f"{d[7:19]}: Pull complete" in lines
    assert f"Digest: {facts['manifest_digest']}" in lines
    assert f"Status: Downloaded newer image for {ref}" in lines
    assert lines[-1] == ref
    out = fresh.ok("run", "--rm", "--network", "none", ref, "cat", "/marker")
    assert out == "three"
    [image] = _images(fresh)
    assert image["Repository"] == f"{registry.host}/lib/three" and image["Tag"] == "1"
    assert image["ID"] == facts["config_digest"][7:19]
    assert _store_tmp(fresh) == []


def test_pulled_blobs_are_byte_identical_to_skopeos(fresh, registry, tmp_path):
    ref = registry.ref("lib/three", "1")
    fresh.ok("pull", "-q", ref)
    skopeo_pull(ref, tmp_path / "skopeo")
    index = json.loads((tmp_path / "skopeo" / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    blobs = tmp_path / "skopeo" / "blobs" / "sha256"
    manifest = json.loads((blobs / manifest_digest[7:]).read_text())
    for d in [manifest_digest, manifest["config"]["digest"],
              *(x["digest"] for x in manifest["layers"])]:
        assert _store_blob(fresh, d) == (blobs / d[7:]).read_bytes(), d


def test_a_second_pull_fetches_nothing(fresh, registry):
    ref = registry.ref("lib/three-v2s2", "1")  # docker schema 2 this time
    fresh.ok("pull", ref)
    mark = len(registry.requests())
    r = fresh("pull", ref)
    assert r.returncode == 0, r.stderr
    assert _blob_gets(registry, mark) == []  # only the manifest was asked for
    assert "Status: Image is up to date for" in r.stdout
    assert r.stdout.count("Already exists") == 3


def test_an_index_resolves_to_this_machines_platform(fresh, registry, images):
    ref = registry.ref("lib/multi", "1")
    r = fresh("pull", ref)
    assert r.returncode == 0, r.stderr
    assert f"Digest: {images['multi']['index_digest']}" in r.stdout  # what the tag names
    assert fresh.ok("run", "--rm", "--network", "none", ref, "cat", "/marker") == "linux/amd64"
    r = fresh("pull", "--platform", "linux/arm64/v8", ref)
    assert r.returncode == 0, r.stderr
    named = [i for i in _images(fresh) if i["Tag"] == "1"]  # the name moved to the arm64 one
    assert [i["ID"] for i in named] == \
        [images["multi"]["images"]["linux/arm64/v8"]["config_digest"][7:19]]
    r = fresh("pull", "--platform", "linux/s390x", ref)
    assert r.returncode == 1
    assert "no image for linux/s390x" in r.stderr and "linux/amd64" in r.stderr \
        and "linux/arm64/v8" in r.stderr


def test_a_docker_manifest_list_resolves_too(fresh, registry):
    ref = registry.ref("lib/multi-list", "1")
    raw = skopeo_inspect(ref, raw=True)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    fresh.ok("pull", "-q", ref)
    assert fresh.ok("run", "--rm", "--network", "none", ref, "cat", "/marker") == "linux/amd64"


def test_a_blob_with_the_wrong_digest_fails_and_leaves_no_image(fresh, registry, tmp_path):
    layout = tmp_path / "corrupt"
    corrupted = build_image(layout, "1", layers=2, layer_mb=0.2, marker="to-corrupt")
    ref = registry.ref("lib/corrupt", "1")
    push(layout, "1", ref)
    victim = corrupted["layer_digests"][-1]
    data = bytearray(registry.blob_path(victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    registry.blob_path(victim).write_bytes(bytes(data))
    r = fresh("pull", ref)
    assert r.returncode != 0
    assert f"digest mismatch for layer {victim}" in r.stderr
    assert "Traceback" not in r.stderr
    assert fresh.ok("images", "-q") == ""  # no image
    assert _store_tmp(fresh) == []  # and no half-written layer or blob
    assert not (fresh.root / "images" / "blobs" / "sha256" / victim[7:]).exists()


def test_a_truncated_gzip_layer_is_a_clear_error(fresh, registry, images):
    r = fresh("pull", registry.ref("lib/badgzip", "1"))
    assert r.returncode != 0
    layer = images["badgzip"]["layer_digests"][0]
    assert layer in r.stderr and "gzip" in r.stderr.lower()
    assert "Traceback" not in r.stderr
    assert fresh.ok("images", "-q") == "" and _store_tmp(fresh) == []


def test_retries_on_503_and_429_and_resumes_a_broken_download(fresh, registry, images):
    proxy = FaultProxy(registry)
    try:
        proxy.fail(r"/manifests/", 503, times=2)
        proxy.fail(r"/blobs/", 429, times=1, headers={"Retry-After": "1"})
        big = images["three"]["layer_digests"][-1]
        proxy.cut(rf"/blobs/{big}", after_bytes=100_000)
        r = fresh("pull", proxy.ref("lib/three", "1"))
        assert r.returncode == 0, r.stderr
        seen = [(q.method, q.path, q.headers.get("Range")) for q in proxy.requests]
        assert sum(1 for m, p, _ in seen if "/manifests/" in p) >= 3
        ranges = [rng for m, p, rng in seen if p.endswith(big) and rng]
        assert ranges == ["bytes=100000-"]  # resumed where it broke, not restarted
    finally:
        proxy.stop()
    assert _store_blob(fresh, big) == \
        (images["three"]["layout"] / "blobs" / "sha256" / big[7:]).read_bytes()


def _children(pid: int) -> list[str]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return f.read().split()


def test_kill_9_in_the_middle_of_a_pull_then_the_next_pull_completes(fresh, registry):
    proxy = FaultProxy(registry)
    try:
        proxy.throttle(300_000)  # ~1.5 MB at 300 kB/s: a few seconds
        proc = subprocess.Popen(fresh.argv("pull", proxy.ref("lib/three", "1")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tmp = fresh.root / "images" / "tmp"
        until(lambda: tmp.is_dir() and any(n.startswith("layer-") for n in os.listdir(tmp)))
        time.sleep(0.5)
        # each layer is unpacked by a child process of the pull, whose pid names its files
        kids = {int(k) for k in _children(proc.pid)}
        owners = {int(n.split("-")[1]) for n in os.listdir(tmp) if n.startswith("layer-")}
        assert kids and owners and owners <= kids and proc.pid not in owners
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # the children die with the pull (PR_SET_PDEATHSIG), removing their temp files
        until(lambda: not any(alive(k) for k in kids))  # zombies: never reaped here
        assert fresh.ok("images", "-q") == ""
        proxy.throttle(None)
        r = fresh("pull", proxy.ref("lib/three", "1"))
        assert r.returncode == 0, r.stderr
    finally:
        proxy.stop()
    assert fresh.ok("run", "--rm", "--network", "none", proxy.ref("lib/three", "1"),
                    "cat", "/marker") == "three"
    assert _store_tmp(fresh) == []  # the dead pull's temp files were swept


def test_push_then_pull_round_trip(pyctr, fresh, registry):
    ref = registry.ref("pushed/busybox", "v1")
    pyctr.ok("tag", "busybox", ref)
    try:
        r = pyctr("push", ref)
        assert r.returncode == 0, r.stderr
        local = json.loads(pyctr.ok("images", "--format", "json", ref.rsplit(":", 1)[0]))
        assert f"v1: digest: {local['Digest']} size:" in r.stdout
        assert ": Pushed" in r.stdout
        assert skopeo_inspect(ref)["Digest"] == local["Digest"]
        again = pyctr("push", ref)
        assert again.returncode == 0 and ": Layer already exists" in again.stdout
        fresh.ok("pull", ref)
        [pulled] = _images(fresh)
        assert pulled["ID"] == local["ID"] and pulled["Digest"] == local["Digest"]
        assert fresh.ok("run", "--rm", "--network", "none", ref, "echo", "round trip") \
            == "round trip\n"
    finally:
        pyctr.ok("rmi", ref)


def test_save_is_an_oci_archive_skopeo_and_load_read(pyctr, fresh, tmp_path):
    out = tmp_path / "busybox.tar"
    pyctr.ok("save", "-o", str(out), "busybox")
    local = json.loads(pyctr.ok("images", "--format", "json", "busybox"))
    seen = subprocess.run(["skopeo", "inspect", f"oci-archive:{out}:latest"], check=False,
                          capture_output=True, text=True, timeout=60)
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout)["Digest"] == local["Digest"]
    r = fresh("load", "-i", str(out))
    assert r.returncode == 0 and "Loaded image: busybox:latest" in r.stdout
    assert [i["ID"] for i in _images(fresh)] == [local["ID"]]
    bad = pyctr("save", "-o", str(tmp_path / "x.tar"), "nosuchimage")
    assert bad.returncode != 0 and "no such image: nosuchimage" in bad.stderr
    assert not (tmp_path / "x.tar").exists() and \
        [p.name for p in tmp_path.iterdir() if p.name.startswith(".x.tar")] == []


def test_run_pulls_a_missing_image_and_never_means_never(fresh, registry):
    ref = registry.ref("lib/three", "1")
    r = fresh("run", "--rm", "--pull", "never", "--network", "none", ref, "true")
    assert r.returncode == 125 and "--pull never" in r.stderr
    r = fresh("run", "--rm", "--network", "none", ref, "cat", "/marker")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "three"
    assert f"Unable to find image '{ref}' locally" in r.stderr
    assert "Pull complete" in r.stderr  # progress goes to stderr, the output is the container's


def _authed_registry(tmp_path_factory, images, auth: str, repos: list[str]):
    """A registry with ``auth``, the 3-layer image pushed (as alice) to each of ``repos``."""
    reg = start_registry(tmp_path_factory.mktemp(auth), auth=auth, users=USERS)
    try:
        for repo in repos:
            push(images["three"]["layout"], "1", reg.ref(repo, "1"), creds="alice:wonderland")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory, images):
    yield from _authed_registry(tmp_path_factory, images, "htpasswd", ["private/three"])


def _env(tmp_path) -> dict:
    return {**os.environ, "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json")}


def test_basic_auth_login_pull_logout(fresh, basic_registry, tmp_path):
    env = _env(tmp_path)
    host, ref = basic_registry.host, basic_registry.ref("private/three", "1")
    r = fresh("pull", ref, env=env)
    assert r.returncode == 1
    assert "unauthorized: authentication required" in r.stderr and \
        f"pyctr login {host}" in r.stderr
    wrong = fresh("login", "-u", "alice", "--password-stdin", host, input="nope\n", env=env)
    assert wrong.returncode == 1
    assert "incorrect username or password" in wrong.stderr
    assert not (tmp_path / "auth.json").exists()  # nothing kept of a failed login
    ok = fresh("login", "-u", "alice", "--password-stdin", host, input="wonderland\n", env=env)
    assert ok.returncode == 0 and "Login Succeeded" in ok.stdout, ok.stderr
    f = tmp_path / "auth.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    import base64
    assert json.loads(f.read_text()) == {"auths": {host: {"auth": base64.b64encode(
        b"alice:wonderland").decode()}}}
    r = fresh("pull", ref, env=env)
    assert r.returncode == 0, r.stderr
    assert fresh.ok("logout", host, env=env) == f"Removing login credentials for {host}\n"
    assert json.loads(f.read_text()) == {"auths": {}}
    assert fresh.ok("logout", host, env=env) == f"Not logged in to {host}\n"


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, images):
    yield from _authed_registry(tmp_path_factory, images, "token",
                                ["public/three", "private/three"])


def test_token_auth_anonymous_and_with_credentials(fresh, token_registry, tmp_path):
    env = _env(tmp_path)
    host = token_registry.host
    ts = token_registry.token_server
    r = fresh("pull", token_registry.ref("public/three", "1"), env=env)
    assert r.returncode == 0, r.stderr  # an anonymous token allows pulls of public/
    r = fresh("pull", token_registry.ref("private/three", "1"), env=env)
    assert r.returncode == 1 and "authentication required" in r.stderr
    wrong = fresh("login", "-u", "alice", "--password-stdin", host, input="nope", env=env)
    assert wrong.returncode == 1 and "incorrect username or password" in wrong.stderr
    fresh.ok("login", "-u", "alice", "--password-stdin", host, input="wonderland", env=env)
    asked = len(ts.requests)
    r = fresh("pull", token_registry.ref("private/three", "1"), env=env)
    assert r.returncode == 0, r.stderr
    new = ts.requests[asked:]
    assert any(q["account"] == "alice" and q["valid"] and
               "repository:private/three:pull" in q["scope"] for q in new), new


def test_bad_input_is_a_clear_error(fresh):
    r = fresh("pull", "Bad//Name")
    assert r.returncode == 125 and "invalid reference format" in r.stderr
    r = fresh("pull", "127.0.0.1:1/nothing/here:1")
    assert r.returncode == 1 and "cannot reach the registry 127.0.0.1:1" in r.stderr
    r = fresh("pull", "--platform", "windows/amd64", "127.0.0.1:1/x")
    assert r.returncode == 125 and "pyctr runs linux images" in r.stderr
    r = fresh("push", "127.0.0.1:1/not/here:1")
    assert r.returncode == 125 and "no such image: 127.0.0.1:1/not/here:1" in r.stderr
    r = fresh("login", "127.0.0.1:1")  # no terminal, no user
    assert r.returncode == 125 and "--password-stdin" in r.stderr
    for r in (fresh("pull", "Bad//Name"), fresh("push", "127.0.0.1:1/not/here:1")):
        assert "Traceback" not in r.stderr


def test_blobs_redirected_to_storage_get_no_credentials(fresh, token_registry, tmp_path):
    """A registry backed by S3 answers a blob GET with 307 to a signed URL on another host:
    the client follows it, and does not hand that host the registry's token."""
    env = _env(tmp_path)
    proxy = FaultProxy(token_registry)
    try:
        fresh.ok("login", "-u", "alice", "--password-stdin", proxy.host, input="wonderland",
                 env=env)
        proxy.redirect(r"/blobs/sha256:", times=10)
        r = fresh("pull", proxy.ref("private/three", "1"), env=env)
        assert r.returncode == 0, r.stderr
        storage = [q for q in proxy.requests if q.path.startswith("/_storage/")]
        asked = [q for q in proxy.requests if "/blobs/sha256:" in q.path and q.method == "GET"]
        assert len(storage) >= 3 and len(asked) >= 3
        assert all(q.headers.get("Authorization", "").startswith("Bearer ") for q in asked)
        assert not any("Authorization" in q.headers for q in storage)
    finally:
        proxy.stop()
    assert fresh.ok("run", "--rm", "--network", "none", proxy.ref("private/three", "1"),
                    "cat", "/marker") == "three"


def test_ctrl_c_stops_a_pull_and_leaves_the_store_consistent(fresh, registry):
    proxy = FaultProxy(registry)
    try:
        proxy.throttle(200_000)
        proc = subprocess.Popen(fresh.argv("pull", proxy.ref("lib/three", "1")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        tmp = fresh.root / "images" / "tmp"
        until(lambda: tmp.is_dir() and any(n.startswith("layer-") for n in os.listdir(tmp)))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert time.monotonic() - t0 < 5  # the downloads stopped; they did not run to the end
        assert "Traceback" not in err
    finally:
        proxy.stop()
    assert fresh.ok("images", "-q") == ""
    assert _store_tmp(fresh) == []  # each layer cleaned up after itself


def test_progress_bars_on_a_terminal(fresh, registry):
    """On a terminal each layer gets a bar with its size and speed (rich); -q prints
    the name only."""
    import pty

    ref = registry.ref("lib/three", "1")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ["COLUMNS"] = "120"
        os.execv(fresh.argv("pull", ref)[0], fresh.argv("pull", ref))
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    out = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert "━" in out and "MB" in out  # a bar with sizes
    assert "Pull complete" in out and f"Status: Downloaded newer image for {ref}" in out
    assert fresh.ok("pull", "-q", ref) == f"{ref}\n"


def test_the_python_api_pulls(fresh, registry, images):
    from pyctr import Client

    client = Client(fresh.root, fresh.run_dir, daemon=False)
    got = client.pull(registry.ref("lib/three", "1"))
    assert got == {"Id": images["three"]["config_digest"],
                   "Digest": images["three"]["manifest_digest"],
                   "Name": registry.ref("lib/three", "1")}
    r = client.run(registry.ref("lib/three", "1"), ["cat", "/marker"], network="none",
                   remove=True)
    assert (r.exit_code, r.output) == (0, "three")
