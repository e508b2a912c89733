"""A generator's training time, side by side with the same training at an earlier revision of the code.

Each version trains the ``--scale`` generator of ``--family`` on the same phantom members (a benchmark
cell's: ``--members``, seed 0) for ``--steps`` optimisation steps, in its own process, the versions in turns
(``--repeats`` times each, the fastest kept). The earlier version runs from a temporary git worktree of
``--reference``. The script reports both times, their ratio and whether the trained weights are the same
bit for bit (a hash of every weight), which a change meant only to be faster must keep on one process.

    python benchmarks/generator_speed.py --reference ab21435 --family dcgan --steps 200 --out runs/gen-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in each version's own process, with that version's source first on the path.
CHILD = """
import hashlib, json, sys, tempfile, time
from pathlib import Path
import vitprint
from vitprint.benchmark import SCALES, patients
from vitprint.config import RunConfig
from vitprint.data.imageset import ImageSet
from vitprint.training.generator import load_generator, train_generator
family, members, steps, scale = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), SCALES[sys.argv[4]]
trained_on = patients(0, members, scale, members)  # a benchmark cell's members (seed 0)
epochs = max(1, steps * scale.batch_size // members)
with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    train_generator(ImageSet.from_pixels(trained_on, "train"), RunConfig(out=out, epochs=epochs,
                    batch_size=scale.batch_size, seed=0), family=family)
    seconds = time.perf_counter() - t0
    gen = load_generator(Path(out) / "checkpoints" / "last.safetensors")
    h = hashlib.sha256()
    for name, w in sorted(gen.state_dict().items()):
        h.update(name.encode()); h.update(w.detach().cpu().numpy().tobytes())
print(json.dumps({"seconds": seconds, "weights": h.hexdigest()[:16], "epochs": epochs, "code": vitprint.__file__}))
"""


def train(src: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", CHILD, args.family, str(args.members), str(args.steps), args.scale],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        sys.exit(f"generator_speed.py: training with {src} failed: {last}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(run["code"]).resolve().is_relative_to(src.resolve()):
        sys.exit(f"generator_speed.py: the training meant for {src} ran {run['code']}")
    return run


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="the earlier git revision to train with")
    p.add_argument("--family", default="dcgan", choices=["dcgan", "pacgan", "vae", "ddpm"],
                   help="generator family (default: dcgan)")
    p.add_argument("--scale", default="cpu", choices=["toy", "cpu", "gpu"], help="the benchmark scale (default: cpu)")
    p.add_argument("--members", type=int, default=64, help="training images (default: 64)")
    p.add_argument("--steps", type=int, default=200, help="optimisation steps, about (default: 200)")
    p.add_argument("--repeats", type=int, default=3, help="trainings of each version (default: 3)")
    p.add_argument("--out", type=Path, help="write the result here as JSON")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.steps < 1 or a.members < 2:
        p.error("--repeats and --steps must be at least 1, --members at least 2")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "reference"
        added = subprocess.run(["git", "worktree", "add", "--detach", str(tree), a.reference], cwd=ROOT,
                               capture_output=True, text=True)
        if added.returncode:
            p.exit(2, f"generator_speed.py: cannot check out {a.reference!r}: {added.stderr.strip()}\n")
        try:
            runs = {"reference": [], "current": []}
            for i in range(a.repeats):
                for version, src in (("reference", tree / "src"), ("current", ROOT / "src")):
                    runs[version].append(train(src, a))
                    print(f"{version} run {i + 1}: {runs[version][-1]}", flush=True)
        finally:
            removed = subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
            if removed.returncode:
                subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
                print(f"generator_speed.py: could not remove the worktree {tree}; pruned", file=sys.stderr)
    best = {v: min(r["seconds"] for r in runs[v]) for v in runs}
    row = {"family": a.family, "scale": a.scale, "members": a.members, "epochs": runs["current"][0]["epochs"],
           "reference": a.reference, "current_commit": git("rev-parse", "--short", "HEAD"),
           "uncommitted_changes": bool(git("status", "--porcelain", "--", "src")), "reference_s": round(best["reference"], 2), "current_s": round(best["current"], 2),
           "ratio": round(best["reference"] / best["current"], 2),
           "same_weights": len({r["weights"] for v in runs for r in runs[v]}) == 1,
           "machine": {"cpu": platform.machine(), "cores": os.cpu_count()}}
    print(json.dumps(row))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({**row, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
