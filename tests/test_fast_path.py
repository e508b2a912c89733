"""The fast path: uint8 batches scaled and augmented on the device, precision auto, compile with a fallback,
fused Adam, and bf16 scoring that ranks as fp32 does."""

import logging

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader

from vitprint.benchmark import SCALES, patients
from vitprint.config import RunConfig
from vitprint.data.dataset import DeviceBatches, ImageTensors, SeedAugment, to_device
from vitprint.data.imageset import ImageSet
from vitprint.device import pick_precision
from vitprint.inference import encode, reconstruct
from vitprint.models.autoencoder import Autoencoder
from vitprint.models.presets import model_config
from vitprint.training.engine import adam, compiled


def test_batches_stay_uint8_until_the_device_and_keep_their_labels():
    px = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    item = ImageTensors(ImageSet(list("abcd"), [None] * 4, px, np.array([0, 1, 0, 1])))[1]
    assert item[0].dtype == torch.uint8 and item[0].shape == (1, 8, 8) and item[1] == 1
    loader = DataLoader(ImageTensors(ImageSet(list("abcd"), [None] * 4, px, np.array([0, 1, 0, 1]))), batch_size=2)
    x, y = next(iter(DeviceBatches(loader, "cpu")))
    assert x.dtype == torch.float32 and x.shape == (2, 1, 8, 8)
    assert torch.allclose(x, torch.from_numpy(px[:2, None].astype(np.float32)) / 127.5 - 1)
    assert y.tolist() == [0, 1]
    assert len(DeviceBatches(loader, "cpu")) == 2
    assert torch.equal(to_device(px, "cpu"), to_device(px, torch.device("cpu")))


def test_seed_augment_changes_each_image_its_own_way_like_the_seeds_torchvision_pipeline():
    from torchvision.transforms import v2

    torch.manual_seed(0)
    one = torch.from_numpy(patients(0, 1, SCALES["cpu"], 0)).float().div(127.5).sub(1)[:, None]
    x = one.repeat(64, 1, 1, 1)
    y = SeedAugment()(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert min((y[i] - y[0]).abs().mean().item() for i in range(1, 8)) > 1e-3  # one image, different draws
    # The seed's pipeline, one image at a time with torchvision (what it replaces on the hot path).
    seed = v2.Compose([v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05), shear=5),
                       v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.8),
                       v2.GaussianBlur(kernel_size=3, sigma=(0.1, 2.0))])
    erase = v2.RandomErasing(p=0.5, scale=(0.02, 0.1), value="random")
    ref = torch.stack([erase(seed((one[0] + 1) / 2).clamp(0, 1) * 2 - 1) for _ in range(64)])
    # Brightness scales and contrast blends with the mean, as torchvision's: a black image stays black (an
    # additive brightness would lift it); the mean level and spread match the seed's pipeline.
    black = torch.zeros(16, 1, 32, 32)
    assert SeedAugment().transforms(black).max().item() == 0.0 == seed(black[0]).max().item()
    assert abs(y.mean().item() - ref.mean().item()) < 0.05
    assert abs(y.std().item() - ref.std().item()) < 0.05


def test_precision_auto_is_fp32_on_the_cpu_and_accepted_by_configs():
    assert pick_precision("auto", torch.device("cpu")) == "fp32"
    assert pick_precision("bf16", torch.device("cpu")) == "bf16"
    assert RunConfig(precision="auto").precision == "auto"


def test_compile_falls_back_in_one_line_when_the_first_call_fails(monkeypatch, caplog):
    model = torch.nn.Linear(3, 3)
    assert compiled(model, RunConfig(compile=False)) is model
    calls = []

    def lazy_compile(m):  # torch.compile returns at once; a missing compiler shows at the first call
        def run(*a):
            calls.append(1)
            raise RuntimeError("no C++ compiler found\nlong details")
        return run

    monkeypatch.setattr(torch, "compile", lazy_compile)
    runner = compiled(model, RunConfig(compile=True))
    x = torch.randn(2, 3)
    with caplog.at_level(logging.WARNING, logger="vitprint.training.engine"):
        assert torch.equal(runner(x), model(x))
        assert torch.equal(runner(x), model(x))
    assert len(calls) == 1  # tried once, then the model as it is
    warned = [r.getMessage() for r in caplog.records if "could not compile" in r.getMessage()]
    assert warned == ["could not compile the model (RuntimeError: no C++ compiler found); running it as it is"]
    runner.eval()
    assert not model.training


def test_fused_adam_takes_the_plain_adam_step():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(16, 4), torch.nn.Linear(16, 4)
    b.load_state_dict(a.state_dict())
    fused = adam(a.parameters(), RunConfig(device="cpu"), lr=1e-2, weight_decay=1e-5)
    plain = torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=1e-5)
    assert fused.defaults["fused"]
    x = torch.randn(8, 16)
    for opt, m in ((fused, a), (plain, b)):
        for _ in range(3):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize("what", ["recon", "latent"])
def test_bf16_scoring_ranks_the_benchmark_images_as_fp32_does(what):
    px = patients(0, 48, SCALES["cpu"], 3)
    torch.manual_seed(0)
    model = Autoencoder(model_config("tiny", image_size=64, vit_img_size=64)).eval()
    if what == "recon":
        a = reconstruct(model, px, precision="fp32", progress=False).mse
        b = reconstruct(model, px, precision="bf16", progress=False).mse
    else:  # the latent detector ranks by distances between latents
        iu = np.triu_indices(len(px), 1)
        za, zb = (encode(model.encoder, px, precision=p, progress=False) for p in ("fp32", "bf16"))
        a = np.linalg.norm(za[:, None] - za[None], axis=2)[iu]
        b = np.linalg.norm(zb[:, None] - zb[None], axis=2)[iu]
    assert spearmanr(a, b).statistic >= 0.999


def test_the_prepared_gpu_check_runs_shrunk_on_the_cpu(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "VITPRINT_QUIET": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # the CPU smoke run, on any machine
    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--small", str(tmp_path / "out")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "card: no GPU (CPU)" in done.stdout
    result = json.loads((tmp_path / "out" / "throughput.json").read_text())
    modes = {(r["implementation"], r["mode"], r["precision"]) for r in result["rows"]}
    assert ("seed-style", "train", "fp32") in modes and ("vitprint", "inference", "bf16") in modes
    assert all(0 < r["fraction_of_peak"] for r in result["rows"])
    assert any("input_efficiency" in r for r in result["rows"])
    assert {r["detector"] for r in result["scoring"]["rows"]} == {"pixel_nn", "latent_nn"}
    (prof,) = result["profile"]  # where one fp32 inference batch of the tiny preset spends its time
    assert prof["preset"] == "tiny" and "aten::addmm" in prof["shares"]
    peak = result["matmul_peak_gflop_s"]["fp32"]
    assert 0.01 * peak < prof["dense_gflop_s"] < 5 * peak  # seconds and FLOPs on the same scale
    assert prof["dense_seconds"] < prof["seconds"]
    assert "| preset | batch |" in (tmp_path / "out" / "throughput.md").read_text()


def test_throughput_recount_redoes_the_flop_columns_from_the_measured_rates(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from vitprint.models.info import model_info
    from vitprint.models.presets import model_config

    root = Path(__file__).resolve().parents[1]
    row = {"preset": "tiny", "implementation": "seed-style", "mode": "inference", "precision": "fp32",
           "compile": False, "batch_size": 8, "images_per_s": 10.0, "gflop_per_image": 0.5,
           "achieved_gflop_s": 5.0, "fraction_of_peak": 0.05}
    old = {"device": "cpu", "machine": "x86_64, 2 threads", "torch": "t", "batch_sizes": [8],
           "matmul_peak_gflop_s": {"fp32": 100.0, "bf16": 200.0},
           "rows": [row, {**row, "mode": "train", "images_per_s": 2.0},
                    {**row, "implementation": "vitprint", "mode": "train", "precision": "bf16", "images_per_s": 4.0}]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(old))
    run = [sys.executable, str(root / "benchmarks" / "throughput.py"), "--recount", str(path)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    info = model_info(model_config("tiny"))
    infer, _, train = json.loads(path.read_text())["rows"]
    assert infer["images_per_s"] == 10.0 and infer["gflop_per_image"] == info["autoencoder_gflop"]
    assert abs(infer["fraction_of_peak"] - 10.0 * info["autoencoder_gflop"] / 100.0) < 1e-12
    assert abs(train["fraction_of_peak"] - 4.0 * info["train_step_gflop"] / 200.0) < 1e-12
    assert f"| {info['autoencoder_gflop']:.2f} |" in done.stdout
    refused = subprocess.run(run + ["--profile"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--recount times nothing" in refused.stderr


def test_throughput_refuses_a_profile_on_a_gpu_and_a_recount_that_would_time(monkeypatch, tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    import pytest
    import torch

    spec = importlib.util.spec_from_file_location("throughput", Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "matmul_peak", lambda *a, **k: pytest.fail("work began before the refusal"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for argv in (["--profile"], ["--recount", str(tmp_path / "x.json"), "--scoring", "toy"]):
        monkeypatch.setattr(sys, "argv", ["throughput.py", *argv])
        with pytest.raises(SystemExit) as stop:
            script.main()
        assert stop.value.code == 2
