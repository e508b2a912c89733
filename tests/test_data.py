import logging
import os

import numpy as np
import pytest
from PIL import Image

from vitprint.config import DataConfig
from vitprint.data import imageset
from vitprint.data.folders import base_class, class_tree, list_images
from vitprint.data.imageset import load_images
from vitprint.data.phantoms import CLASSES, phantom, save_palette_png
from vitprint.data.readers import ReadOptions, UnreadableImage, parse_window, read_file, resize_to_uint8
from vitprint.data.sources import read_folders, split
from vitprint.errors import VitprintError


def test_palette_png_is_read_through_its_palette(tmp_path):
    # Index i shows gray 255 - i: reading indices as intensities would invert the image.
    idx = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    im.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    im.save(tmp_path / "p.png")
    (img,) = read_file(tmp_path / "p.png")
    assert np.allclose(img * 255, 255 - idx.astype(np.float32))


def test_phantoms_are_palette_pngs_that_round_trip(tmp_path):
    px = phantom(np.random.default_rng(0), "nodule", 64)
    save_palette_png(px, tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode == "P"
    (img,) = read_file(tmp_path / "x.png")
    assert np.array_equal(np.rint(img * 255).astype(np.uint8), px)


def test_sixteen_bit_uses_its_own_range(tmp_path):
    a = np.linspace(1000, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "w.png")
    (img,) = read_file(tmp_path / "w.png")
    assert img.min() == 0.0 and img.max() == pytest.approx(1.0)


def test_rgb_and_rgba_become_gray(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 128, np.uint8)])).save(tmp_path / "a.png")
    for name in ("c.png", "a.png"):
        (img,) = read_file(tmp_path / name)
        assert img.shape == (8, 8)
        assert img.mean() * 255 == pytest.approx(200 * 0.587, abs=1.5)  # ITU-R 601 luma of pure green


def test_truncated_and_empty_files_are_unreadable(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    for name in ("cut.png", "empty.png", "text.png"):
        with pytest.raises(UnreadableImage):
            read_file(tmp_path / name)


def test_dicom_is_windowed_in_hounsfield_units(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    raw = np.array([[0, 400], [1000, 2000]], np.uint16)  # HU = raw - 1000
    ds.Rows, ds.Columns = raw.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1000
    ds.PixelData = raw.tobytes()
    ds.save_as(tmp_path / "s.dcm", enforce_file_format=True)
    (img,) = read_file(tmp_path / "s.dcm", ReadOptions(window=parse_window("lung")))
    # Lung window: centre -600, width 1500 -> [-1350, 150] HU.
    expected = np.clip((raw.astype(float) - 1000 + 1350) / 1500, 0, 1)
    assert np.allclose(img, expected, atol=1e-6)


def test_nifti_gives_one_image_per_axial_slice(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.random.default_rng(0).normal(size=(16, 12, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    images = read_file(tmp_path / "v.nii.gz")
    assert len(images) == 5 and images[0].shape == (12, 16)


def test_window_parsing():
    assert parse_window("lung") == (-600.0, 1500.0)
    assert parse_window("40,400") == (40.0, 400.0)
    assert parse_window(None) is None
    with pytest.raises(VitprintError, match="window"):
        parse_window("wide")


def test_resize_to_uint8():
    out = resize_to_uint8(np.ones((100, 80), np.float32) * 0.5, 32)
    assert out.shape == (32, 32) and out.dtype == np.uint8 and (out == 128).all()


def test_class_names_drop_the_tnm_suffix():
    assert base_class("adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib") == "adenocarcinoma"
    assert base_class("large.cell.carcinoma") == "large.cell.carcinoma"


def test_kaggle_layout_with_suffixed_train_folders(tmp_path):
    for split_name, folder in [("train", "adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib"), ("train", "normal"),
                               ("valid", "adenocarcinoma"), ("valid", "normal"), ("test", "normal")]:
        d = tmp_path / split_name / folder
        d.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "a.png")
    splits = class_tree(tmp_path)
    assert set(splits) == {"train", "valid", "test"}
    assert splits["train"].classes == ["adenocarcinoma", "normal"]
    assert splits["valid"].labels == [0, 1] and splits["test"].labels == [1]


def test_class_folders_split_by_seeded_fraction(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / c / f"{i}.png")
    s1, s2 = class_tree(tmp_path, 0.2, seed=3), class_tree(tmp_path, 0.2, seed=3)
    assert len(s1["valid"].files) == 4 and len(s1["train"].files) == 16
    assert s1["valid"].files == s2["valid"].files
    assert not set(s1["valid"].files) & set(s1["train"].files)


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VitprintError, match="no images found in"):
        list_images(tmp_path / "empty")
    with pytest.raises(VitprintError, match="not a folder"):
        list_images(tmp_path / "missing")


def test_unreadable_files_are_skipped_with_one_warning_or_refused_when_strict(flat_folder, caplog):
    (flat_folder / "bad.png").write_bytes(b"")
    (flat_folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with caplog.at_level(logging.WARNING):
        images = read_folders([flat_folder], 32, DataConfig(no_cache=True))
    assert len(images) == 10
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 2" in warnings[0].message
    assert "bad.png" in warnings[0].message and "cut.png" in warnings[0].message
    with pytest.raises(VitprintError, match="2 unreadable"):
        read_folders([flat_folder], 32, DataConfig(no_cache=True, strict=True))


def test_cache_avoids_decoding_twice_and_notices_changes(flat_folder, tmp_path, monkeypatch):
    calls = []
    real = imageset.read_file
    monkeypatch.setattr(imageset, "read_file", lambda p, o: calls.append(p) or real(p, o))
    files = list_images(flat_folder)
    cache = tmp_path / "c"
    first = load_images(files, 32, cache_dir=cache)
    assert len(calls) == 10
    second = load_images(files, 32, cache_dir=cache)
    assert len(calls) == 10  # served from the cache
    assert np.array_equal(first.pixels, second.pixels) and first.ids == second.ids
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(files[0])
    os.utime(files[0], ns=(1, 1))
    third = load_images(files, 32, cache_dir=cache)
    assert len(calls) == 20 and (third.pixels[0] == 7).all()


def test_split_is_disjoint_and_seeded(flat_folder):
    images = read_folders([flat_folder], 32, DataConfig(no_cache=True))
    tr, va = split(images, 0.3, seed=1)
    assert len(tr) == 7 and len(va) == 3
    assert not set(tr.ids) & set(va.ids)
    assert split(images, 0.3, seed=1)[1].ids == va.ids


def test_phantom_classes_differ_and_patients_vary():
    a = phantom(np.random.default_rng([0, 0, 1]), "normal", 64)
    b = phantom(np.random.default_rng([0, 0, 2]), "normal", 64)
    assert a.shape == (64, 64) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).mean() > 5
    assert set(CLASSES) == {"normal", "nodule", "mass", "effusion"}


def test_atomic_write_gives_the_permissions_of_a_plain_open_and_keeps_the_old_file_on_a_crash(tmp_path):
    from pathlib import Path

    from vitprint.data.imageset import atomic_write

    (tmp_path / "plain.txt").write_text("x")
    path = tmp_path / "out.txt"
    atomic_write(path, lambda tmp: Path(tmp).write_text("new"))
    assert path.read_text() == "new"
    assert os.stat(path).st_mode & 0o777 == os.stat(tmp_path / "plain.txt").st_mode & 0o777

    def crash(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "plain.txt"]
