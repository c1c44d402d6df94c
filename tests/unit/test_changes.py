"""`pyctr import --change`: Dockerfile instructions on an image config (no root)."""

import pytest

from pyctr.errors import UserError
from pyctr.images.changes import apply_changes


def test_each_instruction_lands_in_the_config():
    cfg = apply_changes({"Env": ["PATH=/bin"]}, [
        'CMD ["sh"]', "ENTRYPOINT /entry --x", "ENV A=1 B=two", "ENV PATH /usr/bin:/bin",
        "WORKDIR /srv", "USER user", "EXPOSE 80 53/udp", "LABEL a=b", "STOPSIGNAL SIGQUIT",
    ])
    assert cfg["Cmd"] == ["sh"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/entry --x"]
    assert cfg["Env"] == ["PATH=/usr/bin:/bin", "A=1", "B=two"]
    assert (cfg["WorkingDir"], cfg["User"], cfg["StopSignal"]) == ("/srv", "user", "SIGQUIT")
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"a": "b"}


def test_the_input_is_not_modified():
    orig = {"Env": ["A=1"]}
    apply_changes(orig, ["ENV A=2"])
    assert orig == {"Env": ["A=1"]}


@pytest.mark.parametrize("change,msg", [
    ("RUN apt-get update", "'RUN' is not a valid change command"),
    ("CMD", "CMD requires at least one argument"),
    ("ENV =x", 'ENV needs KEY=VALUE pairs, got "=x"'),
])
def test_bad_changes_are_refused(change, msg):
    with pytest.raises(UserError, match=msg):
        apply_changes({}, [change])
