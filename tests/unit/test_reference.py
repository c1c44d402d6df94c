"""Reference parsing: docker's normalization and its error messages."""

from __future__ import annotations

import pytest

from pyctr.errors import UserError
from pyctr.images.reference import parse_reference

D = "sha256:" + "ab" * 32

GOOD = [
    # input, full canonical, familiar, (domain, path, tag, digest)
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest",
     ("docker.io", "library/busybox", "latest", None)),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36",
     ("docker.io", "library/busybox", "1.36", None)),
    ("user/app", "docker.io/user/app:latest", "user/app:latest",
     ("docker.io", "user/app", "latest", None)),
    ("index.docker.io/library/alpine:3", "docker.io/library/alpine:3", "alpine:3",
     ("docker.io", "library/alpine", "3", None)),
    ("localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000/x:1",
     ("localhost:5000", "x", "1", None)),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest",
     ("localhost", "x", "latest", None)),
    ("quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3",
     ("quay.io", "a/b/c", "v1.2-rc_3", None)),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}",
     ("docker.io", "library/busybox", None, D)),
    (f"reg.example:443/ns/img:tag@{D}", f"reg.example:443/ns/img:tag@{D}",
     f"reg.example:443/ns/img:tag@{D}", ("reg.example:443", "ns/img", "tag", D)),
    ("my-app__x.y", "docker.io/library/my-app__x.y:latest", "my-app__x.y:latest",
     ("docker.io", "library/my-app__x.y", "latest", None)),
]


@pytest.mark.parametrize("text,full,familiar,parts", GOOD)
def test_good_references_normalize_like_docker(text, full, familiar, parts):
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == parts
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.name == f"{parts[0]}/{parts[1]}"


BAD = [
    ("Busybox", "repository name must be lowercase"),
    ("user/MyApp:1", "repository name must be lowercase"),
    ("", "invalid reference format: empty reference"),
    ("busybox:", "invalid reference format"),
    ("busybox:-x", "invalid reference format"),
    ("bad name", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("busybox@sha256:1234", "invalid digest"),
    ("busybox@sha256:" + "a" * 40, "invalid sha256 digest"),
    ("busybox@md5", "invalid digest"),
    (":tag", "invalid reference format"),
    ("-lead/x", "invalid reference format"),
    ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
    ("busybox:t\u00e4g", "invalid reference format"),  # tags are ASCII only
    ("busybox:\u0661\u0662", "invalid reference format"),  # Arabic-Indic digits are \w too
    ("x/" + "a" * 260, "must not be more than 255 characters"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_references_are_user_errors_with_the_value(text, message):
    with pytest.raises(UserError) as err:
        parse_reference(text)
    assert message in err.value.message
    if text and len(text) < 64:
        assert text in err.value.message
    assert err.value.hint


def test_uppercase_error_reads_like_docker():
    with pytest.raises(UserError, match="invalid reference format: repository name must be "
                                        "lowercase") as err:
        parse_reference("Busybox")
    assert "'busybox'" in err.value.hint


def test_no_default_tag_when_asked():
    assert parse_reference("busybox", default_tag=False).tag is None
