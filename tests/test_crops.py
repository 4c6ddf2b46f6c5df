"""Crop boxes: the boxes file (validation with row numbers), suggestions and contact sheets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cxraug.core.errors import CropBoxError
from cxraug.core.manifest import Manifest, Record
from cxraug.prep.contact_sheet import SheetItem, make_thumb, render_contact_sheet
from cxraug.prep.crops import (
    FALLBACK,
    SuggestedBox,
    apply_crop_boxes,
    read_crop_boxes,
    suggest_box,
    write_crop_boxes,
)


def manifest() -> Manifest:
    return Manifest(
        [
            Record("src/a.png", "imgs/a.png", "covid", "train", width=200, height=100),
            Record("src/b.png", "imgs/b.png", "normal", "test", width=300, height=300),
            Record("src/c.png", "/abs/c.png", "normal", "train"),  # size unknown
            Record("src/d.png", "imgs/d.png", "normal", "train", width=50, height=50),
        ]
    )


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "boxes.csv"
    p.write_text(text)
    return p


def test_valid_boxes_by_id_and_by_path(tmp_path: Path) -> None:
    m = manifest()
    p = write(tmp_path, "path,x0,y0,x1,y1,note\nimgs/a.png,10,0,190,100,x\n"
                        f"{tmp_path}/imgs/b.png,0,0,300,300,\n/abs/c.png,1,2,50,60,\n")  # fmt: skip
    boxes = read_crop_boxes(p, m, tmp_path)
    assert boxes == {"src/a.png": (10, 0, 190, 100), "src/b.png": (0, 0, 300, 300),
                     "src/c.png": (1, 2, 50, 60)}  # fmt: skip
    p = write(tmp_path, "\ufeffid, x0, y0, x1, y1\nsrc/b.png,5,6,100.0,200\n\n")  # BOM, spaces
    assert read_crop_boxes(p, m, tmp_path) == {"src/b.png": (5, 6, 100, 200)}
    assert apply_crop_boxes(m, {"src/b.png": (5, 6, 100, 200)}) == 1
    assert m.by_id()["src/b.png"].crop == (5, 6, 100, 200)
    assert apply_crop_boxes(m, {"src/b.png": (5, 6, 100, 200)}) == 0  # unchanged


def test_every_bad_row_reported_with_its_number(tmp_path: Path) -> None:
    p = write(tmp_path, "id,x0,y0,x1,y1\n"
                        "src/a.png,90,0,40,100\n"        # row 2: x1 <= x0
                        "src/nope.png,0,0,10,10\n"       # row 3: unknown id
                        "src/b.png,0,0,301,300\n"        # row 4: beyond width
                        "src/c.png,0,zero,50,50\n"       # row 5: not a number
                        "src/c.png,0,0,50,50\n"          # row 6: fine
                        "src/c.png,0,0,60,60\n"          # row 7: duplicate of row 6
                        "src/d.png,0,0,5,5\n"            # row 8: smaller than 8x8
                        ",1,1,20,20\n")  # fmt: skip
    with pytest.raises(CropBoxError) as ei:
        read_crop_boxes(p, manifest(), tmp_path)
    msg = str(ei.value)
    assert msg.startswith("boxes.csv has 7 problem(s); nothing was changed")
    assert "boxes.csv row 2: crop box (90, 0, 40, 100): x1 (40) must be greater than x0 (90)" in msg
    assert "boxes.csv row 3: id 'src/nope.png' is not in the manifest" in msg
    assert "row 4: crop box (0, 0, 301, 300): x1 (301) is beyond the image width (300)" in msg
    assert "boxes.csv row 5: y0 ('zero') is not a whole number of pixels" in msg
    assert "boxes.csv row 7: 'src/c.png' already has a box in row 6" in msg
    assert "boxes.csv row 8: crop box (0, 0, 5, 5) is smaller than 8x8 pixels" in msg
    assert "boxes.csv row 9: neither id nor path is given" in msg


@pytest.mark.parametrize(
    "text,expected",
    [
        ("id,x0,y0,x1\nsrc/a.png,1,2,3\n", "missing column(s) y1"),
        ("name,x0,y0,x1,y1\n", "missing column(s) id (or path)"),
        ("id,x0,y0,x1,y1\n", "has no box rows"),
        ("id,x0,y0,x1,y1\nsrc/a.png,1,2,30,40,extra\n", "row 2: more cells than header columns"),
        ("path,x0,y0,x1,y1\nimgs/zzz.png,1,2,30,40\n", "row 2: path 'imgs/zzz.png' is not in"),
        ("id,x0,y0,x1,y1\nsrc/a.png,1,2,,40\n", "row 2: x1 is empty"),
        ("id,x0,y0,x1,y1\nsrc/a.png,-1,2,30,40\n", "has a negative coordinate"),
        ("id,x0,y0,x1,y1\nsrc/a.png,1.5,2,30,40\n", "x0 ('1.5') is not a whole number"),
    ],
)
def test_structural_problems(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(CropBoxError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_crop_boxes(write(tmp_path, text), manifest(), tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CropBoxError, match="no crop-boxes file at"):
        read_crop_boxes(tmp_path / "none.csv", manifest(), tmp_path)


def test_written_boxes_read_back(tmp_path: Path) -> None:
    rows = [SuggestedBox("src/a.png", "imgs/a.png", (1, 2, 150, 90), "auto, with comma")]
    write_crop_boxes(tmp_path / "s.csv", rows)
    assert read_crop_boxes(tmp_path / "s.csv", manifest(), tmp_path) == {
        "src/a.png": (1, 2, 150, 90)
    }


def chest_like(h: int = 400, w: int = 500) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Dark background, bright ellipse 'body' with dark 'lungs', a letter 'R' in a corner and
    a white frame. Returns (image [0, 1], body bounding box)."""
    u8 = np.full((h, w), 20, np.uint8)  # drawn in uint8: OpenCV 5 draws text on 8-bit only
    cv2.ellipse(u8, (260, 220), (150, 130), 0, 0, 360, 190, -1)  # body: x 110..410, y 90..350
    cv2.ellipse(u8, (200, 210), (40, 70), 0, 0, 360, 75, -1)  # lungs
    cv2.ellipse(u8, (320, 210), (40, 70), 0, 0, 360, 75, -1)
    cv2.putText(u8, "R", (20, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 2)  # thin strokes
    u8[:6, :] = u8[-6:, :] = 255  # figure frame
    u8[:, :6] = u8[:, -6:] = 255
    rng = np.random.default_rng(0)
    img = u8.astype(np.float32) / 255 + rng.normal(0, 0.01, u8.shape).astype(np.float32)
    return np.clip(img, 0, 1), (110, 90, 411, 351)


def test_suggest_box_finds_the_body_not_the_letter_or_frame() -> None:
    img, (bx0, by0, bx1, by1) = chest_like()
    (x0, y0, x1, y1), note = suggest_box(img)
    assert note.startswith("auto")
    pad_x, pad_y = 0.05 * (bx1 - bx0), 0.05 * (by1 - by0)
    tol = 4  # pixels lost to downscaling/blur
    assert bx0 - pad_x - tol <= x0 <= bx0 and by0 - pad_y - tol <= y0 <= by0
    assert bx1 <= x1 <= bx1 + pad_x + tol and by1 <= y1 <= by1 + pad_y + tol
    assert x0 > 60 and y0 > 50  # the letter 'R' at (20..45, 25..50) is outside


def test_suggest_box_falls_back_on_noise_and_keeps_full_images() -> None:
    rng = np.random.default_rng(1)
    noise = rng.random((200, 240)).astype(np.float32)
    assert suggest_box(noise)[0] == (0, 0, 240, 200)  # no structure: the whole image
    specks = np.full((200, 240), 0.05, np.float32)  # only dots a letter-eraser removes
    for y, x in rng.integers(10, 190, (30, 2)):
        cv2.circle(specks, (int(x), int(y)), 2, 0.9, -1)
    box, note = suggest_box(specks)
    assert box == (0, 0, 240, 200) and note == FALLBACK + " (no clear body outline)"
    # an already tight chest (bright everywhere but lungs) -> box covers nearly everything
    img = np.full((300, 300), 0.8, np.float32) + rng.normal(0, 0.03, (300, 300)).astype(np.float32)
    img[60:240, 40:130] -= 0.6
    img[60:240, 170:260] -= 0.6
    box, _ = suggest_box(img)
    assert box[0] <= 5 and box[1] <= 5 and box[2] >= 295 and box[3] >= 295


def test_contact_sheet_grid_boxes_and_pages(tmp_path: Path) -> None:
    img, body = chest_like()
    thumb, tbox = make_thumb(img, body, side=160)
    assert thumb.shape == (128, 160) and thumb.dtype == np.uint8
    assert tbox == (35, 29, 132, 112)  # body * 160/500, rounded
    items = [SheetItem(f"source/folder/image-{i}.png", thumb, tbox, i == 2) for i in range(5)]
    paths = render_contact_sheet(items, tmp_path / "sheet.png", cell=160, cols=4)
    assert paths == [tmp_path / "sheet.png"]
    sheet = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert sheet.shape == (2 * (160 + 14), 4 * 160, 3)
    oy = (160 - 128) // 2  # thumbnails are centred in their cell
    assert tuple(sheet[oy + 29, 35 + 50]) == (0, 230, 0)  # top edge of the first box: green
    assert tuple(sheet[oy + 29, 2 * 160 + 35 + 50]) == (255, 160, 0)  # fallback: orange
    label = sheet[160:174, :160]
    assert (label > 200).any()  # the id is printed under the thumbnail
    paths = render_contact_sheet(items, tmp_path / "many.png", per_page=2)
    assert [p.name for p in paths] == ["many-001.png", "many-002.png", "many-003.png"]
    assert all(p.is_file() for p in paths)
