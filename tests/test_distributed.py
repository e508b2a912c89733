"""Several processes on the CPU (gloo), started as a user starts them: ``torchrun … -m vitprint …``.

Scoring shares the generated set between the processes and must give exactly what one process gives;
training is data-parallel, writes its files once and resumes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitprint.data.phantoms import CLASSES, phantom

# Small chunks, so that even a test-sized generated set is split between the processes.
# Each process also notes how many chunks it handled of how many, to show that the work was shared.
LAUNCH = """
import atexit, json, os, sys
import vitprint.distributed as distributed
import vitprint.membership.knn as knn
import vitprint.training.contrastive as contrastive
knn.REF_CHUNK = 7
contrastive.EMBED_BATCH = 5
shares, plain = [], distributed.my_chunks
def counted(n):
    mine = plain(n)
    shares.append((len(mine), n))
    return mine
distributed.my_chunks = counted
atexit.register(lambda: open(f"shares-{os.environ['RANK']}-of-{os.environ['WORLD_SIZE']}.json", "w").write(json.dumps(shares)))
from vitprint.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, processes: int, *argv, script: str = LAUNCH) -> subprocess.CompletedProcess:
    path = tmp_path / "launch.py"
    path.write_text(script)
    # Each launch its own cache: the processes must encode and train, not read what another launch stored.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VITPRINT_QUIET": "1", "VITPRINT_CACHE": str(tmp_path / f"cache{processes}")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
           "--master_port", str(_free_port()), str(path), *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


def _challenge(root: Path) -> None:
    """A development and a test set, and a generator that copied each member with noise."""
    from vitprint.demo import write_membership_split
    from vitprint.data.phantoms import save_palette_png

    write_membership_split(root, 6, 3, size=64)
    rng = np.random.default_rng(3)
    for folder in (root / "dev" / "generated", root / "test" / "generated"):
        folder.mkdir(parents=True)
    members = sorted((root / "members").glob("*.png"))
    for i, path in enumerate(members):
        px = np.asarray(Image.open(path).convert("L")).astype(np.int16)
        copy = px + rng.integers(-6, 7, px.shape)
        save_palette_png(np.clip(copy, 0, 255).astype(np.uint8), root / "dev" / "generated" / f"g_{i:03d}.png")
    for j in range(17):
        px = phantom(np.random.default_rng([9, j]), CLASSES[j % len(CLASSES)], 64)
        save_palette_png(px, root / "dev" / "generated" / f"n_{j:03d}.png")
    for path in (root / "dev" / "generated").iterdir():
        (root / "test" / "generated" / path.name).write_bytes(path.read_bytes())


def test_two_processes_score_exactly_as_one(tmp_path):
    from vitprint.cli import main

    _challenge(tmp_path)
    assert main(["train", str(tmp_path / "dev" / "generated"), "--preset", "tiny", "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "ae"), "--quiet"]) == 0
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"det{n}"
        done = _launch(tmp_path, n, "detect", "--dev", tmp_path / "dev", "--test", tmp_path / "test",
                       "--detectors", "pixel_nn", "mc", "copy_nn", "latent_nn", "recon",
                       "--detector-option", "copy_steps=15", "--autoencoder", tmp_path / "ae" / "checkpoints" /
                       "best.safetensors", "--device", "cpu", "--bootstrap", "50", "--no-report", "--out", out)
        assert done.returncode == 0, done.stderr[-3000:]
        outs[n] = out
    one, two = (np.genfromtxt(outs[n] / "scores.csv", delimiter=",", names=True, dtype=None, encoding=None)
                for n in (1, 2))
    names = [n for n in one.dtype.names if n not in ("id", "group", "label", "path")]
    assert {"pixel_nn", "mc", "copy_nn", "latent_nn", "recon", "pixel_nn_cal", "latent_nn_cal"} <= set(names)
    for name in names:
        assert np.array_equal(one[name], two[name]), name  # bit for bit, not merely close
        assert np.ptp(one[name]) > 0, name  # and not a constant that any split would reproduce
    assert (outs[1] / "run.txt").read_text() == (outs[2] / "run.txt").read_text()
    assert (outs[1] / "decisions.csv").read_text() == (outs[2] / "decisions.csv").read_text()
    # The copies were found: the members score above the non-members on the pixel distance.
    labels = np.array([str(v) for v in one["label"]])
    assert (labels == "1").sum() == 6 and (labels == "0").sum() == 6
    assert one["pixel_nn"][labels == "1"].min() > one["pixel_nn"][labels == "0"].max()
    # Each of the two processes handled about half of every split piece of work; one process all of it.
    for rank in (0, 1):
        shares = json.loads((tmp_path / f"shares-{rank}-of-2.json").read_text())
        assert shares and all(mine == (n + 1 - rank) // 2 for mine, n in shares)
        assert sum(n for _, n in shares if n > 1) >= 10  # searches and encodings of several chunks
    assert all(mine == n for mine, n in json.loads((tmp_path / "shares-0-of-1.json").read_text()))
    # One set of outputs, written by the main process alone.
    assert not list(outs[2].glob("*.tmp*")) and json.loads((outs[2] / "evaluation.json").read_text())["detectors"]


def test_two_process_training_writes_once_and_resumes(tmp_path, phantom_tree):
    images = phantom_tree / "train"
    base = ["train", images, "--preset", "tiny", "--batch-size", "4", "--device", "cpu", "--seed", "1"]
    done = _launch(tmp_path, 2, *base, "--epochs", "2", "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best validation MSE") == 1  # the main process speaks
    records = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # one record per epoch, not one per process
    done = _launch(tmp_path, 2, *base, "--epochs", "3", "--resume", "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    from vitprint.training.checkpoint import read_meta

    assert read_meta(tmp_path / "two" / "checkpoints" / "last.safetensors")["epoch"] == 2
    done = _launch(tmp_path, 1, *base, "--epochs", "3", "--out", tmp_path / "one")
    assert done.returncode == 0, done.stderr[-3000:]
    one = [json.loads(x)["train_loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [r["train_loss"] for r in records]
    # The same curve shape: falling in both, and the two processes' mean loss (over every image of the
    # epoch, both halves) near the one process's loss.
    assert one[0] > one[-1] and two[0] > two[-1]
    assert abs(two[0] - one[0]) < 0.25 * one[0]


# Every process notes its own copy of the networks' parameters after each epoch of a generator's training.
REPLICAS = """
import json, os, sys
import vitprint.training.generator as generator
plain = generator.train_one_epoch
def noted(model, *args, **kwargs):
    out = plain(model, *args, **kwargs)
    net = getattr(model, "module", model)
    sums = [float(p.detach().double().sum()) for p in net.parameters()]
    with open(f"params-{os.environ['RANK']}.jsonl", "a") as f:
        f.write(json.dumps(sums) + "\\n")
    return out
generator.train_one_epoch = noted
# ... and the first latent codes its generator is given in training (the step's noise).
forward = generator.Generator.forward
def first_codes(self, z):
    path = f"codes-{os.environ['RANK']}.json"
    if not os.path.exists(path):
        with open(path, "w") as f:
            json.dump(z.detach().double().flatten()[:64].tolist(), f)
    return forward(self, z)
generator.Generator.forward = first_codes
from vitprint.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("family", ["dcgan", "pacgan"])
def test_two_process_gan_training_keeps_the_replicas_equal(tmp_path, phantom_tree, family):
    """Each player's gradients are averaged over the processes, so both processes hold the same networks
    after every epoch (each process trains on its own half of the batches: without the averaging the two
    copies drift apart from the first step)."""
    done = _launch(tmp_path, 2, "train-generator", phantom_tree / "train", "--family", family, "--epochs", "2",
                   "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--out", tmp_path / "gan",
                   script=REPLICAS)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"params-{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # both epochs, on both processes
    first = np.asarray(ranks[0][0])
    for epoch in range(2):
        np.testing.assert_allclose(ranks[0][epoch], ranks[1][epoch], rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(ranks[0][1]) - first).max() > 1e-4  # and they did train
    # Each process draws its own noise for its share of the batch (they used to draw the same codes, so
    # the two halves of every batch were judged against one set of fakes).
    codes = [np.asarray(json.loads((tmp_path / f"codes-{r}.json").read_text())) for r in (0, 1)]
    assert len(codes[0]) == len(codes[1]) == 64 and np.abs(codes[0] - codes[1]).max() > 0.1


SEARCH = """
import sys
import numpy as np
import torch
import vitprint.distributed as distributed
from vitprint.membership.knn import knn_distances
rng = np.random.default_rng(0)
refs = rng.normal(size=(500, 12)).astype(np.float32)
queries = np.concatenate([refs[::25] + 0.01, rng.normal(size=(20, 12)).astype(np.float32)])
out = {}
with distributed.sharded():
    for index in ("exact", "flat", "ivf"):
        for metric in ("l2", "cosine"):
            d, i = knn_distances(queries, refs, k=3, metric=metric, index=index, ref_chunk=60, progress=False)
            out[f"{index}-{metric}-d"], out[f"{index}-{metric}-i"] = d, i
if distributed.is_main():
    np.savez(sys.argv[1], **out)
"""


def test_two_process_searches_answer_as_one(tmp_path):
    done = {}
    for n in (1, 2):
        run = _launch(tmp_path, n, tmp_path / f"search{n}.npz", script=SEARCH)
        assert run.returncode == 0, run.stderr[-3000:]
        done[n] = np.load(tmp_path / f"search{n}.npz")
    for key in done[1].files:
        if key.startswith(("exact", "flat")):  # exact searches: the same neighbours and distances
            assert np.array_equal(done[1][key], done[2][key]), key
    for metric in ("l2", "cosine"):
        # IVF: each process its own index over its share; the near-copies are still found exactly.
        i1, i2 = done[1][f"ivf-{metric}-i"], done[2][f"ivf-{metric}-i"]
        assert (i1[:20, 0] == np.arange(0, 500, 25)).all() and (i2[:20, 0] == np.arange(0, 500, 25)).all()
        assert (i2 >= 0).all() and np.isfinite(done[2][f"ivf-{metric}-d"]).all()
