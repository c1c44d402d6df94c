"""Overlay mount data: topmost layer first, short relative links, within one page."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyctr.images.snapshot import PAGE_SIZE, overlay_options
from pyctr.images.store import Image, ImageStore

from pyctr.errors import ImageError


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


def test_lowerdir_is_topmost_first_and_relative(tmp_path: Path):
    store = ImageStore(tmp_path)
    image = fake_image(store, 3)
    cwd, data = overlay_options(store, image, tmp_path / "up", tmp_path / "work")
    assert cwd == tmp_path / "images/layers"
    assert data == (f"lowerdir=l/L000000002:l/L000000001:l/L000000000,"
                    f"upperdir={tmp_path}/up,workdir={tmp_path}/work")


def test_two_hundred_layers_fit_in_one_page(tmp_path: Path):
    store = ImageStore(tmp_path)
    _, data = overlay_options(store, fake_image(store, 200), tmp_path / "u", tmp_path / "w")
    assert len(data) < PAGE_SIZE


def test_too_many_layers_is_a_clear_error(tmp_path: Path):
    store = ImageStore(tmp_path)
    with pytest.raises(ImageError, match=r"has too many layers \(400\) for one overlay mount"):
        overlay_options(store, fake_image(store, 400), tmp_path / "u", tmp_path / "w")


def test_separators_in_upper_are_refused(tmp_path: Path):
    store = ImageStore(tmp_path)
    with pytest.raises(ImageError, match="upperdir .*a,b contains ',' or ':'"):
        overlay_options(store, fake_image(store, 1), tmp_path / "a,b", tmp_path / "w")


def test_missing_layer_link_names_the_layer(tmp_path: Path):
    store = ImageStore(tmp_path)
    image = fake_image(store, 1)
    (store.dirs.layers / image.diff_ids[0][7:] / "link").unlink()
    with pytest.raises(ImageError, match=f"layer {image.diff_ids[0]} of image .* is missing"):
        overlay_options(store, image, tmp_path / "u", tmp_path / "w")
