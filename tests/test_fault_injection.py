"""kill -9 at random points of a tiny ``train`` and ``detect``; the same command again must finish
with exactly the outputs of a run that was never interrupted."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
from safetensors.torch import load_file

POINTS = 2  # kills per command (each point is two runs of a few seconds of start-up)


def _vitprint(*args, kill_after: float | None = None) -> int | None:
    cmd = [sys.executable, "-m", "vitprint", *map(str, args), "--quiet"]
    env = {**os.environ, "VITPRINT_QUIET": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return proc.returncode
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode


def _timed(*args) -> float:
    t = time.perf_counter()
    _vitprint(*args)
    return time.perf_counter() - t


def _folder(path, n, seed, size=32):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path / f"{path.name}_{i:02d}.png")
    return path


def _weights(out):
    return load_file(out / "checkpoints" / "best.safetensors")


def test_train_killed_anywhere_then_resumed_equals_an_uninterrupted_run(tmp_path):
    images = _folder(tmp_path / "imgs", 12, 0)
    args = ["train", images, "--preset", "micro", "--epochs", 4, "--batch-size", 4, "--seed", 3]
    full = _timed(*args, "--out", tmp_path / "full")
    reference = _weights(tmp_path / "full")
    rng = np.random.default_rng(0)
    for k, at in enumerate(rng.uniform(0.4, 1.0, POINTS) * full):  # the start is mostly imports
        out = tmp_path / f"killed{k}"
        _vitprint(*args, "--out", out, kill_after=at)
        resume = ["--resume"] if (out / "checkpoints" / "last.safetensors").is_file() else []
        if not resume and out.exists():  # killed before its first checkpoint: nothing to resume
            shutil.rmtree(out)
        _vitprint(*args, "--out", out, *resume)
        again = _weights(out)
        assert again.keys() == reference.keys()
        assert all((again[n] == reference[n]).all() for n in reference), f"kill at {at:.1f} s"


def _outputs(out):
    files = {name: (out / name).read_text() for name in ("scores.csv", "decisions.csv", "run.txt")}
    ev = json.loads((out / "evaluation.json").read_text())
    for key in ("reproduction", "report", "run_file"):  # they name the output folder
        ev.pop(key, None)
    return files, ev


def test_detect_killed_anywhere_then_rerun_equals_an_uninterrupted_run(tmp_path):
    gen = _folder(tmp_path / "gen", 30, 1)
    members, non = _folder(tmp_path / "used", 10, 2), _folder(tmp_path / "not_used", 10, 3)
    unknown = _folder(tmp_path / "unknown", 8, 4)
    args = ["detect", "--generated", gen, "--members", members, "--non-members", non, "--unknown", unknown,
            "--detectors", "pixel_nn", "mc", "--preset", "micro", "--bootstrap", 50, "--pixel-size", 32]
    full = _timed(*args, "--out", tmp_path / "full")
    reference = _outputs(tmp_path / "full")
    rng = np.random.default_rng(1)
    for k, at in enumerate(rng.uniform(0.5, 1.0, POINTS) * full):  # the first half is mostly start-up
        out = tmp_path / f"killed{k}"
        _vitprint(*args, "--out", out, kill_after=at)
        _vitprint(*args, "--out", out)
        assert _outputs(out) == reference, f"kill at {at:.1f} s"
        assert not [p.name for p in out.iterdir() if p.name.startswith((".staging", ".swap"))]
