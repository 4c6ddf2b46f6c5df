"""DICOM sources: the grey pipeline (Modality LUT -> VOI LUT -> polarity, BitsStored), the
compressed syntaxes, the refusals, the salted patient ids and privacy, through `collect` and
`preprocess`. Every file is written in code by pydicom (tests/_dicom.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from _dicom import PATIENT_ID, PATIENT_NAME, ct_bytes, dicom_bytes, sr_bytes, write_dicom
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLosslessSV1
from typer.testing import CliRunner

from cxraug.cli import app
from cxraug.collect import CollectConfig, collect
from cxraug.core.dataset import load_dataset
from cxraug.core.dicom import NotAnImage, patient_hash
from cxraug.core.errors import ImageError, InputError
from cxraug.core.images import decode_displayed, encode_image
from cxraug.core.manifest import is_marked, read_manifest
from cxraug.core.workspace import Workspace
from cxraug.prep.inspect import inspect_file
from cxraug.prep.phantom import make_phantom
from cxraug.prep.sources import dicom_verdict
from cxraug.preprocess import PreprocessConfig, preprocess, preprocess_image

CFG = CollectConfig(workers=1, show_progress=False, test_fraction=0.5)
runner = CliRunner()


def picture(seed: int = 0, size: tuple[int, int] = (72, 64)) -> np.ndarray:
    """(H, W) uint8: a chest phantom, the picture every encoding below must give back."""
    return make_phantom(np.random.default_rng(seed), "normal", size)


def twelve_bit_with_rescale_and_window(u8: np.ndarray) -> bytes:
    """The picture as 12-bit stored values s = 16 u8 + 8 (junk in the 4 unused high bits),
    rescaled to v = 2 s - 1000 = 32 u8 - 984, shown through window 1 (of 2) chosen so that
    PS3.3's LINEAR window gives y = (v - (c - 0.5)) / (w - 1) + 0.5 = u8 / 255 exactly:
    w - 1 = 32 * 255, c = -984 + 0.5 + (w - 1) / 2."""
    stored = (u8.astype(np.uint16) * 16 + 8) | np.uint16(0xA000)  # overlay bits above bit 11
    w = 32 * 255 + 1
    c = -984 + 0.5 + (w - 1) / 2
    return dicom_bytes(stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=[c, 40.0], WindowWidth=[w, 80.0])  # fmt: skip


ENCODINGS = {
    "mono2-8bit": lambda u8: dicom_bytes(u8),
    "mono2-12bit-rescale-window": twelve_bit_with_rescale_and_window,
    "mono1-inverse": lambda u8: dicom_bytes(255 - u8, PhotometricInterpretation="MONOCHROME1",
                                            PresentationLUTShape="INVERSE"),
    "mono1": lambda u8: dicom_bytes(255 - u8, PhotometricInterpretation="MONOCHROME1"),
    "mono2-presentation-inverse": lambda u8: dicom_bytes(255 - u8,
                                                         PresentationLUTShape="INVERSE"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_every_encoding_of_one_picture_decodes_to_it(name: str) -> None:
    u8 = picture()
    d = decode_displayed(ENCODINGS[name](u8))
    assert d.info.format == "DICOM" and (d.width, d.height) == (64, 72)
    np.testing.assert_allclose(d.gray, u8 / 255.0, atol=1e-6)
    expected = preprocess_image(u8 / np.float32(255), None, 32)
    np.testing.assert_allclose(preprocess_image(d.gray, None, 32), expected, atol=1e-5)


def test_the_worked_example_of_docs_datasets() -> None:
    """docs/datasets.md, "DICOM": stored 3000 -> 1600 -> window 0.1005 -> MONOCHROME1 0.8995."""
    stored = np.full((20, 20), 1000, np.uint16)
    stored[3, 4] = 3000
    d = decode_displayed(dicom_bytes(stored, bits_stored=12, RescaleSlope=0.5,
                                     RescaleIntercept=100, WindowCenter=[2000, 1500],
                                     WindowWidth=[1001, 600],
                                     PhotometricInterpretation="MONOCHROME1",
                                     PresentationLUTShape="INVERSE"))  # fmt: skip
    assert d.gray[3, 4] == pytest.approx(0.8995, abs=1e-6) and d.dicom.voi == "window 1 of 2"
    assert d.gray[0, 0] == 1.0  # 1000 -> 600, below the window: black, inverted: white


def test_which_voi_is_said() -> None:
    u8 = picture()
    assert decode_displayed(twelve_bit_with_rescale_and_window(u8)).dicom.voi == "window 1 of 2"
    assert decode_displayed(dicom_bytes(u8)).dicom.voi.startswith("no VOI")


def test_voi_lut_sequence_is_applied() -> None:
    from pydicom.dataset import Dataset

    u8 = picture()
    lut = Dataset()  # gamma 0.5, 8-bit entries: y = round(255 sqrt(x / 255)) / 255
    table = np.rint(255 * np.sqrt(np.arange(256) / 255)).astype(int)
    lut.add_new("LUTDescriptor", "US", [256, 0, 8])
    lut.add_new("LUTData", "US", table.tolist())
    d = decode_displayed(dicom_bytes(u8, VOILUTSequence=[lut]))
    np.testing.assert_allclose(d.gray, table[u8] / 255.0, atol=1e-6)
    assert d.dicom.voi == "VOI LUT 1 of 1"


def test_a_malformed_lut_is_an_error_without_pydicoms_words() -> None:
    from pydicom.dataset import Dataset

    lut = Dataset()  # 9 bits per entry: PS3.3 allows 8 or 10-16
    lut.add_new("LUTDescriptor", "US", [256, 0, 9])
    lut.add_new("LUTData", "US", list(range(256)))
    with pytest.raises(ImageError) as ei:
        decode_displayed(dicom_bytes(picture(), VOILUTSequence=[lut]))
    assert ei.value.reason == ("unusable DICOM grey transforms (NotImplementedError); check its "
                               "rescale, window and LUT attributes")  # fmt: skip


def test_jpeg_lossless_decodes_with_the_plugins() -> None:
    stored = picture().astype(np.uint16) * 16  # 12-bit values
    plain = decode_displayed(dicom_bytes(stored, bits_stored=12))
    packed = dicom_bytes(stored, bits_stored=12, syntax=JPEGLosslessSV1)
    assert b"\xff\xc3" in packed  # really a process-14 stream inside
    np.testing.assert_array_equal(decode_displayed(packed).gray, plain.gray)


def test_jpeg_lossless_without_the_plugins_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # what pydicom holds when no pylibjpeg plugin is installed: no available decoder plugin
    monkeypatch.setattr(get_decoder(JPEGLosslessSV1), "_available", {})
    packed = dicom_bytes(picture().astype(np.uint16), bits_stored=12, syntax=JPEGLosslessSV1)
    with pytest.raises(ImageError) as ei:
        decode_displayed(packed)
    assert "pip install 'cxraug[dicom]'" in ei.value.reason and "JPEG Lossless" in ei.value.reason
    path = tmp_path / "x.dcm"
    path.write_bytes(packed)
    chk = inspect_file(path)
    assert "cxraug[dicom]" in chk.error and not chk.excluded


@pytest.mark.parametrize(
    ("make", "reason", "excluded"),
    [(lambda: sr_bytes(), "not an image: a DICOM structured report (SR)", True),
     (lambda: dicom_bytes(np.stack([picture(k) for k in range(3)]), frames=3),
      "multi-frame DICOM (3 frames)", True),
     (lambda: dicom_bytes(np.dstack([picture()] * 3)), "colour DICOM (RGB)", True),
     (lambda: ct_bytes(picture().astype(np.uint16)), "CT object (DICOM Modality CT)", True),
     (lambda: dicom_bytes(picture(), ViewPosition="LL"), "lateral view (LL)", True),
     (lambda: dicom_bytes(picture(), ViewPosition="RL"), "lateral view (RL)", True),
     (lambda: dicom_bytes(picture())[:-500], "truncated DICOM (pixel data", False),
     (lambda: dicom_bytes(picture())[:400], "truncated or incomplete DICOM", False)],
)  # fmt: skip
def test_refused_with_reasons(tmp_path: Path, make, reason: str, excluded: bool) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.dcm"
    path.write_bytes(make())
    chk = inspect_file(path)
    assert chk.error.startswith(reason), chk.error
    assert chk.excluded is excluded
    assert PATIENT_ID not in chk.error and "Doe" not in chk.error


def test_not_an_image_is_an_image_error_subclass() -> None:
    with pytest.raises(NotAnImage):
        decode_displayed(sr_bytes())


def test_huge_header_refused_before_decoding() -> None:
    data = dicom_bytes(picture(), Rows=20000, Columns=20000)  # 400 MP claimed, 4 KiB stored
    with pytest.raises(ImageError, match="20000x20000 .* above the 150 MP limit"):
        decode_displayed(data)


def test_view_and_modality_verdicts() -> None:
    from cxraug.core.dicom import DicomFacts

    def facts(modality: str, view: str) -> DicomFacts:
        return DicomFacts(modality, view, False, "no VOI")

    assert dicom_verdict(facts("DX", "PA")) == dicom_verdict(facts("CR", "AP")) == ""
    assert dicom_verdict(facts("CR", "")) == ""  # many CR files leave ViewPosition empty
    assert dicom_verdict(facts("MR", "PA")).startswith("MR object")
    assert dicom_verdict(facts("DX", "LATERAL")) == "lateral view (LATERAL)"
    assert dicom_verdict(facts("DX", "RLD")) == "not a frontal view (RLD)"


# ---- through collect and preprocess ------------------------------------------------------------


def dicom_folder(root: Path) -> Path:
    """normal/: a.dcm and b.dcm of one patient, PNGs of others; covid/: DICOM of many patients,
    one with burned-in annotation, plus refused and broken files."""
    n, c = root / "normal", root / "covid"
    write_dicom(n / "a.dcm", picture(1))
    write_dicom(n / "b.dcm", 255 - picture(2), PhotometricInterpretation="MONOCHROME1",
                PresentationLUTShape="INVERSE")
    for k in range(6):
        (n / f"p{k}.png").parent.mkdir(parents=True, exist_ok=True)
        (n / f"p{k}.png").write_bytes(encode_image(picture(10 + k), ".png"))
    for k in range(6):
        write_dicom(c / f"c{k}.dcm", make_phantom(np.random.default_rng(20 + k), "covid",
                                                  (72, 64)), PatientID=f"COVID-{k}")  # fmt: skip
    write_dicom(c / "burned.dcm", picture(30), PatientID="COVID-9", BurnedInAnnotation="YES")
    write_dicom(c / "nobody.dcm", picture(31), PatientID=None)
    (c / "report.dcm").write_bytes(sr_bytes())
    (c / "lateral.dcm").write_bytes(dicom_bytes(picture(32), ViewPosition="LL"))
    (c / "slice.dcm").write_bytes(ct_bytes(picture(33).astype(np.uint16)))
    (c / "broken.dcm").write_bytes(dicom_bytes(picture(34))[:-700])
    return root


def rows_by_name(ws: Path) -> dict[str, object]:
    return {Path(r.id).name: r for r in read_manifest(ws / "manifest.csv")}


def test_collect_mixes_dicom_with_png_and_hashes_patients(tmp_path: Path) -> None:
    src, ws = dicom_folder(tmp_path / "src"), tmp_path / "ws"
    result = collect(Workspace.at(ws), [f"h=folder:{src}"], CFG)
    rows = rows_by_name(ws)
    a, b = rows["a.dcm"], rows["b.dcm"]
    assert a.status == b.status == rows["p0.png"].status == "ok"
    assert a.patient_id == b.patient_id and a.patient_id.startswith("dicom-")
    assert a.split == b.split  # one patient, one side
    assert len({rows[f"c{k}.dcm"].patient_id for k in range(6)}) == 6
    assert a.view == "PA" and "DICOM DX" in a.note and "VOI: no VOI" in a.note
    salt = (ws / ".patient-salt").read_text().strip()
    assert a.patient_id == patient_hash(PATIENT_ID, bytes.fromhex(salt))
    assert stat.S_IMODE(os.stat(ws / ".patient-salt").st_mode) == 0o600
    nobody = rows["nobody.dcm"]
    assert nobody.patient_id == "" and "no PatientID in the header" in nobody.note
    assert "BurnedInAnnotation YES" in rows["burned.dcm"].note
    for name, reason in [("report.dcm", "not an image: a DICOM structured report"),
                         ("lateral.dcm", "lateral view (LL)"), ("slice.dcm", "CT object")]:
        assert (rows[name].status, rows[name].reason[: len(reason)]) == ("excluded", reason)
    assert rows["broken.dcm"].status == "error" and "truncated DICOM" in rows["broken.dcm"].reason
    assert result.n_errors == 1  # the batch went on past the broken file
    # a second collect reuses the salt: the same patients get the same ids
    collect(Workspace.at(ws), [f"h=folder:{src}"], CollectConfig(workers=1, show_progress=False,
                                                                 force=True))  # fmt: skip
    assert rows_by_name(ws)["a.dcm"].patient_id == a.patient_id


def test_no_clear_header_value_reaches_any_file(tmp_path: Path) -> None:
    src, ws = dicom_folder(tmp_path / "src"), tmp_path / "ws"
    r = runner.invoke(app, ["collect", f"h=folder:{src}", "-w", str(ws), "--workers", "1",
                            "--json"])  # fmt: skip
    assert r.exit_code == 1, r.output  # the broken file
    salt = (ws / ".patient-salt").read_text().strip()
    r2 = runner.invoke(app, ["preprocess", "-w", str(ws), "--workers", "1", "--size", "32"])
    assert r2.exit_code == 0, r2.output
    secrets = [PATIENT_ID, PATIENT_NAME, "Doe", "COVID-3"]
    for out in (r.output, r2.output):
        assert not any(s in out for s in [*secrets, salt])
    files = [p for p in ws.rglob("*") if p.is_file() and p.name != ".patient-salt"]
    assert {p.name for p in files} >= {"manifest.csv", "dataset.npz", "collect-config.json"}
    for p in files:
        data = p.read_bytes()
        for s in [*secrets, salt]:
            assert s.encode() not in data and s.encode("utf-16-le") not in data, (p, s)


def test_preprocess_reads_dicom_and_marks_burned_in_annotation(tmp_path: Path) -> None:
    src, ws = dicom_folder(tmp_path / "src"), tmp_path / "ws"
    collect(Workspace.at(ws), [f"h=folder:{src}"], CFG)
    res = preprocess(Workspace.at(ws), PreprocessConfig(size=32, workers=1), show_progress=False)
    assert res.errors == [] and res.marks["annotation"] >= 1
    rows = rows_by_name(ws)
    assert "annotation" in rows["burned.dcm"].marks and is_marked(rows["burned.dcm"].marks)
    ds = load_dataset(ws / "processed" / "dataset.npz")
    ids = list(ds.ids)
    b = ds.images[ids.index("h/normal/b.dcm")]  # MONOCHROME1 + INVERSE of picture(2)
    np.testing.assert_allclose(b, preprocess_image(picture(2) / np.float32(255), None, 32),
                               atol=1e-5)  # fmt: skip


def test_patient_tag_option(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for k in range(2):  # two PatientIDs, one OtherPatientIDs: linked only with --patient-tag
        write_dicom(src / "normal" / f"x{k}.dcm", picture(k), PatientID=f"ID-{k}",
                    OtherPatientIDs="SAME-PERSON")  # fmt: skip
    write_dicom(src / "covid" / "y.dcm", picture(9), PatientID="OTHER")
    ws = tmp_path / "ws"
    collect(Workspace.at(ws), [f"folder:{src}"],
            CollectConfig(workers=1, show_progress=False, patient_tag="OtherPatientIDs"))
    rows = rows_by_name(ws)
    assert rows["x0.dcm"].patient_id == rows["x1.dcm"].patient_id != ""
    with pytest.raises(InputError, match="--patient-tag 'PatientNmae' is not a DICOM attribute"):
        collect(Workspace.at(tmp_path / "w2"), [f"folder:{src}"],
                CollectConfig(workers=1, show_progress=False, patient_tag="PatientNmae"))
    r = runner.invoke(app, ["collect", f"folder:{src}", "-w", str(tmp_path / "w3"),
                            "--patient-tag", "0010,0020", "--workers", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "w3" / "collect-config.json").read_text())
    assert config["config"]["patient_tag"] == "0010,0020"


def test_dicom_files_named_without_a_suffix_are_found(tmp_path: Path) -> None:
    src = tmp_path / "src" / "normal"
    write_dicom(src / "IM0001", picture(1))
    write_dicom(src / "1.2.840.99.7", picture(2), PatientID="OTHER")
    (src / "README").write_text("not an image\n")
    os.mkfifo(src / "PIPE")  # never opened for reading (it would block)
    result = collect(Workspace.at(tmp_path / "ws"), [f"folder:{src.parent}"], CFG)
    rows = rows_by_name(tmp_path / "ws")
    assert rows["IM0001"].status == rows["1.2.840.99.7"].status == "ok"
    assert "README" not in rows and result.skipped_files == {"src": 2}


def test_a_png_only_workspace_gets_no_salt(tmp_path: Path) -> None:
    src = tmp_path / "src" / "normal"
    src.mkdir(parents=True)
    for k in range(2):
        (src / f"{k}.png").write_bytes(encode_image(picture(k), ".png"))
    collect(Workspace.at(tmp_path / "ws"), [f"folder:{src.parent}"], CFG)
    assert not (tmp_path / "ws" / ".patient-salt").exists()


def test_a_csv_source_may_name_dicom_files(tmp_path: Path) -> None:
    src = tmp_path / "hosp"
    write_dicom(src / "images" / "a.dcm", picture(1))
    write_dicom(src / "images" / "b.dcm", picture(2), ViewPosition="LL")
    write_dicom(src / "images" / "c.dcm", picture(3), PatientID="OTHER")
    (src / "images" / "d.png").write_bytes(encode_image(picture(4), ".png"))
    (src / "labels.csv").write_text("file,finding,patient\na.dcm,COVID-19,\nb.dcm,COVID-19,\n"
                                    "c.dcm,No finding,P7\nd.png,No finding,P8\n")  # fmt: skip
    opts = dict(csv_file_column="file", csv_label_column="finding", csv_images="images",
                csv_classes="COVID-19=covid,No finding=normal")  # fmt: skip
    ws = tmp_path / "ws"
    collect(Workspace.at(ws), [f"h=csv:{src / 'labels.csv'}"],
            CollectConfig(workers=1, show_progress=False, csv_patient_column="patient", **opts))
    rows = rows_by_name(ws)
    assert rows["a.dcm"].status == rows["c.dcm"].status == rows["d.png"].status == "ok"
    assert rows["a.dcm"].patient_id.startswith("dicom-")  # blank cell: the header's id
    assert rows["c.dcm"].patient_id == "h-P7"  # the column the user named wins
    assert (rows["b.dcm"].status, rows["b.dcm"].reason) == ("excluded", "lateral view (LL)")
