"""Nearest-neighbour search at scale: real images scored per second, peak memory and recall@1 of each
index (exact, FAISS flat / IVF / HNSW) against 10k, 100k and 1M generated embeddings.

The vectors are synthetic (128-d, clustered like embeddings of many patients' slices, with the queries
near-copies of some base vectors and new draws for the rest): a million generated images cannot be
generated and encoded on a 2-core CPU, and the search does not care where its vectors came from.
Recall@1 is measured against exact search on the same vectors; the build time of each index is
reported separately from the search.

    python benchmarks/scale.py --sizes 10000 100000 1000000 --out runs/scale.json
    python benchmarks/scale.py --sizes 10000 --queries 200 --out runs/scale-small.json   # a quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from vitprint.benchmark import PeakRSS
from vitprint.membership.knn import knn_distances


def vectors(n: int, dim: int, rng) -> np.ndarray:
    centres = rng.normal(size=(max(1, n // 100), dim)).astype(np.float32)
    out = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--indexes", nargs="+", default=["exact", "flat", "ivf", "hnsw"])
    p.add_argument("--metric", choices=["l2", "cosine"], default="cosine")
    p.add_argument("--out", type=Path, default=Path("runs/scale.json"))
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for n in a.sizes:
        base = vectors(n, a.dim, rng)
        copies = base[rng.integers(0, n, a.queries // 2)] + 0.05 * rng.normal(size=(a.queries // 2, a.dim))
        queries = np.concatenate([copies.astype(np.float32), vectors(a.queries - len(copies), a.dim, rng)])
        truth = None
        for index in a.indexes:
            with PeakRSS() as mem:
                t = time.perf_counter()
                _, idx = knn_distances(torch.from_numpy(queries), torch.from_numpy(base), k=1, metric=a.metric,
                                       progress=False, index=index)
                seconds = time.perf_counter() - t
            if index == "exact":
                truth = idx[:, 0]
            recall = float((idx[:, 0] == truth).mean()) if truth is not None else float("nan")
            rows.append({"generated": n, "index": index, "queries": a.queries, "seconds": seconds,
                         "real_per_s": a.queries / seconds, "recall_at_1": recall, "peak_extra_mb": mem.extra_mb})
            print(f"{n:>9,} {index:>6}: {a.queries / seconds:9.0f} queries/s (build + search {seconds:6.1f} s), "
                  f"recall@1 {recall:.3f}, +{mem.extra_mb:.0f} MB", flush=True)
        del base
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": {"cpu": platform.processor() or platform.machine(),
                                             "threads": torch.get_num_threads(),
                                             "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"},
                                 "dim": a.dim, "metric": a.metric, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
