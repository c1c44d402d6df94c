"""The registry test infrastructure works: checked with skopeo and http.client, not pyctr.

If one of these fails, a registry test failing next to it says nothing
about pyctr's client.  Each test starts its own servers and stops them
(the fixtures below); the root marker puts it under the leak check, which
fails a test that leaves a registry process behind.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    FaultProxy,
    FixtureError,
    RegistryServer,
    build_bad_gzip_image,
    build_image,
    build_index,
    push,
    sha256_digest,
    skopeo_inspect,
    skopeo_pull,
    start_registry,
)

pytestmark = [pytest.mark.root,
              pytest.mark.tools("docker-registry", "htpasswd", "umoci", "skopeo")]

USERS = {"alice": "wonderland"}
ALICE = "alice:wonderland"
# distribution 2.8 answers 404 for an OCI manifest/index the Accept header does not list
ACCEPT = (f"{OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict[str, Any]:
    """A 3-layer busybox image in an OCI layout (built once for the module)."""
    return build_image(tmp_path_factory.mktemp("image") / "layout", marker="fixtures")


@pytest.fixture
def registries(tmp_path) -> Iterator[Callable[..., RegistryServer]]:
    """start(auth=None, users=None) -> a running registry; all stopped after the test."""
    started: list[RegistryServer] = []

    def start(auth: str | None = None, users: dict[str, str] | None = None) -> RegistryServer:
        reg = start_registry(tmp_path / f"registry{len(started)}", auth=auth, users=users)
        started.append(reg)
        return reg

    yield start
    for reg in started:
        reg.stop()
        assert reg.process.poll() is not None


@pytest.fixture
def proxied(registries) -> Iterator[tuple[RegistryServer, FaultProxy]]:
    """An open registry and a FaultProxy in front of it."""
    reg = registries()
    proxy = FaultProxy(reg)
    yield reg, proxy
    proxy.stop()


def fetch(host: str, path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes | int]:
    """One request on a fresh connection: (status, headers, body, or the byte count of a
    body that ended early)."""
    hostname, _, port = host.rpartition(":")
    conn = http.client.HTTPConnection(hostname, int(port), timeout=10)
    try:
        conn.request(method, path, headers={"Accept": ACCEPT, **(headers or {})})
        resp = conn.getresponse()
        try:
            body: bytes | int = resp.read()
        except http.client.IncompleteRead as e:
            body = len(e.partial)
        return resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# ---- the registry --------------------------------------------------------------------


def test_open_registry_push_inspect_and_log(registries, image):
    reg = registries()
    push(image["layout"], "latest", reg.ref("open/x"))
    info = skopeo_inspect(reg.ref("open/x"))
    assert len(info["Layers"]) == 3
    assert info["Layers"] == image["layer_digests"]
    assert info["Digest"] == image["manifest_digest"]  # pushed with digests preserved
    requests = reg.requests()
    assert ("PUT", "/v2/open/x/manifests/latest") in requests
    assert ("GET", "/v2/open/x/manifests/latest") in requests
    assert not any("pyctr-log-sync" in path for _, path in requests)
    blob = reg.blob_path(image["layer_digests"][1])
    assert sha256_digest(blob.read_bytes()) == image["layer_digests"][1]


def test_schema2_push_keeps_the_layers(registries, image, tmp_path):
    reg = registries()
    push(image["layout"], "latest", reg.ref("open/v2s2"), format_="v2s2")
    raw = skopeo_inspect(reg.ref("open/v2s2"), raw=True)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [layer["digest"] for layer in raw["layers"]] == image["layer_digests"]
    skopeo_pull(reg.ref("open/v2s2"), tmp_path / "pulled")  # the reference pull works too
    blob = tmp_path / "pulled/blobs/sha256" / image["layer_digests"][0].split(":")[1]
    assert sha256_digest(blob.read_bytes()) == image["layer_digests"][0]


def test_htpasswd_needs_credentials(registries, image):
    reg = registries(auth="htpasswd", users=USERS)
    push(image["layout"], "latest", reg.ref("basic/x"), creds=ALICE)
    assert len(skopeo_inspect(reg.ref("basic/x"), creds=ALICE)["Layers"]) == 3
    with pytest.raises(FixtureError, match="authentication required"):
        push(image["layout"], "latest", reg.ref("basic/y"))
    with pytest.raises(FixtureError):
        push(image["layout"], "latest", reg.ref("basic/y"), creds="alice:wrong")
    status, headers, _ = fetch(reg.host, "/v2/")
    assert status == 401 and headers["Www-Authenticate"].startswith("Basic ")


def test_token_auth_scopes_and_policy(registries, image):
    reg = registries(auth="token", users=USERS)
    ts = reg.token_server
    status, headers, _ = fetch(reg.host, "/v2/")
    assert status == 401 and f'realm="{ts.url}"' in headers["Www-Authenticate"]

    push(image["layout"], "latest", reg.ref("private/x"), creds=ALICE)
    asked = [r for r in ts.requests if "repository:private/x:pull,push" in r["scope"]]
    assert asked and asked[0]["valid"] is True and asked[0]["user"] == "alice"
    assert {"type": "repository", "name": "private/x",
            "actions": ["pull", "push"]} in asked[0]["granted"]
    push(image["layout"], "latest", reg.ref("public/x"), creds=ALICE)

    # anonymous: pull of public/… only
    assert skopeo_inspect(reg.ref("public/x"))["Digest"] == image["manifest_digest"]
    with pytest.raises(FixtureError, match="denied|unauthorized"):
        skopeo_inspect(reg.ref("private/x"))
    with pytest.raises(FixtureError, match="denied|unauthorized"):
        push(image["layout"], "latest", reg.ref("public/y"))
    anonymous = [r for r in ts.requests if r["valid"] is None]
    assert anonymous and all(a["actions"] == ["pull"] for r in anonymous for a in r["granted"])

    # the token endpoint itself: a JWT whose claims distribution 2.8 accepts
    status, _, body = fetch(ts.host, "/token?service=pyctr-test-registry"
                                     "&scope=repository:public/x:pull,push")
    answer = json.loads(body)
    claims = jwt_claims(answer["token"])
    assert status == 200 and answer["access_token"] == answer["token"]
    assert claims["aud"] == ts.service and claims["iss"] == ts.issuer
    assert claims["access"] == [{"type": "repository", "name": "public/x", "actions": ["pull"]}]
    bad = "Basic " + base64.b64encode(b"alice:wrong").decode()
    status, _, body = fetch(ts.host, "/token?scope=repository:private/x:pull",
                            headers={"Authorization": bad})
    assert status == 401 and json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert ts.requests[-1]["valid"] is False


def test_index_with_two_platforms(registries, tmp_path):
    reg = registries()
    idx = build_index(tmp_path / "multi", "v1", [("linux", "amd64", None), ("linux", "arm", "v7")])
    push(tmp_path / "multi", "v1", reg.ref("multi/x", "v1"), all_=True)
    raw = skopeo_inspect(reg.ref("multi/x", "v1"), raw=True)
    assert raw["mediaType"] == OCI_INDEX
    assert len(raw["manifests"]) == 2
    assert {m["digest"] for m in raw["manifests"]} == set(idx["manifests"].values())
    arm = next(m for m in raw["manifests"] if m["platform"]["architecture"] == "arm")
    assert arm["platform"]["variant"] == "v7"
    assert idx["images"]["linux/arm/v7"]["platform"]["variant"] == "v7"
    status, _, body = fetch(reg.host, "/v2/multi/x/manifests/v1")
    assert status == 200 and sha256_digest(body) == idx["index_digest"]


def test_bad_gzip_image_pushes_its_truncated_layer(registries, tmp_path):
    reg = registries()
    bad = build_bad_gzip_image(tmp_path / "bad", "broken")
    push(tmp_path / "bad", "broken", reg.ref("bad/x"))
    stored = reg.blob_path(bad["layer_digests"][0]).read_bytes()
    assert len(stored) == bad["truncated_size"] < bad["full_size"]
    with pytest.raises((EOFError, zlib.error)):
        gzip.decompress(stored)


# ---- the fault proxy -----------------------------------------------------------------


def test_proxy_fail_answers_then_passes(proxied, image):
    reg, proxy = proxied
    push(image["layout"], "latest", proxy.ref("px/x"))  # a whole push through the proxy
    assert any(r.method == "PATCH" for r in proxy.requests)
    proxy.fail(r"/manifests/latest$", 503)
    proxy.fail(r"/manifests/", 429, headers={"Retry-After": "1"})
    assert fetch(proxy.host, "/v2/px/x/manifests/latest")[0] == 503
    status, headers, _ = fetch(proxy.host, "/v2/px/x/manifests/latest")
    assert status == 429 and headers["Retry-After"] == "1"
    status, headers, body = fetch(proxy.host, "/v2/px/x/manifests/latest")
    assert status == 200 and sha256_digest(body) == image["manifest_digest"]
    # the faulted requests never reached the registry
    gets = [p for m, p in reg.requests() if m == "GET" and p == "/v2/px/x/manifests/latest"]
    assert len(gets) == 1


def test_proxy_cut_corrupt_and_records(proxied, image):
    _reg, proxy = proxied
    push(image["layout"], "latest", proxy.ref("px/y"))
    digest, size = image["layer_digests"][1], image["layer_sizes"][1]
    blob = f"/v2/px/y/blobs/{digest}"
    proxy.clear()
    proxy.cut(r"/blobs/sha256:", 1000)
    proxy.corrupt(r"/blobs/sha256:")
    assert fetch(proxy.host, blob, "HEAD")[0] == 200  # a HEAD does not use the rules up
    status, headers, body = fetch(proxy.host, blob)
    assert status == 200 and int(headers["Content-Length"]) == size and body == 1000
    status, _, body = fetch(proxy.host, blob)  # the cut is used up: now the corrupt one
    assert status == 200 and len(body) == size and sha256_digest(body) != digest
    status, _, body = fetch(proxy.host, blob)
    assert sha256_digest(body) == digest
    status, headers, body = fetch(proxy.host, blob, headers={"Range": "bytes=10-19"})
    assert status == 206 and len(body) == 10
    assert proxy.requests[-1].headers["Range"] == "bytes=10-19"
    assert [r.method for r in proxy.requests] == ["HEAD", "GET", "GET", "GET", "GET"]

    proxy.throttle(400_000)
    started = time.monotonic()
    assert sha256_digest(fetch(proxy.host, blob)[2]) == digest
    assert time.monotonic() - started >= 0.8 * size / 400_000


def test_proxy_streams_a_chunked_upload_and_rewrites_location(proxied):
    reg, proxy = proxied
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("POST", "/v2/px/up/blobs/uploads/")
        resp = conn.getresponse()
        resp.read()
        location = resp.getheader("Location")
        assert resp.status == 202 and location.startswith(proxy.url + "/v2/px/up/blobs/uploads/")
        data = bytes(range(256)) * 1000
        chunks = (data[i:i + 30_000] for i in range(0, len(data), 30_000))
        conn.request("PATCH", location, body=chunks, encode_chunked=True,
                     headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 202 and resp.getheader("Range") == f"0-{len(data) - 1}"
        location = resp.getheader("Location")
        conn.request("PUT", f"{location}&digest={sha256_digest(data)}", body=b"")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201
    finally:
        conn.close()
    assert reg.blob_path(sha256_digest(data)).read_bytes() == data
    assert proxy.requests[1].headers["Transfer-Encoding"] == "chunked"
