"""Built-in attribution data, and the attribution benchmark (``vitprint bench --task attribution``).

K cohorts of distinct phantom patients stand for K hospitals. In the easy
case each cohort has its own scanner (noise level and grain), body build and
mix of findings; in the hard case they differ only by patient. A generator
is trained on each cohort; its samples are split into labelled development
images and a pool. A further generator, trained on a cohort outside the K,
gives images that belong to none of them: the "none of these" outcome must
flag those and few of the others.

Each cell (K, case, seed) reports every method's accuracy on the pool (the
classifier trained on the development images), and the none-of-these rates.
Cells accumulate in ``out/results.json``, so an interrupted run continues.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitprint.api.attribute import AttributeConfig, method_probabilities
from vitprint.attribution.features import FeatureSpace
from vitprint.attribution.methods import METHODS, NoneOfThese, typicality
from vitprint.benchmark import machine, mean_interval
from vitprint.config import RunConfig
from vitprint.data.imageset import ImageSet, atomic_write
from vitprint.data.phantoms import CLASSES, Scanner, phantom, save_palette_png
from vitprint.errors import VitprintError
from vitprint.evaluation.metrics import attribution_metrics
from vitprint.progress import bar
from vitprint.training.generator import load_generator, sample, train_generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttributionScale:
    size: int
    per_subset: int
    n_dev: int
    n_pool: int
    gen_steps: int
    seeds: int
    subsets: tuple[int, ...] = (2, 5)
    family: str = "vae"
    batch_size: int = 16


SCALES = {
    "toy": AttributionScale(32, 6, 6, 6, 4, 2, (2, 3)),  # seconds, for the tests
    "cpu": AttributionScale(64, 16, 40, 40, 500, 3),  # about an hour on 2 cores (63 min measured)
    "gpu": AttributionScale(128, 64, 100, 100, 3000, 3, batch_size=32),
}


def scanners(n: int, hard: bool) -> list[Scanner]:
    """One scanner per cohort: all the standard one (hard), or spread in noise, grain and build (easy)."""
    if hard:
        return [Scanner()] * n
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    return [Scanner(noise=20.0 + 100.0 * v, grain=0.5 + 1.2 * v, build=0.86 + 0.26 * v) for v in t[np.random.default_rng(n).permutation(n)]]


def cohort(index: int, n: int, size: int, scanner: Scanner, hard: bool, seed: int) -> np.ndarray:
    """``(n, size, size)`` uint8 distinct patients of cohort ``index``; in the easy case half of them share
    the cohort's typical finding."""
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        label = CLASSES[i % len(CLASSES)] if hard or i % 2 else CLASSES[index % len(CLASSES)]
        out[i] = phantom(np.random.default_rng([seed, 21, index, i]), label, size, scanner)
    return out


def _samples(reals: np.ndarray, counts: tuple[int, ...], scale: AttributionScale, work: Path, seed: int) -> list[np.ndarray]:
    """Train a generator on ``reals``; ``len(counts)`` independent sample sets of those sizes."""
    epochs = max(1, math.ceil(scale.gen_steps * scale.batch_size / len(reals)))
    train_generator(ImageSet.from_pixels(reals, "train"),
                    RunConfig(out=str(work), epochs=epochs, batch_size=min(scale.batch_size, len(reals)), seed=seed),
                    family=scale.family)
    gen = load_generator(work / "checkpoints" / "last.safetensors")
    return [np.concatenate(list(sample(gen, n, seed=1000 * seed + j))) for j, n in enumerate(counts)]


def make_cohorts(n_subsets: int, scale: AttributionScale, hard: bool, seed: int, work: Path,
                 outsider: bool = True) -> dict[str, Any]:
    """In memory: ``real``, ``dev``, ``pool`` (lists of arrays, one per cohort) and ``outsider`` (the pool of a
    generator of a further cohort, or None)."""
    if n_subsets < 2:
        raise VitprintError(f"attribution needs at least 2 subsets, got {n_subsets}")
    styles = scanners(n_subsets + 1, hard)
    data: dict[str, Any] = {"real": [], "dev": [], "pool": [], "outsider": None}
    for k in range(n_subsets + (1 if outsider else 0)):
        reals = cohort(k, scale.per_subset, scale.size, styles[k], hard, seed)
        dev, pool = _samples(reals, (scale.n_dev, scale.n_pool), scale, work / f"gen{k}", 100 * seed + k)
        if k == n_subsets:
            data["outsider"] = pool
        else:
            data["real"].append(reals)
            data["dev"].append(dev)
            data["pool"].append(pool)
    return data


def write_cohorts(root: str | Path, subsets: int = 5, per_subset: int = 16, n_dev: int = 40, n_pool: int = 40,
                  hard: bool = False, size: int = 64, gen_steps: int = 500, family: str = "vae", seed: int = 0) -> Path:
    """Write the built-in attribution data in the challenge's layout; returns the pool's truth file."""
    if min(per_subset, n_dev, n_pool, gen_steps) < 1:
        raise VitprintError("images per subset, development and pool images, and generator steps must be >= 1")
    scale = dataclasses.replace(SCALES["cpu"], size=size, per_subset=per_subset, n_dev=n_dev, n_pool=n_pool,
                                gen_steps=gen_steps, seeds=1, subsets=(subsets,), family=family)
    root = Path(root)
    if root.exists() and any(not q.name.startswith(".") for q in root.iterdir()):  # old images would mix in
        raise VitprintError(f"{root} is not empty; write the cohorts into a new folder", "out")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_cohorts(subsets, scale, hard, seed, Path(tmp), outsider=False)
    names = [f"subset{k + 1}" for k in range(subsets)]
    for k, name in enumerate(names):
        for part, images in (("real", data["real"][k]), ("generated", data["dev"][k])):
            folder = root / "dev" / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(images):
                save_palette_png(img, folder / f"{name}_{part}_{i:04d}.png")
    pool = [(names[k], img) for k in range(subsets) for img in data["pool"][k]]
    order = np.random.default_rng([seed, 5]).permutation(len(pool))
    folder = root / "test" / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    truth = []
    for j, i in enumerate(order):
        save_palette_png(pool[i][1], folder / f"generated_{j:05d}.png")
        truth.append(f"generated_{j:05d},{pool[i][0]}\n")
    (root / "test_truth.csv").write_text("".join(truth))
    return root / "test_truth.csv"


def run_cell(n_subsets: int, hard: bool, seed: int, scale: AttributionScale, work: Path) -> dict[str, Any]:
    """One (K, case, seed) cell: each method's accuracy on the pool, and the none-of-these rates."""
    t0 = time.perf_counter()
    data = make_cohorts(n_subsets, scale, hard, seed, work)
    t_gen = time.perf_counter() - t0

    def stacked(part):
        return np.concatenate(data[part]), np.concatenate([np.full(len(x), k) for k, x in enumerate(data[part])])

    (real, y_real), (dev, y_dev), (pool, y_pool) = stacked("real"), stacked("dev"), stacked("pool")
    space = FeatureSpace().fit(real)
    f_real, f_dev, f_pool = space.describe(real), space.describe(dev), space.describe(pool)
    probas = method_probabilities(f_real, y_real, f_dev, y_dev, f_pool, n_subsets, AttributeConfig(seed=seed))
    methods = {m: attribution_metrics(y_pool, p["pool"].argmax(1), n_subsets, n_boot=0)["metrics"]
               for m, p in probas.items() if p["pool"] is not None}
    known, values = typicality(f_dev.features, np.concatenate([f_pool.features, space.transform(data["outsider"])]))
    flagged = NoneOfThese().fit(known, "dev").predict(values)
    flagged_pool, flagged_out = float(flagged[:len(pool)].mean()), float(flagged[len(pool):].mean())
    return {"subsets": n_subsets, "hard": hard, "seed": seed, "methods": methods,
            "none_of_these": {"pool": flagged_pool, "outsider": flagged_out},
            "generator_seconds": t_gen, "seconds": time.perf_counter() - t0}


def run_attribution_benchmark(scale_name: str, out: str | Path, subsets=None, seeds=None) -> dict[str, Any]:
    """Run (or continue) the attribution benchmark; results accumulate in ``out/results.json``."""
    if scale_name not in SCALES:
        raise VitprintError(f"scale must be one of {', '.join(SCALES)}, got {scale_name!r}")
    if subsets and min(subsets) < 2:
        raise VitprintError(f"attribution needs at least 2 subsets, got {min(subsets)}", "subsets")
    scale = dataclasses.replace(SCALES[scale_name], subsets=tuple(subsets or SCALES[scale_name].subsets),
                                seeds=seeds or SCALES[scale_name].seeds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if results.get("task", "attribution") != "attribution" or results.get("scale") not in (None, scale_name):
        raise VitprintError(f"{path} holds another benchmark; choose another output folder", "out")
    results.update({"task": "attribution", "scale": scale_name, "config": dataclasses.asdict(scale),
                    "machine": machine(), "started": results.get("started", time.strftime("%Y-%m-%d %H:%M"))})
    results.setdefault("cells", [])
    done = {(c["subsets"], c["hard"], c["seed"]) for c in results["cells"]}
    todo = [(k, h, s) for k in scale.subsets for h in (False, True) for s in range(scale.seeds) if (k, h, s) not in done]
    for k, hard, seed in bar(todo, desc="attribution cells", unit="cell"):
        with tempfile.TemporaryDirectory(dir=out) as work:
            cell = run_cell(k, hard, seed, scale, Path(work))
        results["cells"].append(cell)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
        log.info("K=%d %s seed %d: %s (%.0f s)", k, "hard" if hard else "easy", seed,
                 ", ".join(f"{m} {v['accuracy']:.3f}" for m, v in cell["methods"].items()), cell["seconds"])
    results["summary"] = summarise(results["cells"])
    if todo or "finished" not in results:
        results["finished"] = time.strftime("%Y-%m-%d %H:%M")
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
    return results


def summarise(cells: list[dict]) -> dict[str, dict[str, list[float]]]:
    """``"K=5 easy" -> row -> [mean, low, high, seeds]``: every method's accuracy and the none-of-these rates."""
    rows: dict[str, dict[str, list[float]]] = {}
    for c in sorted(cells, key=lambda c: (c["subsets"], c["hard"], c["seed"])):
        key = f"K={c['subsets']} {'hard' if c['hard'] else 'easy'}"
        for m, v in c["methods"].items():
            rows.setdefault(key, {}).setdefault(m, []).append(v["accuracy"])
        for part, rate in c["none_of_these"].items():
            rows[key].setdefault(f"none: {part}", []).append(rate)
    return {key: {name: [*mean_interval(v), len(v)] for name, v in by.items()} for key, by in rows.items()}


def markdown(results: dict, command: str) -> str:
    """The benchmark's section for docs/benchmarks.md."""
    m = results["machine"]
    lines = [f"Command: `{command}`", "",
             f"Machine: {m['cpu']}, {m['threads']} threads, {m['gpu']}, torch {m['torch']}; {results['started']} to "
             f"{results.get('finished', '?')}.", "",
             "Accuracy on the pool (mean over seeds, 95% t-interval). The classifier is trained on the labelled "
             "development images; nearest and cluster use no generated labels. 'none: pool' is the share of pool "
             "images called none of these (calibrated to 1%); 'none: outsider' the share of a further cohort's "
             "generator's images called so (higher is better).", "",
             "| cell | " + " | ".join([*METHODS, "none: pool", "none: outsider"]) + " |",
             "|---" * (len(METHODS) + 3) + "|"]
    for key, by in results["summary"].items():
        cells = []
        for name in (*METHODS, "none: pool", "none: outsider"):
            v = by.get(name)
            cells.append("–" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" if not math.isnan(v[1]) else f"{v[0]:.3f}")
        lines.append(f"| {key} ({int(by['nearest'][3])} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
