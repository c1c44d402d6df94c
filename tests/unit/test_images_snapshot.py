"""Overlay mount data: topmost layer first, short relative links, within one page."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyctr.errors import ImageError
from pyctr.images.snapshot import PAGE_SIZE, _on_overlay, overlay_options
from pyctr.images.store import Image, ImageStore


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """A dir not on overlayfs: overlay_options refuses an upper there, whatever tmp_path is on."""
    if not _on_overlay(tmp_path):
        yield tmp_path
        return
    if _on_overlay(Path("/var/tmp")):
        pytest.skip("tmp_path and /var/tmp are both on overlayfs: no dir for an upper")
    d = Path(tempfile.mkdtemp(prefix="pyctr-snapshot-", dir="/var/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


def fake_image(store: ImageStore, n: int) -> Image:
    """n layers with link files, as the store writes them (no unpack needed for the options)."""
    diff_ids = []
    for i in range(n):
        hexid = f"{i:064x}"
        d = store.dirs.layers / hexid
        d.mkdir(parents=True)
        (d / "link").write_text(f"L{i:09d}")
        diff_ids.append(f"sha256:{hexid}")
    return Image(id="sha256:" + "f" * 64, names=[], manifest_digest="", config={},
                 diff_ids=diff_ids)


def test_lowerdir_is_topmost_first_and_relative(base: Path):
    store = ImageStore(base)
    image = fake_image(store, 3)
    cwd, data = overlay_options(store, image, base / "up", base / "work")
    assert cwd == base / "images/layers"
    assert data == (f"lowerdir=l/L000000002:l/L000000001:l/L000000000,"
                    f"upperdir={base}/up,workdir={base}/work")


def test_two_hundred_layers_fit_in_one_page(base: Path):
    store = ImageStore(base)
    _, data = overlay_options(store, fake_image(store, 200), base / "u", base / "w")
    assert len(data) < PAGE_SIZE


def test_too_many_layers_is_a_clear_error(base: Path):
    store = ImageStore(base)
    with pytest.raises(ImageError, match=r"has too many layers \(400\) for one overlay mount"):
        overlay_options(store, fake_image(store, 400), base / "u", base / "w")


def test_separators_in_upper_are_refused(base: Path):
    store = ImageStore(base)
    with pytest.raises(ImageError, match="upperdir .*a,b contains ',' or ':'"):
        overlay_options(store, fake_image(store, 1), base / "a,b", base / "w")


def test_missing_layer_link_names_the_layer(base: Path):
    store = ImageStore(base)
    image = fake_image(store, 1)
    (store.dirs.layers / image.diff_ids[0][7:] / "link").unlink()
    with pytest.raises(ImageError, match=f"layer {image.diff_ids[0]} of image .* is missing"):
        overlay_options(store, image, base / "u", base / "w")
