"""pytest plugin (entry point pytest11): containers as fixtures.

    def test_the_service_answers(pyctr_container):
        assert pyctr_container.exec(["cat", "/etc/hostname"]).exit_code == 0

    @pytest.mark.pyctr_container(image="busybox", command=["sleep", "600"], network="none")
    def test_with_options(pyctr_container): ...

``pyctr_container`` yields a running pyctr.client.Container (busybox
``sleep 3600`` unless the marker says otherwise) and removes it after the
test, whatever the test did.  ``pyctr_client`` is the session's Client; the
root and run dir come from --pyctr-root / --pyctr-run-dir, else
PYCTR_ROOT / PYCTR_RUN_DIR, else pyctr's defaults.  Needs root.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("pyctr")
    group.addoption("--pyctr-root", default=None, help="pyctr root dir for pyctr_container")
    group.addoption("--pyctr-run-dir", default=None, help="pyctr run dir for pyctr_container")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pyctr_container(image='busybox', command=[...], **options): "
                   "what the pyctr_container fixture runs")


@pytest.fixture(scope="session")
def pyctr_client(request):
    from pyctr.client import Client

    if os.geteuid() != 0:
        pytest.skip("pyctr containers need root")
    return Client(request.config.getoption("--pyctr-root"),
                  request.config.getoption("--pyctr-run-dir"))


@pytest.fixture
def pyctr_container(request, pyctr_client):
    marker = request.node.get_closest_marker("pyctr_container")
    options = dict(marker.kwargs) if marker else {}
    image = options.pop("image", "busybox")
    command = options.pop("command", ["sleep", "3600"])
    options.setdefault("network", "none")
    box = pyctr_client.run(image, command, detach=True, **options)
    try:
        yield box
    finally:
        box.remove(force=True)
