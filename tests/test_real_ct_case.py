"""The real-CT case builder (benchmarks/real_ct.py) on a synthetic volume: layout, truth, copies."""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

spec = importlib.util.spec_from_file_location("real_ct", Path(__file__).parents[1] / "benchmarks" / "real_ct.py")
real_ct = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real_ct)


def test_case_layout_truth_and_interleaved_roles(tmp_path):
    rng = np.random.default_rng(0)
    volume = gaussian_filter(rng.normal(size=(30, 40, 48)), 2) * 400 - 700  # HU-like, mostly "lung"
    truth = real_ct.build_case(volume, tmp_path, n_dev=5, n_test=3, n_generated=20, slab=1, seed=0, size=32)
    dev, test = tmp_path / "dev", tmp_path / "test"
    assert len(list((dev / "real_used").iterdir())) == 5 and len(list((dev / "real_not_used").iterdir())) == 5
    assert len(list((test / "real_unknown").iterdir())) == 6 and sorted(truth.values()) == [0, 0, 0, 1, 1, 1]
    assert len(list((dev / "generated").iterdir())) == 20 == len(list((test / "generated").iterdir()))
    img = np.asarray(Image.open(next((dev / "real_used").iterdir())))
    assert img.shape == (32, 32) and img.dtype == np.uint8
    hard = real_ct.copy_of(volume[10], np.random.default_rng(1), 32, "warped")
    assert hard.shape == (32, 32) and hard.dtype == np.uint8
