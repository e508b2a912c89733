"""k-nearest-neighbour distances: one interface for every detector, exact or through a FAISS index.

``index="exact"`` streams the reference set in chunks (it may be a memory-mapped
uint8 array of hundreds of thousands of images) and keeps a running top-k per
query, batched on the device, so memory is bounded by ``query_chunk x ref_chunk``
whatever the set sizes. ``flat`` (FAISS's exact index), ``ivf`` (inverted lists)
and ``hnsw`` (a navigable small-world graph) hand the search to FAISS, the
field's standard; ``auto`` is the streamed search below ``AUTO_EXACT_BELOW``
reference vectors (or when they would not fit ``AUTO_FLAT_MAX_BYTES``) and the
flat index above, and says which it chose.

Inside ``vitprint.distributed.sharded()`` with several processes, each process
searches its share of the reference chunks and the per-process answers are
merged, so every process returns what one process would.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vitprint import distributed
from vitprint.data.dataset import to_model_range
from vitprint.data.imageset import atomic_write
from vitprint.errors import VitprintError
from vitprint.progress import bar

METRICS = ("l2", "cosine")
INDEXES = ("auto", "exact", "flat", "ivf", "hnsw")
AUTO_EXACT_BELOW = 200_000  # below this many reference vectors the streamed exact search is used
AUTO_FLAT_MAX_BYTES = 2 * 2**30  # the largest set of vectors auto copies into a FAISS flat index
REF_CHUNK = 4096  # reference vectors per streamed chunk (the memory bound, and the unit shared between processes)
# The approximate indexes' settings, measured on benchmarks/scale.py (docs/benchmarks.md).
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_NPROBE = 16  # lists probed per query: at least this many, and at least 1/64 of them (1/4 with codes)
IVF_CODES_MAX_DIM = 256  # up to this many (even) dimensions, IVF scans 4-bit codes and re-ranks exactly
IVF_REFINE = 256  # candidates per wanted neighbour that the codes hand to the exact re-ranking
QUERY_CHUNK = 1024  # queries per search call of a coded IVF (bounds the re-ranking's candidate arrays)
IVF_SAMPLE = 64  # training vectors per list for the IVF centroids (seeded sample)
IVF_MIN_LIST = 39  # vectors per list at least (FAISS's k-means wants 39 points per centroid)
STORED = ("ivf", "hnsw")  # the indexes worth keeping (a flat index is the vectors themselves)

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
    ref_chunk: int | None = None,
    progress: bool = True,
    index: str = "exact",
    store: str | Path | None = None,
    store_key: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``(N, k)`` (ascending) and indices ``(N, k)`` of each query's k nearest refs.

    ``refs`` is anything sliceable along its first axis (array, memmap, tensor);
    ``to_vectors`` turns a slice into ``(m, D)`` float vectors (default: flatten); ``ref_chunk`` defaults
    to ``REF_CHUNK``;
    ``index`` is one of ``INDEXES``; with ``store`` (a folder), an approximate index (``ivf``, ``hnsw``)
    built over ``refs`` is kept there under a key made of the vectors (``store_key`` when the caller has
    one: ``content_key(refs)``) and the index's settings, and read back by any later search over the same
    vectors instead of being built again.
    """
    if metric not in METRICS:
        raise VitprintError(f"metric must be one of {METRICS}, got {metric!r}", "latent_metric")
    if index not in INDEXES:
        raise VitprintError(f"index must be one of {', '.join(INDEXES)}, got {index!r}", "index")
    n_ref = len(refs)
    if n_ref == 0:
        raise VitprintError("the reference set for nearest-neighbour search is empty")
    k = min(k, n_ref)
    ref_chunk = ref_chunk or REF_CHUNK
    device = torch.device(device)
    # A copy per chunk: the vectors may be a read-only memory map (the stored embeddings).
    convert = to_vectors or (lambda a: torch.from_numpy(np.array(a, dtype=np.float32)).flatten(1))
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
        kept = store if index in STORED else None
        return _faiss_search(q_all, refs, k, metric, convert, ref_chunk, index, kept, store_key)
    out_d = np.empty((len(q_all), k), np.float32)
    out_i = np.empty((len(q_all), k), np.int64)
    chunks = distributed.my_chunks(-(-n_ref // ref_chunk))
    for qs in range(0, len(q_all), query_chunk):
        q = q_all[qs:qs + query_chunk].to(device)
        best_d = torch.full((len(q), k), float("inf"), device=device)
        best_i = torch.zeros((len(q), k), dtype=torch.long, device=device)
        for c in bar(chunks, enabled=progress and len(chunks) > 1, desc="nearest neighbours", unit="chunk"):
            rs = c * ref_chunk
            r = convert(refs[rs:rs + ref_chunk]).to(device)
            d = _distances(q, r, metric)
            cand_d = torch.cat([best_d, d], 1)
            cand_i = torch.cat([best_i, torch.arange(rs, rs + len(r), device=device).expand(len(q), -1)], 1)
            best_d, pos = cand_d.topk(k, dim=1, largest=False, sorted=True)
            best_i = cand_i.gather(1, pos)
        out_d[qs:qs + len(q)] = best_d.cpu().numpy()
        out_i[qs:qs + len(q)] = best_i.cpu().numpy()
    return _merged(out_d, out_i, k)


def _merged(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of every process's k best (by distance, then index); the arrays themselves alone."""
    if not distributed.active():
        return d, i
    parts = distributed.gather((d, i))
    d, i = np.concatenate([p[0] for p in parts], 1), np.concatenate([p[1] for p in parts], 1)
    order = np.lexsort((i, d), axis=1)[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def pixel_vectors(size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 ``(m, S, S)`` -> ``(m, size*size)`` float vectors in [-1, 1], area-downsampled."""

    def convert(u8) -> torch.Tensor:
        x = to_model_range(u8)[:, None]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        return x.flatten(1)

    return convert


def _ivf_lists(n: int) -> int:
    return max(1, min(int(4 * np.sqrt(n)), n // IVF_MIN_LIST))  # about 4 sqrt(n) lists, at least 39 vectors each


def _coded(dim: int, n: int) -> bool:
    """Whether an IVF index of ``n`` ``dim``-dimensional vectors scans product codes (else the raw vectors):
    even dimensions up to IVF_CODES_MAX_DIM, and enough vectors for k-means to train each code's 16 values."""
    return dim <= IVF_CODES_MAX_DIM and dim % 2 == 0 and n >= 16 * IVF_MIN_LIST


def tune(idx, kind: str, k: int) -> None:
    """Search settings (not stored with an index, so set on every use)."""
    if kind == "hnsw":
        idx.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * k)
    elif kind == "ivf":
        import faiss

        ivf = faiss.extract_index_ivf(idx)
        coded = isinstance(idx, faiss.IndexRefine)
        ivf.nprobe = min(ivf.nlist, max(IVF_NPROBE, ivf.nlist // (4 if coded else 64)))
        if coded:
            idx.k_factor = float(IVF_REFINE)


def index_store(cache_dir, index: str, refs=None, key: str | None = None) -> dict:
    """The ``store`` / ``store_key`` arguments of ``knn_distances`` for a detector with a cache folder: its
    approximate index of ``refs`` is kept in ``cache_dir/index`` (nothing for the other indexes)."""
    if not cache_dir or index not in STORED:
        return {}
    return {"store": Path(cache_dir) / "index", "store_key": key or content_key(refs)}


def content_key(refs, chunk: int | None = None) -> str:
    """A key of the raw vectors or images (their shape and bytes)."""
    chunk = chunk or REF_CHUNK
    h = hashlib.sha1(str(tuple(np.shape(refs))).encode())
    for start in range(0, len(refs), chunk):
        h.update(np.ascontiguousarray(np.asarray(refs[start:start + chunk])).tobytes())
    return h.hexdigest()[:24]


def _store_path(store, refs, kind: str, metric: str, convert, chunk: int, key: str | None) -> Path:
    """Where the index of these vectors and settings is kept: a key of the raw vectors, how they are turned
    into search vectors (their first chunk, converted) and the index's build settings."""
    first = np.ascontiguousarray(convert(refs[:min(len(refs), 64)]).detach().cpu().numpy(), dtype=np.float32)
    h = hashlib.sha1(json.dumps({"kind": kind, "metric": metric, "n": len(refs), "dim": first.shape[1],
                                 "hnsw_m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "v": 2,
                                 "ivf_lists": _ivf_lists(len(refs)), "ivf_sample": IVF_SAMPLE,
                                 "refs": key or content_key(refs, chunk)}).encode())
    h.update(first.tobytes())
    return Path(store) / f"{kind}-{h.hexdigest()[:24]}.faiss"


def _faiss_search(q_all: torch.Tensor, refs, k: int, metric: str, convert, chunk: int, kind: str, store=None,
                  store_key: str | None = None):
    """The same answer through a FAISS index (exact for ``flat``; approximate for ``ivf`` and ``hnsw``)."""
    import faiss

    def vectors(t: torch.Tensor) -> np.ndarray:
        v = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)
        if metric == "cosine":
            faiss.normalize_L2(v)
        return v

    n, dim = len(refs), int(q_all.shape[1])
    starts = [c * chunk for c in distributed.my_chunks(-(-n // chunk))]  # all of them in one process
    ids = np.concatenate([np.arange(s, min(s + chunk, n)) for s in starts]) if starts else np.zeros(0, np.int64)
    # One process's whole index can be kept; a share of it (several processes) is built each time.
    path = (_store_path(store, refs, kind, metric, convert, chunk, store_key) if store and not distributed.active()
            else None)
    idx = None
    if path is not None and path.is_file():
        try:
            idx = faiss.read_index(str(path))
            log.info("nearest-neighbour search: reusing the stored %s index of these %d vectors", kind, n)
        except RuntimeError as exc:
            log.warning("discarding a damaged stored index %s (%s)", path, exc)
        if idx is not None and (idx.ntotal != n or idx.d != dim):
            log.warning("discarding a stored index %s that does not fit these vectors", path)
            idx = None
    if idx is None:
        idx = _build(refs, starts, kind, metric, dim, convert, vectors, chunk)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: faiss.write_index(idx, tmp))
    tune(idx, kind, k)
    if idx.ntotal:
        # A coded IVF's re-ranking holds k * IVF_REFINE candidates per query: its queries go in chunks. The
        # others take all queries at once (a flat index reads all its vectors once per call).
        step = QUERY_CHUNK if isinstance(idx, faiss.IndexRefine) else max(len(q_all), 1)
        found = [idx.search(vectors(q_all[s:s + step]), k) for s in range(0, max(len(q_all), 1), step)]
        d, i = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
    else:
        d, i = np.full((len(q_all), k), np.nan, np.float32), np.full((len(q_all), k), -1, np.int64)
    d = 1.0 - d if metric == "cosine" else np.sqrt(np.clip(d, 0, None))
    i = np.where(i >= 0, ids[np.clip(i, 0, None)] if len(ids) else -1, -1)
    d = np.where(i >= 0, d, np.inf)
    d, i = _merged(d.astype(np.float32), i.astype(np.int64), k)
    short = np.flatnonzero((i < 0).any(1))  # an approximate index found fewer than k: search those exactly
    if len(short):
        d[short], i[short] = knn_distances(q_all[short], refs, k, metric, convert, progress=False, ref_chunk=chunk)
    return d.astype(np.float32), i.astype(np.int64)


def _build(refs, starts: list[int], kind: str, metric: str, dim: int, convert, vectors, chunk: int):
    """A FAISS index over the chunks of ``refs`` that begin at ``starts``."""
    import faiss

    space = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if kind == "flat":
        idx = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    elif kind == "hnsw":
        idx = faiss.IndexHNSWFlat(dim, HNSW_M, space)
        idx.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:  # ivf: the lists' centroids (and codes) are trained on a sample of the whole set
        n = len(refs)
        lists = _ivf_lists(n)
        if _coded(dim, n):
            # Each list holds 4-bit product codes (two dimensions per code, scanned with SIMD); the best
            # IVF_REFINE * k by code are re-ranked with the exact vectors. Scanning codes is so much cheaper
            # that 1/4 of the lists can be probed in about the time 1/64 of them took uncoded.
            idx = faiss.index_factory(dim, f"IVF{lists},PQ{dim // 2}x4fs,RFlat", space)
        else:
            quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
            idx = faiss.IndexIVFFlat(quantizer, dim, lists, space)
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, IVF_SAMPLE * lists), replace=False))
        idx.train(vectors(convert(np.asarray(refs[sample]) if not isinstance(refs, torch.Tensor) else refs[sample])))
    for start in starts:
        idx.add(vectors(convert(refs[start:start + chunk])))
    return idx


def thumbnails(images, size: int) -> np.ndarray:
    """``(m, size*size)`` float64 thumbnails in [-1, 1] of uint8 images (the density and classifier peers'
    feature space)."""
    return pixel_vectors(size)(np.asarray(getattr(images, "pixels", images))).numpy().astype(np.float64)
