"""k-nearest-neighbour distances: one interface for every detector, exact or through a FAISS index.

``index="exact"`` streams the reference set in chunks (it may be a memory-mapped
uint8 array of hundreds of thousands of images) and keeps a running top-k per
query, batched on the device, so memory is bounded by ``query_chunk x ref_chunk``
whatever the set sizes. ``flat`` (FAISS's exact index), ``ivf`` (inverted lists)
and ``hnsw`` (a navigable small-world graph) hand the search to FAISS, the
field's standard; ``auto`` is the streamed search below ``AUTO_EXACT_BELOW``
reference vectors (or when they would not fit ``AUTO_FLAT_MAX_BYTES``) and the
flat index above, and says which it chose.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vitprint.data.dataset import to_model_range
from vitprint.errors import VitprintError
from vitprint.progress import bar

METRICS = ("l2", "cosine")
INDEXES = ("auto", "exact", "flat", "ivf", "hnsw")
AUTO_EXACT_BELOW = 200_000  # below this many reference vectors the streamed exact search is used
AUTO_FLAT_MAX_BYTES = 2 * 2**30  # the largest set of vectors auto copies into a FAISS flat index

log = logging.getLogger(__name__)


def _distances(q: torch.Tensor, r: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1.0 - F.normalize(q, dim=1) @ F.normalize(r, dim=1).T
    # ||q - r||^2 expanded keeps it one matmul; clamp the rounding below zero.
    d2 = q.pow(2).sum(1, keepdim=True) - 2 * q @ r.T + r.pow(2).sum(1)[None]
    return d2.clamp_min_(0).sqrt_()


@torch.no_grad()
def knn_distances(
    queries: np.ndarray | torch.Tensor,
    refs,
    k: int = 1,
    metric: str = "l2",
    to_vectors: Callable[[np.ndarray], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    query_chunk: int = 1024,
    ref_chunk: int = 4096,
    progress: bool = True,
    index: str = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``(N, k)`` (ascending) and indices ``(N, k)`` of each query's k nearest refs.

    ``refs`` is anything sliceable along its first axis (array, memmap, tensor);
    ``to_vectors`` turns a slice into ``(m, D)`` float vectors (default: flatten);
    ``index`` is one of ``INDEXES``.
    """
    if metric not in METRICS:
        raise VitprintError(f"metric must be one of {METRICS}, got {metric!r}", "latent_metric")
    if index not in INDEXES:
        raise VitprintError(f"index must be one of {', '.join(INDEXES)}, got {index!r}", "index")
    n_ref = len(refs)
    if n_ref == 0:
        raise VitprintError("the reference set for nearest-neighbour search is empty")
    k = min(k, n_ref)
    device = torch.device(device)
    convert = to_vectors or (lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32)).flatten(1))
    q_all = convert(queries) if not isinstance(queries, torch.Tensor) else queries.float().flatten(1)
    if index == "auto":
        # Measured (docs/benchmarks.md, benchmarks/scale.py): built per search, FAISS's exact flat index beats
        # the streamed search from about 10^5 vectors on, and the approximate ones only pay when reused.
        # The flat index holds every vector in memory, so above AUTO_FLAT_MAX_BYTES the search streams.
        small = n_ref < AUTO_EXACT_BELOW or n_ref * int(q_all.shape[1]) * 4 > AUTO_FLAT_MAX_BYTES
        index = "exact" if small else "flat"
        if index != "exact":
            log.info("nearest-neighbour search over %d vectors: FAISS's flat index (exact)", n_ref)
    if index != "exact":
        return _faiss_search(q_all, refs, k, metric, convert, ref_chunk, index)
    out_d = np.empty((len(q_all), k), np.float32)
    out_i = np.empty((len(q_all), k), np.int64)
    for qs in range(0, len(q_all), query_chunk):
        q = q_all[qs:qs + query_chunk].to(device)
        best_d = torch.full((len(q), k), float("inf"), device=device)
        best_i = torch.zeros((len(q), k), dtype=torch.long, device=device)
        for rs in bar(range(0, n_ref, ref_chunk), enabled=progress and n_ref > ref_chunk,
                      desc="nearest neighbours", unit="chunk"):
            r = convert(refs[rs:rs + ref_chunk]).to(device)
            d = _distances(q, r, metric)
            cand_d = torch.cat([best_d, d], 1)
            cand_i = torch.cat([best_i, torch.arange(rs, rs + len(r), device=device).expand(len(q), -1)], 1)
            best_d, pos = cand_d.topk(k, dim=1, largest=False, sorted=True)
            best_i = cand_i.gather(1, pos)
        out_d[qs:qs + len(q)] = best_d.cpu().numpy()
        out_i[qs:qs + len(q)] = best_i.cpu().numpy()
    return out_d, out_i


def pixel_vectors(size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 ``(m, S, S)`` -> ``(m, size*size)`` float vectors in [-1, 1], area-downsampled."""

    def convert(u8) -> torch.Tensor:
        x = to_model_range(u8)[:, None]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        return x.flatten(1)

    return convert


def _faiss_search(q_all: torch.Tensor, refs, k: int, metric: str, convert, chunk: int, kind: str):
    """The same answer through a FAISS index (exact for ``flat``; approximate for ``ivf`` and ``hnsw``)."""
    import faiss

    def vectors(t: torch.Tensor) -> np.ndarray:
        v = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
        if metric == "cosine":
            faiss.normalize_L2(v)
        return v

    n, dim = len(refs), int(q_all.shape[1])
    space = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if kind == "flat":
        idx = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    elif kind == "hnsw":
        idx = faiss.IndexHNSWFlat(dim, 32, space)
        idx.hnsw.efConstruction, idx.hnsw.efSearch = 80, max(64, 2 * k)
    else:  # ivf: about 4 sqrt(n) lists, trained on a sample, 1/8 of them probed (at least 8)
        lists = max(1, min(int(4 * np.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        idx = faiss.IndexIVFFlat(quantizer, dim, lists, space)
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, 64 * lists), replace=False))
        idx.train(vectors(convert(np.asarray(refs[sample]) if not isinstance(refs, torch.Tensor) else refs[sample])))
        idx.nprobe = max(8, lists // 8)
    for start in range(0, n, chunk):
        idx.add(vectors(convert(refs[start:start + chunk])))
    d, i = idx.search(vectors(q_all), k)
    d = 1.0 - d if metric == "cosine" else np.sqrt(np.clip(d, 0, None))
    short = np.flatnonzero((i < 0).any(1))  # an approximate index found fewer than k: search those exactly
    if len(short):
        d[short], i[short] = knn_distances(q_all[short], refs, k, metric, convert, progress=False, ref_chunk=chunk)
    return d.astype(np.float32), i.astype(np.int64)


def thumbnails(images, size: int) -> np.ndarray:
    """``(m, size*size)`` float64 thumbnails in [-1, 1] of uint8 images (the density and classifier peers'
    feature space)."""
    return pixel_vectors(size)(np.asarray(getattr(images, "pixels", images))).numpy().astype(np.float64)
