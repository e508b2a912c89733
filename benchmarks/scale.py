"""Nearest-neighbour search at scale: real images scored per second, peak memory, recall@1 and decision
agreement of each index (exact streamed, FAISS flat / IVF / HNSW) against 10k, 100k and 1M generated
embeddings.

The vectors are synthetic (128-d, clustered like embeddings of many patients' slices; half the queries are
near-copies of a base vector, the other half new draws around new centres, like images of patients the
generator never saw): a million generated images cannot be generated and encoded on a 2-core CPU, and the
search does not care where its vectors came from. Every index goes through ``knn_distances`` as the
detectors call it. The approximate indexes are kept in a store (``--store``): the first search builds and
writes the index (``build s``); ``load s`` is reading it back, and ``queries/s`` the search with the index in
memory at vitprint's settings (FAISS's search call, timed alone); the answers (recall, agreement) come from
a full ``knn_distances`` call that reads the stored index back, as a later run does. The exact searches
are timed whole (the flat index is built for each search). Recall@1 is measured against exact search
on the same vectors, for all queries and for the two halves; the decision agreement is the share of
queries on the same side of a threshold at the median exact distance (a copy / not a copy).

    python benchmarks/scale.py --sizes 10000 100000 1000000 --out runs/scale.json --plot runs/scale.png
    python benchmarks/scale.py --sizes 10000 --queries 200 --out runs/scale-small.json   # a quick check
    python benchmarks/scale.py --device cuda --out gpu-check/scale.json --plot gpu-check/scale.png   # GPU machine
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from vitprint.benchmark import PeakRSS
from vitprint.membership import knn


def vectors(n: int, dim: int, rng) -> np.ndarray:
    centres = rng.normal(size=(max(1, n // 100), dim)).astype(np.float32)
    out = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Queries/s and recall@1 (all queries, and the copies alone) against the generated set's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, recall) = plt.subplots(1, 2, figsize=(10, 4))
    for index in dict.fromkeys(r["index"] for r in rows):
        mine = [r for r in rows if r["index"] == index]
        n = [r["generated"] for r in mine]
        speed.plot(n, [r["real_per_s"] for r in mine], marker="o", label=index)
        line = recall.plot(n, [r["recall_at_1"] for r in mine], marker="o", label=f"{index}: all")[0]
        recall.plot(n, [r["recall_copies"] for r in mine], marker="x", ls=":", color=line.get_color(),
                    label=f"{index}: copies")
    speed.axhline(2000, color="grey", ls="--", lw=1)
    speed.set(xscale="log", yscale="log", xlabel="generated vectors", ylabel="real images / s",
              title="search speed (approximate: index stored)")
    recall.axhline(0.95, color="grey", ls="--", lw=1)
    recall.set(xscale="log", xlabel="generated vectors", ylabel="recall@1 against exact", ylim=(0.4, 1.02),
               title="recall@1")
    speed.legend(fontsize=8)
    recall.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--indexes", nargs="+", default=["exact", "flat", "ivf", "hnsw"])
    p.add_argument("--metric", choices=["l2", "cosine"], default="cosine")
    p.add_argument("--device", default="cpu", help="where the streamed exact search runs (cpu, cuda); FAISS's "
                   "indexes run on the CPU (faiss-cpu)")
    p.add_argument("--store", type=Path, help="folder for the stored indexes (default: a temporary one)")
    p.add_argument("--out", type=Path, default=Path("runs/scale.json"))
    p.add_argument("--plot", type=Path, help="also draw speed and recall against size into this PNG")
    p.add_argument("--replot", action="store_true", help="only draw --plot from the rows already in --out")
    a = p.parse_args(argv)
    if a.replot:
        if not a.plot:
            p.error("--replot needs --plot")
        plot(json.loads(a.out.read_text())["rows"], a.plot)
        return 0
    print("card:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU", "| search device:",
          a.device, "| threads:", torch.get_num_threads(), flush=True)
    rng = np.random.default_rng(0)
    store = a.store or Path(tempfile.mkdtemp(prefix="vitprint-scale-"))
    rows = []
    for n in a.sizes:
        base = vectors(n, a.dim, rng)
        half = a.queries // 2
        copies = base[rng.integers(0, n, half)] + 0.05 * rng.normal(size=(half, a.dim))
        queries = torch.from_numpy(np.concatenate([copies.astype(np.float32), vectors(a.queries - half, a.dim, rng)]))
        refs = torch.from_numpy(base)
        truth = None
        for index in a.indexes:
            build = load = None
            with PeakRSS() as mem:
                if index in knn.STORED:  # build and store, then time a later search that reads the index back
                    before = set(store.glob("*.faiss"))
                    t = time.perf_counter()
                    knn.knn_distances(queries[:1], refs, k=1, metric=a.metric, progress=False, index=index, store=store)
                    build = time.perf_counter() - t
                    (path,) = set(store.glob("*.faiss")) - before
                    t = time.perf_counter()
                    held = faiss.read_index(str(path))
                    load = time.perf_counter() - t
                    knn.tune(held, index, 1)
                    q = queries.numpy().copy()
                    if a.metric == "cosine":
                        faiss.normalize_L2(q)
                    t = time.perf_counter()
                    held.search(q, 1)  # the search alone, index in memory, at vitprint's settings
                    seconds = time.perf_counter() - t
                    del held
                else:
                    t = time.perf_counter()
                d, idx = knn.knn_distances(queries, refs, k=1, metric=a.metric, progress=False, index=index,
                                           store=store, device=a.device)  # the detectors' path (reads it back)
                if a.device != "cpu":
                    torch.cuda.synchronize()
                if index not in knn.STORED:
                    seconds = time.perf_counter() - t
            if index == "exact":
                truth, exact_d = idx[:, 0], d[:, 0]
            hit = idx[:, 0] == truth if truth is not None else np.full(len(idx), np.nan)
            tau = float(np.median(exact_d)) if truth is not None else float("nan")
            agree = float(((d[:, 0] <= tau) == (exact_d <= tau)).mean()) if truth is not None else float("nan")
            row = {"generated": n, "index": index, "queries": a.queries, "seconds": seconds,
                   "real_per_s": a.queries / seconds, "recall_at_1": float(np.mean(hit)),
                   "recall_copies": float(np.mean(hit[:half])), "recall_new": float(np.mean(hit[half:])),
                   "decision_agreement": agree, "build_s": build, "load_s": load,
                   "real_per_s_with_load": a.queries / (seconds + (load or 0.0)), "peak_extra_mb": mem.extra_mb}
            rows.append(row)
            print(f"{n:>9,} {index:>6}: {row['real_per_s']:9.0f} queries/s ({seconds:6.2f} s"
                  + (f"; built in {build:.1f} s, read back in {load:.2f} s" if build is not None else ", with build")
                  + f"), recall@1 {row['recall_at_1']:.3f} (copies {row['recall_copies']:.3f}, "
                  f"new {row['recall_new']:.3f}), decisions agree {agree:.3f}, +{mem.extra_mb:.0f} MB", flush=True)
        del base, refs
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": {"cpu": platform.processor() or platform.machine(),
                                             "threads": torch.get_num_threads(),
                                             "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"},
                                 "dim": a.dim, "metric": a.metric, "search_device": a.device,
                                 "settings": {"hnsw_m": knn.HNSW_M, "hnsw_ef_search": knn.HNSW_EF_SEARCH,
                                              "ivf_nprobe": knn.IVF_NPROBE, "ivf_refine": knn.IVF_REFINE,
                                              "ivf_codes_max_dim": knn.IVF_CODES_MAX_DIM}, "rows": rows}, indent=2))
    if a.plot:
        plot(rows, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
