"""Files that could sink a job: decompression bombs, giant scans, damaged cache entries."""

import logging
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from vitprint.config import DataConfig
from vitprint.data.imageset import load_images
from vitprint.data.readers import ReadOptions, UnreadableImage, read_file
from vitprint.data.sources import read_folders
from vitprint.errors import VitprintError


def _bomb(path, side=30000):
    """A PNG that claims side x side pixels in a few hundred kilobytes (one colour compresses to nothing)."""
    Image.new("1", (side, side)).save(path)  # 1-bit: about 110 MB in memory, a few hundred KB on disk
    return path


def test_a_decompression_bomb_is_an_unreadable_file_named_not_a_crash(tmp_path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(folder / "ok.png")
    _bomb(folder / "bomb.png")
    with caplog.at_level(logging.WARNING):
        images = read_folders([folder], 32, DataConfig(no_cache=True))
    assert [p.name for p in images.paths] == ["ok.png"]
    assert "bomb.png" in caplog.text and "more than the limit" in caplog.text
    with pytest.raises(VitprintError, match="bomb.png.*more than the limit"):
        read_folders([folder], 32, DataConfig(no_cache=True, strict=True))


def test_the_pixel_limit_is_a_setting(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((100, 300), np.uint8)).save(path)
    with pytest.raises(UnreadableImage, match="300 x 100 pixels"):
        read_file(path, ReadOptions(max_pixels=20_000))
    assert read_file(path, ReadOptions(max_pixels=30_000))[0].shape == (100, 300)


def test_a_large_scan_is_reduced_while_it_is_decoded(tmp_path):
    path = tmp_path / "big.png"
    big = np.tile(np.linspace(0, 255, 4096, dtype=np.float32), (4096, 1)).astype(np.uint8)  # 16.8 MP
    Image.fromarray(big).save(path)
    img = read_file(path, ReadOptions(target=64))[0]
    assert img.shape == (128, 128) and abs(float(img[0, -1]) - 1.0) < 0.02  # reduced 32x to twice the target
    # numpy's share of the decode's peak memory (tracemalloc sees numpy's buffers): at full size the
    # float32 copies alone take 130 MB.
    peaks = {}
    for target in (64, None):
        tracemalloc.start()
        read_file(path, ReadOptions(target=target))
        peaks[target] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert peaks[64] < 5 and peaks[None] > 60, peaks


def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(folder / f"{i}.png")
    files = sorted(folder.glob("*.png"))
    cache = tmp_path / "cache"
    first = load_images(files, 16, cache_dir=cache, show_progress=False)
    (npy,) = cache.glob("*.npy")
    npy.write_bytes(npy.read_bytes()[:100])  # cut short, as by a crash or a full disk
    with caplog.at_level(logging.WARNING):
        again = load_images(files, 16, cache_dir=cache, show_progress=False)
    assert "damaged" in caplog.text and str(npy) in caplog.text
    assert np.array_equal(np.asarray(again.pixels), np.asarray(first.pixels))
    (meta,) = cache.glob("*.json")
    meta.write_text("{not json")
    assert np.array_equal(np.asarray(load_images(files, 16, cache_dir=cache, show_progress=False).pixels),
                          np.asarray(first.pixels))


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_are_replaced_as_one_set_even_across_a_crash(tmp_path, monkeypatch):
    import os

    from vitprint.data import outputs
    from vitprint.data.outputs import finish_swap, replaced_outputs

    out = tmp_path / "out"
    names = ("a.csv", "run.txt", "figures", "report.html")
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_text("the user's")  # a folder vitprint did not write
    (out / "report.html").write_text("the user's")  # an output name the jobs below never write
    with replaced_outputs(out, names) as stage:
        (stage / "a.csv").write_text("old")
        (stage / "run.txt").write_text("old")
        (stage / "figures").mkdir()
        (stage / "figures" / "f.png").write_text("old")
    (out / "keep.txt").write_text("not an output")  # anything else in the folder is left alone

    # A failure while the new set is written: the old set stands, no staging folder is left.
    with pytest.raises(RuntimeError):
        with replaced_outputs(out, names) as stage:
            (stage / "a.csv").write_text("half")
            raise RuntimeError("killed")
    users = {"figures/mine.png": b"the user's", "report.html": b"the user's"}
    assert _files(out) == {"a.csv": b"old", "run.txt": b"old", "figures/f.png": b"old", "keep.txt": b"not an output",
                           ".vitprint-outputs.json": b'["a.csv", "run.txt"]', **users}

    # A crash after the journal was written and the first file moved: the next job finishes the move.
    real_replace, moved = os.replace, []

    def crash_after_one(src, dst):
        if len(moved) == 2:  # the journal (written aside, then renamed) and a.csv
            raise KeyboardInterrupt
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        with replaced_outputs(out, names) as stage:  # the new set has no run file
            (stage / "a.csv").write_text("new")
            (stage / "figures").mkdir()
            (stage / "figures" / "g.png").write_text("new")
    assert (out / outputs.JOURNAL).is_file() and (out / "a.csv").read_text() == "new"
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    finish_swap(out)
    # run.txt, written by the previous job and not by this one, is gone; the user's files stay.
    assert _files(out) == {"a.csv": b"new", "figures/g.png": b"new", "figures/f.png": b"old", "keep.txt": b"not an output",
                           ".vitprint-outputs.json": b'["a.csv"]', **users}
    assert not list(out.glob(".swap*")) and not list(out.glob(".staging*"))


def test_a_folder_halfway_through_its_swap_refuses_to_hand_out_its_run_file(tmp_path):
    from vitprint.data.outputs import JOURNAL
    from vitprint.evaluation.runfile import parse_run

    (tmp_path / "run.txt").write_text("a,1\n")
    assert parse_run(tmp_path / "run.txt") == (["a"], [1])
    (tmp_path / JOURNAL).write_text("{}")
    with pytest.raises(VitprintError, match="halfway through replacing its outputs"):
        parse_run(tmp_path / "run.txt")


def test_a_run_file_that_fails_its_check_replaces_nothing(tmp_path):
    import vitprint

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (12, 32, 32), dtype=np.uint8)
    labels = [1] * 4 + [0] * 4 + [-1] * 4
    result = vitprint.detect(real[:4].copy(), real, labels=labels, detectors=("pixel_nn",), n_boot=0,
                             options={"pixel_size": 32})
    out = result.save(tmp_path / "out")
    before = _files(out)
    with pytest.raises(RuntimeError, match="does not pass the validator: line 1: bad"):
        result.save(out, report=True, check_run=lambda path: ["line 1: bad"])
    assert _files(out) == before and not list(out.glob(".staging*"))
