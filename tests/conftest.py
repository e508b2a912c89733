import numpy as np
import pytest
from PIL import Image

from vitprint.config import DataConfig, RunConfig
from vitprint.data.phantoms import make_phantoms


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITPRINT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VITPRINT_QUIET", "1")


@pytest.fixture(scope="session")
def phantom_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    make_phantoms(root, per_class=6, size=64, seed=1)
    return root


@pytest.fixture
def flat_folder(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture
def data_cfg(tmp_path):
    return DataConfig(cache_dir=str(tmp_path / "cache"), val_fraction=0.25)


def run_cfg(out, **kw):
    kw.setdefault("epochs", 1)
    kw.setdefault("batch_size", 4)
    return RunConfig(out=str(out), **kw)
