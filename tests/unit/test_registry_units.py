"""The registry client's rules without a registry: documents, challenges, platforms, the
auth file and registries.conf (the real exchanges are tests/integration/test_registry.py)."""

from __future__ import annotations

import hashlib
import io
import json
import stat

import pytest

from pyctr.errors import ImageError, NotFound, UserError
from pyctr.images import auth, progress
from pyctr.images.pull import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
    check_document,
    parse_platform,
    select,
)
from pyctr.images.registry import api_host, is_local, parse_challenge

MANIFEST = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + "a" * 64, "size": 2},
            "layers": []}
INDEX = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 1,
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 1,
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "3" * 64, "size": 1,
     "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
]}


def _doc(d: dict) -> tuple[bytes, str]:
    data = json.dumps(d).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_manifest_and_an_index_are_told_apart_and_verified():
    data, digest = _doc(MANIFEST)
    assert check_document(data, OCI_MANIFEST, "x", expected=digest)[1] == OCI_MANIFEST
    data, digest = _doc(INDEX)
    assert check_document(data, OCI_INDEX, "x", said=digest)[1] == OCI_INDEX
    docker = {**MANIFEST, "mediaType": DOCKER_MANIFEST}
    data, _ = _doc(docker)
    assert check_document(data, DOCKER_MANIFEST, "x")[1] == DOCKER_MANIFEST
    data, _ = _doc({**INDEX, "mediaType": DOCKER_LIST})
    assert check_document(data, DOCKER_LIST, "x")[1] == DOCKER_LIST


@pytest.mark.parametrize("doc, ctype, message", [
    ({k: v for k, v in {**MANIFEST, **INDEX}.items() if k != "mediaType"}, None, "ambiguous"),
    ({**MANIFEST, "manifests": []}, OCI_MANIFEST, "ambiguous"),
    (MANIFEST, OCI_INDEX, "media type mismatch"),
    ({"schemaVersion": 1, "fsLayers": []},
     "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"),
    ({"schemaVersion": 2, "mediaType": "application/vnd.example.thing"}, None,
     "not a container image"),
    ({**MANIFEST, "layers": "nope"}, OCI_MANIFEST, "malformed"),
])
def test_bad_documents_are_refused(doc, ctype, message):
    data, _ = _doc(doc)
    with pytest.raises(ImageError, match=message):
        check_document(data, ctype, "example:1")


def test_a_digest_that_differs_is_refused_naming_both():
    data, digest = _doc(MANIFEST)
    with pytest.raises(ImageError, match=f"expected sha256:{'b' * 64}, got {digest}"):
        check_document(data, OCI_MANIFEST, "x", expected="sha256:" + "b" * 64)
    with pytest.raises(ImageError, match="digest mismatch"):
        check_document(data + b" ", OCI_MANIFEST, "x", said=digest)
    with pytest.raises(ImageError, match="not JSON"):
        check_document(b"{nope", OCI_MANIFEST, "x")


def test_platforms_as_docker_spells_them():
    assert parse_platform("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert parse_platform("arm64") == Platform("linux", "arm64")
    assert parse_platform("linux/x86_64") == Platform("linux", "amd64")
    assert parse_platform(None).os == "linux"
    for bad, message in (("windows/amd64", "pyctr runs linux images"),
                         ("linux//", "invalid platform"), ("a/b/c/d", "invalid platform")):
        with pytest.raises(UserError, match=message):
            parse_platform(bad)


def test_select_picks_the_platform_with_default_variants():
    assert select(INDEX, parse_platform("linux/amd64"), "x")["digest"].endswith("1" * 64)
    # arm64 means v8 when no variant is given, and v8 matches an entry without one
    assert select(INDEX, parse_platform("linux/arm64"), "x")["digest"].endswith("2" * 64)
    assert select(INDEX, parse_platform("linux/arm/v6"), "x")["digest"].endswith("3" * 64)
    with pytest.raises(NotFound, match=r"no image for linux/arm/v7 in x \(it has: linux/amd64, "
                                       r"linux/arm64/v8, linux/arm/v6\)"):
        select(INDEX, parse_platform("linux/arm"), "x")


def test_challenges_are_parsed_with_quoted_commas():
    ch = parse_challenge('Bearer realm="https://auth.example/token",service="reg.example",'
                         'scope="repository:a/b:pull,push"')
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.example/token", "service": "reg.example",
                         "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="Registry Realm"').params == {"realm": "Registry Realm"}
    assert parse_challenge("") is None


def test_hosts():
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("quay.io") == "quay.io"
    assert all(is_local(h) for h in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5"))
    assert not any(is_local(h) for h in ("example.com:5000", "10.0.0.1:5000", "localhost.evil"))


def test_the_auth_file_is_dockers_shape_mode_0600_and_replaces_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    f = tmp_path / "auth.json"
    assert auth.lookup("localhost:5000", f) is None
    auth.store("localhost:5000", "alice", "s3:cret", f)
    auth.store("docker.io", "bob", "pw", f)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    doc = json.loads(f.read_text())
    assert set(doc["auths"]) == {"localhost:5000", "https://index.docker.io/v1/"}
    assert auth.lookup("localhost:5000", f) == ("alice", "s3:cret")  # a colon in a password
    assert auth.lookup("index.docker.io", f) == ("bob", "pw")
    assert auth.remove("localhost:5000", f) and not auth.remove("localhost:5000", f)
    assert [p.name for p in tmp_path.iterdir()] == ["auth.json"]  # no temp file left


def test_dockers_own_config_is_read_when_pyctr_has_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps(
        {"auths": {"https://index.docker.io/v1/": {"auth": "Ym9iOnB3"}},
         "credsStore": "desktop"}))
    assert auth.lookup("docker.io") == ("bob", "pw")
    (tmp_path / ".config" / "pyctr").mkdir(parents=True)
    (tmp_path / ".config" / "pyctr" / "auth.json").write_text("{broken")
    with pytest.raises(UserError, match="cannot read the auth file"):
        auth.lookup("docker.io")


def test_insecure_registries_from_flag_env_and_registries_conf(tmp_path, monkeypatch):
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "mirror:5000"\ninsecure = true\n\n'
                    '[[registry]]\nlocation = "secure:443"\n')
    monkeypatch.setenv("PYCTR_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("PYCTR_INSECURE_REGISTRIES", "a:1, b:2")
    assert auth.insecure_registries(["flag:3"]) == {"flag:3", "a:1", "b:2", "mirror:5000"}
    conf.write_text("[[registry]\n")
    with pytest.raises(UserError, match="registries.conf"):
        auth.insecure_registries()


def test_login_server_names():
    assert auth.check_server("https://localhost:5000/v2/") == "localhost:5000"
    assert auth.check_server("index.docker.io") == "docker.io"
    with pytest.raises(UserError, match="invalid registry address"):
        auth.check_server("user@host")


def test_plain_progress_is_one_line_per_state_change():
    out = io.StringIO()
    shown = progress.make(False, out)
    assert isinstance(shown, progress.Plain)
    shown.add("abc", 10, "Pulling fs layer")
    shown.state("abc", "Downloading")
    shown.advance("abc", 5)
    shown.state("abc", "Downloading")  # no change: no line
    shown.state("abc", "Pull complete")
    assert out.getvalue() == "abc: Pulling fs layer\nabc: Downloading\nabc: Pull complete\n"
    quiet = io.StringIO()
    q = progress.make(True, quiet)
    q.add("abc", 1, "x")
    q.message("hello")
    q.result("docker.io/library/x:1")
    assert quiet.getvalue() == "docker.io/library/x:1\n"
