"""The public API on uint8 arrays (no files), and the README's example as written."""

import re
from pathlib import Path

import numpy as np
import torch
import pytest
from scipy.ndimage import gaussian_filter

import vitprint
from vitprint.errors import VitprintError
from vitprint.evaluation.report import ReconstructionPanel


def _slices(rng, n, size=64):
    x = np.stack([gaussian_filter(rng.normal(size=(size, size)), 1.5) for _ in range(n)])
    return np.clip(128 + 60 * x / x.std(), 0, 255).astype(np.uint8)


def _case(seed=0):
    rng = np.random.default_rng(seed)
    real = _slices(rng, 40)
    members = real[:20]
    copies = [np.clip(np.roll(m.astype(float), (2, -3), (0, 1)) * 1.05 + rng.normal(0, 3, m.shape), 0, 255)
              for m in members]
    generated = np.concatenate([np.asarray(copies, np.uint8), _slices(rng, 20)])
    labels = np.r_[np.ones(15), np.zeros(15), -np.ones(10)].astype(int)  # 5 members, 5 not, unknown
    order = np.r_[0:15, 20:35, 15:20, 35:40]
    return generated, real[order], labels


def test_detect_on_arrays_in_memory(tmp_path):
    generated, real, labels = _case()
    opts = {"align_size": 64, "max_rotation": 0, "copy_size": 32, "copy_steps": 20, "copy_width": 8}
    result = vitprint.detect(generated, real, labels=labels, options=opts, n_boot=50)
    assert set(result.scores) == {"pixel_nn", "mc", "align_nn", "copy_nn"}
    assert result.verdict["verdict"] == "Leak detected" and result.primary == "align_nn"
    assert result.metrics["align_nn"]["metrics"]["roc_auc"] == 1.0
    unknown = labels < 0
    assert (result.decisions[unknown] == np.r_[np.ones(5), np.zeros(5)]).all()
    assert (result.nearest["align_nn"][:15] == np.arange(15)).all()
    shown = np.asarray(real[:2])
    out = result.save(tmp_path / "r", report=True,
                      reconstructions=ReconstructionPanel(shown, shown, ["first", "second"]))
    assert (out / "run.txt").read_text().count("\n") == 10
    assert {"scores.csv", "decisions.csv", "evaluation.json", "run.txt", "report.html"} <= {p.name for p in out.iterdir()}
    report = (out / "report.html").read_text()
    assert "Evidence: the real images align_nn ranks" in report and "Reconstructions by the autoencoder" in report
    assert (out / "figures" / "evidence.png").is_file() and not list(out.glob("*.tmp"))
    assert "Best-matching regions" in report and (out / "figures" / "regions.png").is_file()
    decisions = (out / "decisions.csv").read_text().splitlines()
    assert decisions[1].split(",")[-2:] == ["generated_00000.png", "align_nn"]  # the first used image and its copy


def test_detect_refuses_an_image_in_two_roles_and_bad_labels():
    generated, real, labels = _case(1)
    real = real.copy()
    real[20] = real[0]  # a not-used image identical to a used one
    with pytest.raises(VitprintError, match="both used .* and not used"):
        vitprint.detect(generated, real, labels=labels, detectors=("pixel_nn",))
    with pytest.raises(VitprintError, match="one entry per real image"):
        vitprint.detect(generated, real, labels=labels[:5], detectors=("pixel_nn",))


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S)
    assert block, "README has a '## Python API' section with a python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.verdict["verdict"] == "Leak detected"
    assert list(result.decisions[-10:]) == [1] * 5 + [0] * 5  # the copied used images among the unknown
    assert (tmp_path / "vitprint-api-example" / "report.html").is_file()
    section = readme[readme.index("## Python API"):]
    second = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    assert "train_autoencoder" in second
    exec(compile(second.replace("epochs=5", "epochs=1"), "README.md", "exec"), namespace)  # one epoch is enough here
    assert {"recon", "latent_nn", "align_nn"} == set(namespace["result"].scores)


def test_an_autoencoder_trained_on_arrays_feeds_the_recon_detector(tmp_path):
    from vitprint.config import RunConfig
    from vitprint.training.checkpoint import load_checkpoint
    from vitprint.models.autoencoder import Autoencoder

    generated, real, labels = _case(2)
    cfg = vitprint.model_config("micro", image_size=64)
    model = vitprint.train_autoencoder(generated, cfg, RunConfig(out=str(tmp_path / "ae"), epochs=1, batch_size=8))
    assert not model.training and model.summary["train_images"] + model.summary["val_images"] == len(generated)
    again = Autoencoder(cfg)
    load_checkpoint(tmp_path / "ae" / "checkpoints" / "best.safetensors", again)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    result = vitprint.detect(generated, real, labels=labels, detectors=("recon", "pixel_nn"),
                             options={"autoencoder": model}, n_boot=0)
    assert set(result.scores) == {"recon", "pixel_nn"} and np.isfinite(result.scores["recon"]).all()
    with pytest.raises(VitprintError, match="32 px but the model reads 64 px"):
        vitprint.train_autoencoder(generated[:, ::2, ::2].copy(), cfg, RunConfig(out=str(tmp_path / "b")))


def test_arrays_of_the_wrong_kind_are_one_clear_error():
    generated, real, labels = _case(3)
    with pytest.raises(VitprintError, match=r"the real images must be a uint8 array \(N, S, S\), got float64"):
        vitprint.detect(generated, real.astype(float), labels=labels, detectors=("pixel_nn",))


def test_unreadable_real_files_are_answered_0_without_labels_and_refused_with_them(tmp_path):
    from PIL import Image

    generated, real, _ = _case()
    folder = tmp_path / "unknown"
    folder.mkdir()
    for i, img in enumerate(real[:8]):
        Image.fromarray(img).save(folder / f"u_{i}.png")
    (folder / "u_9.png").write_bytes(b"\x89PNG broken")
    r = vitprint.detect(generated, folder, detectors=("pixel_nn",), assume_prevalence=0.5, image_size=64, n_boot=0,
                        options={"pixel_size": 64})
    assert [Path(f).name for f in r.summary["undecided"]["files"]] == ["u_9.png"]
    lines = (r.save(tmp_path / "out") / "run.txt").read_text().splitlines()
    assert len(lines) == 9 and "u_9,0" in lines  # every listed image answered, the unreadable one with 0
    with pytest.raises(VitprintError, match="could not be read, so the labels cannot be matched"):
        vitprint.detect(generated, folder, labels=[1, 0] * 4 + [0], detectors=("pixel_nn",), image_size=64,
                        options={"pixel_size": 64})
