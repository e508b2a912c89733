"""``copy_nn`` scoring speed: real images scored per second against a cached set of generated embeddings.

Makes ``--generated`` textured 96-px images (the speed does not depend on what they show), fits
``copy_nn`` once with a cache folder (a short training: the network's quality does not change its speed),
fits it again on the same images (read back from the cache: nothing trained or encoded again, timed), then
scores ``--real`` new images (encoding them and searching the cached embeddings), timed alone.

    python benchmarks/copy_nn_speed.py --generated 10000 --real 2000 --out runs/copy-nn-speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from vitprint.membership import create_detector


def textures(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``(n, size, size)`` uint8 smooth random textures (a few shared fields, mixed per image: fast to make)."""
    fields = np.stack([gaussian_filter(rng.normal(size=(size, size)), 2.0) for _ in range(32)])
    mix = rng.normal(size=(n, 32)).astype(np.float32)
    x = np.tensordot(mix, fields.astype(np.float32), axes=1)
    x = 128 + 40 * x / x.std()
    return np.clip(x, 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generated", type=int, default=10_000)
    p.add_argument("--real", type=int, default=2_000)
    p.add_argument("--steps", type=int, default=20, help="training steps of the embedding (default: 20)")
    p.add_argument("--out", type=Path, default=Path("runs/copy-nn-speed.json"))
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    generated, real = textures(rng, a.generated, 96), textures(rng, a.real, 96)
    with tempfile.TemporaryDirectory() as cache:
        opts = {"copy_steps": a.steps, "cache_dir": cache}
        t0 = time.perf_counter()
        create_detector("copy_nn", **opts).fit(generated)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        det = create_detector("copy_nn", **opts).fit(generated)
        cached = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = det.score_samples(real)
        scoring = time.perf_counter() - t0
    assert len(scores) == a.real
    row = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
           "generated": a.generated, "real": a.real, "first fit s (train + encode)": first,
           "cached fit s": cached, "scoring s": scoring, "real images/s": a.real / scoring}
    print(json.dumps(row, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
